package validate

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

func testPolicy() policy.Answers {
	return policy.Answers{
		MaxRecords:     64,
		MaxRRset:       32,
		MaxSize:        8192,
		MaxCNAMEChain:  8,
		RebindProtect:  true,
		AllowedPrivate: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")},
	}
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

func msg(qname string, qtype uint16, answer ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Response, m.RecursionAvailable = true, true
	for _, a := range answer {
		m.Answer = append(m.Answer, rr(a))
	}
	return m
}

func q(name string, t uint16) dns.Question {
	return dns.Question{Name: name, Qtype: t, Qclass: dns.ClassINET}
}

func TestCheck(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	chain := func(n int) *dns.Msg {
		m := msg("c0.example.", dns.TypeA)
		for i := 0; i < n; i++ {
			m.Answer = append(m.Answer, rr("c"+itoa(i)+".example. 60 CNAME c"+itoa(i+1)+".example."))
		}
		m.Answer = append(m.Answer, rr("c"+itoa(n)+".example. 60 A 93.184.216.34"))
		return m
	}
	tests := []struct {
		name     string
		q        dns.Question
		m        *dns.Msg
		strict   bool
		wantEDE  int // -1: accepted
		wantErr  error
		check    func(t *testing.T, out *dns.Msg, rep Report)
		mutateQ  func(m *dns.Msg)
		policyFn func(a *policy.Answers)
		trusted  bool // from the router's local server (Trusted)
	}{
		{name: "honest A", q: q("www.example.", dns.TypeA), m: msg("www.example.", dns.TypeA, "www.example. 300 A 93.184.216.34"), wantEDE: -1},
		{name: "case differs (0x20)", q: q("WwW.example.", dns.TypeA), m: msg("www.EXAMPLE.", dns.TypeA, "www.example. 300 A 93.184.216.34"), wantEDE: -1},
		{name: "other name asked", q: q("a.example.", dns.TypeA), m: msg("b.example.", dns.TypeA, "b.example. 300 A 93.184.216.34"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrQuestion},
		{name: "other type asked", q: q("a.example.", dns.TypeAAAA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrQuestion},
		{name: "not a response", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA), mutateQ: func(m *dns.Msg) { m.Response = false }, wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrQuestion},
		{name: "no question", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA), mutateQ: func(m *dns.Msg) { m.Question = nil }, wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrQuestion},
		{name: "AAAA in answer to A (forged-aaaa)", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 AAAA 2606:2800:220:1::1"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "TXT in answer to A", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34", `a.example. 300 TXT "x"`), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "out-of-chain owner", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34", "bank.example. 300 A 93.184.216.35"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrOwner},
		{name: "CNAME chain ending in A", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME b.example.net.", "b.example.net. 300 CNAME c.example.org.", "c.example.org. 300 A 93.184.216.34"), wantEDE: -1},
		{name: "CNAME chain out of order", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "c.example.org. 300 A 93.184.216.34", "b.example.net. 300 CNAME c.example.org.", "a.example. 300 CNAME b.example.net."), wantEDE: -1},
		{name: "dangling CNAME (forged-cname, no address)", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME alias.example.com."), wantEDE: -1},
		{name: "CNAME and data at one name", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME b.example.", "a.example. 300 A 93.184.216.34", "b.example. 300 A 93.184.216.35"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrChain},
		{name: "two CNAMEs for one name", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME b.example.", "a.example. 300 CNAME c.example.", "b.example. 300 A 93.184.216.34"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrChain},
		{name: "CNAME loop", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME b.example.", "b.example. 300 CNAME a.example."), wantEDE: dnswire.EDEInvalidData, wantErr: ErrChain},
		{name: "chain of 8 accepted", q: q("c0.example.", dns.TypeA), m: chain(8), wantEDE: -1},
		{name: "chain of 9 refused", q: q("c0.example.", dns.TypeA), m: chain(9), wantEDE: dnswire.EDEInvalidData, wantErr: ErrChain},
		{name: "CNAME asked", q: q("a.example.", dns.TypeCNAME), m: msg("a.example.", dns.TypeCNAME, "a.example. 300 CNAME b.example."), wantEDE: -1},
		{name: "ANY gets any type", q: q("a.example.", dns.TypeANY), m: msg("a.example.", dns.TypeANY, "a.example. 300 A 93.184.216.34", `a.example. 300 TXT "x"`), wantEDE: -1},
		{name: "RRSIG kept", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34", "a.example. 300 RRSIG A 13 2 300 20300101000000 20200101000000 1 example. AAAA"), wantEDE: -1},
		{name: "DNAME above the name", q: q("a.old.example.", dns.TypeA), m: msg("a.old.example.", dns.TypeA, "old.example. 300 DNAME new.example.", "a.old.example. 300 CNAME a.new.example.", "a.new.example. 300 A 93.184.216.34"), wantEDE: -1},
		{name: "DNAME elsewhere", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "other.test. 300 DNAME new.example.", "a.example. 300 A 93.184.216.34"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrOwner},
		{name: "address in NXDOMAIN", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34"), mutateQ: func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }, wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "NXDOMAIN after CNAME", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME gone.example."), mutateQ: func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }, wantEDE: -1},
		{name: "records in SERVFAIL", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34"), mutateQ: func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure }, wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "class mismatch in answer", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CH A 93.184.216.34"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "empty NOERROR (empty)", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA), wantEDE: -1},
		{name: "duplicates removed (amplify-100)", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, many(100, func(int) string { return "a.example. 300 A 93.184.216.34" })...), wantEDE: -1,
			check: func(t *testing.T, out *dns.Msg, rep Report) {
				if len(out.Answer) != 1 || rep.Duplicates != 99 {
					t.Errorf("answer %d records, %d duplicates", len(out.Answer), rep.Duplicates)
				}
			}},
		{name: "duplicates differing in TTL and case", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34", "A.EXAMPLE. 20 A 93.184.216.34"), wantEDE: -1,
			check: func(t *testing.T, out *dns.Msg, rep Report) {
				if len(out.Answer) != 1 {
					t.Errorf("answer %v", out.Answer)
				}
			}},
		{name: "RRset TTLs made equal", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34", "a.example. 20 A 93.184.216.35"), wantEDE: -1,
			check: func(t *testing.T, out *dns.Msg, _ Report) {
				for _, r := range out.Answer {
					if r.Header().Ttl != 20 {
						t.Errorf("TTL %d, want 20", r.Header().Ttl)
					}
				}
			}},
		{name: "RRset over 32 distinct records", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, many(33, func(i int) string { return "a.example. 300 A 93.184.216." + itoa(i) })...), wantEDE: dnswire.EDEInvalidData, wantErr: ErrSize},
		{name: "RRset of 32 accepted", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, many(32, func(i int) string { return "a.example. 300 A 93.184.216." + itoa(i) })...), wantEDE: -1},
		{name: "message over 64 records", q: q("a.example.", dns.TypeA), m: func() *dns.Msg {
			m := msg("a.example.", dns.TypeA, many(30, func(i int) string { return "a.example. 300 A 93.184.216." + itoa(i) })...)
			for i := 0; i < 35; i++ {
				m.Ns = append(m.Ns, rr("example. 300 NS ns"+itoa(i)+".example."))
			}
			return m
		}(), wantEDE: dnswire.EDEInvalidData, wantErr: ErrSize},
		{name: "message over the size cap (inflate)", q: q("a.example.", dns.TypeTXT), m: msg("a.example.", dns.TypeTXT, `a.example. 300 TXT "`+strings.Repeat("x", 250)+`"`),
			policyFn: func(a *policy.Answers) { a.MaxSize = 200 }, wantEDE: dnswire.EDEInvalidData, wantErr: ErrSize},
		{name: "under the size cap once compressed", q: q("a-rather-long-owner-name.example.", dns.TypeA),
			m:        msg("a-rather-long-owner-name.example.", dns.TypeA, many(8, func(i int) string { return "a-rather-long-owner-name.example. 300 A 93.184.216." + itoa(i) })...),
			policyFn: func(a *policy.Answers) { a.MaxSize = 200 }, wantEDE: -1}, // 434 octets uncompressed, 178 compressed
		{name: "two OPT", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA), mutateQ: func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.Extra = append(m.Extra, dns.Copy(m.Extra[0]))
			m.Extra[1].(*dns.OPT).SetUDPSize(4096)
		}, wantEDE: dnswire.EDEInvalidData, wantErr: ErrMalformed},
		{name: "RFC 1918 for public name", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 192.168.1.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "documentation (forged-a)", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 192.0.2.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "documentation v6 (forged-aaaa)", q: q("a.example.", dns.TypeAAAA), m: msg("a.example.", dns.TypeAAAA, "a.example. 300 AAAA 2001:db8::1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "private at the end of a CNAME", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 CNAME router.lan.", "router.lan. 300 A 192.168.1.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		// Rebinding protection depends on where the answer came from, not
		// on the name: a public upstream's private address for a LAN name
		// is refused, the local server's is not.
		{name: "private for a LAN name from an upstream", q: q("router.lan.", dns.TypeA), m: msg("router.lan.", dns.TypeA, "router.lan. 300 A 192.168.1.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "ULA for home.arpa from an upstream", q: q("nas.home.arpa.", dns.TypeAAAA), m: msg("nas.home.arpa.", dns.TypeAAAA, "nas.home.arpa. 300 AAAA fd00::1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "private for a LAN name from the local server", trusted: true, q: q("router.lan.", dns.TypeA), m: msg("router.lan.", dns.TypeA, "router.lan. 300 A 192.168.1.1"), wantEDE: -1},
		{name: "ULA for home.arpa from the local server", trusted: true, q: q("nas.home.arpa.", dns.TypeAAAA), m: msg("nas.home.arpa.", dns.TypeAAAA, "nas.home.arpa. 300 AAAA fd00::1"), wantEDE: -1},
		{name: "local server: private additional kept", trusted: true, q: q("lan.", dns.TypeMX), m: func() *dns.Msg {
			m := msg("lan.", dns.TypeMX, "lan. 300 MX 10 mail.lan.")
			m.Extra = []dns.RR{rr("mail.lan. 300 A 192.168.1.25")}
			return m
		}(), wantEDE: -1, check: func(t *testing.T, out *dns.Msg, _ Report) {
			if len(out.Extra) != 1 {
				t.Errorf("additional %v", out.Extra)
			}
		}},
		{name: "upstream: private additional for a LAN name stripped", q: q("lan.", dns.TypeMX), m: func() *dns.Msg {
			m := msg("lan.", dns.TypeMX, "lan. 300 MX 10 mail.lan.")
			m.Extra = []dns.RR{rr("mail.lan. 300 A 192.168.1.25")}
			return m
		}(), wantEDE: -1, check: func(t *testing.T, out *dns.Msg, _ Report) {
			if len(out.Extra) != 0 {
				t.Errorf("additional %v", out.Extra)
			}
		}},
		{name: "local server: other checks still apply", trusted: true, q: q("router.lan.", dns.TypeA), m: msg("router.lan.", dns.TypeA, "router.lan. 300 AAAA fd00::1"), wantEDE: dnswire.EDEForgedAnswer, wantErr: ErrType},
		{name: "allowed private prefix", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 10.99.3.4"), wantEDE: -1},
		{name: "rebinding protection off", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 127.0.0.1"), policyFn: func(a *policy.Answers) { a.RebindProtect = false }, wantEDE: -1},
		{name: "IPv4-mapped loopback in AAAA", q: q("a.example.", dns.TypeAAAA), m: msg("a.example.", dns.TypeAAAA, "a.example. 300 AAAA ::ffff:127.0.0.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS ipv4hint private (rebinding)", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . alpn=h2 ipv4hint=93.184.216.34,192.168.1.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS ipv6hint ULA", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . ipv6hint=fd00::1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS ipv6hint IPv4-mapped loopback", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . ipv6hint=2606:2800:220:1::1"),
			mutateQ: func(m *dns.Msg) { // miekg's parser refuses it; the wire carries it
				m.Answer[0].(*dns.HTTPS).Value[0].(*dns.SVCBIPv6Hint).Hint = []net.IP{net.ParseIP("::ffff:127.0.0.1")}
			}, wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "SVCB ipv4hint loopback", q: q("_dns.a.example.", dns.TypeSVCB), m: msg("_dns.a.example.", dns.TypeSVCB, "_dns.a.example. 300 SVCB 1 dns.a.example. alpn=dot ipv4hint=127.0.0.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS hints at the end of a CNAME", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 CNAME b.example.", "b.example. 300 HTTPS 1 . ipv4hint=10.0.0.1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS public hints", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . alpn=h2,h3 ipv4hint=93.184.216.34 ipv6hint=2606:2800:220:1::1"), wantEDE: -1},
		{name: "HTTPS alias form, no hints", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 0 b.example."), wantEDE: -1},
		{name: "HTTPS private hint for a LAN name from an upstream", q: q("nas.lan.", dns.TypeHTTPS), m: msg("nas.lan.", dns.TypeHTTPS, "nas.lan. 300 HTTPS 1 . ipv4hint=192.168.1.10 ipv6hint=fd00::10"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "HTTPS private hint for a LAN name from the local server", trusted: true, q: q("nas.lan.", dns.TypeHTTPS), m: msg("nas.lan.", dns.TypeHTTPS, "nas.lan. 300 HTTPS 1 . ipv4hint=192.168.1.10 ipv6hint=fd00::10"), wantEDE: -1},
		{name: "HTTPS hint in an allowed private prefix", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . ipv4hint=10.99.0.7"), wantEDE: -1},
		{name: "HTTPS private hint, rebinding protection off", q: q("a.example.", dns.TypeHTTPS), m: msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . ipv4hint=192.168.1.1"), policyFn: func(a *policy.Answers) { a.RebindProtect = false }, wantEDE: -1},
		{name: "ANY answer with a private HTTPS hint", q: q("a.example.", dns.TypeANY), m: msg("a.example.", dns.TypeANY, "a.example. 300 A 93.184.216.34", "a.example. 300 HTTPS 1 . ipv6hint=::1"), wantEDE: dnswire.EDEBlocked, wantErr: ErrRebinding},
		{name: "unrelated additional stripped", q: q("a.example.", dns.TypeA), m: func() *dns.Msg {
			m := msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34")
			m.Ns = []dns.RR{rr("example. 300 NS ns1.example."), rr("bank.test. 300 NS evil.test.")}
			m.Extra = []dns.RR{rr("ns1.example. 300 A 93.184.216.1"), rr("www.bank.test. 300 A 6.6.6.6"), rr("ns1.example. 300 A 10.0.0.1")}
			m.SetEdns0(1232, false)
			return m
		}(), wantEDE: -1, check: func(t *testing.T, out *dns.Msg, rep Report) {
			if len(out.Ns) != 1 || len(out.Extra) != 2 || rep.Stripped != 3 {
				t.Errorf("ns %v extra %v stripped %d", out.Ns, out.Extra, rep.Stripped)
			}
		}},
		{name: "strict: minimal response", q: q("a.example.", dns.TypeA), strict: true, m: func() *dns.Msg {
			m := msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34")
			m.Ns = []dns.RR{rr("example. 300 NS ns1.example.")}
			m.Extra = []dns.RR{rr("ns1.example. 300 A 93.184.216.1")}
			return m
		}(), wantEDE: -1, check: func(t *testing.T, out *dns.Msg, _ Report) {
			if len(out.Ns) != 0 || len(out.Extra) != 0 || len(out.Answer) != 1 {
				t.Errorf("not minimal: %v", out)
			}
		}},
		{name: "negative answer keeps its SOA", q: q("gone.example.", dns.TypeA), strict: true, m: func() *dns.Msg {
			m := msg("gone.example.", dns.TypeA)
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{rr("example. 300 SOA ns.example. h.example. 1 2 3 4 60"), rr("other.test. 300 SOA ns.test. h.test. 1 2 3 4 60")}
			return m
		}(), wantEDE: -1, check: func(t *testing.T, out *dns.Msg, _ Report) {
			if len(out.Ns) != 1 || out.Ns[0].Header().Name != "example." {
				t.Errorf("authority %v", out.Ns)
			}
		}},
		{name: "TTL with top bit set read as 0", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 300 A 93.184.216.34"),
			mutateQ: func(m *dns.Msg) { m.Answer[0].Header().Ttl = 1 << 31 }, wantEDE: -1,
			check: func(t *testing.T, out *dns.Msg, _ Report) {
				if out.Answer[0].Header().Ttl != 0 {
					t.Errorf("TTL %d", out.Answer[0].Header().Ttl)
				}
			}},
		{name: "huge TTL (ttl-huge) passes: the cache clamps", q: q("a.example.", dns.TypeA), m: msg("a.example.", dns.TypeA, "a.example. 1000000000 A 93.184.216.34"), wantEDE: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testPolicy()
			if tt.policyFn != nil {
				tt.policyFn(&a)
			}
			if tt.mutateQ != nil {
				tt.mutateQ(tt.m)
			}
			before := tt.m.String()
			v := New(a)
			if tt.trusted {
				v = v.Trusted()
				a.RebindProtect = false // for verify
			}
			out, rep, err := v.CheckReport(tt.q, tt.m, tt.strict)
			if tt.m.String() != before {
				t.Error("input message modified")
			}
			if tt.wantEDE < 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if verr := verify(a, tt.q, out); verr != "" {
					t.Errorf("accepted answer breaks a rule: %s", verr)
				}
				if tt.check != nil {
					tt.check(t, out, rep)
				}
				return
			}
			var se *stage.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *stage.Error", err)
			}
			if int(se.EDE.Code) != tt.wantEDE || se.Rcode != dns.RcodeServerFailure {
				t.Errorf("EDE %d rcode %d (%v), want EDE %d SERVFAIL", se.EDE.Code, se.Rcode, err, tt.wantEDE)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			if out != nil {
				t.Error("refusal returned a message")
			}
		})
	}
}

func TestSpecial(t *testing.T) {
	tests := []struct {
		addr    string
		special bool
	}{
		{"10.1.2.3", true}, {"172.31.255.255", true}, {"172.32.0.1", false}, {"192.168.0.1", true},
		{"127.0.0.1", true}, {"169.254.1.1", true}, {"100.64.0.1", true}, {"100.128.0.1", false},
		{"0.0.0.0", true}, {"192.0.2.1", true}, {"198.51.100.9", true}, {"203.0.113.5", true},
		{"198.18.0.1", true}, {"198.19.255.1", true}, {"198.20.0.1", false}, {"224.0.0.251", true},
		{"240.0.0.1", true}, {"255.255.255.255", true}, {"192.0.0.8", true}, {"192.88.99.1", true},
		{"93.184.216.34", false}, {"8.8.8.8", false}, {"192.31.196.1", false},
		{"::1", true}, {"::", true}, {"fe80::1", true}, {"fd12::1", true}, {"fc00::1", true},
		{"2001:db8::1", true}, {"3fff::1", true}, {"2001:2::1", true}, {"ff02::1", true},
		{"::ffff:8.8.8.8", true}, {"64:ff9b::a00:1", true}, {"64:ff9b::808:808", false},
		{"2002:c0a8:101::1", true}, {"2002:808:808::1", false}, {"100::1", true},
		{"2606:4700:4700::1111", false}, {"2a00:1450::1", false}, {"5f00::1", true},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		r, got := Special(a)
		if got != tt.special {
			t.Errorf("Special(%s) = %v (%s), want %v", tt.addr, got, r.Name, tt.special)
		}
	}
}

func itoa(i int) string {
	const d = "0123456789"
	if i < 10 {
		return d[i : i+1]
	}
	return itoa(i/10) + d[i%10:i%10+1]
}

// roundTrip packs and unpacks m, so its names are rendered as an
// upstream's answer would be.
func roundTrip(t *testing.T, m *dns.Msg) *dns.Msg {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := new(dns.Msg)
	if err := out.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCheckWireNames: names are compared on the wire. A label holding a
// character that presentation form escapes (space ( ) " ' ; @ \ and a dot)
// is the same name whichever way it is written, in the question, the CNAME
// chain, the owners and the additional section; and a dot inside a label
// is not a label boundary.
func TestCheckWireNames(t *testing.T) {
	v := New(testPolicy())
	for _, c := range []byte(" ()\"';@\\.") {
		label := "a" + string(c) + "b"
		wire := []byte{byte(len(label))}
		wire = append(wire, label...)
		wire = append(wire, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0)
		device := dnswire.NameString(wire) // as the guard asks upstream
		ddd := "a\\" + itoa3(int(c)) + "b.EXAMPLE."
		t.Run(device, func(t *testing.T) {
			// The upstream answers in its own rendering: question and
			// owner as \DDD, upper-case, a CNAME to a target holding the
			// same character.
			target := "t\\" + itoa3(int(c)) + ".example.net."
			m := msg(ddd, dns.TypeA, ddd+" 300 CNAME "+target, target+" 300 A 93.184.216.34")
			m.Ns = []dns.RR{rr("example.net. 300 NS ns\\" + itoa3(int(c)) + ".example.net.")}
			m.Extra = []dns.RR{rr("NS\\" + itoa3(int(c)) + ".example.net. 300 A 93.184.216.1")}
			for _, am := range []*dns.Msg{m, roundTrip(t, m)} {
				out, err := v.Check(q(device, dns.TypeA), am, false)
				if err != nil {
					t.Fatalf("refused: %v\n%v", err, am)
				}
				if len(out.Answer) != 2 || len(out.Ns) != 1 || len(out.Extra) != 1 {
					t.Errorf("records lost: %v", out)
				}
			}
			// The same name with the special character as a plain letter
			// is another name.
			other := msg("axb.example.", dns.TypeA, "axb.example. 300 A 93.184.216.34")
			if _, err := v.Check(q(device, dns.TypeA), other, false); !errors.Is(err, ErrQuestion) {
				t.Errorf("answer for axb.example. accepted for %s: %v", device, err)
			}
			// Rebinding holds for such names.
			priv := msg(ddd, dns.TypeA, ddd+" 300 A 192.168.1.1")
			if _, err := v.Check(q(device, dns.TypeA), roundTrip(t, priv), false); !errors.Is(err, ErrRebinding) {
				t.Errorf("private address accepted for %s: %v", device, err)
			}
		})
	}
	// A dot inside a label.
	tests := []struct {
		name string
		q    dns.Question
		m    *dns.Msg
		want error // nil: accepted
	}{
		// No name is exempt from rebinding protection (the local
		// server's answers are, through Trusted): x.lan. no more than x\.lan.
		{"x\\.lan. from an upstream", q("x\\.lan.", dns.TypeA), msg("x\\046lan.", dns.TypeA, "x\\.lan. 300 A 192.168.1.1"), ErrRebinding},
		{"x.lan. from an upstream", q("x.lan.", dns.TypeA), msg("x.lan.", dns.TypeA, "x.lan. 300 A 192.168.1.1"), ErrRebinding},
		{"a\\.b. asked, a.b. answered", q("a\\.b.example.", dns.TypeA), msg("a.b.example.", dns.TypeA, "a.b.example. 300 A 93.184.216.34"), ErrQuestion},
		{"owner a.b. in an answer for a\\.b.", q("a\\.b.example.", dns.TypeA), msg("a\\.b.example.", dns.TypeA, "a.b.example. 300 A 93.184.216.34"), ErrOwner},
		{"CNAME target with an inner dot", q("a.example.", dns.TypeA), msg("a.example.", dns.TypeA, "a.example. 300 CNAME x\\.y.example.", "x\\046Y.example. 300 A 93.184.216.34"), nil},
		{"CNAME target a different split", q("a.example.", dns.TypeA), msg("a.example.", dns.TypeA, "a.example. 300 CNAME x\\.y.example.", "x.y.example. 300 A 93.184.216.34"), ErrOwner},
		{"DNAME owner with an inner dot is not an ancestor", q("a.old.example.", dns.TypeA), msg("a.old.example.", dns.TypeA, "a\\.old.example. 300 DNAME new.example.", "a.old.example. 300 A 93.184.216.34"), ErrOwner},
		{"UTF-8 octets are not case-folded", q("\\195\\169.example.", dns.TypeA), msg("\\195\\137.example.", dns.TypeA, "\\195\\137.example. 300 A 93.184.216.34"), ErrQuestion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, m := range []*dns.Msg{tt.m, roundTrip(t, tt.m)} {
				_, err := v.Check(tt.q, m, false)
				if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("err %v, want %v", err, tt.want)
				}
			}
		})
	}
	// Duplicates written in two renderings are one record.
	m := msg("a\\ b.example.", dns.TypeA, "a\\ b.example. 300 A 93.184.216.34", "A\\032B.example. 300 A 93.184.216.34")
	out, rep, err := v.CheckReport(q("a\\032b.example.", dns.TypeA), m, false)
	if err != nil || len(out.Answer) != 1 || rep.Duplicates != 1 {
		t.Errorf("duplicates: %v %v %+v", err, out, rep)
	}
}

func itoa3(i int) string {
	return string([]byte{'0' + byte(i/100), '0' + byte(i/10%10), '0' + byte(i%10)})
}

// TestWildcardProofKept: a positive answer keeps the NSEC proof its
// signer's zone sent (a wildcard expansion's), and nothing from elsewhere.
func TestWildcardProofKept(t *testing.T) {
	v := New(testPolicy())
	m := msg("a.wild.example.", dns.TypeA, "a.wild.example. 300 IN A 93.184.215.14",
		"a.wild.example. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 1 example. AAAA")
	m.Ns = []dns.RR{
		rr("*.wild.example. 300 IN NSEC b.example. A RRSIG NSEC"),
		rr("*.wild.example. 300 IN RRSIG NSEC 13 2 300 20300101000000 20200101000000 1 example. AAAA"),
		rr("x.other. 300 IN NSEC y.other. A RRSIG NSEC"),
	}
	out, err := v.Check(q("a.wild.example.", dns.TypeA), m, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Ns) != 2 {
		t.Errorf("authority %v", out.Ns)
	}
	// Unsigned: no apex, nothing kept (as before).
	m.Answer = m.Answer[:1]
	out, err = v.Check(q("a.wild.example.", dns.TypeA), m, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Ns) != 0 {
		t.Errorf("unsigned answer kept %v", out.Ns)
	}
}

// TestCheckAllocs: an answer the shield does not change is not copied,
// not even its header (Check returns it): checking a negative answer
// with an OPT costs the question's canonical name; one whose cleaning
// changes a section (a duplicate removed) costs a header copy as well,
// and m is left as it was.
func TestCheckAllocs(t *testing.T) {
	v := New(testPolicy())
	m := msg("gone.example.", dns.TypeA)
	m.Rcode = dns.RcodeNameError
	m.SetEdns0(1232, false)
	question := q("gone.example.", dns.TypeA)
	allocs := testing.AllocsPerRun(100, func() {
		out, err := v.Check(question, m, false)
		if err != nil {
			t.Fatal(err)
		}
		if out != m {
			t.Fatal("an answer left as it was is copied")
		}
	})
	if allocs > 1 {
		t.Errorf("%.1f allocations, want at most 1", allocs)
	}

	// Each name's canonical form once a check: the question's (shared
	// by the owners at it), the SOA's owner.
	for _, c := range []struct {
		name   string
		m      *dns.Msg
		allocs float64
	}{
		{"addresses", msg("a.example.", dns.TypeA, "a.example. 60 IN A 93.184.216.34", "a.example. 60 IN A 93.184.216.35"), 1},
		{"NXDOMAIN with SOA", func() *dns.Msg {
			m := msg("gone.example.", dns.TypeA)
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{rr("example. 300 IN SOA ns.example. h.example. 1 2 3 4 300")}
			return m
		}(), 2},
	} {
		question := c.m.Question[0]
		allocs := testing.AllocsPerRun(100, func() {
			if out, err := v.Check(question, c.m, false); err != nil || out != c.m {
				t.Fatalf("%s: %v (a copy: %v)", c.name, err, out != c.m)
			}
		})
		if allocs > c.allocs && !raceEnabled {
			t.Errorf("%s: %.1f allocations, want at most %.0f", c.name, allocs, c.allocs)
		}
	}

	dup := msg("a.example.", dns.TypeA, "a.example. 60 IN A 93.184.216.34", "a.example. 60 IN A 93.184.216.34")
	out, err := v.Check(q("a.example.", dns.TypeA), dup, false)
	if err != nil {
		t.Fatal(err)
	}
	if out == dup || len(out.Answer) != 1 || len(dup.Answer) != 2 {
		t.Errorf("a duplicate removed: answer %v, input's %v (a copy: %v)", out.Answer, dup.Answer, out != dup)
	}
}
