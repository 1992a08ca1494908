package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Kind says what a logged packet was: a device's DNS query on port 53 or
// an attempt to reach an encrypted resolver around the guard.
type Kind string

// Kinds of logged packets; each is also the NFLOG prefix of its rules.
const (
	KindDNS Kind = "dns" // port 53, UDP or TCP, logged before the redirect
	KindDoT Kind = "dot" // TCP 853 (RFC 7858), rejected
	KindDoQ Kind = "doq" // UDP 853 (RFC 9250), rejected
	KindDoH Kind = "doh" // 443 to a known DoH endpoint, rejected
)

// Packet is what the observer learns from one logged packet.
type Packet struct {
	Kind Kind
	MAC  net.HardwareAddr // source MAC, when the kernel gave one
	Src  netip.AddrPort
	Dst  netip.AddrPort // the address the device meant to reach
	TCP  bool

	// DNS is set when Kind is KindDNS and the packet carries a whole
	// DNS query header and question.
	DNS *Query
}

// Query is the part of a device's DNS query the guard grades.
type Query struct {
	ID   uint16
	EDNS bool
	Name string
	Type uint16
}

// Errors from ParsePacket.
var (
	ErrTruncated = errors.New("intercept: truncated packet")
	ErrProtocol  = errors.New("intercept: not a TCP or UDP packet")
	ErrFragment  = errors.New("intercept: IP fragment")
)

const (
	protoTCP = 6
	protoUDP = 17
)

// ParsePacket reads a packet as NFLOG hands it over from an inet-family
// hook: an IPv4 or IPv6 header, then TCP or UDP. kind comes from the log
// prefix. A DNS payload that does not parse as a query leaves DNS nil; that
// is not an error (a TCP handshake segment carries no payload).
func ParsePacket(kind Kind, mac []byte, b []byte) (Packet, error) {
	p := Packet{Kind: kind}
	if len(mac) == 6 {
		p.MAC = net.HardwareAddr(append([]byte(nil), mac...))
	}
	if len(b) < 1 {
		return p, ErrTruncated
	}
	var (
		src, dst netip.Addr
		proto    byte
		l4       []byte
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, ErrTruncated
		}
		ihl := int(b[0]&0xF) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || len(b) < ihl || total < ihl {
			return p, ErrTruncated
		}
		if total < len(b) {
			b = b[:total]
		}
		if frag := binary.BigEndian.Uint16(b[6:]); frag&0x1FFF != 0 || frag&0x2000 != 0 {
			return p, ErrFragment
		}
		proto = b[9]
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return p, ErrTruncated
		}
		plen := int(binary.BigEndian.Uint16(b[4:]))
		if 40+plen < len(b) {
			b = b[:40+plen]
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		var err error
		proto, l4, err = skipExtensions(b[6], b[40:])
		if err != nil {
			return p, err
		}
	default:
		return p, fmt.Errorf("intercept: IP version %d: %w", b[0]>>4, ErrProtocol)
	}
	var payload []byte
	switch proto {
	case protoUDP:
		if len(l4) < 8 {
			return p, ErrTruncated
		}
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		payload = l4[8:]
	case protoTCP:
		if len(l4) < 20 {
			return p, ErrTruncated
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || len(l4) < off {
			return p, ErrTruncated
		}
		p.TCP = true
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		payload = l4[off:]
		if len(payload) >= 2 {
			// DNS over TCP: a two-octet length, then the message. Only
			// a segment that starts a message is read.
			n := int(binary.BigEndian.Uint16(payload))
			payload = payload[2:]
			if n < len(payload) {
				payload = payload[:n]
			}
		} else {
			payload = nil
		}
	default:
		return p, fmt.Errorf("intercept: IP protocol %d: %w", proto, ErrProtocol)
	}
	if kind == KindDNS && len(payload) > 0 {
		if q, err := dnswire.ParseQuery(payload); err == nil {
			p.DNS = &Query{ID: q.ID, EDNS: q.EDNS.Present, Name: dnswire.NameString(q.Name), Type: q.Type}
		}
	}
	return p, nil
}

// skipExtensions walks IPv6 extension headers to the upper layer.
func skipExtensions(next byte, b []byte) (byte, []byte, error) {
	for range 8 {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < 8 {
				return 0, nil, ErrTruncated
			}
			n := (int(b[1]) + 1) * 8
			if len(b) < n {
				return 0, nil, ErrTruncated
			}
			next, b = b[0], b[n:]
		case 44: // fragment
			return 0, nil, ErrFragment
		default:
			return next, b, nil
		}
	}
	return 0, nil, fmt.Errorf("intercept: too many IPv6 extension headers: %w", ErrProtocol)
}
