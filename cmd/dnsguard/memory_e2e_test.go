package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// TestRouterMemory50Devices measures (DNSGUARD_MEASURE=1) the guard's
// memory with 50 devices on the LAN (macvlan namespaces, each its own
// MAC and address), each asking 2,000 names never asked before (100,000
// in all, the cache's entry limit well exceeded), as issue 14 asks. It
// checks the devices were answered; the figures are logged in one MEM50
// line: resident memory (and its anonymous part) after the guard
// started, after each device asked once (the device records, so
// anon/device is the memory of one record with its share of the
// registry), and after the names.
func TestRouterMemory50Devices(t *testing.T) {
	if os.Getenv("DNSGUARD_MEASURE") != "1" {
		t.Skip("set DNSGUARD_MEASURE=1 to measure")
	}
	if raceBuild {
		t.Skip("a measurement: run without -race")
	}
	tb := newTestbed(t)
	const devices, names = 50, 2000
	nss := make([]string, devices)
	addrs := make([]string, devices)
	for i := range devices {
		addrs[i] = fmt.Sprintf("10.10.10.%d", 100+i)
		nss[i] = tb.macvlanDevice(t, fmt.Sprintf("m%d", i), fmt.Sprintf("02:d9:00:00:01:%02x", i), addrs[i])
	}
	g := tb.startGuard(t)
	pid := g.cmd.Process.Pid
	if got := tb.devDig(t, "@"+rtrLAN4, "first.example"); got != guardAnswer {
		t.Fatalf("first lookup got %q", got)
	}
	time.Sleep(2 * time.Second)
	rss0, anon0 := rssKB(t, pid), procStatusKB(pid, "RssAnon:")

	for i, ns := range nss {
		if got := nsDig(ns, "@"+rtrLAN4, fmt.Sprintf("hello%d.example", i)); got != guardAnswer {
			t.Fatalf("device %d got %q", i, got)
		}
	}
	time.Sleep(2 * time.Second)
	rss1, anon1 := rssKB(t, pid), procStatusKB(pid, "RssAnon:")

	answered := make([]int, devices)
	var wg sync.WaitGroup
	for i, ns := range nss {
		wg.Go(func() {
			n, err := askMany(ns, fmt.Sprintf("d%d.mem.example.", i), names)
			if err != nil {
				t.Error(err)
			}
			answered[i] = n
		})
	}
	wg.Wait()
	total := 0
	for _, n := range answered {
		total += n
	}
	time.Sleep(2 * time.Second)
	rss2, anon2, hwm := rssKB(t, pid), procStatusKB(pid, "RssAnon:"), procStatusKB(pid, "VmHWM:")
	t.Logf("MEM50 devices=%d names=%d answered=%d rss_start_kib=%d anon_start_kib=%d rss_devices_kib=%d anon_devices_kib=%d anon_per_device_kib=%.1f rss_names_kib=%d anon_names_kib=%d hwm_kib=%d",
		devices, devices*names, total, rss0, anon0, rss1, anon1, float64(anon1-anon0)/devices, rss2, anon2, hwm)
	if total < devices*names*9/10 {
		t.Errorf("%d of %d names answered", total, devices*names)
	}
}

// askMany asks n names under suffix from namespace ns, 8 at a time, each
// from a socket of its own with a random ID (as a resolver library does,
// so the device is not graded weak), and returns how many were answered.
func askMany(ns, suffix string, n int) (int, error) {
	got := 0
	err := testenv.InNetns(ns, func() error {
		to := netip.MustParseAddrPort(rtrLAN4 + ":53")
		const window = 8
		type pending struct {
			c  *net.UDPConn
			id uint16
		}
		var inFlight []pending
		send := func(i int) error {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("n%d.%s", i, suffix), dns.TypeA)
			b, _ := m.Pack()
			c.WriteToUDPAddrPort(b, to)
			inFlight = append(inFlight, pending{c, m.Id})
			return nil
		}
		buf := make([]byte, 1500)
		next := 0
		for next < n || len(inFlight) > 0 {
			for next < n && len(inFlight) < window {
				if err := send(next); err != nil {
					return err
				}
				next++
			}
			p := inFlight[0]
			inFlight = inFlight[1:]
			p.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if k, err := p.c.Read(buf); err == nil {
				var r dns.Msg
				if r.Unpack(buf[:k]) == nil && r.Id == p.id && len(r.Answer) > 0 {
					got++
				}
			}
			p.c.Close()
		}
		return nil
	})
	return got, err
}
