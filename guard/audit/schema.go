package audit

import (
	"time"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
)

// Report is the audit of every device. Its JSON form is the --json output.
type Report struct {
	Files            []FileStat       `json:"files"`
	NetworkResolvers []string         `json:"network_resolvers"`
	Devices          []Device         `json:"devices"`
	Resolvers        []string         `json:"resolver_macs,omitempty"` // hosts that answered DNS
	Silent           []string         `json:"silent_macs,omitempty"`   // other hosts that sent no DNS
	DroppedDevices   int              `json:"dropped_devices,omitempty"`
	TCP              capture.TCPStats `json:"tcp"`
}

// Device is one device's DNS hygiene.
type Device struct {
	MAC       string   `json:"mac,omitempty"`
	IP        string   `json:"ip,omitempty"` // the device's key when there is no MAC
	IPs       []string `json:"ips,omitempty"`
	Queries   int      `json:"queries"`
	Responses int      `json:"responses"`
	Note      string   `json:"note,omitempty"`

	First    *time.Time `json:"first_seen,omitempty"`
	Last     *time.Time `json:"last_seen,omitempty"`
	ActiveS  float64    `json:"active_s"`           // time seen querying, summed over boots
	RatePerM float64    `json:"queries_per_minute"` // over the active time

	Intervals Intervals  `json:"intervals"`
	Names     NameStats  `json:"names"`
	Types     TypeStats  `json:"types"`
	TTL       TTLStats   `json:"ttl"`
	Sizes     SizeStats  `json:"sizes"`
	EDNS      EDNSStats  `json:"edns"`
	Timing    Timing     `json:"timing"`
	Encrypted Encrypted  `json:"encrypted"`
	Resolvers []Resolver `json:"resolvers"`
	Retries   Retries    `json:"retries"`

	TXID Field `json:"txid"`
	Port Field `json:"port"`

	TableI tablei.Row `json:"table_i"`

	Plot *Plot `json:"plot,omitempty"`
}

// Field is the randomness grade of one field, as the live guard's device
// table gives it.
type Field = entropy.Grade

type Intervals struct {
	// Buckets[i] counts intervals in [2^(i-1), 2^i) ms; Buckets[0] < 1 ms.
	Buckets  []int   `json:"log2_ms_buckets"`
	MedianS  float64 `json:"median_s"`
	P90S     float64 `json:"p90_s"`
	Measured int     `json:"n"`
}

type NameCount struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type NameStats struct {
	Distinct  int         `json:"distinct"`
	AtLeast   bool        `json:"distinct_is_lower_bound,omitempty"`
	Top       []NameCount `json:"top"`
	LenMin    int         `json:"length_min"`
	LenMax    int         `json:"length_max"`
	LenMean   float64     `json:"length_mean"`
	Periodic  []Periodic  `json:"periodic,omitempty"`
	TCPQuery  int         `json:"tcp_queries"`
	Truncated int         `json:"-"`
}

type Periodic struct {
	Name     string  `json:"name"`
	EveryS   float64 `json:"every_s"`
	Repeats  int     `json:"repeats"`
	Variance float64 `json:"cv"` // coefficient of variation of the interval
}

type TypeStats struct {
	Asked    map[string]int `json:"asked"`
	Received map[string]int `json:"received"`
	AShare   float64        `json:"a_share"`
	AAAA     float64        `json:"aaaa_share"`
	Rcodes   map[string]int `json:"rcodes,omitempty"`
}

type TTLStats struct {
	Answers   int     `json:"answers"`
	Min       uint32  `json:"min"`
	Max       uint32  `json:"max"`
	Mean      float64 `json:"mean"`
	Zero      int     `json:"zero"`
	Requeries int     `json:"requeries"`
	Early     int     `json:"early_requeries"` // re-asked before the TTL ran out
}

type SizeStats struct {
	QueryMin    int     `json:"query_min"`
	QueryMax    int     `json:"query_max"`
	QueryMean   float64 `json:"query_mean"`
	ResponseMin int     `json:"response_min"`
	ResponseMax int     `json:"response_max"`
	ResponseAvg float64 `json:"response_mean"`
}

type EDNSStats struct {
	Queries int            `json:"queries"`
	Share   float64        `json:"share"`
	Sizes   map[string]int `json:"udp_sizes,omitempty"`
	DO      int            `json:"do_bit"`
}

type Timing struct {
	MaxPerSecond int `json:"max_per_second"`
	Bursts       int `json:"bursts"` // seconds with at least 10 queries
}

type Encrypted struct {
	DoT     int            `json:"dot"`
	DoH     int            `json:"doh"`
	DoQ     int            `json:"doq"`
	DNSSEC  int            `json:"dnssec_do"`
	Targets map[string]int `json:"targets,omitempty"`
}

type Resolver struct {
	Addr    string `json:"addr"`
	Queries int    `json:"queries"`
	Own     bool   `json:"own_choice"` // not the network's resolver
	Public  bool   `json:"public"`
}

type Retries struct {
	Retransmissions int `json:"retransmissions"` // same question, ID and port
	Retries         int `json:"retries"`         // same question, new ID, unanswered, within 5 s
}

// Plot is what the HTML report draws.
type Plot struct {
	Scatter    []point `json:"scatter"`
	Rate       []int   `json:"rate"`
	RateWidthS float64 `json:"rate_width_s"`
}
