package dnssec

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
)

// TestBootClock: signature validity times are not checked while the
// clock is earlier than its lower bound (the later of the build time and
// the newest time recorded in the state file), logged once with the
// reason, and checked again from the moment the clock passes it; trusted
// times are recorded in the state file at most once an hour.
func TestBootClock(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	build := at("2026-06-01T00:00:00Z")
	type step struct {
		now     string
		trusted bool
	}
	tests := []struct {
		name       string
		build      time.Time
		state      string // recorded time in the state file; "" none
		steps      []step
		wantReason string // in the "earlier" line; "" no such line
		wantPassed bool   // the "passed" line
		wantRecord string // state file's time afterwards
		wantWarn   string // another warning expected
	}{
		{name: "boot in 1970, NTP syncs", build: build, steps: []step{
			{"1970-01-01T00:00:10Z", false}, {"1970-01-01T00:01:00Z", false},
			{"2026-05-31T23:59:59Z", false}, {"2026-06-01T00:00:00Z", true},
			{"2026-06-01T00:30:00Z", true}, {"2026-06-01T01:00:01Z", true}},
			wantReason: "build time", wantPassed: true, wantRecord: "2026-06-01T01:00:01Z"},
		{name: "clock right from the start", build: build, steps: []step{
			{"2026-11-30T17:00:00Z", true}, {"2026-11-30T17:10:00Z", true}},
			wantRecord: "2026-11-30T17:00:00Z"},
		{name: "no build time: fixed bound", steps: []step{
			{"2025-12-31T23:00:00Z", false}, {"2026-01-01T00:00:01Z", true}},
			wantReason: "fixed lower bound", wantPassed: true, wantRecord: "2026-01-01T00:00:01Z"},
		{name: "state file newer than the build", build: build, state: "2026-10-01T00:00:00Z", steps: []step{
			{"2026-07-01T00:00:00Z", false}, {"2026-09-30T23:59:59Z", false},
			{"2026-10-01T00:20:00Z", true}, {"2026-10-01T01:00:00Z", true}},
			// Recorded one hour after the state file's time.
			wantReason: "state file", wantPassed: true, wantRecord: "2026-10-01T01:00:00Z"},
		{name: "state file older than the build", build: build, state: "2026-02-01T00:00:00Z", steps: []step{
			{"2026-03-01T00:00:00Z", false}, {"2026-06-02T00:00:00Z", true}},
			wantReason: "build time", wantPassed: true, wantRecord: "2026-06-02T00:00:00Z"},
		{name: "damaged state value ignored", build: build, state: "yesterday", steps: []step{
			{"2026-07-01T00:00:00Z", true}},
			wantRecord: "2026-07-01T00:00:00Z", wantWarn: "recorded clock damaged"},
		{name: "never passes: nothing recorded", build: build, state: "2026-06-05T00:00:00Z", steps: []step{
			{"2000-01-01T00:00:00Z", false}, {"2000-01-01T02:00:00Z", false}},
			wantReason: "state file", wantRecord: "2026-06-05T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := device.OpenStore(filepath.Join(t.TempDir(), "state.db"), "", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			if tt.state != "" {
				if err := store.PutMeta(ClockStateKey, []byte(tt.state)); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			var now time.Time
			reason := ""
			if !tt.build.IsZero() {
				reason = "build time"
			}
			c := NewBootClock(func() time.Time { return now }, tt.build, reason, store, slog.New(slog.NewTextHandler(&logs, nil)))
			for _, s := range tt.steps {
				now = at(s.now)
				if got := c.Trusted(); got != s.trusted {
					t.Errorf("at %s: trusted %v, want %v", s.now, got, s.trusted)
				}
				if got := c.Trusted(); got != s.trusted { // asked again: same
					t.Errorf("at %s (again): trusted %v, want %v", s.now, got, s.trusted)
				}
			}
			out := logs.String()
			earlier := strings.Count(out, "earlier than its known lower bound")
			switch {
			case tt.wantReason == "" && earlier != 0:
				t.Errorf("clock-behind logged though the clock was right:\n%s", out)
			case tt.wantReason != "" && earlier != 1:
				t.Errorf("clock-behind logged %d times, want once:\n%s", earlier, out)
			case tt.wantReason != "" && !strings.Contains(out, tt.wantReason):
				t.Errorf("log does not give the reason %q:\n%s", tt.wantReason, out)
			}
			if passed := strings.Count(out, "passed its lower bound"); passed != map[bool]int{true: 1}[tt.wantPassed] {
				t.Errorf("clock-passed logged %d times, want passed=%v:\n%s", passed, tt.wantPassed, out)
			}
			if tt.wantWarn != "" && !strings.Contains(out, tt.wantWarn) {
				t.Errorf("no %q in the log:\n%s", tt.wantWarn, out)
			}
			if got, err := store.GetMeta(ClockStateKey); err != nil || string(got) != tt.wantRecord {
				t.Errorf("recorded %q (%v), want %q", got, err, tt.wantRecord)
			}
		})
	}

	// The next boot starts from what the last one recorded.
	store, err := device.OpenStore(filepath.Join(t.TempDir(), "state.db"), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := at("2026-11-30T12:00:00Z")
	if !NewBootClock(func() time.Time { return now }, build, "build time", store, slog.New(slog.DiscardHandler)).Trusted() {
		t.Fatal("right clock not trusted")
	}
	now = at("2026-08-01T00:00:00Z") // rebooted, RTC-less, clock from the image
	if NewBootClock(func() time.Time { return now }, build, "build time", store, slog.New(slog.DiscardHandler)).Trusted() {
		t.Error("clock before the recorded time trusted after a restart")
	}
	// Without a state file the build time alone bounds it.
	if !NewBootClock(func() time.Time { return now }, build, "build time", nil, slog.New(slog.DiscardHandler)).Trusted() {
		t.Error("no state file: clock past the build time not trusted")
	}
}

// TestBootClockWaitNTP: with --dnssec-wait-ntp the clock is not trusted,
// even past every bound, until NTPSynced; then it is (even before the
// bound: NTP's time wins) and the time is recorded at once.
func TestBootClockWaitNTP(t *testing.T) {
	store, err := device.OpenStore(filepath.Join(t.TempDir(), "state.db"), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	build := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC) // past the build time
	var logs bytes.Buffer
	c := NewBootClock(func() time.Time { return now }, build, "build time", store, slog.New(slog.NewTextHandler(&logs, nil)))
	c.waitNTP.Store(true)
	for range 3 {
		if c.Trusted() {
			t.Fatal("trusted before NTP synced")
		}
	}
	if got, _ := store.GetMeta(ClockStateKey); len(got) != 0 {
		t.Errorf("recorded %q before NTP synced", got)
	}
	now = time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	c.NTPSynced()
	c.NTPSynced() // every stratum change signals again
	if !c.Trusted() {
		t.Fatal("not trusted after NTP synced")
	}
	if got, _ := store.GetMeta(ClockStateKey); string(got) != "2026-11-30T18:00:00Z" {
		t.Errorf("recorded %q, want the synced time", got)
	}
	out := logs.String()
	if n := strings.Count(out, "waiting for NTP"); n != 1 {
		t.Errorf("waiting logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "NTP has synced"); n != 1 {
		t.Errorf("synced logged %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "earlier than its known lower bound") {
		t.Errorf("lower-bound line while waiting for NTP:\n%s", out)
	}

	// NTP's time wins over a lower bound it is earlier than (a state
	// file written while the clock was wrongly in the future).
	now = build.Add(-24 * time.Hour)
	c2 := NewBootClock(func() time.Time { return now }, build, "build time", nil, slog.New(slog.DiscardHandler))
	c2.waitNTP.Store(true)
	c2.NTPSynced()
	if !c2.Trusted() {
		t.Error("synced clock before the build time not trusted")
	}
	// Without the flag too (the guard restarted after the sync file was
	// made, then NTP stepped again): the bound rules until the signal.
	c3 := NewBootClock(func() time.Time { return now }, build, "build time", nil, slog.New(slog.DiscardHandler))
	if c3.Trusted() {
		t.Error("clock before the build time trusted")
	}
	c3.NTPSynced()
	if !c3.Trusted() {
		t.Error("without --dnssec-wait-ntp: synced clock before the build time not trusted")
	}
}
