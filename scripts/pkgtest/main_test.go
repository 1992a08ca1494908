// Package pkgtest tests the OpenWrt packages that scripts/build-packages.sh
// makes: their structure as opkg reads it, the cross-built binaries under
// qemu-user, and the router-side shell scripts (init script, uci-defaults,
// postrm) against stand-ins for OpenWrt's shell functions and uci.
//
// The first test that needs the packages builds every one of them, once,
// into a temporary directory; Go's build cache keeps later runs fast.
package pkgtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
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
	workDir  string // this run's temporary directory, removed by TestMain
	outDir   string // build-packages.sh's OUTDIR
	oldDir   string // the previous build (x86_64 only), for upgrades
	toolDir  string // ../shared/tools/openwrt-root, if found

	// Set once, by the first test that needs them (go test -list and
	// tests that need no package build nothing).
	toolOnce  sync.Once
	toolErr   error // why the openwrt-root tool could not be built
	buildOnce sync.Once
	buildLog  []byte // build-packages.sh's output (the size table)
	buildErr  error  // why the build failed, if it did
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
	toolDir = findOpenWrtTool(wd)
	if workDir, err = os.MkdirTemp("", "dnsguard-pkgtest-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	outDir = filepath.Join(workDir, "out")
	oldDir = filepath.Join(workDir, "old")
	return m.Run()
}

// openWrtTool builds the OpenWrt-like root's tools (opkg, apk, uci) once;
// it reports why they cannot be had ("" and nil: no tool beside the
// checkout).
func openWrtTool(t *testing.T) error {
	t.Helper()
	toolOnce.Do(func() {
		switch {
		case toolDir != "":
			out, err := runBuild(t, nil, "bash", filepath.Join(toolDir, "build.sh"), openWrtOut())
			if err != nil {
				toolErr = fmt.Errorf("%s/build.sh %s: %w\n%s", toolDir, openWrtOut(), err, out)
			}
		case os.Getenv("OPENWRT_ROOT_TOOL") != "":
			toolErr = fmt.Errorf("OPENWRT_ROOT_TOOL=%s has no build.sh", os.Getenv("OPENWRT_ROOT_TOOL"))
		}
	})
	return toolErr
}

// buildPackages runs scripts/build-packages.sh once: every package, and the
// previous release (x86_64) to upgrade from.
func buildPackages(t *testing.T) {
	t.Helper()
	apk := "none"
	if openWrtTool(t) == nil && toolDir != "" {
		apk = filepath.Join(openWrtOut(), "prefix", "bin", "apk")
	}
	script := filepath.Join(repoRoot, "scripts", "build-packages.sh")
	env := []string{"VERSION=1.2.3", "RELEASE=4", "APK=" + apk}
	out, err := runBuild(t, env, "bash", script, outDir)
	buildLog = out
	if err != nil {
		buildErr = fmt.Errorf("scripts/build-packages.sh: %w\n%s", err, out)
		return
	}
	env = []string{"VERSION=1.2.3", "RELEASE=3", "APK=" + apk, "ARCHES=x86_64"}
	if out, err := runBuild(t, env, "bash", script, oldDir); err != nil {
		buildErr = fmt.Errorf("scripts/build-packages.sh (previous release): %w\n%s", err, out)
	}
}

// runBuild runs a build script in a process group of its own, killed as a
// whole when the test binary's deadline is near (a timed-out go test
// leaves no build running behind it) or when this process dies.
func runBuild(t *testing.T, env []string, name string, args ...string) ([]byte, error) {
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed near the test deadline: %w", err)
	}
	return out, err
}

// built skips the test under -short, builds the packages on first use and
// fails the test if they could not be built.
func built(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	buildOnce.Do(func() { buildPackages(t) })
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
