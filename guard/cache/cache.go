// Package cache is the guard's answer cache stage: answers stored in wire
// form (a hit is a copy and a patch, no message building), TTLs clamped to
// policy, negative answers cached per RFC 2308, failures cached with
// exponential backoff (RFC 9520 §3.2), stale answers served when the
// upstream fails (RFC 8767), and identical in-flight questions coalesced
// into one upstream query (RFC 5452 §5). Bounded by entries and bytes.
package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

const (
	shardCount = 32
	// entryOverhead approximates the memory an entry costs beyond its
	// wire bytes (map slot, key, struct).
	entryOverhead = 160
	// refreshTimeout bounds one upstream resolution made on behalf of
	// possibly many coalesced devices (RFC 8767 §5: 10-30 s).
	refreshTimeout = 10 * time.Second
)

// Stats counts what the cache did.
type Stats struct {
	Hits, Misses, Stale, CachedErrors, Coalesced, Evictions atomic.Uint64
}

// Cache stores answers across config reloads; Wrap puts it in a chain.
type Cache struct {
	pol    atomic.Pointer[policy.Cache]
	now    func() time.Time
	log    *slog.Logger
	seed   maphash.Seed
	shards [shardCount]shard

	// flightTimeout bounds a flight (refreshTimeout; tests shorten it).
	flightTimeout time.Duration
	// flights runs the flights of callers that can give up: on workers
	// that wait flightIdle for the next (their stacks grown once, not for
	// every miss). Close joins them.
	flights *stage.Workers[*flight, struct{}]
	closed  atomic.Bool // Close was called: flights are born ended
	// The flights' expiry timer (see expire): armed while flights are
	// out, at the earliest deadline (expAt).
	expMu    sync.Mutex
	expTimer *time.Timer
	expAt    time.Time
	expArmed atomic.Bool

	// realClock: now is time.Now, so a request's Received time serves
	// instead (tests that inject a clock keep it for every read).
	realClock bool

	// gen counts recoveries of the upstream path (Recovered): failures
	// cached while it was down hold only within their generation.
	gen atomic.Uint32
	// base is the origin of the entries' times (at).
	base time.Time
	// strictness is what strict terms change under the running
	// configuration (SetStrictness): where strict queries keep their
	// answers apart from lenient ones.
	strictness atomic.Pointer[policy.Strictness]
	Stats      Stats
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	// lru is the ring of entries, most recently used first (lru.next),
	// least last (lru.prev); lru itself holds nothing.
	lru   entry
	bytes int64
	// The upstream resolutions out, by key: one per key.
	flights map[string]*flight
}

// entry is one question's answer or failure. It is 112 octets on 64-bit
// platforms (20,000 of them are most of a router's heap): the LRU links
// are its own and its times are nanoseconds on the cache's clock (at),
// not time.Time's 24 octets.
type entry struct {
	key        string
	prev, next *entry // LRU ring (shard.lru)
	// A good answer (nil when only a failure is known).
	reply      *dnswire.Reply
	stored     int64
	expires    int64
	staleUntil int64
	// A cached failure.
	failErr   error
	failUntil int64
	failGen   uint32 // see failPath
	failures  int32  // consecutive failures of the name: its backoff
	noStale   bool   // the upstream said TTL 0: never served stale (RFC 8767 §7)
	// The cached failure was the path's, not the name's (see
	// Unreachable): it holds only while gen is failGen.
	failPath bool
}

// pushFront puts e, in no ring, at the front of sh's.
func (sh *shard) pushFront(e *entry) {
	if sh.lru.next == nil {
		sh.lru.next, sh.lru.prev = &sh.lru, &sh.lru
	}
	e.prev, e.next = &sh.lru, sh.lru.next
	e.next.prev = e
	sh.lru.next = e
}

// unlink takes e out of its ring.
func (sh *shard) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// touch moves e to the front of sh's ring.
func (sh *shard) touch(e *entry) {
	if sh.lru.next != e {
		sh.unlink(e)
		sh.pushFront(e)
	}
}

// Unreachable is implemented by errors that say no upstream could be
// asked at all (every one was down; guard/upstream's pool returns such
// errors). A failure like that says nothing about the name: it is cached
// for fail_min only, does not grow the name's backoff (RFC 9520 §3.2 is
// about the name's servers), and is forgotten as soon as Recovered is
// called, so that a name a device kept retrying during an outage is
// asked again with the first query after it.
type Unreachable interface {
	Unreachable() bool
}

// Held is implemented by errors that say how long they are cached
// (guard/dnssec's bogus verdicts).
type Held interface {
	HoldFor() time.Duration
}

func heldFor(err error) time.Duration {
	var h Held
	if errors.As(err, &h) {
		return h.HoldFor()
	}
	return 0
}

// pathFailure reports whether err (or an error in its chain) is
// Unreachable.
func pathFailure(err error) bool {
	var u Unreachable
	return errors.As(err, &u) && u.Unreachable()
}

// Recovered tells the cache that the upstream path works again: the
// failures cached while it was down (Unreachable) are forgotten.
func (c *Cache) Recovered() { c.gen.Add(1) }

// failureHolds reports whether e's cached failure still stands at now.
func (c *Cache) failureHolds(e *entry, now int64) bool {
	return e.failErr != nil && now < e.failUntil && (!e.failPath || e.failGen == c.gen.Load())
}

// at is t on the entries' clock: nanoseconds since the cache was made,
// by the monotonic clock when t has its reading (time.Now, a request's
// Received), so that a wall clock set at boot (NTP) moves nothing.
func (c *Cache) at(t time.Time) int64 { return int64(t.Sub(c.base)) }

func (e *entry) size() int64 {
	n := int64(entryOverhead + len(e.key))
	if e.reply != nil {
		n += int64(len(e.reply.Msg) + 2*len(e.reply.TTLs))
	}
	return n
}

// New returns an empty cache under policy p. now may be nil (time.Now):
// the cache then takes a query's time from its request (Received, read
// once per batch by the listener) instead of reading the clock again.
func New(p policy.Cache, log *slog.Logger, now func() time.Time) *Cache {
	realClock := now == nil
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{now: now, realClock: realClock, log: log, seed: maphash.MakeSeed(), flightTimeout: refreshTimeout, base: now()}
	c.flights = stage.NewWorkers(func(_ *struct{}, f *flight) { c.fly(f) }, 0, flightIdle)
	c.SetPolicy(p)
	// Until told otherwise, strict queries share nothing with lenient ones.
	c.SetStrictness(policy.Strictness{Case0x20Differs: true})
	for i := range c.shards {
		c.shards[i].m = make(map[string]*entry)
		c.shards[i].flights = make(map[string]*flight)
	}
	return c
}

// SetPolicy replaces the policy (on reload) keeping what is stored.
func (c *Cache) SetPolicy(p policy.Cache) {
	if p.MaxEntries <= 0 {
		p.MaxEntries = 1
	}
	c.pol.Store(&p)
}

// SetStrictness says what strict terms change under the running
// configuration (policy.Config.Strictness): a strict query shares
// answers and flights with lenient ones only where they cannot differ
// (policy.Terms.OwnAnswers).
func (c *Cache) SetStrictness(s policy.Strictness) { c.strictness.Store(&s) }

// Len returns the number of entries.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Key flag bits: everything about a query that changes the answer.
const (
	keyEDNS = 1 << iota
	keyDO
	keyCD
	keyAD     // AD asked without DO: AD may be set on the answer (RFC 6840 §5.7)
	keyStrict // strict terms, where they change the answer (policy.Terms.OwnAnswers)
)

// appendKey appends the cache key of q: lower-cased name, type, class and
// the EDNS presence, DO and CD bits (and AD without DO), and whether the
// query keeps its answers apart under strict terms (own).
func appendKey(dst []byte, q *dnswire.Query, own bool) []byte {
	dst = q.LowerName(dst)
	dst = binary.BigEndian.AppendUint16(dst, q.Type)
	dst = binary.BigEndian.AppendUint16(dst, q.Class)
	var f byte
	if q.EDNS.Present {
		f |= keyEDNS
	}
	if q.EDNS.DO {
		f |= keyDO
	}
	if q.CD {
		f |= keyCD
	}
	if q.AD && !q.EDNS.DO {
		f |= keyAD
	}
	if own {
		f |= keyStrict
	}
	return append(dst, f)
}

func (c *Cache) shard(key []byte) *shard {
	return &c.shards[maphash.Bytes(c.seed, key)%shardCount]
}

// Name is "cache".
func (c *Cache) Name() string { return "cache" }

// Wrap returns the cache stage in front of next (the upstream side).
func (c *Cache) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		return c.serve(ctx, req, next)
	})
}

func (c *Cache) serve(ctx context.Context, req *stage.Request, next stage.Handler) (*dnswire.Reply, error) {
	var kb [dnswire.MaxName + 8]byte
	key := appendKey(kb[:0], &req.Q, req.Terms.OwnAnswers(req.Q.EDNS.DO, *c.strictness.Load()))
	now := req.Received
	if !c.realClock || now.IsZero() {
		now = c.now()
	}
	p := c.pol.Load()
	sh := c.shard(key)

	sh.mu.Lock()
	e := sh.m[string(key)]
	if e != nil {
		sh.touch(e)
		t := c.at(now)
		if e.reply != nil && t < e.expires {
			// The hit is answered in the request's room: no allocation.
			r := &req.Reply
			*r = *e.reply
			r.Age, r.FixedTTL, r.EDE = uint32((t-e.stored)/int64(time.Second)), 0, nil
			sh.mu.Unlock()
			c.Stats.Hits.Add(1)
			return r, nil
		}
		if c.failureHolds(e, t) {
			r, err := c.fallback(e, t, p, e.failErr)
			sh.mu.Unlock()
			return r, err
		}
	}
	// One upstream query per question in flight, whoever asks: join the
	// flight out for the key, or start one. Looked up under the same lock
	// as the entry, and a flight stores its answer and leaves the map
	// under it too, so a flight that ended between a miss and now is
	// never followed by a second upstream query: its answer was found.
	f := sh.flights[string(key)]
	if f != nil {
		f.dups++
	} else {
		f = c.newFlight(sh, string(key), req, next, now)
		sh.flights[f.key] = f
	}
	leader, own := f.dups == 0, false
	sh.mu.Unlock()
	c.Stats.Misses.Add(1)
	if leader {
		if !c.expArmed.Load() {
			c.arm(f.deadline)
		}
		// A caller that cannot give up (its context has no end: the
		// listener's queries) resolves the flight itself, as it would
		// only wait for it; the flight is handed to a flight worker
		// otherwise, so that it outlives a caller that gives up.
		own = ctx.Done() == nil || !c.flights.Go(f)
	}
	// This goroutine now waits: a listener reading in batches sends the
	// answers it has and hands its other queries on.
	stage.Waiting(ctx)
	if own {
		c.fly(f)
	}
	r, shared, gaveUp, err := c.await(ctx, f, sh)
	if gaveUp {
		return nil, err // the flight goes on for the others, and the cache
	}
	if shared {
		c.Stats.Coalesced.Add(1)
	}
	if err == nil {
		return r, nil
	}
	// The upstream failed: a stale answer if there is one, else the error.
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[f.key]; e != nil {
		if r := c.stale(e, c.at(c.now()), p); r != nil {
			return r, nil
		}
	}
	return nil, err
}

// newFlight makes the flight for key (in sh) resolving req (copied) by next,
// its deadline flightTimeout from now (the real clock's time).
func (c *Cache) newFlight(sh *shard, key string, req *stage.Request, next stage.Handler, now time.Time) *flight {
	if !c.realClock || now.IsZero() {
		now = time.Now()
	}
	f := &flight{key: key, sh: sh, deadline: now.Add(c.flightTimeout), next: next, req: *req, done: make(chan struct{})}
	if c.closed.Load() {
		f.state.Store(flightEnded) // born ended: see Close
		close(f.done)
	}
	f.req.Raw = nil
	if len(req.Q.Name) <= len(f.name) {
		f.req.Q.Name = f.name[:copy(f.name[:], req.Q.Name)]
	} else {
		f.req.Q.Name = append([]byte(nil), req.Q.Name...)
	}
	return f
}

// fallback answers from an entry whose failure is cached: stale data if
// allowed, else the cached error (EDE Cached Error for upstream failures).
func (c *Cache) fallback(e *entry, now int64, p *policy.Cache, err error) (*dnswire.Reply, error) {
	if r := c.stale(e, now, p); r != nil {
		return r, nil
	}
	c.Stats.CachedErrors.Add(1)
	var se *stage.Error
	if errors.As(err, &se) {
		ce := *se
		if ce.EDE.Code == dnswire.EDENoReachableAut || ce.EDE.Code == dnswire.EDENetworkError {
			ce.EDE.Code = dnswire.EDECachedError
			ce.EDE.Text = "cached error: " + se.EDE.Text
		}
		return nil, &ce
	}
	return nil, err
}

// stale returns the entry's expired answer if it may still be served
// (RFC 8767 §4: TTL stale_ttl, EDE Stale Answer), else nil.
func (c *Cache) stale(e *entry, now int64, p *policy.Cache) *dnswire.Reply {
	if e.reply != nil && p.ServeStale && !e.noStale && now < e.staleUntil {
		c.Stats.Stale.Add(1)
		code := uint16(dnswire.EDEStaleAnswer)
		if e.reply.Rcode() == dns.RcodeNameError {
			code = dnswire.EDEStaleNXDOMAIN
		}
		return e.reply.With(0, uint32(max(p.StaleTTL/time.Second, 1)), &dnswire.EDE{Code: code, Text: "stale answer: upstream failing"})
	}
	return nil
}

// storeLocked records an upstream result under key, its shard sh locked.
func (c *Cache) storeLocked(sh *shard, key string, r *dnswire.Reply, err error) {
	p := c.pol.Load()
	now := c.at(c.now())
	e := sh.m[key]
	if e == nil {
		e = &entry{key: key}
		sh.pushFront(e)
		sh.m[key] = e
	} else {
		sh.bytes -= e.size()
		sh.touch(e)
	}
	switch {
	case err != nil && pathFailure(err):
		// Every upstream was down: fail_min, the name's backoff as it
		// was, and only until the path recovers.
		e.failErr, e.failUntil = err, now+int64(p.FailMin)
		e.failPath, e.failGen = true, c.gen.Load()
	case err != nil && heldFor(err) > 0:
		// A failure that says how long it stands (DNSSEC bogus data:
		// 60 s, unbound's val-bogus-ttl); the name's backoff is unchanged.
		e.failErr, e.failUntil = err, now+int64(heldFor(err))
		e.failPath = false
	case err != nil:
		// RFC 9520 §3.2: at least fail_min, doubling, at most fail_max;
		// no upstream query for this question until it expires.
		e.failures++
		d := p.FailMin << min(e.failures-1, 20)
		e.failErr, e.failUntil = err, now+int64(min(d, p.FailMax))
		e.failPath = false
	default:
		ttl, noStale := clampTTLs(r, p)
		e.reply, e.stored, e.noStale = r, now, noStale
		e.expires = now + int64(ttl)*int64(time.Second)
		e.staleUntil = e.expires + int64(p.MaxStale)
		e.failErr, e.failures = nil, 0
	}
	sh.bytes += e.size()
	c.evict(sh, p)
}

// evict drops least recently used entries until the shard is within its
// share of the bounds.
func (c *Cache) evict(sh *shard, p *policy.Cache) {
	maxEntries := max(p.MaxEntries/shardCount, 1)
	maxBytes := p.MaxBytes / shardCount
	for len(sh.m) > maxEntries || (maxBytes > 0 && sh.bytes > maxBytes && len(sh.m) > 1) {
		e := sh.lru.prev
		sh.unlink(e)
		delete(sh.m, e.key)
		sh.bytes -= e.size()
		c.Stats.Evictions.Add(1)
	}
}

// clampTTLs rewrites the TTLs of a freshly stored reply into the policy's
// bounds and returns how long it may be served. Negative answers (no
// answer records) live at most neg_max_ttl (RFC 2308 §5); the forward
// stage has already set the SOA TTL to min(TTL, MINIMUM) (§3).
func clampTTLs(r *dnswire.Reply, p *policy.Cache) (ttl uint32, zero bool) {
	lo := uint32(p.MinTTL / time.Second)
	hi := uint32(p.MaxTTL / time.Second)
	if binary.BigEndian.Uint16(r.Msg[6:]) == 0 { // ANCOUNT: negative
		hi = min(hi, uint32(p.NegMaxTTL/time.Second))
	}
	lo = min(lo, hi)
	minTTL, ok := r.MinTTL()
	if !ok {
		// No records at all (a NODATA without SOA): RFC 2308 §5 says
		// not to cache; the floor keeps a storming device off the upstream.
		return lo, true
	}
	zero = minTTL == 0
	for _, o := range r.TTLs {
		t := binary.BigEndian.Uint32(r.Msg[o:])
		binary.BigEndian.PutUint32(r.Msg[o:], min(max(t, lo), hi))
	}
	return min(max(minTTL, lo), hi), zero
}
