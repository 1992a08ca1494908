package lab

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Config is what a Lab plays.
type Config struct {
	Zone     Zone
	Forgery  Forgery
	Schedule Schedule
	Now      func() time.Time // nil: time.Now
	Log      *slog.Logger     // nil: discard
	// Signer, if set, signs the honest answers to DO queries before the
	// experiment manipulates them (lab --dnssec).
	Signer *Signer
}

// Lab is the adversarial resolver.
type Lab struct {
	zone    Zone
	forgery Forgery
	sched   Schedule
	now     func() time.Time
	log     *slog.Logger
	start   time.Time
	rec     *Recorder
	signer  *Signer

	mu    sync.Mutex
	phase int
}

// New starts the lab's clock: the schedule runs from now.
func New(cfg Config) *Lab {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = Schedule{{Experiment: Experiment{Kind: Baseline}}}
	}
	if cfg.Zone.Suffix == "" {
		cfg.Zone = DefaultZone()
	}
	cfg.Zone.Suffix = dns.Fqdn(cfg.Zone.Suffix)
	if !cfg.Forgery.A.IsValid() {
		cfg.Forgery = DefaultForgery()
	}
	start := cfg.Now()
	l := &Lab{zone: cfg.Zone, forgery: cfg.Forgery, sched: cfg.Schedule, now: cfg.Now, log: cfg.Log, start: start, phase: -1,
		rec: NewRecorder(start, cfg.Schedule.String()), signer: cfg.Signer}
	l.Current()
	return l
}

// Recorder is the lab's record of its clients.
func (l *Lab) Recorder() *Recorder { return l.rec }

// Snapshot is the record as of now.
func (l *Lab) Snapshot() *Snapshot {
	l.Current() // close a phase that ended without queries
	return l.rec.Snapshot(l.now())
}

// Current returns the experiment playing now.
func (l *Lab) Current() Experiment {
	now := l.now()
	p, i := l.sched.At(now.Sub(l.start))
	l.mu.Lock()
	changed := i != l.phase
	l.phase = i
	l.mu.Unlock()
	if changed {
		// The phase began when the schedule says, not at the first query.
		var begin time.Duration
		for _, q := range l.sched[:i] {
			begin += q.Duration
		}
		l.rec.Phase(p.Experiment.String(), l.start.Add(begin))
		l.log.Info("lab experiment", "experiment", p.Experiment.String(), "phase", i+1, "of", len(l.sched))
	}
	return p.Experiment
}

// Respond answers one query message from client over transport: the
// messages to send back (none for unavailable, N for flood). It records
// the query. Messages that are not a query get nothing.
func (l *Lab) Respond(raw []byte, client netip.AddrPort, transport string) [][]byte {
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil || q.Response {
		return nil
	}
	e := l.Current()
	ev := Event{At: l.now(), Client: client, Transport: transport, ID: q.Id, Experiment: e.String()}
	if len(q.Question) > 0 {
		ev.Name, ev.Type = q.Question[0].Name, q.Question[0].Qtype
	}
	if opt := q.IsEdns0(); opt != nil {
		ev.EDNS, ev.UDPSize = true, opt.UDPSize()
	}
	m := l.zone.Answer(q)
	if l.signer != nil {
		l.signer.Sign(&l.zone, q, m)
	}
	msgs := e.Apply(q, m, l.forgery)
	var out [][]byte
	packed := map[*dns.Msg][]byte{} // a flood sends one message N times
	for _, m := range msgs {
		b, ok := packed[m]
		if !ok {
			var err error
			if b, err = m.Pack(); err != nil {
				l.log.Warn("lab: cannot pack answer", "experiment", e.String(), "err", err)
				continue
			}
			packed[m] = b
		}
		out = append(out, b)
	}
	if len(out) > 0 {
		ev.Answered = true
		for i, rr := range msgs[0].Answer {
			if t := rr.Header().Ttl; i == 0 || t < ev.TTL {
				ev.TTL = t
			}
			ev.HasTTL = true
		}
	}
	l.rec.Record(ev)
	return out
}

// ServeUDP answers queries on pc until ctx ends.
func (l *Lab) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("lab: udp: %w", err)
		}
		ap := from.(*net.UDPAddr).AddrPort()
		for _, b := range l.Respond(buf[:n], ap, "udp") {
			if _, err := pc.WriteTo(b, from); err != nil {
				l.log.Debug("lab: udp write", "err", err)
			}
		}
	}
}

// ServeStream answers DNS over TCP (or DoT, when ln is a TLS listener;
// transport names it in the record) until ctx ends.
func (l *Lab) ServeStream(ctx context.Context, ln net.Listener, transport string) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("lab: %s: %w", transport, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.serveConn(ctx, c, transport)
		}()
	}
}

func (l *Lab) serveConn(ctx context.Context, c net.Conn, transport string) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	r := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return
		}
		out := l.Respond(msg, ap, transport)
		if out == nil {
			return // unavailable: the connection is closed unanswered
		}
		for _, b := range out {
			frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(b)), uint16(len(b)))
			if _, err := c.Write(append(frame, b...)); err != nil {
				return
			}
		}
	}
}

// DoHHandler serves RFC 8484 GET and POST on any path. A flood sends one
// copy (HTTP carries one response per request); unavailable is 503.
func (l *Lab) DoHHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var raw []byte
		var err error
		switch r.Method {
		case http.MethodGet:
			raw, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
		case http.MethodPost:
			raw, err = io.ReadAll(io.LimitReader(r.Body, 65535))
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
			return
		}
		if err != nil || len(raw) == 0 {
			http.Error(w, "no DNS message", http.StatusBadRequest)
			return
		}
		ap, _ := netip.ParseAddrPort(r.RemoteAddr)
		out := l.Respond(raw, ap, "doh")
		if len(out) == 0 {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(out[0])
	})
}

// ServeDoH serves DoH on ln (a TLS listener) until ctx ends.
func (l *Lab) ServeDoH(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: l.DoHHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug)}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("lab: doh: %w", err)
	}
	return nil
}

// ServeProbe accepts TCP connections on ln and records each as a client
// using an address the lab handed out (point self* names, or the forged
// address, at the probe's address to see who follows a forged answer).
func (l *Lab) ServeProbe(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("lab: probe: %w", err)
		}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			l.rec.Use(ap.Addr(), l.Current().String())
		}
		c.Close()
	}
}
