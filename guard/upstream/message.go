package upstream

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
)

// Message sizes and policies for upstream queries.
const (
	ednsSize   = 1232 // advertised upstream, DNS Flag Day 2020 (RFC 9715 App. A)
	padBlock   = 128  // query padding block, RFC 8467 §4.1
	maxMessage = 65535
)

// Errors a response can be dropped for (RFC 5452 §9.1).
var (
	ErrMismatch  = errors.New("response does not match the query")
	ErrMalformed = errors.New("malformed response")
)

// CaseError is a response that matches its 0x20 query in everything but
// the case of the name. It is not used as it is: the pool asks again
// without 0x20 and compares (see Pool). It is an ErrMismatch.
type CaseError struct {
	Msg       *dns.Msg // the response as it came
	Sent, Got string   // the question name sent and the one echoed
}

func (e *CaseError) Error() string {
	return fmt.Sprintf("%v: name %q in another case than sent %q (0x20)", ErrMismatch, e.Got, e.Sent)
}

func (e *CaseError) Unwrap() error { return ErrMismatch }

// randomID returns a transaction ID from the CSPRNG (RFC 5452 §9.2).
func randomID() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return binary.BigEndian.Uint16(b[:])
}

// prepare copies the caller's query and sets what goes on the wire: the
// ID, an OPT owned by the root advertising ednsSize (keeping the DO bit
// the caller asked for), and padding to the next multiple of padBlock when pad is set
// (RFC 7830 and RFC 8467 §4.1; never on cleartext, RFC 7830 §6).
func prepare(q *dns.Msg, id uint16, pad bool) *dns.Msg {
	m := q.Copy()
	m.Id = id
	m.Response = false
	opt := m.IsEdns0()
	if opt == nil {
		m.SetEdns0(ednsSize, false)
		opt = m.IsEdns0()
	}
	opt.Hdr.Name = "." // the OPT's owner is the root (RFC 6891 §6.1.2), whatever a device sent
	opt.SetUDPSize(ednsSize)
	opt.Option = withoutPadding(opt.Option)
	if pad {
		p := &dns.EDNS0_PADDING{}
		opt.Option = append(opt.Option, p) // last option, RFC 8467 §3
		// The empty option already counts its 4 octets in Len.
		if n := m.Len() % padBlock; n != 0 {
			p.Padding = make([]byte, padBlock-n)
		}
	}
	return m
}

// pack packs a prepared query. Queries are packed uncompressed, so the
// padding prepare computed from Len is exact.
func pack(m *dns.Msg) ([]byte, error) {
	b, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	return b, nil
}

// appendQuery appends to dst the wire form of q as prepare and pack make
// it for id and pad (the same octets), without copying q: the header,
// question and other additional records are packed from a shallow copy
// that leaves out q's OPT, and the OPT (ednsSize, q's DO bit and EDNS
// version, padding to the next multiple of padBlock when pad is set) is
// written after them. q is only read. A query whose OPT carries options
// other than padding, or that has more than one OPT, goes through prepare
// and pack.
func appendQuery(dst []byte, q *dns.Msg, id uint16, pad bool) ([]byte, error) {
	var opt *dns.OPT
	extra := q.Extra
	for i, rr := range q.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok {
			continue
		}
		if opt != nil || i != len(q.Extra)-1 || q.Rcode > 0xF || !onlyPadding(o.Option) {
			return appendSlow(dst, q, id, pad)
		}
		opt, extra = o, q.Extra[:i]
	}
	m := *q
	m.Id, m.Response, m.Compress, m.Extra = id, false, false, extra
	start := len(dst)
	room := dst[start:cap(dst)]
	b, err := m.PackBuffer(room)
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if len(room) > 0 && len(b) > 0 && &b[0] == &room[0] {
		dst = dst[:start+len(b)] // packed in place
	} else {
		dst = append(dst, b...)
	}
	// The OPT: root name, TYPE, CLASS = UDP size, TTL = extended RCODE
	// (0 for a query), version and flags, RDLENGTH, options.
	var ttl uint32
	if opt != nil {
		ttl = opt.Hdr.Ttl & 0x00FFFFFF
	}
	size := len(dst) - start + 11
	rdlen := 0
	if pad {
		size += 4
		rdlen = 4 + (padBlock-size%padBlock)%padBlock
	}
	dst = append(dst, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(ednsSize>>8), byte(ednsSize&0xFF),
		byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl), byte(rdlen>>8), byte(rdlen))
	if pad {
		n := rdlen - 4
		dst = append(dst, byte(dns.EDNS0PADDING>>8), byte(dns.EDNS0PADDING&0xFF), byte(n>>8), byte(n))
		dst = append(dst, make([]byte, n)...) // RFC 7830 §3: octets of 0x00 (appended in place, no allocation)
	}
	if len(dst)-start > maxMessage {
		return nil, fmt.Errorf("pack query: %d octets", len(dst)-start)
	}
	ar := binary.BigEndian.Uint16(dst[start+10:]) + 1
	binary.BigEndian.PutUint16(dst[start+10:], ar)
	return dst, nil
}

// queryRoom is the room a query buffer starts with: a long name, its
// OPT and padding to the next block, with a TCP length prefix.
const queryRoom = 2 + 3*padBlock

// queryBufs pools the buffers queries are written into (appendQuery),
// each taken for one query and given back once it is sent.
type queryBufs struct{ pool sync.Pool }

func (p *queryBufs) get() *[]byte {
	if bp, ok := p.pool.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, queryRoom)
	return &b
}

// put gives bp back, holding b as last written into it (nil: nothing was
// written, the buffer is as it was); one grown past 4*queryRoom by a
// rare long query is let go rather than kept.
func (p *queryBufs) put(bp *[]byte, b []byte) {
	if b == nil {
		b = *bp
	}
	if cap(b) <= 4*queryRoom {
		*bp = b[:0]
		p.pool.Put(bp)
	}
}

// appendSlow is appendQuery by prepare and pack.
func appendSlow(dst []byte, q *dns.Msg, id uint16, pad bool) ([]byte, error) {
	b, err := pack(prepare(q, id, pad))
	if err != nil {
		return nil, err
	}
	return append(dst, b...), nil
}

func onlyPadding(opts []dns.EDNS0) bool {
	for _, o := range opts {
		if o.Option() != dns.EDNS0PADDING {
			return false
		}
	}
	return true
}

func withoutPadding(opts []dns.EDNS0) []dns.EDNS0 {
	out := opts[:0:0]
	for _, o := range opts {
		if o.Option() != dns.EDNS0PADDING {
			out = append(out, o)
		}
	}
	return out
}

// trimPadding cuts a Padding option off the end of wire, in place: when
// the message's last record is its OPT and the OPT's last option is
// Padding, that option goes (RDLENGTH is lowered) and the shorter message
// is returned; otherwise wire as it is. Padding is for the encrypted hop
// only (stripPadding drops it after unpacking anyway): cut before
// unpacking, it costs nothing to unpack. Anything it cannot walk is left
// for Unpack to judge.
func trimPadding(wire []byte) []byte {
	if len(wire) < 12 || binary.BigEndian.Uint16(wire[10:]) == 0 {
		return wire
	}
	off := 12
	for range binary.BigEndian.Uint16(wire[4:]) { // questions
		if off = skipName(wire, off); off < 0 || off+4 > len(wire) {
			return wire
		}
		off += 4
	}
	rrs := int(binary.BigEndian.Uint16(wire[6:])) + int(binary.BigEndian.Uint16(wire[8:])) + int(binary.BigEndian.Uint16(wire[10:]))
	last := -1 // where the last record's TYPE starts
	for range rrs {
		if off = skipName(wire, off); off < 0 || off+10 > len(wire) {
			return wire
		}
		last = off
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
		if off > len(wire) {
			return wire
		}
	}
	if off != len(wire) || last < 0 || binary.BigEndian.Uint16(wire[last:]) != dns.TypeOPT {
		return wire
	}
	rdata := last + 10
	for o := rdata; o+4 <= off; {
		next := o + 4 + int(binary.BigEndian.Uint16(wire[o+2:]))
		if next == off && binary.BigEndian.Uint16(wire[o:]) == dns.EDNS0PADDING {
			binary.BigEndian.PutUint16(wire[last+8:], uint16(o-rdata))
			return wire[:o]
		}
		o = next
	}
	return wire
}

// skipName returns the offset after the name at off in wire, or -1.
func skipName(wire []byte, off int) int {
	for off < len(wire) {
		switch l := int(wire[off]); {
		case l == 0:
			return off + 1
		case l&0xC0 == 0xC0:
			if off+2 > len(wire) {
				return -1
			}
			return off + 2
		case l&0xC0 != 0:
			return -1
		default:
			off += 1 + l
		}
	}
	return -1
}

// stripPadding removes Padding options from a response: they are for the
// encrypted hop only and never go back to a device.
func stripPadding(m *dns.Msg) {
	if opt := m.IsEdns0(); opt != nil {
		opt.Option = withoutPadding(opt.Option)
	}
}

// randomizeCase applies 0x20 randomisation: each letter of name gets a
// random case from the CSPRNG.
func randomizeCase(name string) string {
	b := []byte(name)
	bits := make([]byte, (len(b)+7)/8)
	_, _ = rand.Read(bits)
	for i, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			if bits[i/8]&(1<<(i%8)) != 0 {
				b[i] = c ^ 0x20
			} else {
				b[i] = c | 0x20
			}
		}
	}
	return string(b)
}

// match decides whether wire is the answer to sent: a response with the
// same ID and one question with the same type, class and name, the name
// compared octet for octet when exactCase (0x20 in use) and ignoring ASCII
// case otherwise (RFC 5452 §9.1). The source address is the caller's to
// check. An answer without the question is rejected: nothing ties it to
// the query.
func match(sent *dns.Msg, wire []byte, exactCase bool) (*dns.Msg, error) {
	return matchSent(sentOf(sent, sent.Id), wire, exactCase)
}

// sentQuery is what an answer is matched against: the ID, opcode and
// question sent (nq: how many questions; an answer matches only one).
type sentQuery struct {
	id       uint16
	opcode   int
	nq       int
	question dns.Question
}

// sentOf is what q, sent with id, is matched on.
func sentOf(q *dns.Msg, id uint16) sentQuery {
	s := sentQuery{id: id, opcode: q.Opcode, nq: len(q.Question)}
	if s.nq > 0 {
		s.question = q.Question[0]
	}
	return s
}

// matchSent is match against what was sent.
func matchSent(sent sentQuery, wire []byte, exactCase bool) (*dns.Msg, error) {
	if len(wire) < 12 {
		return nil, fmt.Errorf("%w: %d octets", ErrMalformed, len(wire))
	}
	if id := binary.BigEndian.Uint16(wire); id != sent.id {
		return nil, fmt.Errorf("%w: ID %d, sent %d", ErrMismatch, id, sent.id)
	}
	m, ok := unpackSent(sent, wire)
	if !ok {
		m = new(dns.Msg)
		if err := m.Unpack(wire); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	if err := matchSentMsg(sent, m, exactCase); err != nil {
		var ce *CaseError
		if errors.As(err, &ce) {
			ce.Msg = m
		}
		return nil, err
	}
	return m, nil
}

// answerRoom is how many records an answer unpacked by unpackSent keeps
// in its message's allocation (an address or two, a CNAME, the OPT).
const answerRoom = 6

// answerNameRoom is the room for the names an answer unpacked by
// unpackSent spells out (an SOA's, a CNAME's target), in its allocation.
const answerNameRoom = 128

// answerMsg is an answer unpacked by unpackSent: the message, its
// question, room for its records and the octets of the names unpacked
// (each name's string points into names, or into a longer buffer that
// took over when it was full; neither is written again under a string),
// in one allocation.
type answerMsg struct {
	m     dns.Msg
	q     [1]dns.Question
	rrs   [answerRoom]dns.RR
	names [answerNameRoom]byte
}

// unpackSent unpacks wire as dns.Msg.Unpack does (the same message, the
// same tolerance of counts larger than the records there), for the
// everyday answer: one question whose name is, octet for octet, the name
// sent (so also in the case sent). The question then holds sent's name
// string (the same name on the wire) instead of one unpacked, and the
// message, question and up to answerRoom records share one allocation
// (miekg's Unpack makes four and the name). ok is false for anything
// else, or a record that does not unpack: the caller unpacks with Unpack
// then, which judges it as always.
func unpackSent(sent sentQuery, wire []byte) (*dns.Msg, bool) {
	if len(wire) < 12 || binary.BigEndian.Uint16(wire[4:]) != 1 || sent.nq != 1 {
		return nil, false
	}
	var name [256]byte
	n, err := dns.PackDomainName(sent.question.Name, name[:], 0, nil, false)
	if err != nil || 12+n+4 > len(wire) || string(wire[12:12+n]) != string(name[:n]) {
		return nil, false
	}
	a := new(answerMsg)
	m := &a.m
	flags := binary.BigEndian.Uint16(wire[2:])
	m.Id = binary.BigEndian.Uint16(wire)
	m.Response = flags&(1<<15) != 0
	m.Opcode = int(flags>>11) & 0xF
	m.Authoritative = flags&(1<<10) != 0
	m.Truncated = flags&(1<<9) != 0
	m.RecursionDesired = flags&(1<<8) != 0
	m.RecursionAvailable = flags&(1<<7) != 0
	m.Zero = flags&(1<<6) != 0
	m.AuthenticatedData = flags&(1<<5) != 0
	m.CheckingDisabled = flags&(1<<4) != 0
	m.Rcode = int(flags & 0xF)
	off := 12 + n
	a.q[0] = dns.Question{Name: sent.question.Name, Qtype: binary.BigEndian.Uint16(wire[off:]), Qclass: binary.BigEndian.Uint16(wire[off+2:])}
	m.Question = a.q[:]
	off += 4
	room := a.rrs[:]
	arena := a.names[:0]
	for i, sec := range [3]*[]dns.RR{&m.Answer, &m.Ns, &m.Extra} {
		count := int(binary.BigEndian.Uint16(wire[6+2*i:]))
		var dst []dns.RR
		if count <= len(room) {
			dst, room = room[:0:count], room[count:]
		}
		for range count {
			if off == len(wire) { // the count was a lie (Unpack stops there too)
				break
			}
			rr, next, err := unpackRR(wire, off, name[:n], sent.question.Name, &arena)
			if err != nil {
				return nil, false
			}
			off = next
			dst = append(dst, rr)
		}
		if len(dst) > 0 {
			*sec = dst
		}
	}
	if opt := m.IsEdns0(); opt != nil {
		m.Rcode |= opt.ExtendedRcode()
	}
	return m, true
}

// unpackRR is dns.UnpackRR at off (not at the end of wire), but for an
// owner that is the question's name (a pointer to it, or its octets:
// qname), whose string is then qstring, not one unpacked, and the names
// it spells out, which go into arena (unpackName).
func unpackRR(wire []byte, off int, qname []byte, qstring string, arena *[]byte) (dns.RR, int, error) {
	var h dns.RR_Header
	switch {
	case off+2 <= len(wire) && wire[off] == 0xC0 && wire[off+1] == 12:
		h.Name, off = qstring, off+2
	case off+len(qname) <= len(wire) && string(wire[off:off+len(qname)]) == string(qname):
		h.Name, off = qstring, off+len(qname)
	default:
		var ok bool
		if h.Name, off, ok = unpackName(wire, off, arena); !ok {
			return nil, len(wire), ErrMalformed
		}
	}
	if off+10 > len(wire) {
		return nil, len(wire), ErrMalformed
	}
	h.Rrtype = binary.BigEndian.Uint16(wire[off:])
	h.Class = binary.BigEndian.Uint16(wire[off+2:])
	h.Ttl = binary.BigEndian.Uint32(wire[off+4:])
	h.Rdlength = binary.BigEndian.Uint16(wire[off+8:])
	off += 10
	end := off + int(h.Rdlength)
	if end > len(wire) {
		return nil, len(wire), ErrMalformed
	}
	// The record's data is read no further than its end, as UnpackRR
	// does. The everyday records are built here as miekg builds them, in
	// one allocation (UnpackRRWithHeader also allocates the header it
	// was given, and A and AAAA their address apart).
	wire = wire[:end]
	switch {
	case h.Rdlength == 0: // no data (an OPT without options): the bare record
		if newRR, ok := dns.TypeToRR[h.Rrtype]; ok {
			rr := newRR()
			*rr.Header() = h
			return rr, off, nil
		}
	case h.Rrtype == dns.TypeA && h.Rdlength == net.IPv4len:
		a := new(struct {
			rr dns.A
			ip [net.IPv4len]byte
		})
		a.rr.Hdr = h
		copy(a.ip[:], wire[off:end])
		a.rr.A = a.ip[:]
		return &a.rr, end, nil
	case h.Rrtype == dns.TypeAAAA && h.Rdlength == net.IPv6len:
		a := new(struct {
			rr dns.AAAA
			ip [net.IPv6len]byte
		})
		a.rr.Hdr = h
		copy(a.ip[:], wire[off:end])
		a.rr.AAAA = a.ip[:]
		return &a.rr, end, nil
	case h.Rrtype == dns.TypeCNAME:
		if t, o, ok := unpackName(wire, off, arena); ok && o == end {
			return &dns.CNAME{Hdr: h, Target: t}, end, nil
		}
	case h.Rrtype == dns.TypeSOA:
		ns, o, ok := unpackName(wire, off, arena)
		if !ok || o == end {
			break
		}
		mbox, o, ok := unpackName(wire, o, arena)
		if !ok || o+20 != end {
			break // (what Unpack makes of odd ones: below)
		}
		return &dns.SOA{Hdr: h, Ns: ns, Mbox: mbox,
			Serial: binary.BigEndian.Uint32(wire[o:]), Refresh: binary.BigEndian.Uint32(wire[o+4:]),
			Retry: binary.BigEndian.Uint32(wire[o+8:]), Expire: binary.BigEndian.Uint32(wire[o+12:]),
			Minttl: binary.BigEndian.Uint32(wire[o+16:])}, end, nil
	}
	return dns.UnpackRRWithHeader(h, wire, off)
}

// unpackName is dns.UnpackDomainName (the same string, the same offset,
// the same names refused: ok false), its string's octets appended to
// arena instead of a string allocated for each name.
func unpackName(wire []byte, off int, arena *[]byte) (name string, next int, ok bool) {
	const (
		maxWire     = 255               // miekg's maxDomainNameWireOctets
		maxPointers = (maxWire+1)/2 - 2 // and maxCompressionPointers
	)
	start := len(*arena)
	s := *arena
	budget := maxWire
	ptr, after := 0, 0
	for {
		if off >= len(wire) {
			return "", len(wire), false
		}
		c := int(wire[off])
		off++
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if ptr == 0 {
					after = off
				}
				*arena = s
				if len(s) == start {
					return ".", after, true
				}
				return unsafe.String(&s[start], len(s)-start), after, true
			}
			if off+c > len(wire) {
				return "", len(wire), false
			}
			if budget -= c + 1; budget <= 0 {
				return "", len(wire), false
			}
			for _, b := range wire[off : off+c] {
				s = dnswire.AppendLabelOctet(s, b)
			}
			s = append(s, '.')
			off += c
		case 0xC0:
			if off >= len(wire) {
				return "", len(wire), false
			}
			c1 := wire[off]
			off++
			if ptr == 0 {
				after = off
			}
			if ptr++; ptr > maxPointers {
				return "", len(wire), false
			}
			off = (c^0xC0)<<8 | int(c1)
		default: // 0x40 and 0x80 are reserved
			return "", len(wire), false
		}
	}
}

// matchSentMsg is matchSent on an unpacked message.
func matchSentMsg(sent sentQuery, m *dns.Msg, exactCase bool) error {
	switch {
	case !m.Response:
		return fmt.Errorf("%w: not a response", ErrMismatch)
	case m.Id != sent.id:
		return fmt.Errorf("%w: ID %d, sent %d", ErrMismatch, m.Id, sent.id)
	case m.Opcode != sent.opcode:
		return fmt.Errorf("%w: opcode %d", ErrMismatch, m.Opcode)
	case len(m.Question) != 1 || sent.nq != 1:
		return fmt.Errorf("%w: %d questions", ErrMismatch, len(m.Question))
	}
	got, want := m.Question[0], sent.question
	if got.Qtype != want.Qtype || got.Qclass != want.Qclass {
		return fmt.Errorf("%w: question %s %s, sent %s %s", ErrMismatch,
			dns.ClassToString[got.Qclass], dns.TypeToString[got.Qtype],
			dns.ClassToString[want.Qclass], dns.TypeToString[want.Qtype])
	}
	if !sameName(got.Name, want.Name, exactCase) {
		if exactCase && sameName(got.Name, want.Name, false) {
			return &CaseError{Sent: want.Name, Got: got.Name}
		}
		return fmt.Errorf("%w: name %q, sent %q", ErrMismatch, got.Name, want.Name)
	}
	return nil
}

// sameAnswer reports whether two answers to one question say the same:
// the same rcode and the same answer records, compared without regard to
// their order, TTLs or the case of names (the 0x20 fallback's check).
func sameAnswer(a, b *dns.Msg) bool {
	if a.Rcode != b.Rcode || len(a.Answer) != len(b.Answer) {
		return false
	}
	return slices.Equal(canonicalRRs(a.Answer), canonicalRRs(b.Answer))
}

func canonicalRRs(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Ttl = 0
		out[i] = strings.ToLower(c.String())
	}
	slices.Sort(out)
	return out
}

// sameName compares two names in presentation form as the wire has them:
// labels as octets, so that "a\\032b." and "a\\ b." (one label "a b") are
// the same name. ASCII letters compare without case unless exactCase (0x20
// in use: the upstream must echo the case it was sent). A name that does
// not pack matches nothing.
func sameName(a, b string, exactCase bool) bool {
	if a == b {
		return true
	}
	var ab, bb [256]byte
	an, err := dns.PackDomainName(a, ab[:], 0, nil, false)
	if err != nil {
		return false
	}
	bn, err := dns.PackDomainName(b, bb[:], 0, nil, false)
	if err != nil || an != bn {
		return false
	}
	if exactCase {
		return ab == bb
	}
	// Length octets are below 64, so folding ASCII letters over the whole
	// wire form never touches them.
	for i := range an {
		if lowerASCII(ab[i]) != lowerASCII(bb[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// restoreName gives the response the question name the caller asked,
// in the caller's spelling: the question, and owner names that are the
// same name on the wire (whatever their case or escapes), so that 0x20
// case and the upstream's presentation of odd octets are undone.
func restoreName(m *dns.Msg, name string) {
	sent := m.Question[0].Name
	m.Question[0].Name = name
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Name != name && (h.Name == sent || sameName(h.Name, name, false)) {
				h.Name = name
			}
		}
	}
}
