package device

import (
	"net/netip"
	"testing"
)

// TestOrigRing: a redirected query's original destination is found by
// its source (an IPv4-mapped one too) and ID, a new destination for the
// same key replaces the old, and beyond the ring's size the oldest keys
// are forgotten.
func TestOrigRing(t *testing.T) {
	var o origRing
	src := netip.MustParseAddrPort("10.0.0.2:4000")
	dns1, dns2 := netip.MustParseAddrPort("8.8.8.8:53"), netip.MustParseAddrPort("9.9.9.9:53")
	if _, ok := o.get(src, 1); ok {
		t.Fatal("found in an empty ring")
	}
	o.put(src, 1, dns1)
	if d, ok := o.get(netip.MustParseAddrPort("[::ffff:10.0.0.2]:4000"), 1); !ok || d != dns1 {
		t.Errorf("mapped source: %v %v", d, ok)
	}
	if _, ok := o.get(src, 2); ok {
		t.Error("found under another ID")
	}
	o.put(src, 1, dns2)
	if d, _ := o.get(src, 1); d != dns2 {
		t.Errorf("replaced destination: %v", d)
	}
	n := len(o.keys)
	for i := range n {
		o.put(netip.AddrPortFrom(src.Addr(), uint16(5000+i)), 7, dns1)
	}
	if _, ok := o.get(src, 1); ok {
		t.Errorf("the oldest key kept after %d newer", n)
	}
	if d, ok := o.get(netip.AddrPortFrom(src.Addr(), uint16(5000+n-1)), 7); !ok || d != dns1 {
		t.Errorf("the newest key: %v %v", d, ok)
	}
	if len(o.m) != n {
		t.Errorf("%d keys held, want the ring's %d", len(o.m), n)
	}
}
