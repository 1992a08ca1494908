package device

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

func TestRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	yes := true
	r := &Record{ID: "20:f8:5e:ca:91:52", MAC: "20:f8:5e:ca:91:52", FirstSeen: now, LastSeen: now, Queries: 7,
		IDState: []byte{1, 2, 3}, Override: &Override{Class: "cams", Strict: &yes}}
	r.noteIP("192.168.1.20")
	r.noteIP("192.168.1.21")
	r.noteIP("192.168.1.20")
	r.noteName("aria")
	r.noteBypass("do53", "8.8.8.8:53", now)
	r.noteBypass("do53", "8.8.8.8:53", now.Add(time.Second))
	r.noteBypass("dot", "1.1.1.1:853", now)
	b, err := EncodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != r.ID || got.Queries != 7 || !bytes.Equal(got.IDState, r.IDState) || got.Override.Class != "cams" || !*got.Override.Strict {
		t.Errorf("round trip lost fields: %+v", got)
	}
	if strings.Join(got.IPs, ",") != "192.168.1.20,192.168.1.21" {
		t.Errorf("IPs = %v, want most recent first", got.IPs)
	}
	if got.BypassTotal() != 3 || len(got.Bypass) != 2 || got.Bypass[0].Count != 2 {
		t.Errorf("bypass = %+v", got.Bypass)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":    "{",
		"old schema":  `{"v":0,"id":"x"}`,
		"no id":       `{"v":1}`,
		"bad mac":     `{"v":1,"id":"x","mac":"zz"}`,
		"too many ip": `{"v":1,"id":"x","ips":["1","2","3","4","5","6","7","8","9"]}`,
	} {
		if _, err := DecodeRecord([]byte(in)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := DecodeRecord([]byte(`{"v":0,"id":"x"}`)); !errors.Is(err, ErrSchema) {
		t.Errorf("old schema: err %v, want ErrSchema", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	b, _ := EncodeRecord(&Record{ID: "aa:bb:cc:dd:ee:ff", MAC: "aa:bb:cc:dd:ee:ff", IPs: []string{"10.0.0.2"}})
	f.Add(b)
	f.Add([]byte(`{"v":1,"id":"ip:10.0.0.3","bypass":[{"kind":"dot","target":"1.1.1.1:853","count":3}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		if r.ID == "" || len(r.IPs) > maxIPs {
			t.Fatalf("decoded a record that breaks its bounds: %+v", r)
		}
		// What decodes must encode and decode to the same thing.
		b2, err := EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRecord(b2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		_ = ViewOf(r, nil) // must not panic on any stored estimator state
	})
}

func TestStoreBatchesAndReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "live", "state.db")
	persist := filepath.Join(dir, "flash", "state.db")
	s, err := OpenStore(path, persist, quiet())
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	reg, err := NewRegistry(Options{Store: s, Persist: persist, Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	mac := "02:00:00:00:00:01"
	dev := netip.MustParseAddrPort("192.168.1.20:4096")
	for i := range 100 {
		reg.ObserveQuery(mac, netip.MustParseAddrPort("8.8.8.8:53"), udpQuery(dev, uint16(i), "a.example."))
	}
	// Nothing is written before a flush.
	if recs, _ := s.Load(); len(recs) != 0 {
		t.Fatalf("records written before a flush: %d", len(recs))
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reading it back, from the file and after a "reboot" (RAM file gone,
	// restored from the persistent copy).
	recs, err := ReadRecords(path, quiet())
	if err != nil || len(recs) != 1 || recs[0].Observed != 100 {
		t.Fatalf("ReadRecords = %+v, %v", recs, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path, persist, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg, err = NewRegistry(Options{Store: s, Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	snap := reg.Snapshot()
	if len(snap) != 1 || snap[0].Observed != 100 || snap[0].BypassTotal() != 100 {
		t.Fatalf("after restore: %+v", snap)
	}
	v := ViewOf(snap[0], nil)
	if v.Port.Verdict != "weak" || v.TXID.Verdict != "weak" {
		t.Errorf("fixed port, counting ID graded port=%s id=%s", v.Port.Verdict, v.TXID.Verdict)
	}
	// The store is locked while open.
	if _, err := ReadRecords(path, quiet()); !errors.Is(err, ErrLocked) {
		t.Errorf("ReadRecords on a held file: %v, want ErrLocked", err)
	}
}

func TestStoreDamagedFileMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(path, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if recs, err := s.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("fresh store: %v %v", recs, err)
	}
	aside, _ := filepath.Glob(path + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("damaged file not moved aside: %v", aside)
	}
}

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

func TestRegistryRetransmissionsAreNoEvidence(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	src := netip.MustParseAddrPort("10.0.0.2:5000")
	for range 50 {
		clk.add(time.Second)
		reg.ObserveQuery("02:00:00:00:00:09", netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(src, 0x1234, "same.example."))
	}
	if got := reg.Snapshot()[0].Observed; got != 1 {
		t.Errorf("observed %d, want 1 (the rest are retransmissions)", got)
	}
	// Retries of one query from fresh ports are retransmissions too: three
	// of them are not a constant ID.
	for i := range 3 {
		clk.add(time.Second)
		reg.ObserveQuery("02:00:00:00:00:09", netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(netip.AddrPortFrom(src.Addr(), uint16(6000+i)), 0x5678, "retry.example."))
	}
	if r := reg.Snapshot()[0]; r.Observed != 2 || r.Strict {
		t.Errorf("retries on new ports: observed %d strict %v, want 2 and not strict", r.Observed, r.Strict)
	}
}

func TestRegistryKeepsIdentityAcrossIPChangeAndMergesIPRecord(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	mac := "02:00:00:00:00:03"
	reg.ObserveQuery(mac, netip.MustParseAddrPort("8.8.8.8:53"), udpQuery(netip.MustParseAddrPort("10.0.0.2:1000"), 1, "."))
	id, _, _, _ := reg.Identify(netip.MustParseAddr("10.0.0.2"))
	if id != mac {
		t.Fatalf("id %q, want %q", id, mac)
	}
	reg.Count(id, Answered, nil)
	// New address, not yet known: kept under the address...
	id2, _, _, _ := reg.Identify(netip.MustParseAddr("10.0.0.77"))
	if id2 != "ip:10.0.0.77" {
		t.Fatalf("unknown address id %q", id2)
	}
	reg.Count(id2, RateLimited, nil)
	// ...until a logged packet ties it to the MAC.
	reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.77:40000"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	snap := reg.Snapshot()
	if len(snap) != 1 {
		t.Fatalf("records %d, want 1: %+v", len(snap), snap)
	}
	r := snap[0]
	if r.ID != mac || r.Queries != 2 || r.RateLimited != 1 || r.IPs[0] != "10.0.0.77" || len(r.IPs) != 2 {
		t.Errorf("merged record %+v", r)
	}
	kinds := map[string]string{}
	for _, a := range r.Bypass {
		kinds[a.Kind] = a.Target
	}
	if kinds["do53"] != "8.8.8.8:53" || kinds["dot"] != "1.1.1.1:853" {
		t.Errorf("bypass %+v", r.Bypass)
	}
}

func TestRegistryBootsAndLeases(t *testing.T) {
	dir := t.TempDir()
	leases := filepath.Join(dir, "dhcp.leases")
	os.WriteFile(leases, []byte("0 02:00:00:00:00:04 10.0.0.4 kettle *\n"), 0o600)
	clk := newClock()
	var exempt [][]net.HardwareAddr
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now, Leases: leases, FlushInterval: 10 * time.Millisecond,
		Classes:  []policy.Class{{Name: "trusted", Names: []string{"kett*"}, Exempt: true}},
		OnExempt: func(m []net.HardwareAddr) { exempt = append(exempt, m) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	time.Sleep(50 * time.Millisecond)
	// The lease ties 10.0.0.4 to the MAC and names it.
	id, mac, d, name := reg.Identify(netip.MustParseAddr("10.0.0.4"))
	if id != "02:00:00:00:00:04" || mac != id || name != "kettle" || d.Class != "trusted" || !d.Exempt {
		t.Errorf("Identify = %q %q %+v %q", id, mac, d, name)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	if len(exempt) == 0 || len(exempt[len(exempt)-1]) != 1 || exempt[len(exempt)-1][0].String() != mac {
		t.Errorf("exempt updates %v", exempt)
	}
	reg.Gone(mac)
	reg.Identify(netip.MustParseAddr("10.0.0.4"))
	clk.add(time.Hour)
	reg.Identify(netip.MustParseAddr("10.0.0.4"))
	if b := reg.Snapshot()[0].Boots; b != 2 {
		t.Errorf("boots %d, want 2 (neighbour gone, then an hour of silence)", b)
	}
}

func TestClassifier(t *testing.T) {
	no := false
	c := NewClassifier([]policy.Class{
		{Name: "trusted", MACs: []string{"00:11:22:33:44:55"}, Exempt: true},
		{Name: "cams", MACPrefixes: []string{"9c:8e:cd"}, Rate: 10, Burst: 20},
		{Name: "tvs", Names: []string{"lg-*"}},
		{Name: "jail", Strict: true, Rate: 2, Burst: 4},
	})
	tests := []struct {
		name string
		rec  Record
		want Decision
	}{
		{"by mac", Record{MAC: "00:11:22:33:44:55"}, Decision{Class: "trusted", Exempt: true}},
		{"by prefix", Record{MAC: "9C:8E:CD:01:02:03"}, Decision{Class: "cams", Rate: 10, Burst: 20}},
		{"by name", Record{MAC: "02:00:00:00:00:01", Names: []string{"LG-webOS"}}, Decision{Class: "tvs"}},
		{"none", Record{MAC: "02:00:00:00:00:02"}, Decision{}},
		{"weak goes to the strict class, loses exemption", Record{MAC: "00:11:22:33:44:55", Strict: true}, Decision{Class: "jail", Strict: true, Rate: 2, Burst: 4}},
		{"override class", Record{MAC: "02:00:00:00:00:03", Override: &Override{Class: "cams"}}, Decision{Class: "cams", Rate: 10, Burst: 20}},
		{"override un-strict", Record{MAC: "9c:8e:cd:00:00:00", Strict: true, Override: &Override{Strict: &no}}, Decision{Class: "cams", Rate: 10, Burst: 20}},
	}
	for _, tc := range tests {
		if got := c.Decide(&tc.rec); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
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
	h := stage.Chain(stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		seen = req
		err := errs[i]
		i++
		return nil, err
	}), Identify(reg, IdentifyOptions{Feed: true}))
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

func TestRegistryBounded(t *testing.T) {
	clk := newClock()
	reg, _ := NewRegistry(Options{Log: quiet(), Now: clk.now})
	for i := range MaxDevices + 10 {
		clk.add(time.Millisecond)
		mac := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}.String()
		reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	}
	snap := reg.Snapshot()
	if len(snap) != MaxDevices {
		t.Fatalf("%d devices, want the bound %d", len(snap), MaxDevices)
	}
	if snap[0].ID == "02:00:00:00:00:00" {
		t.Errorf("the oldest device was kept")
	}
}

func TestRegistrySetClasses(t *testing.T) {
	reg, _ := NewRegistry(Options{Log: quiet(), Now: newClock().now})
	reg.ObserveBypass("9c:8e:cd:00:00:01", netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	if v := reg.Views()[0]; v.Class != "" {
		t.Fatalf("class %q before any class exists", v.Class)
	}
	reg.SetClasses([]policy.Class{{Name: "cams", MACPrefixes: []string{"9c:8e:cd"}}})
	if _, _, d, _ := reg.Identify(netip.MustParseAddr("10.0.0.2")); d.Class != "cams" {
		t.Errorf("after reload: %+v", d)
	}
}
