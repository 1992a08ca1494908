package upstream

import (
	"net"
	"runtime"
	"sync"
	"time"
)

const (
	maxSpare = 64 << 10 // the largest written buffer a gather keeps for reuse
	// writeTimeout bounds one write to a shared connection: a peer that
	// takes no data for this long is gone. It is not any one query's
	// deadline (those are kept by the connection's expiry timer): a
	// query late to its write must not fail the others' with it.
	writeTimeout = 5 * time.Second
)

// gather is the write side of a connection shared by the goroutines
// asking over it (DoT/TCP queries, HTTP/2 frames): the first to drain
// lets what is runnable buffer theirs before it writes, and what is
// buffered while a write is in progress goes out with that writer's next
// write, several queries in one syscall and one TLS record under load.
// The owner's mutex guards it.
type gather struct {
	out     []byte     // buffered, in order
	spare   []byte     // the buffer last written, for what is buffered next
	writing bool       // a drain is writing; it writes until out is empty
	idle    *sync.Cond // signalled when a drain ends (made by the first last)
}

// drain writes out what is buffered, each write within writeTimeout. mu (the owner's, which
// guards g) is held on entry and on return but not during a write: what
// is buffered meanwhile goes out with this drain's next write. A drain
// called while another is writing returns nil at once, leaving its
// buffer to that one. On a failed write what is left is dropped and the
// error returned (the connection is unusable: the owner closes it).
func (g *gather) drain(mu *sync.Mutex, nc net.Conn) error {
	if g.writing {
		return nil
	}
	g.writing = true
	// Let the goroutines already runnable (queries read in the same batch,
	// others whose answers just came) buffer theirs first: they go out with
	// this write, one syscall and one TLS record for all, where each made
	// its own before (scripts/bench.sh DoT misses: 1.0 write(2) a query,
	// 0.04 after). With nothing else runnable Gosched returns at once: a
	// lone query is not delayed.
	mu.Unlock()
	runtime.Gosched()
	mu.Lock()
	var err error
	for len(g.out) > 0 && err == nil {
		out := g.out
		g.out = g.spare[:0]
		mu.Unlock()
		_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err = nc.Write(out)
		mu.Lock()
		if cap(out) <= maxSpare {
			g.spare = out[:0]
		} else {
			g.spare = nil
		}
	}
	g.writing = false
	g.out = g.out[:0]
	if g.idle != nil {
		g.idle.Broadcast()
	}
	return err
}

// last is drain for what goes out before the connection closes (an
// HTTP/2 GOAWAY): it does not leave its buffer to a drain in progress,
// whose write the close could cut short, but waits for it to end (within
// its writeTimeout), so that when last returns what was buffered has
// been written or has failed.
func (g *gather) last(mu *sync.Mutex, nc net.Conn) error {
	for g.writing {
		if g.idle == nil {
			g.idle = sync.NewCond(mu)
		}
		g.idle.Wait()
	}
	return g.drain(mu, nc)
}
