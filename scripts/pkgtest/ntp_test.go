package pkgtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sysntpdStandIn is /etc/init.d/sysntpd as rc.common answers 'enabled'.
func sysntpdStandIn(enabled bool) string {
	rc := "1"
	if enabled {
		rc = "0"
	}
	return "#!/bin/sh\n[ \"$1\" = enabled ] && exit " + rc + "\nexit 0\n"
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

// waitsForNTP reports whether the main instance's command line (set and
// appended) has --dnssec-wait-ntp, and checks the daemon accepts it.
func waitsForNTP(t *testing.T, r *initRoot, calls [][]string) bool {
	t.Helper()
	main := instanceCalls(calls, "main")
	cmds := paramsOf(main, "command")
	if len(cmds) != 1 {
		t.Fatalf("command set %d times: %q", len(cmds), cmds)
	}
	cmd := slices.Clone(cmds[0])
	for _, c := range main {
		if len(c) >= 2 && c[0] == "append_param" && c[1] == "command" {
			cmd = append(cmd, c[2:]...)
		}
	}
	check := exec.Command(cmd[0], append(cmd[1:], "--check")...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("%q --check: %v\n%s", check.Args, err, out)
	}
	return slices.Contains(cmd, "--dnssec-wait-ntp")
}

// TestInitWaitsForNTP: with sysntpd enabled, and not yet synced this boot,
// the guard is started with --dnssec-wait-ntp (as OpenWrt's dnsmasq gets
// --dnssec-no-timecheck); otherwise without.
func TestInitWaitsForNTP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sysntpd string // "": no /etc/init.d/sysntpd
		synced  bool   // /var/state/dnsguard-ntp exists
		want    bool
	}{
		{"sysntpd enabled", sysntpdStandIn(true), false, true},
		{"sysntpd disabled", sysntpdStandIn(false), false, false},
		{"no sysntpd", "", false, false},
		{"sysntpd enabled, already synced", sysntpdStandIn(true), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newInitRoot(t, routerConfig(t), networkConfig)
			if tc.sysntpd != "" {
				writeFile(t, filepath.Join(r.dir, "etc/init.d/sysntpd"), tc.sysntpd, 0o755)
			}
			if tc.synced {
				writeFile(t, filepath.Join(r.dir, "var/state/dnsguard-ntp"), "sysntpd stratum 2\n", 0o644)
			}
			calls, stderr, ok := r.run(t, "start")
			if !ok {
				t.Fatalf("start failed:\n%s", stderr)
			}
			if got := waitsForNTP(t, r, calls); got != tc.want {
				t.Errorf("--dnssec-wait-ntp in the command: %v, want %v: %q", got, tc.want, instanceCalls(calls, "main"))
			}
		})
	}
}

// TestNTPHotplug: the package's /etc/hotplug.d/ntp/25-dnsguard, run as
// hotplug-call runs it for sysntpd, tells the guard (through
// /etc/init.d/dnsguard ntp_synced: procd sends SIGUSR1 to the instance)
// when NTP has a synced stratum, and marks the boot synced for later
// starts; it does nothing for other events or stratum 16 (unsynced).
func TestNTPHotplug(t *testing.T) {
	built(t)
	p := openIPK(t, ipkPath("mipsel_24kc"))
	e, ok := p.data["etc/hotplug.d/ntp/25-dnsguard"]
	if !ok {
		t.Fatal("package lacks /etc/hotplug.d/ntp/25-dnsguard")
	}
	for _, tc := range []struct {
		name string
		env  []string
		want bool
	}{
		{"stratum 2", []string{"ACTION=stratum", "stratum=2"}, true},
		{"stratum unset", []string{"ACTION=stratum"}, true},
		{"stratum 16: unsynced", []string{"ACTION=stratum", "stratum=16"}, false},
		{"unsync", []string{"ACTION=unsync", "stratum=16"}, false},
		{"periodic", []string{"ACTION=periodic", "stratum=2"}, false},
		{"step", []string{"ACTION=step", "stratum=3"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newInitRoot(t, routerConfig(t), networkConfig)
			hotplug := filepath.Join(r.dir, "etc/hotplug.d/ntp/25-dnsguard")
			writeFile(t, hotplug, string(e.data), 0o755)
			// /etc/init.d/dnsguard: the package's init script as rc.common
			// runs it, its procd calls printed.
			writeFile(t, filepath.Join(r.dir, "etc/init.d/dnsguard"),
				"#!/bin/sh\nexec "+r.sh+" -c '"+initDriver+"' driver \"$@\"\n", 0o755)
			cmd := exec.Command(r.sh, hotplug)
			cmd.Env = append(append(os.Environ(),
				"IPKG_INSTROOT="+r.dir,
				"UCI_CONFIG_DIR="+filepath.Join(r.dir, "etc/config"),
				"STANDIN="+r.standIn,
				"INITSCRIPT="+r.init,
			), tc.env...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("hotplug script: %v\n%s", err, errb.String())
			}
			signalled := strings.Contains(out.String(), "send_signal|dnsguard|main|USR1")
			if signalled != tc.want {
				t.Errorf("SIGUSR1 sent: %v, want %v; procd calls:\n%s%s", signalled, tc.want, out.String(), errb.String())
			}
			_, err := os.Stat(filepath.Join(r.dir, "var/state/dnsguard-ntp"))
			if marked := err == nil; marked != tc.want {
				t.Errorf("boot marked synced: %v, want %v", marked, tc.want)
			}
			if !tc.want {
				return
			}
			// A guard started after the sync does not wait for NTP.
			writeFile(t, filepath.Join(r.dir, "etc/init.d/sysntpd"), sysntpdStandIn(true), 0o755)
			calls, stderr, ok := r.run(t, "start")
			if !ok {
				t.Fatalf("start failed:\n%s", stderr)
			}
			if waitsForNTP(t, r, calls) {
				t.Error("started with --dnssec-wait-ntp after NTP synced")
			}
		})
	}
}

// TestOpenWrtNTPWait: in the OpenWrt-like root (real rc.common, procd.sh,
// opkg/apk; ubus logged), the package installs the ntp hotplug script;
// with sysntpd enabled the procd instance runs the guard with
// --dnssec-wait-ntp, and sysntpd's hotplug event (ACTION=stratum) makes
// procd send the instance SIGUSR1 (ubus call service signal, 10); a start
// after that, or with sysntpd disabled, has no flag.
func TestOpenWrtNTPWait(t *testing.T) {
	m := managers(t)[0]
	r := installIn(t, m, m.new, true)
	const hotplug = "etc/hotplug.d/ntp/25-dnsguard"
	if !r.exists(hotplug) {
		t.Fatalf("the package did not install /%s", hotplug)
	}
	command := func() []string {
		t.Helper()
		sets := serviceSets(t, r.read(t, "tmp/ubus.log"))
		if len(sets) == 0 {
			t.Fatalf("not started:\n%s", r.read(t, "tmp/ubus.log"))
		}
		return sets[len(sets)-1].Instances["main"].Command
	}
	if c := command(); slices.Contains(c, "--dnssec-wait-ntp") {
		t.Errorf("no sysntpd: command %q has --dnssec-wait-ntp", c)
	}
	// sysntpd, enabled as rc.common enables it (/etc/rc.d/S98sysntpd).
	r.write(t, "etc/init.d/sysntpd", "#!/bin/sh /etc/rc.common\nSTART=98\nUSE_PROCD=1\nstart_service() { :; }\n", 0o755)
	r.mustSh(t, "/etc/init.d/sysntpd enable; : >/tmp/ubus.log; /etc/init.d/dnsguard restart")
	if c := command(); !slices.Contains(c, "--dnssec-wait-ntp") {
		t.Errorf("sysntpd enabled: command %q lacks --dnssec-wait-ntp", c)
	}

	// Not synced yet: nothing sent.
	r.mustSh(t, ": >/tmp/ubus.log; /bin/sh /"+hotplug, "ACTION=stratum", "stratum=16")
	if log := r.read(t, "tmp/ubus.log"); strings.Contains(log, "signal") {
		t.Errorf("stratum 16 (unsynced) signalled the guard:\n%s", log)
	}
	r.mustSh(t, ": >/tmp/ubus.log; /bin/sh /"+hotplug, "ACTION=stratum", "stratum=3")
	log := r.read(t, "tmp/ubus.log")
	var sig struct {
		Name     string `json:"name"`
		Instance string `json:"instance"`
		Signal   int    `json:"signal"`
	}
	found := false
	for _, line := range strings.Split(log, "\n") {
		if js, ok := strings.CutPrefix(line, "ubus call service signal "); ok {
			if err := json.Unmarshal([]byte(js), &sig); err != nil {
				t.Fatalf("ubus call service signal %s: %v", js, err)
			}
			found = true
		}
	}
	if !found || sig.Name != "dnsguard" || sig.Instance != "main" || sig.Signal != 10 {
		t.Errorf("NTP synced: want ubus call service signal {dnsguard main 10 (SIGUSR1)}, got %+v:\n%s", sig, log)
	}
	if !r.exists("var/state/dnsguard-ntp") {
		t.Error("the boot is not marked synced (/var/state/dnsguard-ntp)")
	}
	// Restarted after the sync: no wait.
	r.mustSh(t, ": >/tmp/ubus.log; /etc/init.d/dnsguard restart")
	if c := command(); slices.Contains(c, "--dnssec-wait-ntp") {
		t.Errorf("after NTP synced: command %q has --dnssec-wait-ntp", c)
	}
	// Next boot (marker gone), sysntpd disabled: no wait.
	r.mustSh(t, "rm -f /var/state/dnsguard-ntp; /etc/init.d/sysntpd disable; : >/tmp/ubus.log; /etc/init.d/dnsguard restart")
	if c := command(); slices.Contains(c, "--dnssec-wait-ntp") {
		t.Errorf("sysntpd disabled: command %q has --dnssec-wait-ntp", c)
	}
}
