package listen

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP queries are read and answered in batches: one recvmmsg takes up to
// batchSize queries, each with its own source address and (on a wildcard
// socket) its own IP_PKTINFO / IPV6_PKTINFO, and one sendmmsg sends the
// answers, each from the address its query was sent to. Under load a
// cache hit then costs a fraction of two syscalls; at a trickle a batch
// is one query and costs what recvmsg/sendmsg did.
//
// The mmsghdr arrays, iovecs, address and control buffers are set up once
// per reader and the syscalls are made through bound method values, so
// a batch allocates nothing (x/net's ReadBatch allocates a net.Addr per
// message).
//
// Both calls are made with RawSyscall6, which does not tell the
// scheduler that a syscall begins and ends: they never block
// (MSG_DONTWAIT; the poller does the waiting), and the scheduler's
// syscall entry wakes the runtime's monitor thread (sysmon) whenever it
// sleeps because every P was idle, which at a trickle is before every
// query: a futex wake-up, a 20 us nanosleep and a futex wait more per
// query on the server's core (CPU time of a hit at 2,000 q/s, one core:
// 47 us with them, 27 without; unbound 24).
const batchSize = 8

// mmsghdr is struct mmsghdr: a msghdr and the length the kernel set. Go
// pads the struct to its alignment as C does (64 octets on 64-bit
// platforms, 32 on 32-bit ones).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// sockaddrSize holds a sockaddr_in or a sockaddr_in6.
const sockaddrSize = unix.SizeofSockaddrInet6

// udpBatch is one reader's buffers and the messages of its current
// batch. Only its reader goroutine uses it.
type udpBatch struct {
	rc      syscall.RawConn
	pktinfo bool

	rh    [batchSize]mmsghdr // read side
	riov  [batchSize]unix.Iovec
	names [batchSize][sockaddrSize]byte
	bufs  []byte // batchSize query buffers of maxUDPQuery
	oob   []byte // batchSize control buffers of oobSize
	n     int    // messages read
	want  int    // messages to read at most (1..batchSize)
	rerr  error

	wh     [batchSize]mmsghdr // write side
	wiov   [batchSize]unix.Iovec
	woob   []byte                // batchSize control buffers of oobSize
	queued int                   // answers in wh
	spans  [batchSize][2]int     // answer k is out[spans[k][0]:spans[k][1]]
	slots  [batchSize]int        // answer k goes to the sender of message slots[k]
	srcs   [batchSize]netip.Addr // answer k leaves from srcs[k] (pktinfo)
	ifs    [batchSize]int        // and interface ifs[k] (link-local)
	out    []byte
	w      mmsgOut // sends wh

	recvFn func(fd uintptr) bool

	zoneIdx  uint32 // the last link-local zone named
	zoneName string
}

func newUDPBatch(rc syscall.RawConn, pktinfo bool) *udpBatch {
	b := &udpBatch{rc: rc, pktinfo: pktinfo,
		bufs: make([]byte, batchSize*maxUDPQuery),
		out:  make([]byte, 0, 4096)}
	if pktinfo {
		b.oob = make([]byte, batchSize*oobSize)
		b.woob = make([]byte, batchSize*oobSize)
	}
	for i := range batchSize {
		b.riov[i].Base = &b.bufs[i*maxUDPQuery]
		b.riov[i].SetLen(maxUDPQuery)
		h := &b.rh[i].hdr
		h.Name = &b.names[i][0]
		h.Iov = &b.riov[i]
		h.SetIovlen(1)
		if pktinfo {
			h.Control = &b.oob[i*oobSize]
		}
	}
	b.recvFn = b.recv
	b.w.init(rc, b.wh[:])
	b.want = batchSize
	return b
}

// read waits for at least one query and takes up to batchSize.
func (b *udpBatch) read() (int, error) {
	b.n, b.rerr = 0, nil
	if err := b.rc.Read(b.recvFn); err != nil {
		return 0, err
	}
	return b.n, b.rerr
}

func (b *udpBatch) recv(fd uintptr) bool {
	for i := range b.want {
		h := &b.rh[i].hdr
		h.Namelen = sockaddrSize
		if b.pktinfo {
			h.SetControllen(oobSize)
		}
		h.Flags = 0
		b.rh[i].n = 0
	}
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.rh[0])), uintptr(b.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.n = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		default:
			b.rerr = e
			return true
		}
	}
}

// query returns message i of the batch: its octets, whether it was cut
// short, and its sender.
func (b *udpBatch) query(i int) (raw []byte, cut bool, client netip.AddrPort, scope uint32, ok bool) {
	n := int(b.rh[i].n)
	raw = b.bufs[i*maxUDPQuery : i*maxUDPQuery+n]
	cut = b.rh[i].hdr.Flags&unix.MSG_TRUNC != 0 // the datagram was longer
	client, scope, ok = parseSockaddr(b.names[i][:b.rh[i].hdr.Namelen])
	return raw, cut, client, scope, ok
}

// control returns message i's control message (pktinfo).
func (b *udpBatch) control(i int) []byte {
	return b.oob[i*oobSize : i*oobSize+int(b.rh[i].hdr.Controllen)]
}

// zone names a link-local client's interface, remembering the last one
// (so a query from a link-local client allocates only when its interface
// differs from the last one's).
func (b *udpBatch) zone(scope uint32) string {
	if scope != b.zoneIdx || b.zoneName == "" {
		b.zoneIdx = scope
		if ifi, err := net.InterfaceByIndex(int(scope)); err == nil {
			b.zoneName = ifi.Name
		} else {
			b.zoneName = strconv.FormatUint(uint64(scope), 10)
		}
	}
	return b.zoneName
}

// parseSockaddr reads a sockaddr_in or sockaddr_in6 as the kernel wrote
// it; scope is an IPv6 address's scope (interface) ID.
func parseSockaddr(sa []byte) (ap netip.AddrPort, scope uint32, ok bool) {
	if len(sa) < 2 {
		return netip.AddrPort{}, 0, false
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, 0, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4])), 0, true
	case unix.AF_INET6:
		if len(sa) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, 0, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(sa[8:24])), binary.BigEndian.Uint16(sa[2:4])), binary.NativeEndian.Uint32(sa[24:28]), true
	}
	return netip.AddrPort{}, 0, false
}

// queue records that out[start:end] (appended to b.out by the caller,
// who stored the result in b.out) is the answer to the sender of message
// slot, to leave from src out of ifindex when the socket takes pktinfo.
func (b *udpBatch) queue(slot, start, end int, src netip.Addr, ifindex int) {
	k := b.queued
	b.spans[k] = [2]int{start, end}
	b.slots[k], b.srcs[k], b.ifs[k] = slot, src, ifindex
	b.queued++
}

// flush sends the queued answers with sendmmsg. It reports how many the
// kernel refused (with the last error).
func (b *udpBatch) flush() (failed int, err error) {
	if b.queued == 0 {
		return 0, nil
	}
	for k := range b.queued {
		sp, slot := b.spans[k], b.slots[k]
		b.wiov[k].Base = &b.out[sp[0]]
		b.wiov[k].SetLen(sp[1] - sp[0])
		h := &b.wh[k].hdr
		h.Name = &b.names[slot][0]
		h.Namelen = b.rh[slot].hdr.Namelen
		h.Iov = &b.wiov[k]
		h.SetIovlen(1)
		if b.pktinfo {
			c := appendPktinfo(b.woob[k*oobSize:k*oobSize], b.srcs[k], b.ifs[k])
			h.Control = &c[0]
			h.SetControllen(len(c))
		}
	}
	failed, err = b.w.sendmmsg(b.queued)
	b.queued = 0
	return failed, err
}

// mmsgOut sends messages set up in h with sendmmsg, through the socket's
// RawConn (waiting while it is not writable), with no allocation.
type mmsgOut struct {
	rc      syscall.RawConn
	h       []mmsghdr
	n, sent int // h[:n] to send, h[:sent] done with
	errs    int
	err     error
	fn      func(fd uintptr) bool
	calls   int // sendmmsg calls made (tests count them)
}

func (m *mmsgOut) init(rc syscall.RawConn, h []mmsghdr) {
	m.rc, m.h = rc, h
	m.fn = m.send
}

// sendmmsg sends h[:n]. It reports how many the kernel refused (with the
// last error).
func (m *mmsgOut) sendmmsg(n int) (failed int, err error) {
	m.n, m.sent, m.errs, m.err = n, 0, 0, nil
	if err := m.rc.Write(m.fn); err != nil {
		m.errs, m.err = m.errs+m.n-m.sent, err
	}
	return m.errs, m.err
}

func (m *mmsgOut) send(fd uintptr) bool {
	for m.sent < m.n {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.h[m.sent])), uintptr(m.n-m.sent), unix.MSG_DONTWAIT, 0, 0)
		m.calls++
		switch e {
		case 0:
			m.sent += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // wait until writable
		default:
			// The first message left could not be sent (an address
			// gone, a full queue): skip it, send the others.
			m.errs++
			m.err = e
			m.sent++
		}
	}
	return true
}
