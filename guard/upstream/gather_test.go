package upstream

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// writeCounter is a net.Conn that counts its writes (each one syscall and,
// on TLS, at least one record) and keeps what was written; with nc set
// it passes everything on to it.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	writes int
	out    bytes.Buffer
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	w.out.Write(b)
	w.mu.Unlock()
	if w.Conn == nil {
		return len(b), nil
	}
	return w.Conn.Write(b)
}

func (w *writeCounter) SetWriteDeadline(t time.Time) error {
	if w.Conn == nil {
		return nil
	}
	return w.Conn.SetWriteDeadline(t)
}

func (w *writeCounter) count() (int, []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, bytes.Clone(w.out.Bytes())
}

// oneProc runs the test on one P, as the guard runs on a one-core router
// (and under scripts/bench.sh): goroutines take turns, so what the first
// writer lets run before it writes is exactly what was runnable.
func oneProc(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// A lone drain writes at once (nothing else is runnable to wait for);
// what several goroutines buffer together leaves in one write, in order
// of buffering, nothing lost.
func TestGatherLoneAndTogether(t *testing.T) {
	oneProc(t)
	var mu sync.Mutex
	w := &writeCounter{}
	g := gather{nc: w}
	mu.Lock()
	g.out = append(g.out, "lone"...)
	err := g.drain(&mu)
	mu.Unlock()
	if n, out := w.count(); err != nil || n != 1 || string(out) != "lone" {
		t.Fatalf("lone drain: %d writes of %q (%v), want 1 of \"lone\"", n, out, err)
	}

	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mu.Lock()
			defer mu.Unlock()
			g.out = fmt.Appendf(g.out, "<%d>", i)
			if err := g.drain(&mu); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	writes, out := w.count()
	writes-- // the lone one
	for i := range n {
		if !bytes.Contains(out, fmt.Appendf(nil, "<%d>", i)) {
			t.Fatalf("<%d> not written: %q", i, out)
		}
	}
	if len(out) != len("lone")+n*len("<00>")-10*len("0") {
		t.Fatalf("%d octets written, want each piece once: %q", len(out), out)
	}
	t.Logf("%d pieces buffered together: %d writes", n, writes)
	if writes > n/8 {
		t.Errorf("%d pieces buffered together left in %d writes, want them gathered (at most %d)", n, writes, n/8)
	}
}

// Pipelined DoT/TCP queries asked together share writes (one syscall and
// one TLS record for many); a lone query is written by itself at once.
func TestStreamQueriesShareWrites(t *testing.T) {
	oneProc(t)
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: upstreamtest.AnswerA("192.0.2.1")})
	raw, err := net.Dial("tcp", srv.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	// Counted under TLS: each write is a syscall (and a TLS record).
	w := &writeCounter{Conn: raw}
	tc := tls.Client(w, (&tlsConfig{roots: ca.Pool}).clientConfig(&Endpoint{ServerName: srv.Name}))
	if err := tc.HandshakeContext(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	c := newStreamConn(tc, &Counters{}, time.Minute)
	defer c.close(net.ErrClosed)
	base, _ := w.count() // the handshake's
	ask := func(name string) error {
		r, err := c.exchange(testCtx(t), time.Time{}, query(name, dns.TypeA), false, false)
		if err == nil && answerA(t, r) != "192.0.2.1" {
			err = fmt.Errorf("%s: answer %v", name, r)
		}
		return err
	}
	if err := ask("lone.example."); err != nil {
		t.Fatal(err)
	}
	if n, _ := w.count(); n != base+1 {
		t.Fatalf("a lone query: %d writes, want 1", n)
	}
	const n = 64
	askTogether(t, n, ask)
	writes, _ := w.count()
	writes -= base + 1
	t.Logf("%d queries asked together: %d writes", n, writes)
	if writes > n/8 {
		t.Errorf("%d queries asked together: %d writes, want them gathered (at most %d)", n, writes, n/8)
	}
	if err := ask("after.example."); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.count(); got != base+writes+2 {
		t.Fatalf("a lone query after: %d writes in all, want %d", got, base+writes+2)
	}
}

// Answers of every size come through the reader's read-ahead buffer:
// small ones pipelined, one just within the buffer, and ones longer than
// it (a copy of their own), in any order on one connection.
func TestDoTAnswerSizes(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		var n int
		fmt.Sscanf(q.Question[0].Name, "t%d.", &n)
		for i := range n {
			r.Answer = append(r.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("%03d%0250d", i, 0)},
			})
		}
		return r
	}})
	tr, _ := newTLSTransport(t, srv.URL(srv.Name), ca)
	var wg sync.WaitGroup
	for _, n := range []int{0, 1, 10, 60, 61, 62, 63, 64, 100, 150, 200, 0, 3} {
		wg.Go(func() {
			q := query(fmt.Sprintf("t%d.example.", n), dns.TypeTXT)
			r, err := tr.Exchange(testCtx(t), q, QueryOptions{})
			if err != nil {
				t.Errorf("%d records: %v", n, err)
				return
			}
			if len(r.Answer) != n {
				t.Errorf("%d records asked, %d answered", n, len(r.Answer))
			}
			for i, rr := range r.Answer {
				if txt, ok := rr.(*dns.TXT); !ok || len(txt.Txt) != 1 || txt.Txt[0] != fmt.Sprintf("%03d%0250d", i, 0) {
					t.Errorf("%d records: record %d is %v", n, i, rr)
					return
				}
			}
		})
	}
	wg.Wait()
}

// DoH queries asked together share writes too (each one's HEADERS and
// DATA frames, many streams' in one write); a lone one is written at once.
func TestH2QueriesShareWrites(t *testing.T) {
	oneProc(t)
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Handler: upstreamtest.AnswerA("192.0.2.1")})
	raw, err := net.Dial("tcp", srv.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	w := &writeCounter{Conn: raw}
	tc := tls.Client(w, (&tlsConfig{roots: ca.Pool}).clientConfig(&Endpoint{ServerName: "doh.test"}, "h2"))
	if err := tc.HandshakeContext(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	c, err := newH2Conn(tc, "doh.test:"+fmt.Sprint(srv.Addr.Port()), "/dns-query", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.close(net.ErrClosed); <-c.done }()
	// Counted from the second query: the first's writes include the
	// reader's SETTINGS acknowledgement.
	ask := func(name string) error {
		body, err := appendQuery(nil, query(name, dns.TypeA), 0, true)
		if err != nil {
			return err
		}
		r, err := c.roundTrip(testCtx(t), time.Time{}, body)
		if err != nil {
			return err
		}
		defer c.release(r)
		m := new(dns.Msg)
		if r.status != 200 || m.Unpack(r.body) != nil || answerA(t, m) != "192.0.2.1" {
			return fmt.Errorf("%s: status %d, answer %v", name, r.status, m)
		}
		return nil
	}
	if err := ask("first.example."); err != nil {
		t.Fatal(err)
	}
	base, _ := w.count()
	if err := ask("lone.example."); err != nil {
		t.Fatal(err)
	}
	lone, _ := w.count()
	if lone-base != 1 {
		t.Fatalf("a lone query: %d writes, want 1", lone-base)
	}
	const n = 64
	askTogether(t, n, ask)
	writes, _ := w.count()
	writes -= lone
	t.Logf("%d queries asked together: %d writes (control frames included)", n, writes)
	if writes > n/4 {
		t.Errorf("%d queries asked together: %d writes, want them gathered (at most %d)", n, writes, n/4)
	}
}

// askTogether asks n names (q0.example. ...) at once, each on a
// goroutine of its own, and waits for every answer.
func askTogether(t *testing.T, n int, ask func(name string) error) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := ask(fmt.Sprintf("q%d.example.", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// readCounter counts the reads of the socket under TLS.
type readCounter struct {
	net.Conn
	mu    sync.Mutex
	reads int
}

func (r *readCounter) Read(b []byte) (int, error) {
	r.mu.Lock()
	r.reads++
	r.mu.Unlock()
	return r.Conn.Read(b)
}

// Records that have come together are read from the socket together: 100
// small ones (padded DoT answers' size) in a few reads, not one or two a
// read as crypto/tls reads by itself.
func TestTLSReadAhead(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	cert := ca.Issue(t, "dot.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n, size = 100, 468
	written := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			written <- err
			return
		}
		defer c.Close()
		rec := make([]byte, size)
		for range n {
			if _, err := c.Write(rec); err != nil { // one record each
				written <- err
				return
			}
		}
		written <- nil
		_, _ = io.Copy(io.Discard, c) // until the client closes
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &readCounter{Conn: raw}
	tc := tlsClient(rc, (&tlsConfig{roots: ca.Pool}).clientConfig(&Endpoint{ServerName: "dot.test"}))
	defer tc.Close()
	if err := tc.HandshakeContext(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	base := rc.reads
	rc.mu.Unlock()
	buf := make([]byte, size)
	for i := range n {
		if _, err := io.ReadFull(tc, buf); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	rc.mu.Lock()
	reads := rc.reads - base
	rc.mu.Unlock()
	t.Logf("%d records of %d octets that came together: %d reads", n, size, reads)
	if reads > n/10 {
		t.Errorf("%d records that came together took %d reads, want at most %d", n, reads, n/10)
	}
}
