package stage

import (
	"sync"
	"sync/atomic"
	"time"
)

// Workers runs jobs on goroutines that stay for the next job: a worker
// no job needed for a whole idle time exits. A goroutine started for each
// job would begin with a small stack and grow it again, copying it two
// or three times, on every cache miss (the chain, the upstream exchange
// and the validator are deep); a worker keeps the stack its first jobs
// grew. Workers are started on demand, up to a bound, and Close joins
// every one. Each worker has room of its own (S, zero when the worker
// starts) that its jobs may reuse.
//
// A worker waits for its next job on the job channel alone, with no timer
// of its own to reset for every job: one reaper goroutine, running while
// there are workers, looks once an idle time at the fewest workers that
// were waiting at any moment since it last looked, and retires that many
// (they were not needed all that time).
type Workers[T, S any] struct {
	run  func(*S, T)
	max  int // 0: no bound
	idle time.Duration
	jobs chan T // unbuffered: a job goes only to a worker waiting for one
	// stop retires the waiting worker that receives from it (the reaper
	// sends); closed by Close, it stops them all and the reaper.
	stop chan struct{}

	waiting atomic.Int32 // workers waiting for a job
	fewest  atomic.Int32 // the fewest waiting since the reaper last looked

	mu      sync.Mutex // guards n, closed, reaping, and sends on stop
	n       int        // workers running
	closed  bool
	reaping bool // the reaper runs
	wg      sync.WaitGroup
}

// NewWorkers returns workers that call run with their room and each job,
// at most max at once (0: no bound); a worker no job needed for idle
// (for two at most) exits.
func NewWorkers[T, S any](run func(*S, T), max int, idle time.Duration) *Workers[T, S] {
	return &Workers[T, S]{run: run, max: max, idle: idle, jobs: make(chan T), stop: make(chan struct{})}
}

// Go runs job on a worker waiting for one, or on a new worker if fewer
// than the bound are running. It reports false, and job does not run,
// when every worker the bound allows is busy or the workers are closed.
func (w *Workers[T, S]) Go(job T) bool {
	select {
	case w.jobs <- job:
		return true
	default:
	}
	w.mu.Lock()
	if w.closed || (w.max > 0 && w.n >= w.max) {
		w.mu.Unlock()
		return false
	}
	w.n++
	w.wg.Add(1)
	if !w.reaping {
		w.reaping = true
		w.wg.Add(1)
		go w.reap()
	}
	w.mu.Unlock()
	go w.work(job)
	return true
}

// Running is how many workers there are, busy or waiting for a job.
func (w *Workers[T, S]) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// work runs job, then the jobs handed to it, until it is retired or the
// workers are closed.
func (w *Workers[T, S]) work(job T) {
	defer w.wg.Done()
	room := new(S)
	for {
		w.run(room, job)
		w.waiting.Add(1)
		select {
		case job = <-w.jobs:
			n := w.waiting.Add(-1)
			for f := w.fewest.Load(); n < f && !w.fewest.CompareAndSwap(f, n); f = w.fewest.Load() {
			}
		case <-w.stop:
			w.waiting.Add(-1)
			w.mu.Lock()
			w.n--
			w.mu.Unlock()
			return
		}
	}
}

// reap retires, once an idle time, the workers that waited all of it; it
// returns when no worker is left or the workers are closed.
func (w *Workers[T, S]) reap() {
	defer w.wg.Done()
	t := time.NewTicker(w.idle)
	defer t.Stop()
	w.fewest.Store(w.waiting.Load())
	for {
		select {
		case <-t.C:
		case <-w.stop: // closed
			return
		}
		w.mu.Lock()
		if w.closed || w.n == 0 {
			w.reaping = false
			w.mu.Unlock()
			return
		}
		for spare := w.fewest.Swap(w.waiting.Load()); spare > 0; spare-- {
			select {
			case w.stop <- struct{}{}: // a waiting worker takes it and exits
			default:
				spare = 0 // none waits now
			}
		}
		w.mu.Unlock()
	}
}

// Close stops the workers waiting for a job and waits for the busy ones
// to finish theirs; Go runs nothing once it returned.
func (w *Workers[T, S]) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	w.wg.Wait()
}
