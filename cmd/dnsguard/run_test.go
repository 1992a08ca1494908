package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestRunBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, conf, want string
	}{
		{"unknown option", "config cache\n\toption max_entries '10'\n\toption min_tll '5'\n", "bad.conf:3: unknown option \"min_tll\" in cache section"},
		{"bad value", "config dnsguard 'main'\n\tlist listen '127.0.0.1'\n", "listen \"127.0.0.1\": want IP:PORT"},
		{"syntax", "config cache\n\toption min_ttl '5\n", "bad.conf:2: unterminated ' quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.conf")
			os.WriteFile(p, []byte(tt.conf), 0o644)
			out, err := exec.Command(binary, "run", "--config", p).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) || strings.Contains(string(out), "panic") {
				t.Errorf("output %q, want it to name %q", out, tt.want)
			}
		})
	}
	out, err := exec.Command(binary, "run", "--config", filepath.Join(dir, "missing.conf")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such file") {
		t.Errorf("missing config: %v %s", err, out)
	}
	if out, err := exec.Command(binary, "run", "--check").CombinedOutput(); err != nil || !strings.Contains(string(out), "config ok") {
		t.Errorf("--check on the embedded default: %v %s", err, out)
	}
}

// TestRunTTLZeroAndOne: an upstream TTL of 0 or 1 does not turn device
// queries into upstream queries.
func TestRunTTLZeroAndOne(t *testing.T) {
	for _, ttl := range []uint32{0, 1} {
		t.Run(fmt.Sprintf("ttl%d", ttl), func(t *testing.T) {
			up := startRecorder(t, ttl)
			g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+up.addr)
			for i := 0; i < 20; i++ {
				r := ask(t, g.addr, "Zero.Example.", dns.TypeA, false)
				if len(r.Answer) != 1 || r.Answer[0].Header().Ttl == 0 || r.Answer[0].Header().Ttl > 30 {
					t.Fatalf("answer %v", r.Answer)
				}
				time.Sleep(50 * time.Millisecond) // > 1 s in all: a TTL of 1 would have expired
			}
			if n := len(up.arrivals()); n != 1 {
				t.Errorf("20 device queries over 1 s with upstream TTL %d: %d upstream queries, want 1", ttl, n)
			}
			t.Logf("upstream TTL %d: device queries 20, upstream queries %d", ttl, len(up.arrivals()))
		})
	}
}

// TestRunFreshIDsAndPorts: a device with a fixed port and a fixed ID gets
// every upstream query sent with a fresh random ID and port.
func TestRunFreshIDsAndPorts(t *testing.T) {
	up := startRecorder(t, 300)
	g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+up.addr)
	c, err := net.Dial("udp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 200
	for i := 0; i < n; i++ {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("n%d.example.", i), dns.TypeA)
		m.Id = 0x1234 // the device's constant ID
		b, _ := m.Pack()
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(4 * time.Second))
		buf := make([]byte, 1500)
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil || r.Id != 0x1234 || len(r.Answer) != 1 {
			t.Fatalf("answer %d: %v %v", i, r, err)
		}
	}
	ids, ports := map[uint16]bool{}, map[int]bool{}
	lo, hi := 65535, 0
	for _, a := range up.arrivals() {
		ids[a.id], ports[a.port] = true, true
		lo, hi = min(lo, a.port), max(hi, a.port)
	}
	// 200 draws from 65536 IDs: the chance of more than 5 collisions is negligible.
	if len(ids) < n-5 || ids[0x1234] && len(ids) < n {
		t.Errorf("%d distinct upstream IDs for %d queries", len(ids), n)
	}
	if len(ports) < n-10 {
		t.Errorf("%d distinct upstream source ports for %d queries", len(ports), n)
	}
	if hi-lo < 10000 {
		t.Errorf("upstream source ports span only %d..%d", lo, hi)
	}
	t.Logf("%d queries: %d distinct IDs, %d distinct ports in %d..%d", n, len(ids), len(ports), lo, hi)
}

func TestRunCoalescing(t *testing.T) {
	up := startRecorder(t, 300)
	g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+up.addr)
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := ask(t, g.addr, "slow.example.", dns.TypeA, false); len(r.Answer) != 1 {
				t.Errorf("answer %v", r)
			}
		}()
	}
	wg.Wait()
	if n := len(up.arrivals()); n != 1 {
		t.Errorf("30 concurrent identical questions: %d upstream queries, want 1", n)
	}
}

// TestRunNoUpstream: with nothing reachable the guard still starts,
// answers SERVFAIL with an Extended DNS Error within a device's timeout,
// and says why once, not per query.
func TestRunNoUpstream(t *testing.T) {
	dead := freePort(t) // nothing listens there
	g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+dead, "--upstream", "tls://192.0.2.1:853?sni=dns.example")
	// ask fails on no answer within its client timeout; how soon the
	// SERVFAIL comes is not asserted (shared, noisy machines).
	for i := 0; i < 10; i++ {
		r := ask(t, g.addr, fmt.Sprintf("q%d.example.", i), dns.TypeA, true)
		if r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		e := edeOf(r)
		if e == nil {
			t.Fatalf("SERVFAIL without an Extended DNS Error: %v", r)
		}
		if i == 0 {
			t.Logf("EDE %d %q", e.InfoCode, e.ExtraText)
		}
	}
	logs := g.log()
	lines := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			lines++
		}
	}
	if lines == 0 || lines > 4 {
		t.Errorf("%d warning/error lines for 10 failing queries (want the reason once per upstream, not per query):\n%s", lines, logs)
	}
}

// TestRunReloadAndStop: SIGHUP reloads the config without dropping the
// cache; SIGTERM stops with status 0.
func TestRunReloadAndStop(t *testing.T) {
	a, b := startRecorder(t, 300), startRecorder(t, 300)
	dir := t.TempDir()
	conf := filepath.Join(dir, "dnsguard.conf")
	listen := freePort(t)
	write := func(up string) {
		os.WriteFile(conf, []byte(fmt.Sprintf("config dnsguard 'main'\n\tlist listen '%s'\n\tlist upstream 'udp://%s'\n", listen, up)), 0o644)
	}
	write(a.addr)
	g := startGuard(t, "--config", conf)
	ask(t, g.addr, "kept.example.", dns.TypeA, false)
	write(b.addr)
	if !g.reload(t) {
		t.Fatal("SIGHUP: the new config was not applied")
	}
	ask(t, g.addr, "kept.example.", dns.TypeA, false)
	ask(t, g.addr, "new.example.", dns.TypeA, false)
	if na, nb := len(a.arrivals()), len(b.arrivals()); na != 1 || nb != 1 {
		t.Errorf("upstream queries: old %d (want 1), new %d (want 1: the cached name is not asked again)", na, nb)
	}
	// A broken config on reload is reported and the guard keeps serving.
	os.WriteFile(conf, []byte("config cache\n\toption nonsense '1'\n"), 0o644)
	if g.reload(t) {
		t.Fatal("a broken config was applied")
	}
	if !strings.Contains(g.log(), "reload failed") {
		t.Errorf("the broken config not reported:\n%s", g.log())
	}
	if r := ask(t, g.addr, "kept.example.", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("after a failed reload: %v", r)
	}
	if err := g.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v, want exit status 0", err)
	}
	if _, err := os.Stat(g.ready); !os.IsNotExist(err) {
		t.Errorf("ready file after a clean stop: %v", err)
	}
}

// TestRunReadyFile: --ready-file replaces a file left by an earlier guard,
// appears once the guard serves (its pid, listen addresses and reload
// counts), is rewritten after each SIGHUP and is gone after the stop; a
// ready file that cannot be written stops the guard with an error.
func TestRunReadyFile(t *testing.T) {
	up := startRecorder(t, 300)
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	if err := os.WriteFile(ready, []byte("pid 1\nlisten 192.0.2.1:53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	cmd := exec.Command(binary, "run", "--dnssec=false", "--listen", listen, "--upstream", "udp://"+up.addr,
		"--state", filepath.Join(dir, "state.db"), "--ready-file", ready)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	want := fmt.Sprintf("pid %d\nlisten %s\nreloads 0\nreload_failures 0\n", cmd.Process.Pid, listen)
	read := func() string { b, _ := os.ReadFile(ready); return string(b) }
	for deadline := time.Now().Add(20 * time.Second); read() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ready file %q, want %q", read(), want)
		}
	}
	// Ready means served.
	if r := ask(t, listen, "ready.example.", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("query once ready: %v", r)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	want = strings.Replace(want, "reloads 0", "reloads 1", 1)
	for deadline := time.Now().Add(20 * time.Second); read() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ready file after SIGHUP %q, want %q", read(), want)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	if exitErr != nil {
		t.Errorf("SIGTERM: %v\n%s", exitErr, stderr.String())
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Errorf("ready file after the stop: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".ready") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}

	// Nowhere to write it: the guard does not serve on as if nobody waited.
	out, err := exec.Command(binary, "run", "--dnssec=false", "--listen", anyPort, "--upstream", "udp://"+up.addr,
		"--ready-file", filepath.Join(dir, "missing", "ready")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ready file") {
		t.Errorf("unwritable ready file: %v\n%s", err, out)
	}
}

// TestRunCheck: --check refuses what the daemon would refuse (the issue's
// list: an ftp:// upstream, a bad pin, a missing CA file, a bad MAC in a
// class) and a file without its main section (empty, comment-only), and
// builds the upstreams without sending them anything.
func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted sync.WaitGroup
	conns := make(chan struct{}, 16)
	accepted.Add(1)
	go func() {
		defer accepted.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			c.Close()
		}
	}()
	main := "config dnsguard 'main'\n\tlist listen '127.0.0.1:5353'\n\tlist upstream 'tcp://" + ln.Addr().String() + "'\n"
	tests := []struct {
		name, conf string
		args       []string
		want       string // "" : config ok
	}{
		{"valid", main, nil, ""},
		{"valid with a class", main + "config class 'cams'\n\tlist mac '00:11:22:33:44:55'\n\tlist mac_prefix '9c:8e:cd'\n\tlist name 'cam-*'\n", nil, ""},
		{"empty file", "", nil, `no "config dnsguard" section`},
		{"comment-only file", "# dnsguard\n\n   # nothing else\n", nil, `no "config dnsguard" section`},
		{"only other sections", "config cache\n\toption max_entries '100'\n", nil, `no "config dnsguard" section`},
		{"ftp upstream", "config dnsguard 'main'\n\tlist upstream 'ftp://192.0.2.1:21'\n", nil, `unknown scheme "ftp"`},
		{"ftp upstream by flag", main, []string{"--upstream", "ftp://192.0.2.1:21"}, `unknown scheme "ftp"`},
		{"bad pin", "config dnsguard 'main'\n\tlist upstream 'tls://192.0.2.1:853?sni=dns.example&pin=sha256/AAAA'\n", nil, `pin "sha256/AAAA"`},
		{"pin on cleartext", "config dnsguard 'main'\n\tlist upstream 'udp://192.0.2.1:53?pin=sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='\n", nil, `unknown parameter "pin"`},
		{"missing CA file", main + "\toption upstream_ca '" + filepath.Join(dir, "no-such-ca.pem") + "'\n", nil, "no-such-ca.pem"},
		{"CA file that is not PEM", main + "\toption upstream_ca '" + filepath.Join(dir, "not-a-ca.pem") + "'\n", nil, "no PEM certificates"},
		{"bad MAC in a class", main + "config class 'cams'\n\tlist mac 'zz:11:22:33:44:55'\n", nil, `"zz:11:22:33:44:55" is not a MAC address`},
		{"bad MAC prefix in a class", main + "config class 'cams'\n\tlist mac_prefix '9c:8e:c'\n", nil, "is not a MAC prefix"},
	}
	os.WriteFile(filepath.Join(dir, "not-a-ca.pem"), []byte("hello\n"), 0o644)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "check.conf")
			os.WriteFile(p, []byte(tt.conf), 0o644)
			out, err := exec.Command(binary, append([]string{"run", "--check", "--config", p}, tt.args...)...).CombinedOutput()
			if tt.want == "" {
				if err != nil || !strings.Contains(string(out), "config ok") {
					t.Fatalf("valid config refused: %v\n%s", err, out)
				}
				return
			}
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 || strings.Contains(string(out), "config ok") {
				t.Fatalf("exit %v, want status 1; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("output %q, want it to name %q", out, tt.want)
			}
		})
	}
	ln.Close()
	accepted.Wait()
	if n := len(conns); n != 0 {
		t.Errorf("--check connected to the upstream %d times", n)
	}
}
