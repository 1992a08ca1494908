package listen

import (
	"net/netip"
	"sync"
	"syscall"

	"github.com/dnsguard/dnsguard/guard/stage"
	"golang.org/x/sys/unix"
)

// sendBatch bounds the answers one sendmmsg of a udpSender sends.
const sendBatch = 32

// udpSender writes the answers of a socket's spilled queries, gathered
// (see stage.Gather): a spill worker buffers its answer and the first to
// drain sends it with those of the workers runnable with it (misses whose
// upstream answers came in one read), up to sendBatch a sendmmsg, where
// each sent its own before. A lone answer leaves at once.
type udpSender struct {
	mu                    sync.Mutex
	g                     stage.Gather
	stage.Pieces[udpDest] // the answers (Take, Drop: under mu)
	pktinfo               bool

	// The drain's: the messages of one sendmmsg.
	w    mmsgOut
	hdrs [sendBatch]mmsghdr
	iov  [sendBatch]unix.Iovec
	oob  []byte // sendBatch control buffers of oobSize
}

// udpDest is where an answer goes: the sender's address as the kernel
// gave it (a raw sockaddr, with its IPv6 scope), and on a socket that
// takes pktinfo the address it leaves from and the interface it must
// leave by (see pktinfoIfindex).
type udpDest struct {
	name    [sockaddrSize]byte
	namelen uint32
	src     netip.Addr
	ifindex int
}

func newUDPSender(rc syscall.RawConn, pktinfo bool) *udpSender {
	s := &udpSender{pktinfo: pktinfo}
	if pktinfo {
		s.oob = make([]byte, sendBatch*oobSize)
	}
	s.w.init(rc, s.hdrs[:])
	return s
}

// send sends b to d, with the answers buffered together with it. b is
// copied: the caller may reuse it when send returns.
func (s *udpSender) send(b []byte, d *udpDest) {
	s.mu.Lock()
	s.Add(b, *d)
	_ = s.g.Drain(&s.mu, s) // Write fails no drain: a socket closed fails each write at once
	s.mu.Unlock()
}

// Write sends the answers taken, up to sendBatch a sendmmsg. An answer
// the kernel refuses (an address gone, a full queue) is skipped, as a
// sendmsg that failed was before: the device asks again.
func (s *udpSender) Write() error {
	out, ps := s.Taken()
	for done := 0; done < len(ps); {
		n := min(len(ps)-done, sendBatch)
		for k := range n {
			p := &ps[done+k]
			s.iov[k].Base = &out[p.Start]
			s.iov[k].SetLen(p.End - p.Start)
			h := &s.hdrs[k].hdr
			h.Name = &p.M.name[0]
			h.Namelen = p.M.namelen
			h.Iov = &s.iov[k]
			h.SetIovlen(1)
			if s.pktinfo {
				cm := appendPktinfo(s.oob[k*oobSize:k*oobSize], p.M.src, p.M.ifindex)
				h.Control = &cm[0]
				h.SetControllen(len(cm))
			}
		}
		_, _ = s.w.sendmmsg(n)
		done += n
	}
	return nil
}

// dest is where the answer to message i of the batch goes, from src out
// of ifindex.
func (r *udpReader) dest(i int, src netip.Addr, ifindex int) udpDest {
	return udpDest{name: r.b.names[i], namelen: r.b.rh[i].hdr.Namelen, src: src, ifindex: ifindex}
}
