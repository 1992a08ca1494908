package pkgtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// openwrtStandIn stands in for OpenWrt's /lib/functions.sh (config_load and
// friends, as uci export feeds them) and /lib/functions/procd.sh (each
// procd_* call prints one "call|arg|arg..." line, which the test reads).
const openwrtStandIn = `
CONFIG_VARS=
_cfg_set() { eval "CONFIG_$1=\$2"; CONFIG_VARS="$CONFIG_VARS CONFIG_$1"; }
config_load() {
	local v
	for v in $CONFIG_VARS; do unset "$v"; done
	CONFIG_VARS= CONFIG_SECTIONS= CONFIG_NUM_SECTIONS=0 CONFIG_SECTION=
	[ -f "$UCI_CONFIG_DIR/$1" ] || return 1
	. "$UCI_CONFIG_DIR/$1"
}
config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	CONFIG_SECTION=${2:-cfg$CONFIG_NUM_SECTIONS}
	CONFIG_SECTIONS="$CONFIG_SECTIONS $CONFIG_SECTION"
	_cfg_set "${CONFIG_SECTION}_TYPE" "$1"
}
option() { _cfg_set "${CONFIG_SECTION}_$1" "$2"; }
list() {
	local cur
	eval "cur=\${CONFIG_${CONFIG_SECTION}_$1}"
	_cfg_set "${CONFIG_SECTION}_$1" "${cur:+$cur }$2"
}
config_get() {
	case $# in
	2) eval "echo \"\${CONFIG_$1_$2}\"" ;;
	*) eval "$1=\${CONFIG_$2_$3:-\$4}" ;;
	esac
}
config_foreach() {
	local fn=$1 type=$2 s t
	shift 2
	for s in $CONFIG_SECTIONS; do
		eval "t=\${CONFIG_${s}_TYPE}"
		if [ "$t" = "$type" ]; then "$fn" "$s" "$@"; fi
	done
}
_procd() { (IFS='|'; echo "$*"); }
procd_open_instance() { _procd open_instance "$@"; }
procd_set_param() { _procd set_param "$@"; }
procd_append_param() { _procd append_param "$@"; }
procd_close_instance() { _procd close_instance; }
procd_add_reload_trigger() { _procd add_reload_trigger "$@"; }
procd_add_config_trigger() { _procd add_config_trigger "$@"; }
procd_add_interface_trigger() { _procd add_interface_trigger "$@"; }
procd_send_signal() { _procd send_signal "$@"; }
procd_open_data() { _procd open_data; }
procd_close_data() { _procd close_data; }
procd_set_config_changed() { _procd set_config_changed "$@"; }
json_add_array() { :; }
json_add_object() { :; }
json_add_string() { _procd json "$@"; }
json_close_object() { :; }
json_close_array() { :; }
uci() { return 1; }
logger() { echo "logger: $*" >&2; }
`

// initDriver sources the stand-in and the init script, then does what
// /etc/rc.common would for the action in $1 (less procd itself).
const initDriver = `
. "$STANDIN"
. "$INITSCRIPT"
start() { start_service "$@"; }
case "$1" in
start) start_service ;;
boot) boot ;;
reload) reload_service ;;
triggers) service_triggers ;;
ntp_synced) ntp_synced ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
`

const networkConfig = `
config interface 'loopback'
	option device 'lo'
	option proto 'static'
	option ipaddr '127.0.0.1'
	option netmask '255.0.0.0'

config device
	option name 'br-lan'
	option type 'bridge'
	list ports 'lan1'
	list ports 'lan2'

config interface 'lan'
	option device 'br-lan'
	option proto 'static'
	option ipaddr '192.168.8.1'
	option netmask '255.255.255.0'

config interface 'wan'
	option device 'wan'
	option proto 'dhcp'
`

// before OpenWrt 21.02: bridges were declared on the interface
const networkConfigOld = `
config interface 'lan'
	option type 'bridge'
	option ifname 'eth0.1'
	option proto 'static'
	option ipaddr '192.168.1.1'

config interface 'wan'
	option ifname 'eth0.2'
	option proto 'dhcp'
`

// initRoot is an offline OpenWrt root with the init script, the binary and
// the given configs.
type initRoot struct {
	dir, sh, init, standIn string
}

func newInitRoot(t *testing.T, dnsguardConf, networkConf string) *initRoot {
	t.Helper()
	built(t)
	sh := testenv.Require(t, "sh")[0]
	r := &initRoot{dir: t.TempDir(), sh: sh}
	for path, body := range map[string]string{
		"etc/config/dnsguard": dnsguardConf,
		"etc/config/network":  networkConf,
		"standin.sh":          openwrtStandIn,
	} {
		p := filepath.Join(r.dir, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(r.dir, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	// the fail-safe helper records its calls as procd calls do
	failsafe := filepath.Join(r.dir, "usr/libexec/dnsguard-failsafe")
	if err := os.MkdirAll(filepath.Dir(failsafe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(failsafe, []byte("#!/bin/sh\n(IFS='|'; echo \"failsafe|$*\")\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binPath(hostArch(t)), filepath.Join(r.dir, "usr/sbin/dnsguard")); err != nil {
		t.Fatal(err)
	}
	r.init = filepath.Join(repoRoot, "openwrt/files/dnsguard.init")
	r.standIn = filepath.Join(r.dir, "standin.sh")
	return r
}

func (r *initRoot) conf() string { return filepath.Join(r.dir, "etc/config/dnsguard") }
func (r *initRoot) prog() string { return filepath.Join(r.dir, "usr/sbin/dnsguard") }

// run does an init action and returns the procd calls it made, its stderr
// and whether it succeeded.
func (r *initRoot) run(t *testing.T, action string) (calls [][]string, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command(r.sh, "-c", initDriver, "driver", action)
	cmd.Env = append(os.Environ(),
		"IPKG_INSTROOT="+r.dir,
		"UCI_CONFIG_DIR="+filepath.Join(r.dir, "etc/config"),
		"STANDIN="+r.standIn,
		"INITSCRIPT="+r.init,
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, exit := err.(*exec.ExitError); !exit {
			t.Fatal(err)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line != "" {
			calls = append(calls, strings.Split(line, "|"))
		}
	}
	return calls, errb.String(), err == nil
}

func routerConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "openwrt/files/dnsguard.config"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withListen adds a listen line to the main section of the router config
// (the shipped one has none).
func withListen(t *testing.T, conf, line string) string {
	t.Helper()
	const main = "config dnsguard 'main'\n"
	if !strings.Contains(conf, main) {
		t.Fatal("router config has no main section")
	}
	return strings.Replace(conf, main, main+line+"\n", 1)
}

// withOption replaces the line setting option key in the router config.
func withOption(t *testing.T, conf, key, line string) string {
	t.Helper()
	var out []string
	found := false
	for _, l := range strings.Split(conf, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "option" || f[0] == "list") && f[1] == key {
			if !found {
				out = append(out, line)
			}
			found = true
			continue
		}
		out = append(out, l)
	}
	if !found {
		t.Fatalf("router config has no option %s", key)
	}
	return strings.Join(out, "\n")
}

func lineOf(t *testing.T, conf, text string) int {
	t.Helper()
	for i, l := range strings.Split(conf, "\n") {
		if strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("no line with %q", text)
	return 0
}

func hasCall(calls [][]string, want ...string) bool {
	return slices.ContainsFunc(calls, func(c []string) bool { return slices.Equal(c, want) })
}

// instanceCalls are the calls between opening and closing instance name.
func instanceCalls(calls [][]string, name string) [][]string {
	var out [][]string
	in := false
	for _, c := range calls {
		switch {
		case c[0] == "open_instance":
			in = len(c) > 1 && c[1] == name
		case c[0] == "close_instance":
			in = false
		case in:
			out = append(out, c)
		}
	}
	return out
}

func paramsOf(calls [][]string, name string) [][]string {
	var out [][]string
	for _, c := range calls {
		if len(c) >= 2 && c[0] == "set_param" && c[1] == name {
			out = append(out, c[2:])
		}
	}
	return out
}

func TestInitStartsDaemonOnRouterConfig(t *testing.T) {
	r := newInitRoot(t, routerConfig(t), networkConfig)
	calls, stderr, ok := r.run(t, "start")
	if !ok {
		t.Fatalf("start_service failed:\n%s", stderr)
	}
	if !hasCall(calls, "open_instance", "main") || !hasCall(calls, "close_instance") {
		t.Fatalf("no procd instance 'main' opened and closed: %q", calls)
	}
	cmds := paramsOf(instanceCalls(calls, "main"), "command")
	if len(cmds) != 1 {
		t.Fatalf("command set %d times: %q", len(cmds), cmds)
	}
	if fs := paramsOf(instanceCalls(calls, "failsafe"), "command"); len(fs) != 1 || !strings.HasSuffix(fs[0][0], "/usr/libexec/dnsguard-failsafe") || fs[0][1] != "watch" {
		t.Errorf("failsafe instance command %q, want dnsguard-failsafe watch", fs)
	}
	want := []string{r.prog(), "run", "--config", r.conf()}
	if !slices.Equal(cmds[0], want) {
		t.Errorf("command %q, want %q: the daemon reads its UCI file itself", cmds[0], want)
	}
	if env := paramsOf(instanceCalls(calls, "main"), "env"); len(env) != 1 || !slices.Equal(env[0], []string{"GOMEMLIMIT=24MiB"}) {
		t.Errorf("env %q, want GOMEMLIMIT=24MiB from memory_limit '24M'", env)
	}
	if rs := paramsOf(instanceCalls(calls, "main"), "respawn"); len(rs) != 1 {
		t.Errorf("respawn %q: procd must keep the guard alive", rs)
	}
	for _, p := range []string{"stdout", "stderr"} {
		if v := paramsOf(instanceCalls(calls, "main"), p); len(v) != 1 || !slices.Equal(v[0], []string{"1"}) {
			t.Errorf("%s %q: the log must go to logd", p, v)
		}
	}

	// The command line procd would run is one the daemon accepts with this
	// config (checked, not started: it would bind port 53).
	check := exec.Command(cmds[0][0], append(cmds[0][1:], "--check")...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("%q --check: %v\n%s", check.Args, err, out)
	}
}

func TestInitTriggers(t *testing.T) {
	fixed := withListen(t, routerConfig(t), "\tlist listen '192.168.8.1:53'")
	for _, tc := range []struct {
		name, network, conf string
		iface               bool
	}{
		{"all LAN addresses", networkConfig, "", false},
		{"fixed address", networkConfig, fixed, true},
		{"fixed address, pre-21.02 bridge", networkConfigOld, fixed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.conf
			if conf == "" {
				conf = routerConfig(t)
			}
			r := newInitRoot(t, conf, tc.network)
			calls, stderr, ok := r.run(t, "triggers")
			if !ok {
				t.Fatalf("service_triggers failed:\n%s", stderr)
			}
			if !hasCall(calls, "add_reload_trigger", "dnsguard") {
				t.Errorf("no reload trigger on the dnsguard config: %q", calls)
			}
			for _, c := range calls {
				if c[0] == "add_config_trigger" && slices.Contains(c, "firewall") {
					t.Errorf("trigger %q: fw4 reloads leave the guard's table alone, no restart", c)
				}
			}
			want := []string{"add_interface_trigger", "interface.*.up", "lan", "/etc/init.d/dnsguard", "start"}
			if got := hasCall(calls, want...); got != tc.iface {
				t.Errorf("interface trigger %q present %v, want %v: %q", want, got, tc.iface, calls)
			}
			for _, c := range calls {
				if c[0] == "add_interface_trigger" && (c[2] != "lan" || c[len(c)-1] != "start") {
					t.Errorf("trigger %q: only the guard's LAN, and 'start' (a running guard is left alone)", c)
				}
			}
		})
	}
}

func TestInitBootWaitsForLAN(t *testing.T) {
	// A fixed LAN address waits for the LAN.
	fixed := withListen(t, routerConfig(t), "\tlist listen '192.168.8.1:53'")
	r := newInitRoot(t, fixed, networkConfig)
	calls, stderr, ok := r.run(t, "boot")
	if !ok {
		t.Fatalf("boot failed:\n%s", stderr)
	}
	if hasCall(calls, "open_instance", "main") {
		t.Errorf("instance started at boot before its LAN address is up: %q", calls)
	}

	// Serving every address (no listen list) or no LAN: nothing to wait for.
	for _, conf := range []string{routerConfig(t), withOption(t, fixed, "lan", "")} {
		r = newInitRoot(t, conf, networkConfig)
		calls, stderr, ok = r.run(t, "boot")
		if !ok || !hasCall(calls, "open_instance", "main") || !hasCall(calls, "open_instance", "failsafe") {
			t.Errorf("no instances at boot (ok=%v): %q\n%s", ok, calls, stderr)
		}
	}
}

func TestInitMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ value, env string }{
		{"0", ""},
		{"64M", "GOMEMLIMIT=64MiB"},
		{"64MiB", "GOMEMLIMIT=64MiB"},
		{"512K", "GOMEMLIMIT=512KiB"},
		{"1G", "GOMEMLIMIT=1GiB"},
		{"50331648", "GOMEMLIMIT=50331648"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			conf := withOption(t, routerConfig(t), "memory_limit", fmt.Sprintf("\toption memory_limit '%s'", tc.value))
			r := newInitRoot(t, conf, networkConfig)
			calls, stderr, ok := r.run(t, "start")
			if !ok {
				t.Fatalf("start failed:\n%s", stderr)
			}
			env := paramsOf(calls, "env")
			switch {
			case tc.env == "" && len(env) != 0:
				t.Errorf("env %q, want none (0 = unlimited)", env)
			case tc.env != "" && (len(env) != 1 || !slices.Equal(env[0], []string{tc.env})):
				t.Errorf("env %q, want %s", env, tc.env)
			}
		})
	}
}

func TestInitBrokenConfigNamesOption(t *testing.T) {
	for _, tc := range []struct {
		name, key, line, want string
	}{
		{"bad size", "memory_limit", "\toption memory_limit 'lots'", `"memory_limit"`},
		{"misspelt option", "memory_limit", "\toption memory_limt '48M'", `unknown option "memory_limt"`},
		{"bad duration", "persist_interval", "\toption persist_interval 'daily'", `"persist_interval"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := withOption(t, routerConfig(t), tc.key, tc.line)
			r := newInitRoot(t, conf, networkConfig)
			for _, action := range []string{"start", "reload"} {
				calls, stderr, ok := r.run(t, action)
				if ok {
					t.Errorf("%s succeeded on a broken config: %q", action, calls)
				}
				if hasCall(calls, "open_instance", "main") || slices.ContainsFunc(calls, func(c []string) bool { return c[0] == "send_signal" }) {
					t.Errorf("%s still (re)started the daemon: %q", action, calls)
				}
				// start gives port 53 to dnsmasq and says why; a reload
				// leaves the running guard (old config) serving.
				onCall := slices.ContainsFunc(calls, func(c []string) bool {
					return len(c) == 3 && c[0] == "failsafe" && c[1] == "on" && strings.Contains(c[2], tc.want)
				})
				if onCall != (action == "start") {
					t.Errorf("%s: failsafe on with the reason called %v: %q", action, onCall, calls)
				}
				where := fmt.Sprintf("%s:%d:", r.conf(), lineOf(t, conf, strings.TrimSpace(tc.line)))
				if !strings.Contains(stderr, where) || !strings.Contains(stderr, tc.want) {
					t.Errorf("%s error %q, want it to name %s and %s", action, stderr, where, tc.want)
				}
			}
		})
	}
}

func TestInitReloadSignalsDaemon(t *testing.T) {
	r := newInitRoot(t, routerConfig(t), networkConfig)
	calls, stderr, ok := r.run(t, "reload")
	if !ok {
		t.Fatalf("reload failed:\n%s", stderr)
	}
	if !hasCall(calls, "send_signal", "dnsguard", "main", "HUP") {
		t.Errorf("reload sent no SIGHUP to the daemon: %q", calls)
	}
	if !hasCall(calls, "open_instance", "main") {
		t.Errorf("reload did not re-declare the instance (for memory_limit changes): %q", calls)
	}
}
