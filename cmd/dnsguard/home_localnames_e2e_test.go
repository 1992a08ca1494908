package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHomeNetworkLocalNames: on the home network, LAN names and their
// reverse lookups are answered by dnsmasq through the guard, and private
// reverse zones, home.arpa, localhost and .local never reach the public
// upstream.
func TestHomeNetworkLocalNames(t *testing.T) {
	h := newHome(t)
	h.startDnsmasq(t)
	h.startGuard(t)
	printer6 := strings.TrimSuffix(h.lan6, "1") + "60"

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"@" + h.lan4, homeLaptop + ".lan"}, h.dev4},
		{[]string{"@" + h.lan6, homeLaptop + ".lan"}, h.dev4},
		{[]string{"@" + h.ll + "%eth0", "printer.lan", "AAAA"}, printer6},
		{[]string{"@8.8.8.8", homeLaptop + ".lan"}, h.dev4}, // a hard-coded resolver gets LAN names too
		{[]string{"@" + h.lan4, "-x", h.dev4}, homeLaptop + ".lan."},
		{[]string{"@" + h.lan6, "-x", printer6}, "printer.lan."},
		{[]string{"@" + h.lan4, "localhost"}, "127.0.0.1"},
	} {
		out := h.dig(t, h.dev, c.args...)
		if got := digShort(out); got != c.want {
			t.Errorf("dig %v = %q, want %q\n%s", c.args, got, c.want, out)
		}
	}
	// Answered (by dnsmasq or the guard), never sent upstream.
	for _, args := range [][]string{
		{"-x", "192.168.1.1"}, {"-x", "10.1.2.3"}, {"-x", "172.16.5.5"}, {"-x", "100.64.0.1"},
		{"-x", "169.254.1.1"}, {"-x", "fd00::1"}, {"-x", "fe80::1234"},
		{"nas.home.arpa"}, {"foo.localhost"}, {"printer.local"}, {"_ipp._tcp.local", "PTR"},
	} {
		out := h.dig(t, h.dev, append([]string{"@" + h.lan4}, args...)...)
		st := digStatus(out)
		// dnsmasq as OpenWrt sets it up claims lan and, with
		// boguspriv, the RFC 1918, link-local and ULA reverse zones;
		// home.arpa and CGNAT's it would forward to the ISP's servers,
		// which this one has none of (REFUSED, relayed as SERVFAIL).
		forwardedByDnsmasq := args[0] == "nas.home.arpa" || args[len(args)-1] == "100.64.0.1"
		if st != "NOERROR" && st != "NXDOMAIN" && !(forwardedByDnsmasq && st == "SERVFAIL") {
			t.Errorf("dig %v: %s\n%s", args, st, out)
		}
	}
	for _, n := range h.up.all() {
		for _, private := range []string{".lan.", "10.in-addr.arpa.", "168.192.in-addr.arpa.", "16.172.in-addr.arpa.",
			"64.100.in-addr.arpa.", "254.169.in-addr.arpa.", "d.f.ip6.arpa.", "8.e.f.ip6.arpa.", "home.arpa.", "localhost.", ".local."} {
			if strings.HasSuffix(n, private) || n == strings.TrimPrefix(private, ".") {
				t.Errorf("%s reached the public upstream", n)
			}
		}
	}
	// dnsmasq saw the LAN names asked (from the guard, on loopback).
	log, _ := os.ReadFile(filepath.Join(h.dir, "dnsmasq.log"))
	if !strings.Contains(string(log), "query[A] "+homeLaptop+".lan from 127.0.0.1") {
		t.Errorf("dnsmasq never asked for %s.lan by the guard:\n%s", homeLaptop, log)
	}
}
