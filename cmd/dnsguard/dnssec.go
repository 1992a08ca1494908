package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/dnssec"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// rawPool fetches the validator's DS and DNSKEY records through the
// upstream pool, unchecked by the shield (the validator checks them).
type rawPool struct{ pool *upstream.Pool }

func (r rawPool) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	return r.pool.Exchange(ctx, q, upstream.QueryOptions{})
}

// newDNSSEC returns the configuration's validator, or nil with
// validation off.
// clock is the running guard's clock check (kept across reloads); nil:
// one of its own.
func newDNSSEC(cfg *policy.Config, pool *upstream.Pool, log *slog.Logger, state *device.Store, clock *dnssec.BootClock) (*dnssec.Validator, error) {
	if !cfg.DNSSEC.Enabled {
		return nil, nil
	}
	anchors, err := dnssec.ParseAnchors(cfg.DNSSEC.TrustAnchors)
	if err != nil {
		return nil, err
	}
	if clock == nil {
		clock = bootClockFor(state, log, false)
	}
	return dnssec.New(rawPool{pool}, dnssec.Config{
		Anchors:         anchors,
		NegativeAnchors: cfg.DNSSEC.InsecureDomains,
		TimeTrusted:     clock.Trusted,
		Tracker:         anchorTracker(state, log),
	})
}

// bootClockFor returns the running guard's clock check; state may be nil.
// With waitNTP, signature times are not checked until NTPSynced.
func bootClockFor(state *device.Store, log *slog.Logger, waitNTP bool) *dnssec.BootClock {
	build, reason := releaseTime()
	var ms dnssec.MetaStore
	if state != nil {
		ms = state
	}
	c := dnssec.NewBootClock(time.Now, build, reason, ms, log)
	if waitNTP {
		c.WaitForNTP()
	}
	return c
}

// anchorStateKey is where the RFC 5011 state lives in the state file.
const anchorStateKey = "dnssec-anchors"

// anchorTracker follows the anchors' key rollovers (RFC 5011), its state
// kept in the state file; without one, in memory only (a restart begins
// every hold-down again).
func anchorTracker(state *device.Store, log *slog.Logger) *dnssec.Tracker {
	var saved []byte
	save := func([]byte) {}
	if state != nil {
		var err error
		if saved, err = state.GetMeta(anchorStateKey); err != nil {
			log.Warn("dnssec: trust anchor state unreadable; starting afresh", "err", err)
		}
		save = func(b []byte) {
			if err := state.PutMeta(anchorStateKey, b); err != nil {
				log.Warn("dnssec: trust anchor state not saved", "err", err)
			} else {
				log.Info("dnssec: trust anchor state changed (RFC 5011)")
			}
		}
	}
	t, err := dnssec.NewTracker(saved, save)
	if err != nil {
		log.Warn("dnssec: trust anchor state damaged; starting afresh", "err", err)
		t, _ = dnssec.NewTracker(nil, save)
	}
	return t
}

// buildTime is the release time, set by the package build
// (scripts/build-packages.sh: -ldflags "-X main.buildTime=$SOURCE_DATE_EPOCH",
// Unix seconds; RFC 3339 is read too). Without it the VCS commit time
// that go build records is used.
var buildTime string

// releaseTime returns the binary's build time and where it came from.
func releaseTime() (time.Time, string) {
	if buildTime != "" {
		if n, err := strconv.ParseInt(buildTime, 10, 64); err == nil {
			return time.Unix(n, 0).UTC(), "build time"
		}
		if t, err := time.Parse(time.RFC3339, buildTime); err == nil {
			return t, "build time"
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					return t, "build time (commit)"
				}
			}
		}
	}
	return time.Time{}, ""
}

func logDNSSEC(log *slog.Logger, sec *dnssec.Validator) {
	if sec == nil {
		return
	}
	st := sec.Stats()
	log.Info("dnssec totals", "validations", st.Validations, "secure", st.Secure, "insecure", st.Insecure,
		"bogus", st.Bogus, "indeterminate", st.Indeterminate, "key_queries", st.Queries,
		"signatures", st.Signatures, "cache_hits", st.CacheHits, "evictions", st.CacheEvictions, "limit_hits", st.LimitHits)
}
