// Package entropy grades how predictable a device's 16-bit DNS fields are
// (transaction IDs, UDP source ports), the way an off-path spoofer would
// see them (RFC 5452): a constant, a counter, values confined to a narrow
// range or a small set, or values that come back boot after boot.
//
// An Estimator is streaming and bounded, and small until its device has
// earned more: it keeps the distinct values seen so far as a sorted list
// (2 bytes a value) until there are more than sparseMax of them, then as
// one 8 KiB bitmap; two sets of heavy-hitter counters grown as values come
// (at most heavyK each); the last few values of the current boot and a few
// running sums. A fresh estimator is about 200 bytes. The same estimator
// serves the live guard (one per device and field, saved in the device
// store with MarshalBinary), the capture audit (one boot per capture file)
// and the lab.
//
// Grading is sequential: a field is weak as soon as its values are both
// shaped like one of the weaknesses (a constant, a counter, a narrow range,
// a small set, values that come back boot after boot) and improbable
// enough for a uniform 16-bit source: the chance that such a source would
// produce values this clustered is bounded from above (union bounds, see
// the p* functions) and must be below Alpha. So nine IDs 3, 4, 4, 5, 5, 6,
// 7, 7, 8 are weak (nine values in a window of six: chance below 1e-30),
// while a field is called random only after MinSamples values, enough for
// every weakness above to have shown.
//
// Beside the verdict it reports the study's figure: the standard deviation
// sigma of the values and bits = log2(sigma*sqrt(12)), which is about 16
// for values uniform over 0..65535. That figure cannot see a counter (IDs
// counting through 0..65535 have sigma near 18,900); the verdict can.
package entropy

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync/atomic"
)

// Verdict is the grade of one field of one device.
type Verdict string

// The three verdicts, spelled as the JSON report and the device store spell them.
const (
	Weak         Verdict = "weak"
	Random       Verdict = "random"
	Insufficient Verdict = "insufficient"
)

// Reasons a field is weak.
const (
	ReasonConstant    = "constant"
	ReasonCounter     = "counter"
	ReasonNarrowRange = "narrow range"
	ReasonSmallSet    = "small set"
	ReasonBootRepeats = "repeats across boots"
)

// Thresholds of the verdict. Each shape test fires only when the chance
// bound of its pattern under a uniform 16-bit source is at most Alpha, so
// a random source is called weak with a probability far below one in a
// million even though the live guard grades after every value (see the
// false-positive tests), while every weak device of the study and of the
// IoT Sentinel captures trips one.
const (
	// Alpha bounds the chance that a uniform source shows a pattern the
	// verdict calls weak, per test and per look.
	Alpha = 1e-9
	// MinSamples is the number of values below which a field is not
	// called random (it may be called weak sooner).
	MinSamples = 10
	// constantShare: one value carries at least this share of the samples.
	constantShare = 0.9
	// counterMaxStep is the largest forward step (mod 65536) from one of
	// the last recentLen values of the boot that counts as counting.
	counterMaxStep = 64
	recentLen      = 4
	// counterShare of the steps within boots must be counting steps.
	counterShare = 0.5
	// A counter is also told apart inside a narrow window when nearly
	// every step (directShare of at least directMinSteps) counts forward
	// from the value just before: values drawn at random in a window go
	// up only about half the time.
	directShare    = 0.9
	directMinSteps = 8
	// narrowSpan: every value lies in a circular window this wide (12 bits).
	narrowSpan = 4096
	// smallSetK most frequent values carry at least smallSetShare of the
	// samples...
	smallSetK     = 8
	smallSetShare = 0.8
	dominantShare = 0.1 // ...or one value carries this share.
	// A value seen in at least bootShareMin of the boots (and in at least
	// minBoots boots), when chance would put it in few.
	bootShareMin = 0.5
	minBoots     = 3
	// Or most boots (replayShare of them) mostly replay values seen before.
	replayShare = 0.5

	heavyK     = 32
	firstLen   = 4 // values at the start of each boot tracked on their own
	bitmapSize = 65536 / 64
	// sparseMax distinct values are kept as a sorted list (1 KiB); more
	// move to the bitmap (8 KiB).
	sparseMax = 512
)

// heavy is one heavy-hitter counter (the space-saving algorithm): count
// over-estimates the value's frequency by at most err.
type heavy struct {
	value    uint16
	count    uint64
	err      uint64
	boots    uint32 // boots in which the value was counted (a lower bound)
	lastBoot uint32
}

// hitters tracks the most frequent values in fixed space: every value more
// frequent than 1/heavyK of the stream is among them.
// The counters grow as distinct values come, up to heavyK.
type hitters struct {
	h []heavy
}

func (hs *hitters) observe(v uint16, boot uint32) {
	for i := range hs.h {
		h := &hs.h[i]
		if h.value == v {
			h.count++
			if h.lastBoot != boot {
				h.boots++
				h.lastBoot = boot
			}
			return
		}
	}
	if len(hs.h) < heavyK {
		hs.h = append(hs.h, heavy{value: v, count: 1, boots: 1, lastBoot: boot})
		return
	}
	low := 0
	for i := 1; i < heavyK; i++ {
		if hs.h[i].count < hs.h[low].count {
			low = i
		}
	}
	c := hs.h[low].count
	hs.h[low] = heavy{value: v, count: c + 1, err: c, boots: 1, lastBoot: boot}
}

// sorted returns the hitters, most frequent (lower bound) first.
func (hs *hitters) sorted() []heavy {
	top := make([]heavy, len(hs.h))
	copy(top, hs.h)
	for i := 1; i < len(top); i++ { // insertion sort of a few dozen
		for j := i; j > 0 && top[j].count-top[j].err > top[j-1].count-top[j-1].err; j-- {
			top[j], top[j-1] = top[j-1], top[j]
		}
	}
	return top
}

// Estimator accumulates one field of one device. The zero value is
// ready (New returns one). It grows with the distinct values it sees, to
// at most about 10 KiB.
type Estimator struct {
	n        uint64
	mean, m2 float64 // Welford's running mean and sum of squared deviations

	// Every value observed: a sorted list while there are at most
	// sparseMax, then a bitmap (and vals is nil).
	vals     []uint16
	seen     *[bitmapSize]uint64
	distinct uint32
	// budget, when set, is charged for the bitmap; refused one, the
	// estimator keeps its sparseMax values and records no new ones
	// (saturated).
	budget    *Budget
	saturated bool

	heavy hitters // over all values
	first hitters // over the first firstLen values of each boot

	// Boots. Values are expected boot by boot; a boot number different
	// from the current one starts a new boot.
	boots       uint32
	boot        uint32
	bootN       uint64 // values in the current boot
	bootHits    uint64 // of which seen before (in any boot)
	closedBoots uint32 // boots before the current one
	replayed    uint32 // of those, boots that mostly replayed earlier values

	// Counting: the last values of the current boot and the steps seen.
	recent  [recentLen]uint16
	nRecent int
	steps   uint64 // steps within boots with a non-zero difference
	small   uint64 // of which counting steps (from any of the recent values)
	direct  uint64 // of which counting steps from the previous value
}

// New returns an empty estimator.
func New() *Estimator { return &Estimator{} }

// Observe adds one value seen in the given boot (a device power-cycle or
// session index). Callers drop retransmissions (same question, ID and
// port) before calling.
func (e *Estimator) Observe(v uint16, boot uint32) {
	if e.n == 0 || boot != e.boot {
		e.closeBoot()
		e.boot = boot
		e.boots++
	}
	e.n++
	d := float64(v) - e.mean
	e.mean += d / float64(e.n)
	e.m2 += d * (float64(v) - e.mean)

	switch isNew, known := e.add(v); {
	case !known: // saturated: whether v was seen before is not known
	case isNew:
		e.distinct++
	default:
		e.bootHits++
	}
	e.bootN++

	e.observeStep(v)
	e.heavy.observe(v, boot)
	if e.bootN <= firstLen {
		e.first.observe(v, boot)
	}
}

// N is the number of values observed.
func (e *Estimator) N() uint64 { return e.n }

// add records v as seen and reports whether it is new; known is false
// when a saturated estimator cannot tell.
func (e *Estimator) add(v uint16) (isNew, known bool) {
	if e.seen != nil {
		w, b := v>>6, uint64(1)<<(v&63)
		if e.seen[w]&b != 0 {
			return false, true
		}
		e.seen[w] |= b
		return true, true
	}
	i, found := slices.BinarySearch(e.vals, v)
	if found {
		return false, true
	}
	if len(e.vals) < sparseMax {
		e.vals = slices.Insert(e.vals, i, v)
		return true, true
	}
	if e.budget != nil && !e.budget.take(false) {
		e.saturated = true
		return false, false
	}
	seen := new([bitmapSize]uint64)
	for _, x := range e.vals {
		seen[x>>6] |= 1 << (x & 63)
	}
	seen[v>>6] |= 1 << (v & 63)
	e.useBitmap(seen)
	return true, true
}

// useBitmap makes seen the estimator's set of values; its budget, if
// any, was charged and is given back when the bitmap is collected.
func (e *Estimator) useBitmap(seen *[bitmapSize]uint64) {
	e.seen, e.vals = seen, nil
	if e.budget != nil {
		runtime.AddCleanup(seen, func(b *Budget) { b.used.Add(-1) }, e.budget)
	}
}

// Budget bounds how many of the estimators sharing it hold an 8 KiB
// bitmap at once (the live guard's registry: a LAN full of busy devices,
// or of MACs the neighbour table confirms, must not make every estimator
// grow one). An estimator refused one stays saturated: it keeps its
// first sparseMax distinct values and records no new ones, so its replay
// and distinct figures stop growing; every other part of it goes on.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of max bitmaps.
func NewBudget(max int) *Budget { return &Budget{max: int64(max)} }

// Used is the number of bitmaps charged and not yet collected.
func (b *Budget) Used() int { return int(b.used.Load()) }

func (b *Budget) take(force bool) bool {
	if b.used.Add(1) > b.max && !force {
		b.used.Add(-1)
		return false
	}
	return true
}

// NewWithBudget returns an empty estimator whose bitmap, if it grows one,
// is charged to b.
func NewWithBudget(b *Budget) *Estimator { return &Estimator{budget: b} }

// values calls f with every distinct value seen, in increasing order.
func (e *Estimator) values(f func(uint16)) {
	if e.seen == nil {
		for _, v := range e.vals {
			f(v)
		}
		return
	}
	for w, word := range e.seen {
		for word != 0 {
			bit := bits.TrailingZeros64(word)
			word &= word - 1
			f(uint16(w*64 + bit))
		}
	}
}

// closeBoot ends the current boot, if any, and grades whether it replayed.
func (e *Estimator) closeBoot() {
	if e.bootN == 0 {
		return
	}
	if e.boots > 1 {
		e.closedBoots++
		if e.bootReplayed(e.bootN, e.bootHits) {
			e.replayed++
		}
	}
	e.bootN, e.bootHits, e.nRecent, e.recent = 0, 0, 0, [recentLen]uint16{}
}

// bootReplayed: at least half of the boot's values had been seen before,
// when the values seen so far cover too little of the space for chance to
// explain it.
func (e *Estimator) bootReplayed(n, hits uint64) bool {
	occupancy := float64(e.distinct) / 65536
	return 2*hits >= n && occupancy < 0.25
}

func (e *Estimator) observeStep(v uint16) {
	counted, moved := false, false
	for i := 0; i < e.nRecent; i++ {
		step := v - e.recent[i]
		if step != 0 {
			moved = true
		}
		if step != 0 && step <= counterMaxStep {
			counted = true
		}
	}
	if moved {
		e.steps++
		if counted {
			e.small++
		}
		if step := v - e.recent[0]; e.nRecent > 0 && step != 0 && step <= counterMaxStep {
			e.direct++
		}
	}
	// Keep the most recent values first.
	if e.nRecent < recentLen {
		e.nRecent++
	}
	copy(e.recent[1:e.nRecent], e.recent[:e.nRecent-1])
	e.recent[0] = v
}

// Result is the grade of the values observed so far.
type Result struct {
	Verdict Verdict
	// Reason is why the field is weak (one of the Reason constants), ""
	// when random, or why there is not enough data.
	Reason string
	N      int
	// Sigma is the standard deviation of the values (the study's metric),
	// Bits = log2(Sigma*sqrt(12)), floored at 0.
	Sigma float64
	Bits  float64
	// Detail says what was measured, in one line for people.
	Detail string

	Boots    int     // boots with at least one value
	Distinct int     // distinct values
	Span     int     // width of the smallest circular window holding every value
	Top      uint16  // the most frequent value
	TopShare float64 // its share of the values (a lower bound)
	Counting float64 // share of steps within boots that count forward by small steps
}

// Result grades the values observed so far. It does not change the estimator.
func (e *Estimator) Result() Result {
	r := Result{N: int(e.n), Boots: int(e.boots), Distinct: int(e.distinct)}
	if e.n == 0 {
		r.Verdict, r.Reason = Insufficient, "no values seen"
		r.Detail = "no values seen"
		return r
	}
	r.Sigma = math.Sqrt(e.m2 / float64(e.n))
	if x := r.Sigma * math.Sqrt(12); x > 1 {
		r.Bits = math.Log2(x)
	}
	r.Span = e.span()
	top := e.heavy.sorted()
	r.Top = top[0].value
	topCount := top[0].count - top[0].err
	r.TopShare = float64(topCount) / float64(e.n)
	if e.steps > 0 {
		r.Counting = float64(e.small) / float64(e.steps)
	}

	// The current boot counts as closed for the replay test.
	closed, replayed := e.closedBoots, e.replayed
	if e.boots > 1 && e.bootN > 0 {
		closed++
		if e.bootReplayed(e.bootN, e.bootHits) {
			replayed++
		}
	}
	k := min(smallSetK, len(top))
	var topK uint64
	for _, h := range top[:k] {
		topK += h.count - h.err
	}
	topKShare := float64(topK) / float64(e.n)
	bootRepeat, bootRepeatValue := e.bootRepeat(top, r.Span)

	r.Detail = fmt.Sprintf("n=%d boots=%d distinct=%d span=%d top=0x%04x (%.0f%%) counting=%.0f%% of %d steps replayed-boots=%d/%d sigma=%.1f bits=%.1f",
		e.n, e.boots, e.distinct, r.Span, r.Top, 100*r.TopShare, 100*r.Counting, e.steps, replayed, closed, r.Sigma, r.Bits)
	if e.saturated {
		r.Detail += fmt.Sprintf(" (distinct values tracked up to %d: memory budget)", sparseMax)
	}

	n := e.n
	enough := n >= MinSamples
	r.Verdict = Weak
	switch {
	case (e.distinct == 1 || r.TopShare >= constantShare) && improbable(pRepeats(n, topCount)):
		r.Reason = ReasonConstant
		r.Detail = fmt.Sprintf("0x%04x in %.0f%% of values; ", r.Top, 100*r.TopShare) + r.Detail
	case r.Counting >= counterShare && countingChance(r.Span) <= 0.1 && improbable(pBinomial(e.steps, e.small, recentLen*counterMaxStep)),
		e.steps >= directMinSteps && float64(e.direct) >= directShare*float64(e.steps) && improbable(pBinomial(e.steps, e.direct, counterMaxStep)):
		r.Reason = ReasonCounter
		r.Detail = fmt.Sprintf("%.0f%% of steps count forward by 1..%d; ", 100*r.Counting, counterMaxStep) + r.Detail
	case r.Span <= narrowSpan && improbable(pWindow(n, r.Span)):
		r.Reason = ReasonNarrowRange
		r.Detail = fmt.Sprintf("all values within a window of %d; ", r.Span) + r.Detail
	case topKShare >= smallSetShare && improbable(pSet(n, topK, k)):
		r.Reason = ReasonSmallSet
		r.Detail = fmt.Sprintf("%d most frequent values carry %.0f%%; ", k, 100*topKShare) + r.Detail
	case r.TopShare >= dominantShare && improbable(pRepeats(n, topCount)):
		r.Reason = ReasonSmallSet
		r.Detail = fmt.Sprintf("0x%04x (%d) carries %.0f%% of values; ", r.Top, r.Top, 100*r.TopShare) + r.Detail
	case bootRepeat:
		r.Reason = ReasonBootRepeats
		r.Detail = fmt.Sprintf("0x%04x recurs in most boots; ", bootRepeatValue) + r.Detail
	case enough && closed >= minBoots-1 && float64(replayed) >= replayShare*float64(closed):
		r.Reason = ReasonBootRepeats
		r.Detail = fmt.Sprintf("%d of %d boots mostly replay earlier values; ", replayed, closed) + r.Detail
	case !enough:
		r.Verdict = Insufficient
		r.Reason = fmt.Sprintf("only %d values (need %d)", n, MinSamples)
	default:
		r.Verdict = Random
	}
	return r
}

// The chance bounds. Each is an upper bound, by a union over the values
// or windows that could carry the pattern, on the probability that n
// values drawn uniformly and independently from 0..65535 show it; they
// are computed as natural logarithms.
const space = 65536

var lnAlpha = math.Log(Alpha)

func improbable(lnP float64) bool { return lnP <= lnAlpha }

// lnChoose is ln C(n, k).
func lnChoose(n, k uint64) float64 {
	if k > n {
		return math.Inf(-1)
	}
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	c, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - c
}

// pRepeats bounds the chance that some value occurs at least c times
// among n: space * C(n, c) * space^-c.
func pRepeats(n, c uint64) float64 {
	if c < 2 {
		return 0
	}
	return lnChoose(n, c) + float64(1-int64(c))*math.Log(space)
}

// pWindow bounds the chance that n values all fall in one circular window
// of width w: n choices of the first value, the others inside its window.
func pWindow(n uint64, w int) float64 {
	if n < 2 || w >= space {
		return 0
	}
	return math.Log(float64(n)) + float64(n-1)*math.Log(float64(w)/space)
}

// pSet bounds the chance that some set of k values carries m of the n:
// C(space, k) sets, C(n, m) choices of the values, (k/space)^m.
func pSet(n, m uint64, k int) float64 {
	if k <= 0 || m == 0 {
		return 0
	}
	return lnChoose(space, uint64(k)) + lnChoose(n, m) + float64(m)*math.Log(float64(k)/space)
}

// pBinomial bounds the chance that at least hits of trials independent
// steps land in a set of width values ahead: C(trials, hits) q^hits.
func pBinomial(trials, hits uint64, width int) float64 {
	if hits == 0 {
		return 0
	}
	q := math.Min(1, float64(width)/space)
	return lnChoose(trials, hits) + float64(hits)*math.Log(q)
}

// pBoots bounds the chance that some value is among perBoot values of at
// least b of boots boots: space * C(boots, b) * (perBoot/space)^b.
func pBoots(boots, b uint64, perBoot float64) float64 {
	q := math.Min(1, perBoot/space)
	return math.Log(space) + lnChoose(boots, b) + float64(b)*math.Log(q)
}

// Grade is a Result as reports carry it (the audit's and the device
// table's JSON): the verdict, why, and the study's figure beside it.
type Grade struct {
	Verdict Verdict `json:"verdict"` // weak, random, insufficient
	Reason  string  `json:"reason,omitempty"`
	N       int     `json:"n"`
	Sigma   float64 `json:"sigma"`
	Bits    float64 `json:"bits"`
	Detail  string  `json:"detail,omitempty"`
}

// Grade returns the report form of r, sigma and bits to two decimals.
func (r Result) Grade() Grade {
	round := func(x float64) float64 { return math.Round(x*100) / 100 }
	return Grade{Verdict: r.Verdict, Reason: r.Reason, N: r.N, Sigma: round(r.Sigma), Bits: round(r.Bits), Detail: r.Detail}
}

// countingChance is the share of counting steps random values spread over
// a window of span values would show: a counter is only told apart from
// values confined to a window much wider than the counting step.
func countingChance(span int) float64 {
	if span <= 0 {
		return 1
	}
	return min(1, float64(recentLen*counterMaxStep)/float64(span))
}

// bootRepeat reports a value that recurs in at least half of the boots
// (and in at least minBoots), when chance would put a given value in at
// most a tenth of them.
func (e *Estimator) bootRepeat(top []heavy, span int) (bool, uint16) {
	if e.boots < minBoots {
		return false, 0
	}
	recurs := func(h heavy, perBoot float64) bool {
		return h.boots >= minBoots && float64(h.boots) >= bootShareMin*float64(e.boots) &&
			improbable(pBoots(uint64(e.boots), uint64(h.boots), perBoot))
	}
	// Values that open most boots: chance would put a given value among
	// the first few of a boot once in thousands of boots.
	for _, h := range e.first.sorted() {
		if recurs(h, firstLen) {
			return true, h.value
		}
	}
	perBoot := float64(e.n) / float64(e.boots)
	width := float64(max(span, int(e.distinct), 1))
	if chance := 1 - math.Exp(-perBoot/width); chance > 0.1 {
		return false, 0
	}
	for _, h := range top {
		if recurs(h, perBoot) {
			return true, h.value
		}
	}
	return false, 0
}

// span is 65536 minus the largest circular run of unseen values: the width
// of the smallest window (wrapping at 65535) that holds every seen value.
func (e *Estimator) span() int {
	if e.distinct == 0 {
		return 0
	}
	if e.seen == nil {
		// Largest gap between neighbouring values, the wrap included.
		vs := e.vals
		longest := int(vs[0]) + 65536 - int(vs[len(vs)-1]) - 1
		for i := 1; i < len(vs); i++ {
			longest = max(longest, int(vs[i])-int(vs[i-1])-1)
		}
		return 65536 - longest
	}
	return 65536 - longestUnseen(e.seen)
}

// longestUnseen is the longest circular run of zero bits in seen (which
// has a bit set), a word at a time: a run crosses words through their
// zero ends (a word's trailing zeros continue the run from below, its
// leading zeros start the next) and whole zero words; a gap between two
// set bits of one word is at most 62 long and looked at only while no run
// that long is known. With thousands of values seen this is a pass over
// 1,024 words instead of 65,536 bits (a device's queries grade it: see
// device.gradeDue).
func longestUnseen(seen *[bitmapSize]uint64) int {
	longest, run, first := 0, 0, -1
	for _, word := range seen {
		if word == 0 {
			run += 64
			continue
		}
		run += bits.TrailingZeros64(word)
		if first < 0 {
			first = run // joins the run after the last set bit (the wrap)
		} else {
			longest = max(longest, run)
		}
		if longest < 62 {
			longest = max(longest, innerGap(word))
		}
		run = bits.LeadingZeros64(word)
	}
	return max(longest, run+first)
}

// innerGap is the longest run of zero bits between two set bits of x
// (x != 0).
func innerGap(x uint64) int {
	g := 0
	x >>= bits.TrailingZeros64(x)
	for {
		x >>= 1
		if x == 0 {
			return g
		}
		tz := bits.TrailingZeros64(x)
		g = max(g, tz)
		x >>= tz
	}
}
