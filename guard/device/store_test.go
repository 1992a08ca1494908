package device

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// logBuf is a logger whose lines a test reads.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writeState writes n device records to a state file at path and copies
// it to persist (when set).
func writeState(t testing.TB, path, persist string, macs ...string) {
	t.Helper()
	s, err := OpenStore(path, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	reg, err := NewRegistry(Options{Store: s, Persist: persist, Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i, mac := range macs {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 2)}), 4000)
		for q := range 20 {
			reg.ObserveQuery(mac, netip.MustParseAddrPort("10.0.0.1:53"), udpQuery(withPort(src, uint16(1024+q*31)), uint16(q*7919), "x.example."))
		}
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func storeIDs(t testing.TB, s *Store) []string {
	t.Helper()
	recs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids
}

// damage spoils a state file the ways flash and RAM files get spoiled.
var damage = map[string]func(t *testing.T, path string){
	"truncated to half": func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	},
	"truncated to 100 bytes": func(t *testing.T, path string) {
		if err := os.Truncate(path, 100); err != nil {
			t.Fatal(err)
		}
	},
	"meta pages overwritten": func(t *testing.T, path string) { overwrite(t, path, 0, 8192) },
	"data pages overwritten": func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		overwrite(t, path, 8192, int(fi.Size())-8192)
	},
	"empty file": func(t *testing.T, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	},
}

func overwrite(t *testing.T, path string, off, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xa5, 0x17, 0x00, 0xff, 0x42, 0x99, 0x3c}, n/7+1)[:n]
	if _, err := f.WriteAt(junk, int64(off)); err != nil {
		t.Fatal(err)
	}
}

func TestStoreDamagedFileFallsBackToPersistentCopy(t *testing.T) {
	macs := []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"}
	for name, spoil := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "tmp", "state.db")
			persist := filepath.Join(dir, "flash", "state.db")
			writeState(t, path, persist, macs...)
			spoil(t, path)
			var logs logBuf
			s, err := OpenStore(path, persist, logs.logger())
			if err != nil {
				t.Fatalf("open: %v\n%s", err, logs.String())
			}
			defer s.Close()
			if got := storeIDs(t, s); len(got) != len(macs) {
				t.Errorf("records after fallback: %v, want the persistent copy's %v", got, macs)
			}
			l := logs.String()
			if !strings.Contains(l, "falling back to the persistent copy") || !strings.Contains(l, "state restored from the persistent copy after damage") {
				t.Errorf("fallback not logged:\n%s", l)
			}
			if aside, _ := filepath.Glob(path + ".damaged-*"); len(aside) != 1 {
				t.Errorf("damaged file not kept aside: %v", aside)
			}
			// The next persist copies the same records: nothing to report.
			if err := s.CopyTo(persist); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "persistent state copy replaced") {
				t.Errorf("a persist that loses nothing was reported:\n%s", logs.String())
			}
		})
	}
}

func TestStoreBothCopiesDamagedStartsFresh(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tmp", "state.db")
	persist := filepath.Join(dir, "flash", "state.db")
	writeState(t, path, persist, "02:00:00:00:00:01")
	damage["data pages overwritten"](t, path)
	damage["meta pages overwritten"](t, persist)
	var logs logBuf
	s, err := OpenStore(path, persist, logs.logger())
	if err != nil {
		t.Fatalf("open: %v\n%s", err, logs.String())
	}
	defer s.Close()
	if got := storeIDs(t, s); len(got) != 0 {
		t.Errorf("records %v from two damaged files", got)
	}
	if l := logs.String(); !strings.Contains(l, "persistent state copy damaged too; starting fresh") {
		t.Errorf("fresh start not explained:\n%s", l)
	}
	if err := s.CopyTo(persist); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, "persistent state copy unreadable; replacing it") {
		t.Errorf("replacing the damaged copy not logged:\n%s", l)
	}
	// The persistent copy is a good (empty) file again.
	if _, err := ReadRecords(persist, quiet()); err != nil {
		t.Errorf("persistent copy after persist: %v", err)
	}
}

func TestStorePersistOverOlderCopyNamesWhatIsLost(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tmp", "state.db")
	persist := filepath.Join(dir, "flash", "state.db")
	old := []string{"02:00:00:00:00:01", "02:00:00:00:00:02"}
	writeState(t, path, persist, old...)
	// A fresh RAM file beside the intact older copy (it was created by a
	// start that could not restore, or by hand): the live state holds
	// one other device.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeState(t, path, "", "02:00:00:00:00:09")
	var logs logBuf
	s, err := OpenStore(path, persist, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CopyTo(persist); err != nil {
		t.Fatal(err)
	}
	l := logs.String()
	if !strings.Contains(l, "persistent state copy replaced") || !strings.Contains(l, "lost=2") {
		t.Fatalf("loss not logged:\n%s", l)
	}
	for _, mac := range old {
		if !strings.Contains(l, mac) {
			t.Errorf("lost device %s not named:\n%s", mac, l)
		}
	}
	recs, err := ReadRecords(persist+".previous", quiet())
	if err != nil || len(recs) != len(old) {
		t.Errorf("old copy kept as .previous: %d records, %v", len(recs), err)
	}
	recs, err = ReadRecords(persist, quiet())
	if err != nil || len(recs) != 1 || recs[0].ID != "02:00:00:00:00:09" {
		t.Errorf("new persistent copy: %v %v", recs, err)
	}
	// Only the first persist of a run checks.
	if err := s.CopyTo(persist); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "persistent state copy replaced"); n != 1 {
		t.Errorf("reported %d times", n)
	}
}

// FuzzStateFile opens arbitrary bytes as a state file: the guard never
// crashes on it (bbolt's SIGBUS on a file shorter than its pages cannot
// be recovered; checkBoltFile must refuse such files first).
func FuzzStateFile(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	writeState(f, path, "", "02:00:00:00:00:01", "02:00:00:00:00:02")
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, uint32(0), uint32(0))
	f.Add(good[:len(good)/2], uint32(0), uint32(0))
	f.Add(good, uint32(9000), uint32(0xdeadbeef))
	f.Add(good, uint32(4096+16+40), uint32(2))
	f.Fuzz(func(t *testing.T, b []byte, off, val uint32) {
		b = bytes.Clone(b)
		if int(off)+4 <= len(b) {
			b[off], b[off+1], b[off+2], b[off+3] = byte(val), byte(val>>8), byte(val>>16), byte(val>>24)
		}
		p := filepath.Join(t.TempDir(), "state.db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenStore(p, "", quiet())
		if err != nil {
			return
		}
		s.Load()
		s.Close()
	})
}

// TestStoreSurvivesRandomDamage opens a real state file damaged at random
// (bytes overwritten, inserted, cut) many times: each open either fails
// cleanly (and OpenStore starts fresh) or reads; none crashes the process
// (a fault inside bbolt would) or hangs.
func TestStoreSurvivesRandomDamage(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.db")
	writeState(t, seed, "", "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03")
	good, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	n := 400
	if testing.Short() {
		n = 50
	}
	r := rand.New(rand.NewPCG(7, 7))
	opened := 0
	for i := range n {
		b := bytes.Clone(good)
		switch r.IntN(3) {
		case 0: // a run of bytes cut out
			at := r.IntN(len(b) - 1)
			b = append(b[:at:at], b[at+1+r.IntN(min(100, len(b)-at-1)):]...)
		case 1: // bytes inserted
			at := r.IntN(len(b))
			b = append(b[:at:at], append([]byte{byte(r.UintN(256)), 0, 7}, b[at:]...)...)
		}
		for range 1 + r.IntN(3) { // words overwritten, often in the first pages
			off := r.IntN(len(b) - 4)
			if r.IntN(2) == 0 {
				off = min(r.IntN(3*4096), len(b)-4)
			}
			v := r.Uint32()
			b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		p := filepath.Join(dir, fmt.Sprintf("d%d", i), "state.db")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenStore(p, "", quiet())
		if err != nil {
			t.Fatalf("damage %d: OpenStore failed instead of starting fresh: %v", i, err)
		}
		if _, err := s.Load(); err != nil {
			t.Errorf("damage %d: load: %v", i, err)
		}
		if aside, _ := filepath.Glob(p + ".damaged-*"); len(aside) == 0 {
			opened++
		}
		s.Close()
	}
	t.Logf("%d of %d damaged files still opened (damage where bbolt does not look), the rest moved aside", opened, n)
}

// TestStoreMeta: other parts' small values (the DNSSEC anchors' state)
// survive a reopen and cannot overwrite the schema version.
func TestStoreMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenStore(path, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetMeta("dnssec-anchors"); err != nil || v != nil {
		t.Fatalf("empty: %q %v", v, err)
	}
	if err := s.PutMeta("dnssec-anchors", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("schema", []byte("99")); err == nil {
		t.Error("schema overwritten")
	}
	s.Close()
	s, err = OpenStore(path, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.GetMeta("dnssec-anchors"); err != nil || string(v) != `{"x":1}` {
		t.Errorf("after reopen: %q %v", v, err)
	}
}

func TestStoreBatchesAndReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "live", "state.db")
	persist := filepath.Join(dir, "flash", "state.db")
	s, err := OpenStore(path, persist, quiet())
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	reg, err := NewRegistry(Options{Store: s, Persist: persist, Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	mac := "02:00:00:00:00:01"
	dev := netip.MustParseAddrPort("192.168.1.20:4096")
	for i := range 100 {
		reg.ObserveQuery(mac, netip.MustParseAddrPort("8.8.8.8:53"), udpQuery(dev, uint16(i), "a.example."))
	}
	// Nothing is written before a flush.
	if recs, _ := s.Load(); len(recs) != 0 {
		t.Fatalf("records written before a flush: %d", len(recs))
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reading it back, from the file and after a "reboot" (RAM file gone,
	// restored from the persistent copy).
	recs, err := ReadRecords(path, quiet())
	if err != nil || len(recs) != 1 || recs[0].Observed != 100 {
		t.Fatalf("ReadRecords = %+v, %v", recs, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path, persist, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg, err = NewRegistry(Options{Store: s, Log: quiet(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	snap := reg.Snapshot()
	if len(snap) != 1 || snap[0].Observed != 100 || snap[0].BypassTotal() != 100 {
		t.Fatalf("after restore: %+v", snap)
	}
	v := ViewOf(snap[0], nil)
	if v.Port.Verdict != "weak" || v.TXID.Verdict != "weak" {
		t.Errorf("fixed port, counting ID graded port=%s id=%s", v.Port.Verdict, v.TXID.Verdict)
	}
	// The store is locked while open.
	if _, err := ReadRecords(path, quiet()); !errors.Is(err, ErrLocked) {
		t.Errorf("ReadRecords on a held file: %v, want ErrLocked", err)
	}
}

func TestStoreDamagedFileMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(path, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if recs, err := s.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("fresh store: %v %v", recs, err)
	}
	aside, _ := filepath.Glob(path + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("damaged file not moved aside: %v", aside)
	}
}
