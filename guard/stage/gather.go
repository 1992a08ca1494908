package stage

import (
	"runtime"
	"sync"
)

// Gather is the write side of a socket shared by the goroutines that
// answer or ask over it (a DoT/TCP or HTTP/2 connection's queries, a UDP
// socket's answers): each buffers what it has to send in the owner's
// Batch, under the owner's mutex, and calls Drain. The first becomes the
// writer: it lets the goroutines already runnable (answers that came in
// the same read, queries read in the same batch) buffer theirs, then
// writes all that is buffered, several pieces a syscall, until nothing is
// left; what is buffered while it writes goes out with its next write.
// The others return at once, leaving theirs to it. A lone piece is not
// delayed: with nothing else runnable the yield returns at once.
type Gather struct {
	writing bool       // a drain is writing; it writes until nothing is buffered
	idle    *sync.Cond // signalled when a drain ends (made by the first Last)
}

// A Batch is what a Gather writes: the owner's buffer of pieces.
type Batch interface {
	// Take moves what is buffered to the write side, for Write, and
	// reports whether there was anything. The owner's mutex is held.
	Take() bool
	// Write writes what Take moved. The owner's mutex is not held. An
	// error ends the drain.
	Write() error
	// Drop discards what is buffered after a failed Write (the socket
	// is unusable). The owner's mutex is held.
	Drop()
}

// Drain writes what b buffers. mu (the owner's, which guards g and b's
// buffer) is held on entry and on return but not during a write. A drain
// called while another is writing returns nil at once, leaving its
// pieces to that one. On a failed write what is left is dropped and the
// error returned.
func (g *Gather) Drain(mu *sync.Mutex, b Batch) error { return g.drain(mu, b, true) }

// DrainNow is Drain without the yield, for a piece that is likely alone
// (nothing else out): a yield costs little then, but on a busy scheduler
// (other work runnable, not pieces to gather) it can delay the piece.
func (g *Gather) DrainNow(mu *sync.Mutex, b Batch) error { return g.drain(mu, b, false) }

func (g *Gather) drain(mu *sync.Mutex, b Batch, yield bool) error {
	if g.writing {
		return nil
	}
	g.writing = true
	if yield {
		// Let the goroutines already runnable buffer theirs first:
		// they go out with this write (scripts/bench.sh DoT misses: 1.0
		// write(2) a query, 0.04 after). With nothing else runnable
		// Gosched returns at once.
		mu.Unlock()
		runtime.Gosched()
		mu.Lock()
	}
	var err error
	for err == nil && b.Take() {
		mu.Unlock()
		err = b.Write()
		mu.Lock()
	}
	if err != nil {
		b.Drop()
	}
	g.writing = false
	if g.idle != nil {
		g.idle.Broadcast()
	}
	return err
}

// Last is Drain for what goes out before the socket closes (an HTTP/2
// GOAWAY): it does not leave its pieces to a drain in progress, whose
// write the close could cut short, but waits for it to end, so that when
// Last returns what was buffered has been written or has failed.
func (g *Gather) Last(mu *sync.Mutex, b Batch) error {
	for g.writing {
		if g.idle == nil {
			g.idle = sync.NewCond(mu)
		}
		g.idle.Wait()
	}
	return g.Drain(mu, b)
}

// Pieces is what the goroutines sharing a socket buffer for its Gather to
// write: octets in pieces, each with what goes with it (M: where an
// answer goes, the socket a query leaves from), in two buffers: the one
// pieces are added to (under the owner's mutex) and the one the drain
// writes. Its Take and Drop are a Batch's: the owner adds Write.
type Pieces[M any] struct {
	buf, cur pieceBuf[M]
}

type pieceBuf[M any] struct {
	out []byte
	ps  []Piece[M]
}

// Piece is one piece: the octets out[Start:End] of those Taken, and its M.
type Piece[M any] struct {
	Start, End int
	M          M
}

// maxKept is the largest buffer of octets Pieces keeps for reuse.
const maxKept = 64 << 10

// Add buffers b (copied: the caller may reuse it) with m.
func (p *Pieces[M]) Add(b []byte, m M) {
	start := len(p.buf.out)
	p.buf.out = append(p.buf.out, b...)
	p.buf.ps = append(p.buf.ps, Piece[M]{Start: start, End: len(p.buf.out), M: m})
}

// Take moves what is buffered to be written (see Taken); the buffer
// written before is kept for what is added next.
func (p *Pieces[M]) Take() bool {
	if len(p.buf.ps) == 0 {
		return false
	}
	p.buf, p.cur = p.cur, p.buf
	p.Drop()
	return true
}

// Drop empties the buffer pieces are added to.
func (p *Pieces[M]) Drop() {
	clear(p.buf.ps) // let go of what the Ms refer to
	p.buf.out, p.buf.ps = p.buf.out[:0], p.buf.ps[:0]
	if cap(p.buf.out) > maxKept {
		p.buf.out = nil
	}
}

// Taken is what the last Take moved, for the drain's Write.
func (p *Pieces[M]) Taken() (out []byte, ps []Piece[M]) { return p.cur.out, p.cur.ps }
