package upstreamtest

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// DoTEcho is a DoT server on 127.0.0.1 for benchmarks: it answers every
// query NXDOMAIN by turning it around (QR, RA and the rcode set, the rest
// as it came, OPT and padding included), in order, from one goroutine per
// connection, and allocates nothing per query, so a benchmark's
// allocations are its client's. It records nothing.
type DoTEcho struct {
	Addr netip.AddrPort
	Name string // the DNS name its certificate carries

	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// StartDoTEcho starts a DoTEcho with a certificate from ca for "dot.test"
// and 127.0.0.1; it stops when the test ends.
func StartDoTEcho(t testing.TB, ca *CA) *DoTEcho {
	t.Helper()
	cert := ca.Issue(t, "dot.test", "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	s := &DoTEcho{Addr: netip.MustParseAddrPort(ln.Addr().String()), Name: "dot.test", ln: ln}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// URL is the tls:// URL of the server, its name as the SNI.
func (s *DoTEcho) URL() string { return "tls://" + s.Addr.String() + "?sni=" + s.Name }

// Close stops the server and waits for its goroutines.
func (s *DoTEcho) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *DoTEcho) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			r := bufio.NewReaderSize(c, 4096)
			buf := make([]byte, 2+65535)
			for {
				if _, err := io.ReadFull(r, buf[:2]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint16(buf))
				if _, err := io.ReadFull(r, buf[2:2+n]); err != nil {
					return
				}
				if n >= 12 {
					buf[2+2] |= 0x80 // QR
					buf[2+3] = 0x83  // RA, NXDOMAIN
				}
				if _, err := c.Write(buf[:2+n]); err != nil {
					return
				}
			}
		}()
	}
}
