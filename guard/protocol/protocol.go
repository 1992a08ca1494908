// Package protocol is the stage that speaks DNS correctly to devices even
// where the devices do not: NOTIMP for opcodes the guard does not serve,
// BADVERS for EDNS versions it does not know (RFC 6891 §6.1.3), minimal
// answers to ANY (RFC 8482), and no zone transfers or non-IN classes.
package protocol

import (
	"context"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// ANYTTL is the TTL of the synthesized RFC 8482 HINFO: "large enough"
// (§4.1) that devices do not come back for it often.
const ANYTTL = 3600

// Stage is the protocol stage. It has no state.
type Stage struct{}

// New returns the protocol stage.
func New() Stage { return Stage{} }

// Name is "protocol".
func (Stage) Name() string { return "protocol" }

// Wrap returns the stage in front of next.
func (Stage) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		q := &req.Q
		switch {
		case q.Opcode != dns.OpcodeQuery:
			return stage.Synth(req, dns.RcodeNotImplemented, nil, nil)
		case q.EDNS.Present && q.EDNS.Version > 0:
			return stage.Synth(req, dns.RcodeBadVers, nil, nil)
		case q.Type == dns.TypeOPT:
			return stage.Synth(req, dns.RcodeFormatError, nil, nil)
		case q.Type == dns.TypeAXFR || q.Type == dns.TypeIXFR || q.Type == dns.TypeMAILA || q.Type == dns.TypeMAILB:
			return stage.Synth(req, dns.RcodeNotImplemented, nil, nil)
		case q.Class != dns.ClassINET:
			return stage.Synth(req, dns.RcodeRefused, nil, nil)
		case q.Type == dns.TypeANY:
			hinfo := &dns.HINFO{
				Hdr: dns.RR_Header{Name: dnswire.NameString(q.Name), Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: ANYTTL},
				Cpu: "RFC8482", Os: "",
			}
			return stage.Synth(req, dns.RcodeSuccess, []dns.RR{hinfo}, nil)
		}
		return next.ServeDNS(ctx, req)
	})
}
