package upstream

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/miekg/dns"
)

// LookupHost against a real DNS server (miekg/dns on loopback, UDP and
// TCP): A and AAAA gathered, a truncated UDP answer retried over TCP, a
// forged answer (wrong ID) on UDP ignored, NXDOMAIN an error.
func TestLookupHost(t *testing.T) {
	var tcpQueries atomic.Int32
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		_, isTCP := w.RemoteAddr().(*net.TCPAddr)
		if isTCP {
			tcpQueries.Add(1)
		}
		switch {
		case name == "nx.test.":
			m.Rcode = dns.RcodeNameError
		case name == "big.test." && !isTCP:
			m.Truncated = true
		case q.Question[0].Qtype == dns.TypeA:
			if name == "forged.test." {
				f := m.Copy()
				f.Id++
				f.Answer = append(f.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.66")})
				_ = w.WriteMsg(f)
			}
			m.Answer = append(m.Answer,
				&dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "edge.test."},
				&dns.A{Hdr: dns.RR_Header{Name: "edge.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.7")})
		case q.Question[0].Qtype == dns.TypeAAAA:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("2001:db8::7")})
		}
		_ = w.WriteMsg(m)
	})
	pc, ln, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	for _, host := range []string{"doh.test", "forged.test", "big.test"} {
		got, err := LookupHost(ctx, addr, host)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %v %v, want %v", host, got, err, want)
		}
	}
	if n := tcpQueries.Load(); n != 2 {
		t.Errorf("%d queries over TCP, want 2 (big.test's A and AAAA, truncated over UDP)", n)
	}
	if got, err := LookupHost(ctx, addr, "nx.test"); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Errorf("nx.test: %v %v", got, err)
	}
}
