package device

import (
	"context"
	"sync"
	"sync/atomic"
)

// broadcast wakes every waiter when something changes: a waiter takes
// C() before looking, then waits on it; Fire closes it. Firing with no
// waiter costs a lock and nothing else.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns a channel closed at the next Fire.
func (b *broadcast) C() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// Fire wakes everyone waiting on C.
func (b *broadcast) Fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// Signal counts events (a lease file applied, a neighbour update taken
// in, a pass of the registry's upkeep done) and wakes whoever waits for
// the next: a waiter reads Load, looks at what it waits for, and if it
// is not there yet waits with Wait(ctx, what it read). Tests wait on it
// instead of sleeping.
type Signal struct {
	n atomic.Uint64
	b broadcast
}

// Load returns the events counted so far.
func (s *Signal) Load() uint64 { return s.n.Load() }

// Wait returns once more than past events are counted, or with ctx's
// error when ctx is done first.
func (s *Signal) Wait(ctx context.Context, past uint64) error {
	for {
		ch := s.b.C() // before looking, so an event in between is not missed
		if s.n.Load() > past {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add counts one event and wakes the waiters.
func (s *Signal) add() {
	s.n.Add(1)
	s.b.Fire()
}
