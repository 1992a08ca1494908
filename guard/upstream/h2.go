package upstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// This file is the HTTP/2 client (RFC 9113) the DoH transport speaks: one
// TLS connection per upstream with the queries multiplexed on it as
// streams. It does only what DoH needs (POST a small body, read a small
// answer) but does all of the protocol a server may use on it: SETTINGS,
// flow control both ways, PING, GOAWAY, RST_STREAM, CONTINUATION, padding
// and HPACK with its dynamic table (hpack.go). It
// exists so that the router binary carries no net/http (about 1.7 MB of
// the mipsle build with what it pulls in).

// Frame types (RFC 9113 §6).
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2Priority     = 0x2
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2PushPromise  = 0x5
	h2Ping         = 0x6
	h2GoAway       = 0x7
	h2WindowUpdate = 0x8
	h2Continuation = 0x9
)

// Frame flags.
const (
	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20
)

// Settings (RFC 9113 §6.5.2).
const (
	h2SettingEnablePush           = 0x2
	h2SettingMaxConcurrentStreams = 0x3
	h2SettingInitialWindowSize    = 0x4
	h2SettingMaxFrameSize         = 0x5
	h2SettingMaxHeaderListSize    = 0x6
)

// Error codes (RFC 9113 §7).
const (
	h2NoError          = 0x0
	h2ProtocolError    = 0x1
	h2FlowControlError = 0x3
	h2FrameSizeError   = 0x6
	h2RefusedStream    = 0x7
	h2Cancel           = 0x8
	h2CompressionError = 0x9
)

// Limits of this client.
const (
	h2Preface       = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2MaxFrame      = 16384   // the largest frame we accept (the protocol's default)
	h2StreamWindow  = 1 << 18 // what a stream may send us: a whole DNS message and padding
	h2ConnWindow    = 1 << 20 // what the connection may have in flight to us
	h2MaxHeaderList = 16 << 10
	h2MaxStreams    = streamMaxInFlight
	h2MaxStreamID   = 1<<31 - 1
	h2MaxWindow     = 1<<31 - 1
)

// errRefusedStream is a stream the server reset with REFUSED_STREAM or left
// unprocessed by GOAWAY: it did nothing with it, so a retry is safe (RFC
// 9113 §8.7). It is an errConnClosed so that Exchange retries it.
var errRefusedStream = fmt.Errorf("%w: stream refused by the server", errConnClosed)

// h2Error is a protocol error that ends the connection (sent as GOAWAY).
type h2Error struct {
	code uint32
	msg  string
}

func (e h2Error) Error() string { return fmt.Sprintf("HTTP/2 error %d: %s", e.code, e.msg) }

// h2Response is a stream's outcome.
type h2Response struct {
	status int
	ctype  string
	body   []byte
	err    error
	// stream, on an answer, is the stream its body belongs to: release
	// gives it back for reuse once the body has been used.
	stream *h2Stream
}

type h2Stream struct {
	id         uint32
	deadline   time.Time // when it is given up (zero: with its context only)
	sendWindow int64
	gotHeaders bool // the final (non-1xx) response headers
	status     int
	ctype      string
	body       []byte
	done       chan h2Response // buffered: the reader never waits
}

// h2Conn is one HTTP/2 connection.
type h2Conn struct {
	nc        net.Conn
	authority string
	path      string
	idle      time.Duration

	// wmu serialises frame writes; stream IDs are allocated under it, so
	// HEADERS go out in ID order. Frames are buffered in w and written by
	// flush, gathered (see gather).
	wmu     sync.Mutex
	w       gather
	whdr    [9]byte // the frame header being written
	hfixed  []byte  // the request's header block but its content-length
	hbuf    []byte
	nextID  uint32
	resized bool // the first header block set the HPACK table size to 0

	// The reader's own state (only readLoop touches it).
	br        *bufio.Reader
	hdec      *hpackDecoder
	fields    []hpackField // the last header block's, reused
	rhdr      [9]byte
	rbuf      []byte
	block     []byte // header block being gathered across CONTINUATION
	blockID   uint32
	blockEnd  bool // the HEADERS that began block had END_STREAM
	recvUnack int64

	mu             sync.Mutex
	streams        map[uint32]*h2Stream
	err            error // set once the connection is dead
	goAway         bool  // no new streams: GOAWAY came or IDs ran out
	maxStreams     int
	peerMaxFrame   int
	peerInitWindow int64
	sendWindow     int64
	changed        chan struct{} // closed and replaced when windows or stream slots change
	idleTimer      *time.Timer
	expiry         *time.Timer // runs expire at armed
	armed          time.Time   // the earliest stream deadline (zero: none armed)

	done chan struct{} // closed when readLoop has returned

	spare sync.Pool // *h2Stream answered and released, with its body buffer
}

// newH2Conn starts HTTP/2 on nc (TLS with "h2" negotiated): it writes the
// preface and our settings and starts the reader.
func newH2Conn(nc net.Conn, authority, path string, idle time.Duration) (*h2Conn, error) {
	c := &h2Conn{
		nc: nc, authority: authority, path: path, idle: idle,
		nextID:     1,
		br:         bufio.NewReaderSize(nc, 4096),
		rbuf:       make([]byte, h2MaxFrame),
		streams:    make(map[uint32]*h2Stream),
		maxStreams: h2MaxStreams, peerMaxFrame: h2MaxFrame,
		peerInitWindow: 65535, sendWindow: 65535,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.hdec = newHPACKDecoder(4096)
	c.w.nc = nc
	// The request's fields, as literals against the static table: the
	// dynamic table is never used, so its size is set to 0 once (first
	// block) and the server's HEADER_TABLE_SIZE never matters. All but
	// content-length are the same for every request.
	b := hpackAppendInt(nil, 0x80, 7, hpackMethodPOST)
	b = hpackAppendInt(b, 0x80, 7, hpackSchemeHTTPS)
	b = hpackAppendLiteral(b, hpackAuthority, authority)
	b = hpackAppendLiteral(b, hpackPath, path)
	b = hpackAppendLiteral(b, hpackContentType, MediaType)
	c.hfixed = hpackAppendLiteral(b, hpackAccept, MediaType)
	_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.w.out = append(c.w.out, h2Preface...)
	var s [18]byte
	putSetting(s[0:], h2SettingEnablePush, 0)
	putSetting(s[6:], h2SettingInitialWindowSize, h2StreamWindow)
	putSetting(s[12:], h2SettingMaxHeaderListSize, h2MaxHeaderList)
	c.writeFrame(h2Settings, 0, 0, s[:])
	var inc [4]byte
	binary.BigEndian.PutUint32(inc[:], h2ConnWindow-65535)
	c.writeFrame(h2WindowUpdate, 0, 0, inc[:])
	if _, err := nc.Write(c.w.out); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("HTTP/2 preface: %w", err)
	}
	c.w.out = c.w.out[:0]
	c.idleTimer = time.AfterFunc(idle, c.idleClose)
	go c.readLoop()
	return c, nil
}

func putSetting(b []byte, id uint16, v uint32) {
	binary.BigEndian.PutUint16(b, id)
	binary.BigEndian.PutUint32(b[2:], v)
}

// writeFrame buffers one frame; wmu is held (or the connection is not
// shared yet).
func (c *h2Conn) writeFrame(typ, flags byte, id uint32, payload []byte) {
	h := &c.whdr
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], id)
	c.w.out = append(append(c.w.out, h[:]...), payload...)
}

// flush sends what is buffered (wmu held, see gather.drain);
// a failed write kills the connection (the streams fail with it).
func (c *h2Conn) flush() error {
	if err := c.w.drain(&c.wmu); err != nil {
		err = fmt.Errorf("%w: write: %v", errConnClosed, err)
		c.close(err)
		return err
	}
	return nil
}

// writeControl sends one frame from the reader (acks, window updates,
// resets).
func (c *h2Conn) writeControl(typ, flags byte, id uint32, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeFrame(typ, flags, id, payload)
	_ = c.flush()
}

func (c *h2Conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goAway
}

// roundTrip POSTs body as a new stream and waits for the whole answer,
// giving up with ctx or at deadline (zero: none). The deadline is kept by
// the connection's one expiry timer (expire); only a wait for a stream
// slot or a flow-control window takes a context with it.
func (c *h2Conn) roundTrip(ctx context.Context, deadline time.Time, body []byte) (h2Response, error) {
	s, err := c.open(ctx, deadline, body)
	if err != nil {
		return h2Response{}, err
	}
	if err := c.send(ctx, deadline, s, body); err != nil {
		select {
		case r := <-s.done:
			// The reader ended the stream first (refused by a GOAWAY
			// that then closed the connection under the write, reset,
			// answered): its outcome, not the failed write, says what
			// became of the query, and whether a retry is safe.
			if r.err == nil {
				r.stream = s
			}
			return r, r.err
		default:
		}
		c.cancel(s)
		return h2Response{}, err
	}
	select {
	case r := <-s.done:
		if r.err == nil {
			// Only the reader's finish delivers an answer, after its
			// last use of s: once the caller is done with the body, s
			// may serve another request (release).
			r.stream = s
		}
		return r, r.err
	case <-ctx.Done():
		c.cancel(s)
		return h2Response{}, ctx.Err()
	}
}

// release gives r's stream, with its body buffer, back for reuse; r's body
// is not to be used after.
func (c *h2Conn) release(r h2Response) {
	s := r.stream
	if s == nil || cap(s.body) > 4096 {
		return
	}
	s.gotHeaders, s.status, s.ctype, s.body = false, 0, "", s.body[:0]
	c.spare.Put(s)
}

// open allocates a stream and writes its HEADERS, waiting for a free slot
// when the server's MAX_CONCURRENT_STREAMS are all in use.
func (c *h2Conn) open(ctx context.Context, deadline time.Time, body []byte) (*h2Stream, error) {
	wait := deadline
	for {
		c.wmu.Lock()
		c.mu.Lock()
		if c.err != nil || c.goAway {
			err := c.err
			c.mu.Unlock()
			c.wmu.Unlock()
			if err == nil {
				err = errRefusedStream // going away: a fresh connection takes it
			}
			return nil, err
		}
		if len(c.streams) >= c.maxStreams {
			ch := c.changed
			c.mu.Unlock()
			c.wmu.Unlock()
			var cancel context.CancelFunc
			ctx, cancel = withDeadline(ctx, &wait) // for this wait: the stream keeps its deadline
			defer cancel()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		s, _ := c.spare.Get().(*h2Stream)
		if s == nil {
			s = &h2Stream{done: make(chan h2Response, 1)}
		}
		s.id, s.sendWindow, s.deadline = c.nextID, c.peerInitWindow, deadline
		c.nextID += 2
		if c.nextID > h2MaxStreamID {
			c.goAway = true // the last ID: later queries get a new connection
		}
		c.streams[s.id] = s
		c.idleTimer.Stop()
		if d := s.deadline; !d.IsZero() && (c.armed.IsZero() || d.Before(c.armed)) {
			c.arm(d)
		}
		c.mu.Unlock()

		// The request's header block (see newH2Conn), the table size
		// set to 0 in the first.
		b := c.hbuf[:0]
		if !c.resized {
			b = hpackAppendInt(b, 0x20, 5, 0)
			c.resized = true
		}
		b = append(b, c.hfixed...)
		var digits [8]byte
		n := strconv.AppendInt(digits[:0], int64(len(body)), 10)
		b = hpackAppendInt(b, 0x00, 4, hpackContentLength)
		b = hpackAppendInt(b, 0x00, 7, uint64(len(n)))
		b = append(b, n...)
		c.hbuf = b
		// A handful of short fields: far below any MAX_FRAME_SIZE, so
		// no CONTINUATION.
		c.writeFrame(h2Headers, h2FlagEndHeaders, s.id, c.hbuf)
		c.wmu.Unlock()
		return s, nil
	}
}

// send writes the body as DATA frames within the server's flow-control
// windows and the frame size it accepts, waiting for WINDOW_UPDATE when
// a window is spent.
func (c *h2Conn) send(ctx context.Context, until time.Time, s *h2Stream, body []byte) error {
	c.wmu.Lock()
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			c.wmu.Unlock()
			return err
		}
		n := int64(min(len(body), c.peerMaxFrame))
		n = min(n, c.sendWindow, s.sendWindow)
		if n <= 0 && len(body) > 0 {
			ch := c.changed
			c.mu.Unlock()
			err := c.flush()
			c.wmu.Unlock()
			if err != nil {
				return err
			}
			var cancel context.CancelFunc
			ctx, cancel = withDeadline(ctx, &until)
			defer cancel()
			select {
			case <-ch:
			case r := <-s.done: // reset or failed meanwhile
				s.done <- r
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
			c.wmu.Lock()
			continue
		}
		n = max(n, 0)
		c.sendWindow -= n
		s.sendWindow -= n
		c.mu.Unlock()
		var flags byte
		if int(n) == len(body) {
			flags = h2FlagEndStream
		}
		c.writeFrame(h2Data, flags, s.id, body[:n])
		body = body[n:]
		if flags != 0 {
			err := c.flush()
			c.wmu.Unlock()
			return err
		}
	}
}

// cancel gives up on s: the server is told (RST_STREAM CANCEL) and any
// answer still coming is dropped.
func (c *h2Conn) cancel(s *h2Stream) { c.giveUp(s.id, context.Canceled) }

// giveUp ends the stream id, if still open, with why and tells the server
// (RST_STREAM CANCEL).
func (c *h2Conn) giveUp(id uint32, why error) {
	c.mu.Lock()
	live := c.streams[id] != nil && c.err == nil
	c.mu.Unlock()
	if !live || !c.finish(id, h2Response{err: why}) {
		return // answered or failed meanwhile
	}
	var code [4]byte
	binary.BigEndian.PutUint32(code[:], h2Cancel)
	c.writeControl(h2RSTStream, 0, id, code[:])
}

// arm sets the expiry timer for d; mu is held.
func (c *h2Conn) arm(d time.Time) {
	c.armed = d
	if c.expiry == nil {
		c.expiry = time.AfterFunc(time.Until(d), c.expire)
	} else {
		c.expiry.Reset(time.Until(d))
	}
}

// expire gives up the streams past their deadline (deadline exceeded, as
// a context would, and RST_STREAM CANCEL) and arms the timer for the
// earliest one left: about once per attempt timeout while streams are
// open, not per stream.
func (c *h2Conn) expire() {
	c.mu.Lock()
	now := time.Now()
	var late []uint32 // by ID: an answered stream's struct may serve another by the time it is given up
	var next time.Time
	for id, s := range c.streams {
		switch {
		case s.deadline.IsZero():
		case !now.Before(s.deadline):
			late = append(late, id)
		case next.IsZero() || s.deadline.Before(next):
			next = s.deadline
		}
	}
	c.armed = time.Time{}
	if !next.IsZero() && c.err == nil {
		c.arm(next)
	}
	c.mu.Unlock()
	for _, id := range late {
		c.giveUp(id, context.DeadlineExceeded)
	}
}

// finish delivers a stream's outcome and forgets it; false if the stream
// was no longer open.
func (c *h2Conn) finish(id uint32, r h2Response) bool {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		c.mu.Unlock()
		return false
	}
	if len(c.streams) >= c.maxStreams {
		c.broadcast() // a slot frees for whoever waits in open
	}
	delete(c.streams, id)
	drained := len(c.streams) == 0
	goingAway := c.goAway
	if drained && c.err == nil && !goingAway {
		c.idleTimer.Reset(c.idle)
	}
	c.mu.Unlock()
	s.done <- r
	if drained && goingAway {
		c.close(errRefusedStream) // nothing left to finish on it
	}
	return true
}

// broadcast wakes everyone waiting for a window or a slot; mu is held.
func (c *h2Conn) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// idleClose closes the connection when it has stayed without streams. It
// goes away first, under mu: a query that took the connection but has not
// opened its stream yet is refused (never sent, so retried elsewhere),
// not failed by the close.
func (c *h2Conn) idleClose() {
	c.mu.Lock()
	idle := len(c.streams) == 0
	if idle {
		c.goAway = true
	}
	c.mu.Unlock()
	if idle {
		c.goAwayAndClose(h2NoError, fmt.Errorf("%w: idle", errConnClosed))
	}
}

// goAwayAndClose tells the server why (best effort: written, not left to
// a write in progress that the close would cut short) and closes.
func (c *h2Conn) goAwayAndClose(code uint32, why error) {
	c.mu.Lock()
	dead := c.err != nil
	c.mu.Unlock()
	if !dead {
		var p [8]byte
		binary.BigEndian.PutUint32(p[4:], code) // last stream 0: we accept no pushes
		c.wmu.Lock()
		c.writeFrame(h2GoAway, 0, 0, p[:])
		_ = c.w.last(&c.wmu)
		c.wmu.Unlock()
	}
	c.close(why)
}

// close marks the connection dead, fails every stream and closes the
// socket; the reader then returns.
func (c *h2Conn) close(why error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = why
	}
	streams := c.streams
	c.streams = make(map[uint32]*h2Stream)
	c.broadcast()
	c.idleTimer.Stop()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, s := range streams {
		s.done <- h2Response{err: why}
	}
}

// readLoop reads frames until the connection fails or closes.
func (c *h2Conn) readLoop() {
	defer close(c.done)
	for {
		err := c.readFrame()
		if err == nil {
			continue
		}
		var pe h2Error
		if errors.As(err, &pe) {
			c.goAwayAndClose(pe.code, err)
		} else {
			c.close(fmt.Errorf("%w: %v", errConnClosed, err))
		}
		return
	}
}

// readFrame reads and handles one frame.
func (c *h2Conn) readFrame() error {
	h := c.rhdr[:] // (a local array would be allocated per frame: ReadFull hands it on)
	if _, err := io.ReadFull(c.br, h); err != nil {
		return err
	}
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := h[3], h[4]
	id := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
	if length > h2MaxFrame {
		return h2Error{h2FrameSizeError, fmt.Sprintf("frame of %d octets", length)}
	}
	p := c.rbuf[:length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if c.blockID != 0 && (typ != h2Continuation || id != c.blockID) {
		return h2Error{h2ProtocolError, "header block interrupted"}
	}
	switch typ {
	case h2Data:
		return c.onData(flags, id, p)
	case h2Headers:
		return c.onHeaders(flags, id, p)
	case h2Continuation:
		if c.blockID == 0 {
			return h2Error{h2ProtocolError, "CONTINUATION without HEADERS"}
		}
		return c.gather(flags, p)
	case h2Priority:
		if id == 0 || length != 5 {
			return h2Error{h2ProtocolError, "bad PRIORITY"}
		}
	case h2RSTStream:
		if id == 0 || length != 4 {
			return h2Error{h2ProtocolError, "bad RST_STREAM"}
		}
		code := binary.BigEndian.Uint32(p)
		err := fmt.Errorf("DoH: stream reset by the server (HTTP/2 error %d)", code)
		if code == h2RefusedStream {
			err = errRefusedStream
		}
		c.finish(id, h2Response{err: err})
	case h2Settings:
		return c.onSettings(flags, id, p)
	case h2PushPromise:
		return h2Error{h2ProtocolError, "PUSH_PROMISE though push is disabled"}
	case h2Ping:
		if id != 0 || length != 8 {
			return h2Error{h2FrameSizeError, "bad PING"}
		}
		if flags&h2FlagAck == 0 {
			c.writeControl(h2Ping, h2FlagAck, 0, p)
		}
	case h2GoAway:
		if id != 0 || length < 8 {
			return h2Error{h2ProtocolError, "bad GOAWAY"}
		}
		c.onGoAway(binary.BigEndian.Uint32(p)&(1<<31-1), binary.BigEndian.Uint32(p[4:]))
	case h2WindowUpdate:
		if length != 4 {
			return h2Error{h2FrameSizeError, "bad WINDOW_UPDATE"}
		}
		return c.onWindowUpdate(id, int64(binary.BigEndian.Uint32(p)&(1<<31-1)))
	}
	return nil // unknown frame types are ignored (§5.5)
}

// unpad strips the padding of a DATA or HEADERS payload.
func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&h2FlagPadded == 0 {
		return p, nil
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, h2Error{h2ProtocolError, "padding longer than the frame"}
	}
	return p[1 : len(p)-int(p[0])], nil
}

func (c *h2Conn) onData(flags byte, id uint32, p []byte) error {
	if id == 0 {
		return h2Error{h2ProtocolError, "DATA on stream 0"}
	}
	// The whole frame, padding included, counts against the connection
	// window, for streams given up on too; give it back in batches.
	c.recvUnack += int64(len(p))
	if c.recvUnack >= h2ConnWindow/2 {
		var inc [4]byte
		binary.BigEndian.PutUint32(inc[:], uint32(c.recvUnack))
		c.recvUnack = 0
		c.writeControl(h2WindowUpdate, 0, 0, inc[:])
	}
	data, err := unpad(flags, p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		c.mu.Unlock()
		return nil // given up on or reset
	}
	var fail error
	switch {
	case !s.gotHeaders:
		fail = errors.New("DoH: DATA before the response headers")
	case len(s.body)+len(data) > maxMessage:
		fail = errors.New("DoH: answer larger than a DNS message")
	default:
		s.body = append(s.body, data...)
	}
	c.mu.Unlock()
	switch {
	case fail != nil:
		c.finish(id, h2Response{err: fail})
		var code [4]byte
		binary.BigEndian.PutUint32(code[:], h2Cancel)
		c.writeControl(h2RSTStream, 0, id, code[:])
	case flags&h2FlagEndStream != 0:
		c.finish(id, h2Response{status: s.status, ctype: s.ctype, body: s.body})
	}
	return nil
}

func (c *h2Conn) onHeaders(flags byte, id uint32, p []byte) error {
	if id == 0 {
		return h2Error{h2ProtocolError, "HEADERS on stream 0"}
	}
	p, err := unpad(flags, p)
	if err != nil {
		return err
	}
	if flags&h2FlagPriority != 0 {
		if len(p) < 5 {
			return h2Error{h2FrameSizeError, "HEADERS too short for its priority"}
		}
		p = p[5:]
	}
	c.blockID, c.blockEnd = id, flags&h2FlagEndStream != 0
	c.block = append(c.block[:0], p...)
	return c.gather(flags, nil)
}

// gather adds a CONTINUATION fragment and, at END_HEADERS, decodes the
// block. Every block is decoded, also for streams given up on: the HPACK
// table is the connection's.
func (c *h2Conn) gather(flags byte, p []byte) error {
	c.block = append(c.block, p...)
	if len(c.block) > h2MaxHeaderList {
		return h2Error{h2ProtocolError, "header block too large"}
	}
	if flags&h2FlagEndHeaders == 0 {
		return nil
	}
	id, end := c.blockID, c.blockEnd
	c.blockID = 0
	fields, err := c.hdec.decodeInto(c.fields, c.block, h2MaxHeaderList)
	c.fields = fields
	if err != nil {
		return h2Error{h2CompressionError, err.Error()}
	}
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		c.mu.Unlock()
		return nil
	}
	var fail error
	if !s.gotHeaders {
		status := -1
		for _, f := range fields {
			switch f.name {
			case ":status":
				status, err = strconv.Atoi(f.value)
				if err != nil || len(f.value) != 3 {
					status = 0
				}
			case "content-type":
				s.ctype = f.value
			}
		}
		switch {
		case status < 100:
			fail = errors.New("DoH: response without a valid :status")
		case status < 200 && status != 101:
			end = false // informational: the real headers follow
		case status == 101:
			fail = errors.New("DoH: 101 on HTTP/2")
		default:
			s.status, s.gotHeaders = status, true
		}
	} else if !end {
		fail = errors.New("DoH: trailers without END_STREAM")
	}
	c.mu.Unlock()
	switch {
	case fail != nil:
		c.finish(id, h2Response{err: fail})
		var code [4]byte
		binary.BigEndian.PutUint32(code[:], h2Cancel)
		c.writeControl(h2RSTStream, 0, id, code[:])
	case end:
		c.finish(id, h2Response{status: s.status, ctype: s.ctype, body: s.body})
	}
	return nil
}

func (c *h2Conn) onSettings(flags byte, id uint32, p []byte) error {
	if id != 0 {
		return h2Error{h2ProtocolError, "SETTINGS on a stream"}
	}
	if flags&h2FlagAck != 0 {
		if len(p) != 0 {
			return h2Error{h2FrameSizeError, "SETTINGS ack with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return h2Error{h2FrameSizeError, "SETTINGS not a multiple of 6 octets"}
	}
	c.wmu.Lock() // the ack goes out before anything sent under the new settings
	c.mu.Lock()
	var err error
	for ; len(p) > 0 && err == nil; p = p[6:] {
		v := binary.BigEndian.Uint32(p[2:])
		switch binary.BigEndian.Uint16(p) {
		case h2SettingEnablePush:
			if v > 1 {
				err = h2Error{h2ProtocolError, "ENABLE_PUSH not 0 or 1"}
			}
		case h2SettingMaxConcurrentStreams:
			c.maxStreams = int(min(v, h2MaxStreams))
		case h2SettingInitialWindowSize:
			if v > h2MaxWindow {
				err = h2Error{h2FlowControlError, "INITIAL_WINDOW_SIZE too large"}
				break
			}
			delta := int64(v) - c.peerInitWindow
			c.peerInitWindow = int64(v)
			for _, s := range c.streams {
				s.sendWindow += delta
			}
		case h2SettingMaxFrameSize:
			if v < h2MaxFrame || v > 1<<24-1 {
				err = h2Error{h2ProtocolError, "MAX_FRAME_SIZE out of range"}
				break
			}
			c.peerMaxFrame = int(v)
		}
	}
	c.broadcast()
	c.mu.Unlock()
	if err == nil {
		c.writeFrame(h2Settings, h2FlagAck, 0, nil)
		_ = c.flush()
	}
	c.wmu.Unlock()
	return err
}

func (c *h2Conn) onWindowUpdate(id uint32, inc int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		if inc == 0 {
			return h2Error{h2ProtocolError, "WINDOW_UPDATE of 0"}
		}
		c.sendWindow += inc
		if c.sendWindow > h2MaxWindow {
			return h2Error{h2FlowControlError, "connection window overflow"}
		}
	} else if s := c.streams[id]; s != nil && inc > 0 {
		s.sendWindow += inc // a stream error (0, overflow) only hurts that stream
	}
	c.broadcast()
	return nil
}

// onGoAway stops new streams; those the server will not process fail as
// refused (and are retried), the others run to their end.
func (c *h2Conn) onGoAway(last, code uint32) {
	c.mu.Lock()
	c.goAway = true
	var refused []uint32
	for id := range c.streams {
		if id > last {
			refused = append(refused, id)
		}
	}
	empty := len(c.streams) == 0
	c.mu.Unlock()
	for _, id := range refused {
		c.finish(id, h2Response{err: errRefusedStream})
	}
	if empty {
		c.close(fmt.Errorf("%w: GOAWAY (HTTP/2 error %d)", errConnClosed, code))
	}
}
