package device

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

// staticNeighbours is a neighbour table that does not follow the kernel.
func staticNeighbours(local string, byIP map[string]string) *Neighbours {
	n := &Neighbours{byIP: map[netip.Addr]string{}, local: map[netip.Addr]int{netip.MustParseAddr(local): 1}}
	for ip, mac := range byIP {
		n.byIP[netip.MustParseAddr(ip)] = mac
	}
	return n
}

func randomMAC(r *rand.Rand) string {
	var b [6]byte
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	b[0] = b[0]&^1 | 2 // unicast, locally administered
	return net.HardwareAddr(b[:]).String()
}

const (
	victimMAC   = "02:00:00:00:00:0a"
	exemptMAC   = "02:00:00:00:00:0e"
	attackerMAC = "02:00:00:00:00:66"
)

var (
	router   = netip.MustParseAddrPort("10.0.0.1:53")
	victim   = netip.MustParseAddr("10.0.0.10")
	exempt   = netip.MustParseAddr("10.0.0.14")
	attacker = netip.MustParseAddr("10.0.0.66")
)

func lan() *Neighbours {
	return staticNeighbours("10.0.0.1", map[string]string{
		victim.String(): victimMAC, exempt.String(): exemptMAC, attacker.String(): attackerMAC,
	})
}

func findView(views []View, id string) *View {
	for i := range views {
		if views[i].ID == id {
			return &views[i]
		}
	}
	return nil
}

// waitUntil returns once ok holds, looking again each time s counts an
// event (never polling); it fails the test when ok still does not hold
// after 10 s, a bound for a broken build, not a timing assertion.
func waitUntil(t *testing.T, s *Signal, what string, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		seen := s.Load()
		if ok() {
			return
		}
		if err := s.Wait(ctx, seen); err != nil {
			t.Fatalf("%s: not seen (%v)", what, err)
		}
	}
}
