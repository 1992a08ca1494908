package tablei

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

func TestQueryConsistency(t *testing.T) {
	for _, tc := range []struct {
		early, repeats int
		want           Mark
	}{
		{0, 0, Unknown},
		{2, 2, Unknown}, // too few repeats, however early
		{0, 3, Resilient},
		{1, 3, Vulnerable},   // a third early
		{1, 10, Resilient},   // exactly the share: not over it
		{2, 10, Vulnerable},  // over it
		{10, 100, Resilient}, // the boundary holds at scale
		{11, 100, Vulnerable},
		{943, 946, Vulnerable},
	} {
		if got := QueryConsistency(tc.early, tc.repeats); got != tc.want {
			t.Errorf("QueryConsistency(%d early of %d) = %q, want %q", tc.early, tc.repeats, got, tc.want)
		}
	}
}

func TestEarly(t *testing.T) {
	for _, tc := range []struct {
		since time.Duration
		ttl   uint32
		want  bool
	}{
		{time.Second, 5, true},
		{3999 * time.Millisecond, 5, true},
		{4 * time.Second, 5, false}, // within the slack of the TTL's end
		{5 * time.Second, 5, false}, // at the end, timed from the device's send
		{6 * time.Second, 5, false},
		{0, 0, false}, // TTL 0: never valid, so never early
		{0, 1, false}, // TTL 1: within the slack from the start
		{time.Hour, 1_000_000_000, true},
	} {
		if got := Early(tc.since, tc.ttl); got != tc.want {
			t.Errorf("Early(%v, TTL %d) = %v, want %v", tc.since, tc.ttl, got, tc.want)
		}
	}
}

func TestSecureDNS(t *testing.T) {
	for _, tc := range []struct {
		clear, enc bool
		want       Mark
	}{
		{false, false, Unknown},
		{true, false, Vulnerable},
		{false, true, Resilient},
		{true, true, Vulnerable}, // falls back to cleartext: exposed
	} {
		if got := SecureDNS(tc.clear, tc.enc); got != tc.want {
			t.Errorf("SecureDNS(%v, %v) = %q, want %q", tc.clear, tc.enc, got, tc.want)
		}
	}
}

func TestRandomness(t *testing.T) {
	for v, want := range map[entropy.Verdict]Mark{entropy.Weak: Vulnerable, entropy.Random: Resilient, entropy.Insufficient: Unknown} {
		if got := Randomness(v); got != want {
			t.Errorf("Randomness(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestRow(t *testing.T) {
	r := Passive()
	if r.String() != "? ? ? ? - - -" || len(r.Marks()) != len(Columns()) {
		t.Errorf("passive row %q, %d marks for %d columns", r, len(r.Marks()), len(Columns()))
	}
	b, _ := json.Marshal(r)
	if string(b) != `{"secure_dns":"?","random_port":"?","random_id":"?","query_consistency":"?","modified_rr_resilience":"-","forged_ttl_resilience":"-","dos_resilience":"-"}` {
		t.Errorf("JSON %s", b)
	}
	r.HardCodedResolver = Vulnerable
	if b, _ := json.Marshal(r); !strings.HasSuffix(string(b), `,"hard_coded_resolver":"x"}`) {
		t.Errorf("JSON %s", b)
	}
}
