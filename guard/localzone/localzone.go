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
			// On the wire, without building the name: this runs for every query.
			if underWire(req.Q.Name, resolverArpaWire) {
				return stage.Synth(req, dns.RcodeSuccess, nil, []dns.RR{soa(resolverArpa)})
			}
			for i, c := range canaryWire {
				if underWire(req.Q.Name, c) {
					return stage.Synth(req, dns.RcodeNameError, nil, []dns.RR{soa(canaries[i])})
				}
			}
			return next.ServeDNS(ctx, req)
		})
	}
}

// Wire forms of the zones, for underWire.
var (
	resolverArpaWire = wire(resolverArpa)
	canaryWire       = func() [][]byte {
		out := make([][]byte, len(canaries))
		for i, c := range canaries {
			out[i] = wire(c)
		}
		return out
	}()
)

func wire(name string) []byte {
	b := make([]byte, 256)
	n, err := dns.PackDomainName(name, b, 0, nil, false)
	if err != nil {
		panic("localzone: bad zone " + name) // constants above
	}
	return b[:n]
}

// underWire reports whether the wire-format name is zone (wire format,
// lower case) or below it, comparing ASCII letters without case.
func underWire(name, zone []byte) bool {
	for off := 0; off < len(name) && len(name)-off >= len(zone); off += int(name[off]) + 1 {
		if len(name)-off == len(zone) {
			for i, c := range name[off:] {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				if c != zone[i] {
					return false
				}
			}
			return true
		}
		if name[off] == 0 {
			return false
		}
	}
	return false
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
