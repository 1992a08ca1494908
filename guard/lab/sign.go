package lab

import (
	"crypto"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Signer signs the synthetic zone online (dnsguard lab --dnssec): answers
// to queries with DO=1 carry RRSIGs by the zone's keys (ECDSA P-256, made
// at start), DNSKEY is answered at the apex, and negative answers carry
// minimally covering NSEC records (RFC 4470 "white lies"). A validating
// resolver given DS() as its trust anchor validates the honest answers;
// the forged experiments alter them after signing, as an on-path attacker
// without the keys would, so they turn bogus.
type Signer struct {
	zone         string
	ksk, zsk     *dns.DNSKEY
	kpriv, zpriv crypto.Signer
	now          func() time.Time
}

// NewSigner makes keys for zone; now (nil: time.Now) dates signatures.
func NewSigner(zone string, now func() time.Time) (*Signer, error) {
	if now == nil {
		now = time.Now
	}
	s := &Signer{zone: dns.CanonicalName(zone), now: now}
	gen := func(flags uint16) (*dns.DNSKEY, crypto.Signer, error) {
		k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: s.zone, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
			Flags: flags, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
		p, err := k.Generate(256)
		if err != nil {
			return nil, nil, fmt.Errorf("lab: key: %w", err)
		}
		return k, p.(crypto.Signer), nil
	}
	var err error
	if s.ksk, s.kpriv, err = gen(dns.ZONE | dns.SEP); err != nil {
		return nil, err
	}
	if s.zsk, s.zpriv, err = gen(dns.ZONE); err != nil {
		return nil, err
	}
	return s, nil
}

// DS is the zone's DS record: the trust anchor to give a validator.
func (s *Signer) DS() *dns.DS {
	ds := s.ksk.ToDS(dns.SHA256)
	ds.Hdr.Ttl = 3600
	return ds
}

// Sign adds DNSSEC records to z's honest answer m to q, if q asked for
// them (DO=1).
func (s *Signer) Sign(z *Zone, q, m *dns.Msg) {
	opt := q.IsEdns0()
	if opt == nil || !opt.Do() || len(q.Question) != 1 || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return
	}
	qs := q.Question[0]
	name := dns.CanonicalName(qs.Name)
	if name == s.zone && qs.Qtype == dns.TypeDNSKEY {
		m.Ns = nil
		m.Answer = []dns.RR{dns.Copy(s.ksk), dns.Copy(s.zsk)}
	}
	last, answered := name, false
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok && qs.Qtype != dns.TypeCNAME {
			last = dns.CanonicalName(c.Target)
		}
	}
	for _, rr := range m.Answer {
		h := rr.Header()
		answered = answered || dns.CanonicalName(h.Name) == last && (h.Rrtype == qs.Qtype || qs.Qtype == dns.TypeANY)
	}
	if !answered {
		if m.Rcode == dns.RcodeNameError {
			// The name's own cover, and the apex's NSEC that covers
			// *.zone (no wildcard).
			m.Ns = append(m.Ns, s.nsec(predecessor(last), successor(last), nil), s.apexNSEC())
		} else if last == s.zone {
			m.Ns = append(m.Ns, s.apexNSEC())
		} else {
			m.Ns = append(m.Ns, s.nsec(last, "\\000."+last, s.types(z, last)))
		}
	}
	m.Answer = s.signAll(m.Answer)
	m.Ns = s.signAll(m.Ns)
}

// apexNSEC is the apex's NSEC, up to "+" (after "*"): it covers the
// wildcard name, which does not exist.
func (s *Signer) apexNSEC() dns.RR {
	return s.nsec(s.zone, "+."+s.zone, []uint16{dns.TypeNS, dns.TypeSOA, dns.TypeDNSKEY})
}

func (s *Signer) nsec(owner, next string, types []uint16) dns.RR {
	bm := append(append([]uint16{}, types...), dns.TypeRRSIG, dns.TypeNSEC)
	for i := 1; i < len(bm); i++ { // sorted, as the wire format wants
		for j := i; j > 0 && bm[j] < bm[j-1]; j-- {
			bm[j], bm[j-1] = bm[j-1], bm[j]
		}
	}
	return &dns.NSEC{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: 300}, NextDomain: next, TypeBitMap: bm}
}

// types lists what name has in z.
func (s *Signer) types(z *Zone, name string) []uint16 {
	var out []uint16
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT} {
		q := new(dns.Msg)
		q.SetQuestion(name, t)
		for _, rr := range z.Answer(q).Answer {
			if h := rr.Header(); dns.CanonicalName(h.Name) == name {
				out = append(out, h.Rrtype)
				if h.Rrtype == dns.TypeCNAME {
					return []uint16{dns.TypeCNAME}
				}
				break
			}
		}
	}
	return out
}

// predecessor is a name just before name in canonical order and not
// under it: its first label with the last octet decremented and \255
// appended (RFC 4470 §4, simplified).
func predecessor(name string) string {
	off, _ := dns.NextLabel(name, 0)
	label, rest := name[:off-1], name[off:]
	b := []byte(label)
	if i := len(b) - 1; i >= 0 && b[i] > '0' && b[i] != '\\' {
		b[i]--
		return escape(b) + "\\255." + rest
	}
	return "\\000." + rest // a label of its own sorts before any other
}

// successor is a name just after name and its descendants: its first
// label with a zero octet appended.
func successor(name string) string {
	off, _ := dns.NextLabel(name, 0)
	return name[:off-1] + "\\000." + name[off:]
}

func escape(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c >= 'A' && c <= 'Z' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "\\%03d", c)
		}
	}
	return sb.String()
}

// signAll appends an RRSIG by the zone's keys to every RRset of rrs.
func (s *Signer) signAll(rrs []dns.RR) []dns.RR {
	type key struct {
		name string
		t    uint16
	}
	var order []key
	sets := map[key][]dns.RR{}
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == dns.TypeRRSIG || h.Rrtype == dns.TypeOPT || !dns.IsSubDomain(s.zone, dns.CanonicalName(h.Name)) {
			continue
		}
		k := key{dns.CanonicalName(h.Name), h.Rrtype}
		if sets[k] == nil {
			order = append(order, k)
		}
		sets[k] = append(sets[k], rr)
	}
	now := s.now()
	out := rrs
	for _, k := range order {
		set := sets[k]
		key, priv := s.zsk, s.zpriv
		if k.t == dns.TypeDNSKEY {
			key, priv = s.ksk, s.kpriv
		}
		sig := &dns.RRSIG{Hdr: dns.RR_Header{Ttl: set[0].Header().Ttl}, Algorithm: key.Algorithm, KeyTag: key.KeyTag(),
			SignerName: s.zone, Inception: uint32(now.Add(-time.Hour).Unix()), Expiration: uint32(now.Add(7 * 24 * time.Hour).Unix())}
		if err := sig.Sign(priv, set); err != nil {
			continue // an unsignable set goes out unsigned (a validator calls it bogus)
		}
		out = append(out, sig)
	}
	return out
}
