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
	signedFile, signedDS := signedZone(t, dir, "signed.test.", zoneText("signed.test.",
		"www IN A "+good, "forged IN A "+good, "*.wild IN A "+wild, `txt IN TXT "hello"`), nil,
		func(s string) string {
			// An on-path or compromised upstream alters one address.
			return strings.Replace(s, "forged.signed.test.\t300\tIN\tA\t"+good, "forged.signed.test.\t300\tIN\tA\t"+forged, 1)
		})
	if b, _ := os.ReadFile(signedFile); !strings.Contains(string(b), forged) {
		t.Fatalf("tampering did not apply:\n%s", b)
	}
	n3File, n3DS := signedZone(t, dir, "nsec3.test.", zoneText("nsec3.test.", "www IN A "+good, "*.wild IN A "+wild),
		[]string{"-n", "-t", "0"}, nil)
	expFile, expDS := signedZone(t, dir, "expired.test.", zoneText("expired.test.", "www IN A "+good),
		[]string{"-i", time.Now().Add(-60 * 24 * time.Hour).UTC().Format("20060102"), "-e", time.Now().Add(-48 * time.Hour).UTC().Format("20060102")}, nil)

	var extra []string
	extra = append(extra, `local-zone: "test." nodefault`)
	for _, z := range []struct{ name, file string }{{"signed.test.", signedFile}, {"nsec3.test.", n3File}, {"expired.test.", expFile}} {
		extra = append(extra, "auth-zone:", "\tname: "+z.name, "\tzonefile: "+z.file, "\tfor-downstream: yes", "\tfor-upstream: no", "\tfallback-enabled: no", "server:")
	}
	auth := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: extra})

	anchors := []string{signedDS, n3DS, expDS}
	// unbound as a validating forwarder with the same anchors.
	vextra := []string{`module-config: "validator iterator"`, `local-zone: "test." nodefault`, "do-not-query-localhost: no", "val-log-level: 2", "ede: yes"}
	for _, a := range anchors {
		vextra = append(vextra, fmt.Sprintf("trust-anchor: %q", a))
	}
	for _, z := range []string{"signed.test.", "nsec3.test.", "expired.test."} {
		vextra = append(vextra, "forward-zone:", "\tname: "+z, "\tforward-addr: "+auth.Do53.Addr().String()+"@"+fmt.Sprint(auth.Do53.Port()), "server:")
	}
	ref := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: vextra})

	conf := "config dnsguard 'main'\n\toption dnssec '1'\n"
	for _, a := range anchors {
		conf += "\tlist trust_anchor '" + a + "'\n"
	}
	confFile := filepath.Join(dir, "dnsguard.conf")
	os.WriteFile(confFile, []byte(conf), 0o644)
	g := startGuard(t, "--config", confFile, "--listen", freePort(t), "--upstream", "udp://"+auth.Do53.String())

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
	// The forged answer is still refused from the cache (bogus cached).
	if r := query(g.addr, "forged.signed.test.", dns.TypeA, false, false, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("forged answer from cache:\n%v", r)
	}

	// A negative trust anchor lets the forged answer through, without AD.
	conf2 := conf + "\tlist insecure_domain 'signed.test'\n"
	confFile2 := filepath.Join(dir, "dnsguard-nta.conf")
	os.WriteFile(confFile2, []byte(conf2), 0o644)
	g2 := startGuard(t, "--config", confFile2, "--listen", freePort(t), "--upstream", "udp://"+auth.Do53.String())
	if r := query(g2.addr, "forged.signed.test.", dns.TypeA, true, false, false); r.Rcode != dns.RcodeSuccess || r.AuthenticatedData {
		t.Errorf("negative trust anchor:\n%v", r)
	}
	if r := query(g2.addr, "www.nsec3.test.", dns.TypeA, true, false, false); !r.AuthenticatedData {
		t.Errorf("other zones still validated:\n%v", r)
	}

	// With validation off the guard never sets AD, whatever the upstream says.
	g3 := startGuard(t, "--listen", freePort(t), "--upstream", "udp://"+ref.Do53.String())
	if r := query(g3.addr, "www.signed.test.", dns.TypeA, true, false, false); r.AuthenticatedData || r.Rcode != dns.RcodeSuccess {
		t.Errorf("validation off, validating upstream:\n%v", r)
	}
}
