package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// upstream answers A queries with one record of the given TTL, or fails.
type upstream struct {
	calls atomic.Int64
	ttl   atomic.Uint32
	fail  atomic.Bool
	nx    atomic.Bool
	gate  chan struct{} // if set, each call waits for it
}

func (u *upstream) ServeDNS(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
	u.calls.Add(1)
	if u.gate != nil {
		<-u.gate
	}
	if u.fail.Load() {
		return nil, stage.Fail(dnswire.EDENoReachableAut, "no upstream reachable", errors.New("timeout"))
	}
	name := dnswire.NameString(req.Q.Name)
	if u.nx.Load() {
		soa, _ := dns.NewRR("example. 3600 IN SOA ns.example. h.example. 1 2 3 4 5")
		return stage.Synth(req, dns.RcodeNameError, nil, []dns.RR{soa})
	}
	rr, _ := dns.NewRR(name + " 60 IN A 192.0.2.7")
	rr.Header().Ttl = u.ttl.Load()
	return stage.Synth(req, dns.RcodeSuccess, []dns.RR{rr}, nil)
}

func request(t testing.TB, name string, edns, do bool) *stage.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if edns {
		m.SetEdns0(1232, do)
	}
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &stage.Request{Raw: raw, Q: q}
}

func setup(t testing.TB) (*Cache, *upstream, *clock, stage.Handler) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := policy.Cache{
		MaxEntries: 1000, MaxBytes: 1 << 20, MinTTL: 30 * time.Second, MaxTTL: 7 * 24 * time.Hour,
		NegMaxTTL: time.Hour, ServeStale: true, StaleTTL: 30 * time.Second, MaxStale: 24 * time.Hour,
		FailMin: time.Second, FailMax: 5 * time.Minute,
	}
	c := New(p, nil, clk.now)
	t.Cleanup(c.Close)
	u := &upstream{}
	u.ttl.Store(300)
	return c, u, clk, c.Wrap(u)
}

func ttlOf(t testing.TB, req *stage.Request, r *dnswire.Reply) (uint32, *dns.Msg) {
	t.Helper()
	out := dnswire.AppendResponse(nil, &req.Q, r, 65535)
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) == 0 {
		return 0, m
	}
	return m.Answer[0].Header().Ttl, m
}

func TestHitsAgeAndKeying(t *testing.T) {
	c, u, clk, h := setup(t)
	ctx := context.Background()
	for _, name := range []string{"www.example.", "WWW.Example.", "www.EXAMPLE."} {
		if _, err := h.ServeDNS(ctx, request(t, name, false, false)); err != nil {
			t.Fatal(err)
		}
	}
	if n := u.calls.Load(); n != 1 {
		t.Errorf("case-insensitive key: %d upstream calls, want 1", n)
	}
	clk.add(100 * time.Second)
	req := request(t, "www.example.", false, false)
	r, err := h.ServeDNS(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ttl, _ := ttlOf(t, req, r); ttl != 200 {
		t.Errorf("aged TTL %d, want 200", ttl)
	}
	// EDNS presence, DO and CD are part of the key.
	h.ServeDNS(ctx, request(t, "www.example.", true, false))
	h.ServeDNS(ctx, request(t, "www.example.", true, true))
	cd := request(t, "www.example.", false, false)
	cd.Q.CD = true
	h.ServeDNS(ctx, cd)
	if n := u.calls.Load(); n != 4 {
		t.Errorf("EDNS/DO/CD variants: %d upstream calls, want 4", n)
	}
	if c.Stats.Hits.Load() != 3 {
		t.Errorf("hits %d", c.Stats.Hits.Load())
	}
}

func TestTTLClamp(t *testing.T) {
	tests := []struct {
		name       string
		upstream   uint32
		wantServed uint32
		wantCalls  int64 // after 20 queries over 20 s
	}{
		{"ttl 0 floored", 0, 30, 1},
		{"ttl 1 floored", 1, 30, 1},
		{"ttl 10^9 capped at 7 days", 1_000_000_000, 604800, 1},
		{"ttl 300 kept", 300, 300, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, u, clk, h := setup(t)
			u.ttl.Store(tt.upstream)
			req := request(t, "a.example.", false, false)
			r, err := h.ServeDNS(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if ttl, _ := ttlOf(t, req, r); ttl != tt.wantServed {
				t.Errorf("served TTL %d, want %d", ttl, tt.wantServed)
			}
			for i := 0; i < 19; i++ {
				clk.add(time.Second)
				h.ServeDNS(context.Background(), request(t, "a.example.", false, false))
			}
			if n := u.calls.Load(); n != tt.wantCalls {
				t.Errorf("%d upstream calls for 20 device queries, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestNegativeCaching(t *testing.T) {
	_, u, clk, h := setup(t)
	u.nx.Store(true)
	req := request(t, "nope.example.", false, false)
	r, err := h.ServeDNS(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode() != dns.RcodeNameError {
		t.Fatalf("rcode %d", r.Rcode())
	}
	_, m := ttlOf(t, req, r)
	if got := m.Ns[0].Header().Ttl; got != 3600 {
		t.Errorf("SOA TTL %d, want 3600 (capped at neg_max_ttl)", got)
	}
	clk.add(3599 * time.Second)
	h.ServeDNS(context.Background(), req)
	if n := u.calls.Load(); n != 1 {
		t.Errorf("NXDOMAIN not cached: %d calls", n)
	}
	clk.add(2 * time.Second)
	h.ServeDNS(context.Background(), req)
	if n := u.calls.Load(); n != 2 {
		t.Errorf("NXDOMAIN cached past its TTL: %d calls", n)
	}
}

func TestFailureBackoffAndStale(t *testing.T) {
	c, u, clk, h := setup(t)
	ctx := context.Background()
	u.ttl.Store(60)
	h.ServeDNS(ctx, request(t, "s.example.", false, false))
	u.fail.Store(true)
	clk.add(61 * time.Second) // expired
	req := request(t, "s.example.", false, false)
	r, err := h.ServeDNS(ctx, req)
	if err != nil {
		t.Fatalf("want a stale answer, got %v", err)
	}
	ttl, _ := ttlOf(t, req, r)
	if ttl != 30 || r.EDE == nil || r.EDE.Code != dnswire.EDEStaleAnswer {
		t.Errorf("stale answer TTL %d EDE %+v, want 30 and Stale Answer", ttl, r.EDE)
	}
	// A storm of queries over ten minutes: upstream calls grow with the
	// backoff (1, 2, 4, ... s, capped at 5 min), not with the storm.
	before := u.calls.Load()
	for i := 0; i < 6000; i++ {
		clk.add(100 * time.Millisecond)
		if _, err := h.ServeDNS(ctx, request(t, "s.example.", false, false)); err != nil {
			t.Fatalf("stale answer expected during outage, got %v", err)
		}
	}
	calls := u.calls.Load() - before
	// 600 s of backoff from 1 s doubling: 1+2+4+...+256 = 511 s, then one more.
	if calls < 8 || calls > 11 {
		t.Errorf("%d upstream calls during a 600 s storm of 6000 queries, want about 10", calls)
	}
	t.Logf("device queries 6000, upstream queries %d, stale answers %d", calls, c.Stats.Stale.Load())
	// Recovery.
	u.fail.Store(false)
	clk.add(5 * time.Minute)
	r, err = h.ServeDNS(ctx, req)
	if err != nil || r.EDE != nil {
		t.Errorf("after recovery: %v %+v", err, r)
	}
}

func TestFailureWithoutStaleIsCachedError(t *testing.T) {
	_, u, clk, h := setup(t)
	u.fail.Store(true)
	ctx := context.Background()
	_, err := h.ServeDNS(ctx, request(t, "down.example.", false, false))
	var se *stage.Error
	if !errors.As(err, &se) || se.EDE.Code != dnswire.EDENoReachableAut {
		t.Fatalf("first failure: %v", err)
	}
	clk.add(500 * time.Millisecond)
	_, err = h.ServeDNS(ctx, request(t, "down.example.", false, false))
	if !errors.As(err, &se) || se.EDE.Code != dnswire.EDECachedError {
		t.Fatalf("second failure within backoff: %v", err)
	}
	if n := u.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls, want 1 while the failure is cached", n)
	}
}

func TestTTLZeroNeverServedStale(t *testing.T) {
	_, u, clk, h := setup(t)
	u.ttl.Store(0)
	ctx := context.Background()
	h.ServeDNS(ctx, request(t, "z.example.", false, false))
	u.fail.Store(true)
	clk.add(31 * time.Second)
	if _, err := h.ServeDNS(ctx, request(t, "z.example.", false, false)); err == nil {
		t.Error("TTL-0 data served stale (RFC 8767 §7)")
	}
}

func TestCoalescing(t *testing.T) {
	c, u, _, h := setup(t)
	u.gate = make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.ServeDNS(context.Background(), request(t, "co.example.", false, false)); err != nil {
				t.Error(err)
			}
		}()
	}
	// Let all 50 reach the flight before the single upstream call ends.
	for c.Stats.Misses.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	close(u.gate)
	wg.Wait()
	if n := u.calls.Load(); n != 1 {
		t.Errorf("50 identical in-flight questions made %d upstream calls, want 1", n)
	}
}

func TestBounds(t *testing.T) {
	c, _, _, h := setup(t)
	p := *c.pol.Load()
	p.MaxEntries = 64
	c.SetPolicy(p)
	for i := 0; i < 1000; i++ {
		h.ServeDNS(context.Background(), request(t, dns.Fqdn(string(rune('a'+i%26))+"x"+itoa(i)+".example"), false, false))
	}
	if n := c.Len(); n > 64 {
		t.Errorf("%d entries, bound 64", n)
	}
	p.MaxEntries, p.MaxBytes = 100000, 32*1024
	c.SetPolicy(p)
	for i := 0; i < 1000; i++ {
		h.ServeDNS(context.Background(), request(t, "b"+itoa(i)+".example.", false, false))
	}
	var bytes int64
	for i := range c.shards {
		bytes += c.shards[i].bytes
	}
	if bytes > 32*1024 {
		t.Errorf("%d bytes cached, bound 32 KiB", bytes)
	}
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

func BenchmarkHit(b *testing.B) {
	_, _, _, h := setup(b)
	req := request(b, "bench.example.", true, false)
	h.ServeDNS(context.Background(), req)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := h.ServeDNS(context.Background(), req)
		buf = dnswire.AppendResponse(buf[:0], &req.Q, r, 1232)
	}
}

// TestKeyNamesOnTheWire: the key is the question name's octets with ASCII
// letters lower-cased. Two renderings of one name (\032 and "\ ", any
// case) share an entry; a dot inside a label, or octets that differ only
// beyond ASCII, make another name.
func TestKeyNamesOnTheWire(t *testing.T) {
	_, u, _, h := setup(t)
	ctx := context.Background()
	ask := func(name string) *dns.Msg {
		t.Helper()
		req := request(t, name, false, false)
		r, err := h.ServeDNS(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, m := ttlOf(t, req, r)
		return m
	}
	groups := [][]string{
		{`a\032b.example.`, `A\ B.example.`, `a\ b.EXAMPLE.`},
		{`a\(b\)\"\'\;\@\\.example.`, `A(B)"';@\092.example.`, `a\040b\041\034\039\059\064\092.example.`},
		{`a\.b.example.`, `A\046B.example.`},
		{`a.b.example.`},
		{`\195\169.example.`},
		{`\195\137.example.`},
	}
	for i, g := range groups {
		for _, name := range g {
			m := ask(name)
			if len(m.Answer) != 1 || !dnswire.EqualNames(m.Answer[0].Header().Name, name) || !dnswire.EqualNames(m.Question[0].Name, name) {
				t.Errorf("%s answered as %v", name, m)
			}
		}
		if n := u.calls.Load(); n != int64(i+1) {
			t.Fatalf("after %v: %d upstream calls, want %d", g, n, i+1)
		}
	}
}

// pathDown is an error saying no upstream could be asked (as the
// upstream pool's is when every upstream is down).
type pathDown struct{}

func (pathDown) Error() string     { return "every upstream is down" }
func (pathDown) Unreachable() bool { return true }

// TestPathDownFailures: failures recorded while the whole upstream path
// was down are cached for fail_min only, do not grow the name's backoff,
// and are forgotten when the path recovers: the first query after
// Recovered goes upstream and is answered (issue 10 item 4).
func TestPathDownFailures(t *testing.T) {
	_, u, clk, _ := setup(t)
	ctx := context.Background()
	var down atomic.Bool
	down.Store(true)
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if down.Load() {
			u.calls.Add(1)
			return nil, stage.Fail(dnswire.EDENoReachableAut, "No Reachable Authority", fmt.Errorf("pool: %w", pathDown{}))
		}
		return u.ServeDNS(ctx, req)
	})
	cc := New(policy.Cache{MaxEntries: 1000, MinTTL: 30 * time.Second, MaxTTL: time.Hour, NegMaxTTL: time.Hour,
		FailMin: time.Second, FailMax: 5 * time.Minute}, nil, clk.now)
	hh := cc.Wrap(inner)

	// A device retries one name every 100 ms through a 60 s outage.
	for range 600 {
		_, err := hh.ServeDNS(ctx, request(t, "retried.example.", false, false))
		if err == nil {
			t.Fatal("answered during the outage")
		}
		clk.add(100 * time.Millisecond)
	}
	// Once per fail_min: no backoff (that would be 1+2+4+8+16+32 s: 6 calls).
	if n := u.calls.Load(); n < 55 || n > 61 {
		t.Errorf("%d upstream calls in 60 s of retries every 100 ms, want one per fail_min (60)", n)
	}
	// The path recovers; within fail_min of the last failure the name is
	// asked again at once.
	down.Store(false)
	_, _ = hh.ServeDNS(ctx, request(t, "retried.example.", false, false)) // cached failure: not yet told
	cc.Recovered()
	if _, err := hh.ServeDNS(ctx, request(t, "retried.example.", false, false)); err != nil {
		t.Fatalf("first query after recovery: %v", err)
	}

	// A name's own failures still back off, and an outage between them
	// does not add to the backoff.
	down.Store(false)
	u.fail.Store(true)
	before := u.calls.Load()
	for range 3 { // failures 1, 2, 3: backoff 1 s, 2 s, 4 s
		_, _ = hh.ServeDNS(ctx, request(t, "own.example.", false, false))
		clk.add(10 * time.Second)
	}
	down.Store(true)
	_, _ = hh.ServeDNS(ctx, request(t, "own.example.", false, false)) // path failure: 1 s
	clk.add(1500 * time.Millisecond)
	cc.Recovered()
	down.Store(false)
	_, _ = hh.ServeDNS(ctx, request(t, "own.example.", false, false)) // own failure 4: 8 s
	if n := u.calls.Load() - before; n != 5 {
		t.Fatalf("%d calls, want 5", n)
	}
	clk.add(7 * time.Second)
	_, _ = hh.ServeDNS(ctx, request(t, "own.example.", false, false))
	if n := u.calls.Load() - before; n != 5 {
		t.Errorf("asked again within the 8 s of the 4th own failure (the outage counted?)")
	}
	clk.add(2 * time.Second)
	_, _ = hh.ServeDNS(ctx, request(t, "own.example.", false, false))
	if n := u.calls.Load() - before; n != 6 {
		t.Errorf("not asked after the 8 s backoff: %d calls", n)
	}
}

type held struct{ d time.Duration }

func (h held) Error() string          { return "bogus" }
func (h held) HoldFor() time.Duration { return h.d }

// TestHeldFailures: a failure that says how long it stands (DNSSEC bogus,
// 60 s) is cached exactly that long, whatever fail_min and the backoff say;
// CD=1 and CD=0 queries never share an entry.
func TestHeldFailures(t *testing.T) {
	_, u, clk, _ := setup(t)
	ctx := context.Background()
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if !req.Q.CD {
			u.calls.Add(1)
			return nil, fmt.Errorf("validate: %w", held{60 * time.Second})
		}
		return u.ServeDNS(ctx, req)
	})
	cc := New(policy.Cache{MaxEntries: 1000, MinTTL: 30 * time.Second, MaxTTL: time.Hour, NegMaxTTL: time.Hour,
		FailMin: time.Second, FailMax: 5 * time.Minute}, nil, clk.now)
	hh := cc.Wrap(inner)
	for range 59 {
		if _, err := hh.ServeDNS(ctx, request(t, "bogus.example.", true, true)); err == nil {
			t.Fatal("bogus answered")
		}
		clk.add(time.Second)
	}
	if n := u.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls within the 60 s hold, want 1", n)
	}
	clk.add(2 * time.Second)
	_, _ = hh.ServeDNS(ctx, request(t, "bogus.example.", true, true))
	if n := u.calls.Load(); n != 2 {
		t.Errorf("%d upstream calls after the hold, want 2", n)
	}
	// CD=1: a separate entry, answered.
	m := new(dns.Msg)
	m.SetQuestion("bogus.example.", dns.TypeA)
	m.CheckingDisabled = true
	m.SetEdns0(1232, true)
	raw, _ := m.Pack()
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hh.ServeDNS(ctx, &stage.Request{Raw: raw, Q: q}); err != nil {
		t.Errorf("CD=1 query got the CD=0 failure: %v", err)
	}
}

// TestReceivedTime: on the real clock a lookup takes the time the query
// was received (read once per batch by the listener), not a clock read
// of its own: an answer stored with a 300 s TTL is a hit for a query
// received 100 s later and a miss for one received 10 minutes later.
func TestReceivedTime(t *testing.T) {
	p := policy.Cache{MaxEntries: 1000, MaxBytes: 1 << 20, MinTTL: time.Second, MaxTTL: time.Hour, NegMaxTTL: time.Hour,
		FailMin: time.Second, FailMax: time.Minute}
	c := New(p, nil, nil)
	u := &upstream{}
	u.ttl.Store(300)
	h := c.Wrap(u)
	now := time.Now()
	ask := func(at time.Time) {
		t.Helper()
		req := request(t, "later.example.", true, false)
		req.Received = at
		if _, err := h.ServeDNS(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	ask(now)
	ask(now.Add(100 * time.Second))
	if h, m := c.Stats.Hits.Load(), c.Stats.Misses.Load(); h != 1 || m != 1 {
		t.Fatalf("%d hits, %d misses after a query 100 s later, want 1 and 1", h, m)
	}
	ask(now.Add(10 * time.Minute))
	if m := c.Stats.Misses.Load(); m != 2 {
		t.Errorf("%d misses after a query 10 min later, want 2 (expired at the time it was received)", m)
	}
}

// TestStrictKeying: a strict device does not get an answer stored (or in
// flight) for a lenient one where strict terms change the answer (a DO
// query, whose proof the minimal shield drops; any query when cleartext
// upstreams are asked with 0x20 for strict devices only), and shares it
// where they cannot. The inner stage answers by terms, as the upstream
// side does: what a lenient query takes (here 192.0.2.66, an answer 0x20
// would have refused) is not what a strict one gets.
func TestStrictKeying(t *testing.T) {
	for _, tc := range []struct {
		name       string
		strictness policy.Strictness
		do         bool
		first      policy.Terms
		second     policy.Terms
		own        bool // the second gets its own answer, not the first's
	}{
		{"lenient then lenient", policy.Strictness{Case0x20Differs: true}, false, policy.Lenient, policy.Lenient, false},
		{"strict then strict", policy.Strictness{Case0x20Differs: true}, true, policy.Strict, policy.Strict, false},
		{"0x20 differs: strict apart", policy.Strictness{Case0x20Differs: true}, false, policy.Lenient, policy.Strict, true},
		{"0x20 differs: lenient apart", policy.Strictness{Case0x20Differs: true}, false, policy.Strict, policy.Lenient, true},
		{"DO: strict apart", policy.Strictness{}, true, policy.Lenient, policy.Strict, true},
		{"DO and 0x20: strict apart", policy.Strictness{Case0x20Differs: true}, true, policy.Lenient, policy.Strict, true},
		{"encrypted upstreams, no DO: shared", policy.Strictness{}, false, policy.Lenient, policy.Strict, false},
		{"encrypted upstreams, no DO: shared the other way", policy.Strictness{}, false, policy.Strict, policy.Lenient, false},
	} {
		for _, concurrent := range []bool{false, true} {
			mode := "cached"
			if concurrent {
				mode = "in flight"
			}
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				clk := &clock{t: time.Unix(1_700_000_000, 0)}
				c := New(policy.Cache{MaxEntries: 1000, MinTTL: 30 * time.Second, MaxTTL: time.Hour, NegMaxTTL: time.Hour,
					FailMin: time.Second, FailMax: 5 * time.Minute}, nil, clk.now)
				c.SetStrictness(tc.strictness)
				var calls atomic.Int64
				gate := make(chan struct{})
				started := make(chan struct{}, 2)
				inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
					calls.Add(1)
					started <- struct{}{}
					if concurrent {
						<-gate
					}
					addr := "192.0.2.66"
					if req.Terms == policy.Strict {
						addr = "192.0.2.7"
					}
					rr, _ := dns.NewRR(dnswire.NameString(req.Q.Name) + " 300 IN A " + addr)
					return stage.Synth(req, dns.RcodeSuccess, []dns.RR{rr}, nil)
				})
				h := c.Wrap(inner)
				ask := func(terms policy.Terms) string {
					req := request(t, "www.example.", true, tc.do)
					req.Terms = terms
					r, err := h.ServeDNS(context.Background(), req)
					if err != nil {
						t.Error(err)
						return ""
					}
					_, m := ttlOf(t, req, r)
					if len(m.Answer) != 1 {
						t.Errorf("answer %v", m)
						return ""
					}
					return m.Answer[0].(*dns.A).A.String()
				}
				want := func(terms policy.Terms) string {
					if terms == policy.Strict {
						return "192.0.2.7"
					}
					return "192.0.2.66"
				}
				var got1, got2 string
				if concurrent {
					// The first asks and waits upstream; the second comes
					// while that flight is out.
					done := make(chan struct{})
					go func() { got1 = ask(tc.first); close(done) }()
					<-started
					second := make(chan struct{})
					go func() { got2 = ask(tc.second); close(second) }()
					// Both have missed: the second has a flight of its own
					// (own) or is about to join the first's.
					for c.Stats.Misses.Load() < 2 {
						runtime.Gosched()
					}
					close(gate)
					<-done
					<-second
				} else {
					got1, got2 = ask(tc.first), ask(tc.second)
				}
				if got1 != want(tc.first) {
					t.Errorf("first (%v) got %s, want %s", tc.first, got1, want(tc.first))
				}
				wantCalls, want2 := int64(1), want(tc.first)
				if tc.own {
					wantCalls, want2 = 2, want(tc.second)
				}
				if got2 != want2 {
					t.Errorf("second (%v) got %s, want %s", tc.second, got2, want2)
				}
				if n := calls.Load(); n != wantCalls {
					t.Errorf("%d upstream queries, want %d", n, wantCalls)
				}
			})
		}
	}
}

// TestLRUOrder: a full shard evicts its least recently used entry, where a
// hit counts as a use: of a, b and c sharing a shard that holds two, with
// a asked again after b, c's arrival evicts b and keeps a.
func TestLRUOrder(t *testing.T) {
	c, u, _, h := setup(t)
	p := *c.pol.Load()
	p.MaxEntries = 2 * shardCount // two entries a shard
	c.SetPolicy(p)
	shardOf := func(name string) *shard {
		req := request(t, name, false, false)
		return c.shard(appendKey(nil, &req.Q, false))
	}
	var names []string
	want := shardOf("n0.example.")
	for i := 0; len(names) < 3; i++ {
		if n := "n" + itoa(i) + ".example."; shardOf(n) == want {
			names = append(names, n)
		}
	}
	ask := func(name string) {
		if _, err := h.ServeDNS(context.Background(), request(t, name, false, false)); err != nil {
			t.Fatal(err)
		}
	}
	a, b, cName := names[0], names[1], names[2]
	ask(a)
	ask(b)
	ask(a) // a hit: a is now the most recently used
	ask(cName)
	calls := u.calls.Load()
	ask(a)
	if u.calls.Load() != calls {
		t.Errorf("%s was evicted; the least recently used was %s", a, b)
	}
	ask(b)
	if u.calls.Load() != calls+1 {
		t.Errorf("%s was kept past the shard's bound", b)
	}
	// The ring holds exactly the map's entries, most recent first.
	var ring []string
	for e := want.lru.next; e != &want.lru; e = e.next {
		if e.next.prev != e {
			t.Fatal("ring links broken")
		}
		ring = append(ring, e.key)
	}
	if len(ring) != len(want.m) || len(ring) != 2 {
		t.Fatalf("ring of %d entries, map of %d", len(ring), len(want.m))
	}
	for i, k := range ring {
		if want.m[k] == nil {
			t.Errorf("ring entry %d not in the map", i)
		}
	}
}

// TestEntrySize: an entry stays in the 112-octet size class on 64-bit
// platforms (20,000 entries are most of a router's heap).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); unsafe.Sizeof(uintptr(0)) == 8 && n > 112 {
		t.Errorf("entry is %d octets, want at most 112", n)
	}
}
