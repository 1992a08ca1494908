package upstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// Pool resolves over several upstreams. It tries the healthy ones fastest
// first (EWMA of their answer times), each attempt bounded by
// Options.Timeout and at most Options.MaxAttempts attempts per query, so
// a dead upstream costs one attempt and the query still ends well inside
// a client's 2 s.
//
// An upstream's health rests on transport evidence, never on one question:
// a refused or failed connection or TLS handshake marks it down at once;
// a question that goes unanswered is that question's failure, and only
// when the upstream has answered nothing at all since that question went
// out does the pool ask it a health check (". NS", which any working
// resolver answers from its cache) and mark it down if that goes
// unanswered too. So names whose servers never answer cost their own
// queries and nobody else's. A down upstream is probed in the background,
// backing off from ProbeMin to ProbeMax, until it answers; while every
// upstream is down, one real query at a time is sent as a probe too, so
// that service returns with the first query after the upstream does, and
// the others fail at once with SERVFAIL and EDE 22 "No Reachable
// Authority" (an error IsAllDown reports). State changes are logged one
// line each, at a bounded rate per upstream.
type Pool struct {
	opts Options
	log  *slog.Logger
	ups  []*member

	mu         sync.Mutex // guards member state and what follows
	allDown    bool
	queryProbe bool // a real query is out as the probe (every upstream down)
	nextProbe  int  // where the next query probe starts looking
	closing    bool
	active     int           // Exchange calls in progress
	idle       chan struct{} // closed when active drops to 0, if set

	ctx    context.Context // ends the probes and checks
	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  sync.Once
}

// member is one upstream of the pool.
type member struct {
	t        Transport
	counters *Counters

	// guarded by Pool.mu
	rtt        time.Duration // EWMA; 0 until the first answer
	down       bool
	why        error     // what took it down
	lastAnswer time.Time // when it last answered anything
	checking   bool      // a health check is out
	probing    bool      // the recovery probe loop runs

	// state-change logging: a token bucket of logBurst lines refilled
	// one per Options.LogEvery; changes beyond it are counted and
	// summed up in one line when a token is back.
	tokens     float64
	tokensAt   time.Time
	suppressed int
	flushing   bool
}

// logBurst state-change lines per upstream are logged at once (a flap:
// down, then up); beyond that, one per Options.LogEvery.
const logBurst = 2

// NewPool parses the upstream URLs and builds their transports. No
// connection is opened until the first query.
func NewPool(urls []string, opts Options) (*Pool, error) {
	if len(urls) == 0 {
		return nil, errors.New("no upstreams configured")
	}
	opts = opts.withDefaults()
	tc, err := newTLSConfig(opts.Roots, opts.CAFile, opts.CAPEM)
	if err != nil {
		return nil, err
	}
	var ts []Transport
	var cs []*Counters
	for _, u := range urls {
		ep, err := ParseURL(u)
		if err == nil {
			c := new(Counters)
			var t Transport
			if t, err = newTransport(ep, config{tls: tc, counters: c, randomize: opts.Randomize0x20}); err == nil {
				ts, cs = append(ts, t), append(cs, c)
				continue
			}
		}
		for _, t := range ts {
			_ = t.Close()
		}
		return nil, err
	}
	return poolOf(opts, ts, cs), nil
}

// poolOf is a pool over transports (with their counters) built already;
// opts has its defaults.
func poolOf(opts Options, ts []Transport, cs []*Counters) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel}
	for i, t := range ts {
		p.ups = append(p.ups, &member{t: t, counters: cs[i], tokens: logBurst})
	}
	return p
}

// Checker checks an upstream answer to the caller's query q, under the
// query's ctx: it returns the answer to use, or an error, in which case
// the answer is counted as refused for that upstream and the next
// upstream is tried. An interface, not a func: a caller's checker needs
// no closure (an allocation a query) to carry the query's context.
type Checker interface {
	CheckAnswer(ctx context.Context, q, resp *dns.Msg) (*dns.Msg, error)
}

// CheckFunc is a Checker that needs no context.
type CheckFunc func(q, resp *dns.Msg) (*dns.Msg, error)

// CheckAnswer calls f(q, resp).
func (f CheckFunc) CheckAnswer(_ context.Context, q, resp *dns.Msg) (*dns.Msg, error) {
	return f(q, resp)
}

// Exchange resolves q, a query with one question (the caller's message is
// not changed), under o: its 0x20 setting and the Check its answers must
// pass (nil: none). Errors are *stage.Error values, or the check's error.
// One pool serves callers that ask differently (a strict device's 0x20,
// the shields of chains sharing a pool across a reload).
func (p *Pool) Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	check := o.Check
	if len(q.Question) != 1 {
		return nil, fmt.Errorf("upstream query with %d questions", len(q.Question))
	}
	var room [4]*member // order's room: no allocation for a few upstreams
	order, probe := p.begin(room[:0])
	defer p.end(probe)
	attempts := p.opts.MaxAttempts
	if probe != nil {
		order, attempts = []*member{probe}, 1
	}
	if len(order) == 0 {
		return nil, allDownError(nil)
	}
	var lastErr, checkErr error
	for i := 0; i < attempts && ctx.Err() == nil; i++ {
		m := order[i%len(order)]
		resp, err := p.attempt(ctx, m, q, o)
		if err != nil {
			lastErr = err
			if p.noneUp() {
				// That was the last one up, or this was a probe: fail
				// now, not after more timeouts.
				return nil, allDownError(lastErr)
			}
			continue
		}
		if check == nil {
			return resp, nil
		}
		checked, err := check.CheckAnswer(ctx, q, resp)
		if err == nil {
			return checked, nil
		}
		m.counters.Refused.Add(1)
		checkErr = err
		// Its answer was refused: asking it again gets the same answer
		// (RFC 9520 §3.1 spirit); only the other upstreams are tried.
		order = slices.DeleteFunc(slices.Clone(order), func(o *member) bool { return o == m })
		if len(order) == 0 {
			break
		}
		i-- // the next upstream now sits at the same index
	}
	if checkErr != nil {
		return nil, checkErr
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, stage.Fail(dnswire.EDENoReachableAut, "No Reachable Authority", lastErr)
}

// errAllDown is in the chain of the error of a query that found every
// upstream down.
var errAllDown = errors.New("every upstream is down")

// downError is the failure of a query no upstream could be asked: it
// says nothing about the name. Caches recognise it by its Unreachable
// method (guard/cache does not grow a name's failure backoff for it).
type downError struct{ last error }

func (e *downError) Error() string {
	if e.last == nil {
		return errAllDown.Error()
	}
	return errAllDown.Error() + ": " + e.last.Error()
}

func (e *downError) Unwrap() []error { return []error{errAllDown, e.last} }

// Unreachable reports that the failure is the path's (every upstream
// down), not the name's.
func (e *downError) Unreachable() bool { return true }

func allDownError(last error) error {
	return stage.Fail(dnswire.EDENoReachableAut, "No Reachable Authority", &downError{last})
}

// IsAllDown reports whether err is the failure of a query that found
// every upstream down.
func IsAllDown(err error) bool { return errors.Is(err, errAllDown) }

// begin registers an Exchange and returns the healthy upstreams, fastest
// first (those under a health check last, those not yet measured first so
// that they get measured); or, when every upstream is down, the one to
// send this query to as a probe, if no other query is out as one.
func (p *Pool) begin(order []*member) (_ []*member, probe *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active++
	order = order[:0]
	for _, m := range p.ups {
		if !m.down {
			order = append(order, m)
		}
	}
	if len(order) > 0 {
		slices.SortStableFunc(order, func(a, b *member) int {
			if a.checking != b.checking {
				if a.checking {
					return 1
				}
				return -1
			}
			return cmp.Compare(a.rtt, b.rtt)
		})
		return order, nil
	}
	if p.queryProbe || p.closing {
		return nil, nil
	}
	n := len(p.ups)
	for i := range n {
		if m := p.ups[(p.nextProbe+i)%n]; m.down {
			p.nextProbe = (p.nextProbe + i + 1) % n
			p.queryProbe = true
			return nil, m
		}
	}
	return nil, nil
}

// end unregisters an Exchange (and its query probe).
func (p *Pool) end(probe *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if probe != nil {
		p.queryProbe = false
	}
	p.active--
	if p.active == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
}

// attempt is one try on one upstream, within the per-attempt timeout. An
// answer that differs from the query only in the case of the name (0x20)
// is asked again without 0x20 and compared (caseFallback).
func (p *Pool) attempt(ctx context.Context, m *member, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	start := time.Now()
	var resp *dns.Msg
	var err error
	if d, ok := m.t.(deadlineExchanger); ok {
		// The transport keeps the attempt's deadline itself: no context
		// (timer, cancel, channel) per attempt.
		resp, err = d.exchangeBy(ctx, start.Add(p.opts.Timeout), q, o)
	} else {
		actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
		resp, err = m.t.Exchange(actx, q, o)
		cancel()
	}
	if err != nil { // (a *CaseError target declared outside would be allocated per attempt)
		if ce := (*CaseError)(nil); errors.As(err, &ce) {
			p.answered(m, time.Since(start))
			return p.caseFallback(ctx, m, q, ce)
		}
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller gave up; not the upstream's fault
		}
		m.counters.Failures.Add(1)
		p.failed(m, err, start)
		return nil, err
	}
	p.answered(m, time.Since(start))
	return resp, nil
}

// deadlineExchanger is a transport that keeps a deadline of its own for
// an exchange (Do53 over UDP: its reader does).
type deadlineExchanger interface {
	exchangeBy(ctx context.Context, deadline time.Time, q *dns.Msg, o QueryOptions) (*dns.Msg, error)
}

// ErrCaseInconsistent is the failure of an attempt whose answer came back
// in another case than the 0x20 query had, and which, asked again without
// 0x20, answered differently: either answer may be forged.
var ErrCaseInconsistent = errors.New("answer in another case differs from the answer without 0x20")

// caseFallback handles an answer whose name came back in another case
// than sent, as unbound's use-caps-for-id does: the upstream may mangle
// case (some forwarders and middleboxes do), or the answer may be forged
// by someone who could not see the query. The question is asked again
// without 0x20 and the two answers compared: if they agree, the second is
// used; if not, the attempt fails (the pool tries the next upstream). The
// upstream has answered either way, so it is not marked down.
func (p *Pool) caseFallback(ctx context.Context, m *member, q *dns.Msg, ce *CaseError) (*dns.Msg, error) {
	m.counters.CaseFallbacks.Add(1)
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := m.t.Exchange(actx, q, QueryOptions{Case0x20: Case0x20Off})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m.counters.Failures.Add(1)
		p.failed(m, err, start)
		return nil, fmt.Errorf("0x20 fallback: %w", err)
	}
	p.answered(m, time.Since(start))
	if !sameAnswer(ce.Msg, resp) {
		m.counters.Mismatches.Add(1)
		return nil, fmt.Errorf("%s: %w", m.t, ErrCaseInconsistent)
	}
	return resp, nil
}

func (p *Pool) noneUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allDown
}

// answered records an answer (to anything: a question, a check, a probe)
// and its time, and marks the upstream up. When that ends a time with
// every upstream down, Options.OnRecover is called.
func (p *Pool) answered(m *member, rtt time.Duration) {
	rtt = max(rtt, time.Microsecond)
	m.counters.Latency.Observe(rtt)
	p.mu.Lock()
	m.rtt = ewma(m.rtt, rtt)
	m.lastAnswer = time.Now()
	recovered := false
	if m.down {
		m.down, m.why = false, nil
		recovered = p.allDown
		p.allDown = false
		p.logChange(m)
	}
	p.mu.Unlock()
	if recovered && p.opts.OnRecover != nil {
		p.opts.OnRecover()
	}
}

// ewma folds a sample into a smoothed time (weight 0.3 for the new one).
func ewma(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return (7*avg + 3*sample) / 10
}

// failed records an attempt that got no answer. It weighs on the
// upstream's time, so that it loses its place to the others. A hard
// failure (connect or TLS) marks it down; anything else is the
// question's failure, unless the upstream has answered nothing since the
// question was sent, in which case a health check decides.
func (p *Pool) failed(m *member, err error, start time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.rtt = ewma(m.rtt, max(time.Since(start), p.opts.Timeout))
	switch {
	case m.down || p.closing:
	case hardFailure(err):
		p.setDown(m, err)
	case m.lastAnswer.Before(start) && !m.checking:
		m.checking = true
		p.wg.Add(1)
		go p.check(m, err)
	}
}

// check asks m ". NS" and marks it down if nothing at all is answered
// (neither the check nor any question) before the check times out. A
// stream transport then drops its connection: the next query dials again.
func (p *Pool) check(m *member, cause error) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.probeTimeout())
	defer cancel()
	start := time.Now()
	_, err := m.t.Exchange(ctx, rootQuery(), QueryOptions{})
	if err == nil {
		p.answered(m, time.Since(start))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m.checking = false
	if err == nil || p.ctx.Err() != nil || p.closing || m.down || m.lastAnswer.After(start) {
		return
	}
	p.setDown(m, fmt.Errorf("no answer to anything, health check included (%w); first unanswered: %w", err, cause))
	if r, ok := m.t.(interface{ Reset() }); ok {
		r.Reset()
	}
}

func (p *Pool) probeTimeout() time.Duration { return 2 * p.opts.Timeout }

// rootQuery is the health check and probe question: ". NS", which any
// working resolver answers from its cache (priming, RFC 8109).
func rootQuery() *dns.Msg {
	q := new(dns.Msg)
	q.RecursionDesired = true
	q.Question = []dns.Question{{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}}
	return q
}

// setDown marks m down (p.mu held), logs the change and starts probing.
func (p *Pool) setDown(m *member, why error) {
	m.down, m.why = true, why
	p.allDown = !slices.ContainsFunc(p.ups, func(m *member) bool { return !m.down })
	p.logChange(m)
	if !m.probing && p.ctx.Err() == nil {
		m.probing = true
		p.wg.Add(1)
		go p.probe(m)
	}
}

// probe asks a down upstream ". NS", backing off, until it answers or
// something else finds it up, or the pool closes.
func (p *Pool) probe(m *member) {
	defer p.wg.Done()
	delay := p.opts.ProbeMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-p.ctx.Done():
			t.Stop()
			p.mu.Lock()
			m.probing = false
			p.mu.Unlock()
			return
		case <-t.C:
		}
		if p.upAgain(m) {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.probeTimeout())
		start := time.Now()
		_, err := m.t.Exchange(ctx, rootQuery(), QueryOptions{})
		cancel()
		if err == nil {
			p.answered(m, time.Since(start))
			if p.upAgain(m) {
				return
			}
		}
		delay = min(2*delay, p.opts.ProbeMax)
	}
}

// upAgain reports whether m is up, ending its probing if so (in the same
// critical section, so that a failure just after starts a new probe).
func (p *Pool) upAgain(m *member) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !m.down {
		m.probing = false
	}
	return !m.down
}

// logChange logs m's new state (p.mu held) if its token bucket allows,
// else counts the change for a summary line once a token is back.
func (p *Pool) logChange(m *member) {
	now := time.Now()
	every := p.opts.LogEvery
	m.tokens = min(logBurst, m.tokens+float64(now.Sub(m.tokensAt))/float64(every))
	m.tokensAt = now
	if m.tokens >= 1 && !m.flushing {
		m.tokens--
		p.logState(m, 0)
		return
	}
	m.suppressed++
	if !m.flushing && p.ctx.Err() == nil {
		m.flushing = true
		wait := time.Duration((1 - m.tokens) * float64(every))
		p.wg.Add(1)
		go p.flushLog(m, wait)
	}
}

// flushLog logs, after wait, m's state and how many changes went unlogged.
func (p *Pool) flushLog(m *member, wait time.Duration) {
	defer p.wg.Done()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
	case <-t.C:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m.flushing = false
	if m.suppressed == 0 || p.ctx.Err() != nil {
		return
	}
	now := time.Now()
	m.tokens = min(logBurst, m.tokens+float64(now.Sub(m.tokensAt))/float64(p.opts.LogEvery))
	m.tokensAt = now
	m.tokens = max(m.tokens-1, 0)
	p.logState(m, m.suppressed)
	m.suppressed = 0
}

// logState writes m's state in one line (p.mu held); unlogged counts the
// changes since the last line that were not logged.
func (p *Pool) logState(m *member, unlogged int) {
	up := 0
	for _, o := range p.ups {
		if !o.down {
			up++
		}
	}
	attrs := []any{"upstream", m.t.String(), "up", up, "of", len(p.ups)}
	if unlogged > 0 {
		attrs = append(attrs, "unlogged_changes", unlogged)
	}
	switch {
	case !m.down:
		p.log.Info("upstream up", attrs...)
	case p.allDown:
		p.log.Error("upstream down; no upstream reachable: answering SERVFAIL (EDE 22) until one recovers", append(attrs, "err", m.why)...)
	default:
		p.log.Warn("upstream down", append(attrs, "err", m.why)...)
	}
}

// Stats returns every upstream's counters and state, in configured order.
func (p *Pool) Stats() []Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Stats, len(p.ups))
	for i, m := range p.ups {
		s := m.counters.snapshot()
		s.URL, s.Up, s.RTT = m.t.String(), !m.down, m.rtt
		out[i] = s
	}
	return out
}

// Shutdown waits until the queries in progress are done (or ctx ends),
// then closes the pool. Queries that come meanwhile are still served.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	var idle chan struct{}
	if p.active > 0 {
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		idle = p.idle
	}
	p.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
	return p.Close()
}

// Close stops the probes and closes every transport; queries in progress
// fail (Shutdown lets them finish first).
func (p *Pool) Close() error {
	var errs []error
	p.close.Do(func() {
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		p.cancel()
		p.wg.Wait()
		for _, m := range p.ups {
			errs = append(errs, m.t.Close())
		}
	})
	return errors.Join(errs...)
}
