package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
)

// flight is one upstream resolution in progress, shared by every query
// that misses on its key while it is out (RFC 5452 §5). It is one
// allocation: the request it resolves (copied: the caller's aliases the
// listener's buffer, and the flight may outlive the caller), the room for
// its question name, its result, and its context.
//
// A flight runs under its own context (the flight itself: see Deadline,
// Done, Err, Value), on the goroutine of the query that started it when
// that query cannot give up (the listener's), else on a flight worker
// (see Cache.flights), so that one device giving up fails nobody else.
// That context ends at the flight's deadline (refreshTimeout after it
// began: the cache's expiry timer closes it, see Cache.expire) or when
// the flight ends, whichever is first, and carries no values: in
// particular not the listener's waiter (stage.WithWaiter), which belongs
// to the caller's goroutine.
type flight struct {
	key      string // the cache key; the shard's flights map holds it
	sh       *shard // the key's shard
	deadline time.Time
	next     stage.Handler
	req      stage.Request
	name     [flightName]byte // req.Q.Name's room, if it fits

	// Guarded by the shard's mu.
	finished bool // r, err and shared are set; the flight left the map
	r        *dnswire.Reply
	err      error
	dups     int           // queries that joined after the first
	shared   bool          // dups > 0 when the flight finished
	wait     chan struct{} // made by a query that woke at the deadline before the flight finished; closed when it does

	// The context's state: done is closed once, with state set first.
	done   chan struct{}
	state  atomic.Int32 // flightOpen, flightExpired, flightEnded
	mu     sync.Mutex   // guards afters and the close of done
	afters []*flightAfter
}

// flightName is the room a flight has for its question name: names
// longer than that (rare: most are under 64 octets; at most
// dnswire.MaxName) get an allocation of their own. With it the flight
// is 576 octets, the allocator's 576-octet class; with room for the
// longest name it was 712, in the 768-octet class, and flights were
// 41 % of the octets allocated a miss (heap profile under bench.sh's
// miss load).
const flightName = 112

const (
	flightOpen = iota
	flightExpired
	flightEnded
)

// Deadline is when the flight gives up.
func (f *flight) Deadline() (time.Time, bool) { return f.deadline, true }

// Done is closed at the deadline or when the flight ends.
func (f *flight) Done() <-chan struct{} { return f.done }

// Err is context.DeadlineExceeded once the deadline passed,
// context.Canceled once the flight ended first, nil before.
func (f *flight) Err() error {
	switch f.state.Load() {
	case flightExpired:
		return context.DeadlineExceeded
	case flightEnded:
		return context.Canceled
	}
	return nil
}

// Value is nil: a flight carries none of its callers' values.
func (f *flight) Value(any) any { return nil }

// flightAfter is a func to run when the flight's context ends.
type flightAfter struct {
	fn      func()
	stopped bool // guarded by flight.mu: stop was called, or fn ran
}

// AfterFunc arranges for fn to run on its own goroutine when the flight's
// context ends, as context.AfterFunc; stop reports whether it stopped fn
// from running. Contexts derived from the flight (context.WithTimeout)
// use it instead of a goroutine each waiting for Done.
func (f *flight) AfterFunc(fn func()) (stop func() bool) {
	a := &flightAfter{fn: fn}
	f.mu.Lock()
	if f.state.Load() != flightOpen {
		f.mu.Unlock()
		a.stopped = true
		go fn()
		return func() bool { return false }
	}
	f.afters = append(f.afters, a)
	f.mu.Unlock()
	return func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return true
	}
}

// end ends the flight's context (state: flightExpired at the deadline,
// flightEnded when the flight is over); only the first call counts.
func (f *flight) end(state int32) {
	f.mu.Lock()
	if f.state.Load() != flightOpen {
		f.mu.Unlock()
		return
	}
	f.state.Store(state)
	close(f.done)
	afters := f.afters
	f.afters = nil
	for _, a := range afters {
		if a.stopped {
			continue
		}
		a.stopped = true
		go a.fn()
	}
	f.mu.Unlock()
}

// flightIdle is how long a flight worker waits for its next flight
// before it exits: under load the next comes within milliseconds.
const flightIdle = time.Second

// Close ends the contexts of the flights out (their upstream queries
// give up; the queries waiting on them get their failure) and of every
// flight started after it, and waits for the flight workers to exit. A
// caller whose queries do not give up (the listener's) has them answered
// at once this way when it stops. A miss after Close is resolved on the
// querying goroutine, and fails unless the stages behind the cache
// answer without waiting.
func (c *Cache) Close() {
	c.closed.Store(true) // before the flights are looked up: see newFlight
	var out []*flight
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for _, f := range sh.flights {
			out = append(out, f)
		}
		sh.mu.Unlock()
	}
	for _, f := range out {
		f.end(flightEnded)
	}
	c.flights.Close()
	c.expMu.Lock()
	if c.expTimer != nil {
		c.expTimer.Stop()
	}
	c.expMu.Unlock()
}

// fly runs the flight: the upstream resolution, then its result stored
// and handed to the queries waiting.
func (c *Cache) fly(f *flight) {
	r, err := f.next.ServeDNS(f, &f.req)
	sh := f.sh
	sh.mu.Lock()
	// Stored and out of the map in one step: a query that misses after
	// this finds the answer, never a second upstream query for it.
	c.storeLocked(sh, f.key, r, err)
	delete(sh.flights, f.key)
	f.finished, f.r, f.err, f.shared = true, r, err, f.dups > 0
	w := f.wait
	sh.mu.Unlock()
	f.end(flightEnded)
	if w != nil {
		close(w)
	}
}

// await waits for f's result, or for ctx to end (gaveUp; err is then
// ctx's).
func (c *Cache) await(ctx context.Context, f *flight, sh *shard) (r *dnswire.Reply, shared, gaveUp bool, err error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, false, true, ctx.Err()
	}
	sh.mu.Lock()
	if !f.finished {
		// Woken by the deadline: the flight ends soon (its context has).
		if f.wait == nil {
			f.wait = make(chan struct{})
		}
		w := f.wait
		sh.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, false, true, ctx.Err()
		}
		sh.mu.Lock()
	}
	r, shared, err = f.r, f.shared, f.err
	sh.mu.Unlock()
	return r, shared, false, err
}

// arm makes sure the expiry timer fires by d.
func (c *Cache) arm(d time.Time) {
	c.expMu.Lock()
	defer c.expMu.Unlock()
	if c.expArmed.Load() && !d.Before(c.expAt) {
		return
	}
	c.expAt = d
	c.expArmed.Store(true)
	if c.expTimer == nil {
		c.expTimer = time.AfterFunc(time.Until(d), c.expire)
	} else {
		c.expTimer.Reset(time.Until(d))
	}
}

// expire is the expiry timer: it ends the contexts of the flights past
// their deadline and arms itself for the next deadline, if a flight is
// out. One timer serves every flight (a flight arms it only when it is
// not armed: every flight has the same timeout, so the armed time is
// never later than a new flight's deadline).
func (c *Cache) expire() {
	c.expMu.Lock()
	c.expArmed.Store(false)
	c.expMu.Unlock()
	now := time.Now()
	var next time.Time
	var late []*flight
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for _, f := range sh.flights {
			switch {
			case !f.deadline.After(now):
				late = append(late, f)
			case next.IsZero() || f.deadline.Before(next):
				next = f.deadline
			}
		}
		sh.mu.Unlock()
	}
	for _, f := range late {
		f.end(flightExpired)
	}
	if !next.IsZero() {
		c.arm(next)
	}
}
