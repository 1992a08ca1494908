package upstream

import (
	"errors"
	"fmt"
	"net"
	"reflect"
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

// TestUnpackSent: the everyday answers are unpacked by unpackSent, to
// what dns.Msg.Unpack makes of them, in fewer allocations; answers whose
// question is not the name sent octet for octet are left to Unpack.
func TestUnpackSent(t *testing.T) {
	rrs := func(ss ...string) []dns.RR {
		var out []dns.RR
		for _, s := range ss {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, rr)
		}
		return out
	}
	reply := func(name string, rcode int, answer, ns []dns.RR, edns bool) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.Id, m.Response, m.RecursionAvailable, m.Rcode = 4242, true, true, rcode
		m.Answer, m.Ns = answer, ns
		if edns {
			m.SetEdns0(1232, true)
			if rcode > 0xF {
				m.Extra[0].(*dns.OPT).SetExtendedRcode(uint16(rcode))
			}
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	soa := rrs("example. 300 IN SOA ns.example. host.example. 1 2 3 4 5")
	many := make([]string, 9)
	for i := range many {
		many[i] = fmt.Sprintf("a.example. 60 IN A 192.0.2.%d", i+1)
	}
	for _, c := range []struct {
		name   string
		sent   string
		wire   []byte
		fast   bool
		allocs float64 // at most, when fast
	}{
		{"address and OPT", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, true), true, 3},
		{"AAAA", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN AAAA 2001:db8::1", "a.example. 60 IN AAAA 2001:db8::2"), nil, false), true, 3},
		{"CNAME chain", "www.example.", reply("www.example.", dns.RcodeSuccess, rrs("www.example. 60 IN CNAME a.example.", "a.example. 60 IN A 192.0.2.1", "a.example. 60 IN A 192.0.2.2"), nil, true), true, 0},
		{"NXDOMAIN with SOA", "gone.example.", reply("gone.example.", dns.RcodeNameError, nil, soa, true), true, 3},
		{"CNAME and address", "www.example.", reply("www.example.", dns.RcodeSuccess, rrs("www.example. 60 IN CNAME a.example.", "a.example. 60 IN A 192.0.2.1"), nil, true), true, 4},
		{"records of other types", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN MX 10 mx.example.", "a.example. 60 IN TXT \"x\""), nil, true), true, 0},
		{"odd octets in names", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs(`a.example. 60 IN CNAME b\.c\032\000\255\"(x).example.`, `b\.c\032\000\255\"(x).example. 60 IN A 192.0.2.1`), nil, true), true, 0},
		{"names past the room", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs(
			"a.example. 60 IN CNAME "+strings.Repeat("b", 60)+".example.", strings.Repeat("b", 60)+".example. 60 IN CNAME "+strings.Repeat("c", 60)+".example.",
			strings.Repeat("c", 60)+".example. 60 IN CNAME "+strings.Repeat("d", 60)+".example.", strings.Repeat("d", 60)+".example. 60 IN A 192.0.2.1"), nil, true), true, 0},
		{"extended rcode", "a.example.", reply("a.example.", dns.RcodeBadVers, nil, nil, true), true, 0},
		{"more records than room", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs(many...), nil, true), true, 0},
		{"count past the records", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, true)[:len(reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, true))-11], true, 0},
		{"0x20 case sent", "A.eXample.", reply("A.eXample.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, true), true, 0},
		{"question in another case", "a.example.", reply("A.example.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, true), false, 0},
		{"another question", "b.example.", reply("a.example.", dns.RcodeSuccess, nil, nil, false), false, 0},
		{"record cut short", "a.example.", reply("a.example.", dns.RcodeSuccess, rrs("a.example. 60 IN A 192.0.2.1"), nil, false)[:40], false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			sent := sentQuery{id: 4242, nq: 1, question: dns.Question{Name: c.sent, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
			got, ok := unpackSent(sent, c.wire)
			if ok != c.fast {
				t.Fatalf("taken %v, want %v", ok, c.fast)
			}
			if !ok {
				return
			}
			want := new(dns.Msg)
			if err := want.Unpack(c.wire); err != nil {
				t.Fatal(err)
			}
			if got.Question[0].Name != c.sent {
				t.Errorf("question name %q, want the name sent %q", got.Question[0].Name, c.sent)
			}
			want.Question[0].Name = got.Question[0].Name
			sameOwners(t, got, want, c.sent)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("unpackSent:\n%v\nUnpack:\n%v", got, want)
			}
			if c.allocs > 0 && !testing.Short() {
				n := testing.AllocsPerRun(100, func() { unpackSent(sent, c.wire) })
				// The message with its question, records and names; each
				// record one (an address with its record). Unpack: 11 for
				// an A and the OPT, 12 for an SOA and the OPT.
				if n > c.allocs {
					t.Errorf("%.1f allocations, want at most %.0f", n, c.allocs)
				}
			}
		})
	}
}

// sameOwners fails unless got's and want's records have the same owner
// strings, but for an owner unpackSent wrote as the name sent (the
// question's name), which must be the same name octet for octet; want's
// records are then given got's owner strings.
func sameOwners(t *testing.T, got, want *dns.Msg, sent string) {
	t.Helper()
	for i, sec := range [][]dns.RR{got.Answer, got.Ns, got.Extra} {
		wsec := [][]dns.RR{want.Answer, want.Ns, want.Extra}[i]
		if len(sec) != len(wsec) {
			return // (DeepEqual reports it)
		}
		for j, rr := range sec {
			g, w := rr.Header(), wsec[j].Header()
			if g.Name != w.Name && (g.Name != sent || !sameName(g.Name, w.Name, true)) {
				t.Fatalf("owner %q, Unpack's %q (sent %q)", g.Name, w.Name, sent)
			}
			w.Name = g.Name
		}
	}
}

// FuzzUnpackSent: whatever answer unpackSent takes, dns.Msg.Unpack
// unpacks without error to the same message, but for the question's name
// string, which is the name sent and the same name octet for octet; an
// answer whose question is not the name sent is left to Unpack. The name
// sent is the bytes' own question (in random case when the flag says so,
// which unpackSent must then leave to Unpack unless it has no letter).
func FuzzUnpackSent(f *testing.F) {
	corpus(f)
	ok := new(dns.Msg)
	ok.SetReply(query("example.com", dns.TypeA))
	ok.Answer = append(ok.Answer, &dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}})
	ok.SetEdns0(1232, true)
	if b, err := ok.Pack(); err == nil {
		f.Add(b, false)
		f.Add(b[:len(b)-11], false) // the OPT cut off: a count larger than the records
	}
	nx := new(dns.Msg)
	nx.SetRcode(query("gone.example", dns.TypeAAAA), dns.RcodeNameError)
	nx.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300}, Ns: "ns.example.", Mbox: "host.example.", Serial: 1, Minttl: 60}}
	nx.Answer = []dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: "gone.example.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("2001:db8::1")}}
	nx.SetEdns0(1232, false)
	if b, err := nx.Pack(); err == nil {
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, wire []byte, randomCase bool) {
		sent := sentQuery{nq: 1, question: dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
		want := new(dns.Msg)
		werr := want.Unpack(wire)
		if werr == nil && len(want.Question) == 1 {
			sent.question = want.Question[0]
			if randomCase {
				sent.question.Name = randomizeCase(sent.question.Name)
			}
		}
		got, ok := unpackSent(sent, wire)
		if !ok {
			return
		}
		if werr != nil {
			t.Fatalf("unpackSent took what Unpack refuses (%v): %v", werr, got)
		}
		if len(got.Question) != 1 || got.Question[0].Name != sent.question.Name || !sameName(want.Question[0].Name, sent.question.Name, true) {
			t.Fatalf("question %v, Unpack's %v, sent %v", got.Question, want.Question, sent.question)
		}
		want.Question[0].Name = got.Question[0].Name
		sameOwners(t, got, want, sent.question.Name)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("unpackSent:\n%v\nUnpack:\n%v", got, want)
		}
	})
}

// FuzzUnpackName: unpackName reads what dns.UnpackDomainName reads, to
// the same string and offset, and refuses what it refuses; names that
// share an arena keep their strings (a name unpacked after another,
// the arena grown or not, leaves the first as it was).
func FuzzUnpackName(f *testing.F) {
	f.Add([]byte("\x01a\x07example\x00\xc0\x00\xc0\x02"), 0, 6)
	f.Add([]byte("\x03a.b\x02\x00\xff\x00\xc0\x00"), 0, 5)
	f.Add([]byte("\xc0\x00"), 0, 0)
	f.Add([]byte("\x40a\x00"), 0, 0)
	f.Fuzz(func(t *testing.T, wire []byte, off1, off2 int) {
		if off1 < 0 || off1 > len(wire) || off2 < 0 || off2 > len(wire) {
			return
		}
		var room [8]byte
		arena := room[:0]
		var names []string
		for _, off := range []int{off1, off2} {
			want, wnext, werr := dns.UnpackDomainName(wire, off)
			got, next, ok := unpackName(wire, off, &arena)
			if ok != (werr == nil) {
				t.Fatalf("at %d: ok %v, UnpackDomainName's error %v", off, ok, werr)
			}
			if !ok {
				continue
			}
			if got != want || next != wnext {
				t.Fatalf("at %d: %q to %d, UnpackDomainName's %q to %d", off, got, next, want, wnext)
			}
			names = append(names, want)
			for i, n := range names[:len(names)-1] {
				if w, _, _ := dns.UnpackDomainName(wire, []int{off1, off2}[i]); n != w {
					t.Fatalf("name %d changed to %q, was %q", i, n, w)
				}
			}
		}
	})
}

// TestAppendQuery: the query written without copying is, octet for
// octet, the one prepare and pack make, padded or not, whatever OPT the
// caller's query had (none, DO, a version, padding already, options that
// take the long way), and the caller's query is left as it was.
func TestAppendQuery(t *testing.T) {
	withOpt := func(m *dns.Msg, do bool, opts ...dns.EDNS0) *dns.Msg {
		m.SetEdns0(4096, do)
		m.IsEdns0().Option = opts
		return m
	}
	cd := query("cd.example", dns.TypeDS)
	cd.CheckingDisabled, cd.AuthenticatedData = true, true
	v1 := withOpt(query("v1.example", dns.TypeA), true)
	v1.IsEdns0().SetVersion(1)
	v1.IsEdns0().SetZ(0x1234)
	extra := query("extra.example", dns.TypeA)
	extra.Extra = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: []byte{192, 0, 2, 1}}}
	optFirst := withOpt(query("optfirst.example", dns.TypeA), false)
	optFirst.Extra = append(optFirst.Extra, extra.Extra[0])
	optOwner := withOpt(query("owner.example", dns.TypeA), true)
	optOwner.IsEdns0().Hdr.Name = "0000." // legal on the wire, wrong for an OPT (RFC 6891 §6.1.2)
	optOwnerSlow := withOpt(query("owner.example", dns.TypeA), true, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
	optOwnerSlow.IsEdns0().Hdr.Name = "0000."
	cases := map[string]*dns.Msg{
		"no OPT":         query("example.com", dns.TypeA),
		"DO":             withOpt(query("do.example.com", dns.TypeAAAA), true),
		"padding in":     withOpt(query("p.example", dns.TypeA), false, &dns.EDNS0_PADDING{Padding: make([]byte, 17)}),
		"cookie":         withOpt(query("c.example", dns.TypeA), true, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}),
		"CD AD":          cd,
		"version and Z":  v1,
		"other extra":    extra,
		"OPT not last":   optFirst,
		"root":           query(".", dns.TypeNS),
		"escaped":        query(`a\.b\032c.example`, dns.TypeTXT),
		"long name":      query(strings.Repeat(strings.Repeat("x", 63)+".", 3)+strings.Repeat("y", 61), dns.TypeA),
		"OPT not root":   optOwner,
		"OPT not root 2": optOwnerSlow,
		"non-INET class": {Question: []dns.Question{{Name: "version.bind.", Qtype: dns.TypeTXT, Qclass: dns.ClassCHAOS}}},
	}
	for n := 1; n <= 130; n++ { // every padding length
		cases["len"+strings.Repeat("a", n)] = query(strings.Repeat("a", min(n, 63))+".x"+strings.Repeat(".b", n/2), dns.TypeA)
	}
	for name, q := range cases {
		for _, pad := range []bool{false, true} {
			before := q.String()
			want, err := pack(prepare(q, 0xBEEF, pad))
			if err != nil {
				t.Fatal(err)
			}
			for _, dst := range [][]byte{nil, make([]byte, 2, 600), make([]byte, 2, 20)} {
				got, err := appendQuery(dst, q, 0xBEEF, pad)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(got) != len(dst)+len(want) || string(got[len(dst):]) != string(want) {
					t.Errorf("%s (pad %v, room %d):\n got %x\nwant %x", name, pad, cap(dst), got[len(dst):], want)
				}
				if m := new(dns.Msg); m.Unpack(got[len(dst):]) != nil || m.IsEdns0() == nil || m.IsEdns0().Hdr.Name != "." {
					t.Errorf("%s (pad %v): the OPT sent is not owned by the root: %x", name, pad, got[len(dst):])
				}
			}
			if q.String() != before {
				t.Errorf("%s: the caller's query changed:\n%s\n%s", name, before, q.String())
			}
		}
	}
}

// FuzzAppendQuery: for any one-question message shaped as a query (no
// records but an OPT), appendQuery writes what prepare and pack write, a
// query padded to an exact multiple of padBlock. Other messages are only
// run through it: for records a query never carries miekg's Len (which
// prepare pads by) is off for some types (RRSIG), and its Copy for others
// (an unknown type's rdata).
func FuzzAppendQuery(f *testing.F) {
	corpus(f)
	f.Fuzz(func(t *testing.T, wire []byte, pad bool) {
		q := new(dns.Msg)
		if q.Unpack(wire) != nil || len(q.Question) != 1 {
			return
		}
		want, werr := pack(prepare(q, 7, pad))
		got, gerr := appendQuery(make([]byte, 2, 512), q, 7, pad)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: %v / %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if len(q.Answer)+len(q.Ns) != 0 || len(q.Extra) > 1 || len(q.Extra) == 1 && q.IsEdns0() == nil {
			return
		}
		if pad && (len(got)-2)%padBlock != 0 {
			t.Fatalf("padded query of %d octets", len(got)-2)
		}
		if string(got[2:]) != string(want) {
			t.Fatalf("\n got %x\nwant %x", got[2:], want)
		}
		if m := new(dns.Msg); m.Unpack(got[2:]) != nil || m.Id != 7 || m.Response || (paddingOf(m) >= 0) != pad {
			t.Fatalf("query %x does not unpack as one", got[2:])
		}
	})
}

// TestTrimPadding: a padded answer loses its Padding option before
// unpacking, the rest of it kept; answers it cannot or need not trim are
// left alone.
func TestTrimPadding(t *testing.T) {
	r := new(dns.Msg)
	r.SetRcode(query("example.com", dns.TypeA), dns.RcodeNameError)
	soa, _ := dns.NewRR("example.com. 60 IN SOA ns.example.com. h.example.com. 1 2 3 4 5")
	r.Ns = []dns.RR{soa}
	r.SetEdns0(1232, true)
	opt := r.IsEdns0()
	opt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: 3, ExtraText: "x"}, &dns.EDNS0_PADDING{Padding: make([]byte, 300)}}
	padded, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	opt.Option = opt.Option[:1]
	want, _ := r.Pack()
	if got := trimPadding(padded); string(got) != string(want) {
		t.Errorf("trimmed:\n got %x\nwant %x", got, want)
	}
	for _, b := range [][]byte{want, {1, 2, 3}, nil, padded[:len(padded)-1]} {
		c := string(b)
		if got := trimPadding(b); string(got) != c || string(b) != c {
			t.Errorf("%x changed to %x", c, got)
		}
	}
}

// FuzzTrimPadding: whatever the bytes, a message that unpacks unpacks to
// the same after trimPadding, padding stripped from both.
func FuzzTrimPadding(f *testing.F) {
	corpus(f)
	f.Fuzz(func(t *testing.T, wire []byte, _ bool) {
		var a, b dns.Msg
		if a.Unpack(wire) != nil {
			trimPadding(wire) // must not panic
			return
		}
		if err := b.Unpack(trimPadding(wire)); err != nil {
			t.Fatalf("unpacks no more once trimmed: %v", err)
		}
		stripPadding(&a)
		stripPadding(&b)
		if a.String() != b.String() {
			t.Fatalf("trimmed differs:\n%s\n%s", &a, &b)
		}
	})
}
