package intercept

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/testenv"
)

// TestObserverSeesOriginalPackets installs the table in a router namespace
// and checks that a device's query to a hard-coded resolver and its DoT
// attempt reach the observer with the address the device meant to reach.
func TestObserverSeesOriginalPackets(t *testing.T) {
	rtr, fd := netns(t)
	testenv.Require(t, "dig")
	b := make([]byte, 4)
	rand.Read(b)
	dev := "dgdev-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", dev)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", dev).Run() })
	run(t, "ip", "-n", rtr, "link", "set", "lan0p", "netns", dev)
	run(t, "ip", "-n", dev, "link", "set", "lan0p", "address", "02:aa:00:00:00:02", "up")
	run(t, "ip", "-n", dev, "addr", "add", "10.9.0.2/24", "dev", "lan0p")
	run(t, "ip", "-n", dev, "route", "add", "default", "via", "10.9.0.1")
	run(t, "ip", "-n", rtr, "addr", "add", "10.9.0.1/24", "dev", "lan0")
	run(t, "ip", "-n", rtr, "route", "add", "default", "via", "10.9.0.3")
	run(t, "ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	tab, err := NewTable(Config{LAN: []string{"lan0"}, RedirectDNS: true, BlockDoT: true, BlockDoH: true, NFLogGroup: 77, NetNSFd: fd}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Packet, 64)
	obs, err := Observe(ctx, 77, fd, func(p Packet) {
		select {
		case got <- p:
		default:
		}
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()

	exec.Command("ip", "netns", "exec", dev, "dig", "-b", "10.9.0.2#4096", "@8.8.8.8", "canary.example", "+tries=1", "+timeout=1").Run()
	exec.Command("ip", "netns", "exec", dev, "dig", "-p", "853", "+tcp", "@1.1.1.1", "dot.example", "+tries=1", "+timeout=1").Run()

	var sawDNS, sawDoT bool
	deadline := time.After(5 * time.Second)
	for !sawDNS || !sawDoT {
		select {
		case p := <-got:
			if p.MAC.String() != "02:aa:00:00:00:02" {
				t.Errorf("packet %+v: MAC %v", p, p.MAC)
			}
			switch p.Kind {
			case KindDNS:
				if p.Dst != netip.MustParseAddrPort("8.8.8.8:53") || p.Src.Port() != 4096 || p.DNS == nil || dnswire.NameString(p.DNS.Name) != "canary.example." {
					t.Errorf("DNS packet %+v (query %+v)", p, p.DNS)
				}
				sawDNS = true
			case KindDoT:
				if p.Dst != netip.MustParseAddrPort("1.1.1.1:853") || !p.TCP {
					t.Errorf("DoT packet %+v", p)
				}
				sawDoT = true
			}
		case <-deadline:
			t.Fatalf("observer saw dns=%v dot=%v within 5 s", sawDNS, sawDoT)
		}
	}
}
