package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// scripted is a Transport whose behaviour a test sets per question: the
// current script returns an answer, an error, or (nil, nil) for no answer
// at all (the query waits until its context ends or release is closed).
type scripted struct {
	name string

	mu      sync.Mutex
	script  func(q *dns.Msg) (*dns.Msg, error)
	asked   []string
	release chan struct{} // when set, unanswered queries wait on it and then ask the script again
	resets  int

	// hold, when set, is called with each query once it is counted and
	// before the script is asked: a test holds queries there.
	hold func(q *dns.Msg)
}

func (s *scripted) set(f func(q *dns.Msg) (*dns.Msg, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = f
}

func (s *scripted) Exchange(ctx context.Context, q *dns.Msg, _ QueryOptions) (*dns.Msg, error) {
	s.mu.Lock()
	s.asked = append(s.asked, q.Question[0].Name)
	f, release := s.script, s.release
	s.mu.Unlock()
	if s.hold != nil {
		s.hold(q)
	}
	for {
		r, err := f(q)
		if r != nil || err != nil {
			return r, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			s.mu.Lock()
			f, release = s.script, nil
			s.mu.Unlock()
		}
	}
}

func (s *scripted) questions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// count returns how many queries for name it got.
func (s *scripted) count(name string) int {
	n := 0
	for _, q := range s.questions() {
		if q == name {
			n++
		}
	}
	return n
}

func (s *scripted) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resets++
}

func (s *scripted) String() string { return s.name }
func (s *scripted) Close() error   { return nil }

// answers answers everything like AnswerA.
func answers(q *dns.Msg) (*dns.Msg, error) { return upstreamtest.AnswerA("192.0.2.1")(q), nil }

// silent answers nothing.
func silent(*dns.Msg) (*dns.Msg, error) { return nil, nil }

// refusing fails every query as a refused connection would.
func refusing(*dns.Msg) (*dns.Msg, error) { return nil, fmt.Errorf("%w: connection refused", ErrDial) }

// scriptedPool is a pool over scripted transports.
func scriptedPool(t *testing.T, opts Options, ts ...*scripted) *Pool {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	var tr []Transport
	var cs []*Counters
	for _, s := range ts {
		tr, cs = append(tr, s), append(cs, new(Counters))
	}
	p := poolOf(opts.withDefaults(), tr, cs)
	t.Cleanup(func() { p.Close() })
	return p
}

// logBuffer is a logger writing to a buffer the test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{&l.mu, &l.b}, nil))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPoolNeverAnsweringNames: names whose servers never answer (the
// issue's slow-name attack: 5 a second from one device) fail on their
// own; the upstream stays up and every other name is answered, both
// with other traffic about and with none (the health check answers),
// over Do53 and over DoT (where they share one pipelined connection).
//
// The pool runs with its default timeout: the upstream staying up rests
// on its health check being answered within the check's deadline (two
// attempts' time), and a loaded machine can hold the test upstream's
// goroutines longer than the 300 ms a 150 ms attempt gave. Victims are
// asked for as long as the attack lasts, so its attempts fail amid
// answered traffic; the never-answering names alone are asked together.
func TestPoolNeverAnsweringNames(t *testing.T) {
	never := func(q *dns.Msg) bool { return dns.IsSubDomain("never.test.", q.Question[0].Name) }
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		if !never(q) {
			s.send(from, upstreamtest.AnswerA("192.0.2.1")(q))
		}
	})
	ca := upstreamtest.NewCA(t)
	dot := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: func(q *dns.Msg) *dns.Msg {
		if never(q) {
			return nil
		}
		return upstreamtest.AnswerA("192.0.2.1")(q)
	}})
	for _, tc := range []struct {
		name, url string
		checks    func() int
	}{
		{"udp", srv.url(), func() int { return asked(srv, ".") }},
		{"dot", dot.URL("dot.test"), func() int {
			n := 0
			for _, r := range dot.Received() {
				if r.Msg != nil && r.Msg.Question[0].Name == "." {
					n++
				}
			}
			return n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			p := newPool(t, []string{tc.url}, Options{CAPEM: ca.PEM, Logger: logs.logger()})

			// Attack and victim at once: victims are asked until every
			// attack query has failed.
			var wg sync.WaitGroup
			var attackAnswered atomic.Int32
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := p.Exchange(context.Background(), query(fmt.Sprintf("n%d.never.test", i), dns.TypeA), QueryOptions{}); err == nil {
						attackAnswered.Add(1)
					}
				}()
				time.Sleep(10 * time.Millisecond)
			}
			attackOver := make(chan struct{})
			go func() { wg.Wait(); close(attackOver) }()
			victims, victimFailed := 0, 0
			for over := false; !over || victims < 40; victims++ {
				if _, err := p.Exchange(clientCtx(t), query(fmt.Sprintf("v%d.example", victims), dns.TypeA), QueryOptions{}); err != nil {
					victimFailed++
					t.Logf("victim query %d: %v", victims, err)
				}
				select {
				case <-attackOver:
					over = true
				case <-time.After(5 * time.Millisecond):
				}
			}
			if victimFailed > 0 || attackAnswered.Load() != 0 {
				t.Errorf("victim failed %d of %d; %d never-answering names answered", victimFailed, victims, attackAnswered.Load())
			}

			// Only never-answering names: nothing else answered since they
			// were sent, so the pool checks the upstream, which answers.
			errs := make([]error, 5)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = p.Exchange(context.Background(), query(fmt.Sprintf("alone%d.never.test", i), dns.TypeA), QueryOptions{})
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if IsAllDown(err) || err == nil {
					t.Fatalf("never-answering name %d: %v, want its own failure", i, err)
				}
			}
			if tc.checks() == 0 {
				t.Error("no health check asked")
			}
			if st := p.Stats()[0]; !st.Up {
				t.Errorf("upstream marked down: %+v", st)
			}
			if strings.Contains(logs.String(), "upstream down") {
				t.Errorf("logged:\n%s", logs.String())
			}
			if _, err := p.Exchange(clientCtx(t), query("after.example", dns.TypeA), QueryOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n := dot.Conns(); n != 1 {
		t.Errorf("%d DoT connections, want 1 (never reset)", n)
	}
}

// TestPoolSilentUpstreamDown: an upstream that answers nothing at all is
// marked down by its failed health check, after the question's own
// attempts and exactly one check; a stream transport is reset then.
//
// The check's failure is held until the question's attempts are over:
// the pool stops a question's attempts once its upstreams are all down,
// and the check's deadline (2 attempts' time, started after the first
// attempt failed) and the third attempt's end are otherwise a race that
// a querying goroutine late by a few milliseconds loses.
func TestPoolSilentUpstreamDown(t *testing.T) {
	questionDone := make(chan struct{})
	s := &scripted{name: "silent", script: silent, hold: func(q *dns.Msg) {
		if q.Question[0].Name == "." {
			<-questionDone
		}
	}}
	p := scriptedPool(t, Options{Timeout: 50 * time.Millisecond, ProbeMin: time.Hour}, s)
	_, err := p.Exchange(clientCtx(t), query("example.com", dns.TypeA), QueryOptions{})
	close(questionDone)
	if err == nil {
		t.Fatal("answered")
	}
	eventually(t, "down", func() bool { return !p.Stats()[0].Up })
	if n, c := s.count("example.com."), s.count("."); n != DefaultMaxAttempts || c != 1 {
		t.Errorf("asked the name %d times and the check %d times, want %d and 1", n, c, DefaultMaxAttempts)
	}
	s.mu.Lock()
	resets := s.resets
	s.mu.Unlock()
	if resets != 1 {
		t.Errorf("%d resets, want 1", resets)
	}
}

// TestPoolQueryProbe: while every upstream is down, one real query at a
// time goes out as the probe, the others fail at once without being
// sent; the first query after the upstream is back gets its answer (no
// background probe needed: they are an hour apart here), and OnRecover
// is called once.
func TestPoolQueryProbe(t *testing.T) {
	s := &scripted{name: "flaky", script: refusing}
	var recovered atomic.Int32
	p := scriptedPool(t, Options{Timeout: time.Second, ProbeMin: time.Hour, OnRecover: func() { recovered.Add(1) }}, s)
	if _, err := p.Exchange(clientCtx(t), query("a.example", dns.TypeA), QueryOptions{}); !IsAllDown(err) {
		t.Fatalf("refused connection: err %v, want IsAllDown", err)
	}
	if p.Stats()[0].Up {
		t.Fatal("up after a refused connection")
	}

	// Back, but holding its answers: the first query is the probe.
	release := make(chan struct{})
	s.mu.Lock()
	s.script, s.release = silent, release
	s.mu.Unlock()
	probeDone := make(chan error, 1)
	go func() {
		_, err := p.Exchange(context.Background(), query("probe.example", dns.TypeA), QueryOptions{})
		probeDone <- err
	}()
	eventually(t, "the probe sent", func() bool { return s.count("probe.example.") == 1 })
	for i := range 5 {
		if _, err := p.Exchange(clientCtx(t), query(fmt.Sprintf("other%d.example", i), dns.TypeA), QueryOptions{}); !IsAllDown(err) {
			t.Fatalf("query during the probe: %v, want IsAllDown", err)
		}
	}
	if n := len(s.questions()); n != 2 {
		t.Errorf("%d queries sent, want 2 (the first and the probe): %v", n, s.questions())
	}
	s.set(answers)
	close(release)
	if err := <-probeDone; err != nil {
		t.Fatalf("probe query: %v", err)
	}
	if !p.Stats()[0].Up || recovered.Load() != 1 {
		t.Fatalf("after the probe answered: up %v, OnRecover called %d times", p.Stats()[0].Up, recovered.Load())
	}
	if _, err := p.Exchange(clientCtx(t), query("b.example", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	if recovered.Load() != 1 {
		t.Errorf("OnRecover called %d times", recovered.Load())
	}
}

// TestPoolRecoveryOnNextQuery: an upstream that went silent and came
// back serves the very next query, whatever the probe schedule.
func TestPoolRecoveryOnNextQuery(t *testing.T) {
	s := &scripted{name: "silent-then-back", script: silent}
	p := scriptedPool(t, Options{Timeout: 50 * time.Millisecond, ProbeMin: time.Hour}, s)
	_, _ = p.Exchange(clientCtx(t), query("a.example", dns.TypeA), QueryOptions{})
	eventually(t, "down", func() bool { return !p.Stats()[0].Up })
	s.set(answers)
	if _, err := p.Exchange(clientCtx(t), query("b.example", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatalf("first query after recovery: %v", err)
	}
}

// TestPoolStateLogBounded: an upstream flapping 20 times logs one line
// per change for the first flap, then nothing until a token is back, and
// then one line summing up the changes not logged.
func TestPoolStateLogBounded(t *testing.T) {
	flap := func(p *Pool, s *scripted, n int) {
		for range n {
			s.set(refusing)
			_, _ = p.Exchange(clientCtx(t), query("x.example", dns.TypeA), QueryOptions{})
			s.set(answers)
			if _, err := p.Exchange(clientCtx(t), query("x.example", dns.TypeA), QueryOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var logs logBuffer
	s := &scripted{name: "flapping", script: answers}
	p := scriptedPool(t, Options{ProbeMin: time.Hour, LogEvery: time.Hour, Logger: logs.logger()}, s)
	flap(p, s, 20)
	out := logs.String()
	if n := strings.Count(out, "\n"); n != 2 || strings.Count(out, "upstream down") != 1 || strings.Count(out, "upstream up") != 1 {
		t.Errorf("20 flaps logged %d lines, want 2 (down, up):\n%s", n, out)
	}

	var logs2 logBuffer
	s2 := &scripted{name: "flapping", script: answers}
	p2 := scriptedPool(t, Options{ProbeMin: time.Hour, LogEvery: 100 * time.Millisecond, Logger: logs2.logger()}, s2)
	flap(p2, s2, 20)
	eventually(t, "a summary line", func() bool { return strings.Contains(logs2.String(), "unlogged_changes=") })
	if n := strings.Count(logs2.String(), "\n"); n > 4 {
		t.Errorf("%d lines:\n%s", n, logs2.String())
	}
}

// caseMangler answers with the question name in lower case (a forwarder
// that does not keep 0x20), the address from addr.
func caseMangler(addr func() string) func(*udpServer, netip.AddrPort, *dns.Msg) {
	return func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		r := upstreamtest.AnswerA(addr())(q)
		r.Question[0].Name = strings.ToLower(r.Question[0].Name)
		for _, rr := range r.Answer {
			rr.Header().Name = strings.ToLower(rr.Header().Name)
		}
		s.send(from, r)
	}
}

// TestPoolCaseFallback: an upstream that answers 0x20 queries in another
// case is asked again without 0x20, like unbound's use-caps-for-id
// fallback: consistent answers are used, inconsistent ones refused; the
// upstream is never marked down for it.
func TestPoolCaseFallback(t *testing.T) {
	mangler := startUDP(t, caseMangler(func() string { return "192.0.2.9" }))
	p := newPool(t, []string{mangler.url()}, Options{Randomize0x20: true, Timeout: 300 * time.Millisecond})
	name := "www.mixed-case-example.com"
	for range 5 {
		resp, err := p.Exchange(clientCtx(t), query(name, dns.TypeA), QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if answerA(t, resp) != "192.0.2.9" || resp.Question[0].Name != name+"." {
			t.Fatalf("answer %v", resp)
		}
	}
	st := p.Stats()[0]
	if !st.Up || st.CaseFallbacks != 5 || st.Failures != 0 {
		t.Errorf("stats %+v: want up, 5 fallbacks, no failures", st)
	}
	// Each fallback query went without 0x20: all in lower case.
	lower := 0
	for _, q := range mangler.queries() {
		if q.msg.Question[0].Name == name+"." {
			lower++
		}
	}
	if lower != 5 || len(mangler.queries()) != 10 {
		t.Errorf("%d queries, %d of them without 0x20; want 10 and 5", len(mangler.queries()), lower)
	}

	// An upstream whose wrong-case answer and plain answer disagree (a
	// forged wrong-case answer would): refused, the upstream still up.
	var n atomic.Int32
	liar := startUDP(t, caseMangler(func() string { return fmt.Sprintf("192.0.2.%d", n.Add(1)) }))
	lp := newPool(t, []string{liar.url()}, Options{Randomize0x20: true, Timeout: 300 * time.Millisecond, MaxAttempts: 1})
	_, err := lp.Exchange(clientCtx(t), query(name, dns.TypeA), QueryOptions{})
	if !errors.Is(err, ErrCaseInconsistent) {
		t.Fatalf("err %v, want ErrCaseInconsistent", err)
	}
	if st := lp.Stats()[0]; !st.Up || st.CaseFallbacks != 1 {
		t.Errorf("stats %+v", st)
	}

	// Without 0x20 nothing of this happens.
	plain := newPool(t, []string{mangler.url()}, Options{})
	if _, err := plain.Exchange(clientCtx(t), query(name, dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	if st := plain.Stats()[0]; st.CaseFallbacks != 0 {
		t.Errorf("fallback without 0x20: %+v", st)
	}
}

// TestPoolShutdownDrains: Shutdown lets the queries in progress on a DoT
// upstream finish; Close does not. The upstream holds its answers to the
// ten queries until the test lets them go: once Shutdown waits (or has
// returned), and once Close has returned; so neither outcome depends on
// how soon the test gets to stop the pool after the queries were sent.
func TestPoolShutdownDrains(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	var mu sync.Mutex
	var hold chan struct{} // the current run's: answers to q*.example wait until it is closed
	var held atomic.Int32  // queries waiting at the upstream
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: func(q *dns.Msg) *dns.Msg {
		if strings.HasPrefix(q.Question[0].Name, "q") {
			mu.Lock()
			h := hold
			mu.Unlock()
			held.Add(1)
			<-h
		}
		return upstreamtest.AnswerA("192.0.2.1")(q)
	}})
	run := func(stop func(p *Pool, letGo func())) (failed int) {
		release := make(chan struct{})
		var once sync.Once
		letGo := func() { once.Do(func() { close(release) }) }
		t.Cleanup(letGo)
		mu.Lock()
		hold = release
		mu.Unlock()
		held.Store(0)
		// Timeouts far beyond the test's run: the queries end when the
		// upstream lets them go or the pool is closed, nothing else.
		p := newPool(t, []string{srv.URL("dot.test")}, Options{CAPEM: ca.PEM, Timeout: 20 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := p.Exchange(ctx, query("warm.example", dns.TypeA), QueryOptions{}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var bad atomic.Int32
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.Exchange(ctx, query(fmt.Sprintf("q%d.example", i), dns.TypeA), QueryOptions{}); err != nil {
					bad.Add(1)
				}
			}()
		}
		eventually(t, "queries at the upstream", func() bool { return held.Load() == 10 })
		stop(p, letGo)
		wg.Wait()
		return int(bad.Load())
	}
	shutdown := func(p *Pool, letGo func()) {
		var returned atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = p.Shutdown(testCtx(t))
			returned.Store(true)
		}()
		eventually(t, "Shutdown waiting", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.idle != nil || returned.Load()
		})
		letGo()
		<-done
	}
	if failed := run(shutdown); failed != 0 {
		t.Errorf("%d queries failed across Shutdown", failed)
	}
	if failed := run(func(p *Pool, letGo func()) { _ = p.Close(); letGo() }); failed != 10 {
		t.Errorf("%d of 10 queries failed across Close, want all: the drain test shows nothing", failed)
	}
}
