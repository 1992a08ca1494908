// Package localzone answers, on the router, the names that must never be
// forwarded: the canaries that make clients drop their own encrypted
// resolvers (use-application-dns.net for Firefox, mask.icloud.com and
// mask-h2.icloud.com for iCloud Private Relay: NXDOMAIN), and the
// resolver.arpa zone of RFC 9462, served locally as a resolver with no
// designated encrypted resolver: NODATA for every name and type (§4,
// §6.4), never forwarded (§6.1).
package localzone

import (
	"context"
	"strings"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// Canaries are answered NXDOMAIN, with every name below them.
var canaries = []string{
	"use-application-dns.net.",
	"mask.icloud.com.",
	"mask-h2.icloud.com.",
}

// resolverArpa is the locally served zone of RFC 9462.
const resolverArpa = "resolver.arpa."

// negativeTTL is the SOA minimum of the synthesised answers (RFC 2308 §5:
// how long a device may cache them).
const negativeTTL = 3600

// Stage returns the middleware answering the local names.
func Stage() stage.Middleware {
	return func(next stage.Handler) stage.Handler {
		return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
			if req.Q.Opcode != dns.OpcodeQuery {
				return next.ServeDNS(ctx, req)
			}
			name := dnswire.NameString(req.Q.Name)
			if zone, ok := under(name, resolverArpa); ok {
				return stage.Synth(req, dns.RcodeSuccess, nil, []dns.RR{soa(zone)})
			}
			for _, c := range canaries {
				if zone, ok := under(name, c); ok {
					return stage.Synth(req, dns.RcodeNameError, nil, []dns.RR{soa(zone)})
				}
			}
			return next.ServeDNS(ctx, req)
		})
	}
}

// under reports whether name is zone or below it.
func under(name, zone string) (string, bool) {
	if name == zone || strings.HasSuffix(name, "."+zone) {
		return zone, true
	}
	return "", false
}

func soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negativeTTL},
		Ns:      "localhost.",
		Mbox:    "nobody.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   1200,
		Expire:  604800,
		Minttl:  negativeTTL,
	}
}
