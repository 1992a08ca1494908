package listen_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/protocol"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

func startOn(t *testing.T, addrs []string, opts listen.Options) *listen.Server {
	t.Helper()
	s := listen.New(stage.Chain(protocol.New(), forward.New(&zone{})), opts, nil)
	if err := s.Listen(addrs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// udpFrom asks dst from a socket bound to src and connected to dst: the
// kernel hands it only datagrams whose source is dst, so an answer sent
// from another address of the router is never read.
func udpFrom(t *testing.T, src, dst netip.AddrPort) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("2.many.test.", dns.TypeA)
	return udpMsgFrom(t, src, dst, m)
}

// udpMsgFrom is udpFrom asking m.
func udpMsgFrom(t *testing.T, src, dst netip.AddrPort, m *dns.Msg) (*dns.Msg, error) {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := m.Pack()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	return r, r.Unpack(buf[:n])
}

// TestWildcardAnswersFromTheAddressAsked: one socket on 0.0.0.0 takes
// queries to every local address, and each answer comes from the
// address the query went to (127.0.0.2 here; without IP_PKTINFO the
// kernel would pick 127.0.0.1 and the device would never see it).
func TestWildcardAnswersFromTheAddressAsked(t *testing.T) {
	s := startOn(t, []string{"0.0.0.0:0"}, listen.Options{})
	port := s.Addrs()[0].Port()
	for _, dst := range []string{"127.0.0.1", "127.0.0.2", "127.1.2.3"} {
		d := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		r, err := udpFrom(t, netip.MustParseAddrPort("127.0.0.1:0"), d)
		if err != nil {
			t.Errorf("UDP to %s: %v", d, err)
			continue
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Errorf("UDP to %s: %v", d, r)
		}
		// A query longer than the UDP buffer: its TC=1 answer too.
		r, err = udpMsgFrom(t, netip.MustParseAddrPort("127.0.0.1:0"), d, paddedQuery(t, "2.many.test.", 2000))
		if err != nil || !r.Truncated || len(r.Question) != 1 {
			t.Errorf("long query over UDP to %s: %v %v", d, r, err)
		}
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("3.many.test.", dns.TypeA)
		if r, _, err := c.Exchange(m, d.String()); err != nil || len(r.Answer) != 3 {
			t.Errorf("TCP to %s: %v %v", d, r, err)
		}
	}
}

// TestWildcardIPv6 binds [::] beside 0.0.0.0 on the same port (one
// socket per family) and answers ::1 from ::1.
func TestWildcardIPv6(t *testing.T) {
	s := listen.New(stage.Chain(protocol.New(), forward.New(&zone{})), listen.Options{}, nil)
	if err := s.Listen([]string{"0.0.0.0:0"}); err != nil {
		t.Fatal(err)
	}
	port := s.Addrs()[0].Port()
	if err := s.ListenOne(netip.AddrPortFrom(netip.IPv6Unspecified(), port).String()); err != nil {
		t.Skipf("no IPv6 here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, d := range []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), port), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)} {
		src := netip.AddrPortFrom(d.Addr(), 0)
		if r, err := udpFrom(t, src, d); err != nil || len(r.Answer) != 2 {
			t.Errorf("UDP to %s: %v %v", d, r, err)
		}
	}
}

// TestAccessRefuses: a client outside Access gets REFUSED over UDP and a
// closed connection over TCP, and both are counted; an allowed one is
// answered.
func TestAccessRefuses(t *testing.T) {
	acc := listen.NewAccess([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	s := startOn(t, []string{"0.0.0.0:0"}, listen.Options{Access: acc})
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.Addrs()[0].Port())

	r, err := udpFrom(t, netip.MustParseAddrPort("127.0.0.1:0"), dst)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("allowed client: %v %v", r, err)
	}
	r, err = udpFrom(t, netip.MustParseAddrPort("127.0.0.9:0"), dst)
	if err != nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Fatalf("outside client over UDP: %v %v, want REFUSED", r, err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	m := new(dns.Msg)
	m.SetQuestion("1.many.test.", dns.TypeA)
	b, _ := m.Pack()
	c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	if n, err := c.Read(make([]byte, 512)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)) {
		t.Errorf("outside client over TCP read %d octets, %v; want the connection closed", n, err)
	}
	if got := s.Stats.Denied.Load(); got != 2 {
		t.Errorf("denied %d, want 2", got)
	}
	// allow_client widens it.
	acc.Set(append(acc.Prefixes(), netip.MustParsePrefix("127.0.0.8/29")), nil, nil)
	if r, err := udpFrom(t, netip.MustParseAddrPort("127.0.0.9:0"), dst); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("after widening: %v %v", r, err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}
