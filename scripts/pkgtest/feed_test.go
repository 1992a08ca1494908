package pkgtest

import (
	"debug/buildinfo"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// TestFeedBuild runs the packages feed's own Go build steps
// (lang/golang/golang-build.sh configure, build, install_bin, with the
// variables golang-package.mk passes) on the tree with the feed Makefile in
// openwrt/, through ../shared/tools/openwrt-root/feed-check.sh: a change
// that breaks the feed build fails here. The tree is HEAD (git archive, as
// the feed's download gets it).
func TestFeedBuild(t *testing.T) {
	testenv.Short(t)
	if err := openWrtTool(t); err != nil {
		t.Fatal(err)
	}
	if toolDir == "" {
		t.Skip("no shared/tools/openwrt-root beside the checkout (set OPENWRT_ROOT_TOOL)")
	}
	testenv.Require(t, "make", "git", "gcc")
	work := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(toolDir, "feed-check.sh"), filepath.Join(repoRoot, "openwrt"), repoRoot, work)
	out, err := cmd.CombinedOutput()
	t.Logf("feed-check.sh:\n%s", out)
	if err != nil {
		t.Fatalf("the feed build fails: %v", err)
	}
	if !strings.Contains(string(out), "GO_PKG_TAGS='router'") {
		t.Error("the feed Makefile does not build with -tags router (GO_PKG_TAGS)")
	}
	if !regexp.MustCompile(`(?m)^  /usr/sbin/dnsguard \([0-9]+ bytes\)$`).Match(out) {
		t.Fatal("the feed build installs no /usr/sbin/dnsguard")
	}
	bins, _ := filepath.Glob(filepath.Join(work, "ipkg-install", "usr", "sbin", "dnsguard"))
	if len(bins) != 1 {
		t.Fatalf("installed binary not found under %s", work)
	}
	bi, err := buildinfo.ReadFile(bins[0])
	if err != nil {
		t.Fatal(err)
	}
	var settings []string
	for _, s := range bi.Settings {
		settings = append(settings, s.Key+"="+s.Value)
	}
	for _, want := range []string{"-tags=router", "-trimpath=true"} {
		if !slices.Contains(settings, want) {
			t.Errorf("feed binary built without %s: %q", want, settings)
		}
	}
	// -trimpath keeps -ldflags out of the build info: ask the binary.
	if v, err := exec.Command(bins[0], "version").Output(); err != nil || !strings.Contains(string(v), "0.1.0-r1") {
		t.Errorf("feed binary's version %q (%v): GO_PKG_LDFLAGS_X main.version not applied", v, err)
	}
}
