package listen_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/protocol"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

func benchCache() *cache.Cache {
	return cache.New(policy.Cache{MaxEntries: 1000, MaxBytes: 1 << 20, MinTTL: 30 * time.Second, MaxTTL: time.Hour,
		NegMaxTTL: time.Hour, FailMin: time.Second, FailMax: time.Minute}, nil, nil)
}

func packQuery(t testing.TB, name string, id uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBatchNotHeldByAMiss: queries waiting in the socket are read in one
// batch by the only reader; the first waits on the upstream until every
// other one is answered. Those others are hits and misses alike: the
// reader hands them on when its own query starts to wait, so they are all
// answered while it waits (the gate opens only once they are).
func TestBatchNotHeldByAMiss(t *testing.T) {
	z := &zone{gate: make(chan struct{})}
	c := benchCache()
	h := stage.Chain(protocol.New(), c, forward.New(z))
	s := listen.New(h, listen.Options{UDPReaders: 1}, nil)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0]
	// one client socket per query, so each answer is told apart by port
	const n = 8
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		conns[i] = u
	}
	names := []string{"gate.test."}
	for i := 1; i < n; i++ {
		names = append(names, []string{"3.many.test.", "x.test."}[i%2])
	}
	for i, u := range conns {
		if _, err := u.Write(packQuery(t, names[i], uint16(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	// the queries now wait in the socket: serve
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	buf := make([]byte, 4096)
	for i := 1; i < n; i++ {
		conns[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := conns[i].Read(buf)
		if err != nil {
			t.Fatalf("%s: no answer while gate.test. waits: %v", names[i], err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:k]); err != nil || m.Id != uint16(i+1) {
			t.Fatalf("%s: answer %v, %v", names[i], m, err)
		}
	}
	close(z.gate)
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[0].Read(buf); err != nil {
		t.Fatalf("gate.test.: %v", err)
	}
	if sp := s.Stats.Spilled.Load(); sp == 0 {
		t.Errorf("nothing handed on (spilled %d): the batch was not read as one", sp)
	}
}

// BenchmarkUDPHit is a cache hit through the listener: a query in, over
// loopback, through protocol and cache, an answer out (recvmmsg,
// sendmmsg). Allocations are the whole process's, client included: 0.
func BenchmarkUDPHit(b *testing.B) {
	h := stage.Chain(protocol.New(), benchCache(), forward.New(&zone{}))
	s := listen.New(h, listen.Options{}, nil)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	to := s.Addrs()[0]
	q := packQuery(b, "3.many.test.", 7)
	buf := make([]byte, 4096)
	ask := func() {
		if _, err := u.WriteToUDPAddrPort(q, to); err != nil {
			b.Fatal(err)
		}
		if _, _, err := u.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
	ask() // the miss that fills the cache
	b.ReportAllocs()
	for b.Loop() {
		ask()
	}
}
