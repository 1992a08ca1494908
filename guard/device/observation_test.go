package device

import (
	"net/netip"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
)

// udpQuery is the observation of an A query for name with the given ID,
// sent over UDP from src.
func udpQuery(src netip.AddrPort, id uint16, name string) Observation {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	q, err := dnswire.ParseQuery(b)
	if err != nil {
		panic(err)
	}
	return Observation{Query: &q, Src: src}
}

// withPort is src with another source port.
func withPort(src netip.AddrPort, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(src.Addr(), port)
}

func TestObservationPort(t *testing.T) {
	src := netip.MustParseAddrPort("10.0.0.2:4096")
	for _, tc := range []struct {
		tcp  bool
		want uint16
	}{{false, 4096}, {true, 0}} {
		o := Observation{Src: src, TCP: tc.tcp}
		if got := o.port(); got != tc.want {
			t.Errorf("tcp=%v: port %d, want %d", tc.tcp, got, tc.want)
		}
	}
}
