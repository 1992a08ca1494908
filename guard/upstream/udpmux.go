package upstream

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// udpMux sends each Do53 query from a socket of its own and reads every
// answer on one goroutine (an epoll set of the query sockets, itself
// waited on through Go's netpoller, so the reader is parked like any
// network read and never holds a thread in a blocking syscall), so a miss
// costs no goroutine, timer or netpoller registration of its own:
//
//   - sockets are opened ahead of need by a refill goroutine, each bound
//     to a port drawn with the CSPRNG (RFC 5452 §9.2), and each used for
//     one query only, then closed;
//   - the reader matches what arrives on a socket against the query sent
//     from it (source address and port, ID, question; with 0x20 the exact
//     case) and hands the first match to the waiting query; the socket
//     then stays open for drainWindow so later copies are counted as
//     flood, and anything else as mismatches;
//   - only the reader closes a socket (so its number is never reused while
//     a read may still name it); a query that gives up marks it done.
type udpMux struct {
	u      *udp
	family int
	to     []byte // the upstream's raw sockaddr
	epfd   int
	ep     *os.File        // epfd, for the netpoller
	waitOn *os.File        // what the reader waits on: ep (a test: another file)
	epc    syscall.RawConn // waitOn's
	wake   int             // eventfd in the epoll set: wakes the reader for sockets done

	mu    sync.Mutex
	socks map[int32]*muxSock
	done  []*muxSock // to close at the next sweep
	drain []*muxSock // draining, oldest first
	timed []*muxSock // waiting with a deadline, in the order sent (the pool's deadlines: soonest first)
	// rechecking: the reader's deadline is muxRecheck's (not a drain's
	// or a query's), set with mu held; read by the reader when it fires.
	rechecking atomic.Bool
	waiting    int // sockets whose query waits for its answer

	sends muxSends // queries to send, gathered

	spare    chan int      // sockets opened ahead
	refill   chan struct{} // the refill goroutine should top up spare
	stop     chan struct{}
	closed   atomic.Bool
	inflight sync.WaitGroup // exchanges that hold a socket
	wg       sync.WaitGroup // the reader and refill goroutines

	free sync.Pool // *muxSock let go of by every holder (see muxSock.refs), with its res channel
}

// muxSock is one query's socket.
type muxSock struct {
	fd       int32
	sent     sentQuery
	exact    bool
	res      chan muxResult // the first match, an oversize answer or a case error
	answered bool           // res has been sent; what comes now is drained
	deadline time.Time      // when the reader gives up on the answer (zero: the caller's context only)
	closeAt  time.Time      // when draining ends
	seen     int            // packets read while draining
	// sending: a drain of muxSends is sending from the socket, which is
	// closed (closeLater) when it is done; both guarded by udpMux.mu.
	sending, closeLater bool
	// refs counts the holders of s: the query's exchange until it
	// returns, the socket until closeLocked, the timed list while s is
	// in it. At zero s goes back to udpMux.free for another query (a
	// muxSock and its channel are three allocations a query otherwise).
	refs atomic.Int32
}

// newSock returns a muxSock for a query on fd, held by the exchange and
// the socket (refs 2), from free when one is there.
func (m *udpMux) newSock(fd int, sent sentQuery, exact bool, deadline time.Time) *muxSock {
	s, _ := m.free.Get().(*muxSock)
	if s == nil {
		s = &muxSock{res: make(chan muxResult, 1)}
	}
	s.fd, s.sent, s.exact, s.deadline = int32(fd), sent, exact, deadline
	s.refs.Store(2)
	return s
}

// unref lets go of one hold on s; the last one gives s back to free,
// its channel emptied (a result nobody read) and its state reset.
func (m *udpMux) unref(s *muxSock) {
	if s.refs.Add(-1) != 0 {
		return
	}
	select {
	case <-s.res:
	default:
	}
	res := s.res
	*s = muxSock{res: res}
	m.free.Put(s)
}

type muxResult struct {
	msg *dns.Msg
	err error
}

const (
	muxSpare = 16 // sockets kept open ahead of need
	muxBatch = 32 // epoll events per wait
	// muxRecheck bounds the reader's wait on the netpoller while queries
	// wait for answers (see read).
	muxRecheck = 20 * time.Millisecond
)

var errMuxClosed = errors.New("upstream closed")

// errMuxTimeout is a query past its deadline (exchange's, not its
// context's); it is a deadline exceeded, as the context's would be.
var errMuxTimeout = fmt.Errorf("no answer in time: %w", context.DeadlineExceeded)

func newUDPMux(u *udp) (*udpMux, error) { return newUDPMuxWaiting(u, nil) }

// newUDPMuxWaiting is newUDPMux with the reader waiting on waitOn instead
// of the epoll set when it is not nil: a test's file that never becomes
// readable stands for wake-ups lost on their way to the netpoller.
func newUDPMuxWaiting(u *udp, waitOn *os.File) (*udpMux, error) {
	m := &udpMux{u: u, socks: map[int32]*muxSock{}, spare: make(chan int, muxSpare),
		refill: make(chan struct{}, 1), stop: make(chan struct{})}
	m.sends.m = m
	a := u.ep.Addr.Addr().Unmap()
	if a.Is4() {
		m.family = unix.AF_INET
		var sa unix.RawSockaddrInet4
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], u.ep.Addr.Port())
		sa.Addr = a.As4()
		m.to = unsafe.Slice((*byte)(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
		m.to = append([]byte(nil), m.to...)
	} else {
		m.family = unix.AF_INET6
		var sa unix.RawSockaddrInet6
		sa.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], u.ep.Addr.Port())
		sa.Addr = a.As16()
		m.to = unsafe.Slice((*byte)(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
		m.to = append([]byte(nil), m.to...)
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	m.epfd = fd
	if m.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(m.wake)}
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, m.wake, &ev); err != nil {
		unix.Close(m.wake)
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	// An epoll set is readable while it has events: Go's netpoller waits
	// on it like on a socket (os.NewFile registers a non-blocking fd).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(m.wake)
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	m.ep = os.NewFile(uintptr(fd), "udp-epoll")
	m.waitOn = m.ep
	if waitOn != nil {
		m.waitOn = waitOn
	}
	if m.epc, err = m.waitOn.SyscallConn(); err != nil {
		m.ep.Close()
		unix.Close(m.wake)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.read() }()
	go func() { defer m.wg.Done(); m.fill() }()
	// No sockets opened ahead yet: the first query (a one-off lookup's
	// transport may only ever send two) opens its own and starts the
	// refill.
	return m, nil
}

// Close fails the queries waiting, waits for them to let go of their
// sockets, stops both goroutines and closes every socket.
func (m *udpMux) Close() {
	if m.closed.Swap(true) {
		return
	}
	m.mu.Lock()
	for _, s := range m.socks {
		if !s.answered {
			m.answeredLocked(s)
			s.res <- muxResult{err: errMuxClosed}
		}
	}
	m.mu.Unlock()
	m.inflight.Wait()
	close(m.stop)
	// The reader sees stop when it wakes: by the eventfd (readable until
	// the reader reads it), and by a deadline in the past in case that
	// wake-up does not reach it (the reader checks stop before each wait,
	// so a later deadline of its own cannot hide this one).
	m.wakeReader()
	_ = m.waitOn.SetReadDeadline(time.Unix(1, 0))
	m.wg.Wait()
	for len(m.spare) > 0 {
		unix.Close(<-m.spare)
	}
	m.mu.Lock()
	for fd := range m.socks {
		unix.Close(int(fd))
	}
	clear(m.socks)
	m.done, m.drain, m.timed, m.waiting = nil, nil, nil, 0
	m.mu.Unlock()
	unix.Close(m.wake)
	m.ep.Close()
}

// wakeReader ends the reader's epoll wait.
func (m *udpMux) wakeReader() {
	one := [8]byte{1}
	_, _ = unix.Write(m.wake, one[:])
}

// fill keeps spare topped up.
func (m *udpMux) fill() {
	for {
		select {
		case <-m.stop:
			return
		case <-m.refill:
		}
		for len(m.spare) < cap(m.spare) {
			fd, err := openRandomPort(m.family)
			if err != nil {
				break // a query opens its own and reports the error
			}
			select {
			case m.spare <- fd:
			case <-m.stop:
				unix.Close(fd)
				return
			}
		}
	}
}

// exchange sends b (the query, sent as sent says) from a fresh socket and
// waits for the answer, ctx or Close. b is not kept: it may be reused as
// soon as exchange returns.
//
// A non-zero deadline is kept by the reader (no timer per query): at the
// deadline the query fails with errMuxTimeout.
func (m *udpMux) exchange(done <-chan struct{}, ctxErr func() error, deadline time.Time, sent sentQuery, b []byte, exact bool) (*dns.Msg, error) {
	if m.closed.Load() {
		return nil, errMuxClosed
	}
	var fd int
	select {
	case fd = <-m.spare:
	default:
		var err error
		if fd, err = openRandomPort(m.family); err != nil {
			return nil, err
		}
	}
	if len(m.spare) <= muxSpare/2 {
		// Topped up in batches: the refill goroutine wakes once for
		// several sockets, not for each query.
		select {
		case m.refill <- struct{}{}:
		default:
		}
	}
	m.mu.Lock()
	if m.closed.Load() {
		m.mu.Unlock()
		unix.Close(fd)
		return nil, errMuxClosed
	}
	s := m.newSock(fd, sent, exact, deadline)
	defer m.unref(s) // after finish, if it is called
	m.inflight.Add(1)
	defer m.inflight.Done()
	m.socks[s.fd] = s
	if !deadline.IsZero() {
		s.refs.Add(1)
		m.timed = append(m.timed, s)
	}
	m.waiting++
	busy := m.waiting > 1 // other queries are out: gather the sends
	if m.waiting == 1 {
		// The reader may be waiting without a deadline: arm the recheck.
		m.rechecking.Store(true)
		_ = m.waitOn.SetReadDeadline(time.Now().Add(muxRecheck))
	}
	m.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: s.fd}
	if err := epollAdd(m.epfd, fd, &ev); err != nil {
		m.finish(s)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	m.u.cfg.counters.Queries.Add(1)
	m.sends.send(s, b, busy) // a failed send fails the query (r.err)
	select {
	case r := <-s.res:
		if r.err != nil {
			m.finish(s)
		}
		return r.msg, r.err
	case <-done:
		m.finish(s)
		return nil, ctxErr()
	}
}

// finish hands s to the reader to close, unless it drains.
func (m *udpMux) finish(s *muxSock) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.answered {
		m.answeredLocked(s)
		s.res <- muxResult{err: errMuxClosed} // nobody reads it; the buffer takes it
	}
	if s.closeAt.IsZero() {
		s.closeAt = time.Now()
		m.done = append(m.done, s)
		if len(m.done) == 1 {
			m.wakeReader()
		}
	}
}

// read is the reader goroutine: it waits on every socket in use and
// closes those done with. It returns only when the mux closes: an error
// it does not expect is counted (ReaderErrors) and the epoll set read
// directly, so that the reader never quits while queries wait.
//
// While queries wait for answers the wait on the netpoller is bounded by
// muxRecheck: should a wake-up of the epoll set ever not reach the
// netpoller, answers wait that long, not until the query times out (the
// upstream is never marked down for it). A recheck that finds answers is
// counted (ReaderLate).
func (m *udpMux) read() {
	c := m.u.cfg.counters
	events := make([]unix.EpollEvent, muxBatch)
	bp := m.u.bufs.Get().(*[]byte)
	defer m.u.bufs.Put(bp)
	buf := *bp
	var from unix.RawSockaddrAny
	var drained [8]byte
	var n int
	var werr error
	wait := func(uintptr) bool {
		n, werr = epollPoll(m.epfd, events)
		return n != 0 || (werr != nil && werr != unix.EINTR)
	}
	for {
		select {
		case <-m.stop:
			return
		default:
		}
		err := m.epc.Read(wait)
		select {
		case <-m.stop:
			return
		default:
		}
		if err != nil {
			block := 0
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
			case errors.Is(err, os.ErrClosed):
				return // closed under us: only Close does that, after stop
			default:
				c.ReaderErrors.Add(1)
				block = 10 // ms: never spin on an error that repeats
			}
			n, werr = unix.EpollWait(m.epfd, events, block)
			if n > 0 && block == 0 && m.rechecking.Load() {
				c.ReaderLate.Add(1) // found by the recheck, not a wake-up
			}
		}
		if werr != nil {
			n = 0
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == m.wake {
				_, _ = unix.Read(m.wake, drained[:])
				continue
			}
			m.mu.Lock()
			s := m.socks[ev.Fd]
			m.mu.Unlock()
			if s == nil {
				continue
			}
			for range muxBatch {
				k, ok, err := recvfrom(int(s.fd), buf, &from)
				if err != nil || !ok {
					break // EAGAIN, or the socket failed: the query times out
				}
				if m.packet(s, buf, k, &from) {
					// The answer: what else is queued (copies) is read
					// when epoll reports the socket again (level-
					// triggered), not with a read that finds nothing.
					break
				}
			}
		}
		m.sweep(time.Now())
	}
}

// packet handles k octets read on s's socket and reports whether they
// were the answer handed to the query.
func (m *udpMux) packet(s *muxSock, buf []byte, k int, from *unix.RawSockaddrAny) (answer bool) {
	c := m.u.cfg.counters
	src, ok := sockaddrAddrPort(from)
	right := ok && sameAddr(src, m.u.ep.Addr)
	m.mu.Lock()
	answered := s.answered
	m.mu.Unlock()
	if answered {
		if _, err := matchSent(s.sent, buf[:k], s.exact); err == nil && right {
			c.Flood.Add(1)
		} else {
			c.Mismatches.Add(1)
		}
		if s.seen++; s.seen >= drainMax {
			m.closeSoon(s)
		}
		return false
	}
	if !right {
		c.Mismatches.Add(1)
		return false
	}
	var r muxResult
	if k == len(buf) {
		r.err = errOversize
	} else {
		r.msg, r.err = matchSent(s.sent, buf[:k], s.exact)
		if r.err != nil { // (a *CaseError target declared outside would be allocated per answer)
			if ce := (*CaseError)(nil); !errors.As(r.err, &ce) {
				c.Mismatches.Add(1)
				return false
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.answered {
		answer = true
		m.answeredLocked(s)
		s.res <- r
		if r.err == nil {
			// keep it open a while to count copies, if few are
			if len(m.drain) < drainers {
				s.closeAt = time.Now().Add(drainWindow)
				m.drain = append(m.drain, s)
			} else {
				s.closeAt = time.Now()
				m.done = append(m.done, s)
			}
		}
	}
	return answer
}

// answeredLocked marks s answered (m.mu held): what arrives now drains.
func (m *udpMux) answeredLocked(s *muxSock) {
	s.answered = true
	m.waiting--
}

// closeSoon stops reading s (drained enough); it is closed when its
// drain window ends.
func (m *udpMux) closeSoon(s *muxSock) {
	_ = unix.EpollCtl(m.epfd, unix.EPOLL_CTL_DEL, int(s.fd), nil)
}

// sweep closes the sockets done with and those whose drain is over, and
// sets the reader's deadline: when the next drain ends, or muxRecheck
// from now if that is sooner and queries wait for answers. The deadline
// is set with mu held, so that a query beginning to wait (exchange arms
// the recheck then) and the reader never undo each other's.
func (m *udpMux) sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.done {
		m.closeLocked(s)
	}
	clear(m.done)
	m.done = m.done[:0]
	i := 0
	for ; i < len(m.drain) && !m.drain[i].closeAt.After(now); i++ {
		m.closeLocked(m.drain[i])
	}
	if i > 0 {
		k := copy(m.drain, m.drain[i:])
		clear(m.drain[k:])
		m.drain = m.drain[:k]
	}
	// Queries past their deadline fail (exchange then hands the socket
	// back through finish); those answered meanwhile leave the list.
	i = 0
	for ; i < len(m.timed); i++ {
		s := m.timed[i]
		if s.answered {
			continue
		}
		if s.deadline.After(now) {
			break
		}
		m.answeredLocked(s)
		s.res <- muxResult{err: errMuxTimeout}
	}
	for _, s := range m.timed[:i] {
		m.unref(s)
	}
	if i > 0 {
		k := copy(m.timed, m.timed[i:])
		clear(m.timed[k:])
		m.timed = m.timed[:k]
	}
	if len(m.timed) > m.waiting+64 {
		// Answered queries behind an unanswered one: let go of them now,
		// not when the one in front times out.
		m.timed = slices.DeleteFunc(m.timed, func(s *muxSock) bool {
			if !s.answered {
				return false
			}
			m.unref(s) // (s may be reset by it: answered is not read after)
			return true
		})
	}
	var next time.Time // zero: none
	if len(m.drain) > 0 {
		next = m.drain[0].closeAt
	}
	if len(m.timed) > 0 {
		if d := m.timed[0].deadline; next.IsZero() || d.Before(next) {
			next = d
		}
	}
	recheck := false
	if m.waiting > 0 {
		if r := now.Add(muxRecheck); next.IsZero() || r.Before(next) {
			next, recheck = r, true
		}
	}
	m.rechecking.Store(recheck)
	_ = m.waitOn.SetReadDeadline(next)
}

func (m *udpMux) closeLocked(s *muxSock) {
	if m.socks[s.fd] != s {
		return
	}
	if s.sending {
		s.closeLater = true // muxSends.Write hands it back when sent
		return
	}
	delete(m.socks, s.fd)
	closeFD(int(s.fd)) // also leaves the epoll set
	m.unref(s)
}

// openRandomPort opens a non-blocking UDP socket of family on a port from
// 1024-65535 drawn with the CSPRNG (RFC 5452 §9.2), retrying on ports in
// use; after portTries it lets the kernel pick an ephemeral port, which
// Linux also randomises.
func openRandomPort(family int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, fmt.Errorf("open socket: %w", e)
	}
	fd := int(r)
	var rnd [2 * portTries]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		unix.Close(fd)
		return -1, err
	}
	var lastErr error
	for i := range portTries {
		// 64512 ports: a draw of 16 bits folded onto them is biased by
		// under 2^-16 per port, far below what an attacker can use.
		port := 1024 + int(binary.BigEndian.Uint16(rnd[2*i:]))%(65536-1024)
		if err := bindPort(fd, family, port); err == nil {
			return fd, nil
		} else if !errors.Is(err, unix.EADDRINUSE) && !errors.Is(err, unix.EACCES) {
			unix.Close(fd)
			return -1, fmt.Errorf("open socket: %w", err)
		} else {
			lastErr = err
		}
	}
	if err := bindPort(fd, family, 0); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("open socket: %w (random ports: %v)", err, lastErr)
	}
	return fd, nil
}

// bindPort binds fd to the wildcard address and port (raw sockaddrs on
// the stack: unix.Bind's Sockaddr values escape, one allocation a socket).
func bindPort(fd, family, port int) error {
	var sa unsafe.Pointer
	var n uintptr
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	if family == unix.AF_INET {
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], uint16(port))
		sa, n = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	} else {
		sa6.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa6.Port))[:], uint16(port))
		sa, n = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	}
	if _, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(sa), n); e != 0 {
		return e
	}
	return nil
}

// The syscalls made for every query (socket, bind, epoll_ctl, sendto,
// the reader's epoll_pwait with no timeout, recvfrom, close) never
// block: the sockets are non-blocking, and a UDP socket closes at once.
// They are made with RawSyscall, which skips the scheduler's syscall
// entry and exit and with it the wake-up of the runtime's monitor thread
// (sysmon) that the entry makes whenever that thread sleeps because
// every P was idle, as between queries at a trickle (see guard/listen's
// batch.go: a futex wake-up, a nanosleep and a futex wait more a
// syscall).

// epollAdd adds fd to the epoll set epfd.
func epollAdd(epfd, fd int, ev *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// epollPoll takes the events ready in epfd without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// closeFD closes a query's socket.
func closeFD(fd int) { _, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

func sendto(fd int, b, to []byte) error {
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
			uintptr(unsafe.Pointer(&to[0])), uintptr(len(to)))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

// recvfrom reads one datagram; ok is false when none is waiting.
func recvfrom(fd int, buf []byte, from *unix.RawSockaddrAny) (n int, ok bool, err error) {
	for {
		l := uint32(unix.SizeofSockaddrAny)
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0,
			uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(&l)))
		switch e {
		case 0:
			return int(r), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, false, nil
		default:
			return 0, false, e
		}
	}
}

// sockaddrAddrPort reads the address a datagram came from.
func sockaddrAddrPort(sa *unix.RawSockaddrAny) (netip.AddrPort, bool) {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port), true
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr), port), true
	}
	return netip.AddrPort{}, false
}
