// Package limit is the per-device rate limit stage: a token bucket per
// device, so a device in a retry storm is cut off at the guard and the
// rest of the chain (cache, upstreams) sees a bounded rate from it.
//
// A device over its rate gets an immediate REFUSED with Extended DNS Error
// 18 "Prohibited" (RFC 8914 §4.19, the code for REFUSED to a client that
// may not be served), not silence. A stub that hears nothing retries on
// its timeout and, if it is one of the study's devices, retries harder;
// an answer closes its transaction at the cost of one small packet, and
// the answer can only go to the LAN (the guard serves only its own
// network), so it amplifies nothing.
package limit

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// DefaultMaxDevices bounds the table of buckets: a home network has tens
// of devices, a few thousand covers address churn; a device forgotten
// comes back with a full bucket, which errs on the side of serving it.
const DefaultMaxDevices = 4096

// Options are what a Limiter takes besides the policy.
type Options struct {
	MaxDevices int              // 0: DefaultMaxDevices
	Now        func() time.Time // nil: time.Now (tests inject a clock)
}

// Limiter holds a token bucket per device.
type Limiter struct {
	rate  float64
	burst int
	max   int
	now   func() time.Time
	// realClock: now is time.Now, so a request's Received time (read
	// once per batch by the listener) serves instead.
	realClock bool

	mu      sync.Mutex
	index   map[string]*list.Element
	lru     *list.List // front: most recently seen
	allowed uint64
	refused uint64
}

// bucket is a token bucket kept as GCRA (the generic cell rate
// algorithm): tat is when the bucket will be full again, so refill needs
// no floating-point accumulation and no timer.
type bucket struct {
	id      string
	tat     time.Time
	refused uint64
}

// New returns a limiter for the policy's device rate and burst. A device's
// own Rate/Burst (from its class) overrides them; a rate of 0 everywhere
// means no limit.
func New(l policy.Limits, o Options) *Limiter {
	if o.MaxDevices <= 0 {
		o.MaxDevices = DefaultMaxDevices
	}
	realClock := o.Now == nil
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Limiter{rate: l.DeviceRate, burst: l.DeviceBurst, max: o.MaxDevices, now: o.Now, realClock: realClock, index: map[string]*list.Element{}, lru: list.New()}
}

// Name is "limit".
func (l *Limiter) Name() string { return "limit" }

// Wrap returns the stage in front of next.
func (l *Limiter) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if !l.Allow(req) {
			return nil, &stage.Error{
				Rcode: dns.RcodeRefused,
				EDE:   dnswire.EDE{Code: dnswire.EDEProhibited, Text: "rate limited: too many queries from this device"},
			}
		}
		return next.ServeDNS(ctx, req)
	})
}

// Key is the identity a request is limited under: the device ID, or the
// client address when the device is not known.
func Key(req *stage.Request) string {
	if req.Device != nil && req.Device.ID != "" {
		return req.Device.ID
	}
	return "ip:" + req.Client.Addr().String()
}

// Allow takes a token from the request's device and reports whether there
// was one.
func (l *Limiter) Allow(req *stage.Request) bool {
	rate, burst := l.rate, l.burst
	if d := req.Device; d != nil {
		if d.Rate > 0 {
			rate = d.Rate
		}
		if d.Burst > 0 {
			burst = d.Burst
		}
	}
	if rate <= 0 {
		l.mu.Lock()
		l.allowed++
		l.mu.Unlock()
		return true
	}
	burst = max(burst, 1)
	interval := time.Duration(float64(time.Second) / rate)
	now := req.Received // read once per batch by the listener
	if !l.realClock || now.IsZero() {
		now = l.now()
	}
	id := Key(req)

	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if el, ok := l.index[id]; ok {
		b = el.Value.(*bucket)
		l.lru.MoveToFront(el)
	} else {
		b = &bucket{id: id, tat: now}
		l.index[id] = l.lru.PushFront(b)
		for l.lru.Len() > l.max {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.index, old.Value.(*bucket).id)
		}
	}
	tat := b.tat
	if tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > time.Duration(burst-1)*interval { // fewer than one token left
		b.refused++
		l.refused++
		return false
	}
	b.tat = tat.Add(interval)
	l.allowed++
	return true
}

// Stats are the limiter's counters.
type Stats struct {
	Allowed, Refused uint64
	Devices          int // buckets held
}

// Stats returns the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Allowed: l.allowed, Refused: l.refused, Devices: l.lru.Len()}
}

// Refused returns how many queries of one device (by Key) were refused
// while its bucket was held.
func (l *Limiter) Refused(key string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.index[key]; ok {
		return el.Value.(*bucket).refused
	}
	return 0
}
