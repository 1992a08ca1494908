package device

import (
	"context"
	"errors"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// IdentifyOptions tune the identify stage.
type IdentifyOptions struct {
	// WaitForMAC is how long a query from an address with no known MAC
	// waits for the packet observer or the neighbour table to learn it
	// (the first query after a device changes address). 0: no wait.
	WaitForMAC time.Duration
	// Feed makes the stage feed each query's ID, port and EDNS use to
	// the graders; set it when no packet observer does.
	Feed bool
}

// Identify returns the identify stage: it fills req.Device from the
// registry (MAC, name, class, strict policy), asks for 0x20 upstream for
// strict devices, fills req.OrigDst when the observer saw where the query
// was first sent, and counts how the query was answered.
func Identify(reg *Registry, opts IdentifyOptions) stage.Middleware {
	return func(next stage.Handler) stage.Handler {
		return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
			client := req.Client.Addr()
			if opts.WaitForMAC > 0 {
				waitForMAC(ctx, reg, req, opts.WaitForMAC)
			}
			id, mac, d, name := reg.Identify(client)
			req.Device = &stage.Device{ID: id, MAC: mac, Name: name, Class: d.Class, Strict: d.Strict, Rate: d.Rate, Burst: d.Burst}
			if d.Strict {
				req.Randomize = true
			}
			if !req.OrigDst.IsValid() {
				if od, ok := reg.OrigDst(req.Client, req.Q.ID); ok {
					req.OrigDst = od
				}
			}
			reply, err := next.ServeDNS(ctx, req)
			var q *Query
			if opts.Feed {
				q = &Query{ID: req.Q.ID, EDNS: req.Q.EDNS.Present, Name: dnswire.NameString(req.Q.Name), Type: req.Q.Type}
				if !req.TCP {
					q.Port = req.Client.Port()
				}
			}
			reg.Count(id, OutcomeOf(err), q)
			return reply, err
		})
	}
}

func waitForMAC(ctx context.Context, reg *Registry, req *stage.Request, max time.Duration) {
	if _, ok := reg.MAC(req.Client.Addr()); ok {
		return
	}
	deadline := time.Now().Add(max)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, ok := reg.MAC(req.Client.Addr()); ok {
			return
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
