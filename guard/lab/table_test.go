package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/policy"
)

func TestDescribe(t *testing.T) {
	forged := DefaultForgery()
	for _, tc := range []struct {
		s    emulate.Summary
		want string
	}{
		{emulate.Summary{}, "0% usable"},
		{emulate.Summary{Queries: 4, Usable: 4, Answers: 4, Records: 4, Datagrams: 4}, "100% usable"},
		{emulate.Summary{Queries: 10, Usable: 5, Failed: 5, Timeouts: 2, ServFail: 2, Refused: 1, Answers: 8, Records: 8, Datagrams: 8,
			Addrs: map[netip.Addr]int{forged.A: 3, forged.AAAA: 1, netip.MustParseAddr("198.51.100.1"): 4}},
			"50% usable, 4 forged addr, 2 timeouts, 2 SERVFAIL, 1 REFUSED"},
		// amplify: 30 records per answer; flood: 10 datagrams per answer.
		{emulate.Summary{Queries: 2, Usable: 2, Answers: 2, Records: 60, Datagrams: 2}, "100% usable, 30 RR/answer"},
		{emulate.Summary{Queries: 2, Usable: 2, Answers: 2, Records: 2, Datagrams: 20}, "100% usable, 10 datagrams/answer"},
		{emulate.Summary{Queries: 2, Usable: 2, Answers: 2, Records: 5, Datagrams: 3}, "100% usable"}, // at the thresholds
	} {
		if got := Describe(tc.s); got != tc.want {
			t.Errorf("Describe(%+v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	p, err := emulate.ProfileByName("random")
	if err != nil {
		t.Fatal(err)
	}
	o := TableOptions{Profile: p, Names: []string{"www.lab.example."}, Baseline: 10 * time.Second, Duration: time.Minute, TTL: 5,
		Fresh: []string{"fresh.lab.example."}, DNSSEC: true}
	ttl0, _ := ParseExperiment("ttl-zero")
	unavail, _ := ParseExperiment("unavailable")
	rows := []TableRow{
		{Experiment: ttl0,
			Direct:   emulate.Summary{Queries: 60, Usable: 60, Answers: 60, Records: 60, Datagrams: 60},
			Guarded:  emulate.Summary{Queries: 120, Usable: 118, Failed: 2, ServFail: 2, Answers: 120, Records: 118, Datagrams: 120, EDE: map[uint16]int{3: 7, 22: 2}},
			Upstream: 25, UpstreamPhase: 50 * time.Second},
		{Experiment: unavail, Err: errors.New("dnsguard exited before serving:\nthe log")},
	}
	var b strings.Builder
	if err := WriteTable(&b, o, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"device profile random", "names www.lab.example.;", "lab honest for 10s, then the experiment, 1m0s in all; lab TTL 5 s",
		"dnssec: the lab signs its zone", "a second device asks fresh.lab.example.",
		"ttl-zero     100% usable", "60  ", "98% usable, 2 SERVFAIL", "120", "30.0", "StaleAnswer 7, NoReachableAuthority 2",
		"unavailable  error: dnsguard exited before serving:\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "the log") {
		t.Errorf("an error row carries more than its first line:\n%s", out)
	}
}

// TestGuardConfig: the config the table gives each guard is one the guard
// takes: its listen address and lab upstream, DNSSEC off unless the
// extra section turns it on, the lab's honest ranges allowed.
func TestGuardConfig(t *testing.T) {
	dir := t.TempDir()
	for _, extra := range []string{"", "\nconfig dnsguard 'dnssec'\n\toption dnssec '1'\n\tlist trust_anchor 'lab.example. 3600 IN DS 1 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'\n"} {
		text := guardConfig("127.0.0.1:5399", "127.0.0.1:5400", dir, extra)
		cfg, err := policy.Parse(strings.NewReader(text), "lab.conf")
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		if fmt.Sprint(cfg.Listen, cfg.Upstreams) != "[127.0.0.1:5399] [udp://127.0.0.1:5400]" || cfg.State.File != dir+"/state.db" {
			t.Errorf("listen %v upstreams %v state %q", cfg.Listen, cfg.Upstreams, cfg.State.File)
		}
		if cfg.DNSSEC.Enabled != (extra != "") {
			t.Errorf("dnssec %v with extra %q", cfg.DNSSEC.Enabled, extra)
		}
	}
}
