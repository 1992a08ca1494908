package device

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func ndmsg(typ netlink.HeaderType, ifindex int32, state uint16, attrs map[uint16][]byte) netlink.Message {
	b := make([]byte, unix.SizeofNdMsg)
	binary.NativeEndian.PutUint32(b[4:], uint32(ifindex))
	binary.NativeEndian.PutUint16(b[8:], state)
	return netlink.Message{Header: netlink.Header{Type: typ}, Data: append(b, encodeAttrs(attrs)...)}
}

func ifaddrmsg(typ netlink.HeaderType, bits byte, ifindex uint32, attrs map[uint16][]byte) netlink.Message {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[1] = bits
	binary.NativeEndian.PutUint32(b[4:], ifindex)
	return netlink.Message{Header: netlink.Header{Type: typ}, Data: append(b, encodeAttrs(attrs)...)}
}

func encodeAttrs(attrs map[uint16][]byte) []byte {
	ae := netlink.NewAttributeEncoder()
	for t, v := range attrs {
		ae.Bytes(t, v)
	}
	b, _ := ae.Encode()
	return b
}

func TestParseRtnl(t *testing.T) {
	mac := []byte{2, 0, 0, 0, 0, 7}
	v4 := netip.MustParseAddr("10.9.0.7").AsSlice()
	v6 := netip.MustParseAddr("fd00::7").AsSlice()
	neighs := []struct {
		name string
		m    netlink.Message
		ok   bool
		want neighUpdate
	}{
		{"ipv4", ndmsg(unix.RTM_NEWNEIGH, 3, unix.NUD_REACHABLE, map[uint16][]byte{unix.NDA_DST: v4, unix.NDA_LLADDR: mac}), true,
			neighUpdate{ip: netip.MustParseAddr("10.9.0.7"), mac: mac, state: unix.NUD_REACHABLE, linkIndex: 3}},
		{"ipv6 deleted", ndmsg(unix.RTM_DELNEIGH, 4, unix.NUD_STALE, map[uint16][]byte{unix.NDA_DST: v6, unix.NDA_LLADDR: mac}), true,
			neighUpdate{del: true, ip: netip.MustParseAddr("fd00::7"), mac: mac, state: unix.NUD_STALE, linkIndex: 4}},
		{"v4-mapped", ndmsg(unix.RTM_NEWNEIGH, 3, unix.NUD_REACHABLE, map[uint16][]byte{unix.NDA_DST: net.ParseIP("10.9.0.7"), unix.NDA_LLADDR: mac}), true,
			neighUpdate{ip: netip.MustParseAddr("10.9.0.7"), mac: mac, state: unix.NUD_REACHABLE, linkIndex: 3}},
		{"bridge fdb entry (no address)", ndmsg(unix.RTM_NEWNEIGH, 3, unix.NUD_REACHABLE, map[uint16][]byte{unix.NDA_LLADDR: mac}), false, neighUpdate{}},
		{"bad address", ndmsg(unix.RTM_NEWNEIGH, 3, 0, map[uint16][]byte{unix.NDA_DST: {1, 2, 3}}), false, neighUpdate{}},
		{"short", netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWNEIGH}, Data: make([]byte, 5)}, false, neighUpdate{}},
	}
	for _, c := range neighs {
		u, ok := parseNeigh(c.m)
		if ok != c.ok || ok && (u.del != c.want.del || u.ip != c.want.ip || u.mac.String() != c.want.mac.String() || u.state != c.want.state || u.linkIndex != c.want.linkIndex) {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, u, ok, c.want, c.ok)
		}
	}
	addrs := []struct {
		name string
		m    netlink.Message
		ok   bool
		want addrUpdate
	}{
		{"ipv4", ifaddrmsg(unix.RTM_NEWADDR, 24, 3, map[uint16][]byte{unix.IFA_ADDRESS: v4, unix.IFA_LOCAL: v4}), true,
			addrUpdate{ip: netip.MustParseAddr("10.9.0.7"), bits: 24, linkIndex: 3}},
		{"point-to-point: local, not the peer", ifaddrmsg(unix.RTM_NEWADDR, 32, 5, map[uint16][]byte{unix.IFA_ADDRESS: {10, 0, 0, 2}, unix.IFA_LOCAL: v4}), true,
			addrUpdate{ip: netip.MustParseAddr("10.9.0.7"), bits: 32, linkIndex: 5}},
		{"ipv6 removed", ifaddrmsg(unix.RTM_DELADDR, 64, 3, map[uint16][]byte{unix.IFA_ADDRESS: v6}), true,
			addrUpdate{del: true, ip: netip.MustParseAddr("fd00::7"), bits: 64, linkIndex: 3}},
		{"prefix too long", ifaddrmsg(unix.RTM_NEWADDR, 33, 3, map[uint16][]byte{unix.IFA_ADDRESS: v4}), false, addrUpdate{}},
		{"no address", ifaddrmsg(unix.RTM_NEWADDR, 24, 3, nil), false, addrUpdate{}},
	}
	for _, c := range addrs {
		u, ok := parseAddr(c.m)
		if ok != c.ok || ok && u != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, u, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRtnl(f *testing.F) {
	f.Add(ndmsg(unix.RTM_NEWNEIGH, 3, 2, map[uint16][]byte{unix.NDA_DST: {10, 0, 0, 1}, unix.NDA_LLADDR: {2, 0, 0, 0, 0, 1}}).Data)
	f.Add(ifaddrmsg(unix.RTM_NEWADDR, 24, 3, map[uint16][]byte{unix.IFA_LOCAL: {10, 0, 0, 1}}).Data)
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, ok := parseNeigh(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWNEIGH}, Data: b}); ok && !u.ip.IsValid() {
			t.Fatalf("neighbour without an address: %+v", u)
		}
		if u, ok := parseAddr(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR}, Data: b}); ok && (!u.ip.IsValid() || u.bits > u.ip.BitLen()) {
			t.Fatalf("bad address %+v", u)
		}
		if u, ok := parseLink(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: b}); ok && (!u.link || u.name == "" || u.linkIndex <= 0) {
			t.Fatalf("bad link %+v", u)
		}
	})
}

// The subscription against a real kernel in a namespace: what exists is
// listed, then IPv6 and IPv4 changes arrive, additions and removals.
func TestRtnlSubscribe(t *testing.T) {
	ns := lanNamespace(t, "dgrt")
	sh(t, "ip", "-n", ns, "neigh", "add", "10.9.0.7", "lladdr", "02:00:00:00:00:07", "dev", "lan0", "nud", "permanent")

	ctx, cancel := context.WithCancel(context.Background())
	neigh := make(chan neighUpdate, 64)
	addr := make(chan addrUpdate, 64)
	errs := make(chan error, 1)
	if err := testenv.InNetns(ns, func() error {
		return rtnlSubscribe(ctx, neigh, addr, func(err error) { errs <- err })
	}); err != nil {
		t.Fatal(err)
	}
	waitNeigh := func(what string, f func(neighUpdate) bool) { t.Helper(); receiveUntil(t, neigh, what, f) }
	waitAddr := func(what string, f func(addrUpdate) bool) { t.Helper(); receiveUntil(t, addr, what, f) }
	waitNeigh("listed neighbour", func(u neighUpdate) bool {
		return u.ip == netip.MustParseAddr("10.9.0.7") && u.mac.String() == "02:00:00:00:00:07" && !u.del
	})
	waitAddr("listed address", func(u addrUpdate) bool {
		return u.ip == netip.MustParseAddr("10.9.0.1") && u.bits == 24 && !u.del
	})
	sh(t, "ip", "-n", ns, "addr", "add", "fd00:9::1/64", "dev", "lan0", "nodad")
	waitAddr("IPv6 address added", func(u addrUpdate) bool {
		return u.ip == netip.MustParseAddr("fd00:9::1") && u.bits == 64 && !u.del
	})
	sh(t, "ip", "-n", ns, "neigh", "add", "fd00:9::7", "lladdr", "02:00:00:00:00:17", "dev", "lan0", "nud", "reachable")
	waitNeigh("IPv6 neighbour added", func(u neighUpdate) bool {
		return u.ip == netip.MustParseAddr("fd00:9::7") && u.mac.String() == "02:00:00:00:00:17" && !u.del
	})
	sh(t, "ip", "-n", ns, "neigh", "del", "10.9.0.7", "dev", "lan0")
	waitNeigh("neighbour deleted", func(u neighUpdate) bool { return u.ip == netip.MustParseAddr("10.9.0.7") && u.del })
	sh(t, "ip", "-n", ns, "addr", "del", "10.9.0.1/24", "dev", "lan0")
	waitAddr("address removed", func(u addrUpdate) bool { return u.ip == netip.MustParseAddr("10.9.0.1") && u.del })

	cancel()
	for range neigh { // closed by the reader once stopped
	}
	for range addr {
	}
	select {
	case err := <-errs:
		t.Errorf("a clean stop reported %v", err)
	default:
	}
}

// receiveUntil takes updates from ch until one satisfies f; it fails the
// test if none has within 10 s.
func receiveUntil[T any](t *testing.T, ch <-chan T, what string, f func(T) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case u := <-ch:
			if f(u) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}
