package device

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/policy"
)

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
