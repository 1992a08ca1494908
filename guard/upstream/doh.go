package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
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
// closes it or sends GOAWAY, closed when idle. A server that does not
// negotiate h2 is spoken to in HTTP/1.1 (doh1.go): one query at a time
// per connection, idle connections kept for reuse.
type doh struct {
	ep        *Endpoint
	cfg       config
	authority string // host[:port] as configured
	path      string // path?query
	dialer    func(ctx context.Context) (*tls.Conn, error)
	idle      time.Duration

	mu      sync.Mutex
	conn    *h2Conn
	old     []*h2Conn // replaced ones still draining (GOAWAY)
	dialing *dial
	closed  bool
	h1      bool      // the last dial negotiated no h2: HTTP/1.1
	h1idle  []*h1Conn // idle HTTP/1.1 connections, the most recent last

	bufs queryBufs // a query's wire form
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
	tcfg := cfg.tls.clientConfig(ep, "h2", "http/1.1")
	d.dialer = func(ctx context.Context) (*tls.Conn, error) {
		return dialTLS(ctx, ep.Addr, tcfg)
	}
	return d, nil
}

func (d *doh) String() string { return d.ep.String() }

// Close closes the connections; in-flight queries fail.
func (d *doh) Close() error {
	d.mu.Lock()
	conns := d.old
	if d.conn != nil {
		conns = append(conns, d.conn)
	}
	d.closed = true
	idle := d.h1idle
	d.h1idle = nil
	d.mu.Unlock()
	for _, c := range idle {
		c.tc.Close()
	}
	for _, c := range conns {
		c.close(net.ErrClosed)
		<-c.done // its reader has returned
	}
	return nil
}

// Exchange POSTs q and reads the answer. A query that fails because a
// reused connection went away, or that the server refused, is sent once
// more. The query is written from q without copying it (appendQuery),
// into a buffer reused by later queries: the body is copied into the
// connection's frames (or request) before a round trip returns.
func (d *doh) Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	return d.exchangeBy(ctx, time.Time{}, q, o)
}

// exchangeBy is Exchange that also gives up at deadline (zero: ctx only).
// Over HTTP/2 the connection keeps the deadline (h2Conn.expire); the
// waits for a dial and HTTP/1.1 round trips take a context with it.
func (d *doh) exchangeBy(ctx context.Context, deadline time.Time, q *dns.Msg, _ QueryOptions) (*dns.Msg, error) {
	bp := d.bufs.get()
	b, err := appendQuery((*bp)[:0], q, 0, true)
	defer func() { d.bufs.put(bp, b) }()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.ep, err)
	}
	sent := sentOf(q, 0)
	for try := 0; ; try++ {
		c, c1, fresh, err := d.get(ctx, deadline)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.ep, err)
		}
		if past(deadline) { // late (a wait for the dial, a busy router): not sent at all
			if c1 != nil {
				d.putIdle(c1) // an HTTP/1.1 one is this query's alone until put back
			}
			return nil, fmt.Errorf("%s: %w", d.ep, context.DeadlineExceeded)
		}
		d.cfg.counters.Queries.Add(1)
		var r h2Response
		if c1 != nil {
			r, err = d.roundTripH1(ctx, deadline, c1, b, !fresh)
		} else {
			r, err = c.roundTrip(ctx, deadline, b)
		}
		var resp *dns.Msg
		if err == nil {
			resp, err = d.answer(sent, r)
			if c != nil {
				c.release(r) // the answer is unpacked (copied)
			}
		}
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
		if !retry || try > 0 || ctx.Err() != nil || past(deadline) {
			return nil, fmt.Errorf("%s: %w", d.ep, err)
		}
	}
}

// answer checks an HTTP answer and the DNS message in it.
func (d *doh) answer(sent sentQuery, r h2Response) (*dns.Msg, error) {
	if r.status < 200 || r.status > 299 {
		return nil, fmt.Errorf("%w: %d", ErrHTTPStatus, r.status)
	}
	if !isMediaType(r.ctype) {
		return nil, fmt.Errorf("DoH: answer media type %q, want %s", r.ctype, MediaType)
	}
	resp, err := matchSent(sent, trimPadding(r.body), false) // the body is this answer's own
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

// get returns the live HTTP/2 connection, or an idle HTTP/1.1 one, or
// waits for a dial. An HTTP/2 dial runs on its own bounded by dialTimeout
// (as for DoT: concurrent queries share it, and a slow handshake still
// serves the next attempt); with a server that speaks HTTP/1.1 only, each
// query without an idle connection dials its own. fresh reports a
// connection dialled for this wait.
func (d *doh) get(ctx context.Context, deadline time.Time) (*h2Conn, *h1Conn, bool, error) {
	fresh := false
	for {
		d.mu.Lock()
		switch {
		case d.closed:
			d.mu.Unlock()
			return nil, nil, false, net.ErrClosed
		case d.conn != nil && d.conn.usable():
			c := d.conn
			d.mu.Unlock()
			return c, nil, fresh, nil
		case len(d.h1idle) > 0:
			c := d.h1idle[len(d.h1idle)-1]
			d.h1idle = d.h1idle[:len(d.h1idle)-1]
			d.mu.Unlock()
			if !c.fresh && time.Since(c.used) > d.idle {
				c.tc.Close() // the server has likely closed it
				continue
			}
			f := c.fresh
			c.fresh = false
			return nil, c, f, nil
		case d.h1:
			d.mu.Unlock()
			var cancel context.CancelFunc
			ctx, cancel = withDeadline(ctx, &deadline)
			defer cancel()
			if err := d.connect(ctx); err != nil {
				return nil, nil, false, err
			}
			continue
		case d.dialing == nil:
			d.dialing = d.dial()
		}
		dl := d.dialing
		d.mu.Unlock()
		var cancel context.CancelFunc
		ctx, cancel = withDeadline(ctx, &deadline)
		defer cancel()
		select {
		case <-dl.done:
			if dl.err != nil {
				return nil, nil, false, dl.err
			}
			fresh = true
		case <-ctx.Done():
			return nil, nil, false, ctx.Err()
		}
	}
}

// withDeadline bounds ctx by *deadline too, for a wait that needs a
// context, and clears *deadline (so a loop wraps once); cancel must be
// called. A zero deadline leaves ctx as it is.
func withDeadline(ctx context.Context, deadline *time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return ctx, func() {}
	}
	d := *deadline
	*deadline = time.Time{}
	return context.WithDeadline(ctx, d)
}

// dial starts a shared dial; d.mu is held.
func (d *doh) dial() *dial {
	dl := &dial{done: make(chan struct{})}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		err := d.connect(ctx)
		d.mu.Lock()
		d.dialing = nil
		dl.err = err
		close(dl.done)
		d.mu.Unlock()
	}()
	return dl
}

// connect dials and installs the connection: as the HTTP/2 connection
// when the server negotiated h2, else as an idle HTTP/1.1 one, marked
// fresh. A failure before there is a connection (refused, TLS
// verification) is ErrDial.
func (d *doh) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	tc, err := d.dialer(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDial, err)
	}
	var c *h2Conn
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		if c, err = newH2Conn(tc, d.authority, d.path, d.idle); err != nil {
			return fmt.Errorf("%w: %w", ErrDial, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed && c != nil:
		c.close(net.ErrClosed)
		return net.ErrClosed
	case d.closed:
		tc.Close()
		return net.ErrClosed
	case c != nil:
		// One that went away is dead or draining: it closes itself
		// when its last stream ends (or at Close).
		if old := d.conn; old != nil {
			d.old = slices.DeleteFunc(d.old, func(o *h2Conn) bool {
				select {
				case <-o.done:
					return true
				default:
					return false
				}
			})
			d.old = append(d.old, old)
		}
		d.conn, d.h1 = c, false
	default:
		d.h1 = true
		d.h1idle = append(d.h1idle, newH1Conn(tc))
	}
	return nil
}
