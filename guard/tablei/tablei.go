// Package tablei is the study's Table I (Losty et al., "From Lookup to
// Lockdown", 2026; ../shared/reference/study.md): its columns, the marks
// a cell takes, and the rules and thresholds behind the marks that more
// than one grader applies. Three graders fill it from different
// evidence: the live guard (guard/device, from the queries it serves and
// observes), the audit of captures (guard/audit) and the adversarial lab
// (guard/lab); with one Row and one set of thresholds a device is marked
// alike wherever it is graded.
package tablei

import (
	"strings"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// Mark is one cell of Table I.
type Mark string

// The marks. The study's table has only the first two; the graders add
// why a cell has neither.
const (
	Vulnerable Mark = "x"
	Resilient  Mark = "ok"
	// Unknown: the grader sees this column but has not seen enough yet.
	Unknown Mark = "?"
	// NotGraded: the grader cannot see this column at all (for the live
	// guard and the audit: the columns that need the lab's adversarial
	// resolver).
	NotGraded Mark = "-"
)

// Row is one device's row of Table I.
type Row struct {
	SecureDNS        Mark `json:"secure_dns"`
	RandomPort       Mark `json:"random_port"`
	RandomID         Mark `json:"random_id"`
	QueryConsistency Mark `json:"query_consistency"`
	ModifiedRR       Mark `json:"modified_rr_resilience"`
	ForgedTTL        Mark `json:"forged_ttl_resilience"`
	DoS              Mark `json:"dos_resilience"`
	// HardCodedResolver is no column of Table I: the study's finding
	// that 14 of 35 devices override the DHCP resolver (its §IV), graded
	// beside it by a grader that sees where queries go ("" elsewhere).
	HardCodedResolver Mark `json:"hard_coded_resolver,omitempty"`
}

// Columns names the seven columns of Table I in the study's order, the
// order of Row.Marks.
func Columns() []string {
	return []string{"secure DNS", "random port", "random ID", "query consistency", "modified RR", "forged TTL", "DoS"}
}

// Marks returns the seven Table I cells in the study's order.
func (r Row) Marks() []Mark {
	return []Mark{r.SecureDNS, r.RandomPort, r.RandomID, r.QueryConsistency, r.ModifiedRR, r.ForgedTTL, r.DoS}
}

// String is the seven cells, space-separated: "x x ok ? - - -".
func (r Row) String() string {
	var b strings.Builder
	for i, m := range r.Marks() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(string(m))
	}
	return b.String()
}

// Passive is the row of a device nothing is known of yet, as a grader
// that only watches traffic (the live guard, the audit) starts it: the
// columns it can grade Unknown, those that need the lab NotGraded.
func Passive() Row {
	return Row{SecureDNS: Unknown, RandomPort: Unknown, RandomID: Unknown, QueryConsistency: Unknown,
		ModifiedRR: NotGraded, ForgedTTL: NotGraded, DoS: NotGraded}
}

// SecureDNS marks the secure DNS column from whether a device sent any
// query in cleartext (port 53) and any over an encrypted transport (DoT,
// DoH, DoQ): a cleartext query is exposed (and a device that falls back to
// port 53 can be made to), only encrypted ones are resilient, neither is
// Unknown.
func SecureDNS(cleartext, encrypted bool) Mark {
	switch {
	case cleartext:
		return Vulnerable
	case encrypted:
		return Resilient
	}
	return Unknown
}

// Randomness marks the random port and random ID columns from the
// estimator's verdict (guard/entropy: constant, counter, narrow range,
// small set are weak).
func Randomness(v entropy.Verdict) Mark {
	switch v {
	case entropy.Weak:
		return Vulnerable
	case entropy.Random:
		return Resilient
	}
	return Unknown
}

// Query consistency (the study: "TTLs often ignored: names re-queried
// while still valid"). A repeat is a query for a name and type the device
// had an answer for; it is early when it comes more than TTLSlack before
// that answer's smallest TTL ran out. TTLs count whole seconds, and a
// device times its TTL from when it sent the query, a round trip before
// the grader saw the answer, so a device that re-asks exactly when the
// TTL ends is not early.
//
// The column is graded on at least MinRepeats repeats, and marked
// vulnerable when more than EarlyShare of them were early: a device that
// honours TTLs has almost none (a cache flushed by a restart, a second
// resolver library), one that ignores them has most (the IoT Sentinel
// captures: 50% to 100%).
const (
	TTLSlack   = time.Second
	MinRepeats = 3
	EarlyShare = 0.10
)

// Early reports whether a repeat sinceAnswer after the answer came, with
// the answer's smallest TTL ttl (seconds), came before the TTL ran out.
func Early(sinceAnswer time.Duration, ttl uint32) bool {
	return sinceAnswer < time.Duration(ttl)*time.Second-TTLSlack
}

// QueryConsistency marks the query consistency column from a device's
// early repeats of all its repeats.
func QueryConsistency(early, repeats int) Mark {
	switch {
	case repeats < MinRepeats:
		return Unknown
	case float64(early) > EarlyShare*float64(repeats):
		return Vulnerable
	}
	return Resilient
}
