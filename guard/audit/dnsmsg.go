package audit

import (
	"encoding/binary"
	"errors"
)

// message is what the audit reads of one DNS message: the header, the
// first question, the types and TTLs of the answers, and the OPT record.
type message struct {
	id       uint16
	response bool
	opcode   uint8
	rcode    uint8
	tc       bool
	qdcount  uint16
	name     []byte // first question, lower-case presentation form without the final dot ("" for the root)
	nameLen  int    // wire length of the question name
	qtype    uint16
	answers  int
	minTTL   uint32 // smallest TTL of the answer section (answers > 0)
	ansTypes [8]uint16
	nTypes   int
	edns     bool
	ednsSize uint16
	do       bool
}

var errDNS = errors.New("malformed DNS message")

const typeOPT = 41

// parseMessage reads b into m, appending the name into m.name's storage.
func parseMessage(b []byte, m *message) error {
	name := m.name[:0]
	*m = message{name: name}
	if len(b) < 12 {
		return errDNS
	}
	m.id = binary.BigEndian.Uint16(b)
	flags := binary.BigEndian.Uint16(b[2:])
	m.response = flags&0x8000 != 0
	m.opcode = uint8(flags>>11) & 0xF
	m.tc = flags&0x0200 != 0
	m.rcode = uint8(flags & 0xF)
	m.qdcount = binary.BigEndian.Uint16(b[4:])
	an := int(binary.BigEndian.Uint16(b[6:]))
	ns := int(binary.BigEndian.Uint16(b[8:]))
	ar := int(binary.BigEndian.Uint16(b[10:]))
	off := 12
	if m.qdcount == 0 {
		return errDNS // every query and answer the audit counts has a question
	}
	var err error
	m.name, off, err = readName(b, off, m.name)
	if err != nil {
		return err
	}
	m.nameLen = off - 12
	if len(b)-off < 4 {
		return errDNS
	}
	m.qtype = binary.BigEndian.Uint16(b[off:])
	off += 4
	for i := 1; i < int(m.qdcount); i++ {
		if off, err = skipName(b, off); err != nil || len(b)-off < 4 {
			return errDNS
		}
		off += 4
	}
	for i := 0; i < an+ns+ar; i++ {
		if off, err = skipName(b, off); err != nil || len(b)-off < 10 {
			return errDNS
		}
		typ := binary.BigEndian.Uint16(b[off:])
		class := binary.BigEndian.Uint16(b[off+2:])
		ttl := binary.BigEndian.Uint32(b[off+4:])
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10
		if len(b)-off < rdlen {
			return errDNS
		}
		off += rdlen
		switch {
		case i < an:
			if m.answers == 0 || ttl < m.minTTL {
				m.minTTL = ttl
			}
			m.answers++
			m.addType(typ)
		case i >= an+ns && typ == typeOPT:
			m.edns = true
			m.ednsSize = class
			m.do = ttl&0x8000 != 0
		}
	}
	return nil
}

func (m *message) addType(t uint16) {
	for _, x := range m.ansTypes[:m.nTypes] {
		if x == t {
			return
		}
	}
	if m.nTypes < len(m.ansTypes) {
		m.ansTypes[m.nTypes] = t
		m.nTypes++
	}
}

// readName appends the name at off (following compression pointers) in
// lower-case dotted form and returns the offset after it in the message.
func readName(b []byte, off int, dst []byte) ([]byte, int, error) {
	end := -1
	for hops := 0; ; hops++ {
		if off >= len(b) || hops > 127 {
			return dst, 0, errDNS
		}
		l := int(b[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			return dst, end, nil
		case l&0xC0 == 0xC0:
			if off+1 >= len(b) {
				return dst, 0, errDNS
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(b[off:]) & 0x3FFF)
		case l&0xC0 != 0:
			return dst, 0, errDNS
		default:
			if off+1+l > len(b) || len(dst)+l+1 > 255 {
				return dst, 0, errDNS
			}
			if len(dst) > 0 {
				dst = append(dst, '.')
			}
			for _, c := range b[off+1 : off+1+l] {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				dst = append(dst, c)
			}
			off += 1 + l
		}
	}
}

func skipName(b []byte, off int) (int, error) {
	for {
		if off >= len(b) {
			return 0, errDNS
		}
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xC0 == 0xC0:
			if off+2 > len(b) {
				return 0, errDNS
			}
			return off + 2, nil
		case l&0xC0 != 0:
			return 0, errDNS
		}
		off += 1 + l
	}
}

// typeName spells the record types devices use; others print as TYPEn.
func typeName(t uint16) string {
	switch t {
	case 1:
		return "A"
	case 2:
		return "NS"
	case 5:
		return "CNAME"
	case 6:
		return "SOA"
	case 12:
		return "PTR"
	case 15:
		return "MX"
	case 16:
		return "TXT"
	case 28:
		return "AAAA"
	case 33:
		return "SRV"
	case 41:
		return "OPT"
	case 43:
		return "DS"
	case 46:
		return "RRSIG"
	case 48:
		return "DNSKEY"
	case 64:
		return "SVCB"
	case 65:
		return "HTTPS"
	case 255:
		return "ANY"
	}
	return "TYPE" + itoa(int(t))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
