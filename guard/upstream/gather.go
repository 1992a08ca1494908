package upstream

import (
	"net"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/stage"
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
// asking over it (DoT/TCP queries, HTTP/2 frames), gathered (see
// stage.Gather): several queries in one syscall and one TLS record under
// load. The owner's mutex guards it; nc is set once, before any drain.
type gather struct {
	g       stage.Gather
	nc      net.Conn
	out     []byte // buffered, in order
	spare   []byte // the buffer last written, for what is buffered next
	writing []byte // what Take moved, being written
}

// drain writes out what is buffered, each write within writeTimeout (see
// stage.Gather.Drain: mu is released during a write; on a failed write
// what is left is dropped and the error returned, the connection is
// unusable: the owner closes it).
func (g *gather) drain(mu *sync.Mutex) error { return g.g.Drain(mu, g) }

// last is drain for what goes out before the connection closes (see
// stage.Gather.Last).
func (g *gather) last(mu *sync.Mutex) error { return g.g.Last(mu, g) }

// Take moves out to be written, keeping the buffer written before for
// what is buffered next.
func (g *gather) Take() bool {
	g.recycle()
	if len(g.out) == 0 {
		return false
	}
	g.writing, g.out, g.spare = g.out, g.spare[:0], nil
	return true
}

// recycle keeps the buffer written for reuse, unless it is large.
func (g *gather) recycle() {
	if g.writing == nil {
		return
	}
	if cap(g.writing) <= maxSpare {
		g.spare = g.writing[:0]
	}
	g.writing = nil
}

func (g *gather) Write() error {
	_ = g.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := g.nc.Write(g.writing)
	return err
}

func (g *gather) Drop() {
	g.recycle()
	g.out = g.out[:0]
}
