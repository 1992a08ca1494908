package intercept

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
)

// buildPacket lays an IPv4 or IPv6 header and a UDP or TCP header in front
// of payload (for TCP, payload is sent as DNS over TCP, length first).
func buildPacket(t testing.TB, src, dst netip.AddrPort, tcp bool, payload []byte) []byte {
	t.Helper()
	var l4 []byte
	if tcp {
		l4 = make([]byte, 20)
		l4[12] = 5 << 4
		if payload != nil {
			l4 = binary.BigEndian.AppendUint16(l4, uint16(len(payload)))
		}
	} else {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	}
	binary.BigEndian.PutUint16(l4, src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	l4 = append(l4, payload...)
	proto := byte(capture.ProtoUDP)
	if tcp {
		proto = capture.ProtoTCP
	}
	if src.Addr().Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8], h[9] = 64, proto
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = proto, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, l4...)
}

func query(t testing.TB, id uint16, name string, edns bool) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	if edns {
		m.SetEdns0(1232, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seen is what the graders take from a logged query.
type seen struct {
	ID   uint16
	EDNS bool
	Name string
	Type uint16
}

func seenOf(q *dnswire.Query) seen {
	return seen{q.ID, q.EDNS.Present, dnswire.NameString(q.Name), q.Type}
}

func TestParsePacket(t *testing.T) {
	dev4 := netip.MustParseAddrPort("192.168.1.20:4096")
	g4 := netip.MustParseAddrPort("8.8.8.8:53")
	dev6 := netip.MustParseAddrPort("[fd00::20]:3073")
	g6 := netip.MustParseAddrPort("[2001:4860:4860::8888]:53")
	mac := []byte{0x20, 0xf8, 0x5e, 0xca, 0x91, 0x52}
	tests := []struct {
		name    string
		kind    Kind
		pkt     []byte
		tcp     bool
		src     netip.AddrPort
		dst     netip.AddrPort
		dns     *seen
		wantErr error
	}{
		{"udp4 query", KindDNS, buildPacket(t, dev4, g4, false, query(t, 0x0001, "example.com.", false)), false, dev4, g4,
			&seen{ID: 1, Name: "example.com.", Type: dns.TypeA}, nil},
		{"udp6 query with EDNS", KindDNS, buildPacket(t, dev6, g6, false, query(t, 0xbeef, "a.example.", true)), false, dev6, g6,
			&seen{ID: 0xbeef, EDNS: true, Name: "a.example.", Type: dns.TypeA}, nil},
		{"tcp4 query", KindDNS, buildPacket(t, dev4, g4, true, query(t, 7, "tcp.example.", false)), true, dev4, g4,
			&seen{ID: 7, Name: "tcp.example.", Type: dns.TypeA}, nil},
		{"tcp handshake", KindDNS, buildPacket(t, dev4, g4, true, nil), true, dev4, g4, nil, nil},
		{"dot attempt", KindDoT, buildPacket(t, dev4, netip.MustParseAddrPort("1.1.1.1:853"), true, nil), true, dev4,
			netip.MustParseAddrPort("1.1.1.1:853"), nil, nil},
		{"response is not graded", KindDNS, buildPacket(t, dev4, g4, false, func() []byte {
			b := query(t, 9, "r.example.", false)
			b[2] |= 0x80
			return b
		}()), false, dev4, g4, nil, nil},
		{"garbage payload", KindDNS, buildPacket(t, dev4, g4, false, []byte{1, 2, 3}), false, dev4, g4, nil, nil},
		{"empty", KindDNS, nil, false, netip.AddrPort{}, netip.AddrPort{}, nil, ErrTruncated},
		{"short v4", KindDNS, []byte{0x45, 0, 0}, false, netip.AddrPort{}, netip.AddrPort{}, nil, ErrTruncated},
		{"version 5", KindDNS, make([]byte, 40), false, netip.AddrPort{}, netip.AddrPort{}, nil, ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.pkt) == 40 && tc.wantErr == ErrProtocol {
				tc.pkt[0] = 0x50
			}
			p, err := ParsePacket(tc.kind, mac, tc.pkt)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Src != tc.src || p.Dst != tc.dst || p.TCP != tc.tcp || p.Kind != tc.kind {
				t.Errorf("got %v -> %v tcp=%v kind=%v", p.Src, p.Dst, p.TCP, p.Kind)
			}
			if p.MAC.String() != "20:f8:5e:ca:91:52" {
				t.Errorf("MAC = %v", p.MAC)
			}
			switch {
			case tc.dns == nil && p.DNS != nil:
				t.Errorf("DNS = %+v, want none", *p.DNS)
			case tc.dns != nil && (p.DNS == nil || seenOf(p.DNS) != *tc.dns):
				t.Errorf("DNS = %+v, want %+v", p.DNS, *tc.dns)
			}
		})
	}
}

// TestParsePacketOwnsName: the packet's query name is its own copy, so a
// packet kept after NFLOG reuses its buffer still names what was asked.
func TestParsePacketOwnsName(t *testing.T) {
	b := buildPacket(t, netip.MustParseAddrPort("10.0.0.2:1000"), netip.MustParseAddrPort("8.8.8.8:53"), false, query(t, 1, "keep.example.", false))
	p, err := ParsePacket(KindDNS, nil, b)
	if err != nil || p.DNS == nil {
		t.Fatalf("%+v, %v", p, err)
	}
	for i := range b {
		b[i] = 'x'
	}
	if got := dnswire.NameString(p.DNS.Name); got != "keep.example." {
		t.Fatalf("name after the buffer changed: %q", got)
	}
}

func TestParsePacketFragment(t *testing.T) {
	b := buildPacket(t, netip.MustParseAddrPort("10.0.0.2:1000"), netip.MustParseAddrPort("8.8.8.8:53"), false, query(t, 1, "x.", false))
	binary.BigEndian.PutUint16(b[6:], 0x2000) // more fragments
	if _, err := ParsePacket(KindDNS, nil, b); !errors.Is(err, ErrFragment) {
		t.Fatalf("err = %v, want ErrFragment", err)
	}
}

func TestParsePacketIPv6Extension(t *testing.T) {
	b := buildPacket(t, netip.MustParseAddrPort("[fd00::2]:1000"), netip.MustParseAddrPort("[2001:db8::53]:53"), false, query(t, 42, "x.", false))
	// Insert an 8-octet destination-options header before UDP.
	ext := []byte{capture.ProtoUDP, 0, 1, 4, 0, 0, 0, 0}
	out := append(append(append([]byte(nil), b[:40]...), ext...), b[40:]...)
	out[6] = 60
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	p, err := ParsePacket(KindDNS, nil, out)
	if err != nil {
		t.Fatal(err)
	}
	if p.DNS == nil || p.DNS.ID != 42 || p.Dst.Port() != 53 {
		t.Fatalf("got %+v", p)
	}
}

func FuzzParsePacket(f *testing.F) {
	f.Add(buildPacket(f, netip.MustParseAddrPort("192.168.1.2:4096"), netip.MustParseAddrPort("8.8.8.8:53"), false, query(f, 1, "example.com.", true)))
	f.Add(buildPacket(f, netip.MustParseAddrPort("[fd00::2]:4096"), netip.MustParseAddrPort("[2001:db8::1]:53"), true, query(f, 2, "example.com.", false)))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(KindDNS, nil, b)
		if err != nil {
			return
		}
		if !p.Src.Addr().IsValid() || !p.Dst.Addr().IsValid() {
			t.Fatalf("parsed packet without addresses: %+v", p)
		}
		if p.DNS != nil && len(p.DNS.Name) == 0 {
			t.Fatalf("query without a name: %+v", p.DNS)
		}
	})
}
