package upstreamtest

import (
	"net"
	"sync"

	"github.com/miekg/dns"
)

// Handler answers a query; nil means no answer at all.
type Handler func(q *dns.Msg) *dns.Msg

// AnswerA answers every question with one A record (TTL 60) for addr, or
// NXDOMAIN for names under "nx.".
func AnswerA(addr string) Handler {
	ip := net.ParseIP(addr)
	return func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		r.RecursionAvailable = true
		if len(q.Question) != 1 {
			r.Rcode = dns.RcodeFormatError
			return r
		}
		if dns.IsSubDomain("nx.", q.Question[0].Name) {
			r.Rcode = dns.RcodeNameError
			return r
		}
		if q.Question[0].Qtype == dns.TypeA {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   ip,
			})
		}
		if opt := q.IsEdns0(); opt != nil {
			r.SetEdns0(1232, opt.Do())
		}
		return r
	}
}

// Received is one query as it arrived at a test server.
type Received struct {
	Raw  []byte   // the message, without the TCP length prefix
	Msg  *dns.Msg // Raw unpacked (nil if it did not unpack)
	Conn int      // which connection (DoT) it came on, from 1

	// DoH only.
	Method, Proto, ContentType, Accept, Path, Host, RawQuery string
}

// recorder keeps what a server received.
type recorder struct {
	mu  sync.Mutex
	got []Received
}

func (r *recorder) add(rc Received) {
	if rc.Msg == nil {
		m := new(dns.Msg)
		if m.Unpack(rc.Raw) == nil {
			rc.Msg = m
		}
	}
	r.mu.Lock()
	r.got = append(r.got, rc)
	r.mu.Unlock()
}

// Received returns a copy of every query received so far.
func (r *recorder) Received() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.got...)
}
