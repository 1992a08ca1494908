package dnssec

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testWorld is the signed world the table tests run against.
func testWorld(t testing.TB, wrongDS map[string]bool) *world {
	t.Helper()
	zones := []*tzone{
		{origin: ".", records: []string{}},
		{origin: "example.", records: []string{
			"www.example. 300 IN A 192.0.2.1",
			"www.example. 300 IN AAAA 2001:db8::1",
			"*.wild.example. 300 IN A 192.0.2.7",
			"alias.example. 300 IN CNAME www.example.",
			"out.example. 300 IN CNAME www.n3.",
			"toinsecure.example. 300 IN CNAME www.insecure.example.",
			"d.example. 300 IN DNAME n3.",
			"x.ent.example. 300 IN A 192.0.2.9",
		}},
		{origin: "insecure.example.", unsigned: true, records: []string{"www.insecure.example. 300 IN A 192.0.2.66"}},
		{origin: "wrongds.example.", records: []string{"www.wrongds.example. 300 IN A 192.0.2.2"}},
		{origin: "child.example.", records: []string{"www.child.example. 300 IN A 192.0.2.17"}},
		{origin: "sub.wild.example.", records: []string{"www.sub.wild.example. 300 IN A 192.0.2.18"}},
		{origin: "deep.", records: []string{"x.deep. 300 IN A 192.0.2.19"}},
		{origin: "d.c.b.a.deep.", records: []string{"www.d.c.b.a.deep. 300 IN A 192.0.2.20"}},
		{origin: "deep3.", nsec3: true, records: []string{"x.deep3. 300 IN A 192.0.2.21"}},
		{origin: "d.c.b.a.deep3.", records: []string{"www.d.c.b.a.deep3. 300 IN A 192.0.2.22"}},
		{origin: "n3.", nsec3: true, optOut: true, salt: "AABB", iter: 1, records: []string{
			"www.n3. 300 IN A 192.0.2.3",
			"*.wild.n3. 300 IN A 192.0.2.8",
			"x.ent.n3. 300 IN A 192.0.2.10",
		}},
		{origin: "unsigned.n3.", unsigned: true, records: []string{"www.unsigned.n3. 300 IN A 192.0.2.67"}},
		{origin: "strict3.", nsec3: true, records: []string{"www.strict3. 300 IN A 192.0.2.11",
			"a.strict3. 300 IN A 192.0.2.11", "b.strict3. 300 IN A 192.0.2.11", "c.strict3. 300 IN A 192.0.2.11",
			"d.strict3. 300 IN A 192.0.2.11", "e.strict3. 300 IN A 192.0.2.11", "f.strict3. 300 IN A 192.0.2.11",
			"g.strict3. 300 IN A 192.0.2.11", "h.strict3. 300 IN A 192.0.2.11", "i.strict3. 300 IN A 192.0.2.11"}},
		{origin: "iter.", nsec3: true, iter: 200, records: []string{"www.iter. 300 IN A 192.0.2.4"}},
		{origin: "rsa.", alg: dns.RSASHA256, records: []string{"www.rsa. 300 IN A 192.0.2.5"}},
		{origin: "ed.", alg: dns.ED25519, records: []string{"www.ed. 300 IN A 192.0.2.6"}},
		{origin: "p384.", alg: dns.ECDSAP384SHA384, records: []string{"www.p384. 300 IN A 192.0.2.12"}},
		{origin: "old.", alg: dns.RSASHA1, records: []string{"www.old. 300 IN A 192.0.2.13"}},
		{origin: "expired.", incept: testNow.Add(-60 * 24 * time.Hour), expire: testNow.Add(-24 * time.Hour), records: []string{"www.expired. 300 IN A 192.0.2.14"}},
		{origin: "future.", incept: testNow.Add(24 * time.Hour), expire: testNow.Add(60 * 24 * time.Hour), records: []string{"www.future. 300 IN A 192.0.2.15"}},
		{origin: "nta.", incept: testNow.Add(-60 * 24 * time.Hour), expire: testNow.Add(-24 * time.Hour), records: []string{"www.nta. 300 IN A 192.0.2.16"}},
	}
	return newWorld(t, zones, wrongDS)
}

func ask(w *world, name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, true)
	resp, _ := w.Exchange(context.Background(), q)
	return resp
}

func dropTypes(sec []dns.RR, types ...uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range sec {
		drop := false
		for _, t := range types {
			h := rr.Header()
			if h.Rrtype == t || (h.Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == t) {
				drop = true
			}
		}
		if !drop {
			out = append(out, rr)
		}
	}
	return out
}

func TestValidateTable(t *testing.T) {
	w := testWorld(t, map[string]bool{"wrongds.example.": true})
	forgeA := func(resp *dns.Msg) {
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				a.A = net.ParseIP("203.0.113.66")
			}
		}
	}
	cases := []struct {
		name   string
		qname  string
		qtype  uint16
		tamper func(resp *dns.Msg)    // on the answer being validated only
		keys   func(q, resp *dns.Msg) // on every upstream answer (chain too)
		ntas   []string
		clock  bool // time untrusted
		want   Security
		ede    uint16
	}{
		{name: "secure A", qname: "www.example.", qtype: dns.TypeA, want: Secure},
		{name: "secure AAAA", qname: "www.example.", qtype: dns.TypeAAAA, want: Secure},
		{name: "forged A", qname: "www.example.", qtype: dns.TypeA, tamper: forgeA, want: Bogus, ede: 6},
		{name: "added unsigned A", qname: "www.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "www.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP("203.0.113.1")})
		}, want: Bogus, ede: 6},
		{name: "missing RRSIG", qname: "www.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Answer = dropTypes(m.Answer, dns.TypeRRSIG) }, want: Bogus, ede: 10},
		{name: "NXDOMAIN NSEC", qname: "nope.example.", qtype: dns.TypeA, want: Secure},
		{name: "NXDOMAIN missing NSEC", qname: "nope.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Ns = dropTypes(m.Ns, dns.TypeNSEC) }, want: Bogus, ede: 12},
		{name: "NXDOMAIN half proof (no wildcard denial)", qname: "nope.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			keepFirstProof(m)
		}, want: Bogus, ede: 12},
		{name: "NXDOMAIN turned NOERROR", qname: "nope.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Rcode = dns.RcodeSuccess }, want: Bogus, ede: 12},
		{name: "NODATA NSEC", qname: "www.example.", qtype: dns.TypeTXT, want: Secure},
		{name: "NODATA turned NXDOMAIN", qname: "www.example.", qtype: dns.TypeTXT, tamper: func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }, want: Bogus, ede: 12},
		{name: "NODATA empty non-terminal NSEC", qname: "ent.example.", qtype: dns.TypeA, want: Secure},
		{name: "wildcard NSEC", qname: "a.wild.example.", qtype: dns.TypeA, want: Secure},
		{name: "wildcard NSEC stripped", qname: "a.wild.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Ns = nil }, want: Bogus, ede: 12},
		{name: "wildcard NSEC sent expanded (unbound auth-zone)", qname: "a.wild.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			for _, rr := range m.Ns {
				if rr.Header().Name == "*.wild.example." {
					rr.Header().Name = "a.wild.example."
				}
			}
		}, want: Secure},
		{name: "expanded NSEC moved to another name", qname: "b.wild.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			for _, rr := range m.Ns {
				if rr.Header().Name == "*.wild.example." {
					rr.Header().Name = "zzz.wild.example."
				}
			}
		}, want: Secure},
		{name: "wildcard NODATA NSEC", qname: "a.wild.example.", qtype: dns.TypeMX, want: Secure},
		{name: "CNAME in zone", qname: "alias.example.", qtype: dns.TypeA, want: Secure},
		{name: "CNAME across zones", qname: "out.example.", qtype: dns.TypeA, want: Secure},
		{name: "CNAME target forged", qname: "out.example.", qtype: dns.TypeA, tamper: forgeA, want: Bogus, ede: 6},
		{name: "CNAME into insecure zone", qname: "toinsecure.example.", qtype: dns.TypeA, want: Insecure},
		{name: "DNAME", qname: "www.d.example.", qtype: dns.TypeA, want: Secure},
		{name: "DNAME with forged CNAME", qname: "www.d.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			for _, rr := range m.Answer {
				if c, ok := rr.(*dns.CNAME); ok {
					c.Target = "evil.example."
				}
			}
		}, want: Bogus, ede: 6},
		{name: "insecure delegation NSEC", qname: "www.insecure.example.", qtype: dns.TypeA, want: Insecure},
		{name: "insecure delegation NSEC3 opt-out", qname: "www.unsigned.n3.", qtype: dns.TypeA, want: Insecure},
		{name: "insecure delegation claim with DS stripped", qname: "www.example.", qtype: dns.TypeA, keys: func(q, m *dns.Msg) {
			if q.Question[0].Qtype == dns.TypeDS {
				m.Answer = dropTypes(m.Answer, dns.TypeDS)
			}
		}, want: Bogus, ede: 12},
		{name: "wrong DS", qname: "www.wrongds.example.", qtype: dns.TypeA, want: Bogus, ede: 9},
		{name: "missing DNSKEY", qname: "www.example.", qtype: dns.TypeA, keys: func(q, m *dns.Msg) {
			if q.Question[0].Qtype == dns.TypeDNSKEY && q.Question[0].Name == "example." {
				m.Answer = nil
			}
		}, want: Bogus, ede: 9},
		{name: "NSEC3 secure A", qname: "www.n3.", qtype: dns.TypeA, want: Secure},
		{name: "NSEC3 NXDOMAIN opt-out", qname: "nope.n3.", qtype: dns.TypeA, want: Insecure},
		{name: "NSEC3 NXDOMAIN", qname: "nope.strict3.", qtype: dns.TypeA, want: Secure},
		{name: "NSEC3 NXDOMAIN stripped proof", qname: "nope.strict3.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Ns = dropTypes(m.Ns, dns.TypeNSEC3) }, want: Bogus, ede: 12},
		{name: "NSEC3 NXDOMAIN half proof", qname: "nope.strict3.", qtype: dns.TypeA, tamper: keepFirstProof, want: Bogus, ede: 12},
		{name: "NSEC3 NODATA", qname: "www.n3.", qtype: dns.TypeTXT, want: Secure},
		{name: "NSEC3 NODATA stripped", qname: "www.n3.", qtype: dns.TypeTXT, tamper: func(m *dns.Msg) { m.Ns = dropTypes(m.Ns, dns.TypeNSEC3) }, want: Bogus, ede: 12},
		{name: "NSEC3 NODATA empty non-terminal", qname: "ent.n3.", qtype: dns.TypeA, want: Secure},
		{name: "NSEC3 wildcard", qname: "a.wild.n3.", qtype: dns.TypeA, want: Secure},
		{name: "NSEC3 wildcard NODATA", qname: "a.wild.n3.", qtype: dns.TypeMX, want: Secure},
		{name: "NSEC3 wildcard stripped", qname: "a.wild.n3.", qtype: dns.TypeA, tamper: func(m *dns.Msg) { m.Ns = nil }, want: Bogus, ede: 12},
		{name: "NSEC3 iterations above 150", qname: "nope.iter.", qtype: dns.TypeA, want: Insecure, ede: 27},
		{name: "NSEC3 iterations zone positive", qname: "www.iter.", qtype: dns.TypeA, want: Secure},
		{name: "RSASHA256", qname: "www.rsa.", qtype: dns.TypeA, want: Secure},
		{name: "RSASHA256 forged", qname: "www.rsa.", qtype: dns.TypeA, tamper: forgeA, want: Bogus, ede: 6},
		{name: "Ed25519", qname: "www.ed.", qtype: dns.TypeA, want: Secure},
		{name: "Ed25519 forged", qname: "www.ed.", qtype: dns.TypeA, tamper: forgeA, want: Bogus, ede: 6},
		{name: "ECDSA P-384", qname: "www.p384.", qtype: dns.TypeA, want: Secure},
		{name: "unsupported algorithm RSASHA1", qname: "www.old.", qtype: dns.TypeA, want: Insecure, ede: 1},
		{name: "expired signatures", qname: "www.expired.", qtype: dns.TypeA, want: Bogus, ede: 7},
		{name: "not yet valid signatures", qname: "www.future.", qtype: dns.TypeA, want: Bogus, ede: 8},
		{name: "expired but clock untrusted", qname: "www.expired.", qtype: dns.TypeA, clock: true, want: Secure},
		{name: "negative trust anchor", qname: "www.nta.", qtype: dns.TypeA, ntas: []string{"nta."}, want: Insecure},
		{name: "negative trust anchor elsewhere", qname: "www.nta.", qtype: dns.TypeA, ntas: []string{"other."}, want: Bogus, ede: 7},
		{name: "DS query secure", qname: "example.", qtype: dns.TypeDS, want: Secure},
		{name: "DS query insecure delegation", qname: "insecure.example.", qtype: dns.TypeDS, want: Secure},
		{name: "DNSKEY query", qname: "example.", qtype: dns.TypeDNSKEY, want: Secure},
		{name: "signer claims a non-apex", qname: "www.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			for _, rr := range m.Answer {
				if s, ok := rr.(*dns.RRSIG); ok {
					s.SignerName = "www.example."
				}
			}
		}, want: Bogus},
	}
	parentNSEC := func(m *dns.Msg) {
		// The parent's NSEC at the delegation sorts before every name
		// of the child: it must not deny them (RFC 6840 §4.1).
		m.Rcode = dns.RcodeNameError
		m.Answer = nil
		m.Ns = pick(w.zones["example."].data["child.example."], dns.TypeNSEC)
		m.Ns = append(m.Ns, pick(w.zones["example."].data["example."], dns.TypeSOA)...)
	}
	cases = append(cases, []struct {
		name   string
		qname  string
		qtype  uint16
		tamper func(resp *dns.Msg)
		keys   func(q, resp *dns.Msg)
		ntas   []string
		clock  bool
		want   Security
		ede    uint16
	}{
		{name: "secure child zone", qname: "www.child.example.", qtype: dns.TypeA, want: Secure},
		{name: "parent-side NSEC denies a child name", qname: "www.child.example.", qtype: dns.TypeA, tamper: parentNSEC, want: Bogus},
		{name: "signed A replayed at another name", qname: "alias.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			src := ask(w, "www.example.", dns.TypeA)
			for _, rr := range src.Answer {
				rr.Header().Name = "alias.example."
			}
			m.Answer = src.Answer
		}, want: Bogus, ede: 6},
		{name: "RRSIG from an unrelated zone", qname: "www.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			src := ask(w, "www.n3.", dns.TypeA)
			m.Answer = dropTypes(m.Answer, dns.TypeRRSIG)
			for _, rr := range src.Answer {
				if s, ok := rr.(*dns.RRSIG); ok {
					s.Hdr.Name = "www.example."
					m.Answer = append(m.Answer, s)
				}
			}
		}, want: Bogus, ede: 10},
		{name: "DS denied by the child's apex NSEC", qname: "example.", qtype: dns.TypeDS, tamper: func(m *dns.Msg) {
			m.Answer = nil
			m.Ns = append(pick(w.zones["example."].data["example."], dns.TypeNSEC), pick(w.zones["example."].data["example."], dns.TypeSOA)...)
		}, want: Bogus},
		{name: "DS denied by the child's apex NSEC3", qname: "strict3.", qtype: dns.TypeDS, tamper: func(m *dns.Msg) {
			z := w.zones["strict3."]
			m.Answer = nil
			m.Ns = append(pick(z.data[canon(z.nsec3Matching("strict3.").Hdr.Name)], dns.TypeNSEC3), pick(z.data["strict3."], dns.TypeSOA)...)
		}, want: Bogus},
		{name: "secure child below a wildcard", qname: "www.sub.wild.example.", qtype: dns.TypeA, want: Secure},
		{name: "parent wildcard spliced into a child name", qname: "foo.sub.wild.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			// The child's genuine NXDOMAIN proof, with the parent's genuine
			// wildcard expansion for the name as the answer.
			src := ask(w, "foo.wild.example.", dns.TypeA)
			m.Rcode = dns.RcodeSuccess
			m.Answer = rename(src.Answer, "foo.sub.wild.example.")
			m.Ns = dropTypes(m.Ns, dns.TypeSOA)
		}, want: Bogus},
		{name: "zone below empty non-terminals (NSEC parent)", qname: "www.d.c.b.a.deep.", qtype: dns.TypeA, want: Secure},
		{name: "zone below empty non-terminals (NSEC3 parent)", qname: "www.d.c.b.a.deep3.", qtype: dns.TypeA, want: Secure},
		{name: "explicit RRSIG query", qname: "www.example.", qtype: dns.TypeRRSIG, want: Insecure},
		{name: "explicit NSEC query", qname: "www.example.", qtype: dns.TypeNSEC, want: Secure},
		{name: "CNAME loop", qname: "alias.example.", qtype: dns.TypeA, tamper: func(m *dns.Msg) {
			for i := 0; i < 20; i++ {
				m.Answer = append(m.Answer, mustRR(t, "alias.example. 300 IN CNAME alias.example."))
			}
		}, want: Bogus},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w.tamper = tc.keys
			v, err := New(w, Config{Anchors: w.anchor(), NegativeAnchors: tc.ntas, Now: func() time.Time { return testNow }, TimeTrusted: func() bool { return !tc.clock }})
			if err != nil {
				t.Fatal(err)
			}
			resp := ask(w, tc.qname, tc.qtype)
			if tc.tamper != nil {
				tc.tamper(resp)
			}
			got := v.Validate(context.Background(), resp)
			if got.Security != tc.want || (tc.ede != 0 && got.EDE != tc.ede) {
				t.Errorf("got %v (EDE %d), want %v (EDE %d)\n%v", got, got.EDE, tc.want, tc.ede, resp)
			}
			w.tamper = nil
		})
	}
}

// keepFirstProof keeps only the first NSEC/NSEC3 RRset of the authority.
func keepFirstProof(m *dns.Msg) {
	var out []dns.RR
	owner := ""
	for _, rr := range m.Ns {
		h := rr.Header()
		isProof := h.Rrtype == dns.TypeNSEC || h.Rrtype == dns.TypeNSEC3
		if s, ok := rr.(*dns.RRSIG); ok {
			isProof = s.TypeCovered == dns.TypeNSEC || s.TypeCovered == dns.TypeNSEC3
		}
		if isProof {
			if owner == "" {
				owner = h.Name
			}
			if h.Name != owner {
				continue
			}
		}
		out = append(out, rr)
	}
	m.Ns = out
}

func TestCompareNames(t *testing.T) {
	// RFC 4034 §6.1's example, in canonical order.
	order := []string{"example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.", "zABC.a.EXAMPLE.", "z.example.", "\\001.z.example.", "*.z.example.", "\\200.z.example."}
	for i := 0; i+1 < len(order); i++ {
		if compareNames(order[i], order[i+1]) >= 0 {
			t.Errorf("%s should sort before %s", order[i], order[i+1])
		}
		if compareNames(order[i+1], order[i]) <= 0 {
			t.Errorf("%s should sort after %s", order[i+1], order[i])
		}
	}
	if compareNames("A.example.", "a.EXAMPLE.") != 0 {
		t.Error("case matters")
	}
}
