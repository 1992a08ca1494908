package dnssec

import (
	"context"
	"time"

	"github.com/miekg/dns"
)

// maxChain bounds the CNAME/DNAME links followed in one answer.
const maxChain = 12

// Validate checks resp, the upstream's answer (asked with DO=1) to its own
// question: every RRset of the answer section, the CNAME/DNAME chain from
// the question name, and for a negative answer or a wildcard expansion the
// NSEC/NSEC3 proof in the authority section.
func (v *Validator) Validate(ctx context.Context, resp *dns.Msg) Result {
	v.validations.Add(1)
	res := v.validate(ctx, resp)
	switch res.Security {
	case Secure:
		v.secure.Add(1)
	case Insecure:
		v.insecure.Add(1)
	case Bogus:
		v.bogus.Add(1)
	default:
		v.indeterminate.Add(1)
	}
	return res
}

func result(st zoneState) Result { return Result{Security: st.sec, EDE: st.ede, Reason: st.reason} }

// worse keeps the weaker of two verdicts (bogus < insecure < secure);
// indeterminate counts as bogus-like but keeps its own label.
func worse(a, b Result) Result {
	rank := func(s Security) int {
		switch s {
		case Secure:
			return 3
		case Insecure:
			return 2
		case Indeterminate:
			return 1
		}
		return 0
	}
	if rank(b.Security) < rank(a.Security) {
		return b
	}
	if rank(b.Security) == rank(a.Security) && a.EDE == 0 && b.EDE != 0 {
		return b
	}
	return a
}

func (v *Validator) validate(ctx context.Context, resp *dns.Msg) Result {
	if resp == nil || len(resp.Question) != 1 {
		return Result{Security: Indeterminate, EDE: dns.ExtendedErrorCodeDNSSECIndeterminate, Reason: "no question"}
	}
	q := resp.Question[0]
	qname := canon(q.Name)
	if _, ok := dns.IsDomainName(qname); !ok {
		return Result{Security: Indeterminate, EDE: dns.ExtendedErrorCodeDNSSECIndeterminate, Reason: "bad question name"}
	}
	if v.underNTA(qname) {
		return Result{Security: Insecure, Reason: "negative trust anchor"}
	}
	if _, ok := v.anchorFor(qname); !ok {
		return Result{Security: Insecure, Reason: "no trust anchor"}
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return Result{Security: Indeterminate, EDE: dns.ExtendedErrorCodeDNSSECIndeterminate, Reason: "upstream " + dns.RcodeToString[resp.Rcode]}
	}
	if q.Qtype == dns.TypeRRSIG {
		// Signatures are not signed: an explicit RRSIG query is answered
		// as it came, without AD (as unbound answers it).
		return Result{Security: Insecure, Reason: "RRSIG query"}
	}
	r := v.newRun(ctx)
	res := r.answer(resp, qname, q.Qtype)
	if r.limit != "" && res.Security != Secure && res.Security != Insecure {
		res = Result{Security: Indeterminate, EDE: dns.ExtendedErrorCodeDNSSECIndeterminate, Reason: r.limit}
	}
	if res.Security == Secure && r.ttl >= 0 {
		res.Capped, res.TTLCap = true, uint32(r.ttl/time.Second)
	}
	return res
}

func (r *run) answer(resp *dns.Msg, qname string, qtype uint16) Result {
	sets := collect(resp.Answer)
	res := Result{Security: Secure}
	var wild []*rrset
	checked := map[*rrset]bool{}
	// Follow the chain from the question name.
	cur := qname
	found := false
	for i := 0; ; i++ {
		if i > maxChain {
			return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: "CNAME chain too long"}
		}
		if qtype == dns.TypeANY {
			found = anyAt(sets, cur)
			break
		}
		if s := sets.get(cur, qtype); s != nil {
			found = true
			break
		}
		if d := dnameFor(sets, cur); d != nil {
			checked[d] = true
			res = worse(res, r.signed(d, &wild))
			if res.Security == Bogus || res.Security == Indeterminate {
				return res
			}
			target := d.rrs[0].(*dns.DNAME).Target
			prefix := cur[:len(cur)-len(d.name)]
			next := canon(prefix + target)
			if d.name == "." {
				next = canon(cur + target)
			}
			if _, ok := dns.IsDomainName(next); !ok || len(next) > 255 {
				return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: "DNAME substitution too long"}
			}
			// The synthesised CNAME is unsigned; it must agree with the DNAME.
			if c := sets.get(cur, dns.TypeCNAME); c != nil {
				if canon(c.rrs[0].(*dns.CNAME).Target) != next {
					return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: "CNAME does not follow its DNAME"}
				}
				checked[c] = true
			}
			cur = next
			continue
		}
		if s := sets.get(cur, dns.TypeCNAME); s != nil {
			if len(s.rrs) != 1 {
				return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: "more than one CNAME at " + cur}
			}
			checked[s] = true
			res = worse(res, r.signed(s, &wild))
			if res.Security == Bogus || res.Security == Indeterminate {
				return res
			}
			cur = canon(s.rrs[0].(*dns.CNAME).Target)
			continue
		}
		break
	}
	// Every other RRset in the answer section must verify as well.
	for _, s := range sets.sets() {
		if checked[s] {
			continue
		}
		if s.typ == dns.TypeCNAME && s.name == cur {
			continue
		}
		res = worse(res, r.signed(s, &wild))
		if res.Security == Bogus || res.Security == Indeterminate {
			return res
		}
	}
	if found && resp.Rcode == dns.RcodeNameError {
		return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: "NXDOMAIN with an answer"}
	}
	if found && len(wild) == 0 {
		return res
	}
	if !found && res.Security == Insecure && len(wild) == 0 {
		// The chain left the signed tree: the end of it is insecure.
		return res
	}
	// Negative answer at cur, or wildcard expansions: check the proofs.
	p := r.proofs(resp, zoneState{})
	if p.none {
		st := r.walk(cur)
		if st.sec == Insecure || st.sec == Indeterminate {
			if len(wild) == 0 {
				return worse(res, result(st))
			}
		}
		if st.sec == Bogus {
			return result(st)
		}
		return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeNSECMissing, Reason: "no NSEC or NSEC3 proof for " + cur}
	}
	if p.st.sec != Secure {
		return worse(res, result(p.st))
	}
	for _, s := range wild {
		// The proof must come from the wildcard's own zone: a child zone's
		// denial says nothing about the parent's names (the next closer
		// name could be the child's cut).
		if canon(s.signer.SignerName) != p.zone {
			return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeNSECMissing, Reason: "wildcard " + s.String() + " with a proof from " + p.zone}
		}
		switch p.wildcard(s.name, s.signer.Labels) {
		case denyOK:
		case denyInsecure:
			res = worse(res, Result{Security: Insecure, Reason: "wildcard proven by an NSEC3 opt-out span"})
		case denyIterations:
			res = worse(res, Result{Security: Insecure, EDE: dns.ExtendedErrorCodeUnsupportedNSEC3IterValue, Reason: "NSEC3 iterations above 150"})
		default:
			return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeNSECMissing, Reason: "no proof that " + s.name + " is a wildcard expansion"}
		}
	}
	if found {
		return res
	}
	if !dns.IsSubDomain(p.zone, cur) {
		return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeNSECMissing, Reason: "proof from " + p.zone + " for " + cur}
	}
	switch p.deny(cur, qtype, resp.Rcode == dns.RcodeNameError) {
	case denyOK:
		return res
	case denyInsecure:
		return worse(res, Result{Security: Insecure, Reason: "NSEC3 opt-out span"})
	case denyIterations:
		return worse(res, Result{Security: Insecure, EDE: dns.ExtendedErrorCodeUnsupportedNSEC3IterValue, Reason: "NSEC3 iterations above 150"})
	}
	what := "NODATA"
	if resp.Rcode == dns.RcodeNameError {
		what = "NXDOMAIN"
	}
	return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeNSECMissing, Reason: "no valid " + what + " proof for " + cur + "/" + dns.TypeToString[qtype]}
}

func anyAt(sets *rrsets, name string) bool {
	for _, s := range sets.sets() {
		if s.name == name {
			return true
		}
	}
	return false
}

// dnameFor returns a DNAME RRset at a proper ancestor of name.
func dnameFor(sets *rrsets, name string) *rrset {
	for _, s := range sets.sets() {
		if s.typ == dns.TypeDNAME && len(s.rrs) == 1 && s.name != name && dns.IsSubDomain(s.name, name) {
			return s
		}
	}
	return nil
}

// signed validates one answer RRset: its signer's zone must be secure and
// one of its signatures must verify; an unsigned RRset is fine only in an
// insecure zone. A wildcard expansion is noted in wild for its proof.
func (r *run) signed(s *rrset, wild *[]*rrset) Result {
	signer := ""
	for _, sig := range s.sigs {
		if sn := canon(sig.SignerName); dns.IsSubDomain(sn, s.name) {
			signer = sn
			break
		}
	}
	if signer == "" {
		st := r.walk(s.name)
		if st.sec != Secure {
			return result(st)
		}
		return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeRRSIGsMissing, Reason: "no RRSIG over " + s.String()}
	}
	st := r.walk(signer)
	if st.sec != Secure {
		return result(st)
	}
	if st.zone != signer {
		return Result{Security: Bogus, EDE: dns.ExtendedErrorCodeDNSBogus, Reason: s.String() + " signed by " + signer + ", which is not a zone apex"}
	}
	res, ttl := r.verify(s, st)
	if res.sec != Secure {
		return result(res)
	}
	r.capTTL(ttl)
	if int(s.signer.Labels) < dns.CountLabel(s.name) {
		*wild = append(*wild, s)
	}
	return Result{Security: Secure}
}
