package listen

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// TestSpillBoundAndJoin: with every reader but one waiting on a slow
// upstream, the queries the last reader takes are spilled onto at most
// MaxSpill workers and dropped (counted) beyond; once the upstream
// answers, the spilled ones are answered and their workers wait for more;
// Serve returns only after every spill worker has exited.
func TestSpillBoundAndJoin(t *testing.T) {
	gate := make(chan struct{})
	h := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		stage.Waiting(ctx)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return stage.Synth(req, dns.RcodeNameError, nil, nil)
	})
	const maxSpill = 4
	s := New(h, Options{UDPReaders: 8, MaxSpill: maxSpill}, nil)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() { s.Serve(ctx); close(served) }()

	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One query at a time until one is dropped: the readers take the
	// first ones and wait, then the spill workers fill, then drops.
	sent := 0
	for deadline := time.Now().Add(10 * time.Second); s.Stats.Dropped.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no query dropped after %d sent (spilled %d)", sent, s.Stats.Spilled.Load())
		}
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.test.", sent), dns.TypeA)
		b, _ := m.Pack()
		c.Write(b)
		sent++
		time.Sleep(time.Millisecond)
	}
	if n := s.Stats.Spilled.Load(); n != maxSpill {
		t.Errorf("%d queries spilled while the upstream held them, want MaxSpill %d", n, maxSpill)
	}
	if n := s.spills.Running(); n != maxSpill {
		t.Errorf("%d spill workers, want %d", n, maxSpill)
	}
	close(gate)
	// Every query not dropped is answered.
	want := sent - int(s.Stats.Dropped.Load())
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range want {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, want, err)
		}
	}
	cancel()
	<-served
	if n := s.spills.Running(); n != 0 {
		t.Errorf("%d spill workers after Serve returned, want 0", n)
	}
}

// oneProc runs the test on one P, as the guard runs on a one-core router
// (and under scripts/bench.sh): goroutines take turns, so what the first
// writer lets run before it writes is exactly what was runnable.
func oneProc(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// TestSenderLoneAndTogether: a lone answer leaves at once in one
// sendmmsg; answers sent together by 64 goroutines leave in a few, each
// once, to its own client.
func TestSenderLoneAndTogether(t *testing.T) {
	oneProc(t)
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	snd := newUDPSender(rc, false)
	const clients = 4
	var cs [clients]*net.UDPConn
	var dests [clients]udpDest
	for i := range cs {
		c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
		dests[i] = sockaddrDest(t, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	read := func(c *net.UDPConn, n int) map[string]int {
		got := map[string]int{}
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for range n {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("%d of %d answers read: %v", len(got), n, err)
			}
			got[string(buf[:k])]++
		}
		return got
	}

	snd.send([]byte("lone"), &dests[0])
	if got := read(cs[0], 1); got["lone"] != 1 || snd.w.calls != 1 {
		t.Fatalf("lone answer: read %v in %d sendmmsg, want \"lone\" in 1", got, snd.w.calls)
	}

	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { snd.send(fmt.Appendf(nil, "<%d>", i), &dests[i%clients]) })
	}
	wg.Wait()
	calls := snd.w.calls - 1
	for c := range clients {
		got := read(cs[c], n/clients)
		for i := c; i < n; i += clients {
			if got[fmt.Sprintf("<%d>", i)] != 1 {
				t.Fatalf("client %d read %v: want <%d> once", c, got, i)
			}
		}
	}
	t.Logf("%d answers sent together: %d sendmmsg", n, calls)
	if calls > n/8 {
		t.Errorf("%d answers sent together left in %d sendmmsg, want them gathered (at most %d)", n, calls, n/8)
	}
}

// sockaddrDest is the udpDest of ap (an IPv4 address), as the kernel
// writes a sender's address.
func sockaddrDest(t *testing.T, ap netip.AddrPort) udpDest {
	t.Helper()
	var d udpDest
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&d.name[0]))
	sa.Family = unix.AF_INET
	binary.BigEndian.PutUint16(d.name[2:4], ap.Port())
	sa.Addr = ap.Addr().As4()
	d.namelen = unix.SizeofSockaddrInet4
	if got, _, ok := parseSockaddr(d.name[:d.namelen]); !ok || got != ap {
		t.Fatalf("sockaddr of %v reads back as %v", ap, got)
	}
	return d
}

// TestSpilledAnswersShareWrites: the answers of spilled queries that are
// ready together (their upstream answered at once) leave in a few
// sendmmsg, each from the address its query was sent to (a socket on
// 0.0.0.0, queries to three addresses of the host, each from a client
// socket connected to it: an answer from another source is never read).
func TestSpilledAnswersShareWrites(t *testing.T) {
	oneProc(t)
	gate := make(chan struct{})
	h := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		stage.Waiting(ctx)
		<-gate
		return stage.Synth(req, dns.RcodeNameError, nil, nil)
	})
	const readers = 8
	s := New(h, Options{UDPReaders: readers, MaxSpill: 256}, nil)
	if err := s.Listen([]string{"0.0.0.0:0"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() { s.Serve(ctx); close(served) }()
	port := s.Addrs()[0].Port()

	dsts := []string{"127.0.0.1", "127.0.0.2", "127.1.2.3"}
	cs := make([]*net.UDPConn, len(dsts))
	for i, d := range dsts {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.ParseIP(d), Port: int(port)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	// The readers take the first queries and wait, the rest spill.
	const n = 72
	held := int(s.spillAt)
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.test.", i), dns.TypeA)
		b, _ := m.Pack()
		if _, err := cs[i%len(cs)].Write(b); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); int(s.Stats.Spilled.Load()) < i+1-held; {
			if time.Now().After(deadline) {
				t.Fatalf("query %d: %d spilled, want %d", i, s.Stats.Spilled.Load(), i+1-held)
			}
			time.Sleep(time.Millisecond)
		}
	}
	spilled := n - held
	if got := int(s.Stats.Spilled.Load()); got != spilled {
		t.Fatalf("%d spilled, want %d", got, spilled)
	}
	close(gate) // every query's upstream answers at once
	buf := make([]byte, 512)
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for k := range n / len(cs) {
			if _, err := c.Read(buf); err != nil {
				t.Fatalf("to %s: answer %d of %d: %v", dsts[i], k+1, n/len(cs), err)
			}
		}
	}
	cancel()
	<-served // the spill workers joined: their counts are read after
	calls := s.udp[0].send.w.calls
	t.Logf("%d spilled answers ready together: %d sendmmsg", spilled, calls)
	if calls > spilled/8 {
		t.Errorf("%d spilled answers ready together left in %d sendmmsg, want them gathered (at most %d)", spilled, calls, spilled/8)
	}
}
