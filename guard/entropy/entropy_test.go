package entropy

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// sample is one observed value and its boot.
type sample struct {
	v    uint16
	boot uint32
}

// perBoot builds boots of n values each from gen(boot, i).
func perBoot(boots, n int, gen func(boot, i int) uint16) []sample {
	var s []sample
	for b := range boots {
		for i := range n {
			s = append(s, sample{gen(b, i), uint32(b)})
		}
	}
	return s
}

func feed(s []sample) *Estimator {
	e := New()
	for _, x := range s {
		e.Observe(x.v, x.boot)
	}
	return e
}

func TestPatterns(t *testing.T) {
	rng := func(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }
	uniform := func(r *rand.Rand) uint16 { return uint16(r.UintN(65536)) }
	linuxPort := func(r *rand.Rand) uint16 { return uint16(32768 + r.UintN(60999-32768+1)) }

	tests := []struct {
		name    string
		samples []sample
		verdict Verdict
		reason  string
	}{
		{"no values", nil, Insufficient, "no values seen"},
		{"too few", perBoot(1, 9, func(_, i int) uint16 { return uint16(i * 7919) }), Insufficient, "only 9 values (need 10)"},
		{"constant one boot", perBoot(1, 50, func(_, _ int) uint16 { return 0x1234 }), Weak, ReasonConstant},
		{"Cosori fixed port 4096", perBoot(4, 100, func(_, _ int) uint16 { return 4096 }), Weak, ReasonConstant},
		{"Aria one query per boot, ID 1", perBoot(20, 1, func(_, _ int) uint16 { return 1 }), Weak, ReasonConstant},
		{"constant with a few strays", func() []sample {
			r := rng(1)
			return perBoot(5, 40, func(_, _ int) uint16 {
				if r.IntN(100) < 5 {
					return uniform(r)
				}
				return 49152
			})
		}(), Weak, ReasonConstant},
		{"Arlo/Yi ID sigma < 1", func() []sample {
			r := rng(2)
			return perBoot(3, 100, func(_, _ int) uint16 { return 0x7a10 + uint16(r.IntN(2)) })
		}(), Weak, ReasonNarrowRange},
		{"counter from random start", func() []sample {
			start := uint16(rng(3).UintN(65536))
			return perBoot(1, 5000, func(_, i int) uint16 { return start + uint16(i) })
		}(), Weak, ReasonCounter},
		{"counter restarting each boot and wrapping", func() []sample {
			r := rng(4)
			starts := make([]uint16, 20)
			for i := range starts {
				starts[i] = uint16(r.UintN(65536))
			}
			starts[3] = 65530 // this boot's counter wraps
			return perBoot(20, 30, func(b, i int) uint16 { return starts[b] + uint16(i) })
		}(), Weak, ReasonCounter},
		{"counter with step 7 and retransmission gaps", func() []sample {
			r := rng(5)
			v := uint16(r.UintN(65536))
			return perBoot(3, 100, func(_, _ int) uint16 { v += 7 * uint16(1+r.IntN(3)); return v })
		}(), Weak, ReasonCounter},
		{"two interleaved counters (HueBridge)", func() []sample {
			a, b := uint16(0x4000), uint16(0xC000)
			r := rng(6)
			return perBoot(2, 300, func(_, _ int) uint16 {
				if r.IntN(2) == 0 {
					a++
					return a
				}
				b++
				return b
			})
		}(), Weak, ReasonCounter},
		{"counter restarting at 2 every boot (TP-Link)", perBoot(20, 3, func(_, i int) uint16 { return uint16(2 + i) }), Weak, ReasonCounter},
		{"Eufy IDs only in 0x00-0x4F", func() []sample {
			r := rng(7)
			return perBoot(5, 60, func(_, _ int) uint16 { return uint16(r.IntN(0x50)) })
		}(), Weak, ReasonNarrowRange},
		{"narrow range across the wrap", func() []sample {
			r := rng(8)
			return perBoot(2, 200, func(_, _ int) uint16 { return uint16(65536-1000+r.IntN(2000)) & 0xFFFF })
		}(), Weak, ReasonNarrowRange},
		{"PetSafe >99% on three ports", func() []sample {
			r := rng(9)
			ports := []uint16{5353, 23456, 51000}
			return perBoot(4, 500, func(_, _ int) uint16 {
				if r.IntN(1000) < 6 {
					return linuxPort(r)
				}
				return ports[r.IntN(3)]
			})
		}(), Weak, ReasonSmallSet},
		{"LG TV 43% on one port", func() []sample {
			r := rng(10)
			return perBoot(3, 400, func(_, _ int) uint16 {
				if r.IntN(100) < 43 {
					return 40001
				}
				return linuxPort(r)
			})
		}(), Weak, ReasonSmallSet},
		{"PRNG seeded from three seeds (same sequence per seed)", func() []sample {
			seqs := make([][]uint16, 3)
			for i := range seqs {
				r := rng(100 + uint64(i))
				for range 12 {
					seqs[i] = append(seqs[i], uniform(r))
				}
			}
			r := rng(11)
			pick := make([]int, 20)
			for i := range pick {
				pick[i] = r.IntN(3)
			}
			return perBoot(20, 12, func(b, i int) uint16 { return seqs[pick[b]][i] })
		}(), Weak, ReasonBootRepeats},
		{"first IDs fixed every boot, rest random (WeMo Insight)", func() []sample {
			r := rng(12)
			return perBoot(20, 22, func(_, i int) uint16 {
				if i < 2 {
					return uint16(0x2 + i)
				}
				return uniform(r)
			})
		}(), Weak, ReasonBootRepeats},
		{"random 16-bit", func() []sample {
			r := rng(13)
			return perBoot(20, 50, func(_, _ int) uint16 { return uniform(r) })
		}(), Random, ""},
		{"random Linux ephemeral ports", func() []sample {
			r := rng(14)
			return perBoot(1, 20000, func(_, _ int) uint16 { return linuxPort(r) })
		}(), Random, ""},
		{"random values, a third of boots reuse an earlier value (WeMo Switch)", func() []sample {
			r := rng(15)
			var past []uint16
			return perBoot(20, 2, func(b, i int) uint16 {
				if b%3 == 2 && i == 0 {
					return past[r.IntN(len(past))]
				}
				v := uniform(r)
				past = append(past, v)
				return v
			})
		}(), Random, ""},
		{"random with many values per boot (chance repeats)", func() []sample {
			r := rng(16)
			return perBoot(6, 60000, func(_, _ int) uint16 { return uniform(r) })
		}(), Random, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := feed(tt.samples).Result()
			if got.Verdict != tt.verdict || got.Reason != tt.reason {
				t.Errorf("got %s (%q), want %s (%q)\n%s", got.Verdict, got.Reason, tt.verdict, tt.reason, got.Detail)
			}
			if got.N != len(tt.samples) {
				t.Errorf("N = %d, want %d", got.N, len(tt.samples))
			}
		})
	}
}

// TestStudyFigure checks sigma and bits against a direct computation.
func TestStudyFigure(t *testing.T) {
	tests := []struct {
		name   string
		values []uint16
		sigma  float64
		bits   float64
	}{
		{"constant", []uint16{4096, 4096, 4096, 4096}, 0, 0},
		{"two values", []uint16{0, 1, 0, 1}, 0.5, math.Log2(0.5 * math.Sqrt(12))},
		{"extremes", []uint16{0, 65535}, 32767.5, math.Log2(32767.5 * math.Sqrt(12))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New()
			for _, v := range tt.values {
				e.Observe(v, 0)
			}
			r := e.Result()
			if math.Abs(r.Sigma-tt.sigma) > 1e-9 || math.Abs(r.Bits-tt.bits) > 1e-9 {
				t.Errorf("sigma %v bits %v, want %v %v", r.Sigma, r.Bits, tt.sigma, tt.bits)
			}
		})
	}
	// A full counter: sigma near 18,918, bits near 16, and still weak.
	e := New()
	for v := range 65536 {
		e.Observe(uint16(v), 0)
	}
	r := e.Result()
	if r.Bits < 15.9 || r.Verdict != Weak || r.Reason != ReasonCounter {
		t.Errorf("full counter: bits %.2f verdict %s (%s)", r.Bits, r.Verdict, r.Reason)
	}
}

// TestRandomFalsePositives grades many truly random sources of many shapes:
// none may be called weak.
func TestRandomFalsePositives(t *testing.T) {
	shapes := []struct {
		name     string
		lo, size uint64
	}{
		{"full 16-bit", 0, 65536},
		{"Linux ephemeral 32768-60999", 32768, 60999 - 32768 + 1},
		{"IANA ephemeral 49152-65535", 49152, 16384},
		{"1024-65535", 1024, 65536 - 1024},
	}
	counts := []struct{ boots, perBoot int }{{1, 10}, {10, 1}, {20, 2}, {5, 20}, {1, 300}, {40, 5}}
	seeds := 400
	if testing.Short() {
		seeds = 50
	}
	for _, sh := range shapes {
		for _, c := range counts {
			weak := 0
			for seed := range seeds {
				r := rand.New(rand.NewPCG(uint64(seed), sh.size))
				e := New()
				for b := range c.boots {
					for range c.perBoot {
						e.Observe(uint16(sh.lo+r.Uint64N(sh.size)), uint32(b))
					}
				}
				if res := e.Result(); res.Verdict != Random {
					weak++
					t.Errorf("%s %dx%d seed %d: %s (%s) %s", sh.name, c.boots, c.perBoot, seed, res.Verdict, res.Reason, res.Detail)
				}
			}
			if weak > 0 {
				t.Errorf("%s %dx%d: %d of %d random sources not graded random", sh.name, c.boots, c.perBoot, weak, seeds)
			}
		}
	}
}

func TestBoundedSize(t *testing.T) {
	e := New()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		e.Observe(uint16(r.UintN(65536)), uint32(i/1000))
	}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 8192+600 {
		t.Errorf("encoding is %d bytes after 200000 values", len(b))
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 50, 40000} {
		r := rand.New(rand.NewPCG(uint64(n), 7))
		e := New()
		for i := range n {
			e.Observe(uint16(r.UintN(1<<16)), uint32(i/17))
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Estimator
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !reflect.DeepEqual(&got, e) {
			t.Errorf("n=%d: round trip changed the estimator", n)
		}
		// Continuing after a restore gives the same result as never stopping.
		e.Observe(5, 99999)
		got.Observe(5, 99999)
		if got.Result() != e.Result() {
			t.Errorf("n=%d: results differ after restore", n)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	e := New()
	for i := range 30 {
		e.Observe(uint16(i*1000), 0)
	}
	good, _ := e.MarshalBinary()
	tests := map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
	}
	for name, b := range tests {
		var got Estimator
		if err := got.UnmarshalBinary(b); err == nil {
			t.Errorf("%s: no error", name)
		}
		if !reflect.DeepEqual(got, Estimator{}) {
			t.Errorf("%s: estimator not left empty", name)
		}
	}
}

// FuzzEstimator observes arbitrary sequences: Result never panics, its
// numbers stay in range, and the encoding round-trips.
func FuzzEstimator(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 1, 0, 2, 0, 3})
	f.Add(bytes.Repeat([]byte{0x10, 0x00, 0x00}, 20))
	f.Add([]byte("random-ish bytes for the estimator, with boots!"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := New()
		boot := uint32(0)
		for i := 0; i+2 < len(data); i += 3 {
			if data[i+2]&0x80 != 0 {
				boot++
			}
			e.Observe(uint16(data[i])<<8|uint16(data[i+1]), boot)
		}
		r := e.Result()
		if r.N < 0 || r.Distinct > r.N || r.Span < 0 || r.Span > 65536 || math.IsNaN(r.Sigma) || r.Bits < 0 || r.Bits > 16.8 {
			t.Fatalf("out of range: %+v", r)
		}
		if r.N >= MinSamples && r.Verdict == Insufficient || r.N < MinSamples && r.Verdict == Random {
			t.Fatalf("verdict %s for %d values", r.Verdict, r.N)
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Estimator
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, e) || got.Result() != r {
			t.Fatal("round trip changed the estimator")
		}
		// Arbitrary bytes never panic and either fail or decode to something
		// that re-encodes.
		var any Estimator
		if any.UnmarshalBinary(data) == nil {
			if _, err := any.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
			_ = any.Result()
		}
	})
}

// TestSequentialGrading: a field is weak as soon as its values are too
// clustered for a uniform 16-bit source, and insufficient while too few
// values could show randomness.
func TestSequentialGrading(t *testing.T) {
	// boots gives each value its boot.
	tests := []struct {
		name    string
		values  []uint16
		boots   []uint32
		verdict Verdict
		reason  string
	}{
		{"9 queries over 8 boots: 3 4 4 5 5 6 7 7 8", []uint16{3, 4, 4, 5, 5, 6, 7, 7, 8}, []uint32{0, 1, 1, 2, 3, 4, 5, 6, 7}, Weak, ReasonNarrowRange},
		{"one value", []uint16{3}, nil, Insufficient, "only 1 values (need 10)"},
		{"two neighbours", []uint16{3, 4}, []uint32{0, 1}, Insufficient, "only 2 values (need 10)"},
		{"two equal", []uint16{7, 7}, []uint32{0, 1}, Insufficient, "only 2 values (need 10)"},
		{"three equal over three boots (Aria)", []uint16{1, 1, 1}, []uint32{0, 1, 2}, Weak, ReasonConstant},
		{"three in a window of 3", []uint16{3, 4, 5}, []uint32{0, 1, 2}, Insufficient, "only 3 values (need 10)"},
		{"four in a window of 4", []uint16{3, 4, 5, 6}, []uint32{0, 1, 2, 3}, Weak, ReasonNarrowRange},
		{"five counting in one boot", []uint16{40000, 40001, 40002, 40003, 40004}, nil, Weak, ReasonNarrowRange},
		{"Eufy-like: six in 0x00-0x4F", []uint16{0x12, 0x4e, 0x03, 0x31, 0x22, 0x40}, nil, Weak, ReasonNarrowRange},
		{"three random", []uint16{0x1f3a, 0xc001, 0x7777}, nil, Insufficient, "only 3 values (need 10)"},
		{"nine random", []uint16{0x1f3a, 0xc001, 0x7777, 0x0102, 0xfe31, 0x5a5a, 0x9e37, 0x3c1d, 0xb00b}, nil, Insufficient, "only 9 values (need 10)"},
		{"ten random", []uint16{0x1f3a, 0xc001, 0x7777, 0x0102, 0xfe31, 0x5a5a, 0x9e37, 0x3c1d, 0xb00b, 0x4242}, nil, Random, ""},
		{"one value four times in nine", []uint16{0x1f3a, 0xc001, 0x5555, 0x0102, 0x5555, 0x5a5a, 0x5555, 0x3c1d, 0x5555}, nil, Weak, ReasonSmallSet},
		{"one repeat in nine is chance", []uint16{0x1f3a, 0xc001, 0x5555, 0x0102, 0x5555, 0x5a5a, 0x9e37, 0x3c1d, 0xb00b}, nil, Insufficient, "only 9 values (need 10)"},
		{"two values alternating, eight of them", []uint16{0x1234, 0xabcd, 0x1234, 0xabcd, 0x1234, 0xabcd, 0x1234, 0xabcd}, nil, Weak, ReasonSmallSet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New()
			for i, v := range tt.values {
				var b uint32
				if tt.boots != nil {
					b = tt.boots[i]
				}
				e.Observe(v, b)
			}
			got := e.Result()
			if got.Verdict != tt.verdict || got.Reason != tt.reason {
				t.Errorf("got %s (%q), want %s (%q)\n%s", got.Verdict, got.Reason, tt.verdict, tt.reason, got.Detail)
			}
		})
	}
}

// TestSequentialFalsePositives grades random sources after every value,
// as the live guard does: none may ever be called weak.
func TestSequentialFalsePositives(t *testing.T) {
	seeds := 2000
	if testing.Short() {
		seeds = 200
	}
	for _, size := range []uint64{65536, 60999 - 32768 + 1, 16384} {
		for seed := range seeds {
			r := rand.New(rand.NewPCG(uint64(seed), 99+size))
			e := New()
			for i := range 80 {
				e.Observe(uint16(65536-size+r.Uint64N(size)), uint32(i/3))
				if res := e.Result(); res.Verdict == Weak {
					t.Fatalf("range %d seed %d after %d values: %s (%s) %s", size, seed, i+1, res.Verdict, res.Reason, res.Detail)
				}
			}
		}
	}
}

// TestSmallUntilEarned: the estimator keeps a list until it has seen more
// distinct values than sparseMax, and the list and the bitmap grade alike.
func TestSmallUntilEarned(t *testing.T) {
	e := New()
	e.Observe(5, 0)
	if e.seen != nil || len(e.vals) != 1 || len(e.heavy.h) != 1 || cap(e.heavy.h) > 4 {
		t.Fatalf("one value: seen %v vals %d hitters %d", e.seen != nil, len(e.vals), cap(e.heavy.h))
	}
	r := rand.New(rand.NewPCG(3, 4))
	for e.distinct < sparseMax {
		e.Observe(uint16(r.UintN(65536)), 0)
	}
	if e.seen != nil {
		t.Fatal("bitmap before sparseMax distinct values")
	}
	e.Observe(uint16(r.UintN(65536)), 0)
	for e.distinct <= sparseMax {
		e.Observe(uint16(r.UintN(65536)), 0)
	}
	if e.seen == nil || e.vals != nil {
		t.Fatal("no bitmap after sparseMax distinct values")
	}
	// Span from a list and from a bitmap agree, on many shapes.
	for seed := range 300 {
		r := rand.New(rand.NewPCG(uint64(seed), 5))
		list := New()
		width := 1 + r.UintN(65536)
		lo := r.UintN(65536)
		for range 1 + r.IntN(sparseMax) {
			list.Observe(uint16(lo+r.UintN(width)), 0)
		}
		bm := new([bitmapSize]uint64)
		list.values(func(v uint16) { bm[v>>6] |= 1 << (v & 63) })
		full := &Estimator{distinct: list.distinct, seen: bm}
		if a, b := list.span(), full.span(); a != b {
			t.Fatalf("seed %d: span %d from the list, %d from the bitmap", seed, a, b)
		}
	}
}

// TestBudget: estimators sharing a budget of one bitmap: the first to
// need one gets it, the next stays saturated (and still grades), and a
// bitmap given back when its estimator is dropped goes to the next.
func TestBudget(t *testing.T) {
	b := NewBudget(1)
	fill := func(e *Estimator, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 1))
		for i := range 2000 {
			e.Observe(uint16(r.UintN(65536)), uint32(i/100))
		}
	}
	a := NewWithBudget(b)
	fill(a, 1)
	if a.seen == nil || b.Used() != 1 {
		t.Fatalf("first estimator: bitmap %v, used %d", a.seen != nil, b.Used())
	}
	s := NewWithBudget(b)
	fill(s, 2)
	if s.seen != nil || !s.saturated || len(s.vals) != sparseMax || s.distinct != sparseMax {
		t.Fatalf("second estimator: bitmap %v saturated %v values %d distinct %d", s.seen != nil, s.saturated, len(s.vals), s.distinct)
	}
	if res := s.Result(); res.Verdict != Random || res.N != 2000 || !strings.Contains(res.Detail, "memory budget") {
		t.Errorf("saturated estimator graded %s n=%d: %s", res.Verdict, res.N, res.Detail)
	}
	// Its encoding round-trips as a list.
	enc, _ := s.MarshalBinary()
	restored := NewWithBudget(b)
	if err := restored.UnmarshalBinary(enc); err != nil || restored.distinct != sparseMax || restored.seen != nil {
		t.Fatalf("saturated round trip: %v distinct %d", err, restored.distinct)
	}
	a = nil
	for i := 0; b.Used() != 0 && i < 100; i++ {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if b.Used() != 0 {
		t.Fatalf("bitmap of a dropped estimator not given back: used %d", b.Used())
	}
	c := NewWithBudget(b)
	fill(c, 3)
	if c.seen == nil || b.Used() != 1 {
		t.Errorf("after the release: bitmap %v used %d", c.seen != nil, b.Used())
	}
	// A stored bitmap is restored whatever the budget says.
	full := New()
	fill(full, 4)
	enc, _ = full.MarshalBinary()
	d := NewWithBudget(b)
	if err := d.UnmarshalBinary(enc); err != nil || d.seen == nil || b.Used() != 2 {
		t.Errorf("restore over budget: %v bitmap %v used %d", err, d.seen != nil, b.Used())
	}
	runtime.KeepAlive(c)
	runtime.KeepAlive(d)
}
