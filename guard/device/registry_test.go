package device

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// staticNeighbours is a neighbour table that does not follow the kernel.
func staticNeighbours(local string, byIP map[string]string) *Neighbours {
	n := &Neighbours{byIP: map[netip.Addr]string{}, local: map[netip.Addr]int{netip.MustParseAddr(local): 1}}
	for ip, mac := range byIP {
		n.byIP[netip.MustParseAddr(ip)] = mac
	}
	return n
}

func randomMAC(r *rand.Rand) string {
	var b [6]byte
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	b[0] = b[0]&^1 | 2 // unicast, locally administered
	return net.HardwareAddr(b[:]).String()
}

const (
	victimMAC   = "02:00:00:00:00:0a"
	exemptMAC   = "02:00:00:00:00:0e"
	attackerMAC = "02:00:00:00:00:66"
)

var (
	router   = netip.MustParseAddrPort("10.0.0.1:53")
	victim   = netip.MustParseAddr("10.0.0.10")
	exempt   = netip.MustParseAddr("10.0.0.14")
	attacker = netip.MustParseAddr("10.0.0.66")
)

func lan() *Neighbours {
	return staticNeighbours("10.0.0.1", map[string]string{
		victim.String(): victimMAC, exempt.String(): exemptMAC, attacker.String(): attackerMAC,
	})
}

// TestRegistryMACFlood: frames from thousands of random source MACs (the
// attacker's address, MACs the neighbour table does not know) stay in the
// small unconfirmed pool, never reach the store, do not push out a real
// device or an operator's override, and are summed up in a few log lines.
func TestRegistryMACFlood(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(filepath.Join(dir, "state.db"), "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var logs logBuf
	clk := newClock()
	reg, err := NewRegistry(Options{Store: s, Neighbours: lan(), Log: logs.logger(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	reg.ObserveQuery(victimMAC, router, udpQuery(netip.AddrPortFrom(victim, 5000), 1, "v.example."))
	reg.ObserveQuery(exemptMAC, router, udpQuery(netip.AddrPortFrom(exempt, 5000), 1, "e.example."))
	yes := true
	if _, err := reg.SetOverride(exemptMAC, &Override{Exempt: &yes}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 6000 {
		clk.add(time.Millisecond)
		reg.ObserveQuery(randomMAC(r), router, udpQuery(netip.AddrPortFrom(attacker, uint16(1024+i)), uint16(r.UintN(65536)), fmt.Sprintf("f%d.example.", i)))
		if i%500 == 0 { // the victim keeps asking meanwhile
			reg.ObserveQuery(victimMAC, router, udpQuery(netip.AddrPortFrom(victim, uint16(6000+i)), uint16(i*7), "v.example."))
		}
	}
	confirmed, unconfirmed := reg.Len()
	if unconfirmed > MaxUnconfirmed || confirmed != 2 {
		t.Errorf("after the flood: %d confirmed, %d unconfirmed; want 2 and at most %d", confirmed, unconfirmed, MaxUnconfirmed)
	}
	views := reg.Views()
	if v := findView(views, exemptMAC); v == nil || v.Override == nil || !v.Exempt || v.Unconfirmed {
		t.Errorf("exempt device after the flood: %+v", v)
	}
	if v := findView(views, victimMAC); v == nil || v.TXID.N < 2 || v.Unconfirmed {
		t.Errorf("victim after the flood: %+v", v)
	}
	for _, v := range views {
		if v.Unconfirmed && (v.TXID.N != 0 || v.Port.N != 0) {
			t.Fatalf("an unconfirmed MAC was graded: %+v", v)
		}
	}
	if err := reg.Flush(); err != nil {
		t.Fatal(err)
	}
	if ids := storeIDs(t, s); len(ids) != 2 {
		t.Errorf("stored records %d, want the 2 confirmed devices", len(ids))
	}
	reg.summarise(true)
	l := logs.String()
	if n := strings.Count(l, "level=INFO") + strings.Count(l, "level=WARN") + strings.Count(l, "level=ERROR"); n > 2*logBurst {
		t.Errorf("%d log lines above debug for one flood:\n%s", n, l)
	}
	if !strings.Contains(l, "many source MACs not confirmed") || !strings.Contains(l, "forgotten=") {
		t.Errorf("flood not summed up:\n%s", l)
	}
}

func findView(views []View, id string) *View {
	for i := range views {
		if views[i].ID == id {
			return &views[i]
		}
	}
	return nil
}

// TestRegistryConfirmation: an unconfirmed device joins the table when
// the neighbour table or a DHCP lease agrees with its MAC and address.
func TestRegistryConfirmation(t *testing.T) {
	nb := lan()
	clk := newClock()
	reg, _ := NewRegistry(Options{Neighbours: nb, Log: quiet(), Now: clk.now})
	const late = "02:00:00:00:00:77"
	ip := netip.MustParseAddr("10.0.0.77")
	reg.ObserveQuery(late, router, udpQuery(netip.AddrPortFrom(ip, 4000), 9, "a.example."))
	if c, u := reg.Len(); c != 0 || u != 1 {
		t.Fatalf("before the neighbour entry: %d confirmed %d unconfirmed", c, u)
	}
	nb.mu.Lock()
	nb.byIP[ip] = late
	nb.mu.Unlock()
	reg.ObserveQuery(late, router, udpQuery(netip.AddrPortFrom(ip, 4001), 10, "b.example."))
	if c, u := reg.Len(); c != 1 || u != 0 {
		t.Fatalf("after the neighbour entry: %d confirmed %d unconfirmed", c, u)
	}
	if v := findView(reg.Views(), late); v == nil || v.TXID.N != 1 {
		t.Errorf("only the agreeing query is evidence: %+v", v)
	}
	// A neighbour entry that arrives after the device's only packet
	// confirms it at the next flush, without another query.
	const quiet2 = "02:00:00:00:00:78"
	ip2 := netip.MustParseAddr("10.0.0.78")
	reg.ObserveQuery(quiet2, router, udpQuery(netip.AddrPortFrom(ip2, 4000), 9, "a.example."))
	reg.confirmPending()
	if v := findView(reg.Views(), quiet2); v == nil || !v.Unconfirmed {
		t.Fatalf("confirmed with no neighbour entry: %+v", v)
	}
	nb.mu.Lock()
	nb.byIP[ip2] = quiet2
	nb.mu.Unlock()
	reg.confirmPending()
	if v := findView(reg.Views(), quiet2); v == nil || v.Unconfirmed {
		t.Errorf("not confirmed once the neighbour entry exists: %+v", v)
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

// TestRegistryOverridesNeverEvicted: records with an operator override
// stay while the table turns over many times.
func TestRegistryOverridesNeverEvicted(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	yes, no := true, false
	overrides := map[string]*Override{
		"02:00:00:00:01:01": {Class: "cams"},
		"02:00:00:00:01:02": {Exempt: &yes},
		"02:00:00:00:01:03": {Strict: &no},
	}
	for mac, o := range overrides {
		reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
		if _, err := reg.SetOverride(mac, o); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 * MaxDevices {
		clk.add(time.Millisecond)
		mac := net.HardwareAddr{2, 0, 1, 0, byte(i >> 8), byte(i)}.String()
		reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.3:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	}
	if c, _ := reg.Len(); c != MaxDevices+len(overrides) {
		t.Errorf("%d devices, want the bound %d plus %d overrides", c, MaxDevices, len(overrides))
	}
	views := reg.Views()
	for mac, o := range overrides {
		v := findView(views, mac)
		if v == nil || v.Override == nil || *v.Override != *o {
			t.Errorf("override of %s lost: %+v", mac, v)
		}
	}
	// Cleared, the record is an ordinary one again: it can be forgotten.
	if _, err := reg.SetOverride("02:00:00:00:01:01", nil); err != nil {
		t.Fatal(err)
	}
	for i := range MaxDevices {
		clk.add(time.Millisecond)
		reg.ObserveBypass(net.HardwareAddr{2, 0, 2, 0, byte(i >> 8), byte(i)}.String(), netip.MustParseAddrPort("10.0.0.3:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	}
	if v := findView(reg.Views(), "02:00:00:00:01:01"); v != nil {
		t.Errorf("a record without override outlived %d newer devices", MaxDevices)
	}
}

// TestRegistryRecordCost: a device that sent one query costs hundreds of
// bytes, not the kilobytes of full estimators.
func TestRegistryRecordCost(t *testing.T) {
	for _, tc := range []struct {
		name      string
		confirmed bool
		max       uint64
	}{{"unconfirmed", false, 1200}, {"confirmed", true, 2000}} {
		t.Run(tc.name, func(t *testing.T) {
			nb := lan()
			reg, _ := NewRegistry(Options{Neighbours: nb, Log: quiet(), Now: newClock().now})
			r := rand.New(rand.NewPCG(1, 1))
			const n = MaxUnconfirmed
			macs := make([]string, n)
			for i := range macs {
				macs[i] = randomMAC(r)
				if tc.confirmed {
					nb.byIP[netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})] = macs[i]
				}
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i, mac := range macs {
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 40000)
				reg.ObserveQuery(mac, router, udpQuery(src, uint16(r.UintN(65536)), "one.example."))
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := (after.HeapAlloc - before.HeapAlloc) / n
			t.Logf("%d bytes per %s device after one query", per, tc.name)
			if per > tc.max {
				t.Errorf("%d bytes per device, want at most %d", per, tc.max)
			}
			runtime.KeepAlive(reg)
		})
	}
}

// BenchmarkRegistryFlood measures one observation from a new random MAC
// with the tables full: constant time, whatever the bounds.
func BenchmarkRegistryFlood(b *testing.B) {
	reg, _ := NewRegistry(Options{Neighbours: lan(), Log: quiet(), Now: newClock().now})
	r := rand.New(rand.NewPCG(1, 2))
	macs := make([]string, 4096)
	for i := range macs {
		macs[i] = randomMAC(r)
	}
	q := udpQuery(netip.AddrPortFrom(attacker, 4000), 0, "f.example.")
	b.ResetTimer()
	for i := range b.N {
		q.Query.ID = uint16(i)
		reg.ObserveQuery(macs[i%len(macs)], router, q)
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

// TestRegistryOverrideFollowsMergedRecord: an override set on a device
// known by its address only stays with it when its MAC is learned and the
// records merge, and is kept from eviction there.
func TestRegistryOverrideFollowsMergedRecord(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	const mac = "02:00:00:00:00:31"
	reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.31:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	id, _, _, _ := reg.Identify(netip.MustParseAddr("10.0.0.131"))
	yes := true
	if _, err := reg.SetOverride(id, &Override{Exempt: &yes}); err != nil {
		t.Fatal(err)
	}
	reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.131:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	for i := range MaxDevices + 5 {
		clk.add(time.Millisecond)
		reg.ObserveBypass(net.HardwareAddr{2, 0, 3, 0, byte(i >> 8), byte(i)}.String(), netip.MustParseAddrPort("10.0.0.3:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	}
	v := findView(reg.Views(), mac)
	if v == nil || v.Override == nil || !v.Exempt || findView(reg.Views(), id) != nil {
		t.Errorf("merged record %+v (address record %q gone: %v)", v, id, findView(reg.Views(), id) == nil)
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
