package stage

import (
	"sync"
	"time"
)

// Workers runs jobs on goroutines that stay for the next job: a worker
// done with one waits up to its idle time for another before it exits.
// A goroutine started for each job would begin with a small stack and
// grow it again, copying it two or three times, on every cache miss (the
// chain, the upstream exchange and the validator are deep); a worker
// keeps the stack its first jobs grew. Workers are started on demand, up
// to a bound, and Close joins every one. Each worker has room of its own
// (S, zero when the worker starts) that its jobs may reuse.
type Workers[T, S any] struct {
	run  func(*S, T)
	max  int // 0: no bound
	idle time.Duration
	jobs chan T        // unbuffered: a job goes only to a worker waiting for one
	quit chan struct{} // closed by Close

	mu     sync.Mutex
	n      int // workers running
	closed bool
	wg     sync.WaitGroup
}

// NewWorkers returns workers that call run with their room and each job,
// at most max at once (0: no bound), each waiting idle for its next job
// before it exits.
func NewWorkers[T, S any](run func(*S, T), max int, idle time.Duration) *Workers[T, S] {
	return &Workers[T, S]{run: run, max: max, idle: idle, jobs: make(chan T), quit: make(chan struct{})}
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

// work runs job, then the jobs handed to it, until it has waited idle
// for one or the workers are closed.
func (w *Workers[T, S]) work(job T) {
	defer w.wg.Done()
	room := new(S)
	w.run(room, job)
	idle := time.NewTimer(w.idle)
	defer idle.Stop()
	for {
		select {
		case job = <-w.jobs:
			w.run(room, job)
			idle.Reset(w.idle)
			continue
		case <-idle.C:
		case <-w.quit:
		}
		w.mu.Lock()
		w.n--
		w.mu.Unlock()
		return
	}
}

// Close stops the workers waiting for a job and waits for the busy ones
// to finish theirs; Go runs nothing after it.
func (w *Workers[T, S]) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
	}
	w.mu.Unlock()
	w.wg.Wait()
}
