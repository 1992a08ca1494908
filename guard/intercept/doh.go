package intercept

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// DoHRefresh is what RefreshDoH keeps the table's DoH set filled with:
// fixed addresses and the addresses DoH host names resolve to.
type DoHRefresh struct {
	Fixed []netip.Addr // always in the set (doh_address)
	Hosts []string     // resolved with Lookup (doh_host)
	// Lookup resolves a host name: on a router, through the guard's own
	// listener, so through its chain and upstreams.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Every is how often the names are resolved again once all of them
	// have been (default 30 minutes). Until then the guard's listener or
	// its upstreams may not be there yet: a round with failures is tried
	// again after 1 s, doubling to a minute at most.
	Every time.Duration
	// LookupTimeout bounds each lookup (default 5 s).
	LookupTimeout time.Duration
	Log           *slog.Logger // nil: no logging
}

// RefreshDoH fills t's DoH set with r's addresses at once, and again
// every round, until ctx ends. It returns when ctx ends.
func (t *Table) RefreshDoH(ctx context.Context, r DoHRefresh) {
	every, timeout, log := r.Every, r.LookupTimeout, r.Log
	if every <= 0 {
		every = 30 * time.Minute
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wait time.Duration // the first round at once
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		addrs := append([]netip.Addr(nil), r.Fixed...)
		failed := 0
		for _, h := range r.Hosts {
			lctx, cancel := context.WithTimeout(ctx, timeout)
			ips, err := r.Lookup(lctx, h)
			cancel()
			if err != nil {
				failed++
				log.Debug("resolving DoH host", "host", h, "err", err)
				continue
			}
			addrs = append(addrs, ips...)
		}
		if err := t.SetDoH(addrs); err != nil {
			log.Error("filling the DoH set", "err", err)
		} else {
			log.Info("DoH endpoints blocked", "addresses", len(addrs), "hosts", len(r.Hosts), "unresolved", failed)
		}
		wait = nextDoHRound(wait, failed, every)
	}
}

// nextDoHRound is the wait before the next round after one that waited
// wait and in which failed names did not resolve.
func nextDoHRound(wait time.Duration, failed int, every time.Duration) time.Duration {
	switch {
	case failed == 0:
		return every
	case wait < time.Minute:
		return max(2*wait, time.Second) // from 1 s: 0 doubled is 0
	default:
		return time.Minute
	}
}
