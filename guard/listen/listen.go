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
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/portpair"
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
	// holds one. Default: 4 per CPU the runtime uses, 8 to 32.
	UDPReaders int
	// MaxSpill bounds the UDP queries answered on goroutines other than
	// the readers (spill workers) while nearly every reader waits on an
	// upstream.
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
		// Answering takes a CPU, waiting on an upstream none: a few
		// readers per CPU keep every CPU answering while some wait, and
		// beyond them a waiting reader hands the rest of its batch on
		// and queries spill onto goroutines (MaxSpill). Each reader
		// holds batchSize query buffers (10 KiB) and a stack grown by
		// the chain (10-30 KiB), per socket: a router's 1-2 CPUs get 8
		// (0.4 MiB for its two sockets, where 32 took 1.6).
		o.UDPReaders = min(max(4*runtime.GOMAXPROCS(0), 8), 32)
	}
	if o.MaxSpill <= 0 {
		o.MaxSpill = 1024
	}
}

// maxUDPQuery is the room for one query read over UDP: a question with
// EDNS, a cookie and client subnet is under 400 octets (a name is at most
// 255), and 1232 is the most the guard itself sends in one datagram
// (RFC 9715). Each reader holds batchSize of them, so they stay small. A
// longer query, read cut short, is answered with TC=1 and its question
// (cutAnswer): the device asks again over TCP, where any size is read.
const maxUDPQuery = 1232

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

	spillAt int32 // busy readers of a socket from which its queries are spilled
	// spills answers spilled queries: at most MaxSpill at once, on
	// workers that wait spillIdle for the next (their stacks grown once,
	// not for every query).
	spills *stage.Workers[spilled, spillRoom]

	Stats Stats
}

type handlerBox struct{ h stage.Handler }

// udpSocket is a bound UDP socket; pktinfo is set on one bound to the
// unspecified address, whose answers name their source address.
type udpSocket struct {
	c       *net.UDPConn
	local   netip.AddrPort
	pktinfo bool
	send    *udpSender // the spilled queries' answers
}

// New returns a server answering with h.
func New(h stage.Handler, opts Options, log *slog.Logger) *Server {
	opts.defaults()
	if log == nil {
		log = slog.Default()
	}
	s := &Server{opts: opts, log: log,
		spillAt:   int32(max(opts.UDPReaders-opts.UDPReaders/8, 1)),
		perClient: map[netip.Addr]int{}, conns: map[net.Conn]struct{}{}}
	s.spills = stage.NewWorkers(s.answerSpilled, opts.MaxSpill, spillIdle)
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
	u, t, err := portpair.Listen(a)
	if err != nil {
		return err
	}
	sock := &udpSocket{c: u, local: u.LocalAddr().(*net.UDPAddr).AddrPort()}
	if sock.local.Addr().IsUnspecified() {
		if err := enablePktinfo(u, sock.local.Addr().Is6()); err != nil {
			u.Close()
			t.Close()
			return fmt.Errorf("listen udp %s: %w", a, err)
		}
		sock.pktinfo = true
	}
	rc, err := u.SyscallConn()
	if err != nil {
		u.Close()
		t.Close()
		return fmt.Errorf("listen udp %s: %w", a, err)
	}
	sock.send = newUDPSender(rc, sock.pktinfo)
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
// the answers in progress. Queries do not give up when ctx ends (the
// chain sees a context without an end): a query waiting on the network
// waits no longer than the stage that waits allows (the upstream
// timeouts, the cache's flight deadline), and the owner of that stage may
// end its wait when serving stops (cmd/dnsguard closes the cache). So the
// cache resolves a miss on the listener's goroutine that asked, instead
// of handing it to another to wait there.
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
	s.wg.Wait() // the readers: nothing is spilled after
	s.spills.Close()
	return nil
}

// answer turns one message from a device into the bytes to send back,
// appended to out; nil means send nothing.
// The request is built in req, received at now.
func (s *Server) answer(ctx context.Context, raw []byte, client, local netip.AddrPort, tcp bool, out []byte, now time.Time, req *stage.Request) []byte {
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
	*req = stage.Request{Raw: raw, Q: q, Client: client, Local: local, TCP: tcp, Received: now}
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

// serveUDP is one of the socket's readers: it reads a batch of queries
// (recvmmsg), answers them inline and sends the answers together
// (sendmmsg). No goroutine is started per packet and, for a cache hit,
// nothing is allocated; the clock is read once per batch. A query that
// waits on an upstream holds only its own reader: before it waits (see
// stage.Waiting) the answers ready are sent and the rest of the batch is
// handed to other goroutines.
func (s *Server) serveUDP(ctx context.Context, u *udpSocket, busy *atomic.Int32) {
	rc, err := u.c.SyscallConn()
	if err != nil {
		s.log.Error("udp socket", "err", err)
		return
	}
	r := &udpReader{s: s, u: u, b: newUDPBatch(rc, u.pktinfo), busy: busy}
	r.ctx = ctx
	r.qctx = context.WithoutCancel(ctx) // see Serve
	r.wctx = stage.WithWaiter(r.qctx, r.waiting)
	r.sctx = noWaiter(r.qctx)
	for {
		n, err := r.b.read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			if n == 0 {
				continue
			}
		}
		r.now = time.Now()
		if cap(r.b.out) > 64*1024 { // a rare large answer: not kept
			r.b.out = make([]byte, 0, 4096)
		}
		r.b.out = r.b.out[:0]
		r.waited = false
		for r.next = 0; r.next < r.b.n; {
			i := r.next
			r.next++
			r.serve(i)
		}
		r.flush()
		// A reader whose queries wait on upstreams reads one at a time
		// (nothing to hand on); while they are answered at once it
		// reads ever larger batches again.
		if r.waited {
			r.b.want = 1
		} else {
			r.b.want = min(2*r.b.want, batchSize)
		}
	}
}

// noWaiter is ctx for queries answered where nothing waits on them (see
// stage.Waiting): said in front of a context.WithoutCancel, whose Value
// allocates each time it is asked (on every miss).
func noWaiter(ctx context.Context) context.Context { return stage.WithWaiter(ctx, nil) }

// udpReader is one reader goroutine's state.
type udpReader struct {
	s      *Server
	u      *udpSocket
	b      *udpBatch
	busy   *atomic.Int32
	ctx    context.Context
	qctx   context.Context // ctx without its end, for the queries (see Serve)
	wctx   context.Context // qctx with r.waiting
	sctx   context.Context // qctx for the queries spilled (noWaiter)
	now    time.Time       // when the batch was read
	next   int             // the batch's next message to answer
	waited bool            // a query of this batch waited on the network
	req    stage.Request   // the request being answered, reused
}

// slot is message i's sender and the address it was sent to, and
// whether it was cut short (longer than maxUDPQuery: raw is its start);
// ok is false for a message not to answer (counted).
func (r *udpReader) slot(i int) (raw []byte, client, local netip.AddrPort, ifindex int, cut, ok bool) {
	raw, cut, client, scope, ok := r.b.query(i)
	if !ok {
		return nil, client, local, 0, false, false
	}
	local = r.u.local
	if r.u.pktinfo {
		dst, idx, ok := parsePktinfo(r.b.control(i))
		if !ok || dst.IsMulticast() {
			return nil, client, local, 0, false, false // cannot answer from the right address
		}
		local, ifindex = netip.AddrPortFrom(dst, local.Port()), idx
	}
	a := client.Addr()
	if a.Is4In6() {
		// Our IPv6 sockets are IPv6-only (ListenOne binds udp6), so
		// an IPv4-mapped source was forged on the wire (RFC 4942
		// §2.2); unmapped it would pass as 127.0.0.1 or a LAN
		// device. Nothing can be answered to it: drop it.
		r.s.Stats.Queries.Add(1)
		r.s.Stats.Dropped.Add(1)
		return nil, client, local, 0, false, false
	}
	if scope != 0 && a.Is6() && a.IsLinkLocalUnicast() {
		a = a.WithZone(r.b.zone(scope))
	}
	return raw, netip.AddrPortFrom(a, client.Port()), local, ifindex, cut, true
}

// serve answers message i of the batch, queueing its answer.
func (r *udpReader) serve(i int) {
	s := r.s
	raw, client, local, ifindex, cut, ok := r.slot(i)
	if !ok {
		return
	}
	src := local.Addr()
	srcIf := pktinfoIfindex(src, client.Addr(), ifindex)
	if a := s.opts.Access; a != nil && !a.Allow(client.Addr(), ifindex) {
		start := len(r.b.out)
		if b := s.deny(raw, client, false, r.b.out); b != nil {
			r.b.out = b
			r.b.queue(i, start, len(b), src, srcIf)
		}
		return
	}
	if cut {
		start := len(r.b.out)
		if b := s.cutAnswer(raw, r.b.out); b != nil {
			r.b.out = b
			r.b.queue(i, start, len(b), src, srcIf)
		}
		return
	}
	if r.busy.Load() >= s.spillAt {
		// Nearly every reader waits on an upstream: answer this one
		// on a spill worker, so that cache hits are not held up
		// behind slow misses.
		s.spill(spilled{ctx: r.sctx, u: r.u, raw: append([]byte(nil), raw...), client: client, local: local,
			to: r.dest(i, src, srcIf)})
		return
	}
	r.busy.Add(1)
	start := len(r.b.out)
	b := s.answer(r.wctx, raw, client, local, false, r.b.out, r.now, &r.req)
	r.busy.Add(-1)
	r.req = stage.Request{} // let go of what the query referred to
	if b == nil {
		return
	}
	r.b.out = b
	r.b.queue(i, start, len(b), src, srcIf)
}

// waiting runs when the query being answered is about to wait on the
// network: the answers ready go out now, and the batch's other queries
// are handed to spill workers (within MaxSpill; those beyond
// stay with this reader).
func (r *udpReader) waiting() {
	r.waited = true
	r.flush()
	s := r.s
	for r.next < r.b.n {
		i := r.next
		raw, client, local, ifindex, cut, ok := r.slot(i)
		if ok {
			// Not into r.b.out: the answer in progress is appended there.
			to := r.dest(i, local.Addr(), pktinfoIfindex(local.Addr(), client.Addr(), ifindex))
			if a := s.opts.Access; a != nil && !a.Allow(client.Addr(), ifindex) {
				if b := s.deny(raw, client, false, nil); b != nil {
					r.u.send.send(b, &to)
				}
			} else if cut {
				if b := s.cutAnswer(raw, nil); b != nil {
					r.u.send.send(b, &to)
				}
			} else if !s.trySpill(spilled{ctx: r.sctx, u: r.u, raw: append([]byte(nil), raw...), client: client, local: local, to: to}) {
				return
			}
		}
		r.next++
	}
}

// flush sends the queued answers.
func (r *udpReader) flush() {
	if failed, err := r.b.flush(); failed > 0 && r.ctx.Err() == nil {
		r.s.log.Debug("udp write", "failed", failed, "err", err)
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

// cutAnswer answers a UDP query longer than maxUDPQuery, of which raw is
// the start: with TC=1 and its question, so that the device asks again
// over TCP (RFC 7766 §5), where the query is read whole; servers that
// limit UDP (response rate limiting's "slip") answer the same way. It has
// no OPT record: the query's was not read. What could not be answered in
// full anyway gets what answer would give it: nothing for a response,
// NOTIMP for another opcode, FORMERR for a question that does not parse.
func (s *Server) cutAnswer(raw []byte, out []byte) []byte {
	s.Stats.Queries.Add(1)
	q, err := dnswire.ParseQuery(raw)
	switch {
	case errors.Is(err, dnswire.ErrShort) || errors.Is(err, dnswire.ErrNotQuery):
		s.Stats.Malformed.Add(1)
		return nil
	case q.Opcode != dns.OpcodeQuery:
		s.Stats.Malformed.Add(1)
		qp := &q
		if q.NameEnd == 0 {
			qp = nil
		}
		return dnswire.AppendError(out, raw, qp, dns.RcodeNotImplemented)
	case q.NameEnd == 0:
		s.Stats.Malformed.Add(1)
		return dnswire.AppendError(out, raw, nil, dns.RcodeFormatError)
	}
	s.Stats.Truncated.Add(1)
	start := len(out)
	out = dnswire.AppendError(out, raw, &q, dns.RcodeSuccess)
	out[start+2] |= 0x02 // TC
	return out
}

// spill answers one UDP query on a spill worker, within
// MaxSpill; beyond it the query is dropped (the device will retry).
func (s *Server) spill(sp spilled) {
	if !s.trySpill(sp) {
		s.Stats.Queries.Add(1)
		s.Stats.Dropped.Add(1)
	}
}

// spillIdle is how long a spill worker waits for its next query before
// it exits: under load the next comes within milliseconds.
const spillIdle = time.Second

// spilled is a UDP query handed to a spill worker.
type spilled struct {
	ctx           context.Context
	u             *udpSocket
	raw           []byte
	client, local netip.AddrPort
	to            udpDest // where the answer goes
}

// spillRoom is a spill worker's own: the request it answers in and the
// buffer it writes the answer in.
type spillRoom struct {
	req stage.Request
	out []byte
}

// answerSpilled answers a spilled query on a spill worker; its answer
// goes out with those of the others ready with it (udpSender).
func (s *Server) answerSpilled(room *spillRoom, sp spilled) {
	if b := s.answer(sp.ctx, sp.raw, sp.client, sp.local, false, room.out[:0], time.Now(), &room.req); b != nil {
		sp.u.send.send(b, &sp.to)
		if cap(b) <= 4096 { // a rare large answer: not kept
			room.out = b
		}
	}
	room.req = stage.Request{} // let go of what the query referred to
}

// trySpill answers one UDP query on a spill worker, one waiting or a new
// one if fewer than MaxSpill are busy, and reports whether it does.
func (s *Server) trySpill(sp spilled) bool {
	if !s.spills.Go(sp) {
		return false
	}
	s.Stats.Spilled.Add(1)
	return true
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
	qctx := noWaiter(context.WithoutCancel(ctx)) // see Serve
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
			out := s.answer(qctx, msg, client, local, true, append(msg[n:n], 0, 0), time.Now(), new(stage.Request))
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
