package policy

import "strings"

// Terms are the terms a query is answered under: its device's. Every
// device is answered under Lenient terms unless it is held to Strict
// ones. This is the one place that says what "strict" means; the parts
// that apply it ask Terms, not a flag of their own.
//
// Who is strict (guard/device decides, per device): a device whose class
// has `option strict '1'`, or whose override says strict, or which the
// guard graded weak (its transaction IDs or source ports too clustered
// for a uniform 16-bit source), until it is graded random again on fresh
// evidence (after a day) or an override says otherwise.
//
// What strict terms change, and nothing else:
//
//   - Class and rate. A device graded weak whose own class is not strict
//     is put in the first strict, non-exempt class of the configuration,
//     and takes that class's rate and burst; with no such class it is in
//     class "strict" at the global device_rate. There is no built-in lower
//     rate: a strict class's rate is what its configuration says.
//   - Interception. A strict device is never exempt (its queries to other
//     resolvers are always redirected to the guard).
//   - 0x20 (Case0x20). Its questions go to cleartext upstreams (udp://,
//     tcp://) with 0x20 case randomisation, whatever randomize_case says;
//     an answer in another case is asked again without 0x20 and used only
//     if both agree. DoT and DoH upstreams and the local server are asked
//     as for anyone.
//   - The shield (MinimalShield). After the ordinary checks, an answer
//     keeps only what a stub needs: no additional section, and no
//     authority section with a positive answer (guard/validate's strict
//     check), for the upstreams' answers and the local server's alike. In
//     the stored answer a device gets (the answer section and a negative
//     answer's SOA) this shows only for DNSSEC-aware queries (DO=1): a
//     positive answer without the NSEC/NSEC3 proof of a wildcard.
//
// Stale answers (RFC 8767), DNSSEC validation, TTL bounds and local names
// are the same under both terms.
//
// The cache and its coalescing keep a strict query's answers apart from
// lenient ones exactly where strict terms can change the answer
// (OwnAnswers): a DO=1 query (the shield), and any query when the
// configuration asks cleartext upstreams without 0x20 for lenient ones
// (0x20 refuses answers, forged ones among them, that a lenient query
// would take). Elsewhere both get the same answer, and share it.
type Terms uint8

const (
	Lenient Terms = iota // every device's terms
	Strict               // a device held to strict terms
)

// TermsOf returns Strict for a strict device, else Lenient.
func TermsOf(strict bool) Terms {
	if strict {
		return Strict
	}
	return Lenient
}

func (t Terms) String() string {
	if t == Strict {
		return "strict"
	}
	return "lenient"
}

// Case0x20 reports whether questions under t go to cleartext upstreams
// with 0x20 whatever randomize_case says.
func (t Terms) Case0x20() bool { return t == Strict }

// MinimalShield reports whether answers under t are cut to what a stub
// needs (guard/validate's strict check).
func (t Terms) MinimalShield() bool { return t == Strict }

// OwnAnswers reports whether a query under t, with DO set as do, must
// not share answers (cached, or in flight) with lenient queries: whether
// strict terms can change its answer under a configuration whose
// strictness is s.
func (t Terms) OwnAnswers(do bool, s Strictness) bool {
	return t == Strict && (do || s.Case0x20Differs)
}

// Strictness is what strict terms change under one configuration,
// besides what they change for every configuration (the shield).
type Strictness struct {
	// Case0x20Differs: some upstream is cleartext and randomize_case is
	// off, so strict questions go out with 0x20 and lenient ones without.
	Case0x20Differs bool
}

// Strictness returns what strict terms change under c.
func (c *Config) Strictness() Strictness {
	if c.Randomize0x20 {
		return Strictness{}
	}
	for _, u := range c.Upstreams {
		if cleartextUpstream(u) {
			return Strictness{Case0x20Differs: true}
		}
	}
	return Strictness{}
}

// cleartextUpstream reports whether an upstream URL is Do53 (udp://,
// tcp://), the transports that use 0x20.
func cleartextUpstream(u string) bool {
	u = strings.ToLower(strings.TrimSpace(u))
	return strings.HasPrefix(u, "udp://") || strings.HasPrefix(u, "tcp://")
}
