package pkgtest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// The OpenWrt-like root of ../shared/tools/openwrt-root: the real opkg,
// apk, uci, jshn and OpenWrt's shell libraries, with stand-ins for procd's
// ubus (logged), logger and dnsmasq. TestMain finds the tool and builds it.

// findOpenWrtTool returns the openwrt-root tool directory: OPENWRT_ROOT_TOOL
// if set (.ci/run sets it when it built the tool: then it must be there),
// else shared/tools/openwrt-root beside the checkout (walking up), else "".
func findOpenWrtTool(start string) string {
	if d := os.Getenv("OPENWRT_ROOT_TOOL"); d != "" {
		return d
	}
	for dir := start; ; {
		p := filepath.Join(dir, "shared", "tools", "openwrt-root")
		if st, err := os.Stat(filepath.Join(p, "build.sh")); err == nil && !st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// openWrtOut is where the tool's build lives (cached by CI).
func openWrtOut() string {
	if d := os.Getenv("OPENWRT_ROOT_OUT"); d != "" {
		return d
	}
	return "/var/tmp/openwrt-root"
}

// requireOpenWrt skips (or fails, when the tool was promised) unless the
// tool is built and the test runs as root.
func requireOpenWrt(t *testing.T) {
	t.Helper()
	built(t)
	testenv.RequireRoot(t)
	if err := openWrtTool(t); err != nil {
		t.Fatalf("openwrt-root tool: %v", err)
	}
	if toolDir == "" {
		t.Skip("no shared/tools/openwrt-root beside the checkout (set OPENWRT_ROOT_TOOL)")
	}
}

// owRoot is one emulated router.
type owRoot struct {
	dir string
}

func newOWRoot(t *testing.T) *owRoot {
	t.Helper()
	requireOpenWrt(t)
	r := &owRoot{dir: filepath.Join(t.TempDir(), "root")}
	out, err := exec.Command("bash", filepath.Join(toolDir, "mkroot.sh"), openWrtOut(), r.dir, "x86_64").CombinedOutput()
	if err != nil {
		t.Fatalf("mkroot.sh: %v\n%s", err, out)
	}
	return r
}

func (r *owRoot) path(p string) string { return filepath.Join(r.dir, p) }

func (r *owRoot) write(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(r.path(p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.path(p), []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func (r *owRoot) read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(r.path(p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (r *owRoot) exists(p string) bool {
	_, err := os.Lstat(r.path(p))
	return err == nil
}

// copyIn puts a host file into the root.
func (r *owRoot) copyIn(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	r.write(t, dst, string(b), 0o644)
}

// sh runs a busybox ash script inside the root (run.sh: chroot, own
// namespaces) and returns its output; env adds VAR=value words.
func (r *owRoot) sh(t *testing.T, script string, env ...string) (string, error) {
	t.Helper()
	args := []string{filepath.Join(toolDir, "run.sh"), r.dir}
	if len(env) > 0 {
		args = append(args, append([]string{"env"}, env...)...)
	}
	args = append(args, "/bin/sh", "-c", script)
	out, err := exec.Command("bash", args...).CombinedOutput()
	return string(out), err
}

func (r *owRoot) mustSh(t *testing.T, script string, env ...string) string {
	t.Helper()
	out, err := r.sh(t, script, env...)
	if err != nil {
		t.Fatalf("in the root: %v\n%s\nscript:\n%s", err, out, script)
	}
	return out
}

// uci runs uci show/get in the root.
func (r *owRoot) uci(t *testing.T, args string) string {
	t.Helper()
	out, _ := r.sh(t, "uci -q "+args)
	return strings.TrimSpace(out)
}

func (r *owRoot) md5(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(r.path(p))
	if err != nil {
		t.Fatal(err)
	}
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// procdService is the service definition an init script sent to procd
// ("ubus call service set"), as the ubus stand-in logged it.
type procdService struct {
	Name      string `json:"name"`
	Instances map[string]struct {
		Command      []string          `json:"command"`
		Env          map[string]string `json:"env"`
		File         []string          `json:"file"`
		Respawn      []string          `json:"respawn"`
		User         string            `json:"user"`
		Group        string            `json:"group"`
		Capabilities string            `json:"capabilities"`
		NoNewPrivs   bool              `json:"no_new_privs"`
		Jail         map[string]any    `json:"jail"`
		Data         struct {
			Firewall []map[string]string `json:"firewall"`
		} `json:"data"`
	} `json:"instances"`
	Triggers []any `json:"triggers"`
}

// serviceSets reads every "ubus call service set|add" from the log.
func serviceSets(t *testing.T, log string) []procdService {
	t.Helper()
	var out []procdService
	for _, line := range strings.Split(log, "\n") {
		var js string
		switch {
		case strings.HasPrefix(line, "ubus call service set "):
			js = strings.TrimPrefix(line, "ubus call service set ")
		case strings.HasPrefix(line, "ubus call service add "):
			js = strings.TrimPrefix(line, "ubus call service add ")
		default:
			continue
		}
		var s procdService
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatalf("ubus call service set: %v\n%s", err, js)
		}
		out = append(out, s)
	}
	return out
}

// pkgFiles are the package files of one manager: install, upgrade, remove.
type pkgManager struct {
	kind               string
	old, new           string // host paths
	install, upgrade   string // commands in the root (%s: the package path)
	remove, installed  string
	defaultsRanOnStart bool
}

func managers(t *testing.T) []pkgManager {
	t.Helper()
	arch := "x86_64"
	return []pkgManager{
		{
			kind:      "ipk",
			old:       filepath.Join(oldDir, "dnsguard_"+oldVersion+"_"+arch+".ipk"),
			new:       ipkPath(arch),
			install:   "opkg install %s",
			upgrade:   "opkg install %s",
			remove:    "opkg remove dnsguard",
			installed: "opkg list-installed | grep -q '^dnsguard '",
		},
		{
			kind:      "apk",
			old:       filepath.Join(oldDir, arch, "dnsguard-"+oldVersion+".apk"),
			new:       apkPath(arch),
			install:   "apk add --allow-untrusted %s",
			upgrade:   "apk add --allow-untrusted %s",
			remove:    "apk del dnsguard",
			installed: "apk info -e dnsguard",
		},
	}
}

// installIn installs the package in a fresh root with dnsmasq's stand-in
// running, and a ujail stand-in (procd-ujail installed) when jail is set.
func installIn(t *testing.T, m pkgManager, pkg string, jail bool) *owRoot {
	t.Helper()
	r := newOWRoot(t)
	if jail {
		r.write(t, "sbin/ujail", "#!/bin/sh\necho \"ujail $*\" >>/tmp/ujail.log\n", 0o755)
	}
	r.copyIn(t, m.old, "tmp/pkgs/"+filepath.Base(m.old))
	r.copyIn(t, m.new, "tmp/pkgs/"+filepath.Base(m.new))
	r.mustSh(t, "cp /etc/config/dhcp /tmp/dhcp.orig")
	out := r.mustSh(t, "/usr/sbin/dnsmasq -k & sleep 0.2; : >/tmp/ubus.log; "+
		strings.ReplaceAll(m.install, "%s", "/tmp/pkgs/"+filepath.Base(pkg)))
	t.Logf("%s install:\n%s", m.kind, out)
	return r
}

func TestOpenWrtInstallUpgradeRemove(t *testing.T) {
	for _, m := range managers(t) {
		t.Run(m.kind, func(t *testing.T) {
			r := installIn(t, m, m.old, true)

			// Install: uci-defaults ran, dnsmasq moved, option 6 set.
			if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
				t.Errorf("dnsmasq port %q after install, want 5354", got)
			}
			if got := r.uci(t, "get dhcp.lan.dhcp_option"); got != "6,0.0.0.0" {
				t.Errorf("DHCP option %q, want 6,0.0.0.0 (the router as DNS server)", got)
			}
			if got := r.uci(t, "get dhcp.@dnsmasq[0].server"); !strings.Contains(got, "/home.arpa/") || !strings.Contains(got, "/127.100.in-addr.arpa/") {
				t.Errorf("dnsmasq server list %q: home.arpa and CGNAT reverse zones must stay local", got)
			}
			if got := r.uci(t, "get dnsguard.local.server"); got != "127.0.0.1:5354" {
				t.Errorf("dnsguard.local.server %q, want dnsmasq at 127.0.0.1:5354", got)
			}
			if got := r.uci(t, "get dnsguard.main.listen"); got != "" {
				t.Errorf("uci-defaults wrote a listen list %q: the guard serves every LAN address itself", got)
			}
			if r.exists("etc/uci-defaults/90-dnsguard") {
				t.Error("90-dnsguard still in /etc/uci-defaults: it did not run (or failed)")
			}
			if !r.exists("etc/uci-defaults/99-dnsguard-restore-dnsmasq") {
				t.Error("the restore script was deleted at install")
			}
			if !strings.Contains(r.read(t, "etc/passwd"), "dnsguard:x:353:353:") || !strings.Contains(r.read(t, "etc/group"), "dnsguard:x:353:") {
				t.Error("user/group dnsguard (353) not added")
			}
			if !r.exists("etc/rc.d/S19dnsguard") {
				t.Error("service not enabled (no /etc/rc.d/S19dnsguard)")
			}

			// Started: the procd instance as the ubus stand-in saw it.
			sets := serviceSets(t, r.read(t, "tmp/ubus.log"))
			if len(sets) == 0 {
				t.Fatalf("the service was not started (no ubus call service set):\n%s", r.read(t, "tmp/ubus.log"))
			}
			svc := sets[len(sets)-1]
			main, ok := svc.Instances["main"]
			if !ok {
				t.Fatalf("no instance main: %+v", svc)
			}
			// In ujail the daemon reads a copy in a mounted directory (a
			// mounted file would keep its old inode after 'uci commit').
			if want := []string{"/usr/sbin/dnsguard", "run", "--config", "/var/run/dnsguard-config/dnsguard"}; !slices.Equal(main.Command, want) {
				t.Errorf("command %q, want %q", main.Command, want)
			}
			if r.read(t, "tmp/run/dnsguard-config/dnsguard") != r.read(t, "etc/config/dnsguard") {
				t.Error("the jail's copy of the config differs from /etc/config/dnsguard")
			}
			if !strings.Contains(fmt.Sprint(main.Jail), "/var/run/dnsguard-config") {
				t.Errorf("jail %v does not mount the config's directory", main.Jail)
			}
			if main.Env["GOMEMLIMIT"] != "24MiB" {
				t.Errorf("env %v, want GOMEMLIMIT=24MiB", main.Env)
			}
			if main.User != "dnsguard" || main.Group != "dnsguard" {
				t.Errorf("runs as %q:%q, want dnsguard:dnsguard", main.User, main.Group)
			}
			if main.Capabilities != "/etc/capabilities/dnsguard.json" || !main.NoNewPrivs || main.Jail == nil {
				t.Errorf("capabilities %q, no_new_privs %v, jail %v: want the capabilities file applied in ujail", main.Capabilities, main.NoNewPrivs, main.Jail)
			}
			var caps map[string][]string
			if err := json.Unmarshal([]byte(r.read(t, "etc/capabilities/dnsguard.json")), &caps); err != nil {
				t.Fatalf("capabilities file: %v", err)
			}
			for _, set := range []string{"bounding", "effective", "ambient", "permitted", "inheritable"} {
				if got := strings.Join(caps[set], " "); got != "CAP_NET_BIND_SERVICE CAP_NET_ADMIN" {
					t.Errorf("capabilities %s = %q, want only CAP_NET_BIND_SERVICE CAP_NET_ADMIN", set, got)
				}
			}
			if !slices.Contains(main.File, "/usr/sbin/dnsguard") {
				t.Errorf("file %q: procd would not see a new binary", main.File)
			}
			if fw := main.Data.Firewall; len(fw) != 1 || fw[0]["dest_port"] != "5354" || fw[0]["target"] != "REJECT" || fw[0]["src"] != "*" {
				t.Errorf("firewall data %v, want one rule rejecting port 5354 from every zone", fw)
			}
			if fs, ok := svc.Instances["failsafe"]; !ok || !slices.Equal(fs.Command, []string{"/usr/libexec/dnsguard-failsafe", "watch"}) {
				t.Errorf("no failsafe instance watching the guard: %+v", svc.Instances)
			}
			triggers, _ := json.Marshal(svc.Triggers)
			if !strings.Contains(string(triggers), `["eq","package","dnsguard"]`) {
				t.Errorf("no reload trigger on the dnsguard config: %s", triggers)
			}
			if strings.Contains(string(triggers), "firewall") || strings.Contains(string(triggers), "interface.") {
				t.Errorf("triggers %s: no restart on firewall changes or LAN events without a fixed listen address", triggers)
			}
			stateOwner := r.mustSh(t, "ls -ld /tmp/dnsguard /etc/dnsguard | awk '{print $3\":\"$4}'")
			if strings.Fields(stateOwner)[0] != "dnsguard:dnsguard" || strings.Fields(stateOwner)[1] != "dnsguard:dnsguard" {
				t.Errorf("state directories owned by %q, want dnsguard", stateOwner)
			}

			// A change of the owner's, kept by upgrade and removal; a reload
			// hands it to the jailed daemon.
			r.mustSh(t, "uci set dnsguard.main.log_level=debug && uci commit dnsguard && /etc/init.d/dnsguard reload")
			if !strings.Contains(r.read(t, "tmp/run/dnsguard-config/dnsguard"), "'debug'") {
				t.Error("reload did not refresh the jail's copy of the config")
			}
			oldMD5 := r.md5(t, "usr/sbin/dnsguard")

			// Upgrade to the newer build.
			out := r.mustSh(t, ": >/tmp/ubus.log; "+strings.ReplaceAll(m.upgrade, "%s", "/tmp/pkgs/"+filepath.Base(m.new)))
			t.Logf("%s upgrade:\n%s", m.kind, out)
			if !r.exists("etc/uci-defaults/99-dnsguard-restore-dnsmasq") {
				t.Error("upgrade deleted the restore script: a later sysupgrade without dnsguard would leave the LAN without DNS")
			}
			if got := r.uci(t, "get dnsguard.main.log_level"); got != "debug" {
				t.Errorf("upgrade lost the owner's log_level (got %q)", got)
			}
			newMD5 := r.md5(t, "usr/sbin/dnsguard")
			if newMD5 == oldMD5 {
				t.Fatal("the upgrade did not replace the binary")
			}
			up := serviceSets(t, r.read(t, "tmp/ubus.log"))
			if len(up) == 0 {
				t.Fatalf("upgrade did not start the service again:\n%s", r.read(t, "tmp/ubus.log"))
			}
			// procd compares the md5 of each 'file' (instance_config_changed):
			// the new binary makes the new instance differ, so procd replaces
			// the running one.
			if f := up[len(up)-1].Instances["main"].File; !slices.Contains(f, "/usr/sbin/dnsguard") {
				t.Errorf("upgraded instance file %q lacks the binary: procd would keep the old process", f)
			}
			if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
				t.Errorf("dnsmasq port %q after upgrade, want 5354", got)
			}

			// Remove: dhcp exactly as before, the owner's config kept.
			out = r.mustSh(t, m.remove)
			t.Logf("%s remove:\n%s", m.kind, out)
			if _, err := r.sh(t, m.installed); err == nil {
				t.Error("still installed after removal")
			}
			if orig, after := r.read(t, "tmp/dhcp.orig"), r.read(t, "etc/config/dhcp"); orig != after {
				t.Errorf("/etc/config/dhcp after removal:\n%s\nwant byte-identical to before install:\n%s", after, orig)
			}
			if !r.exists("etc/config/dnsguard") || !strings.Contains(r.read(t, "etc/config/dnsguard"), "debug") {
				t.Error("the modified /etc/config/dnsguard was not kept")
			}
			if r.exists("usr/sbin/dnsguard") || r.exists("etc/init.d/dnsguard") || r.exists("etc/rc.d/S19dnsguard") {
				t.Error("package files or the enable link left behind")
			}
			if r.exists("etc/uci-defaults/99-dnsguard-restore-dnsmasq") {
				t.Error("restore script left in /etc/uci-defaults after removal")
			}
		})
	}
}

// TestOpenWrtRunsAsRootWithoutUjail: capabilities apply only in ujail, so
// without procd-ujail the instance must not switch user (it could not bind
// port 53 or manage its table).
func TestOpenWrtRunsAsRootWithoutUjail(t *testing.T) {
	m := managers(t)[0]
	r := installIn(t, m, m.new, false)
	sets := serviceSets(t, r.read(t, "tmp/ubus.log"))
	if len(sets) == 0 {
		t.Fatal("not started")
	}
	main := sets[len(sets)-1].Instances["main"]
	if main.User != "" || main.Capabilities != "" || main.Jail != nil {
		t.Errorf("without ujail: user %q, capabilities %q, jail %v; want root and none", main.User, main.Capabilities, main.Jail)
	}
	if !strings.Contains(r.read(t, "tmp/syslog.log"), "procd-ujail") {
		t.Error("the log does not say why the guard runs as root")
	}
}

// TestOpenWrtSysupgradeWithoutPackage: sysupgrade keeps /etc/config and
// what keep.d lists; the first boot of an image without dnsguard runs the
// kept restore script, and dnsmasq is back on port 53.
func TestOpenWrtSysupgradeWithoutPackage(t *testing.T) {
	for _, m := range managers(t) {
		t.Run(m.kind, func(t *testing.T) {
			r := installIn(t, m, m.new, true)
			orig := r.read(t, "tmp/dhcp.orig")
			keep := strings.Fields(r.read(t, "lib/upgrade/keep.d/dnsguard"))
			if !slices.Contains(keep, "/etc/uci-defaults/99-dnsguard-restore-dnsmasq") {
				t.Fatalf("keep.d lists %q, not the restore script", keep)
			}

			// The new image: a fresh root, with what sysupgrade keeps.
			img := newOWRoot(t)
			kept := []string{"/etc/config/"}
			kept = append(kept, keep...)
			for _, k := range kept {
				src := r.path(k)
				st, err := os.Stat(src)
				if err != nil {
					continue
				}
				if st.IsDir() {
					if out, err := exec.Command("cp", "-a", src+"/.", img.path(k)).CombinedOutput(); err != nil {
						if err := os.MkdirAll(img.path(k), 0o755); err != nil {
							t.Fatal(err)
						}
						if out, err = exec.Command("cp", "-a", src+"/.", img.path(k)).CombinedOutput(); err != nil {
							t.Fatalf("cp %s: %v\n%s", k, err, out)
						}
					}
					continue
				}
				if out, err := exec.Command("cp", "-a", src, img.path(k)).CombinedOutput(); err != nil {
					t.Fatalf("cp %s: %v\n%s", k, err, out)
				}
			}
			if got := img.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
				t.Fatalf("kept dhcp has dnsmasq on %q, want 5354 (the guard's hand-over)", got)
			}
			// First boot: /etc/init.d/boot's uci_apply_defaults.
			img.mustSh(t, `cd /etc/uci-defaults && for i in *; do [ -f "$i" ] || continue; ( . "./$i" ) && rm -f "$i"; done; uci commit`)
			if img.exists("etc/uci-defaults/99-dnsguard-restore-dnsmasq") {
				t.Error("restore script still there after the first boot without dnsguard")
			}
			if after := img.read(t, "etc/config/dhcp"); after != orig {
				t.Errorf("dhcp after the first boot:\n%s\nwant as before dnsguard:\n%s", after, orig)
			}
			if got := img.uci(t, "get dhcp.@dnsmasq[0].port"); got != "" {
				t.Errorf("dnsmasq port %q, want unset (53)", got)
			}
		})
	}
}

// TestOpenWrtAPKMatchesPackagePack: the .apk build-packages.sh writes holds
// what OpenWrt 25.12's package-pack.mk makes of the same package (the
// tool's mkapk.sh, from the .ipk): info, scripts, files and modes,
// lib/apk/packages metadata. Hashes and times are left out.
func TestOpenWrtAPKMatchesPackagePack(t *testing.T) {
	requireOpenWrt(t)
	apk := filepath.Join(openWrtOut(), "prefix", "bin", "apk")
	for _, a := range arches {
		t.Run(a.name, func(t *testing.T) {
			dir := t.TempDir()
			out, err := exec.Command("bash", filepath.Join(toolDir, "mkapk.sh"), openWrtOut(), ipkPath(a.name), dir).CombinedOutput()
			if err != nil {
				t.Fatalf("mkapk.sh: %v\n%s", err, out)
			}
			want := adbdump(t, apk, filepath.Join(dir, "dnsguard-"+testVersion+".apk"))
			got := adbdump(t, apk, apkPath(a.name))
			if got != want {
				t.Errorf("adbdump differs from package-pack.mk's:\n--- ours\n%s\n--- package-pack.mk\n%s", got, want)
			}
			for _, s := range []string{"arch: " + a.name, "- kmod-nfnetlink-log", "license: Apache-2.0", "name: dnsguard.rusers", "post-deinstall"} {
				if !strings.Contains(got, s) {
					t.Errorf("adbdump lacks %q", s)
				}
			}
		})
	}
}

// adbdump prints an .apk with the lines that depend on build time removed.
func adbdump(t *testing.T, apk, pkg string) string {
	t.Helper()
	out, err := exec.Command(apk, "adbdump", pkg).Output()
	if err != nil {
		t.Fatalf("apk adbdump %s: %v", pkg, err)
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.TrimSpace(line)
		if strings.HasPrefix(f, "mtime:") || strings.HasPrefix(f, "hashes:") || strings.HasPrefix(f, "# ADB block") {
			continue
		}
		keep = append(keep, line)
	}
	return string(bytes.TrimSpace([]byte(strings.Join(keep, "\n"))))
}

// Fail-safe (issue 9, "never a DNS outage"): whenever the guard is not
// answering, dnsmasq gets port 53 back, and the log says why. Each path is
// shown in the root on the installed package: the dhcp config OpenWrt's
// dnsmasq init reads (its port option), dnsmasq restarted (its init
// stand-in's log), and the reason in syslog (logger's stand-in).

func dnsmasqRestarts(t *testing.T, r *owRoot) int {
	t.Helper()
	b, err := os.ReadFile(r.path("tmp/dnsmasq-init.log"))
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "dnsmasq-init restart")
}

// TestFailsafeBrokenConfigAtBoot: a config that does not load at boot
// leaves dnsmasq on port 53 with the option named in the log; once fixed,
// starting the guard moves dnsmasq back behind it.
func TestFailsafeBrokenConfigAtBoot(t *testing.T) {
	m := managers(t)[0]
	r := installIn(t, m, m.new, true)
	before := dnsmasqRestarts(t, r)
	r.mustSh(t, "sed -i \"s/option persist_interval '6h'/option persist_interval 'daily'/\" /etc/config/dnsguard; : >/tmp/syslog.log")
	out, err := r.sh(t, "/etc/init.d/dnsguard boot")
	if err == nil {
		t.Logf("boot exit 0 (rc.common ignores start_service's status):\n%s", out)
	}
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "" {
		t.Errorf("dnsmasq port %q with the guard's config broken, want unset (53, as before the guard)", got)
	}
	if dnsmasqRestarts(t, r) <= before {
		t.Error("dnsmasq not restarted onto port 53")
	}
	syslog := r.read(t, "tmp/syslog.log")
	if !strings.Contains(syslog, "not serving DNS") || !strings.Contains(syslog, "persist_interval") {
		t.Errorf("the log does not say why (want the option named):\n%s", syslog)
	}
	if reason := r.uci(t, "get dhcp.@dnsmasq[0].dnsguard_failsafe"); !strings.Contains(reason, "persist_interval") {
		t.Errorf("dhcp marker %q does not say why", reason)
	}

	// Fixed: the guard takes port 53 again.
	r.mustSh(t, "sed -i \"s/option persist_interval 'daily'/option persist_interval '6h'/\" /etc/config/dnsguard; : >/tmp/ubus.log; /etc/init.d/dnsguard start")
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
		t.Errorf("dnsmasq port %q after the fix, want 5354 (behind the guard)", got)
	}
	if got := r.uci(t, "get dhcp.@dnsmasq[0].dnsguard_failsafe"); got != "" {
		t.Errorf("fail-safe marker %q left", got)
	}
	if sets := serviceSets(t, r.read(t, "tmp/ubus.log")); len(sets) == 0 || sets[len(sets)-1].Instances["main"].Command == nil {
		t.Error("the guard was not started after the fix")
	}

	// Removal in the middle of a fail-safe still restores dhcp exactly.
	r.mustSh(t, "/usr/libexec/dnsguard-failsafe on test; "+m.remove)
	if orig, after := r.read(t, "tmp/dhcp.orig"), r.read(t, "etc/config/dhcp"); orig != after {
		t.Errorf("dhcp after removal during a fail-safe:\n%s\nwant:\n%s", after, orig)
	}
}

// TestFailsafeDaemonGone: the daemon exited for good (procd's respawn
// limit reached: procd shows the instance not running) — the watcher's
// probes go unanswered and it hands port 53 to dnsmasq, naming the exit
// status procd reports. The same probes against the real guard answering
// on 127.0.0.1:53 in the root leave everything alone.
func TestFailsafeDaemonGone(t *testing.T) {
	m := managers(t)[0]
	r := installIn(t, m, m.new, true)

	// The real guard (static x86_64 binary) serving in the root's netns.
	conf := routerConfig(t)
	for key, line := range map[string]string{
		"upstream":      "\tlist upstream 'udp://127.0.0.1:5399'",
		"lan":           "",
		"state_persist": "\toption state_persist ''",
	} {
		conf = withOption(t, conf, key, line)
	}
	conf = withListen(t, conf, "\tlist listen '127.0.0.1:53'")
	r.write(t, "tmp/guard.conf", conf, 0o644)
	out := r.mustSh(t, `/usr/sbin/dnsguard run --config /tmp/guard.conf >/tmp/guard.log 2>&1 &
		guard=$!
		n=0; until nslookup -timeout=1 -retry=1 localhost 127.0.0.1:53 2>/dev/null | grep -q '^Server:'; do
			n=$((n+1)); [ $n -gt 60 ] && { echo "guard never answered"; cat /tmp/guard.log; exit 1; }; sleep 0.5; done
		: >/tmp/syslog.log
		DNSGUARD_FAILSAFE_INTERVAL=0 /usr/libexec/dnsguard-failsafe check; echo "check=$?"
		kill $guard; wait $guard`)
	if !strings.Contains(out, "check=0") {
		t.Errorf("check with the guard answering: %s", out)
	}
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
		t.Errorf("dnsmasq port %q though the guard answers, want 5354", got)
	}

	// procd gave up on it: not running, last exit status 2.
	r.write(t, "etc/openwrt-root/ubus/service.list.json",
		`{"dnsguard":{"instances":{"main":{"running":false,"exit_code":2},"failsafe":{"running":true}}}}`, 0o644)
	before := dnsmasqRestarts(t, r)
	out, _ = r.sh(t, ": >/tmp/syslog.log; DNSGUARD_FAILSAFE_INTERVAL=0 /usr/libexec/dnsguard-failsafe check; echo check=$?")
	if !strings.Contains(out, "check=1") {
		t.Errorf("check with nothing answering: %s", out)
	}
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "" {
		t.Errorf("dnsmasq port %q with the guard gone, want unset (53)", got)
	}
	if dnsmasqRestarts(t, r) <= before {
		t.Error("dnsmasq not restarted onto port 53")
	}
	if syslog := r.read(t, "tmp/syslog.log"); !strings.Contains(syslog, "not running (last exit status 2)") {
		t.Errorf("the log does not say why:\n%s", syslog)
	}

	// The watcher tries the guard again later: start hands the port back
	// and declares the instances; still silent, dnsmasq takes 53 again.
	out, _ = r.sh(t, ": >/tmp/ubus.log; : >/tmp/syslog.log; /usr/libexec/dnsguard-failsafe watch",
		"DNSGUARD_FAILSAFE_INTERVAL=0", "DNSGUARD_FAILSAFE_RETRY=0", "DNSGUARD_FAILSAFE_ROUNDS=1", "DNSGUARD_FAILSAFE_GRACE=0")
	syslog := r.read(t, "tmp/syslog.log")
	if !strings.Contains(syslog, "trying the guard again") || !strings.Contains(syslog, "port 53 handed back to the guard") ||
		strings.Count(syslog, "not serving DNS") != 1 {
		t.Errorf("retry: want try, hand back, fail-safe again; log:\n%s\n%s", syslog, out)
	}
	if len(serviceSets(t, r.read(t, "tmp/ubus.log"))) == 0 {
		t.Error("the retry did not start the service")
	}
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "" {
		t.Errorf("dnsmasq port %q after a failed retry, want unset (53)", got)
	}
}

// TestFailsafeStop: stopping the guard by hand leaves the LAN to dnsmasq;
// an upgrade's stop (PKG_UPGRADE=1) does not.
func TestFailsafeStop(t *testing.T) {
	m := managers(t)[0]
	r := installIn(t, m, m.new, true)
	r.mustSh(t, "PKG_UPGRADE=1 /etc/init.d/dnsguard stop")
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "5354" {
		t.Errorf("dnsmasq port %q after an upgrade's stop, want 5354", got)
	}
	r.mustSh(t, "/etc/init.d/dnsguard stop")
	if got := r.uci(t, "get dhcp.@dnsmasq[0].port"); got != "" {
		t.Errorf("dnsmasq port %q after stop, want unset (53)", got)
	}
	if !strings.Contains(r.read(t, "tmp/syslog.log"), "stopped") {
		t.Error("the log does not say the guard was stopped")
	}
}

// TestOpkgFreeSpace: the real opkg's check of Installed-Size against the
// free space of /overlay (a tmpfs of a chosen size in the root): refused
// just below, installed just above (the x86_64 package, which the root
// runs; each arch's Installed-Size is in the footprint table).
func TestOpkgFreeSpace(t *testing.T) {
	m := managers(t)[0]
	p := openIPK(t, m.new)
	isize, err := strconv.ParseInt(parseControl(t, p.control["control"].data)["Installed-Size"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	need := (isize + 1023) / 1024 // KiB, as opkg rounds
	for _, tc := range []struct {
		name string
		kib  int64
		ok   bool
	}{
		{"below", need - 256, false},
		{"above", need + 256, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newOWRoot(t)
			r.copyIn(t, m.new, "tmp/pkgs/"+filepath.Base(m.new))
			out, err := r.sh(t, fmt.Sprintf("mkdir -p /overlay && mount -t tmpfs -o size=%dk tmpfs /overlay && opkg install /tmp/pkgs/%s", tc.kib, filepath.Base(m.new)))
			installed := err == nil && r.exists("usr/sbin/dnsguard")
			if installed != tc.ok {
				t.Errorf("/overlay of %d KiB for Installed-Size %d (%d KiB): installed %v, want %v\n%s", tc.kib, isize, need, installed, tc.ok, out)
			}
			if !tc.ok && !strings.Contains(out, "Only have") {
				t.Errorf("refused without opkg's free-space message:\n%s", out)
			}
		})
	}
}
