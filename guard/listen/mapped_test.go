package listen_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/protocol"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// rawUDP6 sends one UDP datagram with a forged IPv6 source (a raw
// socket writes the whole IPv6 header).
func rawUDP6(t *testing.T, src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer syscall.Close(fd)
	ulen := 8 + len(payload)
	udp := make([]byte, ulen)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	copy(udp[8:], payload)
	s, d := src.Addr().As16(), dst.Addr().As16()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	add([]byte{0, 0, byte(ulen >> 8), byte(ulen), 0, 0, 0, syscall.IPPROTO_UDP})
	add(udp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	pkt := make([]byte, 40, 40+ulen)
	pkt[0] = 6 << 4
	binary.BigEndian.PutUint16(pkt[4:], uint16(ulen))
	pkt[6], pkt[7] = syscall.IPPROTO_UDP, 64
	copy(pkt[8:], s[:])
	copy(pkt[24:], d[:])
	pkt = append(pkt, udp...)
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet6{Addr: d}); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

// TestMappedSourceNotLoopback: the guard's IPv6 sockets are IPv6-only,
// so a datagram whose source is IPv4-mapped (::ffff:127.0.0.1) was
// forged on the wire (RFC 4942 §2.2). Unmapped, it passed access
// control as loopback (or as a LAN device's IPv4 address) and was
// resolved upstream, from the WAN too. It must be dropped and counted,
// and never reach the chain.
func TestMappedSourceNotLoopback(t *testing.T) {
	testenv.RequireRoot(t)
	z := &zone{}
	acc := listen.NewAccess([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")})
	s := listen.New(stage.Chain(protocol.New(), forward.New(z)), listen.Options{Access: acc}, nil)
	if err := s.ListenOne("[::]:0"); err != nil {
		t.Skipf("no IPv6 here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	dst := netip.AddrPortFrom(netip.IPv6Loopback(), s.Addrs()[0].Port())

	m := new(dns.Msg)
	m.SetQuestion("mapped.many.test.", dns.TypeA)
	b, _ := m.Pack()
	rawUDP6(t, netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"), dst, b)
	// A real ::1 client afterwards shows the forged datagram was read.
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.Queries.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r, err := udpFrom(t, netip.AddrPortFrom(netip.IPv6Loopback(), 0), dst); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("::1 client: %v %v", r, err)
	}
	if got := z.calls.Load(); got != 1 {
		t.Errorf("chain asked %d times, want 1 (the ::1 client only; the forged ::ffff:127.0.0.1 query must not get through)", got)
	}
	if got := s.Stats.Dropped.Load(); got != 1 {
		t.Errorf("dropped %d, want 1", got)
	}
}
