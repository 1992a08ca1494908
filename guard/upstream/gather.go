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
	g   stage.Gather
	nc  net.Conn
	out []byte // buffered, in order
	cur []byte // what Take moved, being written; once written, the buffer for what is buffered next
}

// drain writes out what is buffered, each write within writeTimeout (see
// stage.Gather.Drain: mu is released during a write; on a failed write
// what is left is dropped and the error returned, the connection is
// unusable: the owner closes it).
func (g *gather) drain(mu *sync.Mutex) error { return g.g.Drain(mu, g) }

// last is drain for what goes out before the connection closes (see
// stage.Gather.Last).
func (g *gather) last(mu *sync.Mutex) error { return g.g.Last(mu, g) }

// Take moves out to be written; the buffer written before (the last
// Write is over when Take is called) takes what is buffered next, unless
// it is large.
func (g *gather) Take() bool {
	if len(g.out) == 0 {
		return false
	}
	g.out, g.cur = g.cur[:0], g.out
	if cap(g.out) > maxSpare {
		g.out = nil
	}
	return true
}

func (g *gather) Write() error {
	_ = g.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := g.nc.Write(g.cur)
	return err
}

func (g *gather) Drop() { g.out = g.out[:0] }
