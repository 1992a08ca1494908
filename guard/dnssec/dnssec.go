// Package dnssec validates DNS answers (RFC 4033-4035, 5155, 6840) the way
// a validating forwarder does: every RRset of an answer is checked against
// a chain of trust that starts at the configured trust anchors (the root's
// KSK-2017 and KSK-2024 by default) and is built from DS and DNSKEY records
// fetched through an Exchanger (the upstream pool, DO=1, CD=1), cached for
// their TTL. Negative answers, wildcard expansions and insecure
// delegations need NSEC or NSEC3 proofs (RFC 4035 §5.4, RFC 5155 §8,
// RFC 7129).
//
// Algorithms 8, 10, 13, 14 and 15 and DS digests 2 and 4 are supported; a
// zone whose DS records use only other algorithms or digests is insecure
// (RFC 6840 §5.2), and so is an NSEC3 proof above 150 iterations (RFC 9276,
// EDE 27). The cryptography is miekg/dns's (RRSIG.Verify, DNSKEY.ToDS).
//
// Validation is bounded: upstream queries per validation, zones in a
// chain, signatures checked per answer and cached zones are all capped and
// counted. Signatures that verified are remembered (the same signed data
// is not checked twice), and a Tracker follows the anchors' key rollovers
// (RFC 5011).
package dnssec

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Security is a validation verdict (RFC 4033 §5).
type Security uint8

const (
	// Indeterminate: the validator could not decide (upstream failure,
	// work bounds reached).
	Indeterminate Security = iota
	// Bogus: a trust anchor covers the data but its proof fails.
	Bogus
	// Insecure: the data is proven to lie outside any chain of trust
	// (unsigned delegation, unsupported algorithm, negative trust anchor).
	Insecure
	// Secure: every RRset is proven by a chain from a trust anchor.
	Secure
)

func (s Security) String() string {
	switch s {
	case Secure:
		return "secure"
	case Insecure:
		return "insecure"
	case Bogus:
		return "bogus"
	default:
		return "indeterminate"
	}
}

// Result is the verdict on one answer. EDE is the RFC 8914 code that goes
// with it (6-10, 12 for bogus data, 27 for an insecure NSEC3 above the
// iteration limit, 1 or 2 for an unsupported algorithm or digest, 5 for
// indeterminate); Reason is a short text for logs and the EDE text.
type Result struct {
	Security Security
	EDE      uint16
	Reason   string
	// Capped says a secure answer's records may live at most TTLCap
	// seconds (RFC 4035 §5.3.3: the signatures' original TTLs and the
	// time left before they expire).
	Capped bool
	TTLCap uint32
}

func (r Result) String() string {
	if r.Reason == "" {
		return r.Security.String()
	}
	return r.Security.String() + ": " + r.Reason
}

// Exchanger resolves one question through a recursive upstream.
type Exchanger interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// Config holds the validator's settings; the zero value is usable.
type Config struct {
	// Anchors are DS or DNSKEY records; nil means the built-in root anchors.
	Anchors []dns.RR
	// NegativeAnchors are names below which nothing is validated (RFC 7646).
	NegativeAnchors []string
	// Now is the validator's clock (default time.Now).
	Now func() time.Time
	// TimeTrusted reports whether Now can be trusted; while it returns
	// false signature validity windows are not checked (a router without
	// a real-time clock before NTP has synced). Nil means always trusted.
	TimeTrusted func() bool
	// Tracker, if set, follows the anchor zones' key rollovers (RFC 5011).
	Tracker *Tracker
	// MaxQueries bounds the upstream queries of one validation (default 16).
	MaxQueries int
	// MaxDepth bounds the zones in a chain below its trust anchor (default 12).
	MaxDepth int
	// MaxSignatures bounds the signature checks of one validation (default 32).
	MaxSignatures int
	// CacheSize bounds the cached zone states (default 1024).
	CacheSize int
	// BogusTTL is how long a failed chain link is remembered (default 60 s,
	// unbound's val-bogus-ttl).
	BogusTTL time.Duration
	// MaxTTL caps how long a key or delegation state is cached (default 1 h).
	MaxTTL time.Duration
}

// Stats are the validator's counters.
type Stats struct {
	Validations, Secure, Insecure, Bogus, Indeterminate uint64
	Queries, Signatures, CacheHits, CacheEvictions      uint64
	LimitHits, SignatureCacheHits                       uint64
}

// Validator validates answers; it is safe for concurrent use.
type Validator struct {
	ex      Exchanger
	cfg     Config
	anchors map[string][]dns.RR // canonical zone -> DS/DNSKEY anchors
	ntas    []string

	mu       sync.Mutex
	cache    map[string]cached  // canonical name -> zone state after its DS step
	verified *sigCache          // signatures that verified
	flight   singleflight.Group // key queries in progress

	validations, secure, insecure, bogus, indeterminate atomic.Uint64
	queries, signatures, hits, evictions, limits        atomic.Uint64
	sigHits                                             atomic.Uint64
}

// RootAnchors are the root zone's trust anchors as DS records
// (https://data.iana.org/root-anchors/root-anchors.xml): KSK-2017 and
// KSK-2024.
const RootAnchors = `. 0 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. 0 IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16`

// ParseAnchors reads DS or DNSKEY records in presentation format, one per
// string (the `list trust_anchor` values).
func ParseAnchors(lines []string) ([]dns.RR, error) {
	var out []dns.RR
	for _, l := range lines {
		for _, line := range strings.Split(l, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, ";") {
				continue
			}
			rr, err := policy.ParseTrustAnchor(line)
			if err != nil {
				return nil, fmt.Errorf("trust anchor %q: %w", line, err)
			}
			switch a := rr.(type) {
			case *dns.DS:
			case *dns.DNSKEY:
				if a.Flags&dns.ZONE == 0 || a.Protocol != 3 {
					return nil, fmt.Errorf("trust anchor %q: not a zone key", line)
				}
			default:
				return nil, fmt.Errorf("trust anchor %q: want a DS or DNSKEY record", line)
			}
			out = append(out, rr)
		}
	}
	return out, nil
}

// New returns a validator that fetches keys through ex.
func New(ex Exchanger, cfg Config) (*Validator, error) {
	if ex == nil {
		return nil, errors.New("dnssec: nil exchanger")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxQueries <= 0 {
		cfg.MaxQueries = 16
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = 12
	}
	if cfg.MaxSignatures <= 0 {
		cfg.MaxSignatures = 32
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	if cfg.BogusTTL <= 0 {
		cfg.BogusTTL = 60 * time.Second
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = time.Hour
	}
	anchors := cfg.Anchors
	if anchors == nil {
		var err error
		if anchors, err = ParseAnchors([]string{RootAnchors}); err != nil {
			return nil, err
		}
	}
	if len(anchors) == 0 {
		return nil, errors.New("dnssec: no trust anchors")
	}
	v := &Validator{ex: ex, cfg: cfg, anchors: map[string][]dns.RR{}, cache: map[string]cached{}, verified: newSigCache(cfg.CacheSize)}
	for _, a := range anchors {
		switch a.(type) {
		case *dns.DS, *dns.DNSKEY:
		default:
			return nil, fmt.Errorf("dnssec: trust anchor %s: want DS or DNSKEY", a)
		}
		z := canon(a.Header().Name)
		v.anchors[z] = append(v.anchors[z], a)
	}
	for _, n := range cfg.NegativeAnchors {
		if _, ok := dns.IsDomainName(n); !ok {
			return nil, fmt.Errorf("dnssec: insecure domain %q: not a domain name", n)
		}
		v.ntas = append(v.ntas, canon(n))
	}
	return v, nil
}

// Stats returns the counters.
func (v *Validator) Stats() Stats {
	return Stats{
		Validations: v.validations.Load(), Secure: v.secure.Load(), Insecure: v.insecure.Load(),
		Bogus: v.bogus.Load(), Indeterminate: v.indeterminate.Load(),
		Queries: v.queries.Load(), Signatures: v.signatures.Load(), CacheHits: v.hits.Load(),
		CacheEvictions: v.evictions.Load(), LimitHits: v.limits.Load(), SignatureCacheHits: v.sigHits.Load(),
	}
}

// Covered reports whether name lies under a trust anchor and outside every
// negative trust anchor, i.e. whether its answers can be secure.
func (v *Validator) Covered(name string) bool {
	name = canon(name)
	if v.underNTA(name) {
		return false
	}
	_, ok := v.anchorFor(name)
	return ok
}

func (v *Validator) underNTA(name string) bool {
	for _, n := range v.ntas {
		if dns.IsSubDomain(n, name) {
			return true
		}
	}
	return false
}

// anchorFor returns the closest anchor zone at or above name.
func (v *Validator) anchorFor(name string) (string, bool) {
	best, found := "", false
	for z := range v.anchors {
		if dns.IsSubDomain(z, name) && (!found || dns.CountLabel(z) > dns.CountLabel(best)) {
			best, found = z, true
		}
	}
	return best, found
}

// zoneState is what the chain walk knows about the zone enclosing a name.
type zoneState struct {
	sec    Security
	zone   string        // the enclosing zone's apex (when secure)
	keys   []*dns.DNSKEY // its validated keys (when secure)
	ede    uint16
	reason string
}

type cached struct {
	st      zoneState
	expires time.Time
}

func (v *Validator) lookup(name string, now time.Time) (zoneState, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.cache[name]
	if !ok {
		return zoneState{}, false
	}
	if !now.Before(c.expires) {
		delete(v.cache, name)
		return zoneState{}, false
	}
	v.hits.Add(1)
	return c.st, true
}

func (v *Validator) store(name string, st zoneState, ttl time.Duration, now time.Time) {
	if st.sec == Indeterminate {
		return
	}
	if st.sec == Bogus {
		ttl = v.cfg.BogusTTL
	}
	ttl = min(ttl, v.cfg.MaxTTL)
	if ttl <= 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.cache[name]; !ok && len(v.cache) >= v.cfg.CacheSize {
		// Evict expired entries first, then arbitrary ones.
		for k, c := range v.cache {
			if !now.Before(c.expires) {
				delete(v.cache, k)
				v.evictions.Add(1)
			}
		}
		for k := range v.cache {
			if len(v.cache) < v.cfg.CacheSize {
				break
			}
			delete(v.cache, k)
			v.evictions.Add(1)
		}
	}
	v.cache[name] = cached{st: st, expires: now.Add(ttl)}
}

// FlushCache forgets every cached key and delegation state.
func (v *Validator) FlushCache() {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.cache)
	v.verified.mu.Lock()
	clear(v.verified.m)
	v.verified.mu.Unlock()
}

func canon(name string) string { return dns.CanonicalName(name) }

func supportedAlg(a uint8) bool {
	switch a {
	case dns.RSASHA256, dns.RSASHA512, dns.ECDSAP256SHA256, dns.ECDSAP384SHA384, dns.ED25519:
		return true
	}
	return false
}

func supportedDigest(d uint8) bool { return d == dns.SHA256 || d == dns.SHA384 }
