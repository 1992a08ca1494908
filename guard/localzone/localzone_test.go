package localzone

import (
	"context"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

func TestStage(t *testing.T) {
	tests := []struct {
		name      string
		qtype     uint16
		forwarded bool
		rcode     int
		soa       string
	}{
		{"use-application-dns.net.", dns.TypeA, false, dns.RcodeNameError, "use-application-dns.net."},
		{"USE-Application-DNS.net.", dns.TypeAAAA, false, dns.RcodeNameError, "use-application-dns.net."},
		{"mask.icloud.com.", dns.TypeA, false, dns.RcodeNameError, "mask.icloud.com."},
		{"mask-h2.icloud.com.", dns.TypeHTTPS, false, dns.RcodeNameError, "mask-h2.icloud.com."},
		{"x.mask.icloud.com.", dns.TypeA, false, dns.RcodeNameError, "mask.icloud.com."},
		{"_dns.resolver.arpa.", dns.TypeSVCB, false, dns.RcodeSuccess, "resolver.arpa."},
		{"resolver.arpa.", dns.TypeSOA, false, dns.RcodeSuccess, "resolver.arpa."},
		{"icloud.com.", dns.TypeA, true, 0, ""},
		{"notmask.icloud.com.", dns.TypeA, true, 0, ""},
		{"application-dns.net.", dns.TypeA, true, 0, ""},
		{"arpa.", dns.TypeSOA, true, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forwarded := false
			h := Stage()(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
				forwarded = true
				return stage.Synth(req, dns.RcodeSuccess, nil, nil)
			}))
			m := new(dns.Msg)
			m.SetQuestion(tc.name, tc.qtype)
			raw, _ := m.Pack()
			q, err := dnswire.ParseQuery(raw)
			if err != nil {
				t.Fatal(err)
			}
			r, err := h.ServeDNS(context.Background(), &stage.Request{Raw: raw, Q: q})
			if err != nil {
				t.Fatal(err)
			}
			if forwarded != tc.forwarded {
				t.Fatalf("forwarded = %v", forwarded)
			}
			if tc.forwarded {
				return
			}
			var got dns.Msg
			if err := got.Unpack(r.Msg); err != nil {
				t.Fatal(err)
			}
			if got.Rcode != tc.rcode || len(got.Answer) != 0 {
				t.Errorf("rcode %d answers %d, want rcode %d and no answer", got.Rcode, len(got.Answer), tc.rcode)
			}
			if len(got.Ns) != 1 || got.Ns[0].Header().Name != tc.soa || got.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("authority %v, want the SOA of %s", got.Ns, tc.soa)
			}
		})
	}
}
