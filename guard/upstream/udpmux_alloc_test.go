//go:build !race

// (The race detector's sync.Pool drops what it is given at random.)

package upstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUDPMuxAllocs: a Do53 query through the multiplexer reuses its
// socket record and result channel once the socket is closed (beyond
// drainers, answered sockets close at once), so what a query allocates
// is the answer's unpacking and its caller's. The count is the whole
// process's: the test server's unpacking and packing are in it, the same
// for every query (29 with the records reused, 32 without).
func TestUDPMuxAllocs(t *testing.T) {
	srv := startUDP(t, nil)
	tr, _ := newUDPTransport(t, srv.url(), false)
	u := tr.(*udp)
	qs := make([]*dns.Msg, 0, 512)
	for i := range cap(qs) {
		qs = append(qs, query(fmt.Sprintf("n%d.example.", i), dns.TypeA))
	}
	i := 0
	ask := func() {
		if _, err := u.exchangeBy(context.Background(), time.Now().Add(time.Minute), qs[i%len(qs)], QueryOptions{}); err != nil {
			t.Fatal(err)
		}
		i++
	}
	for range 2 * drainers { // past the draining sockets' cap
		ask()
	}
	allocs := testing.AllocsPerRun(200, ask)
	if allocs > 29 {
		t.Errorf("%.1f allocations a query, want at most 29", allocs)
	}
}
