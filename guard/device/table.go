package device

import (
	"net/netip"
	"time"
)

// silenceIsReboot: a device silent this long is taken to have restarted
// (for the across-boots estimators) even if its neighbour entry stayed.
const silenceIsReboot = 30 * time.Minute

// entryLocked returns the entry for id, creating it; confirmed says
// whether this sighting's MAC and address agree with the neighbour table
// or a DHCP lease, which moves the device to the main table.
func (r *Registry) entryLocked(id, mac string, now time.Time, confirmed bool) *entry {
	e, ok := r.devices[id]
	switch {
	case !ok:
		e = &entry{rec: &Record{ID: id, MAC: mac, FirstSeen: now, GradedSince: now}}
		if n := r.leaseName[mac]; n != "" {
			e.rec.noteName(n)
		}
		e.decision = r.cls.Decide(e.rec)
		r.devices[id] = e
		if confirmed {
			r.confirmLocked(e, now)
		} else {
			r.makeRoomLocked(&r.unconfirmed, MaxUnconfirmed, now)
			r.unconfirmed.pushFront(e)
			r.churn.note(now)
			r.churn.unconfirmed++
			r.log.Debug("new unconfirmed device", "device", id)
		}
	case confirmed && !e.confirmed:
		r.confirmLocked(e, now)
	case e.list != nil:
		e.list.touch(e)
	}
	if e.confirmed && !confirmed {
		// Frames with a confirmed device's MAC that the neighbour table
		// does not vouch for (a spoof, or its first packet from a new
		// address) do not tell when it was last seen or rebooted.
		r.markLocked(e)
		return e
	}
	if !e.rec.LastSeen.IsZero() && now.Sub(e.rec.LastSeen) > silenceIsReboot {
		e.away = true
	}
	if e.away {
		e.away = false
		e.rec.Boots++
		e.recent.reset() // a query repeated after a reboot is not a retransmission
	}
	e.rec.LastSeen = now
	r.markLocked(e)
	return e
}

// confirmLocked moves e (new, or from the unconfirmed pool) to the main
// table: from now on it is written to the store.
func (r *Registry) confirmLocked(e *entry, now time.Time) {
	if e.list == &r.unconfirmed {
		r.unconfirmed.remove(e)
	}
	e.confirmed = true
	if e.list == nil && e.rec.Override == nil {
		r.makeRoomLocked(&r.main, MaxDevices, now)
		r.main.pushFront(e)
	}
	if r.churn.allowNew(now) {
		r.log.Info("new device", "device", e.rec.ID)
	}
}

func (r *Registry) markLocked(e *entry) {
	if e.confirmed {
		r.dirty[e.rec.ID] = true
	}
}

// MaxDevices bounds the main table: a LAN device that gets the neighbour
// table to confirm spoofed MACs must not grow the guard's memory or file
// without end. When full, the device seen least recently is forgotten
// (unless it has an operator override: those are never forgotten and do
// not count).
const MaxDevices = 1024

// MaxBitmaps bounds the estimators (two per device) that may grow past
// their sparse form (512 distinct values, 1 KiB) to the 8 KiB bitmap: 4
// MiB, however many confirmed devices send however many IDs. Beyond it an
// estimator saturates (see entropy.Budget).
const MaxBitmaps = 512

// MaxUnconfirmed bounds the pool of devices not (yet) confirmed by the
// neighbour table or a DHCP lease: a device sending from random source
// MACs fills this pool, not the table, and is never written to flash.
const MaxUnconfirmed = 256

// makeRoomLocked forgets the least recently seen entries of l until it
// has room for one more: O(1) each.
func (r *Registry) makeRoomLocked(l *lru, max int, now time.Time) {
	for l.n >= max {
		old := l.back()
		l.remove(old)
		delete(r.devices, old.rec.ID)
		delete(r.dirty, old.rec.ID)
		r.churn.note(now)
		if old.confirmed {
			r.deleted = append(r.deleted, old.rec.ID)
			r.churn.evicted++
			r.churn.lastEvicted, r.churn.lastEvictedT = old.rec.ID, old.rec.LastSeen
		} else {
			r.churn.evictedUnc++
		}
		r.log.Debug("device forgotten to make room", "device", old.rec.ID, "confirmed", old.confirmed, "last_seen", old.rec.LastSeen)
	}
}

// confirmPending confirms the unconfirmed devices whose MAC the neighbour
// table (or a lease) now gives one of their addresses: a device's first
// packets often arrive before the kernel's neighbour update does. The
// pool is small, so the walk is too.
func (r *Registry) confirmPending() {
	n := r.opts.Neighbours
	if n == nil {
		return // nothing is unconfirmed without a neighbour table
	}
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var confirm []*entry
	for e := r.unconfirmed.root.next; e != &r.unconfirmed.root; e = e.next {
		if e.rec.MAC == "" {
			continue
		}
		for _, s := range e.rec.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if mac, ok := n.MAC(ip); ok && mac == e.rec.MAC || r.leased[ip] == e.rec.MAC {
				confirm = append(confirm, e)
				break
			}
		}
	}
	for _, e := range confirm {
		r.confirmLocked(e, now)
		r.markLocked(e)
	}
}

// summarise logs the churn counted since the last summary, once a
// logWindow is over (force: now).
func (r *Registry) summarise(force bool) {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.churn.summarise(r.log, now, force, len(r.devices)-r.unconfirmed.n, r.unconfirmed.n)
}
