package dnssec

import (
	"context"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// run is the state of one validation: its bounds and clock.
type run struct {
	v         *Validator
	ctx       context.Context
	now       time.Time
	checkTime bool
	queries   int
	sigs      int
	limit     string        // set when a bound was reached
	ttl       time.Duration // the answer's TTL cap so far; < 0: none
}

// capTTL lowers the answer's TTL cap to d (RFC 4035 §5.3.3: a validated
// RRset lives no longer than its signature's original TTL and expiry).
func (r *run) capTTL(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if r.ttl < 0 || d < r.ttl {
		r.ttl = d
	}
}

func (v *Validator) newRun(ctx context.Context) *run {
	r := &run{v: v, ctx: ctx, now: v.cfg.Now(), checkTime: true, ttl: -1}
	if v.cfg.TimeTrusted != nil {
		r.checkTime = v.cfg.TimeTrusted()
	}
	return r
}

func indeterminate(reason string) zoneState {
	return zoneState{sec: Indeterminate, ede: dns.ExtendedErrorCodeDNSSECIndeterminate, reason: reason}
}

func bogus(ede uint16, reason string) zoneState {
	return zoneState{sec: Bogus, ede: ede, reason: reason}
}

// fetch asks the upstream name/qtype with DO=1 and CD=1 (the validator
// checks the data itself, so a validating upstream must not hide it).
func (r *run) fetch(name string, qtype uint16) (*dns.Msg, error) {
	if r.queries >= r.v.cfg.MaxQueries {
		r.v.limits.Add(1)
		r.limit = "upstream query limit reached"
		return nil, errLimit
	}
	r.queries++
	// Validations that need the same record at once share one upstream
	// query (the answer is only read).
	v, err, _ := r.v.flight.Do(name+"/"+dns.TypeToString[qtype], func() (any, error) {
		r.v.queries.Add(1)
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		q.RecursionDesired = true
		q.CheckingDisabled = true
		q.SetEdns0(1232, true)
		return r.v.ex.Exchange(r.ctx, q)
	})
	if err != nil {
		return nil, err
	}
	resp, _ := v.(*dns.Msg)
	if resp == nil || len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, name) || resp.Question[0].Qtype != qtype {
		return nil, errMismatch
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, errRcode
	}
	return resp, nil
}

type valErr string

func (e valErr) Error() string { return string(e) }

const (
	errLimit    = valErr("upstream query limit reached")
	errMismatch = valErr("upstream answered another question")
	errRcode    = valErr("upstream failed")
)

// walk returns the state of the zone enclosing target (as the DS step
// at target leaves it): every zone cut between the closest trust anchor
// and target is seen and every insecure delegation is proven by its
// parent.
func (r *run) walk(target string) zoneState {
	target = canon(target)
	if r.v.underNTA(target) {
		return zoneState{sec: Insecure, reason: "negative trust anchor"}
	}
	anchor, ok := r.v.anchorFor(target)
	if !ok {
		return zoneState{sec: Insecure, reason: "no trust anchor"}
	}
	return r.zoneAt(anchor, target, 0)
}

// zoneAt is walk below anchor. An ancestor already known to be insecure
// or bogus settles it with no query. Otherwise the DS of n is asked first:
// its signer P (the DS's, or the denial's) names the zone that holds n's
// cut, and P's own state is found the same way, so the labels between
// cuts cost nothing (a signed zone deep under ip6.arpa). When the answer
// names no usable P, every label from the anchor down is asked in turn.
func (r *run) zoneAt(anchor, n string, depth int) zoneState {
	if n == anchor {
		return r.anchorKeys(anchor)
	}
	if c, ok := r.v.lookup(n, r.now); ok {
		return c
	}
	labels := dns.Split(n)
	for i := len(labels) - dns.CountLabel(anchor) - 1; i > 0; i-- {
		if c, ok := r.v.lookup(n[labels[i]:], r.now); ok && c.sec != Secure {
			return c
		}
	}
	if depth >= r.v.cfg.MaxDepth {
		r.v.limits.Add(1)
		r.limit = "chain depth limit reached"
		return indeterminate(r.limit)
	}
	resp, err := r.fetch(n, dns.TypeDS)
	if err != nil {
		return indeterminate("DS " + n + ": " + err.Error())
	}
	if p := dsSigner(resp, n, anchor); p != "" {
		pst := r.zoneAt(anchor, p, depth+1)
		if pst.sec != Secure {
			return pst
		}
		if pst.zone == p {
			st, ttl := r.stepWith(pst, n, resp)
			r.v.store(n, st, ttl, r.now)
			return st
		}
	}
	return r.labelWalk(anchor, n, resp)
}

// dsSigner returns the zone that signed resp, the answer to n's DS query:
// a proper ancestor of n at or below anchor, or "".
func dsSigner(resp *dns.Msg, n, anchor string) string {
	for _, sec := range [][]dns.RR{resp.Answer, resp.Ns} {
		for _, rr := range sec {
			sig, ok := rr.(*dns.RRSIG)
			if !ok {
				continue
			}
			switch sig.TypeCovered {
			case dns.TypeDS, dns.TypeCNAME, dns.TypeNSEC, dns.TypeNSEC3:
			default:
				continue
			}
			if s := canon(sig.SignerName); s != n && dns.IsSubDomain(s, n) && dns.IsSubDomain(anchor, s) {
				return s
			}
		}
	}
	return ""
}

// labelWalk asks the DS of every label from anchor down to n (each result
// cached, even if this validation runs out of queries) and stops at the
// first insecure or bogus link; last is the answer to n's own DS query.
// MaxDepth bounds the zones in the chain.
func (r *run) labelWalk(anchor, n string, last *dns.Msg) zoneState {
	st := r.anchorKeys(anchor)
	if st.sec != Secure {
		return st
	}
	below := dns.CountLabel(n) - dns.CountLabel(anchor)
	labels := dns.Split(n)
	zones := 0
	for i := below - 1; i >= 0; i-- {
		name := n[labels[i]:]
		prev := st.zone
		if c, ok := r.v.lookup(name, r.now); ok {
			st = c
		} else {
			var ttl time.Duration
			if i == 0 && last != nil {
				st, ttl = r.stepWith(st, name, last)
			} else {
				st, ttl = r.step(st, name)
			}
			r.v.store(name, st, ttl, r.now)
		}
		if st.sec != Secure {
			return st
		}
		if st.zone != prev {
			if zones++; zones > r.v.cfg.MaxDepth {
				r.v.limits.Add(1)
				r.limit = "chain depth limit reached"
				return indeterminate(r.limit)
			}
		}
	}
	return st
}

// anchorKeys returns the validated keys of an anchor zone.
func (r *run) anchorKeys(zone string) zoneState {
	key := "\x00anchor " + zone
	if c, ok := r.v.lookup(key, r.now); ok {
		return c
	}
	anchors := r.v.anchors[zone]
	var ds []*dns.DS
	var keys []*dns.DNSKEY
	for _, a := range anchors {
		switch a := a.(type) {
		case *dns.DS:
			ds = append(ds, a)
		case *dns.DNSKEY:
			keys = append(keys, a)
		}
	}
	keys = append(keys, r.v.cfg.Tracker.Trusted(zone)...)
	st, ttl := r.dnskeysFor(zone, ds, keys, true)
	r.v.store(key, st, ttl, r.now)
	return st
}

// step processes the DS of n below the secure zone st.
func (r *run) step(st zoneState, n string) (zoneState, time.Duration) {
	resp, err := r.fetch(n, dns.TypeDS)
	if err != nil {
		return indeterminate("DS " + n + ": " + err.Error()), 0
	}
	return r.stepWith(st, n, resp)
}

// stepWith is step with resp, the answer to n's DS query.
func (r *run) stepWith(st zoneState, n string, resp *dns.Msg) (zoneState, time.Duration) {
	sets := collect(resp.Answer)
	if s := sets.get(n, dns.TypeDS); s != nil {
		res, ttl := r.verify(s, st)
		if res.sec != Secure {
			return res, ttl
		}
		var ds []*dns.DS
		algs, digests := false, false
		for _, rr := range s.rrs {
			d := rr.(*dns.DS)
			algs = algs || supportedAlg(d.Algorithm)
			digests = digests || supportedDigest(d.DigestType)
			if supportedAlg(d.Algorithm) && supportedDigest(d.DigestType) {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			// RFC 6840 §5.2: no DS this validator can use: insecure.
			if !algs {
				return zoneState{sec: Insecure, ede: dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, reason: n + ": unsupported DNSKEY algorithm"}, ttl
			}
			return zoneState{sec: Insecure, ede: dns.ExtendedErrorCodeUnsupportedDSDigestType, reason: n + ": unsupported DS digest"}, ttl
		}
		ks, kttl := r.dnskeys(n, ds, nil)
		return ks, min(ttl, kttl)
	}
	if s := sets.get(n, dns.TypeCNAME); s != nil {
		// A CNAME is never at a zone cut: n is inside st's zone.
		res, ttl := r.verify(s, st)
		if res.sec != Secure {
			return res, ttl
		}
		return st, ttl
	}
	// No DS: the zone st must prove it (RFC 4035 §5.2, RFC 5155 §8.6).
	p := r.proofs(resp, st)
	if p.st.sec != Secure {
		return p.st, p.ttl
	}
	switch res := p.denyDS(n, resp.Rcode); res {
	case dsCut:
		return zoneState{sec: Insecure, reason: n + ": unsigned delegation"}, p.ttl
	case dsOptOut:
		return zoneState{sec: Insecure, reason: n + ": NSEC3 opt-out span"}, p.ttl
	case dsNoCut, dsNoName:
		return st, p.ttl
	case dsIterations:
		return zoneState{sec: Insecure, ede: dns.ExtendedErrorCodeUnsupportedNSEC3IterValue, reason: n + ": NSEC3 iterations above 150"}, p.ttl
	default:
		if p.none {
			return bogus(dns.ExtendedErrorCodeNSECMissing, "no proof that "+n+" has no DS"), 0
		}
		return bogus(dns.ExtendedErrorCodeDNSBogus, "DS denial for "+n+" does not prove it"), 0
	}
}

// dnskeys fetches zone's DNSKEY RRset and validates it against ds (DS
// records from the parent or anchors) or the trusted keys.
func (r *run) dnskeys(zone string, ds []*dns.DS, trusted []*dns.DNSKEY) (zoneState, time.Duration) {
	return r.dnskeysFor(zone, ds, trusted, false)
}

// dnskeysFor is dnskeys; for an anchor zone (anchor) revoked keys are
// left out and the validated RRset is shown to the RFC 5011 tracker.
func (r *run) dnskeysFor(zone string, ds []*dns.DS, trusted []*dns.DNSKEY, anchor bool) (zoneState, time.Duration) {
	resp, err := r.fetch(zone, dns.TypeDNSKEY)
	if err != nil {
		return indeterminate("DNSKEY " + zone + ": " + err.Error()), 0
	}
	s := collect(resp.Answer).get(zone, dns.TypeDNSKEY)
	if s == nil {
		return bogus(dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY for "+zone), 0
	}
	var sep []*dns.DNSKEY
	for _, rr := range s.rrs {
		k := rr.(*dns.DNSKEY)
		if k.Protocol != 3 || k.Flags&dns.ZONE == 0 || k.Flags&dns.REVOKE != 0 {
			continue
		}
		if anchor && r.v.cfg.Tracker.Revoked(zone, k) {
			continue // RFC 5011 §2.1: a revoked key is no anchor
		}
		for _, d := range ds {
			if d.KeyTag != k.KeyTag() || d.Algorithm != k.Algorithm {
				continue
			}
			if kd := k.ToDS(d.DigestType); kd != nil && strings.EqualFold(kd.Digest, d.Digest) {
				sep = append(sep, k)
				break
			}
		}
		for _, t := range trusted {
			if t.Algorithm == k.Algorithm && t.Flags == k.Flags && t.Protocol == k.Protocol && t.PublicKey == k.PublicKey {
				sep = append(sep, k)
				break
			}
		}
	}
	if len(sep) == 0 {
		if len(trusted) > 0 {
			// A DNSKEY anchor may be of any algorithm; if none of ours
			// matches, the key is gone.
			return bogus(dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY of "+zone+" matches its trust anchor"), 0
		}
		return bogus(dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY of "+zone+" matches its DS"), 0
	}
	if len(trusted) > 0 && len(ds) == 0 {
		// DNSKEY anchors of an unsupported algorithm only: insecure.
		ok := false
		for _, k := range sep {
			ok = ok || supportedAlg(k.Algorithm)
		}
		if !ok {
			return zoneState{sec: Insecure, ede: dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, reason: zone + ": unsupported anchor algorithm"}, r.v.cfg.MaxTTL
		}
	}
	res, ttl := r.verifyWith(s, zone, sep)
	if res.sec != Secure {
		return res, ttl
	}
	if anchor && r.checkTime {
		r.v.cfg.Tracker.observe(zone, s, r.now, r.checkTime, sep)
	}
	var keys []*dns.DNSKEY
	for _, rr := range s.rrs {
		k := rr.(*dns.DNSKEY)
		if k.Protocol == 3 && k.Flags&dns.ZONE != 0 && k.Flags&dns.REVOKE == 0 && supportedAlg(k.Algorithm) {
			keys = append(keys, k)
		}
	}
	return zoneState{sec: Secure, zone: zone, keys: keys}, ttl
}

// verify checks an RRset signed by the secure zone st.
func (r *run) verify(s *rrset, st zoneState) (zoneState, time.Duration) {
	return r.verifyWith(s, st.zone, st.keys)
}

// verifyWith checks that one of s's signatures by zone verifies with one
// of keys at the validator's time. The duration is how long the result
// may be kept (the RRset's TTL, bounded by the signature's original TTL
// and expiration).
func (r *run) verifyWith(s *rrset, zone string, keys []*dns.DNSKEY) (zoneState, time.Duration) {
	if len(s.sigs) == 0 {
		return bogus(dns.ExtendedErrorCodeRRSIGsMissing, "no RRSIG over "+s.String()), 0
	}
	var ede uint16
	reason := ""
	for _, sig := range s.sigs {
		if canon(sig.SignerName) != zone || !supportedAlg(sig.Algorithm) {
			continue
		}
		for _, k := range keys {
			if k.KeyTag() != sig.KeyTag || k.Algorithm != sig.Algorithm {
				continue
			}
			if r.checkTime && !sig.ValidityPeriod(r.now) {
				if !before(r.now, sig.Inception) {
					ede, reason = dns.ExtendedErrorCodeSignatureExpired, "signature over "+s.String()+" expired"
				} else if ede == 0 {
					ede, reason = dns.ExtendedErrorCodeSignatureNotYetValid, "signature over "+s.String()+" not yet valid"
				}
				continue
			}
			key := sigKey(sig, k, s.rrs)
			if r.v.verified.has(key) {
				r.v.sigHits.Add(1)
			} else {
				if r.sigs >= r.v.cfg.MaxSignatures {
					r.v.limits.Add(1)
					r.limit = "signature check limit reached"
					return indeterminate(r.limit), 0
				}
				r.sigs++
				r.v.signatures.Add(1)
				if err := sig.Verify(k, s.rrs); err != nil {
					ede, reason = dns.ExtendedErrorCodeDNSBogus, "signature over "+s.String()+" does not verify"
					continue
				}
				r.v.verified.add(key)
			}
			s.signer = sig
			ttl := time.Duration(min(s.ttl(), sig.OrigTtl)) * time.Second
			if r.checkTime {
				if left := time.Unix(expiry(r.now, sig.Expiration), 0).Sub(r.now); left < ttl {
					ttl = left
				}
			}
			return zoneState{sec: Secure, zone: zone}, ttl
		}
	}
	if ede == 0 {
		return bogus(dns.ExtendedErrorCodeDNSKEYMissing, "no key of "+zone+" for the signatures over "+s.String()), 0
	}
	return bogus(ede, reason), 0
}

// before reports whether now is before the RFC 1982 time t.
func before(now time.Time, t uint32) bool {
	return int32(t-uint32(now.Unix())) > 0
}

// expiry returns the Unix time of the RFC 1982 time t nearest to now.
func expiry(now time.Time, t uint32) int64 {
	return now.Unix() + int64(int32(t-uint32(now.Unix())))
}
