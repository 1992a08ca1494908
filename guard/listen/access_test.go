package listen

import (
	"net/netip"
	"testing"
)

func TestAccessAllow(t *testing.T) {
	a := NewAccess(append(Loopback(),
		netip.MustParsePrefix("10.20.0.0/24"),
		netip.MustParsePrefix("fd20::/64"),
		netip.MustParsePrefix("fe80::/64"),
		netip.MustParsePrefix("::ffff:192.0.2.7/128"), // a v4-mapped form is stored unmapped
		netip.MustParsePrefix("203.0.113.9/32"),       // the router's WAN address
	))
	a.Set(a.Prefixes(), []int{7}, []string{"br-lan"})
	for _, tc := range []struct {
		client  string
		ifindex int
		want    bool
	}{
		{"127.0.0.1", 0, true},
		{"127.0.0.53", 0, true},
		{"::1", 0, true},
		{"::ffff:127.0.0.1", 0, true},
		{"10.20.0.77", 3, true},
		{"::ffff:10.20.0.77", 0, true},
		{"10.20.1.77", 0, false},
		{"fd20::1234", 0, true},
		{"fd21::1", 0, false},
		{"192.0.2.7", 0, true},
		{"192.0.2.8", 0, false},
		{"203.0.113.9", 0, true},
		{"8.8.8.8", 0, false},
		{"2001:db8::1", 0, false},
		{"fe80::1", 7, true},        // link-local on the LAN interface
		{"fe80::1", 9, false},       // link-local on another interface (WAN)
		{"fe80::1%br-lan", 0, true}, // TCP: the zone names the interface
		{"fe80::1%eth1", 0, false},  //
		{"fe80::1", 0, true},        // neither known: the prefix decides
		{"169.254.3.3", 7, false},   // IPv4 link-local: by prefix only
		{"::", 0, false},
	} {
		if got := a.Allow(netip.MustParseAddr(tc.client), tc.ifindex); got != tc.want {
			t.Errorf("Allow(%s, if %d) = %v, want %v", tc.client, tc.ifindex, got, tc.want)
		}
	}
	// Loopback is not special: an Access without it refuses it.
	if NewAccess(nil).Allow(netip.MustParseAddr("127.0.0.1"), 0) {
		t.Error("an empty Access allowed loopback")
	}
}

func TestAccessAllowAllocatesNothing(t *testing.T) {
	a := NewAccess(append(Loopback(), netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("fd20::/64")))
	a.Set(a.Prefixes(), []int{7}, []string{"br-lan"})
	clients := []netip.Addr{netip.MustParseAddr("10.20.0.5"), netip.MustParseAddr("fd20::5"),
		netip.MustParseAddr("fe80::5%br-lan"), netip.MustParseAddr("8.8.8.8")}
	if n := testing.AllocsPerRun(100, func() {
		for _, c := range clients {
			a.Allow(c, 0)
		}
	}); n != 0 {
		t.Errorf("Allow allocates %v times per run", n)
	}
}

func TestPktinfoRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		ifindex int
	}{{"192.0.2.1", 0}, {"fd20::1", 0}, {"fe80::1", 4}} {
		src := netip.MustParseAddr(tc.addr)
		b := make([]byte, 0, oobSize)
		b = appendPktinfo(b, src, tc.ifindex)
		if len(b) > oobSize {
			t.Fatalf("%s: control message %d octets, room for %d", tc.addr, len(b), oobSize)
		}
		// What we send parses back as what the kernel hands us: the
		// same layout (in_pktinfo's ipi_addr is not set on sending, so
		// for IPv4 compare only the family).
		got, idx, ok := parsePktinfo(b)
		if !ok {
			t.Fatalf("%s: not parsed", tc.addr)
		}
		if src.Is6() && (got != src || idx != tc.ifindex) {
			t.Errorf("%s: parsed %s if %d", tc.addr, got, idx)
		}
		if src.Is4() && !got.Is4() {
			t.Errorf("%s: parsed %s", tc.addr, got)
		}
		if n := testing.AllocsPerRun(100, func() {
			b = appendPktinfo(b[:0], src, tc.ifindex)
			parsePktinfo(b)
		}); n != 0 {
			t.Errorf("%s: %v allocations", tc.addr, n)
		}
	}
	for _, junk := range [][]byte{nil, {1, 2, 3}, make([]byte, 64)} {
		if _, _, ok := parsePktinfo(junk); ok {
			t.Errorf("parsed junk %v", junk)
		}
	}
}

// BenchmarkAccessAllow: a home router's list (loopback, ~10 own
// addresses, the LAN's IPv4, ULA and link-local prefixes), a LAN client
// near the end of it.
func BenchmarkAccessAllow(b *testing.B) {
	ps := Loopback()
	for i := range 10 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32))
	}
	ps = append(ps, netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd20::/64"), netip.MustParsePrefix("fe80::/64"))
	a := NewAccess(ps)
	c4, c6 := netip.MustParseAddr("192.168.1.77"), netip.MustParseAddr("fd20::77")
	for b.Loop() {
		a.Allow(c4, 3)
		a.Allow(c6, 3)
	}
}
