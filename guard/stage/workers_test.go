package stage

import (
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after a generous
// while (an outcome awaited, not a time asserted).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestWorkersReuse: jobs handed one after another, with a bound of one
// worker, all run on the same worker (its room counts them), which does
// not exit while jobs keep coming within its idle time.
func TestWorkersReuse(t *testing.T) {
	type room struct{ jobs int }
	seen := make(chan int)
	w := NewWorkers(func(r *room, _ int) {
		r.jobs++
		seen <- r.jobs
	}, 1, time.Hour)
	defer w.Close()
	for i := 1; i <= 100; i++ {
		// The one worker takes the job once it is back waiting.
		for !w.Go(i) {
			time.Sleep(time.Microsecond)
		}
		if n := <-seen; n != i {
			t.Fatalf("job %d ran as its worker's job %d: a new worker took it", i, n)
		}
	}
	if n := w.Running(); n != 1 {
		t.Errorf("%d workers, want 1", n)
	}
}

// TestWorkersBound: no more than max jobs run at once; a job beyond is
// refused (Go reports false and it never runs), and one is taken again
// once a worker is free.
func TestWorkersBound(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	ran := map[int]bool{}
	w := NewWorkers(func(_ *struct{}, i int) {
		mu.Lock()
		ran[i] = true
		mu.Unlock()
		<-release
	}, 3, time.Hour)
	for i := range 3 {
		if !w.Go(i) {
			t.Fatalf("job %d refused with %d of 3 workers busy", i, i)
		}
	}
	if w.Go(99) {
		t.Fatal("a fourth job taken with 3 of 3 workers busy")
	}
	if n := w.Running(); n != 3 {
		t.Errorf("%d workers, want 3", n)
	}
	release <- struct{}{} // one job ends: its worker waits for the next
	waitFor(t, "a freed worker takes a job", func() bool { return w.Go(3) })
	if n := w.Running(); n != 3 {
		t.Errorf("%d workers after a reuse, want 3", n)
	}
	close(release)
	w.Close()
	if ran[99] {
		t.Error("the refused job ran")
	}
	for i := range 4 {
		if !ran[i] {
			t.Errorf("job %d never ran", i)
		}
	}
}

// TestWorkersIdleExit: a worker with no job for its idle time exits; the
// next job starts a new one.
func TestWorkersIdleExit(t *testing.T) {
	done := make(chan struct{}, 2)
	w := NewWorkers(func(_ *struct{}, _ int) { done <- struct{}{} }, 0, time.Millisecond)
	defer w.Close()
	if !w.Go(1) {
		t.Fatal("job refused")
	}
	<-done
	waitFor(t, "the idle worker exits", func() bool { return w.Running() == 0 })
	if !w.Go(2) {
		t.Fatal("job refused after the idle exit")
	}
	<-done
}

// TestWorkersCloseJoins: Close stops the waiting workers and returns only
// once the busy ones have finished their jobs; after it, Go runs nothing.
func TestWorkersCloseJoins(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	finished := false
	w := NewWorkers(func(_ *struct{}, i int) {
		if i == 0 {
			return // this worker then waits for a job
		}
		close(started)
		<-release
		finished = true // read after Close: Close must have waited
	}, 0, time.Hour)
	w.Go(0)
	w.Go(1)
	<-started
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a job running")
	default:
	}
	close(release)
	<-closed
	if !finished {
		t.Error("Close returned before the busy worker's job finished")
	}
	if n := w.Running(); n != 0 {
		t.Errorf("%d workers after Close, want 0", n)
	}
	if w.Go(2) {
		t.Error("a job taken after Close")
	}
}

// BenchmarkWorkers hands jobs to workers from 4 goroutines per CPU, each
// waiting for its job to finish before the next: the cost of a hand-off
// and of a worker's wait for its next job.
func BenchmarkWorkers(b *testing.B) {
	w := NewWorkers(func(_ *struct{}, done chan struct{}) { done <- struct{}{} }, 0, time.Second)
	defer w.Close()
	b.SetParallelism(4)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan struct{})
		for pb.Next() {
			if !w.Go(done) {
				b.Error("job refused")
				return
			}
			<-done
		}
	})
}
