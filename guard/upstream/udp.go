package upstream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"syscall"
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
	ep     *Endpoint
	cfg    config
	tcp    *stream
	drains chan struct{}
	bufs   sync.Pool // *[]byte of udpBuffer octets
}

func newUDP(ep *Endpoint, cfg config) *udp {
	u := &udp{ep: ep, cfg: cfg, tcp: newStream(ep, cfg, false), drains: make(chan struct{}, drainers)}
	u.bufs.New = func() any { b := make([]byte, udpBuffer); return &b }
	return u
}

func (u *udp) String() string { return u.ep.String() }

// Close closes the TCP connection kept for truncated answers.
func (u *udp) Close() error { return u.tcp.Close() }

// Reset drops the TCP connection kept for truncated answers.
func (u *udp) Reset() { u.tcp.Reset() }

// Exchange sends q from a fresh random port and waits for the answer.
func (u *udp) Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	exact := o.Case0x20.on(u.cfg.randomize)
	m := prepare(q, randomID(), false)
	if exact {
		m.Question[0].Name = randomizeCase(m.Question[0].Name)
	}
	resp, err := u.exchange(ctx, m, exact)
	if errors.Is(err, errOversize) {
		return u.tcp.Exchange(ctx, q, o) // more than it was asked for (EDNS 1232): as if TC
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.ep, err)
	}
	if resp.Truncated {
		return u.tcp.Exchange(ctx, q, o)
	}
	restoreName(resp, q.Question[0].Name)
	stripPadding(resp)
	return resp, nil
}

func (u *udp) exchange(ctx context.Context, m *dns.Msg, exact bool) (*dns.Msg, error) {
	b, err := pack(m)
	if err != nil {
		return nil, err
	}
	conn, err := listenRandomPort(u.ep.Addr.Addr())
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			_ = conn.Close()
		}
	}()
	// Reads end when ctx does (its deadline included), so that ctx.Err()
	// is set by the time a read fails.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	u.cfg.counters.Queries.Add(1)
	if _, err := conn.WriteToUDPAddrPort(b, u.ep.Addr); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	bp := u.bufs.Get().(*[]byte)
	defer u.bufs.Put(bp)
	buf := *bp
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("receive: %w", err)
		}
		if !sameAddr(from, u.ep.Addr) {
			u.cfg.counters.Mismatches.Add(1)
			continue
		}
		if n == len(buf) {
			return nil, errOversize
		}
		resp, err := match(m, buf[:n], exact)
		var ce *CaseError
		if errors.As(err, &ce) {
			// Right ID, port and question but the case: the pool asks
			// again without 0x20 and compares (unbound's fallback).
			return nil, err
		}
		if err != nil {
			u.cfg.counters.Mismatches.Add(1)
			continue
		}
		keep = u.drain(conn, m, exact)
		return resp, nil
	}
}

// drain keeps conn open for a short while in the background and counts
// what still arrives: copies of the answer from the upstream as flood,
// anything else as mismatches. It reports false (and does nothing) when
// too many sockets are draining already.
func (u *udp) drain(conn *net.UDPConn, sent *dns.Msg, exact bool) bool {
	select {
	case u.drains <- struct{}{}:
	default:
		return false
	}
	go func() {
		defer func() { <-u.drains }()
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(drainWindow))
		bp := u.bufs.Get().(*[]byte)
		defer u.bufs.Put(bp)
		buf := *bp
		for range drainMax {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := match(sent, buf[:n], exact); err == nil && sameAddr(from, u.ep.Addr) {
				u.cfg.counters.Flood.Add(1)
			} else {
				u.cfg.counters.Mismatches.Add(1)
			}
		}
	}()
	return true
}

func sameAddr(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}

// listenRandomPort opens an unconnected UDP socket of server's family on
// a port from 1024-65535 drawn with the CSPRNG (RFC 5452 §9.2), retrying
// on ports in use; after portTries it lets the kernel pick an ephemeral
// port, which Linux also randomises.
func listenRandomPort(server netip.Addr) (*net.UDPConn, error) {
	network, unspec := "udp4", netip.IPv4Unspecified()
	if server.Unmap().Is6() {
		network, unspec = "udp6", netip.IPv6Unspecified()
	}
	var lastErr error
	for range portTries {
		p, err := rand.Int(rand.Reader, big.NewInt(65536-1024))
		if err != nil {
			return nil, err
		}
		port := uint16(1024 + p.Int64())
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(unspec, port)))
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("open socket: %w", err)
		}
		lastErr = err
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(unspec, 0)))
	if err != nil {
		return nil, fmt.Errorf("open socket: %w (random ports: %v)", err, lastErr)
	}
	return c, nil
}
