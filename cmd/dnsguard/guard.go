package main

import (
	"context"
	"fmt"
	"log/slog"

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
type guardChain struct {
	handler stage.Handler
	close   func()
}

// buildGuard wires the chain for cfg around the long-lived cache and
// router side:
//
//	router stages (identify, local answers) -> protocol -> limit -> cache -> local names -> upstreams (checked)
//
// Local names (config local) sit inside the cache, so their answers are
// cached (briefly: their TTLs are capped) like any other.
func buildGuard(cfg *policy.Config, c *cache.Cache, router *routerSide, log *slog.Logger) (*guardChain, error) {
	v := validate.New(cfg.Answers)
	// TTL anomalies per name (the study's ttl-huge): logged, bounded memory.
	ttls := validate.NewTTLWatch(cfg.Answers.TTLJumpFactor, cfg.Cache.MaxEntries, log.With("stage", "validate"))
	pool, err := upstream.NewPool(cfg.Upstreams, upstream.Options{
		CAFile:        cfg.UpstreamCA,
		Timeout:       cfg.UpstreamTimeout,
		MaxAttempts:   cfg.Cache.UpstreamMax,
		Randomize0x20: cfg.Randomize0x20,
		Logger:        log.With("stage", "upstream"),
		Check: func(q, resp *dns.Msg) (*dns.Msg, error) {
			checked, err := v.Check(q.Question[0], resp, false)
			if err == nil {
				ttls.Observe(checked)
			}
			return checked, err
		},
	})
	if err != nil {
		return nil, fmt.Errorf("upstreams: %w", err)
	}
	// Answers from the local server are exempt from rebinding protection
	// because of where they come from (validate's Trusted).
	trusted := v.Trusted()
	local, err := localzone.New(localzone.Config{
		Domains: cfg.Local.Domains, Server: cfg.Local.Server, MaxTTL: cfg.Local.MaxTTL,
		Logger: log.With("stage", "local"),
		Check: func(req *stage.Request, q, resp *dns.Msg) (*dns.Msg, error) {
			return trusted.Check(q.Question[0], resp, strictRequest(req))
		},
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	lim := limit.New(cfg.Limits, limit.Options{})
	stages := append([]stage.Middleware{}, router.Stages...)
	stages = append(stages, protocol.Stage(), lim.Middleware(), c.Wrap, local.Wrap)
	return &guardChain{
		handler: stage.Chain(forward.Handler(strictExchanger{pool, v}), stages...),
		close: func() {
			// What each upstream did while this configuration ran: the
			// answers the shield refused and the flood copies dropped
			// are counted per upstream.
			for _, st := range pool.Stats() {
				log.Info("upstream totals", "upstream", st.URL, "up", st.Up, "rtt", st.RTT,
					"queries", st.Queries, "failures", st.Failures, "mismatches", st.Mismatches,
					"flood", st.Flood, "refused", st.Refused)
			}
			if cfg.Local.Server != "" || local.Stats.Answered.Load() > 0 {
				log.Info("local names totals", "server", cfg.Local.Server,
					"forwarded", local.Stats.Forwarded.Load(), "failed", local.Stats.Failed.Load(),
					"refused", local.Stats.Refused.Load(), "answered_here", local.Stats.Answered.Load())
			}
			pool.Close()
			local.Close()
		},
	}, nil
}

// strictRequest reports whether req's device is held to the strictest
// checks (graded weak, or in a strict class).
func strictRequest(req *stage.Request) bool {
	return req != nil && (req.Randomize || req.Device != nil && req.Device.Strict)
}

// strictExchanger holds devices graded weak to stricter terms upstream:
// 0x20 case randomisation on cleartext upstreams and the validator's
// strict checks.
type strictExchanger struct {
	pool *upstream.Pool
	v    *validate.Validator
}

func (s strictExchanger) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if !strictRequest(forward.RequestFrom(ctx)) {
		return s.pool.Exchange(ctx, q)
	}
	resp, err := s.pool.Exchange(upstream.WithCaseRandomization(ctx, true), q)
	if err != nil {
		return nil, err
	}
	return s.v.Check(q.Question[0], resp, true)
}
