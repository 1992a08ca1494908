package validate

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// wireName is name on the wire with ASCII letters lower-cased: the
// verifier's own reading of a name, so that names are compared as
// octets whatever their presentation form. A name that does not pack
// stays as it is, marked so that it equals no wire name.
func wireName(name string) string {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return "!" + name
	}
	b := buf[:n]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// under reports whether wire name child is parent or below it.
func under(parent, child string) bool {
	for i := 0; i < len(child) && child[i] != '!'; i += int(child[i]) + 1 {
		if child[i:] == parent {
			return true
		}
	}
	return false
}

// rerender writes name another way: every octet that is not a letter or
// digit as \DDD, letters in upper case.
func rerender(name string) string {
	w := wireName(name)
	if w[0] == '!' || w == "\x00" {
		return name
	}
	var out strings.Builder
	for i := 0; w[i] != 0; {
		l := int(w[i])
		for _, c := range []byte(w[i+1 : i+1+l]) {
			switch {
			case 'a' <= c && c <= 'z':
				out.WriteByte(c - 'a' + 'A')
			case '0' <= c && c <= '9', 'A' <= c && c <= 'Z':
				out.WriteByte(c)
			default:
				fmt.Fprintf(&out, "\\%03d", c)
			}
		}
		out.WriteByte('.')
		i += l + 1
	}
	return out.String()
}

// verify re-checks an accepted answer against the rules, written
// independently of the validator (a plain walk, no shared helpers but
// Special). It returns "" when out obeys them.
func verify(a policy.Answers, q dns.Question, out *dns.Msg) string {
	if out == nil {
		return "nil message"
	}
	if !out.Response || len(out.Question) != 1 || wireName(out.Question[0].Name) != wireName(q.Name) ||
		out.Question[0].Qtype != q.Qtype || out.Question[0].Qclass != q.Qclass {
		return "question differs"
	}
	total, opts := 0, 0
	for _, sec := range [][]dns.RR{out.Answer, out.Ns, out.Extra} {
		sets := map[string]int{}
		for i, r := range sec {
			if r.Header().Rrtype == dns.TypeOPT {
				opts++
				continue
			}
			total++
			sets[wireName(r.Header().Name)+"/"+fmt.Sprint(r.Header().Rrtype, r.Header().Class)]++
			for _, o := range sec[:i] {
				if dns.IsDuplicate(r, o) {
					return "duplicate record " + r.String()
				}
			}
		}
		for k, n := range sets {
			if a.MaxRRset > 0 && n > a.MaxRRset {
				return fmt.Sprintf("RRset %s has %d records", k, n)
			}
		}
	}
	if opts > 1 {
		return "several OPT"
	}
	if a.MaxRecords > 0 && total > a.MaxRecords {
		return fmt.Sprintf("%d records", total)
	}
	c := out.Copy()
	c.Compress = true
	if a.MaxSize > 0 && c.Len() > a.MaxSize {
		return fmt.Sprintf("%d octets", c.Len())
	}
	// Follow CNAMEs from the question name.
	reach := map[string]bool{wireName(q.Name): true}
	cur, steps := wireName(q.Name), 0
	for q.Qtype != dns.TypeCNAME {
		next := ""
		for _, r := range out.Answer {
			if c, ok := r.(*dns.CNAME); ok && wireName(c.Hdr.Name) == cur {
				if next != "" && next != wireName(c.Target) {
					return "two CNAMEs at " + c.Hdr.Name
				}
				next = wireName(c.Target)
			}
		}
		if next == "" {
			break
		}
		if reach[next] {
			return "CNAME loop"
		}
		reach[next], cur = true, next
		steps++
	}
	if a.MaxCNAMEChain > 0 && steps > a.MaxCNAMEChain {
		return fmt.Sprintf("chain of %d", steps)
	}
	for _, r := range out.Answer {
		h := r.Header()
		t := h.Rrtype
		if t == dns.TypeDNAME {
			continue
		}
		if !reach[wireName(h.Name)] {
			return "owner outside the chain: " + r.String()
		}
		if t != q.Qtype && q.Qtype != dns.TypeANY && t != dns.TypeCNAME && t != dns.TypeRRSIG {
			return fmt.Sprintf("%s in answer to %s", dns.Type(t), dns.Type(q.Qtype))
		}
		if t == q.Qtype && q.Qtype != dns.TypeCNAME && wireName(h.Name) != cur {
			return "data beside a CNAME at " + h.Name
		}
	}
	if a.RebindProtect {
		for _, sec := range [][]dns.RR{out.Answer, out.Extra} {
			for _, r := range sec {
				var addrs []netip.Addr
				if addr, ok := address(r); ok {
					addrs = append(addrs, addr)
				}
				var kv []dns.SVCBKeyValue
				if s, ok := r.(*dns.SVCB); ok {
					kv = s.Value
				}
				if s, ok := r.(*dns.HTTPS); ok {
					kv = s.Value
				}
				for _, p := range kv {
					var ips []net.IP
					if h, ok := p.(*dns.SVCBIPv4Hint); ok {
						ips = h.Hint
					} else if h, ok := p.(*dns.SVCBIPv6Hint); ok {
						ips = h.Hint
					}
					for _, ip := range ips {
						if x, ok := netip.AddrFromSlice(ip); ok {
							if ip.To4() != nil && p.Key() == dns.SVCB_IPV4HINT {
								x = x.Unmap()
							}
							addrs = append(addrs, x)
						}
					}
				}
				for _, addr := range addrs {
					if _, sp := Special(addr); sp {
						allowed := false
						for _, p := range a.AllowedPrivate {
							allowed = allowed || p.Contains(addr)
						}
						if !allowed {
							return "special address from an upstream: " + r.String()
						}
					}
				}
			}
		}
	}
	return ""
}

// seeds adds a spread of the shared corpus of raw DNS messages.
func seeds(f *testing.F) {
	for _, b := range testenv.Messages(16) {
		f.Add(b, false)
	}
	for _, m := range []*dns.Msg{
		msg("a.example.", dns.TypeA, "a.example. 300 CNAME b.example.", "b.example. 300 A 93.184.216.34", "b.example. 300 A 93.184.216.34"),
		msg("a.example.", dns.TypeA, "a.example. 300 AAAA 2001:db8::1"),
		msg("a.example.", dns.TypeA, "a.example. 300 A 10.0.0.1"),
		msg("x.lan.", dns.TypeA, "x.lan. 300 A 10.0.0.1"),
		msg("a.example.", dns.TypeANY, "a.example. 300 A 93.184.216.34", `a.example. 300 TXT "t"`),
		// Labels holding what presentation form escapes, and dots.
		msg(`a\ b\(c\).example.`, dns.TypeA, `a\ b\(c\).example. 300 CNAME x\"y\'z\;\@.example.`, `x\"y\'z\;\@.example. 300 A 93.184.216.34`),
		msg(`x\.lan.`, dns.TypeA, `x\.lan. 300 A 10.0.0.1`),
		msg("a.example.", dns.TypeHTTPS, "a.example. 300 HTTPS 1 . alpn=h2 ipv4hint=93.184.216.34,10.0.0.1 ipv6hint=2606:2800:220:1::1"),
		msg("_dns.a.example.", dns.TypeSVCB, "_dns.a.example. 300 SVCB 1 dns.a.example. alpn=dot ipv6hint=fd00::53"),
		msg(`a\\b.example.`, dns.TypeA, `a\\b.example. 300 CNAME a\.b.example.`, `a\.b.example. 300 A 93.184.216.34`),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
}

// FuzzCheck: Check never panics, and whatever it accepts obeys every rule
// (verify) and is accepted unchanged when checked again.
func FuzzCheck(f *testing.F) {
	seeds(f)
	a := testPolicy()
	a.MaxRecords, a.MaxRRset, a.MaxCNAMEChain, a.MaxSize = 20, 6, 3, 2048
	v := New(a)
	f.Fuzz(func(t *testing.T, b []byte, strict bool) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		m.Response = true // most seeds are queries: read them as answers
		question := q("a.example.", dns.TypeA)
		if len(m.Question) > 0 {
			question = m.Question[0]
		}
		before := m.String()
		for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			if distinct(sec) {
				// The quick answer agrees with the keys.
				seen := map[string]bool{}
				for _, rr := range sec {
					if k := key(rr); seen[k] {
						t.Fatalf("distinct, but two records have the key %q", k)
					} else {
						seen[k] = true
					}
				}
			}
		}
		out, err := v.Check(question, m, strict)
		if m.String() != before {
			t.Fatalf("Check modified its input:\n%s\n%s", before, m.String())
		}
		// The question written another way (every octet that is not a
		// letter or digit as \DDD, upper case) is the same question.
		other := question
		other.Name = rerender(question.Name)
		if _, err2 := v.Check(other, m, strict); (err == nil) != (err2 == nil) {
			t.Fatalf("%q and %q checked differently: %v / %v", question.Name, other.Name, err, err2)
		}
		if err != nil {
			if out != nil {
				t.Fatal("refusal with a message")
			}
			return
		}
		if why := verify(a, question, out); why != "" {
			t.Fatalf("accepted answer breaks a rule: %s\n%v", why, out)
		}
		again, err := v.Check(question, out, strict)
		if err != nil {
			t.Fatalf("cleaned answer refused on a second check: %v\n%v", err, out)
		}
		if again.String() != out.String() {
			t.Fatalf("second check changed the answer:\n%v\n%v", out, again)
		}
		// What the shield accepts from an upstream, it accepts from the
		// local server (Trusted only lifts rebinding protection).
		if _, err := v.Trusted().Check(question, m, strict); err != nil {
			t.Fatalf("accepted from an upstream, refused from the local server: %v", err)
		}
	})
}
