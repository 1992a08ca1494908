package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime/metrics"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// TestFlightOutlivesCaller: the query that started a flight gives up
// (its context ends) and gets its context's error at once; the flight
// goes on under its own context, which carries none of the caller's
// values (the listener's waiter stays on the listener's goroutine), and
// stores its answer for the next query.
func TestFlightOutlivesCaller(t *testing.T) {
	c, u, _, h := setup(t)
	u.gate = make(chan struct{})
	var waited int
	var flightCtx context.Context
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		flightCtx = ctx
		stage.Waiting(ctx) // must not reach the caller's waiter
		return u.ServeDNS(ctx, req)
	})
	h = c.Wrap(inner)
	ctx, cancel := context.WithCancel(stage.WithWaiter(context.Background(), func() { waited++ }))
	got := make(chan error, 1)
	go func() {
		_, err := h.ServeDNS(ctx, request(t, "gone.example.", false, false))
		got <- err
	}()
	for u.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller that gave up: %v, want context.Canceled", err)
	}
	if waited != 1 {
		t.Errorf("the caller's waiter called %d times, want 1 (before it waited)", waited)
	}
	if err := flightCtx.Err(); err != nil {
		t.Errorf("the flight's context ended with its caller: %v", err)
	}
	if d, ok := flightCtx.Deadline(); !ok || d.IsZero() {
		t.Errorf("the flight's context has no deadline")
	}
	close(u.gate)
	// The flight stores its answer: the next query is a hit.
	for c.Stats.Hits.Load() == 0 {
		r, err := h.ServeDNS(context.Background(), request(t, "gone.example.", false, false))
		if err != nil || r == nil {
			t.Fatalf("after the flight: %v, %v", r, err)
		}
	}
	if n := u.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
	if waited != 1 {
		t.Errorf("the caller's waiter called %d times, want 1 (never by the flight)", waited)
	}
	if err := flightCtx.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("the flight's context after it ended: %v, want context.Canceled", err)
	}
}

// TestFlightDeadline: a flight whose upstream never answers ends at its
// own deadline: its context (and a context derived from it) ends with
// DeadlineExceeded, and every query waiting on it gets the flight's
// failure, including one woken by the deadline before the flight had
// finished.
func TestFlightDeadline(t *testing.T) {
	c, _, _, _ := setup(t)
	c.flightTimeout = 20 * time.Millisecond
	release := make(chan struct{})
	var derivedErr, flightErr error
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		d, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		<-d.Done() // the flight's deadline ends it
		derivedErr, flightErr = d.Err(), ctx.Err()
		<-release // the flight finishes only after a waiter woke at the deadline
		return nil, stage.Fail(dnswire.EDENoReachableAut, "no upstream reachable", ctx.Err())
	})
	h := c.Wrap(inner)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := h.ServeDNS(context.Background(), request(t, "slow.example.", false, false))
			errs <- err
		}()
	}
	// Wait until a waiter woke at the deadline and found the flight
	// still out.
	for {
		var waiting bool
		for i := range c.shards {
			sh := &c.shards[i]
			sh.mu.Lock()
			for _, f := range sh.flights {
				waiting = waiting || f.wait != nil
			}
			sh.mu.Unlock()
		}
		if waiting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range 2 {
		err := <-errs
		var se *stage.Error
		if !errors.As(err, &se) || se.EDE.Code != dnswire.EDENoReachableAut {
			t.Errorf("waiter got %v, want the flight's failure", err)
		}
	}
	if !errors.Is(flightErr, context.DeadlineExceeded) || !errors.Is(derivedErr, context.DeadlineExceeded) {
		t.Errorf("at the deadline: flight %v, derived %v; want DeadlineExceeded", flightErr, derivedErr)
	}
	if n := c.Stats.Coalesced.Load(); n != 2 {
		t.Errorf("coalesced %d, want 2", n)
	}
}

// TestFlightAllocs: a miss answered by the stage behind the cache costs
// the cache a few allocations: the flight (request, name and context in
// one), its channel, the key, and the stored entry (its LRU links in
// it); the flight worker that runs it is one already waiting.
func TestFlightAllocs(t *testing.T) {
	c, _, _, _ := setup(t)
	rr, _ := dns.NewRR("a.example. 300 IN A 192.0.2.1")
	reply, err := stage.Synth(request(t, "a.example.", false, false), dns.RcodeSuccess, []dns.RR{rr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Wrap(stage.HandlerFunc(func(context.Context, *stage.Request) (*dnswire.Reply, error) {
		return reply.With(0, 0, nil), nil
	}))
	reqs := make([]*stage.Request, 0, 200)
	for i := range cap(reqs) {
		reqs = append(reqs, request(t, "n"+string(rune('a'+i%26))+string(rune('a'+i/26))+".example.", false, false))
	}
	i := 0
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := h.ServeDNS(context.Background(), reqs[i]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	// reply.With is 1; the cache's own: flight, channel, key, entry.
	if allocs > 5 {
		t.Errorf("%.1f allocations a miss, want at most 5", allocs)
	}
}

// TestCloseEndsFlights: Close ends the contexts of the flights out, on a
// flight worker and on the goroutine of a query that cannot give up
// (their upstreams give up and the queries waiting on them get the
// failure), waits for the flight workers to exit, and a flight started
// after Close is born ended (it runs on the querying goroutine).
func TestCloseEndsFlights(t *testing.T) {
	c, u, _, _ := setup(t)
	c.flightTimeout = time.Hour // only Close can end the flight
	var calls atomic.Int64
	var lateErr error
	h := c.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if calls.Add(1) <= 2 {
			<-ctx.Done()
			return nil, stage.Fail(dnswire.EDENetworkError, "gave up", ctx.Err())
		}
		lateErr = ctx.Err()
		return u.ServeDNS(ctx, req)
	}))
	got := make(chan error, 2)
	for i, ctx := range []context.Context{context.Background(), t.Context()} {
		go func() {
			_, err := h.ServeDNS(ctx, request(t, fmt.Sprintf("held%d.example.", i), false, false))
			got <- err
		}()
	}
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if n := c.flights.Running(); n != 1 {
		t.Errorf("%d flight workers, want 1 (for the query that can give up)", n)
	}
	c.Close()
	if n := c.flights.Running(); n != 0 {
		t.Errorf("%d flight workers after Close, want 0", n)
	}
	for range 2 {
		if err := <-got; !errors.Is(err, context.Canceled) {
			t.Errorf("query on a flight Close ended: %v, want context.Canceled", err)
		}
	}
	r, err := h.ServeDNS(t.Context(), request(t, "after.example.", false, false))
	if err != nil || r == nil {
		t.Fatalf("miss after Close: %v, %v", r, err)
	}
	if !errors.Is(lateErr, context.Canceled) {
		t.Errorf("the context of a flight started after Close: %v, want context.Canceled", lateErr)
	}
	if n := c.flights.Running(); n != 0 {
		t.Errorf("%d flight workers after a miss after Close, want 0", n)
	}
}

// BenchmarkMissFlight is a miss resolved by a stage behind the cache
// whose work needs a stack as deep as the upstream exchange and the
// validator's (deep, below), with 64 misses out at once. worker: the
// callers can give up, so the flight runs on a flight worker kept from an
// earlier miss (goroutines/op near 0) whose stack has grown already, not
// on a new one grown for every miss; own: the callers cannot give up (the
// listener's), so the flight runs on the caller's goroutine.
// cpu-ns/op is the process's CPU time a miss (the machine may be busy).
func BenchmarkMissFlight(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("worker", func(b *testing.B) { benchMissFlight(b, ctx) })
	b.Run("own", func(b *testing.B) { benchMissFlight(b, context.Background()) })
}

func benchMissFlight(b *testing.B, ctx context.Context) {
	c, _, _, _ := setup(b)
	rr, _ := dns.NewRR("a.example. 300 IN A 192.0.2.1")
	reply, err := stage.Synth(request(b, "a.example.", false, false), dns.RcodeSuccess, []dns.RR{rr}, nil)
	if err != nil {
		b.Fatal(err)
	}
	h := c.Wrap(stage.HandlerFunc(func(context.Context, *stage.Request) (*dnswire.Reply, error) {
		deep(24)
		return reply.With(0, 0, nil), nil
	}))
	const names = 1 << 16
	reqs := make([]*stage.Request, names)
	for i := range reqs {
		reqs[i] = request(b, fmt.Sprintf("n%d.example.", i), false, false)
	}
	var next atomic.Int64
	b.SetParallelism(32) // 64 on 2 CPUs
	created, cpu := goroutinesCreated(), cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// A name a miss: the cache holds 1000, the names cycle
			// through 65,536.
			if _, err := h.ServeDNS(ctx, reqs[next.Add(1)%names]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(goroutinesCreated()-created)/float64(b.N), "goroutines/op")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// deep uses about n KiB of stack, as a call chain n frames deep of 1 KiB
// each.
//
//go:noinline
func deep(n int) byte {
	var frame [1024]byte
	frame[n%len(frame)] = byte(n)
	if n <= 1 {
		return frame[0]
	}
	return deep(n-1) + frame[n%len(frame)]
}

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestFlightOnCallersGoroutine: a query whose context has no end (the
// listener's) resolves its flight itself, after the listener's waiter
// ran and under the flight's context, not its own (no waiter, a
// deadline); no flight worker is started, and a query joining the flight
// gets its answer.
func TestFlightOnCallersGoroutine(t *testing.T) {
	c, u, _, _ := setup(t)
	u.gate = make(chan struct{})
	var waited int
	var flightCtx context.Context
	h := c.Wrap(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if waited != 1 {
			t.Errorf("the caller's waiter ran %d times before its flight, want 1", waited)
		}
		flightCtx = ctx
		stage.Waiting(ctx) // must not reach the caller's waiter
		return u.ServeDNS(ctx, req)
	}))
	ctx := stage.WithWaiter(context.Background(), func() { waited++ })
	leader := make(chan error, 1)
	go func() {
		_, err := h.ServeDNS(ctx, request(t, "own.example.", false, false))
		leader <- err
	}()
	for u.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	joined := make(chan error, 1)
	go func() {
		_, err := h.ServeDNS(t.Context(), request(t, "own.example.", false, false))
		joined <- err
	}()
	for c.Stats.Misses.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(u.gate)
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
	if err := <-joined; err != nil {
		t.Fatalf("joined: %v", err)
	}
	if n := c.flights.Running(); n != 0 {
		t.Errorf("%d flight workers, want 0", n)
	}
	if d, ok := flightCtx.Deadline(); !ok || d.IsZero() {
		t.Error("the flight's context has no deadline")
	}
	if waited != 1 {
		t.Errorf("the caller's waiter ran %d times, want 1", waited)
	}
	if n := u.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
}

// TestFlightLongName: a question name longer than the flight's room
// (flightName) is resolved under its own name, as one that fits.
func TestFlightLongName(t *testing.T) {
	c, _, _, _ := setup(t)
	for _, n := range []int{flightName, flightName + 1, 250} {
		name := nameOfLength(n)
		if len(name)+1 != n {
			t.Fatalf("nameOfLength(%d) is %d octets in wire form", n, len(name)+1)
		}
		var asked string
		h := c.Wrap(stage.HandlerFunc(func(_ context.Context, req *stage.Request) (*dnswire.Reply, error) {
			asked = dnswire.NameString(req.Q.Name)
			return stage.Synth(req, dns.RcodeNameError, nil, nil)
		}))
		if _, err := h.ServeDNS(context.Background(), request(t, name, false, false)); err != nil {
			t.Fatal(err)
		}
		if asked != name {
			t.Errorf("%d octets: the flight asked %q, want %q", n, asked, name)
		}
	}
}

// nameOfLength is a name of n octets in wire form (n >= 3): labels of up
// to 63 letters.
func nameOfLength(n int) string {
	var b []byte
	for left := n - 1; left > 0; { // the root's octet
		l := min(left-1, 63)
		if rest := left - 1 - l; rest == 1 { // no room for another label
			l--
		}
		for range l {
			b = append(b, 'a'+byte(len(b)%26))
		}
		b = append(b, '.')
		left -= l + 1
	}
	return string(b)
}
