package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/miekg/dns"
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

func field(r entropy.Result) Field { return r.Grade() }

func silentDevice(key string, ip netip.Addr) Device {
	d := Device{Note: "no DNS queries seen from this device"}
	if strings.Contains(key, ":") && len(key) == 17 {
		d.MAC = key
	} else {
		d.IP = key
	}
	if ip.IsValid() {
		d.IPs = []string{ip.String()}
	}
	none := Field{Verdict: entropy.Insufficient, Reason: "no DNS seen", Detail: "the device sent no DNS queries"}
	d.TXID, d.Port = none, none
	d.TableI = tablei.Passive()
	d.Types = TypeStats{Asked: map[string]int{}, Received: map[string]int{}}
	d.Resolvers = []Resolver{}
	d.Names.Top = []NameCount{}
	return d
}

func (d *device) report(network []netip.Addr) Device {
	out := Device{Queries: d.queries, Responses: d.responses}
	if d.hasMAC {
		out.MAC = d.key
	} else {
		out.IP = d.key
	}
	for _, ip := range d.ips {
		out.IPs = append(out.IPs, ip.String())
	}
	if d.queries == 0 {
		out.Note = "no DNS queries seen from this device"
	}
	if d.first != 0 {
		f, l := time.Unix(0, d.first).UTC(), time.Unix(0, d.last).UTC()
		out.First, out.Last = &f, &l
		if span := float64(d.activeNs()) / 60e9; span > 0 {
			out.RatePerM = round(float64(d.queries)/span, 3)
		}
		out.ActiveS = round(float64(d.activeNs())/1e9, 1)
	}

	// Intervals.
	n := 0
	last := 0
	for i, c := range d.intervals {
		n += c
		if c > 0 {
			last = i
		}
	}
	out.Intervals = Intervals{Buckets: append([]int(nil), d.intervals[:last+1]...), Measured: n}
	out.Intervals.MedianS = round(d.quantile(0.5), 3)
	out.Intervals.P90S = round(d.quantile(0.9), 3)

	// Names.
	out.Names = NameStats{Distinct: len(d.names), AtLeast: d.namesOverflow, TCPQuery: d.tcpQueries}
	if d.nameLen.n > 0 {
		out.Names.LenMin, out.Names.LenMax = d.nameLen.min, d.nameLen.max
		out.Names.LenMean = round(d.nameLen.sum/float64(d.nameLen.n), 1)
	}
	for i := 0; i < d.top.n; i++ {
		name, c := d.top.names[i], d.top.counts[i]
		if exact, ok := d.names[name]; ok {
			c = exact
		}
		out.Names.Top = append(out.Names.Top, NameCount{name, c})
	}
	sort.Slice(out.Names.Top, func(i, j int) bool {
		a, b := out.Names.Top[i], out.Names.Top[j]
		return a.Count > b.Count || a.Count == b.Count && a.Name < b.Name
	})
	if len(out.Names.Top) > 10 {
		out.Names.Top = out.Names.Top[:10]
	}
	if out.Names.Top == nil {
		out.Names.Top = []NameCount{}
	}
	out.Names.Periodic = d.periodic()

	// Types.
	out.Types = TypeStats{Asked: map[string]int{}, Received: map[string]int{}}
	for t, c := range d.qtypes {
		out.Types.Asked[dns.Type(t).String()] = c
	}
	for t, c := range d.rtypes {
		out.Types.Received[dns.Type(t).String()] = c
	}
	if d.queries > 0 {
		out.Types.AShare = round(float64(d.qtypes[1])/float64(d.queries), 3)
		out.Types.AAAA = round(float64(d.qtypes[28])/float64(d.queries), 3)
	}
	if len(d.rcodes) > 0 {
		out.Types.Rcodes = map[string]int{}
		for rc, c := range d.rcodes {
			out.Types.Rcodes[rcodeName(rc)] = c
		}
	}

	out.TTL = TTLStats{Answers: d.ttls, Min: d.ttlMin, Max: d.ttlMax, Zero: d.ttlZero, Requeries: d.requeries, Early: d.early}
	if d.ttls > 0 {
		out.TTL.Mean = round(d.ttlSum/float64(d.ttls), 1)
	}
	if d.qsize.n > 0 {
		out.Sizes.QueryMin, out.Sizes.QueryMax = d.qsize.min, d.qsize.max
		out.Sizes.QueryMean = round(d.qsize.sum/float64(d.qsize.n), 1)
	}
	if d.rsize.n > 0 {
		out.Sizes.ResponseMin, out.Sizes.ResponseMax = d.rsize.min, d.rsize.max
		out.Sizes.ResponseAvg = round(d.rsize.sum/float64(d.rsize.n), 1)
	}
	out.EDNS = EDNSStats{Queries: d.edns, DO: d.do}
	if d.queries > 0 {
		out.EDNS.Share = round(float64(d.edns)/float64(d.queries), 3)
	}
	if len(d.ednsSizes) > 0 {
		out.EDNS.Sizes = map[string]int{}
		for s, c := range d.ednsSizes {
			out.EDNS.Sizes[strconv.Itoa(int(s))] = c
		}
	}
	out.Timing = Timing{MaxPerSecond: d.maxSec, Bursts: d.bursts}
	out.Encrypted = Encrypted{DoT: d.dot, DoH: d.doh, DoQ: d.doq, DNSSEC: d.do}
	if len(d.encTargets) > 0 {
		out.Encrypted.Targets = d.encTargets
	}

	isNetwork := func(ip netip.Addr) bool {
		for _, n := range network {
			if n == ip {
				return true
			}
		}
		return false
	}
	out.Resolvers = []Resolver{}
	for ip, c := range d.resolvers {
		out.Resolvers = append(out.Resolvers, Resolver{Addr: ip.String(), Queries: c, Own: len(network) > 0 && !isNetwork(ip), Public: isPublicResolver(ip)})
	}
	sort.Slice(out.Resolvers, func(i, j int) bool { return out.Resolvers[i].Queries > out.Resolvers[j].Queries })
	out.Retries = Retries{Retransmissions: d.retransmissions, Retries: d.retries}

	out.TXID, out.Port = field(d.txid.Result()), field(d.port.Result())
	if d.queries == 0 {
		none := Field{Verdict: entropy.Insufficient, Reason: "no DNS seen", Detail: "the device sent no DNS queries"}
		out.TXID, out.Port = none, none
	}
	out.TableI = d.tableI(out)
	out.Plot = &Plot{Scatter: d.scatter, Rate: d.rate, RateWidthS: float64(d.rateWidth) / 1e9}
	if out.Plot.Scatter == nil {
		out.Plot.Scatter = []point{}
	}
	return out
}

func (d *device) tableI(out Device) tablei.Row {
	t := tablei.Passive()
	t.SecureDNS = tablei.SecureDNS(d.queries > 0, d.dot+d.doh+d.doq > 0)
	t.RandomPort, t.RandomID = tablei.Randomness(out.Port.Verdict), tablei.Randomness(out.TXID.Verdict)
	t.QueryConsistency = tablei.QueryConsistency(d.early, d.requeries)
	return t
}

// quantile of the inter-query intervals, in seconds (bucket midpoints).
func (d *device) quantile(q float64) float64 {
	n := 0
	for _, c := range d.intervals {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := q * float64(n)
	acc := 0
	for i, c := range d.intervals {
		acc += c
		if float64(acc) >= want {
			if i == 0 {
				return 0.0005
			}
			lo := float64(int64(1) << (i - 1))
			return lo * 1.5 / 1000
		}
	}
	return 0
}

// periodic lists names re-asked at a steady interval.
func (d *device) periodic() []Periodic {
	var out []Periodic
	for _, gen := range []map[qkey]*question{d.cur, d.prev} {
		for k, q := range gen {
			if q.n < 4 || q.mean <= 0 {
				continue
			}
			cv := 0.0
			if q.n > 1 {
				cv = sqrt(q.m2/float64(q.n-1)) / q.mean
			}
			if cv < 0.1 {
				out = append(out, Periodic{Name: k.name + " " + dns.Type(k.qtype).String(), EveryS: round(q.mean, 1), Repeats: q.n, Variance: round(cv, 3)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Repeats > out[j].Repeats || out[i].Repeats == out[j].Repeats && out[i].Name < out[j].Name
	})
	if len(out) > 5 {
		out = out[:5]
	}
	return out
}

func rcodeName(rc uint8) string {
	if n, ok := dns.RcodeToString[int(rc)]; ok {
		return n
	}
	return "RCODE" + strconv.Itoa(int(rc))
}

func (r *Report) sort() {
	key := func(d Device) string { return d.MAC + d.IP }
	sort.SliceStable(r.Devices, func(i, j int) bool {
		a, b := r.Devices[i], r.Devices[j]
		if (a.Queries == 0) != (b.Queries == 0) {
			return a.Queries > 0
		}
		return key(a) < key(b)
	})
	sort.Strings(r.Resolvers)
	sort.Strings(r.Silent)
}

// WriteJSON writes the report as indented JSON, without plot data.
func (r *Report) WriteJSON(w io.Writer) error {
	c := *r
	c.Devices = make([]Device, len(r.Devices))
	for i, d := range r.Devices {
		d.Plot = nil
		c.Devices[i] = d
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("audit: writing JSON: %w", err)
	}
	return nil
}

// WriteText writes the terminal table and a few lines per device.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tQUERIES\tNAMES\tA/AAAA\tEDNS\tTXID\tBITS\tPORT\tBITS\tRESOLVERS\tENC\tTABLE I (dns port id cons rr ttl dos)")
	for _, d := range r.Devices {
		name := d.MAC
		if name == "" {
			name = d.IP
		}
		if d.Queries == 0 {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\tnone seen\t-\tnone seen\t-\t-\t%s\t%s\n", name, encSummary(d.Encrypted), d.TableI.String())
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f%%/%.0f%%\t%.0f%%\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t%s\n",
			name, d.Queries, d.Names.Distinct, 100*d.Types.AShare, 100*d.Types.AAAA, 100*d.EDNS.Share,
			verdictText(d.TXID), d.TXID.Bits, verdictText(d.Port), d.Port.Bits,
			resolverSummary(d.Resolvers), encSummary(d.Encrypted), d.TableI.String())
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("audit: writing table: %w", err)
	}
	var b strings.Builder
	for _, d := range r.Devices {
		name := d.MAC + d.IP
		if d.Queries == 0 {
			fmt.Fprintf(&b, "\n%s: %s\n", name, d.Note)
			continue
		}
		fmt.Fprintf(&b, "\n%s (%s): %d queries, %d answers, %.2f/min", name, strings.Join(d.IPs, " "), d.Queries, d.Responses, d.RatePerM)
		if d.First != nil {
			fmt.Fprintf(&b, ", %s .. %s", d.First.Format(time.RFC3339), d.Last.Format(time.RFC3339))
		}
		fmt.Fprintf(&b, "\n  txid: %s\n  port: %s\n", d.TXID.Detail, d.Port.Detail)
		fmt.Fprintf(&b, "  intervals: median %.3gs p90 %.3gs; max %d/s, %d bursts; retransmissions %d, retries %d\n",
			d.Intervals.MedianS, d.Intervals.P90S, d.Timing.MaxPerSecond, d.Timing.Bursts, d.Retries.Retransmissions, d.Retries.Retries)
		fmt.Fprintf(&b, "  ttl: %d answers, min %d max %d; %d of %d re-queries before expiry\n", d.TTL.Answers, d.TTL.Min, d.TTL.Max, d.TTL.Early, d.TTL.Requeries)
		var top []string
		for i, n := range d.Names.Top {
			if i == 3 {
				break
			}
			top = append(top, fmt.Sprintf("%s (%d)", n.Name, n.Count))
		}
		fmt.Fprintf(&b, "  names: %s\n", strings.Join(top, ", "))
		for _, p := range d.Names.Periodic {
			fmt.Fprintf(&b, "  periodic: %s every %.1fs (%d times)\n", p.Name, p.EveryS, p.Repeats)
		}
	}
	if len(r.Silent) > 0 {
		fmt.Fprintf(&b, "\nhosts that sent no DNS: %s\n", strings.Join(r.Silent, " "))
	}
	if len(r.Resolvers) > 0 {
		fmt.Fprintf(&b, "hosts that answered DNS: %s\n", strings.Join(r.Resolvers, " "))
	}
	if len(r.NetworkResolvers) > 0 {
		fmt.Fprintf(&b, "network resolvers: %s\n", strings.Join(r.NetworkResolvers, " "))
	}
	var corrupt, failed int64
	for _, f := range r.Files {
		corrupt += f.Corrupt
		if f.Error != "" {
			failed++
			fmt.Fprintf(&b, "error: %s\n", f.Error)
		}
	}
	fmt.Fprintf(&b, "%d captures read (%d failed), %d corrupt packets skipped\n", len(r.Files), failed, corrupt)
	_, err := io.WriteString(w, b.String())
	return err
}

func verdictText(f Field) string {
	if f.Reason == "" {
		return string(f.Verdict)
	}
	if f.Verdict == entropy.Insufficient {
		return "insufficient"
	}
	return string(f.Verdict) + " (" + f.Reason + ")"
}

func resolverSummary(rs []Resolver) string {
	var s []string
	for i, r := range rs {
		if i == 3 {
			s = append(s, "...")
			break
		}
		x := r.Addr
		if r.Own {
			x += "*"
		}
		s = append(s, x)
	}
	return strings.Join(s, ",")
}

func encSummary(e Encrypted) string {
	if e.DoT+e.DoH+e.DoQ == 0 {
		return "none"
	}
	return fmt.Sprintf("DoT:%d DoH:%d DoQ:%d", e.DoT, e.DoH, e.DoQ)
}
