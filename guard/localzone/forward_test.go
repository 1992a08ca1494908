package localzone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// localServer is a test stand-in for dnsmasq on loopback (UDP and TCP,
// one port): it records each query and answers every name with a private
// address (A) or a PTR, TTL 300. Names starting with "big" get TC over
// UDP and the full answer over TCP; names starting with "nx" NXDOMAIN.
type localServer struct {
	addr  string
	mu    sync.Mutex
	got   []string // "udp NAME" / "tcp NAME" in arrival order
	ids   map[uint16]int
	ports map[string]int // UDP source ports seen
	srvs  []*dns.Server
}

func startLocalServer(t *testing.T) *localServer {
	t.Helper()
	s := &localServer{ids: map[uint16]int{}, ports: map[string]int{}}
	pc, ln, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		netw := w.RemoteAddr().Network()
		name := q.Question[0].Name
		s.mu.Lock()
		s.got = append(s.got, netw+" "+name)
		s.ids[q.Id]++
		if netw == "udp" {
			_, port, _ := net.SplitHostPort(w.RemoteAddr().String())
			s.ports[port]++
		}
		s.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		lower := strings.ToLower(name)
		switch {
		case strings.HasPrefix(lower, "nx"):
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{mustRR(t, "lan. 300 IN SOA router.lan. admin.lan. 1 3600 1200 604800 300")}
		case strings.HasPrefix(lower, "big") && netw == "udp":
			m.Truncated = true
		case q.Question[0].Qtype == dns.TypeA:
			m.Answer = append(m.Answer, mustRR(t, name+" 300 IN A 192.168.1.7"))
			if strings.HasPrefix(lower, "big") {
				for i := 8; i < 60; i++ {
					m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("%s 300 IN A 192.168.1.%d", name, i)))
				}
			}
		case q.Question[0].Qtype == dns.TypePTR:
			m.Answer = append(m.Answer, mustRR(t, name+" 300 IN PTR host.lan."))
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		s.srvs = append(s.srvs, srv)
	}
	t.Cleanup(func() {
		for _, srv := range s.srvs {
			srv.Shutdown()
		}
	})
	return s
}

func (s *localServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// sameName compares two presentation-form names on the wire, ASCII
// letters without case (escapes may differ: \032 and "\ " are one octet).
func sameName(a, b string) bool {
	var ba, bb [256]byte
	na, erra := dns.PackDomainName(dns.Fqdn(a), ba[:], 0, nil, false)
	nb, errb := dns.PackDomainName(dns.Fqdn(b), bb[:], 0, nil, false)
	return erra == nil && errb == nil &&
		string(dnswire.AppendLower(nil, ba[:na])) == string(dnswire.AppendLower(nil, bb[:nb]))
}

func mustRR(t *testing.T, s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// below returns a name below zone: a PTR-looking one in reverse zones.
func below(zone string) string {
	if strings.HasSuffix(zone, ".arpa.") && zone != "home.arpa." {
		return "1." + zone
	}
	return "host." + zone
}

func newLocal(t *testing.T, cfg Config) *Local {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestLocalZonesList: the registry's zones are all there, spelled right.
func TestLocalZonesList(t *testing.T) {
	z := LocalZones()
	has := map[string]bool{}
	for _, n := range z {
		if _, ok := dns.IsDomainName(n); !ok || !dns.IsFqdn(n) || n != strings.ToLower(n) {
			t.Errorf("bad zone %q", n)
		}
		if has[n] {
			t.Errorf("zone %q twice", n)
		}
		has[n] = true
	}
	// 1 + 16 + 1 (RFC 1918) + 7 (RFC 5735/5737) + 64 (RFC 7793) + 2 + 1 + 4 + 1 (IPv6) + home.arpa
	if len(z) != 98 {
		t.Errorf("%d zones, want 98", len(z))
	}
	for _, want := range []string{
		"10.in-addr.arpa.", "16.172.in-addr.arpa.", "31.172.in-addr.arpa.", "168.192.in-addr.arpa.",
		"0.in-addr.arpa.", "127.in-addr.arpa.", "254.169.in-addr.arpa.", "255.255.255.255.in-addr.arpa.",
		"2.0.192.in-addr.arpa.", "100.51.198.in-addr.arpa.", "113.0.203.in-addr.arpa.",
		"64.100.in-addr.arpa.", "127.100.in-addr.arpa.",
		"d.f.ip6.arpa.", "8.e.f.ip6.arpa.", "9.e.f.ip6.arpa.", "a.e.f.ip6.arpa.", "b.e.f.ip6.arpa.",
		"8.b.d.0.1.0.0.2.ip6.arpa.", "home.arpa.",
	} {
		if !has[want] {
			t.Errorf("zone %s missing", want)
		}
	}
	// The reverse names of :: and ::1 are the zones themselves (RFC 6303 §4.3).
	for _, a := range []string{"::", "::1"} {
		rev, err := dns.ReverseAddr(a)
		if err != nil || !has[rev] {
			t.Errorf("reverse zone of %s (%s) missing", a, rev)
		}
	}
	for _, notLocal := range []string{"15.172.in-addr.arpa.", "32.172.in-addr.arpa.", "63.100.in-addr.arpa.", "128.100.in-addr.arpa.", "c.e.f.ip6.arpa."} {
		if has[notLocal] {
			t.Errorf("%s is not a locally served zone", notLocal)
		}
	}
}

// TestLocalEveryZone: every local zone and LAN domain, and names below
// them, go to the local server when there is one and are answered here
// (NXDOMAIN below the apex, NODATA at it, the zone's SOA in authority)
// when there is none; nothing local reaches next.
func TestLocalEveryZone(t *testing.T) {
	srv := startLocalServer(t)
	domains := []string{"lan", "Corp.Example", `my\032home`}
	with := newLocal(t, Config{Domains: domains, Server: srv.addr})
	without := newLocal(t, Config{Domains: domains})
	zones := append(LocalZones(), "lan.", "corp.example.", `my\032home.`)
	if got := with.Zones(); len(got) != len(zones) {
		t.Fatalf("%d zones, want %d", len(got), len(zones))
	}
	for _, zone := range zones {
		for _, name := range []string{zone, below(zone), strings.ToUpper(below(zone))} {
			qtype := dns.TypeA
			if strings.HasSuffix(zone, ".arpa.") && zone != "home.arpa." {
				qtype = dns.TypePTR
			}
			t.Run(name, func(t *testing.T) {
				before := len(srv.received())
				got, forwarded := serve(t, with, request(t, name, qtype))
				if forwarded {
					t.Fatal("with a local server: sent upstream")
				}
				rec := srv.received()
				if len(rec) != before+1 || !sameName(strings.TrimPrefix(rec[len(rec)-1], "udp "), name) {
					t.Fatalf("local server received %q, want one udp %s", rec[before:], name)
				}
				if got.Rcode != dns.RcodeSuccess || len(got.Answer) != 1 || !sameName(got.Answer[0].Header().Name, name) {
					t.Fatalf("answer %v", got)
				}
				if ttl := got.Answer[0].Header().Ttl; ttl != 60 {
					t.Errorf("TTL %d, want the local server's 300 capped at 60", ttl)
				}

				got, forwarded = serve(t, without, request(t, name, qtype))
				if forwarded {
					t.Fatal("without a local server: sent upstream")
				}
				rcode := dns.RcodeNameError
				if strings.EqualFold(name, zone) {
					rcode = dns.RcodeSuccess // the apex exists
				}
				checkAnswer(t, got, rcode, nil, strings.ToLower(zone))
				if len(got.Ns) == 1 && (got.Ns[0].Header().Ttl != 60 || got.Ns[0].(*dns.SOA).Minttl != 60) {
					t.Errorf("SOA %v: want TTL and minimum 60", got.Ns[0])
				}
			})
		}
	}
	if n := without.Stats.Answered.Load(); n != uint64(3*len(zones)) {
		t.Errorf("answered here %d, want %d", n, 3*len(zones))
	}
}

// TestLocalNotLocal: other names, and names that only look local, go to
// next, never to the local server.
func TestLocalNotLocal(t *testing.T) {
	srv := startLocalServer(t)
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr})
	for _, name := range []string{
		"example.com.", "lan.example.", "planet.", "xlan.", `my\.lan.`, `x.lan\032.`,
		"15.172.in-addr.arpa.", "1.32.172.in-addr.arpa.", "1.1.1.1.in-addr.arpa.", "in-addr.arpa.", "arpa.",
		"1.63.100.in-addr.arpa.", "1.128.100.in-addr.arpa.", "c.e.f.ip6.arpa.", "8.8.b.d.0.1.0.0.2.ip6.arpa.x.",
		"1.0.0.2.ip6.arpa.", "localhost.", "x.local.", ".",
	} {
		t.Run(name, func(t *testing.T) {
			// TXT: A and AAAA for one-label names are local (TestLocalPlainNames).
			if _, forwarded := serve(t, l, request(t, name, dns.TypeTXT)); !forwarded {
				t.Error("kept local")
			}
		})
	}
	if rec := srv.received(); len(rec) != 0 {
		t.Errorf("local server received %q", rec)
	}
}

// TestLocalPlainNames: A and AAAA queries for one-label names (a DHCP
// host name without its domain) stay local, as with dnsmasq's
// domain-needed; other types for them (a TLD's DS or SOA) do not.
func TestLocalPlainNames(t *testing.T) {
	srv := startLocalServer(t)
	with := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr})
	without := newLocal(t, Config{Domains: []string{"lan"}})
	for _, tc := range []struct {
		name  string
		qtype uint16
		local bool
	}{
		{"mylaptop.", dns.TypeA, true},
		{"MyLaptop.", dns.TypeAAAA, true},
		{`my\032laptop.`, dns.TypeA, true},
		{`my\.laptop.`, dns.TypeA, true}, // one label holding a dot
		{"com.", dns.TypeDS, false},
		{"com.", dns.TypeSOA, false},
		{"mylaptop.", dns.TypeMX, false},
		{"my.laptop.", dns.TypeA, false},
		{".", dns.TypeA, false},
	} {
		t.Run(tc.name+dns.TypeToString[tc.qtype], func(t *testing.T) {
			before := len(srv.received())
			got, forwarded := serve(t, with, request(t, tc.name, tc.qtype))
			if forwarded == tc.local || (len(srv.received()) == before+1) != tc.local {
				t.Fatalf("with a local server: forwarded upstream %v, to the local server %v", forwarded, len(srv.received()) > before)
			}
			got, forwarded = serve(t, without, request(t, tc.name, tc.qtype))
			if forwarded == tc.local {
				t.Fatalf("without a local server: forwarded upstream %v", forwarded)
			}
			if tc.local && (got.Rcode != dns.RcodeNameError || len(got.Answer) != 0) {
				t.Errorf("without a local server: %v", got)
			}
		})
	}
}

// TestLocalTruncated: a truncated UDP answer is asked again over TCP.
func TestLocalTruncated(t *testing.T) {
	srv := startLocalServer(t)
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr})
	got, forwarded := serve(t, l, request(t, "big.lan.", dns.TypeA))
	if forwarded || got.Rcode != dns.RcodeSuccess || len(got.Answer) != 53 {
		t.Fatalf("forwarded %v answer %v", forwarded, got)
	}
	if rec := srv.received(); len(rec) != 2 || rec[0] != "udp big.lan." || rec[1] != "tcp big.lan." {
		t.Errorf("local server received %q, want udp then tcp", rec)
	}
}

// TestLocalFreshIDs: every query to the local server has its own ID and
// source port (CSPRNG: 200 queries, a repeat is possible but 3 are not
// plausible).
func TestLocalFreshIDs(t *testing.T) {
	srv := startLocalServer(t)
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr})
	for i := range 200 {
		req := request(t, fmt.Sprintf("h%d.lan.", i), dns.TypeA)
		req.Q.ID = 7 // the device's ID is never what goes out
		serve(t, l, req)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.ids) < 197 || srv.ids[7] > 2 {
		t.Errorf("%d distinct IDs over 200 queries (%d times the device's)", len(srv.ids), srv.ids[7])
	}
	if len(srv.ports) < 197 {
		t.Errorf("%d distinct source ports over 200 queries", len(srv.ports))
	}
}

// TestLocalNegative: the local server's NXDOMAIN keeps its SOA, capped.
func TestLocalNegative(t *testing.T) {
	srv := startLocalServer(t)
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr, MaxTTL: 20 * time.Second})
	got, _ := serve(t, l, request(t, "nxhost.lan.", dns.TypeA))
	if got.Rcode != dns.RcodeNameError || len(got.Ns) != 1 || got.Ns[0].Header().Ttl != 20 {
		t.Fatalf("answer %v", got)
	}
}

// TestLocalServerDown: no answer from the local server is a SERVFAIL
// with EDE 22 after a bounded number of attempts, and still never goes
// upstream.
func TestLocalServerDown(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // takes queries, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: pc.LocalAddr().String(), Timeout: 50 * time.Millisecond})
	forwarded := false
	h := l.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		forwarded = true
		return nil, errors.New("upstream")
	}))
	_, err = h.ServeDNS(context.Background(), request(t, "router.lan.", dns.TypeA))
	var se *stage.Error
	if !errors.As(err, &se) || se.EDE.Code != dnswire.EDENoReachableAut || forwarded {
		t.Fatalf("err %v forwarded %v", err, forwarded)
	}
	if l.Stats.Forwarded.Load() != 1 || l.Stats.Failed.Load() != 1 {
		t.Errorf("forwarded %d failed %d", l.Stats.Forwarded.Load(), l.Stats.Failed.Load())
	}
	// Both attempts reached the socket.
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 512)
	for i := range attempts {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatalf("attempt %d not sent: %v", i+1, err)
		}
	}
}

// TestLocalCheck: Check sees every local answer and its refusal is the
// device's SERVFAIL.
func TestLocalCheck(t *testing.T) {
	srv := startLocalServer(t)
	var seen []string
	l := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr,
		Check: func(_ policy.Terms, q, resp *dns.Msg) (*dns.Msg, error) {
			seen = append(seen, q.Question[0].Name)
			if strings.HasPrefix(q.Question[0].Name, "bad") {
				return nil, stage.Fail(dnswire.EDEForgedAnswer, "forged", nil)
			}
			return resp, nil
		}})
	if got, _ := serve(t, l, request(t, "good.lan.", dns.TypeA)); len(got.Answer) != 1 {
		t.Errorf("answer %v", got)
	}
	h := l.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		return nil, errors.New("upstream")
	}))
	_, err := h.ServeDNS(context.Background(), request(t, "bad.lan.", dns.TypeA))
	var se *stage.Error
	if !errors.As(err, &se) || se.EDE.Code != dnswire.EDEForgedAnswer {
		t.Errorf("err %v", err)
	}
	if len(seen) != 2 || l.Stats.Refused.Load() != 1 {
		t.Errorf("checked %q, refused %d", seen, l.Stats.Refused.Load())
	}
}

func TestNewErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Domains: []string{"a..b"}},
		{Domains: []string{"."}},
		{Server: "localhost"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// FuzzMatch: matching on the wire agrees with a plain walk over the
// name's labels in presentation form (dns.IsSubDomain, which compares
// without case and escapes alike).
func FuzzMatch(f *testing.F) {
	for _, n := range []string{"a.lan.", "LAN.", `x\032y.lan.`, "1.10.in-addr.arpa.", "lan.x.", `my\.lan.`, "."} {
		f.Add(n)
	}
	l, err := New(Config{Domains: []string{"lan", `sp\032ace`}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var buf [256]byte
		n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
		if err != nil {
			return
		}
		wire := buf[:n]
		i, apex, ok := l.zones.match(wire)
		pres := dnswire.NameString(wire)
		want := -1
		for j, z := range l.zones.names {
			if dns.IsSubDomain(z, pres) && (want < 0 || dns.CountLabel(z) > dns.CountLabel(l.zones.names[want])) {
				want = j
			}
		}
		if ok != (want >= 0) || ok && (i != want || apex != (dns.CountLabel(pres) == dns.CountLabel(l.zones.names[i]))) {
			t.Fatalf("%q: match %d %v %v, want %d", pres, i, apex, ok, want)
		}
	})
}

// TestLocalPlainServiceBinding: browsers ask HTTPS (and SVCB) records
// for the host names typed in ("http://mylaptop/"); for a one-label name
// that went to the public upstream and leaked the DHCP host name (and
// dnsmasq's domain-needed covers only A/AAAA, so asking it would leak the
// name to its WAN upstreams). Answered here: no data, so the browser
// goes on with the A/AAAA lookups, which the local server answers.
func TestLocalPlainServiceBinding(t *testing.T) {
	srv := startLocalServer(t)
	with := newLocal(t, Config{Domains: []string{"lan"}, Server: srv.addr})
	without := newLocal(t, Config{Domains: []string{"lan"}})
	for _, qt := range []uint16{dns.TypeHTTPS, dns.TypeSVCB} {
		for _, l := range []*Local{with, without} {
			before := len(srv.received())
			got, forwarded := serve(t, l, request(t, "mylaptop.", qt))
			if forwarded || len(srv.received()) != before {
				t.Errorf("%s mylaptop.: forwarded upstream %v, to the local server %v", dns.TypeToString[qt], forwarded, len(srv.received()) != before)
			}
			if got == nil || got.Rcode != dns.RcodeSuccess || len(got.Answer) != 0 {
				t.Errorf("%s mylaptop.: %v, want NOERROR without data", dns.TypeToString[qt], got)
			}
		}
		// A two-label name is not a plain name: upstream as before.
		if _, forwarded := serve(t, with, request(t, "www.example.", qt)); !forwarded {
			t.Errorf("%s www.example.: not forwarded upstream", dns.TypeToString[qt])
		}
	}
}
