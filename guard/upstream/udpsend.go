package upstream

import (
	"fmt"
	"sync"

	"github.com/dnsguard/dnsguard/guard/stage"
)

// muxSends sends a udpMux's queries, each from its own socket, gathered
// (see stage.Gather): the first query to send lets the goroutines already
// runnable (misses read in the same batch) queue theirs, then sends them
// all back to back, where each was sent on its own before, so that the
// upstream (and the kernel on its way) takes them in one wake-up. A lone
// query is sent at once.
//
// A query may give up before the drain sends it: its socket must then not
// be closed (and its number reused) while, or before, the drain names it.
// So the drain marks the sockets it sends from (muxSock.sending, under
// the mux's mu), skipping those already done with, and a socket to close
// while it is marked is handed back to the reader when the send is over
// (closeLater); each queued query holds its muxSock (refs) until then.
type muxSends struct {
	m                      *udpMux
	mu                     sync.Mutex
	g                      stage.Gather
	stage.Pieces[*muxSock]             // the queries, each with its socket (Take, Drop: under mu)
	failed                 []muxFailed // the drain's
	batches                int         // Write calls (the drain's; tests count them)
}

// muxFailed is a query whose send failed.
type muxFailed struct {
	s   *muxSock
	err error
}

// send queues b (copied) to go from s's socket, holding s until it is
// sent, and drains; it yields first (Drain) only when other queries are
// out (busy), as under load, where others are likely to be sent with it:
// a lone query is not put behind unrelated work.
func (w *muxSends) send(s *muxSock, b []byte, busy bool) {
	s.refs.Add(1)
	w.mu.Lock()
	w.Add(b, s)
	// Write fails no drain: a failed send fails its own query.
	if busy {
		_ = w.g.Drain(&w.mu, w)
	} else {
		_ = w.g.DrainNow(&w.mu, w)
	}
	w.mu.Unlock()
}

// Write sends the queries taken, each from its socket, skipping those
// whose query is over (answered, timed out, or given up: finish). A send
// that fails fails its query.
func (w *muxSends) Write() error {
	m := w.m
	out, ps := w.Taken()
	w.batches++
	m.mu.Lock()
	for _, p := range ps {
		if s := p.M; s.closeAt.IsZero() && !s.answered {
			s.sending = true
		}
	}
	m.mu.Unlock()
	for _, p := range ps {
		// sending is set above and cleared below by this drain alone.
		if s := p.M; s.sending {
			if err := sendto(int(s.fd), out[p.Start:p.End], m.to); err != nil {
				w.failed = append(w.failed, muxFailed{s, err})
			}
		}
	}
	wake := false
	m.mu.Lock()
	for _, f := range w.failed {
		if !f.s.answered {
			m.answeredLocked(f.s)
			f.s.res <- muxResult{err: fmt.Errorf("send: %w", f.err)}
		}
	}
	clear(w.failed)
	w.failed = w.failed[:0]
	for _, p := range ps {
		s := p.M
		if s.sending {
			s.sending = false
			if s.closeLater {
				s.closeLater = false
				m.done = append(m.done, s)
				wake = true
			}
		}
		m.unref(s)
	}
	m.mu.Unlock()
	if wake {
		m.wakeReader()
	}
	return nil
}
