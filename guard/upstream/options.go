package upstream

import (
	"context"
	"crypto/x509"
	"log/slog"
	"time"
)

// Defaults for Options left zero.
const (
	DefaultTimeout     = 600 * time.Millisecond // per attempt: three fit in a client's 2 s
	DefaultMaxAttempts = 3                      // RFC 9520 §3.1: at most three queries
	DefaultProbeMin    = 250 * time.Millisecond
	DefaultProbeMax    = 2 * time.Second // a down upstream costs one ". NS" per 2 s at most
	DefaultLogEvery    = 30 * time.Second
)

// Options configure a Pool (and NewTransport).
type Options struct {
	// Roots replaces the system roots when set (tests). CAFile and CAPEM
	// are PEM bundles trusted in addition to the roots.
	Roots  *x509.CertPool
	CAFile string
	CAPEM  []byte

	Timeout       time.Duration // per attempt before failing over; DefaultTimeout if 0
	MaxAttempts   int           // attempts per query across upstreams; DefaultMaxAttempts if 0
	Randomize0x20 bool          // 0x20 case randomisation by default (see WithCaseRandomization)

	// Probing of a failed upstream starts after ProbeMin and backs off,
	// doubling, to ProbeMax.
	ProbeMin, ProbeMax time.Duration

	Logger *slog.Logger // slog.Default() if nil
	// LogEvery bounds state-change logging: per upstream, two lines at
	// once (a flap), then one per LogEvery summing up the changes not
	// logged. DefaultLogEvery if 0.
	LogEvery time.Duration

	// OnRecover, when set, is called when an upstream answers again
	// after every upstream was down (the cache forgets the failures it
	// recorded meanwhile). It must not block.
	OnRecover func()

	// Check, when set, is called on every upstream answer with the
	// caller's query. It returns the answer to use, or an error, in which
	// case the answer is counted as refused for that upstream and the next
	// upstream is tried; when every attempt is refused the last Check
	// error is returned as it is.
	Check CheckFunc
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.ProbeMin <= 0 {
		o.ProbeMin = DefaultProbeMin
	}
	if o.ProbeMax < o.ProbeMin {
		o.ProbeMax = max(DefaultProbeMax, o.ProbeMin)
	}
	if o.LogEvery <= 0 {
		o.LogEvery = DefaultLogEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// NewTransport returns the transport for one upstream URL on its own,
// with its own counters (nil is fine).
func NewTransport(rawURL string, opts Options, counters *Counters) (Transport, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	tc, err := newTLSConfig(opts.Roots, opts.CAFile, opts.CAPEM)
	if err != nil {
		return nil, err
	}
	return newTransport(ep, config{tls: tc, counters: counters, randomize: opts.Randomize0x20})
}

type caseKey struct{}

// WithCaseRandomization overrides, for the queries made with ctx, whether
// 0x20 case randomisation is used (on for strict devices, say). The
// response must then echo the randomised name exactly.
func WithCaseRandomization(ctx context.Context, on bool) context.Context {
	return context.WithValue(ctx, caseKey{}, on)
}

// caseRandomization reports whether ctx asks for 0x20, or def if it does
// not say.
func caseRandomization(ctx context.Context, def bool) bool {
	if on, ok := ctx.Value(caseKey{}).(bool); ok {
		return on
	}
	return def
}
