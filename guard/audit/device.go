package audit

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sort"
	"time"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
)

// Per-device bounds.
const (
	maxQuestions = 512  // questions remembered (two generations of this many)
	maxNames     = 4096 // distinct names counted exactly (also bounded by the auditor's budget)
	topNames     = 16
	maxIPs       = 8
	maxResolvers = 32
	maxSizes     = 16
	scatterN     = 1500 // points kept for the ID/port plots
	rateBuckets  = 480
	burstPerSec  = 10
	retryWindow  = 5e9 // ns: same question again without an answer
)

// question is what the audit remembers of one (name, type) of one device.
type question struct {
	id       uint16
	port     uint16
	boot     uint32
	last     int64 // time of the last query
	answered bool
	answerAt int64  // when the last answer with records came (0: none)
	ttl      uint32 // that answer's smallest TTL
	// intervals between queries (not retransmissions), for periodicity
	n        int
	mean, m2 float64
}

type qkey struct {
	name  string
	qtype uint16
}

// device is the running state of one DNS client.
type device struct {
	key    string
	hasMAC bool
	ips    []netip.Addr

	queries, responses int
	tcpQueries         int
	first, last        int64
	lastQuery          int64
	// Activity time: captures are boots, often far apart; rates and plots
	// use the time the device was seen active, boot after boot.
	boot                 uint32
	bootFirst, bootLast  int64
	active               int64   // of the boots before the current one
	intervals            [26]int // log2 buckets of ms; [0] < 1 ms
	qtypes, rtypes       map[uint16]int
	rcodes               map[uint8]int
	names                map[string]int // exact up to maxNames
	namesOverflow        bool
	top                  nameHitters
	cur, prev            map[qkey]*question
	retransmissions      int
	retries              int
	requeries            int // re-asked after an answer (not retransmission)
	early                int // of which before the answer's TTL ran out
	ttlMin, ttlMax       uint32
	ttlSum               float64
	ttls                 int
	ttlZero              int
	qsize, rsize         sizeStat
	edns, do             int
	ednsSizes            map[uint16]int
	nameLen              sizeStat
	resolvers            map[netip.Addr]int
	dot, doh, doq        int
	encTargets           map[string]int
	sec                  int64 // current second and its count, for bursts
	secN, maxSec, bursts int

	txid, port *entropy.Estimator

	// Plots.
	rng       *rand.Rand
	scatter   []point
	seen      int
	rate      []int
	rateWidth int64
}

type point struct {
	T    float64 `json:"t"` // seconds of activity since the device's first query
	ID   uint16  `json:"id"`
	Port uint16  `json:"port"`
}

type sizeStat struct {
	n        int
	min, max int
	sum      float64
}

func (s *sizeStat) add(v int) {
	if s.n == 0 || v < s.min {
		s.min = v
	}
	s.max = max(s.max, v)
	s.sum += float64(v)
	s.n++
}

func newDevice(key string, hasMAC bool) *device {
	return &device{
		key: key, hasMAC: hasMAC,
		qtypes: map[uint16]int{}, rtypes: map[uint16]int{}, rcodes: map[uint8]int{},
		names: map[string]int{}, cur: map[qkey]*question{}, prev: map[qkey]*question{},
		ednsSizes: map[uint16]int{}, resolvers: map[netip.Addr]int{}, encTargets: map[string]int{},
		txid: entropy.New(), port: entropy.New(),
		rng:       rand.New(rand.NewPCG(1, uint64(len(key)))),
		rateWidth: 60e9,
	}
}

func (d *device) noteIP(ip netip.Addr) {
	for _, x := range d.ips {
		if x == ip {
			return
		}
	}
	if len(d.ips) < maxIPs {
		d.ips = append(d.ips, ip)
	}
}

// lookup finds a remembered question, keeping recently used ones in the
// current generation; two generations bound the memory.
func (d *device) lookup(k qkey, create bool) *question {
	if q := d.cur[k]; q != nil {
		return q
	}
	q := d.prev[k]
	if q == nil && !create {
		return nil
	}
	if q != nil {
		delete(d.prev, k)
	} else {
		q = &question{}
	}
	if len(d.cur) >= maxQuestions {
		d.prev, d.cur = d.cur, make(map[qkey]*question, maxQuestions)
	}
	d.cur[k] = q
	return q
}

// timeline maps capture time to activity time (ns since the device's
// first query, leaving out the gaps between boots).
func (d *device) timeline(t int64, boot uint32) int64 {
	if d.queries == 0 || boot != d.boot {
		if d.queries > 0 {
			d.active += d.bootLast - d.bootFirst
		}
		d.boot, d.bootFirst, d.bootLast, d.lastQuery = boot, t, t, 0
	}
	if t > d.bootLast {
		d.bootLast = t
	}
	return d.active + max(t-d.bootFirst, 0)
}

// activeNs is how long the device was seen querying, over all boots.
func (d *device) activeNs() int64 { return d.active + d.bootLast - d.bootFirst }

func (d *device) query(m *message, f *capture.Frame, t int64, boot uint32, tcp bool, size int, names *int) {
	tl := d.timeline(t, boot)
	d.queries++
	if tcp {
		d.tcpQueries++
	}
	if d.first == 0 || t < d.first {
		d.first = t
	}
	d.last = max(d.last, t)
	d.resolverUse(f.Dst.Unmap())
	d.qtypes[m.Type]++
	d.qsize.add(size)
	d.nameLen.add(len(m.name))
	if m.EDNS.Present {
		d.edns++
		if len(d.ednsSizes) < maxSizes {
			d.ednsSizes[m.EDNS.UDPSize]++
		}
		if m.EDNS.DO {
			d.do++
		}
	}
	name := string(m.name)
	if _, ok := d.names[name]; ok {
		d.names[name]++
	} else if len(d.names) < maxNames && *names > 0 {
		d.names[name] = 1
		*names--
	} else {
		d.namesOverflow = true
	}
	d.top.add(name)
	d.plotRate(tl)
	d.burst(t)

	q := d.lookup(qkey{name, m.Type}, true)
	retrans := q.last != 0 && q.boot == boot && q.id == m.ID && q.port == f.SrcPort
	if retrans {
		d.retransmissions++
	} else {
		if d.lastQuery != 0 {
			d.interval(t - d.lastQuery)
		}
		d.lastQuery = t
		if q.last != 0 && q.boot == boot {
			switch {
			case !q.answered && t-q.last < retryWindow:
				d.retries++
			case q.answered:
				d.requeries++
				if q.answerAt != 0 && tablei.Early(time.Duration(t-q.answerAt), q.ttl) {
					d.early++
				}
			}
			dt := float64(t-q.last) / 1e9
			q.n++
			delta := dt - q.mean
			q.mean += delta / float64(q.n)
			q.m2 += delta * (dt - q.mean)
		}
		d.txid.Observe(m.ID, boot)
		if !tcp {
			d.port.Observe(f.SrcPort, boot)
		}
		d.plotPoint(tl, m.ID, f.SrcPort)
	}
	q.id, q.port, q.boot, q.last, q.answered = m.ID, f.SrcPort, boot, t, false
}

func (d *device) response(m *message, t int64, size int) {
	d.responses++
	d.rsize.add(size)
	if len(d.rcodes) < 16 {
		d.rcodes[m.Rcode]++
	}
	for _, typ := range m.AnswerTypes() {
		if len(d.rtypes) < 64 {
			d.rtypes[typ]++
		}
	}
	q := d.lookup(qkey{string(m.name), m.Type}, false)
	if q != nil && q.id == m.ID {
		q.answered = true
		q.answerAt, q.ttl = 0, 0
		if m.Answers > 0 {
			q.answerAt, q.ttl = t, m.MinTTL
		}
	}
	if m.Answers > 0 {
		if d.ttls == 0 || m.MinTTL < d.ttlMin {
			d.ttlMin = m.MinTTL
		}
		d.ttlMax = max(d.ttlMax, m.MinTTL)
		d.ttlSum += float64(m.MinTTL)
		d.ttls++
		if m.MinTTL == 0 {
			d.ttlZero++
		}
	}
}

func (d *device) resolverUse(ip netip.Addr) {
	if _, ok := d.resolvers[ip]; ok || len(d.resolvers) < maxResolvers {
		d.resolvers[ip]++
	}
}

func (d *device) encrypted(kind, target string, t int64, boot uint32) {
	switch kind {
	case "DoT":
		d.dot++
	case "DoH":
		d.doh++
	case "DoQ":
		d.doq++
	}
	if _, ok := d.encTargets[kind+" "+target]; ok || len(d.encTargets) < 16 {
		d.encTargets[kind+" "+target]++
	}
	if d.first == 0 || t < d.first {
		d.first = t
	}
	d.last = max(d.last, t)
}

func (d *device) interval(dt int64) {
	ms := dt / 1e6
	i := 0
	if ms >= 1 {
		i = min(bits.Len64(uint64(ms)), len(d.intervals)-1)
	}
	d.intervals[i]++
}

func (d *device) burst(t int64) {
	s := t / 1e9
	if s != d.sec {
		d.sec, d.secN = s, 0
	}
	d.secN++
	d.maxSec = max(d.maxSec, d.secN)
	if d.secN == burstPerSec {
		d.bursts++
	}
}

// plotRate counts queries in buckets of activity time, doubling the
// bucket width when the timeline outgrows rateBuckets.
func (d *device) plotRate(t int64) {
	i := int(t / d.rateWidth)
	for i >= rateBuckets {
		merged := make([]int, (len(d.rate)+1)/2, rateBuckets)
		for j, n := range d.rate {
			merged[j/2] += n
		}
		d.rate = merged
		d.rateWidth *= 2
		i = int(t / d.rateWidth)
	}
	for len(d.rate) <= i {
		d.rate = append(d.rate, 0)
	}
	d.rate[i]++
}

// plotPoint keeps a uniform sample of (time, ID, port) (reservoir sampling).
func (d *device) plotPoint(t int64, id, port uint16) {
	d.seen++
	p := point{T: float64(t) / 1e9, ID: id, Port: port}
	if len(d.scatter) < scatterN {
		d.scatter = append(d.scatter, p)
		return
	}
	if j := d.rng.IntN(d.seen); j < scatterN {
		d.scatter[j] = p
	}
}

// nameHitters counts the most frequent names in fixed space.
type nameHitters struct {
	names  [topNames]string
	counts [topNames]int
	n      int
}

func (h *nameHitters) add(name string) {
	for i := 0; i < h.n; i++ {
		if h.names[i] == name {
			h.counts[i]++
			return
		}
	}
	if h.n < topNames {
		h.names[h.n], h.counts[h.n] = name, 1
		h.n++
		return
	}
	low := 0
	for i := 1; i < topNames; i++ {
		if h.counts[i] < h.counts[low] {
			low = i
		}
	}
	h.names[low] = name
	h.counts[low]++
}

// clientHelloSNI returns the server name of a TLS ClientHello that starts
// the segment, or "".
func clientHelloSNI(b []byte) string {
	if len(b) < 43 || b[0] != 0x16 || b[5] != 0x01 {
		return ""
	}
	p := b[5+4+2+32:] // handshake header, version, random
	skip := func(lenBytes int) bool {
		if len(p) < lenBytes {
			return false
		}
		n := 0
		for _, c := range p[:lenBytes] {
			n = n<<8 | int(c)
		}
		if len(p) < lenBytes+n {
			return false
		}
		p = p[lenBytes+n:]
		return true
	}
	if !skip(1) || !skip(2) || !skip(1) || len(p) < 2 { // session id, ciphers, compression
		return ""
	}
	ext := p[2:]
	if n := int(binary.BigEndian.Uint16(p)); n < len(ext) {
		ext = ext[:n]
	}
	for len(ext) >= 4 {
		typ, n := binary.BigEndian.Uint16(ext), int(binary.BigEndian.Uint16(ext[2:]))
		if len(ext) < 4+n {
			return ""
		}
		if typ == 0 { // server_name
			v := ext[4 : 4+n]
			if len(v) < 5 || v[2] != 0 {
				return ""
			}
			l := int(binary.BigEndian.Uint16(v[3:]))
			if len(v) < 5+l {
				return ""
			}
			return string(v[5 : 5+l])
		}
		ext = ext[4+n:]
	}
	return ""
}

func sortAddrs(a []netip.Addr) {
	sort.Slice(a, func(i, j int) bool { return a[i].Less(a[j]) })
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
