package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/policy"
)

// TestRouterSideRun: the router side without LAN interfaces (a PC) runs
// until Run's context ends, whether or not the parts' context (a signal)
// ended first, and when Run returns every goroutine it started is gone
// and the control socket and the state file are let go (another guard
// can open them).
func TestRouterSideRun(t *testing.T) {
	for _, signalFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "signal first", false: "run ends alone"}[signalFirst], func(t *testing.T) {
			testRouterSideRun(t, signalFirst)
		})
	}
}

func testRouterSideRun(t *testing.T, signalFirst bool) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state.db")
	cfg, err := policy.Parse(strings.NewReader("config dnsguard 'main'\n\toption state_file '"+state+"'\n\toption flush_interval '10ms'\n"), "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	signal, stop := context.WithCancel(context.Background())
	defer stop()
	r, err := newRouterSide(signal, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if r.Identify == nil || r.Access == nil || r.Registry == nil || r.State == nil {
		t.Fatalf("router side parts missing: %+v", r)
	}
	runCtx, end := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()

	// The registry's upkeep runs (Run started it): two passes seen
	// through the control socket.
	sock := control.SocketPath(state)
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := control.WaitPasses(wctx, sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.WaitPasses(wctx, sock, st.Passes); err != nil {
		t.Fatal(err)
	}
	r.Reload(cfg) // a reload while running

	if signalFirst {
		// A signal ends the parts' work; Run goes on until its own end.
		stop()
		select {
		case err := <-done:
			t.Fatalf("Run returned on the parts' context: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	end()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket after Run: %v", err)
	}
	s, err := device.OpenStore(state, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("state file after Run: %v", err)
	}
	s.Close()
	// Every goroutine joined (the runtime's own may take a moment to go).
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Run, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}
