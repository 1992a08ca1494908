package device

import (
	"net/netip"
	"testing"
	"time"
)

func TestRegistryRetransmissionsAreNoEvidence(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	src := netip.MustParseAddrPort("10.0.0.2:5000")
	for range 50 {
		clk.add(time.Second)
		reg.ObserveQuery("02:00:00:00:00:09", netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(src, 0x1234, "same.example."))
	}
	if got := reg.Snapshot()[0].Observed; got != 1 {
		t.Errorf("observed %d, want 1 (the rest are retransmissions)", got)
	}
	// Retries of one query from fresh ports are retransmissions too: three
	// of them are not a constant ID.
	for i := range 3 {
		clk.add(time.Second)
		reg.ObserveQuery("02:00:00:00:00:09", netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(netip.AddrPortFrom(src.Addr(), uint16(6000+i)), 0x5678, "retry.example."))
	}
	if r := reg.Snapshot()[0]; r.Observed != 2 || r.Strict {
		t.Errorf("retries on new ports: observed %d strict %v, want 2 and not strict", r.Observed, r.Strict)
	}
}

// TestRegistryRetransmissionIgnoresCase: a retry of one question in other
// letter case (a stub doing 0x20) is the same question: not new evidence.
func TestRegistryRetransmissionIgnoresCase(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	src := netip.MustParseAddrPort("10.0.0.2:5000")
	dst := netip.MustParseAddrPort("10.0.0.1:53")
	for _, name := range []string{"case.example.", "CaSe.ExAmPlE.", "CASE.EXAMPLE."} {
		clk.add(time.Second)
		reg.ObserveQuery("02:00:00:00:00:0a", dst, udpQuery(src, 0x4242, name))
	}
	clk.add(time.Second)
	reg.ObserveQuery("02:00:00:00:00:0a", dst, udpQuery(src, 0x4242, "other.example."))
	if got := reg.Snapshot()[0].Observed; got != 2 {
		t.Errorf("observed %d, want 2 (one question in three spellings, one other)", got)
	}
}

// TestRecentQueries: the retransmission filter, try by try.
func TestRecentQueries(t *testing.T) {
	sec := int64(time.Second)
	var r recentQueries
	for i, tc := range []struct {
		key   uint64
		at    int64
		retry bool
	}{
		{1, 0, false},        // first try
		{1, 10 * sec, true},  // within the window
		{1, 39 * sec, true},  // within the window of the last try, not of the first
		{1, 70 * sec, false}, // past it: a new query
		{2, 71 * sec, false}, // another question
		{3, 72 * sec, false}, // ... six more fill the eight slots
		{4, 72 * sec, false}, //
		{5, 72 * sec, false}, //
		{6, 72 * sec, false}, //
		{7, 72 * sec, false}, //
		{8, 72 * sec, false}, //
		{2, 73 * sec, true},  // still held
		{9, 74 * sec, false}, // pushes out the oldest slot, key 1's
		{1, 75 * sec, false}, // forgotten: new again (in 2's slot)
		{2, 76 * sec, false}, // pushed out by 1
		{9, 76 * sec, true},  // held
	} {
		if got := r.retry(tc.key, tc.at); got != tc.retry {
			t.Fatalf("try %d (key %d at %ds): retry %v, want %v", i, tc.key, tc.at/sec, got, tc.retry)
		}
	}
	r.reset()
	if r.retry(9, 77*sec) {
		t.Error("a retry after reset")
	}
}
