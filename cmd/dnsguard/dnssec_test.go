package main

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDNSSECVerdictOff: with validation off (or CD=1) AD is cleared
// whatever the upstream said.
func TestDNSSECVerdictOff(t *testing.T) {
	for _, cd := range []bool{false, true} {
		q := new(dns.Msg)
		q.SetQuestion("www.example.", dns.TypeA)
		q.CheckingDisabled = cd
		resp := new(dns.Msg)
		resp.SetReply(q)
		resp.AuthenticatedData = true
		out, err := dnssecVerdict(context.Background(), nil, q, resp)
		if err != nil || out.AuthenticatedData {
			t.Errorf("CD=%v: AD passed on (%v)", cd, err)
		}
	}
	if m := withDO(new(dns.Msg).SetQuestion("a.", dns.TypeA)); m.IsEdns0() == nil || !m.IsEdns0().Do() {
		t.Error("withDO")
	}
}

// TestReleaseTime: -X main.buildTime in Unix seconds or RFC 3339.
func TestReleaseTime(t *testing.T) {
	defer func(v string) { buildTime = v }(buildTime)
	for _, v := range []string{"1780000000", "2026-05-28T20:26:40Z"} {
		buildTime = v
		if got, reason := releaseTime(); !got.Equal(time.Unix(1780000000, 0)) || reason != "build time" {
			t.Errorf("buildTime %q: %v %q", v, got, reason)
		}
	}
}
