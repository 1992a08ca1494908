package listen

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// TestSpillBoundAndJoin: with every reader but one waiting on a slow
// upstream, the queries the last reader takes are spilled onto at most
// MaxSpill workers and dropped (counted) beyond; once the upstream
// answers, the spilled ones are answered and their workers wait for more;
// Serve returns only after every spill worker has exited.
func TestSpillBoundAndJoin(t *testing.T) {
	gate := make(chan struct{})
	h := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		stage.Waiting(ctx)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return stage.Synth(req, dns.RcodeNameError, nil, nil)
	})
	const maxSpill = 4
	s := New(h, Options{UDPReaders: 8, MaxSpill: maxSpill}, nil)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() { s.Serve(ctx); close(served) }()

	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One query at a time until one is dropped: the readers take the
	// first ones and wait, then the spill workers fill, then drops.
	sent := 0
	for deadline := time.Now().Add(10 * time.Second); s.Stats.Dropped.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no query dropped after %d sent (spilled %d)", sent, s.Stats.Spilled.Load())
		}
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.test.", sent), dns.TypeA)
		b, _ := m.Pack()
		c.Write(b)
		sent++
		time.Sleep(time.Millisecond)
	}
	if n := s.Stats.Spilled.Load(); n != maxSpill {
		t.Errorf("%d queries spilled while the upstream held them, want MaxSpill %d", n, maxSpill)
	}
	if n := s.spills.Running(); n != maxSpill {
		t.Errorf("%d spill workers, want %d", n, maxSpill)
	}
	close(gate)
	// Every query not dropped is answered.
	want := sent - int(s.Stats.Dropped.Load())
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range want {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, want, err)
		}
	}
	cancel()
	<-served
	if n := s.spills.Running(); n != 0 {
		t.Errorf("%d spill workers after Serve returned, want 0", n)
	}
}
