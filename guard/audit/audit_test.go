package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/testenv"
)

var sentinel = testenv.SharedData("iot-sentinel")

// label is one row of LABELS.md.
type label struct {
	device      string
	queries     int
	txid, port  string
	mac         string
	withoutDNS  bool
	bootsWithDN int
}

func readLabels(t *testing.T) []label {
	t.Helper()
	testenv.Data(t, "iot-sentinel")
	f, err := os.Open(filepath.Join(sentinel, "LABELS.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []label
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "|")
		if len(cols) < 7 || strings.TrimSpace(cols[1]) == "device" || strings.HasPrefix(strings.TrimSpace(cols[1]), "---") {
			continue
		}
		l := label{device: strings.TrimSpace(cols[1]), txid: strings.TrimSpace(cols[4]), port: strings.TrimSpace(cols[5])}
		l.queries, err = strconv.Atoi(strings.TrimSpace(cols[2]))
		if err != nil {
			t.Fatalf("LABELS.md row %q: %v", sc.Text(), err)
		}
		l.bootsWithDN, _ = strconv.Atoi(strings.TrimSpace(cols[3]))
		mac, err := os.ReadFile(filepath.Join(sentinel, l.device, "device-mac.txt"))
		if err != nil {
			t.Fatal(err)
		}
		l.mac = strings.TrimSpace(string(mac))
		l.withoutDNS = l.txid == "none seen"
		out = append(out, l)
	}
	if len(out) < 12 {
		t.Fatalf("read %d labels from LABELS.md", len(out))
	}
	return out
}

// TestIoTSentinelLabels audits every labelled device's captures (one boot
// per file) and compares with LABELS.md: query count, both verdicts, and
// the device that sends no DNS.
func TestIoTSentinelLabels(t *testing.T) {
	for _, l := range readLabels(t) {
		t.Run(l.device, func(t *testing.T) {
			files, _ := filepath.Glob(filepath.Join(sentinel, l.device, "*.pcap"))
			if len(files) == 0 {
				t.Fatal("no captures")
			}
			a, err := New(Options{Devices: []string{l.mac}})
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range files {
				if err := a.AddFile(context.Background(), f, uint32(i)); err != nil {
					t.Fatal(err)
				}
			}
			rep := a.Report()
			if len(rep.Devices) != 1 {
				t.Fatalf("%d devices in the report, want 1", len(rep.Devices))
			}
			d := rep.Devices[0]
			if d.MAC != l.mac || d.Queries != l.queries {
				t.Errorf("%s: %d queries, want %s: %d", d.MAC, d.Queries, l.mac, l.queries)
			}
			if l.withoutDNS {
				if d.Note == "" || !strings.Contains(d.Note, "no DNS") || d.TXID.Verdict != entropy.Insufficient || d.Port.Verdict != entropy.Insufficient {
					t.Errorf("silent device reported as %+v", d)
				}
				var text bytes.Buffer
				if err := rep.WriteText(&text); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(text.String(), l.mac+": no DNS queries seen") {
					t.Errorf("text report does not say the device sent no DNS:\n%s", text.String())
				}
				return
			}
			if string(d.TXID.Verdict) != l.txid || string(d.Port.Verdict) != l.port {
				t.Errorf("txid %s (%s), port %s (%s); LABELS.md says %s, %s\n txid: %s\n port: %s",
					d.TXID.Verdict, d.TXID.Reason, d.Port.Verdict, d.Port.Reason, l.txid, l.port, d.TXID.Detail, d.Port.Detail)
			}
			boots := 0
			for _, f := range rep.Files {
				if f.DNS > 0 {
					boots++
				}
			}
			if boots < l.bootsWithDN {
				t.Errorf("%d captures with DNS, want at least %d", boots, l.bootsWithDN)
			}
		})
	}
}

// Synthetic traffic.

var (
	devMAC = [6]byte{0x02, 0, 0, 0, 0, 0x10}
	gwMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	devIP  = netip.MustParseAddr("192.168.7.10")
	gwIP   = netip.MustParseAddr("192.168.7.1")
)

func query(id uint16, name string, qtype uint16, edns bool) []byte {
	b := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	if edns {
		b[11] = 1
	}
	for _, l := range strings.Split(name, ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, byte(qtype>>8), byte(qtype), 0, 1)
	if edns {
		b = append(b, 0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0) // 1232, DO
	}
	return b
}

func answer(q []byte, ttl uint32) []byte {
	b := bytes.Clone(q)
	b[2] |= 0x80
	b[7] = 1 // one answer
	b[11] = 0
	// Drop any OPT: cut at the end of the question.
	end := 12
	for b[end] != 0 {
		end += int(b[end]) + 1
	}
	b = b[:end+5]
	b = append(b, 0xc0, 12, 0, 1, 0, 1, byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl), 0, 4, 192, 0, 2, 1)
	return b
}

type synth struct {
	t    *testing.T
	lt   int
	pkts [][]byte
}

func (s *synth) udpQuery(id, port uint16, name string, withAnswer bool) {
	dev := capture.Endpoint{MAC: devMAC, Addr: devIP, Port: port}
	gw := capture.Endpoint{MAC: gwMAC, Addr: gwIP, Port: 53}
	q := query(id, name, 1, false)
	s.pkts = append(s.pkts, capture.BuildUDP(s.lt, dev, gw, q))
	if withAnswer {
		s.pkts = append(s.pkts, capture.BuildUDP(s.lt, gw, dev, answer(q, 300)))
	}
}

func (s *synth) file(dir, name string) string {
	s.t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		s.t.Fatal(err)
	}
	w, err := capture.NewWriter(f, s.lt)
	if err != nil {
		s.t.Fatal(err)
	}
	for i, p := range s.pkts {
		if err := w.WritePacket(1.7e18+int64(i)*1e9, p); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		s.t.Fatal(err)
	}
	return path
}

func auditFiles(t *testing.T, opts Options, files ...string) *Report {
	t.Helper()
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if err := a.AddFile(context.Background(), f, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	return a.Report()
}

func onlyDevice(t *testing.T, r *Report) Device {
	t.Helper()
	var got []Device
	for _, d := range r.Devices {
		if d.Queries > 0 {
			got = append(got, d)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d devices with queries, want 1: %+v", len(got), r.Devices)
	}
	return got[0]
}

// TestSyntheticPatterns writes one capture set per randomness pattern, in
// every link type, and checks the verdicts.
func TestSyntheticPatterns(t *testing.T) {
	type gen func(r *rand.Rand, boot, i int) (id, port uint16)
	patterns := []struct {
		name       string
		boots, per int
		gen        gen
		txid, port entropy.Verdict
		reason     string // of the TXID verdict
	}{
		{"random", 4, 30, func(r *rand.Rand, _, _ int) (uint16, uint16) {
			return uint16(r.UintN(65536)), uint16(32768 + r.UintN(28000))
		}, entropy.Random, entropy.Random, ""},
		{"fixed port, counter ID", 3, 30, func(r *rand.Rand, b, i int) (uint16, uint16) { return uint16(9000 + b*20011 + i*3), 4096 }, entropy.Weak, entropy.Weak, entropy.ReasonCounter},
		{"counter restarting each boot", 6, 15, func(r *rand.Rand, _, i int) (uint16, uint16) { return uint16(1 + i), uint16(32768 + r.UintN(28000)) }, entropy.Weak, entropy.Random, entropy.ReasonCounter},
		{"small set of IDs", 3, 40, func(r *rand.Rand, _, _ int) (uint16, uint16) {
			return []uint16{0x1111, 0x8888, 0xeeee}[r.IntN(3)], uint16(32768 + r.UintN(28000))
		}, entropy.Weak, entropy.Random, entropy.ReasonSmallSet},
		{"same sequence every boot", 5, 12, func(_ *rand.Rand, _, i int) (uint16, uint16) {
			r := rand.New(rand.NewPCG(42, uint64(i)))
			return uint16(r.UintN(65536)), uint16(1024 + r.UintN(60000))
		}, entropy.Weak, entropy.Weak, entropy.ReasonBootRepeats},
		{"too few queries", 1, 5, func(r *rand.Rand, _, _ int) (uint16, uint16) { return uint16(r.UintN(65536)), uint16(r.UintN(65536)) }, entropy.Insufficient, entropy.Insufficient, ""},
	}
	linkTypes := []int{capture.LinkEthernet, capture.LinkSLL, capture.LinkSLL2, capture.LinkRaw}
	for _, p := range patterns {
		for _, lt := range linkTypes {
			t.Run(p.name+"/"+strconv.Itoa(lt), func(t *testing.T) {
				dir := t.TempDir()
				r := rand.New(rand.NewPCG(7, uint64(lt)))
				var files []string
				for b := range p.boots {
					s := &synth{t: t, lt: lt}
					for i := range p.per {
						id, port := p.gen(r, b, i)
						s.udpQuery(id, port, "host"+strconv.Itoa(i)+".example.com", true)
					}
					files = append(files, s.file(dir, "boot"+strconv.Itoa(b)+".pcap"))
				}
				d := onlyDevice(t, auditFiles(t, Options{}, files...))
				if d.Queries != p.boots*p.per {
					t.Errorf("%d queries, want %d", d.Queries, p.boots*p.per)
				}
				if d.TXID.Verdict != p.txid || d.Port.Verdict != p.port {
					t.Errorf("txid %s (%s) port %s (%s), want %s %s\n%s\n%s", d.TXID.Verdict, d.TXID.Reason, d.Port.Verdict, d.Port.Reason, p.txid, p.port, d.TXID.Detail, d.Port.Detail)
				}
				if p.reason != "" && d.TXID.Reason != p.reason {
					t.Errorf("txid reason %q, want %q", d.TXID.Reason, p.reason)
				}
				wantKey := "02:00:00:00:00:10"
				if lt == capture.LinkRaw {
					wantKey = devIP.String()
				}
				if d.MAC+d.IP != wantKey {
					t.Errorf("device %q, want %q", d.MAC+d.IP, wantKey)
				}
				if d.Responses != d.Queries || d.TTL.Answers != d.Queries {
					t.Errorf("%d responses, %d TTLs for %d queries", d.Responses, d.TTL.Answers, d.Queries)
				}
			})
		}
	}
}

// TestMetrics checks the passive metrics on a small hand-made capture.
func TestMetrics(t *testing.T) {
	s := &synth{t: t, lt: capture.LinkEthernet}
	dev := capture.Endpoint{MAC: devMAC, Addr: devIP, Port: 5000}
	gw := capture.Endpoint{MAC: gwMAC, Addr: gwIP, Port: 53}
	google := capture.Endpoint{MAC: gwMAC, Addr: netip.MustParseAddr("8.8.8.8"), Port: 53}
	q1 := query(100, "a.example.com", 1, true)
	s.pkts = append(s.pkts,
		capture.BuildUDP(s.lt, dev, gw, q1),                                         // t=0
		capture.BuildUDP(s.lt, dev, gw, q1),                                         // t=1 retransmission
		capture.BuildUDP(s.lt, gw, dev, answer(q1, 300)),                            // t=2 answer, TTL 300
		capture.BuildUDP(s.lt, dev, gw, query(101, "a.example.com", 1, true)),       // t=3 re-asked early
		capture.BuildUDP(s.lt, dev, google, query(102, "b.example.com", 28, false)), // t=4 hard-coded resolver, AAAA
		capture.BuildUDP(s.lt, dev, google, query(103, "b.example.com", 28, false)), // t=5 retry
		capture.BuildTCP(s.lt, capture.Endpoint{MAC: devMAC, Addr: devIP, Port: 6000}, capture.Endpoint{MAC: gwMAC, Addr: netip.MustParseAddr("1.1.1.1"), Port: 853}, capture.TCPInfo{Seq: 1, Flags: capture.TCPSyn}, nil), // t=6 DoT
	)
	path := s.file(t.TempDir(), "m.pcap")
	d := onlyDevice(t, auditFiles(t, Options{}, path))
	checks := []struct {
		name      string
		got, want any
	}{
		{"queries", d.Queries, 5},
		{"retransmissions", d.Retries.Retransmissions, 1},
		{"retries", d.Retries.Retries, 1},
		{"early re-queries", d.TTL.Early, 1},
		{"EDNS queries", d.EDNS.Queries, 3},
		{"DO bit", d.EDNS.DO, 3},
		{"EDNS size", d.EDNS.Sizes["1232"], 3},
		{"AAAA share", d.Types.AAAA, 0.4},
		{"names", d.Names.Distinct, 2},
		{"DoT", d.Encrypted.DoT, 1},
		{"resolvers", len(d.Resolvers), 2},
		{"TTL", d.TTL.Min, uint32(300)},
		{"name length", d.Names.LenMax, 13},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	for _, r := range d.Resolvers {
		if r.Addr == "8.8.8.8" && (!r.Own || !r.Public) {
			t.Errorf("8.8.8.8 not flagged as the device's own public resolver: %+v", r)
		}
		if r.Addr == gwIP.String() && r.Own {
			t.Errorf("the network's resolver flagged as the device's own: %+v", r)
		}
	}
}

// TestTCPReassemblyAudit sends queries over TCP: two in one segment, one
// across two segments.
func TestTCPReassemblyAudit(t *testing.T) {
	for _, lt := range []int{capture.LinkEthernet, capture.LinkSLL2} {
		s := &synth{t: t, lt: lt}
		dev := capture.Endpoint{MAC: devMAC, Addr: netip.MustParseAddr("fd00::10"), Port: 40000}
		gw := capture.Endpoint{MAC: gwMAC, Addr: netip.MustParseAddr("fd00::1"), Port: 53}
		frame := func(msgs ...[]byte) []byte {
			var b []byte
			for _, m := range msgs {
				b = append(b, byte(len(m)>>8), byte(len(m)))
				b = append(b, m...)
			}
			return b
		}
		stream := frame(query(1, "one.example", 1, false), query(2, "two.example", 1, false), query(3, "three.example", 28, false))
		split := len(frame(query(1, "one.example", 1, false), query(2, "two.example", 1, false))) + 7
		s.pkts = append(s.pkts,
			capture.BuildTCP(lt, dev, gw, capture.TCPInfo{Seq: 1000, Flags: capture.TCPSyn}, nil),
			capture.BuildTCP(lt, dev, gw, capture.TCPInfo{Seq: 1001, Flags: capture.TCPAck}, stream[:split]),
			capture.BuildTCP(lt, dev, gw, capture.TCPInfo{Seq: 1001 + uint32(split), Flags: capture.TCPAck}, stream[split:]),
		)
		d := onlyDevice(t, auditFiles(t, Options{}, s.file(t.TempDir(), "tcp.pcap")))
		if d.Queries != 3 || d.Names.TCPQuery != 3 || d.Names.Distinct != 3 {
			t.Errorf("link %d: %d queries (%d over TCP, %d names), want 3", lt, d.Queries, d.Names.TCPQuery, d.Names.Distinct)
		}
	}
}

// TestCorruptInput: a corrupt packet is skipped and counted and the rest
// read; a truncated file is an error naming the file and offset, after the
// packets before it were counted; an unknown format is an error.
func TestCorruptInput(t *testing.T) {
	dir := t.TempDir()
	s := &synth{t: t, lt: capture.LinkEthernet}
	for i := range 12 {
		s.udpQuery(uint16(i*977), uint16(33000+i*1311), "x.example", false)
		if i == 5 {
			s.pkts = append(s.pkts, s.pkts[len(s.pkts)-1][:20]) // IP header cut short
			bad := bytes.Clone(s.pkts[len(s.pkts)-2])
			bad = bad[:len(bad)-6] // DNS question cut short
			binaryPatchUDP(bad)
			s.pkts = append(s.pkts, bad)
		}
	}
	good := s.file(dir, "good.pcap")
	rep := auditFiles(t, Options{}, good)
	if d := onlyDevice(t, rep); d.Queries != 12 {
		t.Errorf("%d queries, want 12", d.Queries)
	}
	if rep.Files[0].Corrupt != 2 {
		t.Errorf("%d corrupt packets, want 2", rep.Files[0].Corrupt)
	}

	b, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.pcap")
	os.WriteFile(trunc, b[:len(b)-10], 0o644)
	junk := filepath.Join(dir, "junk.pcap")
	os.WriteFile(junk, []byte("this is not a packet capture, it is text"), 0o644)

	a, _ := New(Options{})
	err := a.AddFile(context.Background(), trunc, 0)
	var ce *capture.Error
	if !errors.As(err, &ce) || !errors.Is(err, capture.ErrTruncated) || ce.File != trunc || ce.Offset <= 24 {
		t.Errorf("truncated file: %v", err)
	}
	if d := onlyDevice(t, a.Report()); d.Queries != 11 {
		t.Errorf("%d queries before the truncation, want 11", d.Queries)
	}
	err = a.AddFile(context.Background(), junk, 1)
	if !errors.Is(err, capture.ErrFormat) || !strings.Contains(err.Error(), junk+": offset 0") {
		t.Errorf("junk file: %v", err)
	}
	if rep := a.Report(); len(rep.Files) != 2 || rep.Files[1].Error == "" {
		t.Errorf("failed files not recorded: %+v", rep.Files)
	}
}

// binaryPatchUDP fixes the IP and UDP lengths of an Ethernet/IPv4/UDP
// packet after it was cut.
func binaryPatchUDP(p []byte) {
	ipLen := len(p) - 14
	p[16], p[17] = byte(ipLen>>8), byte(ipLen)
	udpLen := ipLen - 20
	p[38], p[39] = byte(udpLen>>8), byte(udpLen)
}

func TestDeviceFilterAndJSON(t *testing.T) {
	s := &synth{t: t, lt: capture.LinkEthernet}
	for i := range 20 {
		s.udpQuery(uint16(i), 4096, "n.example", true)
	}
	// Another host that sends no DNS (only answers from the resolver exist).
	path := s.file(t.TempDir(), "f.pcap")
	rep := auditFiles(t, Options{Devices: []string{"02-00-00-00-00-10", "02:00:00:00:00:99"}}, path)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Devices []struct {
			MAC     string `json:"mac"`
			Queries int    `json:"queries"`
			TXID    struct {
				Verdict string `json:"verdict"`
			} `json:"txid"`
			Port struct {
				Verdict string `json:"verdict"`
			} `json:"port"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Devices) != 2 {
		t.Fatalf("%d devices, want 2: %s", len(out.Devices), buf.String())
	}
	if d := out.Devices[0]; d.MAC != "02:00:00:00:00:10" || d.Queries != 20 || d.TXID.Verdict != "weak" || d.Port.Verdict != "weak" {
		t.Errorf("first device %+v", d)
	}
	if d := out.Devices[1]; d.MAC != "02:00:00:00:00:99" || d.Queries != 0 || d.TXID.Verdict != "insufficient" {
		t.Errorf("second device %+v", d)
	}
	if _, err := New(Options{Devices: []string{"not-a-mac"}}); err == nil {
		t.Error("bad --device accepted")
	}
}

// FuzzAudit feeds arbitrary captures and DNS payloads through the whole
// pipeline: no panic, and the report always encodes.
func FuzzAudit(f *testing.F) {
	s := &synth{lt: capture.LinkEthernet}
	s.udpQuery(1, 4096, "seed.example", true)
	var buf bytes.Buffer
	w, _ := capture.NewWriter(&buf, capture.LinkEthernet)
	for i, p := range s.pkts {
		_ = w.WritePacket(int64(i)*1e9, p)
	}
	f.Add(buf.Bytes(), query(7, "a.b", 28, true))
	f.Add([]byte{}, answer(query(9, "x.y", 1, false), 60))
	f.Fuzz(func(t *testing.T, pcap, dns []byte) {
		a, _ := New(Options{})
		_ = a.AddReader(context.Background(), bytes.NewReader(pcap), "fuzz.pcap", 0, int64(len(pcap)))
		// The DNS payload inside a synthetic query and answer.
		s := &synth{t: t, lt: capture.LinkSLL2}
		dev := capture.Endpoint{MAC: devMAC, Addr: devIP, Port: 1234}
		gw := capture.Endpoint{MAC: gwMAC, Addr: gwIP, Port: 53}
		s.pkts = append(s.pkts, capture.BuildUDP(s.lt, dev, gw, dns), capture.BuildUDP(s.lt, gw, dev, dns))
		var b bytes.Buffer
		w, _ := capture.NewWriter(&b, s.lt)
		for i, p := range s.pkts {
			_ = w.WritePacket(int64(i), p)
		}
		if err := a.AddReader(context.Background(), &b, "dns.pcap", 1, 0); err != nil {
			t.Fatal(err)
		}
		rep := a.Report()
		if err := rep.WriteJSON(io.Discard); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteHTML(io.Discard); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteText(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPcapngSameAsPcap rewrites real captures as pcapng and checks the
// audit reads the same device out of them.
func TestPcapngSameAsPcap(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(sentinel, "TP-LinkPlugHS100", "*.pcap"))
	if len(files) == 0 {
		testenv.Data(t, "iot-sentinel")
		t.Fatal("no such captures in ../shared/data/iot-sentinel")
	}
	const mac = "50:c7:bf:00:fc:a3"
	dir := t.TempDir()
	var ng []string
	for i, f := range files {
		in, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := capture.NewReader(in, f)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, strconv.Itoa(i)+".pcapng")
		o, _ := os.Create(out)
		w, _ := capture.NewNGWriter(o, capture.LinkEthernet)
		for {
			p, err := r.Next()
			if err != nil {
				break
			}
			w.WritePacket(p.Time, p.Data)
		}
		in.Close()
		o.Close()
		ng = append(ng, out)
	}
	a := onlyByMAC(t, auditFiles(t, Options{Devices: []string{mac}}, files...))
	b := onlyByMAC(t, auditFiles(t, Options{Devices: []string{mac}}, ng...))
	if a.Queries != b.Queries || a.TXID != b.TXID || a.Port != b.Port || a.TTL != b.TTL || a.Names.Distinct != b.Names.Distinct {
		t.Errorf("pcap and pcapng differ:\n%+v\n%+v", a, b)
	}
}

func onlyByMAC(t *testing.T, r *Report) Device {
	t.Helper()
	if len(r.Devices) != 1 {
		t.Fatalf("%d devices", len(r.Devices))
	}
	return r.Devices[0]
}
