package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The DoH client's HTTP/2 (h2.go) against two real servers: Go's net/http
// server (what most of the protocol's normal use looks like) and a
// scripted server built on golang.org/x/net/http2's Framer, which sends
// what a server may but net/http seldom does (CONTINUATION, padding, 1xx,
// GOAWAY, RST_STREAM, tiny windows, PING, PUSH_PROMISE).

// h2Server is net/http's HTTP/2 server answering DoH, counting connections.
type h2Server struct {
	*httptest.Server
	URL   string
	conns atomic.Int32
	mu    sync.Mutex
	reqs  []*http.Request
}

func startH2Server(t *testing.T, ca *upstreamtest.CA, cfg *http.HTTP2Config, handler func(w http.ResponseWriter, q *dns.Msg)) *h2Server {
	t.Helper()
	s := &h2Server{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.mu.Unlock()
		body, err := io.ReadAll(r.Body)
		q := new(dns.Msg)
		if err == nil {
			err = q.Unpack(body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		handler(w, q)
	}))
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = cfg
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "doh.test")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.Server = srv
	s.URL = "https://doh.test:" + portOf(t, srv.Listener.Addr()) + "/dns-query?ip=127.0.0.1"
	return s
}

func portOf(t *testing.T, a net.Addr) string {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(ap.Port())
}

func writeAnswer(w http.ResponseWriter, q *dns.Msg) {
	b, err := upstreamtest.AnswerA("192.0.2.1")(q).Pack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/dns-message; charset=ignored")
	_, _ = w.Write(b)
}

func newDoHTransport(t *testing.T, url string, ca *upstreamtest.CA) (*doh, *Counters) {
	t.Helper()
	tr, c := newTLSTransport(t, url, ca)
	return tr.(*doh), c
}

func TestH2MultiplexedOnOneConnection(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	for _, tc := range []struct {
		name string
		cfg  *http.HTTP2Config
	}{
		{"default", nil},
		{"two streams at a time", &http.HTTP2Config{MaxConcurrentStreams: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startH2Server(t, ca, tc.cfg, writeAnswer)
			tr, counters := newDoHTransport(t, srv.URL, ca)
			const n = 64
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					resp, err := tr.Exchange(testCtx(t), query(fmt.Sprintf("q%d.example", i), dns.TypeA), QueryOptions{})
					if err == nil && (len(resp.Answer) != 1 || resp.Question[0].Name != fmt.Sprintf("q%d.example.", i)) {
						err = fmt.Errorf("answer %v", resp)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if got := srv.conns.Load(); got != 1 {
				t.Errorf("%d connections, want 1 (streams multiplexed on one)", got)
			}
			// Streams opened before the server's SETTINGS arrived may be
			// refused beyond its limit, and are sent again (each attempt
			// counts).
			if got := counters.Queries.Load(); got < n || (tc.cfg == nil && got != n) {
				t.Errorf("%d queries counted for %d", got, n)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for _, r := range srv.reqs {
				if r.Proto != "HTTP/2.0" || r.Method != http.MethodPost || r.Host != "doh.test:"+portOf(t, srv.Listener.Addr()) ||
					r.TLS.ServerName != "doh.test" || r.URL.RequestURI() != "/dns-query" || r.ContentLength <= 0 {
					t.Errorf("request %s %s %s host %q SNI %q length %d", r.Proto, r.Method, r.URL.RequestURI(), r.Host, r.TLS.ServerName, r.ContentLength)
				}
			}
		})
	}
}

// A server that does not negotiate h2 (ALPN http/1.1, or no ALPN at
// all) is spoken to in HTTP/1.1: POST with the same fields, answers with
// Content-Length or chunked, connections reused one query at a time,
// concurrent queries on connections of their own, Connection: close
// honoured, a connection the server closed while idle replaced.
func TestDoHHTTP1(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	for _, alpn := range [][]string{{"http/1.1"}, nil} {
		t.Run(fmt.Sprint(alpn), func(t *testing.T) {
			var conns atomic.Int32
			var mu sync.Mutex
			var reqs []*http.Request
			states := map[net.Conn]http.ConnState{}
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					reqs = append(reqs, r)
					mu.Unlock()
					body, _ := io.ReadAll(r.Body)
					q := new(dns.Msg)
					if err := q.Unpack(body); err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					b, _ := upstreamtest.AnswerA("192.0.2.1")(q).Pack()
					w.Header().Set("Content-Type", MediaType)
					switch q.Question[0].Name {
					case "chunked.example.":
						w.Write(b[:3])
						w.(http.Flusher).Flush() // no Content-Length: chunked
						w.Write(b[3:])
					case "close.example.":
						w.Header().Set("Connection", "close")
						w.Write(b)
					default:
						w.Write(b)
					}
				}),
				ConnState: func(c net.Conn, st http.ConnState) {
					if st == http.StateNew {
						conns.Add(1)
					}
					mu.Lock()
					states[c] = st
					mu.Unlock()
				},
				TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "doh.test")}, NextProtos: alpn},
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			tr, counters := newDoHTransport(t, "https://doh.test:"+portOf(t, ln.Addr())+"/dns-query?ip=127.0.0.1", ca)
			for _, name := range []string{"a.example", "chunked.example", "b.example"} {
				if err := exchangeA(t, tr, name); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for 3 queries in turn, want 1", n)
			}
			if err := exchangeA(t, tr, "close.example"); err != nil {
				t.Fatal(err)
			}
			if err := exchangeA(t, tr, "after-close.example"); err != nil {
				t.Fatal(err)
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections after Connection: close, want 2", n)
			}
			// The server drops its idle connections: the next query
			// finds its kept one closed and goes again on a new one.
			eventually(t, "the server to see its connection idle", func() bool {
				mu.Lock()
				defer mu.Unlock()
				idle := 0
				for c, st := range states {
					if st == http.StateIdle {
						c.Close()
						idle++
					}
				}
				return idle > 0
			})
			eventually(t, "the idle connection to be closed", func() bool {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				if len(tr.h1idle) != 1 {
					return false
				}
				c := tr.h1idle[0]
				c.tc.SetReadDeadline(time.Now().Add(time.Millisecond))
				_, err := c.br.Peek(1)
				c.tc.SetReadDeadline(time.Time{})
				return errors.Is(err, io.EOF)
			})
			if err := exchangeA(t, tr, "stale.example"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if err := exchangeA(t, tr, fmt.Sprintf("c%d.example", i)); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			tr.mu.Lock()
			idle := len(tr.h1idle)
			tr.mu.Unlock()
			if idle > h1MaxIdle {
				t.Errorf("%d idle connections kept, at most %d", idle, h1MaxIdle)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range reqs {
				if r.Proto != "HTTP/1.1" || r.Method != http.MethodPost || r.Host != "doh.test:"+portOf(t, ln.Addr()) ||
					r.URL.RequestURI() != "/dns-query" || r.Header.Get("Content-Type") != MediaType || r.Header.Get("Accept") != MediaType || r.TLS.ServerName != "doh.test" {
					t.Errorf("request %s %s %s host %q SNI %q", r.Proto, r.Method, r.URL.RequestURI(), r.Host, r.TLS.ServerName)
				}
			}
			if q := counters.Queries.Load(); q < 14 || q > 15 {
				t.Errorf("%d queries counted, want 14 (15 with the stale connection's try)", q)
			}
		})
	}
}

// rawH2 is a scripted HTTP/2 server: each accepted connection is handed
// to script after the preface and the server's (empty) SETTINGS.
type rawH2 struct {
	URL       string
	Authority string
	conns     atomic.Int32
}

type rawConn struct {
	t       *testing.T
	nc      net.Conn
	fr      *http2.Framer
	wmu     sync.Mutex // writes may come from two goroutines in a script
	enc     *hpack.Encoder
	buf     bytes.Buffer
	sni     string
	pending map[uint32]*rawRequest
	// What the client did, seen while reading.
	settingsSent int
	settingsAcks int
	pingAcks     int
	resets       map[uint32]http2.ErrCode
	goAway       *http2.GoAwayFrame
	dataSizes    []int
}

// rawRequest is a complete request read by next.
type rawRequest struct {
	id      uint32
	headers []hpack.HeaderField
	body    []byte
}

func (r rawRequest) header(name string) string {
	for _, f := range r.headers {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func startRawH2(t *testing.T, ca *upstreamtest.CA, script func(c *rawConn)) *rawH2 {
	t.Helper()
	cert := ca.Issue(t, "doh.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	s := &rawH2{Authority: "doh.test:" + portOf(t, ln.Addr())}
	s.URL = "https://" + s.Authority + "/dns-query?ip=127.0.0.1"
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			wg.Go(func() {
				defer nc.Close()
				tc := nc.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != http2.ClientPreface {
					t.Errorf("preface %q, %v", preface, err)
					return
				}
				c := &rawConn{t: t, nc: nc, fr: http2.NewFramer(nc, nc), sni: tc.ConnectionState().ServerName,
					pending: map[uint32]*rawRequest{}, resets: map[uint32]http2.ErrCode{}}
				c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				c.enc = hpack.NewEncoder(&c.buf)
				if err := c.fr.WriteSettings(); err != nil {
					return
				}
				c.settingsSent++
				script(c)
			})
		}
	})
	return s
}

// step reads one frame, acking SETTINGS and noting what else the client
// sends; it returns a request once one is complete. ok is false when the
// connection ends.
func (c *rawConn) step() (*rawRequest, bool) {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return nil, false
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			c.settingsAcks++
		} else {
			c.wmu.Lock()
			_ = c.fr.WriteSettingsAck()
			c.wmu.Unlock()
		}
	case *http2.PingFrame:
		if f.IsAck() {
			c.pingAcks++
		}
	case *http2.RSTStreamFrame:
		c.resets[f.StreamID] = f.ErrCode
	case *http2.GoAwayFrame:
		c.goAway = f
	case *http2.MetaHeadersFrame:
		r := &rawRequest{id: f.StreamID, headers: f.Fields}
		if f.StreamEnded() {
			return r, true
		}
		c.pending[f.StreamID] = r
	case *http2.DataFrame:
		r := c.pending[f.StreamID]
		if r == nil {
			c.t.Errorf("DATA on stream %d without HEADERS", f.StreamID)
			return nil, false
		}
		r.body = append(r.body, f.Data()...)
		c.dataSizes = append(c.dataSizes, len(f.Data()))
		if f.StreamEnded() {
			delete(c.pending, f.StreamID)
			return r, true
		}
	}
	return nil, true
}

// next reads until a request is complete.
func (c *rawConn) next() (rawRequest, bool) {
	for {
		r, ok := c.step()
		if !ok {
			return rawRequest{}, false
		}
		if r != nil {
			return *r, true
		}
	}
}

// drain reads until the client closes the connection.
func (c *rawConn) drain() {
	for {
		if _, ok := c.step(); !ok {
			return
		}
	}
}

// settle changes the server's settings and reads until the client has
// acknowledged them and every earlier SETTINGS (so they apply to every stream it opens afterwards).
func (c *rawConn) settle(s ...http2.Setting) bool {
	c.wmu.Lock()
	err := c.fr.WriteSettings(s...)
	c.settingsSent++
	c.wmu.Unlock()
	for err == nil && c.settingsAcks < c.settingsSent {
		if _, ok := c.step(); !ok {
			return false
		}
	}
	return err == nil
}

// block encodes header fields; wmu is held.
func (c *rawConn) block(kv ...string) []byte {
	c.buf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = c.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(c.buf.Bytes())
}

// answer is the DNS answer to r's query.
func (c *rawConn) answer(r rawRequest) []byte {
	q := new(dns.Msg)
	if err := q.Unpack(r.body); err != nil {
		c.t.Errorf("query: %v", err)
		return nil
	}
	b, err := upstreamtest.AnswerA("192.0.2.1")(q).Pack()
	if err != nil {
		c.t.Error(err)
	}
	return b
}

// respond answers r plainly.
func (c *rawConn) respond(r rawRequest) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: r.id, EndHeaders: true,
		BlockFragment: c.block(":status", "200", "content-type", MediaType)})
	_ = c.fr.WriteData(r.id, true, c.answer(r))
}

// headers writes a header block as one HEADERS frame.
func (c *rawConn) headers(id uint32, end bool, kv ...string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: end, BlockFragment: c.block(kv...)})
}

func exchangeA(t *testing.T, tr Transport, name string) error {
	t.Helper()
	resp, err := tr.Exchange(testCtx(t), query(name, dns.TypeA), QueryOptions{})
	if err != nil {
		return err
	}
	if len(resp.Answer) != 1 || paddingOf(resp) >= 0 || resp.Question[0].Name != dns.Fqdn(name) {
		return fmt.Errorf("answer %v", resp)
	}
	return nil
}

// Everything a server may send around an answer: a PING first (acked), a
// 103 before the final headers, headers split over CONTINUATION frames
// and padded, the body in padded DATA frames, then trailers that end the
// stream.
func TestH2FramesAroundAnAnswer(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	type seen struct {
		req      rawRequest
		sni      string
		pingAcks int
	}
	result := make(chan seen, 1)
	srv := startRawH2(t, ca, func(c *rawConn) {
		r, ok := c.next()
		if !ok {
			return
		}
		c.wmu.Lock()
		_ = c.fr.WritePing(false, [8]byte{1, 2, 3})
		_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: r.id, EndHeaders: true, BlockFragment: c.block(":status", "103", "link", "</x>")})
		blk := c.block(":status", "200", "content-type", MediaType, "x-filler", strings.Repeat("f", 300))
		_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: r.id, BlockFragment: blk[:10], PadLength: 7})
		_ = c.fr.WriteContinuation(r.id, false, blk[10:20])
		_ = c.fr.WriteContinuation(r.id, true, blk[20:])
		ans := c.answer(r)
		_ = c.fr.WriteDataPadded(r.id, false, ans[:5], make([]byte, 20))
		_ = c.fr.WriteDataPadded(r.id, false, ans[5:], nil)
		_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: r.id, EndHeaders: true, EndStream: true, BlockFragment: c.block("x-trailer", "1")})
		c.wmu.Unlock()
		c.drain()
		result <- seen{r, c.sni, c.pingAcks}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	if err := exchangeA(t, tr, "frames.example"); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	got := <-result
	want := map[string]string{":method": "POST", ":scheme": "https", ":authority": srv.Authority,
		":path": "/dns-query", "content-type": MediaType, "accept": MediaType, "content-length": fmt.Sprint(len(got.req.body))}
	for k, v := range want {
		if got.req.header(k) != v {
			t.Errorf("%s: %q, want %q", k, got.req.header(k), v)
		}
	}
	if got.sni != "doh.test" {
		t.Errorf("SNI %q", got.sni)
	}
	if len(got.req.body)%padBlock != 0 {
		t.Errorf("query of %d octets, not padded", len(got.req.body))
	}
	if q := new(dns.Msg); q.Unpack(got.req.body) != nil || q.Id != 0 {
		t.Errorf("query ID not 0 (RFC 8484 §4.1)")
	}
	if got.pingAcks != 1 {
		t.Errorf("%d PING acks, want 1", got.pingAcks)
	}
}

// A GOAWAY lets the streams it covers finish on the old connection while
// new queries go to a new one.
func TestH2GoAway(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	release := make(chan struct{})
	srv := startRawH2(t, ca, func(c *rawConn) {
		r, ok := c.next()
		if !ok {
			return
		}
		c.wmu.Lock()
		err := c.fr.WriteGoAway(r.id, http2.ErrCodeNo, nil)
		c.wmu.Unlock()
		if err != nil {
			return
		}
		<-release
		c.respond(r)
		c.drain()
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	first := make(chan error, 1)
	go func() { first <- exchangeA(t, tr, "one.example") }()
	eventually(t, "the first connection to be going away", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.conn != nil && !tr.conn.usable()
	})
	second := make(chan error, 1)
	go func() { second <- exchangeA(t, tr, "two.example") }()
	eventually(t, "a second connection", func() bool { return srv.conns.Load() == 2 })
	close(release)
	if err := <-first; err != nil {
		t.Errorf("stream covered by GOAWAY: %v", err)
	}
	if err := <-second; err != nil {
		t.Errorf("query after GOAWAY: %v", err)
	}
}

// A stream above GOAWAY's last ID, or refused, was not processed: it is
// sent again on a reused connection (not on a fresh one, where the
// refusal is the server's answer).
func TestH2UnprocessedStreamsRetried(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	for _, how := range []string{"goaway", "refused"} {
		t.Run(how, func(t *testing.T) {
			var n atomic.Int32
			srv := startRawH2(t, ca, func(c *rawConn) {
				for {
					r, ok := c.next()
					if !ok {
						return
					}
					switch n.Add(1) {
					case 1, 4:
						c.respond(r)
						continue
					}
					c.wmu.Lock()
					if how == "goaway" {
						last := uint32(0) // the stream before this one, if any
						if r.id > 2 {
							last = r.id - 2
						}
						_ = c.fr.WriteGoAway(last, http2.ErrCodeNo, []byte("bye"))
					} else {
						_ = c.fr.WriteRSTStream(r.id, http2.ErrCodeRefusedStream)
					}
					c.wmu.Unlock()
				}
			})
			tr, counters := newDoHTransport(t, srv.URL, ca)
			// 1: answered. 2: refused on the reused connection, 3: the
			// retry, refused again: an error. 4: answered.
			if err := exchangeA(t, tr, "a.example"); err != nil {
				t.Fatal(err)
			}
			if err := exchangeA(t, tr, "b.example"); !errors.Is(err, errRefusedStream) {
				t.Errorf("refused twice: %v", err)
			}
			if err := exchangeA(t, tr, "c.example"); err != nil {
				t.Fatal(err)
			}
			if n.Load() != 4 || counters.Queries.Load() != 4 {
				t.Errorf("server saw %d requests, client counted %d, want 4", n.Load(), counters.Queries.Load())
			}
			wantConns := int32(1)
			if how == "goaway" {
				wantConns = 3 // each GOAWAY ends a connection
			}
			if srv.conns.Load() != wantConns {
				t.Errorf("%d connections, want %d", srv.conns.Load(), wantConns)
			}
		})
	}
}

// The query goes out within the server's window: with a 50-octet stream
// window it is sent in pieces, each after a WINDOW_UPDATE; with a
// 0-octet one it waits.
func TestH2SendFlowControl(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	settled := make(chan struct{})
	sizes := make(chan []int, 1)
	srv := startRawH2(t, ca, func(c *rawConn) {
		r, ok := c.next()
		if !ok {
			return
		}
		c.respond(r)
		if !c.settle(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50}) {
			return
		}
		c.dataSizes = nil
		close(settled)
		var hdr *rawRequest
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				hdr = &rawRequest{id: f.StreamID}
			case *http2.DataFrame:
				hdr.body = append(hdr.body, f.Data()...)
				c.dataSizes = append(c.dataSizes, len(f.Data()))
				if f.StreamEnded() {
					sizes <- c.dataSizes
					c.respond(*hdr)
					c.drain()
					return
				}
				c.wmu.Lock()
				_ = c.fr.WriteWindowUpdate(f.StreamID, uint32(len(f.Data())))
				c.wmu.Unlock()
			}
		}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	if err := exchangeA(t, tr, "first.example"); err != nil {
		t.Fatal(err)
	}
	<-settled
	if err := exchangeA(t, tr, "window.example"); err != nil {
		t.Fatal(err)
	}
	got := <-sizes
	total := 0
	for _, s := range got {
		total += s
		if s > 50 {
			t.Errorf("DATA of %d octets beyond the 50-octet window", s)
		}
	}
	if total != padBlock || len(got) != 3 {
		t.Errorf("DATA frames %v, want 128 octets as 50+50+28", got)
	}
}

// Errors on one stream leave the connection serving the next query.
func TestH2StreamErrorsKeepTheConnection(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	resets := make(chan map[uint32]http2.ErrCode, 1)
	srv := startRawH2(t, ca, func(c *rawConn) {
		for {
			r, ok := c.next()
			if !ok {
				resets <- c.resets
				return
			}
			var q dns.Msg
			if q.Unpack(r.body) != nil || len(q.Question) != 1 {
				t.Errorf("request %x", r.body)
				continue
			}
			switch q.Question[0].Name {
			case "slow.example.": // never answered: the query times out
			case "big.example.": // larger than any DNS message
				c.headers(r.id, false, ":status", "200", "content-type", MediaType)
				c.wmu.Lock()
				for range 5 {
					_ = c.fr.WriteData(r.id, false, make([]byte, 16000))
				}
				c.wmu.Unlock()
			case "busy.example.":
				c.headers(r.id, true, ":status", "503")
			case "html.example.":
				c.headers(r.id, false, ":status", "200", "content-type", "text/html")
				c.wmu.Lock()
				_ = c.fr.WriteData(r.id, true, []byte("<html>"))
				c.wmu.Unlock()
			default:
				c.respond(r)
			}
		}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	// The connection first (stream 1), so that the slow query's 200 ms
	// are not spent on a dial on a busy machine.
	if err := exchangeA(t, tr, "warm.example"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	_, err := tr.Exchange(ctx, query("slow.example", dns.TypeA), QueryOptions{})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered: %v", err)
	}
	if err := exchangeA(t, tr, "big.example"); err == nil || !strings.Contains(err.Error(), "larger than a DNS message") {
		t.Errorf("oversized answer: %v", err)
	}
	if err := exchangeA(t, tr, "busy.example"); !errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), "503") {
		t.Errorf("503: %v", err)
	}
	if err := exchangeA(t, tr, "html.example"); err == nil || !strings.Contains(err.Error(), "media type") {
		t.Errorf("text/html: %v", err)
	}
	if err := exchangeA(t, tr, "fine.example"); err != nil {
		t.Error(err)
	}
	tr.Close()
	got := <-resets
	if srv.conns.Load() != 1 {
		t.Errorf("%d connections, want 1", srv.conns.Load())
	}
	if got[3] != http2.ErrCodeCancel || got[5] != http2.ErrCodeCancel {
		t.Errorf("streams given up on were reset with %v, want CANCEL on 3 (slow) and 5 (big)", got)
	}
}

// goAwayOf is the error code of the GOAWAY the client sent on c, -1 for
// none.
func goAwayOf(c *rawConn) int64 {
	if c.goAway == nil {
		return -1
	}
	return int64(c.goAway.ErrCode)
}

// A connection error (a push though push is off) fails the query, tells
// the server (GOAWAY PROTOCOL_ERROR) and the next query dials again.
func TestH2ConnectionErrorRedials(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	goAways := make(chan int64, 2)
	srv := startRawH2(t, ca, func(c *rawConn) {
		r, ok := c.next()
		if !ok {
			return
		}
		c.wmu.Lock()
		err := c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: r.id, PromiseID: 2, EndHeaders: true, BlockFragment: c.block(":method", "GET")})
		c.wmu.Unlock()
		if err != nil {
			return
		}
		c.drain()
		goAways <- goAwayOf(c) // none: the test fails rather than waits
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	if err := exchangeA(t, tr, "push.example"); err == nil || !strings.Contains(err.Error(), "PUSH_PROMISE") {
		t.Errorf("err %v", err)
	}
	if code := <-goAways; code != int64(http2.ErrCodeProtocol) {
		t.Errorf("GOAWAY %v, want PROTOCOL_ERROR", code)
	}
	_ = exchangeA(t, tr, "again.example") // pushed at again; what counts is the new dial
	if srv.conns.Load() != 2 {
		t.Errorf("%d connections, want 2", srv.conns.Load())
	}
}

// An idle connection is closed (with GOAWAY NO_ERROR); the next query
// dials again.
func TestH2IdleClose(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	goAways := make(chan int64, 2)
	srv := startRawH2(t, ca, func(c *rawConn) {
		for {
			r, ok := c.next()
			if !ok {
				goAways <- goAwayOf(c)
				return
			}
			c.respond(r)
		}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	tr.idle = 200 * time.Millisecond // not less: a busy machine may take that long from a dial to its query
	if err := exchangeA(t, tr, "a.example"); err != nil {
		t.Fatal(err)
	}
	if code := <-goAways; code != int64(http2.ErrCodeNo) {
		t.Errorf("idle close with GOAWAY %v", code)
	}
	if err := exchangeA(t, tr, "b.example"); err != nil {
		t.Fatal(err)
	}
	if srv.conns.Load() != 2 {
		t.Errorf("%d connections, want 2", srv.conns.Load())
	}
}

// With MAX_CONCURRENT_STREAMS 1 the client never has two streams open:
// the others wait for a slot.
func TestH2MaxConcurrentStreams(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	settled := make(chan struct{})
	var overlaps, answered atomic.Int32
	srv := startRawH2(t, ca, func(c *rawConn) {
		r, ok := c.next()
		if !ok {
			return
		}
		c.respond(r)
		if !c.settle(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}) {
			return
		}
		close(settled)
		reqs := make(chan rawRequest)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			defer close(reqs)
			for {
				r, ok := c.next()
				if !ok {
					return
				}
				reqs <- r
			}
		})
		for r := range reqs {
			// Give a client that ignores the limit the time to open
			// another stream before this one is answered.
			batch := []rawRequest{r}
			select {
			case r2, ok := <-reqs:
				if ok {
					overlaps.Add(1)
					batch = append(batch, r2)
				}
			case <-time.After(20 * time.Millisecond):
			}
			for _, r := range batch {
				answered.Add(1)
				c.respond(r)
			}
		}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	if err := exchangeA(t, tr, "first.example"); err != nil {
		t.Fatal(err)
	}
	<-settled
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if err := exchangeA(t, tr, fmt.Sprintf("s%d.example", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if overlaps.Load() != 0 || answered.Load() != 4 {
		t.Errorf("%d overlapping streams, %d answered", overlaps.Load(), answered.Load())
	}
}

// Interop with a second HTTP/2 implementation: unbound's DoH service
// (Debian's unbound, built on libnghttp2), queries multiplexed on one
// connection, answers padded by unbound and the padding stripped.
func TestH2AgainstUnbound(t *testing.T) {
	ub := upstreamtest.StartUnbound(t, upstreamtest.UnboundOptions{PortExtra: func(port uint16) []string {
		return []string{fmt.Sprintf("interface: 127.0.0.1@%d", port), fmt.Sprintf("https-port: %d", port)}
	}})
	port := ub.Extra.Port()
	counters := new(Counters)
	tr, err := NewTransport(fmt.Sprintf("https://%s:%d/dns-query?ip=127.0.0.1", ub.Name, port), Options{CAPEM: ub.CAPEM}, counters)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			name, qt, rcode := "a.test", dns.TypeA, dns.RcodeSuccess
			switch i % 3 {
			case 1:
				qt = dns.TypeAAAA
			case 2:
				name, rcode = fmt.Sprintf("missing%d.test", i), dns.RcodeNameError
			}
			resp, err := tr.Exchange(testCtx(t), query(name, qt), QueryOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			if resp.Rcode != rcode || (rcode == dns.RcodeSuccess && len(resp.Answer) != 1) || paddingOf(resp) >= 0 {
				t.Errorf("%s %d: %v", name, qt, resp)
			}
		})
	}
	wg.Wait()
	if counters.Queries.Load() != 40 || counters.Mismatches.Load() != 0 {
		t.Errorf("%d queries, %d mismatches", counters.Queries.Load(), counters.Mismatches.Load())
	}
}

// Close ends a connection still draining after GOAWAY too, not only the
// current one: the query on it fails and the server sees it closed.
func TestH2CloseEndsDrainingConnections(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	var n atomic.Int32
	drained := make(chan struct{})
	srv := startRawH2(t, ca, func(c *rawConn) {
		first := n.Add(1) == 1
		for {
			r, ok := c.next()
			if !ok {
				if first {
					close(drained)
				}
				return
			}
			if !first {
				c.respond(r)
				continue
			}
			c.wmu.Lock()
			_ = c.fr.WriteGoAway(r.id, http2.ErrCodeNo, nil) // and never answers
			c.wmu.Unlock()
		}
	})
	tr, _ := newDoHTransport(t, srv.URL, ca)
	stuck := make(chan error, 1)
	go func() { stuck <- exchangeA(t, tr, "stuck.example") }()
	eventually(t, "the first connection to be going away", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.conn != nil && !tr.conn.usable()
	})
	if err := exchangeA(t, tr, "fine.example"); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if err := <-stuck; !errors.Is(err, net.ErrClosed) {
		t.Errorf("query on the draining connection: %v, want net.ErrClosed", err)
	}
	<-drained
}
