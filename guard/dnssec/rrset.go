package dnssec

import (
	"bytes"
	"strings"

	"github.com/miekg/dns"
)

// rrset is one RRset of a message with the RRSIGs over it.
type rrset struct {
	name   string // canonical owner
	typ    uint16
	rrs    []dns.RR
	sigs   []*dns.RRSIG
	signer *dns.RRSIG // the signature that verified, once one did
}

func (s *rrset) String() string { return s.name + "/" + dns.TypeToString[s.typ] }

func (s *rrset) ttl() uint32 {
	t := ^uint32(0)
	for _, rr := range s.rrs {
		t = min(t, rr.Header().Ttl)
	}
	return t
}

type setKey struct {
	name string
	typ  uint16
}

type rrsets struct {
	list []*rrset
	idx  map[setKey]*rrset
}

// collect groups records into RRsets (class IN only) with their RRSIGs.
func collect(rrs []dns.RR) *rrsets {
	out := &rrsets{idx: map[setKey]*rrset{}}
	at := func(name string, typ uint16) *rrset {
		k := setKey{canon(name), typ}
		s := out.idx[k]
		if s == nil {
			s = &rrset{name: k.name, typ: typ}
			out.idx[k] = s
			out.list = append(out.list, s)
		}
		return s
	}
	for _, rr := range rrs {
		h := rr.Header()
		if h.Class != dns.ClassINET {
			continue
		}
		if sig, ok := rr.(*dns.RRSIG); ok {
			s := at(h.Name, sig.TypeCovered)
			s.sigs = append(s.sigs, sig)
			continue
		}
		if h.Rrtype == dns.TypeOPT || !typed(rr) {
			continue
		}
		s := at(h.Name, h.Rrtype)
		s.rrs = append(s.rrs, rr)
	}
	for _, s := range out.list {
		if len(s.rrs) > 1 {
			s.rrs = dedup(s.rrs)
		}
	}
	return out
}

// dedup drops repeated records (an RRset is a set, RFC 2181 §5) without
// touching the records themselves (the message may be shared).
func dedup(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
next:
	for _, rr := range rrs {
		for _, o := range out {
			if dns.IsDuplicate(o, rr) {
				continue next
			}
		}
		out = append(out, rr)
	}
	return out
}

func (ss *rrsets) get(name string, typ uint16) *rrset {
	s := ss.idx[setKey{canon(name), typ}]
	if s == nil || len(s.rrs) == 0 {
		return nil
	}
	return s
}

// sets returns the RRsets that have records, in message order.
func (ss *rrsets) sets() []*rrset {
	out := make([]*rrset, 0, len(ss.list))
	for _, s := range ss.list {
		if len(s.rrs) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// wireLabels returns name's labels, left to right, lower-cased, as their
// wire octets (escapes resolved).
func wireLabels(name string) [][]byte {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		// Not a packable name: compare its text.
		return [][]byte{[]byte(strings.ToLower(name))}
	}
	buf = buf[:n]
	var out [][]byte
	for i := 0; i < len(buf) && buf[i] != 0; {
		l := int(buf[i])
		if i+1+l > len(buf) {
			break
		}
		out = append(out, bytes.ToLower(buf[i+1:i+1+l]))
		i += 1 + l
	}
	return out
}

// compareNames orders names canonically (RFC 4034 §6.1).
func compareNames(a, b string) int {
	la, lb := wireLabels(a), wireLabels(b)
	for i := 1; i <= len(la) && i <= len(lb); i++ {
		if c := bytes.Compare(la[len(la)-i], lb[len(lb)-i]); c != 0 {
			return c
		}
	}
	switch {
	case len(la) < len(lb):
		return -1
	case len(la) > len(lb):
		return 1
	}
	return 0
}

// parent returns name without its first label ("." stays ".").
func parent(name string) string {
	if name == "." {
		return "."
	}
	off, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[off:]
}

// suffix returns the last n labels of name.
func suffix(name string, n int) string {
	idx := dns.Split(name)
	if n <= 0 || len(idx) == 0 {
		return "."
	}
	if n >= len(idx) {
		return name
	}
	return name[idx[len(idx)-n]:]
}

func hasType(bitmap []uint16, t uint16) bool {
	for _, b := range bitmap {
		if b == t {
			return true
		}
	}
	return false
}

// typed reports whether rr's Go type agrees with its header's type for the
// types the validator reads (a hand-built message could disagree).
func typed(rr dns.RR) bool {
	var ok bool
	switch rr.Header().Rrtype {
	case dns.TypeDS:
		_, ok = rr.(*dns.DS)
	case dns.TypeDNSKEY:
		_, ok = rr.(*dns.DNSKEY)
	case dns.TypeCNAME:
		_, ok = rr.(*dns.CNAME)
	case dns.TypeDNAME:
		_, ok = rr.(*dns.DNAME)
	case dns.TypeNSEC:
		_, ok = rr.(*dns.NSEC)
	case dns.TypeNSEC3:
		_, ok = rr.(*dns.NSEC3)
	case dns.TypeRRSIG:
		_, ok = rr.(*dns.RRSIG)
	default:
		ok = true
	}
	return ok
}
