package dnssec

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// referenceSecure is the fuzz oracle: every RRset of the answer (and every
// NSEC/NSEC3 of the authority) must carry an RRSIG that miekg/dns's Verify
// accepts with a key of the signed world, valid at testNow.
func referenceSecure(w *world, m *dns.Msg) bool {
	var keys []*dns.DNSKEY
	for _, z := range w.zones {
		if !z.unsigned {
			keys = append(keys, z.ksk, z.zsk)
		}
	}
	check := func(sec []dns.RR, only func(uint16) bool) bool {
		sets := collect(sec)
		for _, s := range sets.sets() {
			if !only(s.typ) {
				continue
			}
			ok := false
			for _, sig := range s.sigs {
				for _, k := range keys {
					if sig.ValidityPeriod(testNow) && sig.Verify(k, s.rrs) == nil {
						ok = true
					}
				}
			}
			if !ok {
				return false
			}
		}
		return true
	}
	synth := map[string]bool{}
	for _, rr := range m.Answer {
		if d, ok := rr.(*dns.DNAME); ok && len(d.Target) > 0 {
			synth[canon(d.Hdr.Name)] = true
		}
	}
	answerOK := check(m.Answer, func(t uint16) bool { return t != dns.TypeCNAME || len(synth) == 0 })
	return answerOK && check(m.Ns, func(t uint16) bool { return t == dns.TypeNSEC || t == dns.TypeNSEC3 })
}

func FuzzValidate(f *testing.F) {
	w := testWorld(f, nil)
	for _, q := range []struct {
		name string
		t    uint16
	}{
		{"www.example.", dns.TypeA}, {"nope.example.", dns.TypeA}, {"www.example.", dns.TypeTXT},
		{"a.wild.example.", dns.TypeA}, {"out.example.", dns.TypeA}, {"www.d.example.", dns.TypeA},
		{"nope.strict3.", dns.TypeA}, {"a.wild.n3.", dns.TypeA}, {"www.n3.", dns.TypeTXT},
		{"www.insecure.example.", dns.TypeA}, {"nope.iter.", dns.TypeA}, {"ent.example.", dns.TypeA},
	} {
		b, err := ask(w, q.name, q.t).Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	v, err := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		res := v.Validate(context.Background(), m)
		if res.Security != Secure {
			return
		}
		if len(m.Question) != 1 {
			t.Fatalf("secure without one question: %v", m)
		}
		if !referenceSecure(w, m) {
			t.Fatalf("secure, but the reference check rejects it: %v", m)
		}
	})
}

// FuzzChain replaces the upstream's answer to one of the validator's own
// DS/DNSKEY queries with arbitrary data (its question kept, so the data
// is looked at): a secure answer must stay secure or become bogus or
// indeterminate, never insecure (no downgrade without a key), and the
// validator must not panic.
func FuzzChain(f *testing.F) {
	w := testWorld(f, nil)
	for _, q := range []struct {
		name string
		t    uint16
	}{
		{"example.", dns.TypeDS}, {"example.", dns.TypeDNSKEY}, {".", dns.TypeDNSKEY},
		{"insecure.example.", dns.TypeDS}, {"www.example.", dns.TypeDS}, {"n3.", dns.TypeDS},
		{"unsigned.n3.", dns.TypeDS}, {"n3.", dns.TypeDNSKEY},
	} {
		b, err := ask(w, q.name, q.t).Pack()
		if err != nil {
			f.Fatal(err)
		}
		for i := range uint8(4) {
			f.Add(i, b)
		}
	}
	answers := []*dns.Msg{ask(w, "www.example.", dns.TypeA), ask(w, "www.n3.", dns.TypeA), ask(w, "nope.example.", dns.TypeA)}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		n := 0
		ex := exchangeFunc(func(q *dns.Msg) *dns.Msg {
			resp := w.query(q.Question[0].Name, q.Question[0].Qtype)
			if n == int(which%6) {
				resp = m.Copy()
				resp.Question = q.Question
				resp.Response = true
			}
			n++
			return resp
		})
		v, err := New(ex, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
		if err != nil {
			t.Fatal(err)
		}
		res := v.Validate(context.Background(), answers[int(which/6)%len(answers)].Copy())
		if res.Security == Insecure {
			t.Fatalf("a signed answer turned insecure by the chain data: %v", res)
		}
	})
}

type exchangeFunc func(q *dns.Msg) *dns.Msg

func (f exchangeFunc) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) { return f(q), nil }
