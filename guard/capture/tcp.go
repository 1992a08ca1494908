package capture

import (
	"encoding/binary"
	"net/netip"
)

// Limits of the TCP reassembler: memory stays below about
// MaxStreams*(64 KiB + MaxPending segments) whatever the capture holds.
const (
	MaxStreams  = 1024
	MaxPending  = 4 // out-of-order segments held per stream
	maxMessage  = 2 + 65535
	maxSegment  = 65535
	idleEvictNs = 120e9 // streams idle this long are dropped first when full
)

// FlowKey names one direction of a TCP connection.
type FlowKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// TCPStats counts what the reassembler had to give up on.
type TCPStats struct {
	Messages int // DNS messages delivered
	Gaps     int // holes never filled: the stream was resynchronised
	Evicted  int // streams dropped to stay within MaxStreams
}

type stream struct {
	next    uint32 // next expected sequence number
	synced  bool
	buf     []byte // bytes received in order, not yet delivered
	pending []segment
	last    int64 // capture time of the last segment
}

type segment struct {
	seq  uint32
	data []byte
}

// Reassembler turns TCP segments of DNS connections (RFC 1035 §4.2.2: each
// message prefixed by a two-byte length) into DNS messages, in order:
// several messages in one segment, one message across segments,
// retransmissions and overlaps trimmed, out-of-order segments held briefly.
type Reassembler struct {
	streams map[FlowKey]*stream
	Stats   TCPStats
}

// NewReassembler returns an empty reassembler.
func NewReassembler() *Reassembler {
	return &Reassembler{streams: make(map[FlowKey]*stream)}
}

// Streams is the number of streams currently tracked.
func (r *Reassembler) Streams() int { return len(r.streams) }

// Feed adds one TCP segment (f.Proto == ProtoTCP) seen at time t (ns) and
// calls emit for every DNS message it completes. The message passed to
// emit is only valid during the call.
func (r *Reassembler) Feed(f *Frame, t int64, emit func(msg []byte)) {
	key := FlowKey{f.Src, f.Dst, f.SrcPort, f.DstPort}
	s := r.streams[key]
	if f.Flags&TCPRst != 0 {
		delete(r.streams, key)
		return
	}
	if s == nil {
		if len(f.Payload) == 0 && f.Flags&TCPSyn == 0 {
			return
		}
		if len(r.streams) >= MaxStreams {
			r.evict(t)
		}
		s = &stream{}
		r.streams[key] = s
	}
	s.last = t
	seq := f.Seq
	if f.Flags&TCPSyn != 0 {
		s.next, s.synced, s.buf, s.pending = seq+1, true, s.buf[:0], nil
		seq++
	}
	if len(f.Payload) > 0 {
		if !s.synced { // joined mid-connection: assume a message starts here
			s.next, s.synced = seq, true
		}
		r.add(s, seq, f.Payload, emit)
	}
	if f.Flags&TCPFin != 0 {
		delete(r.streams, key)
	}
}

func (r *Reassembler) add(s *stream, seq uint32, data []byte, emit func([]byte)) {
	if len(data) > maxSegment {
		data = data[:maxSegment]
	}
	d := int32(seq - s.next)
	switch {
	case d < 0: // retransmission or overlap: keep only what is new
		old := int(-d)
		if old >= len(data) {
			return
		}
		data = data[old:]
	case d > 0: // a hole: hold the segment until the hole is filled
		if len(s.pending) < MaxPending {
			s.pending = append(s.pending, segment{seq, append([]byte(nil), data...)})
			return
		}
		// Too many holes: give up on the missing bytes and restart here.
		r.Stats.Gaps++
		s.buf, s.pending = s.buf[:0], nil
		s.next = seq
	}
	s.buf = append(s.buf, data...)
	s.next += uint32(len(data))
	for progress := true; progress && len(s.pending) > 0; {
		progress = false
		for i := 0; i < len(s.pending); i++ {
			p := s.pending[i]
			d := int32(p.seq - s.next)
			if d > 0 {
				continue
			}
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			i--
			if old := int(-d); old < len(p.data) {
				s.buf = append(s.buf, p.data[old:]...)
				s.next += uint32(len(p.data) - old)
				progress = true
			}
		}
	}
	r.deliver(s, emit)
}

func (r *Reassembler) deliver(s *stream, emit func([]byte)) {
	b := s.buf
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			break
		}
		if n > 0 {
			r.Stats.Messages++
			emit(b[2 : 2+n])
		}
		b = b[2+n:]
	}
	// Keep the incomplete rest at the front of the buffer.
	s.buf = s.buf[:copy(s.buf, b)]
	if cap(s.buf) > 4*maxMessage && len(s.buf) < maxMessage {
		s.buf = append([]byte(nil), s.buf...)
	}
}

// evict drops idle streams, or half of them when none is idle.
func (r *Reassembler) evict(now int64) {
	for k, s := range r.streams {
		if now-s.last > idleEvictNs {
			delete(r.streams, k)
			r.Stats.Evicted++
		}
	}
	if len(r.streams) < MaxStreams {
		return
	}
	for k := range r.streams {
		if len(r.streams) < MaxStreams/2 {
			break
		}
		delete(r.streams, k)
		r.Stats.Evicted++
	}
}
