package pkgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// The packaged guard run the way procd runs it in ujail: as user dnsguard
// (353) with only the capabilities of /etc/capabilities/dnsguard.json in
// its ambient set (setpriv does what ujail does with that file), in a
// network namespace shaped like a router's LAN (br-lan with an address),
// from the shipped config (no listen list: every address of the router).

const (
	capsUID  = 353
	capNetBS = 10 // CAP_NET_BIND_SERVICE
	capNetAd = 12 // CAP_NET_ADMIN
	capsLAN  = "192.168.77.1"
)

type capsGuard struct {
	ns, dir string
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan error
}

// startCapsGuard starts the x86_64 package binary in a fresh namespace with
// the given ambient capabilities (setpriv names: net_bind_service, ...).
func startCapsGuard(t *testing.T, caps []string) *capsGuard {
	t.Helper()
	built(t)
	testenv.Short(t)
	testenv.RequireRoot(t)
	testenv.Require(t, "ip", "nft", "setpriv")
	b := make([]byte, 3)
	rand.Read(b)
	g := &capsGuard{ns: "dgpkg-" + hex.EncodeToString(b), dir: t.TempDir(), out: &lockedBuffer{}, exited: make(chan error, 1)}
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
	}
	run("ip", "netns", "add", g.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", g.ns).Run() })
	run("ip", "-n", g.ns, "link", "set", "lo", "up")
	run("ip", "-n", g.ns, "link", "add", "br-lan", "type", "veth", "peer", "name", "lan-peer")
	run("ip", "-n", g.ns, "addr", "add", capsLAN+"/24", "dev", "br-lan")
	run("ip", "-n", g.ns, "link", "set", "lan-peer", "up")
	run("ip", "-n", g.ns, "link", "set", "br-lan", "up")

	// Binary, config and state where user 353 reaches them.
	for _, d := range []string{filepath.Dir(g.dir), g.dir} { // t.TempDir's are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(g.dir, "dnsguard")
	data, err := os.ReadFile(binPath(hostArch(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(g.dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, capsUID, capsUID); err != nil {
		t.Fatal(err)
	}
	conf := routerConfig(t)
	for key, line := range map[string]string{
		"upstream":      "\tlist upstream 'udp://127.0.0.1:9'", // never asked: only localhost is queried
		"state_file":    fmt.Sprintf("\toption state_file '%s/state.db'", state),
		"state_persist": "\toption state_persist ''",
		"server":        "\toption server ''",
	} {
		conf = withOption(t, conf, key, line)
	}
	confPath := filepath.Join(g.dir, "dnsguard.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	capList := ""
	for i, c := range caps {
		if i > 0 {
			capList += ","
		}
		capList += "+" + c
	}
	args := []string{"netns", "exec", g.ns, "setpriv",
		"--reuid", strconv.Itoa(capsUID), "--regid", strconv.Itoa(capsUID), "--clear-groups",
		"--inh-caps", "-all" + prefixComma(capList), "--ambient-caps", "-all" + prefixComma(capList),
		"--bounding-set", "-all" + prefixComma(capList),
		bin, "run", "--config", confPath}
	ctx, cancel := context.WithCancel(context.Background())
	g.cmd = exec.CommandContext(ctx, "ip", args...)
	g.cmd.Env = append(os.Environ(), "GOMEMLIMIT=24MiB")
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() { cancel(); <-g.exited })
	return g
}

func prefixComma(s string) string {
	if s == "" {
		return ""
	}
	return "," + s
}

// ask sends a query for localhost (answered by the guard itself) to addr
// from inside the namespace, retrying while the guard starts.
func (g *capsGuard) ask(t *testing.T, addr string) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("localhost.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	var lastErr error
	for range 60 {
		select {
		case err := <-g.exited:
			g.exited <- err
			t.Fatalf("guard exited (%v):\n%s", err, g.out.String())
		default:
		}
		var r *dns.Msg
		err := testenv.InNetns(g.ns, func() error {
			var err error
			r, _, err = c.Exchange(q, addr)
			return err
		})
		if err == nil {
			return r
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("no answer on %s: %v\n%s", addr, lastErr, g.out.String())
	return nil
}

// capEff is the process's effective capability mask (its child, the guard,
// found under the ip netns exec process).
func (g *capsGuard) status(t *testing.T) (uid string, capEff uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Uid:":
			uid = f[1]
		case len(f) == 2 && f[0] == "CapEff:":
			capEff, _ = strconv.ParseUint(f[1], 16, 64)
		}
	}
	return uid, capEff
}

// TestCapabilitiesSuffice: as user 353 with exactly the capabilities in the
// package's capabilities file, the guard binds port 53 on every address,
// answers, and installs its nftables table with the NFLOG rules.
func TestCapabilitiesSuffice(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "openwrt/files/dnsguard.capabilities"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string][]string
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, c := range file["ambient"] {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	g := startCapsGuard(t, caps)
	for _, addr := range []string{net.JoinHostPort(capsLAN, "53"), "127.0.0.1:53", "[::1]:53"} {
		r := g.ask(t, addr)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s: localhost answered %s with %d records", addr, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	uid, capEff := g.status(t)
	if uid != strconv.Itoa(capsUID) || capEff != 1<<capNetBS|1<<capNetAd {
		t.Errorf("guard runs as uid %s with CapEff %#x, want %d and %#x", uid, capEff, capsUID, uint64(1<<capNetBS|1<<capNetAd))
	}
	// The table is in (installed once the guard listens: wait for it).
	var table []byte
	for range 40 {
		table, _ = exec.Command("ip", "netns", "exec", g.ns, "nft", "list", "table", "inet", "dnsguard").CombinedOutput()
		if strings.Contains(string(table), "redirect") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !strings.Contains(string(table), "redirect") || !strings.Contains(string(table), "group 53") {
		t.Errorf("no table with redirect and NFLOG rules:\n%s\nguard:\n%s", table, g.out.String())
	}
	if strings.Contains(strings.ToLower(g.out.String()), "operation not permitted") {
		t.Errorf("something was refused with these capabilities:\n%s", g.out.String())
	}
}

// TestTableRefusedKeepsServing (issue 9 fail-safe, third path): without
// CAP_NET_ADMIN the kernel refuses the guard's nftables table and NFLOG;
// the guard keeps answering on every address and says why in its log.
func TestTableRefusedKeepsServing(t *testing.T) {
	g := startCapsGuard(t, []string{"net_bind_service"})
	for _, addr := range []string{net.JoinHostPort(capsLAN, "53"), "127.0.0.1:53"} {
		r := g.ask(t, addr)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s: localhost answered %s with %d records", addr, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	// Give the table install its turn, then the guard must still be up.
	for range 40 {
		if strings.Contains(g.out.String(), "table") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	g.ask(t, "127.0.0.1:53")
	if out, _ := exec.Command("ip", "netns", "exec", g.ns, "nft", "list", "table", "inet", "dnsguard").CombinedOutput(); strings.Contains(string(out), "redirect") {
		t.Errorf("a table was installed without CAP_NET_ADMIN:\n%s", out)
	}
	if !strings.Contains(g.out.String(), "table") {
		t.Errorf("the log does not say the table is missing:\n%s", g.out.String())
	}
	t.Logf("guard log:\n%s", g.out.String())
}
