package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// The router testbed: a dev namespace (the devices), rtr (the guard and
// its nftables table) and wan (the guard's upstream and stand-ins for
// public resolvers), joined by veth pairs:
//
//	dev eth0 10.10.10.x/24 fd10::x/64 <-> lan0 10.10.10.1 fd10::1 [rtr] wan0 10.78.0.1 fd78::1 <-> wan0 10.78.0.2 fd78::2 [wan]
//
// wan answers as the guard's upstream on 10.78.0.2:53 (A 93.184.216.34,
// doh.test A 45.90.28.1) and as 8.8.8.8 / 2001:4860:4860::8888 (A
// 6.6.6.6: a device that gets this was not intercepted); it accepts TCP on
// 1.1.1.1:853 (DoT) and on 45.90.28.1:443 and 45.90.28.2:443 (DoH).
const (
	guardAnswer   = "93.184.216.34"
	standinAnswer = "6.6.6.6"
	dohResolved   = "45.90.28.1" // doh.test, resolved by the guard
	dohFixed      = "45.90.28.2" // a configured doh_address
	rtrLAN4       = "10.10.10.1"
	rtrLAN6       = "fd10::1"
)

type testbed struct {
	dev, rtr, wan string
	dir           string
	state         string
	config        string
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	id, _ := testbedID(t, "ip", "nft", "dig", "kdig")
	tb := &testbed{dev: "dgd-" + id, rtr: "dgr-" + id, wan: "dgw-" + id, dir: t.TempDir()}
	tb.state = filepath.Join(tb.dir, "state.db")
	newNamespaces(t, tb.dev, tb.rtr, tb.wan)
	sh(t, "ip", "link", "add", "dgl"+id, "type", "veth", "peer", "name", "dgm"+id)
	sh(t, "ip", "link", "set", "dgl"+id, "netns", tb.rtr, "name", "lan0")
	sh(t, "ip", "link", "set", "dgm"+id, "netns", tb.dev, "name", "eth0")
	sh(t, "ip", "-n", tb.rtr, "addr", "add", rtrLAN4+"/24", "dev", "lan0")
	sh(t, "ip", "-n", tb.rtr, "addr", "add", rtrLAN6+"/64", "dev", "lan0", "nodad")
	sh(t, "ip", "-n", tb.rtr, "link", "set", "lan0", "up")
	linkWAN(t, tb.rtr, tb.wan, "dgw"+id, "dgx"+id, "10.10.10.0/24", "fd10::/64", "1.1.1.1/32", dohResolved+"/32", dohFixed+"/32")

	tb.setDevice(t, "02:d9:00:00:00:01", "10.10.10.2", "fd10::2")
	tb.startWAN(t)
	tb.config = filepath.Join(tb.dir, "dnsguard.conf")
	conf := `config dnsguard 'main'
	option flush_interval '1s'
	option persist_interval '1h'
config intercept
	option redirect_dns '1'
	option block_dot '1'
	option block_doh '1'
	option nflog_group '53'
	option guard_port '53'
	list doh_host 'doh.test'
	list doh_address '` + dohFixed + `'
config limits
	option device_rate '2000'
	option device_burst '4000'
`
	if err := os.WriteFile(tb.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return tb
}

// setDevice gives the dev namespace's interface a MAC and addresses.
func (tb *testbed) setDevice(t *testing.T, mac, ip4, ip6 string) {
	t.Helper()
	sh(t, "ip", "-n", tb.dev, "link", "set", "eth0", "down")
	sh(t, "ip", "-n", tb.dev, "link", "set", "eth0", "address", mac)
	sh(t, "ip", "-n", tb.dev, "addr", "flush", "dev", "eth0")
	sh(t, "ip", "-n", tb.dev, "addr", "add", ip4+"/24", "dev", "eth0")
	sh(t, "ip", "-n", tb.dev, "addr", "add", ip6+"/64", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", tb.dev, "link", "set", "eth0", "up")
	exec.Command("ip", "-n", tb.dev, "route", "add", "default", "via", rtrLAN4).Run()
	exec.Command("ip", "-n", tb.dev, "-6", "route", "add", "default", "via", rtrLAN6).Run()
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startWAN starts the upstream and the stand-ins inside the wan
// namespace: doh.test resolves to dohResolved; DoT on 1.1.1.1:853 and
// DoH on the two DoH addresses accept connections.
func (tb *testbed) startWAN(t *testing.T) {
	t.Helper()
	startWANDNS(t, tb.wan, guardAnswer, standinAnswer, map[string]string{"doh.test.": dohResolved})
	startTCPStandIns(t, tb.wan, "1.1.1.1:853", dohResolved+":443", dohFixed+":443")
}

// startGuard runs dnsguard inside the rtr namespace, intercepting lan0.
func (tb *testbed) startGuard(t *testing.T) *guardProc {
	t.Helper()
	return runGuard(t, tb.guardCmd(binary))
}

// guardCmd is the command startGuard runs, with the dnsguard binary bin.
func (tb *testbed) guardCmd(bin string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", tb.rtr, bin, "run",
		"--config", tb.config, "--lan", "lan0", "--state", tb.state,
		"--listen", rtrLAN4 + ":53", "--listen", "[" + rtrLAN6 + "]:53",
		"--upstream", "udp://10.78.0.2:53"}, args...)...)
}

// devDig runs dig in the dev namespace and returns its +short answer.
func (tb *testbed) devDig(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := exec.Command("ip", append([]string{"netns", "exec", tb.dev, "dig", "+short", "+tries=2", "+timeout=2"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// devices returns the device table through `dnsguard devices --json`.
func (tb *testbed) devices(t *testing.T) []device.View {
	t.Helper()
	out, err := exec.Command(binary, "devices", "--json", "--state", tb.state).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("dnsguard devices: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var views []device.View
	if err := json.Unmarshal(out, &views); err != nil {
		t.Fatalf("devices --json: %v\n%s", err, out)
	}
	return views
}

func findDevice(views []device.View, mac string) *device.View {
	for i := range views {
		if views[i].MAC == mac {
			return &views[i]
		}
	}
	return nil
}

// waitDevice polls the device table until ok holds for the device.
func (tb *testbed) waitDevice(t *testing.T, mac string, within time.Duration, what string, ok func(*device.View) bool) *device.View {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := findDevice(tb.devices(t), mac)
		if v != nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %s not seen within %v; record: %+v", mac, what, within, v)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitOnDisk reads the state file until ok holds for the device's record
// there, while the guard runs: the guard holds the file's lock, so a copy
// of it is read (a copy taken mid-write may not read; the next one will).
func (tb *testbed) waitOnDisk(t *testing.T, mac string, within time.Duration, ok func(*device.Record) bool) {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "state-copy.db")
	var last error
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		if b, err := os.ReadFile(tb.state); err != nil {
			last = err
		} else if err := os.WriteFile(cp, b, 0o600); err != nil {
			t.Fatal(err)
		} else if recs, err := device.ReadRecords(cp, nil); err != nil {
			last = err
		} else {
			for _, r := range recs {
				if r.ID == mac && ok(r) {
					return
				}
			}
			last = fmt.Errorf("%d records, %s not as wanted", len(recs), mac)
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s on disk not as wanted within %v: %v", mac, within, last)
		}
	}
}

// waitNeighbour waits until the rtr namespace's neighbour table has ip on
// lan0 with mac.
func (tb *testbed) waitNeighbour(t *testing.T, ip, mac string) {
	t.Helper()
	var out []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ = exec.Command("ip", "-n", tb.rtr, "neigh", "show", ip, "dev", "lan0").CombinedOutput()
		if strings.Contains(strings.ToLower(string(out)), "lladdr "+strings.ToLower(mac)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s) not in the router's neighbour table: %s", ip, mac, out)
		}
	}
}

// dialFromDev tries a TCP connection from the dev namespace.
func (tb *testbed) dialFromDev(addr string) error {
	return testenv.InNetns(tb.dev, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

func nftTable(t *testing.T, ns string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "dnsguard").CombinedOutput()
	return string(out), err
}

func TestRouterInterception(t *testing.T) {
	tb := newTestbed(t)
	g := tb.startGuard(t)
	const mac = "02:d9:00:00:00:01"

	// Hard-coded resolvers, UDP and TCP, IPv4 and IPv6: the guard answers.
	for _, args := range [][]string{
		{"@8.8.8.8", "hardcoded-udp.example"},
		{"@8.8.8.8", "+tcp", "hardcoded-tcp.example"},
		{"@2001:4860:4860::8888", "hardcoded-v6.example"},
		{"@2001:4860:4860::8888", "+tcp", "hardcoded-v6tcp.example"},
		{"@" + rtrLAN4, "direct.example"},
	} {
		if got := tb.devDig(t, args...); got != guardAnswer {
			t.Errorf("dig %v = %q, want the guard's %s (stand-in answers %s)", args, got, guardAnswer, standinAnswer)
		}
	}
	// Canaries and resolver.arpa answered locally, even via 8.8.8.8.
	out, _ := exec.Command("ip", "netns", "exec", tb.dev, "dig", "+tries=2", "+timeout=2", "@8.8.8.8", "use-application-dns.net").CombinedOutput()
	if !strings.Contains(string(out), "status: NXDOMAIN") {
		t.Errorf("use-application-dns.net via 8.8.8.8:\n%s", out)
	}
	out, _ = exec.Command("ip", "netns", "exec", tb.dev, "dig", "+tries=2", "+timeout=2", "@"+rtrLAN4, "_dns.resolver.arpa", "SVCB").CombinedOutput()
	if !strings.Contains(string(out), "status: NOERROR") || !strings.Contains(string(out), "ANSWER: 0") {
		t.Errorf("_dns.resolver.arpa SVCB: want NODATA\n%s", out)
	}

	// DoT to 1.1.1.1 is refused (the stand-in listens there).
	if err := tb.dialFromDev("1.1.1.1:853"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("DoT to 1.1.1.1:853: %v, want connection refused", err)
	}
	out, _ = exec.Command("ip", "netns", "exec", tb.dev, "kdig", "+tls", "+timeout=2", "+retry=0", "@1.1.1.1", "dot.example").CombinedOutput()
	if strings.Contains(string(out), standinAnswer) || strings.Contains(string(out), "NOERROR") {
		t.Errorf("kdig +tls @1.1.1.1 got through:\n%s", out)
	}
	// DoH: the fixed address at once, the host name once the guard has
	// resolved it through its own chain.
	if err := tb.dialFromDev(dohFixed + ":443"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("HTTPS to the fixed DoH address: %v, want refused", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, _ := nftTable(t, tb.rtr)
		if strings.Contains(l, dohResolved) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("doh.test never resolved into the DoH set:\n%s", l)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := tb.dialFromDev(dohResolved + ":443"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("HTTPS to doh.test (%s): %v, want refused", dohResolved, err)
	}

	// The record shows each attempt with its target.
	v := tb.waitDevice(t, mac, 5*time.Second, "every bypass attempt", func(v *device.View) bool {
		want := map[string]bool{"do53 8.8.8.8:53": false, "do53 [2001:4860:4860::8888]:53": false,
			"dot 1.1.1.1:853": false, "doh " + dohFixed + ":443": false, "doh " + dohResolved + ":443": false}
		for _, a := range v.Bypass {
			if _, ok := want[a.Kind+" "+a.Target]; ok {
				want[a.Kind+" "+a.Target] = true
			}
		}
		for _, seen := range want {
			if !seen {
				return false
			}
		}
		return true
	})
	if v.Queries < 5 || v.TableI.HardCodedResolver != tablei.Vulnerable || v.TableI.SecureDNS != tablei.Vulnerable {
		t.Errorf("record %+v", v)
	}
	// The human table names the attempts too.
	human, err := exec.Command(binary, "devices", "--state", tb.state).CombinedOutput()
	if err != nil || !strings.Contains(string(human), "bypass: "+mac+" dot 1.1.1.1:853") || !strings.Contains(string(human), mac) {
		t.Errorf("dnsguard devices (%v):\n%s", err, human)
	}
	t.Logf("dnsguard devices:\n%s", human)

	// Removed table comes back within 5 s.
	sh(t, "ip", "netns", "exec", tb.rtr, "nft", "delete", "table", "inet", "dnsguard")
	deadline = time.Now().Add(5 * time.Second)
	for {
		if l, err := nftTable(t, tb.rtr); err == nil && strings.Contains(l, "redirect to :53") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("table not back within 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := tb.devDig(t, "@8.8.8.8", "after-restore.example"); got != guardAnswer {
		t.Errorf("after the table came back: %q", got)
	}
	// Nothing in other tables; gone on a clean stop.
	if out := sh(t, "ip", "netns", "exec", tb.rtr, "nft", "list", "tables"); strings.TrimSpace(out) != "table inet dnsguard" {
		t.Errorf("tables in rtr: %q", out)
	}
	g.stop(t, syscall.SIGTERM)
	if out := sh(t, "ip", "netns", "exec", tb.rtr, "nft", "list", "tables"); strings.TrimSpace(out) != "" {
		t.Errorf("tables left after a clean stop: %q", out)
	}
	// The state file is readable once the guard is gone.
	if v := findDevice(tb.devices(t), mac); v == nil || v.BypassTotal == 0 {
		t.Errorf("state file after stop: %+v", v)
	}
}

// sendQueries sends n queries from the dev namespace out of srcPort to
// dst, with IDs from id(i), and waits for each answer.
func (tb *testbed) sendQueries(t *testing.T, src, dst string, n int, id func(int) uint16, name string) int {
	t.Helper()
	answered := 0
	err := testenv.InNetns(tb.dev, func() error {
		for i := range n {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("q%d.%s", i, name), dns.TypeA)
			m.Id = id(i)
			b, _ := m.Pack()
			laddr := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src))
			c, err := net.ListenUDP("udp", laddr)
			if err != nil {
				return err
			}
			c.WriteToUDPAddrPort(b, netip.MustParseAddrPort(dst))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 1500)
			if k, err := c.Read(buf); err == nil {
				var r dns.Msg
				if r.Unpack(buf[:k]) == nil && r.Id == m.Id {
					answered++
				}
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return answered
}

func TestRouterWeakDeviceAndIPChange(t *testing.T) {
	tb := newTestbed(t)
	g := tb.startGuard(t)
	const mac = "02:d9:00:00:00:01"
	// A Cosori-like device: source port 4096 always, IDs counting up.
	if n := tb.sendQueries(t, "10.10.10.2:4096", "8.8.8.8:53", 40, func(i int) uint16 { return uint16(i + 1) }, "weak.example."); n < 35 {
		t.Fatalf("only %d of 40 answered", n)
	}
	v := tb.waitDevice(t, mac, 10*time.Second, "graded weak and strict", func(v *device.View) bool {
		return v.Strict && v.TXID.Verdict == "weak" && v.Port.Verdict == "weak"
	})
	if v.Class != device.StrictClass || v.TableI.RandomID != tablei.Vulnerable || v.TableI.RandomPort != tablei.Vulnerable || v.EDNS != "no" {
		t.Errorf("weak device row: %+v", v)
	}
	if n := strings.Count(g.log(), "moved to the strict class"); n != 1 {
		t.Errorf("strict move logged %d times, want once", n)
	}

	// New address, same MAC: same record.
	sh(t, "ip", "-n", tb.dev, "addr", "flush", "dev", "eth0")
	sh(t, "ip", "-n", tb.dev, "addr", "add", "10.10.10.99/24", "dev", "eth0")
	exec.Command("ip", "-n", tb.dev, "route", "add", "default", "via", rtrLAN4).Run()
	if n := tb.sendQueries(t, "10.10.10.99:4096", "8.8.8.8:53", 5, func(i int) uint16 { return uint16(100 + i) }, "moved.example."); n < 4 {
		t.Fatalf("only %d of 5 answered after the address change", n)
	}
	v = tb.waitDevice(t, mac, 5*time.Second, "new address on the same record", func(v *device.View) bool {
		return len(v.IPs) >= 2 && v.IPs[0] == "10.10.10.99" && v.Queries >= 45
	})
	if !v.Strict {
		t.Errorf("the device lost its strict grading with its address: %+v", v)
	}
	for _, o := range tb.devices(t) {
		if o.ID != mac && strings.Contains(strings.Join(o.IPs, " "), "10.10.10.") {
			t.Errorf("a second record for the device: %+v", o)
		}
	}

	// The owner overrides the guard's grading, then clears the override.
	for _, step := range []struct {
		args   []string
		strict bool
	}{
		{[]string{"--strict", "no"}, false},
		{[]string{"--clear"}, true},
	} {
		out, err := exec.Command(binary, append([]string{"devices", "--state", tb.state, "--override", mac}, step.args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("devices --override %v: %v\n%s", step.args, err, out)
		}
		if v := findDevice(tb.devices(t), mac); v == nil || v.Strict != step.strict {
			t.Errorf("after --override %v: %+v", step.args, v)
		}
	}
	if out, err := exec.Command(binary, "devices", "--state", tb.state, "--override", "02:00:00:00:00:99", "--strict", "no").CombinedOutput(); err == nil {
		t.Errorf("override of an unknown device succeeded: %s", out)
	}
}

func TestRouterKill9KeepsState(t *testing.T) {
	tb := newTestbed(t)
	g := tb.startGuard(t)
	const mac = "02:d9:00:00:00:01"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			testenv.InNetns(tb.dev, func() error {
				c, err := net.ListenUDP("udp", nil)
				if err != nil {
					return err
				}
				defer c.Close()
				dst := netip.MustParseAddrPort("8.8.8.8:53")
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					default:
					}
					m := new(dns.Msg)
					m.SetQuestion(fmt.Sprintf("h%d-%d.load.example.", w, i%500), dns.TypeA)
					b, _ := m.Pack()
					c.WriteToUDPAddrPort(b, dst)
					time.Sleep(500 * time.Microsecond)
				}
			})
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	seen := tb.waitDevice(t, mac, 10*time.Second, "queries", func(v *device.View) bool { return v.Queries > 100 && v.BypassTotal > 0 })
	// Once a flush has put every query counted above on disk, the guard
	// dies mid-load.
	tb.waitOnDisk(t, mac, 10*time.Second, func(r *device.Record) bool { return r.Queries >= seen.Queries })
	g.stop(t, syscall.SIGKILL)

	recs, err := device.ReadRecords(tb.state, nil)
	if err != nil {
		t.Fatalf("state file after kill -9: %v", err)
	}
	var rec *device.Record
	for _, r := range recs {
		if r.ID == mac {
			rec = r
		}
	}
	if rec == nil || rec.Queries < seen.Queries || rec.BypassTotal() == 0 {
		t.Fatalf("after kill -9 the record is %+v, want at least %d queries", rec, seen.Queries)
	}
	// The guard starts again on the same file, the table comes back.
	tb.startGuard(t)
	v := tb.waitDevice(t, mac, 5*time.Second, "restored record", func(v *device.View) bool { return v.Queries >= rec.Queries })
	if v.FirstSeen.After(seen.FirstSeen) {
		t.Errorf("first seen moved: %v -> %v", seen.FirstSeen, v.FirstSeen)
	}
	if _, err := nftTable(t, tb.rtr); err != nil {
		t.Errorf("no table after restart: %v", err)
	}
}

// TestRouterExemptDevice: a device in an exempt class keeps its own
// resolver; the others are still intercepted.
func TestRouterExemptDevice(t *testing.T) {
	tb := newTestbed(t)
	f, err := os.OpenFile(tb.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("config class 'trusted'\n\tlist mac '02:d9:00:00:00:01'\n\toption exempt '1'\n")
	f.Close()
	tb.startGuard(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, _ := nftTable(t, tb.rtr)
		if strings.Contains(l, "02:d9:00:00:00:01") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exempt MAC never in the table:\n%s", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := tb.devDig(t, "@8.8.8.8", "exempt.example"); got != standinAnswer {
		t.Errorf("exempt device asking 8.8.8.8 got %q, want the stand-in's %s", got, standinAnswer)
	}
	tb.setDevice(t, "02:d9:00:00:00:02", "10.10.10.3", "fd10::3")
	if got := tb.devDig(t, "@8.8.8.8", "other.example"); got != guardAnswer {
		t.Errorf("a device outside the class got %q, want the guard's %s", got, guardAnswer)
	}
}
