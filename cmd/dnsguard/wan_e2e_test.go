package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// The WAN both namespace testbeds share (router_e2e_test.go's testbed and
// home_e2e_test.go's home): the router namespace's wan0 joined to a wan
// namespace that stands in for the Internet,
//
//	rtr wan0 10.78.0.1/24 fd78::1/64 <-> wan0 10.78.0.2/24 fd78::2/64 wan
//
// with the public resolvers devices hard-code (8.8.8.8,
// 2001:4860:4860::8888) on wan's loopback. The guard's upstream is
// wan's 10.78.0.2:53 (never a public resolver).
const (
	wanUpstream = "10.78.0.2"
	wanPublic4  = "8.8.8.8"
	wanPublic6  = "2001:4860:4860::8888"
)

// testbedID is a namespace testbed's random name part (6 hex digits: its
// 3 random bytes are returned too), once the test may build one: not
// -short, root, and tools installed.
func testbedID(t *testing.T, tools ...string) (string, []byte) {
	t.Helper()
	testenv.Short(t)
	testenv.RequireRoot(t)
	testenv.Require(t, tools...)
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b), b
}

// newNamespaces makes the named network namespaces, each with its
// loopback up and no duplicate address detection (addresses usable at
// once); they are removed when the test ends.
func newNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
}

// linkWAN joins rtr to wan with a veth pair (made as vethR and vethW,
// both ends then named wan0): rtr routes by default to wan and forwards,
// wan routes the LAN prefixes lan4 and lan6 back through rtr. wan's
// loopback gets the public resolvers' addresses and wanLo (a testbed's
// further stand-ins, as prefixes).
func linkWAN(t *testing.T, rtr, wan, vethR, vethW, lan4, lan6 string, wanLo ...string) {
	t.Helper()
	sh(t, "ip", "link", "add", vethR, "type", "veth", "peer", "name", vethW)
	sh(t, "ip", "link", "set", vethR, "netns", rtr, "name", "wan0")
	sh(t, "ip", "link", "set", vethW, "netns", wan, "name", "wan0")
	sh(t, "ip", "-n", rtr, "addr", "add", "10.78.0.1/24", "dev", "wan0")
	sh(t, "ip", "-n", rtr, "addr", "add", "fd78::1/64", "dev", "wan0", "nodad")
	sh(t, "ip", "-n", rtr, "link", "set", "wan0", "up")
	sh(t, "ip", "-n", rtr, "route", "add", "default", "via", wanUpstream)
	sh(t, "ip", "-n", rtr, "-6", "route", "add", "default", "via", "fd78::2")
	sh(t, "ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

	sh(t, "ip", "-n", wan, "addr", "add", wanUpstream+"/24", "dev", "wan0")
	sh(t, "ip", "-n", wan, "addr", "add", "fd78::2/64", "dev", "wan0", "nodad")
	sh(t, "ip", "-n", wan, "link", "set", "wan0", "up")
	for _, a := range append([]string{wanPublic4 + "/32", wanPublic6 + "/128"}, wanLo...) {
		args := []string{"ip", "-n", wan, "addr", "add", a, "dev", "lo"}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		sh(t, args...)
	}
	sh(t, "ip", "-n", wan, "route", "add", lan4, "via", "10.78.0.1")
	sh(t, "ip", "-n", wan, "-6", "route", "add", lan6, "via", "fd78::1")
}

// startWANDNS serves DNS in wan, over UDP and TCP: the guard's upstream
// on 10.78.0.2:53, answering every A question with upstreamAnswer and
// recording every name it is asked (the returned log), and the public
// resolvers' stand-ins on 8.8.8.8:53 and [2001:4860:4860::8888]:53,
// answering standinAnswer (a device that gets it was not intercepted).
// The names in fixed (lower case, fully qualified) get their own address
// from all three.
func startWANDNS(t *testing.T, wan, upstreamAnswer, standinAnswer string, fixed map[string]string) *nameLog {
	t.Helper()
	up := &nameLog{}
	answer := func(a string, log *nameLog) dns.HandlerFunc {
		return func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if len(r.Question) == 1 {
				q := r.Question[0]
				if log != nil {
					log.add(q.Name)
				}
				ip := a
				if f, ok := fixed[strings.ToLower(q.Name)]; ok {
					ip = f
				}
				if q.Qtype == dns.TypeA {
					rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A %s", q.Name, ip))
					m.Answer = append(m.Answer, rr)
				}
			}
			w.WriteMsg(m)
		}
	}
	var servers []*dns.Server
	err := testenv.InNetns(wan, func() error {
		for _, s := range []struct {
			addr, a string
			log     *nameLog
		}{
			{net.JoinHostPort(wanUpstream, "53"), upstreamAnswer, up},
			{net.JoinHostPort(wanPublic4, "53"), standinAnswer, nil},
			{net.JoinHostPort(wanPublic6, "53"), standinAnswer, nil},
		} {
			pc, err := net.ListenPacket("udp", s.addr)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", s.addr)
			if err != nil {
				return err
			}
			servers = append(servers,
				&dns.Server{PacketConn: pc, Handler: answer(s.a, s.log)},
				&dns.Server{Listener: ln, Handler: answer(s.a, s.log)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return up
}

// startTCPStandIns accepts TCP connections in ns on each of addrs, writes
// a line and closes them: a DoT or DoH server a device reaches when it
// is not blocked.
func startTCPStandIns(t *testing.T, ns string, addrs ...string) {
	t.Helper()
	var listeners []net.Listener
	err := testenv.InNetns(ns, func() error {
		for _, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			listeners = append(listeners, ln)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range listeners {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("stand-in reached\n"))
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
	}
}
