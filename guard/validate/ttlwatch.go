package validate

import (
	"hash/maphash"
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
//
// A pair is remembered by a 64-bit hash of its canonical name and type
// (seeded per process, so nobody can aim for a collision; two of the
// limit's pairs sharing one is a chance under 2^-30 at 20,000 pairs, and
// would only compare the two names' TTLs), in a slot of one array linked
// by index: about 40 octets a pair, where a string key, a list element
// and an entry took about 240 (4.7 MB of the heap at the cache's 20,000
// entries).
type TTLWatch struct {
	factor float64
	limit  int
	log    *slog.Logger
	seed   maphash.Seed

	mu         sync.Mutex
	index      map[uint64]int32 // key -> slot
	slots      []watchSlot      // at most limit
	head, tail int32            // most and least recently seen slot; -1: none
	jumps      uint64
}

// watchSlot is one remembered pair, on the recency list through prev
// and next (slot indices, -1 at the ends).
type watchSlot struct {
	key        uint64
	ttl        uint32
	prev, next int32
}

// NewTTLWatch watches up to limit (name, type) pairs and reports a TTL
// that grows by more than factor at once. factor <= 1 disables it.
func NewTTLWatch(factor float64, limit int, log *slog.Logger) *TTLWatch {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TTLWatch{factor: factor, limit: max(limit, 1), log: log, seed: maphash.MakeSeed(),
		index: map[uint64]int32{}, head: -1, tail: -1}
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
	var h maphash.Hash
	h.SetSeed(w.seed)
	h.WriteString(canon(name))
	h.WriteByte(byte(qtype >> 8))
	h.WriteByte(byte(qtype))
	k := h.Sum64()
	w.mu.Lock()
	var prev uint32
	seen := false
	if i, ok := w.index[k]; ok {
		s := &w.slots[i]
		prev, seen = s.ttl, true
		s.ttl = ttl
		w.unlink(i)
		w.pushFront(i)
	} else {
		var i int32
		if len(w.slots) < w.limit {
			w.slots = append(w.slots, watchSlot{})
			i = int32(len(w.slots) - 1)
		} else { // forget the least recently seen
			i = w.tail
			w.unlink(i)
			delete(w.index, w.slots[i].key)
		}
		w.slots[i] = watchSlot{key: k, ttl: ttl}
		w.index[k] = i
		w.pushFront(i)
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

// unlink takes slot i off the recency list (mu held).
func (w *TTLWatch) unlink(i int32) {
	s := &w.slots[i]
	if s.prev >= 0 {
		w.slots[s.prev].next = s.next
	} else {
		w.head = s.next
	}
	if s.next >= 0 {
		w.slots[s.next].prev = s.prev
	} else {
		w.tail = s.prev
	}
	s.prev, s.next = -1, -1
}

// pushFront puts slot i first on the recency list (mu held).
func (w *TTLWatch) pushFront(i int32) {
	s := &w.slots[i]
	s.prev, s.next = -1, w.head
	if w.head >= 0 {
		w.slots[w.head].prev = i
	}
	w.head = i
	if w.tail < 0 {
		w.tail = i
	}
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
	return len(w.index)
}
