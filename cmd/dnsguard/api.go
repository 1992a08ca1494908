package main

import (
	"log/slog"
	"net/netip"
	"slices"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
)

// startAPI serves the HTTP API, /metrics and the dashboard when the
// config's api section has a listen address (nil, nil when it has none).
// Who may connect: loopback and api.allow_client when that is given,
// else whoever the DNS listener answers.
func startAPI(cfg *policy.Config, router *routerSide, srv *listen.Server, c *cache.Cache, ups *upstream.Pools, log *slog.Logger) (*control.Server, error) {
	api := cfg.API
	if api.Listen == "" {
		return nil, nil
	}
	allow := func(a netip.Addr) bool { return router.Access != nil && router.Access.Allow(a, 0) }
	if len(api.AllowClient) > 0 {
		prefixes := append(listen.Loopback(), api.AllowClient...)
		allow = func(a netip.Addr) bool {
			return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
		}
	}
	src := &control.Sources{
		Listen: &srv.Stats, Cache: c, Upstreams: ups.Stats,
		Registry: router.Registry, Counters: router.Counters,
	}
	if t := router.table; t != nil {
		src.Intercepting, src.Repairs = t.Installed, t.Repairs
	}
	if src.Counters == nil { // no router side (run --check)
		src.Counters = control.NewCounters(0)
	}
	if api.Token == "" {
		log.Warn("api: no token configured: /api/ and the dashboard refuse every request; /metrics is served", "listen", api.Listen)
	}
	s, err := control.Serve(control.Options{Listen: api.Listen, Token: api.Token, Allow: allow, Sources: src, Log: log.With("part", "api")})
	if err != nil {
		return nil, err
	}
	log.Info("api serving", "addr", s.Addr().String(), "allow_client", api.AllowClient)
	return s, nil
}
