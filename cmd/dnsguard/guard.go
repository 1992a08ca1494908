package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
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
func buildGuard(cfg *policy.Config, c *cache.Cache, router *routerSide, log *slog.Logger, ups *upstream.Pools) (*guardChain, error) {
	v := validate.New(cfg.Answers)
	// TTL anomalies per name (the study's ttl-huge): logged, bounded memory.
	ttls := validate.NewTTLWatch(cfg.Answers.TTLJumpFactor, cfg.Cache.MaxEntries, log.With("stage", "validate"))
	if ups == nil {
		ups = upstream.NewPools(log)
	}
	pool, release, err := ups.Acquire(cfg.Upstreams, upstream.Options{
		CAFile:        cfg.UpstreamCA,
		Timeout:       cfg.UpstreamTimeout,
		MaxAttempts:   cfg.Cache.UpstreamMax,
		Randomize0x20: cfg.Randomize0x20,
		Logger:        log.With("stage", "upstream"),
		OnRecover:     c.Recovered,
	})
	if err != nil {
		return nil, fmt.Errorf("upstreams: %w", err)
	}
	sec, err := newDNSSEC(cfg, pool, log.With("stage", "dnssec"), router.State, router.Clock)
	if err != nil {
		release(context.Background())
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
		release(context.Background())
		return nil, err
	}
	// Strict queries keep their answers apart where strict terms change
	// them under this configuration (policy.Terms.OwnAnswers).
	c.SetStrictness(cfg.Strictness())
	upstreams := &forward.Upstreams{Pool: pool, Shield: v, Check: check, DNSSEC: sec, Bogus: forward.NewBogusLog(log.With("stage", "dnssec"))}
	var running stage.Inflight
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
			running.Wait(ctx)
			if cfg.Local.Server != "" || local.Stats.Answered.Load() > 0 {
				log.Info("local names totals", "server", cfg.Local.Server,
					"forwarded", local.Stats.Forwarded.Load(), "failed", local.Stats.Failed.Load(),
					"refused", local.Stats.Refused.Load(), "answered_here", local.Stats.Answered.Load())
			}
			local.Close()
			logDNSSEC(log, sec)
			release(ctx)
		},
	}, nil
}
