package device

import (
	"context"
	"errors"
	"testing"
)

// TestSignal: Wait returns at once for events already counted, wakes at
// the next event, and gives up with ctx's error.
func TestSignal(t *testing.T) {
	var s Signal
	s.add()
	if err := s.Wait(context.Background(), 0); err != nil || s.Load() != 1 {
		t.Fatalf("counted event: %v, count %d", err, s.Load())
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(done, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("no event, ctx done: %v", err)
	}
	woken := make(chan error)
	go func() { woken <- s.Wait(context.Background(), 1) }()
	s.add()
	if err := <-woken; err != nil || s.Load() != 2 {
		t.Fatalf("woken: %v, count %d", err, s.Load())
	}
}
