package dnssec

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// clockFloorDefault is the lower bound when the binary knows no build
// time (a go build outside a checkout, or with -buildvcs=false).
var clockFloorDefault = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ClockStateKey is where the newest trusted time lives in the state file.
const ClockStateKey = "dnssec-clock"

// clockRecordEvery is how often the trusted time is written to the state
// file (which reaches flash with the rest of it, every persist_interval
// and at shutdown).
const clockRecordEvery = time.Hour

// MetaStore is the part of the state file the boot clock uses
// (*device.Store).
type MetaStore interface {
	GetMeta(key string) ([]byte, error)
	PutMeta(key string, v []byte) error
}

// BootClock decides whether the clock can be trusted for signature
// validity times. A router without a real-time clock boots with a time
// in the past until NTP syncs, and NTP needs DNS to find its servers:
// while the clock is earlier than a known-good lower bound (the binary's
// build time, or the newest trusted time recorded in the state file,
// whichever is later) validity times are not checked, as dnsmasq's
// --dnssec-timestamp and dnssec-no-timecheck do; the log says so once,
// with the reason, and again once when the clock passes the bound, from
// which moment they are checked.
//
// With WaitForNTP (dnsguard run --dnssec-wait-ntp, set by the OpenWrt init
// script when sysntpd is enabled, as OpenWrt's dnsmasq gets
// --dnssec-no-timecheck) the bound is not enough: a clock wrongly in the
// future would make every signature look expired, DNS would fail and NTP
// could not resolve its servers. Times are then not checked at all until
// NTPSynced (SIGUSR1, sent by /etc/hotplug.d/ntp/25-dnsguard when sysntpd
// reports a synced stratum).
type BootClock struct {
	now    func() time.Time
	floor  time.Time
	reason string
	log    *slog.Logger
	state  MetaStore // nil: the trusted time is not recorded

	recorded atomic.Int64 // Unix seconds last written to the state file
	behind   atomic.Bool  // "clock behind" logged
	passed   atomic.Bool  // "clock passed the bound" logged
	waitNTP  atomic.Bool  // times unchecked until NTPSynced
	waiting  atomic.Bool  // "waiting for NTP" logged
	synced   atomic.Bool  // NTPSynced: trusted whatever the bound
}

// NewBootClock returns the clock check with its lower bound: the later of
// build (zero: unknown; then a fixed date) and the time in state (nil: no
// state file). now is the clock (time.Now).
func NewBootClock(now func() time.Time, build time.Time, buildReason string, state MetaStore, log *slog.Logger) *BootClock {
	c := &BootClock{now: now, floor: clockFloorDefault, reason: "no build time known; fixed lower bound", log: log, state: state}
	if build.After(c.floor) {
		c.floor, c.reason = build, buildReason
	}
	if state != nil {
		b, err := state.GetMeta(ClockStateKey)
		if err != nil {
			log.Warn("dnssec: recorded clock unreadable", "err", err)
		} else if len(b) > 0 {
			t, err := time.Parse(time.RFC3339, string(b))
			switch {
			case err != nil:
				log.Warn("dnssec: recorded clock damaged; ignored", "value", string(b))
			case t.After(c.floor):
				c.floor, c.reason = t, "newest time recorded in the state file"
				c.recorded.Store(t.Unix())
			}
		}
	}
	return c
}

// Trusted reports whether signature validity times can be checked now.
func (c *BootClock) Trusted() bool {
	if c.waitNTP.Load() {
		if c.waiting.CompareAndSwap(false, true) {
			c.log.Warn("dnssec: waiting for NTP to sync (--dnssec-wait-ntp); signature validity times are not checked until it has",
				"now", c.now().UTC().Format(time.RFC3339))
		}
		return false
	}
	t := c.now()
	if t.Before(c.floor) && !c.synced.Load() {
		if c.behind.CompareAndSwap(false, true) {
			c.log.Warn("dnssec: the clock is earlier than its known lower bound (no real-time clock, NTP not synced yet?); signature validity times are not checked until it passes it",
				"now", t.UTC().Format(time.RFC3339), "lower_bound", c.floor.UTC().Format(time.RFC3339), "reason", c.reason)
		}
		return false
	}
	if c.behind.Load() && c.passed.CompareAndSwap(false, true) {
		c.log.Info("dnssec: the clock passed its lower bound; signature validity times are checked",
			"now", t.UTC().Format(time.RFC3339), "lower_bound", c.floor.UTC().Format(time.RFC3339))
	}
	c.record(t)
	return true
}

// NTPSynced tells the clock that NTP has synced: from now on the clock is
// trusted (its time recorded in the state file at once, the next boot's
// lower bound) and signature validity times are checked, with or without
// --dnssec-wait-ntp. Only the first call counts; later ones (each NTP
// stratum change) do nothing.
func (c *BootClock) NTPSynced() {
	if c.synced.Swap(true) {
		return
	}
	c.waitNTP.Store(false)
	c.passed.Store(true) // the NTP line says it; no "passed the bound" line after it
	t := c.now()
	c.log.Info("dnssec: NTP has synced; signature validity times are checked", "now", t.UTC().Format(time.RFC3339))
	// Past the lower bound or not, NTP's time is the trusted one: the
	// bound is only a guess for when nothing says the time is right
	// (synced, set above, lifts it).
	if c.state != nil {
		c.recorded.Store(t.Unix())
		if err := c.state.PutMeta(ClockStateKey, []byte(t.UTC().Format(time.RFC3339))); err != nil {
			c.log.Warn("dnssec: clock not recorded in the state file", "err", err)
		}
	}
}

// record writes t, a trusted time, to the state file at most once per
// clockRecordEvery, for the next boot's lower bound.
func (c *BootClock) record(t time.Time) {
	if c.state == nil {
		return
	}
	last := c.recorded.Load()
	if t.Unix()-last < int64(clockRecordEvery/time.Second) || !c.recorded.CompareAndSwap(last, t.Unix()) {
		return
	}
	if err := c.state.PutMeta(ClockStateKey, []byte(t.UTC().Format(time.RFC3339))); err != nil {
		c.log.Warn("dnssec: clock not recorded in the state file", "err", err)
	}
}

// WaitForNTP has signature times unchecked until NTPSynced, whatever the
// clock says (dnsguard run --dnssec-wait-ntp).
func (c *BootClock) WaitForNTP() { c.waitNTP.Store(true) }
