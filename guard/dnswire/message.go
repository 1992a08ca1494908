package dnswire

// Message is what a passive reader takes from any DNS message seen on the
// wire, query or response (the audit of captured traffic): the header,
// the first question, the answer section in brief and the OPT record.
// Unlike ParseQuery, ParseMessage reads responses, more than one
// question, and OPT records it would refuse in a query it answers
// (a name other than the root, more than one: the last one counts, as
// miekg/dns reads it); it still rejects whatever does not walk.
type Message struct {
	Query // ID, Opcode, RD/CD/AD, the first question, the OPT record

	Response  bool
	TC        bool
	Rcode     uint8  // the header's four bits
	Questions int    // the question count (at least 1)
	Answers   int    // records in the answer section
	MinTTL    uint32 // the smallest TTL in the answer section (when Answers > 0)
	// The distinct types of the answer section, the first maxTypes.
	types  [maxTypes]uint16
	nTypes int
}

// maxTypes bounds the distinct answer types a Message keeps.
const maxTypes = 8

// AnswerTypes returns the distinct record types of the answer section in
// the order they first appear (at most eight; a message with more is
// not a device's everyday answer).
func (m *Message) AnswerTypes() []uint16 { return m.types[:m.nTypes] }

// ParseMessage reads b into m. A message without a question is
// ErrQuestions: every query and answer a device exchanges has one.
// m.Name aliases b.
func ParseMessage(b []byte, m *Message) error {
	*m = Message{}
	h, err := m.readHeader(b)
	if err != nil {
		return err
	}
	m.Response = h.flags&flagQR != 0
	m.TC = h.flags&flagTC != 0
	m.Rcode = uint8(h.flags & 0xF)
	m.Questions = h.qd
	if h.qd == 0 {
		return ErrQuestions
	}
	if err := m.readQuestion(b); err != nil {
		return err
	}
	off := m.NameEnd
	for i := 1; i < h.qd; i++ {
		end, err := nameEnd(b, off, true)
		if err != nil {
			return err
		}
		if end+4 > len(b) {
			return ErrName
		}
		off = end + 4
	}
	for i := 0; i < h.an+h.ns+h.ar; i++ {
		rr, next, err := readRR(b, off)
		if err != nil {
			return ErrTrailing
		}
		off = next
		switch {
		case i < h.an:
			if m.Answers == 0 || rr.ttl < m.MinTTL {
				m.MinTTL = rr.ttl
			}
			m.Answers++
			m.addType(rr.typ)
		case i >= h.an+h.ns && rr.typ == TypeOPT:
			m.EDNS.read(b, rr)
		}
	}
	return nil
}

func (m *Message) addType(t uint16) {
	for _, x := range m.types[:m.nTypes] {
		if x == t {
			return
		}
	}
	if m.nTypes < len(m.types) {
		m.types[m.nTypes] = t
		m.nTypes++
	}
}
