package device

import (
	"net/netip"
	"slices"
	"time"

	"github.com/dnsguard/dnsguard/guard/stage"
)

// agrees reports whether mac and ip agree with the neighbour table or a
// DHCP lease (always, when the guard has no neighbour table to ask).
func (r *Registry) agrees(mac string, ip netip.Addr) bool {
	if mac == "" {
		return r.opts.Neighbours == nil
	}
	n := r.opts.Neighbours
	if n == nil {
		return true
	}
	if m, ok := n.MAC(ip); ok && m == mac {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leased[ip] == mac
}

// MAC returns the MAC of the device at ip: from the neighbour table, else
// from addresses learned from logged packets and DHCP leases.
func (r *Registry) MAC(ip netip.Addr) (string, bool) {
	ip = ip.Unmap().WithZone("")
	if n := r.opts.Neighbours; n != nil {
		if mac, ok := n.MAC(ip); ok {
			return mac, true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mac, ok := r.learned[ip]
	return mac, ok
}

// learnLocked records that ip belongs to mac, and folds a record kept
// under the bare address into the device's.
func (r *Registry) learnLocked(ip netip.Addr, mac string) {
	if mac == "" || !ip.IsValid() {
		return
	}
	if r.learned[ip] == mac {
		return
	}
	if len(r.learned) > 4096 { // bounded: forget everything rather than grow
		clear(r.learned)
	}
	r.learned[ip] = mac
	r.learnedMAC.Fire()
	ipRec, ok := r.devices[ipID(ip.String())]
	if !ok {
		return
	}
	dst, ok := r.devices[mac]
	if !ok {
		ipRec.rec.ID, ipRec.rec.MAC = mac, mac
		r.devices[mac] = ipRec
		dst = ipRec
	} else {
		mergeRecords(dst.rec, ipRec.rec)
		if ipRec.list != nil {
			ipRec.list.remove(ipRec)
		}
		if dst.rec.Override == nil && ipRec.rec.Override != nil {
			// The operator's decision follows the device to its MAC.
			dst.rec.Override = ipRec.rec.Override
			dst.decision = r.cls.Decide(dst.rec)
			if dst.list != nil {
				dst.list.remove(dst)
			}
			dst.confirmed = true
		}
	}
	delete(r.devices, ipID(ip.String()))
	delete(r.dirty, ipID(ip.String()))
	if ipRec.confirmed {
		r.deleted = append(r.deleted, ipID(ip.String()))
	}
	r.markLocked(dst)
}

func mergeRecords(dst, src *Record) {
	dst.Queries += src.Queries
	dst.Refused += src.Refused
	dst.RateLimited += src.RateLimited
	dst.EDNSQueries += src.EDNSQueries
	dst.NoEDNSQueries += src.NoEDNSQueries
	if src.FirstSeen.Before(dst.FirstSeen) {
		dst.FirstSeen = src.FirstSeen
	}
	for _, ip := range slices.Backward(src.IPs) {
		dst.noteIP(ip)
	}
	for _, a := range src.Bypass {
		dst.addBypass(a)
	}
}

// Identify returns the device record's ID and the policy for a query from
// client, creating the record on first sight. A client whose MAC is not
// known is kept under its address until the MAC is learned.
func (r *Registry) Identify(client netip.Addr) (id, mac string, d Decision, name string) {
	return r.IdentifyAt(client, time.Time{})
}

// IdentifyAt is Identify for a query received at now (zero: read the
// clock).
func (r *Registry) IdentifyAt(client netip.Addr, now time.Time) (id, mac string, d Decision, name string) {
	dev, d := r.identify(client, now)
	return dev.ID, dev.MAC, d, dev.Name
}

// DeviceAt is IdentifyAt as the identify stage wants it: the device's
// identity and policy as a *stage.Device shared by its queries while
// nothing in it changes (never modified: a change makes a new one), so
// that a query allocates nothing for it.
func (r *Registry) DeviceAt(client netip.Addr, now time.Time) *stage.Device {
	dev, _ := r.identify(client, now)
	return dev
}

func (r *Registry) identify(client netip.Addr, now time.Time) (*stage.Device, Decision) {
	client = client.Unmap().WithZone("")
	if client.IsLoopback() || r.isLocal(client) {
		return r.local, Decision{}
	}
	mac, _ := r.MAC(client)
	confirmed := r.agrees(mac, client)
	now = r.at(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	id := mac
	if mac == "" {
		id = r.ipIDLocked(client)
	} else {
		r.learnLocked(client, mac)
	}
	e := r.entryLocked(id, mac, now, confirmed)
	e.rec.noteAddr(client)
	d := e.decision
	want := stage.Device{ID: id, MAC: mac, Name: e.rec.Name(), Class: d.Class, Strict: d.Strict, Rate: d.Rate, Burst: d.Burst}
	if e.dev == nil || *e.dev != want {
		dev := want // only a change allocates
		e.dev = &dev
	}
	return e.dev, d
}

// at returns now, the time a query was received, or the clock's time
// when now is zero or the registry runs on an injected clock.
func (r *Registry) at(now time.Time) time.Time {
	if !r.realClock || now.IsZero() {
		return r.opts.Now()
	}
	return now
}

// sameIP reports whether s is the text form of a, without allocating.
func sameIP(s string, a netip.Addr) bool {
	b, err := netip.ParseAddr(s)
	return err == nil && b == a
}

// ipIDLocked returns ipID(a.String()), remembered for the last addresses
// asked (a pure function of a, so nothing is ever stale): a device known
// only by its address costs no allocation per query.
func (r *Registry) ipIDLocked(a netip.Addr) string {
	b := a.As16()
	h := 0
	for _, x := range b[12:] {
		h = h*31 + int(x)
	}
	slot := &r.ipIDs[h%len(r.ipIDs)]
	if slot.id == "" || slot.addr != a {
		slot.addr, slot.id = a, ipID(a.String())
	}
	return slot.id
}

func (r *Registry) isLocal(a netip.Addr) bool {
	if n := r.opts.Neighbours; n != nil {
		return n.IsLocal(a)
	}
	return false
}

// Gone marks a device whose neighbour entry disappeared: its next query
// starts a new boot.
func (r *Registry) Gone(mac string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.devices[mac]; ok {
		e.away = true
	}
}

func (r *Registry) reloadLeases(lf *leaseFile) {
	if lf.path == "" {
		return
	}
	leases, changed, err := lf.load()
	if err != nil {
		r.log.Warn("reading DHCP leases", "err", err)
		return
	}
	if !changed {
		return
	}
	defer r.LeasesApplied.add() // once the lock is released
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.leaseName)
	clear(r.leased)
	for _, l := range leases {
		mac := macString(l.MAC)
		if mac == "" {
			continue
		}
		r.learnLocked(l.IP, mac)
		r.leased[l.IP.Unmap().WithZone("")] = mac
		if e, ok := r.devices[mac]; ok && !e.confirmed {
			r.confirmLocked(e, r.opts.Now()) // a device the DHCP server knows is no spoof
			r.markLocked(e)
		}
		if l.Name == "" {
			continue
		}
		r.leaseName[mac] = l.Name
		if e, ok := r.devices[mac]; ok && e.rec.Name() != l.Name {
			e.rec.noteName(l.Name)
			e.decision = r.cls.Decide(e.rec)
			r.dirty[mac] = true
		}
	}
}
