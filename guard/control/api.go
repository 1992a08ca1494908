package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/minihttp"
	"golang.org/x/sys/unix"
)

// The dashboard: one page, its script and its style, nothing else.
var (
	//go:embed web/index.html
	indexHTML []byte
	//go:embed web/app.js
	appJS []byte
	//go:embed web/app.css
	appCSS []byte
)

// Auth and session settings.
const (
	cookieName    = "dnsguard_session"
	sessionTTL    = 12 * time.Hour
	maxSessions   = 64
	failBurst     = 5                // wrong tokens a client may send in a row
	failInterval  = 10 * time.Second // then one more per interval
	maxFailClient = 1024             // clients whose failures are remembered
	maxBody       = 4096
)

// Options configure the API server.
type Options struct {
	Listen string // IP:PORT
	Token  string // empty: /api/ and the dashboard refuse everyone
	// Allow decides who may connect at all; everyone else's connection
	// is closed unanswered.
	Allow   func(netip.Addr) bool
	Sources *Sources
	Log     *slog.Logger
	Now     func() time.Time
	// RateEvery is how often the devices' query rates are sampled for
	// the dashboard (rateEvery if 0).
	RateEvery time.Duration
}

// Server serves the API, /metrics and the dashboard.
type Server struct {
	opts  Options
	token [sha256.Size]byte
	srv   *minihttp.Server
	ln    net.Listener
	done  chan struct{}
	rates *rates
	stop  context.CancelFunc
	wg    sync.WaitGroup

	// Closed counts connections closed for coming from outside Allow.
	Closed atomic.Uint64

	statsMu   sync.Mutex
	lastStats *Stats // the last gathered, reused for statsFor
	mu        sync.Mutex
	sessions  map[string]time.Time     // session id -> expiry
	fails     map[netip.Addr]time.Time // client -> GCRA theoretical arrival time
}

// Serve binds opts.Listen and serves until Close.
func Serve(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ap, err := netip.ParseAddrPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("api: listen %q: %w", opts.Listen, err)
	}
	ln, err := listenFreebind(ap)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{opts: opts, token: sha256.Sum256([]byte(opts.Token)), done: make(chan struct{}),
		sessions: map[string]time.Time{}, fails: map[netip.Addr]time.Time{}}
	s.ln = &allowListener{Listener: ln, s: s}
	mux := new(minihttp.Mux)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("POST /api/v1/login", s.login)
	mux.HandleFunc("POST /api/v1/logout", s.logout)
	mux.HandleFunc("GET /api/v1/devices", s.auth(s.devices))
	mux.HandleFunc("GET /api/v1/devices/{id}", s.auth(s.device))
	mux.HandleFunc("POST /api/v1/devices/{id}", s.auth(s.override))
	mux.HandleFunc("GET /api/v1/stats", s.auth(s.stats))
	mux.HandleFunc("GET /api/v1/events", s.auth(s.events))
	mux.HandleFunc("GET /api/v1/rates", s.auth(s.rateHistory))
	mux.HandleFunc("GET /api/v1/classes", s.auth(s.classes))
	mux.HandleFunc("GET /", static(indexHTML, "text/html; charset=utf-8"))
	mux.HandleFunc("GET /app.js", static(appJS, "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /app.css", static(appCSS, "text/css; charset=utf-8"))
	s.srv = &minihttp.Server{Handler: mux, MaxBody: maxBody, Log: opts.Log}
	s.rates = newRates()
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	if reg := opts.Sources.Registry; reg != nil {
		every := opts.RateEvery
		if every <= 0 {
			every = rateEvery
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.rates.run(ctx, reg, every, opts.Now) }()
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, minihttp.ErrServerClosed) {
			opts.Log.Error("api stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving; requests being answered finish until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	s.stop()
	s.wg.Wait()
	return err
}

// allowListener closes connections from clients outside Allow before a
// byte is read.
type allowListener struct {
	net.Listener
	s *Server
}

func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.opts.Allow == nil || l.s.opts.Allow(remoteIP(c.RemoteAddr())) {
			return c, nil
		}
		l.s.Closed.Add(1)
		c.Close()
	}
}

func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// secure sets the headers every response carries: no sniffing, no
// framing, no referrer, no caching. No CORS header is ever sent, so
// browsers keep other origins' scripts from reading anything.
func secure(w *minihttp.ResponseWriter) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func writeJSON(w *minihttp.ResponseWriter, code int, v any) {
	secure(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w *minihttp.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// tokenOK compares a presented token with the configured one in constant
// time (both hashed first, so their lengths do not show either).
func (s *Server) tokenOK(t string) bool {
	if s.opts.Token == "" || t == "" {
		return false
	}
	h := sha256.Sum256([]byte(t))
	return subtle.ConstantTimeCompare(h[:], s.token[:]) == 1
}

// blocked reports whether client sent too many wrong tokens lately, and
// when it may try again.
func (s *Server) blocked(client netip.Addr) (time.Duration, bool) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, ok := s.fails[client]
	if !ok {
		return 0, false
	}
	if wait := tat.Sub(now) - (failBurst-1)*failInterval; wait > 0 {
		return wait, true
	}
	return 0, false
}

// failed counts a wrong token from client (GCRA: failBurst at once, then
// one per failInterval).
func (s *Server) failed(client netip.Addr) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	tat := s.fails[client]
	if tat.Before(now) {
		tat = now
	}
	if _, ok := s.fails[client]; !ok && len(s.fails) >= maxFailClient {
		for c, t := range s.fails {
			if t.Before(now) {
				delete(s.fails, c)
			}
		}
		if len(s.fails) >= maxFailClient {
			clear(s.fails)
		}
	}
	s.fails[client] = tat.Add(failInterval)
}

func clientOf(r *minihttp.Request) netip.Addr { return remoteIP(r.RemoteAddr) }

// session returns the valid session id in r's cookie, if any.
func (s *Server) session(r *minihttp.Request) (string, bool) {
	for _, c := range strings.Split(r.Header.Get("Cookie"), ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(c), "=")
		if !ok || name != cookieName {
			continue
		}
		s.mu.Lock()
		exp, ok := s.sessions[val]
		if ok && !s.opts.Now().Before(exp) {
			delete(s.sessions, val)
			ok = false
		}
		s.mu.Unlock()
		if ok {
			return val, true
		}
	}
	return "", false
}

// auth admits requests with the token (Authorization: Bearer) or a
// session cookie. Wrong tokens count against the client; past the burst
// it gets 429 until its failures age. A state-changing request with a
// cookie must come from the API's own origin as JSON.
func (s *Server) auth(h minihttp.HandlerFunc) minihttp.HandlerFunc {
	return func(w *minihttp.ResponseWriter, r *minihttp.Request) {
		if s.admit(w, r) {
			h(w, r)
		}
	}
}

// admit reports whether r may go on, answering it when not.
func (s *Server) admit(w *minihttp.ResponseWriter, r *minihttp.Request) bool {
	client := clientOf(r)
	if wait, ok := s.blocked(client); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		fail(w, 429, "too many wrong tokens; try again later")
		return false
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if s.tokenOK(strings.TrimSpace(bearer)) {
			return true
		}
		s.failed(client)
		s.opts.Log.Warn("api: wrong token", "client", client)
		w.Header().Set("WWW-Authenticate", `Bearer realm="dnsguard"`)
		fail(w, 401, "wrong token")
		return false
	}
	if _, ok := s.session(r); ok {
		if r.Method != "GET" && !sameOrigin(r) {
			fail(w, 403, "cross-origin request refused")
			return false
		}
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="dnsguard"`)
	fail(w, 401, "token required (Authorization: Bearer, or log in)")
	return false
}

// sameOrigin admits a request whose Origin, when sent, names the Host it
// was sent to, and whose body is JSON (a cross-site form cannot send
// that without a preflight, which gets no CORS answer).
func sameOrigin(r *minihttp.Request) bool {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	host, ok := strings.CutPrefix(o, "http://")
	if !ok {
		host, ok = strings.CutPrefix(o, "https://")
	}
	return ok && host == r.Header.Get("Host")
}

// login takes {"token": "..."} and sets an HttpOnly, SameSite=Strict
// session cookie.
func (s *Server) login(w *minihttp.ResponseWriter, r *minihttp.Request) {
	client := clientOf(r)
	if wait, ok := s.blocked(client); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		fail(w, 429, "too many wrong tokens; try again later")
		return
	}
	if !sameOrigin(r) {
		fail(w, 403, "log in with a JSON body from the dashboard's own origin")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&body); err != nil {
		fail(w, 400, "want {\"token\": \"...\"}")
		return
	}
	if !s.tokenOK(body.Token) {
		s.failed(client)
		s.opts.Log.Warn("api: wrong token at login", "client", client)
		fail(w, 401, "wrong token")
		return
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		fail(w, 500, "no randomness")
		return
	}
	id := hex.EncodeToString(b[:])
	now := s.opts.Now()
	s.mu.Lock()
	for k, exp := range s.sessions {
		if !now.Before(exp) {
			delete(s.sessions, k)
		}
	}
	if len(s.sessions) >= maxSessions {
		// The oldest session goes.
		var oldest string
		for k, exp := range s.sessions {
			if oldest == "" || exp.Before(s.sessions[oldest]) {
				oldest = k
			}
		}
		delete(s.sessions, oldest)
	}
	s.sessions[id] = now.Add(sessionTTL)
	s.mu.Unlock()
	secure(w)
	w.Header().Set("Set-Cookie", fmt.Sprintf("%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict", cookieName, id, int(sessionTTL.Seconds())))
	w.WriteHeader(204)
}

func (s *Server) logout(w *minihttp.ResponseWriter, r *minihttp.Request) {
	if id, ok := s.session(r); ok {
		s.mu.Lock()
		delete(s.sessions, id)
		s.mu.Unlock()
	}
	secure(w)
	w.Header().Set("Set-Cookie", cookieName+"=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
	w.WriteHeader(204)
}

// statsFor is how long gathered stats are reused: /metrics needs no
// token, and grading every device for each request would let any LAN
// client keep the router's CPU busy.
const statsFor = time.Second

// gather returns stats at most statsFor old.
func (s *Server) gather() *Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.lastStats == nil || time.Since(s.lastStats.Time) >= statsFor || time.Since(s.lastStats.Time) < 0 {
		s.lastStats = s.opts.Sources.Gather()
	}
	return s.lastStats
}

func (s *Server) metrics(w *minihttp.ResponseWriter, _ *minihttp.Request) {
	secure(w)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(s.gather().Prometheus())
}

func (s *Server) views() []device.View {
	if s.opts.Sources.Registry == nil {
		return []device.View{}
	}
	return s.opts.Sources.Registry.Views()
}

func (s *Server) devices(w *minihttp.ResponseWriter, _ *minihttp.Request) {
	writeJSON(w, 200, s.views())
}

// find returns the device with id (a MAC in any form, or ip:ADDR).
func (s *Server) find(id string) (device.View, bool) {
	if hw, err := net.ParseMAC(id); err == nil {
		id = hw.String()
	}
	for _, v := range s.views() {
		if v.ID == id {
			return v, true
		}
	}
	return device.View{}, false
}

func (s *Server) device(w *minihttp.ResponseWriter, r *minihttp.Request) {
	v, ok := s.find(r.PathValue("id"))
	if !ok {
		fail(w, 404, "no such device")
		return
	}
	writeJSON(w, 200, v)
}

// override sets a device's policy override, as `dnsguard devices
// --override` does: {"class": NAME, "strict": bool, "exempt": bool}; an
// empty object clears it. The record keeps it (flushed to the state
// file), and the device's row is returned.
func (s *Server) override(w *minihttp.ResponseWriter, r *minihttp.Request) {
	reg := s.opts.Sources.Registry
	if reg == nil {
		fail(w, 503, "no device registry")
		return
	}
	id := r.PathValue("id")
	if _, code, err := setOverride(reg, id, r.Body); err != nil {
		fail(w, code, err.Error())
		return
	}
	s.opts.Log.Info("api: device override", "device", id, "client", clientOf(r))
	v, _ := s.find(id)
	writeJSON(w, 200, v)
}

// classes serves the configured device classes' names (what an override
// may name).
func (s *Server) classes(w *minihttp.ResponseWriter, _ *minihttp.Request) {
	names := []string{}
	if reg := s.opts.Sources.Registry; reg != nil {
		names = reg.ClassNames()
	}
	writeJSON(w, 200, names)
}

// rateHistory serves each device's recent query rates (queries per
// second over each sampling interval, oldest first).
func (s *Server) rateHistory(w *minihttp.ResponseWriter, _ *minihttp.Request) {
	writeJSON(w, 200, s.rates.snapshot())
}

func (s *Server) stats(w *minihttp.ResponseWriter, _ *minihttp.Request) {
	writeJSON(w, 200, s.gather())
}

func (s *Server) events(w *minihttp.ResponseWriter, r *minihttp.Request) {
	var since uint64
	for _, kv := range strings.Split(r.RawQuery, "&") {
		if v, ok := strings.CutPrefix(kv, "since="); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				fail(w, 400, "since: want a sequence number")
				return
			}
			since = n
		}
	}
	writeJSON(w, 200, s.opts.Sources.Counters.Events.Since(since))
}

// csp keeps the dashboard to its own script and style: nothing inline,
// nothing from elsewhere, no frames.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func static(b []byte, ctype string) minihttp.HandlerFunc {
	return func(w *minihttp.ResponseWriter, _ *minihttp.Request) {
		secure(w)
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Security-Policy", csp)
		_, _ = w.Write(b)
	}
}

// listenFreebind listens on TCP ap with IP_FREEBIND: at boot the guard
// may start before the LAN address is configured; the socket takes
// connections once it is. The socket is made by hand because
// net.ListenConfig takes only a string address, and a string address
// links Go's stub resolver into the router binary (footprint_test.go).
func listenFreebind(ap netip.AddrPort) (net.Listener, error) {
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_FREEBIND
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		if z := ap.Addr().Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, fmt.Errorf("listen %s: zone: %w", ap, err)
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("listen %s: socket: %w", ap, err)
	}
	f := os.NewFile(uintptr(fd), "api")
	defer f.Close() // FileListener dups the descriptor
	for _, o := range []struct{ level, opt int }{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {level, opt}} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			return nil, fmt.Errorf("listen %s: setsockopt: %w", ap, err)
		}
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return nil, fmt.Errorf("listen %s: setsockopt: %w", ap, err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("listen %s: bind: %w", ap, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("listen %s: %w", ap, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", ap, err)
	}
	return ln, nil
}
