package validate

import (
	"container/list"
	"log/slog"
	"sync"

	"github.com/miekg/dns"
)

// TTLWatch notices a sudden jump in a name's TTL (the study's
// Recommendation 8: detect extreme or abrupt TTL changes), for example a
// name served at 300 s that suddenly comes back at 10^9 s. It remembers
// the last TTL of a bounded number of (name, type) pairs, forgetting the
// least recently seen, and logs each jump. Unlike Validator it has state;
// it is safe for concurrent use.
type TTLWatch struct {
	factor float64
	limit  int
	log    *slog.Logger

	mu    sync.Mutex
	index map[watchKey]*list.Element
	order *list.List // front: most recently seen
	jumps uint64
}

type watchKey struct {
	name string
	typ  uint16
}

type watchEntry struct {
	key watchKey
	ttl uint32
}

// NewTTLWatch watches up to limit (name, type) pairs and reports a TTL
// that grows by more than factor at once. factor <= 1 disables it.
func NewTTLWatch(factor float64, limit int, log *slog.Logger) *TTLWatch {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TTLWatch{factor: factor, limit: max(limit, 1), log: log, index: map[watchKey]*list.Element{}, order: list.New()}
}

// Observe records the smallest TTL of m's answer section for the question
// and reports whether it jumped.
func (w *TTLWatch) Observe(m *dns.Msg) bool {
	if m == nil || len(m.Question) != 1 || len(m.Answer) == 0 {
		return false
	}
	ttl := m.Answer[0].Header().Ttl
	for _, rr := range m.Answer[1:] {
		ttl = min(ttl, rr.Header().Ttl)
	}
	return w.ObserveTTL(m.Question[0].Name, m.Question[0].Qtype, ttl)
}

// ObserveTTL records ttl for (name, qtype) and reports whether it jumped
// by more than the factor since the last observation.
func (w *TTLWatch) ObserveTTL(name string, qtype uint16, ttl uint32) bool {
	if w.factor <= 1 {
		return false
	}
	k := watchKey{canon(name), qtype}
	w.mu.Lock()
	var prev uint32
	seen := false
	if el, ok := w.index[k]; ok {
		e := el.Value.(*watchEntry)
		prev, seen = e.ttl, true
		e.ttl = ttl
		w.order.MoveToFront(el)
	} else {
		w.index[k] = w.order.PushFront(&watchEntry{k, ttl})
		for w.order.Len() > w.limit {
			old := w.order.Back()
			w.order.Remove(old)
			delete(w.index, old.Value.(*watchEntry).key)
		}
	}
	jump := seen && float64(ttl) > w.factor*float64(max(prev, 1))
	if jump {
		w.jumps++
	}
	w.mu.Unlock()
	if jump {
		w.log.Warn("TTL jump", "name", name, "type", dns.Type(qtype).String(), "from", prev, "to", ttl, "factor", w.factor)
	}
	return jump
}

// Jumps is the number of jumps seen.
func (w *TTLWatch) Jumps() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.jumps
}

// Len is the number of (name, type) pairs remembered.
func (w *TTLWatch) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.order.Len()
}
