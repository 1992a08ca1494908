package audit

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/miekg/dns"
)

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
