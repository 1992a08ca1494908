package device

import (
	"context"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
)

// Options configure a Registry.
type Options struct {
	Store           *Store // nil: records live in memory only
	Persist         string // persistent copy of the store's file; "" for none
	PersistInterval time.Duration
	FlushInterval   time.Duration
	Leases          string // dnsmasq leases file; "" for none
	Classes         []policy.Class
	Neighbours      *Neighbours // nil: addresses are learned from observed packets only
	// OnExempt is called with the MACs that must not be intercepted,
	// whenever that list changes (the nftables exempt set).
	OnExempt func([]net.HardwareAddr)
	// OnBypass, if set, is told of each attempt to reach a resolver
	// around the guard (kind do53, dot, doq or doh) as it is recorded;
	// it is called with the registry's lock held, so it must be quick
	// and must not call back into the registry.
	OnBypass func(mac, kind string, dst netip.AddrPort)
	Log      *slog.Logger
	Now      func() time.Time
}

// Outcome is how the guard answered a query.
type Outcome int

// Outcomes counted per device.
const (
	Answered Outcome = iota
	Refused
	RateLimited
)

// LocalID is the identity of queries from the router itself (the guard's
// own lookups, local services); they are not device records.
const LocalID = "local"

// Registry holds the device records in memory, grades them, and writes
// the changed ones to the store in batches. Its jobs, by file:
//   - learn.go: who a client is (Identify), MACs learned from the
//     neighbour table, logged packets and DHCP leases;
//   - table.go: the bounded table of confirmed and unconfirmed records;
//   - observation.go: what a query or a logged packet tells about its
//     device; retrans.go: retransmissions told from new queries;
//     grade.go: IDs and ports graded, the strict class;
//   - override.go: classes and the operator's overrides;
//   - flush.go: batches written to the store, the persistent copy;
//   - exempt.go: the MACs the nftables table must not intercept;
//   - origdst.go: where redirected queries were first sent.
type Registry struct {
	opts Options
	// realClock: opts.Now is time.Now, so the time a query was received
	// (read once per batch by the listener) serves instead of a clock read.
	realClock bool
	local     *stage.Device // the router's own queries
	log       *slog.Logger
	cls       *Classifier
	seed      maphash.Seed

	mu sync.Mutex
	// Every record, by ID. Confirmed devices (their MAC and address
	// agree with the neighbour table or a DHCP lease) are on main, at
	// most MaxDevices; the others on unconfirmed, at most MaxUnconfirmed,
	// never written to the store; records with an operator override on
	// neither list: they are never forgotten.
	devices     map[string]*entry
	main        lru
	unconfirmed lru
	learned     map[netip.Addr]string // IP -> MAC from observed packets and leases
	leased      map[netip.Addr]string // IP -> MAC from DHCP leases
	leaseName   map[string]string     // MAC -> DHCP name
	dirty       map[string]bool
	deleted     []string
	orig        origRing
	unvouched   []unvouched // logged queries waiting for the neighbour table
	exempt      string      // last exempt list given to OnExempt, joined
	churn       churn
	bitmaps     *entropy.Budget // estimators past their sparse form
	ipIDs       [64]struct {    // ipIDLocked's memory
		addr netip.Addr
		id   string
	}

	learnedMAC broadcast // an address's MAC was learned from a packet or lease
	// Waits counts the identify stage's waits for a MAC.
	Waits WaitStats
	// Flushes counts the batches written to the store, FlushErrors
	// those that failed (and are tried again at the next flush).
	Flushes, FlushErrors atomic.Uint64
	// LeasesApplied counts the lease files read and applied (the first,
	// then each change); Passes counts Run's rounds of upkeep (the first
	// at its start, then one each FlushInterval: flush, confirmation,
	// leases, exempt set).
	LeasesApplied, Passes Signal
}

type entry struct {
	rec        *Record
	ids, ports *entropy.Estimator // nil until the device's own traffic is graded
	recent     recentQueries      // the last queries, to drop retransmissions
	away       bool               // neighbour gone: the next sighting is a new boot
	confirmed  bool
	ungraded   uint32 // values since the last grade (gradeDue)
	decision   Decision
	dev        *stage.Device // what identify last handed out (never modified)
	prev, next *entry        // on list (nil: pinned by an override, or the list's root)
	list       *lru
}

// NewRegistry loads the store's records and returns a registry; call Run
// to start its flushing and Close to write the last batch.
func NewRegistry(opts Options) (*Registry, error) {
	realClock := opts.Now == nil
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	r := &Registry{
		realClock: realClock,
		local:     &stage.Device{ID: LocalID, Name: "router"},
		opts:      opts,
		log:       opts.Log,
		cls:       NewClassifier(opts.Classes),
		seed:      maphash.MakeSeed(),
		devices:   map[string]*entry{},
		learned:   map[netip.Addr]string{},
		leased:    map[netip.Addr]string{},
		leaseName: map[string]string{},
		dirty:     map[string]bool{},
		bitmaps:   entropy.NewBudget(MaxBitmaps),
	}
	r.main.init()
	r.unconfirmed.init()
	if opts.Store != nil {
		recs, err := opts.Store.Load()
		if err != nil {
			return nil, err
		}
		r.load(recs)
	}
	return r, nil
}

// load puts stored records on the main list, least recently seen at the
// back; beyond the bound the least recently seen are forgotten (a file
// written before the bound, or by a flood the old guard kept).
func (r *Registry) load(recs []*Record) {
	slices.SortFunc(recs, func(a, b *Record) int { return a.LastSeen.Compare(b.LastSeen) })
	excess := -MaxDevices
	for _, rec := range recs {
		if rec.Override == nil {
			excess++
		}
	}
	forgot := 0
	for _, rec := range recs {
		if rec.Override == nil && forgot < excess {
			r.deleted = append(r.deleted, rec.ID)
			forgot++
			continue
		}
		e, err := r.restore(rec)
		if err != nil {
			r.log.Warn("device estimator state unreadable; grading starts over", "device", rec.ID, "err", err)
		}
		e.confirmed = true
		r.devices[rec.ID] = e
		if rec.Override == nil {
			r.main.pushFront(e)
		}
	}
	if forgot > 0 {
		r.log.Warn("stored device table over its bound; forgot the devices seen least recently", "forgotten", forgot, "bound", MaxDevices)
	}
}

func (r *Registry) restore(rec *Record) (*entry, error) {
	e := &entry{rec: rec}
	var err error
	if len(rec.IDState) > 0 {
		e.ids = entropy.NewWithBudget(r.bitmaps)
		if uerr := e.ids.UnmarshalBinary(rec.IDState); uerr != nil {
			e.ids, err = nil, uerr
		}
	}
	if len(rec.PortState) > 0 {
		e.ports = entropy.NewWithBudget(r.bitmaps)
		if uerr := e.ports.UnmarshalBinary(rec.PortState); uerr != nil {
			e.ports, err = nil, uerr
		}
	}
	rec.IDState, rec.PortState = nil, nil // the estimators hold it now
	e.decision = r.cls.Decide(rec)
	return e, err
}

// Snapshot returns a copy of every record, estimator state included.
func (r *Registry) Snapshot() []*Record {
	recs, _ := r.snapshot()
	return recs
}

// snapshot returns a copy of every record, by ID, and which of them are
// not confirmed.
func (r *Registry) snapshot() ([]*Record, map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Record, 0, len(r.devices))
	unconfirmed := map[string]bool{}
	for _, e := range r.devices {
		out = append(out, r.recordLocked(e))
		if !e.confirmed {
			unconfirmed[e.rec.ID] = true
		}
	}
	slices.SortFunc(out, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
	return out, unconfirmed
}

// recordLocked returns a copy of e's record with its estimators' state.
func (r *Registry) recordLocked(e *entry) *Record {
	c := e.rec.clone()
	if e.ids != nil {
		if b, err := e.ids.MarshalBinary(); err == nil {
			c.IDState = b
		}
	}
	if e.ports != nil {
		if b, err := e.ports.MarshalBinary(); err == nil {
			c.PortState = b
		}
	}
	return c
}

// Len returns the number of confirmed and unconfirmed records held.
func (r *Registry) Len() (confirmed, unconfirmed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.devices) - r.unconfirmed.n, r.unconfirmed.n
}

// Run flushes changed records every FlushInterval, copies the file to
// persistent storage every PersistInterval, and follows the leases file,
// until ctx is done.
func (r *Registry) Run(ctx context.Context) {
	flush := time.NewTicker(r.opts.FlushInterval)
	defer flush.Stop()
	var persist <-chan time.Time
	if r.opts.Persist != "" && r.opts.PersistInterval > 0 {
		t := time.NewTicker(r.opts.PersistInterval)
		defer t.Stop()
		persist = t.C
	}
	leases := &leaseFile{path: r.opts.Leases}
	r.reloadLeases(leases)
	r.updateExempt()
	r.Passes.add()
	for {
		// Take the signal before looking, so an address learned in
		// between is not missed.
		var learned <-chan struct{}
		if n := r.opts.Neighbours; n != nil {
			learned = n.Learned()
		}
		r.vouchLogged(r.opts.Now())
		select {
		case <-ctx.Done():
			return
		case <-learned: // an address learned: vouchLogged on the next pass
		case <-flush.C:
			if err := r.Flush(); err != nil {
				r.log.Error("writing device records", "err", err)
			}
			r.confirmPending()
			r.summarise(false)
			r.reloadLeases(leases)
			r.updateExempt()
			r.Passes.add()
		case <-persist:
			if err := r.Persist(); err != nil {
				r.log.Error("copying device state to persistent storage", "err", err)
			}
		}
	}
}

// Close writes the last batch and the persistent copy.
func (r *Registry) Close() error {
	r.summarise(true)
	err := r.Flush()
	if perr := r.Persist(); perr != nil && err == nil {
		err = perr
	}
	return err
}

// Views returns the device table of the running registry.
func (r *Registry) Views() []View {
	recs, unconfirmed := r.snapshot()
	r.mu.Lock()
	cls := r.cls
	r.mu.Unlock()
	out := make([]View, 0, len(recs))
	for _, rec := range recs {
		v := ViewOf(rec, cls)
		v.Unconfirmed = unconfirmed[rec.ID]
		out = append(out, v)
	}
	return out
}

// Stats are the registry's counters, as the control socket (guard/control) serves them.
type Stats struct {
	MACWaits         uint64 `json:"mac_waits"`           // queries that waited for their MAC
	MACWaitsTimedOut uint64 `json:"mac_waits_timed_out"` // of those, waits that ended without one
	Flushes          uint64 `json:"state_flushes"`       // batches written to the store
	LeasesApplied    uint64 `json:"leases_applied"`      // lease files read and applied
	Passes           uint64 `json:"passes"`              // rounds of upkeep done (see Registry.Passes)
}

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	return Stats{
		MACWaits: r.Waits.Taken.Load(), MACWaitsTimedOut: r.Waits.TimedOut.Load(),
		Flushes: r.Flushes.Load(), LeasesApplied: r.LeasesApplied.Load(), Passes: r.Passes.Load(),
	}
}
