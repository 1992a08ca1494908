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

// TestConnectFailuresAreHard: failing to connect, whether refused or
// timed out, or to verify, counts as a hard failure for DoT and DoH.
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
	for _, u := range []string{
		"tls://" + closed + "?sni=dot.test",
		"https://doh.test:" + closed[len("127.0.0.1:"):] + "/dns-query?ip=127.0.0.1",
		"tls://" + stuck.Addr().String() + "?sni=dot.test",
		"https://doh.test:" + stuck.Addr().String()[len("127.0.0.1:"):] + "/dns-query?ip=127.0.0.1",
		wrong.URL("wrong.test"),
	} {
		tr, _ := newTLSTransport(t, u, ca)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := tr.Exchange(ctx, query("example.com", dns.TypeA))
		cancel()
		if err == nil || !hardFailure(err) {
			t.Errorf("%s: %v is not a hard failure", u, err)
		}
	}
	if hardFailure(context.DeadlineExceeded) || hardFailure(ErrMismatch) || hardFailure(errors.New("x")) {
		t.Error("a lost answer counted as hard")
	}
}
