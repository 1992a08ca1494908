package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// switchable answers with AnswerA(ip) while on, and drops queries while off.
func switchable(ip string, on *atomic.Bool) func(*udpServer, netip.AddrPort, *dns.Msg) {
	return func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		if on.Load() {
			s.send(from, upstreamtest.AnswerA(ip)(q))
		}
	}
}

func newPool(t *testing.T, urls []string, opts Options) *Pool {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	p, err := NewPool(urls, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// clientCtx is the time a device waits before it retries.
func clientCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPoolFailover(t *testing.T) {
	var aOn, bOn atomic.Bool
	bOn.Store(true)
	a := startUDP(t, switchable("192.0.2.1", &aOn))
	b := startUDP(t, switchable("192.0.2.2", &bOn))
	p := newPool(t, []string{a.url(), b.url()}, Options{Timeout: 300 * time.Millisecond})

	// a is tried first (configured first, nothing measured) and is dead:
	// the answer comes from b within a device's 2 s.
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, resp); got != "192.0.2.2" {
		t.Fatalf("answer from %s", got)
	}
	st := p.Stats()
	if st[0].Failures != 1 || st[0].RTT <= st[1].RTT || !st[1].Up {
		t.Fatalf("stats after failover: %+v", st)
	}
	// Having failed, a lost its place: queries go straight to b.
	for range 5 {
		if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.queries()); n != 1 {
		t.Errorf("failed upstream got %d queries, want 1", n)
	}
}

func TestPoolRecovery(t *testing.T) {
	var on atomic.Bool
	a := startUDP(t, switchable("192.0.2.1", &on))
	p := newPool(t, []string{a.url()}, Options{Timeout: 200 * time.Millisecond, ProbeMin: 50 * time.Millisecond, ProbeMax: 200 * time.Millisecond})
	if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err == nil {
		t.Fatal("answer from a dead upstream")
	}
	if st := p.Stats(); st[0].Up || st[0].Failures != downAfter {
		t.Fatalf("stats: %+v", st)
	}
	if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err == nil {
		t.Fatal("answer with the only upstream down")
	}
	on.Store(true)
	eventually(t, "a recovered", func() bool { return p.Stats()[0].Up })
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.1" {
		t.Fatalf("answer %v", resp)
	}
	// The probe asked the failed question and the root's NS.
	asked := map[dns.Question]bool{}
	for _, q := range a.queries() {
		asked[q.msg.Question[0]] = true
	}
	if !asked[dns.Question{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}] ||
		!asked[dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET}] {
		t.Errorf("questions asked: %v", asked)
	}
}

func TestPoolHardFailureMarksDownAtOnce(t *testing.T) {
	srv := startUDP(t, nil)
	// Nothing listens on TCP at the UDP server's port: connection refused.
	p := newPool(t, []string{"tcp://" + srv.addr.String(), srv.url()}, Options{})
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.1" {
		t.Fatalf("answer %v", resp)
	}
	if st := p.Stats(); st[0].Up || st[0].Failures != 1 {
		t.Errorf("refused TCP upstream: %+v", st[0])
	}
}

func TestPoolPrefersFaster(t *testing.T) {
	slow := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		time.AfterFunc(100*time.Millisecond, func() { s.send(from, upstreamtest.AnswerA("192.0.2.1")(q)) })
	})
	fast := startUDP(t, nil)
	p := newPool(t, []string{slow.url(), fast.url()}, Options{})
	for range 20 {
		if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if s, f := len(slow.queries()), len(fast.queries()); s > 2 || f < 18 {
		t.Errorf("slow upstream got %d queries, fast %d", s, f)
	}
	st := p.Stats()
	if st[0].RTT <= st[1].RTT {
		t.Errorf("RTTs slow %v fast %v", st[0].RTT, st[1].RTT)
	}
}

func TestPoolNoUpstream(t *testing.T) {
	var off atomic.Bool
	a := startUDP(t, switchable("192.0.2.1", &off))
	b := startUDP(t, switchable("192.0.2.2", &off))
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	p := newPool(t, []string{a.url(), b.url()}, Options{Timeout: 200 * time.Millisecond, ProbeMin: time.Hour, Logger: logger})
	for i := range 10 {
		start := time.Now()
		_, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA))
		var se *stage.Error
		if !errors.As(err, &se) {
			t.Fatalf("query %d: err %v, want a *stage.Error", i, err)
		}
		if se.Rcode != dns.RcodeServerFailure || se.EDE.Code != dnswire.EDENoReachableAut {
			t.Fatalf("query %d: rcode %d EDE %d", i, se.Rcode, se.EDE.Code)
		}
		if i > 1 && time.Since(start) > time.Second {
			t.Errorf("query %d took %v with every upstream known down", i, time.Since(start))
		}
	}
	// Query 1: a, b, a (a down); query 2: b (b down, none left); then none.
	if n := len(a.queries()) + len(b.queries()); n != 4 {
		t.Errorf("%d queries sent upstream, want 4", n)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if n := strings.Count(out, "upstream down"); n != 2 {
		t.Errorf("%d 'upstream down' lines, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "no upstream reachable"); n != 1 {
		t.Errorf("%d 'no upstream reachable' lines, want 1:\n%s", n, out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestPoolCheck(t *testing.T) {
	bad := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		s.send(from, upstreamtest.AnswerA("10.0.0.1")(q))
	})
	good := startUDP(t, nil)
	errPrivate := stage.Fail(dnswire.EDEForgedAnswer, "private address", nil)
	check := func(q, resp *dns.Msg) (*dns.Msg, error) {
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok && a.A.IsPrivate() {
				return nil, errPrivate
			}
		}
		return resp, nil
	}
	p := newPool(t, []string{bad.url(), good.url()}, Options{Check: check})
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.1" {
		t.Fatalf("answer %v", resp)
	}
	if st := p.Stats(); st[0].Refused != 1 || !st[0].Up || st[1].Refused != 0 {
		t.Errorf("stats %+v", st)
	}

	only := newPool(t, []string{bad.url()}, Options{Check: check, MaxAttempts: 2})
	if _, err := only.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err != errPrivate {
		t.Errorf("err %v, want the check's error", err)
	}
	// A refused answer is not asked for again from the same upstream:
	// it would only be refused again (and the lab's forged experiments
	// would cost three upstream queries per device question).
	if st := only.Stats(); st[0].Refused != 1 || st[0].Queries != 1 {
		t.Errorf("refused %d of %d queries, want 1 of 1", st[0].Refused, st[0].Queries)
	}
}

func TestPoolMixedTransports(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	dot := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: upstreamtest.AnswerA("192.0.2.53")})
	doh := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Handler: upstreamtest.AnswerA("192.0.2.43")})
	p := newPool(t, []string{dot.URL("dot.test"), doh.URL}, Options{CAPEM: ca.PEM})
	for i := range 10 {
		if _, err := p.Exchange(clientCtx(t), query(fmt.Sprintf("n%d.example", i), dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(dot.Received()) + len(doh.Received()); n != 10 {
		t.Errorf("%d queries upstream for 10", n)
	}
	// The CA as a file, as --upstream-ca gives it.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	fp := newPool(t, []string{doh.URL}, Options{CAFile: caFile})
	if _, err := fp.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err != nil {
		t.Fatalf("with CAFile: %v", err)
	}
	sys := newPool(t, []string{doh.URL}, Options{})
	if _, err := sys.Exchange(clientCtx(t), query("example.com", dns.TypeA)); err == nil {
		t.Fatal("test CA trusted without being configured")
	}
	if _, err := NewPool([]string{doh.URL}, Options{CAFile: caFile + ".missing"}); err == nil {
		t.Error("missing CA file accepted")
	}
	if _, err := NewPool([]string{doh.URL}, Options{CAPEM: []byte("not PEM")}); err == nil {
		t.Error("bad CA PEM accepted")
	}
	if _, err := NewPool([]string{dot.URL("dot.test"), "udp://nonsense"}, Options{}); err == nil {
		t.Error("bad URL accepted")
	}
	if _, err := NewPool(nil, Options{}); err == nil {
		t.Error("empty pool accepted")
	}
}

// TestPoolSlowHandshakeServesNextAttempt: a TLS handshake slower than one
// attempt is not thrown away; the next attempt uses its connection.
func TestPoolSlowHandshakeServesNextAttempt(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{HandshakeDelay: 400 * time.Millisecond})
	p := newPool(t, []string{srv.URL("dot.test")}, Options{CAPEM: ca.PEM, Timeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Exchange(ctx, query("example.com", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if srv.Conns() != 1 {
		t.Errorf("%d connections, want 1", srv.Conns())
	}
	if st := p.Stats()[0]; !st.Up || st.Failures < 1 {
		t.Errorf("stats %+v: want the first attempt failed, upstream up", st)
	}
}
