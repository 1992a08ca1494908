// Package listen serves the guard's chain to devices over UDP and TCP
// (RFC 7766: pipelined queries answered out of order on one connection,
// idle timeout, connection limits). It parses each query on the wire,
// answers malformed ones itself (FORMERR) and shapes every answer for the
// device that asked (dnswire.AppendResponse).
package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// Options bound what devices can hold open.
type Options struct {
	TCPIdleTimeout  time.Duration // RFC 7766 §6.2.3
	TCPMaxConns     int           // RFC 7766 §10
	TCPMaxPerClient int
	TCPMaxInflight  int // pipelined queries per connection being answered at once
	// UDPReaders is how many queries per UDP socket can be answered at
	// once (each reader answers inline); a query waiting on an upstream
	// holds one.
	UDPReaders int
	// MaxSpill bounds the UDP queries answered on goroutines of their own
	// while nearly every reader waits on an upstream.
	MaxSpill int
}

func (o *Options) defaults() {
	if o.TCPIdleTimeout <= 0 {
		o.TCPIdleTimeout = 10 * time.Second
	}
	if o.TCPMaxConns <= 0 {
		o.TCPMaxConns = 256
	}
	if o.TCPMaxPerClient <= 0 {
		o.TCPMaxPerClient = 16
	}
	if o.TCPMaxInflight <= 0 {
		o.TCPMaxInflight = 32
	}
	if o.UDPReaders <= 0 {
		o.UDPReaders = 64
	}
	if o.MaxSpill <= 0 {
		o.MaxSpill = 1024
	}
}

// maxUDPQuery bounds a query read over UDP. A question with EDNS and a
// cookie is under 300 octets; the buffer is per reader, so it stays small.
const maxUDPQuery = 4096

// Stats counts what the listener did.
type Stats struct {
	Queries, Malformed, Dropped, Truncated, TCPRefused, Spilled atomic.Uint64
}

// Server answers devices with a chain that can be swapped (on reload).
type Server struct {
	opts    Options
	log     *slog.Logger
	handler atomic.Pointer[handlerBox]
	udp     []*net.UDPConn
	tcp     []*net.TCPListener

	mu        sync.Mutex
	perClient map[netip.Addr]int
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup

	spillAt  int32         // busy readers of a socket from which its queries are spilled
	spilling chan struct{} // spilled queries being answered

	Stats Stats
}

type handlerBox struct{ h stage.Handler }

// New returns a server answering with h.
func New(h stage.Handler, opts Options, log *slog.Logger) *Server {
	opts.defaults()
	if log == nil {
		log = slog.Default()
	}
	s := &Server{opts: opts, log: log,
		spillAt:   int32(max(opts.UDPReaders-opts.UDPReaders/8, 1)),
		spilling:  make(chan struct{}, opts.MaxSpill),
		perClient: map[netip.Addr]int{}, conns: map[net.Conn]struct{}{}}
	s.SetHandler(h)
	return s
}

// SetHandler swaps the chain; queries in progress finish on the old one.
func (s *Server) SetHandler(h stage.Handler) { s.handler.Store(&handlerBox{h}) }

// Listen binds UDP and TCP on every address (IP:PORT). Port 0 binds the
// same free port for both. It fails, closing what it bound, if any fails.
func (s *Server) Listen(addrs []string) error {
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			s.closeAll()
			return fmt.Errorf("listen %q: %w", a, err)
		}
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			s.closeAll()
			return fmt.Errorf("listen udp %s: %w", a, err)
		}
		s.udp = append(s.udp, u)
		bound := u.LocalAddr().(*net.UDPAddr).AddrPort()
		t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err != nil {
			s.closeAll()
			return fmt.Errorf("listen tcp %s: %w", bound, err)
		}
		s.tcp = append(s.tcp, t)
	}
	return nil
}

// Addrs returns the bound addresses (UDP and TCP share each).
func (s *Server) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, u := range s.udp {
		out = append(out, u.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return out
}

func (s *Server) closeAll() {
	for _, u := range s.udp {
		u.Close()
	}
	for _, t := range s.tcp {
		t.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// Serve answers until ctx is done, then closes the sockets and waits for
// the answers in progress.
func (s *Server) Serve(ctx context.Context) error {
	for _, u := range s.udp {
		busy := new(atomic.Int32) // readers of this socket inside answer
		for range s.opts.UDPReaders {
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serveUDP(ctx, u, busy) }()
		}
	}
	for _, t := range s.tcp {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.serveTCP(ctx, t) }()
	}
	<-ctx.Done()
	s.closeAll()
	s.wg.Wait()
	return nil
}

// answer turns one message from a device into the bytes to send back,
// appended to out; nil means send nothing.
func (s *Server) answer(ctx context.Context, raw []byte, client, local netip.AddrPort, tcp bool, out []byte) []byte {
	s.Stats.Queries.Add(1)
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		s.Stats.Malformed.Add(1)
		if errors.Is(err, dnswire.ErrShort) || errors.Is(err, dnswire.ErrNotQuery) {
			return nil // nothing to answer, or a response: never answer those
		}
		qp := &q
		if q.NameEnd == 0 {
			qp = nil
		}
		// The opcode is read before anything else (RFC 8906 §3.1.4): an
		// opcode the guard does not serve gets NOTIMP even when its
		// question section does not parse.
		rcode := dns.RcodeFormatError
		if q.Opcode != dns.OpcodeQuery {
			rcode = dns.RcodeNotImplemented
		}
		return dnswire.AppendError(out, raw, qp, rcode)
	}
	// No per-query timer here: the stages that wait (the upstream pool,
	// the cache's shared flight) bound their own waits.
	req := &stage.Request{Raw: raw, Q: q, Client: client, Local: local, TCP: tcp, Received: time.Now()}
	r, err := s.handler.Load().h.ServeDNS(ctx, req)
	if err != nil {
		r = stage.ErrorReply(req, err)
	}
	limit := dnswire.SizeLimit(&req.Q, tcp)
	b := dnswire.AppendResponse(out, &req.Q, r, limit)
	if len(b) > 2 && b[len(out)+2]&0x02 != 0 {
		s.Stats.Truncated.Add(1)
	}
	return b
}

// serveUDP is one of the socket's readers: it reads a query, answers it
// and writes the answer, all inline. No goroutine is started per packet
// (a cache hit costs two syscalls and a copy); a query that waits on an
// upstream holds only its own reader while the others go on.
func (s *Server) serveUDP(ctx context.Context, u *net.UDPConn, busy *atomic.Int32) {
	local := u.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, maxUDPQuery)
	out := make([]byte, 0, 4096)
	for {
		n, client, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			continue
		}
		if n == len(buf) { // cut short: no real query is this large
			s.Stats.Queries.Add(1)
			s.Stats.Malformed.Add(1)
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		if busy.Load() >= s.spillAt {
			// Nearly every reader waits on an upstream: answer this one
			// on its own goroutine, so that cache hits are not held up
			// behind slow misses.
			s.spill(ctx, u, append([]byte(nil), buf[:n]...), client, local)
			continue
		}
		busy.Add(1)
		b := s.answer(ctx, buf[:n], client, local, false, out[:0])
		busy.Add(-1)
		if b == nil {
			continue
		}
		if _, err := u.WriteToUDPAddrPort(b, client); err != nil && ctx.Err() == nil {
			s.log.Debug("udp write", "client", client, "err", err)
		}
		if cap(b) <= 64*1024 {
			out = b
		}
	}
}

// spill answers one UDP query on a goroutine of its own, within
// MaxSpill; beyond it the query is dropped (the device will retry).
func (s *Server) spill(ctx context.Context, u *net.UDPConn, raw []byte, client, local netip.AddrPort) {
	select {
	case s.spilling <- struct{}{}:
	default:
		s.Stats.Queries.Add(1)
		s.Stats.Dropped.Add(1)
		return
	}
	s.Stats.Spilled.Add(1)
	s.wg.Add(1)
	go func() {
		defer func() { <-s.spilling; s.wg.Done() }()
		if b := s.answer(ctx, raw, client, local, false, nil); b != nil {
			u.WriteToUDPAddrPort(b, client)
		}
	}()
}

func (s *Server) serveTCP(ctx context.Context, l *net.TCPListener) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if !s.admit(c, client.Addr()) {
			s.Stats.TCPRefused.Add(1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.release(c, client.Addr())
			s.serveConn(ctx, c, client)
		}()
	}
}

func (s *Server) admit(c net.Conn, ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= s.opts.TCPMaxConns || s.perClient[ip] >= s.opts.TCPMaxPerClient {
		return false
	}
	s.conns[c] = struct{}{}
	s.perClient[ip]++
	return true
}

func (s *Server) release(c net.Conn, ip netip.Addr) {
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.perClient[ip]--; s.perClient[ip] <= 0 {
		delete(s.perClient, ip)
	}
}

// serveConn reads pipelined queries and answers each as soon as it is
// ready, in any order (RFC 7766 §6.2.1.1, §7). The idle timer restarts
// only on a complete message (§6.2.3).
func (s *Server) serveConn(ctx context.Context, c *net.TCPConn, client netip.AddrPort) {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	var (
		wmu      sync.Mutex
		inflight = make(chan struct{}, s.opts.TCPMaxInflight)
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	hdr := make([]byte, 2)
	for {
		c.SetReadDeadline(time.Now().Add(s.opts.TCPIdleTimeout))
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := int(hdr[0])<<8 | int(hdr[1])
		msg := make([]byte, n, n+2048)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-inflight; wg.Done() }()
			// Room for the length prefix, then the answer.
			out := s.answer(ctx, msg, client, local, true, append(msg[n:n], 0, 0))
			if out == nil {
				return
			}
			l := len(out) - 2
			out[0], out[1] = byte(l>>8), byte(l)
			wmu.Lock()
			defer wmu.Unlock()
			c.SetWriteDeadline(time.Now().Add(s.opts.TCPIdleTimeout))
			if _, err := c.Write(out); err != nil { // length and message in one write (§8)
				c.Close()
			}
		}()
	}
}
