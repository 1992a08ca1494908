package stage

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// recorder is a Batch of Pieces[int] that records each Write: the pieces
// it took, in order.
type recorder struct {
	Pieces[int]
	writes [][]string
	fail   error
}

func (r *recorder) Write() error {
	out, ps := r.Taken()
	var w []string
	for _, p := range ps {
		w = append(w, fmt.Sprintf("%d:%s", p.M, out[p.Start:p.End]))
	}
	r.writes = append(r.writes, w)
	return r.fail
}

// TestGatherPieces: a lone piece is written at once (Drain and DrainNow);
// pieces added together by 64 goroutines on one P leave in a few writes,
// each once with what goes with it; a failed write drops what is left.
func TestGatherPieces(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var mu sync.Mutex
	var g Gather
	r := &recorder{}
	for _, drain := range []func(*sync.Mutex, Batch) error{g.Drain, g.DrainNow} {
		mu.Lock()
		r.Add([]byte("lone"), 7)
		err := drain(&mu, r)
		mu.Unlock()
		if n := len(r.writes); err != nil || n != 1 || fmt.Sprint(r.writes[0]) != "[7:lone]" {
			t.Fatalf("lone piece: %d writes %v (%v), want 1 of [7:lone]", n, r.writes, err)
		}
		r.writes = nil
	}

	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mu.Lock()
			defer mu.Unlock()
			r.Add(fmt.Appendf(nil, "<%d>", i), i)
			if err := g.Drain(&mu, r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for _, w := range r.writes {
		for _, p := range w {
			seen[p]++
		}
	}
	for i := range n {
		if p := fmt.Sprintf("%d:<%d>", i, i); seen[p] != 1 {
			t.Fatalf("%s written %d times, want once: %v", p, seen[p], r.writes)
		}
	}
	t.Logf("%d pieces added together: %d writes", n, len(r.writes))
	if len(r.writes) > n/8 {
		t.Errorf("%d pieces added together left in %d writes, want them gathered (at most %d)", n, len(r.writes), n/8)
	}

	// A failed write ends the drain and drops what is buffered.
	r.writes, r.fail = nil, errors.New("gone")
	mu.Lock()
	r.Add([]byte("x"), 1)
	err := g.DrainNow(&mu, r)
	left := len(r.buf.ps)
	mu.Unlock()
	if !errors.Is(err, r.fail) || len(r.writes) != 1 || left != 0 {
		t.Errorf("failed write: %v, %d writes, %d pieces left; want the error, 1 write, none left", err, len(r.writes), left)
	}
}
