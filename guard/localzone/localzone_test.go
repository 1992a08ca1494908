package localzone

import (
	"context"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// request builds a stage request for name (presentation form, escapes
// allowed) and type.
func request(t *testing.T, name string, qtype uint16) *stage.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &stage.Request{Raw: raw, Q: q}
}

// serve runs req through h and reports whether next was reached.
func serve(t *testing.T, s stage.Stage, req *stage.Request) (*dns.Msg, bool) {
	t.Helper()
	forwarded := false
	h := s.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		forwarded = true
		return stage.Synth(req, dns.RcodeSuccess, nil, nil)
	}))
	r, err := h.ServeDNS(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if forwarded {
		return nil, true
	}
	var got dns.Msg
	if err := got.Unpack(r.Msg); err != nil {
		t.Fatal(err)
	}
	return &got, false
}

func TestStage(t *testing.T) {
	tests := []struct {
		name      string
		qtype     uint16
		forwarded bool
		rcode     int
		answer    []string // records expected in the answer, in order
		soa       string   // the SOA expected in the authority section ("" for none)
	}{
		// Canaries: NXDOMAIN, the apex too.
		{name: "use-application-dns.net.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "use-application-dns.net."},
		{name: "USE-Application-DNS.net.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError, soa: "use-application-dns.net."},
		{name: "mask.icloud.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "mask.icloud.com."},
		{name: "mask-h2.icloud.com.", qtype: dns.TypeHTTPS, rcode: dns.RcodeNameError, soa: "mask-h2.icloud.com."},
		{name: "x.mask.icloud.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "mask.icloud.com."},
		// RFC 9462: NODATA everywhere.
		{name: "_dns.resolver.arpa.", qtype: dns.TypeSVCB, rcode: dns.RcodeSuccess, soa: "resolver.arpa."},
		{name: "resolver.arpa.", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, soa: "resolver.arpa."},
		// RFC 6761 §6.3: localhost and every name below it.
		{name: "localhost.", qtype: dns.TypeA, answer: []string{"localhost.\t3600\tIN\tA\t127.0.0.1"}},
		{name: "LocalHost.", qtype: dns.TypeAAAA, answer: []string{"localhost.\t3600\tIN\tAAAA\t::1"}},
		{name: "db.app.localhost.", qtype: dns.TypeA, answer: []string{"db.app.localhost.\t3600\tIN\tA\t127.0.0.1"}},
		{name: "x.localhost.", qtype: dns.TypeANY, answer: []string{"x.localhost.\t3600\tIN\tA\t127.0.0.1", "x.localhost.\t3600\tIN\tAAAA\t::1"}},
		{name: "x.localhost.", qtype: dns.TypeMX, soa: "localhost."},
		{name: "localhost.", qtype: dns.TypeSOA, answer: []string{"localhost.\t3600\tIN\tSOA\tlocalhost. nobody.invalid. 1 3600 1200 604800 3600"}},
		// RFC 6762: mDNS names never go to a unicast resolver.
		{name: "printer.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "local."},
		{name: "_ipp._tcp.local.", qtype: dns.TypePTR, rcode: dns.RcodeNameError, soa: "local."},
		{name: "My\\032Printer.LOCAL.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError, soa: "local."},
		{name: "local.", qtype: dns.TypeA, soa: "local."}, // the apex exists, empty
		{name: "local.", qtype: dns.TypeSOA, answer: []string{"local.\t3600\tIN\tSOA\tlocalhost. nobody.invalid. 1 3600 1200 604800 3600"}},
		// RFC 7686 and RFC 6761 §6.4.
		{name: "abc.onion.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "onion."},
		{name: "x.invalid.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: "invalid."},
		// Not ours: on the wire, a label is compared whole, as octets.
		{name: "icloud.com.", qtype: dns.TypeA, forwarded: true},
		{name: "notmask.icloud.com.", qtype: dns.TypeA, forwarded: true},
		{name: "application-dns.net.", qtype: dns.TypeA, forwarded: true},
		{name: "arpa.", qtype: dns.TypeSOA, forwarded: true},
		{name: "notlocalhost.", qtype: dns.TypeA, forwarded: true},
		{name: "localhost.example.", qtype: dns.TypeA, forwarded: true},
		{name: "local.example.", qtype: dns.TypeA, forwarded: true},
		{name: "my\\.local.", qtype: dns.TypeA, forwarded: true},       // one label "my.local"
		{name: "x.local\\032.", qtype: dns.TypeA, forwarded: true},     // TLD "local "
		{name: "x.localhost\\000.", qtype: dns.TypeA, forwarded: true}, // TLD "localhost\0"
		{name: "onion.example.", qtype: dns.TypeA, forwarded: true},
		{name: "lan.", qtype: dns.TypeA, forwarded: true}, // LAN names are Local's
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			got, forwarded := serve(t, NewStatic(), request(t, tc.name, tc.qtype))
			if forwarded != tc.forwarded {
				t.Fatalf("forwarded = %v", forwarded)
			}
			if tc.forwarded {
				return
			}
			checkAnswer(t, got, tc.rcode, tc.answer, tc.soa)
		})
	}
}

func checkAnswer(t *testing.T, got *dns.Msg, rcode int, answer []string, soa string) {
	t.Helper()
	if got.Rcode != rcode {
		t.Errorf("rcode %s, want %s", dns.RcodeToString[got.Rcode], dns.RcodeToString[rcode])
	}
	if len(got.Answer) != len(answer) {
		t.Fatalf("answer %v, want %q", got.Answer, answer)
	}
	for i, rr := range got.Answer {
		if rr.String() != answer[i] {
			t.Errorf("answer %d: %q, want %q", i, rr.String(), answer[i])
		}
	}
	switch {
	case soa == "" && len(got.Ns) != 0:
		t.Errorf("authority %v, want none", got.Ns)
	case soa != "" && (len(got.Ns) != 1 || !sameName(got.Ns[0].Header().Name, soa) || got.Ns[0].Header().Rrtype != dns.TypeSOA):
		t.Errorf("authority %v, want the SOA of %s", got.Ns, soa)
	}
}

// TestStageOtherOpcodes: only QUERY is answered here.
func TestStageOtherOpcodes(t *testing.T) {
	req := request(t, "x.local.", dns.TypeA)
	req.Q.Opcode = dns.OpcodeNotify
	if _, forwarded := serve(t, NewStatic(), req); !forwarded {
		t.Error("a NOTIFY for x.local. was answered as a query")
	}
}

// BenchmarkStageMiss is the cost Stage adds to every query it does not
// answer (cache hits included): it must not allocate.
func BenchmarkStageMiss(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("www.Some-Example-Name.co.uk.", dns.TypeA)
	raw, _ := m.Pack()
	q, _ := dnswire.ParseQuery(raw)
	req := &stage.Request{Raw: raw, Q: q}
	next := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) { return nil, nil })
	h := NewStatic().Wrap(next)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeDNS(ctx, req)
	}
}

// BenchmarkLocalMiss is the cost Local adds to a cache miss for a
// public name.
func BenchmarkLocalMiss(b *testing.B) {
	l, err := New(Config{Domains: []string{"lan", "home"}})
	if err != nil {
		b.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("www.Some-Example-Name.co.uk.", dns.TypeA)
	raw, _ := m.Pack()
	q, _ := dnswire.ParseQuery(raw)
	req := &stage.Request{Raw: raw, Q: q}
	h := l.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) { return nil, nil }))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeDNS(ctx, req)
	}
}
