package capture

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
)

var (
	dev4 = Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 1}, Addr: netip.MustParseAddr("192.168.1.10"), Port: 40000}
	res4 = Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 0xfe}, Addr: netip.MustParseAddr("192.168.1.1"), Port: 53}
	dev6 = Endpoint{MAC: dev4.MAC, Addr: netip.MustParseAddr("fd00::10"), Port: 40001}
	res6 = Endpoint{MAC: res4.MAC, Addr: netip.MustParseAddr("fd00::1"), Port: 53}
)

func writeCapture(t *testing.T, ng bool, linkType int, pkts [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w *Writer
	var err error
	if ng {
		w, err = NewNGWriter(&buf, linkType)
	} else {
		w, err = NewWriter(&buf, linkType)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pkts {
		if err := w.WritePacket(1700000000e9+int64(i)*1234567, p); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func readAll(t *testing.T, b []byte) ([]Packet, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b), "test.pcap")
	if err != nil {
		return nil, err
	}
	var out []Packet
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		p.Data = bytes.Clone(p.Data)
		out = append(out, p)
	}
}

// TestLinkTypes writes UDP and TCP packets over IPv4 and IPv6 for every
// link type in pcap and pcapng and decodes them back.
func TestLinkTypes(t *testing.T) {
	payload := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01")
	for _, lt := range []int{LinkEthernet, LinkSLL, LinkSLL2, LinkRaw, LinkNull} {
		for _, ng := range []bool{false, true} {
			for _, v6 := range []bool{false, true} {
				src, dst := dev4, res4
				if v6 {
					src, dst = dev6, res6
				}
				name := strconv.Itoa(lt) + map[bool]string{false: "/pcap", true: "/pcapng"}[ng] + map[bool]string{false: "/v4", true: "/v6"}[v6]
				t.Run(name, func(t *testing.T) {
					pkts := [][]byte{
						BuildUDP(lt, src, dst, payload),
						BuildTCP(lt, src, dst, TCPInfo{Seq: 77, Flags: TCPAck}, payload),
					}
					got, err := readAll(t, writeCapture(t, ng, lt, pkts))
					if err != nil {
						t.Fatal(err)
					}
					if len(got) != 2 {
						t.Fatalf("%d packets, want 2", len(got))
					}
					for i, p := range got {
						if p.LinkType != lt {
							t.Errorf("link type %d, want %d", p.LinkType, lt)
						}
						if want := int64(1700000000e9 + int64(i)*1234567); p.Time/1000 != want/1000 {
							t.Errorf("time %d, want %d", p.Time, want)
						}
						var f Frame
						if err := Decode(p.LinkType, p.Data, &f); err != nil {
							t.Fatal(err)
						}
						wantProto := []uint8{ProtoUDP, ProtoTCP}[i]
						if f.Proto != wantProto || f.Src != src.Addr || f.Dst != dst.Addr || f.SrcPort != src.Port || f.DstPort != 53 || !bytes.Equal(f.Payload, payload) {
							t.Errorf("decoded %+v", f)
						}
						hasMAC := lt == LinkEthernet || lt == LinkSLL || lt == LinkSLL2
						if f.HasMAC != hasMAC || hasMAC && f.SrcMAC != src.MAC {
							t.Errorf("MAC %v %x, want %v %x", f.HasMAC, f.SrcMAC, hasMAC, src.MAC)
						}
						if i == 1 && (f.Seq != 77 || f.Flags != TCPAck) {
							t.Errorf("TCP seq %d flags %x", f.Seq, f.Flags)
						}
					}
				})
			}
		}
	}
}

func TestVLANAndPadding(t *testing.T) {
	p := BuildUDP(LinkEthernet, dev4, res4, []byte("abc"))
	// Insert an 802.1Q tag and pad the frame to 64 bytes.
	tagged := append(append(bytes.Clone(p[:12]), 0x81, 0x00, 0x00, 0x05), p[12:]...)
	tagged = append(tagged, make([]byte, 64-len(tagged))...)
	var f Frame
	if err := Decode(LinkEthernet, tagged, &f); err != nil {
		t.Fatal(err)
	}
	if string(f.Payload) != "abc" || f.SrcPort != dev4.Port {
		t.Errorf("payload %q port %d", f.Payload, f.SrcPort)
	}
}

func TestReaderErrors(t *testing.T) {
	good := writeCapture(t, false, LinkEthernet, [][]byte{BuildUDP(LinkEthernet, dev4, res4, []byte("one")), BuildUDP(LinkEthernet, dev4, res4, []byte("two"))})
	goodNG := writeCapture(t, true, LinkEthernet, [][]byte{BuildUDP(LinkEthernet, dev4, res4, []byte("one")), BuildUDP(LinkEthernet, dev4, res4, []byte("two"))})
	huge := bytes.Clone(good)
	copy(huge[24+8:], []byte{0xff, 0xff, 0xff, 0x7f}) // first record's caplen
	badNG := bytes.Clone(goodNG)
	badNG[28+32+4] ^= 0x40 // first EPB's length
	tests := []struct {
		name    string
		data    []byte
		packets int
		err     error
		offset  int64
	}{
		{"empty", nil, 0, ErrFormat, 0},
		{"text", []byte("hello, this is not a capture at all"), 0, ErrFormat, 0},
		{"short header", good[:10], 0, ErrFormat, 0},
		{"truncated record header", good[:24+16+45+5], 1, ErrTruncated, 24 + 16 + 45},
		{"truncated last packet", good[:len(good)-1], 1, ErrTruncated, 24 + 16 + 45},
		{"absurd packet length", huge, 0, ErrCorrupt, 24},
		{"pcapng truncated", goodNG[:len(goodNG)-3], 1, ErrTruncated, -1},
		{"pcapng bad block length", badNG, 0, ErrCorrupt, 28 + 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, tt.data)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "test.pcap" {
				t.Fatalf("error %v does not name the file", err)
			}
			if tt.offset >= 0 && ce.Offset != tt.offset {
				t.Errorf("offset %d, want %d (%v)", ce.Offset, tt.offset, err)
			}
			if !strings.Contains(err.Error(), "test.pcap: offset ") {
				t.Errorf("message %q", err)
			}
			if len(got) != tt.packets {
				t.Errorf("%d packets before the error, want %d", len(got), tt.packets)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	p := BuildUDP(LinkEthernet, dev4, res4, []byte("payload"))
	tests := []struct {
		name string
		lt   int
		data []byte
		err  error
	}{
		{"short ethernet", LinkEthernet, p[:10], ErrMalformed},
		{"short IP", LinkEthernet, p[:20], ErrMalformed},
		{"ARP", LinkEthernet, append(bytes.Clone(p[:12]), 0x08, 0x06, 0, 1), ErrNotIP},
		{"unknown link", 9999, p, ErrLinkType},
		{"bad IHL", LinkRaw, append([]byte{0x41}, p[15:]...), ErrMalformed},
		{"short UDP", LinkRaw, p[14 : 14+24], ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			if err := Decode(tt.lt, tt.data, &f); !errors.Is(err, tt.err) {
				t.Errorf("error %v, want %v", err, tt.err)
			}
		})
	}
}

func dnsTCP(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, byte(len(m)>>8), byte(len(m)))
		b = append(b, m...)
	}
	return b
}

func TestReassembly(t *testing.T) {
	two := dnsTCP("first message", "second message")
	big := dnsTCP(strings.Repeat("x", 3000))
	type seg struct {
		off   int // offset into the stream after the SYN
		data  []byte
		flags uint8
	}
	tests := []struct {
		name   string
		stream []byte
		segs   func(s []byte) []seg
		want   []string
		gaps   int
	}{
		{"two messages in one segment", two, func(s []byte) []seg { return []seg{{0, s, TCPAck}} }, []string{"first message", "second message"}, 0},
		{"one message across segments", big, func(s []byte) []seg {
			return []seg{{0, s[:1], TCPAck}, {1, s[1:1400], TCPAck}, {1400, s[1400:2800], TCPAck}, {2800, s[2800:], TCPAck}}
		}, []string{strings.Repeat("x", 3000)}, 0},
		{"retransmission and overlap", two, func(s []byte) []seg {
			return []seg{{0, s[:10], TCPAck}, {0, s[:10], TCPAck}, {5, s[5:20], TCPAck}, {20, s[20:], TCPAck}}
		}, []string{"first message", "second message"}, 0},
		{"out of order", two, func(s []byte) []seg {
			return []seg{{20, s[20:], TCPAck}, {0, s[:20], TCPAck}}
		}, []string{"first message", "second message"}, 0},
		{"lost segment then new messages", dnsTCP("aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff", "gggg"), func(s []byte) []seg {
			// The first message never arrives; later ones are each held,
			// until too many holes force a restart at a message boundary.
			return []seg{{6, s[6:12], TCPAck}, {12, s[12:18], TCPAck}, {18, s[18:24], TCPAck}, {24, s[24:30], TCPAck}, {30, s[30:36], TCPAck}, {36, s[36:], TCPAck}}
		}, []string{"ffff", "gggg"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReassembler()
			const isn = 0xFFFFFF00 // sequence numbers wrap inside the stream
			var got []string
			emit := func(m []byte) { got = append(got, string(m)) }
			f := Frame{Proto: ProtoTCP, Src: dev4.Addr, Dst: res4.Addr, SrcPort: 5555, DstPort: 53, Seq: isn, Flags: TCPSyn}
			r.Feed(&f, 0, emit)
			for i, s := range tt.segs(tt.stream) {
				f := Frame{Proto: ProtoTCP, Src: dev4.Addr, Dst: res4.Addr, SrcPort: 5555, DstPort: 53, Seq: isn + 1 + uint32(s.off), Flags: s.flags, Payload: s.data}
				r.Feed(&f, int64(i+1), emit)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if r.Stats.Gaps != tt.gaps {
				t.Errorf("gaps %d, want %d", r.Stats.Gaps, tt.gaps)
			}
			fin := Frame{Proto: ProtoTCP, Src: dev4.Addr, Dst: res4.Addr, SrcPort: 5555, DstPort: 53, Flags: TCPFin}
			r.Feed(&fin, 99, emit)
			if r.Streams() != 0 {
				t.Errorf("%d streams left after FIN", r.Streams())
			}
		})
	}
}

func TestReassemblerBounded(t *testing.T) {
	r := NewReassembler()
	for i := range 10 * MaxStreams {
		f := Frame{Proto: ProtoTCP, Src: dev4.Addr, Dst: res4.Addr, SrcPort: uint16(i), DstPort: 53, Seq: 1, Flags: TCPAck, Payload: []byte{0, 50, 1, 2}}
		r.Feed(&f, int64(i), func([]byte) {})
		if r.Streams() > MaxStreams {
			t.Fatalf("%d streams", r.Streams())
		}
	}
	if r.Stats.Evicted == 0 {
		t.Error("nothing evicted")
	}
}

// TestAgainstTshark reads a real capture and compares packet count, times
// and UDP ports with tshark's reading of the same file.
func TestAgainstTshark(t *testing.T) {
	tshark := testenv.Require(t, "tshark")[0]
	files, _ := filepath.Glob(filepath.Join(testenv.Data(t, "iot-sentinel"), "HueBridge", "Setup-A-1-STA.pcap"))
	if len(files) == 0 {
		t.Fatal("no HueBridge/Setup-A-1-STA.pcap in ../shared/data/iot-sentinel")
	}
	out, err := exec.Command(tshark, "-r", files[0], "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.proto", "-e", "udp.srcport").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fh, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := NewReader(fh, files[0])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n >= len(lines) {
			continue
		}
		fields := strings.Split(lines[n], "\t")
		sec, _ := strconv.ParseFloat(fields[0], 64)
		if d := float64(p.Time)/1e9 - sec; d > 1e-5 || d < -1e-5 {
			t.Fatalf("packet %d time %d, tshark %s", n, p.Time, fields[0])
		}
		var f Frame
		err = Decode(p.LinkType, p.Data, &f)
		// Only plain UDP: tshark also shows the UDP header quoted in ICMP errors.
		if fields[1] == "17" && (err != nil || strconv.Itoa(int(f.SrcPort)) != fields[2]) {
			t.Fatalf("packet %d UDP source port %d (%v), tshark %s", n, f.SrcPort, err, fields[2])
		}
	}
	if n != len(lines) {
		t.Errorf("%d packets, tshark %d", n, len(lines))
	}
}

func FuzzReader(f *testing.F) {
	f.Add(writeCaptureF(false, LinkEthernet, BuildUDP(LinkEthernet, dev4, res4, []byte("x"))))
	f.Add(writeCaptureF(true, LinkSLL2, BuildTCP(LinkSLL2, dev6, res6, TCPInfo{1, TCPAck}, []byte("\x00\x01x"))))
	f.Add(writeCaptureF(false, LinkSLL, BuildUDP(LinkSLL, dev6, res6, []byte("y"))))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		ra := NewReassembler()
		for range 10000 {
			p, err := r.Next()
			if err != nil {
				var ce *Error
				if err != io.EOF && !errors.As(err, &ce) {
					t.Fatalf("error %v is not an *Error", err)
				}
				return
			}
			var fr Frame
			if Decode(p.LinkType, p.Data, &fr) == nil && fr.Proto == ProtoTCP {
				ra.Feed(&fr, p.Time, func(m []byte) {
					if len(m) == 0 || len(m) > 65535 {
						t.Fatalf("message of %d bytes", len(m))
					}
				})
			}
		}
	})
}

func FuzzDecode(f *testing.F) {
	for _, lt := range []int{LinkEthernet, LinkSLL, LinkSLL2, LinkRaw} {
		f.Add(lt, BuildUDP(lt, dev4, res4, []byte("abc")))
		f.Add(lt, BuildTCP(lt, dev6, res6, TCPInfo{5, TCPSyn}, nil))
	}
	f.Fuzz(func(t *testing.T, lt int, data []byte) {
		var fr Frame
		if Decode(lt, data, &fr) == nil && len(fr.Payload) > len(data) {
			t.Fatal("payload longer than the packet")
		}
	})
}

func writeCaptureF(ng bool, lt int, pkts ...[]byte) []byte {
	var buf bytes.Buffer
	var w *Writer
	if ng {
		w, _ = NewNGWriter(&buf, lt)
	} else {
		w, _ = NewWriter(&buf, lt)
	}
	for i, p := range pkts {
		_ = w.WritePacket(int64(i)*1e9, p)
	}
	return buf.Bytes()
}

// TestTimestampsAndByteOrder: pcapng microsecond resolution (if_tsresol 6),
// and a big-endian pcap.
func TestTimestampsAndByteOrder(t *testing.T) {
	pkt := BuildUDP(LinkEthernet, dev4, res4, []byte("ts"))
	var buf bytes.Buffer
	w, _ := NewNGWriter(&buf, LinkEthernet)
	w.WritePacket(1234567, pkt) // written as 1234567 units
	ng := buf.Bytes()
	if ng[48] != 9 {
		t.Fatalf("if_tsresol not where expected: % x", ng[40:52])
	}
	ng[48] = 6 // microseconds
	got, err := readAll(t, ng)
	if err != nil || len(got) != 1 || got[0].Time != 1234567*1000 {
		t.Fatalf("pcapng µs: %v %+v", err, got)
	}

	le := writeCapture(t, false, LinkEthernet, [][]byte{pkt})
	be := bytes.Clone(le)
	swap32 := func(b []byte) { b[0], b[1], b[2], b[3] = b[3], b[2], b[1], b[0] }
	swap16 := func(b []byte) { b[0], b[1] = b[1], b[0] }
	swap32(be[0:])
	swap16(be[4:])
	swap16(be[6:])
	for _, o := range []int{8, 12, 16, 20, 24, 28, 32, 36} {
		swap32(be[o:])
	}
	got, err = readAll(t, be)
	if err != nil || len(got) != 1 || got[0].Time != 1700000000e9 || !bytes.Equal(got[0].Data, pkt) {
		t.Fatalf("big-endian pcap: %v %+v", err, got)
	}
}
