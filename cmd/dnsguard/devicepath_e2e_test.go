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
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// TestDevicePathCPU measures (DNSGUARD_MEASURE=1) what the path devices
// use costs beside the path scripts/bench.sh measures. bench.sh's dnsperf
// asks from the router itself, which is no device: nothing is identified,
// graded or limited. Here the shipped build runs on the testbed's router
// with interception and the packet log on, and dnsperf asks cache hits
// from the LAN device (its own MAC, every query redirected by nftables
// and logged by nflog), then from the router's own address, and, as the
// peer, unbound on the same router from the same device, in turns, at
// saturation and at 2,000 q/s; the server's CPU time per answered query
// (utime+stime of its threads) is logged in one DEVICEPATH line per turn
// and as medians. The guard runs on the testbed's config, its per-device
// limit lifted, cpus at the default (GOMAXPROCS in the environment
// overrides it). It checks
// only that the queries were answered: the figures are the result.
// With DNSGUARD_MEASURE_PROFILE=DIR the build also gets -tags pprof and
// DIR/device.pprof is a CPU profile of the guard while the device asks.
func TestDevicePathCPU(t *testing.T) {
	measurement(t)
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
	// unbound on the same router, for the LAN, forwarding to the same
	// upstream: the device asks it on port 5355 (not redirected, not
	// logged; its answers leave through the same conntrack and veth).
	ubConf := filepath.Join(t.TempDir(), "unbound.conf")
	if err := os.WriteFile(ubConf, []byte(`server:
	interface: `+rtrLAN4+`@5355
	do-daemonize: no
	username: ""
	chroot: ""
	pidfile: ""
	use-syslog: no
	logfile: ""
	num-threads: 1
	do-ip6: no
	access-control: 10.10.10.0/24 allow
	num-queries-per-thread: 4096
forward-zone:
	name: "."
	forward-addr: 10.78.0.2
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ub := exec.Command("ip", "netns", "exec", tb.rtr, testenv.Require(t, "unbound")[0], "-d", "-c", ubConf)
	ubLog := new(strings.Builder)
	ub.Stdout, ub.Stderr = ubLog, ubLog
	if err := ub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ub.Process.Kill(); ub.Wait() })

	type who struct {
		name, ns, port string
		pid            int
	}
	device := who{"device", tb.dev, "53", pid}
	router := who{"router", tb.rtr, "53", pid}
	unbound := who{"device-unbound", tb.dev, "5355", ub.Process.Pid}
	// ask runs dnsperf for seconds at the server (qps 0: as fast as it
	// answers) and returns how many queries were answered.
	ask := func(w who, seconds, qps int) int {
		args := []string{"netns", "exec", w.ns, "dnsperf", "-s", rtrLAN4, "-p", w.port, "-d", names,
			"-l", strconv.Itoa(seconds), "-c", "4", "-q", "100", "-t", "2"}
		if qps > 0 {
			args = append(args, "-Q", strconv.Itoa(qps))
		}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf %s: %v\n%s", w.name, err, out)
		}
		m := regexp.MustCompile(`Queries completed:\s+(\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf %s: no count\n%s", w.name, out)
		}
		done, _ := strconv.Atoi(string(m[1]))
		if !strings.Contains(string(out), "NOERROR "+string(m[1])) {
			t.Fatalf("dnsperf %s: not every answer NOERROR\n%s", w.name, out)
		}
		return done
	}
	// Warm-up: the caches filled, the device learnt (unbound may take a
	// moment to start).
	ask(device, 1, 0)
	ask(router, 1, 0)
	for i := 0; ; i++ {
		if nsDig(tb.dev, "-p", "5355", "@"+rtrLAN4, "h1.example") == guardAnswer {
			break
		}
		if i == 50 {
			t.Fatalf("unbound does not answer:\n%s", ubLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ask(unbound, 1, 0)

	// At saturation, and at 2,000 q/s, where every query finds the
	// servers idle (what a home asks is far less).
	med := func(v []float64) float64 { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
	for _, qps := range []int{0, 2000} {
		rate := "saturation"
		if qps > 0 {
			rate = strconv.Itoa(qps) + "q/s"
		}
		per := map[string][]float64{}
		for turn := range 9 {
			w := []who{device, router, unbound}[turn%3]
			t0 := cpuTicks(t, w.pid)
			n := ask(w, 3, qps)
			us := float64(cpuTicks(t, w.pid)-t0) * 1e4 / float64(n) // a tick is 10 ms
			per[w.name] = append(per[w.name], us)
			t.Logf("DEVICEPATH rate=%s turn=%d %s queries=%d cpu_us_per_query=%.2f", rate, turn, w.name, n, us)
		}
		d, r, u := med(per["device"]), med(per["router"]), med(per["device-unbound"])
		t.Logf("DEVICEPATH rate=%s median cpu_us_per_query device=%.2f router=%.2f device-unbound=%.2f device/router=%.2f device/unbound=%.2f",
			rate, d, r, u, d/r, d/u)
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
		ask(device, 4, 0)
		if err := curl.Wait(); err != nil {
			t.Errorf("profile: %v", err)
		}
	}
	if v := tb.devices(t); len(v) == 0 {
		t.Error("the device was not recorded")
	} else {
		t.Logf("the device as the guard sees it: %+v", v[0])
	}
}
