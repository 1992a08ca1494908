package control

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// BenchmarkHitPath is cache.BenchmarkHit (a cache hit shaped for the
// device) with and without the counting stage in front: the cost the
// metrics add to the hit path. Parallel runs show the shared atomic
// counters under contention.
func BenchmarkHitPath(b *testing.B) {
	pol, _ := policy.Load("")
	c := cache.New(pol.Cache, slog.New(slog.DiscardHandler), nil)
	inner := stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		rr, _ := dns.NewRR("bench.example. 300 IN A 192.0.2.1")
		return stage.Synth(req, dns.RcodeSuccess, []dns.RR{rr}, nil)
	})
	m := new(dns.Msg)
	m.SetQuestion("bench.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	raw, _ := m.Pack()
	newReq := func() *stage.Request {
		q, err := dnswire.ParseQuery(raw)
		if err != nil {
			b.Fatal(err)
		}
		return &stage.Request{Raw: raw, Q: q, Client: netip.MustParseAddrPort("192.0.2.10:40000"), Received: time.Now()}
	}
	for _, bc := range []struct {
		name  string
		chain stage.Handler
	}{
		{"plain", stage.Chain(inner, c.Wrap)},
		{"counted", stage.Chain(inner, NewCounters(0).Stage(), c.Wrap)},
	} {
		req := newReq()
		bc.chain.ServeDNS(context.Background(), req)
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				r, _ := bc.chain.ServeDNS(context.Background(), req)
				buf = dnswire.AppendResponse(buf[:0], &req.Q, r, 1232)
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := newReq()
				buf := make([]byte, 0, 512)
				for pb.Next() {
					r, _ := bc.chain.ServeDNS(context.Background(), req)
					buf = dnswire.AppendResponse(buf[:0], &req.Q, r, 1232)
				}
			})
		})
	}
}
