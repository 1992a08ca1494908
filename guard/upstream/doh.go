package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// MediaType is the DoH message media type (RFC 8484 §6).
const MediaType = "application/dns-message"

// ErrHTTPStatus marks a DoH answer with a non-2xx status.
var ErrHTTPStatus = errors.New("DoH: HTTP error status")

// doh is DNS over HTTPS (RFC 8484): POST over HTTP/2 (h2.go) with ID 0
// (§4.1), the query padded (RFC 8467), the answer's status and media type
// checked. It always dials the configured IP; the URL's name is the SNI,
// the :authority and the name the certificate must carry. Queries are
// multiplexed as streams on one connection, redialled when the server
// closes it or sends GOAWAY, closed when idle.
type doh struct {
	ep        *Endpoint
	cfg       config
	authority string // host[:port] as configured
	path      string // path?query
	dialer    func(ctx context.Context) (net.Conn, error)
	idle      time.Duration

	mu      sync.Mutex
	conn    *h2Conn
	dialing *dial
	closed  bool
}

func newDoH(ep *Endpoint, cfg config) (*doh, error) {
	u, err := url.Parse(ep.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", ep, err)
	}
	d := &doh{ep: ep, cfg: cfg, authority: u.Host, path: u.EscapedPath(), idle: streamIdle}
	if d.path == "" {
		d.path = "/"
	}
	if u.RawQuery != "" {
		d.path += "?" + u.RawQuery
	}
	tcfg := cfg.tls.clientConfig(ep, "h2")
	d.dialer = func(ctx context.Context) (net.Conn, error) {
		nc, err := dialTLS(ctx, ep.Addr, tcfg)
		if err != nil {
			return nil, err
		}
		if p := nc.ConnectionState().NegotiatedProtocol; p != "h2" {
			_ = nc.Close()
			return nil, fmt.Errorf("server did not negotiate HTTP/2 (ALPN %q; RFC 8484 §5.2)", p)
		}
		return nc, nil
	}
	return d, nil
}

func (d *doh) String() string { return d.ep.String() }

// Close closes the connection; in-flight queries fail.
func (d *doh) Close() error {
	d.mu.Lock()
	c := d.conn
	d.closed = true
	d.mu.Unlock()
	if c != nil {
		c.close(net.ErrClosed)
		<-c.done
	}
	return nil
}

// Exchange POSTs q and reads the answer. A query that fails because a
// reused connection went away, or that the server refused, is sent once
// more.
func (d *doh) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	m := prepare(q, 0, true)
	b, err := pack(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.ep, err)
	}
	for try := 0; ; try++ {
		c, fresh, err := d.get(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.ep, err)
		}
		d.cfg.counters.Queries.Add(1)
		resp, err := d.exchange(ctx, c, m, b)
		if err == nil {
			restoreName(resp, q.Question[0].Name)
			stripPadding(resp)
			return resp, nil
		}
		// A stream the server refused (REFUSED_STREAM, or above a
		// GOAWAY's last ID) was not processed: it may go again even on
		// a fresh connection, which refuses what it gets before its
		// SETTINGS reach us (RFC 9113 §8.7).
		retry := errors.Is(err, errRefusedStream) || (!fresh && errors.Is(err, errConnClosed))
		if !retry || try > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", d.ep, err)
		}
	}
}

func (d *doh) exchange(ctx context.Context, c *h2Conn, m *dns.Msg, b []byte) (*dns.Msg, error) {
	r, err := c.roundTrip(ctx, b)
	if err != nil {
		return nil, err
	}
	if r.status < 200 || r.status > 299 {
		return nil, fmt.Errorf("%w: %d", ErrHTTPStatus, r.status)
	}
	if !isMediaType(r.ctype) {
		return nil, fmt.Errorf("DoH: answer media type %q, want %s", r.ctype, MediaType)
	}
	resp, err := match(m, r.body, false)
	if err != nil {
		d.cfg.counters.Mismatches.Add(1)
		return nil, err
	}
	return resp, nil
}

// isMediaType reports whether a Content-Type is application/dns-message,
// parameters aside (RFC 9110 §8.3.1: case-insensitive type and subtype).
func isMediaType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), MediaType)
}

// get returns the live connection or waits for a dial, which runs on its
// own bounded by dialTimeout (as for DoT: concurrent queries share it, and
// a slow handshake still serves the next attempt). fresh reports a
// connection dialled for this wait.
func (d *doh) get(ctx context.Context) (*h2Conn, bool, error) {
	fresh := false
	for {
		d.mu.Lock()
		switch {
		case d.closed:
			d.mu.Unlock()
			return nil, false, net.ErrClosed
		case d.conn != nil && d.conn.usable():
			c := d.conn
			d.mu.Unlock()
			return c, fresh, nil
		case d.dialing == nil:
			d.dialing = d.dial()
		}
		dl := d.dialing
		d.mu.Unlock()
		select {
		case <-dl.done:
			if dl.err != nil {
				return nil, false, dl.err
			}
			fresh = true
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// dial starts connecting; d.mu is held. A failure before there is a
// connection (refused, TLS verification, no h2) is ErrDial.
func (d *doh) dial() *dial {
	dl := &dial{done: make(chan struct{})}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		nc, err := d.dialer(ctx)
		var c *h2Conn
		if err == nil {
			c, err = newH2Conn(nc, d.authority, d.path, d.idle)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		defer close(dl.done)
		d.dialing = nil
		switch {
		case err != nil:
			dl.err = fmt.Errorf("%w: %w", ErrDial, err)
		case d.closed:
			c.close(net.ErrClosed)
			dl.err = net.ErrClosed
		default:
			// One that went away is dead or draining: it closes
			// itself when its last stream ends.
			d.conn = c
		}
	}()
	return dl
}
