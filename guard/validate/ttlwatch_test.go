package validate

import (
	"bytes"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestTTLWatch(t *testing.T) {
	var logs bytes.Buffer
	w := NewTTLWatch(100, 2, slog.New(slog.NewTextHandler(&logs, nil)))
	steps := []struct {
		name string
		ttl  uint32
		jump bool
	}{
		{"a.example.", 300, false},          // first sight is no jump
		{"a.example.", 3000, false},         // x10
		{"a.example.", 1_000_000_000, true}, // ttl-huge
		{"A.EXAMPLE.", 60, false},           // a drop is not a jump
		{"b.example.", 0, false},
		{"b.example.", 100, false}, // from 0, read as 1: x100 is not above 100
		{"b.example.", 10101, true},
		{"c.example.", 1, false},         // evicts a.example. (limit 2)
		{"a.example.", 1_000_000, false}, // forgotten: first sight again
	}
	for i, s := range steps {
		if got := w.ObserveTTL(s.name, dns.TypeA, s.ttl); got != s.jump {
			t.Errorf("step %d %s %d: jump %v, want %v", i, s.name, s.ttl, got, s.jump)
		}
	}
	if w.Jumps() != 2 || w.Len() != 2 {
		t.Errorf("jumps %d len %d", w.Jumps(), w.Len())
	}
	if n := strings.Count(logs.String(), "TTL jump"); n != 2 {
		t.Errorf("%d log lines:\n%s", n, logs.String())
	}
	off := NewTTLWatch(1, 10, nil)
	off.ObserveTTL("a.", 1, 1)
	if off.ObserveTTL("a.", 1, 1<<30) {
		t.Error("factor 1 should disable the watch")
	}
	m := msg("a.example.", dns.TypeA, "a.example. 5 A 93.184.216.34")
	w2 := NewTTLWatch(10, 10, nil)
	w2.Observe(m)
	m.Answer[0].Header().Ttl = 500
	if !w2.Observe(m) {
		t.Error("Observe missed a jump")
	}
}

// TestTTLWatchRecency: the watch forgets exactly the least recently seen
// pair, as a plain list kept in recency order does, over a long run of
// names seen again and new (the slots are reused in place).
func TestTTLWatchRecency(t *testing.T) {
	const limit = 7
	w := NewTTLWatch(1000, limit, nil)
	var model []string // most recent first
	rng := uint32(1)
	for step := range 5000 {
		rng = rng*1103515245 + 12345
		name := "n" + strconv.Itoa(int(rng>>16)%12) + ".example."
		// Every pair's last TTL is 1: a TTL far above it is a jump
		// exactly when the pair is remembered.
		remembered := slices.Contains(model, name)
		if got := w.ObserveTTL(name, dns.TypeA, 1_000_000); got != remembered {
			t.Fatalf("step %d: %s jump %v, want %v (remembered: %v)", step, name, got, remembered, model)
		}
		w.ObserveTTL(name, dns.TypeA, 1) // a drop: back to 1
		model = slices.DeleteFunc(model, func(s string) bool { return s == name })
		model = append([]string{name}, model...)
		if len(model) > limit {
			model = model[:limit]
		}
		if w.Len() != len(model) {
			t.Fatalf("step %d: %d remembered, model %d", step, w.Len(), len(model))
		}
	}
	// Exactly the model's names are remembered: each gives a jump from 1.
	for _, name := range model {
		if !w.ObserveTTL(name, dns.TypeA, 1_000_000) {
			t.Errorf("%s (recently seen) was forgotten", name)
		}
	}
}
