package forward

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/guard/validate"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// TestVerdictOff: with validation off (or CD=1) AD is cleared
// whatever the upstream said.
func TestVerdictOff(t *testing.T) {
	for _, cd := range []bool{false, true} {
		q := new(dns.Msg)
		q.SetQuestion("www.example.", dns.TypeA)
		q.CheckingDisabled = cd
		resp := new(dns.Msg)
		resp.SetReply(q)
		resp.AuthenticatedData = true
		out, err := Verdict(context.Background(), nil, q, resp)
		if err != nil || out.AuthenticatedData {
			t.Errorf("CD=%v: AD passed on (%v)", cd, err)
		}
	}
	if m := withDO(new(dns.Msg).SetQuestion("a.", dns.TypeA)); m.IsEdns0() == nil || !m.IsEdns0().Do() {
		t.Error("withDO")
	}
}

// TestUpstreamsTerms: the terms travel with each query. Under strict
// terms a question goes to a cleartext upstream with 0x20 (the name in
// mixed case, even with randomize_case off) and the answer keeps only
// what a stub needs (no authority, no additional section); under lenient
// terms the question goes in the case it was asked and the answer keeps
// the zone's NS and their addresses.
func TestUpstreamsTerms(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		mu.Lock()
		asked = append(asked, q.Question[0].Name)
		mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(q) // the question echoed in the case it came
		name := q.Question[0].Name
		a, _ := dns.NewRR(name + " 300 IN A 192.0.2.7")
		ns, _ := dns.NewRR("example.test. 300 IN NS ns.example.test.")
		glue, _ := dns.NewRR("ns.example.test. 300 IN A 192.0.2.53")
		m.Answer, m.Ns, m.Extra = []dns.RR{a}, []dns.RR{ns}, []dns.RR{glue}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	pool, err := upstream.NewPool([]string{"udp://" + pc.LocalAddr().String()}, upstream.Options{Timeout: 2 * time.Second, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	v := validate.New(policy.Answers{})
	u := &Upstreams{Pool: pool, Shield: v, Check: func(q, resp *dns.Msg) (*dns.Msg, error) {
		return v.Check(q.Question[0], resp, false)
	}}
	const name = "www.some-long-name.example.test."
	for _, terms := range []policy.Terms{policy.Lenient, policy.Strict} {
		mixed := 0
		for range 8 {
			q := new(dns.Msg)
			q.SetQuestion(name, dns.TypeA)
			resp, err := u.Exchange(context.Background(), q, terms)
			if err != nil {
				t.Fatalf("%v: %v", terms, err)
			}
			if len(resp.Answer) != 1 || resp.Question[0].Name != name {
				t.Fatalf("%v: answer %v", terms, resp)
			}
			if strict := terms == policy.Strict; strict != (len(resp.Ns) == 0 && len(resp.Extra) == 0) {
				t.Errorf("%v: authority %v additional %v", terms, resp.Ns, resp.Extra)
			}
			mu.Lock()
			if last := asked[len(asked)-1]; last != name {
				mixed++
			}
			mu.Unlock()
		}
		if terms == policy.Lenient && mixed != 0 {
			t.Errorf("lenient: %d of 8 questions sent with 0x20", mixed)
		}
		if terms == policy.Strict && mixed != 8 {
			t.Errorf("strict: %d of 8 questions sent with 0x20", mixed)
		}
	}
}
