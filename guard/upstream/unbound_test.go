package upstream

import (
	"crypto/tls"
	"testing"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// TestUnbound resolves through a real unbound (Debian's package) over
// DoT, and over Do53 UDP with 0x20 and TCP, with local data only.
func TestUnbound(t *testing.T) {
	ub := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{})

	// unbound pads its DoT answers to padded queries (pad-responses), so
	// the padding the transport strips is really there.
	c := &dns.Client{Net: "tcp-tls", TLSConfig: &tls.Config{ServerName: ub.Name, RootCAs: ub.CA.Pool}}
	raw := prepare(query("a.test", dns.TypeA), 7, true)
	direct, _, err := c.Exchange(raw, ub.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if paddingOf(direct) <= 0 {
		t.Fatalf("unbound did not pad its answer: %v", direct)
	}

	p := newPool(t, []string{ub.URL()}, Options{CAPEM: ub.CAPEM})
	resp, err := p.Exchange(clientCtx(t), query("a.test", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if answerA(t, resp) != "192.0.2.10" || paddingOf(resp) >= 0 {
		t.Fatalf("DoT answer %v", resp)
	}
	resp, err = p.Exchange(clientCtx(t), query("missing.test", dns.TypeA), QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeNameError {
		t.Fatalf("want NXDOMAIN, got %v", resp)
	}

	// Wrong name: the strict profile refuses it.
	bad := newPool(t, []string{"tls://" + ub.Addr.String() + "?sni=wrong.test"}, Options{CAPEM: ub.CAPEM})
	if _, err := bad.Exchange(clientCtx(t), query("a.test", dns.TypeA), QueryOptions{}); err == nil {
		t.Fatal("DoT with a wrong name accepted")
	}

	// Do53: unbound echoes the 0x20 case exactly.
	for _, u := range []string{"udp://" + ub.Do53.String(), "tcp://" + ub.Do53.String()} {
		cp := newPool(t, []string{u}, Options{Randomize0x20: true})
		for range 5 {
			resp, err := cp.Exchange(clientCtx(t), query("a.test", dns.TypeAAAA), QueryOptions{})
			if err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			if len(resp.Answer) != 1 || resp.Answer[0].Header().Name != "a.test." {
				t.Fatalf("%s: answer %v", u, resp)
			}
		}
		if st := cp.Stats()[0]; st.Mismatches != 0 || st.Failures != 0 {
			t.Errorf("%s: %+v", u, st)
		}
	}
}
