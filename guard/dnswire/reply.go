package dnswire

import (
	"encoding/binary"
	"fmt"

	"github.com/miekg/dns"
)

// Limits of what the guard sends to devices over UDP.
const (
	NoEDNSSize   = 512  // RFC 1035 §2.3.4
	MaxEDNSSize  = 1232 // DNS Flag Day 2020, RFC 9715 App. A
	OurEDNSSize  = 1232 // what the guard advertises in its OPT
	EDEOption    = 15   // RFC 8914
	BADVERSRcode = 16   // RFC 6891 §9
)

// EDE is an Extended DNS Error (RFC 8914).
type EDE struct {
	Code uint16
	Text string
}

// Extended DNS Error codes the guard uses (RFC 8914 §4).
const (
	EDEOther          = 0
	EDEStaleAnswer    = 3
	EDEForgedAnswer   = 4
	EDEDNSSECBogus    = 6
	EDECachedError    = 13
	EDENotReady       = 14
	EDEBlocked        = 15
	EDECensored       = 16
	EDEFiltered       = 17
	EDEProhibited     = 18
	EDEStaleNXDOMAIN  = 19
	EDENotSupported   = 21
	EDENoReachableAut = 22
	EDENetworkError   = 23
	EDEInvalidData    = 24
)

// Reply is an answer in stored form: one packed message with exactly one
// question, no OPT record, and the offsets of every TTL in it. A cache hit
// turns it into a device's answer by copying and patching (ID, question
// case, TTLs, OPT), with no message building.
type Reply struct {
	Msg  []byte
	TTLs []uint16 // offsets of the TTL fields of every record
	// Per answer, not stored: set by whoever returns the Reply.
	Age      uint32 // seconds since the stored TTLs were valid
	FixedTTL uint32 // if non-zero, every TTL is written as this (stale answers)
	ExtRcode uint8  // upper 8 bits of a 12-bit rcode, carried in the OPT
	EDE      *EDE
}

// Rcode is the 4-bit header rcode of the stored message.
func (r *Reply) Rcode() int { return int(r.Msg[3] & 0xF) }

// MinTTL returns the smallest TTL in the stored message, and false if it has
// no records.
func (r *Reply) MinTTL() (uint32, bool) {
	if len(r.TTLs) == 0 {
		return 0, false
	}
	m := ^uint32(0)
	for _, o := range r.TTLs {
		m = min(m, binary.BigEndian.Uint32(r.Msg[o:]))
	}
	return m, true
}

// With returns a shallow copy carrying per-answer settings; the stored
// bytes are shared, never written.
func (r *Reply) With(age, fixedTTL uint32, ede *EDE) *Reply {
	c := *r
	c.Age, c.FixedTTL, c.EDE = age, fixedTTL, ede
	return &c
}

// FromMsg packs m into stored form. OPT records are dropped (RFC 6891 §7:
// never cached or forwarded); m is not modified.
func FromMsg(m *dns.Msg) (*Reply, error) {
	if len(m.Question) != 1 {
		return nil, fmt.Errorf("dnswire: stored reply needs one question, has %d", len(m.Question))
	}
	c := *m
	c.Extra = nil
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != TypeOPT {
			c.Extra = append(c.Extra, rr)
		}
	}
	c.Compress = true
	rcode := c.Rcode
	if rcode > 0xF {
		c.Rcode = rcode & 0xF
	}
	// The everyday messages packed here (appendStored, into room on the
	// stack, then copied to a buffer of their size: the cache keeps it),
	// anything else by miekg/dns.
	var room [512]byte
	var b []byte
	if w, ok := appendStored(room[:0], &c); ok {
		b = append([]byte(nil), w...)
	} else {
		var err error
		if b, err = c.Pack(); err != nil {
			return nil, fmt.Errorf("dnswire: pack reply: %w", err)
		}
	}
	r, err := FromWire(b)
	if err != nil {
		return nil, err
	}
	r.ExtRcode = uint8(rcode >> 4)
	return r, nil
}

// replyTTLRoom is how many TTL offsets FromWire keeps in its Reply's own
// allocation (most answers have a record or a few).
const replyTTLRoom = 4

// FromWire indexes a packed message that has one question and no OPT.
func FromWire(b []byte) (*Reply, error) {
	if len(b) < HeaderLen || binary.BigEndian.Uint16(b[4:]) != 1 {
		return nil, fmt.Errorf("dnswire: stored reply needs a header and one question")
	}
	end, err := nameEnd(b, HeaderLen, false)
	if err != nil || end+4 > len(b) {
		return nil, fmt.Errorf("dnswire: stored reply question: %w", ErrName)
	}
	n := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	var r *Reply
	if n <= replyTTLRoom {
		// The Reply and its TTL offsets in one allocation.
		x := new(struct {
			r    Reply
			ttls [replyTTLRoom]uint16
		})
		r = &x.r
		r.Msg, r.TTLs = b, x.ttls[:0:n]
	} else {
		r = &Reply{Msg: b, TTLs: make([]uint16, 0, n)}
	}
	off := end + 4
	for i := 0; i < n; i++ {
		rr, next, err := readRR(b, off)
		if err != nil {
			return nil, fmt.Errorf("dnswire: stored reply record %d: %w", i, err)
		}
		if rr.typ == TypeOPT {
			return nil, fmt.Errorf("dnswire: stored reply must not hold an OPT record")
		}
		if rr.ttlOff > 0xFFFF {
			return nil, fmt.Errorf("dnswire: stored reply too large")
		}
		r.TTLs = append(r.TTLs, uint16(rr.ttlOff))
		off = next
	}
	if off != len(b) {
		return nil, fmt.Errorf("dnswire: %d trailing bytes after stored reply", len(b)-off)
	}
	return r, nil
}

// SizeLimit is the largest UDP answer a device can take: 512 without
// EDNS, its advertised size (at least 512) capped at 1232 with EDNS.
// Over TCP the limit is the 16-bit length.
func SizeLimit(q *Query, tcp bool) int {
	switch {
	case tcp:
		return 0xFFFF
	case !q.EDNS.Present:
		return NoEDNSSize
	}
	return min(max(int(q.EDNS.UDPSize), NoEDNSSize), MaxEDNSSize)
}

// AppendResponse appends the device's answer to dst: the stored reply with
// the device's ID, RD and CD bits and question case, TTLs aged, an OPT
// record only if the query had one (with the EDE, if any), and truncated
// with TC=1 if it does not fit limit.
func AppendResponse(dst []byte, q *Query, r *Reply, limit int) []byte {
	start := len(dst)
	dst = append(dst, r.Msg...)
	out := dst[start:]
	binary.BigEndian.PutUint16(out, q.ID)
	flags := binary.BigEndian.Uint16(out[2:])
	flags &^= flagTC | flagRD | flagCD | flagAA | flagRA
	flags |= flagQR
	if q.Opcode == 0 { // recursion is offered for QUERY only
		flags |= flagRA
	}
	if q.RD {
		flags |= flagRD
	}
	if q.CD {
		flags |= flagCD
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	if HeaderLen+len(q.Name) <= len(out) {
		copy(out[HeaderLen:], q.Name) // same name, the device's own case
	}
	for _, o := range r.TTLs {
		ttl := binary.BigEndian.Uint32(out[o:])
		switch {
		case r.FixedTTL != 0:
			ttl = r.FixedTTL
		case ttl > r.Age:
			ttl -= r.Age
		default:
			ttl = 0
		}
		binary.BigEndian.PutUint32(out[o:], ttl)
	}
	if q.EDNS.Present {
		dst = appendOPT(dst, start, q, r)
	}
	if len(dst)-start <= limit {
		return dst
	}
	// Does not fit: header and question only, TC=1 (RFC 1035 §4.2.1,
	// RFC 6891 §7); the device retries over TCP.
	qend := HeaderLen + len(q.Name) + 4
	dst = dst[:start+qend]
	out = dst[start:]
	out[2] |= flagTC >> 8
	binary.BigEndian.PutUint16(out[6:], 0)
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], 0)
	if q.EDNS.Present {
		dst = appendOPT(dst, start, q, r)
	}
	return dst
}

// appendOPT appends the guard's OPT record and counts it in ARCOUNT.
func appendOPT(dst []byte, start int, q *Query, r *Reply) []byte {
	var ttl uint32 = uint32(r.ExtRcode) << 24
	if q.EDNS.DO {
		ttl |= 1 << 15
	}
	rdlen := 0
	if r.EDE != nil {
		rdlen = 4 + 2 + len(r.EDE.Text)
	}
	dst = append(dst, 0, 0, TypeOPT, byte(OurEDNSSize>>8), byte(OurEDNSSize&0xFF))
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	dst = binary.BigEndian.AppendUint16(dst, uint16(rdlen))
	if r.EDE != nil {
		dst = binary.BigEndian.AppendUint16(dst, EDEOption)
		dst = binary.BigEndian.AppendUint16(dst, uint16(2+len(r.EDE.Text)))
		dst = binary.BigEndian.AppendUint16(dst, r.EDE.Code)
		dst = append(dst, r.EDE.Text...)
	}
	out := dst[start:]
	binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	return dst
}

// AppendError appends a bare error answer (FORMERR, NOTIMP, SERVFAIL...)
// to a message that may not have parsed: the ID and opcode are echoed, and
// the question too when q holds one. RA is set only for opcode QUERY, the
// only one for which recursion is offered. It never includes an OPT record.
func AppendError(dst []byte, raw []byte, q *Query, rcode int) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, HeaderLen)...)
	out := dst[start:]
	if len(raw) >= 4 {
		copy(out, raw[:4])
	}
	out[2] = out[2]&0x78 | byte(flagQR>>8) | out[2]&byte(flagRD>>8) // keep opcode and RD
	out[3] = byte(rcode & 0xF)
	if out[2]&0x78 == 0 { // opcode QUERY
		out[3] |= byte(flagRA)
	}
	if q != nil && q.NameEnd > 0 && q.NameEnd <= len(raw) {
		dst = append(dst, raw[HeaderLen:q.NameEnd]...)
		binary.BigEndian.PutUint16(dst[start+4:], 1)
	}
	return dst
}

// MaxEDEText bounds the EXTRA-TEXT of an Extended DNS Error the guard
// sends, in octets.
const MaxEDEText = 128

// EDEText makes text an upstream wrote fit to relay to a device and to
// log: octets outside printable ASCII (control characters, escapes, bytes
// of UTF-8 sequences) each become '?', and the result is cut to
// MaxEDEText octets.
func EDEText(s string) string {
	n := min(len(s), MaxEDEText)
	clean := true
	for i := range n {
		if s[i] < ' ' || s[i] > '~' {
			clean = false
			break
		}
	}
	if clean {
		return s[:n]
	}
	b := make([]byte, n)
	for i := range n {
		c := s[i]
		if c < ' ' || c > '~' {
			c = '?'
		}
		b[i] = c
	}
	return string(b)
}
