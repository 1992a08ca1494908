package device

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/policy"
)

func TestRegistryGradesWeakDeviceStrictOnce(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	clk := newClock()
	reg, err := NewRegistry(Options{Log: log, Now: clk.now, Classes: []policy.Class{{Name: "cams", MACPrefixes: []string{"9C:8E:CD"}}}})
	if err != nil {
		t.Fatal(err)
	}
	weak := "9c:8e:cd:00:00:01"
	good := "02:00:00:00:00:02"
	src := netip.MustParseAddrPort("192.168.1.30:4096")
	for i := range 200 {
		clk.add(100 * time.Millisecond)
		reg.ObserveQuery(weak, netip.MustParseAddrPort("192.168.1.1:53"), udpQuery(src, uint16(i+1), "x.example."))
		reg.ObserveQuery(good, netip.MustParseAddrPort("192.168.1.1:53"), udpQuery(withPort(netip.MustParseAddrPort("192.168.1.31:1"), uint16(1024+(i*7919)%60000)), uint16(i*40503+17), "y.example."))
	}
	_, _, d, _ := reg.Identify(src.Addr())
	if !d.Strict || d.Class != StrictClass {
		t.Errorf("weak device decision %+v, want strict", d)
	}
	_, _, d2, _ := reg.Identify(netip.MustParseAddr("192.168.1.31"))
	if d2.Strict {
		t.Errorf("random device made strict: %+v", d2)
	}
	if n := strings.Count(logs.String(), "moved to the strict class"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestGradeDue: every value is graded for the first gradeAlways, then every
// gradeEvery-th, then each time 1/gradeShare of the evidence is new.
func TestGradeDue(t *testing.T) {
	for _, tc := range []struct {
		n        uint64
		ungraded uint32
		due      bool
	}{
		{1, 1, true}, {64, 1, true}, {65, 1, false}, {65, 8, true}, {511, 7, false}, {511, 8, true},
		{1000, 8, false}, {1000, 15, true}, {10000, 155, false}, {10000, 156, true},
		{200000, 3124, false}, {200000, 3125, true},
	} {
		if got := gradeDue(tc.n, tc.ungraded); got != tc.due {
			t.Errorf("gradeDue(%d values, %d ungraded) = %v, want %v", tc.n, tc.ungraded, got, tc.due)
		}
	}
}

// TestGradeKeepsUpWithBusyDevice: a device random for 10,000 queries whose
// IDs then start counting is moved to the strict class within 1/gradeShare
// more of its queries (and a grading step) of the point where its
// estimator first says weak, although it is graded ever more rarely.
func TestGradeKeepsUpWithBusyDevice(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	mac := "02:00:00:00:00:42"
	dst := netip.MustParseAddrPort("192.168.1.1:53")
	host := netip.MustParseAddr("192.168.1.42")
	r := rand.New(rand.NewPCG(3, 4))
	ref, boot := entropy.New(), uint32(0) // the device's ID estimator, graded more often
	ask := func(id uint16) {
		clk.add(10 * time.Millisecond)
		reg.ObserveQuery(mac, dst, udpQuery(netip.AddrPortFrom(host, uint16(1024+r.IntN(64000))), id, "k.example."))
		if ref.N() == 0 {
			boot = reg.Snapshot()[0].Boots
		}
		ref.Observe(id, boot)
	}
	strict := func() bool { _, _, d, _ := reg.Identify(host); return d.Strict }
	for range 10000 {
		ask(uint16(r.Uint32()))
	}
	if strict() {
		t.Fatal("random device made strict")
	}
	id, weakAt := uint16(r.Uint32()), 0
	for i := 1; i <= 40000; i++ {
		id++
		ask(id)
		if weakAt == 0 && i%16 == 0 && ref.Result().Verdict == entropy.Weak {
			weakAt = i - 15 // at most 15 queries early
		}
		if strict() {
			if weakAt == 0 {
				t.Fatalf("strict after %d counting IDs before its estimator says weak", i)
			}
			n := uint64(10000 + weakAt)
			if late := i - weakAt; uint64(late) > n/gradeShare+gradeEvery+15 {
				t.Errorf("strict %d queries after its estimator said weak (at %d values), want at most %d", late, n, n/gradeShare+gradeEvery+15)
			}
			t.Logf("estimator weak after %d counting IDs, device strict after %d", weakAt, i)
			return
		}
	}
	t.Fatalf("not strict after 40,000 counting IDs (estimator weak after %d)", weakAt)
}

func TestRegistrySameQueryEveryBootCounts(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	mac := "20:f8:5e:ca:91:52"
	src := netip.MustParseAddrPort("10.0.0.2:59904")
	for range 20 { // Aria: one query per boot, ID 1 from port 59904
		reg.ObserveQuery(mac, netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(src, 1, "www.fitbit.com."))
		clk.add(time.Second)
		reg.Gone(mac)
	}
	r := reg.Snapshot()[0]
	if r.Observed != 20 || r.Boots != 19 {
		t.Fatalf("observed %d in %d boots, want 20 in 19", r.Observed, r.Boots)
	}
	if v := ViewOf(r, nil); v.TXID.Verdict != "weak" || v.Port.Verdict != "weak" {
		t.Errorf("Aria graded id=%s port=%s", v.TXID.Verdict, v.Port.Verdict)
	}
}

// TestRegistrySpoofedMACDoesNotGrade: frames carrying a device's MAC from
// another address (the neighbour table disagrees) cannot get it graded
// weak; the device's own traffic is graded.
func TestRegistrySpoofedMACDoesNotGrade(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Neighbours: lan(), Log: quiet(), Now: clk.now})
	for i := range 100 {
		clk.add(time.Second)
		reg.ObserveQuery(victimMAC, router, udpQuery(netip.AddrPortFrom(attacker, 4096), uint16(i), fmt.Sprintf("s%d.example.", i)))
	}
	// The identify path: the attacker's address has its own MAC.
	id, _, _, _ := reg.Identify(attacker)
	for i := range 50 {
		q := udpQuery(netip.AddrPortFrom(attacker, 4096), 7, fmt.Sprintf("t%d.example.", i))
		reg.Count(id, Answered, &q)
	}
	v := findView(reg.Views(), victimMAC)
	if v == nil || v.Strict || v.TXID.N != 0 {
		t.Fatalf("spoofed frames graded the victim: %+v", v)
	}
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 20 {
		clk.add(time.Second)
		reg.ObserveQuery(victimMAC, router, udpQuery(netip.AddrPortFrom(victim, uint16(1024+r.UintN(60000))), uint16(r.UintN(65536)), fmt.Sprintf("o%d.example.", i)))
	}
	if v := findView(reg.Views(), victimMAC); v == nil || v.Strict || v.TXID.Verdict != "random" {
		t.Errorf("the victim's own traffic: %+v", v)
	}
	if a := findView(reg.Views(), attackerMAC); a == nil || !a.Strict || a.TXID.Verdict != "weak" {
		t.Errorf("the attacker's own constant IDs: %+v", a)
	}
}

// TestRegistryStrictIsReviewed: a weak grade is not for ever. After
// strictReview the device is graded on fresh evidence: random values
// take it out of the strict class, weak ones keep it there.
func TestRegistryStrictIsReviewed(t *testing.T) {
	var logs logBuf
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: logs.logger(), Now: clk.now})
	fixed, fixed2 := "02:00:00:00:00:21", "02:00:00:00:00:22"
	src, src2 := netip.MustParseAddrPort("10.0.0.21:4096"), netip.MustParseAddrPort("10.0.0.22:4096")
	ask := func(mac string, src netip.AddrPort, id, port uint16, i int) {
		reg.ObserveQuery(mac, router, udpQuery(netip.AddrPortFrom(src.Addr(), port), id, fmt.Sprintf("q%d.example.", i)))
	}
	for i := range 12 {
		clk.add(time.Second)
		ask(fixed, src, uint16(i+1), 4096, i)
		ask(fixed2, src2, uint16(i+1), 4096, i)
	}
	for _, mac := range []string{fixed, fixed2} {
		if v := findView(reg.Views(), mac); !v.Strict {
			t.Fatalf("%s not graded weak: %+v", mac, v)
		}
	}
	// Within the review period nothing changes, whatever it sends.
	r := rand.New(rand.NewPCG(8, 8))
	for i := range 30 {
		clk.add(time.Minute)
		ask(fixed, src, uint16(r.UintN(65536)), uint16(1024+r.UintN(60000)), 100+i)
	}
	if v := findView(reg.Views(), fixed); !v.Strict {
		t.Fatal("left the strict class before its review")
	}
	clk.add(strictReview)
	for i := range 40 {
		clk.add(time.Minute)
		ask(fixed, src, uint16(r.UintN(65536)), uint16(1024+r.UintN(60000)), 200+i)
		ask(fixed2, src2, uint16(500+i), 4096, 200+i)
	}
	if v := findView(reg.Views(), fixed); v.Strict || v.TXID.Verdict != "random" {
		t.Errorf("random again after review, still strict: %+v", v)
	}
	if v := findView(reg.Views(), fixed2); !v.Strict || !strings.Contains(v.StrictReason, "weak") {
		t.Errorf("still weak after review, not strict: %+v", v)
	}
	if !strings.Contains(logs.String(), "graded random again") {
		t.Errorf("leaving the strict class not logged:\n%s", logs.String())
	}
}

// TestRegistryGradesAsSoonAsTheEvidenceDoes: the device, 9
// queries over 8 boots with IDs 3, 4, 4, 5, 5, 6, 7, 7, 8, is moved to
// the strict class; the summary of a flood is logged once a window
// without waiting for the end.
func TestRegistryGradesAsSoonAsTheEvidenceDoes(t *testing.T) {
	clk := newClock()
	var logs logBuf
	reg, _ := NewRegistry(Options{Neighbours: lan(), Log: logs.logger(), Now: clk.now})
	ids := []uint16{3, 4, 4, 5, 5, 6, 7, 7, 8}
	boots := []int{0, 1, 1, 2, 3, 4, 5, 6, 7}
	r := rand.New(rand.NewPCG(2, 3))
	for i, id := range ids {
		if i > 0 && boots[i] != boots[i-1] {
			reg.Gone(victimMAC) // the device left; its next query is a new boot
			clk.add(time.Hour)
		}
		clk.add(time.Second)
		port := uint16(1024 + r.UintN(60000))
		reg.ObserveQuery(victimMAC, router, udpQuery(netip.AddrPortFrom(victim, port), id, fmt.Sprintf("n%d.example.", i)))
		if v := findView(reg.Views(), victimMAC); i < 3 && v.Strict {
			t.Fatalf("strict after %d values: %+v", i+1, v.TXID)
		}
	}
	v := findView(reg.Views(), victimMAC)
	if !v.Strict || v.TXID.Verdict != "weak" || v.Boots != 7 || v.TXID.N != 9 {
		t.Errorf("after 9 values over 8 boots: strict=%v boots=%d txid=%+v", v.Strict, v.Boots, v.TXID)
	}

	// Churn summaries come once a window, during the churn.
	for i := range 2 * MaxUnconfirmed {
		clk.add(time.Second)
		reg.ObserveBypass(randomMAC(r), netip.AddrPortFrom(attacker, 1), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
		if i%10 == 0 {
			reg.summarise(false)
		}
	}
	if n := strings.Count(logs.String(), "many source MACs not confirmed"); n < 3 || n > 10 {
		t.Errorf("%d flood summaries over %d minutes:\n%s", n, 2*MaxUnconfirmed/60, logs.String())
	}
}

// TestRegistryBitmapBudget: however many devices earn full estimators,
// at most the budget hold a bitmap; the others saturate and still grade.
func TestRegistryBitmapBudget(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	reg.bitmaps = entropy.NewBudget(4)
	r := rand.New(rand.NewPCG(9, 9))
	for d := range 10 {
		mac := net.HardwareAddr{2, 0, 4, 0, 0, byte(d)}.String()
		src := netip.AddrFrom4([4]byte{10, 0, 4, byte(d)})
		for i := range 700 {
			clk.add(time.Millisecond)
			port := uint16(1024 + r.UintN(60000))
			reg.ObserveQuery(mac, router, udpQuery(netip.AddrPortFrom(src, port), uint16(r.UintN(65536)), fmt.Sprintf("b%d.example.", i)))
		}
	}
	if used := reg.bitmaps.Used(); used > 4 {
		t.Errorf("%d bitmaps held, budget 4", used)
	}
	for _, v := range reg.Views() {
		if v.TXID.Verdict != "random" || v.Port.Verdict != "random" || v.Strict {
			t.Errorf("%s graded %s/%s strict=%v: %s", v.ID, v.TXID.Verdict, v.Port.Verdict, v.Strict, v.TXID.Detail)
		}
	}
}

// BenchmarkObserveGraded is one logged query of a device whose IDs and
// ports have been random for n queries: the observation and, every so
// often, the grade of both estimators, all under the registry's lock.
func BenchmarkObserveGraded(b *testing.B) {
	for _, n := range []int{1000, 10000, 200000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			reg, _ := NewRegistry(Options{Neighbours: lan(), Log: quiet(), Now: newClock().now})
			r := rand.New(rand.NewPCG(1, 2))
			q := udpQuery(netip.AddrPortFrom(victim, 4000), 0, "g.example.")
			ask := func() {
				q.Query.ID = uint16(r.Uint32())
				q.Src = netip.AddrPortFrom(victim, uint16(1024+r.IntN(64000)))
				reg.ObserveQuery(victimMAC, router, q)
			}
			for range n {
				ask()
			}
			b.ReportAllocs()
			for b.Loop() {
				ask()
			}
		})
	}
}
