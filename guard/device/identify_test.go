package device

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// lanNeighbours is a neighbour table as WatchNeighbours would fill it for
// a LAN interface (index 7) with 10.9.0.1/24 and fd09::1/64, without
// netlink.
func lanNeighbours() *Neighbours {
	return &Neighbours{
		log:     quiet(),
		lan:     map[string]bool{"br-lan": true},
		byIP:    map[netip.Addr]string{netip.MustParseAddr("10.9.0.2"): "02:00:00:00:09:02"},
		local:   map[netip.Addr]int{netip.MustParseAddr("10.9.0.1"): 7, netip.MustParseAddr("fd09::1"): 7, netip.MustParseAddr("203.0.113.2"): 8},
		lanIdx:  map[int]bool{7: true},
		lanNets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("fd09::/64")},
	}
}

func identifyQuery(t *testing.T, h stage.Handler, client string) *stage.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	raw, _ := m.Pack()
	q, _ := dnswire.ParseQuery(raw)
	req := &stage.Request{Raw: raw, Q: q, Client: netip.MustParseAddrPort(client)}
	h.ServeDNS(context.Background(), req)
	return req
}

func identifyChain(reg *Registry, wait time.Duration) stage.Handler {
	return stage.Chain(NewIdentify(reg, IdentifyOptions{WaitForMAC: wait}), stage.Answer("inner", stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		return nil, nil
	})))
}

// TestIdentifyNoWaitForRouterOrOutsiders: loopback, the router's own
// addresses, clients outside the LAN and LAN clients with a known MAC
// never wait for a MAC.
func TestIdentifyNoWaitForRouterOrOutsiders(t *testing.T) {
	n := lanNeighbours()
	reg, _ := NewRegistry(Options{Log: quiet(), Neighbours: n})
	h := identifyChain(reg, 200*time.Millisecond)
	for range 100 {
		identifyQuery(t, h, "127.0.0.1:4000")
	}
	for _, c := range []string{"[::1]:4000", "10.9.0.1:4000", "[fd09::1]:4000", "203.0.113.2:4000", "192.0.2.9:4000", "[2001:db8::9]:4000", "10.9.0.2:4000"} {
		identifyQuery(t, h, c)
	}
	if w := reg.Waits.Taken.Load(); w != 0 {
		t.Errorf("%d waits for a MAC, want none", w)
	}
	if req := identifyQuery(t, h, "10.9.0.2:4000"); req.Device.MAC != "02:00:00:00:09:02" {
		t.Errorf("LAN device %+v", req.Device)
	}
}

// TestIdentifyWaitWokenByNeighbour: a LAN client whose MAC is unknown
// waits until the neighbour table (or the observer) learns it, woken by
// the update, not by the bound.
func TestIdentifyWaitWokenByNeighbour(t *testing.T) {
	for _, via := range []string{"neighbour", "observer"} {
		t.Run(via, func(t *testing.T) {
			n := lanNeighbours()
			reg, _ := NewRegistry(Options{Log: quiet(), Neighbours: n})
			h := identifyChain(reg, time.Hour) // only a wake-up ends the wait
			got := make(chan *stage.Request, 1)
			go func() { got <- identifyQuery(t, h, "10.9.0.50:4000") }()
			waitUntil(t, &reg.Waits.Taken, "the query waiting", func() bool { return reg.Waits.Taken.Load() == 1 })
			mac, _ := net.ParseMAC("02:00:00:00:09:50")
			if via == "neighbour" {
				n.applyNeigh(neighUpdate{linkIndex: 7, ip: netip.MustParseAddr("10.9.0.50"), mac: mac, state: unix.NUD_REACHABLE})
			} else {
				reg.ObserveQuery(mac.String(), netip.MustParseAddrPort("10.9.0.1:53"), Observation{Src: netip.MustParseAddrPort("10.9.0.50:4000")})
			}
			select {
			case req := <-got:
				if req.Device.MAC != mac.String() {
					t.Errorf("device %+v", req.Device)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the wait was not woken by the update")
			}
			if w, to := reg.Waits.Taken.Load(), reg.Waits.TimedOut.Load(); w != 1 || to != 0 {
				t.Errorf("waits %d, timed out %d; want 1, 0", w, to)
			}
		})
	}
}

func TestIdentifyWaitBounded(t *testing.T) {
	reg, _ := NewRegistry(Options{Log: quiet(), Neighbours: lanNeighbours()})
	req := identifyQuery(t, identifyChain(reg, 10*time.Millisecond), "10.9.0.60:4000")
	if req.Device.MAC != "" || reg.Waits.TimedOut.Load() != 1 {
		t.Errorf("device %+v, timed out %d", req.Device, reg.Waits.TimedOut.Load())
	}
}

func TestIdentifyStage(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	reg.ObserveQuery("02:00:00:00:00:05", netip.MustParseAddrPort("8.8.8.8:53"), udpQuery(netip.MustParseAddrPort("10.0.0.5:3000"), 77, "."))
	errs := []error{
		nil,
		&stage.Error{Rcode: dns.RcodeRefused, EDE: dnswire.EDE{Code: dnswire.EDEProhibited, Text: "rate limited"}},
		stage.Fail(dnswire.EDEForgedAnswer, "forged", nil),
		stage.Fail(dnswire.EDENetworkError, "network", nil),
	}
	var i int
	var seen *stage.Request
	h := stage.Chain(NewIdentify(reg, IdentifyOptions{Feed: true}), stage.Answer("inner", stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		seen = req
		err := errs[i]
		i++
		return nil, err
	})))
	for range errs {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.Id = 77
		raw, _ := m.Pack()
		q, _ := dnswire.ParseQuery(raw)
		req := &stage.Request{Raw: raw, Q: q, Client: netip.MustParseAddrPort("10.0.0.5:3000")}
		h.ServeDNS(context.Background(), req)
	}
	if seen.Device == nil || seen.Device.MAC != "02:00:00:00:00:05" {
		t.Fatalf("device %+v", seen.Device)
	}
	if seen.OrigDst != netip.MustParseAddrPort("8.8.8.8:53") {
		t.Errorf("OrigDst %v, want the hard-coded resolver", seen.OrigDst)
	}
	r := reg.Snapshot()[0]
	if r.Queries != 4 || r.RateLimited != 1 || r.Refused != 1 {
		t.Errorf("counts q=%d rl=%d refused=%d", r.Queries, r.RateLimited, r.Refused)
	}
}
