package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// signedZone signs zone (text, origin) with ldns-keygen and ldns-signzone
// (Debian's ldnsutils) and returns the signed file and its KSK's DS.
// tamper edits the signed text (a forged record keeps its old RRSIG).
func signedZone(t *testing.T, dir, origin, text string, signArgs []string, tamper func(string) string) (file, ds string) {
	t.Helper()
	bins := testenv.Require(t, "ldns-keygen", "ldns-signzone")
	keygen := func(args ...string) string {
		cmd := exec.Command(bins[0], append(args, origin)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ldns-keygen %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ksk := keygen("-a", "ECDSAP256SHA256", "-k")
	zsk := keygen("-a", "ECDSAP256SHA256")
	src := filepath.Join(dir, origin+"zone")
	if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, origin+"signed")
	cmd := exec.Command(bins[1], append(append([]string{"-o", origin, "-f", file}, signArgs...), src, ksk, zsk)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ldns-signzone: %v\n%s", err, out)
	}
	if tamper != nil {
		b, _ := os.ReadFile(file)
		if err := os.WriteFile(file, []byte(tamper(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, ksk+".ds"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rr, err := dns.NewRR(line); err == nil && rr != nil {
			if d, ok := rr.(*dns.DS); ok && d.DigestType == dns.SHA256 {
				ds = strings.Join(strings.Fields(d.String()), " ")
			}
		}
	}
	if ds == "" {
		t.Fatalf("no SHA-256 DS in %s", b)
	}
	return file, ds
}

// dropLines removes the zone file lines f matches (f gets a line's fields;
// lines with fewer than five are kept).
func dropLines(s string, f func([]string) bool) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if fs := strings.Fields(line); len(fs) >= 5 && f(fs) {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func zoneText(origin string, records ...string) string {
	s := fmt.Sprintf("$ORIGIN %s\n$TTL 300\n@ IN SOA ns.%s host.invalid. 1 3600 600 86400 300\n@ IN NS ns.%s\nns IN A 93.184.215.53\n", origin, origin, origin)
	return s + strings.Join(records, "\n") + "\n"
}

// TestDNSSECValidation: zones signed by ldns-signzone, served by unbound
// as a non-validating authoritative upstream (auth-zone); the guard,
// configured with the zones' DS as trust anchors, validates; an unbound
// configured as a validating forwarder with the same anchors runs beside
// it and must give the same verdicts.
func TestDNSSECValidation(t *testing.T) {
	testenv.Short(t)
	dir := t.TempDir()
	const good, forged, wild = "93.184.215.14", "93.184.215.15", "93.184.215.16"
	type zone struct{ name, file, ds string }
	var zones []zone
	sign := func(name, text string, args []string, tamper func(string) string) {
		f, ds := signedZone(t, dir, name, text, args, tamper)
		zones = append(zones, zone{name, f, ds})
	}
	day := func(d int) string { return time.Now().Add(time.Duration(d) * 24 * time.Hour).UTC().Format("20060102") }
	sign("signed.test.", zoneText("signed.test.",
		"www IN A "+good, "forged IN A "+good, "nosig IN A "+good, "*.wild IN A "+wild, `txt IN TXT "hello"`,
		"unsigned IN NS ns.unsigned", "ns.unsigned IN A 93.184.215.53"), nil,
		func(s string) string {
			// An on-path or compromised upstream alters one address
			// and strips one signature.
			s = strings.Replace(s, "forged.signed.test.\t300\tIN\tA\t"+good, "forged.signed.test.\t300\tIN\tA\t"+forged, 1)
			return dropLines(s, func(f []string) bool { return f[0] == "nosig.signed.test." && f[3] == "RRSIG" && f[4] == "A" })
		})
	if b, _ := os.ReadFile(zones[0].file); !strings.Contains(string(b), forged) || strings.Contains(string(b), "nosig.signed.test.\t300\tIN\tRRSIG\tA ") {
		t.Fatalf("tampering did not apply:\n%s", b)
	}
	sign("nsec3.test.", zoneText("nsec3.test.", "www IN A "+good, "*.wild IN A "+wild), []string{"-n", "-t", "0"}, nil)
	sign("expired.test.", zoneText("expired.test.", "www IN A "+good), []string{"-i", day(-60), "-e", day(-2)}, nil)
	sign("future.test.", zoneText("future.test.", "www IN A "+good), []string{"-i", day(2), "-e", day(60)}, nil)
	sign("nokey.test.", zoneText("nokey.test.", "www IN A "+good), nil, func(s string) string {
		return dropLines(s, func(f []string) bool { return f[3] == "DNSKEY" || f[3] == "RRSIG" && f[4] == "DNSKEY" })
	})
	sign("stripped.test.", zoneText("stripped.test.", "www IN A "+good), []string{"-n", "-t", "0"}, func(s string) string {
		return dropLines(s, func(f []string) bool { return f[3] == "NSEC3" || f[3] == "RRSIG" && f[4] == "NSEC3" })
	})
	// The unsigned child of signed.test., served beside it.
	unsignedFile := filepath.Join(dir, "unsigned.signed.test.zone")
	os.WriteFile(unsignedFile, []byte(zoneText("unsigned.signed.test.", "www IN A "+good)), 0o644)

	var extra []string
	extra = append(extra, `local-zone: "test." nodefault`)
	for _, z := range append(zones, zone{name: "unsigned.signed.test.", file: unsignedFile}) {
		extra = append(extra, "auth-zone:", "\tname: "+z.name, "\tzonefile: "+z.file, "\tfor-downstream: yes", "\tfor-upstream: no", "\tfallback-enabled: no", "server:")
	}
	auth := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: extra})

	var anchors []string
	for _, z := range zones {
		anchors = append(anchors, z.ds)
	}
	// unbound as a validating forwarder with the same anchors.
	vextra := []string{`module-config: "validator iterator"`, `local-zone: "test." nodefault`, "do-not-query-localhost: no", "val-log-level: 2", "ede: yes"}
	for _, a := range anchors {
		vextra = append(vextra, fmt.Sprintf("trust-anchor: %q", a))
	}
	for _, z := range zones {
		vextra = append(vextra, "forward-zone:", "\tname: "+z.name, "\tforward-addr: "+auth.Do53.Addr().String()+"@"+fmt.Sprint(auth.Do53.Port()), "server:")
	}
	ref := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: vextra})

	conf := "config dnsguard 'main'\n\toption dnssec '1'\n"
	for _, a := range anchors {
		conf += "\tlist trust_anchor '" + a + "'\n"
	}
	confFile := filepath.Join(dir, "dnsguard.conf")
	os.WriteFile(confFile, []byte(conf), 0o644)
	g := startGuard(t, "--dnssec", "--config", confFile, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())

	query := func(addr, name string, qtype uint16, do, ad, cd bool) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.AuthenticatedData, m.CheckingDisabled = ad, cd
		m.SetEdns0(1232, do)
		r, _, err := (&dns.Client{Timeout: 4 * time.Second}).Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s %s: %v", addr, name, err)
		}
		return r
	}
	hasSig := func(m *dns.Msg) bool {
		for _, rr := range append(append([]dns.RR{}, m.Answer...), m.Ns...) {
			if rr.Header().Rrtype == dns.TypeRRSIG {
				return true
			}
		}
		return false
	}
	cases := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		ad      bool
		ede     uint16 // for SERVFAIL
		cd      bool
		compare bool // unbound must agree
	}{
		{"secure A", "www.signed.test.", dns.TypeA, dns.RcodeSuccess, true, 0, false, true},
		{"secure TXT", "txt.signed.test.", dns.TypeTXT, dns.RcodeSuccess, true, 0, false, true},
		{"forged A", "forged.signed.test.", dns.TypeA, dns.RcodeServerFailure, false, 6, false, true},
		{"forged A with CD=1", "forged.signed.test.", dns.TypeA, dns.RcodeSuccess, false, 0, true, true},
		{"NXDOMAIN NSEC", "nope.signed.test.", dns.TypeA, dns.RcodeNameError, true, 0, false, true},
		{"NODATA NSEC", "www.signed.test.", dns.TypeAAAA, dns.RcodeSuccess, true, 0, false, true},
		{"wildcard NSEC", "a.wild.signed.test.", dns.TypeA, dns.RcodeSuccess, true, 0, false, true},
		{"secure A NSEC3", "www.nsec3.test.", dns.TypeA, dns.RcodeSuccess, true, 0, false, true},
		{"NXDOMAIN NSEC3", "nope.nsec3.test.", dns.TypeA, dns.RcodeNameError, true, 0, false, true},
		{"NODATA NSEC3", "www.nsec3.test.", dns.TypeMX, dns.RcodeSuccess, true, 0, false, true},
		{"wildcard NSEC3", "b.wild.nsec3.test.", dns.TypeA, dns.RcodeSuccess, true, 0, false, true},
		{"expired signatures", "www.expired.test.", dns.TypeA, dns.RcodeServerFailure, false, 7, false, true},
		{"not yet valid signatures", "www.future.test.", dns.TypeA, dns.RcodeServerFailure, false, 8, false, true},
		{"missing RRSIG", "nosig.signed.test.", dns.TypeA, dns.RcodeServerFailure, false, 10, false, true},
		{"missing DNSKEY", "www.nokey.test.", dns.TypeA, dns.RcodeServerFailure, false, 9, false, true},
		{"stripped NSEC3 proof", "nope.stripped.test.", dns.TypeA, dns.RcodeServerFailure, false, 12, false, true},
		{"unsigned delegation", "www.unsigned.signed.test.", dns.TypeA, dns.RcodeSuccess, false, 0, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := query(g.addr, tc.qname, tc.qtype, true, false, tc.cd)
			if r.Rcode != tc.rcode || r.AuthenticatedData != tc.ad {
				t.Errorf("guard: %s AD=%v, want %s AD=%v\n%v", dns.RcodeToString[r.Rcode], r.AuthenticatedData, dns.RcodeToString[tc.rcode], tc.ad, r)
			}
			if tc.rcode == dns.RcodeServerFailure {
				if e := edeOf(r); e == nil || e.InfoCode != tc.ede {
					t.Errorf("guard: EDE %v, want %d", e, tc.ede)
				}
			}
			if tc.ad && !hasSig(r) {
				t.Errorf("guard: no RRSIG to a DO device:\n%v", r)
			}
			if tc.compare {
				u := query(ref.Do53.String(), tc.qname, tc.qtype, true, false, tc.cd)
				if u.Rcode != r.Rcode || u.AuthenticatedData != r.AuthenticatedData {
					t.Errorf("unbound says %s AD=%v, the guard %s AD=%v\n%v", dns.RcodeToString[u.Rcode], u.AuthenticatedData, dns.RcodeToString[r.Rcode], r.AuthenticatedData, u)
				}
			}
		})
	}
	// Device flags: AD only to DO or AD devices; RRSIGs only to DO devices.
	if r := query(g.addr, "www.signed.test.", dns.TypeA, false, false, false); r.AuthenticatedData || hasSig(r) || len(r.Answer) != 1 {
		t.Errorf("plain device got AD or RRSIG:\n%v", r)
	}
	if r := query(g.addr, "www.signed.test.", dns.TypeA, false, true, false); !r.AuthenticatedData || hasSig(r) {
		t.Errorf("AD device:\n%v", r)
	}
	// A DO device gets a wildcard expansion's proof, to validate it itself.
	if r := query(g.addr, "c.wild.signed.test.", dns.TypeA, true, false, false); len(r.Ns) == 0 || r.Ns[0].Header().Rrtype != dns.TypeNSEC && r.Ns[0].Header().Rrtype != dns.TypeRRSIG {
		t.Errorf("wildcard answer without its proof:\n%v", r)
	}
	// Explicit DNSSEC types without DO are answered as the upstream
	// answers them (unbound's auth-zone gives RRSIG queries NODATA; they
	// are not validated: no SERVFAIL, no AD), NSEC with its records.
	if r := query(g.addr, "www.signed.test.", dns.TypeRRSIG, false, false, false); r.Rcode != dns.RcodeSuccess || r.AuthenticatedData {
		t.Errorf("RRSIG query without DO:\n%v", r)
	}
	if r := query(g.addr, "www.signed.test.", dns.TypeNSEC, false, false, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 || r.Answer[0].Header().Rrtype != dns.TypeNSEC {
		t.Errorf("NSEC query without DO:\n%v", r)
	}
	// Refusals are logged (at a bounded rate).
	if !strings.Contains(g.log(), `msg="dnssec: answer refused"`) {
		t.Errorf("no refusal logged:\n%s", g.log())
	}
	// The anchors' keys are tracked (RFC 5011) in the state file.
	if !strings.Contains(g.log(), "trust anchor state changed") {
		t.Errorf("no RFC 5011 state saved:\n%s", g.log())
	}
	// The forged answer is still refused from the cache (bogus cached).
	if r := query(g.addr, "forged.signed.test.", dns.TypeA, false, false, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("forged answer from cache:\n%v", r)
	}

	// A negative trust anchor lets the forged answer through, without AD.
	conf2 := conf + "\tlist insecure_domain 'signed.test'\n"
	confFile2 := filepath.Join(dir, "dnsguard-nta.conf")
	os.WriteFile(confFile2, []byte(conf2), 0o644)
	g2 := startGuard(t, "--dnssec", "--config", confFile2, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())
	if r := query(g2.addr, "forged.signed.test.", dns.TypeA, true, false, false); r.Rcode != dns.RcodeSuccess || r.AuthenticatedData {
		t.Errorf("negative trust anchor:\n%v", r)
	}
	if r := query(g2.addr, "www.nsec3.test.", dns.TypeA, true, false, false); !r.AuthenticatedData {
		t.Errorf("other zones still validated:\n%v", r)
	}

	// With validation off the guard never sets AD, whatever the upstream says.
	g3 := startGuard(t, "--dnssec=false", "--listen", anyPort, "--upstream", "udp://"+ref.Do53.String())
	if r := query(g3.addr, "www.signed.test.", dns.TypeA, true, false, false); r.AuthenticatedData || r.Rcode != dns.RcodeSuccess {
		t.Errorf("validation off, validating upstream:\n%v", r)
	}
}

// cpuTicks returns a process's user+system CPU time in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return u + s
}

// TestDNSSECMissCost measures (DNSGUARD_MEASURE=1) the CPU one validated
// cache miss costs the guard, beside the same guard with validation off
// and unbound validating the same signed zone as a forwarder: each query
// is a new signed name (a cache miss whose keys are cached, with an RRSIG
// not checked before). It checks every answer is validated; the figures
// are logged.
func TestDNSSECMissCost(t *testing.T) {
	testenv.Short(t)
	if os.Getenv("DNSGUARD_MEASURE") != "1" {
		t.Skip("set DNSGUARD_MEASURE=1 to measure")
	}
	dir := t.TempDir()
	// n distinct signed names: each answer carries an RRSIG not seen before.
	const n = 3000
	var recs []string
	for i := range n + 1 {
		recs = append(recs, fmt.Sprintf("n%d IN A 93.184.215.16", i))
	}
	file, ds := signedZone(t, dir, "signed.test.", zoneText("signed.test.", recs...), nil, nil)
	auth := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: []string{
		`local-zone: "test." nodefault`, "auth-zone:", "\tname: signed.test.", "\tzonefile: " + file, "\tfor-downstream: yes", "\tfor-upstream: no", "server:"}})
	// unbound as a validating forwarder, run here so its CPU can be read.
	ubin := testenv.Require(t, "unbound")[0]
	uport := freePort(t)
	_, portStr, _ := strings.Cut(uport, ":")
	uconf := fmt.Sprintf("server:\n\tinterface: %s\n\tport: %s\n\tdo-ip6: no\n\tdo-daemonize: no\n\tchroot: \"\"\n\tusername: \"\"\n\tdirectory: %q\n\tpidfile: \"\"\n\tuse-syslog: no\n\tnum-threads: 1\n\taccess-control: 127.0.0.0/8 allow\n\tmodule-config: \"validator iterator\"\n\tlocal-zone: \"test.\" nodefault\n\tdo-not-query-localhost: no\n\ttrust-anchor: %q\n\tprefetch: no\nforward-zone:\n\tname: signed.test.\n\tforward-addr: %s@%d\nremote-control:\n\tcontrol-enable: no\n",
		"127.0.0.1", portStr, dir, ds, auth.Do53.Addr(), auth.Do53.Port())
	os.WriteFile(filepath.Join(dir, "ref.conf"), []byte(uconf), 0o644)
	ucmd := exec.Command(ubin, "-d", "-c", filepath.Join(dir, "ref.conf"))
	if err := ucmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ucmd.Process.Signal(os.Interrupt); ucmd.Wait() })

	// One device asks everything: no per-device rate limit in the way.
	const limits = "config limits\n\toption device_rate '1000000'\n\toption device_burst '1000000'\n"
	conf := filepath.Join(dir, "on.conf")
	os.WriteFile(conf, []byte("config dnsguard 'main'\n\toption dnssec '1'\n\tlist trust_anchor '"+ds+"'\n"+limits), 0o644)
	confOff := filepath.Join(dir, "off.conf")
	os.WriteFile(confOff, []byte("config dnsguard 'main'\n\toption dnssec '0'\n"+limits), 0o644)
	on := startGuard(t, "--dnssec", "--config", conf, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())
	off := startGuard(t, "--config", confOff, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())

	c := &dns.Client{Timeout: 4 * time.Second}
	run := func(name, addr string, pid int, wantAD bool) {
		// Warm the keys and connections.
		for i := 0; ; i++ {
			m := new(dns.Msg)
			m.SetQuestion("n"+fmt.Sprint(n)+".signed.test.", dns.TypeA)
			m.SetEdns0(1232, true)
			if r, _, err := c.Exchange(m, addr); err == nil && r.Rcode == dns.RcodeSuccess {
				break
			}
			if i > 50 {
				t.Fatalf("%s not answering", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
		before := cpuTicks(t, pid)
		ad, ok := 0, 0
		for i := range n {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("n%d.signed.test.", i), dns.TypeA)
			m.SetEdns0(1232, true)
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.AuthenticatedData {
				ad++
			}
			if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
				ok++
			}
		}
		if ok != n {
			t.Errorf("%s: %d of %d answered", name, ok, n)
		}
		ticks := cpuTicks(t, pid) - before
		if wantAD && ad != n {
			t.Errorf("%s: %d of %d answers validated", name, ad, n)
		}
		t.Logf("%s: %d cache misses, CPU %d ticks (10 ms): %.1f µs per miss", name, n, ticks, float64(ticks)*10000/float64(n))
	}
	run("guard-dnssec", on.addr, on.cmd.Process.Pid, true)
	run("guard-plain", off.addr, off.cmd.Process.Pid, false)
	run("unbound-validating", uport, ucmd.Process.Pid, true)
}
