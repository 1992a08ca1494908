package main

import (
	be "encoding/binary"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// TestHomeNetworkNoMulticastSource: a device sending a DNS query to a
// broadcast (10.N.0.255, 255.255.255.255) or multicast (ff02::1, ff02::2)
// address must not get an answer whose source is that address. Before,
// the redirect rule NATed such queries to the router's address, the
// guard answered, and conntrack's reverse NAT sent the answer out on the
// LAN from ff02::1 or 10.N.0.255, source addresses no host may use
// (RFC 4291 §2.7, RFC 1122 §3.2.1.3); the device's own stack drops most
// of them, so the test reads the wire (a packet socket on its eth0).
// The guard does not even resolve such a query.
func TestHomeNetworkNoMulticastSource(t *testing.T) {
	h := newHome(t)
	h.startDnsmasq(t)
	h.startGuard(t)
	if out := h.dig(t, h.dev, "@"+h.lan4, "unicast.example"); digStatus(out) != "NOERROR" {
		t.Fatalf("unicast query: %s", out)
	}
	m := new(dns.Msg)
	m.SetQuestion("bcast.example.", dns.TypeA)
	q, _ := m.Pack()
	bcast := netip.MustParseAddr(h.net4 + ".255")
	err := testenv.InNetns(h.dev, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ps, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_ALL)))
		if err != nil {
			return err
		}
		defer syscall.Close(ps)
		if err := syscall.Bind(ps, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
		syscall.SetsockoptTimeval(ps, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)

		c4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(h.dev4)})
		if err != nil {
			return err
		}
		defer c4.Close()
		rc, _ := c4.SyscallConn()
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1) })
		c6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		defer c6.Close()
		for _, dst := range []string{bcast.String(), "255.255.255.255"} {
			if _, err := c4.WriteToUDP(q, &net.UDPAddr{IP: net.ParseIP(dst), Port: 53}); err != nil {
				return err
			}
		}
		for _, dst := range []string{"ff02::1", "ff02::2"} {
			if _, err := c6.WriteToUDP(q, &net.UDPAddr{IP: net.ParseIP(dst), Port: 53, Zone: ifi.Name}); err != nil {
				return err
			}
		}
		buf := make([]byte, 2048)
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
			n, _, err := syscall.Recvfrom(ps, buf, 0)
			if err != nil {
				continue // the read timeout: look at the clock again
			}
			src, sport, ok := udpSource(buf[:n])
			if !ok || sport != 53 {
				continue
			}
			if src.IsMulticast() || src == bcast || src == netip.MustParseAddr("255.255.255.255") {
				t.Errorf("an answer on the LAN from %s", src)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not answered at all: not even resolved (a query that cannot be
	// answered from the address it was sent to is dropped).
	for _, n := range h.up.all() {
		if strings.HasPrefix(n, "bcast.example") {
			t.Errorf("the upstream was asked %s", n)
		}
	}
}

// udpSource returns the source address and port of a UDP packet (IPv4
// or IPv6 without extension headers).
func udpSource(p []byte) (netip.Addr, uint16, bool) {
	if len(p) < 1 {
		return netip.Addr{}, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+8 || p[9] != syscall.IPPROTO_UDP {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom4([4]byte(p[12:16])), be.BigEndian.Uint16(p[ihl:]), true
	case 6:
		if len(p) < 48 || p[6] != syscall.IPPROTO_UDP {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom16([16]byte(p[8:24])), be.BigEndian.Uint16(p[40:]), true
	}
	return netip.Addr{}, 0, false
}
