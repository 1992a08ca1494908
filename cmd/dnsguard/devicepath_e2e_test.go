package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDevicePathCPU measures (DNSGUARD_MEASURE=1) what the path devices
// use costs beside the path scripts/bench.sh measures. bench.sh's dnsperf
// asks from the router itself, which is no device: nothing is identified,
// graded or limited. Here the shipped build runs on the testbed's router
// with interception and the packet log on, and dnsperf asks cache hits
// from the LAN device (its own MAC, every query redirected by nftables
// and logged by nflog), then from the router's own address, in turns;
// the guard's CPU time per answered query (utime+stime of its threads)
// is logged in one DEVICEPATH line per turn and as medians. It checks
// only that the queries were answered: the figures are the result.
// With DNSGUARD_MEASURE_PROFILE=DIR the build also gets -tags pprof and
// DIR/device.pprof is a CPU profile of the guard while the device asks.
func TestDevicePathCPU(t *testing.T) {
	if os.Getenv("DNSGUARD_MEASURE") != "1" {
		t.Skip("set DNSGUARD_MEASURE=1 to measure")
	}
	if raceBuild {
		t.Skip("a measurement: run without -race")
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		t.Skip("no dnsperf (apt-get install dnsperf)")
	}
	tb := newTestbed(t)
	conf, err := os.ReadFile(tb.config)
	if err != nil {
		t.Fatal(err)
	}
	// dnsperf is one device asking tens of thousands of queries a second:
	// the per-device limit is lifted, as bench.sh does.
	limits := regexp.MustCompile(`option device_(rate|burst) '\d+'`)
	conf = limits.ReplaceAll(conf, []byte("option device_$1 '10000000'"))
	if err := os.WriteFile(tb.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	profile := os.Getenv("DNSGUARD_MEASURE_PROFILE")
	const pprofAddr = "127.0.0.1:16061"
	var extra []string
	if profile != "" {
		extra = append(extra, "--pprof", pprofAddr)
	}
	g := runGuard(t, tb.guardCmd(shippedBinary(t, profile != ""), extra...))
	pid := g.cmd.Process.Pid

	names := filepath.Join(t.TempDir(), "hits.txt")
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "h%d.example A\n", i)
	}
	if err := os.WriteFile(names, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	from := map[string]string{"device": tb.dev, "router": tb.rtr}
	ask := func(who string, seconds int) int {
		out, err := exec.Command("ip", "netns", "exec", from[who], "dnsperf", "-s", rtrLAN4, "-d", names,
			"-l", strconv.Itoa(seconds), "-c", "4", "-q", "100", "-t", "2").CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf from the %s: %v\n%s", who, err, out)
		}
		m := regexp.MustCompile(`Queries completed:\s+(\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf from the %s: no count\n%s", who, out)
		}
		done, _ := strconv.Atoi(string(m[1]))
		if !strings.Contains(string(out), "NOERROR "+string(m[1])) {
			t.Fatalf("dnsperf from the %s: not every answer NOERROR\n%s", who, out)
		}
		return done
	}
	ask("device", 1) // the cache filled, the device learnt
	ask("router", 1)

	per := map[string][]float64{}
	for turn := range 6 {
		who := []string{"device", "router"}[turn%2]
		t0 := cpuTicks(t, pid)
		n := ask(who, 3)
		us := float64(cpuTicks(t, pid)-t0) * 1e4 / float64(n) // a tick is 10 ms
		per[who] = append(per[who], us)
		t.Logf("DEVICEPATH turn=%d from=%s queries=%d cpu_us_per_query=%.2f", turn, who, n, us)
	}
	if profile != "" {
		// A CPU profile of the guard while the device asks (the build has
		// -tags pprof: its figures above include the profile server).
		if err := os.MkdirAll(profile, 0o755); err != nil {
			t.Fatal(err)
		}
		curl := exec.Command("ip", "netns", "exec", tb.rtr, "curl", "-sSf", "-o", filepath.Join(profile, "device.pprof"),
			"http://"+pprofAddr+"/debug/pprof/profile?seconds=3")
		if err := curl.Start(); err != nil {
			t.Fatal(err)
		}
		ask("device", 4)
		if err := curl.Wait(); err != nil {
			t.Errorf("profile: %v", err)
		}
	}
	med := func(v []float64) float64 { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
	d, r := med(per["device"]), med(per["router"])
	t.Logf("DEVICEPATH median cpu_us_per_query device=%.2f router=%.2f device/router=%.2f", d, r, d/r)
	if v := tb.devices(t); len(v) == 0 {
		t.Error("the device was not recorded")
	} else {
		t.Logf("the device as the guard sees it: %+v", v[0])
	}
}
