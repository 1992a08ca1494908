package device

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// lanNamespace makes a namespace (removed when the test ends) with a
// veth pair, lan0 at 10.9.0.1/24, and returns its name.
func lanNamespace(t *testing.T, prefix string) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Require(t, "ip")
	b := make([]byte, 4)
	rand.Read(b)
	ns := prefix + "-" + hex.EncodeToString(b)
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	sh(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "lan0")
	sh(t, "ip", "-n", ns, "link", "set", "lan0", "up")
	sh(t, "ip", "-n", ns, "link", "set", "lan0p", "up")
	return ns
}

// watchIn starts WatchNeighbours in the namespace ns: its netlink sockets
// are opened there, on a locked thread.
func watchIn(ns string, ctx context.Context, lan []string, onGone func(mac string), log *slog.Logger) (*Neighbours, error) {
	var n *Neighbours
	err := testenv.InNetns(ns, func() error {
		var err error
		n, err = WatchNeighbours(ctx, lan, onGone, log)
		return err
	})
	return n, err
}

// TestNeighbours follows a namespace's neighbour table: an entry added is
// found by IP, its deletion reports the MAC gone, the router's own
// addresses are local and the LAN prefix is known.
func TestNeighbours(t *testing.T) {
	ns := lanNamespace(t, "dgnb")
	sh(t, "ip", "-n", ns, "neigh", "add", "10.9.0.7", "lladdr", "02:00:00:00:00:07", "dev", "lan0", "nud", "reachable")

	gone := make(chan string, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := watchIn(ns, ctx, []string{"lan0"}, func(mac string) { gone <- mac }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if mac, ok := n.MAC(netip.MustParseAddr("10.9.0.7")); !ok || mac != "02:00:00:00:00:07" {
		t.Errorf("existing entry: %q %v", mac, ok)
	}
	if !n.IsLocal(netip.MustParseAddr("10.9.0.1")) || n.IsLocal(netip.MustParseAddr("10.9.0.7")) {
		t.Error("router address not local, or a device's is")
	}
	if !n.OnLAN(netip.MustParseAddr("10.9.0.200")) || n.OnLAN(netip.MustParseAddr("8.8.8.8")) {
		t.Error("LAN prefix wrong")
	}
	// Updates: a new entry appears, a deleted one is reported gone.
	sh(t, "ip", "-n", ns, "neigh", "add", "10.9.0.8", "lladdr", "02:00:00:00:00:08", "dev", "lan0", "nud", "reachable")
	waitUntil(t, &n.Applied, "the new neighbour", func() bool {
		mac, ok := n.MAC(netip.MustParseAddr("10.9.0.8"))
		return ok && mac == "02:00:00:00:00:08"
	})
	sh(t, "ip", "-n", ns, "neigh", "del", "10.9.0.7", "dev", "lan0")
	select {
	case mac := <-gone:
		if mac != "02:00:00:00:00:07" {
			t.Errorf("gone %q", mac)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deleted neighbour not reported gone")
	}
	if _, ok := n.MAC(netip.MustParseAddr("10.9.0.7")); ok {
		t.Error("deleted neighbour still known")
	}
	if ips := n.IPs("02:00:00:00:00:08"); len(ips) != 1 || ips[0] != netip.MustParseAddr("10.9.0.8") {
		t.Errorf("IPs = %v", ips)
	}
}

// TestNeighboursQuietStop: other netlink users in the namespace (a second
// subscriber listing the table, `ip monitor`, `ip neigh` changes) and a
// clean stop log no warning; the watch's goroutines are joined.
func TestNeighboursQuietStop(t *testing.T) {
	ns := lanNamespace(t, "dgnq")

	var logs logBuf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := watchIn(ns, ctx, []string{"lan0"}, nil, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	mon := exec.Command("ip", "-n", ns, "monitor", "neigh", "address")
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		// Another subscriber in this process, listing what exists.
		octx, ocancel := context.WithCancel(context.Background())
		other, err := watchIn(ns, octx, []string{"lan0"}, nil, quiet())
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.AddrFrom4([4]byte{10, 9, 0, byte(10 + i)}).String()
		sh(t, "ip", "-n", ns, "neigh", "add", ip, "lladdr", "02:00:00:00:01:0"+string(rune('0'+i)), "dev", "lan0", "nud", "reachable")
		sh(t, "ip", "-n", ns, "neigh", "show")
		sh(t, "ip", "-n", ns, "neigh", "del", ip, "dev", "lan0")
		ocancel()
		other.Wait()
	}
	waitUntil(t, &n.Applied, "the last neighbour deleted", func() bool {
		_, ok := n.MAC(netip.MustParseAddr("10.9.0.14"))
		return !ok
	})
	mon.Process.Kill()
	mon.Wait()
	cancel()
	n.Wait()
	l := logs.String()
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("logged at a clean run and stop: %s", line)
		}
	}
	t.Logf("debug lines: %d", strings.Count(l, "level=DEBUG"))
}

func TestBenignNetlinkError(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		ctx   context.Context
		err   error
		quiet bool
	}{
		{done, syscall.EAGAIN, true},
		{done, os.ErrClosed, true},
		{live, syscall.EAGAIN, false},
		{live, syscall.ENOBUFS, false},
		{live, errors.New("Link not found"), false},
	} {
		if q, _ := benignNetlinkError(tc.ctx, tc.err); q != tc.quiet {
			t.Errorf("%v (stopping %v): quiet %v, want %v", tc.err, tc.ctx.Err() != nil, q, tc.quiet)
		}
	}
}

// TestNeighboursLateLAN: a LAN interface that does not exist at start
// (br-lan before netifd makes it at boot) is followed once it appears:
// its prefix becomes LAN and its neighbours are learned; when it goes,
// its prefix stops being LAN.
func TestNeighboursLateLAN(t *testing.T) {
	ns := lanNamespace(t, "dgll")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := watchIn(ns, ctx, []string{"br-late"}, nil, quiet())
	if err != nil {
		t.Fatalf("a missing LAN interface stopped the watch: %v", err)
	}
	defer func() { cancel(); n.Wait() }()
	if n.OnLAN(netip.MustParseAddr("10.9.0.7")) {
		t.Error("lan0's prefix is LAN, but only br-late is")
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		waitUntil(t, &n.Applied, what, ok)
	}
	sh(t, "ip", "-n", ns, "link", "add", "br-late", "type", "bridge")
	sh(t, "ip", "-n", ns, "addr", "add", "10.8.0.1/24", "dev", "br-late")
	sh(t, "ip", "-n", ns, "link", "set", "br-late", "up")
	waitFor("br-late's prefix", func() bool { return n.OnLAN(netip.MustParseAddr("10.8.0.9")) })
	if n.OnLAN(netip.MustParseAddr("10.9.0.7")) {
		t.Error("lan0's prefix became LAN")
	}
	sh(t, "ip", "-n", ns, "neigh", "add", "10.8.0.9", "lladdr", "02:00:00:00:00:09", "dev", "br-late", "nud", "reachable")
	waitFor("a neighbour on br-late", func() bool {
		mac, ok := n.MAC(netip.MustParseAddr("10.8.0.9"))
		return ok && mac == "02:00:00:00:00:09"
	})
	sh(t, "ip", "-n", ns, "link", "del", "br-late")
	waitFor("br-late gone", func() bool { return !n.OnLAN(netip.MustParseAddr("10.8.0.9")) })
}
