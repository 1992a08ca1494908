package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/miekg/dns"
)

// binary is the dnsguard built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dnsguard-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dnsguard")
	args := []string{"build", "-o", binary}
	// go test -race (or DNSGUARD_RACE_DAEMON=1): the guard processes are
	// race-checked too.
	if raceBuild || os.Getenv("DNSGUARD_RACE_DAEMON") == "1" {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building dnsguard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guardProc is a running dnsguard.
type guardProc struct {
	cmd     *exec.Cmd
	addr    string        // first listen address
	ready   string        // its --ready-file
	logFile string        // its stderr
	exited  chan struct{} // closed once the process is reaped
	err     error         // its exit error, set before exited closes
}

// startGuard runs dnsguard run with args and waits until it serves.
func startGuard(t *testing.T, args ...string) *guardProc {
	t.Helper()
	if !slices.Contains(args, "--state") { // each guard its own state file
		args = append(args, "--state", filepath.Join(t.TempDir(), "state.db"))
	}
	return runGuard(t, exec.Command(binary, append([]string{"run"}, args...)...))
}

// runIndex is where "run" stands in a dnsguard command line (possibly
// wrapped, as by ip netns exec), or -1.
func runIndex(args []string) int {
	run := slices.Index(args, "run")
	if run < 0 || !strings.HasSuffix(args[max(run-1, 0)], "dnsguard") {
		return -1
	}
	return run
}

// standInUpstreams turns DNSSEC validation off (validation is on by
// default) in a dnsguard run command line that does not say --dnssec
// itself: the tests' upstreams are stand-ins (recorders, upstreamtest
// handlers, unbound local-data, the lab) that cannot serve the root's
// signed DNSKEY chain, so every answer would be indeterminate (SERVFAIL
// EDE 5). The DNSSEC tests give --dnssec with their own trust anchors.
func standInUpstreams(args []string) []string {
	run := runIndex(args)
	if run < 0 {
		return args
	}
	for _, a := range args[run+1:] {
		if a == "--dnssec" || a == "-dnssec" || strings.HasPrefix(a, "--dnssec=") || strings.HasPrefix(a, "-dnssec=") {
			return args
		}
	}
	return slices.Insert(slices.Clone(args), run+1, "--dnssec=false")
}

// runGuard starts cmd (a dnsguard run, possibly wrapped, as by ip netns
// exec) with a --ready-file, keeps its log, waits for the ready file and
// kills the guard when the test ends.
func runGuard(t *testing.T, cmd *exec.Cmd) *guardProc {
	t.Helper()
	cmd.Args = standInUpstreams(cmd.Args)
	run := runIndex(cmd.Args)
	if run < 0 {
		t.Fatalf("not a dnsguard run command: %q", cmd.Args)
	}
	// Its stderr is a file, written by the guard itself (no copier in
	// between): every line it logged before writing the ready file is
	// in the file once the ready file is there.
	dir := t.TempDir()
	g := &guardProc{cmd: cmd, ready: filepath.Join(dir, "ready"), logFile: filepath.Join(dir, "stderr"), exited: make(chan struct{})}
	cmd.Args = slices.Insert(slices.Clone(cmd.Args), run+1, "--ready-file", g.ready)
	stderr, err := os.Create(g.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			g.cmd.Process.Kill()
			<-g.exited
		}
		// A race-built guard reports a data race on its stderr and goes
		// on; the test that ran it fails.
		if strings.Contains(g.log(), "WARNING: DATA RACE") {
			t.Errorf("data race in the guard:\n%s", g.log())
		} else if t.Failed() {
			t.Logf("guard log:\n%s", g.log())
		}
	})
	lines := waitReadyFile(t, g.ready, g.exited, g.log)
	g.addr = readyValue(lines, "listen")
	if g.addr == "" {
		t.Fatalf("ready file without a listen address: %q", lines)
	}
	return g
}

// waitReadyFile waits until a guard's --ready-file exists and returns its
// lines; it fails the test when the guard exits first (exited closes) or
// after 20 s, with the guard's log.
func waitReadyFile(t *testing.T, path string, exited <-chan struct{}, log func() string) []string {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for {
		// Written by rename: there whole or not at all.
		if b, err := os.ReadFile(path); err == nil {
			return strings.Split(strings.TrimSpace(string(b)), "\n")
		}
		select {
		case <-exited:
			t.Fatalf("dnsguard exited before serving:\n%s", log())
		case <-deadline:
			t.Fatalf("dnsguard did not start serving (no ready file):\n%s", log())
		case <-tick.C:
		}
	}
}

// readyValue is the value of the first of the ready file's lines with
// key ("listen", "api", "reloads").
func readyValue(lines []string, key string) string {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			return v
		}
	}
	return ""
}

// reloads reads the ready file's counts of SIGHUPs applied and refused.
func (g *guardProc) reloads(t *testing.T) (applied, refused int) {
	t.Helper()
	b, err := os.ReadFile(g.ready)
	if err != nil {
		t.Fatalf("ready file: %v\n%s", err, g.log())
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	applied, err1 := strconv.Atoi(readyValue(lines, "reloads"))
	refused, err2 := strconv.Atoi(readyValue(lines, "reload_failures"))
	if err1 != nil || err2 != nil {
		t.Fatalf("ready file: %q", lines)
	}
	return applied, refused
}

// reload sends SIGHUP and waits until the guard has dealt with it (the
// ready file counts it); it reports whether the new config was applied.
func (g *guardProc) reload(t *testing.T) bool {
	t.Helper()
	applied, refused := g.reloads(t)
	g.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		a, r := g.reloads(t)
		if a+r > applied+refused {
			return a > applied
		}
		select {
		case <-g.exited:
			t.Fatalf("dnsguard exited on SIGHUP:\n%s", g.log())
		case <-deadline:
			t.Fatalf("SIGHUP not dealt with within 20 s:\n%s", g.log())
		case <-tick.C:
		}
	}
}

// log is what the guard has logged so far.
func (g *guardProc) log() string {
	b, _ := os.ReadFile(g.logFile)
	return string(b)
}

// stop sends sig and returns the exit error.
func (g *guardProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	g.cmd.Process.Signal(sig)
	select {
	case <-g.exited:
		return g.err
	case <-time.After(15 * time.Second):
		t.Fatalf("dnsguard did not stop on %v", sig)
	}
	return nil
}

// anyPort is a listen address for a guard started with runGuard: the
// kernel picks the port and the guard's ready file names it (g.addr), so
// no port picked free beforehand can be taken by another process
// meanwhile. (freePort is for addresses a test must know before it
// starts something.)
const anyPort = "127.0.0.1:0"

func freePort(t *testing.T) string {
	t.Helper()
	u, l, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	l.Close()
	return u.LocalAddr().String()
}

func ask(t *testing.T, addr, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	r, _, err := (&dns.Client{Timeout: 4 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func edeOf(m *dns.Msg) *dns.EDNS0_EDE {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// recorder is a test-side Do53 upstream that records what arrives.
type recorder struct {
	addr string
	mu   sync.Mutex
	seen []arrival
	ttl  uint32
	srv  []*dns.Server
}

type arrival struct {
	id   uint16
	port int
	name string
	at   time.Time
}

func startRecorder(t *testing.T, ttl uint32) *recorder {
	t.Helper()
	r := &recorder{ttl: ttl, addr: freePort(t)}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		port := 0
		if ua, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			port = ua.Port
		} else if ta, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			port = ta.Port
		}
		r.mu.Lock()
		r.seen = append(r.seen, arrival{id: q.Id, port: port, name: q.Question[0].Name, at: time.Now()})
		ttl := r.ttl
		r.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		switch {
		case strings.HasPrefix(strings.ToLower(name), "slow"):
			time.Sleep(300 * time.Millisecond)
			fallthrough
		case q.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR(fmt.Sprintf("%s %d IN A 93.184.215.14", name, ttl))
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	for _, netw := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: r.addr, Net: netw, Handler: h}
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ListenAndServe()
		<-started
		r.srv = append(r.srv, s)
	}
	t.Cleanup(func() {
		for _, s := range r.srv {
			s.ShutdownContext(context.Background())
		}
	})
	return r
}

func (r *recorder) arrivals() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.seen...)
}

var _ = io.Discard
