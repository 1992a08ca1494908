package control

import (
	"slices"
	"strconv"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/metrics"
	"github.com/dnsguard/dnsguard/guard/upstream"
)

// Sources are the running guard's parts the API reads. Any may be nil
// except Counters.
type Sources struct {
	Listen    *listen.Stats
	Cache     *cache.Cache
	Upstreams func() []upstream.Stats // every running pool's upstreams
	Registry  *device.Registry
	// Intercepting reports whether the nftables table is in; Repairs
	// how often it was put back.
	Intercepting func() bool
	Repairs      func() uint64
	Counters     *Counters
}

// Stats is what GET /api/v1/stats serves and /metrics is written from.
type Stats struct {
	Time         time.Time         `json:"time"`
	Listen       ListenStats       `json:"listen"`
	Queries      []QueryCount      `json:"queries"` // non-zero only
	Cache        CacheStats        `json:"cache"`
	Limiter      LimiterStats      `json:"limiter"`
	Upstreams    []UpstreamStats   `json:"upstreams"`
	Shield       ShieldStats       `json:"shield"`
	Interception InterceptionStats `json:"interception"`
	Devices      DeviceStats       `json:"devices"`
}

// ListenStats are the listener's counters.
type ListenStats struct {
	Queries    uint64 `json:"queries"`
	Malformed  uint64 `json:"malformed"`
	Dropped    uint64 `json:"dropped"`
	Truncated  uint64 `json:"truncated"`
	TCPRefused uint64 `json:"tcp_refused"`
	Spilled    uint64 `json:"spilled"`
	Denied     uint64 `json:"denied"` // clients outside the allowed prefixes
}

// QueryCount is the number of answers sent over one transport with one
// rcode.
type QueryCount struct {
	Transport string `json:"transport"`
	Rcode     string `json:"rcode"`
	N         uint64 `json:"n"`
}

// CacheStats are the cache's counters.
type CacheStats struct {
	Entries      int    `json:"entries"`
	Hits         uint64 `json:"hits"`
	Misses       uint64 `json:"misses"`
	Stale        uint64 `json:"stale"`
	CachedErrors uint64 `json:"cached_errors"`
	Coalesced    uint64 `json:"coalesced"`
	Evictions    uint64 `json:"evictions"`
}

// LimiterStats count the queries the per-device limits refused.
type LimiterStats struct {
	RateLimited uint64 `json:"rate_limited"`
}

// UpstreamStats is one upstream's state and counters.
type UpstreamStats struct {
	URL           string                    `json:"url"`
	Up            bool                      `json:"up"`
	RTTms         float64                   `json:"rtt_ms"`
	Queries       uint64                    `json:"queries"`
	Failures      uint64                    `json:"failures"`
	Mismatches    uint64                    `json:"mismatches"`
	Flood         uint64                    `json:"flood"`
	Refused       uint64                    `json:"refused"`
	CaseFallbacks uint64                    `json:"case_fallbacks"`
	Latency       metrics.HistogramSnapshot `json:"latency"`
}

// ShieldStats count the answers refused to devices, by EDE code (RFC
// 8914: 4 forged, 6 DNSSEC bogus, 15 blocked, 24 invalid data, ...).
type ShieldStats struct {
	RefusedByEDE map[string]uint64 `json:"refused_by_ede"`
}

// InterceptionStats are the router side's counters.
type InterceptionStats struct {
	Active       bool              `json:"active"`
	TableRepairs uint64            `json:"table_repairs"`
	Bypass       map[string]uint64 `json:"bypass_attempts"` // by kind
}

// DeviceStats summarise the device table.
type DeviceStats struct {
	Total       int                       `json:"total"`
	Unconfirmed int                       `json:"unconfirmed"`
	Strict      int                       `json:"strict"`
	Exempt      int                       `json:"exempt"`
	Grades      map[string]map[string]int `json:"grades"` // txid|port -> verdict -> devices
	MACWaits    uint64                    `json:"mac_waits"`
	MACTimeouts uint64                    `json:"mac_waits_timed_out"`
	Flushes     uint64                    `json:"state_flushes"`
	FlushErrors uint64                    `json:"state_flush_errors"`
}

// Gather reads every source once.
func (s *Sources) Gather() *Stats {
	st := &Stats{Time: time.Now().UTC(), Queries: []QueryCount{}}
	if l := s.Listen; l != nil {
		st.Listen = ListenStats{Queries: l.Queries.Load(), Malformed: l.Malformed.Load(), Dropped: l.Dropped.Load(),
			Truncated: l.Truncated.Load(), TCPRefused: l.TCPRefused.Load(), Spilled: l.Spilled.Load(), Denied: l.Denied.Load()}
	}
	c := s.Counters
	for t, name := range [2]string{"udp", "tcp"} {
		for rc := range numRcodes {
			if n := c.queries[t][rc].Load(); n > 0 {
				st.Queries = append(st.Queries, QueryCount{Transport: name, Rcode: rcodeName(rc), N: n})
			}
		}
	}
	if ca := s.Cache; ca != nil {
		cs := &ca.Stats
		st.Cache = CacheStats{Entries: ca.Len(), Hits: cs.Hits.Load(), Misses: cs.Misses.Load(), Stale: cs.Stale.Load(),
			CachedErrors: cs.CachedErrors.Load(), Coalesced: cs.Coalesced.Load(), Evictions: cs.Evictions.Load()}
	}
	st.Limiter.RateLimited = c.rateLimited.Load()
	if s.Upstreams != nil {
		for _, u := range s.Upstreams() {
			st.Upstreams = append(st.Upstreams, UpstreamStats{URL: u.URL, Up: u.Up, RTTms: float64(u.RTT.Microseconds()) / 1000,
				Queries: u.Queries, Failures: u.Failures, Mismatches: u.Mismatches, Flood: u.Flood,
				Refused: u.Refused, CaseFallbacks: u.CaseFallbacks, Latency: u.Latency})
		}
	}
	st.Shield.RefusedByEDE = map[string]uint64{}
	for code := range numEDE {
		if n := c.refused[code].Load(); n > 0 {
			st.Shield.RefusedByEDE[strconv.Itoa(code)] = n
		}
	}
	st.Interception.Bypass = map[string]uint64{}
	for i, k := range bypassKinds {
		st.Interception.Bypass[k] = c.bypass[i].Load()
	}
	if n := c.bypassOther.Load(); n > 0 {
		st.Interception.Bypass["other"] = n
	}
	if s.Intercepting != nil {
		st.Interception.Active = s.Intercepting()
	}
	if s.Repairs != nil {
		st.Interception.TableRepairs = s.Repairs()
	}
	st.Devices.Grades = map[string]map[string]int{"txid": {}, "port": {}}
	if r := s.Registry; r != nil {
		for _, v := range r.Views() {
			if v.Unconfirmed {
				st.Devices.Unconfirmed++
				continue
			}
			st.Devices.Total++
			if v.Strict {
				st.Devices.Strict++
			}
			if v.Exempt {
				st.Devices.Exempt++
			}
			st.Devices.Grades["txid"][string(v.TXID.Verdict)]++
			st.Devices.Grades["port"][string(v.Port.Verdict)]++
		}
		rs := r.Stats()
		st.Devices.MACWaits, st.Devices.MACTimeouts = rs.MACWaits, rs.MACWaitsTimedOut
		st.Devices.Flushes, st.Devices.FlushErrors = r.Flushes.Load(), r.FlushErrors.Load()
	}
	return st
}

// Prometheus writes st in the Prometheus text format.
func (st *Stats) Prometheus() []byte {
	var w metrics.Writer
	l := st.Listen
	w.Counter("dnsguard_listen_queries_total", "Queries read by the listener.", l.Queries)
	w.Counter("dnsguard_listen_malformed_total", "Queries that did not parse (answered FORMERR or dropped).", l.Malformed)
	w.Counter("dnsguard_listen_dropped_total", "Queries dropped by the listener.", l.Dropped)
	w.Counter("dnsguard_listen_truncated_total", "UDP answers sent truncated (TC=1).", l.Truncated)
	w.Counter("dnsguard_listen_tcp_refused_total", "TCP connections refused over the limits.", l.TCPRefused)
	w.Counter("dnsguard_listen_denied_total", "Queries and connections from clients outside the allowed prefixes.", l.Denied)
	w.Family("dnsguard_queries_total", "counter", "Answers sent to devices, by transport and rcode.")
	for _, t := range []string{"udp", "tcp"} {
		var noerror uint64 // always written, so the series exists from the start
		for _, q := range st.Queries {
			if q.Transport == t && q.Rcode == "NOERROR" {
				noerror = q.N
			}
		}
		w.Sample("dnsguard_queries_total", float64(noerror), "transport", t, "rcode", "NOERROR")
		for _, q := range st.Queries {
			if q.Transport == t && q.Rcode != "NOERROR" {
				w.Sample("dnsguard_queries_total", float64(q.N), "transport", t, "rcode", q.Rcode)
			}
		}
	}
	c := st.Cache
	w.Gauge("dnsguard_cache_entries", "Entries in the cache.", float64(c.Entries))
	w.Counter("dnsguard_cache_hits_total", "Questions answered from the cache.", c.Hits)
	w.Counter("dnsguard_cache_misses_total", "Questions the cache had no answer for.", c.Misses)
	w.Counter("dnsguard_cache_stale_total", "Stale answers served (RFC 8767).", c.Stale)
	w.Counter("dnsguard_cache_cached_errors_total", "Failures answered from the failure cache (RFC 9520).", c.CachedErrors)
	w.Counter("dnsguard_cache_coalesced_total", "Questions that joined an identical one in flight.", c.Coalesced)
	w.Counter("dnsguard_cache_evictions_total", "Entries evicted to stay within the cache bounds.", c.Evictions)
	w.Counter("dnsguard_rate_limited_total", "Queries refused by the per-device limits.", st.Limiter.RateLimited)
	for _, u := range st.Upstreams {
		up := 0.0
		if u.Up {
			up = 1
		}
		w.Gauge("dnsguard_upstream_up", "Whether the upstream is considered healthy.", up, "upstream", u.URL)
	}
	for _, u := range st.Upstreams {
		w.Counter("dnsguard_upstream_queries_total", "Queries sent to the upstream (attempts).", u.Queries, "upstream", u.URL)
	}
	for _, u := range st.Upstreams {
		w.Counter("dnsguard_upstream_failures_total", "Attempts that got no answer from the upstream.", u.Failures, "upstream", u.URL)
	}
	for _, u := range st.Upstreams {
		w.Counter("dnsguard_upstream_refused_total", "Upstream answers the shield refused.", u.Refused, "upstream", u.URL)
	}
	for _, u := range st.Upstreams {
		w.Counter("dnsguard_upstream_mismatches_total", "Upstream responses dropped for not matching the query.", u.Mismatches, "upstream", u.URL)
	}
	for _, u := range st.Upstreams {
		w.Histogram("dnsguard_upstream_latency_seconds", "Time to each upstream answer.", u.Latency, "upstream", u.URL)
	}
	w.Family("dnsguard_refused_answers_total", "counter", "Answers refused to devices, by EDE code (RFC 8914).")
	for _, code := range sortedKeys(st.Shield.RefusedByEDE) {
		w.Sample("dnsguard_refused_answers_total", float64(st.Shield.RefusedByEDE[code]), "ede", code)
	}
	w.Family("dnsguard_bypass_attempts_total", "counter", "Attempts to reach a resolver around the guard, by kind.")
	for _, k := range sortedKeys(st.Interception.Bypass) {
		w.Sample("dnsguard_bypass_attempts_total", float64(st.Interception.Bypass[k]), "kind", k)
	}
	active := 0.0
	if st.Interception.Active {
		active = 1
	}
	w.Gauge("dnsguard_intercept_active", "Whether the nftables interception table is installed.", active)
	w.Counter("dnsguard_intercept_table_repairs_total", "Times the nftables table was put back after being removed or changed.", st.Interception.TableRepairs)
	d := st.Devices
	w.Family("dnsguard_devices", "gauge", "Devices known, by estimator (txid, port) and its verdict.")
	for _, est := range []string{"txid", "port"} {
		for _, v := range sortedKeys(d.Grades[est]) {
			w.Sample("dnsguard_devices", float64(d.Grades[est][v]), "estimator", est, "grade", v)
		}
	}
	w.Gauge("dnsguard_devices_confirmed", "Confirmed devices known.", float64(d.Total))
	w.Gauge("dnsguard_devices_unconfirmed", "Source MACs not (yet) confirmed by the neighbour table or a lease.", float64(d.Unconfirmed))
	w.Gauge("dnsguard_devices_strict", "Devices held to strict policy.", float64(d.Strict))
	w.Gauge("dnsguard_devices_exempt", "Devices exempt from interception.", float64(d.Exempt))
	w.Counter("dnsguard_mac_waits_total", "Queries that waited for their MAC.", d.MACWaits)
	w.Counter("dnsguard_state_flushes_total", "Batches of device records written to the state file.", d.Flushes)
	w.Counter("dnsguard_state_flush_errors_total", "Batches of device records that failed to be written.", d.FlushErrors)
	return w.Bytes()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
