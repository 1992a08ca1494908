package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

// TestRouterBuildLeavesOut keeps out of the router build what issue 11's
// footprint work took out (see /work/notes/size.md): net/http (DoH runs on
// guard/upstream/h2.go, the control socket on guard/minihttp),
// vishvananda/netlink (guard/device/rtnl.go) and Go's stub resolver
// (every dial is by address; DoH host names are looked up with
// upstream.LookupHost). Each was 130-1400 kB of the mipsle binary.
func TestRouterBuildLeavesOut(t *testing.T) {
	testenv.Short(t)
	gobin := testenv.Require(t, "go")[0]
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
	list := exec.Command(gobin, "list", "-tags", "router", "-deps", ".")
	list.Env = env
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	for _, p := range []string{"net/http", "github.com/vishvananda/netlink", "text/template", "html/template", "golang.org/x/net/http2"} {
		if deps[p] {
			t.Errorf("the router build imports %s", p)
		}
	}
	bin := filepath.Join(t.TempDir(), "dnsguard")
	build := exec.Command(gobin, "build", "-trimpath", "-tags", "router", "-o", bin, ".")
	build.Env = env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	nm, err := exec.Command(gobin, "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	for _, sym := range []string{" net.(*Resolver).lookupIPAddr", " net.(*Resolver).goLookupIPCNAMEOrder"} {
		if strings.Contains(string(nm), sym+"\n") {
			t.Errorf("the router binary links%s: a net.Dialer.DialContext, net.Listen or net.Resolver with a string address came in", sym)
		}
	}
}
