package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Frame is a decoded packet, down to the transport layer. Payload aliases
// the packet data.
type Frame struct {
	HasMAC         bool // SrcMAC and DstMAC are known (Ethernet, or SLL for SrcMAC)
	SrcMAC, DstMAC [6]byte
	Src, Dst       netip.Addr
	Proto          uint8 // ProtoUDP or ProtoTCP; 0 for other IP traffic
	SrcPort        uint16
	DstPort        uint16
	// TCP only.
	Seq   uint32
	Flags uint8
	// Payload is the transport payload (UDP datagram data or TCP segment
	// data), cut to what the IP header says when the frame has padding.
	Payload []byte
	// Fragment is set for IP fragments: only the first carries ports.
	Fragment bool
}

// Decode errors. ErrNotIP is not corruption: ARP, LLDP and the like.
var (
	ErrNotIP     = errors.New("not an IP packet")
	ErrLinkType  = errors.New("unsupported link type")
	ErrMalformed = errors.New("malformed packet")
)

const (
	etherIPv4  = 0x0800
	etherIPv6  = 0x86DD
	etherVLAN  = 0x8100
	etherQinQ  = 0x88A8
	etherVLAN2 = 0x9100
)

// Decode parses a packet of the given link type into f. It allocates
// nothing.
func Decode(linkType int, data []byte, f *Frame) error {
	*f = Frame{}
	switch linkType {
	case LinkEthernet:
		if len(data) < 14 {
			return ErrMalformed
		}
		f.HasMAC = true
		copy(f.DstMAC[:], data[0:6])
		copy(f.SrcMAC[:], data[6:12])
		et := binary.BigEndian.Uint16(data[12:])
		data = data[14:]
		for et == etherVLAN || et == etherQinQ || et == etherVLAN2 {
			if len(data) < 4 {
				return ErrMalformed
			}
			et = binary.BigEndian.Uint16(data[2:])
			data = data[4:]
		}
		return decodeEther(et, data, f)
	case LinkSLL:
		if len(data) < 16 {
			return ErrMalformed
		}
		hatype, alen := binary.BigEndian.Uint16(data[2:]), binary.BigEndian.Uint16(data[4:])
		if hatype == 1 && alen == 6 { // ARPHRD_ETHER: the sender's MAC
			f.HasMAC = true
			copy(f.SrcMAC[:], data[6:12])
		}
		return decodeEther(binary.BigEndian.Uint16(data[14:]), data[16:], f)
	case LinkSLL2:
		if len(data) < 20 {
			return ErrMalformed
		}
		hatype, alen := binary.BigEndian.Uint16(data[8:]), data[11]
		if hatype == 1 && alen == 6 {
			f.HasMAC = true
			copy(f.SrcMAC[:], data[12:18])
		}
		return decodeEther(binary.BigEndian.Uint16(data), data[20:], f)
	case LinkRaw, LinkRawBSD, LinkRawOBSD, LinkIPv4, LinkIPv6:
		return decodeIP(data, f)
	case LinkNull, LinkLoop:
		if len(data) < 4 {
			return ErrMalformed
		}
		return decodeIP(data[4:], f)
	}
	return ErrLinkType
}

func decodeEther(et uint16, data []byte, f *Frame) error {
	switch et {
	case etherIPv4, etherIPv6:
		return decodeIP(data, f)
	}
	return ErrNotIP
}

func decodeIP(data []byte, f *Frame) error {
	if len(data) < 1 {
		return ErrMalformed
	}
	switch data[0] >> 4 {
	case 4:
		return decodeIPv4(data, f)
	case 6:
		return decodeIPv6(data, f)
	}
	return ErrNotIP
}

func decodeIPv4(b []byte, f *Frame) error {
	if len(b) < 20 {
		return ErrMalformed
	}
	ihl := int(b[0]&0x0F) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || len(b) < ihl {
		return ErrMalformed
	}
	if total < len(b) {
		b = b[:total] // Ethernet padding
	}
	f.Src = netip.AddrFrom4([4]byte(b[12:16]))
	f.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:])
	if frag&0x3FFF != 0 { // MF set or a non-zero offset
		f.Fragment = true
		if frag&0x1FFF != 0 {
			return nil // no transport header in later fragments
		}
	}
	return decodeTransport(b[9], b[ihl:], f)
}

func decodeIPv6(b []byte, f *Frame) error {
	if len(b) < 40 {
		return ErrMalformed
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	f.Src = netip.AddrFrom16([16]byte(b[8:24]))
	f.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	b = b[40:]
	if plen < len(b) && plen != 0 {
		b = b[:plen]
	}
	for range 8 { // extension headers
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < 8 {
				return ErrMalformed
			}
			n := (int(b[1]) + 1) * 8
			if len(b) < n {
				return ErrMalformed
			}
			next, b = b[0], b[n:]
		case 44: // fragment
			if len(b) < 8 {
				return ErrMalformed
			}
			f.Fragment = true
			if binary.BigEndian.Uint16(b[2:])&0xFFF8 != 0 {
				return nil
			}
			next, b = b[0], b[8:]
		default:
			return decodeTransport(next, b, f)
		}
	}
	return ErrMalformed
}

func decodeTransport(proto uint8, b []byte, f *Frame) error {
	switch proto {
	case ProtoUDP:
		if len(b) < 8 {
			return ErrMalformed
		}
		f.Proto = ProtoUDP
		f.SrcPort = binary.BigEndian.Uint16(b)
		f.DstPort = binary.BigEndian.Uint16(b[2:])
		n := int(binary.BigEndian.Uint16(b[4:]))
		if n < 8 {
			if !f.Fragment && n != 0 { // 0: jumbogram or offloaded checksum
				return ErrMalformed
			}
			n = len(b)
		}
		if n > len(b) {
			n = len(b) // truncated capture (snaplen) or a first fragment
		}
		f.Payload = b[8:n]
	case ProtoTCP:
		if len(b) < 20 {
			return ErrMalformed
		}
		off := int(b[12]>>4) * 4
		if off < 20 || off > len(b) {
			return ErrMalformed
		}
		f.Proto = ProtoTCP
		f.SrcPort = binary.BigEndian.Uint16(b)
		f.DstPort = binary.BigEndian.Uint16(b[2:])
		f.Seq = binary.BigEndian.Uint32(b[4:])
		f.Flags = b[13]
		f.Payload = b[off:]
	default:
		f.Proto = 0
	}
	return nil
}
