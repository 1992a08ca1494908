package device

import (
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
)

// View is one row of the device table, as `dnsguard devices` prints it
// and its --json form carries it.
type View struct {
	ID           string     `json:"id"`
	MAC          string     `json:"mac,omitempty"`
	Name         string     `json:"name,omitempty"`
	IPs          []string   `json:"ips,omitempty"`
	Class        string     `json:"class,omitempty"`
	Strict       bool       `json:"strict"`
	StrictReason string     `json:"strict_reason,omitempty"`
	Exempt       bool       `json:"exempt"`
	FirstSeen    time.Time  `json:"first_seen"`
	LastSeen     time.Time  `json:"last_seen"`
	Boots        uint32     `json:"boots"`
	Queries      uint64     `json:"queries"`
	Refused      uint64     `json:"refused"`
	RateLimited  uint64     `json:"rate_limited"`
	BypassTotal  uint64     `json:"bypass_attempts"`
	Bypass       []Attempt  `json:"bypass,omitempty"`
	EDNS         string     `json:"edns"`
	TXID         Grade      `json:"txid"`
	Port         Grade      `json:"port"`
	TableI       tablei.Row `json:"table1"`
	Override     *Override  `json:"override,omitempty"`
	// Unconfirmed: neither the neighbour table nor a DHCP lease has
	// confirmed the device's MAC (a spoofed source MAC, or a device just
	// arrived); it is kept in a small pool apart and not stored.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// Grade is an estimator's verdict with the study's sigma figure beside
// it, the same form `dnsguard audit` reports.
type Grade = entropy.Grade

// ViewOf builds the table row of a record under classifier c (nil: no
// class information).
func ViewOf(r *Record, c *Classifier) View {
	v := View{
		ID: r.ID, MAC: r.MAC, Name: r.Name(), IPs: r.IPs,
		Strict: r.Strict, StrictReason: r.StrictReason,
		FirstSeen: r.FirstSeen, LastSeen: r.LastSeen, Boots: r.Boots,
		Queries: r.Queries, Refused: r.Refused, RateLimited: r.RateLimited,
		BypassTotal: r.BypassTotal(), Bypass: r.Bypass, EDNS: r.EDNS(),
		TXID: grade(r.IDState), Port: grade(r.PortState), Override: r.Override,
	}
	if c != nil {
		d := c.Decide(r)
		v.Class, v.Strict, v.Exempt = d.Class, d.Strict, d.Exempt
	}
	v.TableI = tableI(r, v)
	return v
}

func grade(state []byte) Grade {
	e := entropy.New()
	if len(state) > 0 {
		if err := e.UnmarshalBinary(state); err != nil {
			return Grade{Verdict: entropy.Insufficient, Detail: "state unreadable: " + err.Error()}
		}
	}
	return e.Result().Grade()
}

// tableI grades the Table I columns live traffic shows (tablei.Passive:
// the rest need the adversarial resolver of `dnsguard lab`), and beside
// them whether the device uses a hard-coded resolver.
func tableI(r *Record, v View) tablei.Row {
	t := tablei.Passive()
	// Every query the guard serves or observes went over port 53.
	t.SecureDNS = tablei.SecureDNS(r.Queries > 0 || r.Observed > 0, false)
	t.RandomPort = tablei.Randomness(v.Port.Verdict)
	t.RandomID = tablei.Randomness(v.TXID.Verdict)
	// Query consistency needs the answers' TTLs beside the repeats: the
	// live guard does not keep them per device.
	t.QueryConsistency = tablei.NotGraded
	// DoS resilience: a device the limits had to cut is storming.
	if r.RateLimited > 0 {
		t.DoS = tablei.Vulnerable
	}
	t.HardCodedResolver = tablei.Unknown
	if r.Observed > 0 {
		t.HardCodedResolver = tablei.Resilient
	}
	for _, a := range r.Bypass {
		if a.Kind == "do53" {
			t.HardCodedResolver = tablei.Vulnerable
		}
	}
	return t
}
