// Package forward is the innermost stage: it asks the upstreams the
// device's question and turns their answer into the stored form the cache
// keeps and the devices get: minimal (answer section, and the SOA of a
// negative answer), no OPT, no padding. Upstreams is the way there: the
// upstream pool, DNSSEC validation and the answer shield, applied under
// each query's terms (policy.Terms), which travel as an explicit argument.
package forward

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// Exchanger resolves one question upstream (Upstreams: the pool, DNSSEC
// and the shield) under the asking device's terms, given explicitly. The
// query it gets has a lower-case name, RD set and no OPT; it returns a
// checked answer or an error carrying an Extended DNS Error.
type Exchanger interface {
	Exchange(ctx context.Context, q *dns.Msg, t policy.Terms) (*dns.Msg, error)
}

// Forward is the forwarding stage: the innermost, it answers every query
// it gets from the upstreams and passes none on.
type Forward struct{ ex Exchanger }

// New returns the forwarding stage over ex.
func New(ex Exchanger) *Forward { return &Forward{ex: ex} }

// Name is "forward".
func (*Forward) Name() string { return "forward" }

// Wrap returns the stage; there is nothing further in, so next is not used.
func (f *Forward) Wrap(stage.Handler) stage.Handler { return f }

// ServeDNS asks the upstreams req's question and returns the stored form
// of their answer.
func (f *Forward) ServeDNS(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
	q := Query(req)
	resp, err := f.ex.Exchange(ctx, q, req.Terms)
	if err != nil {
		return nil, err
	}
	// The stored answer's question is the query's (the same name, type
	// and class; nobody changes a query once built).
	return stored(req, q.Question, resp)
}

// queryNameRoom is the room for the question name in a Query's
// allocation: most names fit; a longer one gets a string of its own.
const queryNameRoom = 64

// Query builds the upstream question for a device's request.
func Query(req *stage.Request) *dns.Msg {
	// The message, its one question and the name's presentation form in
	// one allocation (never written once built).
	b := new(struct {
		m    dns.Msg
		q    [1]dns.Question
		name [queryNameRoom]byte
	})
	m := &b.m
	m.Id = 0 // set per transport by the pool
	m.RecursionDesired = true
	m.CheckingDisabled = req.Q.CD
	var name string
	if n := dnswire.AppendName(b.name[:0], req.Q.Name); &n[0] == &b.name[0] { // (never empty: "." at least)
		name = unsafe.String(&b.name[0], len(n))
	} else {
		name = string(n)
	}
	b.q[0] = dns.Question{Name: name, Qtype: req.Q.Type, Qclass: req.Q.Class}
	m.Question = b.q[:]
	if req.Q.EDNS.DO {
		m.SetEdns0(dnswire.OurEDNSSize, true)
	}
	return m
}

// Stored turns an upstream answer into stored form. Answers other than
// NOERROR and NXDOMAIN are failures (RFC 8767 §4: they do not refresh the
// cache, and stale data may be served instead).
func Stored(req *stage.Request, resp *dns.Msg) (*dnswire.Reply, error) {
	return stored(req, []dns.Question{{Name: dnswire.NameString(req.Q.Name), Qtype: req.Q.Type, Qclass: req.Q.Class}}, resp)
}

// stored is Stored with req's question as Query wrote it (shared, not
// written: computed once a query).
func stored(req *stage.Request, question []dns.Question, resp *dns.Msg) (*dnswire.Reply, error) {
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		code, text := uint16(dnswire.EDENetworkError), fmt.Sprintf("upstream answered %s", dns.RcodeToString[resp.Rcode])
		if opt := resp.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if e, ok := o.(*dns.EDNS0_EDE); ok {
					code = e.InfoCode
					if t := dnswire.EDEText(e.ExtraText); t != "" {
						text += ": " + t
					}
				}
			}
		}
		return nil, stage.Fail(code, dnswire.EDEText(text), nil)
	}
	m := new(dns.Msg)
	m.Response = true
	m.Rcode = resp.Rcode
	m.RecursionAvailable = true
	// AD comes only from the guard's own validation (the exchanger sets it
	// on a validated answer and clears it otherwise), and goes only to
	// devices that asked with DO or AD (RFC 6840 §5.7).
	m.AuthenticatedData = resp.AuthenticatedData && (req.Q.EDNS.DO || req.Q.AD)
	m.Question = question
	m.Answer = resp.Answer
	if len(resp.Answer) == 0 {
		// Negative answer: keep the SOA, with the TTL RFC 2308 §3 asks
		// for, min(SOA TTL, SOA MINIMUM) (a copy when that changes it:
		// resp's records are not written), and the proof for a device
		// that validates. An authority section kept as it is (the SOA
		// alone, its TTL within its MINIMUM) is resp's own.
		keep := func(rr dns.RR) (kept, same bool) {
			if soa, ok := rr.(*dns.SOA); ok {
				return true, soa.Hdr.Ttl <= soa.Minttl
			}
			t := rr.Header().Rrtype
			return req.Q.EDNS.DO && (t == dns.TypeRRSIG || t == dns.TypeNSEC || t == dns.TypeNSEC3), true
		}
		asIs := true
		for _, rr := range resp.Ns {
			if kept, same := keep(rr); !kept || !same {
				asIs = false
				break
			}
		}
		if asIs {
			m.Ns = resp.Ns
		} else {
			for _, rr := range resp.Ns {
				kept, same := keep(rr)
				if !kept {
					continue
				}
				if !same {
					c := dns.Copy(rr).(*dns.SOA)
					c.Hdr.Ttl = min(c.Hdr.Ttl, c.Minttl)
					rr = c
				}
				m.Ns = append(m.Ns, rr)
			}
		}
	} else if req.Q.EDNS.DO {
		// A positive answer keeps its NSEC/NSEC3 proof (a wildcard
		// expansion's, RFC 4035 §3.1.3.3) for a device that validates.
		for _, rr := range resp.Ns {
			switch h := rr.Header(); h.Rrtype {
			case dns.TypeNSEC, dns.TypeNSEC3:
				m.Ns = append(m.Ns, rr)
			case dns.TypeRRSIG:
				if c := rr.(*dns.RRSIG).TypeCovered; c == dns.TypeNSEC || c == dns.TypeNSEC3 {
					m.Ns = append(m.Ns, rr)
				}
			}
		}
	}
	if !req.Q.EDNS.DO {
		m.Answer = withoutDNSSEC(m.Answer, req.Q.Type)
	}
	return dnswire.FromMsg(m)
}

// withoutDNSSEC drops DNSSEC records a device did not ask for (RFC 4035
// §3.2.1); records of the type asked are kept (RFC 3225 §3: an explicit
// RRSIG, NSEC or NSEC3 query is answered without DO too).
func withoutDNSSEC(rrs []dns.RR, qtype uint16) []dns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		switch t := rr.Header().Rrtype; t {
		case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
			if t != qtype {
				continue
			}
		}
		out = append(out, rr)
	}
	return out
}
