package device

import (
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// View is one row of the device table, as `dnsguard devices` prints it
// and its --json form carries it.
type View struct {
	ID           string    `json:"id"`
	MAC          string    `json:"mac,omitempty"`
	Name         string    `json:"name,omitempty"`
	IPs          []string  `json:"ips,omitempty"`
	Class        string    `json:"class,omitempty"`
	Strict       bool      `json:"strict"`
	StrictReason string    `json:"strict_reason,omitempty"`
	Exempt       bool      `json:"exempt"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	Boots        uint32    `json:"boots"`
	Queries      uint64    `json:"queries"`
	Refused      uint64    `json:"refused"`
	RateLimited  uint64    `json:"rate_limited"`
	BypassTotal  uint64    `json:"bypass_attempts"`
	Bypass       []Attempt `json:"bypass,omitempty"`
	EDNS         string    `json:"edns"`
	TXID         Grade     `json:"txid"`
	Port         Grade     `json:"port"`
	TableI       TableI    `json:"table1"`
	Override     *Override `json:"override,omitempty"`
	// Unconfirmed: neither the neighbour table nor a DHCP lease has
	// confirmed the device's MAC (a spoofed source MAC, or a device just
	// arrived); it is kept in a small pool apart and not stored.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// Grade is an estimator's verdict with the study's sigma figure beside
// it, the same form `dnsguard audit` reports.
type Grade = entropy.Grade

// TableI holds the columns of the study's Table I as the guard can grade
// them live: "x" vulnerable, "ok" not, "-" not gradable from live traffic
// (or not enough of it yet). The other columns need the adversarial
// resolver of `dnsguard lab`.
type TableI struct {
	SecureDNS      string `json:"secure_dns"`
	RandomPort     string `json:"random_port"`
	RandomID       string `json:"random_id"`
	QueryConsist   string `json:"query_consistency"`
	ModifiedRR     string `json:"modified_rr_resilience"`
	ForgedTTL      string `json:"forged_ttl_resilience"`
	DoSResilience  string `json:"dos_resilience"`
	HardCodedResol string `json:"hard_coded_resolver"` // not in Table I: the study's §IV finding, graded beside it
}

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

func tableI(r *Record, v View) TableI {
	t := TableI{QueryConsist: "-", ModifiedRR: "-", ForgedTTL: "-", DoSResilience: "-", HardCodedResol: "-"}
	// Secure DNS: any cleartext query on port 53 is "x".
	switch {
	case r.Queries > 0 || r.Observed > 0:
		t.SecureDNS = "x"
	default:
		t.SecureDNS = "-"
	}
	t.RandomPort = v.Port.Verdict.Mark("-")
	t.RandomID = v.TXID.Verdict.Mark("-")
	// DoS resilience: a device the limits had to cut is storming.
	if r.RateLimited > 0 {
		t.DoSResilience = "x"
	}
	for _, a := range r.Bypass {
		if a.Kind == "do53" {
			t.HardCodedResol = "x"
		}
	}
	if t.HardCodedResol == "-" && r.Observed > 0 {
		t.HardCodedResol = "ok"
	}
	return t
}
