package upstream

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

func newTLSTransport(t *testing.T, url string, ca *upstreamtest.CA) (Transport, *Counters) {
	t.Helper()
	c := new(Counters)
	tr, err := NewTransport(url, Options{Roots: ca.Pool}, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, c
}

func TestDoTPaddedAndReused(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{})
	tr, _ := newTLSTransport(t, srv.URL("dot.test"), ca)
	names := []string{"a.example", "a-much-longer-name.with.several.labels.example.com", "x.y", "abcdefghijklmnopqrstuvwxyz0123456789.example.net"}
	for _, n := range names {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS} {
			q := query(n, qt)
			if qt == dns.TypeHTTPS {
				q.SetEdns0(1232, true) // the caller's DO survives
			}
			resp, err := tr.Exchange(testCtx(t), q, QueryOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if paddingOf(resp) >= 0 {
				t.Fatal("padding passed back")
			}
			if resp.Question[0].Name != dns.Fqdn(n) {
				t.Fatalf("question %s", resp.Question[0].Name)
			}
		}
	}
	got := srv.Received()
	if len(got) != len(names)*3 {
		t.Fatalf("%d queries received", len(got))
	}
	for _, g := range got {
		if len(g.Raw)%128 != 0 {
			t.Errorf("query of %d octets, not a multiple of 128: %v", len(g.Raw), g.Msg)
		}
		if paddingOf(g.Msg) < 0 {
			t.Errorf("no padding option: %v", g.Msg)
		}
		if g.Msg.Question[0].Qtype == dns.TypeHTTPS && !g.Msg.IsEdns0().Do() {
			t.Error("DO bit lost")
		}
		if g.Msg.IsEdns0().UDPSize() != ednsSize {
			t.Errorf("EDNS size %d", g.Msg.IsEdns0().UDPSize())
		}
	}
	if srv.Conns() != 1 {
		t.Errorf("%d connections for sequential queries, want 1 (reuse)", srv.Conns())
	}
}

// TestDoTPipelinedOutOfOrder sends n queries at once; the server holds
// them until all have arrived (so they were pipelined on one connection)
// and answers in reverse order; each caller must get its own answer.
func TestDoTPipelinedOutOfOrder(t *testing.T) {
	const n = 8
	name := func(i int) string { return fmt.Sprintf("q%d.example.", i) }
	var arrivals sync.WaitGroup
	arrivals.Add(n)
	done := make([]chan struct{}, n+1)
	for i := range done {
		done[i] = make(chan struct{})
	}
	close(done[n])
	handler := func(q *dns.Msg) *dns.Msg {
		var i int
		if _, err := fmt.Sscanf(q.Question[0].Name, "q%d.example.", &i); err != nil || i < 0 || i >= n {
			return upstreamtest.AnswerA("192.0.2.200")(q) // warm-up
		}
		arrivals.Done()
		arrivals.Wait()
		<-done[i+1] // q(n-1) first, then q(n-2), ...
		time.AfterFunc(20*time.Millisecond, func() { close(done[i]) })
		return upstreamtest.AnswerA(fmt.Sprintf("192.0.2.%d", i))(q)
	}
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: handler})
	tr, c := newTLSTransport(t, srv.URL("dot.test"), ca)
	if _, err := tr.Exchange(testCtx(t), query("warmup.example", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := tr.Exchange(testCtx(t), query(name(i), dns.TypeA), QueryOptions{})
			if err != nil {
				errs <- err
				return
			}
			if got, want := resp.Answer[0].(*dns.A).A.String(), fmt.Sprintf("192.0.2.%d", i); got != want {
				errs <- fmt.Errorf("%s got %s, want %s", name(i), got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ids := map[uint16]bool{}
	var arrived []string
	for _, g := range srv.Received()[1:] {
		arrived = append(arrived, g.Msg.Question[0].Name)
		if g.Conn != 1 {
			t.Errorf("query on connection %d, want all on 1", g.Conn)
		}
		if ids[g.Msg.Id] {
			t.Errorf("ID %d used twice in flight", g.Msg.Id)
		}
		ids[g.Msg.Id] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct IDs, want %d", len(ids), n)
	}
	answered := srv.Answered()[1:]
	for i, a := range answered {
		if a != name(n-1-i) {
			t.Fatalf("server answered in order %v, arrivals %v: the test did not reorder", answered, arrived)
		}
	}
	if m := c.Mismatches.Load(); m != 0 {
		t.Errorf("%d mismatches", m)
	}
}

func TestDoTReconnectsAfterClose(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{})
	tr, _ := newTLSTransport(t, srv.URL("dot.test"), ca)
	for i := range 3 {
		if _, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		srv.CloseConns()
	}
	if srv.Conns() != 3 {
		t.Errorf("%d connections, want 3 (one per close)", srv.Conns())
	}
}

func TestDoTVerification(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	cert := ca.Issue(t, "dot.test", "127.0.0.1")
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Cert: &cert})
	other := ca.Issue(t, "other.test")
	cases := []struct {
		name string
		url  string
		ca   *upstreamtest.CA
		ok   bool
	}{
		{"name", srv.URL("dot.test"), ca, true},
		{"ip SAN without sni", srv.URL(""), ca, true},
		{"right pin", srv.URL("dot.test", "pin="+upstreamtest.Pin(t, cert)), ca, true},
		{"backup pin and right pin", srv.URL("dot.test", "pin="+upstreamtest.Pin(t, other), "pin="+upstreamtest.Pin(t, cert)), ca, true},
		{"wrong pin", srv.URL("dot.test", "pin="+upstreamtest.Pin(t, other)), ca, false},
		{"wrong name", srv.URL("other.test"), ca, false},
		{"unknown CA", srv.URL("dot.test"), upstreamtest.NewCA(t), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, _ := newTLSTransport(t, c.url, c.ca)
			_, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
			if c.ok && err != nil {
				t.Fatal(err)
			}
			if !c.ok && err == nil {
				t.Fatal("accepted")
			}
			if c.name == "wrong pin" && !errors.Is(err, ErrPin) {
				t.Errorf("err %v, want ErrPin", err)
			}
		})
	}
	// Every refused handshake was refused before any query was sent.
	if got := len(srv.Received()); got != 4 {
		t.Errorf("server got %d queries, want 4 (only from the verified ones)", got)
	}
}

func TestStreamIdleCloseAndClose(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{})
	tr, _ := newTLSTransport(t, srv.URL("dot.test"), ca)
	s := tr.(*stream)
	s.idle = 100 * time.Millisecond
	if _, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	eventually(t, "idle connection closed", c.isDead)
	if _, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err != nil {
		t.Fatal(err)
	}
	// The second query went on a new connection. (How many were dialled
	// is not asked: a fresh connection idle 100 ms before the query that
	// waited for it got to it, on a loaded machine, is dialled again.)
	if rs := srv.Received(); len(rs) != 2 || rs[0].Conn == rs[1].Conn {
		t.Errorf("queries received %+v, want 2 on different connections", rs)
	}

	// Close fails a query in flight and refuses new ones.
	hold := make(chan struct{})
	defer close(hold)
	slow := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: func(q *dns.Msg) *dns.Msg { <-hold; return nil }})
	tr2, _ := newTLSTransport(t, slow.URL("dot.test"), ca)
	errc := make(chan error, 1)
	go func() {
		_, err := tr2.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
		errc <- err
	}()
	eventually(t, "query arrived", func() bool { return len(slow.Received()) == 1 })
	tr2.Close()
	if err := <-errc; err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("in-flight query: %v, want a closed-connection error", err)
	}
	if _, err := tr2.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); err == nil {
		t.Error("query after Close")
	}
}

func TestTCPPlain(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				for {
					raw, err := upstreamtest.ReadMsg(conn)
					if err != nil {
						return
					}
					got <- raw
					q := new(dns.Msg)
					if q.Unpack(raw) != nil {
						return
					}
					b, _ := upstreamtest.AnswerA("192.0.2.9")(q).Pack()
					_ = upstreamtest.WriteMsg(conn, b)
				}
			}()
		}
	}()
	tr, _ := newUDPTransport(t, "tcp://"+ln.Addr().String(), true)
	for range 3 {
		resp, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if answerA(t, resp) != "192.0.2.9" || resp.Question[0].Name != "example.com." {
			t.Fatalf("answer %v", resp)
		}
		m := new(dns.Msg)
		if err := m.Unpack(<-got); err != nil {
			t.Fatal(err)
		}
		if paddingOf(m) >= 0 || m.IsEdns0().UDPSize() != ednsSize {
			t.Errorf("cleartext TCP query: %v", m)
		}
	}
}

// TestDoTPinVerifiedChainOnly: a pin is checked against the chains that
// verified, not against what the server sent. A server with a trusted
// certificate for the name that appends the pinned certificate (signed by
// nobody the guard trusts) is refused; a pin on the trusted root is
// accepted, since the root is in the verified chain.
func TestDoTPinVerifiedChainOnly(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	leaf := ca.Issue(t, "dot.test", "127.0.0.1")
	pinned := upstreamtest.NewCA(t).Issue(t, "dot.test", "127.0.0.1")
	sent := tls.Certificate{Certificate: [][]byte{leaf.Certificate[0], pinned.Certificate[0]}, PrivateKey: leaf.PrivateKey}
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Cert: &sent})
	rootSum := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	rootPin := "sha256/" + base64.StdEncoding.EncodeToString(rootSum[:])
	cases := []struct {
		name string
		pin  string
		ok   bool
	}{
		{"pinned certificate appended, not in the verified chain", upstreamtest.Pin(t, pinned), false},
		{"leaf pinned", upstreamtest.Pin(t, leaf), true},
		{"root pinned", rootPin, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, _ := newTLSTransport(t, srv.URL("dot.test", "pin="+c.pin), ca)
			_, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
			if c.ok && err != nil {
				t.Fatal(err)
			}
			if !c.ok && !errors.Is(err, ErrPin) {
				t.Fatalf("err %v, want ErrPin", err)
			}
		})
	}
	// The same over DoH, which shares the TLS configuration.
	doh := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Name: "dot.test", Cert: &sent})
	for _, c := range cases {
		tr, _ := newTLSTransport(t, doh.URL+"&pin="+c.pin, ca)
		_, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
		if c.ok != (err == nil) || !c.ok && !errors.Is(err, ErrPin) {
			t.Errorf("DoH %s: err %v", c.name, err)
		}
	}
}

// TestDoTDeadline: a query the upstream never answers fails at its
// deadline as deadline exceeded (kept by the connection's one timer, no
// context of its own), while the queries answered meanwhile on the same
// pipelined connection are unaffected, and a later silent one expires
// too (the timer is armed again).
func TestDoTDeadline(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Name == "silent.example." {
			return nil
		}
		return upstreamtest.AnswerA("192.0.2.1")(q)
	}})
	tr, err := NewTransport(srv.URL(srv.Name), Options{Roots: ca.Pool}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s := tr.(*stream)
	for round := range 2 {
		errc := make(chan error, 1)
		go func() {
			_, err := s.exchangeBy(context.Background(), time.Now().Add(100*time.Millisecond), query("silent.example.", dns.TypeA), QueryOptions{})
			errc <- err
		}()
		for i := range 20 {
			if _, err := s.exchangeBy(context.Background(), time.Now().Add(time.Minute), query(fmt.Sprintf("a%d.example.", i), dns.TypeA), QueryOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: silent upstream: %v, want a deadline exceeded", round, err)
		}
	}
	if srv.Conns() != 1 {
		t.Errorf("%d connections, want the one", srv.Conns())
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Errorf("%d queries still pending", len(c.pending))
	}
}

// TestLateQueryKeepsConnection: a query whose deadline has passed by the
// time it is written (a goroutine scheduled late on a busy router) fails
// alone: the shared DoT or DoH connection is not closed under the other
// queries (a write is bounded by writeTimeout, not by one query's
// deadline), so the next query reuses it.
func TestLateQueryKeepsConnection(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	dot := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: upstreamtest.AnswerA("192.0.2.1")})
	doh := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Handler: upstreamtest.AnswerA("192.0.2.1")})
	for _, tc := range []struct {
		name, url string
		conns     func() int
	}{
		{"dot", dot.URL(dot.Name), dot.Conns},
		{"doh", doh.URL, doh.Conns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTransport(tc.url, Options{Roots: ca.Pool}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			x := tr.(interface {
				exchangeBy(context.Context, time.Time, *dns.Msg, QueryOptions) (*dns.Msg, error)
			})
			if _, err := x.exchangeBy(context.Background(), time.Now().Add(time.Minute), query("first.example.", dns.TypeA), QueryOptions{}); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if _, err := x.exchangeBy(context.Background(), time.Now().Add(-time.Millisecond), query(fmt.Sprintf("late%d.example.", i), dns.TypeA), QueryOptions{}); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("late query %d: %v, want deadline exceeded (not sent)", i, err)
				}
				if _, err := x.exchangeBy(context.Background(), time.Now().Add(time.Minute), query(fmt.Sprintf("a%d.example.", i), dns.TypeA), QueryOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if n := tc.conns(); n != 1 {
				t.Errorf("%d connections, want the one", n)
			}
		})
	}
}
