package pkgtest

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/dnsguard/dnsguard/guard/testenv"
)

const (
	testName = "pkgtest.dnsguard.example."
	testAddr = "45.45.45.45" // recognisable; an answer only, never contacted
)

// upstream is a small DNS server on loopback that answers testName with
// testAddr and counts what it was asked.
type upstream struct {
	addr    string
	queries atomic.Int64
	srv     *dns.Server
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	u.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, testName) && q.Question[0].Qtype == dns.TypeA {
			u.queries.Add(1)
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   net.ParseIP(testAddr),
			})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	u.srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = u.srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = u.srv.Shutdown() })
	return u
}

// freePort returns a loopback port free for both UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	u, l, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	l.Close()
	return u.LocalAddr().(*net.UDPAddr).Port
}

// lockedBuffer collects a process's output safely while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestQemuAnswers runs each router binary under qemu-user as the guard in
// front of a local upstream and resolves a name through it.
//
// Architectures of one Go build variant ship the same binary (checked
// byte for byte); each variant runs once, under the qemu of its first
// architecture (x86_64 runs natively, so amd64 is asked directly).
func TestQemuAnswers(t *testing.T) {
	built(t)
	seen := map[string]string{}
	for _, a := range arches {
		if first, ok := seen[a.variant]; ok {
			b1, err1 := os.ReadFile(binPath(first))
			b2, err2 := os.ReadFile(binPath(a.name))
			if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
				t.Errorf("%s and %s (both %s) ship different binaries", first, a.name, a.variant)
			}
			continue
		}
		seen[a.variant] = a.name
		t.Run(a.variant+"/"+a.name, func(t *testing.T) {
			var run []string
			if a.qemu != "" {
				run = []string{testenv.Require(t, a.qemu)[0]}
			} else if a.name != hostArch(t) && !(a.variant == "386" && runtime.GOARCH == "amd64") {
				t.Skipf("%s does not run here", a.name)
			}
			qemu := ""
			if len(run) > 0 {
				qemu = run[0]
			}
			up := startUpstream(t)
			listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))

			ctx, cancel := context.WithCancel(context.Background())
			cmd := exec.CommandContext(ctx, binPath(a.name), "run",
				"--listen", listen,
				"--upstream", "udp://"+up.addr,
				// A stand-in upstream: no signed root chain to validate with.
				"--dnssec=false",
				"--state", filepath.Join(t.TempDir(), "state.db"))
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if qemu != "" {
				cmd.Path = qemu
				cmd.Args = append([]string{qemu}, cmd.Args...)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				cancel()
				<-exited
			})

			// Ask until the guard answers (qemu takes a moment to start it),
			// or it exits, or a generous bound passes.
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			q := new(dns.Msg)
			q.SetQuestion(testName, dns.TypeA)
			deadline := time.Now().Add(60 * time.Second)
			var (
				resp    *dns.Msg
				lastErr error
			)
			for resp == nil {
				select {
				case err := <-exited:
					exited <- err
					t.Fatalf("guard exited (%v) before answering:\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no answer from the guard on %s: %v\n%s", listen, lastErr, out.String())
				}
				r, _, err := c.Exchange(q, listen)
				if err != nil {
					lastErr = err
					time.Sleep(200 * time.Millisecond)
					continue
				}
				resp = r
			}

			if resp.Rcode != dns.RcodeSuccess {
				t.Fatalf("rcode %s, want NOERROR:\n%s\nguard output:\n%s", dns.RcodeToString[resp.Rcode], resp, out.String())
			}
			var got []netip.Addr
			for _, rr := range resp.Answer {
				if ar, ok := rr.(*dns.A); ok && strings.EqualFold(ar.Hdr.Name, testName) {
					addr, _ := netip.AddrFromSlice(ar.A.To4())
					got = append(got, addr)
				}
			}
			if len(got) != 1 || got[0] != netip.MustParseAddr(testAddr) {
				t.Fatalf("answer %v, want one A %s:\n%s", got, testAddr, resp)
			}
			if up.queries.Load() == 0 {
				t.Fatal("the upstream was never asked: the answer did not come through it")
			}
			if resp.Id != q.Id {
				t.Errorf("answer ID %d, query ID %d", resp.Id, q.Id)
			}

			// The version the build stamped in is the package's.
			vcmd := exec.Command(binPath(a.name), "version")
			if qemu != "" {
				vcmd = exec.Command(qemu, binPath(a.name), "version")
			}
			v, err := vcmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(v), testVersion) {
				t.Errorf("version %q, want %s", v, testVersion)
			}
		})
	}
}
