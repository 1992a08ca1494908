package device

import (
	"net/netip"
	"testing"
	"time"
)

// TestDeviceAtShared: the identify stage's *stage.Device is shared by a
// device's queries (no allocation per query) and replaced, never
// modified, when its policy changes; a device known only by its address
// gets the "ip:ADDR" identity; the router's own queries the local one.
func TestDeviceAtShared(t *testing.T) {
	clk := newClock()
	reg, err := NewRegistry(Options{Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("10.0.0.9")
	d1 := reg.DeviceAt(a, time.Time{})
	if d1.ID != "ip:10.0.0.9" || d1.MAC != "" || d1.Strict {
		t.Fatalf("first query: %+v", d1)
	}
	if d2 := reg.DeviceAt(a, time.Time{}); d2 != d1 {
		t.Errorf("second query got a new device %p, want the shared %p", d2, d1)
	}
	if n := testing.AllocsPerRun(100, func() { reg.DeviceAt(a, time.Time{}) }); n != 0 {
		t.Errorf("%v allocations per query of a known device, want 0", n)
	}
	strict := true
	if _, err := reg.SetOverride(d1.ID, &Override{Strict: &strict}); err != nil {
		t.Fatal(err)
	}
	d3 := reg.DeviceAt(a, time.Time{})
	if d3 == d1 || !d3.Strict || d3.ID != d1.ID {
		t.Errorf("after the override: %+v (same pointer: %v), want a new strict device", d3, d3 == d1)
	}
	if d1.Strict {
		t.Error("the device handed out before the override was modified")
	}
	b := netip.MustParseAddr("10.0.0.10")
	if d := reg.DeviceAt(b, time.Time{}); d.ID != "ip:10.0.0.10" {
		t.Errorf("another address: %+v", d)
	}
	if d := reg.DeviceAt(netip.MustParseAddr("127.0.0.1"), time.Time{}); d.ID != LocalID || d.Name != "router" {
		t.Errorf("loopback: %+v", d)
	}
	id, mac, dec, name := reg.Identify(a)
	if id != d3.ID || mac != "" || !dec.Strict || name != d3.Name {
		t.Errorf("Identify = %q %q %+v %q, want DeviceAt's %+v", id, mac, dec, name, d3)
	}
}

// TestRegistryTakesQueryTime: on the real clock the registry takes the
// time a query was received instead of reading the clock: a device first
// seen "at" a given time records that time.
func TestRegistryTakesQueryTime(t *testing.T) {
	reg, err := NewRegistry(Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	reg.DeviceAt(netip.MustParseAddr("10.0.0.11"), at)
	recs := reg.Snapshot()
	if len(recs) != 1 || !recs[0].FirstSeen.Equal(at) {
		t.Fatalf("records %+v, want one first seen at %v", recs, at)
	}
}
