package control

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/policy"
)

// The control socket end to end: the table, an override set and cleared,
// an unknown device, an unknown class and a body that is no override
// refused as the API refuses them, a stale socket file replaced, the
// socket removed on Close.
func TestControlSocket(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	reg, err := device.NewRegistry(device.Options{Log: log, Classes: []policy.Class{{Name: "cams"}}})
	if err != nil {
		t.Fatal(err)
	}
	mac := "02:00:00:00:00:07"
	reg.ObserveBypass(mac, netip.MustParseAddrPort("10.0.0.7:1000"), netip.MustParseAddrPort("1.1.1.1:853"), "dot")
	path := SocketPath(filepath.Join(t.TempDir(), "state.db"))
	if err := os.WriteFile(path, nil, 0o600); err != nil { // left by a killed guard
		t.Fatal(err)
	}
	ctl, err := ServeSocket(path, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	views, err := FetchViews(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 || views[0].MAC != mac {
		t.Fatalf("views %+v", views)
	}
	yes := true
	d, err := PutOverride(ctx, path, strings.ToUpper(mac), device.Override{Strict: &yes})
	if err != nil || !d.Strict {
		t.Fatalf("override: %+v %v", d, err)
	}
	if views, _ := FetchViews(ctx, path); len(views) != 1 || views[0].Override == nil || !*views[0].Override.Strict {
		t.Errorf("override not in the table: %+v", views)
	}
	if d, err := PutOverride(ctx, path, mac, device.Override{Class: "cams"}); err != nil || d.Class != "cams" {
		t.Errorf("class: %+v %v", d, err)
	}
	if d, err := PutOverride(ctx, path, mac, device.Override{}); err != nil || d.Strict || d.Class != "" {
		t.Errorf("clear: %+v %v", d, err)
	}
	if _, err := PutOverride(ctx, path, mac, device.Override{Class: "no-such-class"}); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `no class "no-such-class"`) {
		t.Errorf("unknown class: %v", err)
	}
	if resp, err := socketDo(ctx, path, "PUT", "/devices/"+mac+"/override", []byte(`{"colour":"red"}`)); err != nil || resp.StatusCode != 400 {
		t.Errorf("unknown field: %+v %v", resp, err)
	}
	if _, err := PutOverride(ctx, path, "02:00:00:00:00:99", device.Override{Strict: &yes}); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no such device") {
		t.Errorf("unknown device: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi, err)
	}
	if err := ctl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := FetchViews(ctx, path); err == nil {
		t.Error("answered after Close")
	}
}

// TestSocketWaitPasses: a test in another process waits for the
// registry's rounds of upkeep through the socket; a wait being served
// does not hold up Close.
func TestSocketWaitPasses(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	reg, err := device.NewRegistry(device.Options{Log: log, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	path := SocketPath(filepath.Join(t.TempDir(), "state.db"))
	ctl, err := ServeSocket(path, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { reg.Run(runCtx); close(ran) }()

	st0, err := FetchDeviceStats(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := WaitPasses(ctx, path, st0.Passes+1)
	if err != nil || st.Passes <= st0.Passes+1 {
		t.Fatalf("after pass %d: %+v %v", st0.Passes+1, st, err)
	}
	if resp, err := socketDo(ctx, path, "GET", "/wait?passes=x", nil); err != nil || resp.StatusCode != 400 {
		t.Errorf("bad count: %+v %v", resp, err)
	}
	stopRun()
	<-ran

	// No more rounds come: the wait lasts until Close ends it.
	waited := make(chan error, 1)
	go func() {
		_, err := WaitPasses(ctx, path, reg.Passes.Load())
		waited <- err
	}()
	closeCtx, cancelClose := context.WithTimeout(ctx, maxWait/2)
	defer cancelClose()
	if err := ctl.Close(closeCtx); err != nil {
		t.Errorf("Close with a wait being served: %v", err)
	}
	if err := <-waited; err == nil {
		t.Error("WaitPasses returned without the pass, and no error")
	}
}
