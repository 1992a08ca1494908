package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/dnsguard/dnsguard/guard/minihttp"
)

// h1MaxIdle bounds the idle HTTP/1.1 connections kept per upstream.
const h1MaxIdle = 4

// h1Conn is one HTTP/1.1 connection to a DoH server that did not
// negotiate h2: one request at a time (no pipelining), kept for the next
// query while the server keeps it open.
type h1Conn struct {
	tc    *tls.Conn
	br    *bufio.Reader
	used  time.Time // when it last finished a request
	fresh bool      // dialled and not yet used
}

func newH1Conn(tc *tls.Conn) *h1Conn {
	return &h1Conn{tc: tc, br: bufio.NewReaderSize(tc, 4096), used: time.Now(), fresh: true}
}

// roundTripH1 POSTs body on c and reads the answer; c goes back to the
// idle ones when the answer was complete and the server keeps the
// connection, and is closed otherwise. A reused connection that fails
// before an answer (the server had closed it) fails with errConnClosed.
func (d *doh) roundTripH1(ctx context.Context, until time.Time, c *h1Conn, body []byte, reused bool) (h2Response, error) {
	ctx, cancel := withDeadline(ctx, &until)
	defer cancel()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(d.idle)
	}
	_ = c.tc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.tc.SetDeadline(time.Unix(1, 0)) })
	var b strings.Builder
	b.Grow(256 + len(body))
	b.WriteString("POST " + d.path + " HTTP/1.1\r\nHost: " + d.authority +
		"\r\nContent-Type: " + MediaType + "\r\nAccept: " + MediaType +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	_, err := io.WriteString(c.tc, b.String())
	var resp *minihttp.Response
	if err == nil {
		resp, err = minihttp.ReadResponse(c.br, maxMessage)
	}
	stopped := stop()
	if err != nil {
		c.tc.Close()
		switch {
		case ctx.Err() != nil || !stopped:
			return h2Response{}, ctx.Err()
		case reused:
			return h2Response{}, fmt.Errorf("%w: HTTP/1.1: %v", errConnClosed, err)
		case strings.Contains(err.Error(), "more than"):
			return h2Response{}, errors.New("DoH: answer larger than a DNS message")
		}
		return h2Response{}, fmt.Errorf("DoH: HTTP/1.1: %w", err)
	}
	c.used = time.Now()
	if resp.Delimited && !strings.EqualFold(resp.Header.Get("Connection"), "close") {
		d.putIdle(c)
	} else {
		c.tc.Close()
	}
	return h2Response{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: resp.Body}, nil
}

// putIdle keeps c for the next query, or closes it.
func (d *doh) putIdle(c *h1Conn) {
	_ = c.tc.SetDeadline(time.Time{})
	d.mu.Lock()
	keep := !d.closed && len(d.h1idle) < h1MaxIdle
	if keep {
		d.h1idle = append(d.h1idle, c)
	}
	d.mu.Unlock()
	if !keep {
		c.tc.Close()
	}
}
