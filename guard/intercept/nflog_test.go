package intercept

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlattr encodes one netlink attribute, padded.
func nlattr(typ uint16, v []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(unix.NLA_HDRLEN+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%unix.NLA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// nlmsg encodes one netlink message of type typ, padded.
func nlmsg(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, make([]byte, 10)...) // flags, sequence, port id
	b = append(b, data...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// packetMsg is a NFULNL_MSG_PACKET message as the kernel sends it.
func packetMsg(prefix string, mac, payload []byte, extra ...[]byte) []byte {
	data := []byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 53}
	data = append(data, nlattr(1, []byte{0x08, 0x00, 0, 0})...) // NFULA_PACKET_HDR
	for _, e := range extra {
		data = append(data, e...)
	}
	if mac != nil {
		hw := binary.BigEndian.AppendUint16(nil, uint16(len(mac)))
		hw = append(append(hw, 0, 0), mac...)
		hw = append(hw, make([]byte, 8-len(mac))...)
		data = append(data, nlattr(nfulaHWAddr, hw)...)
	}
	if payload != nil {
		data = append(data, nlattr(nfulaPayload, payload)...)
	}
	if prefix != "" {
		data = append(data, nlattr(nfulaPrefix, append([]byte(prefix), 0))...)
	}
	return nlmsg(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket, data)
}

func TestParseLogged(t *testing.T) {
	mac := []byte{2, 0xaa, 0, 0, 0, 2}
	payload := []byte{0x45, 0, 0, 28, 1, 2, 3}
	odd := []byte{0x45, 0, 0, 29, 1} // a payload whose length is not aligned
	for _, tc := range []struct {
		name    string
		msg     []byte
		prefix  string
		mac     []byte
		payload []byte
		err     bool
	}{
		{"all", packetMsg("dns", mac, payload), "dns\x00", mac, payload, false},
		{"no hardware address", packetMsg("dot", nil, payload), "dot\x00", nil, payload, false},
		{"unaligned payload", packetMsg("dns", mac, odd), "dns\x00", mac, odd, false},
		{"byte-order flag on a type", packetMsg("dns", mac, payload, nlattr(nfulaPayload|unix.NLA_F_NET_BYTEORDER, payload)), "dns\x00", mac, payload, false},
		{"unknown attributes", packetMsg("dns", mac, payload, nlattr(17, []byte{1, 2, 3, 4}), nlattr(99, nil)), "dns\x00", mac, payload, false},
		{"no payload", packetMsg("dns", mac, nil), "", nil, nil, true},
		{"no prefix", packetMsg("", mac, payload), "", nil, nil, true},
		{"attribute past the end", func() []byte {
			m := packetMsg("dns", mac, payload)
			binary.NativeEndian.PutUint16(m[unix.NLMSG_HDRLEN+nfgenmsgLen:], 200)
			return m
		}(), "", nil, nil, true},
		{"attribute shorter than its header", func() []byte {
			m := packetMsg("dns", mac, payload)
			binary.NativeEndian.PutUint16(m[unix.NLMSG_HDRLEN+nfgenmsgLen:], 2)
			return m
		}(), "", nil, nil, true},
		{"hardware length past the attribute", func() []byte {
			m := packetMsg("dns", mac, payload)
			i := bytes.Index(m, []byte{0, 6, 0, 0, 2, 0xaa})
			m[i+1] = 200
			return m
		}(), "dns\x00", nil, payload, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []logged
			var errs []error
			err := nflogMessages(tc.msg, func(typ uint16, data []byte) {
				if typ != unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket {
					t.Fatalf("type %#x", typ)
				}
				l, err := parseLogged(data)
				got, errs = append(got, l), append(errs, err)
			})
			if err != nil || len(got) != 1 {
				t.Fatalf("messages: %d, %v", len(got), err)
			}
			if (errs[0] != nil) != tc.err {
				t.Fatalf("err %v, want error %v", errs[0], tc.err)
			}
			if tc.err {
				return
			}
			l := got[0]
			if string(l.prefix) != tc.prefix || !bytes.Equal(l.mac, tc.mac) || !bytes.Equal(l.payload, tc.payload) {
				t.Errorf("got prefix %q mac %x payload %x", l.prefix, l.mac, l.payload)
			}
		})
	}
}

func TestNFLogMessages(t *testing.T) {
	a := packetMsg("dns", nil, []byte{0x45})
	b := packetMsg("dot", nil, []byte{0x45, 1})
	done := nlmsg(unix.NLMSG_DONE, make([]byte, 4))
	var types []uint16
	collect := func(typ uint16, _ []byte) { types = append(types, typ) }
	if err := nflogMessages(append(append(append([]byte(nil), a...), done...), b...), collect); err != nil || len(types) != 3 || types[1] != unix.NLMSG_DONE {
		t.Errorf("three messages: types %v, err %v", types, err)
	}
	// Truncated by the read (a datagram larger than the buffer): its
	// length is more than was read.
	types = nil
	if err := nflogMessages(a[:len(a)-4], collect); err == nil || len(types) != 0 {
		t.Errorf("truncated: types %v, err %v", types, err)
	}
	for _, short := range [][]byte{nil, a[:unix.NLMSG_HDRLEN-1]} {
		types = nil
		if err := nflogMessages(short, collect); err != nil || len(types) != 0 {
			t.Errorf("%d octets: types %v, err %v", len(short), types, err)
		}
	}
	bad := append([]byte(nil), a...)
	binary.NativeEndian.PutUint32(bad, 3)
	if err := nflogMessages(bad, collect); err == nil {
		t.Error("a length shorter than the header was accepted")
	}
}

// FuzzNFLog: any datagram is walked without panicking, and every packet
// message's attributes lie inside it.
func FuzzNFLog(f *testing.F) {
	f.Add(packetMsg("dns", []byte{2, 0, 0, 0, 0, 1}, []byte{0x45, 0, 0, 20}))
	f.Add(append(packetMsg("dot", nil, []byte{0x60}), nlmsg(unix.NLMSG_DONE, nil)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = nflogMessages(b, func(_ uint16, data []byte) {
			l, err := parseLogged(data)
			if err != nil {
				return
			}
			for _, s := range [][]byte{l.prefix, l.mac, l.payload} {
				if len(s) > len(data) {
					t.Fatalf("attribute of %d octets in a message of %d", len(s), len(data))
				}
			}
			_, _ = ParsePacket(Kind(l.prefix), l.mac, l.payload)
		})
	})
}

// TestObserveGroupTaken: a group another socket holds is an error, not a
// silent observer that never sees a packet.
func TestObserveGroupTaken(t *testing.T) {
	_, fd := netns(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := Observe(ctx, 78, fd, func(Packet) {}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	second, err := Observe(ctx, 78, fd, func(Packet) {}, quiet())
	if err == nil {
		second.Close()
		t.Fatal("a second observer bound the group")
	}
	if !errors.Is(err, unix.EPERM) { // the kernel's answer: another port holds the instance
		t.Errorf("second bind: %v, want EPERM", err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	again, err := Observe(ctx, 78, fd, func(Packet) {}, quiet())
	if err != nil {
		t.Fatalf("the group after the first observer closed: %v", err)
	}
	again.Close()
}

func TestKindOf(t *testing.T) {
	for prefix, want := range map[string]Kind{"dns\x00": KindDNS, "dot": KindDoT, "doq \x00": KindDoQ, "doh\x00\x00": KindDoH, "other\x00": "other", "": ""} {
		if got := kindOf([]byte(prefix)); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", prefix, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = kindOf([]byte("dns\x00")) }); n != 0 {
		t.Errorf("kindOf allocates %v times for a known kind", n)
	}
}
