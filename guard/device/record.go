// Package device knows the LAN's devices: who a query came from (the
// kernel's neighbour table, DHCP leases), what each device did (queries,
// refused and rate-limited answers, attempts to bypass the guard, the
// randomness of its transaction IDs and source ports, EDNS use), which
// policy class it belongs to, and keeps all of that in a bbolt file
// written in batches.
package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// SchemaVersion is the version of the stored records; a file with another
// version is moved aside, not misread.
const SchemaVersion = 1

// Bounds on what one record keeps, so a misbehaving device cannot grow it.
const (
	maxIPs     = 8
	maxNames   = 4
	maxTargets = 32
)

// Record is what the guard knows about one device. It is stored as JSON.
type Record struct {
	ID        string    `json:"id"` // MAC, or "ip:ADDR" while the MAC is unknown
	MAC       string    `json:"mac,omitempty"`
	Names     []string  `json:"names,omitempty"` // most recent first
	IPs       []string  `json:"ips,omitempty"`   // most recent first
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Boots     uint32    `json:"boots"` // times the device was seen to leave and come back

	Queries     uint64    `json:"queries"`      // queries the guard answered
	Refused     uint64    `json:"refused"`      // answers refused (forged, blocked, ...)
	RateLimited uint64    `json:"rate_limited"` // queries cut by the limits
	Bypass      []Attempt `json:"bypass,omitempty"`

	EDNSQueries   uint64 `json:"edns_queries"`    // observed queries with an OPT record
	NoEDNSQueries uint64 `json:"no_edns_queries"` // and without

	IDState   []byte `json:"id_state,omitempty"`   // entropy.Estimator, binary
	PortState []byte `json:"port_state,omitempty"` // entropy.Estimator, binary
	Observed  uint64 `json:"observed"`             // queries fed to the estimators

	Strict       bool      `json:"strict,omitempty"` // moved to the strict class by the guard
	StrictReason string    `json:"strict_reason,omitempty"`
	StrictSince  time.Time `json:"strict_since,omitzero"`
	// GradedSince is when the estimators' evidence starts (a strict
	// device is graded again on fresh evidence; see strictReview).
	GradedSince time.Time `json:"graded_since,omitzero"`

	Override *Override `json:"override,omitempty"`
}

// Attempt counts a device's tries to resolve around the guard.
type Attempt struct {
	Kind   string    `json:"kind"`   // do53 (hard-coded resolver), dot, doq, doh
	Target string    `json:"target"` // address:port it tried
	Count  uint64    `json:"count"`
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
}

// Override is a per-device policy decision that beats the class rules.
type Override struct {
	Class  string `json:"class,omitempty"`
	Strict *bool  `json:"strict,omitempty"`
	Exempt *bool  `json:"exempt,omitempty"`
}

// storedRecord is the on-disk form: the record with its schema version.
type storedRecord struct {
	V int `json:"v"`
	Record
}

// EncodeRecord returns the stored form of r.
func EncodeRecord(r *Record) ([]byte, error) {
	b, err := json.Marshal(storedRecord{V: SchemaVersion, Record: *r})
	if err != nil {
		return nil, fmt.Errorf("device: encode %s: %w", r.ID, err)
	}
	return b, nil
}

// ErrSchema is returned for a record written by another schema version.
var ErrSchema = errors.New("device: record schema version unknown")

// DecodeRecord reads a stored record and checks what the guard relies on.
func DecodeRecord(b []byte) (*Record, error) {
	var s storedRecord
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("device: decode record: %w", err)
	}
	if s.V != SchemaVersion {
		return nil, fmt.Errorf("%w: %d", ErrSchema, s.V)
	}
	r := &s.Record
	if r.ID == "" {
		return nil, errors.New("device: record without an ID")
	}
	if r.MAC != "" {
		if _, err := net.ParseMAC(r.MAC); err != nil {
			return nil, fmt.Errorf("device: record %q: %w", r.ID, err)
		}
	}
	if len(r.IPs) > maxIPs || len(r.Names) > maxNames || len(r.Bypass) > maxTargets {
		return nil, fmt.Errorf("device: record %q over its bounds", r.ID)
	}
	return r, nil
}

// noteIP puts ip first in the record's address list.
func (r *Record) noteIP(ip string) {
	r.IPs = mostRecent(r.IPs, ip, maxIPs)
}

// noteAddr is noteIP for an address, formatted (allocated) only when it
// is not already the first: a device nearly always asks from the same one.
func (r *Record) noteAddr(a netip.Addr) {
	if len(r.IPs) == 0 || !sameIP(r.IPs[0], a) {
		r.noteIP(a.String())
	}
}

// noteName puts name first in the record's name list.
func (r *Record) noteName(name string) {
	if name != "" {
		r.Names = mostRecent(r.Names, name, maxNames)
	}
}

func mostRecent(list []string, v string, max int) []string {
	if len(list) > 0 && list[0] == v {
		return list
	}
	list = slices.DeleteFunc(list, func(s string) bool { return s == v })
	list = slices.Insert(list, 0, v)
	if len(list) > max {
		list = list[:max]
	}
	return list
}

// noteBypass counts an attempt to reach target by kind.
func (r *Record) noteBypass(kind, target string, now time.Time) {
	r.addBypass(Attempt{Kind: kind, Target: target, Count: 1, First: now, Last: now})
}

// addBypass adds the attempts in n to the record's.
func (r *Record) addBypass(n Attempt) {
	for i := range r.Bypass {
		a := &r.Bypass[i]
		if a.Kind == n.Kind && a.Target == n.Target {
			a.Count += n.Count
			if n.Last.After(a.Last) {
				a.Last = n.Last
			}
			if n.First.Before(a.First) {
				a.First = n.First
			}
			return
		}
	}
	if len(r.Bypass) >= maxTargets {
		// Forget the target least recently tried.
		oldest := 0
		for i, a := range r.Bypass {
			if a.Last.Before(r.Bypass[oldest].Last) {
				oldest = i
			}
		}
		r.Bypass = slices.Delete(r.Bypass, oldest, oldest+1)
	}
	r.Bypass = append(r.Bypass, n)
}

// BypassTotal is the number of bypass attempts of every kind.
func (r *Record) BypassTotal() uint64 {
	var n uint64
	for _, a := range r.Bypass {
		n += a.Count
	}
	return n
}

// Name is the device's most recent name, or "".
func (r *Record) Name() string {
	if len(r.Names) == 0 {
		return ""
	}
	return r.Names[0]
}

// EDNS says whether the device uses EDNS(0): yes, no, mixed or unknown.
func (r *Record) EDNS() string {
	switch {
	case r.EDNSQueries == 0 && r.NoEDNSQueries == 0:
		return "unknown"
	case r.NoEDNSQueries == 0:
		return "yes"
	case r.EDNSQueries == 0:
		return "no"
	}
	return "mixed"
}

func (r *Record) clone() *Record {
	c := *r
	c.Names = slices.Clone(r.Names)
	c.IPs = slices.Clone(r.IPs)
	c.Bypass = slices.Clone(r.Bypass)
	c.IDState = slices.Clone(r.IDState)
	c.PortState = slices.Clone(r.PortState)
	if r.Override != nil {
		o := *r.Override
		c.Override = &o
	}
	return &c
}

// ipID is the ID of a device known only by its address.
func ipID(ip string) string { return "ip:" + ip }

func isIPID(id string) bool { return strings.HasPrefix(id, "ip:") }
