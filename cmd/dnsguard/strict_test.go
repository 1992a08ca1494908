package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// TestStrictDeviceOwnAnswers runs the chain `run` builds (router side
// without interception: identify, then protocol, limits, cache, forward)
// in front of a cleartext stand-in upstream that records how each
// question came. A device held strict (an override) gets its question
// sent with 0x20 rather than another device's cached answer, and its own
// answer cached after that; with randomize_case on, every device's
// questions go with 0x20 and the strict device shares the cache.
func TestStrictDeviceOwnAnswers(t *testing.T) {
	for _, tc := range []struct {
		randomize   string
		wantQueries int // upstream questions for the name, both devices asking twice
	}{
		{"0", 2},
		{"1", 1},
	} {
		t.Run("randomize_case="+tc.randomize, func(t *testing.T) {
			up, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var asked []string
			srv := &dns.Server{PacketConn: up, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
				mu.Lock()
				asked = append(asked, q.Question[0].Name)
				mu.Unlock()
				m := new(dns.Msg)
				m.SetReply(q)
				rr, _ := dns.NewRR(q.Question[0].Name + " 3600 IN A 93.184.215.14")
				m.Answer = append(m.Answer, rr)
				_ = w.WriteMsg(m)
			})}
			go func() { _ = srv.ActivateAndServe() }()
			defer func() { _ = srv.Shutdown() }()

			dir := t.TempDir()
			conf := filepath.Join(dir, "dnsguard.conf")
			if err := os.WriteFile(conf, []byte(`config dnsguard 'main'
	option state_file '`+filepath.Join(dir, "state.db")+`'
	list upstream 'udp://`+up.LocalAddr().String()+`'
	option randomize_case '`+tc.randomize+`'
	option dnssec '0'
`), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := policy.Load(conf)
			if err != nil {
				t.Fatal(err)
			}
			discard := slog.New(slog.DiscardHandler)
			router, err := newRouterSide(context.Background(), cfg, discard)
			if err != nil {
				t.Fatal(err)
			}
			routerCtx, stopRouter := context.WithCancel(context.Background())
			routerDone := make(chan error, 1)
			go func() { routerDone <- router.Run(routerCtx) }()
			defer func() { stopRouter(); <-routerDone }()
			c := cache.New(cfg.Cache, discard, nil)
			defer c.Close()
			g, err := buildGuard(cfg, c, router, discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer g.close(context.Background())

			ask := func(client, name string) {
				t.Helper()
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				raw, _ := m.Pack()
				q, err := dnswire.ParseQuery(raw)
				if err != nil {
					t.Fatal(err)
				}
				req := &stage.Request{Raw: raw, Q: q, Client: netip.MustParseAddrPort(client)}
				r, err := g.handler.ServeDNS(context.Background(), req)
				if err != nil {
					t.Fatalf("%s asking %s: %v", client, name, err)
				}
				var out dns.Msg
				if err := out.Unpack(dnswire.AppendResponse(nil, &req.Q, r, 512)); err != nil || len(out.Answer) != 1 {
					t.Fatalf("%s asking %s: %v %v", client, name, &out, err)
				}
			}
			const lenient, strict = "192.0.2.10:40000", "192.0.2.11:40000"
			// The strict device is known (its first query), then held strict.
			ask(strict, "first.example.")
			on := true
			if _, err := router.Registry.SetOverride("ip:192.0.2.11", &device.Override{Strict: &on}); err != nil {
				t.Fatal(err)
			}
			const name = "shared-or-not.example."
			ask(lenient, name)
			ask(strict, name)
			ask(strict, name)
			ask(lenient, name)

			mu.Lock()
			defer mu.Unlock()
			var forName []string
			for _, a := range asked {
				if strings.EqualFold(a, name) {
					forName = append(forName, a)
				}
			}
			if len(forName) != tc.wantQueries {
				t.Fatalf("upstream asked %q, want %d questions for %s", forName, tc.wantQueries, name)
			}
			if tc.randomize == "0" && (forName[0] != name || forName[1] == name) {
				t.Errorf("lenient %q, strict %q: want the strict one alone in mixed case (0x20)", forName[0], forName[1])
			}
		})
	}
}
