// Package dnswire reads and writes the few parts of DNS messages the guard
// touches on every query, straight on the wire bytes: the header, the one
// question, the OPT record. The hot path (a cache hit) never builds a
// dns.Msg; everything else uses github.com/miekg/dns.
package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Errors from ParseQuery. ErrShort means there is not even a header to
// answer; the others can be answered with FORMERR.
var (
	ErrShort     = errors.New("dnswire: message shorter than a header")
	ErrNotQuery  = errors.New("dnswire: QR bit set (a response, not a query)")
	ErrQuestions = errors.New("dnswire: question count is not 1")
	ErrName      = errors.New("dnswire: malformed question name")
	ErrTrailing  = errors.New("dnswire: malformed record after the question")
	ErrManyOPT   = errors.New("dnswire: more than one OPT record")
)

// Header field offsets and flag bits.
const (
	HeaderLen = 12

	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagAD = 1 << 5
	flagCD = 1 << 4

	TypeOPT = 41
	TypeANY = 255
	MaxName = 255
)

// EDNS is what the query's OPT record says (RFC 6891).
type EDNS struct {
	Present bool
	UDPSize uint16
	Version uint8
	DO      bool
	Padding bool // the query carried a Padding option (RFC 7830)
}

// Query is a device's query as read from the wire.
type Query struct {
	ID      uint16
	Opcode  uint8
	RD, CD  bool
	AD      bool
	Name    []byte // question name in wire format, as the device sent it (aliases the message)
	NameEnd int    // offset just past the question (name, type, class)
	Type    uint16
	Class   uint16
	EDNS    EDNS
}

// ParseQuery reads a query. Unknown EDNS options are ignored (RFC 6891
// §6.1.2); a second OPT record is ErrManyOPT.
func ParseQuery(b []byte) (Query, error) {
	var q Query
	h, err := q.readHeader(b)
	if err != nil {
		return q, err
	}
	if h.flags&flagQR != 0 {
		return q, ErrNotQuery
	}
	if h.qd != 1 {
		return q, ErrQuestions
	}
	if err := q.readQuestion(b); err != nil {
		return q, err
	}
	off := q.NameEnd
	for i := 0; i < h.an+h.ns+h.ar; i++ {
		rr, next, err := readRR(b, off)
		if err != nil {
			return q, ErrTrailing
		}
		off = next
		if rr.typ != TypeOPT {
			continue
		}
		if i < h.an+h.ns || rr.nameLen != 1 {
			return q, ErrTrailing // OPT only in the additional section, with the root name
		}
		if q.EDNS.Present {
			return q, ErrManyOPT
		}
		q.EDNS.read(b, rr)
	}
	return q, nil
}

// header is the rest of the fixed header: the flags and section counts.
type header struct {
	flags          uint16
	qd, an, ns, ar int
}

// readHeader reads the header into q's ID, Opcode and flag fields and
// returns the flags and counts.
func (q *Query) readHeader(b []byte) (header, error) {
	if len(b) < HeaderLen {
		return header{}, ErrShort
	}
	h := header{
		flags: binary.BigEndian.Uint16(b[2:]),
		qd:    int(binary.BigEndian.Uint16(b[4:])),
		an:    int(binary.BigEndian.Uint16(b[6:])),
		ns:    int(binary.BigEndian.Uint16(b[8:])),
		ar:    int(binary.BigEndian.Uint16(b[10:])),
	}
	q.ID = binary.BigEndian.Uint16(b)
	q.Opcode = uint8(h.flags>>11) & 0xF
	q.RD = h.flags&flagRD != 0
	q.CD = h.flags&flagCD != 0
	q.AD = h.flags&flagAD != 0
	return h, nil
}

// readQuestion reads the question right after the header. Its name must
// not be compressed: nothing precedes it to point to.
func (q *Query) readQuestion(b []byte) error {
	end, err := nameEnd(b, HeaderLen, false)
	if err != nil {
		return err
	}
	if end+4 > len(b) {
		return ErrName
	}
	q.Name = b[HeaderLen:end]
	q.Type = binary.BigEndian.Uint16(b[end:])
	q.Class = binary.BigEndian.Uint16(b[end+2:])
	q.NameEnd = end + 4
	return nil
}

// read fills e from the OPT record rr of message b.
func (e *EDNS) read(b []byte, rr rrInfo) {
	*e = EDNS{Present: true, UDPSize: rr.class, Version: uint8(rr.ttl >> 16), DO: rr.ttl&(1<<15) != 0}
	for o := rr.rdata; o+4 <= rr.rdata+int(rr.rdlen); {
		code := binary.BigEndian.Uint16(b[o:])
		n := int(binary.BigEndian.Uint16(b[o+2:]))
		if code == 12 {
			e.Padding = true
		}
		o += 4 + n
	}
}

// LowerName appends the question name, lower-cased, in wire format.
func (q *Query) LowerName(dst []byte) []byte {
	return AppendLower(dst, q.Name)
}

// String renders the question for logs: "example.com. A".
func (q *Query) String() string {
	return fmt.Sprintf("%s %d", NameString(q.Name), q.Type)
}

type rrInfo struct {
	nameLen int
	typ     uint16
	class   uint16
	ttl     uint32
	ttlOff  int
	rdata   int
	rdlen   uint16
}

// readRR reads the fixed part of the resource record at off.
func readRR(b []byte, off int) (rrInfo, int, error) {
	var rr rrInfo
	end, err := nameEnd(b, off, true)
	if err != nil {
		return rr, 0, err
	}
	if end+10 > len(b) {
		return rr, 0, ErrTrailing
	}
	rr.nameLen = end - off
	rr.typ = binary.BigEndian.Uint16(b[end:])
	rr.class = binary.BigEndian.Uint16(b[end+2:])
	rr.ttlOff = end + 4
	rr.ttl = binary.BigEndian.Uint32(b[end+4:])
	rr.rdlen = binary.BigEndian.Uint16(b[end+8:])
	rr.rdata = end + 10
	next := rr.rdata + int(rr.rdlen)
	if next > len(b) {
		return rr, 0, ErrTrailing
	}
	return rr, next, nil
}

// nameEnd returns the offset just past the name at off. Compression
// pointers are followed only for validity when allowPtr is set; a
// question name must not be compressed (nothing precedes it).
func nameEnd(b []byte, off int, allowPtr bool) (int, error) {
	total := 0
	for {
		if off >= len(b) {
			return 0, ErrName
		}
		l := int(b[off])
		switch {
		case l == 0:
			if total+1 > MaxName {
				return 0, ErrName
			}
			return off + 1, nil
		case l&0xC0 == 0xC0:
			if !allowPtr || off+2 > len(b) {
				return 0, ErrName
			}
			ptr := int(binary.BigEndian.Uint16(b[off:]) & 0x3FFF)
			if ptr >= off {
				return 0, ErrName
			}
			return off + 2, nil
		case l&0xC0 != 0:
			return 0, ErrName
		}
		total += l + 1
		if total > MaxName {
			return 0, ErrName
		}
		off += l + 1
	}
}

// AppendLower appends the wire-format name with ASCII letters lower-cased.
func AppendLower(dst, name []byte) []byte {
	for i := 0; i < len(name); {
		l := int(name[i])
		dst = append(dst, name[i])
		i++
		for j := 0; j < l && i < len(name); j++ {
			c := name[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
		}
	}
	return dst
}

// NameString renders an uncompressed wire-format name in presentation
// format, lower-cased, with a trailing dot, escaped as miekg/dns escapes
// the names it unpacks: the characters RFC 1035 §5.1 gives a meaning in
// presentation form (. space ' @ ; ( ) " \) as \X, other bytes outside
// printable ASCII as \DDD. So a name read from a device renders as the
// same string as the same name unpacked from an upstream's answer, and
// dns.PackDomainName(NameString(n)) gives n back (lower-cased).
func NameString(name []byte) string {
	var buf [4*MaxName + 1]byte // every octet escaped as \DDD
	return string(AppendName(buf[:0], name))
}

// AppendName appends the presentation form NameString returns.
func AppendName(dst, name []byte) []byte {
	if len(name) <= 1 {
		return append(dst, '.')
	}
	for i := 0; i < len(name); {
		l := int(name[i])
		i++
		if l == 0 {
			break
		}
		for j := 0; j < l && i < len(name); j++ {
			c := name[i]
			i++
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = AppendLabelOctet(dst, c)
		}
		dst = append(dst, '.')
	}
	return dst
}

// AppendLabelOctet appends one octet of a label in presentation form as
// miekg/dns writes the names it unpacks (case kept): the characters RFC
// 1035 §5.1 gives a meaning (. space ' @ ; ( ) " \) as \X, other bytes
// outside printable ASCII as \DDD, the rest as they are.
func AppendLabelOctet(dst []byte, c byte) []byte {
	switch {
	case labelSpecial(c):
		return append(dst, '\\', c)
	case c < ' ' || c > '~':
		return append(dst, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
	}
	return append(dst, c)
}

// labelSpecial reports whether c has a meaning of its own in a name's
// presentation form and is escaped as \c inside a label.
func labelSpecial(c byte) bool {
	switch c {
	case '.', ' ', '\'', '@', ';', '(', ')', '"', '\\':
		return true
	}
	return false
}

// CanonicalName returns the wire form of a presentation-format name
// (escapes resolved, absolute or not) with ASCII letters lower-cased: the
// form in which two names are compared (RFC 4343: labels as octets, ASCII
// case-insensitively). Two renderings of one name, "a\(b.example." and
// "a(b.example.", "a\032b." and "a\ b.", give the same string.
func CanonicalName(name string) (string, error) {
	var buf [MaxName + 1]byte
	if b, ok := appendPlainCanonical(buf[:0], name); ok {
		return string(b), nil
	}
	return packCanonical(name)
}

// appendPlainCanonical appends CanonicalName(name) for a name of plain
// labels (letters, digits, '-', '_', '*'; none empty or over 63 octets;
// at most MaxName octets on the wire), written directly: no escapes to
// resolve. ok is false for any other name (packCanonical's then).
func appendPlainCanonical(dst []byte, name string) ([]byte, bool) {
	if name == "" || name == "." {
		return dst, false
	}
	if name[len(name)-1] != '.' {
		return dst, false // (not absolute: the slow way, which adds the dot)
	}
	start := len(dst)
	for i := 0; i < len(name); {
		j := i
		for ; j < len(name) && name[j] != '.'; j++ {
			switch c := name[j]; {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '*':
			case 'A' <= c && c <= 'Z':
			default:
				return dst[:start], false
			}
		}
		n := j - i
		if n == 0 || n > 63 {
			return dst[:start], false
		}
		dst = append(dst, byte(n))
		for k := i; k < j; k++ {
			c := name[k]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		i = j + 1
	}
	dst = append(dst, 0)
	if len(dst)-start > MaxName {
		return dst[:start], false
	}
	return dst, true
}

// packCanonical is CanonicalName by dns.PackDomainName, for any name.
func packCanonical(name string) (string, error) {
	var buf [MaxName + 1]byte
	if name == "" || name == "." {
		return "\x00", nil
	}
	if !dns.IsFqdn(name) {
		name += "."
	}
	n, err := dns.PackDomainName(name, buf[:], 0, nil, false)
	if err != nil {
		return "", fmt.Errorf("dnswire: name %q: %w", name, err)
	}
	return string(AppendLower(make([]byte, 0, n), buf[:n])), nil
}

// EqualNames reports whether two presentation-format names are the same
// name on the wire (ASCII case-insensitively). Names that do not pack are
// equal only if their strings are equal ignoring case.
func EqualNames(a, b string) bool {
	ca, errA := CanonicalName(a)
	cb, errB := CanonicalName(b)
	if errA != nil || errB != nil {
		return strings.EqualFold(a, b)
	}
	return ca == cb
}

// IsSubName reports whether child, a canonical wire name, is parent (also
// canonical) or below it: a suffix on a label boundary.
func IsSubName(parent, child string) bool {
	for off := 0; off < len(child); off += int(child[off]) + 1 {
		if child[off:] == parent {
			return true
		}
		if child[off] == 0 {
			break
		}
	}
	return false
}
