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

// arches are the OpenWrt package architectures built, with the Go build
// variant that serves each and the qemu-user that runs it (empty: runs
// natively here).
var arches = []struct {
	name, variant, qemu string
}{
	{"mipsel_24kc", "mipsle", "qemu-mipsel-static"},
	{"mipsel_74kc", "mipsle", "qemu-mipsel-static"},
	{"mips_24kc", "mips", "qemu-mips-static"},
	{"arm_cortex-a7", "armv5", "qemu-arm-static"},
	{"arm_cortex-a7_neon-vfpv4", "armv7", "qemu-arm-static"},
	{"arm_cortex-a9", "armv5", "qemu-arm-static"},
	{"arm_cortex-a9_vfpv3-d16", "armv7", "qemu-arm-static"},
	{"arm_cortex-a15_neon-vfpv4", "armv7", "qemu-arm-static"},
	{"aarch64_cortex-a53", "arm64", "qemu-aarch64-static"},
	{"aarch64_cortex-a72", "arm64", "qemu-aarch64-static"},
	{"aarch64_generic", "arm64", "qemu-aarch64-static"},
	{"x86_64", "amd64", ""},
	// qemu-i386 (Debian 12's 7.2) crashes Go's 386 runtime at its first
	// new thread; an x86_64 kernel runs IA-32 binaries itself.
	{"i386_pentium4", "386", ""},
}

var (
	repoRoot string // the module root
	outDir   string // build-packages.sh's OUTDIR
	oldDir   string // the previous build (x86_64 only), for upgrades
	buildLog []byte // its output (the size table)
	buildErr error  // why the build failed, if it did
	toolDir  string // ../shared/tools/openwrt-root, if found
	toolErr  error  // why it could not be built
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
	oldDir = filepath.Join(dir, "old")

	// The OpenWrt-like root's tools (opkg, apk, uci): apk packs the .apk.
	apk := "none"
	if toolDir = findOpenWrtTool(wd); toolDir != "" {
		out, err := exec.Command("bash", filepath.Join(toolDir, "build.sh"), openWrtOut()).CombinedOutput()
		if err != nil {
			toolErr = fmt.Errorf("%s/build.sh %s: %v\n%s", toolDir, openWrtOut(), err, out)
		} else {
			apk = filepath.Join(openWrtOut(), "prefix", "bin", "apk")
		}
	} else if os.Getenv("OPENWRT_ROOT_TOOL") != "" {
		toolErr = fmt.Errorf("OPENWRT_ROOT_TOOL=%s has no build.sh", os.Getenv("OPENWRT_ROOT_TOOL"))
	}
	cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "build-packages.sh"), outDir)
	cmd.Env = append(os.Environ(), "VERSION=1.2.3", "RELEASE=4", "APK="+apk)
	buildLog, err = cmd.CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("scripts/build-packages.sh: %v\n%s", err, buildLog)
		return m.Run()
	}
	// The previous release, to upgrade from.
	cmd = exec.Command("bash", filepath.Join(repoRoot, "scripts", "build-packages.sh"), oldDir)
	cmd.Env = append(os.Environ(), "VERSION=1.2.3", "RELEASE=3", "APK="+apk, "ARCHES=x86_64")
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("scripts/build-packages.sh (previous release): %v\n%s", err, out)
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
	oldVersion  = "1.2.3-r3"
	mib         = 1 << 20
)

func ipkPath(arch string) string {
	return filepath.Join(outDir, "dnsguard_"+testVersion+"_"+arch+".ipk")
}

func apkPath(arch string) string {
	return filepath.Join(outDir, arch, "dnsguard-"+testVersion+".apk")
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
