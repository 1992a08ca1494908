package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// lookupHost asks the DNS server at server for host's A and AAAA records
// (UDP, TCP when the answer is truncated) and returns the addresses in the
// answers. It stands in for net.Resolver, whose stub resolver would
// otherwise be linked into the router binary (about 200 kB on mipsle) for
// this one use: resolving DoH host names through the guard itself.
func lookupHost(ctx context.Context, server netip.AddrPort, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ips, err := lookupType(ctx, server, host, qt)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", host, dns.TypeToString[qt], err))
			continue
		}
		addrs = append(addrs, ips...)
	}
	if len(addrs) == 0 {
		if len(errs) == 0 {
			errs = append(errs, fmt.Errorf("%s: no addresses", host))
		}
		return nil, errors.Join(errs...)
	}
	return addrs, nil
}

func lookupType(ctx context.Context, server netip.AddrPort, host string, qt uint16) ([]netip.Addr, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(host), qt)
	var id [2]byte
	_, _ = rand.Read(id[:])
	q.Id = uint16(id[0])<<8 | uint16(id[1])
	q.SetEdns0(1232, false)
	wire, err := q.Pack()
	if err != nil {
		return nil, err
	}
	resp, err := exchangeUDP(ctx, server, q, wire)
	if err == nil && resp.Truncated {
		resp, err = exchangeTCP(ctx, server, q, wire)
	}
	if err != nil {
		return nil, err
	}
	if resp.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
	}
	var ips []netip.Addr
	for _, rr := range resp.Answer {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			ips = append(ips, a.Unmap())
		}
	}
	return ips, nil
}

// reply reports whether b answers q (ID and question), and parses it.
func reply(q *dns.Msg, b []byte) (*dns.Msg, bool) {
	m := new(dns.Msg)
	ok := m.Unpack(b) == nil && m.Id == q.Id && m.Response && len(m.Question) == 1 &&
		m.Question[0].Qtype == q.Question[0].Qtype &&
		dns.CanonicalName(m.Question[0].Name) == dns.CanonicalName(q.Question[0].Name)
	return m, ok
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(5 * time.Second)
}

func exchangeUDP(ctx context.Context, server netip.AddrPort, q *dns.Msg, wire []byte) (*dns.Msg, error) {
	var d net.Dialer
	c, err := d.DialUDP(ctx, "udp", netip.AddrPort{}, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = c.SetDeadline(deadline(ctx))
	if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, ok := reply(q, buf[:n]); ok {
			return m, nil
		}
	}
}

func exchangeTCP(ctx context.Context, server netip.AddrPort, q *dns.Msg, wire []byte) (*dns.Msg, error) {
	var d net.Dialer
	c, err := d.DialTCP(ctx, "tcp", netip.AddrPort{}, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = c.SetDeadline(deadline(ctx))
	out := []byte{byte(len(wire) >> 8), byte(len(wire))}
	if _, err := c.Write(append(out, wire...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, int(l[0])<<8|int(l[1]))
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	m, ok := reply(q, b)
	if !ok {
		return nil, errors.New("answer does not match the query")
	}
	return m, nil
}
