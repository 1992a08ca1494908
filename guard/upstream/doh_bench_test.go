package upstream

import (
	"context"
	"testing"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// BenchmarkDoHExchange is one DoH exchange on a reused connection to a
// local HTTP/2 server, one query at a time and many at once (multiplexed
// streams).
func BenchmarkDoHExchange(b *testing.B) {
	ca := upstreamtest.NewCA(b)
	srv := upstreamtest.StartDoH(b, ca, upstreamtest.DoHOptions{})
	tr, err := NewTransport(srv.URL, Options{Roots: ca.Pool}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	q := query("bench.example", dns.TypeA)
	if _, err := tr.Exchange(context.Background(), q, QueryOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tr.Exchange(context.Background(), q, QueryOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tr.Exchange(context.Background(), q, QueryOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
