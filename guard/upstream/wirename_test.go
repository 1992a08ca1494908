package upstream

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// oddLabels are labels legal on the wire that presentation form escapes
// in more than one way (issue 10 item 0): space, ( ) " ' ; @ \ and a dot
// inside a label.
var oddLabels = []string{"a b", "a(b", "a)b", `a"b`, "a'b", "a;b", "a@b", `a\b`, "a.b", "Q R S"}

// wireName returns the name the cache hands the pool for the labels, in
// the guard's own presentation form (dnswire.NameString).
func wireName(labels ...string) string {
	var w []byte
	for _, l := range labels {
		w = append(w, byte(len(l)))
		w = append(w, l...)
	}
	return dnswire.NameString(append(w, 0))
}

// ddd writes a label for a zone file with every octet but letters and
// digits as \DDD.
func ddd(label string) string {
	var b strings.Builder
	for _, c := range []byte(label) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\%03d", c)
		}
	}
	return b.String()
}

// TestUnboundOddNames: a name with octets that presentation form escapes
// gets unbound's answer on every transport, and its answers always match
// (no mismatch counted). Failed attempts are not asked about: on a loaded
// machine an attempt may time out and be asked again (Failures 1 of 12
// queries over DoT, 4 test binaries at once under SCHED_RR bursts); an
// answer to an odd name that did not match would count a mismatch.
func TestUnboundOddNames(t *testing.T) {
	var records []string
	for i, l := range oddLabels {
		records = append(records, fmt.Sprintf("%s.test. 300 IN A 192.0.2.%d", ddd(l), 100+i))
	}
	ub := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{Records: records})
	for _, u := range []string{ub.URL(), "udp://" + ub.Do53.String(), "tcp://" + ub.Do53.String()} {
		for _, x20 := range []bool{false, true} {
			p := newPool(t, []string{u}, Options{CAPEM: ub.CAPEM, Randomize0x20: x20})
			for i, l := range oddLabels {
				name := wireName(l, "test")
				resp, err := p.Exchange(clientCtx(t), query(name, dns.TypeA), QueryOptions{})
				if err != nil {
					t.Fatalf("%s 0x20=%v %q: %v", u, x20, name, err)
				}
				if got, want := answerA(t, resp), fmt.Sprintf("192.0.2.%d", 100+i); got != want {
					t.Errorf("%s %q: answer %s, want %s", u, name, got, want)
				}
				if resp.Question[0].Name != name {
					t.Errorf("%s: question %q, asked %q", u, resp.Question[0].Name, name)
				}
			}
			if st := p.Stats()[0]; !st.Up || st.Mismatches != 0 {
				t.Errorf("%s 0x20=%v: %+v", u, x20, st)
			}
		}
	}
}

// TestSameName: names compare as wire octets, whatever the escapes.
func TestSameName(t *testing.T) {
	cases := []struct {
		a, b  string
		exact bool
		want  bool
	}{
		{`a\032b.example.`, `a\ b.example.`, false, true},
		{`a\032b.example.`, `A\ b.example.`, false, true},
		{`a\032b.example.`, `A\ b.example.`, true, false},
		{`a\032b.example.`, `a\ b.example.`, true, true},
		{`a(b.example.`, `a\(b.example.`, true, true},
		{`a"b.example.`, `a\"b.example.`, true, true},
		{`a;b.example.`, `a\;b.example.`, true, true},
		{`a@b.example.`, `a\@b.example.`, true, true},
		{`a\\b.example.`, `a\092b.example.`, true, true},
		{`a\.b.example.`, `a.b.example.`, false, false}, // one label, not two
		{`a\065.example.`, `aa.example.`, false, true},
		{`a\065.example.`, `aa.example.`, true, false},
		{`a\065.example.`, `aA.example.`, true, true},
		{`example.`, `example.com.`, false, false},
		{`.`, `.`, true, true},
		{`a..b.`, `a..b.`, false, true},  // equal strings, whatever they are
		{`a..b.`, `A..b.`, false, false}, // does not pack
	}
	for _, c := range cases {
		if got := sameName(c.a, c.b, c.exact); got != c.want {
			t.Errorf("sameName(%q, %q, exact %v) = %v", c.a, c.b, c.exact, got)
		}
		if got := sameName(c.b, c.a, c.exact); got != c.want {
			t.Errorf("sameName(%q, %q, exact %v) = %v", c.b, c.a, c.exact, got)
		}
	}
}

// TestOddNamesGoServer: a Go upstream (miekg's presentation of the
// name, which escapes differently from the guard's) answers the odd
// names over UDP with and without 0x20, and the upstream stays up.
func TestOddNamesGoServer(t *testing.T) {
	srv := startUDP(t, nil)
	for _, x20 := range []bool{false, true} {
		p := newPool(t, []string{srv.url()}, Options{Randomize0x20: x20, Timeout: 300 * time.Millisecond})
		for _, l := range oddLabels {
			name := wireName(l, "example")
			resp, err := p.Exchange(clientCtx(t), query(name, dns.TypeA), QueryOptions{})
			if err != nil {
				t.Fatalf("0x20=%v %q: %v", x20, name, err)
			}
			if resp.Question[0].Name != name || resp.Answer[0].Header().Name != name {
				t.Errorf("%q: answer %v", name, resp)
			}
		}
		if st := p.Stats()[0]; !st.Up || st.Failures != 0 || st.Mismatches != 0 {
			t.Errorf("0x20=%v: %+v", x20, st)
		}
	}
}

// FuzzSameName: the guard's presentation of a wire name and miekg/dns's
// (which escape differently) are the same name; exactly the same when
// the name has no upper-case letter (NameString lower-cases).
func FuzzSameName(f *testing.F) {
	for _, l := range oddLabels {
		f.Add([]byte(l), []byte("Example"))
	}
	f.Add([]byte{0, 255, '\\', '.'}, []byte{'"', 127})
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		if len(l1) == 0 || len(l1) > 63 || len(l2) == 0 || len(l2) > 63 {
			return
		}
		wire := append([]byte{byte(len(l1))}, l1...)
		wire = append(append(wire, byte(len(l2))), l2...)
		wire = append(wire, 0)
		miekg, _, err := dns.UnpackDomainName(wire, 0)
		if err != nil {
			return
		}
		guard := dnswire.NameString(wire)
		if !sameName(guard, miekg, false) {
			t.Fatalf("%q and %q differ", guard, miekg)
		}
		upper := strings.IndexFunc(string(wire), func(r rune) bool { return r >= 'A' && r <= 'Z' }) >= 0
		if sameName(guard, miekg, true) == upper {
			t.Fatalf("exact %q vs %q: upper-case letters %v", guard, miekg, upper)
		}
	})
}
