package limit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func client(ip string) netip.AddrPort    { return netip.AddrPortFrom(netip.MustParseAddr(ip), 4096) }
func reqFrom(ip string, d *stage.Device) *stage.Request {
	return &stage.Request{Client: client(ip), Device: d}
}

func TestBucket(t *testing.T) {
	type step struct {
		advance time.Duration
		req     *stage.Request
		n       int // queries sent at this instant
		allowed int // how many pass
	}
	cam := &stage.Device{ID: "aa:bb:cc:00:00:01"}
	strict := &stage.Device{ID: "aa:bb:cc:00:00:02", Rate: 1, Burst: 2}
	tests := []struct {
		name   string
		limits policy.Limits
		steps  []step
	}{
		{"burst then refill", policy.Limits{DeviceRate: 10, DeviceBurst: 5}, []step{
			{0, reqFrom("192.168.1.10", cam), 8, 5},
			{100 * time.Millisecond, reqFrom("192.168.1.10", cam), 3, 1},
			{time.Second, reqFrom("192.168.1.10", cam), 20, 5}, // refilled to the burst, not beyond
		}},
		{"devices are independent", policy.Limits{DeviceRate: 1, DeviceBurst: 2}, []step{
			{0, reqFrom("192.168.1.10", nil), 3, 2},
			{0, reqFrom("192.168.1.11", nil), 3, 2},
			{0, reqFrom("192.168.1.10", cam), 3, 2}, // a MAC identity is another key than its IP
		}},
		{"device class overrides the default", policy.Limits{DeviceRate: 100, DeviceBurst: 100}, []step{
			{0, reqFrom("192.168.1.12", strict), 5, 2},
			{500 * time.Millisecond, reqFrom("192.168.1.12", strict), 2, 0},
			{500 * time.Millisecond, reqFrom("192.168.1.12", strict), 2, 1},
		}},
		{"rate 0 is unlimited", policy.Limits{}, []step{
			{0, reqFrom("192.168.1.10", cam), 1000, 1000},
		}},
		{"retry storm: a tenfold rate gets a tenth through", policy.Limits{DeviceRate: 10, DeviceBurst: 10}, func() []step {
			s := []step{{0, reqFrom("192.168.1.20", nil), 10, 10}}
			for i := 0; i < 10; i++ { // 100 q/s for 1 s, in 10 ms slots
				for j := 0; j < 10; j++ {
					s = append(s, step{10 * time.Millisecond, reqFrom("192.168.1.20", nil), 1, map[bool]int{true: 1, false: 0}[j == 9]})
				}
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{time.Unix(1_700_000_000, 0)}
			l := New(tt.limits, Options{Now: c.now})
			sent, passed := 0, 0
			for i, s := range tt.steps {
				c.advance(s.advance)
				got := 0
				for j := 0; j < s.n; j++ {
					if l.Allow(s.req) {
						got++
					}
				}
				if got != s.allowed {
					t.Errorf("step %d: %d of %d allowed, want %d", i, got, s.n, s.allowed)
				}
				sent, passed = sent+s.n, passed+got
			}
			st := l.Stats()
			if st.Allowed != uint64(passed) || st.Refused != uint64(sent-passed) {
				t.Errorf("stats %+v, sent %d passed %d", st, sent, passed)
			}
		})
	}
}

func TestTableBounded(t *testing.T) {
	c := &clock{time.Unix(0, 0)}
	l := New(policy.Limits{DeviceRate: 1, DeviceBurst: 1}, Options{MaxDevices: 3, Now: c.now})
	for i := 0; i < 10; i++ {
		l.Allow(reqFrom(fmt.Sprintf("10.0.0.%d", i), nil))
	}
	if n := l.Stats().Devices; n != 3 {
		t.Fatalf("%d buckets held, want 3", n)
	}
	// The most recent survive; the first was forgotten and starts full.
	if l.Allow(reqFrom("10.0.0.9", nil)) {
		t.Error("10.0.0.9 should still be empty")
	}
	if l.Refused("ip:10.0.0.9") != 1 {
		t.Errorf("refused count %d", l.Refused("ip:10.0.0.9"))
	}
	if !l.Allow(reqFrom("10.0.0.0", nil)) {
		t.Error("a forgotten device should start with a full bucket")
	}
}

func TestStageAnswersRefusedWithEDE(t *testing.T) {
	c := &clock{time.Unix(0, 0)}
	l := New(policy.Limits{DeviceRate: 1, DeviceBurst: 1}, Options{Now: c.now})
	inner := 0
	h := stage.Chain(l, stage.Answer("inner", stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		inner++
		return stage.Synth(req, dns.RcodeSuccess, nil, nil)
	})))
	raw, _ := (&dns.Msg{Question: []dns.Question{{Name: "a.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}}).Pack()
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := &stage.Request{Raw: raw, Q: q, Client: client("192.168.1.30")}
	if _, err := h.ServeDNS(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	_, err = h.ServeDNS(context.Background(), req)
	var se *stage.Error
	if !errors.As(err, &se) || se.Rcode != dns.RcodeRefused || se.EDE.Code != dnswire.EDEProhibited {
		t.Fatalf("err %v, want REFUSED with EDE 18", err)
	}
	if inner != 1 {
		t.Errorf("inner handler ran %d times, want 1", inner)
	}
	r := stage.ErrorReply(req, err)
	if r.Rcode() != dns.RcodeRefused || r.EDE == nil || r.EDE.Code != dnswire.EDEProhibited {
		t.Errorf("device reply rcode %d ede %v", r.Rcode(), r.EDE)
	}
}

// TestReceivedTime: on the real clock the limiter takes the time each
// query was received (read once per batch by the listener), not a clock
// read of its own: the bucket refills between the times the requests
// carry, however fast the test runs.
func TestReceivedTime(t *testing.T) {
	l := New(policy.Limits{DeviceRate: 1, DeviceBurst: 1}, Options{})
	dev := &stage.Device{ID: "aa:bb:cc:00:00:09"}
	at := time.Now()
	ask := func(at time.Time) bool {
		return l.Allow(&stage.Request{Client: client("192.168.1.30"), Device: dev, Received: at})
	}
	if !ask(at) || ask(at) {
		t.Fatal("burst 1: the first query passes, the second at the same time does not")
	}
	if !ask(at.Add(time.Second)) {
		t.Error("a query received a second later (rate 1/s) was refused: the limiter did not take its time")
	}
}
