package upstreamtest

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DoTOptions configure a test DoT server.
type DoTOptions struct {
	Cert    *tls.Certificate // default: issued by the CA for "dot.test" and 127.0.0.1
	Handler Handler          // default: AnswerA("192.0.2.1")
	// HandshakeDelay holds each new connection this long before the TLS
	// handshake, as a far-away or loaded resolver would.
	HandshakeDelay time.Duration
}

// DoT is a DNS-over-TLS server on 127.0.0.1 that records every query. It
// reads pipelined queries and answers each from its own goroutine, so a
// handler that delays answers makes them go out of order.
type DoT struct {
	recorder
	Addr netip.AddrPort
	Name string // the DNS name its default certificate carries

	ln      net.Listener
	handler Handler
	delay   time.Duration

	mu       sync.Mutex
	conns    []net.Conn
	answered []string // question names in the order answers were written
	wg       sync.WaitGroup
}

// StartDoT starts a DoT server; it stops when the test ends.
func StartDoT(t testing.TB, ca *CA, opts DoTOptions) *DoT {
	t.Helper()
	if opts.Cert == nil {
		c := ca.Issue(t, "dot.test", "127.0.0.1")
		opts.Cert = &c
	}
	if opts.Handler == nil {
		opts.Handler = AnswerA("192.0.2.1")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*opts.Cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	s := &DoT{Addr: netip.MustParseAddrPort(ln.Addr().String()), Name: "dot.test", ln: ln, handler: opts.Handler, delay: opts.HandshakeDelay}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// URL returns the tls:// URL for this server with the given SNI (none if
// empty) and extra query parameters (e.g. "pin=sha256/...").
func (s *DoT) URL(sni string, params ...string) string {
	u := "tls://" + s.Addr.String()
	sep := "?"
	if sni != "" {
		u += sep + "sni=" + sni
		sep = "&"
	}
	for _, p := range params {
		u += sep + p
		sep = "&"
	}
	return u
}

// Conns reports how many connections were accepted.
func (s *DoT) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Answered returns the question names of the answers written, in order.
func (s *DoT) Answered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.answered...)
}

// CloseConns closes every open connection (the server keeps listening),
// as a resolver does when it sheds idle clients.
func (s *DoT) CloseConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// Close stops the server.
func (s *DoT) Close() {
	_ = s.ln.Close()
	s.CloseConns()
	s.wg.Wait()
}

func (s *DoT) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		n := len(s.conns)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(c, n)
	}
}

func (s *DoT) serveConn(c net.Conn, n int) {
	defer s.wg.Done()
	defer c.Close()
	var writeMu sync.Mutex
	var handlers sync.WaitGroup
	defer handlers.Wait()
	time.Sleep(s.delay)
	for {
		raw, err := ReadMsg(c)
		if err != nil {
			return
		}
		s.add(Received{Raw: raw, Conn: n})
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			q := new(dns.Msg)
			if q.Unpack(raw) != nil {
				return
			}
			r := s.handler(q)
			if r == nil {
				return
			}
			b, err := r.Pack()
			if err != nil {
				return
			}
			writeMu.Lock()
			defer writeMu.Unlock()
			if WriteMsg(c, b) == nil && len(r.Question) > 0 {
				s.mu.Lock()
				s.answered = append(s.answered, r.Question[0].Name)
				s.mu.Unlock()
			}
		}()
	}
}

// ReadMsg reads one length-prefixed DNS message from a stream.
func ReadMsg(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// WriteMsg writes one DNS message with its length prefix in one write.
func WriteMsg(w io.Writer, b []byte) error {
	if len(b) > 65535 {
		return errors.New("message too long")
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
