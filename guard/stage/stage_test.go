package stage

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
)

// TestErrorReplyEDEText: whatever text an error carries (an upstream's,
// relayed, with the cache's "cached error: " before it), a device is sent
// printable ASCII of at most 128 octets.
func TestErrorReplyEDEText(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Raw: raw, Q: q}
	text := "cached error: upstream answered SERVFAIL: \x1b[2J\r\n" + strings.Repeat("y", 200)
	r := ErrorReply(req, Fail(dnswire.EDECachedError, text, nil))
	out := new(dns.Msg)
	if err := out.Unpack(dnswire.AppendResponse(nil, &q, r, 1232)); err != nil {
		t.Fatal(err)
	}
	var got *dns.EDNS0_EDE
	for _, o := range out.IsEdns0().Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			got = e
		}
	}
	if got == nil || got.InfoCode != dnswire.EDECachedError {
		t.Fatalf("EDE %v", got)
	}
	if len(got.ExtraText) != dnswire.MaxEDEText || strings.ContainsFunc(got.ExtraText, func(c rune) bool { return c < ' ' || c > '~' }) {
		t.Errorf("EDE text %q (%d octets)", got.ExtraText, len(got.ExtraText))
	}
	if !strings.HasPrefix(got.ExtraText, "cached error: upstream answered SERVFAIL: ?[2J??yyy") {
		t.Errorf("EDE text %q", got.ExtraText)
	}
}

// TestChain: stages wrap in list order, the first outermost; nil entries
// are skipped; a query the innermost stage passes on fails with SERVFAIL
// naming that stage.
func TestChain(t *testing.T) {
	var trace []string
	mark := func(name string, answer bool) Stage {
		return Func(name, func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, req *Request) (*dnswire.Reply, error) {
				trace = append(trace, name)
				if answer {
					return Synth(req, dns.RcodeSuccess, nil, nil)
				}
				return next.ServeDNS(ctx, req)
			})
		})
	}
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	raw, _ := m.Pack()
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Raw: raw, Q: q}

	stages := []Stage{mark("outer", false), nil, mark("middle", false), mark("inner", true), mark("never", true)}
	if got := strings.Join(Names(stages), " "); got != "outer middle inner never" {
		t.Errorf("Names %q", got)
	}
	if _, err := Chain(stages...).ServeDNS(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(trace, " "); got != "outer middle inner" {
		t.Errorf("order %q, want outer middle inner", got)
	}

	trace = nil
	_, err = Chain(mark("a", false), mark("last", false)).ServeDNS(context.Background(), req)
	var se *Error
	if !errors.As(err, &se) || se.Rcode != dns.RcodeServerFailure || !strings.Contains(err.Error(), "last") {
		t.Errorf("passed on by the innermost: %v", err)
	}
	if got := strings.Join(trace, " "); got != "a last" {
		t.Errorf("order %q", got)
	}

	// Answer is innermost: it never calls what lies past it.
	h := Chain(mark("x", false), Answer("stub", HandlerFunc(func(ctx context.Context, req *Request) (*dnswire.Reply, error) {
		return Synth(req, dns.RcodeNameError, nil, nil)
	})))
	r, err := h.ServeDNS(context.Background(), req)
	if err != nil || r.Rcode() != dns.RcodeNameError {
		t.Errorf("Answer: %v %v", r, err)
	}
}
