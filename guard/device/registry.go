package device

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/entropy"
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

// silenceIsReboot: a device silent this long is taken to have restarted
// (for the across-boots estimators) even if its neighbour entry stayed.
const silenceIsReboot = 30 * time.Minute

// gradeEvery: estimators are graded after every observation for the first
// gradeAlways values, then every gradeEvery-th.
const (
	gradeAlways = 64
	gradeEvery  = 8
)

// strictReview: a device the guard graded weak is graded again on fresh
// evidence once it has been strict this long; it leaves the strict class
// when that evidence shows random values, so a weak grade (earned, or
// forced by traffic that looked like the device's) does not last for
// ever.
const strictReview = 24 * time.Hour

// Registry holds the device records in memory, grades them, and writes
// the changed ones to the store in batches.
type Registry struct {
	opts Options
	log  *slog.Logger
	cls  *Classifier
	seed maphash.Seed

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
	exempt      string // last exempt list given to OnExempt, joined
	churn       churn
	bitmaps     *entropy.Budget // estimators past their sparse form

	learnedMAC broadcast // an address's MAC was learned from a packet or lease
	// Waits counts the identify stage's waits for a MAC.
	Waits WaitStats
	// Flushes counts the batches written to the store, FlushErrors
	// those that failed (and are tried again at the next flush).
	Flushes, FlushErrors atomic.Uint64
}

type entry struct {
	rec        *Record
	ids, ports *entropy.Estimator // nil until the device's own traffic is graded
	recent     [8]uint64          // hashes of the last queries, to drop retransmissions
	recentAt   [8]int64           // and when (unix ns)
	nRecent    uint8
	away       bool // neighbour gone: the next sighting is a new boot
	confirmed  bool
	ungraded   uint8
	decision   Decision
	prev, next *entry // on list (nil: pinned by an override, or the list's root)
	list       *lru
}

// NewRegistry loads the store's records and returns a registry; call Run
// to start its flushing and Close to write the last batch.
func NewRegistry(opts Options) (*Registry, error) {
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
		e.nRecent = 0 // a query repeated after a reboot is not a retransmission
		clear(e.recent[:])
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
	client = client.Unmap().WithZone("")
	if client.IsLoopback() || r.isLocal(client) {
		return LocalID, "", Decision{}, "router"
	}
	mac, _ = r.MAC(client)
	confirmed := r.agrees(mac, client)
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	id = mac
	if mac == "" {
		id = ipID(client.String())
	} else {
		r.learnLocked(client, mac)
	}
	e := r.entryLocked(id, mac, now, confirmed)
	e.rec.noteIP(client.String())
	return id, mac, e.decision, e.rec.Name()
}

// Count records how the guard answered one query of device id; when q is
// given (no packet observer runs) the query also feeds the graders, if
// its address and the device's MAC agree with the neighbour table.
func (r *Registry) Count(id string, o Outcome, q *Observation) {
	now := r.opts.Now()
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
	r.learnLocked(ip, mac)
	e := r.entryLocked(mac, mac, now, agree)
	e.rec.noteIP(ip.String())
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
	r.learnLocked(ip, mac)
	e := r.entryLocked(mac, mac, now, agree)
	e.rec.noteIP(ip.String())
	e.rec.noteBypass(kind, dst.String(), now)
	r.onBypass(mac, kind, dst)
}

// onBypass tells Options.OnBypass of an attempt (r.mu held).
func (r *Registry) onBypass(mac, kind string, dst netip.AddrPort) {
	if r.opts.OnBypass != nil {
		r.opts.OnBypass(mac, kind, dst)
	}
}

// OrigDst returns where a redirected query from client with the given ID
// was first sent, if the observer saw it.
func (r *Registry) OrigDst(client netip.AddrPort, id uint16) (netip.AddrPort, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orig.get(client, id)
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

func (r *Registry) observeLocked(e *entry, o *Observation, now time.Time) {
	q := o.Query
	if q.EDNS.Present {
		e.rec.EDNSQueries++
	} else {
		e.rec.NoEDNSQueries++
	}
	// Retransmissions (same question and ID, from the same port or a
	// new one: some stubs retry on a fresh socket) are no evidence; the
	// sequential grading would otherwise read three tries of one query
	// as a constant ID.
	var h maphash.Hash
	h.SetSeed(r.seed)
	var name [dnswire.MaxName + 1]byte
	h.Write(q.LowerName(name[:0]))
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(q.ID>>8), byte(q.ID), byte(q.Type>>8), byte(q.Type)
	h.Write(b[:])
	sum := h.Sum64()
	t := now.UnixNano()
	for i := range e.recent {
		if e.recent[i] == sum && t-e.recentAt[i] < int64(30*time.Second) {
			e.recentAt[i] = t // a device retrying the same question for long is still retrying
			return
		}
	}
	slot := int(e.nRecent) % len(e.recent)
	e.recent[slot], e.recentAt[slot] = sum, t
	e.nRecent = uint8(slot + 1)

	boot := e.rec.Boots
	if e.ids == nil {
		e.ids = entropy.NewWithBudget(r.bitmaps)
	}
	e.ids.Observe(q.ID, boot)
	if port := o.port(); port != 0 {
		if e.ports == nil {
			e.ports = entropy.NewWithBudget(r.bitmaps)
		}
		e.ports.Observe(port, boot)
	}
	e.rec.Observed++
	e.ungraded++
	if e.ids.N() <= gradeAlways || e.ungraded >= gradeEvery { // the current evidence, not the lifetime count
		e.ungraded = 0
		r.gradeLocked(e, now)
	}
}

func result(e *entropy.Estimator) entropy.Result {
	if e == nil {
		return entropy.Result{Verdict: entropy.Insufficient, Reason: "no values seen"}
	}
	return e.Result()
}

// gradeLocked moves a device whose IDs or ports are weak to strict
// policy, and says so once; a device strict for strictReview is graded
// again on fresh evidence and leaves the strict class when that evidence
// is random.
func (r *Registry) gradeLocked(e *entry, now time.Time) {
	id, port := result(e.ids), result(e.ports)
	var why string
	switch {
	case id.Verdict == entropy.Weak && port.Verdict == entropy.Weak:
		why = fmt.Sprintf("transaction IDs weak (%s), source ports weak (%s)", id.Reason, port.Reason)
	case id.Verdict == entropy.Weak:
		why = fmt.Sprintf("transaction IDs weak (%s)", id.Reason)
	case port.Verdict == entropy.Weak:
		why = fmt.Sprintf("source ports weak (%s)", port.Reason)
	}
	rec := e.rec
	switch {
	case !rec.Strict:
		if why == "" {
			return
		}
		rec.Strict, rec.StrictReason, rec.StrictSince = true, why, now
		e.decision = r.cls.Decide(rec)
		r.log.Warn("device moved to the strict class", "device", rec.ID, "name", rec.Name(), "class", e.decision.Class, "why", why)
	case !rec.GradedSince.After(rec.StrictSince):
		// Strict on the evidence it was graded on: once that is old
		// enough, start collecting fresh evidence (the device stays
		// strict meanwhile).
		if now.Sub(rec.StrictSince) < strictReview {
			return
		}
		e.ids, e.ports = nil, nil
		rec.GradedSince = now
		r.log.Info("grading a strict device again on fresh evidence", "device", rec.ID, "strict_since", rec.StrictSince, "why", rec.StrictReason)
	case why != "":
		// Still weak: strict for another review period.
		rec.StrictReason, rec.StrictSince = why, now
		r.log.Debug("device still weak; stays strict", "device", rec.ID, "why", why)
	case id.Verdict == entropy.Random && (port.Verdict == entropy.Random || port.N == 0):
		rec.Strict, rec.StrictReason, rec.StrictSince = false, "", time.Time{}
		e.decision = r.cls.Decide(rec)
		r.log.Info("device graded random again; it leaves the strict class", "device", rec.ID, "name", rec.Name(), "class", e.decision.Class,
			"txid", id.Detail, "port", port.Detail)
	}
}

// SetClasses replaces the device classes (a config reload) and decides
// every device's policy again.
func (r *Registry) SetClasses(classes []policy.Class) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.Classes = classes
	r.cls = NewClassifier(classes)
	for _, e := range r.devices {
		e.decision = r.cls.Decide(e.rec)
	}
}

// ClassNames returns the configured classes' names, in order.
func (r *Registry) ClassNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(r.opts.Classes))
	for i, c := range r.opts.Classes {
		names[i] = c.Name
	}
	return names
}

// ErrUnknownDevice is returned for an override of a device never seen.
var ErrUnknownDevice = errors.New("device: no such device")

// SetOverride sets (nil: clears) the policy override of device id (a MAC
// or "ip:ADDR"). It takes effect on the device's next query; the exempt
// set follows at the next flush.
func (r *Registry) SetOverride(id string, o *Override) (Decision, error) {
	if hw, err := net.ParseMAC(id); err == nil {
		id = hw.String()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return Decision{}, fmt.Errorf("%w: %s", ErrUnknownDevice, id)
	}
	if o != nil && *o == (Override{}) {
		o = nil
	}
	e.rec.Override = o
	e.decision = r.cls.Decide(e.rec)
	now := r.opts.Now()
	switch {
	case o != nil && e.list != nil:
		// An operator's decision is never forgotten to make room: the
		// record leaves the lists (and is confirmed: it is kept).
		e.list.remove(e)
		e.confirmed = true
	case o == nil && e.list == nil:
		r.makeRoomLocked(&r.main, MaxDevices, now)
		r.main.pushFront(e)
	}
	r.markLocked(e)
	r.log.Info("device policy override", "device", id, "override", o, "class", e.decision.Class,
		"strict", e.decision.Strict, "exempt", e.decision.Exempt)
	return e.decision, nil
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

// Flush writes every changed record in one transaction.
func (r *Registry) Flush() error {
	r.mu.Lock()
	recs := make([]*Record, 0, len(r.dirty))
	for id := range r.dirty {
		if e, ok := r.devices[id]; ok && e.confirmed {
			recs = append(recs, r.recordLocked(e))
		}
	}
	clear(r.dirty)
	deleted := r.deleted
	r.deleted = nil
	r.mu.Unlock()
	if r.opts.Store == nil {
		return nil
	}
	if len(recs) == 0 && len(deleted) == 0 {
		return nil
	}
	if err := r.opts.Store.Save(recs, deleted); err != nil {
		r.FlushErrors.Add(1)
		// Keep them dirty for the next batch.
		r.mu.Lock()
		for _, rec := range recs {
			r.dirty[rec.ID] = true
		}
		r.deleted = append(r.deleted, deleted...)
		r.mu.Unlock()
		return err
	}
	r.Flushes.Add(1)
	return nil
}

// Persist copies the store's file to the persistent path.
func (r *Registry) Persist() error {
	if r.opts.Store == nil || r.opts.Persist == "" {
		return nil
	}
	return r.opts.Store.CopyTo(r.opts.Persist)
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
			if err := r.Flush(); err != nil {
				r.log.Error("writing device records", "err", err)
			}
			r.confirmPending()
			r.summarise(false)
			r.reloadLeases(leases)
			r.updateExempt()
		case <-persist:
			if err := r.Persist(); err != nil {
				r.log.Error("copying device state to persistent storage", "err", err)
			}
		}
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

// Close writes the last batch and the persistent copy.
func (r *Registry) Close() error {
	r.summarise(true)
	err := r.Flush()
	if perr := r.Persist(); perr != nil && err == nil {
		err = perr
	}
	return err
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

// updateExempt tells OnExempt the exempt MACs when they changed: those
// named in exempt classes and the known devices whose policy exempts them.
func (r *Registry) updateExempt() {
	if r.opts.OnExempt == nil {
		return
	}
	set := map[string]bool{}
	r.mu.Lock()
	classes := r.opts.Classes
	r.mu.Unlock()
	for _, c := range classes {
		if c.Exempt && !c.Strict {
			for _, m := range c.MACs {
				if hw, err := net.ParseMAC(m); err == nil && len(hw) == 6 {
					set[hw.String()] = true
				}
			}
		}
	}
	r.mu.Lock()
	for _, e := range r.devices {
		if e.rec.MAC == "" || !e.confirmed {
			continue
		}
		if e.decision.Exempt {
			set[e.rec.MAC] = true
		} else {
			delete(set, e.rec.MAC) // graded weak: intercepted whatever its class
		}
	}
	r.mu.Unlock()
	macs := make([]string, 0, len(set))
	for m := range set {
		macs = append(macs, m)
	}
	slices.Sort(macs)
	key := fmt.Sprint(macs)
	if key == r.exempt {
		return
	}
	r.exempt = key
	hws := make([]net.HardwareAddr, 0, len(macs))
	for _, m := range macs {
		hw, _ := net.ParseMAC(m)
		hws = append(hws, hw)
	}
	r.opts.OnExempt(hws)
}

// origRing remembers the original destination of the last redirected
// queries, bounded.
type origRing struct {
	keys [1024]origKey
	next int
	m    map[origKey]netip.AddrPort
}

type origKey struct {
	src netip.AddrPort
	id  uint16
}

func (o *origRing) put(src netip.AddrPort, id uint16, dst netip.AddrPort) {
	if o.m == nil {
		o.m = make(map[origKey]netip.AddrPort, len(o.keys))
	}
	k := origKey{netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port()), id}
	if _, ok := o.m[k]; !ok {
		if old := o.keys[o.next]; old.src.IsValid() {
			delete(o.m, old)
		}
		o.keys[o.next] = k
		o.next = (o.next + 1) % len(o.keys)
	}
	o.m[k] = dst
}

func (o *origRing) get(src netip.AddrPort, id uint16) (netip.AddrPort, bool) {
	d, ok := o.m[origKey{netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port()), id}]
	return d, ok
}
