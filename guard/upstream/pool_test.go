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
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{})
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
		if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := asked(a, "example.com."); n != 1 {
		t.Errorf("failed upstream got %d queries, want 1", n)
	}
	// a answered nothing, not even the health check it was then asked:
	// it is down, and probed with ". NS".
	eventually(t, "a down", func() bool { return !p.Stats()[0].Up })
	if asked(a, ".") < 1 {
		t.Error("a was not asked the health check")
	}
}

// asked counts the queries for name that s received.
func asked(s *udpServer, name string) int {
	n := 0
	for _, q := range s.queries() {
		if q.msg.Question[0].Name == name {
			n++
		}
	}
	return n
}

func TestPoolRecovery(t *testing.T) {
	var on atomic.Bool
	a := startUDP(t, switchable("192.0.2.1", &on))
	p := newPool(t, []string{a.url()}, Options{Timeout: 200 * time.Millisecond, ProbeMin: 50 * time.Millisecond, ProbeMax: 200 * time.Millisecond})
	if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err == nil {
		t.Fatal("answer from a dead upstream")
	}
	eventually(t, "a down", func() bool { return !p.Stats()[0].Up })
	if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); !IsAllDown(err) {
		t.Fatalf("err %v with the only upstream down, want IsAllDown", err)
	}
	on.Store(true)
	eventually(t, "a recovered", func() bool { return p.Stats()[0].Up })
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.1" {
		t.Fatalf("answer %v", resp)
	}
	// The health check and the probes asked the root's NS.
	if asked(a, ".") < 2 {
		t.Errorf("%d root NS queries, want the check and a probe", asked(a, "."))
	}
}

func TestPoolHardFailureMarksDownAtOnce(t *testing.T) {
	srv := startUDP(t, nil)
	// Nothing listens on TCP at the UDP server's port: connection refused.
	p := newPool(t, []string{"tcp://" + srv.addr.String(), srv.url()}, Options{})
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{})
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
		if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
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
	if _, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err == nil {
		t.Fatal("answer from dead upstreams")
	}
	eventually(t, "both down", func() bool { st := p.Stats(); return !st[0].Up && !st[1].Up })
	before := len(a.queries()) + len(b.queries())
	for i := range 10 {
		_, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{})
		var se *stage.Error
		if !errors.As(err, &se) || !IsAllDown(err) {
			t.Fatalf("query %d: err %v, want a *stage.Error saying every upstream is down", i, err)
		}
		if se.Rcode != dns.RcodeServerFailure || se.EDE.Code != dnswire.EDENoReachableAut {
			t.Fatalf("query %d: rcode %d EDE %d", i, se.Rcode, se.EDE.Code)
		}
	}
	// One at a time, each query went out as the probe of a down upstream
	// (a, b, a, ...): nothing else was sent.
	if n := len(a.queries()) + len(b.queries()) - before; n != 10 {
		t.Errorf("%d queries sent upstream for 10 queries while all were down, want 10 (each the probe)", n)
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
	check := CheckFunc(func(q, resp *dns.Msg) (*dns.Msg, error) {
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok && a.A.IsPrivate() {
				return nil, errPrivate
			}
		}
		return resp, nil
	})
	p := newPool(t, []string{bad.url(), good.url()}, Options{})
	resp, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{Check: check})
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.1" {
		t.Fatalf("answer %v", resp)
	}
	if st := p.Stats(); st[0].Refused != 1 || !st[0].Up || st[1].Refused != 0 {
		t.Errorf("stats %+v", st)
	}

	only := newPool(t, []string{bad.url()}, Options{MaxAttempts: 2})
	if _, err := only.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{Check: check}); err != errPrivate {
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
		if _, err := p.Exchange(clientCtx(t), query(fmt.Sprintf("n%d.example", i), dns.TypeA), QueryOptions{}); err != nil {
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
	if _, err := fp.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatalf("with CAFile: %v", err)
	}
	sys := newPool(t, []string{doh.URL}, Options{})
	if _, err := sys.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err == nil {
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
	// The handshake ends 100 ms into the second attempt, which has 900 ms
	// more to use it: room for a busy machine (400 ms and 300 ms left it 200).
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{HandshakeDelay: 1100 * time.Millisecond})
	p := newPool(t, []string{srv.URL("dot.test")}, Options{CAPEM: ca.PEM, Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Exchange(ctx, query("example.com", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	if srv.Conns() != 1 {
		t.Errorf("%d connections, want 1", srv.Conns())
	}
	if st := p.Stats()[0]; !st.Up || st.Failures < 1 {
		t.Errorf("stats %+v: want the first attempt failed, upstream up", st)
	}
}
