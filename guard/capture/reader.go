// Package capture reads packet captures (pcap and pcapng) as a stream and
// decodes the few layers a DNS audit needs: Ethernet (with VLAN tags),
// Linux cooked capture (SLL and SLL2) or raw IP; IPv4 and IPv6; UDP and
// TCP, with a bounded TCP reassembler for DNS over TCP.
//
// It is written for speed over generality: a Reader hands out packets that
// alias its buffer (valid until the next call), nothing is allocated per
// packet, and memory stays flat whatever the size of the capture. A Writer
// produces pcap files for tests.
package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Link types (https://www.tcpdump.org/linktypes.html).
const (
	LinkNull     = 0   // BSD loopback: 4-byte address family in host order
	LinkEthernet = 1   // Ethernet II (with 802.1Q/802.1ad tags)
	LinkRaw      = 101 // raw IPv4 or IPv6
	LinkRawBSD   = 12  // raw IP on some BSDs
	LinkRawOBSD  = 14  // raw IP on OpenBSD
	LinkLoop     = 108 // OpenBSD loopback: address family in network order
	LinkSLL      = 113 // Linux cooked capture v1
	LinkIPv4     = 228 // raw IPv4
	LinkIPv6     = 229 // raw IPv6
	LinkSLL2     = 276 // Linux cooked capture v2
)

// Errors wrapped by the reader's errors, for errors.Is.
var (
	ErrFormat    = errors.New("not a pcap or pcapng capture")
	ErrTruncated = errors.New("capture truncated")
	ErrCorrupt   = errors.New("capture corrupt")
)

// maxPacket bounds one packet record; larger lengths mean a corrupt file.
const maxPacket = 256 << 10

// Error is a problem at a place in a capture file.
type Error struct {
	File   string
	Offset int64
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Packet is one captured packet. Data aliases the reader's buffer and is
// valid until the next call to Next.
type Packet struct {
	Time     int64 // nanoseconds since the Unix epoch
	LinkType int
	Data     []byte // captured bytes (possibly fewer than the packet had)
	OrigLen  int
	Offset   int64 // of the packet's record in the file
}

// Reader reads pcap or pcapng records one at a time.
type Reader struct {
	name string
	br   *bufio.Reader
	off  int64 // offset of the next unread byte
	ng   bool

	// pcap
	order    binary.ByteOrder
	nanos    bool
	linkType int

	// pcapng: per section
	ifaces []iface
}

type iface struct {
	linkType int
	// A timestamp t is t*tsMul/tsDiv nanoseconds: microseconds by default
	// (1000/1), else 1e9/10^n or 1e9/2^n per if_tsresol.
	tsMul, tsDiv int64
}

// NewReader detects the format from the first bytes of r. name is used in
// errors only.
func NewReader(r io.Reader, name string) (*Reader, error) {
	rd := &Reader{name: name, br: bufio.NewReaderSize(r, 1<<20)}
	magic, err := rd.br.Peek(4)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, rd.errorf(0, "%w: %d bytes, too short for a header", ErrFormat, len(magic))
		}
		return nil, rd.errorf(0, "%w", err)
	}
	switch {
	case binary.BigEndian.Uint32(magic) == 0x0A0D0D0A:
		rd.ng = true
		return rd, nil // the section header is read by Next
	default:
		return rd, rd.readPcapHeader()
	}
}

func (r *Reader) errorf(off int64, format string, args ...any) error {
	return &Error{File: r.name, Offset: off, Err: fmt.Errorf(format, args...)}
}

// peek returns the next n bytes without consuming them.
func (r *Reader) peek(n int) ([]byte, error) {
	b, err := r.br.Peek(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			if len(b) == 0 {
				return nil, io.EOF
			}
			return nil, r.errorf(r.off, "%w: %d of %d bytes", ErrTruncated, len(b), n)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, r.errorf(r.off, "%w: record of %d bytes", ErrCorrupt, n)
		}
		return nil, r.errorf(r.off, "%w", err)
	}
	return b, nil
}

func (r *Reader) discard(n int) {
	d, _ := r.br.Discard(n)
	r.off += int64(d)
}

func (r *Reader) readPcapHeader() error {
	h, err := r.peek(24)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) {
			return r.errorf(0, "%w: file shorter than a pcap header", ErrFormat)
		}
		return err
	}
	switch m := binary.LittleEndian.Uint32(h); m {
	case 0xa1b2c3d4:
		r.order = binary.LittleEndian
	case 0xa1b23c4d:
		r.order, r.nanos = binary.LittleEndian, true
	case 0xd4c3b2a1:
		r.order = binary.BigEndian
	case 0x4d3cb2a1:
		r.order, r.nanos = binary.BigEndian, true
	default:
		return r.errorf(0, "%w: magic %08x", ErrFormat, binary.BigEndian.Uint32(h))
	}
	r.linkType = int(r.order.Uint32(h[20:]) & 0x0FFFFFFF)
	r.discard(24)
	return nil
}

// Next returns the next packet, io.EOF at the end of the capture, or an
// *Error (wrapping ErrTruncated or ErrCorrupt) when the file cannot be read
// further.
func (r *Reader) Next() (Packet, error) {
	if r.ng {
		return r.nextNG()
	}
	off := r.off
	h, err := r.peek(16)
	if err != nil {
		return Packet{}, err
	}
	sec, frac := int64(r.order.Uint32(h)), int64(r.order.Uint32(h[4:]))
	caplen, origlen := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if caplen > maxPacket {
		return Packet{}, r.errorf(off, "%w: packet record of %d bytes", ErrCorrupt, caplen)
	}
	rec, err := r.peek(16 + int(caplen))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) {
			return Packet{}, r.errorf(off, "%w: packet record of %d bytes cut short", ErrTruncated, caplen)
		}
		return Packet{}, err
	}
	data := rec[16:]
	r.discard(16 + int(caplen))
	if !r.nanos {
		frac *= 1000
	}
	return Packet{Time: sec*1e9 + frac, LinkType: r.linkType, Data: data, OrigLen: int(origlen), Offset: off}, nil
}

// pcapng block types.
const (
	blockSHB       = 0x0A0D0D0A
	blockIDB       = 1
	blockPacketOld = 2
	blockSPB       = 3
	blockEPB       = 6
)

func (r *Reader) nextNG() (Packet, error) {
	for {
		off := r.off
		h, err := r.peek(8)
		if err != nil {
			return Packet{}, err
		}
		if binary.BigEndian.Uint32(h) == blockSHB {
			if err := r.readSHB(); err != nil {
				return Packet{}, err
			}
			continue
		}
		if r.order == nil {
			return Packet{}, r.errorf(off, "%w: pcapng block before a section header", ErrCorrupt)
		}
		typ, length := r.order.Uint32(h), r.order.Uint32(h[4:])
		if length < 12 || length%4 != 0 || length > maxPacket+64 {
			return Packet{}, r.errorf(off, "%w: pcapng block of type %d with length %d", ErrCorrupt, typ, length)
		}
		b, err := r.peek(int(length))
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Packet{}, r.errorf(off, "%w: pcapng block cut short", ErrTruncated)
			}
			return Packet{}, err
		}
		if r.order.Uint32(b[length-4:]) != length {
			return Packet{}, r.errorf(off, "%w: pcapng block lengths differ", ErrCorrupt)
		}
		body := b[8 : length-4]
		p, ok, err := r.block(typ, body, off)
		r.discard(int(length))
		if err != nil {
			return Packet{}, err
		}
		if ok {
			return p, nil
		}
	}
}

func (r *Reader) readSHB() error {
	off := r.off
	h, err := r.peek(12)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return r.errorf(off, "%w: section header cut short", ErrTruncated)
		}
		return err
	}
	switch binary.LittleEndian.Uint32(h[8:]) {
	case 0x1A2B3C4D:
		r.order = binary.LittleEndian
	case 0x4D3C2B1A:
		r.order = binary.BigEndian
	default:
		return r.errorf(off, "%w: pcapng byte-order magic %08x", ErrFormat, binary.BigEndian.Uint32(h[8:]))
	}
	length := r.order.Uint32(h[4:])
	if length < 28 || length%4 != 0 || length > maxPacket {
		return r.errorf(off, "%w: section header length %d", ErrCorrupt, length)
	}
	if _, err := r.peek(int(length)); err != nil {
		if errors.Is(err, io.EOF) {
			return r.errorf(off, "%w: section header cut short", ErrTruncated)
		}
		return err
	}
	r.discard(int(length))
	r.ifaces = r.ifaces[:0]
	return nil
}

func (r *Reader) block(typ uint32, body []byte, off int64) (Packet, bool, error) {
	switch typ {
	case blockIDB:
		if len(body) < 8 {
			return Packet{}, false, r.errorf(off, "%w: interface description too short", ErrCorrupt)
		}
		ifc := iface{linkType: int(r.order.Uint16(body)), tsMul: 1000, tsDiv: 1}
		r.parseIDBOptions(body[8:], &ifc)
		r.ifaces = append(r.ifaces, ifc)
		if len(r.ifaces) > 1<<16 {
			return Packet{}, false, r.errorf(off, "%w: more than 65536 interfaces", ErrCorrupt)
		}
		return Packet{}, false, nil
	case blockEPB, blockPacketOld:
		if len(body) < 20 {
			return Packet{}, false, r.errorf(off, "%w: packet block too short", ErrCorrupt)
		}
		var id uint32
		if typ == blockEPB {
			id = r.order.Uint32(body)
		} else {
			id = uint32(r.order.Uint16(body))
		}
		if int(id) >= len(r.ifaces) {
			return Packet{}, false, r.errorf(off, "%w: packet on undeclared interface %d", ErrCorrupt, id)
		}
		ifc := r.ifaces[id]
		ts := uint64(r.order.Uint32(body[4:]))<<32 | uint64(r.order.Uint32(body[8:]))
		caplen, origlen := r.order.Uint32(body[12:]), r.order.Uint32(body[16:])
		if uint64(caplen) > uint64(len(body)-20) {
			return Packet{}, false, r.errorf(off, "%w: packet block captured length %d exceeds block", ErrCorrupt, caplen)
		}
		return Packet{
			Time: ifc.nanos(ts), LinkType: ifc.linkType, Data: body[20 : 20+caplen],
			OrigLen: int(origlen), Offset: off,
		}, true, nil
	case blockSPB:
		if len(r.ifaces) == 0 {
			return Packet{}, false, r.errorf(off, "%w: simple packet before any interface", ErrCorrupt)
		}
		if len(body) < 4 {
			return Packet{}, false, r.errorf(off, "%w: simple packet block too short", ErrCorrupt)
		}
		origlen := r.order.Uint32(body)
		data := body[4:]
		if uint64(origlen) < uint64(len(data)) {
			data = data[:origlen]
		}
		return Packet{LinkType: r.ifaces[0].linkType, Data: data, OrigLen: int(origlen), Offset: off}, true, nil
	}
	return Packet{}, false, nil // statistics, name resolution, custom: skipped
}

// parseIDBOptions reads if_tsresol (option 9).
func (r *Reader) parseIDBOptions(b []byte, ifc *iface) {
	for len(b) >= 4 {
		code, n := r.order.Uint16(b), int(r.order.Uint16(b[2:]))
		b = b[4:]
		if n > len(b) {
			return
		}
		if code == 0 {
			return
		}
		if code == 9 && n >= 1 {
			res := b[0]
			if res&0x80 != 0 { // 2^-x seconds
				ifc.tsMul, ifc.tsDiv = 1e9, int64(1)<<min(res&0x7F, 62)
			} else {
				ifc.tsMul, ifc.tsDiv = 1e9, 1
				for range min(res, 18) {
					ifc.tsDiv *= 10
				}
			}
		}
		pad := (n + 3) &^ 3
		if pad > len(b) {
			return
		}
		b = b[pad:]
	}
}

func (ifc iface) nanos(ts uint64) int64 {
	if ifc.tsDiv == 1 {
		return int64(ts) * ifc.tsMul
	}
	sec := ts / uint64(ifc.tsDiv)
	rem := ts % uint64(ifc.tsDiv)
	return int64(sec)*1e9 + int64(float64(rem)*float64(ifc.tsMul)/float64(ifc.tsDiv))
}
