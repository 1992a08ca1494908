package device

import (
	"net/netip"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Observation is one query a device sent, as the graders take it: the
// query as read from the wire, where it came from, and whether over TCP.
// It is read during the call that is given it, never kept.
type Observation struct {
	Query *dnswire.Query
	// Src is the device's address and source port. The query is graded
	// only when this address and the device's MAC agree with the
	// neighbour table; the port is graded over UDP only.
	Src netip.AddrPort
	TCP bool
}

// port is the source port the graders see: none over TCP (the kernel
// picks those, not the device's resolver).
func (o *Observation) port() uint16 {
	if o.TCP {
		return 0
	}
	return o.Src.Port()
}

// Count records how the guard answered one query of device id; when q is
// given (no packet observer runs) the query also feeds the graders, if
// its address and the device's MAC agree with the neighbour table.
func (r *Registry) Count(id string, o Outcome, q *Observation) {
	r.CountAt(id, o, q, time.Time{})
}

// CountAt is Count for a query received at now (zero: read the clock).
func (r *Registry) CountAt(id string, o Outcome, q *Observation, now time.Time) {
	now = r.at(now)
	agree := false
	if q != nil && q.Query != nil {
		mac := id
		if isIPID(id) {
			mac = ""
		}
		agree = r.agrees(mac, q.Src.Addr().Unmap().WithZone(""))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return
	}
	switch o {
	case Answered:
		e.rec.Queries++
	case Refused:
		e.rec.Queries++
		e.rec.Refused++
	case RateLimited:
		e.rec.Queries++
		e.rec.RateLimited++
	}
	if q != nil && agree {
		r.observeLocked(e, q, now)
	}
	r.markLocked(e)
}

// ObserveQuery records a device's DNS query as logged before the redirect:
// mac and q.Src are the device, dst where it sent the query. A query to an
// address that is not the router's is a hard-coded resolver. q.Query may
// be nil (a TCP segment that starts no query): the packet still says
// where the device went.
func (r *Registry) ObserveQuery(mac string, dst netip.AddrPort, q Observation) {
	if mac == "" {
		return
	}
	now := r.opts.Now()
	local := r.isLocal(dst.Addr())
	src := q.Src
	ip := src.Addr().Unmap().WithZone("")
	// Only traffic whose MAC and address agree with the neighbour table
	// is the device's evidence: frames spoofing its MAC from another
	// address cannot grade it.
	agree := r.agrees(mac, ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !agree && q.Query != nil && r.awaitVouchLocked(mac, ip, q, now) {
		agree = true
	}
	e := r.packetLocked(mac, ip, now, agree)
	if !local {
		e.rec.noteBypass("do53", dst.String(), now)
		r.onBypass(mac, "do53", dst)
		if q.Query != nil {
			r.orig.put(src, q.Query.ID, dst)
		}
	}
	if q.Query != nil && agree {
		r.observeLocked(e, &q, now)
	}
}

// ObserveBypass records an attempt to reach an encrypted resolver around
// the guard (kind dot, doq or doh).
func (r *Registry) ObserveBypass(mac string, src, dst netip.AddrPort, kind string) {
	if mac == "" {
		return
	}
	now := r.opts.Now()
	ip := src.Addr().Unmap().WithZone("")
	agree := r.agrees(mac, ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.packetLocked(mac, ip, now, agree)
	e.rec.noteBypass(kind, dst.String(), now)
	r.onBypass(mac, kind, dst)
}

// packetLocked takes in a logged packet from mac at ip: the address's
// MAC is learned, and the device's entry (made if new, confirmed if agree)
// notes the address. r.mu held.
func (r *Registry) packetLocked(mac string, ip netip.Addr, now time.Time, agree bool) *entry {
	r.learnLocked(ip, mac)
	e := r.entryLocked(mac, mac, now, agree)
	e.rec.noteAddr(ip)
	return e
}

// onBypass tells Options.OnBypass of an attempt (r.mu held).
func (r *Registry) onBypass(mac, kind string, dst netip.AddrPort) {
	if r.opts.OnBypass != nil {
		r.opts.OnBypass(mac, kind, dst)
	}
}

// unvouched is a logged query from an address the neighbour table did not
// know when it was read. The table learns a device's address from its ARP
// or neighbour solicitation, which comes before its query; but the two
// arrive on different sockets, read by different goroutines, and the
// query can be read first (a device that reboots before each query lost
// all its evidence so). It becomes evidence when the table learns the
// address with the same MAC within unvouchedFor, else it is dropped.
type unvouched struct {
	mac string
	ip  netip.Addr
	q   Observation
	at  time.Time
}

const (
	maxUnvouched = 32
	unvouchedFor = 2 * time.Second
)

// awaitVouchLocked looks at the neighbour table once more for a logged
// query that did not agree with it: true if it agrees now; if the table
// has no entry for the address the query waits (the oldest waiting is
// dropped when full). A different MAC for the address is no wait: that
// frame is not the device's evidence. r.mu held.
func (r *Registry) awaitVouchLocked(mac string, ip netip.Addr, q Observation, now time.Time) bool {
	n := r.opts.Neighbours
	if n == nil {
		return false
	}
	m, ok := n.MAC(ip)
	if ok {
		return m == mac
	}
	if len(r.unvouched) == maxUnvouched {
		r.unvouched = append(r.unvouched[:0], r.unvouched[1:]...)
	}
	r.unvouched = append(r.unvouched, unvouched{mac: mac, ip: ip, q: q, at: now})
	return false
}

// vouchLogged takes as evidence the waiting queries whose address the
// neighbour table now gives their MAC, at the time they were logged, and
// drops those that waited unvouchedFor.
func (r *Registry) vouchLogged(now time.Time) {
	n := r.opts.Neighbours
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == nil || len(r.unvouched) == 0 {
		return
	}
	keep := r.unvouched[:0]
	for _, u := range r.unvouched {
		m, ok := n.MAC(u.ip)
		switch {
		case ok && m == u.mac:
			e := r.packetLocked(u.mac, u.ip, u.at, true)
			r.observeLocked(e, &u.q, u.at)
		case !ok && now.Sub(u.at) < unvouchedFor:
			keep = append(keep, u)
		}
	}
	clear(r.unvouched[len(keep):])
	r.unvouched = keep
}
