package minihttp

import (
	"bufio"
	"bytes"
	"context"
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
	// Delimited reports a body whose end the response marked
	// (Content-Length, chunked, or none by status), so the connection
	// can carry another request unless the server said Connection: close.
	Delimited bool
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

// ReadResponse parses a response to a request other than HEAD: the
// status line, header fields and a body of Content-Length octets, chunked
// (RFC 9112 §7.1; trailers read and dropped) or, with neither, up to the
// end of the connection. Interim 1xx responses are skipped.
func ReadResponse(br *bufio.Reader, maxBody int64) (*Response, error) {
	for {
		r, err := readResponse(br, maxBody)
		if err != nil || r.StatusCode >= 200 || r.StatusCode == 101 {
			return r, err
		}
	}
}

func readResponse(br *bufio.Reader, maxBody int64) (*Response, error) {
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
	if n < 200 || n == 204 || n == 304 {
		r.Delimited = true
		return r, nil // no body
	}
	switch te := strings.ToLower(r.Header.Get("Transfer-Encoding")); {
	case te == "chunked":
		r.Body, err = readChunked(br, maxBody)
		r.Delimited = err == nil
		return r, err
	case te != "":
		return nil, fmt.Errorf("minihttp: Transfer-Encoding %q not supported", te)
	}
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
		r.Delimited = true
		return r, nil
	}
	r.Body, err = io.ReadAll(io.LimitReader(br, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("minihttp: reading response body: %w", err)
	}
	if int64(len(r.Body)) > maxBody {
		return nil, fmt.Errorf("minihttp: response body more than %d octets", maxBody)
	}
	return r, nil
}

// readChunked reads a chunked body and its trailer section.
func readChunked(br *bufio.Reader, maxBody int64) ([]byte, error) {
	var body []byte
	budget := DefaultMaxHeader * 4 // chunk-size lines and trailers
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, fmt.Errorf("minihttp: reading chunk size: %w", err)
		}
		hex, _, _ := strings.Cut(line, ";") // chunk extensions ignored
		size, err := strconv.ParseUint(strings.TrimRight(hex, " \t"), 16, 63)
		if err != nil || hex == "" || hex[0] == '+' {
			return nil, fmt.Errorf("minihttp: malformed chunk size %q", line)
		}
		if size == 0 {
			break
		}
		if int64(size) > maxBody-int64(len(body)) {
			return nil, fmt.Errorf("minihttp: response body more than %d octets", maxBody)
		}
		start := len(body)
		body = append(body, make([]byte, size)...)
		if _, err := io.ReadFull(br, body[start:]); err != nil {
			return nil, fmt.Errorf("minihttp: reading chunk: %w", err)
		}
		if line, err := readLine(br, &budget); err != nil || line != "" {
			return nil, fmt.Errorf("minihttp: chunk not followed by CRLF (%v)", err)
		}
	}
	for { // trailer section, up to the empty line
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, fmt.Errorf("minihttp: reading trailers: %w", err)
		}
		if line == "" {
			return body, nil
		}
	}
}
