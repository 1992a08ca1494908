package control

import (
	"context"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
)

// Query-rate history, for the dashboard's sparklines: every rateEvery the
// devices' query counters are read and each device's rate since the last
// reading kept, the last rateSamples of them.
const (
	rateEvery   = 10 * time.Second
	rateSamples = 30
)

// rates holds the recent query rates of each device.
type rates struct {
	mu    sync.Mutex
	last  map[string]uint64    // device -> queries at the last reading
	hist  map[string][]float64 // device -> queries per second, oldest first
	taken time.Time
}

func newRates() *rates {
	return &rates{last: map[string]uint64{}, hist: map[string][]float64{}}
}

// sample reads the devices' counters at now. Devices gone from the table
// are forgotten, so the history is bounded by the table.
func (r *rates) sample(views []device.View, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := now.Sub(r.taken).Seconds()
	seen := make(map[string]bool, len(views))
	for _, v := range views {
		seen[v.ID] = true
		prev, ok := r.last[v.ID]
		r.last[v.ID] = v.Queries
		if !ok || r.taken.IsZero() || secs <= 0 || v.Queries < prev {
			continue
		}
		h := append(r.hist[v.ID], float64(v.Queries-prev)/secs)
		if len(h) > rateSamples {
			h = h[len(h)-rateSamples:]
		}
		r.hist[v.ID] = h
	}
	for id := range r.last {
		if !seen[id] {
			delete(r.last, id)
			delete(r.hist, id)
		}
	}
	r.taken = now
}

// snapshot returns a copy of the history.
func (r *rates) snapshot() map[string][]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]float64, len(r.hist))
	for id, h := range r.hist {
		out[id] = append([]float64(nil), h...)
	}
	return out
}

// run samples reg every interval until ctx ends.
func (r *rates) run(ctx context.Context, reg *device.Registry, every time.Duration, now func() time.Time) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		r.sample(reg.Views(), now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
