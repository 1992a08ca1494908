// Package minihttp is a small HTTP/1.1 server and client for the guard's
// own sockets (the control socket beside the state file), written so that
// the router binary carries no net/http: net/http and what it pulls in
// (TLS-less as it is here) are about 1.7 MB of the mipsle build.
//
// It speaks the part of RFC 9112 such a socket needs and refuses the
// rest clearly: one request per connection (every response says
// Connection: close), request bodies with Content-Length only (a
// Transfer-Encoding is 501), origin-form targets, bounded request line,
// header and body sizes, a deadline on reading the request and on writing
// the response. Routes are "METHOD /path/{name}" patterns as in net/http's
// ServeMux, so handlers move over unchanged if a later need (an API on the
// LAN with its own authentication) brings net/http back.
package minihttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits and timeouts used when a Server leaves them zero.
const (
	DefaultMaxHeader    = 8 << 10 // request line and header fields
	DefaultMaxBody      = 1 << 20
	DefaultReadTimeout  = 5 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultMaxConns     = 64 // connections served at once
)

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = errors.New("minihttp: server closed")

// Header holds header fields by lower-case name; repeated fields are
// joined with ", " (RFC 9110 §5.3).
type Header map[string]string

// Get returns the field's value ("" if absent); name is case-insensitive.
func (h Header) Get(name string) string { return h[strings.ToLower(name)] }

// Set sets a field; name is case-insensitive.
func (h Header) Set(name, value string) { h[strings.ToLower(name)] = value }

// Request is a parsed request.
type Request struct {
	Method   string
	Path     string // decoded path
	RawPath  string // path as sent (routes match its segments one by one)
	RawQuery string
	Proto    string // HTTP/1.0 or HTTP/1.1
	Header   Header
	// Body is the request content: exactly Content-Length octets (none
	// without one).
	Body          io.Reader
	ContentLength int64
	// RemoteAddr is the client's address (the connection's peer), set
	// by the Server.
	RemoteAddr net.Addr

	params map[string]string
}

// PathValue returns the path segment matched by {name} in the route.
func (r *Request) PathValue(name string) string { return r.params[name] }

// ResponseWriter collects a handler's response; it is sent, with its
// Content-Length, when the handler returns.
type ResponseWriter struct {
	status int
	header Header
	body   bytes.Buffer
}

// Header is the response's header fields (set them before Write).
func (w *ResponseWriter) Header() Header { return w.header }

// WriteHeader sets the status; the first call wins.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

// Write appends to the body (status 200 unless set).
func (w *ResponseWriter) Write(b []byte) (int, error) {
	w.WriteHeader(200)
	return w.body.Write(b)
}

// Error replies with a plain-text error message.
func Error(w *ResponseWriter, msg string, code int) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// HandlerFunc answers one request.
type HandlerFunc func(w *ResponseWriter, r *Request)

// Mux routes requests by method and path pattern.
type Mux struct {
	routes []route
}

type route struct {
	method string
	segs   []string // literal segments, or {name}
	h      HandlerFunc
}

// HandleFunc registers h for pattern "METHOD /a/{name}/b": the method
// must match exactly, literal segments exactly, and {name} one non-empty
// segment, available as r.PathValue(name).
func (m *Mux) HandleFunc(pattern string, h HandlerFunc) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok || !strings.HasPrefix(path, "/") {
		panic("minihttp: pattern must be \"METHOD /path\": " + pattern)
	}
	m.routes = append(m.routes, route{method: method, segs: strings.Split(path[1:], "/"), h: h})
}

// serve dispatches r: 404 when no pattern matches the path, 405 (with
// Allow) when only the method differs.
func (m *Mux) serve(w *ResponseWriter, r *Request) {
	// Segments are split before unescaping, so %2F stays inside one.
	segs := strings.Split(r.RawPath[1:], "/")
	for i, seg := range segs {
		segs[i], _ = url.PathUnescape(seg) // the whole path unescaped already
	}
	var allow []string
	for _, rt := range m.routes {
		params, ok := rt.match(segs)
		if !ok {
			continue
		}
		if rt.method != r.Method {
			allow = append(allow, rt.method)
			continue
		}
		r.params = params
		rt.h(w, r)
		return
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		Error(w, "method not allowed", 405)
		return
	}
	Error(w, "not found", 404)
}

func (rt route) match(segs []string) (map[string]string, bool) {
	if len(segs) != len(rt.segs) {
		return nil, false
	}
	var params map[string]string
	for i, p := range rt.segs {
		if len(p) > 2 && p[0] == '{' && p[len(p)-1] == '}' {
			if segs[i] == "" {
				return nil, false
			}
			if params == nil {
				params = make(map[string]string)
			}
			params[p[1:len(p)-1]] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// Server serves a Mux on a listener.
type Server struct {
	Handler      *Mux
	MaxHeader    int   // DefaultMaxHeader if 0
	MaxBody      int64 // DefaultMaxBody if 0; larger bodies get 413
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxConns bounds the connections served at once (DefaultMaxConns
	// if 0); one more is closed as soon as it is accepted, so clients
	// that connect and say nothing cannot pile up goroutines.
	MaxConns int
	Log      *slog.Logger // slog.Default() if nil

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve accepts connections on ln until Shutdown, serving each in its own
// goroutine (joined by Shutdown).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	s.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		max := s.MaxConns
		if max <= 0 {
			max = DefaultMaxConns
		}
		if open := len(s.conns); open >= max {
			s.mu.Unlock()
			c.Close()
			s.log().Debug("minihttp: connection refused, too many open", "open", open)
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, lets the requests being served finish until
// ctx ends, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// httpError is a request the server refuses before any handler sees it.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	rt := s.ReadTimeout
	if rt <= 0 {
		rt = DefaultReadTimeout
	}
	wt := s.WriteTimeout
	if wt <= 0 {
		wt = DefaultWriteTimeout
	}
	_ = c.SetReadDeadline(time.Now().Add(rt))
	br := bufio.NewReaderSize(c, 4096)
	w := &ResponseWriter{header: Header{}}
	req, err := ReadRequest(br, s.maxHeader(), s.maxBody())
	var he *httpError
	switch {
	case errors.As(err, &he):
		Error(w, he.msg, he.code)
	case err != nil:
		return // the client went away or timed out: nobody to answer
	default:
		req.RemoteAddr = c.RemoteAddr()
		s.Handler.serve(w, req)
	}
	_ = c.SetWriteDeadline(time.Now().Add(wt))
	if err := w.send(c); err != nil {
		s.log().Debug("minihttp: writing response", "err", err)
	}
}

func (s *Server) maxHeader() int {
	if s.MaxHeader > 0 {
		return s.MaxHeader
	}
	return DefaultMaxHeader
}

func (s *Server) maxBody() int64 {
	if s.MaxBody > 0 {
		return s.MaxBody
	}
	return DefaultMaxBody
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// send writes the response with Content-Length and Connection: close.
func (w *ResponseWriter) send(c io.Writer) error {
	w.WriteHeader(200)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, StatusText(w.status))
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	for k, v := range w.header {
		if !validFieldValue(v) {
			continue // never let a value split the header
		}
		fmt.Fprintf(&b, "%s: %s\r\n", canonical(k), v)
	}
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	_, err := c.Write(b.Bytes())
	return err
}

// StatusText is the reason phrase sent with a status.
func StatusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 204:
		return "No Content"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}

// ReadRequest parses one request's line and header fields from br
// (RFC 9112 §2-§6) and sets up its body. Refusals are *httpError with the
// status to answer; other errors are the connection's.
func ReadRequest(br *bufio.Reader, maxHeader int, maxBody int64) (*Request, error) {
	budget := maxHeader
	line, err := readLine(br, &budget)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !isToken(method) || target == "" {
		return nil, &httpError{400, "malformed request line"}
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return nil, &httpError{505, "HTTP/1.0 or HTTP/1.1 only"}
	}
	if target[0] != '/' {
		return nil, &httpError{400, "request target must be a path"}
	}
	rawPath, rawQuery, _ := strings.Cut(target, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil || strings.ContainsAny(path, "\x00") || !validTarget(target) {
		return nil, &httpError{400, "malformed request target"}
	}
	r := &Request{Method: method, Path: path, RawPath: rawPath, RawQuery: rawQuery, Proto: proto, Header: Header{}}
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			// Also whitespace before the colon and obs-fold
			// continuation lines (RFC 9112 §5.1, §5.2).
			return nil, &httpError{400, "malformed header field"}
		}
		value = strings.Trim(value, " \t")
		if !validFieldValue(value) {
			return nil, &httpError{400, "malformed header field value"}
		}
		name = strings.ToLower(name)
		if old, dup := r.Header[name]; dup {
			if name == "content-length" && old != value {
				return nil, &httpError{400, "conflicting Content-Length"}
			}
			if name != "content-length" {
				value = old + ", " + value
			}
		}
		r.Header[name] = value
	}
	if proto == "HTTP/1.1" && r.Header.Get("Host") == "" {
		return nil, &httpError{400, "missing Host"}
	}
	if _, ok := r.Header["transfer-encoding"]; ok {
		return nil, &httpError{501, "Transfer-Encoding not supported; send Content-Length"}
	}
	if cl, ok := r.Header["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 || cl[0] == '+' {
			return nil, &httpError{400, "malformed Content-Length"}
		}
		if n > maxBody {
			return nil, &httpError{413, "request body too large"}
		}
		r.ContentLength = n
	}
	r.Body = io.LimitReader(br, r.ContentLength)
	return r, nil
}

// readLine reads one CRLF (or bare LF) terminated line within budget.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return "", &httpError{431, "request header too large"}
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	return string(line), nil
}

// isToken reports whether s is an RFC 9110 token (methods, field names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validFieldValue rejects control characters (CR, LF, NUL among them).
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validTarget rejects control characters, spaces and non-ASCII in the
// request target (RFC 9112 §3.2, RFC 3986).
func validTarget(t string) bool {
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// canonical is a field name as usually written: Content-Type.
func canonical(name string) string {
	b := []byte(name)
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}
