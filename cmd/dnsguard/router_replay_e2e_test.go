package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

type sentinelLabel struct {
	device, txid, port string
}

// readLabels reads the verdict table of LABELS.md.
func readLabels(t *testing.T, dir string) []sentinelLabel {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "LABELS.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sentinelLabel
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(strings.Trim(strings.TrimSpace(sc.Text()), "|"), "|")
		if len(cells) < 6 {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == "device" || strings.HasPrefix(cells[0], "-") {
			continue
		}
		out = append(out, sentinelLabel{device: cells[0], txid: cells[3], port: cells[4]})
	}
	if len(out) == 0 {
		t.Fatal("no labels in LABELS.md")
	}
	return out
}

type sentinelQuery struct {
	port    uint16
	payload []byte
}

// bootQueries returns, per capture file (one boot each), the DNS queries
// the device sent: UDP to port 53 from its MAC, as captured.
func bootQueries(t *testing.T, dir string, mac net.HardwareAddr) [][]sentinelQuery {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	var boots [][]sentinelQuery
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := capture.NewReader(f, name)
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		var qs []sentinelQuery
		for {
			p, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var fr capture.Frame
			if capture.Decode(p.LinkType, p.Data, &fr) != nil || !fr.HasMAC || fr.Fragment {
				continue
			}
			if fr.Proto != capture.ProtoUDP || fr.DstPort != 53 || net.HardwareAddr(fr.SrcMAC[:]).String() != mac.String() {
				continue
			}
			var m dns.Msg
			if m.Unpack(fr.Payload) != nil || m.Response {
				continue
			}
			qs = append(qs, sentinelQuery{port: fr.SrcPort, payload: append([]byte(nil), fr.Payload...)})
		}
		f.Close()
		if len(qs) > 0 {
			boots = append(boots, qs)
		}
	}
	return boots
}

// TestRouterReplayIoTSentinel replays the real devices' queries (their
// MACs, IDs and source ports, one capture per boot, the device's link
// going down between boots) from the dev namespace to the guard, which
// grades them from what NFLOG shows it. Its verdicts must be LABELS.md's.
func TestRouterReplayIoTSentinel(t *testing.T) {
	sentinelDir := testenv.Data(t, "iot-sentinel")
	tb := newTestbed(t)
	tb.startGuard(t)
	labels := readLabels(t, sentinelDir)
	macs := map[string]string{}
	for i, l := range labels {
		raw, err := os.ReadFile(filepath.Join(sentinelDir, l.device, "device-mac.txt"))
		if err != nil {
			t.Fatal(err)
		}
		mac, err := net.ParseMAC(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		macs[l.device] = mac.String()
		boots := bootQueries(t, filepath.Join(sentinelDir, l.device), mac)
		if len(boots) == 0 {
			continue
		}
		ip := netip.AddrFrom4([4]byte{10, 10, 10, byte(20 + i)})
		tb.setDevice(t, mac.String(), ip.String(), "fd10::"+strings.TrimPrefix(ip.String(), "10.10.10."))
		sent := 0
		for _, qs := range boots {
			err := testenv.InNetns(tb.dev, func() error {
				conns := map[uint16]*net.UDPConn{}
				defer func() {
					for _, c := range conns {
						c.Close()
					}
				}()
				dst := netip.AddrPortFrom(netip.MustParseAddr(rtrLAN4), 53)
				for _, q := range qs {
					c, ok := conns[q.port]
					if !ok {
						var err error
						c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, q.port)))
						if err != nil {
							return err
						}
						conns[q.port] = c
					}
					if _, err := c.WriteToUDPAddrPort(q.payload, dst); err != nil {
						return err
					}
					sent++
					time.Sleep(time.Millisecond) // the capture's pace, roughly
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", l.device, err)
			}
			// The answers have come back: the router knows the MAC.
			tb.waitNeighbour(t, ip.String(), mac.String())
			// The device powers off: its link goes down and the router
			// forgets it.
			sh(t, "ip", "-n", tb.dev, "link", "set", "eth0", "down")
			exec.Command("ip", "-n", tb.rtr, "neigh", "flush", "dev", "lan0").Run()
			time.Sleep(150 * time.Millisecond) // the device stays off a while (the guard hears of the flush)
			sh(t, "ip", "-n", tb.dev, "link", "set", "eth0", "up")
		}
		t.Logf("%s: replayed %d queries in %d boots", l.device, sent, len(boots))
	}

	// Let the observer catch up, then compare.
	deadline := time.Now().Add(10 * time.Second)
	for {
		views := tb.devices(t)
		var wrong []string
		for _, l := range labels {
			v := findDevice(views, macs[l.device])
			txid, port := "none seen", "none seen"
			if v != nil && v.TXID.N > 0 {
				txid, port = string(v.TXID.Verdict), string(v.Port.Verdict)
			}
			if txid != l.txid || port != l.port {
				why := ""
				if v != nil {
					why = " (" + v.TXID.Reason + "; " + v.Port.Reason + "; boots " + strconv.Itoa(int(v.Boots)) + ", n " + strconv.Itoa(v.TXID.N) + ")"
				}
				wrong = append(wrong, l.device+": txid "+txid+" port "+port+", want "+l.txid+" "+l.port+why)
			}
		}
		if len(wrong) == 0 {
			for _, l := range labels {
				if v := findDevice(views, macs[l.device]); v != nil {
					t.Logf("%-18s txid %-6s %-22s sigma %7.0f | port %-6s %-22s sigma %7.0f | strict %v",
						l.device, v.TXID.Verdict, v.TXID.Reason, v.TXID.Sigma, v.Port.Verdict, v.Port.Reason, v.Port.Sigma, v.Strict)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("verdicts differ from LABELS.md:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(time.Second)
	}
}
