package intercept

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// netns makes a network namespace with a LAN interface (a veth pair; there may be no dummy module) and returns
// its name and an open descriptor; both go away with the test.
func netns(t *testing.T) (string, int) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Require(t, "ip", "nft")
	b := make([]byte, 4)
	rand.Read(b)
	name := "dgtab-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	run(t, "ip", "-n", name, "link", "set", "lan0", "up")
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return name, int(f.Fd())
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nftList(t *testing.T, ns string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", TableName).CombinedOutput()
	return string(out), err
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestTableInstallWatchRemove(t *testing.T) {
	ns, fd := netns(t)
	tab, err := NewTable(Config{
		LAN: []string{"lan0"}, GuardPort: 53, RedirectDNS: true, BlockDoT: true, BlockDoH: true,
		NFLogGroup: 53, NetNSFd: fd,
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Install(); err != nil {
		t.Fatal(err)
	}
	if err := tab.SetDoH([]netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")}); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	if err := tab.SetExempt([]net.HardwareAddr{mac}, []netip.Addr{netip.MustParseAddr("192.0.2.7")}); err != nil {
		t.Fatal(err)
	}
	listing, err := nftList(t, ns)
	if err != nil {
		t.Fatalf("table not installed: %v\n%s", err, listing)
	}
	for _, want := range []string{
		`udp dport 53 log prefix "dns" group 53`,
		`tcp dport 53 redirect to :53`,
		`fib daddr type local return`,
		`tcp dport 853 log prefix "dot" group 53`,
		`reject with tcp reset`,
		`ip daddr @doh4 tcp dport 443`,
		`ip6 daddr @doh6 udp dport 443`,
		`192.0.2.53`, `2001:db8::53`, `02:00:00:00:00:01`, `192.0.2.7`,
		`iifname != @lan return`,
		`elements = { "lan0" }`,
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
	if ok, err := tab.Intact(); err != nil || !ok {
		t.Fatalf("Intact = %v, %v after install", ok, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tab.Watch(ctx, 200*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	for _, breakIt := range [][]string{
		{"nft", "delete", "table", "inet", TableName},
		{"nft", "flush", "ruleset"},
		{"nft", "flush", "chain", "inet", TableName, chainRedirect},
	} {
		run(t, append([]string{"ip", "netns", "exec", ns}, breakIt...)...)
		deadline := time.Now().Add(5 * time.Second)
		for {
			l, err := nftList(t, ns)
			if err == nil && strings.Contains(l, "redirect to :53") && strings.Contains(l, "192.0.2.53") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v the table was not back within 5 s:\n%s", breakIt, l)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cancel()
	<-done
	done = make(chan struct{})
	close(done)

	if err := tab.Remove(); err != nil {
		t.Fatal(err)
	}
	if l, err := nftList(t, ns); err == nil {
		t.Fatalf("table still there after Remove:\n%s", l)
	}
	if err := tab.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	// Nothing in any other table.
	if out := run(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("ruleset not empty after Remove:\n%s", out)
	}
}

func TestTableOptionsOff(t *testing.T) {
	ns, fd := netns(t)
	tab, err := NewTable(Config{LAN: []string{"lan0"}, GuardPort: 5353, RedirectDNS: true, NetNSFd: fd}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Install(); err != nil {
		t.Fatal(err)
	}
	l, err := nftList(t, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l, "redirect to :5353") || strings.Contains(l, "fib daddr") {
		t.Errorf("guard on 5353 must redirect local port 53 too:\n%s", l)
	}
	if strings.Contains(l, "853") || strings.Contains(l, "log") {
		t.Errorf("blocking and logging are off but present:\n%s", l)
	}
	if ok, err := tab.Intact(); err != nil || !ok {
		t.Fatalf("Intact = %v, %v", ok, err)
	}
}

func TestNewTableRejectsBadConfig(t *testing.T) {
	for _, lan := range [][]string{nil, {""}, {"an-interface-name-too-long"}} {
		if _, err := NewTable(Config{LAN: lan}, quiet()); err == nil {
			t.Errorf("NewTable(LAN=%q) succeeded", lan)
		}
	}
}

// TestTableDegrades: a kernel that refuses NFLOG (kmod-nfnetlink-log
// missing) or the fib match still gets a table that redirects, without
// the rules it refused; one that refuses everything is an error.
func TestTableDegrades(t *testing.T) {
	ns, fd := netns(t)
	for _, tc := range []struct {
		name    string
		refused feature
		missing string
		absent  []string
		present []string
	}{
		{"no nflog", featNFLog, "[nflog]", []string{"log group"}, []string{"redirect to :53", "fib daddr type local", "reject"}},
		{"no fib", featFib, "[fib]", []string{"fib daddr"}, []string{"redirect to :53", "group 53"}},
		{"neither", featNFLog | featFib, "[nflog fib]", []string{"log group", "fib daddr"}, []string{"redirect to :53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := NewTable(Config{LAN: []string{"lan0"}, GuardPort: 53, RedirectDNS: true, BlockDoT: true, BlockDoH: true,
				NFLogGroup: 53, NetNSFd: fd}, quiet())
			if err != nil {
				t.Fatal(err)
			}
			tab.refuse = func(uses feature) error {
				if uses&tc.refused != 0 {
					return errors.New("operation not supported (simulated)")
				}
				return nil
			}
			if err := tab.Install(); err != nil {
				t.Fatal(err)
			}
			defer tab.Remove()
			if got := fmt.Sprint(tab.Missing()); got != tc.missing {
				t.Errorf("missing %s, want %s", got, tc.missing)
			}
			if tab.Logging() != (tc.refused&featNFLog == 0) {
				t.Errorf("Logging() = %v", tab.Logging())
			}
			l, err := nftList(t, ns)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.absent {
				if strings.Contains(l, s) {
					t.Errorf("%q in the degraded table:\n%s", s, l)
				}
			}
			for _, s := range tc.present {
				if !strings.Contains(l, s) {
					t.Errorf("%q missing from the table:\n%s", s, l)
				}
			}
			if ok, err := tab.Intact(); !ok || err != nil {
				t.Errorf("degraded table not intact: %v %v", ok, err)
			}
		})
	}
	tab, _ := NewTable(Config{LAN: []string{"lan0"}, GuardPort: 53, RedirectDNS: true, NFLogGroup: 53, NetNSFd: fd}, quiet())
	tab.refuse = func(feature) error { return errors.New("no nf_tables (simulated)") }
	if err := tab.Install(); err == nil {
		t.Error("install succeeded with everything refused")
	}
	// Sets given before the table is installed go in with it.
	tab.refuse = nil
	if err := tab.SetDoH([]netip.Addr{netip.MustParseAddr("192.0.2.80")}); err != nil {
		t.Errorf("SetDoH before install: %v", err)
	}
	if err := tab.Install(); err != nil {
		t.Fatal(err)
	}
	defer tab.Remove()
	if l, _ := nftList(t, ns); !strings.Contains(l, "192.0.2.80") {
		t.Errorf("DoH address given before install not in the table:\n%s", l)
	}
}
