package device

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/policy"
)

func TestRegistryKeepsIdentityAcrossIPChangeAndMergesIPRecord(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	mac := "02:00:00:00:00:03"
	reg.ObserveQuery(mac, netip.MustParseAddrPort("8.8.8.8:53"), udpQuery(netip.MustParseAddrPort("10.0.0.2:1000"), 1, "."))
	id, _, _, _ := reg.Identify(netip.MustParseAddr("10.0.0.2"))
	if id != mac {
		t.Fatalf("id %q, want %q", id, mac)
	}
	reg.Count(id, Answered, nil)
	// New address, not yet known: kept under the address...
	id2, _, _, _ := reg.Identify(netip.MustParseAddr("10.0.0.77"))
	if id2 != "ip:10.0.0.77" {
		t.Fatalf("unknown address id %q", id2)
	}
	reg.Count(id2, RateLimited, nil)
	// ...until a logged packet ties it to the MAC.
	reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.77:40000"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	snap := reg.Snapshot()
	if len(snap) != 1 {
		t.Fatalf("records %d, want 1: %+v", len(snap), snap)
	}
	r := snap[0]
	if r.ID != mac || r.Queries != 2 || r.RateLimited != 1 || r.IPs[0] != "10.0.0.77" || len(r.IPs) != 2 {
		t.Errorf("merged record %+v", r)
	}
	kinds := map[string]string{}
	for _, a := range r.Bypass {
		kinds[a.Kind] = a.Target
	}
	if kinds["do53"] != "8.8.8.8:53" || kinds["dot"] != "1.1.1.1:853" {
		t.Errorf("bypass %+v", r.Bypass)
	}
}

func TestRegistryBootsAndLeases(t *testing.T) {
	dir := t.TempDir()
	leases := filepath.Join(dir, "dhcp.leases")
	os.WriteFile(leases, []byte("0 02:00:00:00:00:04 10.0.0.4 kettle *\n"), 0o600)
	clk := newClock()
	var mu sync.Mutex
	var exempt []string // the last exempt set given
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now, Leases: leases, FlushInterval: 10 * time.Millisecond,
		Classes: []policy.Class{{Name: "trusted", Names: []string{"kett*"}, Exempt: true}},
		OnExempt: func(m []net.HardwareAddr) {
			mu.Lock()
			defer mu.Unlock()
			exempt = exempt[:0]
			for _, hw := range m {
				exempt = append(exempt, hw.String())
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, &reg.LeasesApplied, "the leases file applied", func() bool { return reg.LeasesApplied.Load() == 1 })
	// The lease ties 10.0.0.4 to the MAC and names it.
	id, mac, d, name := reg.Identify(netip.MustParseAddr("10.0.0.4"))
	if id != "02:00:00:00:00:04" || mac != id || name != "kettle" || d.Class != "trusted" || !d.Exempt {
		t.Errorf("Identify = %q %q %+v %q", id, mac, d, name)
	}
	// The next pass of upkeep puts the device in the exempt set.
	waitUntil(t, &reg.Passes, "the device in the exempt set", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(exempt, []string{mac})
	})
	// A changed leases file is read again: the device's new name.
	if err := os.WriteFile(leases, []byte("0 02:00:00:00:00:04 10.0.0.4 kettle-2 *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, &reg.LeasesApplied, "the changed leases file applied", func() bool { return reg.LeasesApplied.Load() == 2 })
	if _, _, d, name := reg.Identify(netip.MustParseAddr("10.0.0.4")); name != "kettle-2" || d.Class != "trusted" {
		t.Errorf("after the lease changed: %+v %q", d, name)
	}
	cancel()
	<-done
	reg.Gone(mac)
	reg.Identify(netip.MustParseAddr("10.0.0.4"))
	clk.add(time.Hour)
	reg.Identify(netip.MustParseAddr("10.0.0.4"))
	if b := reg.Snapshot()[0].Boots; b != 2 {
		t.Errorf("boots %d, want 2 (neighbour gone, then an hour of silence)", b)
	}
}
