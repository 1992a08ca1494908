package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/policy"
)

// TestBindListenersPortTaken: with listen addresses derived from the
// LAN (0.0.0.0 and [::] on guard_port), a family that cannot be bound
// because another resolver holds the port is an error, not a warning:
// before, the guard ran on IPv6 alone, said "dnsguard serving", and
// installed the redirect, so the LAN's IPv4 DNS and the router's own
// 127.0.0.1 went to whatever held the port (or nowhere) and the init
// script's fail-safe never ran.
func TestBindListenersPortTaken(t *testing.T) {
	hold, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	port := hold.LocalAddr().(*net.UDPAddr).Port
	cfg, err := policy.Parse(strings.NewReader(fmt.Sprintf(
		"config dnsguard 'main'\n\tlist lan 'lo'\nconfig intercept 'intercept'\n\toption guard_port '%d'\n", port)), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ListenDerived() {
		t.Fatalf("listen addresses not derived: %v", cfg.ListenAddrs())
	}
	srv := listen.New(forward.New(nil), listen.Options{}, nil)
	err = bindListeners(srv, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Serve(ctx) // closes what was bound
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("bindListeners with IPv4 port %d taken: %v, want address already in use", port, err)
	}
}

// TestFamilyMissing: only a family the system lacks is tolerated.
func TestFamilyMissing(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "listen", Err: &net.AddrError{}}, false},
		{fmt.Errorf("listen udp [::]:53: %w", &net.OpError{Op: "socket", Err: syscall.EAFNOSUPPORT}), true},
		{fmt.Errorf("listen udp [::]:53: %w", &net.OpError{Op: "bind", Err: syscall.EADDRNOTAVAIL}), true},
		{fmt.Errorf("listen udp [::]:53: %w", &net.OpError{Op: "socket", Err: syscall.EPROTONOSUPPORT}), true},
		{fmt.Errorf("listen udp 0.0.0.0:53: %w", &net.OpError{Op: "bind", Err: syscall.EADDRINUSE}), false},
		{fmt.Errorf("listen udp 0.0.0.0:53: %w", &net.OpError{Op: "bind", Err: syscall.EACCES}), false},
	} {
		if got := familyMissing(c.err); got != c.want {
			t.Errorf("familyMissing(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
