package entropy

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// longestUnseenBits is longestUnseen the slow way, a bit at a time, as the
// estimator did before: the reference the word-at-a-time pass must match.
func longestUnseenBits(seen *[bitmapSize]uint64) int {
	start := -1
	for w := 0; w < bitmapSize && start < 0; w++ {
		for b := 63; b >= 0; b-- {
			if seen[w]&(1<<b) != 0 {
				start = w*64 + b
				break
			}
		}
	}
	longest, run := 0, 0
	for i := 1; i <= 65536; i++ {
		v := (start + i) & 0xFFFF
		if seen[v>>6]&(1<<(v&63)) == 0 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}

func bitmapOf(vs ...int) *[bitmapSize]uint64 {
	var m [bitmapSize]uint64
	for _, v := range vs {
		m[v>>6] |= 1 << (v & 63)
	}
	return &m
}

// TestLongestUnseen: the word-at-a-time run of unseen values agrees with
// the bit-at-a-time one where runs start, end and wrap at word edges and
// inside words, and on random sets from a few values to nearly all.
func TestLongestUnseen(t *testing.T) {
	all := make([]int, 65536)
	for i := range all {
		all[i] = i
	}
	cases := map[string]*[bitmapSize]uint64{
		"0":                 bitmapOf(0),
		"65535":             bitmapOf(65535),
		"63":                bitmapOf(63),
		"64":                bitmapOf(64),
		"0 and 65535":       bitmapOf(0, 65535),
		"wrap through ends": bitmapOf(100, 65400),
		"62 inside a word":  bitmapOf(0, 63),
		"63 across words":   bitmapOf(63, 127),
		"64 across words":   bitmapOf(63, 128),
		"every value":       bitmapOf(all...),
		"every other value": bitmapOf(func() []int {
			var v []int
			for i := 0; i < 65536; i += 2 {
				v = append(v, i)
			}
			return v
		}()...),
	}
	// Every value but a run of k, for k around the word size, at offsets
	// across a word edge.
	for _, k := range []int{1, 61, 62, 63, 64, 65, 127, 128, 129} {
		for _, at := range []int{0, 1, 63, 64, 65, 65536 - k} {
			m := bitmapOf(all...)
			for v := at; v < at+k; v++ {
				m[v>>6] &^= 1 << (v & 63)
			}
			cases["all but "+strconv.Itoa(k)+" from "+strconv.Itoa(at)] = m
		}
	}
	r := rand.New(rand.NewPCG(7, 11))
	for _, n := range []int{2, 600, 5000, 20000, 50000, 65000} {
		for seed := range 4 {
			var vs []int
			for range n {
				vs = append(vs, int(r.Uint32()&0xFFFF))
			}
			cases["random "+strconv.Itoa(n)+"/"+strconv.Itoa(seed)] = bitmapOf(vs...)
		}
	}
	for name, m := range cases {
		if got, want := longestUnseen(m), longestUnseenBits(m); got != want {
			t.Errorf("%s: longest unseen run %d, want %d", name, got, want)
		}
	}
}

// FuzzLongestUnseen: any set of seen values (the input read as the
// bitmap's words; at least one value) gives the run the slow way gives.
func FuzzLongestUnseen(f *testing.F) {
	f.Add([]byte{1})
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0x01})
	f.Add([]byte{0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m [bitmapSize]uint64
		for i := 0; i < bitmapSize && 8*i < len(data); i++ {
			var w [8]byte
			copy(w[:], data[8*i:])
			m[i] = binary.LittleEndian.Uint64(w[:])
		}
		// Spread short inputs over the whole range as well.
		if len(data) > 0 {
			m[bitmapSize-1] ^= uint64(data[0]) << 56
		}
		empty := true
		for _, w := range m {
			empty = empty && w == 0
		}
		if empty {
			m[0] = 1
		}
		if got, want := longestUnseen(&m), longestUnseenBits(&m); got != want {
			t.Fatalf("longest unseen run %d, want %d", got, want)
		}
	})
}

// BenchmarkResult grades an estimator holding n random values, as a
// device's is graded every gradeEvery-th query.
func BenchmarkResult(b *testing.B) {
	for _, n := range []int{100, 10000, 200000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := New()
			r := rand.New(rand.NewPCG(1, 2))
			for range n {
				e.Observe(uint16(r.Uint32()), 1)
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = e.Result()
			}
		})
	}
}
