package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// udpServer is a Do53 test server on 127.0.0.1 (UDP, and TCP on the same
// port) whose reply function can send anything, from anywhere.
type udpServer struct {
	conn *net.UDPConn
	addr netip.AddrPort

	mu    sync.Mutex
	got   []udpQuery
	reply func(s *udpServer, from netip.AddrPort, q *dns.Msg)
}

type udpQuery struct {
	from netip.AddrPort
	msg  *dns.Msg
	raw  []byte
}

// startUDP starts a UDP server; reply nil answers AnswerA("192.0.2.1").
func startUDP(t *testing.T, reply func(s *udpServer, from netip.AddrPort, q *dns.Msg)) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if reply == nil {
		reply = func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
			s.send(from, upstreamtest.AnswerA("192.0.2.1")(q))
		}
	}
	s := &udpServer{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), reply: reply}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			raw := append([]byte(nil), buf[:n]...)
			q := new(dns.Msg)
			if q.Unpack(raw) != nil {
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, udpQuery{from, q, raw})
			s.mu.Unlock()
			s.reply(s, from, q)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

func (s *udpServer) send(to netip.AddrPort, m *dns.Msg) {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	_, _ = s.conn.WriteToUDPAddrPort(b, to)
}

func (s *udpServer) queries() []udpQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]udpQuery(nil), s.got...)
}

func (s *udpServer) url() string { return "udp://" + s.addr.String() }

func newUDPTransport(t *testing.T, url string, randomize bool) (Transport, *Counters) {
	t.Helper()
	c := new(Counters)
	tr, err := NewTransport(url, Options{Randomize0x20: randomize}, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, c
}

func TestUDPFreshIDsAndPorts(t *testing.T) {
	srv := startUDP(t, nil)
	tr, c := newUDPTransport(t, srv.url(), false)
	const n = 200
	for i := range n {
		q := query("example.com", dns.TypeA)
		resp, err := tr.Exchange(testCtx(t), q, QueryOptions{})
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if got := answerA(t, resp); got != "192.0.2.1" {
			t.Fatalf("answer %s", got)
		}
		if q.Id != 0 || q.IsEdns0() != nil {
			t.Fatal("Exchange changed the caller's query")
		}
	}
	got := srv.queries()
	if len(got) != n {
		t.Fatalf("server saw %d queries, want %d", len(got), n)
	}
	ids, ports := map[uint16]bool{}, map[uint16]bool{}
	var minPort, maxPort, minID, maxID uint16 = 65535, 0, 65535, 0
	sequential := 0
	for i, g := range got {
		ids[g.msg.Id], ports[g.from.Port()] = true, true
		minPort, maxPort = min(minPort, g.from.Port()), max(maxPort, g.from.Port())
		minID, maxID = min(minID, g.msg.Id), max(maxID, g.msg.Id)
		if i > 0 && (g.msg.Id-got[i-1].msg.Id < 16 || g.from.Port()-got[i-1].from.Port() < 16) {
			sequential++
		}
		opt := g.msg.IsEdns0()
		if opt == nil || opt.UDPSize() != ednsSize {
			t.Fatalf("query without EDNS(0) %d: %v", ednsSize, g.msg)
		}
		if paddingOf(g.msg) >= 0 {
			t.Fatal("cleartext query padded (RFC 7830 §6)")
		}
		if g.msg.Question[0].Name != "example.com." {
			t.Fatalf("0x20 used without being asked: %s", g.msg.Question[0].Name)
		}
	}
	// 200 draws from 64k values: a repeat or two is chance, more is not.
	if len(ids) < n-5 || len(ports) < n-5 {
		t.Errorf("%d distinct IDs, %d distinct ports in %d queries", len(ids), len(ports), n)
	}
	if maxID-minID < 40000 || maxPort-minPort < 40000 {
		t.Errorf("narrow spread: IDs %d-%d, ports %d-%d", minID, maxID, minPort, maxPort)
	}
	if sequential > 5 {
		t.Errorf("%d queries within 16 of the previous ID or port", sequential)
	}
	if q := c.Queries.Load(); q != n {
		t.Errorf("Queries counter %d, want %d", q, n)
	}
}

func TestUDPCaseRandomization(t *testing.T) {
	srv := startUDP(t, nil)
	tr, _ := newUDPTransport(t, srv.url(), true)
	const name = "www.some-long-name.example.com."
	for range 20 {
		resp, err := tr.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Question[0].Name != name || resp.Answer[0].Header().Name != name {
			t.Fatalf("answer not given back in the asked case: %v", resp)
		}
	}
	mixed := map[string]bool{}
	for _, g := range srv.queries() {
		mixed[g.msg.Question[0].Name] = true
	}
	if len(mixed) < 15 {
		t.Errorf("only %d distinct casings in 20 queries: %v", len(mixed), mixed)
	}
	// The per-query option turns it off.
	tr2, _ := newUDPTransport(t, srv.url(), true)
	if _, err := tr2.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{Case0x20: Case0x20Off}); err != nil {
		t.Fatal(err)
	}
	if got := srv.queries(); got[len(got)-1].msg.Question[0].Name != name {
		t.Errorf("override off still randomised: %s", got[len(got)-1].msg.Question[0].Name)
	}
	// And on, over a transport whose default is off (a strict device's
	// query): the name goes out in mixed case, and comes back as asked.
	tr3, _ := newUDPTransport(t, srv.url(), false)
	before := len(srv.queries())
	for range 20 {
		resp, err := tr3.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{Case0x20: Case0x20On})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Question[0].Name != name {
			t.Fatalf("answer not given back in the asked case: %v", resp)
		}
	}
	mixed = map[string]bool{}
	for _, g := range srv.queries()[before:] {
		mixed[g.msg.Question[0].Name] = true
	}
	if len(mixed) < 15 {
		t.Errorf("override on: only %d distinct casings in 20 queries", len(mixed))
	}
}

// TestUDPDropsMismatches has the server send, before the real answer, one
// from another port, one with another ID, one with the name's case
// changed (0x20 in use) and one for another type; each is dropped and
// counted and the real one is taken.
func TestUDPDropsMismatches(t *testing.T) {
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	forge := func(q *dns.Msg, ip string) *dns.Msg { return upstreamtest.AnswerA(ip)(q) }
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		b, _ := forge(q, "203.0.113.1").Pack()
		_, _ = other.WriteToUDPAddrPort(b, from) // wrong source port

		wrongID := forge(q, "203.0.113.2")
		wrongID.Id = q.Id + 1
		s.send(from, wrongID)

		wrongType := forge(q, "203.0.113.4")
		wrongType.Question[0].Qtype = dns.TypeAAAA
		s.send(from, wrongType)

		s.send(from, forge(q, "192.0.2.1"))
	})
	tr, c := newUDPTransport(t, srv.url(), true)
	resp, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, resp); got != "192.0.2.1" {
		t.Fatalf("took forged answer %s", got)
	}
	eventually(t, "3 mismatches counted", func() bool { return c.Mismatches.Load() == 3 })
	if f := c.Flood.Load(); f != 0 {
		t.Errorf("flood %d, want 0", f)
	}

	// A response right but for the case of the name (0x20) is never used
	// as the answer: the exchange ends with a CaseError carrying it, for
	// the pool to ask again without 0x20 and compare (unbound's
	// use-caps-for-id fallback; see TestPoolCaseFallback).
	caseSrv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		wrongCase := forge(q, "203.0.113.3")
		n := []byte(wrongCase.Question[0].Name)
		n[0] ^= 0x20
		wrongCase.Question[0].Name = string(n)
		s.send(from, wrongCase)
		s.send(from, forge(q, "192.0.2.1"))
	})
	ctr, _ := newUDPTransport(t, caseSrv.url(), true)
	_, err = ctr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
	var ce *CaseError
	if !errors.As(err, &ce) || answerA(t, ce.Msg) != "203.0.113.3" || !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong-case answer: err %v, want a CaseError carrying it", err)
	}
}

func TestUDPFloodCounted(t *testing.T) {
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		r := upstreamtest.AnswerA("192.0.2.1")(q)
		for range 4 {
			s.send(from, r)
		}
	})
	tr, c := newUDPTransport(t, srv.url(), false)
	if _, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 flood copies counted", func() bool { return c.Flood.Load() == 3 })
	if m := c.Mismatches.Load(); m != 0 {
		t.Errorf("mismatches %d, want 0", m)
	}
}

func TestUDPTruncatedRetriedOverTCP(t *testing.T) {
	var srv *udpServer
	srv = startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Truncated = true
		s.send(from, r)
	})
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(srv.addr))
	if err != nil {
		t.Skipf("TCP port %d taken: %v", srv.addr.Port(), err)
	}
	defer ln.Close()
	tcpQueries := make(chan *dns.Msg, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		raw, err := upstreamtest.ReadMsg(conn)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(raw) != nil {
			return
		}
		tcpQueries <- q
		b, _ := upstreamtest.AnswerA("192.0.2.7")(q).Pack()
		_ = upstreamtest.WriteMsg(conn, b)
		_, _ = upstreamtest.ReadMsg(conn) // until the client hangs up
	}()
	tr, _ := newUDPTransport(t, srv.url(), false)
	resp, err := tr.Exchange(testCtx(t), query("big.example.com", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || answerA(t, resp) != "192.0.2.7" {
		t.Fatalf("not the TCP answer: %v", resp)
	}
	q := <-tcpQueries
	if paddingOf(q) >= 0 {
		t.Error("cleartext TCP query padded")
	}
	if len(srv.queries()) != 1 {
		t.Errorf("UDP queries %d, want 1", len(srv.queries()))
	}
}

func TestUDPTimeout(t *testing.T) {
	srv := startUDP(t, func(*udpServer, netip.AddrPort, *dns.Msg) {})
	tr, _ := newUDPTransport(t, srv.url(), false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := tr.Exchange(ctx, query("example.com", dns.TypeA), QueryOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
}

func TestUDPIPv6(t *testing.T) {
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			b, _ := upstreamtest.AnswerA("192.0.2.6")(q).Pack()
			_, _ = conn.WriteToUDPAddrPort(b, from)
		}
	}()
	tr, _ := newUDPTransport(t, "udp://"+conn.LocalAddr().String(), true)
	resp, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.6" {
		t.Fatalf("answer %v", resp)
	}
}
