package main

import (
	"context"
	be "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/intercept"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// The home network: a router namespace shaped like OpenWrt (a LAN bridge
// br-lan with an IPv4 /24, a ULA /64 and a link-local address; dnsmasq on
// 127.0.0.1:5354 keeping DHCP leases and host names; the guard started
// from a UCI config with `list lan 'br-lan'` and no listen list), a
// dual-stack device namespace on the bridge, and a WAN namespace with the
// guard's upstream (a stand-in that records every name it is asked) and
// stand-ins for public resolvers (8.8.8.8, 2001:4860:4860::8888):
//
//	dev eth0 10.N.0.50 fdN::50 <-> lanp0 [br-lan 10.N.0.1/24 fdN::1/64 fe80::1] rtr wan0 10.78.0.1 fd78::1 <-> wan0 10.78.0.2 fd78::2 wan
type home struct {
	dev, rtr, wan string
	dir, state    string
	conf          string // the guard's UCI config
	lan4, lan6    string // the router's LAN addresses
	ll            string // its link-local address on br-lan
	dev4, dev6    string
	net4          string // 10.N.0
	up            *nameLog
}

const (
	homeUpstreamAnswer = "93.184.216.34"
	homeStandinAnswer  = "6.6.6.6"
	homeDevMAC         = "02:d9:11:00:00:50"
	homeLaptop         = "mylaptop"
	homeFarClient      = "198.51.100.7"
)

// nameLog records the names the WAN upstream was asked.
type nameLog struct {
	mu    sync.Mutex
	names []string
}

func (l *nameLog) add(n string) {
	l.mu.Lock()
	l.names = append(l.names, strings.ToLower(n))
	l.mu.Unlock()
}

func (l *nameLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names)
}

func newHome(t *testing.T) *home {
	t.Helper()
	id, b := testbedID(t, "ip", "nft", "dig", "dnsmasq")
	n := 20 + int(b[0])%200
	h := &home{dev: "dhd-" + id, rtr: "dhr-" + id, wan: "dhw-" + id, dir: t.TempDir(),
		net4: fmt.Sprintf("10.%d.0", n)}
	h.lan4, h.dev4 = h.net4+".1", h.net4+".50"
	h.lan6, h.dev6 = fmt.Sprintf("fd%02x::1", n), fmt.Sprintf("fd%02x::50", n)
	h.ll = "fe80::1"
	h.state = filepath.Join(h.dir, "state.db")
	newNamespaces(t, h.dev, h.rtr, h.wan)
	// LAN: br-lan in rtr, one port to the device.
	sh(t, "ip", "-n", h.rtr, "link", "add", "br-lan", "type", "bridge")
	sh(t, "ip", "link", "add", "dhl"+id, "type", "veth", "peer", "name", "dhm"+id)
	sh(t, "ip", "link", "set", "dhl"+id, "netns", h.rtr, "name", "lanp0")
	sh(t, "ip", "link", "set", "dhm"+id, "netns", h.dev, "name", "eth0")
	sh(t, "ip", "-n", h.rtr, "link", "set", "lanp0", "master", "br-lan")
	sh(t, "ip", "-n", h.rtr, "addr", "add", h.lan4+"/24", "dev", "br-lan")
	sh(t, "ip", "-n", h.rtr, "addr", "add", h.lan6+"/64", "dev", "br-lan", "nodad")
	sh(t, "ip", "-n", h.rtr, "addr", "add", h.ll+"/64", "dev", "br-lan", "nodad")
	sh(t, "ip", "-n", h.rtr, "link", "set", "lanp0", "up")
	sh(t, "ip", "-n", h.rtr, "link", "set", "br-lan", "up")
	// WAN, with a client beyond the WAN link on its loopback.
	linkWAN(t, h.rtr, h.wan, "dhw"+id, "dhx"+id, h.net4+".0/24", strings.TrimSuffix(h.lan6, "1")+"/64", homeFarClient+"/32")
	// The device: dual stack, its link-local address from its MAC.
	sh(t, "ip", "-n", h.dev, "link", "set", "eth0", "address", homeDevMAC)
	sh(t, "ip", "-n", h.dev, "addr", "add", h.dev4+"/24", "dev", "eth0")
	sh(t, "ip", "-n", h.dev, "addr", "add", h.dev6+"/64", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", h.dev, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", h.dev, "route", "add", "default", "via", h.lan4)
	sh(t, "ip", "-n", h.dev, "-6", "route", "add", "default", "via", h.lan6)

	h.up = startWANDNS(t, h.wan, homeUpstreamAnswer, homeStandinAnswer, nil)
	return h
}

// startDnsmasq runs Debian's dnsmasq in rtr the way the package leaves
// OpenWrt's: DNS on 127.0.0.1:5354 only, DHCP on br-lan with its leases
// file (the device's lease names it mylaptop), domain lan, no upstream.
func (h *home) startDnsmasq(t *testing.T) {
	t.Helper()
	leases := filepath.Join(h.dir, "dhcp.leases")
	lease := fmt.Sprintf("%d %s %s %s 01:%s\n", time.Now().Add(12*time.Hour).Unix(), homeDevMAC, h.dev4, homeLaptop, homeDevMAC)
	if err := os.WriteFile(leases, []byte(lease), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.rtr, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--user=root", "--group=root", "--pid-file="+filepath.Join(h.dir, "dnsmasq.pid"),
		"--port=5354", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--domain=lan", "--local=/lan/", "--expand-hosts", "--bogus-priv", // OpenWrt's defaults (boguspriv)
		"--interface=br-lan", "--except-interface=lo", "--no-dhcp-interface=wan0",
		"--dhcp-range="+h.net4+".50,"+h.net4+".150,12h", "--dhcp-leasefile="+leases,
		"--host-record=printer.lan,"+h.net4+".60,"+strings.TrimSuffix(h.lan6, "1")+"60",
		"--log-queries", "--log-facility="+filepath.Join(h.dir, "dnsmasq.log"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "netns", "exec", h.rtr, "dig", "+short", "+tries=1", "+timeout=1", "-p", "5354", "@127.0.0.1", homeLaptop+".lan").CombinedOutput()
		if strings.TrimSpace(string(out)) == h.dev4 {
			return
		}
		if i == 50 {
			log, _ := os.ReadFile(filepath.Join(h.dir, "dnsmasq.log"))
			t.Fatalf("dnsmasq does not answer %s.lan: %s\n%s", homeLaptop, out, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startGuard runs the guard in rtr from a UCI config shaped like the
// package's: `list lan 'br-lan'`, no listen list, local names to dnsmasq;
// only the upstream is overridden (the WAN stand-in, never a public one).
func (h *home) startGuard(t *testing.T) *guardProc {
	t.Helper()
	conf := filepath.Join(h.dir, "dnsguard")
	h.conf = conf
	if err := os.WriteFile(conf, []byte(`config dnsguard 'main'
	list lan 'br-lan'
	option flush_interval '1s'
	option leases_file '`+filepath.Join(h.dir, "dhcp.leases")+`'
config intercept 'intercept'
	option redirect_dns '1'
	option block_dot '1'
	option block_doh '1'
	option nflog_group '53'
	option guard_port '53'
	list doh_host 'doh.test'
config local 'local'
	option server '127.0.0.1:5354'
	list domain 'lan'
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return runGuard(t, exec.Command("ip", "netns", "exec", h.rtr, binary, "run",
		"--config", conf, "--state", h.state, "--upstream", "udp://10.78.0.2:53"))
}

// dig runs dig in ns and returns its whole output.
func (h *home) dig(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, _ := exec.Command("ip", append([]string{"netns", "exec", ns, "dig", "+tries=2", "+timeout=2"}, args...)...).CombinedOutput()
	return string(out)
}

func digShort(out string) string {
	var ans []string
	inAnswer := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, ";; ANSWER SECTION:"):
			inAnswer = true
		case inAnswer && strings.TrimSpace(l) == "":
			inAnswer = false
		case inAnswer:
			f := strings.Fields(l)
			ans = append(ans, f[len(f)-1])
		}
	}
	return strings.Join(ans, " ")
}

func digStatus(out string) string {
	i := strings.Index(out, "status: ")
	if i < 0 {
		return "no answer"
	}
	return strings.TrimSuffix(strings.Fields(out[i+8:])[0], ",")
}

// tcpAsk sends one query over TCP from ns and returns the answer, or the
// error that ended the connection.
func tcpAsk(ns, addr, name string) (*dns.Msg, error) {
	var resp *dns.Msg
	err := testenv.InNetns(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		b, _ := m.Pack()
		if _, err := c.Write(be.BigEndian.AppendUint16(nil, uint16(len(b)))); err != nil {
			return err
		}
		if _, err := c.Write(b); err != nil {
			return err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		buf := make([]byte, be.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		resp = new(dns.Msg)
		return resp.Unpack(buf)
	})
	return resp, err
}

// TestHomeNetwork: the guard on a home network's router, configured the
// way the package configures it, answers the LAN on every address it is
// told to use (IPv4, ULA, link-local, hard-coded IPv4 and IPv6
// resolvers), refuses a client routed in from the WAN, and the router's
// own lookups never wait for a MAC.
func TestHomeNetwork(t *testing.T) {
	h := newHome(t)
	h.startDnsmasq(t)
	g := h.startGuard(t)
	if !strings.Contains(g.log(), `listen="[0.0.0.0:53 [::]:53]"`) {
		t.Errorf("no listen list and list lan: want 0.0.0.0:53 and [::]:53 in the log:\n%s", g.log())
	}
	// The redirect goes in only once the guard listens (issue 10 item 2).
	if l, i := strings.Index(g.log(), "msg=listening"), strings.Index(g.log(), `msg="intercepting LAN DNS"`); l < 0 || i < l {
		t.Errorf("table installed before the guard listened (listening at %d, intercepting at %d):\n%s", l, i, g.log())
	}

	// Every address the LAN is told to use answers, from that address
	// (dig checks the answer's source), IPv4 and IPv6, UDP and TCP.
	for _, args := range [][]string{
		{"@" + h.lan4, "v4.example"},
		{"@" + h.lan4, "+tcp", "v4tcp.example"},
		{"@" + h.lan6, "ula.example"},
		{"@" + h.lan6, "+tcp", "ulatcp.example"},
		{"@" + h.ll + "%eth0", "linklocal.example"},
		{"@" + h.ll + "%eth0", "+tcp", "linklocaltcp.example"},
		{"@8.8.8.8", "hardcoded4.example"},
		{"@2001:4860:4860::8888", "hardcoded6.example"},
		{"@2001:4860:4860::8888", "+tcp", "hardcoded6tcp.example"},
	} {
		out := h.dig(t, h.dev, args...)
		if got := digShort(out); got != homeUpstreamAnswer {
			t.Errorf("device: dig %v = %q, want the guard's %s (stand-in answers %s)\n%s", args, got, homeUpstreamAnswer, homeStandinAnswer, out)
		}
	}
	// The router itself, on its own LAN address and loopback (v4, v6).
	for _, args := range [][]string{{"@" + h.lan4, "self.example"}, {"@127.0.0.1", "lo4.example"}, {"@::1", "lo6.example"}} {
		if got := digShort(h.dig(t, h.rtr, args...)); got != homeUpstreamAnswer {
			t.Errorf("router: dig %v = %q", args, got)
		}
	}

	// A client routed in from the WAN: REFUSED over UDP, connection
	// closed over TCP, whichever router address it asks.
	for _, dst := range []string{h.lan4, "10.78.0.1", h.lan6, "fd78::1"} {
		out := h.dig(t, h.wan, "@"+dst, "wan-client.example")
		if st := digStatus(out); st != "REFUSED" || digShort(out) != "" {
			t.Errorf("WAN client asking %s over UDP: %s, want REFUSED\n%s", dst, st, out)
		}
		if strings.Contains(dst, ".") { // and one routed in from beyond the WAN link
			out := h.dig(t, h.wan, "-b", homeFarClient, "@"+dst, "wan-client-far.example")
			if st := digStatus(out); st != "REFUSED" {
				t.Errorf("client %s asking %s: %s, want REFUSED\n%s", homeFarClient, dst, st, out)
			}
		}
		r, err := tcpAsk(h.wan, net.JoinHostPort(dst, "53"), "wan-client-tcp.example.")
		if err == nil {
			t.Errorf("WAN client asking %s over TCP got an answer: %v", dst, r)
		}
	}
	if !strings.Contains(g.log(), "refused a client outside the LAN") {
		t.Errorf("refusal not logged:\n%s", g.log())
	}
	for _, n := range h.up.all() {
		if strings.HasPrefix(n, "wan-client") {
			t.Errorf("the WAN client's question reached the upstream: %s", n)
		}
	}

	// 100 cached queries from the router itself take no MAC wait.
	ctl := control.SocketPath(h.state)
	before, err := control.FetchDeviceStats(context.Background(), ctl)
	if err != nil {
		t.Fatal(err)
	}
	answered := 0
	err = testenv.InNetns(h.rtr, func() error {
		c := &dns.Client{Timeout: 2 * time.Second}
		for i := range 101 { // the first fills the cache
			m := new(dns.Msg)
			m.SetQuestion("cached.example.", dns.TypeA)
			r, _, err := c.Exchange(m, "127.0.0.1:53")
			if err != nil {
				return err
			}
			if i > 0 && len(r.Answer) == 1 {
				answered++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := control.FetchDeviceStats(context.Background(), ctl)
	if err != nil {
		t.Fatal(err)
	}
	if answered != 100 || after.MACWaits != before.MACWaits {
		t.Errorf("100 cached loopback queries: %d answered, MAC waits %d -> %d (want no new wait)", answered, before.MACWaits, after.MACWaits)
	}
	if n := strings.Count(strings.Join(h.up.all(), " "), "cached.example."); n != 1 {
		t.Errorf("cached.example reached the upstream %d times, want once", n)
	}
	t.Logf("MAC waits over the whole run: %+v", after)

	// allow_client widens who is answered, on a reload (SIGHUP, as LuCI's
	// Save & Apply sends).
	conf, _ := os.ReadFile(h.conf)
	conf = []byte(strings.Replace(string(conf), "\tlist lan 'br-lan'\n", "\tlist lan 'br-lan'\n\tlist allow_client '10.78.0.0/24'\n", 1))
	if err := os.WriteFile(h.conf, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if !g.reload(t) {
		t.Fatalf("no reload:\n%s", g.log())
	}
	var out string
	for i := 0; i < 50; i++ { // the new list is applied right after the reload
		if out = h.dig(t, h.wan, "@"+h.lan4, "allowed-wan.example"); digShort(out) == homeUpstreamAnswer {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if digShort(out) != homeUpstreamAnswer {
		t.Errorf("WAN link client after allow_client '10.78.0.0/24': %s", out)
	}
	if out := h.dig(t, h.wan, "-b", homeFarClient, "@"+h.lan4, "still-refused.example"); digStatus(out) != "REFUSED" {
		t.Errorf("client %s outside allow_client: %s", homeFarClient, digStatus(out))
	}

	// The device is known by its MAC, with its IPv6 addresses too.
	v := findDevice(h.devices(t), homeDevMAC)
	if v == nil || v.Queries < 8 {
		t.Errorf("device record %+v", v)
	}
}

func (h *home) devices(t *testing.T) []device.View {
	t.Helper()
	views, err := control.FetchViews(context.Background(), control.SocketPath(h.state))
	if err != nil {
		t.Fatal(err)
	}
	return views
}

var _ = errors.New

// TestHomeNetworkPeers puts unbound (configured for the LAN: its prefixes
// allowed, the rest refused by default) and dnsmasq as OpenWrt runs it
// (localservice: only clients on a directly connected subnet) on the same
// router and asks each from the LAN, from the WAN link and from beyond
// it, beside the guard. The guard's answers are asserted in
// TestHomeNetwork; here the peers' are recorded for comparison, and each
// must at least answer the LAN.
func TestHomeNetworkPeers(t *testing.T) {
	testenv.Require(t, "unbound")
	h := newHome(t)
	h.startGuard(t)
	conf := filepath.Join(h.dir, "unbound.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`server:
	interface: 127.0.0.1@5355
	interface: %s@5355
	do-daemonize: no
	username: ""
	chroot: ""
	pidfile: ""
	use-syslog: no
	do-not-query-localhost: no
	access-control: %s.0/24 allow
	access-control: %s/64 allow
forward-zone:
	name: "."
	forward-addr: 10.78.0.2
`, h.lan4, h.net4, strings.TrimSuffix(h.lan6, "1"))), 0o644)
	ub := exec.Command("ip", "netns", "exec", h.rtr, "unbound", "-d", "-c", conf)
	dm := exec.Command("ip", "netns", "exec", h.rtr, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--user=root", "--group=root", "--pid-file="+filepath.Join(h.dir, "dm2.pid"), "--port=5356",
		"--local-service", "--no-resolv", "--server=10.78.0.2", "--no-hosts")
	var peerLog strings.Builder // both write to it from their own pipes' copiers
	var peerMu sync.Mutex
	for _, c := range []*exec.Cmd{ub, dm} {
		w := writerFunc(func(b []byte) (int, error) { peerMu.Lock(); defer peerMu.Unlock(); return peerLog.Write(b) })
		c.Stdout, c.Stderr = w, w
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	type result struct{ udp, tcp string }
	ask := func(ns, src, dst, port string) result {
		args := []string{"-p", port, "@" + dst, "peer.example"}
		if src != "" {
			args = append([]string{"-b", src}, args...)
		}
		var r result
		out := h.dig(t, ns, args...)
		r.udp = digStatus(out)
		if r.udp == "NOERROR" {
			r.udp += " " + digShort(out)
		}
		out = h.dig(t, ns, append([]string{"+tcp"}, args...)...)
		r.tcp = digStatus(out)
		if r.tcp == "no answer" && strings.Contains(out, "end of file") {
			r.tcp = "closed"
		}
		return r
	}
	// Wait for both peers to answer on loopback.
	for _, port := range []string{"5355", "5356"} {
		for i := 0; ; i++ {
			if strings.HasPrefix(ask(h.rtr, "", "127.0.0.1", port).udp, "NOERROR") {
				break
			}
			if i == 50 {
				peerMu.Lock()
				defer peerMu.Unlock()
				ss, _ := exec.Command("ip", "netns", "exec", h.rtr, "ss", "-lnutp").CombinedOutput()
				t.Fatalf("peer on port %s never answered:\n%s\n%s\n%s", port, h.dig(t, h.rtr, "-p", port, "@127.0.0.1", "peer.example"), peerLog.String(), ss)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-28s %-34s %-34s %-34s\n", "client -> "+h.lan4, "dnsguard :53", "unbound :5355 (LAN allowed)", "dnsmasq :5356 (localservice)")
	for _, c := range []struct{ name, ns, src string }{
		{"LAN device " + h.dev4, h.dev, ""},
		{"WAN link 10.78.0.2", h.wan, ""},
		{"beyond WAN " + homeFarClient, h.wan, homeFarClient},
	} {
		row := []result{ask(c.ns, c.src, h.lan4, "53"), ask(c.ns, c.src, h.lan4, "5355"), ask(c.ns, c.src, h.lan4, "5356")}
		fmt.Fprintf(&table, "%-28s", c.name)
		for _, r := range row {
			fmt.Fprintf(&table, " %-34s", "udp "+r.udp+", tcp "+r.tcp)
		}
		table.WriteString("\n")
		if c.ns == h.dev {
			for i, r := range row {
				if !strings.HasPrefix(r.udp, "NOERROR") {
					t.Errorf("server %d does not answer the LAN: %+v", i, r)
				}
			}
		}
	}
	t.Logf("who answers whom:\n%s", table.String())
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestHomeNetworkWithoutNFLOG: when the guard cannot have its NFLOG group
// (here another process holds it; on a router, kmod-nfnetlink-log
// missing), it says so once and goes on serving and intercepting, without
// log rules and without observing devices before the redirect.
func TestHomeNetworkWithoutNFLOG(t *testing.T) {
	h := newHome(t)
	f, err := os.Open("/run/netns/" + h.rtr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	holder, err := intercept.Observe(ctx, 53, int(f.Fd()), func(intercept.Packet) {}, nil)
	if err != nil {
		cancel()
		t.Fatalf("holding NFLOG group 53 in the router namespace: %v", err)
	}
	defer func() { cancel(); holder.Close() }()

	g := h.startGuard(t)
	if n := strings.Count(g.log(), "NFLOG unavailable"); n != 1 {
		t.Errorf("NFLOG unavailable logged %d times, want once:\n%s", n, g.log())
	}
	l, err := exec.Command("ip", "netns", "exec", h.rtr, "nft", "list", "table", "inet", "dnsguard").CombinedOutput()
	if err != nil || strings.Contains(string(l), "log ") || !strings.Contains(string(l), "redirect to :53") {
		t.Errorf("table without NFLOG: %v\n%s", err, l)
	}
	for _, args := range [][]string{{"@8.8.8.8", "no-nflog4.example"}, {"@2001:4860:4860::8888", "no-nflog6.example"}, {"@" + h.lan6, "no-nflog-ula.example"}} {
		if out := h.dig(t, h.dev, args...); digShort(out) != homeUpstreamAnswer {
			t.Errorf("dig %v without NFLOG: %s", args, out)
		}
	}
	// Graded from the queries the guard answered instead.
	if v := findDevice(h.devices(t), homeDevMAC); v == nil || v.Queries < 3 {
		t.Errorf("device record without NFLOG: %+v", v)
	}
}
