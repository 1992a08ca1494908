package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

func TestDoHRequest(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	srv := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{})
	tr, _ := newTLSTransport(t, srv.URL, ca)
	for _, n := range []string{"a.example", "a-much-longer-name.with.several.labels.example.com"} {
		q := query(n, dns.TypeA)
		resp, err := tr.Exchange(testCtx(t), q, QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if answerA(t, resp) != "192.0.2.1" || paddingOf(resp) >= 0 {
			t.Fatalf("answer %v", resp)
		}
	}
	for _, g := range srv.Received() {
		if g.Method != http.MethodPost || g.Proto != "HTTP/2.0" {
			t.Errorf("%s %s, want POST over HTTP/2", g.Method, g.Proto)
		}
		if g.ContentType != MediaType || g.Accept != MediaType {
			t.Errorf("Content-Type %q, Accept %q", g.ContentType, g.Accept)
		}
		if g.Path != "/dns-query" || g.RawQuery != "" || !strings.HasPrefix(g.Host, "doh.test:") {
			t.Errorf("request to %s %s?%s: ip and pin must not be sent", g.Host, g.Path, g.RawQuery)
		}
		if g.Msg.Id != 0 {
			t.Errorf("ID %d, want 0 (RFC 8484 §4.1)", g.Msg.Id)
		}
		if len(g.Raw)%128 != 0 || paddingOf(g.Msg) < 0 {
			t.Errorf("query of %d octets, not padded to 128", len(g.Raw))
		}
	}
}

func TestDoHFailures(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	cases := []struct {
		name string
		opts upstreamtest.DoHOptions
		want error
		text string
	}{
		{"server error", upstreamtest.DoHOptions{Status: http.StatusInternalServerError}, ErrHTTPStatus, "500"},
		{"not found", upstreamtest.DoHOptions{Status: http.StatusNotFound}, ErrHTTPStatus, "404"},
		{"media type", upstreamtest.DoHOptions{ContentType: "text/html"}, nil, "media type"},
		{"wrong name", upstreamtest.DoHOptions{Cert: ptr(ca.Issue(t, "other.test"))}, nil, "certificate"},
		{"wrong question", upstreamtest.DoHOptions{Handler: func(q *dns.Msg) *dns.Msg {
			q.Question[0].Name = "evil.example."
			return upstreamtest.AnswerA("203.0.113.1")(q)
		}}, ErrMismatch, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := upstreamtest.StartDoH(t, ca, c.opts)
			tr, _ := newTLSTransport(t, srv.URL, ca)
			resp, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{})
			if err == nil {
				t.Fatalf("accepted %v", resp)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("err %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("err %v does not say %q", err, c.text)
			}
		})
	}
	t.Run("pin", func(t *testing.T) {
		srv := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{})
		tr, _ := newTLSTransport(t, srv.URL+"&pin="+upstreamtest.Pin(t, ca.Issue(t, "doh.test")), ca)
		if _, err := tr.Exchange(testCtx(t), query("example.com", dns.TypeA), QueryOptions{}); !errors.Is(err, ErrPin) {
			t.Errorf("err %v, want ErrPin", err)
		}
		if len(srv.Received()) != 0 {
			t.Error("query sent over an unpinned connection")
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestDoHDeadline: a query the server does not answer in time fails at
// its deadline as deadline exceeded (kept by the connection's one timer,
// the stream reset), while the queries answered meanwhile on the same
// connection are unaffected; a second silent one expires too (the timer
// is armed again).
func TestDoHDeadline(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	release := make(chan struct{})
	defer close(release)
	srv := upstreamtest.StartDoH(t, ca, upstreamtest.DoHOptions{Handler: func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Name == "silent.example." {
			<-release
		}
		return upstreamtest.AnswerA("192.0.2.1")(q)
	}})
	tr, err := NewTransport(srv.URL, Options{Roots: ca.Pool}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	d := tr.(*doh)
	for round := range 2 {
		errc := make(chan error, 1)
		go func() {
			_, err := d.exchangeBy(context.Background(), time.Now().Add(100*time.Millisecond), query("silent.example.", dns.TypeA), QueryOptions{})
			errc <- err
		}()
		for i := range 20 {
			if _, err := d.exchangeBy(context.Background(), time.Now().Add(time.Minute), query(fmt.Sprintf("a%d.example.", i), dns.TypeA), QueryOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: silent upstream: %v, want a deadline exceeded", round, err)
		}
	}
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams) != 0 {
		t.Errorf("%d streams still open", len(c.streams))
	}
}
