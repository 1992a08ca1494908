package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestHomeStrictDeviceOwnAnswers checks what policy.Terms promises a
// device held strict, from outside: two devices on the home network's
// bridge, the guard in front of a cleartext upstream with randomize_case
// off (so strict questions go out with 0x20 and lenient ones without),
// the second device held strict by an override. A name the lenient
// device had answered (and cached) is asked upstream again for the strict
// one instead of being handed the lenient answer, and each device's
// answer is cached for it after that. The same in the other order, and
// for DO=1 queries (the minimal shield). Before the terms keyed the cache
// (0163678) the strict device got the lenient device's cached answer.
func TestHomeStrictDeviceOwnAnswers(t *testing.T) {
	h := newHome(t)
	// A second device on br-lan, in a namespace of its own.
	strictNS := "dhs-" + strings.TrimPrefix(h.dev, "dhd-")
	newNamespaces(t, strictNS)
	id := strings.TrimPrefix(h.dev, "dhd-")
	sh(t, "ip", "link", "add", "dhn"+id, "type", "veth", "peer", "name", "dho"+id)
	sh(t, "ip", "link", "set", "dhn"+id, "netns", h.rtr, "name", "lanp1")
	sh(t, "ip", "link", "set", "dho"+id, "netns", strictNS, "name", "eth0")
	sh(t, "ip", "-n", h.rtr, "link", "set", "lanp1", "master", "br-lan")
	sh(t, "ip", "-n", h.rtr, "link", "set", "lanp1", "up")
	const strictMAC = "02:d9:11:00:00:51"
	strictIP := h.net4 + ".51"
	sh(t, "ip", "-n", strictNS, "link", "set", "eth0", "address", strictMAC)
	sh(t, "ip", "-n", strictNS, "addr", "add", strictIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", strictNS, "link", "set", "eth0", "up")

	h.startGuard(t)
	ask := func(ns, name string, args ...string) {
		t.Helper()
		out := h.dig(t, ns, append([]string{"@" + h.lan4, name}, args...)...)
		if got := digShort(out); got != homeUpstreamAnswer {
			t.Fatalf("%s from %s: got %q, want %s\n%s", name, ns, got, homeUpstreamAnswer, out)
		}
	}
	asked := func(name string) int {
		n := 0
		for _, a := range h.up.all() {
			if a == name+"." {
				n++
			}
		}
		return n
	}
	// The strict device is known to the guard, then held strict.
	ask(strictNS, "hello.example")
	if out, err := exec.Command(binary, "devices", "--state", h.state, "--override", strictMAC, "--strict", "yes").CombinedOutput(); err != nil {
		t.Fatalf("devices --override %s --strict yes: %v\n%s", strictMAC, err, out)
	}

	for _, tc := range []struct {
		name  string
		first string // the device that asks first
		args  []string
	}{
		{"lenient-first.example", h.dev, nil},
		{"strict-first.example", strictNS, nil},
		{"do-lenient-first.example", h.dev, []string{"+dnssec"}},
	} {
		second := strictNS
		if tc.first == strictNS {
			second = h.dev
		}
		ask(tc.first, tc.name, tc.args...)
		ask(second, tc.name, tc.args...)
		if n := asked(tc.name); n != 2 {
			t.Errorf("%s (%v): the upstream was asked %d times for the two devices, want 2 (one under each device's terms)", tc.name, tc.args, n)
		}
		// Each device's answer is cached for it now.
		ask(tc.first, tc.name, tc.args...)
		ask(second, tc.name, tc.args...)
		if n := asked(tc.name); n != 2 {
			t.Errorf("%s (%v): the upstream was asked %d times after both asked again, want still 2 (cached per terms)", tc.name, tc.args, n)
		}
	}
}
