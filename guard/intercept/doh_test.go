package intercept

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNextDoHRound(t *testing.T) {
	const every = 30 * time.Minute
	for _, tc := range []struct {
		wait   time.Duration
		failed int
		want   time.Duration
	}{
		{0, 0, every},                           // all resolved at the first round
		{0, 1, time.Second},                     // from 1 s (0 doubled is 0)
		{time.Second, 2, 2 * time.Second},       // doubling
		{32 * time.Second, 1, 64 * time.Second}, // the last doubling may pass a minute
		{64 * time.Second, 1, time.Minute},      // then a minute
		{every, 1, time.Minute},                 // a failure after a quiet half hour: a minute
		{time.Minute, 0, every},                 // resolved again
	} {
		if got := nextDoHRound(tc.wait, tc.failed, every); got != tc.want {
			t.Errorf("nextDoHRound(%v, %d) = %v, want %v", tc.wait, tc.failed, got, tc.want)
		}
	}
}

// TestRefreshDoH: the fixed addresses and the resolved ones fill the
// table's DoH sets; a name that does not resolve yet is asked again soon
// (1 s later) and its addresses join the set once it resolves; the loop
// ends with its context.
func TestRefreshDoH(t *testing.T) {
	ns, fd := netns(t)
	tab, err := NewTable(Config{LAN: []string{"lan0"}, GuardPort: 53, BlockDoH: true, NetNSFd: fd}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Install(); err != nil {
		t.Fatal(err)
	}
	defer tab.Remove()
	var mu sync.Mutex
	asked := map[string]int{}
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		asked[host]++
		switch {
		case host == "doh.test":
			return []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}, nil
		case host == "late.test" && asked[host] >= 3:
			return []netip.Addr{netip.MustParseAddr("192.0.2.11")}, nil
		}
		return nil, errors.New("not yet")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tab.RefreshDoH(ctx, DoHRefresh{Fixed: []netip.Addr{netip.MustParseAddr("192.0.2.9")}, Hosts: []string{"doh.test", "late.test"},
			Lookup: lookup, Every: time.Hour, Log: quiet()})
	}()
	// late.test resolves on its third round (after 1 s and 2 s more).
	var listing string
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(listing, "192.0.2.11"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("late.test never in the DoH set:\n%s", listing)
		}
		listing, _ = nftList(t, ns)
	}
	for _, want := range []string{"192.0.2.9", "192.0.2.10", "2001:db8::10"} {
		if !strings.Contains(listing, want) {
			t.Errorf("DoH set lacks %s:\n%s", want, listing)
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// Every round asked every name; the rounds stopped once all resolved
	// (the next is an hour away).
	if asked["doh.test"] != 3 || asked["late.test"] != 3 {
		t.Errorf("lookups %v, want 3 rounds of both", asked)
	}
}
