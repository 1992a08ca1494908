// Package control is the guard's side channel to its operator: the
// counting stage and the ring of recent events, the HTTP API, the
// Prometheus metrics and the dashboard served from them (issue 13). The
// API is served by minihttp, so the router binary carries no net/http.
package control

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/miekg/dns"
)

// Transports, rcodes, EDE codes and bypass kinds counted.
const (
	numRcodes = 17 // header rcodes 0..15; 16 is any extended rcode (BADVERS)
	numEDE    = 32 // RFC 8914 codes 0..30; 31 is any other
)

var bypassKinds = [...]string{"do53", "dot", "doq", "doh"}

// Counters count what the chain answered, with atomics only: the
// counting stage adds one atomic increment to an answered query (and a
// few more, and an event, to a refused or rate-limited one).
type Counters struct {
	queries     [2][numRcodes]atomic.Uint64 // [udp, tcp][rcode]
	refused     [numEDE]atomic.Uint64       // refused answers by EDE code
	rateLimited atomic.Uint64
	bypass      [len(bypassKinds)]atomic.Uint64
	bypassOther atomic.Uint64

	// Events holds the recent refused answers, bypass attempts and
	// storms.
	Events *Events
}

// NewCounters returns counters with an event ring of n entries (0: 256).
func NewCounters(n int) *Counters {
	return &Counters{Events: NewEvents(n)}
}

// Name is "count".
func (c *Counters) Name() string { return "count" }

// Wrap returns the counting stage in front of next. It goes outermost in
// the chain and counts after the inner stages answer, so the device the
// identify stage found is known when a refusal is recorded.
func (c *Counters) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		r, err := next.ServeDNS(ctx, req)
		switch {
		case err != nil:
			c.countError(req, err)
		case r != nil:
			c.count(req.TCP, r.Rcode(), r.ExtRcode)
		}
		return r, err
	})
}

func (c *Counters) count(tcp bool, rcode int, ext uint8) {
	t := 0
	if tcp {
		t = 1
	}
	i := rcode & 0xF
	if ext != 0 {
		i = numRcodes - 1
	}
	c.queries[t][i].Add(1)
}

// countError counts an answer the listener makes from err (stage.ErrorReply).
func (c *Counters) countError(req *stage.Request, err error) {
	rcode, ede, text := dns.RcodeServerFailure, uint16(dnswire.EDEOther), "internal error"
	var se *stage.Error
	if errors.As(err, &se) {
		rcode, ede, text = se.Rcode, se.EDE.Code, se.EDE.Text
	}
	c.count(req.TCP, rcode&0xF, 0)
	switch device.OutcomeOf(err) {
	case device.RateLimited:
		c.rateLimited.Add(1)
		c.Events.storm(req)
	case device.Refused:
		c.refused[min(int(ede), numEDE-1)].Add(1)
		c.Events.Add(Event{Kind: "refused", Device: deviceID(req), Client: req.Client.Addr().String(),
			Query: dnswire.NameString(req.Q.Name), Type: dns.Type(req.Q.Type).String(),
			EDE: int(ede), Text: dnswire.EDEText(text)})
	}
}

// Bypass counts an attempt to reach a resolver around the guard and
// records it as an event (device.Options.OnBypass).
func (c *Counters) Bypass(mac, kind string, dst netip.AddrPort) {
	counted := false
	for i, k := range bypassKinds {
		if k == kind {
			c.bypass[i].Add(1)
			counted = true
		}
	}
	if !counted {
		c.bypassOther.Add(1)
	}
	// A device stuck on its own resolver tries it with every query:
	// one event per device, kind and target while it keeps on.
	if c.Events.quiet("bypass " + mac + " " + kind + " " + dst.String()) {
		c.Events.Add(Event{Kind: "bypass", Device: mac, Bypass: kind, Target: dst.String()})
	}
}

func deviceID(req *stage.Request) string {
	if req.Device != nil && req.Device.ID != "" {
		return req.Device.ID
	}
	return "ip:" + req.Client.Addr().String()
}

// Event is one thing worth an operator's eye. Strings in it may come
// from devices (query names): they are data, never markup.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // refused, bypass, storm
	Device string    `json:"device"`
	Client string    `json:"client,omitempty"`
	Query  string    `json:"query,omitempty"`
	Type   string    `json:"type,omitempty"`
	EDE    int       `json:"ede,omitempty"`
	Text   string    `json:"text,omitempty"`
	Bypass string    `json:"bypass,omitempty"` // do53, dot, doq, doh
	Target string    `json:"target,omitempty"` // where the bypass went
}

// quietFor is how long a device must go without being rate-limited (or
// without trying one resolver around the guard) before it makes a new
// storm (bypass) event.
const quietFor = time.Minute

// maxRecent bounds the storms and bypasses remembered.
const maxRecent = 4096

// Events is a bounded ring of recent events.
type Events struct {
	now func() time.Time

	mu     sync.Mutex
	ring   []Event
	next   int
	seq    uint64
	recent map[string]time.Time // storm or bypass key -> last seen
}

// NewEvents returns a ring of n events (0: 256).
func NewEvents(n int) *Events {
	if n <= 0 {
		n = 256
	}
	return &Events{now: time.Now, ring: make([]Event, 0, n), recent: map[string]time.Time{}}
}

// Add records e, stamping its sequence number and time; the oldest event
// goes when the ring is full.
func (ev *Events) Add(e Event) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.addLocked(e)
}

func (ev *Events) addLocked(e Event) {
	ev.seq++
	e.Seq = ev.seq
	if e.Time.IsZero() {
		e.Time = ev.now()
	}
	if len(ev.ring) < cap(ev.ring) {
		ev.ring = append(ev.ring, e)
		return
	}
	ev.ring[ev.next] = e
	ev.next = (ev.next + 1) % len(ev.ring)
}

// quiet notes key and reports whether it was quiet (not seen for
// quietFor) until now.
func (ev *Events) quiet(key string) bool {
	now := ev.now()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	last, seen := ev.recent[key]
	if len(ev.recent) >= maxRecent && !seen {
		for k, t := range ev.recent {
			if now.Sub(t) > quietFor {
				delete(ev.recent, k)
			}
		}
		if len(ev.recent) >= maxRecent {
			clear(ev.recent)
		}
	}
	ev.recent[key] = now
	return !seen || now.Sub(last) > quietFor
}

// storm records a storm event when req's device starts being rate-limited
// (its first refusal after quietFor without one).
func (ev *Events) storm(req *stage.Request) {
	id := deviceID(req)
	if !ev.quiet("storm " + id) {
		return
	}
	ev.Add(Event{Kind: "storm", Device: id, Client: req.Client.Addr().String(),
		Query: dnswire.NameString(req.Q.Name), Type: dns.Type(req.Q.Type).String(),
		EDE: dnswire.EDEProhibited, Text: "rate limited: too many queries from this device"})
}

// Since returns the events with a sequence number above seq, oldest
// first.
func (ev *Events) Since(seq uint64) []Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	out := make([]Event, 0, len(ev.ring))
	for i := range ev.ring {
		e := ev.ring[(ev.next+i)%len(ev.ring)]
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}

// rcodeName is the label an rcode is counted under.
func rcodeName(rc int) string {
	if rc == numRcodes-1 {
		return "EXTENDED"
	}
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}
