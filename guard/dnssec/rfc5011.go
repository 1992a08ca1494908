package dnssec

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// HoldDown is RFC 5011 §2.4.1's add hold-down time: a new key signing
// the anchor zone's DNSKEY RRset becomes a trust anchor only after it has
// been seen, validly, for this long.
const HoldDown = 30 * 24 * time.Hour

// Key states of RFC 5011 §4.
const (
	stateAddPend = "addpend"
	stateValid   = "valid"
	stateRevoked = "revoked"
)

// trackedKey is one key-signing key of an anchor zone.
type trackedKey struct {
	Key       string    `json:"key"` // "FLAGS PROTOCOL ALGORITHM KEY", REVOKE bit clear
	State     string    `json:"state"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Tracker follows the key-signing keys of the trust anchor zones as RFC
// 5011 says (automated rollover): a new SEP key in a DNSKEY RRset that
// validated with the current anchors is pending until it has been seen for
// HoldDown, then trusted; a key that signs the RRset with its REVOKE bit
// set is revoked and trusted no more (nor is a DS anchor that names it).
// Its state is a small JSON document the caller keeps (Marshal, and the
// save function called on every change).
type Tracker struct {
	mu    sync.Mutex
	zones map[string][]*trackedKey
	save  func([]byte)
}

// NewTracker reads a tracker's state (empty: none); save (may be nil) is
// called with the new state whenever it changes.
func NewTracker(state []byte, save func([]byte)) (*Tracker, error) {
	t := &Tracker{zones: map[string][]*trackedKey{}, save: save}
	if len(strings.TrimSpace(string(state))) > 0 {
		if err := json.Unmarshal(state, &t.zones); err != nil {
			return nil, fmt.Errorf("dnssec: trust anchor state: %w", err)
		}
	}
	for z, keys := range t.zones {
		for _, k := range keys {
			if fromID(z, k.Key) == nil {
				return nil, fmt.Errorf("dnssec: trust anchor state: zone %s: bad key %q", z, k.Key)
			}
		}
	}
	return t, nil
}

// fromID rebuilds a tracked key of zone from its identity (no zone-file
// parser: dns.NewRR would link miekg's parser for every type).
func fromID(zone, id string) *dns.DNSKEY {
	f := strings.Fields(id)
	if len(f) != 4 {
		return nil
	}
	flags, err1 := strconv.ParseUint(f[0], 10, 16)
	proto, err2 := strconv.ParseUint(f[1], 10, 8)
	alg, err3 := strconv.ParseUint(f[2], 10, 8)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil
	}
	if _, err := base64.StdEncoding.DecodeString(f[3]); err != nil {
		return nil
	}
	return &dns.DNSKEY{Hdr: dns.RR_Header{Name: canon(zone), Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET},
		Flags: uint16(flags), Protocol: uint8(proto), Algorithm: uint8(alg), PublicKey: f[3]}
}

// Marshal returns the tracker's state.
func (t *Tracker) Marshal() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.marshal()
}

func (t *Tracker) marshal() []byte {
	b, _ := json.MarshalIndent(t.zones, "", "  ")
	return b
}

// keyID is a key's identity: its DNSKEY with the REVOKE bit clear.
func keyID(k *dns.DNSKEY) string {
	return fmt.Sprintf("%d %d %d %s", k.Flags&^dns.REVOKE, k.Protocol, k.Algorithm, k.PublicKey)
}

// Trusted returns the keys of zone that completed their hold-down.
func (t *Tracker) Trusted(zone string) []*dns.DNSKEY {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*dns.DNSKEY
	for _, k := range t.zones[canon(zone)] {
		if k.State == stateValid {
			if key := fromID(zone, k.Key); key != nil {
				out = append(out, key)
			}
		}
	}
	return out
}

// Revoked reports whether key (REVOKE bit ignored) is revoked in zone.
func (t *Tracker) Revoked(zone string, key *dns.DNSKEY) bool {
	if t == nil {
		return false
	}
	id := keyID(key)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range t.zones[canon(zone)] {
		if k.Key == id && k.State == stateRevoked {
			return true
		}
	}
	return false
}

// observe records zone's DNSKEY RRset s, which validated with the
// current anchors at now: new SEP keys start their hold-down, keys past
// it become trusted, keys that sign s with their REVOKE bit are revoked.
//
// anchored are the keys the current anchors made trusted (they are valid
// from the start).
func (t *Tracker) observe(zone string, s *rrset, now time.Time, checkTime bool, anchored []*dns.DNSKEY) {
	if t == nil {
		return
	}
	zone = canon(zone)
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	find := func(id string) *trackedKey {
		for _, k := range t.zones[zone] {
			if k.Key == id {
				return k
			}
		}
		return nil
	}
	for _, rr := range s.rrs {
		k := rr.(*dns.DNSKEY)
		if k.Flags&dns.SEP == 0 || k.Flags&dns.ZONE == 0 || k.Protocol != 3 {
			continue
		}
		id := keyID(k)
		tk := find(id)
		if k.Flags&dns.REVOKE != 0 {
			// §2.1: revoked only if the revoked key itself signs the set.
			if tk != nil && tk.State == stateRevoked || !selfSigned(k, s, now, checkTime) {
				continue
			}
			if tk == nil {
				tk = &trackedKey{Key: id, FirstSeen: now}
				t.zones[zone] = append(t.zones[zone], tk)
			}
			tk.State, tk.LastSeen, changed = stateRevoked, now, true
			continue
		}
		switch {
		case tk == nil:
			state := stateAddPend
			for _, a := range anchored {
				if keyID(a) == id {
					state = stateValid
				}
			}
			t.zones[zone] = append(t.zones[zone], &trackedKey{Key: id, State: state, FirstSeen: now, LastSeen: now})
			changed = true
		case tk.State == stateAddPend && now.Sub(tk.FirstSeen) >= HoldDown:
			tk.State, tk.LastSeen, changed = stateValid, now, true
		case tk.State != stateRevoked && now.Sub(tk.LastSeen) > 24*time.Hour:
			tk.LastSeen, changed = now, true // kept fresh, saved at most daily
		}
	}
	// §4: a pending key that disappears before its hold-down ends starts
	// over if it comes back.
	var kept []*trackedKey
	for _, k := range t.zones[zone] {
		if k.State == stateAddPend && !inSet(k.Key, s) {
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	t.zones[zone] = kept
	sort.Slice(kept, func(i, j int) bool { return kept[i].Key < kept[j].Key })
	if changed && t.save != nil {
		t.save(t.marshal())
	}
}

func inSet(id string, s *rrset) bool {
	for _, rr := range s.rrs {
		if keyID(rr.(*dns.DNSKEY)) == id {
			return true
		}
	}
	return false
}

// selfSigned reports whether k signs s (a revoked key's tag includes its
// REVOKE bit).
func selfSigned(k *dns.DNSKEY, s *rrset, now time.Time, checkTime bool) bool {
	for _, sig := range s.sigs {
		if sig.KeyTag == k.KeyTag() && sig.Algorithm == k.Algorithm && (!checkTime || sig.ValidityPeriod(now)) && sig.Verify(k, s.rrs) == nil {
			return true
		}
	}
	return false
}
