package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Do53 over UDP.
const (
	portTries   = 16                     // random ports tried before letting the kernel pick
	drainWindow = 250 * time.Millisecond // how long the socket stays open for late copies
	drainMax    = 32                     // packets read while draining
	drainers    = 64                     // sockets draining at once; beyond that, close at once
)

// udp is Do53 over UDP. Every query gets a fresh socket on a port drawn
// from 1024-65535 with the CSPRNG (retrying on EADDRINUSE) and a fresh
// CSPRNG transaction ID (RFC 5452 §9.2). The socket is not connected, so
// responses from any other address or port are seen, dropped and counted
// as mismatches, as are responses whose ID or question differ (RFC 5452
// §9.1; with 0x20 the name must echo the randomised case exactly). The
// first matching response wins; the socket then stays open briefly to
// count further copies as flood. A truncated answer is asked again over
// TCP. Queries advertise EDNS(0) 1232 and are never padded (RFC 7830 §6).
// udpBuffer bounds a UDP answer read: the guard advertises 1232 octets
// (RFC 9715), so anything of 4 KiB or more is answered over TCP instead.
// A small buffer keeps the memory of queries in flight low.
const udpBuffer = 4096

// errOversize is an answer larger than udpBuffer.
var errOversize = errors.New("answer larger than the UDP buffer")

type udp struct {
	ep   *Endpoint
	cfg  config
	tcp  *stream
	bufs sync.Pool // *[]byte of udpBuffer octets
	qbuf queryBufs // a query's wire form, reused once it is sent

	muxMu  sync.Mutex
	mux    *udpMux // nil until the first query
	closed bool
}

func newUDP(ep *Endpoint, cfg config) *udp {
	u := &udp{ep: ep, cfg: cfg, tcp: newStream(ep, cfg, false)}
	u.bufs.New = func() any { b := make([]byte, udpBuffer); return &b }
	return u
}

func (u *udp) String() string { return u.ep.String() }

// Close fails the queries waiting, closes every socket and the TCP
// connection kept for truncated answers.
func (u *udp) Close() error {
	u.muxMu.Lock()
	m := u.mux
	u.closed = true
	u.muxMu.Unlock()
	if m != nil {
		m.Close()
	}
	return u.tcp.Close()
}

// Reset drops the TCP connection kept for truncated answers.
func (u *udp) Reset() { u.tcp.Reset() }

// Exchange sends q from a fresh random port and waits for the answer.
func (u *udp) Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	return u.exchangeBy(ctx, time.Time{}, q, o)
}

// exchangeBy is Exchange that also gives up at deadline (zero: ctx only),
// kept by the reader: the pool's attempts need no context of their own.
// The query is written from q without copying it (appendQuery) into a
// buffer reused once it is sent; the answer is matched against what was
// sent (ID, opcode, question; with 0x20 the name in the case sent).
func (u *udp) exchangeBy(ctx context.Context, deadline time.Time, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	exact := o.Case0x20.on(u.cfg.randomize)
	id := randomID()
	sent := sentOf(q, id)
	wq := q
	if exact {
		// The question in random case: a shallow copy of q with a
		// question of its own (q is not changed).
		sent.question.Name = randomizeCase(sent.question.Name)
		c := *q
		c.Question = []dns.Question{sent.question}
		wq = &c
	}
	resp, err := u.exchange(ctx, deadline, wq, sent, exact)
	if errors.Is(err, errOversize) {
		return u.overTCP(ctx, deadline, q, o) // more than it was asked for (EDNS 1232): as if TC
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.ep, err)
	}
	if resp.Truncated {
		return u.overTCP(ctx, deadline, q, o)
	}
	restoreName(resp, q.Question[0].Name)
	stripPadding(resp)
	return resp, nil
}

// overTCP asks q again over TCP, within deadline if it is set.
func (u *udp) overTCP(ctx context.Context, deadline time.Time, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return u.tcp.Exchange(ctx, q, o)
}

// exchange sends q (as sent, with its ID) through the multiplexer.
func (u *udp) exchange(ctx context.Context, deadline time.Time, q *dns.Msg, sent sentQuery, exact bool) (*dns.Msg, error) {
	bp := u.qbuf.get()
	b, err := appendQuery((*bp)[:0], q, sent.id, false)
	defer func() { u.qbuf.put(bp, b) }()
	if err != nil {
		return nil, err
	}
	mux, err := u.muxer()
	if err != nil {
		return nil, err
	}
	return mux.exchange(ctx.Done(), ctx.Err, deadline, sent, b, exact)
}

// muxer returns the socket multiplexer, started on first use.
func (u *udp) muxer() (*udpMux, error) {
	u.muxMu.Lock()
	defer u.muxMu.Unlock()
	if u.closed {
		return nil, errMuxClosed
	}
	if u.mux == nil {
		m, err := newUDPMux(u)
		if err != nil {
			return nil, err
		}
		u.mux = m
	}
	return u.mux, nil
}

func sameAddr(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}
