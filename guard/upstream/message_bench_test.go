package upstream

import (
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkMissPackMatch is the miss path's own work on a query: a fresh
// ID, 0x20 case, packing, and matching an NXDOMAIN answer with its SOA.
func BenchmarkMissPackMatch(b *testing.B) {
	q := query("u0000001.miss.bench", dns.TypeA)
	q.SetEdns0(1232, false)
	soa, _ := dns.NewRR("miss.bench. 3600 IN SOA ns.miss.bench. host.miss.bench. 1 3600 600 86400 3600")
	b.ReportAllocs()
	for b.Loop() {
		m := prepare(q, randomID(), false)
		m.Question[0].Name = randomizeCase(m.Question[0].Name)
		wire, err := pack(m)
		if err != nil {
			b.Fatal(err)
		}
		r := new(dns.Msg)
		r.SetRcode(m, dns.RcodeNameError)
		r.Ns = []dns.RR{soa}
		if wire, err = r.Pack(); err != nil {
			b.Fatal(err)
		}
		if _, err := match(m, wire, true); err != nil {
			b.Fatal(err)
		}
	}
}
