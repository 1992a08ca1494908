package device

import (
	"log/slog"
	"time"
)

// lru is an intrusive doubly linked list of entries, most recently seen
// first: moving an entry to the front and taking the least recently seen
// one are O(1), so making room under the registry lock costs the same
// whatever the table holds. The root is a sentinel: root.next is the
// front, root.prev the back.
type lru struct {
	root entry
	n    int
}

func (l *lru) init() {
	l.root.next, l.root.prev = &l.root, &l.root
}

// pushFront puts e, on no list, at the front.
func (l *lru) pushFront(e *entry) {
	e.prev, e.next = &l.root, l.root.next
	l.root.next.prev = e
	l.root.next = e
	e.list = l
	l.n++
}

// remove takes e off the list it is on (l).
func (l *lru) remove(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next, e.list = nil, nil, nil
	l.n--
}

// touch moves e, on l, to the front.
func (l *lru) touch(e *entry) {
	if l.root.next == e {
		return
	}
	l.remove(e)
	l.pushFront(e)
}

// back is the least recently seen entry, or nil.
func (l *lru) back() *entry {
	if l.n == 0 {
		return nil
	}
	return l.root.prev
}

// Log budget: a flood of new source MACs must not flood the log. At most
// logBurst "new device" lines a logWindow; the rest, and every eviction,
// are counted and summed up once a window.
const (
	logWindow = time.Minute
	logBurst  = 10
)

// churn counts what the registry did not log one by one.
type churn struct {
	since        time.Time
	newLogged    int // "new device" lines written this window
	newQuiet     int // new confirmed devices not logged one by one
	unconfirmed  int // new unconfirmed devices (never logged one by one)
	evicted      int // confirmed devices forgotten to make room
	evictedUnc   int // unconfirmed devices forgotten to make room
	lastEvicted  string
	lastEvictedT time.Time
}

// note starts the window at the first event counted.
func (c *churn) note(now time.Time) {
	if c.since.IsZero() {
		c.since = now
	}
}

// allowNew reports whether one more "new device" line fits this window.
func (c *churn) allowNew(now time.Time) bool {
	c.note(now)
	if c.newLogged < logBurst {
		c.newLogged++
		return true
	}
	c.newQuiet++
	return false
}

// summarise logs what was counted once the window is over (or at once
// when force is set) and starts a new window.
func (c *churn) summarise(log *slog.Logger, now time.Time, force bool, confirmed, unconfirmed int) {
	if c.since.IsZero() || !force && now.Sub(c.since) < logWindow {
		return
	}
	if c.newQuiet > 0 {
		log.Info("more new devices than logged one by one", "not_logged", c.newQuiet, "since", c.since.Format(time.RFC3339))
	}
	if c.evicted > 0 {
		log.Warn("device table full; forgot the devices seen least recently", "forgotten", c.evicted,
			"last", c.lastEvicted, "last_seen", c.lastEvictedT, "since", c.since.Format(time.RFC3339), "devices", confirmed, "bound", MaxDevices)
	}
	if c.evictedUnc > 0 || c.unconfirmed > logBurst {
		log.Warn("many source MACs not confirmed by the neighbour table or DHCP leases (spoofed?); kept apart in a small pool",
			"new", c.unconfirmed, "forgotten", c.evictedUnc, "since", c.since.Format(time.RFC3339), "pool", unconfirmed, "bound", MaxUnconfirmed)
	}
	*c = churn{}
}
