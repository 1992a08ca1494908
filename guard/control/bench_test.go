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
	plain := stage.Chain(c, stage.Answer("upstream", inner))
	counted := stage.Chain(NewCounters(0), c, stage.Answer("upstream", inner))
	// On a shared machine other work swamps a few nanoseconds: the two
	// chains take turns in short chunks and the fastest chunk of each is
	// reported (ns per query), with the difference.
	b.Run("interleaved", func(b *testing.B) {
		req := newReq()
		plain.ServeDNS(context.Background(), req)
		const chunk = 20000
		best := [2]float64{1e18, 1e18}
		buf := make([]byte, 0, 512)
		for b.Loop() {
			for i, h := range []stage.Handler{plain, counted} {
				start := time.Now()
				for range chunk {
					r, _ := h.ServeDNS(context.Background(), req)
					buf = dnswire.AppendResponse(buf[:0], &req.Q, r, 1232)
				}
				best[i] = min(best[i], float64(time.Since(start).Nanoseconds())/chunk)
			}
		}
		b.ReportMetric(best[0], "plain-ns/query")
		b.ReportMetric(best[1], "counted-ns/query")
		b.ReportMetric(best[1]-best[0], "counting-ns/query")
	})
	for _, bc := range []struct {
		name  string
		chain stage.Handler
	}{
		{"plain", plain},
		{"counted", counted},
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

// BenchmarkCountAnswer is the counting stage's work for one answered
// query, alone.
func BenchmarkCountAnswer(b *testing.B) {
	c := NewCounters(0)
	for b.Loop() {
		c.count(false, dns.RcodeSuccess, 0)
	}
}
