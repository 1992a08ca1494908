// Package upstream takes the guard's questions to the upstream resolvers:
// Do53 over UDP and TCP (fresh CSPRNG IDs and random source ports, strict
// response matching, optional 0x20), DNS over TLS (RFC 7858, strict
// profile of RFC 8310, pipelined) and DNS over HTTPS (RFC 8484), with
// EDNS(0) padding on the encrypted ones (RFC 8467), behind a Pool that
// prefers the fastest healthy upstream and fails over quickly.
package upstream

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/metrics"
	"github.com/miekg/dns"
)

// Transport exchanges one query with one upstream. Exchange copies q and
// sets the ID, OPT and padding its transport calls for; the answer it
// returns matches the query and carries no padding. Of o it uses
// Case0x20 (cleartext transports only).
type Transport interface {
	Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error)
	String() string
	Close() error
}

// Counters are the per-upstream counts kept for metrics and tests.
type Counters struct {
	Queries    atomic.Uint64 // queries sent (attempts, including TCP retries)
	Failures   atomic.Uint64 // attempts that got no answer (counted by the Pool)
	Mismatches atomic.Uint64 // responses dropped for not matching (RFC 5452 §9.1)
	Flood      atomic.Uint64 // further copies after the accepted answer
	Refused    atomic.Uint64 // answers the pool's Check refused
	// CaseFallbacks counts answers that came back in another case than
	// the 0x20 query had, and were asked again without 0x20.
	CaseFallbacks atomic.Uint64
	// Do53's reader (udpMux): ReaderLate counts answers found by its
	// bounded recheck rather than a wake-up; ReaderErrors the errors it
	// did not expect while waiting. Both stay 0 when all is well.
	ReaderLate, ReaderErrors atomic.Uint64
	// Latency is the time to each answer (questions and health checks).
	Latency metrics.Histogram
}

// Stats is a snapshot of one upstream's counters and state.
type Stats struct {
	URL        string
	Up         bool
	RTT        time.Duration // smoothed (EWMA); 0 before the first answer
	Queries    uint64
	Failures   uint64
	Mismatches uint64
	Flood      uint64
	Refused    uint64
	// CaseFallbacks: 0x20 answers in the wrong case, asked again.
	CaseFallbacks uint64
	// ReaderLate, ReaderErrors: see Counters.
	ReaderLate, ReaderErrors uint64
	Latency                  metrics.HistogramSnapshot
}

func (c *Counters) snapshot() Stats {
	return Stats{
		Queries: c.Queries.Load(), Failures: c.Failures.Load(), Mismatches: c.Mismatches.Load(),
		Flood: c.Flood.Load(), Refused: c.Refused.Load(), CaseFallbacks: c.CaseFallbacks.Load(),
		ReaderLate: c.ReaderLate.Load(), ReaderErrors: c.ReaderErrors.Load(),
		Latency: c.Latency.Snapshot(),
	}
}

// config is what every transport is built with.
type config struct {
	tls       *tlsConfig
	counters  *Counters
	randomize bool // 0x20 unless the query's options say otherwise
}

// newTransport returns the transport for one endpoint.
func newTransport(ep *Endpoint, cfg config) (Transport, error) {
	if cfg.counters == nil {
		cfg.counters = new(Counters)
	}
	switch ep.Scheme {
	case UDP:
		return newUDP(ep, cfg), nil
	case TCP:
		return newStream(ep, cfg, false), nil
	case TLS:
		return newStream(ep, cfg, true), nil
	case HTTPS:
		return newDoH(ep, cfg)
	}
	return nil, fmt.Errorf("upstream %s: unsupported scheme %q", ep, ep.Scheme)
}
