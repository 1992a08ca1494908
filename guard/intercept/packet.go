package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/dnsguard/dnsguard/guard/capture"
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
	// DNS query: the query as read from the wire. Its Name is a copy,
	// owned by the Packet (NFLOG's buffer is not).
	DNS *dnswire.Query
}

// Errors from ParsePacket.
var (
	ErrTruncated = errors.New("intercept: truncated packet")
	ErrProtocol  = errors.New("intercept: not a TCP or UDP packet")
	ErrFragment  = errors.New("intercept: IP fragment")
)

// ParsePacket reads a packet as NFLOG hands it over from an inet-family
// hook: an IPv4 or IPv6 header, then TCP or UDP (decoded by
// capture.Decode, the decoder the audit uses). kind comes from the log
// prefix. A DNS payload that does not parse as a query leaves DNS nil; that
// is not an error (a TCP handshake segment carries no payload).
func ParsePacket(kind Kind, mac []byte, b []byte) (Packet, error) {
	p := Packet{Kind: kind}
	if len(mac) == 6 {
		p.MAC = net.HardwareAddr(append([]byte(nil), mac...))
	}
	var f capture.Frame
	switch err := capture.Decode(capture.LinkRaw, b, &f); {
	case errors.Is(err, capture.ErrNotIP):
		return p, fmt.Errorf("intercept: IP version %d: %w", versionOf(b), ErrProtocol)
	case err != nil:
		return p, fmt.Errorf("%w: %v", ErrTruncated, err)
	case f.Fragment:
		return p, ErrFragment
	case f.Proto == 0:
		return p, fmt.Errorf("intercept: not TCP or UDP: %w", ErrProtocol)
	}
	p.Src = netip.AddrPortFrom(f.Src, f.SrcPort)
	p.Dst = netip.AddrPortFrom(f.Dst, f.DstPort)
	payload := f.Payload
	if f.Proto == capture.ProtoTCP {
		p.TCP = true
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
	}
	if kind == KindDNS && len(payload) > 0 {
		if q, err := dnswire.ParseQuery(payload); err == nil {
			q.Name = append([]byte(nil), q.Name...)
			p.DNS = &q
		}
	}
	return p, nil
}

func versionOf(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return int(b[0] >> 4)
}
