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
	down    bool
	probing bool
}

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
		p.failed(m, q, err)
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

// answered records an answer time and marks the upstream up; probe says
// the answer ends its probing.
func (p *Pool) answered(m *member, rtt time.Duration, probe bool) {
	rtt = max(rtt, time.Microsecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if probe {
		m.probing = false
	}
	if m.rtt == 0 {
		m.rtt = rtt
	} else {
		m.rtt = (7*m.rtt + 3*rtt) / 10
	}
	if m.down {
		m.down = false
		p.log.Info("upstream recovered", "upstream", m.t.String(), "rtt", rtt)
		if p.allDown {
			p.allDown = false
			p.log.Info("an upstream is reachable again", "upstream", m.t.String())
		}
	}
}

// failed marks the upstream down, logging the change, and starts probing it.
func (p *Pool) failed(m *member, q *dns.Msg, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
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

// probe asks a down upstream the question that failed, backing off, until
// it answers (any answer: the upstream is reachable) or the pool closes.
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
		ctx, cancel := context.WithTimeout(p.ctx, 2*p.opts.Timeout)
		start := time.Now()
		_, err := m.t.Exchange(ctx, q)
		cancel()
		if err == nil {
			p.answered(m, time.Since(start), true)
			return
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
