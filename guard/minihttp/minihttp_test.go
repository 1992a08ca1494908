package minihttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

func TestReadRequest(t *testing.T) {
	cases := []struct {
		name, in string
		code     int // 0: parses
		method   string
		path     string
		body     string
	}{
		{"get", "GET /devices HTTP/1.1\r\nHost: x\r\n\r\n", 0, "GET", "/devices", ""},
		{"bare LF", "GET /devices HTTP/1.1\nHost: x\n\n", 0, "GET", "/devices", ""},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 0, "GET", "/", ""},
		{"escaped path and query", "GET /devices/02%3A00%3A00/override?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 0, "GET", "/devices/02:00:00/override", ""},
		{"body", "PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello, extra", 0, "PUT", "/o", "hello"},
		{"same content-length twice", "PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", 0, "PUT", "/o", "hi"},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "", "", ""},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "", "", ""},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", "", ""},
		{"no version", "GET /\r\n\r\n", 400, "", "", ""},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 505, "", "", ""},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", "", ""},
		{"NUL in path", "GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", "", ""},
		{"bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", "", ""},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "", "", ""},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", 400, "", "", ""},
		{"control char in value", "GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", 400, "", "", ""},
		{"conflicting content-length", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", 400, "", "", ""},
		{"negative content-length", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "", "", ""},
		{"signed content-length", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", 400, "", "", ""},
		{"chunked", "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "", "", ""},
		{"body too large", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 413, "", "", ""},
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 600) + "\r\n\r\n", 431, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := ReadRequest(bufio.NewReader(strings.NewReader(c.in)), 512, 1000)
			var he *httpError
			if c.code != 0 {
				if !errors.As(err, &he) || he.code != c.code {
					t.Fatalf("err %v, want status %d", err, c.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r.Body)
			if r.Method != c.method || r.Path != c.path || string(body) != c.body || r.RawPath[0] != '/' {
				t.Errorf("%s %s %q, want %s %s %q", r.Method, r.Path, body, c.method, c.path, c.body)
			}
		})
	}
	// A request cut short is the connection's error, answered by nobody.
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHo")), 512, 1000); !errors.Is(err, io.EOF) {
		t.Errorf("truncated: %v", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add("GET /devices HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("PUT /devices/a/override HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	f.Add("GET /%41 HTTP/1.0\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ReadRequest(bufio.NewReader(strings.NewReader(in)), 1024, 1024)
		if err != nil {
			return
		}
		if !isToken(r.Method) || !strings.HasPrefix(r.Path, "/") || r.ContentLength < 0 || r.ContentLength > 1024 {
			t.Fatalf("accepted %+v", r)
		}
		for k, v := range r.Header {
			if !isToken(k) || strings.ToLower(k) != k || !validFieldValue(v) {
				t.Fatalf("header %q: %q", k, v)
			}
		}
		_, _ = io.ReadAll(r.Body)
	})
}

// serve starts a Server with a couple of routes on a unix socket.
func serve(t *testing.T) (string, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := new(Mux)
	mux.HandleFunc("GET /items", func(w *ResponseWriter, r *Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `["a","b"]`)
	})
	mux.HandleFunc("PUT /items/{id}/note", func(w *ResponseWriter, r *Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("X-Id", r.PathValue("id"))
		io.WriteString(w, r.PathValue("id")+"="+string(b))
	})
	srv := &Server{Handler: mux, MaxBody: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, srv
}

func unixDial(path string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

func TestServerAndClient(t *testing.T) {
	path, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct {
		method, target, body string
		status               int
		want                 string
		header               [2]string
	}{
		{"GET", "/items", "", 200, `["a","b"]`, [2]string{"Content-Type", "application/json"}},
		{"PUT", "/items/02:00:00:00:00:01/note", "hi", 200, "02:00:00:00:00:01=hi", [2]string{"X-Id", "02:00:00:00:00:01"}},
		{"PUT", "/items/a%2Fb/note", "x", 200, "a/b=x", [2]string{}},
		{"GET", "/items/x/note", "", 405, "method not allowed\n", [2]string{"Allow", "PUT"}},
		{"GET", "/nothing", "", 404, "not found\n", [2]string{"Content-Type", "text/plain; charset=utf-8"}},
		{"PUT", "/items//note", "", 404, "not found\n", [2]string{}},
		{"PUT", "/items/x/note", strings.Repeat("b", 65), 413, "request body too large\n", [2]string{}},
	}
	for _, c := range cases {
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		resp, err := Do(ctx, unixDial(path), c.method, "localhost", c.target, nil, body)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.target, err)
		}
		if resp.StatusCode != c.status || string(resp.Body) != c.want || resp.Status != fmt.Sprint(c.status, " ", StatusText(c.status)) {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.target, resp.StatusCode, resp.Body, c.status, c.want)
		}
		if c.header[0] != "" && resp.Header.Get(c.header[0]) != c.header[1] {
			t.Errorf("%s %s: %s %q, want %q", c.method, c.target, c.header[0], resp.Header.Get(c.header[0]), c.header[1])
		}
		if resp.Header.Get("Connection") != "close" {
			t.Errorf("Connection %q", resp.Header.Get("Connection"))
		}
	}
	// Header injection through the client's arguments is refused.
	if _, err := Do(ctx, unixDial(path), "GET", "x\r\nEvil: 1", "/items", nil, nil); err == nil {
		t.Error("CRLF in Host accepted")
	}
	if _, err := Do(ctx, unixDial(path), "GET", "x", "/items", Header{"x-a": "1\r\nEvil: 1"}, nil); err == nil {
		t.Error("CRLF in a header value accepted")
	}
}

// Real clients: net/http's and curl against the server, and Do against
// net/http's server.
func TestInterop(t *testing.T) {
	path, _ := serve(t)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return unixDial(path)(ctx)
	}}}
	resp, err := hc.Post("http://dnsguard/items/7/note", "text/plain", strings.NewReader("from net/http"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "PUT" {
		t.Errorf("POST: %d %s", resp.StatusCode, b)
	}
	req, _ := http.NewRequest("PUT", "http://dnsguard/items/7/note", strings.NewReader("from net/http"))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "7=from net/http" || resp.ContentLength != int64(len(b)) {
		t.Errorf("PUT: %d %q", resp.StatusCode, b)
	}

	t.Run("curl", func(t *testing.T) {
		curl := testenv.Require(t, "curl")[0]
		out, err := exec.Command(curl, "-sS", "--unix-socket", path, "-X", "PUT", "--data-binary", "from curl", "http://localhost/items/c/note").CombinedOutput()
		if err != nil || string(out) != "c=from curl" {
			t.Errorf("curl: %v %q", err, out)
		}
		out, err = exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", path, "http://localhost/nothing").CombinedOutput()
		if err != nil || string(out) != "404" {
			t.Errorf("curl 404: %v %q", err, out)
		}
	})

	npath := filepath.Join(t.TempDir(), "nethttp.sock")
	ln, err := net.Listen("unix", npath)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+r.Host+" "+string(b))
	})}
	go hs.Serve(ln)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Do(ctx, unixDial(npath), "PUT", "dnsguard", "/x/y", nil, []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != 200 || string(r.Body) != "PUT /x/y dnsguard body" || r.Status != "200 OK" {
		t.Errorf("Do against net/http: %s %q", r.Status, r.Body)
	}
}

// Shutdown closes what is still open once its context ends, and Serve
// returns.
func TestShutdownClosesStuckConnections(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: new(Mux), ReadTimeout: time.Hour}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\n") // and nothing more
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection never accepted")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("stuck connection still open: %d %v", n, err)
	}
}

func TestReadResponse(t *testing.T) {
	cases := []struct {
		name, in  string
		ok        bool
		status    int
		body      string
		delimited bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", true, 200, "abc", true},
		{"chunked with extension and trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n7\r\n0123456\r\n0\r\nX-T: 1\r\n\r\n", true, 200, "abc0123456", true},
		{"interim responses skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", true, 404, "no", true},
		{"to the end", "HTTP/1.0 200 OK\r\n\r\nall of it", true, 200, "all of it", false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", true, 204, "", true},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, 0, "", false},
		{"signed chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n", false, 0, "", false},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", false, 0, "", false},
		{"chunks over the limit", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n", false, 0, "", false},
		{"content-length over the limit", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n01234567890", false, 0, "", false},
		{"unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0, "", false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false, 0, "", false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", false, 0, "", false},
	}
	for _, c := range cases {
		r, err := ReadResponse(bufio.NewReader(strings.NewReader(c.in)), 10)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.ok && (r.StatusCode != c.status || string(r.Body) != c.body || r.Delimited != c.delimited) {
			t.Errorf("%s: %d %q delimited %v", c.name, r.StatusCode, r.Body, r.Delimited)
		}
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ReadResponse(bufio.NewReader(strings.NewReader(in)), 512)
		if err == nil && (len(r.Body) > 512 || r.StatusCode < 100 || r.StatusCode > 999) {
			t.Fatalf("accepted %d with %d octets", r.StatusCode, len(r.Body))
		}
	})
}

// Past MaxConns a new connection is closed at once; when one ends, the
// next is served.
func TestMaxConns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := new(Mux)
	mux.HandleFunc("GET /x", func(w *ResponseWriter, r *Request) { io.WriteString(w, "ok") })
	srv := &Server{Handler: mux, MaxConns: 2, ReadTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Shutdown(context.Background()); <-done }()
	var idle []net.Conn
	for range 2 { // say nothing, hold their places
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connections never accepted")
		}
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("third connection: %d %v, want closed", n, err)
	}
	c.Close()
	idle[0].Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		resp, err := Do(ctx, unixDial(path), "GET", "x", "/x", nil, nil)
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("never served after a place freed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
