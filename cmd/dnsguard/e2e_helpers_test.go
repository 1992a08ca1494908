package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	cmd  *exec.Cmd
	addr string // first listen address
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

var listenRE = regexp.MustCompile(`msg="dnsguard serving".*listen="?\[([^\] ]+)`)

// startGuard runs dnsguard run with args and waits until it serves.
func startGuard(t *testing.T, args ...string) *guardProc {
	t.Helper()
	if !slices.Contains(args, "--state") { // each guard its own state file
		args = append(args, "--state", filepath.Join(t.TempDir(), "state.db"))
	}
	return runGuard(t, exec.Command(binary, append([]string{"run"}, args...)...))
}

// standInUpstreams turns DNSSEC validation off (validation is on by
// default) in a dnsguard run command line that does not say --dnssec
// itself: the tests' upstreams are stand-ins (recorders, upstreamtest
// handlers, unbound local-data, the lab) that cannot serve the root's
// signed DNSKEY chain, so every answer would be indeterminate (SERVFAIL
// EDE 5). The DNSSEC tests give --dnssec with their own trust anchors.
func standInUpstreams(args []string) []string {
	run := slices.Index(args, "run")
	if run < 0 || !strings.HasSuffix(args[max(run-1, 0)], "dnsguard") {
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
// exec), keeps its log, waits until it serves and kills it when the test
// ends.
func runGuard(t *testing.T, cmd *exec.Cmd) *guardProc {
	t.Helper()
	cmd.Args = standInUpstreams(cmd.Args)
	g := &guardProc{cmd: cmd, done: make(chan error, 1)}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.logs.WriteString(line + "\n")
			g.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		g.done <- g.cmd.Wait()
		close(ready)
	}()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
			<-g.done
		}
		// A race-built guard reports a data race on its stderr and goes
		// on; the test that ran it fails.
		if strings.Contains(g.log(), "WARNING: DATA RACE") {
			t.Errorf("data race in the guard:\n%s", g.log())
		} else if t.Failed() {
			t.Logf("guard log:\n%s", g.log())
		}
	})
	select {
	case a, ok := <-ready:
		if !ok {
			t.Fatalf("dnsguard exited before serving:\n%s", g.log())
		}
		g.addr = a
	case <-time.After(20 * time.Second):
		t.Fatalf("dnsguard did not start serving:\n%s", g.log())
	}
	return g
}

func (g *guardProc) log() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logs.String()
}

// stop sends sig and returns the exit error.
func (g *guardProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	g.cmd.Process.Signal(sig)
	select {
	case err := <-g.done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("dnsguard did not stop on %v", sig)
	}
	return nil
}

func freePort(t *testing.T) string {
	t.Helper()
	for i := 0; i < 50; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
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
