package main

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/dnssec"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// bogusTTL is how long a bogus verdict is cached (unbound's val-bogus-ttl).
const bogusTTL = 60 * time.Second

// errBogus is in the chain of every DNSSEC refusal.
var errBogus = errors.New("dnssec: bogus")

// bogusError is a refusal of bogus data: SERVFAIL with the verdict's EDE,
// cached for bogusTTL (guard/cache's Held).
type bogusError struct{ err *stage.Error }

func (e bogusError) Error() string          { return e.err.Error() }
func (e bogusError) Unwrap() error          { return e.err }
func (e bogusError) HoldFor() time.Duration { return bogusTTL }

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

// dnssecVerdict validates resp (the upstream's answer to q) with sec:
// AD set on secure data and cleared on anything else; bogus data is an
// error. With sec nil or CD=1 the answer passes unvalidated, AD cleared:
// AD comes only from the guard's own validation.
func dnssecVerdict(ctx context.Context, sec *dnssec.Validator, q, resp *dns.Msg) (*dns.Msg, error) {
	if sec == nil || q.CheckingDisabled {
		resp.AuthenticatedData = false
		return resp, nil
	}
	res := sec.Validate(ctx, resp)
	switch res.Security {
	case dnssec.Secure:
		resp.AuthenticatedData = true
		if res.Capped {
			// RFC 4035 §5.3.3: no longer than the signatures allow.
			for _, sec := range [][]dns.RR{resp.Answer, resp.Ns} {
				for _, rr := range sec {
					if h := rr.Header(); h.Ttl > res.TTLCap {
						h.Ttl = res.TTLCap
					}
				}
			}
		}
		return resp, nil
	case dnssec.Insecure:
		resp.AuthenticatedData = false
		return resp, nil
	case dnssec.Bogus:
		code := res.EDE
		if code == 0 {
			code = dns.ExtendedErrorCodeDNSBogus
		}
		return nil, bogusError{err: stage.Fail(code, dnswire.EDEText("DNSSEC bogus: "+res.Reason), errBogus)}
	default:
		return nil, stage.Fail(dns.ExtendedErrorCodeDNSSECIndeterminate, dnswire.EDEText("DNSSEC indeterminate: "+res.Reason), errBogus)
	}
}

// withDO returns q asking for DNSSEC records (DO=1), copied if needed.
func withDO(q *dns.Msg) *dns.Msg {
	if opt := q.IsEdns0(); opt != nil && opt.Do() {
		return q
	}
	c := q.Copy()
	if opt := c.IsEdns0(); opt != nil {
		opt.SetDo()
	} else {
		c.SetEdns0(dnswire.OurEDNSSize, true)
	}
	return c
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

// bogusLog logs DNSSEC refusals, at most one a second (a forger, or a
// broken zone a device keeps asking for, must not flood the log); the
// ones left out are counted in the next line.
type bogusLog struct {
	log     *slog.Logger
	last    atomic.Int64 // Unix nanoseconds of the last line
	skipped atomic.Int64
}

func newBogusLog(log *slog.Logger) *bogusLog { return &bogusLog{log: log} }

func (b *bogusLog) note(q *dns.Msg, err error) {
	if b == nil || len(q.Question) != 1 {
		return
	}
	now := time.Now().UnixNano()
	last := b.last.Load()
	if now-last < int64(time.Second) || !b.last.CompareAndSwap(last, now) {
		b.skipped.Add(1)
		return
	}
	b.log.Info("dnssec: answer refused", "name", q.Question[0].Name, "type", dns.TypeToString[q.Question[0].Qtype],
		"reason", err.Error(), "not_logged_before", b.skipped.Swap(0))
}
