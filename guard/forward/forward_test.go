package forward

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

func req(t *testing.T, name string, do bool) *stage.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if do {
		m.SetEdns0(1232, true)
	}
	raw, _ := m.Pack()
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &stage.Request{Raw: raw, Q: q}
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestStored(t *testing.T) {
	sig := rr("a.example. 300 IN RRSIG A 8 2 300 20300101000000 20200101000000 1 example. AAAA")
	tests := []struct {
		name    string
		do      bool
		resp    func(m *dns.Msg)
		wantErr uint16 // EDE code, 0 = no error
		check   func(t *testing.T, m *dns.Msg)
	}{
		{"minimal: additional and NS dropped, OPT and padding gone", false, func(m *dns.Msg) {
			m.Answer = []dns.RR{rr("a.example. 300 IN A 192.0.2.1")}
			m.Ns = []dns.RR{rr("example. 300 IN NS ns.example.")}
			m.Extra = []dns.RR{rr("ns.example. 300 IN A 192.0.2.53")}
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 100)})
		}, 0, func(t *testing.T, m *dns.Msg) {
			if len(m.Answer) != 1 || len(m.Ns) != 0 || len(m.Extra) != 0 {
				t.Errorf("not minimal: %v", m)
			}
		}},
		{"NXDOMAIN keeps SOA at min(TTL, MINIMUM)", false, func(m *dns.Msg) {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{rr("example. 3600 IN SOA ns.example. h.example. 1 2 3 4 120")}
		}, 0, func(t *testing.T, m *dns.Msg) {
			if m.Rcode != dns.RcodeNameError || len(m.Ns) != 1 || m.Ns[0].Header().Ttl != 120 {
				t.Errorf("negative answer %v", m)
			}
		}},
		{"RRSIG dropped without DO", false, func(m *dns.Msg) {
			m.Answer = []dns.RR{rr("a.example. 300 IN A 192.0.2.1"), sig}
		}, 0, func(t *testing.T, m *dns.Msg) {
			if len(m.Answer) != 1 {
				t.Errorf("answer %v", m.Answer)
			}
		}},
		{"RRSIG kept with DO", true, func(m *dns.Msg) {
			m.Answer = []dns.RR{rr("a.example. 300 IN A 192.0.2.1"), sig}
		}, 0, func(t *testing.T, m *dns.Msg) {
			if len(m.Answer) != 2 {
				t.Errorf("answer %v", m.Answer)
			}
		}},
		{"SERVFAIL is a failure", false, func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure }, dnswire.EDENetworkError, nil},
		{"upstream EDE passed on", false, func(m *dns.Msg) {
			m.Rcode = dns.RcodeServerFailure
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dnswire.EDEDNSSECBogus, ExtraText: "bogus"})
		}, dnswire.EDEDNSSECBogus, nil},
		{"upstream EDE text cut to printable ASCII and 128 octets", false, func(m *dns.Msg) {
			m.Rcode = dns.RcodeServerFailure
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dnswire.EDENetworkError,
				ExtraText: "\x1b[31mred\x1b[0m\r\nfake: log line\x00caf\u00e9 " + strings.Repeat("x", 300)})
		}, dnswire.EDENetworkError, nil},
		{"REFUSED is a failure", false, func(m *dns.Msg) { m.Rcode = dns.RcodeRefused }, dnswire.EDENetworkError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req(t, "a.example.", tt.do)
			up := new(dns.Msg)
			up.SetReply(Query(r))
			tt.resp(up)
			got, err := Stored(r, up)
			if tt.wantErr != 0 {
				var se *stage.Error
				if !errors.As(err, &se) || se.EDE.Code != tt.wantErr {
					t.Fatalf("err %v, want EDE %d", err, tt.wantErr)
				}
				if len(se.EDE.Text) > dnswire.MaxEDEText {
					t.Errorf("EDE text of %d octets", len(se.EDE.Text))
				}
				for _, c := range []byte(se.EDE.Text) {
					if c < ' ' || c > '~' {
						t.Fatalf("EDE text holds %#x: %q", c, se.EDE.Text)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(got.Msg); err != nil {
				t.Fatal(err)
			}
			if m.IsEdns0() != nil {
				t.Error("stored form holds an OPT")
			}
			tt.check(t, m)
		})
	}
}

// TestStoredNegativeAuthority: a negative answer keeps its SOA at
// min(TTL, MINIMUM) and, for a device asking with DO, its proof; anything
// else in the authority section goes; the upstream's records are never
// changed (an SOA whose TTL is lowered is a copy).
func TestStoredNegativeAuthority(t *testing.T) {
	nsec := "gone.example. 300 IN NSEC z.example. A"
	for _, c := range []struct {
		name string
		do   bool
		ns   []string
		want []string // the stored authority: type and TTL
	}{
		{"SOA within its MINIMUM", false, []string{"example. 60 IN SOA ns.example. h.example. 1 2 3 4 120"}, []string{"SOA 60"}},
		{"SOA over its MINIMUM", false, []string{"example. 3600 IN SOA ns.example. h.example. 1 2 3 4 120"}, []string{"SOA 120"}},
		{"NS dropped", false, []string{"example. 300 IN NS ns.example.", "example. 60 IN SOA ns.example. h.example. 1 2 3 4 120"}, []string{"SOA 60"}},
		{"proof without DO dropped", false, []string{"example. 60 IN SOA ns.example. h.example. 1 2 3 4 120", nsec}, []string{"SOA 60"}},
		{"proof with DO kept", true, []string{"example. 60 IN SOA ns.example. h.example. 1 2 3 4 120", nsec}, []string{"SOA 60", "NSEC 300"}},
		{"proof with DO kept, SOA lowered", true, []string{nsec, "example. 3600 IN SOA ns.example. h.example. 1 2 3 4 120", "example. 300 IN NS ns.example."}, []string{"NSEC 300", "SOA 120"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := req(t, "gone.example.", c.do)
			up := new(dns.Msg)
			up.SetReply(Query(r))
			up.Rcode = dns.RcodeNameError
			var before []string
			for _, s := range c.ns {
				up.Ns = append(up.Ns, rr(s))
				before = append(before, up.Ns[len(up.Ns)-1].String())
			}
			got, err := Stored(r, up)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(got.Msg); err != nil {
				t.Fatal(err)
			}
			var ns []string
			for _, x := range m.Ns {
				ns = append(ns, fmt.Sprintf("%s %d", dns.TypeToString[x.Header().Rrtype], x.Header().Ttl))
			}
			if fmt.Sprint(ns) != fmt.Sprint(c.want) {
				t.Errorf("stored authority %v, want %v", ns, c.want)
			}
			for i, x := range up.Ns {
				if x.String() != before[i] {
					t.Errorf("upstream's record changed: %s, was %s", x, before[i])
				}
			}
		})
	}
}

func TestQuery(t *testing.T) {
	q := Query(req(t, "MiXeD.Example.", true))
	if q.Question[0].Name != "mixed.example." || !q.RecursionDesired || q.IsEdns0() == nil || !q.IsEdns0().Do() {
		t.Errorf("upstream query %v", q)
	}
	if q := Query(req(t, "a.example.", false)); q.IsEdns0() != nil {
		t.Errorf("OPT added for a device without DO: %v", q)
	}
	// The name's presentation form, whether it fits the room kept for
	// it in the query's allocation or not (escapes make it longer).
	long := strings.Repeat("abcdefghi.", 8) + "example."
	for _, name := range []string{".", "a.example.", strings.Repeat("x", 63) + ".", strings.Repeat("x", 60) + ".ab.", long, `a\032b\.c.example.`, strings.Repeat(`\000`, 20) + "."} {
		r := req(t, name, false)
		if got, want := Query(r).Question[0].Name, dnswire.NameString(r.Q.Name); got != want {
			t.Errorf("%s: question %q, want %q", name, got, want)
		}
	}
}

func TestStoredDNSSEC(t *testing.T) {
	mk := func(qtype uint16, do, ad bool) *stage.Request {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", qtype)
		m.AuthenticatedData = ad
		if do {
			m.SetEdns0(1232, true)
		}
		raw, _ := m.Pack()
		q, err := dnswire.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		return &stage.Request{Raw: raw, Q: q}
	}
	answer := func(qtype uint16, ad bool, rrs ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", qtype)
		m.Response, m.AuthenticatedData = true, ad
		for _, s := range rrs {
			m.Answer = append(m.Answer, rr(s))
		}
		return m
	}
	sig := "a.example. 300 IN RRSIG A 8 2 300 20300101000000 20200101000000 1 example. AAAA"
	cases := []struct {
		name   string
		req    *stage.Request
		resp   *dns.Msg
		wantAD bool
		wantN  int
	}{
		{"AD to a DO device", mk(dns.TypeA, true, false), answer(dns.TypeA, true, "a.example. 300 IN A 192.0.2.1", sig), true, 2},
		{"AD to an AD device", mk(dns.TypeA, false, true), answer(dns.TypeA, true, "a.example. 300 IN A 192.0.2.1", sig), true, 1},
		{"no AD to a plain device", mk(dns.TypeA, false, false), answer(dns.TypeA, true, "a.example. 300 IN A 192.0.2.1", sig), false, 1},
		{"no AD the exchanger did not set", mk(dns.TypeA, true, true), answer(dns.TypeA, false, "a.example. 300 IN A 192.0.2.1"), false, 1},
		{"explicit RRSIG query without DO", mk(dns.TypeRRSIG, false, false), answer(dns.TypeRRSIG, false, sig), false, 1},
		{"explicit NSEC query without DO", mk(dns.TypeNSEC, false, false), answer(dns.TypeNSEC, false, "a.example. 300 IN NSEC b.example. A RRSIG NSEC"), false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Stored(tc.req, tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(r.Msg); err != nil {
				t.Fatal(err)
			}
			if m.AuthenticatedData != tc.wantAD || len(m.Answer) != tc.wantN {
				t.Errorf("AD %v, %d records: %v", m.AuthenticatedData, len(m.Answer), m)
			}
		})
	}
}

func TestStoredWildcardProof(t *testing.T) {
	resp := new(dns.Msg)
	resp.SetQuestion("a.wild.example.", dns.TypeA)
	resp.Response = true
	resp.Answer = []dns.RR{rr("a.wild.example. 300 IN A 192.0.2.1"), rr("a.wild.example. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 1 example. AAAA")}
	resp.Ns = []dns.RR{
		rr("example. 300 IN NS ns.example."),
		rr("*.wild.example. 300 IN NSEC b.example. A RRSIG NSEC"),
		rr("*.wild.example. 300 IN RRSIG NSEC 13 2 300 20300101000000 20200101000000 1 example. AAAA"),
		rr("example. 300 IN RRSIG NS 13 1 300 20300101000000 20200101000000 1 example. AAAA"),
	}
	for _, do := range []bool{true, false} {
		r, err := Stored(req(t, "a.wild.example.", do), resp)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(r.Msg); err != nil {
			t.Fatal(err)
		}
		want := 0
		if do {
			want = 2 // the NSEC and its RRSIG; not the NS or its RRSIG
		}
		if len(m.Ns) != want {
			t.Errorf("DO=%v: authority %v", do, m.Ns)
		}
	}
}
