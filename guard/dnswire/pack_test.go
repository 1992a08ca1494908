package dnswire

import (
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// storedMsg is wire read by miekg/dns as FromMsg's input: one question,
// no OPT, a 4-bit rcode; nil if miekg cannot read it so.
func storedMsg(wire []byte) *dns.Msg {
	m := new(dns.Msg)
	if m.Unpack(wire) != nil || len(m.Question) != 1 {
		return nil
	}
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	m.Rcode &= 0xF
	m.Compress = true
	return m
}

// sameAsPack fails unless appendStored's octets read back (miekg/dns) as
// the message m.Pack makes of m.
func sameAsPack(t *testing.T, m *dns.Msg, w []byte) {
	t.Helper()
	p, err := m.Pack()
	if err != nil {
		t.Fatalf("appendStored wrote what Pack refuses (%v): %v", err, m)
	}
	got, want := new(dns.Msg), new(dns.Msg)
	if err := got.Unpack(w); err != nil {
		t.Fatalf("appendStored's octets do not unpack: %v\n%x", err, w)
	}
	if err := want.Unpack(p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("appendStored:\n%v\nPack:\n%v", got, want)
	}
	if _, err := FromWire(w); err != nil {
		t.Fatalf("FromWire: %v", err)
	}
}

// TestAppendStored: the stored replies of every day are written by
// appendStored (the message Pack makes, compressed: no longer than
// Pack's), anything else is left to Pack.
func TestAppendStored(t *testing.T) {
	for _, c := range []struct {
		name    string
		q       string
		rcode   int
		records []string // answer; "ns:" authority; "ar:" additional
		written bool
	}{
		{"NXDOMAIN with SOA", "u0000001.miss.bench.", dns.RcodeNameError, []string{"ns:miss.bench. 3600 IN SOA ns.miss.bench. host.miss.bench. 1 3600 600 86400 3600"}, true},
		{"addresses", "a.example.", 0, []string{"a.example. 60 IN A 192.0.2.1", "a.example. 60 IN A 192.0.2.2"}, true},
		{"CNAME chain", "www.example.", 0, []string{"www.example. 60 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN CNAME e1.cdn.example.net.", "e1.cdn.example.net. 20 IN AAAA 2001:db8::1"}, true},
		{"glue", "a.example.", 0, []string{"a.example. 60 IN A 192.0.2.1", "ar:ns.example. 60 IN A 192.0.2.53"}, true},
		{"no records", "a.example.", 0, nil, true},
		{"case kept", "A.Example.", 0, []string{"A.Example. 60 IN A 192.0.2.1", "a.example. 60 IN A 192.0.2.2"}, true},
		{"MX: Pack's", "a.example.", 0, []string{"a.example. 60 IN MX 10 mx.example."}, false},
		{"escaped name: Pack's", `a\.b.example.`, 0, []string{`a\.b.example. 60 IN A 192.0.2.1`}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(c.q, dns.TypeA)
			m.Response, m.RecursionAvailable, m.Rcode, m.Compress = true, true, c.rcode, true
			for _, s := range c.records {
				sec := &m.Answer
				if rest, ok := strings.CutPrefix(s, "ns:"); ok {
					sec, s = &m.Ns, rest
				} else if rest, ok := strings.CutPrefix(s, "ar:"); ok {
					sec, s = &m.Extra, rest
				}
				rr, err := dns.NewRR(s)
				if err != nil {
					t.Fatal(err)
				}
				*sec = append(*sec, rr)
			}
			w, ok := appendStored(nil, m)
			if ok != c.written {
				t.Fatalf("written %v, want %v", ok, c.written)
			}
			if !ok {
				return
			}
			sameAsPack(t, m, w)
			if p, _ := m.Pack(); len(w) > len(p) {
				t.Errorf("%d octets, Pack's %d", len(w), len(p))
			}
		})
	}
}

// FuzzAppendStored: whatever message appendStored writes reads back as
// the message Pack makes of it.
func FuzzAppendStored(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("u0000001.miss.bench.", dns.TypeA)
	m.Response, m.Rcode = true, dns.RcodeNameError
	soa, _ := dns.NewRR("miss.bench. 3600 IN SOA ns.miss.bench. host.miss.bench. 1 3600 600 86400 3600")
	m.Ns = []dns.RR{soa}
	m.SetEdns0(1232, false)
	for _, rrs := range [][]string{nil, {"u0000001.miss.bench. 60 IN CNAME a.example.", "a.example. 60 IN A 192.0.2.1", "a.example. 60 IN AAAA 2001:db8::1"}} {
		c := m.Copy()
		for _, s := range rrs {
			rr, _ := dns.NewRR(s)
			c.Answer = append(c.Answer, rr)
		}
		c.Compress = true
		if b, err := c.Pack(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		m := storedMsg(wire)
		if m == nil {
			return
		}
		w, ok := appendStored(nil, m)
		if !ok {
			return
		}
		sameAsPack(t, m, w)
	})
}

// BenchmarkFromMsg: a stored NXDOMAIN with its SOA, by FromMsg
// (appendStored) and by miekg's Pack for comparison.
func BenchmarkFromMsg(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("u0000001.miss.bench.", dns.TypeA)
	m.Response, m.RecursionAvailable, m.Rcode = true, true, dns.RcodeNameError
	soa, _ := dns.NewRR("miss.bench. 3600 IN SOA ns.miss.bench. host.miss.bench. 1 3600 600 86400 3600")
	m.Ns = []dns.RR{soa}
	b.Run("FromMsg", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := FromMsg(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Pack", func(b *testing.B) {
		b.ReportAllocs()
		c := *m
		c.Compress = true
		for b.Loop() {
			if _, err := c.Pack(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
