package upstreamtest

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// DoHOptions configure a test DoH server.
type DoHOptions struct {
	Name        string           // the name in the URL; default "doh.test"
	Cert        *tls.Certificate // default: issued by the CA for Name
	Handler     Handler          // default: AnswerA("192.0.2.1")
	Status      int              // HTTP status of every answer; default 200
	ContentType string           // media type of answers; default application/dns-message
}

// DoH is a DNS-over-HTTPS server (HTTP/2 and HTTP/1.1) on 127.0.0.1 that
// records every request.
type DoH struct {
	recorder
	Addr netip.AddrPort
	URL  string // https://NAME:PORT/dns-query?ip=127.0.0.1

	srv   *httptest.Server
	conns atomic.Int32
}

// Conns reports how many connections were accepted.
func (s *DoH) Conns() int { return int(s.conns.Load()) }

// StartDoH starts a DoH server answering at /dns-query; it stops when the
// test ends.
func StartDoH(t testing.TB, ca *CA, opts DoHOptions) *DoH {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "doh.test"
	}
	if opts.Cert == nil {
		c := ca.Issue(t, opts.Name)
		opts.Cert = &c
	}
	if opts.Handler == nil {
		opts.Handler = AnswerA("192.0.2.1")
	}
	if opts.Status == 0 {
		opts.Status = http.StatusOK
	}
	if opts.ContentType == "" {
		opts.ContentType = "application/dns-message"
	}
	s := &DoH{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, opts)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*opts.Cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.srv = srv
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = netip.MustParseAddrPort(u.Host)
	s.URL = "https://" + opts.Name + ":" + u.Port() + "/dns-query?ip=" + s.Addr.Addr().String()
	return s
}

func (s *DoH) serve(w http.ResponseWriter, r *http.Request, opts DoHOptions) {
	rc := Received{
		Method: r.Method, Proto: r.Proto, ContentType: r.Header.Get("Content-Type"),
		Accept: r.Header.Get("Accept"), Path: r.URL.Path, Host: r.Host, RawQuery: r.URL.RawQuery,
	}
	var err error
	switch r.Method {
	case http.MethodPost:
		rc.Raw, err = io.ReadAll(io.LimitReader(r.Body, 65536))
	default:
		http.Error(w, "POST only in this test server", http.StatusMethodNotAllowed)
		s.add(rc)
		return
	}
	s.add(rc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(rc.Raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := opts.Handler(q)
	if resp == nil {
		http.Error(w, "no answer", http.StatusBadGateway)
		return
	}
	b, err := resp.Pack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", opts.ContentType)
	w.WriteHeader(opts.Status)
	_, _ = w.Write(b)
}
