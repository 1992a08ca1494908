package device

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// IdentifyOptions tune the identify stage.
type IdentifyOptions struct {
	// WaitForMAC bounds how long a query from a LAN address with no
	// known MAC waits for the neighbour table or the packet observer to
	// learn it (the first query after a device changes address); it is
	// woken as soon as either does. The router itself (loopback, its own
	// addresses) and clients outside the LAN never wait. 0: no wait.
	WaitForMAC time.Duration
	// Feed makes the stage feed each query's ID, port and EDNS use to
	// the graders; set it when no packet observer does.
	Feed bool
	// Observed, when set and true, says a packet observer feeds the
	// graders after all, so Feed is ignored (the observer may be
	// found missing after the chain is built).
	Observed *atomic.Bool
}

// WaitStats counts the identify stage's waits for a MAC.
type WaitStats struct {
	Taken    Signal        // queries that waited (a test waits on it for a wait to begin)
	TimedOut atomic.Uint64 // of those, waits that ended without a MAC
}

// Identify is the identify stage: it fills req.Device from the registry
// (MAC, name, class, rate) and req.Terms (strict or lenient, see
// policy.Terms), fills req.OrigDst when the observer saw where the query
// was first sent, and counts how the query was answered.
type Identify struct {
	reg  *Registry
	opts IdentifyOptions
}

// NewIdentify returns the identify stage over reg.
func NewIdentify(reg *Registry, opts IdentifyOptions) *Identify {
	return &Identify{reg: reg, opts: opts}
}

// Name is "identify".
func (*Identify) Name() string { return "identify" }

// Wrap returns the stage in front of next.
func (s *Identify) Wrap(next stage.Handler) stage.Handler {
	reg, opts := s.reg, s.opts
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		client := req.Client.Addr()
		if opts.WaitForMAC > 0 {
			reg.waitForMAC(ctx, client, opts.WaitForMAC)
		}
		dev := reg.DeviceAt(client, req.Received)
		req.Device = dev // shared and never modified: no allocation
		req.Terms = policy.TermsOf(dev.Strict)
		if !req.OrigDst.IsValid() {
			if od, ok := reg.OrigDst(req.Client, req.Q.ID); ok {
				req.OrigDst = od
			}
		}
		reply, err := next.ServeDNS(ctx, req)
		var q *Observation
		if opts.Feed && (opts.Observed == nil || !opts.Observed.Load()) {
			q = &Observation{Query: &req.Q, Src: req.Client, TCP: req.TCP}
		}
		reg.CountAt(dev.ID, OutcomeOf(err), q, req.Received)
		return reply, err
	})
}

// waitForMAC waits, at most max, until the MAC of a LAN client is known.
// It returns at once for the router itself, for clients outside the LAN
// and when the MAC is known; otherwise it sleeps until the neighbour
// table or the observer learns a MAC (then looks again), never polling.
func (r *Registry) waitForMAC(ctx context.Context, client netip.Addr, max time.Duration) {
	client = client.Unmap().WithZone("")
	n := r.opts.Neighbours
	if client.IsLoopback() || client.IsUnspecified() || n == nil || n.IsLocal(client) || !n.OnLAN(client) {
		return
	}
	if _, ok := r.MAC(client); ok {
		return
	}
	r.Waits.Taken.add()
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		// Take the signals before looking, so a MAC learned in between
		// is not missed.
		fromNeigh, fromPackets := n.Learned(), r.learnedMAC.C()
		if _, ok := r.MAC(client); ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			r.Waits.TimedOut.Add(1)
			return
		case <-fromNeigh:
		case <-fromPackets:
		}
	}
}

// OutcomeOf classifies what the inner stages returned: the limit stage's
// REFUSED with EDE 18 (Prohibited) is a rate-limited query; an answer the
// guard refused to pass on (forged, blocked, bogus, invalid, filtered) is
// a refused one; anything else counts as answered.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return Answered
	}
	var se *stage.Error
	if !errors.As(err, &se) {
		return Answered
	}
	if se.Rcode == dns.RcodeRefused && se.EDE.Code == dnswire.EDEProhibited {
		return RateLimited
	}
	switch se.EDE.Code {
	case dnswire.EDEForgedAnswer, dnswire.EDEBlocked, dnswire.EDECensored, dnswire.EDEFiltered,
		dnswire.EDEProhibited, dnswire.EDEDNSSECBogus, dnswire.EDEInvalidData:
		return Refused
	}
	return Answered
}
