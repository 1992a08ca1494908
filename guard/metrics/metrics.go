// Package metrics holds the guard's lock-free counting parts and writes
// them in the Prometheus text exposition format (version 0.0.4): a
// fixed-bucket latency histogram the upstream pool fills, and a small
// writer for counters, gauges and histograms with escaped label values.
// It imports nothing of the guard, so any stage may count with it.
package metrics

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds (seconds) of the latency buckets:
// from a LAN resolver's sub-millisecond answer to a timed-out attempt.
var latencyBounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// LatencyBounds returns the histogram's bucket bounds in seconds.
func LatencyBounds() []float64 { return append([]float64(nil), latencyBounds[:]...) }

// Histogram counts durations in fixed buckets with atomics only.
type Histogram struct {
	buckets [len(latencyBounds) + 1]atomic.Uint64 // the last is +Inf
	sum     atomic.Uint64                         // nanoseconds
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(latencyBounds) && s > latencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(uint64(max(d, 0)))
}

// HistogramSnapshot is a histogram's state: per-bucket (not cumulative)
// counts, the last one above every bound, and the sum.
type HistogramSnapshot struct {
	Counts []uint64      `json:"counts"`
	Sum    time.Duration `json:"sum_ns"`
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Counts: make([]uint64, len(h.buckets))}
	for i := range h.buckets {
		s.Counts[i] = h.buckets[i].Load()
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// Count is the number of observations.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Writer writes metric families in the Prometheus text format. Each
// family is announced once (HELP and TYPE) before its first sample.
type Writer struct {
	b    bytes.Buffer
	seen map[string]bool
}

// Bytes returns what was written.
func (w *Writer) Bytes() []byte { return w.b.Bytes() }

// Family announces a family: typ is "counter", "gauge" or "histogram".
// Announcing a family again is a no-op.
func (w *Writer) Family(name, typ, help string) {
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	if w.seen[name] {
		return
	}
	w.seen[name] = true
	w.b.WriteString("# HELP " + name + " " + escapeHelp(help) + "\n")
	w.b.WriteString("# TYPE " + name + " " + typ + "\n")
}

// Sample writes one sample; labels are name, value pairs.
func (w *Writer) Sample(name string, v float64, labels ...string) {
	w.b.WriteString(name)
	if len(labels) > 0 {
		w.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.b.WriteString(labels[i])
			w.b.WriteString(`="`)
			w.b.WriteString(escapeLabel(labels[i+1]))
			w.b.WriteByte('"')
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	w.b.WriteString(formatFloat(v))
	w.b.WriteByte('\n')
}

// Counter writes a counter sample (announcing the family first).
func (w *Writer) Counter(name, help string, v uint64, labels ...string) {
	w.Family(name, "counter", help)
	w.Sample(name, float64(v), labels...)
}

// Gauge writes a gauge sample (announcing the family first).
func (w *Writer) Gauge(name, help string, v float64, labels ...string) {
	w.Family(name, "gauge", help)
	w.Sample(name, v, labels...)
}

// Histogram writes a latency histogram in seconds: cumulative buckets
// with le labels, _sum and _count.
func (w *Writer) Histogram(name, help string, s HistogramSnapshot, labels ...string) {
	w.Family(name, "histogram", help)
	var cum uint64
	for i, c := range s.Counts {
		cum += c
		le := "+Inf"
		if i < len(latencyBounds) {
			le = formatFloat(latencyBounds[i])
		}
		w.Sample(name+"_bucket", float64(cum), append(labels[:len(labels):len(labels)], "le", le)...)
	}
	w.Sample(name+"_sum", s.Sum.Seconds(), labels...)
	w.Sample(name+"_count", float64(cum), labels...)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabel escapes a label value: backslash, double quote and line
// feed (a help text: backslash and line feed).
func escapeLabel(s string) string { return escape(s, true) }
func escapeHelp(s string) string  { return escape(s, false) }

func escape(s string, quote bool) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
