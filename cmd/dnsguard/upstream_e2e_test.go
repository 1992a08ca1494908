package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

const publicAddr = "93.184.215.14" // not special-purpose: passes rebinding checks

func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	if strings.HasPrefix(addr, "[") {
		i := strings.LastIndex(addr, ":")
		host, port = strings.Trim(addr[:i], "[]"), addr[i+1:]
	}
	out, err := exec.Command(testenv.Require(t, "dig")[0], append([]string{"@" + host, "-p", port, "+tries=1", "+timeout=4"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestRunDoTUnbound: a real unbound from Debian as the DoT upstream,
// trusted through --upstream-ca, and dig as the device.
func TestRunDoTUnbound(t *testing.T) {
	testenv.Short(t)
	u := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: []string{
		"www.dnsguard.test. 300 IN A " + publicAddr,
		"www.dnsguard.test. 300 IN AAAA 2606:2800:21f:cb07:6820:80da:af6b:8b2c",
		"txt.dnsguard.test. 300 IN TXT hello-from-unbound",
	}})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, u.CAPEM, 0o644)
	g := startGuard(t, "--listen", anyPort, "--upstream", u.URL(), "--upstream-ca", caFile)

	if out := dig(t, g.addr, "www.dnsguard.test", "A"); !strings.Contains(out, publicAddr) || !strings.Contains(out, "status: NOERROR") {
		t.Errorf("A over UDP:\n%s", out)
	}
	if out := dig(t, g.addr, "+tcp", "WWW.DnsGuard.Test", "AAAA"); !strings.Contains(out, "2606:2800:21f:cb07:6820:80da:af6b:8b2c") || !strings.Contains(out, "WWW.DnsGuard.Test.") {
		t.Errorf("AAAA over TCP with the device's case:\n%s", out)
	}
	if out := dig(t, g.addr, "txt.dnsguard.test", "TXT"); !strings.Contains(out, "hello-from-unbound") {
		t.Errorf("TXT:\n%s", out)
	}
	if out := dig(t, g.addr, "missing.dnsguard.test", "A"); !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("NXDOMAIN:\n%s", out)
	}
	// Without the CA the guard refuses unbound's certificate (strict profile).
	g2 := startGuard(t, "--listen", anyPort, "--upstream", u.URL())
	if out := dig(t, g2.addr, "www.dnsguard.test", "A"); !strings.Contains(out, "status: SERVFAIL") {
		t.Errorf("untrusted DoT upstream was used:\n%s", out)
	}
}

// TestRunPaddedEncryptedUpstreams: every DoT and DoH query is padded to a
// multiple of 128 octets; DoH uses POST, ID 0 and the DNS media type; the
// padding never comes back to the device.
func TestRunPaddedEncryptedUpstreams(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	padded := func(h upstreamtest.Handler) upstreamtest.Handler {
		return func(q *dns.Msg) *dns.Msg { // a server that pads its answers (RFC 8467: 468)
			r := h(q)
			if opt := r.IsEdns0(); opt != nil {
				opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 300)})
			}
			return r
		}
	}
	dot := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: padded(upstreamtest.AnswerA(publicAddr))})
	doh := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Handler: padded(upstreamtest.AnswerA(publicAddr))})
	for _, tc := range []struct {
		name string
		url  string
		rec  interface {
			Received() []upstreamtest.Received
		}
	}{{"dot", dot.URL(dot.Name), dot}, {"doh", doh.URL, doh}} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGuard(t, "--listen", anyPort, "--upstream", tc.url, "--upstream-ca", caFile)
			for i, name := range []string{"a.example.", "a-much-longer-name-to-cross-a-block.subdomain.example.", strings.Repeat("x", 60) + "." + strings.Repeat("y", 60) + ".example."} {
				r := ask(t, g.addr, name, dns.TypeA, i%2 == 0)
				if len(r.Answer) != 1 {
					t.Fatalf("%s: %v", name, r)
				}
				if opt := r.IsEdns0(); opt != nil {
					for _, o := range opt.Option {
						if o.Option() == dns.EDNS0PADDING {
							t.Errorf("padding passed back to the LAN: %v", opt)
						}
					}
				}
			}
			got := tc.rec.Received()
			if len(got) != 3 {
				t.Fatalf("%d upstream queries, want 3", len(got))
			}
			for _, rc := range got {
				if len(rc.Raw)%128 != 0 {
					t.Errorf("query of %d octets, not a multiple of 128", len(rc.Raw))
				}
				if tc.name == "doh" {
					if rc.Method != "POST" || rc.ContentType != "application/dns-message" || rc.Msg.Id != 0 || rc.Proto != "HTTP/2.0" {
						t.Errorf("DoH request %s %s %q id %d", rc.Method, rc.Proto, rc.ContentType, rc.Msg.Id)
					}
				}
			}
			t.Logf("%s query sizes: %d %d %d", tc.name, len(got[0].Raw), len(got[1].Raw), len(got[2].Raw))
		})
	}
}

// TestRunFailover: a dead upstream first in the list costs one attempt;
// answers still come well inside a device's 2 s.
func TestRunFailover(t *testing.T) {
	up := startRecorder(t, 300)
	dead := freePort(t)
	g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+dead, "--upstream", "udp://"+up.addr)
	for i := 0; i < 5; i++ {
		r := ask(t, g.addr, fmt.Sprintf("f%d.example.", i), dns.TypeA, false)
		if len(r.Answer) != 1 {
			t.Fatalf("query %d: %v", i, r)
		}
	}
}
