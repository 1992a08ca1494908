// Package lab is the adversarial resolver of the study's active
// experiments (Table III of ../shared/reference/study.md): it serves a
// synthetic zone over UDP, TCP, DoT and DoH, manipulates its answers the
// way each experiment says, and records what every client did in return,
// so the client's resilience can be graded the way the study's Table I
// grades devices.
package lab

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Zone is the synthetic zone: every name under Suffix exists and has
// deterministic records, except these families, picked by the first
// label's prefix:
//
//	nx*      NXDOMAIN
//	cname*   CNAME to target-<label>.<suffix>, which has A and AAAA
//	self*    A/AAAA: the lab's own address (Self), to see if clients use it
//
// Every name has A (in ANet), AAAA (in AAAANet) and a TXT record; other
// types are NODATA. The apex has SOA and NS.
type Zone struct {
	Suffix  string       // e.g. "lab.example."
	ANet    netip.Prefix // honest IPv4 answers are drawn from here
	AAAANet netip.Prefix
	Self    []netip.Addr // answers for self* names
	TTL     uint32
}

// DefaultZone is the zone the lab serves unless told otherwise. The
// honest addresses are in documentation ranges (TEST-NET-2, RFC 9637's
// 3fff::/20) so that nothing the lab hands out reaches a real host; a
// guard in front of the lab has to allow them (allow_private), and still
// refuses the forged 192.0.2.1 and 2001:db8::1.
func DefaultZone() Zone {
	return Zone{
		Suffix:  "lab.example.",
		ANet:    netip.MustParsePrefix("198.51.100.0/24"),
		AAAANet: netip.MustParsePrefix("3fff:51::/32"),
		TTL:     300,
	}
}

func (z *Zone) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: z.Suffix, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: z.TTL},
		Ns:      "ns." + z.Suffix,
		Mbox:    "hostmaster." + z.Suffix,
		Serial:  2026112701,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: min(z.TTL, 300),
	}
}

// Answer returns the honest answer to q (not yet manipulated by any
// experiment).
func (z *Zone) Answer(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative, m.RecursionAvailable = true, true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	qs := q.Question[0]
	name := strings.ToLower(qs.Name)
	suffix := strings.ToLower(dns.Fqdn(z.Suffix))
	if qs.Qclass != dns.ClassINET || !dns.IsSubDomain(suffix, name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	if name == suffix {
		switch qs.Qtype {
		case dns.TypeSOA:
			m.Answer = []dns.RR{z.soa()}
		case dns.TypeNS:
			m.Answer = []dns.RR{&dns.NS{Hdr: z.hdr(qs.Name, dns.TypeNS), Ns: "ns." + z.Suffix}}
		default:
			m.Ns = []dns.RR{z.soa()}
		}
		return m
	}
	label := name[:strings.IndexByte(name, '.')]
	owner := qs.Name
	switch {
	case strings.HasPrefix(label, "nx"):
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{z.soa()}
		return m
	case strings.HasPrefix(label, "cname") && qs.Qtype != dns.TypeCNAME:
		target := "target-" + label + "." + z.Suffix
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: z.hdr(owner, dns.TypeCNAME), Target: target})
		owner, name = target, strings.ToLower(target)
	case strings.HasPrefix(label, "cname"):
		m.Answer = []dns.RR{&dns.CNAME{Hdr: z.hdr(owner, dns.TypeCNAME), Target: "target-" + label + "." + z.Suffix}}
		return m
	}
	self := strings.HasPrefix(label, "self")
	switch qs.Qtype {
	case dns.TypeA, dns.TypeANY:
		if a := z.address(name, z.ANet, self, true); a.IsValid() {
			m.Answer = append(m.Answer, &dns.A{Hdr: z.hdr(owner, dns.TypeA), A: a.AsSlice()})
		}
	}
	switch qs.Qtype {
	case dns.TypeAAAA, dns.TypeANY:
		if a := z.address(name, z.AAAANet, self, false); a.IsValid() {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: z.hdr(owner, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if qs.Qtype == dns.TypeTXT || qs.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: z.hdr(owner, dns.TypeTXT), Txt: []string{"dnsguard lab " + strings.TrimSuffix(name, ".")}})
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{z.soa()} // NODATA
	}
	return m
}

func (z *Zone) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: z.TTL}
}

// address is name's deterministic address in p (or the lab's own address
// of the right family for self names).
func (z *Zone) address(name string, p netip.Prefix, self, v4 bool) netip.Addr {
	if self {
		for _, a := range z.Self {
			if a.Is4() == v4 {
				return a
			}
		}
		return netip.Addr{}
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	sum := h.Sum64()
	b := p.Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		bits := min(host, 8)
		mask := byte(1<<bits - 1)
		b[i] = b[i]&^mask | byte(sum)&mask
		sum >>= 8
		host -= bits
	}
	if v4 && (b[3] == 0 || b[3] == 255) { // no network or broadcast addresses
		b[3] = 1 + b[3]%254
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String describes the zone for the startup log.
func (z *Zone) String() string {
	return fmt.Sprintf("zone %s (A in %s, AAAA in %s, TTL %d)", z.Suffix, z.ANet, z.AAAANet, z.TTL)
}
