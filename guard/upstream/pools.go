package upstream

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// Pools keeps upstream pools across configuration reloads. A
// configuration whose upstream settings (URLs, CA, timeout, attempts,
// 0x20) are those of a running pool shares that pool: its connections,
// its health and its measurements survive a reload (LuCI's Save & Apply
// reloads for any change). A pool nobody uses any more is shut down once
// the queries in progress on it are done.
type Pools struct {
	log *slog.Logger

	mu    sync.Mutex
	pools map[string]*sharedPool
}

type sharedPool struct {
	key  string
	pool *Pool
	refs int
}

// NewPools returns an empty set; log (slog.Default() if nil) gets each
// pool's totals when it shuts down.
func NewPools(log *slog.Logger) *Pools {
	if log == nil {
		log = slog.Default()
	}
	return &Pools{log: log, pools: map[string]*sharedPool{}}
}

// poolKey is what makes two pools the same: the URLs and the settings
// that change how they are asked. A CA file counts by its contents, so a
// renewed CA is a new pool. Logger and OnRecover are the first pool's.
func poolKey(urls []string, opts Options) string {
	ca := ""
	if opts.CAFile != "" {
		b, err := os.ReadFile(opts.CAFile)
		sum := sha256.Sum256(b)
		ca = fmt.Sprintf("%s %x %v", opts.CAFile, sum, err)
	}
	return fmt.Sprintf("%q|%s|%x|%p|%v|%d|%v|%v|%v", urls, ca, sha256.Sum256(opts.CAPEM), opts.Roots,
		opts.Timeout, opts.MaxAttempts, opts.Randomize0x20, opts.ProbeMin, opts.ProbeMax)
}

// Acquire returns the running pool with these settings, or a new one,
// and the function that drops this use of it: the last use shuts the
// pool down, letting its queries in progress finish until ctx ends, and
// logs what each of its upstreams did.
func (ps *Pools) Acquire(urls []string, opts Options) (*Pool, func(ctx context.Context), error) {
	key := poolKey(urls, opts)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	sp := ps.pools[key]
	if sp == nil {
		pool, err := NewPool(urls, opts)
		if err != nil {
			return nil, nil, err
		}
		sp = &sharedPool{key: key, pool: pool}
		ps.pools[key] = sp
	}
	sp.refs++
	var once sync.Once
	return sp.pool, func(ctx context.Context) { once.Do(func() { ps.release(ctx, sp) }) }, nil
}

func (ps *Pools) release(ctx context.Context, sp *sharedPool) {
	ps.mu.Lock()
	sp.refs--
	last := sp.refs == 0
	if last {
		delete(ps.pools, sp.key)
	}
	ps.mu.Unlock()
	if !last {
		return
	}
	_ = sp.pool.Shutdown(ctx)
	// What each upstream did while this pool ran: the answers the shield
	// refused and the flood copies dropped are counted per upstream.
	for _, st := range sp.pool.Stats() {
		ps.log.Info("upstream totals", "upstream", st.URL, "up", st.Up, "rtt", st.RTT,
			"queries", st.Queries, "failures", st.Failures, "mismatches", st.Mismatches,
			"flood", st.Flood, "refused", st.Refused, "case_fallbacks", st.CaseFallbacks,
			"reader_late", st.ReaderLate, "reader_errors", st.ReaderErrors)
		if st.ReaderLate+st.ReaderErrors > 0 { // should never happen: say so where it shows
			ps.log.Warn("upstream reader woke late or failed", "upstream", st.URL,
				"reader_late", st.ReaderLate, "reader_errors", st.ReaderErrors)
		}
	}
}

// Stats returns the counters and state of every upstream of the running
// pools (a reload's old pool until it is released).
func (ps *Pools) Stats() []Stats {
	ps.mu.Lock()
	pools := make([]*Pool, 0, len(ps.pools))
	for _, sp := range ps.pools {
		pools = append(pools, sp.pool)
	}
	ps.mu.Unlock()
	var out []Stats
	for _, p := range pools {
		out = append(out, p.Stats()...)
	}
	return out
}
