package stage

import (
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
