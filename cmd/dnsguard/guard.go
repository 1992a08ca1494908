package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/limit"
	"github.com/dnsguard/dnsguard/guard/localzone"
	"github.com/dnsguard/dnsguard/guard/protocol"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/guard/validate"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// guardChain is one configuration's query chain and what it holds open.
// close waits (until ctx ends) for the queries in progress on the chain
// to finish, then releases what it holds: a configuration replaced by a
// reload drains on the old chain while new queries go to the new one.
type guardChain struct {
	handler stage.Handler
	close   func(ctx context.Context)
}

// drainTimeout bounds how long a replaced chain waits for its queries
// (an upstream query ends within upstream_timeout times upstream_max).
const drainTimeout = 10 * time.Second

// inflight is the stage that counts the queries in progress on a chain.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0, if set
}

func (f *inflight) Name() string { return "inflight" }

func (f *inflight) Wrap(h stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.n--
			if f.n == 0 && f.idle != nil {
				close(f.idle)
				f.idle = nil
			}
			f.mu.Unlock()
		}()
		return h.ServeDNS(ctx, req)
	})
}

// wait returns when no query is in progress or ctx ends.
func (f *inflight) wait(ctx context.Context) {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// upstreams keeps the upstream pools across reloads. A configuration
// whose upstream settings (URLs, CA, timeout, attempts, 0x20) are those
// of a running pool shares that pool: its connections, its health and its
// measurements survive a reload (LuCI's Save & Apply reloads for any
// change). A pool no chain uses any more is shut down once the queries
// in progress on it are done.
type upstreams struct {
	log       *slog.Logger
	onRecover func()

	mu    sync.Mutex
	pools map[string]*sharedPool
}

type sharedPool struct {
	key  string
	pool *upstream.Pool
	refs int
}

// newUpstreams returns an empty set; onRecover (may be nil) is called
// when every upstream of a pool was down and one answers again.
func newUpstreams(log *slog.Logger, onRecover func()) *upstreams {
	return &upstreams{log: log, onRecover: onRecover, pools: map[string]*sharedPool{}}
}

// poolKey is what makes two configurations' pools the same.
func poolKey(cfg *policy.Config) string {
	ca := ""
	if cfg.UpstreamCA != "" {
		// The file's contents, not just its name: a renewed CA is a new pool.
		b, err := os.ReadFile(cfg.UpstreamCA)
		sum := sha256.Sum256(b)
		ca = fmt.Sprintf("%s %x %v", cfg.UpstreamCA, sum, err)
	}
	return fmt.Sprintf("%q|%s|%v|%d|%v", cfg.Upstreams, ca, cfg.UpstreamTimeout, cfg.Cache.UpstreamMax, cfg.Randomize0x20)
}

// acquire returns the pool for cfg, shared or new.
func (u *upstreams) acquire(cfg *policy.Config) (*sharedPool, error) {
	key := poolKey(cfg)
	u.mu.Lock()
	defer u.mu.Unlock()
	if sp := u.pools[key]; sp != nil {
		sp.refs++
		return sp, nil
	}
	pool, err := upstream.NewPool(cfg.Upstreams, upstream.Options{
		CAFile:        cfg.UpstreamCA,
		Timeout:       cfg.UpstreamTimeout,
		MaxAttempts:   cfg.Cache.UpstreamMax,
		Randomize0x20: cfg.Randomize0x20,
		Logger:        u.log.With("stage", "upstream"),
		OnRecover:     u.onRecover,
	})
	if err != nil {
		return nil, fmt.Errorf("upstreams: %w", err)
	}
	sp := &sharedPool{key: key, pool: pool, refs: 1}
	u.pools[key] = sp
	return sp, nil
}

// release drops a chain's use of sp; the last one shuts the pool down,
// letting its queries in progress finish until ctx ends.
func (u *upstreams) release(ctx context.Context, sp *sharedPool) {
	u.mu.Lock()
	sp.refs--
	last := sp.refs == 0
	if last {
		delete(u.pools, sp.key)
	}
	u.mu.Unlock()
	if !last {
		return
	}
	_ = sp.pool.Shutdown(ctx)
	// What each upstream did while this pool ran: the answers the shield
	// refused and the flood copies dropped are counted per upstream.
	for _, st := range sp.pool.Stats() {
		u.log.Info("upstream totals", "upstream", st.URL, "up", st.Up, "rtt", st.RTT,
			"queries", st.Queries, "failures", st.Failures, "mismatches", st.Mismatches,
			"flood", st.Flood, "refused", st.Refused, "case_fallbacks", st.CaseFallbacks,
			"reader_late", st.ReaderLate, "reader_errors", st.ReaderErrors)
		if st.ReaderLate+st.ReaderErrors > 0 { // should never happen: say so where it shows
			u.log.Warn("upstream reader woke late or failed", "upstream", st.URL,
				"reader_late", st.ReaderLate, "reader_errors", st.ReaderErrors)
		}
	}
}

// buildGuard wires the chain for cfg around the long-lived cache and
// router side; its order is the list in the body:
//
//	inflight -> count -> identify -> static -> protocol -> limit -> cache -> local -> forward (upstreams, checked)
//
// Local names (config local) sit inside the cache, so their answers are
// cached (briefly: their TTLs are capped) like any other.
//
// The upstream pool comes from ups (shared with the chain this one
// replaces when the upstream settings are the same); nil ups gives the
// chain a pool of its own.
func buildGuard(cfg *policy.Config, c *cache.Cache, router *routerSide, log *slog.Logger, ups *upstreams) (*guardChain, error) {
	v := validate.New(cfg.Answers)
	// TTL anomalies per name (the study's ttl-huge): logged, bounded memory.
	ttls := validate.NewTTLWatch(cfg.Answers.TTLJumpFactor, cfg.Cache.MaxEntries, log.With("stage", "validate"))
	if ups == nil {
		ups = newUpstreams(log, c.Recovered)
	}
	sp, err := ups.acquire(cfg)
	if err != nil {
		return nil, err
	}
	sec, err := newDNSSEC(cfg, sp.pool, log.With("stage", "dnssec"), router.State, router.Clock)
	if err != nil {
		ups.release(context.Background(), sp)
		return nil, fmt.Errorf("dnssec: %w", err)
	}
	check := func(q, resp *dns.Msg) (*dns.Msg, error) {
		checked, err := v.Check(q.Question[0], resp, false)
		if err == nil {
			ttls.Observe(checked)
		}
		return checked, err
	}
	// Answers from the local server are exempt from rebinding protection
	// because of where they come from (validate's Trusted).
	trusted := v.Trusted()
	local, err := localzone.New(localzone.Config{
		Domains: cfg.Local.Domains, Server: cfg.Local.Server, MaxTTL: cfg.Local.MaxTTL,
		Logger: log.With("stage", "local"),
		Check: func(t policy.Terms, q, resp *dns.Msg) (*dns.Msg, error) {
			return trusted.Check(q.Question[0], resp, t.MinimalShield())
		},
	})
	if err != nil {
		ups.release(context.Background(), sp)
		return nil, err
	}
	// Strict queries keep their answers apart where strict terms change
	// them under this configuration (policy.Terms.OwnAnswers).
	c.SetStrictness(cfg.Strictness())
	upstreams := &forward.Upstreams{Pool: sp.pool, Shield: v, Check: check, DNSSEC: sec, Bogus: forward.NewBogusLog(log.With("stage", "dnssec"))}
	var running inflight
	// The chain, outermost first: the one place its order is written.
	order := []stage.Stage{
		&running,                               // queries in progress, which a reload waits for
		router.Counters,                        // counts what the stages further in answered
		router.Identify,                        // the device, its class and terms (nil: none)
		localzone.NewStatic(),                  // localhost, .local, .onion, the canaries: answered here
		protocol.New(),                         // NOTIMP, BADVERS, REFUSED for non-IN, minimal ANY
		limit.New(cfg.Limits, limit.Options{}), // per-device token bucket
		c,                                      // answers kept across reloads, coalescing
		local,                                  // LAN names to the local server
		forward.New(upstreams),                 // the upstreams (pool, DNSSEC, shield) under the query's terms
	}
	log.Debug("query chain", "stages", stage.Names(order))
	return &guardChain{
		handler: stage.Chain(order...),
		close: func(ctx context.Context) {
			running.wait(ctx)
			if cfg.Local.Server != "" || local.Stats.Answered.Load() > 0 {
				log.Info("local names totals", "server", cfg.Local.Server,
					"forwarded", local.Stats.Forwarded.Load(), "failed", local.Stats.Failed.Load(),
					"refused", local.Stats.Refused.Load(), "answered_here", local.Stats.Answered.Load())
			}
			local.Close()
			logDNSSEC(log, sec)
			ups.release(ctx, sp)
		},
	}, nil
}
