package upstream

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// BenchmarkDoTExchange is one DoT miss on a reused, pipelined connection
// to a local server that turns queries around without allocating
// (upstreamtest.DoTEcho): a new name each time, one query at a time and
// many at once. The allocations shown are the transport's (prepare,
// padding, pack, write, read, match).
func BenchmarkDoTExchange(b *testing.B) {
	ca := upstreamtest.NewCA(b)
	srv := upstreamtest.StartDoTEcho(b, ca)
	tr, err := NewTransport(srv.URL(), Options{Roots: ca.Pool}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	names := make([]*dns.Msg, 1024) // made ahead: the caller's query is not the transport's cost
	for i := range names {
		names[i] = query("u"+strconv.Itoa(100000+i)+".miss.bench", dns.TypeA)
	}
	if r, err := tr.Exchange(context.Background(), names[0], QueryOptions{}); err != nil || r.Rcode != dns.RcodeNameError {
		b.Fatalf("first answer %v: %v", r, err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := tr.Exchange(context.Background(), names[i%len(names)], QueryOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		var n atomic.Uint32
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				q := names[int(n.Add(1))%len(names)]
				if _, err := tr.Exchange(context.Background(), q, QueryOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
