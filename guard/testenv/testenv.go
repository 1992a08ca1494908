// Package testenv lets tests that need real parts (a resolver from Debian,
// nftables, network namespaces, qemu) say so. Outside CI a missing part
// skips the test; with DNSGUARD_CI=1 (set by .ci/run, which installs every
// part) a missing part fails it, so CI cannot pass by skipping.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// InCI reports whether the full test environment is promised.
func InCI() bool { return os.Getenv("DNSGUARD_CI") == "1" }

// Require skips (or, in CI, fails) the test unless every command is on PATH.
// It returns their paths in order.
func Require(t testing.TB, cmds ...string) []string {
	t.Helper()
	paths := make([]string, len(cmds))
	for i, c := range cmds {
		p, err := exec.LookPath(c)
		if err != nil {
			missing(t, "needs "+c+" on PATH")
		}
		paths[i] = p
	}
	return paths
}

// RequireRoot skips (or, in CI, fails) the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root")
	}
}

// Short skips long end-to-end tests under go test -short.
func Short(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
}

func missing(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatal(why + " (DNSGUARD_CI=1: .ci/run should have installed it)")
	}
	t.Skip(why)
}

// Data returns the directory of the named data set under shared/data
// (see SharedData). Without it the test skips, or, in CI, fails: .ci/run
// runs beside the project's shared directory, so the tests that replay
// real captures must run there.
func Data(t testing.TB, name string) string {
	t.Helper()
	d := SharedData(name)
	if d == "" {
		missing(t, "needs ../shared/data/"+name+" beside the checkout")
	}
	return d
}

// SharedData returns the directory of the named data set under the
// project's shared/data (../shared/data beside the checkout, found by
// walking up from the test's directory), or "" when it is not there.
// The data sets live outside the repository: fuzz targets seed from them
// when they are there; a test that needs one calls Data.
func SharedData(name string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, "shared", "data", name)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Messages returns every step-th raw DNS message of the shared corpus
// (shared/data/dns-fuzzing/packet, 9,774 messages, many malformed), in
// file name order, to seed fuzz targets; none when the corpus is not
// beside the checkout.
func Messages(step int) [][]byte {
	dir := SharedData("dns-fuzzing")
	if dir == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, "packet", "*"))
	var out [][]byte
	for i := 0; i < len(files); i += max(step, 1) {
		if b, err := os.ReadFile(files[i]); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// InNetns runs f on a locked OS thread switched into the named network
// namespace (ip netns), then switches back; sockets f opens stay in ns.
func InNetns(ns string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig)
	return f()
}
