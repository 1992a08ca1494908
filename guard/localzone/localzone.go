// Package localzone keeps the local network's names on the router.
//
// Stage answers, for every query, the names that must never be forwarded
// anywhere: the canaries that make clients drop their own encrypted
// resolvers (use-application-dns.net for Firefox, mask.icloud.com and
// mask-h2.icloud.com for iCloud Private Relay: NXDOMAIN); the resolver.arpa
// zone of RFC 9462, served as a resolver with no designated encrypted
// resolver (NODATA for every name and type, §4, §6.4; never forwarded,
// §6.1); localhost (RFC 6761 §6.3: 127.0.0.1 and ::1 for it and every
// name below it); and the empty zones local. (multicast DNS, RFC 6762 §3:
// never sent to a unicast resolver), onion. (RFC 7686 §2) and invalid.
// (RFC 6761 §6.4).
//
// Local (forward.go) sends the LAN's own names to the router's DHCP/DNS
// server and never upstream.
//
// Names are matched on the wire: labels as octets, ASCII letters without
// case, so a label holding a space or a dot matches only itself.
package localzone

import (
	"context"
	"net"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// negativeTTL is the SOA minimum of the synthesised answers (RFC 2308 §5:
// how long a device may cache them), and the TTL of localhost's addresses.
const negativeTTL = 3600

// What Stage does with the names of a zone.
type staticKind uint8

const (
	canary    staticKind = iota // NXDOMAIN for the zone and every name below
	nodata                      // NOERROR, no data, for every name (resolver.arpa)
	empty                       // an empty zone: NODATA at the apex, NXDOMAIN below
	localhost                   // loopback addresses for every name (RFC 6761 §6.3)
)

// staticZones are Stage's zones, in presentation form.
var staticZones = []struct {
	name string
	kind staticKind
}{
	{"use-application-dns.net.", canary},
	{"mask.icloud.com.", canary},
	{"mask-h2.icloud.com.", canary},
	{"resolver.arpa.", nodata},
	{"localhost.", localhost},
	{"local.", empty},
	{"onion.", empty},
	{"invalid.", empty},
}

// static is staticZones, ready for matching on the wire. It is built
// once and only read.
var static = func() *zoneSet {
	s := newZoneSet()
	for _, z := range staticZones {
		if _, err := s.add(z.name); err != nil {
			panic("localzone: " + err.Error()) // constants above
		}
	}
	return s
}()

// Static is the stage answering the names above, from the static table
// (staticZones). It has no state.
type Static struct{}

// NewStatic returns the stage answering the names above.
func NewStatic() Static { return Static{} }

// Name is "static".
func (Static) Name() string { return "static" }

// Wrap returns the stage in front of next.
func (Static) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if req.Q.Opcode != dns.OpcodeQuery {
			return next.ServeDNS(ctx, req)
		}
		// On the wire, without building the name: this runs for every query.
		i, apex, ok := static.match(req.Q.Name)
		if !ok {
			return next.ServeDNS(ctx, req)
		}
		zone := static.names[i]
		switch staticZones[i].kind {
		case canary:
			return stage.Synth(req, dns.RcodeNameError, nil, []dns.RR{soa(zone, negativeTTL)})
		case nodata:
			return stage.Synth(req, dns.RcodeSuccess, nil, []dns.RR{soa(zone, negativeTTL)})
		case localhost:
			return answerLocalhost(req, zone, apex)
		default:
			return emptyZone(req, zone, apex, negativeTTL)
		}
	})
}

// answerLocalhost answers address queries for localhost and the names
// below it with the loopback addresses, and every other type with no
// data (RFC 6761 §6.3 item 4).
func answerLocalhost(req *stage.Request, zone string, apex bool) (*dnswire.Reply, error) {
	name := dnswire.NameString(req.Q.Name)
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: negativeTTL}
	}
	var ans []dns.RR
	if req.Q.Class == dns.ClassINET || req.Q.Class == dns.ClassANY {
		switch req.Q.Type {
		case dns.TypeA, dns.TypeANY:
			ans = append(ans, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(127, 0, 0, 1).To4()})
		}
		switch req.Q.Type {
		case dns.TypeAAAA, dns.TypeANY:
			ans = append(ans, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IPv6loopback})
		}
	}
	if len(ans) > 0 {
		return stage.Synth(req, dns.RcodeSuccess, ans, nil)
	}
	if apex && req.Q.Type == dns.TypeSOA {
		return stage.Synth(req, dns.RcodeSuccess, []dns.RR{soa(zone, negativeTTL)}, nil)
	}
	return stage.Synth(req, dns.RcodeSuccess, nil, []dns.RR{soa(zone, negativeTTL)})
}

// emptyZone answers from an empty zone (RFC 6303 §3): the apex exists and
// holds only its SOA; no name below it does.
func emptyZone(req *stage.Request, zone string, apex bool, ttl uint32) (*dnswire.Reply, error) {
	s := soa(zone, ttl)
	switch {
	case !apex:
		return stage.Synth(req, dns.RcodeNameError, nil, []dns.RR{s})
	case req.Q.Type == dns.TypeSOA:
		return stage.Synth(req, dns.RcodeSuccess, []dns.RR{s}, nil)
	default:
		return stage.Synth(req, dns.RcodeSuccess, nil, []dns.RR{s})
	}
}

func soa(zone string, ttl uint32) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "localhost.",
		Mbox:    "nobody.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   1200,
		Expire:  604800,
		Minttl:  ttl,
	}
}
