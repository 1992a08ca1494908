package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func query(name string, qtype uint16, edns bool, do bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xBEEF
	if edns {
		m.SetEdns0(1400, do)
	}
	return m
}

func TestParseQuery(t *testing.T) {
	twoOPT := query("a.example.", dns.TypeA, true, false)
	twoOPT.Extra = append(twoOPT.Extra, twoOPT.Extra[0])
	v1 := query("a.example.", dns.TypeA, true, true)
	v1.IsEdns0().SetVersion(1)
	padded := query("a.example.", dns.TypeA, true, false)
	padded.IsEdns0().Option = append(padded.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 9)}, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
	resp := query("a.example.", dns.TypeA, false, false)
	resp.Response = true
	noq := new(dns.Msg)
	notify := query("a.example.", dns.TypeSOA, false, false)
	notify.Opcode = dns.OpcodeNotify

	tests := []struct {
		name    string
		msg     []byte
		wantErr error
		check   func(t *testing.T, q Query)
	}{
		{"plain", pack(t, query("WwW.Example.COM.", dns.TypeAAAA, false, false)), nil, func(t *testing.T, q Query) {
			if q.ID != 0xBEEF || q.Type != dns.TypeAAAA || q.Class != dns.ClassINET || q.EDNS.Present || !q.RD {
				t.Errorf("got %+v", q)
			}
			if got := string(q.LowerName(nil)); got != "\x03www\x07example\x03com\x00" {
				t.Errorf("lower name %q", got)
			}
			if NameString(q.Name) != "www.example.com." {
				t.Errorf("NameString = %q", NameString(q.Name))
			}
		}},
		{"edns do", pack(t, query("a.example.", dns.TypeA, true, true)), nil, func(t *testing.T, q Query) {
			if !q.EDNS.Present || !q.EDNS.DO || q.EDNS.UDPSize != 1400 || q.EDNS.Version != 0 {
				t.Errorf("edns %+v", q.EDNS)
			}
		}},
		{"edns version 1", pack(t, v1), nil, func(t *testing.T, q Query) {
			if q.EDNS.Version != 1 {
				t.Errorf("version %d", q.EDNS.Version)
			}
		}},
		{"unknown option ignored, padding seen", pack(t, padded), nil, func(t *testing.T, q Query) {
			if !q.EDNS.Padding {
				t.Error("padding not seen")
			}
		}},
		{"opcode notify", pack(t, notify), nil, func(t *testing.T, q Query) {
			if q.Opcode != dns.OpcodeNotify {
				t.Errorf("opcode %d", q.Opcode)
			}
		}},
		{"two OPT", pack(t, twoOPT), ErrManyOPT, nil},
		{"response", pack(t, resp), ErrNotQuery, nil},
		{"no question", pack(t, noq), ErrQuestions, nil},
		{"short", []byte{1, 2, 3}, ErrShort, nil},
		{"truncated name", []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', 'b'}, ErrName, nil},
		{"compressed question", []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, ErrName, nil},
		{"trailing garbage record", append(pack(t, query("a.", 1, false, false))[:0:0], []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0}...), ErrTrailing, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseQuery(tt.msg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, q)
			}
		})
	}
}

func reply(t testing.TB, name string, n int, ttl uint32) *Reply {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Response = true
	for i := 0; i < n; i++ {
		rr, err := dns.NewRR(name + " 300 IN A 192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		rr.Header().Ttl = ttl
		rr.(*dns.A).A[3] = byte(i)
		m.Answer = append(m.Answer, rr)
	}
	m.SetEdns0(4096, false) // must be dropped from stored form
	r, err := FromMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAppendResponse(t *testing.T) {
	stored := reply(t, "www.example.com.", 2, 300)
	storedCopy := append([]byte(nil), stored.Msg...)

	t.Run("no edns: id, case, aged ttl, no OPT", func(t *testing.T) {
		raw := pack(t, query("WWW.example.Com.", dns.TypeA, false, false))
		q, _ := ParseQuery(raw)
		out := AppendResponse(nil, &q, stored.With(100, 0, &EDE{Code: EDEStaleAnswer}), SizeLimit(&q, false))
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatal(err)
		}
		if m.Id != 0xBEEF || m.Question[0].Name != "WWW.example.Com." || !m.Response || !m.RecursionDesired || !m.RecursionAvailable {
			t.Errorf("header/question: %v", m)
		}
		if m.IsEdns0() != nil {
			t.Error("OPT in an answer to a query without one")
		}
		if len(m.Answer) != 2 || m.Answer[0].Header().Ttl != 200 {
			t.Errorf("answer %v", m.Answer)
		}
		if !bytes.Equal(stored.Msg, storedCopy) {
			t.Error("stored reply was modified")
		}
	})
	t.Run("edns: OPT with EDE and DO echoed", func(t *testing.T) {
		raw := pack(t, query("www.example.com.", dns.TypeA, true, true))
		q, _ := ParseQuery(raw)
		out := AppendResponse(nil, &q, stored.With(0, 30, &EDE{Code: EDEStaleAnswer, Text: "stale"}), SizeLimit(&q, false))
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatal(err)
		}
		opt := m.IsEdns0()
		if opt == nil || !opt.Do() || opt.UDPSize() != OurEDNSSize {
			t.Fatalf("opt %v", opt)
		}
		ede, ok := opt.Option[0].(*dns.EDNS0_EDE)
		if !ok || ede.InfoCode != EDEStaleAnswer || ede.ExtraText != "stale" {
			t.Errorf("ede %v", opt.Option)
		}
		if m.Answer[0].Header().Ttl != 30 {
			t.Errorf("fixed ttl not applied: %d", m.Answer[0].Header().Ttl)
		}
	})
	t.Run("badvers", func(t *testing.T) {
		raw := pack(t, query("www.example.com.", dns.TypeA, true, false))
		q, _ := ParseQuery(raw)
		m := new(dns.Msg)
		m.SetQuestion("www.example.com.", dns.TypeA)
		m.Rcode = dns.RcodeBadVers
		r, err := FromMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		out := AppendResponse(nil, &q, r, 512)
		got := new(dns.Msg)
		if err := got.Unpack(out); err != nil {
			t.Fatal(err)
		}
		if got.Rcode != dns.RcodeBadVers {
			t.Errorf("rcode %d, want BADVERS", got.Rcode)
		}
	})
	sizes := []struct {
		name    string
		edns    bool
		size    uint16
		tcp     bool
		records int
		wantTC  bool
	}{
		{"512 fits", false, 0, false, 20, false},
		{"over 512 without EDNS truncates", false, 0, false, 40, true},
		{"EDNS 1400 capped at 1232", true, 1400, false, 80, true},
		{"EDNS 1232 fits 60", true, 1232, false, 60, false},
		{"EDNS below 512 treated as 512", true, 100, false, 20, false},
		{"TCP takes it all", false, 0, true, 200, false},
	}
	for _, s := range sizes {
		t.Run(s.name, func(t *testing.T) {
			m := query("www.example.com.", dns.TypeA, false, false)
			if s.edns {
				m.SetEdns0(s.size, false)
			}
			q, err := ParseQuery(pack(t, m))
			if err != nil {
				t.Fatal(err)
			}
			limit := SizeLimit(&q, s.tcp)
			out := AppendResponse(nil, &q, reply(t, "www.example.com.", s.records, 60), limit)
			if len(out) > limit {
				t.Errorf("%d octets over the limit %d", len(out), limit)
			}
			got := new(dns.Msg)
			if err := got.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if got.Truncated != s.wantTC {
				t.Errorf("TC = %v, want %v (len %d)", got.Truncated, s.wantTC, len(out))
			}
			if got.Truncated && (len(got.Answer) != 0 || len(got.Question) != 1) {
				t.Errorf("truncated answer should hold the question only: %v", got)
			}
			if (got.IsEdns0() != nil) != s.edns {
				t.Errorf("OPT presence %v, want %v", got.IsEdns0() != nil, s.edns)
			}
		})
	}
}

func TestAppendError(t *testing.T) {
	raw := pack(t, query("x.example.", dns.TypeA, false, false))
	q, _ := ParseQuery(raw)
	out := AppendError(nil, raw, &q, dns.RcodeFormatError)
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if m.Id != 0xBEEF || m.Rcode != dns.RcodeFormatError || len(m.Question) != 1 || !m.Response {
		t.Errorf("got %v", m)
	}
}

// corpus adds the shared DNS message collection to a fuzz target.
func corpus(f *testing.F) {
	for _, b := range testenv.Messages(8) { // a spread of the 9,774 is plenty for seeding
		f.Add(b)
	}
}

// FuzzParseQuery: never panics; what it accepts, miekg/dns reads the same
// way; an answer built for it is a well-formed message within the limit.
func FuzzParseQuery(f *testing.F) {
	corpus(f)
	f.Add(pack(f, query("a.example.", dns.TypeA, true, true)))
	stored := reply(f, "a.example.", 3, 10)
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuery(b)
		if err != nil {
			out := AppendError(nil, b, nil, dns.RcodeFormatError)
			if len(b) >= HeaderLen && len(out) != HeaderLen {
				t.Fatalf("error answer length %d", len(out))
			}
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err == nil {
			if len(m.Question) != 1 || m.Question[0].Qtype != q.Type || m.Question[0].Qclass != q.Class || m.Id != q.ID {
				t.Fatalf("disagree with miekg: %v vs %+v", m.Question, q)
			}
			if (m.IsEdns0() != nil) != q.EDNS.Present {
				t.Fatalf("EDNS presence disagrees")
			}
		}
		// Answer it with a reply for the same name.
		rm := new(dns.Msg)
		rm.SetQuestion(NameString(q.Name), q.Type)
		rm.Question[0].Qclass = q.Class
		r, err := FromMsg(rm)
		if err != nil {
			return
		}
		// The name round-trips: presentation form packs back to the
		// same octets, and reads as miekg renders the same name.
		if len(r.Msg)-HeaderLen-4 != len(q.Name) || !bytes.Equal(r.Msg[HeaderLen:HeaderLen+len(q.Name)], AppendLower(nil, q.Name)) {
			t.Fatalf("name %q does not round-trip: %x vs %x", NameString(q.Name), r.Msg[HeaderLen:len(r.Msg)-4], q.Name)
		}
		if m.Unpack(b) == nil && !strings.EqualFold(m.Question[0].Name, NameString(q.Name)) {
			t.Fatalf("NameString %q, miekg %q", NameString(q.Name), m.Question[0].Name)
		}
		for _, rep := range []*Reply{r, stored} {
			if rep == stored && !bytes.Equal(AppendLower(nil, q.Name), stored.Msg[HeaderLen:HeaderLen+len("\x01a\x07example\x00")]) {
				continue
			}
			limit := SizeLimit(&q, false)
			out := AppendResponse(nil, &q, rep, limit)
			if len(out) > limit {
				t.Fatalf("answer of %d octets over limit %d", len(out), limit)
			}
			got := new(dns.Msg)
			if err := got.Unpack(out); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if got.Id != q.ID || (got.IsEdns0() != nil) != q.EDNS.Present {
				t.Fatalf("answer id/OPT wrong: %v", got)
			}
		}
	})
}

// wire builds a wire-format name from labels.
func wire(labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

// TestNameString: every octet a label may hold survives presentation form
// and comes back as the same name, and the rendering is miekg/dns's.
func TestNameString(t *testing.T) {
	tests := []struct {
		name []byte
		want string
	}{
		{wire("www", "Example", "com"), "www.example.com."},
		{wire(), "."},
		{wire("a b", "example"), `a\ b.example.`},
		{wire("a(b)", "example"), `a\(b\).example.`},
		{wire(`a"b'c`, "example"), `a\"b\'c.example.`},
		{wire("a;b@c", "example"), `a\;b\@c.example.`},
		{wire(`a\b`, "example"), `a\\b.example.`},
		{wire("a.b", "example"), `a\.b.example.`},
		{wire("a\x00\x7f\xff", "example"), `a\000\127\255.example.`},
		{wire("-_*", "example"), `-_*.example.`},
	}
	for _, tt := range tests {
		got := NameString(tt.name)
		if got != tt.want {
			t.Errorf("NameString(%x) = %q, want %q", tt.name, got, tt.want)
		}
		var buf [256]byte
		n, err := dns.PackDomainName(got, buf[:], 0, nil, false)
		if err != nil || !bytes.Equal(buf[:n], AppendLower(nil, tt.name)) {
			t.Errorf("%q packs to %x (%v), want %x", got, buf[:n], err, AppendLower(nil, tt.name))
		}
		// miekg renders the same name the same way.
		m := new(dns.Msg)
		m.SetQuestion(got, dns.TypeA)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Unpack(b); err != nil || m.Question[0].Name != got {
			t.Errorf("miekg renders %q as %q (%v)", got, m.Question[0].Name, err)
		}
	}
}

func TestCanonicalName(t *testing.T) {
	same := [][2]string{
		{"a.example.", "A.EXAMPLE"},
		{`a\032b.example.`, `a\ b.example.`},
		{`a(b.example.`, `a\(b.example.`},
		{`a\034b.example.`, `a\"b.example.`},
		{`a\046b.example.`, `a\.b.example.`},
		{`a\;b\@c.`, `a\059b\064c.`},
		{`A\092B.`, `a\\b.`},
		{".", ""},
	}
	for _, p := range same {
		if !EqualNames(p[0], p[1]) {
			a, _ := CanonicalName(p[0])
			b, _ := CanonicalName(p[1])
			t.Errorf("%q and %q differ: %x vs %x", p[0], p[1], a, b)
		}
	}
	differ := [][2]string{
		{`a\.b.example.`, `a.b.example.`},
		{`a\032b.example.`, `ab.example.`},
		{"a.example.", "a.example.com."},
		{`\195\169.`, `\195\137.`}, // é vs É in UTF-8: octets, not Unicode case
	}
	for _, p := range differ {
		if EqualNames(p[0], p[1]) {
			t.Errorf("%q and %q compare equal", p[0], p[1])
		}
	}
	if _, err := CanonicalName("a..b."); err == nil {
		t.Error("empty label accepted")
	}
}

// FuzzCanonicalName: the plain names CanonicalName writes directly get
// the wire form dns.PackDomainName makes of them (packCanonical, which
// then must not refuse them); a name declined is left as it was for
// packCanonical.
func FuzzCanonicalName(f *testing.F) {
	for _, s := range []string{"a.example.", "A.Example.", "*.example.", "_dmarc.x-y.example.", "a..b.", ".a.", "a.example",
		strings.Repeat("a", 63) + ".", strings.Repeat("a", 64) + ".", strings.Repeat("abcdefg.", 31) + "a.", `a\.b.`, "a b.", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fast, ok := appendPlainCanonical(nil, name)
		slow, err := packCanonical(name)
		if !ok {
			if len(fast) != 0 {
				t.Fatalf("declined %q but wrote %x", name, fast)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: written %x, PackDomainName refuses it: %v", name, fast, err)
		}
		if string(fast) != slow {
			t.Fatalf("%q: written %x, PackDomainName's %x", name, fast, slow)
		}
		if got, _ := CanonicalName(name); got != slow {
			t.Fatalf("CanonicalName(%q) = %x, want %x", name, got, slow)
		}
	})
}

func BenchmarkCanonicalName(b *testing.B) {
	for _, name := range []string{"u0012345.miss.bench.", `a\032b.example.`} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalName(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestIsSubName(t *testing.T) {
	c := func(s string) string {
		n, err := CanonicalName(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		parent, child string
		want          bool
	}{
		{"example.", "a.example.", true},
		{"example.", "EXAMPLE.", true},
		{".", "a.example.", true},
		{"example.", "aexample.", false},
		{"b.example.", `a\.b.example.`, false}, // one label "a.b" under example.
		{`a\.b.example.`, `x.a\.b.example.`, true},
		{"a.example.", "example.", false},
	}
	for _, tt := range tests {
		if got := IsSubName(c(tt.parent), c(tt.child)); got != tt.want {
			t.Errorf("IsSubName(%q, %q) = %v", tt.parent, tt.child, got)
		}
	}
}

// TestRAOnlyForQuery: recursion is offered for opcode QUERY only, so RA
// is set in answers to QUERY and clear in answers to any other opcode,
// error answers and shaped replies alike.
func TestRAOnlyForQuery(t *testing.T) {
	for _, op := range []int{dns.OpcodeQuery, dns.OpcodeIQuery, dns.OpcodeStatus, 3, dns.OpcodeNotify, dns.OpcodeUpdate, 6, 15} {
		m := query("x.example.", dns.TypeA, false, true)
		m.Opcode = op
		raw := pack(t, m)
		q, err := ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		wantRA := op == dns.OpcodeQuery
		for _, rcode := range []int{dns.RcodeFormatError, dns.RcodeNotImplemented, dns.RcodeServerFailure} {
			for _, qp := range []*Query{&q, nil} {
				out := AppendError(nil, raw, qp, rcode)
				got := new(dns.Msg)
				if err := got.Unpack(out); err != nil {
					t.Fatal(err)
				}
				if got.RecursionAvailable != wantRA || got.Opcode != op || got.Rcode != rcode || !got.RecursionDesired {
					t.Errorf("AppendError opcode %d rcode %d: %v", op, rcode, got)
				}
			}
		}
		rm := new(dns.Msg)
		rm.SetQuestion("x.example.", dns.TypeA)
		rm.Response, rm.RecursionAvailable, rm.Rcode, rm.Opcode = true, true, dns.RcodeNotImplemented, op
		r, err := FromMsg(rm)
		if err != nil {
			t.Fatal(err)
		}
		got := new(dns.Msg)
		if err := got.Unpack(AppendResponse(nil, &q, r, 512)); err != nil {
			t.Fatal(err)
		}
		if got.RecursionAvailable != wantRA {
			t.Errorf("AppendResponse opcode %d: RA %v", op, got.RecursionAvailable)
		}
	}
}

func TestEDEText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain text: ok", "plain text: ok"},
		{"a\x00b\tc\nd\x7fe", "a?b?c?d?e"},
		{"\x1b[2J", "?[2J"},
		{"caf\u00e9", "caf??"},
		{strings.Repeat("y", 129), strings.Repeat("y", 128)},
		{strings.Repeat("\n", 200), strings.Repeat("?", 128)},
	}
	for _, tt := range tests {
		if got := EDEText(tt.in); got != tt.want {
			t.Errorf("EDEText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzFromWire: FromWire never panics, and a message it indexes has one
// TTL offset per record, each inside the message; when miekg/dns reads
// the message too, the offsets hold its records' TTLs, in order. Seeds:
// stored replies with no record, a few (the offsets in the Reply's own
// allocation) and more.
func FuzzFromWire(f *testing.F) {
	for _, n := range []int{0, 1, 4, 5, 9} {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.Response = true
		for i := range n {
			a, _ := dns.NewRR("a.example. 60 IN A 192.0.2.1")
			a.Header().Ttl = uint32(60 + i)
			m.Answer = append(m.Answer, a)
		}
		if n == 0 {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("example. 300 IN SOA ns.example. h.example. 1 2 3 4 300")
			m.Ns = append(m.Ns, soa)
		}
		m.Compress = true
		if b, err := m.Pack(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := FromWire(b)
		if err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
		if len(r.TTLs) != n {
			t.Fatalf("%d TTL offsets for %d records", len(r.TTLs), n)
		}
		for _, o := range r.TTLs {
			if int(o)+4 > len(r.Msg) {
				t.Fatalf("TTL offset %d past the message's %d octets", o, len(r.Msg))
			}
		}
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		rrs := append(append(append([]dns.RR(nil), m.Answer...), m.Ns...), m.Extra...)
		if len(rrs) != n {
			return // (miekg stops early on counts it finds are lies)
		}
		for i, rr := range rrs {
			if got := binary.BigEndian.Uint32(r.Msg[r.TTLs[i]:]); got != rr.Header().Ttl {
				t.Fatalf("record %d: TTL %d at offset %d, miekg reads %d", i, got, r.TTLs[i], rr.Header().Ttl)
			}
		}
	})
}
