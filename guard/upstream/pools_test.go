package upstream

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/certs"
)

// TestPoolsShareBySettings: a configuration with the same upstream
// settings shares the running pool, any other setting (or a CA file whose
// contents changed) gets a pool of its own, and the last release closes a
// pool and drops it from Stats.
func TestPoolsShareBySettings(t *testing.T) {
	ps := NewPools(nil)
	urls := []string{"udp://127.0.0.1:9"}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, newCAPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{Timeout: time.Second, CAFile: ca}
	acquire := func(urls []string, o Options) (*Pool, func(context.Context)) {
		t.Helper()
		p, release, err := ps.Acquire(urls, o)
		if err != nil {
			t.Fatal(err)
		}
		return p, release
	}
	a, releaseA := acquire(urls, opts)
	b, releaseB := acquire(urls, opts)
	if a != b {
		t.Error("same settings: two pools")
	}
	for name, change := range map[string]func(o *Options){
		"attempts": func(o *Options) { o.MaxAttempts = 2 },
		"0x20":     func(o *Options) { o.Randomize0x20 = true },
	} {
		o := opts
		change(&o)
		p, release := acquire(urls, o)
		if p == a {
			t.Errorf("another %s: the same pool", name)
		}
		release(context.Background())
	}
	other := opts
	other.Timeout = 2 * time.Second
	c, releaseC := acquire(urls, other)
	d, releaseD := acquire([]string{"udp://127.0.0.1:10"}, opts)
	if err := os.WriteFile(ca, newCAPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	e, releaseE := acquire(urls, opts)
	for name, p := range map[string]*Pool{"timeout": c, "urls": d, "renewed CA": e} {
		if p == a {
			t.Errorf("another %s: the same pool", name)
		}
	}
	if n := len(ps.Stats()); n != 4 {
		t.Errorf("%d upstreams in Stats, want 4 (pools a, c, d, e)", n)
	}
	releaseA(context.Background())
	releaseA(context.Background()) // a second call of the same release counts once
	if closing(a) {
		t.Fatal("pool closed while a second configuration uses it")
	}
	releaseB(context.Background())
	if !closing(a) {
		t.Error("last release left the pool open")
	}
	for _, r := range []func(context.Context){releaseC, releaseD, releaseE} {
		r(context.Background())
	}
	if n := len(ps.Stats()); n != 0 {
		t.Errorf("%d upstreams in Stats after every release", n)
	}
}

func newCAPEM(t *testing.T) []byte {
	t.Helper()
	ca, err := certs.NewCA("pools test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca.PEM
}

func closing(p *Pool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}
