package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/localzone"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// dnsmasqProc is a real dnsmasq (Debian's) serving the LAN's names on
// loopback, as OpenWrt's does on 127.0.0.1:5354 once the guard holds 53.
type dnsmasqProc struct {
	addr string
	log  string // its query log
}

// startDnsmasq runs dnsmasq on a free loopback port with host records and
// an extra hosts file, no upstream (nothing it does not know leaves it),
// local-only domains, bogus-priv, and local answers with TTL 300.
func startDnsmasq(t *testing.T, args ...string) *dnsmasqProc {
	t.Helper()
	bin := testenv.Require(t, "dnsmasq")[0]
	dir := t.TempDir()
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("10.1.2.3 cam\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &dnsmasqProc{addr: addr, log: filepath.Join(dir, "queries.log")}
	cmd := exec.Command(bin, append([]string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
		"--port=" + port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--user=root", "--group=root", "--pid-file=" + filepath.Join(dir, "pid"),
		// As OpenWrt sets it up: the LAN domain, hosts expanded into it,
		// plain names and private reverse zones never forwarded.
		"--local=/lan/", "--domain=lan", "--expand-hosts", "--domain-needed", "--bogus-priv", "--local-ttl=300",
		"--log-queries", "--log-facility=" + d.log,
		"--host-record=router.lan,192.168.1.1,fd00::1",
		"--addn-hosts=" + hosts,
	}, args...)...)
	out, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		out.Close()
	})
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("router.lan.", dns.TypeA)
	for range 100 {
		if r, _, err := c.Exchange(q, addr); err == nil && len(r.Answer) == 1 {
			// Its log is written behind the answer: wait for the
			// probe's line, so that counts taken later start from it.
			for i := 0; d.queries(t, "A", "router.lan") == 0 && i < 100; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			return d
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("dnsmasq exited:\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("dnsmasq did not answer")
	return nil
}

// queries counts the queries dnsmasq logged for name and type.
func (d *dnsmasqProc) queries(t *testing.T, qtype, name string) int {
	t.Helper()
	b, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "query["+qtype+"] "+name+" from")
}

// localUpstream answers like a public resolver, except that it gives a
// private address for private.example. and a CNAME into the LAN, with
// the LAN address, for alias.example. (what a rebinding attack looks
// like), and an address for any LAN name it is asked (it never should be).
func localUpstream(q *dns.Msg) *dns.Msg {
	r := upstreamtest.AnswerA(publicAddr)(q)
	name := strings.ToLower(q.Question[0].Name)
	rr := func(s string) dns.RR { x, _ := dns.NewRR(s); return x }
	switch {
	case name == "private.example.":
		r.Answer = []dns.RR{rr("private.example. 300 IN A 192.168.1.77")}
	case name == "alias.example.":
		r.Answer = []dns.RR{rr("alias.example. 300 IN CNAME router.lan."), rr("router.lan. 300 IN A 192.168.1.1")}
	case dns.IsSubDomain("lan.", name):
		r.Answer = []dns.RR{rr(q.Question[0].Name + " 300 IN A 10.66.66.66")}
	}
	return r
}

// guardConfig writes a UCI config with the DoT upstream and a local section.
func guardConfig(t *testing.T, listen, upstreamURL, caFile, local string) string {
	t.Helper()
	conf := fmt.Sprintf(`config dnsguard 'main'
	list listen '%s'
	list upstream '%s'
	option upstream_ca '%s'

config local 'local'
%s
`, listen, upstreamURL, caFile, local)
	p := filepath.Join(t.TempDir(), "dnsguard")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// isLocalName reports whether name is one that must never reach an upstream.
func isLocalName(name string, lanDomains ...string) bool {
	zones := append(localzone.LocalZones(), "localhost.", "local.", "onion.", "invalid.")
	for _, d := range lanDomains {
		zones = append(zones, dns.Fqdn(d))
	}
	for _, z := range zones {
		if dns.IsSubDomain(z, strings.ToLower(name)) {
			return true
		}
	}
	return false
}

type localCase struct {
	name   string
	qtype  uint16
	rcode  int
	answer string // a substring of the answer section ("" for none)
	ede    int    // the Extended DNS Error expected, -1 for none checked
	maxTTL uint32 // every TTL at most this, 0 for no check
}

func checkLocalCases(t *testing.T, addr string, cases []localCase) {
	t.Helper()
	for _, tc := range cases {
		r := ask(t, addr, tc.name, tc.qtype, true)
		ans := fmt.Sprint(r.Answer)
		if r.Rcode != tc.rcode || (tc.answer == "") != (len(r.Answer) == 0) || !strings.Contains(ans, tc.answer) {
			t.Errorf("%s %s: %s %v, want %s with %q", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], r.Answer, dns.RcodeToString[tc.rcode], tc.answer)
		}
		if e := edeOf(r); tc.ede >= 0 && (e == nil || int(e.InfoCode) != tc.ede) {
			t.Errorf("%s: EDE %v, want %d", tc.name, e, tc.ede)
		}
		if len(r.Question) != 1 || wireName(t, r.Question[0].Name) != wireName(t, tc.name) {
			t.Errorf("%s: question %v", tc.name, r.Question)
		}
		for _, rr := range append(r.Answer, r.Ns...) {
			if tc.maxTTL > 0 && rr.Header().Ttl > tc.maxTTL {
				t.Errorf("%s: TTL %d over %d: %v", tc.name, rr.Header().Ttl, tc.maxTTL, rr)
			}
		}
	}
}

// wireName is name in wire form, as octets (case kept).
func wireName(t *testing.T, name string) string {
	t.Helper()
	var b [256]byte
	n, err := dns.PackDomainName(name, b[:], 0, nil, false)
	if err != nil {
		t.Fatalf("%q: %v", name, err)
	}
	return string(b[:n])
}

func reverse(t *testing.T, addr string) string {
	t.Helper()
	r, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLocalNamesDnsmasq: with a real dnsmasq as the local server, LAN
// names, their PTRs, home.arpa and the private reverse zones are
// answered by dnsmasq through the guard (private addresses and all: they
// came from the local server); localhost and .local are answered by the
// guard; the public upstream never sees any of them; and a public
// upstream's private address is refused, for a LAN name too.
func TestLocalNamesDnsmasq(t *testing.T) {
	testenv.Short(t)
	dm := startDnsmasq(t, "--local=/home.arpa/", "--host-record=printer.home.arpa,192.168.1.9")
	ca := upstreamtest.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	up := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: localUpstream})
	conf := guardConfig(t, freePort(t), up.URL(up.Name), caFile,
		"\tlist domain 'lan'\n\toption server '"+dm.addr+"'\n")
	g := startGuard(t, "--config", conf)
	probes := dm.queries(t, "A", "router.lan") // startDnsmasq's

	const none = -1
	checkLocalCases(t, g.addr, []localCase{
		// dnsmasq's names, TTL 300 there, at most 60 here.
		{"router.lan.", dns.TypeA, dns.RcodeSuccess, "192.168.1.1", none, 60},
		{"ROUTER.Lan.", dns.TypeAAAA, dns.RcodeSuccess, "fd00::1", none, 60},
		{"cam.lan.", dns.TypeA, dns.RcodeSuccess, "10.1.2.3", none, 60},
		{reverse(t, "192.168.1.1"), dns.TypePTR, dns.RcodeSuccess, "router.lan.", none, 60},
		{reverse(t, "fd00::1"), dns.TypePTR, dns.RcodeSuccess, "router.lan.", none, 60},
		{reverse(t, "10.1.2.3"), dns.TypePTR, dns.RcodeSuccess, "cam.lan.", none, 60},
		{"printer.home.arpa.", dns.TypeA, dns.RcodeSuccess, "192.168.1.9", none, 60},
		// What dnsmasq does not know, it says so (local=, bogus-priv).
		{"nope.lan.", dns.TypeA, dns.RcodeNameError, "", none, 60},
		{`my\032host.lan.`, dns.TypeA, dns.RcodeNameError, "", none, 60},
		{`a\(b\)c\;d\@e\"f.lan.`, dns.TypeA, dns.RcodeNameError, "", none, 60},
		{"x.home.arpa.", dns.TypeA, dns.RcodeNameError, "", none, 60},
		{reverse(t, "10.9.9.9"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		{reverse(t, "172.20.1.1"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		{reverse(t, "169.254.3.4"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		{reverse(t, "fe80::1"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		{reverse(t, "fd12:3456::1"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		{reverse(t, "127.0.0.2"), dns.TypePTR, dns.RcodeNameError, "", none, 60},
		// A plain name (a DHCP host name without its domain): dnsmasq's.
		{"cam.", dns.TypeA, dns.RcodeSuccess, "10.1.2.3", none, 60},
		{"nosuchhost.", dns.TypeAAAA, dns.RcodeNameError, "", none, 60},
		// The guard's own: localhost, mDNS.
		{"localhost.", dns.TypeA, dns.RcodeSuccess, "127.0.0.1", none, 0},
		{"app.localhost.", dns.TypeAAAA, dns.RcodeSuccess, "::1", none, 0},
		{"printer.local.", dns.TypeA, dns.RcodeNameError, "", none, 0},
		{"_ipp._tcp.local.", dns.TypePTR, dns.RcodeNameError, "", none, 0},
		// The public upstream's.
		{"www.example.", dns.TypeA, dns.RcodeSuccess, publicAddr, none, 0},
		// Rebinding: a public upstream's private address is refused, for
		// a public name and for a LAN name reached through a CNAME.
		{"private.example.", dns.TypeA, dns.RcodeServerFailure, "", dnswire.EDEBlocked, 0},
		{"alias.example.", dns.TypeA, dns.RcodeServerFailure, "", dnswire.EDEBlocked, 0},
	})
	// Local answers are cached like any other: dnsmasq saw router.lan A once.
	ask(t, g.addr, "router.lan.", dns.TypeA, true)
	for i := 0; dm.queries(t, "A", "router.lan") == probes && i < 100; i++ {
		time.Sleep(20 * time.Millisecond) // dnsmasq's log is written behind its answer
	}
	if n := dm.queries(t, "A", "router.lan") - probes; n != 1 {
		t.Errorf("dnsmasq asked router.lan A %d times, want 1 (the second from the cache)", n)
	}

	got := up.Received()
	asked := map[string]bool{}
	for _, rc := range got {
		if rc.Msg == nil || len(rc.Msg.Question) != 1 {
			continue
		}
		n := rc.Msg.Question[0].Name
		asked[strings.ToLower(n)] = true
		if isLocalName(n, "lan") || dns.CountLabel(n) == 1 && rc.Msg.Question[0].Qtype == dns.TypeA {
			t.Errorf("the public upstream was asked %s", n)
		}
	}
	for _, n := range []string{"www.example.", "private.example.", "alias.example."} {
		if !asked[n] {
			t.Errorf("the public upstream was not asked %s (asked %v)", n, asked)
		}
	}
}

// TestLocalNamesNoServer: without a local server, local names are
// answered NXDOMAIN by the guard (the zone's SOA in authority), never
// forwarded.
func TestLocalNamesNoServer(t *testing.T) {
	testenv.Short(t)
	ca := upstreamtest.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	up := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: localUpstream})
	conf := guardConfig(t, freePort(t), up.URL(up.Name), caFile, "\tlist domain 'home'\n\toption server ''\n")
	g := startGuard(t, "--config", conf)
	const none = -1
	var cases []localCase
	for _, n := range []string{"nas.home.", "x.home.arpa.", reverse(t, "192.168.1.1"), reverse(t, "100.64.0.1"),
		reverse(t, "fd00::1"), "printer.local.", "abc.onion."} {
		cases = append(cases, localCase{n, dns.TypePTR, dns.RcodeNameError, "", none, 0})
	}
	// The reverse names of ::1 and :: are zones of their own (RFC 6303
	// §4.3): their apex exists, empty.
	cases = append(cases, localCase{reverse(t, "::1"), dns.TypePTR, dns.RcodeSuccess, "", none, 0})
	cases = append(cases, localCase{"www.example.", dns.TypeA, dns.RcodeSuccess, publicAddr, none, 0})
	checkLocalCases(t, g.addr, cases)
	r := ask(t, g.addr, "nas.home.", dns.TypeA, false)
	if len(r.Ns) != 1 || r.Ns[0].Header().Name != "home." || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("authority %v, want the SOA of home.", r.Ns)
	}
	for _, rc := range up.Received() {
		if rc.Msg != nil && len(rc.Msg.Question) == 1 && isLocalName(rc.Msg.Question[0].Name, "home") {
			t.Errorf("the public upstream was asked %s", rc.Msg.Question[0].Name)
		}
	}
	if len(up.Received()) == 0 {
		t.Error("the public upstream was asked nothing: www.example. did not go there")
	}
}

// TestLocalNamesReload: config local follows SIGHUP: a local server
// configured later is used for names not yet cached, and a LAN domain
// added later stops going upstream.
func TestLocalNamesReload(t *testing.T) {
	testenv.Short(t)
	dm := startDnsmasq(t, "--local=/corp/", "--host-record=wiki.corp,10.20.0.5")
	ca := upstreamtest.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	up := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: localUpstream})
	listen := freePort(t)
	conf := guardConfig(t, listen, up.URL(up.Name), caFile, "\tlist domain 'lan'\n\toption server ''\n")
	g := startGuard(t, "--config", conf)
	const none = -1
	checkLocalCases(t, g.addr, []localCase{
		{"router.lan.", dns.TypeA, dns.RcodeNameError, "", none, 60},
		{"wiki.corp.", dns.TypeA, dns.RcodeSuccess, publicAddr, none, 0}, // not local yet: the upstream's
	})
	again := guardConfig(t, listen, up.URL(up.Name), caFile, "\tlist domain 'lan'\n\tlist domain 'corp'\n\toption server '"+dm.addr+"'\n")
	b, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(conf, b, 0o644)
	if !g.reload(t) {
		t.Fatalf("no reload after SIGHUP")
	}
	checkLocalCases(t, g.addr, []localCase{
		{"nas.lan.", dns.TypeA, dns.RcodeNameError, "", none, 60}, // dnsmasq's NXDOMAIN now
		{"router.lan.", dns.TypeAAAA, dns.RcodeSuccess, "fd00::1", none, 60},
		{"WIKI.corp.", dns.TypeAAAA, dns.RcodeSuccess, "", none, 60}, // dnsmasq: no AAAA
		{"x.wiki.corp.", dns.TypeA, dns.RcodeNameError, "", none, 60},
	})
	if n := dm.queries(t, "AAAA", "router.lan"); n != 1 {
		t.Errorf("dnsmasq asked router.lan AAAA %d times, want 1", n)
	}
	for _, rc := range up.Received() {
		if n := rc.Msg.Question[0].Name; isLocalName(n, "lan") || strings.ToLower(n) != "wiki.corp." && isLocalName(n, "corp") {
			t.Errorf("the public upstream was asked %s", n)
		}
	}
	if !strings.Contains(g.log(), "local names totals") {
		t.Error("no local names totals logged for the replaced configuration")
	}
}
