package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
// line per build: resident memory (and its anonymous part) after the
// guard started, after each device asked once (the device records, so
// anon/device is the memory of one record with its share of the
// registry), and after the names.
//
// Two builds are measured, each with the memory_limit the OpenWrt
// package's config sets (openwrt/files/dnsguard.config, as the init
// script passes it on): "shipped", the router's binary as
// scripts/build-packages.sh builds it (go-build-flags.sh: -tags router,
// stripped, inlining only on the query path), which is what the target
// is about; and "e2e", the plain `go build` the other end-to-end tests
// run, whose larger text makes more of its resident memory file-backed.
//
// DNSGUARD_MEASURE_ENV (e.g. "GOGC=50 GOMEMLIMIT=24MiB") is added to the
// guard's environment, to compare runtime settings. With
// DNSGUARD_MEASURE_PROFILE=DIR the shipped build also gets -tags pprof
// and its heap profile (heap.pb.gz, and heap.txt with the runtime's
// MemStats) and goroutines are saved in DIR after the names (its
// figures then include the profile server's code).
func TestRouterMemory50Devices(t *testing.T) {
	measurement(t)
	limit := packagedMemoryLimit(t)
	t.Run("shipped", func(t *testing.T) {
		profile := os.Getenv("DNSGUARD_MEASURE_PROFILE")
		measureMemory50(t, shippedBinary(t, profile != ""), limit, profile)
	})
	t.Run("e2e", func(t *testing.T) { measureMemory50(t, binary, limit, "") })
}

// packagedMemoryLimit is the memory_limit the OpenWrt package's config
// sets.
func packagedMemoryLimit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "openwrt", "files", "dnsguard.config"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*option memory_limit '([^']*)'`).FindSubmatch(b)
	if m == nil {
		t.Fatal("openwrt/files/dnsguard.config sets no memory_limit")
	}
	return string(m[1])
}

// shippedBinary builds dnsguard as scripts/build-packages.sh does for
// the router (for this machine's architecture), with -tags pprof too
// when profiled.
func shippedBinary(t *testing.T, profiled bool) string {
	t.Helper()
	root := filepath.Join("..", "..")
	tags := "router"
	if profiled {
		tags = "router,pprof"
	}
	flagsCmd := exec.Command("bash", filepath.Join(root, "scripts", "go-build-flags.sh"))
	flagsCmd.Env = append(os.Environ(), "GO_TAGS="+tags)
	out, err := flagsCmd.Output()
	if err != nil {
		t.Fatalf("go-build-flags.sh: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dnsguard")
	args := append(append([]string{"build"}, strings.Split(strings.TrimSpace(string(out)), "\n")...), "-o", bin, ".")
	build := exec.Command("go", args...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

func measureMemory50(t *testing.T, bin, memoryLimit, profileDir string) {
	tb := newTestbed(t)
	conf, err := os.ReadFile(tb.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), "config dnsguard 'main'\n", "config dnsguard 'main'\n\toption memory_limit '"+memoryLimit+"'\n", 1))
	if err := os.WriteFile(tb.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	const devices, names = 50, 2000
	nss := make([]string, devices)
	addrs := make([]string, devices)
	for i := range devices {
		addrs[i] = fmt.Sprintf("10.10.10.%d", 100+i)
		nss[i] = tb.macvlanDevice(t, fmt.Sprintf("m%d", i), fmt.Sprintf("02:d9:00:00:01:%02x", i), addrs[i])
	}
	const pprofAddr = "127.0.0.1:16060"
	var extra []string
	if profileDir != "" {
		extra = append(extra, "--pprof", pprofAddr)
	}
	cmd := tb.guardCmd(bin, extra...)
	env := strings.Fields(os.Getenv("DNSGUARD_MEASURE_ENV"))
	cmd.Env = append(os.Environ(), env...)
	g := runGuard(t, cmd)
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
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	build := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
	if profileDir != "" {
		build += "+pprof"
	}
	t.Logf("MEM50 build=%s binary_bytes=%d memory_limit=%s env=%q devices=%d names=%d answered=%d rss_start_kib=%d anon_start_kib=%d rss_devices_kib=%d anon_devices_kib=%d anon_per_device_kib=%.1f rss_names_kib=%d anon_names_kib=%d file_names_kib=%d hwm_kib=%d",
		build, fi.Size(), memoryLimit, strings.Join(env, " "), devices, devices*names, total, rss0, anon0, rss1, anon1, float64(anon1-anon0)/devices, rss2, anon2, rss2-anon2, hwm)
	if total < devices*names*9/10 {
		t.Errorf("%d of %d names answered", total, devices*names)
	}
	if profileDir != "" {
		saveProfiles(t, tb.rtr, "http://"+pprofAddr, profileDir)
	}
}

// saveProfiles fetches the guard's heap profile (binary and text, the
// latter with MemStats) and its goroutines into dir.
func saveProfiles(t *testing.T, ns, base, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, path := range map[string]string{
		"heap.pb.gz":    "/debug/pprof/heap?gc=1",
		"heap.txt":      "/debug/pprof/heap?gc=1&debug=1",
		"goroutine.txt": "/debug/pprof/goroutine?debug=1",
	} {
		out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sSf", "-o", filepath.Join(dir, file), base+path).CombinedOutput()
		if err != nil {
			t.Errorf("profile %s: %v\n%s", path, err, out)
		}
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

// measurement skips a test that measures (CPU, memory) unless
// DNSGUARD_MEASURE=1 asks for it, and under the race detector, whose
// figures would mean nothing.
func measurement(t *testing.T) {
	t.Helper()
	if os.Getenv("DNSGUARD_MEASURE") != "1" {
		t.Skip("set DNSGUARD_MEASURE=1 to measure")
	}
	if raceBuild {
		t.Skip("a measurement: run without -race")
	}
}
