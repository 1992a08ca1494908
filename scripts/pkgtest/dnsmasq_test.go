package pkgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/policy"
)

// OpenWrt's default /etc/config/dhcp (dnsmasq anonymous, DHCP on lan).
const dhcpDefault = `
config dnsmasq
	option domainneeded '1'
	option boguspriv '1'
	option localise_queries '1'
	option rebind_protection '1'
	option local '/lan/'
	option domain 'lan'
	option expandhosts '1'
	option authoritative '1'
	option readethers '1'
	option leasefile '/tmp/dhcp.leases'
	option localservice '1'

config dhcp 'lan'
	option interface 'lan'
	option start '100'
	option limit '150'
	option leasetime '12h'

config dhcp 'wan'
	option interface 'wan'
	option ignore '1'

config odhcpd 'odhcpd'
	option maindhcp '0'
`

var (
	fakeUCIOnce sync.Once
	fakeUCIDir  string
	fakeUCIErr  error
)

// fakeUCI builds the uci stand-in (testdata/uci) once and returns the
// directory holding it and the other commands the scripts call.
func fakeUCI(t *testing.T) string {
	t.Helper()
	fakeUCIOnce.Do(func() {
		dir, err := os.MkdirTemp(filepath.Dir(outDir), "bin-")
		if err != nil {
			fakeUCIErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goTool, "build", "-o", filepath.Join(dir, "uci"), "./testdata/uci").CombinedOutput()
		if err != nil {
			fakeUCIErr = err
			t.Logf("%s", out)
			return
		}
		// dnsmasq is not running here; logger writes to stderr.
		stubs := map[string]string{
			"pidof":  "#!/bin/sh\nexit 1\n",
			"logger": "#!/bin/sh\necho \"logger: $*\" >&2\n",
		}
		for name, body := range stubs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
				fakeUCIErr = err
				return
			}
		}
		fakeUCIDir = dir
	})
	if fakeUCIErr != nil {
		t.Fatalf("building the uci stand-in: %v", fakeUCIErr)
	}
	return fakeUCIDir
}

// uciRoot is an offline /etc with dhcp, network and dnsguard configs.
type uciRoot struct {
	dir, sh, bin string
}

func newUCIRoot(t *testing.T, dhcp string) *uciRoot {
	t.Helper()
	built(t)
	r := &uciRoot{dir: t.TempDir(), sh: testenv.Require(t, "sh")[0], bin: fakeUCI(t)}
	if err := os.MkdirAll(r.confDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"dhcp": dhcp, "network": networkConfig, "dnsguard": routerConfig(t)} {
		if err := os.WriteFile(filepath.Join(r.confDir(), name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *uciRoot) confDir() string { return filepath.Join(r.dir, "etc/config") }

func (r *uciRoot) env() []string {
	return append(os.Environ(), "UCI_CONFIG_DIR="+r.confDir(), "PATH="+r.bin+":"+os.Getenv("PATH"))
}

// uciDefaults runs the package's uci-defaults script as OpenWrt does:
// sourced in a subshell.
func (r *uciRoot) uciDefaults(t *testing.T) string {
	t.Helper()
	script := filepath.Join(repoRoot, "openwrt/files/dnsguard.uci-defaults")
	cmd := exec.Command(r.sh, "-c", `( . "$1" )`, "sh", script)
	cmd.Env = r.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("uci-defaults: %v\n%s", err, out)
	}
	return string(out)
}

// postrm runs the package's postrm as opkg does on removal.
func (r *uciRoot) postrm(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(r.sh, filepath.Join(repoRoot, "openwrt/files/dnsguard.postrm"), "remove")
	cmd.Env = r.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postrm: %v\n%s", err, out)
	}
	return string(out)
}

// bootDefaults runs the restore script as a uci-defaults script at boot
// (sourced in a subshell) and reports whether it exited 0, i.e. would be
// deleted.
func (r *uciRoot) bootDefaults(t *testing.T) bool {
	t.Helper()
	script := filepath.Join(repoRoot, "openwrt/files/dnsguard.postrm")
	cmd := exec.Command(r.sh, "-c", `( . "$1" )`, "sh", script)
	cmd.Env = r.env()
	out, err := cmd.CombinedOutput()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		t.Fatal(err)
	}
	if len(out) > 0 {
		t.Logf("99-dnsguard-restore-dnsmasq: %s", out)
	}
	return err == nil
}

// get is uci get; "" for a missing entry.
func (r *uciRoot) get(t *testing.T, key string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(r.bin, "uci"), "-q", "get", key)
	cmd.Env = r.env()
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

func (r *uciRoot) show(t *testing.T, pkg string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(r.bin, "uci"), "show", pkg)
	cmd.Env = r.env()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// committed reports that nothing is left staged (every change committed).
func (r *uciRoot) committed(t *testing.T) {
	t.Helper()
	staged, _ := filepath.Glob(filepath.Join(r.dir, "etc/.uci/*"))
	if len(staged) > 0 {
		t.Errorf("uncommitted changes: %q", staged)
	}
}

func (r *uciRoot) guardConfig(t *testing.T) *policy.Config {
	t.Helper()
	c, err := policy.Load(filepath.Join(r.confDir(), "dnsguard"))
	if err != nil {
		t.Fatalf("dnsguard config after uci-defaults: %v", err)
	}
	return c
}

func TestHandoverDefaultRouter(t *testing.T) {
	r := newUCIRoot(t, dhcpDefault)
	before := r.show(t, "dhcp")
	r.uciDefaults(t)
	r.committed(t)

	if got := r.get(t, "dhcp.@dnsmasq[0].port"); got != "5354" {
		t.Errorf("dnsmasq port %q, want 5354", got)
	}
	if got := r.get(t, "dhcp.lan.dhcp_option"); got != "6,0.0.0.0" {
		t.Errorf("lan dhcp_option %q: DHCP clients must still be told the router is their DNS server", got)
	}
	if got := r.get(t, "dhcp.wan.dhcp_option"); got != "" {
		t.Errorf("wan (DHCP off) got dhcp_option %q", got)
	}
	// dnsmasq keeps home.arpa and the CGNAT reverse zones to itself: the
	// guard sends them there, and dnsmasq would forward what it does not
	// know to its WAN upstreams.
	srv := r.get(t, "dhcp.@dnsmasq[0].server")
	for _, z := range []string{"/home.arpa/", "/64.100.in-addr.arpa/", "/100.100.in-addr.arpa/", "/127.100.in-addr.arpa/"} {
		if !strings.Contains(srv, z) {
			t.Errorf("dnsmasq server list %q lacks %s (local only)", srv, z)
		}
	}
	if strings.Contains(srv, "/63.100.") || strings.Contains(srv, "/128.100.") || strings.Contains(srv, "#") {
		t.Errorf("dnsmasq server list %q: only 100.64.0.0/10's zones, without an address", srv)
	}
	backup, err := os.ReadFile(filepath.Join(r.dir, "etc/dnsguard/dhcp.before-dnsguard"))
	if err != nil || string(backup) != dhcpDefault {
		t.Errorf("no exact backup of /etc/config/dhcp (err %v)", err)
	}

	c := r.guardConfig(t)
	if c.Local.Server != "127.0.0.1:5354" {
		t.Errorf("guard forwards local names to %q, want dnsmasq at 127.0.0.1:5354", c.Local.Server)
	}
	if len(c.Listen) != 0 {
		t.Errorf("guard listen list %q: uci-defaults must not write the LAN address (the guard serves every LAN address)", c.Listen)
	}
	// The API: on the LAN address, with a generated token (issue 13).
	if c.API.Listen != "192.168.8.1:8053" || len(c.API.Token) != 48 || strings.Trim(c.API.Token, "0123456789abcdef") != "" {
		t.Errorf("api listen %q token %q: want the LAN address on 8053 and 24 random octets in hex", c.API.Listen, c.API.Token)
	}

	// Installing again (an upgrade runs uci-defaults again) changes nothing.
	afterFirst, guardFirst := r.show(t, "dhcp"), r.show(t, "dnsguard")
	r.uciDefaults(t)
	if r.show(t, "dhcp") != afterFirst || r.show(t, "dnsguard") != guardFirst {
		t.Error("running uci-defaults twice changed the configs again")
	}

	// Removing the package gives dnsmasq back exactly what it had.
	r.postrm(t)
	r.committed(t)
	if after := r.show(t, "dhcp"); after != before {
		t.Errorf("dhcp after removal:\n%s\nwant as before install:\n%s", after, before)
	}
}

func TestHandoverKeepsHandSetPort(t *testing.T) {
	dhcp := strings.Replace(dhcpDefault, "option localservice '1'", "option localservice '1'\n\toption port '5300'", 1)
	r := newUCIRoot(t, dhcp)
	before := r.show(t, "dhcp")
	out := r.uciDefaults(t)
	if got := r.get(t, "dhcp.@dnsmasq[0].port"); got != "5300" {
		t.Errorf("dnsmasq port %q, want the hand-set 5300 kept", got)
	}
	if !strings.Contains(out, "5300") {
		t.Errorf("nothing said about keeping port 5300: %q", out)
	}
	if got := r.get(t, "dhcp.lan.dhcp_option"); got != "" {
		t.Errorf("dhcp_option %q added though dnsmasq was not on 53", got)
	}
	if c := r.guardConfig(t); c.Local.Server != "127.0.0.1:5300" {
		t.Errorf("guard forwards local names to %q, want 127.0.0.1:5300", c.Local.Server)
	}
	r.postrm(t)
	if after := r.show(t, "dhcp"); after != before {
		t.Errorf("dhcp after removal:\n%s\nwant:\n%s", after, before)
	}
}

func TestHandoverRespectsExistingDNSOption(t *testing.T) {
	dhcp := strings.Replace(dhcpDefault, "option leasetime '12h'", "option leasetime '12h'\n\tlist dhcp_option '6,192.168.8.53'", 1)
	r := newUCIRoot(t, dhcp)
	r.uciDefaults(t)
	if got := r.get(t, "dhcp.lan.dhcp_option"); got != "6,192.168.8.53" {
		t.Errorf("dhcp_option %q, want the owner's own DNS option alone", got)
	}
	if got := r.get(t, "dhcp.@dnsmasq[0].port"); got != "5354" {
		t.Errorf("dnsmasq port %q, want 5354", got)
	}
	r.postrm(t)
	if got := r.get(t, "dhcp.lan.dhcp_option"); got != "6,192.168.8.53" {
		t.Errorf("after removal dhcp_option %q, want the owner's kept", got)
	}
}

func TestRemovalKeepsPortChangedByHand(t *testing.T) {
	r := newUCIRoot(t, dhcpDefault)
	r.uciDefaults(t)

	// The owner moves dnsmasq again by hand while the guard is installed
	// and adds a static lease.
	uci := filepath.Join(r.bin, "uci")
	for _, args := range [][]string{
		{"set", "dhcp.@dnsmasq[0].port=5399"},
		{"set", "dhcp.lan.leasetime=24h"},
		{"commit", "dhcp"},
	} {
		cmd := exec.Command(uci, args...)
		cmd.Env = r.env()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("uci %q: %v\n%s", args, err, out)
		}
	}
	out := r.postrm(t)
	if got := r.get(t, "dhcp.@dnsmasq[0].port"); got != "5399" {
		t.Errorf("dnsmasq port %q after removal, want the hand-set 5399 kept", got)
	}
	if !strings.Contains(out, "5399") {
		t.Errorf("nothing said about the hand-set port: %q", out)
	}
	if got := r.get(t, "dhcp.lan.leasetime"); got != "24h" {
		t.Errorf("leasetime %q: a later hand change was lost", got)
	}
	if got := r.get(t, "dhcp.lan.dhcp_option"); got != "" {
		t.Errorf("dhcp_option %q left behind", got)
	}
	if s := r.show(t, "dhcp"); strings.Contains(s, "dnsguard_") {
		t.Errorf("markers left behind:\n%s", s)
	}
}

func TestHandoverLANDomain(t *testing.T) {
	r := newUCIRoot(t, strings.Replace(dhcpDefault, "option domain 'lan'", "option domain 'home'", 1))
	r.uciDefaults(t)
	c := r.guardConfig(t)
	found := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if !found(c.Local.Domains, "home") {
		t.Errorf("local domains %q lack dnsmasq's domain 'home'", c.Local.Domains)
	}
	if got := r.get(t, "dnsguard.answers.local_domain"); got != "" {
		t.Errorf("answers.local_domain %q written: config local's domain list is the one list", got)
	}
	if got := r.get(t, "dnsguard.local.server"); got != "127.0.0.1:5354" {
		t.Errorf("local server %q, want 127.0.0.1:5354", got)
	}
}

// TestSysupgradeWithoutGuard: the restore script waits while the guard is
// installed, and gives port 53 back at the first boot of an image without it.
func TestSysupgradeWithoutGuard(t *testing.T) {
	r := newUCIRoot(t, dhcpDefault)
	before := r.show(t, "dhcp")
	r.uciDefaults(t)
	moved := r.show(t, "dhcp")

	bin := filepath.Join(r.dir, "usr/sbin/dnsguard")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if r.bootDefaults(t) {
		t.Error("restore script exited 0 with the guard installed: it would be deleted")
	}
	if r.show(t, "dhcp") != moved {
		t.Error("restore script changed dhcp while the guard is installed")
	}

	// sysupgrade to an image without dnsguard: config kept, binary gone.
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if !r.bootDefaults(t) {
		t.Error("restore script failed without the guard")
	}
	r.committed(t)
	if after := r.show(t, "dhcp"); after != before {
		t.Errorf("dhcp after first boot without the guard:\n%s\nwant:\n%s", after, before)
	}
}

// TestHandoverLeavesListenAlone: whatever the LAN address (since 21.02
// possibly a CIDR list), uci-defaults writes no listen list: with
// 'list lan' the guard serves every address of the router itself.
func TestHandoverLeavesListenAlone(t *testing.T) {
	r := newUCIRoot(t, dhcpDefault)
	network := strings.Replace(networkConfig, "option ipaddr '192.168.8.1'\n\toption netmask '255.255.255.0'",
		"list ipaddr '10.20.30.1/24'\n\tlist ipaddr '10.20.31.1/24'", 1)
	if network == networkConfig {
		t.Fatal("network config not rewritten")
	}
	if err := os.WriteFile(filepath.Join(r.confDir(), "network"), []byte(network), 0o644); err != nil {
		t.Fatal(err)
	}
	r.uciDefaults(t)
	c := r.guardConfig(t)
	if len(c.Listen) != 0 {
		t.Errorf("guard listen list %q, want none", c.Listen)
	}
	if strings.Join(c.Intercept.LAN, " ") != "br-lan" {
		t.Errorf("LAN devices %q, want br-lan", c.Intercept.LAN)
	}
}
