package stage_test

import (
	"context"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
)

// TestInflightWait: Wait returns at once with nothing in progress, waits
// for every query in progress, and gives up when its context ends.
func TestInflightWait(t *testing.T) {
	var f stage.Inflight
	f.Wait(context.Background()) // nothing in progress

	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	h := f.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		entered <- struct{}{}
		<-release
		return nil, nil
	}))
	served := make(chan struct{}, 2)
	for range 2 {
		go func() {
			h.ServeDNS(context.Background(), &stage.Request{})
			served <- struct{}{}
		}()
	}
	<-entered
	<-entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Wait(ctx) // ends with its context, queries still in progress

	waited := make(chan struct{})
	go func() {
		f.Wait(context.Background())
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("Wait returned with two queries in progress")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-served
	<-served
	<-waited // both done: Wait returns
	f.Wait(context.Background())
}
