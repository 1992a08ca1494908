package minihttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxResponse bounds a response body read by Do.
const DefaultMaxResponse = 64 << 20

// Response is what Do got back.
type Response struct {
	StatusCode int
	Status     string // "404 Not Found"
	Header     Header
	Body       []byte
}

// Do sends one request on a connection from dial and reads the whole
// response: status line, header fields, and a body of Content-Length
// octets or, without one, up to the end of the connection (the server
// closes it after one response). ctx bounds the whole exchange. host is
// the Host field; body may be nil.
func Do(ctx context.Context, dial func(context.Context) (net.Conn, error), method, host, target string, header Header, body []byte) (*Response, error) {
	if !validTarget(target) || !strings.HasPrefix(target, "/") || !isToken(method) || !validFieldValue(host) {
		return nil, fmt.Errorf("minihttp: malformed request %s %q (host %q)", method, target, host)
	}
	for k, v := range header {
		if !isToken(k) || !validFieldValue(v) {
			return nil, fmt.Errorf("minihttp: malformed header field %q", k)
		}
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", canonical(strings.ToLower(k)), v)
	}
	if body != nil || method == "POST" || method == "PUT" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := c.Write(b.Bytes()); err != nil {
		return nil, ctxErr(ctx, err)
	}
	resp, err := ReadResponse(bufio.NewReader(c), DefaultMaxResponse)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return resp, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// ReadResponse parses a response to a request other than HEAD.
func ReadResponse(br *bufio.Reader, maxBody int64) (*Response, error) {
	budget := DefaultMaxHeader * 4
	line, err := readLine(br, &budget)
	if err != nil {
		return nil, fmt.Errorf("minihttp: reading response: %w", err)
	}
	proto, status, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(status, " ")
	n, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || len(code) != 3 || n < 100 {
		return nil, fmt.Errorf("minihttp: malformed status line %q", line)
	}
	r := &Response{StatusCode: n, Status: status, Header: Header{}}
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, fmt.Errorf("minihttp: reading response header: %w", err)
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return nil, fmt.Errorf("minihttp: malformed header field %q", line)
		}
		r.Header[strings.ToLower(name)] = strings.Trim(value, " \t")
	}
	if r.Header.Get("Transfer-Encoding") != "" {
		return nil, errors.New("minihttp: Transfer-Encoding in a response is not supported")
	}
	var rd io.Reader = br
	if cl := r.Header.Get("Content-Length"); cl != "" {
		size, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("minihttp: malformed Content-Length %q", cl)
		}
		if size > maxBody {
			return nil, fmt.Errorf("minihttp: response of %d octets, more than %d", size, maxBody)
		}
		r.Body = make([]byte, size)
		if _, err := io.ReadFull(br, r.Body); err != nil {
			return nil, fmt.Errorf("minihttp: reading response body: %w", err)
		}
		return r, nil
	}
	r.Body, err = io.ReadAll(io.LimitReader(rd, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("minihttp: reading response body: %w", err)
	}
	if int64(len(r.Body)) > maxBody {
		return nil, fmt.Errorf("minihttp: response body more than %d octets", maxBody)
	}
	return r, nil
}
