package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// TestDNSSECWaitNTP: with --dnssec-wait-ntp the guard does not check
// signature times, though the clock is past the build time, until SIGUSR1
// (the OpenWrt hotplug script: NTP synced); from then on it does. The zone's
// signatures expired two days ago: before the signal its answers are
// secure, after it they are bogus (EDE 7), as without the flag.
func TestDNSSECWaitNTP(t *testing.T) {
	testenv.Short(t)
	dir := t.TempDir()
	day := func(d int) string { return time.Now().Add(time.Duration(d) * 24 * time.Hour).UTC().Format("20060102") }
	file, ds := signedZone(t, dir, "expired.test.", zoneText("expired.test.",
		"www IN A 93.184.215.14", "mail IN A 93.184.215.15", "ftp IN A 93.184.215.16"),
		[]string{"-i", day(-60), "-e", day(-2)}, nil)
	auth := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{}, Extra: []string{
		`local-zone: "test." nodefault`, "auth-zone:", "\tname: expired.test.", "\tzonefile: " + file,
		"\tfor-downstream: yes", "\tfor-upstream: no", "\tfallback-enabled: no", "server:"}})
	conf := filepath.Join(dir, "dnsguard.conf")
	os.WriteFile(conf, []byte("config dnsguard 'main'\n\toption dnssec '1'\n\tlist trust_anchor '"+ds+"'\n"), 0o644)

	query := func(addr, name string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, true)
		r, _, err := (&dns.Client{Timeout: 4 * time.Second}).Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	wantBogus := func(r *dns.Msg, name string) {
		t.Helper()
		if r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("%s: %s, want SERVFAIL (expired signatures)", name, dns.RcodeToString[r.Rcode])
		}
		if e := edeOf(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeSignatureExpired {
			t.Errorf("%s: EDE %v, want 7 (signature expired)", name, e)
		}
	}

	// Without the flag the clock (past the build time) is trusted.
	plain := startGuard(t, "--dnssec", "--config", conf, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())
	wantBogus(query(plain.addr, "www.expired.test."), "without the flag")

	g := startGuard(t, "--dnssec", "--dnssec-wait-ntp", "--config", conf, "--listen", anyPort, "--upstream", "udp://"+auth.Do53.String())
	for _, name := range []string{"www.expired.test.", "mail.expired.test."} {
		r := query(g.addr, name)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 || !r.AuthenticatedData {
			t.Fatalf("%s before NTP sync: %s AD=%v, want NOERROR AD=1 (times not checked)\n%v", name, dns.RcodeToString[r.Rcode], r.AuthenticatedData, r)
		}
	}
	if r := query(g.addr, "nx-before.expired.test."); r.Rcode != dns.RcodeNameError {
		t.Fatalf("a nonexistent name before NTP sync: %s %v, want NXDOMAIN (times not checked)", dns.RcodeToString[r.Rcode], edeOf(r))
	}
	if n := strings.Count(g.log(), "waiting for NTP to sync"); n != 1 {
		t.Errorf("waiting-for-NTP logged %d times, want once:\n%s", n, g.log())
	}

	// NTP synced: the hotplug script's SIGUSR1 (twice: every stratum
	// change sends one; the guard keeps running and logs once).
	for range 2 {
		if err := g.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	// The signal is handled when names not asked before (not cached)
	// come back bogus: nonexistent ones, whose NSEC proof is signed as
	// the rest.
	for i := 0; ; i++ {
		r := query(g.addr, fmt.Sprintf("nx%d.expired.test.", i))
		if e := edeOf(r); r.Rcode == dns.RcodeServerFailure && e != nil && e.InfoCode == dns.ExtendedErrorCodeSignatureExpired {
			break
		}
		if i == 200 {
			t.Fatalf("nonexistent names not bogus after SIGUSR1 (last: %s %v):\n%s", dns.RcodeToString[r.Rcode], edeOf(r), g.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Not asked before (the cache holds www and mail).
	wantBogus(query(g.addr, "ftp.expired.test."), "after NTP sync")
	if err := g.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("guard exit: %v\n%s", err, g.log())
	}
	if n := strings.Count(g.log(), "NTP has synced"); n != 1 {
		t.Errorf("NTP-synced logged %d times, want once:\n%s", n, g.log())
	}
}
