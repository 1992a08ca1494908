package upstream

import (
	"errors"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

func TestPreparePadding(t *testing.T) {
	for n := 1; n <= 250; n += 7 {
		name := strings.Repeat("a", min(n, 63))
		for len(name) < n {
			name += "." + strings.Repeat("b", min(n-len(name), 62))
		}
		q := query(name, dns.TypeAAAA)
		if n%3 == 0 {
			q.SetEdns0(4096, true)
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 5)})
		}
		m := prepare(q, 0x1234, true)
		b, err := pack(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b)%padBlock != 0 {
			t.Errorf("name of %d: padded query is %d octets", n, len(b))
		}
		opt := m.IsEdns0()
		if opt.UDPSize() != ednsSize || opt.Do() != (n%3 == 0) {
			t.Errorf("OPT %v", opt)
		}
		if k := len(opt.Option); k != 1 || opt.Option[0].Option() != dns.EDNS0PADDING {
			t.Errorf("options %v: want one Padding, last", opt.Option)
		}
		clear := prepare(q, 1, false)
		if paddingOf(clear) >= 0 {
			t.Error("padding on a cleartext query")
		}
	}
}

func TestStripPadding(t *testing.T) {
	m := new(dns.Msg)
	m.SetEdns0(1232, false)
	opt := m.IsEdns0()
	opt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: 3}, &dns.EDNS0_PADDING{Padding: make([]byte, 300)}}
	stripPadding(m)
	if len(opt.Option) != 1 || opt.Option[0].Option() != dns.EDNS0EDE {
		t.Errorf("options after strip: %v", opt.Option)
	}
}

func TestRandomizeCase(t *testing.T) {
	const name = "a1-b2.example.com."
	seen := map[string]bool{}
	for range 64 {
		r := randomizeCase(name)
		if !strings.EqualFold(r, name) {
			t.Fatalf("%q is not %q in another case", r, name)
		}
		seen[r] = true
	}
	if len(seen) < 32 { // 2^12 casings
		t.Errorf("%d distinct casings in 64", len(seen))
	}
}

func TestMatch(t *testing.T) {
	sent := prepare(query("example.com", dns.TypeA), 0xABCD, false)
	sent.Question[0].Name = "ExAmple.cOm."
	reply := func(edit func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetReply(sent)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name  string
		wire  []byte
		exact bool
		want  error
	}{
		{"same", reply(func(*dns.Msg) {}), true, nil},
		{"case ignored without 0x20", reply(func(m *dns.Msg) { m.Question[0].Name = "example.com." }), false, nil},
		{"case differs under 0x20", reply(func(m *dns.Msg) { m.Question[0].Name = "example.com." }), true, ErrMismatch},
		{"other name", reply(func(m *dns.Msg) { m.Question[0].Name = "example.net." }), false, ErrMismatch},
		{"other ID", reply(func(m *dns.Msg) { m.Id++ }), false, ErrMismatch},
		{"other type", reply(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), false, ErrMismatch},
		{"other class", reply(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false, ErrMismatch},
		{"no question", reply(func(m *dns.Msg) { m.Question = nil }), false, ErrMismatch},
		{"two questions", reply(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false, ErrMismatch},
		{"a query, not a response", reply(func(m *dns.Msg) { m.Response = false }), false, ErrMismatch},
		{"other opcode", reply(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), false, ErrMismatch},
		{"short", []byte{0xAB, 0xCD, 0x81}, false, ErrMalformed},
		{"truncated body", reply(func(*dns.Msg) {})[:20], false, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := match(sent, c.wire, c.exact)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if c.want == nil && m == nil {
				t.Fatal("no message")
			}
		})
	}
}

func TestRestoreName(t *testing.T) {
	m := new(dns.Msg)
	m.Question = []dns.Question{{Name: "ExAmple.cOm.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	a, _ := dns.NewRR("ExAmple.cOm. 60 IN CNAME Other.example.")
	b, _ := dns.NewRR("Other.example. 60 IN A 192.0.2.1")
	m.Answer = []dns.RR{a, b}
	restoreName(m, "example.com.")
	if m.Question[0].Name != "example.com." || a.Header().Name != "example.com." || b.Header().Name != "Other.example." {
		t.Errorf("restored: %v", m)
	}
}

// corpus adds the shared DNS message collection to a fuzz target.
func corpus(f *testing.F) {
	for i, b := range testenv.Messages(8) { // a spread of the 9,774 is plenty for seeding
		f.Add(b, i%2 == 0)
	}
}

// FuzzMatch feeds arbitrary bytes to the response matching every
// transport uses, against a query made to look like the bytes' own
// question so that matching gets past the ID and question checks: it must
// never panic, and what it accepts must truly match.
func FuzzMatch(f *testing.F) {
	corpus(f)
	ok := new(dns.Msg)
	ok.SetReply(query("example.com", dns.TypeA))
	if b, err := ok.Pack(); err == nil {
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, wire []byte, exact bool) {
		sent := prepare(query("example.com", dns.TypeA), 0, false)
		if m := new(dns.Msg); m.Unpack(wire) == nil && len(m.Question) == 1 {
			sent.Id, sent.Opcode, sent.Question = m.Id, m.Opcode, m.Question
			if exact {
				sent.Question = []dns.Question{{Name: randomizeCase(m.Question[0].Name), Qtype: m.Question[0].Qtype, Qclass: m.Question[0].Qclass}}
			}
		}
		resp, err := match(sent, wire, exact)
		if err != nil {
			if !errors.Is(err, ErrMismatch) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		got, want := resp.Question[0], sent.Question[0]
		if !resp.Response || resp.Id != sent.Id || got.Qtype != want.Qtype || got.Qclass != want.Qclass ||
			!strings.EqualFold(got.Name, want.Name) || exact && got.Name != want.Name {
			t.Fatalf("accepted a mismatch: sent %v, got %v", sent.Question, resp)
		}
		restoreName(resp, "example.com.")
		stripPadding(resp)
		if resp.Question[0].Name != "example.com." || paddingOf(resp) > 0 {
			t.Fatal("restore or strip failed")
		}
	})
}
