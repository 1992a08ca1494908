package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/tablei"
)

// Bounds on what the recorder keeps, so a flood of clients or names
// cannot grow the lab without limit.
const (
	maxClients        = 1024
	maxNamesPerClient = 4096
	maxSamples        = 4096 // IDs and ports kept per client
)

// Event is one query the lab received and what it did with it.
type Event struct {
	At         time.Time
	Client     netip.AddrPort
	Transport  string // udp, tcp, dot, doh
	ID         uint16
	Name       string
	Type       uint16
	EDNS       bool
	UDPSize    uint16
	Experiment string
	Answered   bool   // at least one response was sent
	TTL        uint32 // smallest answer TTL sent (0 if none)
	HasTTL     bool   // the answer carried records
}

// Snapshot is everything recorded, as written to the record file.
type Snapshot struct {
	Started  time.Time       `json:"started"`
	Written  time.Time       `json:"written"`
	Schedule string          `json:"schedule"`
	Phases   []PhaseRun      `json:"phases"`
	Clients  []*ClientRecord `json:"clients"`
	Dropped  int             `json:"clients_not_recorded,omitempty"`
}

// PhaseRun is one played phase.
type PhaseRun struct {
	Experiment string    `json:"experiment"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"` // the snapshot time for the phase still playing
}

// ClientRecord is one client's behaviour (keyed by address, not port:
// a device's ports vary).
type ClientRecord struct {
	Addr        string                `json:"addr"`
	Transports  map[string]int        `json:"transports"`
	EDNS        int                   `json:"edns_queries"`
	MaxUDPSize  uint16                `json:"max_udp_size,omitempty"`
	IDs         []uint16              `json:"ids"`
	Ports       []uint16              `json:"ports"`
	Experiments map[string]*ExpRecord `json:"experiments"`
}

// ExpRecord is a client's behaviour during one experiment.
type ExpRecord struct {
	Queries       int     `json:"queries"`
	Names         int     `json:"names"`              // distinct (name, type) asked
	Repeats       int     `json:"repeats"`            // queries for a (name, type) already asked in this experiment
	EarlyRepeats  int     `json:"early_repeats"`      // repeats more than a second before the TTL last given for it expired
	AfterFailures int     `json:"repeats_after_fail"` // repeats after a query that got no answer or no records
	MaxPerName    int     `json:"max_per_name"`
	IntervalSum   float64 `json:"interval_sum_s"` // seconds between repeats of one name
	Intervals     int     `json:"intervals"`
	MinInterval   float64 `json:"min_interval_s"`
	Used          int     `json:"used_forged"` // connections to the lab's probe (a forged address put to use)
	Untracked     int     `json:"untracked,omitempty"`
}

type nameKey struct {
	name string
	typ  uint16
}

type nameState struct {
	last       time.Time
	answerAt   time.Time
	ttl        uint32
	hasTTL     bool
	failed     bool
	experiment string
	count      int
}

type client struct {
	rec   *ClientRecord
	names map[nameKey]*nameState
}

// Recorder accumulates events; it is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	started  time.Time
	schedule string
	phases   []PhaseRun
	clients  map[netip.Addr]*client
	dropped  int
}

// NewRecorder starts a record.
func NewRecorder(started time.Time, schedule string) *Recorder {
	return &Recorder{started: started, schedule: schedule, clients: map[netip.Addr]*client{}}
}

// Phase notes that experiment started playing at t.
func (r *Recorder) Phase(experiment string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.phases); n > 0 {
		if r.phases[n-1].Experiment == experiment {
			return
		}
		r.phases[n-1].End = t
	}
	r.phases = append(r.phases, PhaseRun{Experiment: experiment, Start: t})
}

func (r *Recorder) client(a netip.Addr) *client {
	c := r.clients[a]
	if c == nil {
		if len(r.clients) >= maxClients {
			r.dropped++
			return nil
		}
		c = &client{
			rec:   &ClientRecord{Addr: a.String(), Transports: map[string]int{}, Experiments: map[string]*ExpRecord{}},
			names: map[nameKey]*nameState{},
		}
		r.clients[a] = c
	}
	return c
}

func (c *client) exp(name string) *ExpRecord {
	e := c.rec.Experiments[name]
	if e == nil {
		e = &ExpRecord{}
		c.rec.Experiments[name] = e
	}
	return e
}

// Record adds one query.
func (r *Recorder) Record(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.client(ev.Client.Addr().Unmap())
	if c == nil {
		return
	}
	rec := c.rec
	rec.Transports[ev.Transport]++
	if ev.EDNS {
		rec.EDNS++
		rec.MaxUDPSize = max(rec.MaxUDPSize, ev.UDPSize)
	}
	rec.IDs = appendBounded(rec.IDs, ev.ID)
	if ev.Transport == "udp" {
		rec.Ports = appendBounded(rec.Ports, ev.Client.Port())
	}
	e := c.exp(ev.Experiment)
	e.Queries++
	k := nameKey{strings.ToLower(ev.Name), ev.Type}
	st := c.names[k]
	if st == nil {
		if len(c.names) >= maxNamesPerClient {
			e.Untracked++
			return
		}
		st = &nameState{}
		c.names[k] = st
	}
	if st.experiment != ev.Experiment || st.count == 0 {
		st.experiment, st.count = ev.Experiment, 0
		e.Names++
	} else {
		e.Repeats++
		if st.hasTTL && tablei.Early(ev.At.Sub(st.answerAt), st.ttl) {
			e.EarlyRepeats++
		}
		if st.failed {
			e.AfterFailures++
		}
		iv := ev.At.Sub(st.last).Seconds()
		if e.Intervals == 0 || iv < e.MinInterval {
			e.MinInterval = iv
		}
		e.IntervalSum += iv
		e.Intervals++
	}
	st.count++
	e.MaxPerName = max(e.MaxPerName, st.count)
	st.last = ev.At
	st.failed = !ev.Answered || !ev.HasTTL
	if ev.Answered {
		st.answerAt, st.ttl, st.hasTTL = ev.At, ev.TTL, ev.HasTTL
	}
}

// Use records a connection from a to the lab's probe: the client went on
// to use an address the lab gave it.
func (r *Recorder) Use(a netip.Addr, experiment string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.client(a.Unmap()); c != nil {
		c.exp(experiment).Used++
	}
}

func appendBounded(s []uint16, v uint16) []uint16 {
	if len(s) >= maxSamples {
		copy(s, s[1:])
		s = s[:len(s)-1]
	}
	return append(s, v)
}

// Snapshot returns a deep copy of the record as of now.
func (r *Recorder) Snapshot(now time.Time) *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &Snapshot{Started: r.started, Written: now, Schedule: r.schedule, Dropped: r.dropped}
	s.Phases = append(s.Phases, r.phases...)
	if n := len(s.Phases); n > 0 && s.Phases[n-1].End.IsZero() {
		s.Phases[n-1].End = now
	}
	for _, c := range r.clients {
		b, _ := json.Marshal(c.rec) // a deep copy through the file format
		var cp ClientRecord
		if err := json.Unmarshal(b, &cp); err == nil {
			s.Clients = append(s.Clients, &cp)
		}
	}
	sort.Slice(s.Clients, func(i, j int) bool { return s.Clients[i].Addr < s.Clients[j].Addr })
	return s
}

// Duration is how long experiment played in total.
func (s *Snapshot) Duration(experiment string) time.Duration {
	var d time.Duration
	for _, p := range s.Phases {
		if p.Experiment == experiment {
			d += p.End.Sub(p.Start)
		}
	}
	return d
}

// Client finds a client's record by address.
func (s *Snapshot) Client(addr string) *ClientRecord {
	for _, c := range s.Clients {
		if c.Addr == addr {
			return c
		}
	}
	return nil
}

// WriteFile writes the snapshot as JSON, atomically (a reader never sees
// half a file).
func (s *Snapshot) WriteFile(path string) error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return fmt.Errorf("lab: record: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lab-record-*")
	if err != nil {
		return fmt.Errorf("lab: record: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("lab: record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("lab: record: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("lab: record: %w", err)
	}
	return nil
}

// ReadSnapshot reads a record file.
func ReadSnapshot(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lab: record: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab: record %s: %w", path, err)
	}
	return &s, nil
}
