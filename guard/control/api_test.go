package control

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

const testToken = "s3cret-token-for-tests"

// fakeClock is a settable clock for the rate limit and sessions.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testGuard is the guard's chain in process: the counting stage,
// identify with a real registry, the cache, and an inner handler that
// answers, refuses (shield) or rate-limits by name, as the real stages do.
type testGuard struct {
	reg   *device.Registry
	cnt   *Counters
	cache *cache.Cache
	chain stage.Handler
	lst   listen.Stats
	srv   *Server
	base  string
	clock *fakeClock
}

func newTestGuard(t *testing.T, allow func(netip.Addr) bool) *testGuard {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg, err := device.NewRegistry(device.Options{Log: log, Classes: []policy.Class{{Name: "cams", Rate: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; reg.Close() })
	g := &testGuard{reg: reg, cnt: NewCounters(8), clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	pol, _ := policy.Load("")
	g.cache = cache.New(pol.Cache, log, nil)
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		switch name := dnswire.NameString(req.Q.Name); {
		case strings.HasPrefix(name, "forged."):
			return nil, stage.Fail(dnswire.EDEForgedAnswer, "forged answer: test", nil)
		case strings.Contains(name, "limited."):
			return nil, &stage.Error{Rcode: dns.RcodeRefused, EDE: dnswire.EDE{Code: dnswire.EDEProhibited, Text: "rate limited: too many queries from this device"}}
		case strings.HasPrefix(name, "nx."):
			return stage.Synth(req, dns.RcodeNameError, nil, nil)
		}
		rr, _ := dns.NewRR(dnswire.NameString(req.Q.Name) + " 300 IN A 192.0.2.1")
		return stage.Synth(req, dns.RcodeSuccess, []dns.RR{rr}, nil)
	})
	g.chain = stage.Chain(g.cnt, device.NewIdentify(reg, device.IdentifyOptions{Feed: true}), g.cache, stage.Answer("upstream", inner))
	pool, err := upstream.NewPool([]string{"udp://127.0.0.1:9"}, upstream.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	src := &Sources{Listen: &g.lst, Cache: g.cache, Upstreams: pool.Stats, Registry: reg, Counters: g.cnt,
		Intercepting: func() bool { return false }, Repairs: func() uint64 { return 3 }}
	g.srv, err = Serve(Options{Listen: "127.0.0.1:0", Token: testToken, Allow: allow, Sources: src, Log: log, Now: g.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.srv.Close(context.Background()) })
	g.base = "http://" + g.srv.Addr().String()
	return g
}

// ask sends one query from client through the chain, as the listener does.
func (g *testGuard) ask(t *testing.T, client, name string, qtype uint16, tcp bool) *dnswire.Reply {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &stage.Request{Raw: raw, Q: q, Client: netip.AddrPortFrom(netip.MustParseAddr(client), uint16(1024+rand.IntN(60000))), TCP: tcp, Received: time.Now()}
	g.lst.Queries.Add(1)
	r, err := g.chain.ServeDNS(context.Background(), req)
	if err != nil {
		r = stage.ErrorReply(req, err)
	}
	return r
}

type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (g *testGuard) do(t *testing.T, method, path string, hdr map[string]string, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

var bearer = map[string]string{"Authorization": "Bearer " + testToken}

func TestAuth(t *testing.T) {
	g := newTestGuard(t, nil)
	for _, path := range []string{"/api/v1/devices", "/api/v1/stats", "/api/v1/events", "/api/v1/rates", "/api/v1/classes", "/api/v1/devices/ip:192.0.2.9"} {
		if r := g.do(t, "GET", path, nil, ""); r.code != 401 {
			t.Errorf("GET %s without a token: %d, want 401", path, r.code)
		}
	}
	if r := g.do(t, "POST", "/api/v1/devices/ip:192.0.2.9", map[string]string{"Content-Type": "application/json"}, `{"exempt":true}`); r.code != 401 {
		t.Errorf("POST without a token: %d", r.code)
	}
	// The right token, with the origin of another site: answered, but
	// with no CORS header a browser would let that site read it by.
	r := g.do(t, "GET", "/api/v1/stats", map[string]string{"Authorization": bearer["Authorization"], "Origin": "http://evil.example"}, "")
	if r.code != 200 {
		t.Fatalf("right token: %d %s", r.code, r.body)
	}
	for k := range r.header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("CORS header %s: %s", k, r.header.Get(k))
		}
	}
	// Wrong tokens: failBurst of them are 401, then the client is held
	// off (429) whatever it sends, the right token too, until they age.
	for i := range failBurst {
		if r := g.do(t, "GET", "/api/v1/devices", map[string]string{"Authorization": "Bearer wrong" + fmt.Sprint(i)}, ""); r.code != 401 {
			t.Fatalf("wrong token %d: %d", i, r.code)
		}
	}
	for _, h := range []map[string]string{{"Authorization": "Bearer wrong-again"}, bearer} {
		r := g.do(t, "GET", "/api/v1/devices", h, "")
		if r.code != 429 || r.header.Get("Retry-After") == "" {
			t.Errorf("after %d wrong tokens: %d (Retry-After %q), want 429", failBurst, r.code, r.header.Get("Retry-After"))
		}
	}
	if r := g.do(t, "POST", "/api/v1/login", map[string]string{"Content-Type": "application/json"}, `{"token":"`+testToken+`"}`); r.code != 429 {
		t.Errorf("login while held off: %d", r.code)
	}
	g.clock.add(failInterval + time.Second)
	if r := g.do(t, "GET", "/api/v1/devices", bearer, ""); r.code != 200 {
		t.Errorf("right token after one interval: %d", r.code)
	}
	// One more wrong token is allowed per interval, not a new burst.
	g.do(t, "GET", "/api/v1/devices", map[string]string{"Authorization": "Bearer nope"}, "")
	if r := g.do(t, "GET", "/api/v1/devices", bearer, ""); r.code != 429 {
		t.Errorf("a wrong token right after the hold: then %d, want 429", r.code)
	}
}

func TestLoginCookie(t *testing.T) {
	g := newTestGuard(t, nil)
	js := map[string]string{"Content-Type": "application/json"}
	if r := g.do(t, "POST", "/api/v1/login", js, `{"token":"wrong"}`); r.code != 401 || r.header.Get("Set-Cookie") != "" {
		t.Errorf("wrong token at login: %d, cookie %q", r.code, r.header.Get("Set-Cookie"))
	}
	// A form post (what another site could make a browser send) is refused.
	if r := g.do(t, "POST", "/api/v1/login", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "token="+testToken); r.code != 403 {
		t.Errorf("form login: %d", r.code)
	}
	r := g.do(t, "POST", "/api/v1/login", js, `{"token":"`+testToken+`"}`)
	if r.code != 204 {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	sc := r.header.Get("Set-Cookie")
	for _, want := range []string{cookieName + "=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	cookie := strings.SplitN(sc, ";", 2)[0]
	if strings.Contains(cookie, testToken) {
		t.Errorf("the cookie carries the token: %q", cookie)
	}
	g.ask(t, "192.0.2.10", "a.example", dns.TypeA, false)
	if r := g.do(t, "GET", "/api/v1/devices", map[string]string{"Cookie": cookie}, ""); r.code != 200 {
		t.Errorf("GET with the cookie: %d", r.code)
	}
	withCookie := func(extra map[string]string) map[string]string {
		h := map[string]string{"Cookie": cookie}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	// State changes with the cookie: JSON from the page's own origin only.
	if r := g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", withCookie(map[string]string{"Content-Type": "text/plain"}), `{"strict":true}`); r.code != 403 {
		t.Errorf("cookie POST as text/plain: %d", r.code)
	}
	if r := g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", withCookie(map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}), `{"strict":true}`); r.code != 403 {
		t.Errorf("cookie POST from another origin: %d", r.code)
	}
	host := g.srv.Addr().String()
	if r := g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", withCookie(map[string]string{"Content-Type": "application/json", "Origin": "http://" + host}), `{"strict":true}`); r.code != 200 {
		t.Errorf("cookie POST from the page's origin: %d %s", r.code, r.body)
	}
	// Expired and logged-out sessions are gone.
	g.clock.add(sessionTTL)
	if r := g.do(t, "GET", "/api/v1/devices", withCookie(nil), ""); r.code != 401 {
		t.Errorf("expired session: %d", r.code)
	}
	r = g.do(t, "POST", "/api/v1/login", js, `{"token":"`+testToken+`"}`)
	cookie = strings.SplitN(r.header.Get("Set-Cookie"), ";", 2)[0]
	g.do(t, "POST", "/api/v1/logout", withCookie(nil), "")
	if r := g.do(t, "GET", "/api/v1/devices", withCookie(nil), ""); r.code != 401 {
		t.Errorf("after logout: %d", r.code)
	}
}

func TestAllowClient(t *testing.T) {
	g := newTestGuard(t, func(a netip.Addr) bool { return !a.IsLoopback() })
	c, err := net.Dial("tcp", g.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 512))
	if n != 0 || err == nil {
		t.Errorf("a client outside allow_client read %d octets (%v), want a closed connection", n, err)
	}
	if got := g.srv.Closed.Load(); got != 1 {
		t.Errorf("Closed %d, want 1", got)
	}
}

func TestEndpoints(t *testing.T) {
	g := newTestGuard(t, nil)
	for range 3 {
		g.ask(t, "192.0.2.10", "a.example", dns.TypeA, false) // 1 miss, 2 hits
	}
	g.ask(t, "192.0.2.10", "nx.example", dns.TypeA, true)
	g.ask(t, "192.0.2.11", "forged.example", dns.TypeA, false)
	g.ask(t, "192.0.2.11", `<img\032src=x\032onerror=alert(1)>.limited.example`, dns.TypeA, false)
	for range 3 { // one storm event, three rate-limited queries
		g.ask(t, "192.0.2.12", "limited.example", dns.TypeAAAA, false)
	}

	r := g.do(t, "GET", "/api/v1/devices", bearer, "")
	var views []device.View
	if err := json.Unmarshal(r.body, &views); r.code != 200 || err != nil {
		t.Fatalf("devices: %d %v %s", r.code, err, r.body)
	}
	// The same JSON `dnsguard devices --json` prints: the registry's views.
	want, _ := json.Marshal(g.reg.Views())
	got, _ := json.Marshal(views)
	if !bytes.Equal(got, want) {
		t.Errorf("devices:\n%s\nregistry:\n%s", got, want)
	}
	if len(views) != 3 {
		t.Errorf("%d devices, want 3", len(views))
	}

	r = g.do(t, "GET", "/api/v1/devices/ip:192.0.2.10", bearer, "")
	var v device.View
	if err := json.Unmarshal(r.body, &v); r.code != 200 || err != nil || v.Queries != 4 {
		t.Errorf("device: %d %v %+v", r.code, err, v)
	}
	if r := g.do(t, "GET", "/api/v1/devices/02:00:00:00:00:99", bearer, ""); r.code != 404 {
		t.Errorf("unknown device: %d", r.code)
	}

	// Overrides, as the CLI sets them.
	js := map[string]string{"Authorization": bearer["Authorization"], "Content-Type": "application/json"}
	// (A strict device is always intercepted: exempt and strict are
	// set one at a time here.)
	r = g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", js, `{"exempt":true,"class":"cams"}`)
	v = device.View{}
	if err := json.Unmarshal(r.body, &v); r.code != 200 || err != nil || !v.Exempt || v.Override == nil || v.Override.Class != "cams" {
		t.Errorf("override: %d %v %+v", r.code, err, v)
	}
	id, _, d, _ := g.reg.Identify(netip.MustParseAddr("192.0.2.10"))
	if id != "ip:192.0.2.10" || !d.Exempt {
		t.Errorf("registry after the override: %s %+v", id, d)
	}
	if r := g.do(t, "GET", "/api/v1/classes", bearer, ""); r.code != 200 || strings.TrimSpace(string(r.body)) != `["cams"]` {
		t.Errorf("classes: %d %s", r.code, r.body)
	}
	for _, bad := range []string{`{"exempt":"yes"}`, `{"colour":"red"}`, `not json`, `{"class":"no-such-class"}`} {
		if r := g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", js, bad); r.code != 400 {
			t.Errorf("override %s: %d", bad, r.code)
		}
	}
	if r := g.do(t, "POST", "/api/v1/devices/02:00:00:00:00:99", js, `{"strict":true}`); r.code != 404 {
		t.Errorf("override of an unknown device: %d", r.code)
	}
	r = g.do(t, "POST", "/api/v1/devices/ip:192.0.2.10", js, `{}`)
	v = device.View{}
	if err := json.Unmarshal(r.body, &v); r.code != 200 || err != nil || v.Exempt || v.Override != nil {
		t.Errorf("cleared override: %d %v %+v", r.code, err, v)
	}

	r = g.do(t, "GET", "/api/v1/stats", bearer, "")
	var st Stats
	if err := json.Unmarshal(r.body, &st); r.code != 200 || err != nil {
		t.Fatalf("stats: %d %v", r.code, err)
	}
	if st.Cache.Hits != 2 || st.Cache.Misses < 1 || st.Limiter.RateLimited != 4 || st.Shield.RefusedByEDE["4"] != 1 ||
		st.Listen.Queries != 9 || st.Interception.TableRepairs != 3 || st.Devices.Total != 3 || len(st.Upstreams) != 1 {
		t.Errorf("stats: %+v", st)
	}

	r = g.do(t, "GET", "/api/v1/events", bearer, "")
	var evs []Event
	if err := json.Unmarshal(r.body, &evs); r.code != 200 || err != nil {
		t.Fatalf("events: %d %v", r.code, err)
	}
	kinds := map[string]int{}
	for _, e := range evs {
		kinds[e.Kind]++
	}
	if kinds["refused"] != 1 || kinds["storm"] != 2 || len(evs) != 3 {
		t.Errorf("events %+v", evs)
	}
	if evs[0].Kind != "refused" || evs[0].EDE != dnswire.EDEForgedAnswer || evs[0].Query != "forged.example." || evs[0].Device != "ip:192.0.2.11" {
		t.Errorf("refused event %+v", evs[0])
	}
	if r := g.do(t, "GET", fmt.Sprintf("/api/v1/events?since=%d", evs[1].Seq), bearer, ""); !bytes.Contains(r.body, []byte(`"seq":`+fmt.Sprint(evs[2].Seq))) || bytes.Contains(r.body, []byte(`"seq":`+fmt.Sprint(evs[1].Seq)+",")) {
		t.Errorf("events since %d: %s", evs[1].Seq, r.body)
	}

	r = g.do(t, "GET", "/api/v1/rates", bearer, "")
	var rates map[string][]float64
	if err := json.Unmarshal(r.body, &rates); r.code != 200 || err != nil {
		t.Errorf("rates: %d %v %s", r.code, err, r.body)
	}

	// The dashboard: its page, script and style, under a strict CSP.
	for _, p := range []string{"/", "/app.js", "/app.css"} {
		r := g.do(t, "GET", p, nil, "")
		if r.code != 200 || !strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") || len(r.body) == 0 {
			t.Errorf("GET %s: %d CSP %q", p, r.code, r.header.Get("Content-Security-Policy"))
		}
	}
	if r := g.do(t, "GET", "/", nil, ""); bytes.Contains(r.body, []byte("<script>")) || bytes.Contains(r.body, []byte(" style=")) {
		t.Errorf("inline script or style in the page")
	}
}

func TestEventsRing(t *testing.T) {
	ev := NewEvents(4)
	for i := range 10 {
		ev.Add(Event{Kind: "bypass", Target: fmt.Sprint(i)})
	}
	all := ev.Since(0)
	if len(all) != 4 || all[0].Target != "6" || all[3].Target != "9" || all[3].Seq != 10 {
		t.Errorf("ring %+v", all)
	}
	if got := ev.Since(9); len(got) != 1 || got[0].Seq != 10 {
		t.Errorf("since 9: %+v", got)
	}
}

// TestMetricsParse checks /metrics with real Prometheus parsers (the
// Python client's, and promtool's linter where installed) and its values
// against the traffic sent.
func TestMetricsParse(t *testing.T) {
	testenv.Require(t, "promtool")
	// Debian's python3 (with python3-prometheus-client), not whatever
	// python3 comes first in PATH.
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import prometheus_client").Run(); err != nil {
		if testenv.InCI() {
			t.Fatal("python3-prometheus-client missing")
		}
		t.Skip("python3-prometheus-client missing")
	}
	g := newTestGuard(t, nil)
	for range 3 {
		g.ask(t, "192.0.2.10", "a.example", dns.TypeA, false)
	}
	g.ask(t, "192.0.2.10", "nx.example", dns.TypeA, true)
	g.ask(t, "192.0.2.11", "forged.example", dns.TypeA, false)
	g.ask(t, "192.0.2.12", "limited.example", dns.TypeA, false)
	g.cnt.Bypass("02:00:00:00:00:01", "dot", netip.MustParseAddrPort("1.1.1.1:853"))
	g.cnt.Bypass("02:00:00:00:00:01", "do53", netip.MustParseAddrPort("8.8.8.8:53"))
	g.cnt.Bypass("02:00:00:00:00:01", "do53", netip.MustParseAddrPort("8.8.4.4:53"))

	// No token needed from an allowed client.
	r := g.do(t, "GET", "/metrics", nil, "")
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %q", r.code, r.header.Get("Content-Type"))
	}
	file := filepath.Join(t.TempDir(), "metrics.txt")
	os.WriteFile(file, r.body, 0o644)
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(r.body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, r.body)
	}
	const parse = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        key = s.name + "{" + ",".join(k + "=" + v for k, v in sorted(s.labels.items())) + "}"
        out[key] = s.value
print(json.dumps(out))
`
	pyOut, err := exec.Command(python, "-c", parse, file).CombinedOutput()
	if err != nil {
		t.Fatalf("prometheus_client parser: %v\n%s", err, pyOut)
	}
	var vals map[string]float64
	if err := json.Unmarshal(pyOut, &vals); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{
		"dnsguard_queries_total{rcode=NOERROR,transport=udp}":                 3,
		"dnsguard_queries_total{rcode=NXDOMAIN,transport=tcp}":                1,
		"dnsguard_queries_total{rcode=SERVFAIL,transport=udp}":                1,
		"dnsguard_queries_total{rcode=REFUSED,transport=udp}":                 1,
		"dnsguard_cache_hits_total{}":                                         2,
		"dnsguard_rate_limited_total{}":                                       1,
		"dnsguard_refused_answers_total{ede=4}":                               1,
		"dnsguard_bypass_attempts_total{kind=do53}":                           2,
		"dnsguard_bypass_attempts_total{kind=dot}":                            1,
		"dnsguard_intercept_table_repairs_total{}":                            3,
		"dnsguard_devices_confirmed{}":                                        3,
		"dnsguard_devices{estimator=txid,grade=insufficient}":                 3,
		"dnsguard_upstream_up{upstream=udp://127.0.0.1:9}":                    1,
		"dnsguard_upstream_latency_seconds_count{upstream=udp://127.0.0.1:9}": 0,
	} {
		if got, ok := vals[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
}

func TestRates(t *testing.T) {
	r := newRates()
	t0 := time.Unix(1_800_000_000, 0)
	views := func(q map[string]uint64) []device.View {
		var vs []device.View
		for id, n := range q {
			vs = append(vs, device.View{ID: id, Queries: n})
		}
		return vs
	}
	r.sample(views(map[string]uint64{"a": 10, "b": 5}), t0)
	r.sample(views(map[string]uint64{"a": 30, "b": 5}), t0.Add(10*time.Second))
	r.sample(views(map[string]uint64{"a": 31}), t0.Add(20*time.Second))
	got := r.snapshot()
	if len(got["a"]) != 2 || got["a"][0] != 2 || got["a"][1] != 0.1 {
		t.Errorf("a: %v, want [2 0.1]", got["a"])
	}
	if _, ok := got["b"]; ok {
		t.Errorf("b left the table but kept its history: %v", got["b"])
	}
	for i := range rateSamples + 5 {
		r.sample(views(map[string]uint64{"a": uint64(31 + i)}), t0.Add(time.Duration(30+10*i)*time.Second))
	}
	if n := len(r.snapshot()["a"]); n != rateSamples {
		t.Errorf("%d samples kept, want %d", n, rateSamples)
	}
}

// TestListenBeforeAddress: the API binds an address the host does not
// have yet (the LAN address at boot) and serves once it appears.
func TestListenBeforeAddress(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Require(t, "ip")
	b := make([]byte, 3)
	cryptorand.Read(b)
	ns := "dga-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	log := slog.New(slog.DiscardHandler)
	var srv *Server
	err := testenv.InNetns(ns, func() error {
		var err error
		srv, err = Serve(Options{Listen: "192.0.2.77:8053", Token: testToken, Sources: &Sources{Counters: NewCounters(0)}, Log: log})
		return err
	})
	if err != nil {
		t.Fatalf("binding an address not yet there: %v", err)
	}
	defer srv.Close(context.Background())
	if out, err := exec.Command("ip", "-n", ns, "addr", "add", "192.0.2.77/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var got []byte
	err = testenv.InNetns(ns, func() error {
		c, err := net.DialTimeout("tcp", "192.0.2.77:8053", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) || !bytes.Contains(got, []byte("dnsguard_queries_total")) {
		t.Errorf("after the address came: %v %.80q", err, got)
	}
}
