package device

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
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

// TestLoggedQueryWaitsForNeighbour: a logged query read before the
// neighbour table has its address (the table's update arrives on another
// socket, read by another goroutine) becomes evidence when the table
// learns the address with the query's MAC, at the time it was logged; a
// different MAC, or no entry within unvouchedFor, drops it.
func TestLoggedQueryWaitsForNeighbour(t *testing.T) {
	clk := newClock()
	n := staticNeighbours("10.0.0.1", nil)
	reg, err := NewRegistry(Options{Now: clk.now, Neighbours: n})
	if err != nil {
		t.Fatal(err)
	}
	n.lan = nil // every link counts
	learn := func(ip, mac string) {
		hw, _ := net.ParseMAC(mac)
		n.applyNeigh(neighUpdate{ip: netip.MustParseAddr(ip), mac: hw, state: unix.NUD_STALE})
	}
	seen := func(mac string) int {
		for _, v := range reg.Views() {
			if v.ID == mac {
				return v.TXID.N
			}
		}
		return 0
	}
	const a, b, c = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
	ask := func(mac, ip string, id uint16) {
		reg.ObserveQuery(mac, router, udpQuery(netip.AddrPortFrom(netip.MustParseAddr(ip), 5000+id), id, "x.example."))
	}

	ask(a, "10.0.0.21", 1) // read before the table's update
	ask(b, "10.0.0.22", 2)
	ask(c, "10.0.0.23", 3)
	reg.vouchLogged(clk.now())
	if got := seen(a); got != 0 {
		t.Fatalf("counted before the table vouched: %d", got)
	}
	learn("10.0.0.21", a)
	learn("10.0.0.22", "02:00:00:00:00:99") // another MAC: not b's evidence
	reg.vouchLogged(clk.now())
	if got := seen(a); got != 1 {
		t.Errorf("vouched query: %d values, want 1", got)
	}
	if got := seen(b); got != 0 {
		t.Errorf("query the table contradicts: %d values", got)
	}
	clk.add(unvouchedFor)
	reg.vouchLogged(clk.now())
	learn("10.0.0.23", c) // too late
	reg.vouchLogged(clk.now())
	if got := seen(c); got != 0 {
		t.Errorf("query vouched after %v: %d values", unvouchedFor, got)
	}
	// Once the table knows the address, a query is evidence at once.
	ask(a, "10.0.0.21", 4)
	if got := seen(a); got != 2 {
		t.Errorf("query from a known address: %d values, want 2", got)
	}
	// The wait is bounded.
	for i := range 3 * maxUnvouched {
		ask(c, "10.0.1."+strconv.Itoa(i%250), uint16(i))
	}
	reg.mu.Lock()
	waiting := len(reg.unvouched)
	reg.mu.Unlock()
	if waiting > maxUnvouched {
		t.Errorf("%d queries waiting, at most %d", waiting, maxUnvouched)
	}
}
