package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}

// TestUDPMuxManyAtOnce: concurrent queries each get their own answer
// (the server answers some twice: counted as flood, never crossed over
// to another query), every query in flight from its own port (the server
// holds its answers until all are in: a port closed after its one use
// may come round again later, by chance, as RFC 5452 allows); after
// Close no socket is left open.
func TestUDPMuxManyAtOnce(t *testing.T) {
	const n = 200
	type held struct {
		from netip.AddrPort
		q    *dns.Msg
	}
	var all []held // the server goroutine's alone
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		if all = append(all, held{from, q}); len(all) < n {
			return
		}
		for _, h := range all {
			r := upstreamtest.AnswerA("192.0.2.1")(h.q)
			s.send(h.from, r)
			if h.q.Id%2 == 0 {
				s.send(h.from, r)
			}
		}
	})
	before := openFDs(t)
	c := new(Counters)
	tr, err := NewTransport(srv.url(), Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("q%d.example.", i)
			resp, err := tr.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{})
			if err != nil {
				errs <- err
				return
			}
			if resp.Question[0].Name != name {
				errs <- fmt.Errorf("asked %s, answer for %s", name, resp.Question[0].Name)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ports := map[uint16]bool{}
	for _, q := range srv.queries() {
		ports[q.from.Port()] = true
	}
	if len(srv.queries()) != n || len(ports) != n {
		t.Errorf("%d queries from %d ports, want %d from %d", len(srv.queries()), len(ports), n, n)
	}
	if m := c.Mismatches.Load(); m != 0 {
		t.Errorf("%d mismatches", m)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if after := openFDs(t); after > before {
		t.Errorf("%d descriptors open after Close, %d before", after, before)
	}
}

// TestUDPMuxCloseWhileWaiting: Close fails a query waiting on a silent
// upstream, and a query after Close fails at once.
func TestUDPMuxCloseWhileWaiting(t *testing.T) {
	srv := startUDP(t, func(*udpServer, netip.AddrPort, *dns.Msg) {})
	tr, err := NewTransport(srv.url(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := tr.Exchange(context.Background(), query("example.com", dns.TypeA), QueryOptions{})
		errc <- err
	}()
	eventually(t, "the query sent", func() bool { return len(srv.queries()) == 1 })
	tr.Close()
	if err := <-errc; !errors.Is(err, errMuxClosed) {
		t.Errorf("waiting query: %v, want closed", err)
	}
	if _, err := tr.Exchange(context.Background(), query("example.com", dns.TypeA), QueryOptions{}); !errors.Is(err, errMuxClosed) {
		t.Errorf("query after Close: %v, want closed", err)
	}
}

// TestUDPMuxAfterOverload: an upstream that drops most of a flood (every
// query in flight times out, sockets pile up to be closed, answers come
// late or twice) is then answered normally: every later query must get
// its answer. A reader that lost a wake-up, stopped, or fell behind its
// sockets fails here with deadline errors.
func TestUDPMuxAfterOverload(t *testing.T) {
	var mu sync.Mutex
	overloaded := true
	var late []func()
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		r := upstreamtest.AnswerA("192.0.2.1")(q)
		mu.Lock()
		defer mu.Unlock()
		if overloaded {
			switch q.Id % 4 {
			case 0: // answered at once, and again later (flood)
				s.send(from, r)
				late = append(late, func() { s.send(from, r) })
			case 1: // answered after the query gave up
				late = append(late, func() { s.send(from, r) })
			}
			return // the rest: dropped
		}
		s.send(from, r)
	})
	if err := srv.conn.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	c := new(Counters)
	tr, err := NewTransport(srv.url(), Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const flood = 300
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
			defer cancel()
			_, _ = tr.Exchange(ctx, query(fmt.Sprintf("f%d.example.", i), dns.TypeA), QueryOptions{})
		})
	}
	wg.Wait()
	mu.Lock()
	overloaded = false
	for _, f := range late {
		f()
	}
	mu.Unlock()
	const wave = 300
	for round := range 6 {
		errs := make(chan error, wave)
		for i := range wave {
			wg.Go(func() {
				name := fmt.Sprintf("r%d-%d.example.", round, i)
				resp, err := tr.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{})
				switch {
				case err != nil:
					errs <- err
				case resp.Question[0].Name != name:
					errs <- fmt.Errorf("asked %s, answer for %s", name, resp.Question[0].Name)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
}

// TestUDPMuxLostWakeups: the reader waits on a file that never becomes
// readable instead of the epoll set, as if every wake-up of the set were
// lost on its way to the netpoller (the bench once saw the upstream
// marked down, "no answer to anything", with answers arriving). Every
// query must still get its answer (the reader's bounded recheck finds
// them, and counts them as late), and Close must still stop the reader.
func TestUDPMuxLostWakeups(t *testing.T) {
	srv := startUDP(t, nil)
	c := new(Counters)
	tr, err := NewTransport(srv.url(), Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	u := tr.(*udp)
	m, err := newUDPMuxWaiting(u, r)
	if err != nil {
		t.Fatal(err)
	}
	u.muxMu.Lock()
	u.mux = m
	u.muxMu.Unlock()
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("l%d.example.", i)
			resp, err := tr.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{})
			switch {
			case err != nil:
				errs <- err
			case resp.Question[0].Name != name:
				errs <- fmt.Errorf("asked %s, answer for %s", name, resp.Question[0].Name)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.ReaderLate.Load() == 0 {
		t.Error("answers found without a wake-up were not counted as late")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUDPMuxDeadline: a deadline given to the transport (the pool's
// per-attempt timeout) is kept by the reader: a query to a silent
// upstream on a context that never ends fails at it as a deadline
// exceeded, and its socket is closed; queries answered meanwhile are not
// held by it.
func TestUDPMuxDeadline(t *testing.T) {
	var mu sync.Mutex
	silent := map[string]bool{"silent.example.": true}
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		mu.Lock()
		drop := silent[strings.ToLower(q.Question[0].Name)]
		mu.Unlock()
		if !drop {
			s.send(from, upstreamtest.AnswerA("192.0.2.1")(q))
		}
	})
	tr, err := NewTransport(srv.url(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	u := tr.(*udp)
	errc := make(chan error, 1)
	go func() {
		_, err := u.exchangeBy(context.Background(), time.Now().Add(100*time.Millisecond), query("silent.example.", dns.TypeA), QueryOptions{})
		errc <- err
	}()
	for i := range 20 { // answered while the silent one waits
		if _, err := u.exchangeBy(context.Background(), time.Now().Add(time.Minute), query(fmt.Sprintf("a%d.example.", i), dns.TypeA), QueryOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent upstream: %v, want a deadline exceeded", err)
	}
	eventually(t, "every socket closed", func() bool {
		m := u.mux
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.socks) == len(m.drain) && m.waiting == 0
	})
}

// TestUDPMuxSockReuse: the per-query socket records go back to be used
// again once every holder let go (the query, the socket, the timed list),
// and a record used again never carries what its last query left: queries
// answered twice (a copy drains), answered late or never (the deadline),
// and given up by their caller (ctx) mix on eight goroutines, and each
// answered query gets its own answer. After them no query waits and every
// record still held is held by its socket.
func TestUDPMuxSockReuse(t *testing.T) {
	srv := startUDP(t, func(s *udpServer, from netip.AddrPort, q *dns.Msg) {
		name := q.Question[0].Name
		switch {
		case strings.HasPrefix(name, "silent"):
		case strings.HasPrefix(name, "twice"):
			r := upstreamtest.AnswerA("192.0.2.2")(q)
			s.send(from, r)
			s.send(from, r)
		default:
			s.send(from, upstreamtest.AnswerA("192.0.2.1")(q))
		}
	})
	c := new(Counters)
	tr, err := NewTransport(srv.url(), Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	u := tr.(*udp)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 60 {
				name := fmt.Sprintf("q%d-%d.example.", g, i)
				deadline := time.Now().Add(time.Minute)
				ctx := context.Background()
				switch i % 6 {
				case 1:
					name = "twice-" + name
				case 3:
					name, deadline = "silent-"+name, time.Now().Add(20*time.Millisecond)
				case 5:
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
					defer cancel()
					name = "silent-" + name
				}
				resp, err := u.exchangeBy(ctx, deadline, query(name, dns.TypeA), QueryOptions{})
				if strings.HasPrefix(name, "silent") {
					if !errors.Is(err, context.DeadlineExceeded) {
						errs <- fmt.Errorf("%s: %v, want a deadline exceeded", name, err)
						return
					}
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %v", name, err)
					return
				}
				if got := resp.Question[0].Name; got != name {
					errs <- fmt.Errorf("asked %s, answer for %s", name, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := c.Mismatches.Load(); m != 0 {
		t.Errorf("%d mismatches", m)
	}
	eventually(t, "no query waiting, only draining sockets open", func() bool {
		m := u.mux
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.waiting == 0 && len(m.socks) == len(m.drain)
	})
	m := u.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.socks {
		if r := s.refs.Load(); r < 1 || r > 2 {
			t.Errorf("socket %d: %d holders, want 1 or 2 (its socket, the timed list)", s.fd, r)
		}
	}
}

// TestUDPMuxSendsGathered: queries asked together are sent back to back
// by one drain (a few batches for 64, on one P as on a one-core router),
// each from its own socket and answered; queries that gave up before
// their drain came to them are never sent from a socket closed (and its
// number perhaps reused) meanwhile: no answer crosses over, none is a
// mismatch, and a lone query is sent at once in a batch of its own.
func TestUDPMuxSendsGathered(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	srv := startUDP(t, nil)
	c := new(Counters)
	tr, err := NewTransport(srv.url(), Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	u := tr.(*udp)
	if _, err := u.Exchange(testCtx(t), query("lone.example.", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	m := u.mux
	if m.sends.batches != 1 {
		t.Fatalf("a lone query sent in %d batches, want 1", m.sends.batches)
	}
	const n = 64
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("q%d.example.", i)
			ctx := testCtx(t)
			if i%4 == 3 {
				ctx = gone // gives up at once, its query queued or not yet sent
			}
			resp, err := u.Exchange(ctx, query(name, dns.TypeA), QueryOptions{})
			switch {
			case ctx == gone:
				if !errors.Is(err, context.Canceled) {
					errs <- fmt.Errorf("%s: %v, want canceled", name, err)
				}
			case err != nil:
				errs <- fmt.Errorf("%s: %v", name, err)
			case resp.Question[0].Name != name:
				errs <- fmt.Errorf("asked %s, answer for %s", name, resp.Question[0].Name)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	batches := m.sends.batches - 1
	sent := len(srv.queries()) - 1
	t.Logf("%d queries asked together (%d given up): %d sent, in %d batches", n, n/4, sent, batches)
	if batches > n/8 {
		t.Errorf("%d queries asked together sent in %d batches, want them gathered (at most %d)", n, batches, n/8)
	}
	if sent < n-n/4 || sent > n {
		t.Errorf("%d queries sent, want %d to %d", sent, n-n/4, n)
	}
	if mm := c.Mismatches.Load(); mm != 0 {
		t.Errorf("%d mismatches", mm)
	}
	eventually(t, "no query waiting, no socket held by a send", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range m.socks {
			if s.sending || s.closeLater {
				return false
			}
		}
		return m.waiting == 0
	})
}
