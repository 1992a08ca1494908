package upstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Stream connection limits (RFC 7766 §6.2).
const (
	streamIdle        = 10 * time.Second // close an idle connection after this
	dialTimeout       = 5 * time.Second  // TCP connect and TLS handshake
	streamMaxInFlight = 1024             // queries pipelined on one connection
)

// errConnClosed is what in-flight queries get when the connection goes.
var errConnClosed = errors.New("connection closed")

// stream is DNS over TCP or TLS: one connection per upstream, reused and
// pipelined, answers matched by ID in any order (RFC 7766 §6.2.1.1, RFC
// 7858 §3.4), redialled when the upstream closes it, closed when idle.
// TLS queries are padded; plain TCP ones never are.
type stream struct {
	ep     *Endpoint
	cfg    config
	pad    bool
	dialer func(ctx context.Context) (net.Conn, error)
	idle   time.Duration

	mu      sync.Mutex
	conn    *streamConn
	dialing *dial // the dial in progress, if any
	closed  bool
}

func newStream(ep *Endpoint, cfg config, useTLS bool) *stream {
	s := &stream{ep: ep, cfg: cfg, pad: useTLS, idle: streamIdle}
	if useTLS {
		tcfg := cfg.tls.clientConfig(ep)
		s.dialer = func(ctx context.Context) (net.Conn, error) {
			return dialTLS(ctx, ep.Addr, tcfg)
		}
	} else {
		s.dialer = func(ctx context.Context) (net.Conn, error) {
			return dialTCP(ctx, ep.Addr)
		}
	}
	return s
}

func (s *stream) String() string { return s.ep.String() }

// Exchange sends q on the shared connection, dialling one if needed. A
// query that fails because a reused connection had been closed by the
// upstream is sent once more on a fresh one.
func (s *stream) Exchange(ctx context.Context, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	return s.exchangeBy(ctx, time.Time{}, q, o)
}

// exchangeBy is Exchange that also gives up at deadline (zero: ctx
// only). The connection keeps the deadlines of its queries with one timer
// (streamConn.expire), so the pool's attempts need no context, timer or
// goroutine of their own; only a wait for a dial takes a context with the
// deadline.
func (s *stream) exchangeBy(ctx context.Context, deadline time.Time, q *dns.Msg, o QueryOptions) (*dns.Msg, error) {
	// 0x20 is for cleartext, where it adds entropy against spoofing.
	exact := !s.pad && o.Case0x20.on(s.cfg.randomize)
	name := q.Question[0].Name
	for try := 0; ; try++ {
		c, fresh, err := s.get(ctx, deadline)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.ep, err)
		}
		if past(deadline) { // late (a wait for the dial, a busy router): not sent at all
			return nil, fmt.Errorf("%s: %w", s.ep, context.DeadlineExceeded)
		}
		s.cfg.counters.Queries.Add(1)
		resp, err := c.exchange(ctx, deadline, q, s.pad, exact)
		if err == nil {
			restoreName(resp, name)
			stripPadding(resp)
			return resp, nil
		}
		if fresh || try > 0 || !errors.Is(err, errConnClosed) || ctx.Err() != nil || past(deadline) {
			return nil, fmt.Errorf("%s: %w", s.ep, err)
		}
	}
}

// past reports whether deadline (zero: none) has passed.
func past(deadline time.Time) bool { return !deadline.IsZero() && !time.Now().Before(deadline) }

// get returns the live connection or waits for a dial. The dial runs on
// its own, bounded by dialTimeout rather than by the query that started
// it: concurrent queries wait for the one dial and share its connection
// (RFC 7766 §6.2.2), and a handshake slower than one attempt still
// serves the next attempt instead of being thrown away. fresh reports a
// connection dialled for this wait, not one reused.
func (s *stream) get(ctx context.Context, deadline time.Time) (*streamConn, bool, error) {
	fresh := false
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, false, net.ErrClosed
		case s.conn != nil && !s.conn.isDead():
			conn := s.conn
			s.mu.Unlock()
			return conn, fresh, nil
		case s.dialing == nil:
			s.dialing = s.dial()
		}
		d := s.dialing
		s.mu.Unlock()
		var cancel context.CancelFunc
		ctx, cancel = withDeadline(ctx, &deadline)
		defer cancel()
		select {
		case <-d.done:
			if d.err != nil {
				return nil, false, d.err
			}
			fresh = true
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// dial is a connection attempt in progress.
type dial struct {
	done chan struct{}
	err  error // set before done is closed
}

// dial starts connecting; s.mu is held.
func (s *stream) dial() *dial {
	d := &dial{done: make(chan struct{})}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		nc, err := s.dialer(ctx)
		s.mu.Lock()
		defer s.mu.Unlock()
		defer close(d.done)
		s.dialing = nil
		switch {
		case err != nil:
			d.err = fmt.Errorf("%w: %w", ErrDial, err)
		case s.closed:
			_ = nc.Close()
			d.err = net.ErrClosed
		default:
			s.conn = newStreamConn(nc, s.cfg.counters, s.idle)
		}
	}()
	return d
}

// Reset drops the connection (its in-flight queries fail) so that the
// next query dials a fresh one: the pool calls it when nothing at all was
// answered on it, health check included.
func (s *stream) Reset() {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.close(fmt.Errorf("%w: reset: nothing answered", errConnClosed))
	}
}

// Close closes the connection; in-flight queries fail.
func (s *stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn != nil {
		s.conn.close(net.ErrClosed)
	}
	return nil
}

// streamConn is one pipelined connection.
type streamConn struct {
	nc       net.Conn
	counters *Counters
	idle     time.Duration
	// Writes are gathered (see gather): queries, with their length
	// prefixes, buffered in w under wmu.
	wmu   sync.Mutex
	w     gather
	bufs  queryBufs // a query with its length prefix
	calls sync.Pool // *call, reused once its answer is taken

	mu      sync.Mutex
	pending map[uint16]*call
	err     error       // set once the connection is dead
	expiry  *time.Timer // runs expire at armed
	armed   time.Time   // the earliest deadline pending (zero: none armed)
}

// call is one query in flight: what its answer must match, when it is
// given up (zero: with its context only), and where the reader (or
// expire) delivers its outcome.
type call struct {
	sent     sentQuery
	exact    bool
	deadline time.Time
	done     chan result // buffered: one outcome, never waited for
}

type result struct {
	msg *dns.Msg
	err error
}

func newStreamConn(nc net.Conn, counters *Counters, idle time.Duration) *streamConn {
	c := &streamConn{nc: nc, counters: counters, idle: idle, pending: make(map[uint16]*call)}
	c.w.nc = nc
	c.calls.New = func() any { return &call{done: make(chan result, 1)} }
	_ = nc.SetReadDeadline(time.Now().Add(idle))
	go c.readLoop()
	return c
}

func (c *streamConn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// exchange registers q under an ID unique among the in-flight ones,
// writes it with its length prefix in one write (RFC 7766 §8) and waits.
// The query is written from q without copying it (appendQuery), into a
// buffer reused by later queries; with 0x20 (exact) its name is sent in
// random case and the answer must echo it.
func (c *streamConn) exchange(ctx context.Context, deadline time.Time, q *dns.Msg, pad, exact bool) (*dns.Msg, error) {
	cl := c.calls.Get().(*call)
	cl.sent, cl.exact, cl.deadline = sentOf(q, 0), exact, deadline
	if exact {
		cl.sent.question.Name = randomizeCase(cl.sent.question.Name)
	}
	id, err := c.register(cl)
	if err != nil {
		c.calls.Put(cl)
		return nil, err
	}
	bp := c.bufs.get()
	var b []byte
	if exact {
		m := prepare(q, id, pad)
		m.Question[0].Name = cl.sent.question.Name
		var wire []byte
		if wire, err = pack(m); err == nil {
			b = append((*bp)[:2], wire...)
		}
	} else {
		b, err = appendQuery((*bp)[:2], q, id, pad)
	}
	if err == nil {
		binary.BigEndian.PutUint16(b, uint16(len(b)-2))
		err = c.write(b)
	}
	c.bufs.put(bp, b)
	if err != nil {
		c.unregister(id, cl)
		return nil, err
	}
	select {
	case r := <-cl.done:
		c.unregister(id, cl)
		c.calls.Put(cl) // its one answer is taken: nobody else holds it
		return r.msg, r.err
	case <-ctx.Done():
		c.unregister(id, cl)
		return nil, ctx.Err()
	}
}

// register picks an ID no in-flight query on c uses and stores cl under
// it, its sent ID set.
func (c *streamConn) register(cl *call) (uint16, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) >= streamMaxInFlight {
		return 0, fmt.Errorf("%d queries in flight on one connection", len(c.pending))
	}
	for {
		id := randomID()
		if _, busy := c.pending[id]; !busy {
			cl.sent.id = id
			if len(c.pending) == 0 {
				// Not idle any more: no read deadline while answers are
				// due (unregister sets it again when none are).
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			c.pending[id] = cl
			if d := cl.deadline; !d.IsZero() && (c.armed.IsZero() || d.Before(c.armed)) {
				c.arm(d)
			}
			return id, nil
		}
	}
}

func (c *streamConn) unregister(id uint16, cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[id] == cl {
		delete(c.pending, id)
	}
	if len(c.pending) == 0 && c.err == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.idle))
	}
}

// arm sets the expiry timer for d; mu is held.
func (c *streamConn) arm(d time.Time) {
	c.armed = d
	if c.expiry == nil {
		c.expiry = time.AfterFunc(time.Until(d), c.expire)
	} else {
		c.expiry.Reset(time.Until(d))
	}
}

// expire fails the queries past their deadline (context.DeadlineExceeded,
// as a context would) and arms the timer for the earliest one left. The
// deadlines mostly come in the order queries are sent, so it runs about
// once per attempt timeout while queries are in flight, not per query.
func (c *streamConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var next time.Time
	for id, cl := range c.pending {
		switch {
		case cl.deadline.IsZero():
		case !now.Before(cl.deadline):
			delete(c.pending, id)
			cl.done <- result{err: context.DeadlineExceeded} // out of pending: the only outcome
		case next.IsZero() || cl.deadline.Before(next):
			next = cl.deadline
		}
	}
	c.armed = time.Time{}
	if !next.IsZero() && c.err == nil {
		c.arm(next)
	}
}

// write sends b, gathered with other queries (see gather).
func (c *streamConn) write(b []byte) error {
	c.wmu.Lock()
	c.w.out = append(c.w.out, b...)
	// A writer in progress sends it next; its failure closes the
	// connection, which fails this query too.
	err := c.w.drain(&c.wmu)
	c.wmu.Unlock()
	if err != nil {
		// A failed or partial write leaves the stream unusable.
		err = fmt.Errorf("%w: write: %v", errConnClosed, err)
		c.close(err)
		return err
	}
	return nil
}

// streamReadBuf is the reader's read-ahead (the 4 KiB it read answers
// into before): answers up to its size are delivered from it in place.
const streamReadBuf = 4096

// readLoop delivers each answer to the query with its ID, in whatever
// order they come. It ends when the connection fails or stays idle.
// Answers are read ahead and delivered where they lie (deliver copies
// what it keeps): one read of the connection (on TLS, of one record,
// however many answers it holds) where a read of the length prefix and
// another of the body went before; only an answer longer than the
// buffer is copied into one of its own.
func (c *streamConn) readLoop() {
	br := bufio.NewReaderSize(c.nc, streamReadBuf)
	for {
		hdr, err := br.Peek(2)
		if err != nil {
			var ne net.Error
			if len(hdr) == 0 && errors.As(err, &ne) && ne.Timeout() && c.busy() {
				continue // the idle deadline fired just as a query came in
			}
			c.close(fmt.Errorf("%w: %v", errConnClosed, err))
			return
		}
		size := int(binary.BigEndian.Uint16(hdr))
		if 2+size <= br.Size() {
			b, err := br.Peek(2 + size)
			if err != nil {
				c.close(fmt.Errorf("%w: %v", errConnClosed, err))
				return
			}
			c.deliver(b[2:])
			_, _ = br.Discard(2 + size)
			continue
		}
		// Longer than the buffer (rare: up to 64 KiB): a copy of its own.
		_, _ = br.Discard(2)
		b := make([]byte, size)
		if _, err := io.ReadFull(br, b); err != nil {
			c.close(fmt.Errorf("%w: %v", errConnClosed, err))
			return
		}
		c.deliver(b)
	}
}

func (c *streamConn) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

func (c *streamConn) deliver(b []byte) {
	if len(b) < 2 {
		c.counters.Mismatches.Add(1)
		return
	}
	id := binary.BigEndian.Uint16(b)
	c.mu.Lock()
	cl := c.pending[id]
	if cl != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if cl == nil {
		return // late: its query gave up (on TLS nobody else can write here)
	}
	m, err := matchSent(cl.sent, trimPadding(b), cl.exact) // b is the reader's own
	// (A *CaseError target declared here would be allocated per answer.)
	if err != nil && !errors.As(err, new(*CaseError)) {
		c.counters.Mismatches.Add(1)
	}
	cl.done <- result{m, err}
}

// close marks the connection dead and fails every in-flight query.
func (c *streamConn) close(why error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = why
	}
	pending := c.pending
	c.pending = make(map[uint16]*call)
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, cl := range pending {
		select {
		case cl.done <- result{err: why}:
		default:
		}
	}
}
