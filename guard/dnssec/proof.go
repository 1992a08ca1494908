package dnssec

import (
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxIterations is RFC 9276's limit: NSEC3 above it proves nothing.
const maxIterations = 150

// proofSet holds the validated NSEC or NSEC3 records of one response.
type proofSet struct {
	st        zoneState // Secure (zone), Insecure or Bogus
	ttl       time.Duration
	none      bool // the response carried no NSEC or NSEC3 at all
	zone      string
	nsec      []*dns.NSEC
	nsec3     []*dns.NSEC3
	iterLimit bool
	hashes    map[string]string
	r         *run
}

// proofs validates the NSEC and NSEC3 RRsets in resp's authority section.
// All must be signed by one zone; known is that zone's state when the
// caller already has it (the chain walk), else the signer's zone is
// walked to.
func (r *run) proofs(resp *dns.Msg, known zoneState) *proofSet {
	p := &proofSet{r: r, hashes: map[string]string{}, ttl: r.v.cfg.MaxTTL}
	sets := collect(resp.Ns)
	var ps []*rrset
	for _, s := range sets.sets() {
		if s.typ == dns.TypeNSEC || s.typ == dns.TypeNSEC3 {
			ps = append(ps, s)
		}
	}
	if len(ps) == 0 {
		p.none = true
		p.st = bogus(dns.ExtendedErrorCodeNSECMissing, "no NSEC or NSEC3 proof")
		return p
	}
	zone := ""
	for _, s := range ps {
		for _, sig := range s.sigs {
			if dns.IsSubDomain(canon(sig.SignerName), s.name) {
				zone = canon(sig.SignerName)
				break
			}
		}
		if zone != "" {
			break
		}
	}
	st := known
	answerLevel := st.sec == Indeterminate && st.zone == ""
	if answerLevel {
		if zone == "" {
			// Unsigned proofs: fine only if the zone is insecure.
			st = r.walk(ps[0].name)
			if st.sec == Secure {
				st = bogus(dns.ExtendedErrorCodeRRSIGsMissing, "no RRSIG over "+ps[0].String())
			}
			p.st = st
			return p
		}
		st = r.walk(zone)
	}
	if st.sec != Secure {
		p.st = st
		return p
	}
	if zone != "" && zone != st.zone {
		p.st = bogus(dns.ExtendedErrorCodeDNSBogus, "proof signed by "+zone+", not a zone apex of "+st.zone)
		return p
	}
	p.zone = st.zone
	for _, s := range ps {
		res, ttl := r.verify(s, st)
		if res.sec != Secure {
			p.st = res
			return p
		}
		p.ttl = min(p.ttl, ttl)
		if answerLevel {
			r.capTTL(ttl)
		}
		if !dns.IsSubDomain(p.zone, s.name) {
			continue
		}
		for _, rr := range s.rrs {
			switch x := rr.(type) {
			case *dns.NSEC:
				if l := int(s.signer.Labels); l < dns.CountLabel(x.Hdr.Name) {
					// The NSEC of a wildcard, expanded with the answer
					// (unbound's auth-zone sends it so): its signature
					// vouches for it at the wildcard's own name.
					x = dns.Copy(x).(*dns.NSEC)
					x.Hdr.Name = strings.TrimSuffix("*."+suffix(canon(x.Hdr.Name), l), ".") + "."
				}
				p.nsec = append(p.nsec, x)
			case *dns.NSEC3:
				if x.Hash != dns.SHA1 || canon(parent(x.Hdr.Name)) != p.zone {
					continue
				}
				if x.Iterations > maxIterations {
					p.iterLimit = true
					continue
				}
				p.nsec3 = append(p.nsec3, x)
			}
		}
	}
	p.st = st
	return p
}

func (p *proofSet) nsecMatch(name string) *dns.NSEC {
	for _, n := range p.nsec {
		if compareNames(n.Hdr.Name, name) == 0 {
			return n
		}
	}
	return nil
}

// nsecCover returns an NSEC proving that name does not exist: owner <
// name < next, from a part of the zone that is not delegated away.
func (p *proofSet) nsecCover(name string) *dns.NSEC {
	for _, n := range p.nsec {
		owner := n.Hdr.Name
		if compareNames(owner, name) >= 0 {
			continue
		}
		// RFC 6840 §4.1: an NSEC at a delegation or DNAME says nothing
		// about names below it.
		if dns.IsSubDomain(owner, name) && ((hasType(n.TypeBitMap, dns.TypeNS) && !hasType(n.TypeBitMap, dns.TypeSOA)) || hasType(n.TypeBitMap, dns.TypeDNAME)) {
			continue
		}
		if compareNames(owner, n.NextDomain) < 0 {
			if compareNames(name, n.NextDomain) < 0 {
				return n
			}
		} else if dns.IsSubDomain(p.zone, name) {
			// The last NSEC of the zone: next is the apex.
			return n
		}
	}
	return nil
}

// nsecEncloser returns the closest encloser an NSEC covering name implies.
func nsecEncloser(name string, n *dns.NSEC) string {
	k := max(dns.CompareDomainName(name, n.Hdr.Name), dns.CompareDomainName(name, n.NextDomain))
	return suffix(name, k)
}

func (p *proofSet) hash(name string, n *dns.NSEC3) string {
	k := canon(name) + "|" + n.Salt + "|" + string(rune(n.Iterations))
	if h, ok := p.hashes[k]; ok {
		return h
	}
	h := dns.HashName(canon(name), n.Hash, n.Iterations, n.Salt)
	p.hashes[k] = h
	return h
}

func ownerHash(n *dns.NSEC3) string {
	off, _ := dns.NextLabel(n.Hdr.Name, 0)
	if off == 0 {
		return ""
	}
	return strings.ToUpper(n.Hdr.Name[:off-1])
}

func (p *proofSet) nsec3Match(name string) *dns.NSEC3 {
	if !dns.IsSubDomain(p.zone, name) {
		return nil
	}
	for _, n := range p.nsec3 {
		if oh := ownerHash(n); oh != "" && oh == p.hash(name, n) {
			return n
		}
	}
	return nil
}

func (p *proofSet) nsec3Cover(name string) *dns.NSEC3 {
	if !dns.IsSubDomain(p.zone, name) {
		return nil
	}
	for _, n := range p.nsec3 {
		oh, next, h := ownerHash(n), strings.ToUpper(n.NextDomain), p.hash(name, n)
		if oh == "" || h == "" || h == oh {
			continue
		}
		switch {
		case oh < next:
			if oh < h && h < next {
				return n
			}
		default: // the last NSEC3 of the chain (or the only one)
			if h > oh || h < next {
				return n
			}
		}
	}
	return nil
}

// closestEncloser finds RFC 5155 §8.3's closest encloser proof for name:
// a matching NSEC3 for an ancestor ce and a covering NSEC3 for the next
// closer name.
func (p *proofSet) closestEncloser(name string) (ce string, cover *dns.NSEC3, ok bool) {
	name = canon(name)
	next := name
	for c := parent(name); dns.IsSubDomain(p.zone, c); c = parent(c) {
		if m := p.nsec3Match(c); m != nil {
			// An encloser at a delegation or DNAME is not one (§8.3).
			if (hasType(m.TypeBitMap, dns.TypeNS) && !hasType(m.TypeBitMap, dns.TypeSOA)) || hasType(m.TypeBitMap, dns.TypeDNAME) {
				return "", nil, false
			}
			cov := p.nsec3Cover(next)
			return c, cov, cov != nil
		}
		next = c
		if c == "." {
			break
		}
	}
	return "", nil, false
}

type dsDenial uint8

const (
	dsFail       dsDenial = iota
	dsCut                 // a delegation without DS: insecure
	dsOptOut              // an NSEC3 opt-out span: insecure
	dsNoCut               // the name exists in the zone but is no cut
	dsNoName              // the name does not exist
	dsIterations          // NSEC3 above the iteration limit: insecure
)

// denyDS interprets a DS NODATA/NXDOMAIN proof for n.
func (p *proofSet) denyDS(n string, rcode int) dsDenial {
	if len(p.nsec) > 0 {
		if m := p.nsecMatch(n); m != nil {
			if hasType(m.TypeBitMap, dns.TypeDS) || hasType(m.TypeBitMap, dns.TypeSOA) {
				return dsFail
			}
			if hasType(m.TypeBitMap, dns.TypeNS) {
				return dsCut
			}
			return dsNoCut
		}
		if p.nsecCover(n) != nil {
			return dsNoName
		}
		return dsFail
	}
	if p.iterLimit {
		return dsIterations
	}
	if m := p.nsec3Match(n); m != nil {
		if hasType(m.TypeBitMap, dns.TypeDS) || hasType(m.TypeBitMap, dns.TypeSOA) {
			return dsFail
		}
		if hasType(m.TypeBitMap, dns.TypeNS) {
			return dsCut
		}
		return dsNoCut
	}
	if _, cov, ok := p.closestEncloser(n); ok {
		if cov.Flags&1 != 0 {
			return dsOptOut
		}
		return dsNoName
	}
	return dsFail
}

// denial is the outcome of checking a negative answer.
type denial uint8

const (
	denyFail       denial = iota
	denyOK                // proven
	denyInsecure          // opt-out: no secure proof possible
	denyIterations        // NSEC3 above the iteration limit
)

// deny checks the proof that name has no qtype (NODATA) or does not
// exist (NXDOMAIN), wildcards included (RFC 4035 §5.4, RFC 5155 §8.4-8.7).
func (p *proofSet) deny(name string, qtype uint16, nxdomain bool) denial {
	name = canon(name)
	noType := func(bm []uint16) bool { return !hasType(bm, qtype) && !hasType(bm, dns.TypeCNAME) }
	parentSide := func(bm []uint16) bool {
		return qtype != dns.TypeDS && hasType(bm, dns.TypeNS) && !hasType(bm, dns.TypeSOA)
	}
	if len(p.nsec) > 0 {
		if nxdomain {
			cov := p.nsecCover(name)
			if cov == nil {
				return denyFail
			}
			ce := nsecEncloser(name, cov)
			if p.nsecMatch("*."+ce) != nil || p.nsecCover("*."+ce) == nil {
				return denyFail
			}
			return denyOK
		}
		if m := p.nsecMatch(name); m != nil {
			if !noType(m.TypeBitMap) || parentSide(m.TypeBitMap) {
				return denyFail
			}
			if qtype == dns.TypeDS && hasType(m.TypeBitMap, dns.TypeSOA) {
				return denyFail // the child's apex NSEC cannot deny the parent's DS
			}
			return denyOK
		}
		cov := p.nsecCover(name)
		if cov == nil {
			return denyFail
		}
		if dns.IsSubDomain(name, cov.NextDomain) && compareNames(name, cov.NextDomain) != 0 {
			return denyOK // an empty non-terminal
		}
		w := p.nsecMatch("*." + nsecEncloser(name, cov))
		if w != nil && noType(w.TypeBitMap) {
			return denyOK // wildcard NODATA
		}
		return denyFail
	}
	if p.iterLimit && len(p.nsec3) == 0 {
		return denyIterations
	}
	if !nxdomain {
		if m := p.nsec3Match(name); m != nil {
			if !noType(m.TypeBitMap) || parentSide(m.TypeBitMap) {
				return denyFail
			}
			if qtype == dns.TypeDS && hasType(m.TypeBitMap, dns.TypeSOA) {
				return denyFail // the child's apex NSEC3 cannot deny the parent's DS
			}
			return denyOK
		}
	}
	ce, cov, ok := p.closestEncloser(name)
	if !ok {
		if p.iterLimit {
			return denyIterations
		}
		return denyFail
	}
	if !nxdomain && qtype == dns.TypeDS && cov.Flags&1 != 0 {
		return denyInsecure // RFC 5155 §8.6
	}
	if nxdomain {
		if p.nsec3Cover("*."+ce) == nil {
			return denyFail
		}
		if cov.Flags&1 != 0 {
			return denyInsecure // an opt-out span may hide an unsigned delegation
		}
		return denyOK
	}
	// Wildcard NODATA (RFC 5155 §8.7).
	if w := p.nsec3Match("*." + ce); w != nil && noType(w.TypeBitMap) {
		return denyOK
	}
	return denyFail
}

// wildcard checks that an RRset at name expanded from a wildcard with
// labels labels could not have come from a closer name (RFC 4035 §5.3.4,
// RFC 5155 §8.8).
func (p *proofSet) wildcard(name string, labels uint8) denial {
	name = canon(name)
	if len(p.nsec) > 0 {
		if p.nsecCover(name) != nil {
			return denyOK
		}
		return denyFail
	}
	// RFC 5155 §8.8 asks only for the cover of the next closer name (an
	// opt-out span included, as unbound does).
	next := suffix(name, int(labels)+1)
	if p.nsec3Cover(next) != nil {
		return denyOK
	}
	if p.iterLimit {
		return denyIterations
	}
	return denyFail
}
