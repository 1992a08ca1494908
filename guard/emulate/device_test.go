package emulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// responder is a real UDP DNS server that records what it saw and answers
// each query copies times (0: never).
type responder struct {
	mu     sync.Mutex
	ports  []uint16
	ids    []uint16
	edns   int
	copies int
	addr   netip.AddrPort
}

func startResponder(t *testing.T, copies int) *responder {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{copies: copies, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r.mu.Lock()
		r.ports = append(r.ports, uint16(w.RemoteAddr().(*net.UDPAddr).Port))
		r.ids = append(r.ids, q.Id)
		if q.IsEdns0() != nil {
			r.edns++
		}
		r.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 198.51.100.7")
		m.Answer = append(m.Answer, rr)
		for i := 0; i < r.copies; i++ {
			w.WriteMsg(m)
		}
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return r
}

// loopback returns a random 127.0.0.0/8 address so fixed source ports of
// parallel tests do not collide.
func loopback() netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(256)), byte(1 + rand.IntN(250))})
}

func TestProfilesOnTheWire(t *testing.T) {
	const n = 60
	tests := []struct {
		profile string
		check   func(t *testing.T, ports, ids []uint16, edns int)
	}{
		{"fixed-port", func(t *testing.T, ports, ids []uint16, _ int) {
			for _, p := range ports {
				if p != 4096 {
					t.Fatalf("source port %d, want always 4096", p)
				}
			}
			if distinct(ids) < n/2 {
				t.Errorf("IDs should be random: %d distinct of %d", distinct(ids), n)
			}
		}},
		{"constant-id", func(t *testing.T, ports, ids []uint16, _ int) {
			if d := distinct(ids); d > 2 {
				t.Errorf("%d distinct IDs, want at most 2", d)
			}
			if distinct(ports) < n/2 {
				t.Errorf("ports should be ephemeral: %d distinct", distinct(ports))
			}
		}},
		{"three-ports", func(t *testing.T, ports, ids []uint16, _ int) {
			three := 0
			for _, p := range ports {
				if p >= 49153 && p <= 49155 {
					three++
				}
			}
			if three < n*9/10 {
				t.Errorf("%d of %d on the three ports", three, n)
			}
			for _, id := range ids {
				if id < 0x2000 || id >= 0x2000+400 {
					t.Fatalf("ID %#x outside the narrow band", id)
				}
			}
		}},
		{"narrow-id", func(t *testing.T, _, ids []uint16, _ int) {
			for _, id := range ids {
				if id > 0x4F {
					t.Fatalf("ID %#x above 0x4F", id)
				}
			}
		}},
		{"one-port", func(t *testing.T, ports, _ []uint16, _ int) {
			on := 0
			for _, p := range ports {
				if p == 35000 {
					on++
				}
			}
			if on < n/5 || on > n*7/10 {
				t.Errorf("%d of %d on port 35000, want about 43%%", on, n)
			}
		}},
		{"well-behaved", func(t *testing.T, _, _ []uint16, edns int) {
			if edns != n {
				t.Errorf("%d of %d queries with EDNS", edns, n)
			}
		}},
		{"random", func(t *testing.T, ports, ids []uint16, edns int) {
			if edns != 0 {
				t.Errorf("EDNS sent by a profile without it")
			}
			if distinct(ids) < n*9/10 || distinct(ports) < n/2 {
				t.Errorf("ids %d ports %d distinct", distinct(ids), distinct(ports))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			r := startResponder(t, 1)
			p, err := ProfileByName(tt.profile)
			if err != nil {
				t.Fatal(err)
			}
			d := New(Config{Profile: p, Target: r.addr, Local: loopback(), Seed: 7})
			defer d.Close()
			for i := 0; i < n; i++ {
				ex := d.Query(context.Background(), fmt.Sprintf("n%d.example.", i), dns.TypeA)
				if ex.Failed() {
					t.Fatalf("query %d failed: %v", i, ex.Err)
				}
				if ex.Reply.Question[0].Name != ex.Name {
					t.Fatalf("answer for %s taken for %s", ex.Reply.Question[0].Name, ex.Name)
				}
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.ports) != n {
				t.Fatalf("responder saw %d queries, want %d", len(r.ports), n)
			}
			tt.check(t, r.ports, r.ids, r.edns)
		})
	}
}

func TestFloodCopiesRecorded(t *testing.T) {
	r := startResponder(t, 5)
	p, _ := ProfileByName("fixed-port")
	d := New(Config{Profile: p, Target: r.addr, Local: loopback()})
	ex := d.Query(context.Background(), "flood.example.", dns.TypeA)
	if ex.Failed() {
		t.Fatal(ex.Err)
	}
	// The copies arrive on the kept-open socket; Close waits for the
	// reader, so poll the record until all five are in (bounded, no
	// timing assertion).
	deadline := time.Now().Add(5 * time.Second)
	for len(d.Received()) < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	d.Close()
	if got := len(d.Received()); got != 5 {
		t.Errorf("received %d datagrams, want 5", got)
	}
}

func TestRunStormsWhenUnanswered(t *testing.T) {
	r := startResponder(t, 0) // takes queries, never answers
	p, _ := ProfileByName("random")
	p.Interval, p.Timeout = time.Second, 20*time.Millisecond
	d := New(Config{Profile: p, Target: r.addr, Local: loopback()})
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx, dns.TypeA, "a.example.", "b.example."); close(done) }()
	// Wait for the storm to show: with FailFactor 10 the device retries
	// every 100 ms, so three failures per name arrive well before one
	// honest interval would allow a second query.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("no retry storm seen")
		}
		per := map[string]int{}
		for _, ex := range d.Exchanges() {
			if !IsTimeout(ex.Err) {
				t.Fatalf("exchange %v", ex)
			}
			per[ex.Name]++
		}
		if per["a.example."] >= 3 && per["b.example."] >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestNextHonoursTTLOnlyWhenWellBehaved(t *testing.T) {
	reply := new(dns.Msg)
	rr, _ := dns.NewRR("a.example. 120 IN A 198.51.100.1")
	reply.Answer = []dns.RR{rr}
	ok := &Exchange{Type: dns.TypeA, Reply: reply}
	well, _ := ProfileByName("well-behaved")
	weak, _ := ProfileByName("random")
	tests := []struct {
		p     Profile
		ex    *Exchange
		fails int
		want  time.Duration
	}{
		{well, ok, 0, 120 * time.Second},
		{well, &Exchange{}, 1, time.Second},
		{well, &Exchange{}, 4, 8 * time.Second},
		{well, &Exchange{}, 40, 5 * time.Minute},
		{weak, ok, 0, 30 * time.Second},
		{weak, &Exchange{}, 7, 3 * time.Second},
	}
	for _, tt := range tests {
		d := New(Config{Profile: tt.p})
		if got := d.next(tt.ex, tt.fails); got != tt.want {
			t.Errorf("%s fails=%d: next %v, want %v", tt.p.Name, tt.fails, got, tt.want)
		}
	}
}

func TestProfileByNameUnknown(t *testing.T) {
	if _, err := ProfileByName("toaster"); err == nil {
		t.Error("unknown profile accepted")
	}
	if len(ProfileNames()) != len(Profiles()) {
		t.Error("names and profiles differ")
	}
}

func distinct(v []uint16) int {
	m := map[uint16]bool{}
	for _, x := range v {
		m[x] = true
	}
	return len(m)
}
