package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// MediaType is the DoH message media type (RFC 8484 §6).
const MediaType = "application/dns-message"

// ErrHTTPStatus marks a DoH answer with a non-2xx status.
var ErrHTTPStatus = errors.New("DoH: HTTP error status")

// doh is DNS over HTTPS (RFC 8484): POST over HTTP/2 with ID 0 (§4.1),
// the query padded (RFC 8467), the answer's status and media type
// checked. It always dials the configured IP; the URL's name is the SNI,
// the Host and the name the certificate must carry.
type doh struct {
	ep     *Endpoint
	cfg    config
	client *http.Client
	tr     *http.Transport
}

func newDoH(ep *Endpoint, cfg config) *doh {
	addr := ep.Addr.String()
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     cfg.tls.clientConfig(ep),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     streamIdle,
		TLSHandshakeTimeout: 5 * time.Second,
		DisableCompression:  true,
		Proxy:               nil, // never through an environment proxy
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	tr.Protocols.SetHTTP1(true)
	return &doh{ep: ep, cfg: cfg, tr: tr, client: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (d *doh) String() string { return d.ep.String() }

// Close drops the idle connections.
func (d *doh) Close() error {
	d.tr.CloseIdleConnections()
	return nil
}

// Exchange POSTs q and reads the answer.
func (d *doh) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	resp, err := d.exchange(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.ep, err)
	}
	return resp, nil
}

func (d *doh) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	m := prepare(q, 0, true)
	b, err := pack(m)
	if err != nil {
		return nil, err
	}
	// A failure before a connection was had (connect refused, TLS
	// verification), other than running out of time, is a failure to
	// connect.
	var gotConn atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.ep.URL, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", MediaType)
	req.Header.Set("Accept", MediaType)
	d.cfg.counters.Queries.Add(1)
	hr, err := d.client.Do(req)
	if err != nil {
		if !gotConn.Load() && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: %w", ErrDial, err)
		}
		return nil, err
	}
	defer hr.Body.Close()
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, 4096))
		return nil, fmt.Errorf("%w: %s", ErrHTTPStatus, hr.Status)
	}
	if mt, _, err := mime.ParseMediaType(hr.Header.Get("Content-Type")); err != nil || mt != MediaType {
		return nil, fmt.Errorf("DoH: answer media type %q, want %s", hr.Header.Get("Content-Type"), MediaType)
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, maxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("DoH: read answer: %w", err)
	}
	if len(body) > maxMessage {
		return nil, errors.New("DoH: answer larger than a DNS message")
	}
	resp, err := match(m, body, false)
	if err != nil {
		d.cfg.counters.Mismatches.Add(1)
		return nil, err
	}
	restoreName(resp, q.Question[0].Name)
	stripPadding(resp)
	return resp, nil
}
