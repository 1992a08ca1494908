package metrics

import (
	"strings"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 40 * time.Millisecond, 10 * time.Second, -time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	// 0.5 ms and 1 ms (bounds are inclusive) and the negative one in the
	// first bucket, 3 ms in the third, 40 ms in the sixth, 10 s above all.
	want := []uint64{3, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1}
	for i := range want {
		if s.Counts[i] != want[i] {
			t.Fatalf("counts %v, want %v", s.Counts, want)
		}
	}
	if s.Count() != 6 || s.Sum != 500*time.Microsecond+time.Millisecond+3*time.Millisecond+40*time.Millisecond+10*time.Second {
		t.Errorf("count %d sum %v", s.Count(), s.Sum)
	}
	var w Writer
	w.Histogram("x_seconds", "help", s, "upstream", "u")
	out := string(w.Bytes())
	for _, line := range []string{
		"# TYPE x_seconds histogram",
		`x_seconds_bucket{upstream="u",le="0.001"} 3`,
		`x_seconds_bucket{upstream="u",le="0.005"} 4`,
		`x_seconds_bucket{upstream="u",le="2.5"} 5`,
		`x_seconds_bucket{upstream="u",le="+Inf"} 6`,
		`x_seconds_count{upstream="u"} 6`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("no line %q in\n%s", line, out)
		}
	}
}

func TestWriterEscapes(t *testing.T) {
	var w Writer
	w.Counter("a_total", "line\nbreak and back\\slash", 1, "l", "q\"uote\\back\nnl")
	w.Counter("a_total", "announced once", 2, "l", "plain")
	want := "# HELP a_total line\\nbreak and back\\\\slash\n# TYPE a_total counter\n" +
		"a_total{l=\"q\\\"uote\\\\back\\nnl\"} 1\na_total{l=\"plain\"} 2\n"
	if got := string(w.Bytes()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
