package validate

import (
	"bytes"
	"log/slog"
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
