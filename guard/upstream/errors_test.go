package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// TestConnectFailuresAreHard: failing to connect or to verify the server
// is a hard failure for DoT and DoH; a handshake still going when the
// attempt's time is up is not (the connection may yet serve the next).
func TestConnectFailuresAreHard(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A listener that never accepts: its backlog fills, TLS never starts.
	stuck, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	wrong := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{})
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	for _, c := range []struct {
		url  string
		hard bool
	}{
		{"tls://" + closed + "?sni=dot.test", true},
		{"https://doh.test:" + port(closed) + "/dns-query?ip=127.0.0.1", true},
		{wrong.URL("wrong.test"), true},
		{"https://wrong.test:" + port(wrong.Addr.String()) + "/dns-query?ip=127.0.0.1", true},
		{"tls://" + stuck.Addr().String() + "?sni=dot.test", false},
		{"https://doh.test:" + port(stuck.Addr().String()) + "/dns-query?ip=127.0.0.1", false},
	} {
		tr, _ := newTLSTransport(t, c.url, ca)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := tr.Exchange(ctx, query("example.com", dns.TypeA), QueryOptions{})
		cancel()
		if err == nil || hardFailure(err) != c.hard {
			t.Errorf("%s: %v: hard %v, want %v", c.url, err, hardFailure(err), c.hard)
		}
	}
	if hardFailure(context.DeadlineExceeded) || hardFailure(ErrMismatch) || hardFailure(errors.New("x")) {
		t.Error("a lost answer counted as hard")
	}
}
