package device

import (
	"fmt"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// gradeEvery: estimators are graded after every observation for the first
// gradeAlways values, then every gradeEvery-th, and once a device has
// given more than gradeEvery*gradeShare values, each time 1/gradeShare of
// its evidence is new: a verdict over n values moves only when a share of
// them has changed, and a grade (both estimators, under the registry's
// lock, on the query's path) costs microseconds that grow with the values
// seen, so a busy device is not graded thousands of times a minute for
// nothing (BenchmarkObserveGraded).
const (
	gradeAlways = 64
	gradeEvery  = 8
	gradeShare  = 64
)

// gradeDue says whether an estimator holding n values, ungraded for the
// last ungraded of them, is graded now.
func gradeDue(n uint64, ungraded uint32) bool {
	return n <= gradeAlways || uint64(ungraded) >= max(gradeEvery, n/gradeShare)
}

// strictReview: a device the guard graded weak is graded again on fresh
// evidence once it has been strict this long; it leaves the strict class
// when that evidence shows random values, so a weak grade (earned, or
// forced by traffic that looked like the device's) does not last for
// ever.
const strictReview = 24 * time.Hour

func (r *Registry) observeLocked(e *entry, o *Observation, now time.Time) {
	q := o.Query
	if q.EDNS.Present {
		e.rec.EDNSQueries++
	} else {
		e.rec.NoEDNSQueries++
	}
	if e.recent.retry(retransKey(r.seed, q), now.UnixNano()) {
		return // a retransmission is no evidence (retrans.go)
	}

	boot := e.rec.Boots
	if e.ids == nil {
		e.ids = entropy.NewWithBudget(r.bitmaps)
	}
	e.ids.Observe(q.ID, boot)
	if port := o.port(); port != 0 {
		if e.ports == nil {
			e.ports = entropy.NewWithBudget(r.bitmaps)
		}
		e.ports.Observe(port, boot)
	}
	e.rec.Observed++
	e.ungraded++
	if gradeDue(e.ids.N(), e.ungraded) { // the current evidence, not the lifetime count
		e.ungraded = 0
		r.gradeLocked(e, now)
	}
}

func result(e *entropy.Estimator) entropy.Result {
	if e == nil {
		return entropy.Result{Verdict: entropy.Insufficient, Reason: "no values seen"}
	}
	return e.Result()
}

// gradeLocked moves a device whose IDs or ports are weak to strict
// policy, and says so once; a device strict for strictReview is graded
// again on fresh evidence and leaves the strict class when that evidence
// is random.
func (r *Registry) gradeLocked(e *entry, now time.Time) {
	id, port := result(e.ids), result(e.ports)
	var why string
	switch {
	case id.Verdict == entropy.Weak && port.Verdict == entropy.Weak:
		why = fmt.Sprintf("transaction IDs weak (%s), source ports weak (%s)", id.Reason, port.Reason)
	case id.Verdict == entropy.Weak:
		why = fmt.Sprintf("transaction IDs weak (%s)", id.Reason)
	case port.Verdict == entropy.Weak:
		why = fmt.Sprintf("source ports weak (%s)", port.Reason)
	}
	rec := e.rec
	switch {
	case !rec.Strict:
		if why == "" {
			return
		}
		rec.Strict, rec.StrictReason, rec.StrictSince = true, why, now
		e.decision = r.cls.Decide(rec)
		r.log.Warn("device moved to the strict class", "device", rec.ID, "name", rec.Name(), "class", e.decision.Class, "why", why)
	case !rec.GradedSince.After(rec.StrictSince):
		// Strict on the evidence it was graded on: once that is old
		// enough, start collecting fresh evidence (the device stays
		// strict meanwhile).
		if now.Sub(rec.StrictSince) < strictReview {
			return
		}
		e.ids, e.ports = nil, nil
		rec.GradedSince = now
		r.log.Info("grading a strict device again on fresh evidence", "device", rec.ID, "strict_since", rec.StrictSince, "why", rec.StrictReason)
	case why != "":
		// Still weak: strict for another review period.
		rec.StrictReason, rec.StrictSince = why, now
		r.log.Debug("device still weak; stays strict", "device", rec.ID, "why", why)
	case id.Verdict == entropy.Random && (port.Verdict == entropy.Random || port.N == 0):
		rec.Strict, rec.StrictReason, rec.StrictSince = false, "", time.Time{}
		e.decision = r.cls.Decide(rec)
		r.log.Info("device graded random again; it leaves the strict class", "device", rec.ID, "name", rec.Name(), "class", e.decision.Class,
			"txid", id.Detail, "port", port.Detail)
	}
}
