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
	// Access decides which clients are answered; nil answers everyone.
	Access *Access
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
	// Denied counts queries (UDP) and connections (TCP) from clients
	// Access does not allow.
	Denied atomic.Uint64
}

// deniedLogEvery bounds how often a refused client is logged.
const deniedLogEvery = 10 * time.Second

// Server answers devices with a chain that can be swapped (on reload).
type Server struct {
	opts    Options
	log     *slog.Logger
	handler atomic.Pointer[handlerBox]
	udp     []*udpSocket
	tcp     []*net.TCPListener

	deniedLogged atomic.Int64 // unix nanoseconds of the last denial logged
	deniedSince  atomic.Uint64

	mu        sync.Mutex
	perClient map[netip.Addr]int
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup

	spillAt  int32         // busy readers of a socket from which its queries are spilled
	spilling chan struct{} // spilled queries being answered

	Stats Stats
}

type handlerBox struct{ h stage.Handler }

// udpSocket is a bound UDP socket; pktinfo is set on one bound to the
// unspecified address, whose answers name their source address.
type udpSocket struct {
	c       *net.UDPConn
	local   netip.AddrPort
	pktinfo bool
}

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
// An unspecified address (0.0.0.0, [::]) takes queries to every address
// of its family, and each answer leaves from the address it was sent to.
func (s *Server) Listen(addrs []string) error {
	for _, a := range addrs {
		if err := s.ListenOne(a); err != nil {
			s.closeAll()
			return err
		}
	}
	return nil
}

// ListenOne binds UDP and TCP on one address, leaving what is already
// bound alone if it fails.
func (s *Server) ListenOne(a string) error {
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		return fmt.Errorf("listen %q: %w", a, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	// One socket per family: "udp" on an unspecified address would be a
	// dual-stack socket, and 0.0.0.0 and [::] could not both be bound.
	udpNet, tcpNet := "udp6", "tcp6"
	if ap.Addr().Is4() {
		udpNet, tcpNet = "udp4", "tcp4"
	}
	u, err := net.ListenUDP(udpNet, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", a, err)
	}
	sock := &udpSocket{c: u, local: u.LocalAddr().(*net.UDPAddr).AddrPort()}
	if ap.Addr().IsUnspecified() {
		if err := enablePktinfo(u, ap.Addr().Is6()); err != nil {
			u.Close()
			return fmt.Errorf("listen udp %s: %w", a, err)
		}
		sock.pktinfo = true
	}
	t, err := net.ListenTCP(tcpNet, net.TCPAddrFromAddrPort(sock.local))
	if err != nil {
		u.Close()
		return fmt.Errorf("listen tcp %s: %w", sock.local, err)
	}
	s.udp = append(s.udp, sock)
	s.tcp = append(s.tcp, t)
	return nil
}

// Addrs returns the bound addresses (UDP and TCP share each).
func (s *Server) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, u := range s.udp {
		out = append(out, u.local)
	}
	return out
}

func (s *Server) closeAll() {
	for _, u := range s.udp {
		u.c.Close()
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
func (s *Server) serveUDP(ctx context.Context, u *udpSocket, busy *atomic.Int32) {
	buf := make([]byte, maxUDPQuery)
	out := make([]byte, 0, 4096)
	var oob, oobOut []byte
	if u.pktinfo {
		oob, oobOut = make([]byte, oobSize), make([]byte, 0, oobSize)
	}
	for {
		local := u.local
		var (
			n, oobn, ifindex int
			client           netip.AddrPort
			err              error
		)
		if u.pktinfo {
			n, oobn, _, client, err = u.c.ReadMsgUDPAddrPort(buf, oob)
		} else {
			n, client, err = u.c.ReadFromUDPAddrPort(buf)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			continue
		}
		if u.pktinfo {
			dst, idx, ok := parsePktinfo(oob[:oobn])
			if !ok || dst.IsMulticast() {
				continue // cannot answer from the right address
			}
			local, ifindex = netip.AddrPortFrom(dst, local.Port()), idx
		}
		if n == len(buf) { // cut short: no real query is this large
			s.Stats.Queries.Add(1)
			s.Stats.Malformed.Add(1)
			continue
		}
		if client.Addr().Is4In6() {
			// Our IPv6 sockets are IPv6-only (ListenOne binds udp6), so
			// an IPv4-mapped source was forged on the wire (RFC 4942
			// §2.2); unmapped it would pass as 127.0.0.1 or a LAN
			// device. Nothing can be answered to it: drop it.
			s.Stats.Queries.Add(1)
			s.Stats.Dropped.Add(1)
			continue
		}
		var src []byte
		if u.pktinfo {
			src = appendPktinfo(oobOut[:0], local.Addr(), pktinfoIfindex(local.Addr(), client.Addr(), ifindex))
		}
		if a := s.opts.Access; a != nil && !a.Allow(client.Addr(), ifindex) {
			if b := s.deny(buf[:n], client, false, out[:0]); b != nil {
				u.c.WriteMsgUDPAddrPort(b, src, client)
			}
			continue
		}
		if busy.Load() >= s.spillAt {
			// Nearly every reader waits on an upstream: answer this one
			// on its own goroutine, so that cache hits are not held up
			// behind slow misses.
			s.spill(ctx, u, append([]byte(nil), buf[:n]...), client, local, append([]byte(nil), src...))
			continue
		}
		busy.Add(1)
		b := s.answer(ctx, buf[:n], client, local, false, out[:0])
		busy.Add(-1)
		if b == nil {
			continue
		}
		if _, _, err := u.c.WriteMsgUDPAddrPort(b, src, client); err != nil && ctx.Err() == nil {
			s.log.Debug("udp write", "client", client, "err", err)
		}
		if cap(b) <= 64*1024 {
			out = b
		}
	}
}

// pktinfoIfindex is the interface an answer from local to client must
// leave by: the one the query came in on when either address is
// link-local (which only means something on its link), else 0, so the
// routing table decides.
func pktinfoIfindex(local, client netip.Addr, ifindex int) int {
	if local.Is6() && (local.IsLinkLocalUnicast() || client.IsLinkLocalUnicast()) {
		return ifindex
	}
	return 0
}

// deny counts a query from a client outside Access and returns the
// REFUSED to send (over UDP; TCP connections are closed at accept). The
// first denial in each deniedLogEvery is logged with the count since.
func (s *Server) deny(raw []byte, client netip.AddrPort, tcp bool, out []byte) []byte {
	s.Stats.Denied.Add(1)
	s.deniedSince.Add(1)
	now := time.Now().UnixNano()
	if last := s.deniedLogged.Load(); now-last >= int64(deniedLogEvery) && s.deniedLogged.CompareAndSwap(last, now) {
		s.log.Warn("refused a client outside the LAN and allow_client", "client", client.Addr(), "tcp", tcp,
			"refused_since_last_log", s.deniedSince.Swap(0), "refused_total", s.Stats.Denied.Load())
	}
	if tcp {
		return nil
	}
	q, err := dnswire.ParseQuery(raw)
	if err != nil {
		return nil // not a query we could answer anyway
	}
	return dnswire.AppendError(out, raw, &q, dns.RcodeRefused)
}

// spill answers one UDP query on a goroutine of its own, within
// MaxSpill; beyond it the query is dropped (the device will retry).
func (s *Server) spill(ctx context.Context, u *udpSocket, raw []byte, client, local netip.AddrPort, src []byte) {
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
			u.c.WriteMsgUDPAddrPort(b, src, client)
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
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		if a := s.opts.Access; a != nil && !a.Allow(client.Addr(), 0) {
			s.deny(nil, client, true, nil)
			c.Close()
			continue
		}
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
