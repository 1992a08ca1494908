package dnswire

import (
	"encoding/binary"
	"strings"

	"github.com/miekg/dns"
)

// storedNames bounds the name suffixes appendStored remembers for
// compression; a message with more names is packed by miekg/dns.
const storedNames = 32

// nameTable is the compression table of appendStored: name suffixes
// (presentation form, as miekg/dns keys them: case-sensitive) and where
// they were written.
type nameTable struct {
	n    int
	name [storedNames]string
	off  [storedNames]uint16
}

// appendStored appends m packed with compression, as m.Pack would pack it
// (the same message on the wire; the compression may point elsewhere),
// for the messages a stored reply is made of: one question, no OPT, a
// 4-bit rcode, and records of the types it writes itself (A, AAAA, CNAME,
// SOA) with names of plain labels (no escapes). ok is false for any
// other message, which the caller packs with miekg/dns.
func appendStored(dst []byte, m *dns.Msg) (out []byte, ok bool) {
	if len(m.Question) != 1 || m.Rcode < 0 || m.Rcode > 0xF || m.Opcode < 0 || m.Opcode > 0xF {
		return dst, false
	}
	bits := uint16(m.Opcode)<<11 | uint16(m.Rcode)
	for _, f := range []struct {
		on  bool
		bit uint16
	}{{m.Response, 1 << 15}, {m.Authoritative, 1 << 10}, {m.Truncated, 1 << 9}, {m.RecursionDesired, 1 << 8},
		{m.RecursionAvailable, 1 << 7}, {m.Zero, 1 << 6}, {m.AuthenticatedData, 1 << 5}, {m.CheckingDisabled, 1 << 4}} {
		if f.on {
			bits |= f.bit
		}
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, m.Id)
	dst = binary.BigEndian.AppendUint16(dst, bits)
	dst = binary.BigEndian.AppendUint16(dst, 1)
	for _, sec := range [3][]dns.RR{m.Answer, m.Ns, m.Extra} {
		if len(sec) > 0xFFFF {
			return dst[:start], false
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(sec)))
	}
	var t nameTable
	q := m.Question[0]
	if dst, ok = t.appendName(dst, start, q.Name); !ok {
		return dst[:start], false
	}
	dst = binary.BigEndian.AppendUint16(dst, q.Qtype)
	dst = binary.BigEndian.AppendUint16(dst, q.Qclass)
	for _, sec := range [3][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if dst, ok = t.appendRR(dst, start, rr); !ok {
				return dst[:start], false
			}
		}
	}
	if len(dst)-start > 0xFFFF {
		return dst[:start], false
	}
	return dst, true
}

// appendRR appends rr, one of the types appendStored writes.
func (t *nameTable) appendRR(dst []byte, start int, rr dns.RR) ([]byte, bool) {
	h := rr.Header()
	var ok bool
	if dst, ok = t.appendName(dst, start, h.Name); !ok {
		return dst, false
	}
	dst = binary.BigEndian.AppendUint16(dst, h.Rrtype)
	dst = binary.BigEndian.AppendUint16(dst, h.Class)
	dst = binary.BigEndian.AppendUint32(dst, h.Ttl)
	lenAt := len(dst)
	dst = append(dst, 0, 0)
	switch r := rr.(type) {
	case *dns.A:
		if h.Rrtype != dns.TypeA {
			return dst, false
		}
		switch len(r.A) {
		case 4:
			dst = append(dst, r.A...)
		case 16:
			a4 := r.A.To4()
			if a4 == nil {
				return dst, false
			}
			dst = append(dst, a4...)
		default:
			return dst, false
		}
	case *dns.AAAA:
		if h.Rrtype != dns.TypeAAAA || len(r.AAAA) != 16 {
			return dst, false
		}
		dst = append(dst, r.AAAA...)
	case *dns.CNAME:
		if h.Rrtype != dns.TypeCNAME {
			return dst, false
		}
		if dst, ok = t.appendName(dst, start, r.Target); !ok {
			return dst, false
		}
	case *dns.SOA:
		if h.Rrtype != dns.TypeSOA {
			return dst, false
		}
		if dst, ok = t.appendName(dst, start, r.Ns); !ok {
			return dst, false
		}
		if dst, ok = t.appendName(dst, start, r.Mbox); !ok {
			return dst, false
		}
		for _, v := range [5]uint32{r.Serial, r.Refresh, r.Retry, r.Expire, r.Minttl} {
			dst = binary.BigEndian.AppendUint32(dst, v)
		}
	default:
		return dst, false
	}
	n := len(dst) - lenAt - 2
	if n > 0xFFFF {
		return dst, false
	}
	binary.BigEndian.PutUint16(dst[lenAt:], uint16(n))
	return dst, true
}

// appendName appends name (presentation form, absolute, plain labels:
// anything with an escape is left to miekg/dns) compressed against the
// suffixes written before it, and remembers its own suffixes.
func (t *nameTable) appendName(dst []byte, start int, name string) ([]byte, bool) {
	if name == "" || name[len(name)-1] != '.' || strings.IndexByte(name, '\\') >= 0 || len(name) > MaxName {
		return dst, false
	}
	if name == "." {
		return append(dst, 0), true
	}
	wire := 1 // the root's octet
	for i := 0; i < len(name); {
		suffix := name[i:]
		for k := range t.n {
			if t.name[k] == suffix {
				return binary.BigEndian.AppendUint16(dst, 0xC000|t.off[k]), true
			}
		}
		if off := len(dst) - start; off < 0x3FFF && t.n < storedNames {
			t.name[t.n], t.off[t.n] = suffix, uint16(off)
			t.n++
		}
		j := strings.IndexByte(suffix, '.')
		if j <= 0 || j > 63 {
			return dst, false // an empty label, or one too long
		}
		if wire += j + 1; wire > MaxName {
			return dst, false
		}
		dst = append(dst, byte(j))
		dst = append(dst, suffix[:j]...)
		i += j + 1
	}
	return append(dst, 0), true
}
