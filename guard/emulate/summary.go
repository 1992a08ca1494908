package emulate

import (
	"context"
	"errors"
	"net/netip"

	"github.com/miekg/dns"
)

// Summary is what emulated devices saw over a run: how their queries
// ended, what the answers held, and how many datagrams reached them.
type Summary struct {
	Queries, Usable, Failed, Timeouts int // Usable + Failed == Queries
	ServFail, Refused, NXDomain       int // answers by rcode
	Datagrams                         int // every datagram received (flood copies too)
	Records, Answers                  int // answer records, in Answers replies
	Addrs                             map[netip.Addr]int
	EDE                               map[uint16]int // Extended DNS Errors seen (EDNS clients only)
}

// Summarize sums the exchanges and datagrams of devs. An exchange cut by
// the end of the run (its context cancelled or past its deadline) is not
// the resolver's doing and is left out.
func Summarize(devs ...*Device) Summary {
	s := Summary{Addrs: map[netip.Addr]int{}, EDE: map[uint16]int{}}
	for _, d := range devs {
		for _, ex := range d.Exchanges() {
			s.add(ex)
		}
		s.Datagrams += len(d.Received())
	}
	return s
}

func (s *Summary) add(ex Exchange) {
	if errors.Is(ex.Err, context.Canceled) || errors.Is(ex.Err, context.DeadlineExceeded) {
		return // cut by the end of the run, not by the resolver
	}
	s.Queries++
	if ex.Failed() {
		s.Failed++
	} else {
		s.Usable++
	}
	switch {
	case ex.Reply == nil:
		s.Timeouts++
	case ex.Reply.Rcode == dns.RcodeServerFailure:
		s.ServFail++
	case ex.Reply.Rcode == dns.RcodeRefused:
		s.Refused++
	case ex.Reply.Rcode == dns.RcodeNameError:
		s.NXDomain++
	}
	if ex.Reply == nil {
		return
	}
	s.Answers++
	s.Records += len(ex.Reply.Answer)
	for _, a := range Addresses(ex.Reply, dns.TypeANY) {
		s.Addrs[a]++
	}
	if opt := ex.Reply.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				s.EDE[e.InfoCode]++
			}
		}
	}
}

// RecordsPerAnswer is the mean number of answer records per reply.
func (s Summary) RecordsPerAnswer() float64 {
	if s.Answers == 0 {
		return 0
	}
	return float64(s.Records) / float64(s.Answers)
}
