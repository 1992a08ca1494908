package listen_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/miekg/dns"
)

// trickleEnv makes TestTrickleWakesOneThread the client (a process of its
// own) that asks the server at this address.
const trickleEnv = "LISTEN_TRICKLE_SERVER"

// trickleQueries is how many queries the client asks.
const trickleQueries = 200

// TestTrickleWakesOneThread: at a trickle (each query answered before the
// next comes, every P idle in between), a cache hit wakes only the thread
// that waits in the poller. The socket's reads and writes must not enter
// the scheduler's syscall hooks: entering one woke the runtime's monitor
// thread (sysmon), asleep while every P was idle, before every such
// query, and it then slept again (a nanosleep and a futex wait: two
// voluntary context switches a query on a thread of its own). Counted:
// the voluntary context switches of the server process's threads other
// than the busiest (the poller's), while a client process asks n queries
// one at a time.
func TestTrickleWakesOneThread(t *testing.T) {
	if addr := os.Getenv(trickleEnv); addr != "" {
		trickleClient(t, addr)
		return
	}
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc/self/task")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	addr, _, _ := start(t, listen.Options{})
	q := new(dns.Msg)
	q.SetQuestion("1.many.test.", dns.TypeA)
	if r := exchange(t, "udp", addr, q); len(r.Answer) != 1 {
		t.Fatalf("warm-up answer: %v", r)
	}

	const n = trickleQueries
	before := threadSwitches(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTrickleWakesOneThread$", "-test.count=1")
	cmd.Env = append(os.Environ(), trickleEnv+"="+addr, "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read through the poller until the client is done (a Wait now would
	// block a thread in wait4 the whole time).
	var answered int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "answered "); ok {
			answered, _ = strconv.Atoi(v)
		}
	}
	after := threadSwitches(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	if answered != n {
		t.Fatalf("client had %d of %d queries answered", answered, n)
	}

	var deltas []int
	for tid, c := range after {
		deltas = append(deltas, c-before[tid])
	}
	slices.Sort(deltas)
	slices.Reverse(deltas)
	others := 0
	for _, d := range deltas[1:] {
		others += d
	}
	t.Logf("%d queries; voluntary context switches by thread: %v", n, deltas)
	if deltas[0] < n/2 {
		t.Errorf("the busiest thread switched %d times for %d queries: not one waiting in the poller", deltas[0], n)
	}
	// One a query on another thread would be n; a few come from
	// starting the client.
	if others > n/4 {
		t.Errorf("threads other than the poller's switched %d times for %d queries (at most %d)", others, n, n/4)
	}
}

// trickleClient asks the server at addr n cache hits, one at a time, with
// a pause between (so that the server's Ps are idle when each comes), and
// prints how many were answered.
func trickleClient(t *testing.T, addr string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	answered := 0
	for i := range trickleQueries {
		if _, err := c.Write(packQuery(t, "1.many.test.", uint16(i))); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if m, err := c.Read(buf); err != nil {
			t.Fatalf("query %d: %v", i, err)
		} else if m < 12 || int(buf[0])<<8|int(buf[1]) != i {
			t.Fatalf("query %d: answer of %d octets with id %d", i, m, int(buf[0])<<8|int(buf[1]))
		}
		answered++
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("answered %d\n", answered)
}

// threadSwitches returns the voluntary context switches of each thread of
// this process.
func threadSwitches(t *testing.T) map[string]int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				out[filepath.Base(filepath.Dir(f))], _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	return out
}
