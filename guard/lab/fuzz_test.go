package lab

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// FuzzRespond: whatever a client sends, under every experiment, the lab
// does not panic, and what it sends back parses and answers the query's ID.
func FuzzRespond(f *testing.F) {
	for i, b := range testenv.Messages(32) {
		f.Add(b, uint8(i*32))
	}
	q, _ := query("cname-x.lab.example.", dns.TypeA).Pack()
	f.Add(q, uint8(0))
	exps := Experiments()
	c := &clock{time.Unix(0, 0)}
	labs := make([]*Lab, len(exps))
	for i, e := range exps {
		labs[i] = New(Config{Schedule: Schedule{{Experiment: e}}, Now: c.now})
	}
	client := netip.MustParseAddrPort("192.0.2.10:4096")
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		l := labs[int(which)%len(labs)]
		for _, out := range l.Respond(b, client, "udp") {
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatalf("unparseable answer: %v", err)
			}
			if len(b) >= 2 && m.Id != uint16(b[0])<<8|uint16(b[1]) {
				t.Fatalf("answer ID %d", m.Id)
			}
		}
	})
}
