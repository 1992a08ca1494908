package stage

import (
	"context"
	"sync"

	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Inflight is the stage that counts the queries in progress on a chain,
// so that a chain replaced by a reload can wait for them (Wait) before
// what it holds is released. The zero value is ready.
type Inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0, if a Wait made it
}

func (f *Inflight) Name() string { return "inflight" }

func (f *Inflight) Wrap(h Handler) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) (*dnswire.Reply, error) {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
		defer f.done()
		return h.ServeDNS(ctx, req)
	})
}

func (f *Inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// Wait returns when no query is in progress, or when ctx ends.
func (f *Inflight) Wait(ctx context.Context) {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}
