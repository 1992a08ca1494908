package upstream

import (
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
	Randomize0x20 bool          // 0x20 case randomisation by default (QueryOptions.Case0x20 overrides it per query)

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

// QueryOptions are what one query asks of the upstream side besides its
// question: the per-request policy (a strict device's 0x20, the chain's
// shield), given explicitly to Exchange, never carried in the context.
// The zero value asks for the defaults.
type QueryOptions struct {
	// Case0x20 says whether the query is sent with 0x20 case
	// randomisation on the transports that use it (cleartext Do53 over
	// UDP and TCP; DoT and DoH never do, the channel authenticates the
	// answer). With 0x20 the answer must echo the randomised name exactly.
	Case0x20 Case0x20
	// Check, when set, is called by a Pool on every upstream answer with
	// the caller's query. It returns the answer to use, or an error, in
	// which case the answer is counted as refused for that upstream and
	// the next upstream is tried; when every attempt is refused the last
	// Check error is returned as it is. Transports ignore it.
	Check Checker
}

// Case0x20 is a query's 0x20 setting.
type Case0x20 uint8

const (
	Case0x20Default Case0x20 = iota // as Options.Randomize0x20 says
	Case0x20On
	Case0x20Off
)

// on reports whether c asks for 0x20, def being Options.Randomize0x20.
func (c Case0x20) on(def bool) bool {
	switch c {
	case Case0x20On:
		return true
	case Case0x20Off:
		return false
	}
	return def
}
