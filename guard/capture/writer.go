package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// Writer writes a pcap (or, with NG set, a pcapng) capture: for tests and
// benchmarks that need synthetic traffic.
type Writer struct {
	w        io.Writer
	linkType int
	ng       bool
	buf      []byte
}

// NewWriter writes a pcap header (microsecond timestamps, little-endian)
// for the given link type.
func NewWriter(w io.Writer, linkType int) (*Writer, error) {
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h, 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], maxPacket)
	binary.LittleEndian.PutUint32(h[20:], uint32(linkType))
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("capture: writing pcap header: %w", err)
	}
	return &Writer{w: w, linkType: linkType}, nil
}

// NewNGWriter writes a pcapng section header and one interface of the given
// link type with nanosecond timestamps.
func NewNGWriter(w io.Writer, linkType int) (*Writer, error) {
	var b []byte
	// Section header block.
	b = binary.LittleEndian.AppendUint32(b, blockSHB)
	b = binary.LittleEndian.AppendUint32(b, 28)
	b = binary.LittleEndian.AppendUint32(b, 0x1A2B3C4D)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0)) // section length unknown
	b = binary.LittleEndian.AppendUint32(b, 28)
	// Interface description block with if_tsresol = 9 (nanoseconds).
	b = binary.LittleEndian.AppendUint32(b, blockIDB)
	b = binary.LittleEndian.AppendUint32(b, 32)
	b = binary.LittleEndian.AppendUint16(b, uint16(linkType))
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, maxPacket)
	b = binary.LittleEndian.AppendUint16(b, 9) // if_tsresol
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = append(b, 9, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, 0) // opt_endofopt
	b = binary.LittleEndian.AppendUint32(b, 32)
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("capture: writing pcapng header: %w", err)
	}
	return &Writer{w: w, linkType: linkType, ng: true}, nil
}

// WritePacket writes one packet captured at t (ns since the epoch).
func (w *Writer) WritePacket(t int64, data []byte) error {
	b := w.buf[:0]
	if w.ng {
		pad := (4 - len(data)%4) % 4
		total := uint32(32 + len(data) + pad)
		b = binary.LittleEndian.AppendUint32(b, blockEPB)
		b = binary.LittleEndian.AppendUint32(b, total)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(uint64(t)>>32))
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
		b = append(b, make([]byte, pad)...)
		b = binary.LittleEndian.AppendUint32(b, total)
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(t/1e9))
		b = binary.LittleEndian.AppendUint32(b, uint32(t%1e9/1e3))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	w.buf = b
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("capture: writing packet: %w", err)
	}
	return nil
}

// Endpoint is one side of a synthetic packet.
type Endpoint struct {
	MAC  [6]byte
	Addr netip.Addr
	Port uint16
}

// TCPInfo is the TCP header of a synthetic segment.
type TCPInfo struct {
	Seq   uint32
	Flags uint8
}

// BuildUDP returns a packet of the given link type carrying payload in UDP.
func BuildUDP(linkType int, src, dst Endpoint, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp, src.Port)
	binary.BigEndian.PutUint16(udp[2:], dst.Port)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	return buildIP(linkType, src, dst, ProtoUDP, udp)
}

// BuildTCP returns a packet of the given link type carrying payload in a
// TCP segment.
func BuildTCP(linkType int, src, dst Endpoint, t TCPInfo, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp, src.Port)
	binary.BigEndian.PutUint16(tcp[2:], dst.Port)
	binary.BigEndian.PutUint32(tcp[4:], t.Seq)
	tcp[12] = 5 << 4
	tcp[13] = t.Flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(tcp, payload...)
	return buildIP(linkType, src, dst, ProtoTCP, tcp)
}

func buildIP(linkType int, src, dst Endpoint, proto uint8, l4 []byte) []byte {
	var ip []byte
	et := uint16(etherIPv4)
	if src.Addr.Is4() {
		ip = make([]byte, 20, 20+len(l4))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		ip[8] = 64
		ip[9] = proto
		s, d := src.Addr.As4(), dst.Addr.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	} else {
		et = etherIPv6
		ip = make([]byte, 40, 40+len(l4))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = proto
		ip[7] = 64
		s, d := src.Addr.As16(), dst.Addr.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	ip = append(ip, l4...)
	var link []byte
	switch linkType {
	case LinkEthernet:
		link = make([]byte, 14)
		copy(link, dst.MAC[:])
		copy(link[6:], src.MAC[:])
		binary.BigEndian.PutUint16(link[12:], et)
	case LinkSLL:
		link = make([]byte, 16)
		binary.BigEndian.PutUint16(link[0:], 0) // sent to us
		binary.BigEndian.PutUint16(link[2:], 1) // ARPHRD_ETHER
		binary.BigEndian.PutUint16(link[4:], 6)
		copy(link[6:], src.MAC[:])
		binary.BigEndian.PutUint16(link[14:], et)
	case LinkSLL2:
		link = make([]byte, 20)
		binary.BigEndian.PutUint16(link[0:], et)
		binary.BigEndian.PutUint32(link[4:], 2) // interface index
		binary.BigEndian.PutUint16(link[8:], 1)
		link[10] = 0
		link[11] = 6
		copy(link[12:], src.MAC[:])
	case LinkNull:
		link = make([]byte, 4)
		af := uint32(2)
		if et == etherIPv6 {
			af = 30
		}
		binary.LittleEndian.PutUint32(link, af)
	}
	return append(link, ip...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xFFFF {
		sum = sum>>16 + sum&0xFFFF
	}
	return ^uint16(sum)
}
