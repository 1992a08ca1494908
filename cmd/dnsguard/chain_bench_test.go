package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// BenchmarkChainHit is a cache hit through the guard's whole chain as
// `run` builds it (router side without interception: device identity and
// local answers; protocol, limits, cache) and its listener: a query in
// over loopback, an answer out. Allocations are the whole process's,
// client included: 0 per query.
func BenchmarkChainHit(b *testing.B) {
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &dns.Server{PacketConn: up, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 3600 IN A 93.184.215.14")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	to := benchChain(b, "udp://"+up.LocalAddr().String(), "")

	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("bench.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	ask := func() int {
		if _, err := c.WriteToUDPAddrPort(q, to); err != nil {
			b.Fatal(err)
		}
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	var r dns.Msg
	if err := r.Unpack(buf[:ask()]); err != nil || len(r.Answer) != 1 { // the miss that fills the cache
		b.Fatalf("first answer %v: %v", &r, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ask()
	}
}

// BenchmarkChainMiss is a cache miss through the same chain: every query
// a new name, forwarded over Do53 to a stand-in upstream that answers
// NXDOMAIN by turning the query around (it allocates nothing itself), so
// the allocations shown are the guard's miss path (and the client's).
func BenchmarkChainMiss(b *testing.B) {
	up, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		buf := make([]byte, 4096)
		for {
			n, from, err := up.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			buf[2] |= 0x80 // QR
			buf[3] = 0x83  // RA, NXDOMAIN
			up.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	defer func() { up.Close(); <-upDone }()
	benchMiss(b, benchChain(b, "udp://"+up.LocalAddr().String(), ""))
}

// BenchmarkChainMissDoT is BenchmarkChainMiss forwarded over DoT to a
// local server that turns queries around without allocating
// (upstreamtest.DoTEcho): the allocations are the guard's DoT miss path
// and the client's.
func BenchmarkChainMissDoT(b *testing.B) {
	ca := upstreamtest.NewCA(b)
	srv := upstreamtest.StartDoTEcho(b, ca)
	benchMiss(b, benchChain(b, srv.URL(), caFile(b, ca)))
}

// BenchmarkChainMissDoH is BenchmarkChainMiss forwarded over DoH (HTTP/2)
// to upstreamtest's DoH server (net/http: its allocations, a constant
// share, are counted too).
func BenchmarkChainMissDoH(b *testing.B) {
	ca := upstreamtest.NewCA(b)
	srv := upstreamtest.StartDoH(b, ca, upstreamtest.DoHOptions{Handler: func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		m.RecursionAvailable = true
		return m
	}})
	benchMiss(b, benchChain(b, srv.URL, caFile(b, ca)))
}

func caFile(b *testing.B, ca *upstreamtest.CA) string {
	f := filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.PEM, 0o600); err != nil {
		b.Fatal(err)
	}
	return f
}

// benchMiss asks the guard at to a new name each time and expects
// NXDOMAIN.
func benchMiss(b *testing.B, to netip.AddrPort) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("u00000000.miss.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	var i uint32
	ask := func() {
		i++
		for k, v := 0, i; k < 8; k, v = k+1, v/10 { // the name's 8 digits: a new name each time
			q[12+9-k] = byte('0' + v%10)
		}
		if _, err := c.WriteToUDPAddrPort(q, to); err != nil {
			b.Fatal(err)
		}
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			b.Fatal(err)
		}
		if n < 12 || buf[3]&0x0f != dns.RcodeNameError {
			b.Fatalf("answer rcode %d, want NXDOMAIN", buf[3]&0x0f)
		}
	}
	ask()
	b.ReportAllocs()
	for b.Loop() {
		ask()
	}
}

// benchChain starts the guard's chain and listener as `run` builds them,
// forwarding to the upstream URL up (trusting the CA in caFile, if
// any), and returns the listener's address; everything is stopped when
// b ends.
func benchChain(b *testing.B, up, caFile string) netip.AddrPort {
	b.Helper()
	dir := b.TempDir()
	conf := filepath.Join(dir, "dnsguard.conf")
	if err := os.WriteFile(conf, []byte(`config dnsguard 'main'
	option state_file '`+filepath.Join(dir, "state.db")+`'
	list upstream '`+up+`'
	option upstream_ca '`+caFile+`'
	option dnssec '0'

config limits
	option device_rate '10000000'
	option device_burst '10000000'
`), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := policy.Load(conf)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	discard := slog.New(slog.DiscardHandler)
	router, err := newRouterSide(ctx, cfg, discard)
	if err != nil {
		b.Fatal(err)
	}
	routerCtx, stopRouter := context.WithCancel(context.Background())
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	b.Cleanup(func() { stopRouter(); <-routerDone })
	c := cache.New(cfg.Cache, discard, nil)
	b.Cleanup(c.Close)
	g, err := buildGuard(cfg, c, router, discard, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.close(context.Background()) })
	s := listen.New(g.handler, listen.Options{Access: router.Access}, discard)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return s.Addrs()[0]
}

// BenchmarkChainMissLoad is BenchmarkChainMiss with many queries out at
// once (dnsperf -q, as scripts/bench.sh's miss phase: 400), so that
// nearly every reader waits on the upstream and queries are handed on:
// the goroutines started per miss (goroutines/op) and the process's CPU
// time per miss (client and stand-in upstream included) are reported.
func BenchmarkChainMissLoad(b *testing.B) {
	benchMissLoad(b, benchChain(b, "udp://"+turnaround(b).String(), ""))
}

// BenchmarkChainMissLoadDoT is BenchmarkChainMissLoad forwarded over DoT.
func BenchmarkChainMissLoadDoT(b *testing.B) {
	ca := upstreamtest.NewCA(b)
	srv := upstreamtest.StartDoTEcho(b, ca)
	benchMissLoad(b, benchChain(b, srv.URL(), caFile(b, ca)))
}

// turnaround is a Do53 stand-in upstream that answers NXDOMAIN by
// turning each query around; stopped when b ends.
func turnaround(b *testing.B) netip.AddrPort {
	up, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	up.SetReadBuffer(1 << 20) // a window of queries at once
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		buf := make([]byte, 4096)
		for {
			n, from, err := up.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			buf[2] |= 0x80 // QR
			buf[3] = 0x83  // RA, NXDOMAIN
			up.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	b.Cleanup(func() { up.Close(); <-upDone })
	return up.LocalAddr().(*net.UDPAddr).AddrPort()
}

// missWindow is how many queries benchMissLoad keeps out.
const missWindow = 400

// benchMissLoad asks the guard at to b.N new names, missWindow of them
// out at any time (a query unanswered for a second is counted lost and
// replaced), and reports goroutines started, CPU time and losses per
// query.
func benchMissLoad(b *testing.B, to netip.AddrPort) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetReadBuffer(1 << 20)
	m := new(dns.Msg)
	m.SetQuestion("u00000000.load.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	var i uint32
	send := func() {
		i++
		for k, v := 0, i; k < 8; k, v = k+1, v/10 { // a new name each time
			q[12+9-k] = byte('0' + v%10)
		}
		q[0], q[1] = byte(i>>8), byte(i)
		if _, err := c.WriteToUDPAddrPort(q, to); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	run := func(n int) (lost int) {
		out := 0
		for sent := 0; sent < n || out > 0; {
			// The window grows a few queries an answer: all at once
			// they would overflow the listener's socket buffer.
			for k := 0; k < 4 && out < missWindow && sent < n; k++ {
				send()
				sent++
				out++
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				lost += out // the window is lost: start it again
				out = 0
				continue
			}
			if k < 12 || buf[3]&0x0f != dns.RcodeNameError {
				b.Fatalf("answer rcode %d, want NXDOMAIN", buf[3]&0x0f)
			}
			out--
		}
		return lost
	}
	run(2 * missWindow) // warm: connections, workers
	created := goroutinesCreated()
	cpu := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	lost := run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(goroutinesCreated()-created)/float64(b.N), "goroutines/op")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
