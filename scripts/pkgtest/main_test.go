// Package pkgtest tests the OpenWrt packages that scripts/build-packages.sh
// makes: their structure as opkg reads it, the cross-built binaries under
// qemu-user, and the router-side shell scripts (init script, uci-defaults,
// postrm) against stand-ins for OpenWrt's shell functions and uci.
//
// TestMain builds every package once, into a temporary directory; Go's build
// cache keeps later runs fast.
package pkgtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
)

// arches are the OpenWrt package architectures built, with what each binary
// must be and the qemu-user that runs it (empty: runs natively here or is
// not run).
var arches = []struct {
	name string
	qemu string
}{
	{"mipsel_24kc", "qemu-mipsel-static"},
	{"mips_24kc", "qemu-mips-static"},
	{"arm_cortex-a7_neon-vfpv4", "qemu-arm-static"},
	{"aarch64_cortex-a53", "qemu-aarch64-static"},
	{"x86_64", ""},
}

var (
	repoRoot string // the module root
	outDir   string // build-packages.sh's OUTDIR
	buildLog []byte // its output (the size table)
	buildErr error  // why the build failed, if it did
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Join(wd, "..", "..")
	if testing.Short() {
		buildErr = errShort
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "dnsguard-pkgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	outDir = filepath.Join(dir, "out")
	cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "build-packages.sh"), outDir)
	cmd.Env = append(os.Environ(), "VERSION=1.2.3", "RELEASE=4")
	buildLog, err = cmd.CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("scripts/build-packages.sh: %v\n%s", err, buildLog)
	}
	return m.Run()
}

var errShort = fmt.Errorf("packages are not built under -short")

// built skips the test under -short and fails it if the packages could not
// be built.
func built(t *testing.T) {
	t.Helper()
	if buildErr == errShort {
		t.Skip("end-to-end test skipped with -short")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

const (
	testVersion = "1.2.3-r4"
	mib         = 1 << 20
)

func ipkPath(arch string) string {
	return filepath.Join(outDir, "dnsguard_"+testVersion+"_"+arch+".ipk")
}

func binPath(arch string) string {
	return filepath.Join(outDir, "bin", arch, "dnsguard")
}

// hostArch is the built architecture that runs natively here, if any.
func hostArch(t *testing.T) string {
	t.Helper()
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64_cortex-a53"
	}
	t.Skipf("no package architecture runs natively on %s", runtime.GOARCH)
	return ""
}

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+-r[0-9]+$`)
