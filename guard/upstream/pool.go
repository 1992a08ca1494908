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
// a client's 2 s. An upstream that fails is marked down and probed in the
// background until it answers again. When none is up, Exchange fails at
// once with SERVFAIL and EDE 22 "No Reachable Authority". State changes
// are logged once each, never per query.
type Pool struct {
	opts Options
	log  *slog.Logger
	ups  []*member

	mu      sync.Mutex // guards member state and allDown
	allDown bool

	ctx    context.Context // ends the probes
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// member is one upstream of the pool.
type member struct {
	t        Transport
	counters *Counters

	// guarded by Pool.mu
	rtt     time.Duration // EWMA; 0 until the first answer
	fails   int           // consecutive failures
	down    bool
	probing bool
}

// downAfter consecutive failures mark an upstream down. One timeout may be
// a lost datagram or a slow name; a refused or failed connection (see
// hardFailure) marks it down at once.
const downAfter = 2

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
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel}
	for _, u := range urls {
		ep, err := ParseURL(u)
		if err != nil {
			p.Close()
			return nil, err
		}
		c := new(Counters)
		t, err := newTransport(ep, config{tls: tc, counters: c, randomize: opts.Randomize0x20})
		if err != nil {
			p.Close()
			return nil, err
		}
		p.ups = append(p.ups, &member{t: t, counters: c})
	}
	return p, nil
}

// Exchange resolves q, a query with one question (the caller's message is
// not changed). Errors are *stage.Error values, or Check's error.
func (p *Pool) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if len(q.Question) != 1 {
		return nil, fmt.Errorf("upstream query with %d questions", len(q.Question))
	}
	order := p.order()
	if len(order) == 0 {
		return nil, stage.Fail(dnswire.EDENoReachableAut, "No Reachable Authority", errors.New("every upstream is down"))
	}
	var lastErr, checkErr error
	for i := 0; i < p.opts.MaxAttempts && ctx.Err() == nil; i++ {
		m := order[i%len(order)]
		resp, err := p.attempt(ctx, m, q)
		if err != nil {
			lastErr = err
			if p.noneUp() {
				break // that was the last one up: fail now, not after more timeouts
			}
			continue
		}
		if p.opts.Check == nil {
			return resp, nil
		}
		checked, err := p.opts.Check(q, resp)
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

// attempt is one try on one upstream, within the per-attempt timeout.
func (p *Pool) attempt(ctx context.Context, m *member, q *dns.Msg) (*dns.Msg, error) {
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := m.t.Exchange(actx, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller gave up; not the upstream's fault
		}
		m.counters.Failures.Add(1)
		p.failed(m, q, err, time.Since(start))
		return nil, err
	}
	p.answered(m, time.Since(start), false)
	return resp, nil
}

// order returns the healthy upstreams, fastest first; the ones not yet
// measured go first so that they get measured.
func (p *Pool) order() []*member {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := make([]*member, 0, len(p.ups))
	for _, m := range p.ups {
		if !m.down {
			up = append(up, m)
		}
	}
	slices.SortStableFunc(up, func(a, b *member) int { return cmp.Compare(a.rtt, b.rtt) })
	return up
}

func (p *Pool) noneUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allDown
}

// answered records an answer time and marks the upstream up; probe says
// the answer ends its probing.
func (p *Pool) answered(m *member, rtt time.Duration, probe bool) {
	rtt = max(rtt, time.Microsecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if probe {
		m.probing = false
	}
	m.rtt = ewma(m.rtt, rtt)
	m.fails = 0
	if m.down {
		m.down = false
		p.log.Info("upstream recovered", "upstream", m.t.String(), "rtt", rtt)
		if p.allDown {
			p.allDown = false
			p.log.Info("an upstream is reachable again", "upstream", m.t.String())
		}
	}
}

// ewma folds a sample into a smoothed time (weight 0.3 for the new one).
func ewma(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return (7*avg + 3*sample) / 10
}

// failed counts a failure, which also weighs on the upstream's time so
// that it loses its place to the others, and after downAfter in a row (or
// a hard failure) marks it down, logging the change, and starts probing.
func (p *Pool) failed(m *member, q *dns.Msg, err error, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.rtt = ewma(m.rtt, max(took, p.opts.Timeout))
	m.fails++
	if m.fails < downAfter && !hardFailure(err) {
		return
	}
	if !m.down {
		m.down = true
		p.log.Warn("upstream down", "upstream", m.t.String(), "err", err)
		if !p.allDown && !slices.ContainsFunc(p.ups, func(m *member) bool { return !m.down }) {
			p.allDown = true
			p.log.Error("no upstream reachable: answering SERVFAIL (EDE 22) until one recovers", "err", err)
		}
	}
	if !m.probing && p.ctx.Err() == nil {
		m.probing = true
		p.wg.Add(1)
		go p.probe(m, q.Copy())
	}
}

// probe asks a down upstream, backing off, until it answers (any answer:
// the upstream is reachable) or the pool closes. It asks the question
// that failed and, alongside, ". NS", which any working resolver answers
// from its cache, so that one slow name cannot keep an upstream down.
func (p *Pool) probe(m *member, q *dns.Msg) {
	defer p.wg.Done()
	delay := p.opts.ProbeMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if p.upAgain(m) {
			return // a query found it up meanwhile
		}
		if rtt, ok := p.probeOnce(m, q); ok {
			p.answered(m, rtt, true)
			return
		}
		delay = min(2*delay, p.opts.ProbeMax)
	}
}

// probeOnce sends the probe questions at once and reports the first
// answer's time.
func (p *Pool) probeOnce(m *member, q *dns.Msg) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(p.ctx, 2*p.opts.Timeout)
	defer cancel()
	root := new(dns.Msg)
	root.RecursionDesired = true
	root.Question = []dns.Question{{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}}
	answered := make(chan time.Duration, 2)
	start := time.Now()
	for _, pq := range []*dns.Msg{q, root} {
		go func() {
			if _, err := m.t.Exchange(ctx, pq); err == nil {
				answered <- time.Since(start)
				return
			}
			answered <- -1
		}()
	}
	for range 2 {
		if rtt := <-answered; rtt >= 0 {
			return rtt, true
		}
	}
	return 0, false
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

// Close stops the probes and closes every transport.
func (p *Pool) Close() error {
	p.cancel()
	p.wg.Wait()
	var errs []error
	for _, m := range p.ups {
		errs = append(errs, m.t.Close())
	}
	return errors.Join(errs...)
}
