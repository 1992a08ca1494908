package pkgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestResidentMemory runs the packaged amd64 guard on the router's default
// configuration (less interception, which needs a router, and with a local
// upstream), sends it 100,000 queries for 10,000 names from 50 source
// addresses, and holds its peak resident memory to what a 128 MiB router
// can give it.
//
// The sources are loopback addresses, which the guard counts as the router
// itself (one device), so the per-device rate limit is lifted here: with it,
// all but the first few thousand queries would be refused before reaching
// the cache, and the cache is what grows.
func TestResidentMemory(t *testing.T) {
	built(t)
	const (
		devices = 50
		names   = 10000
		queries = 100000
		budget  = 64 * mib // the packaged memory_limit is 24M; code pages come on top
	)
	bin := binPath(hostArch(t))

	// An upstream answering every name with a public address of its own.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var upstreamQueries atomic.Int64
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		upstreamQueries.Add(1)
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
			var n int
			fmt.Sscanf(q.Question[0].Name, "n%d.", &n)
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   net.IPv4(45, 1, byte(n>>8), byte(n)),
			})
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })

	dir := t.TempDir()
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	conf := routerConfig(t)
	for key, line := range map[string]string{
		"upstream":      fmt.Sprintf("\tlist upstream 'udp://%s'", pc.LocalAddr()),
		"lan":           "",
		"state_file":    fmt.Sprintf("\toption state_file '%s'", filepath.Join(dir, "state.db")),
		"state_persist": "\toption state_persist ''",
		"server":        "\toption server ''",
		"device_rate":   "\toption device_rate '1000000'",
		"device_burst":  "\toption device_burst '1000000'",
		// The stand-in upstream cannot serve the root's signed DNSKEY
		// chain: with validation on every answer would be SERVFAIL.
		"dnssec": "\toption dnssec '0'",
	} {
		conf = withOption(t, conf, key, line)
	}
	conf = withListen(t, conf, fmt.Sprintf("\tlist listen '%s'", listen))
	confPath := filepath.Join(dir, "dnsguard")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	// Started as the init script starts it: GOMEMLIMIT from memory_limit.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run", "--config", confPath)
	cmd.Env = append(os.Environ(), "GOMEMLIMIT=24MiB")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cancel(); <-exited })

	waitAnswering(t, listen, exited, &out)

	var (
		wg                        sync.WaitGroup
		noerror, refused, unanswr atomic.Int64
	)
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, Dialer: &net.Dialer{
				LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(d+1))},
				Timeout:   2 * time.Second,
			}}
			rng := rand.New(rand.NewPCG(uint64(d), 53))
			for range queries / devices {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("n%d.rss.example.", rng.IntN(names)), dns.TypeA)
				r, _, err := c.Exchange(q, listen)
				switch {
				case err != nil:
					unanswr.Add(1)
				case r.Rcode == dns.RcodeSuccess:
					noerror.Add(1)
				default:
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()

	rss, hwm := procMemory(t, cmd.Process.Pid)
	t.Logf("%d queries, %d names, %d sources: %d NOERROR, %d other rcodes, %d unanswered; upstream asked %d times",
		queries, names, devices, noerror.Load(), refused.Load(), unanswr.Load(), upstreamQueries.Load())
	t.Logf("resident memory: VmRSS %.1f MiB, peak VmHWM %.1f MiB", float64(rss)/mib, float64(hwm)/mib)
	if noerror.Load() == 0 {
		t.Fatalf("no query answered NOERROR; guard output:\n%s", out.String())
	}
	if hwm > budget {
		t.Errorf("peak resident memory %.1f MiB, over %d MiB", float64(hwm)/mib, budget/mib)
	}
}

// waitAnswering asks the guard until it answers, it exits, or a generous
// bound passes.
func waitAnswering(t *testing.T, addr string, exited chan error, out *lockedBuffer) {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion("ready.rss.example.", dns.TypeA)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, _, err := c.Exchange(q, addr); err == nil {
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("guard exited (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("guard never answered on %s:\n%s", addr, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procMemory reads VmRSS and VmHWM (bytes) of a process.
func procMemory(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n << 10
		case "VmHWM:":
			hwm = n << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm
}
