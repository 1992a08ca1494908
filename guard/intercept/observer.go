package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Observer reads the packets the table logs to its NFLOG group and hands
// each parsed packet to a function.
type Observer struct {
	c       *netlink.Conn
	cancel  context.CancelFunc
	done    chan struct{} // closed when the reader has returned
	log     *slog.Logger
	dropped atomic.Uint64 // packets the kernel could not queue to us (ENOBUFS)
	bad     atomic.Uint64 // packets that did not parse
}

// Observe starts reading NFLOG group in the network namespace netns (0:
// the current one) and calls handle for each packet, from one goroutine,
// until ctx is done or Close is called.
func Observe(ctx context.Context, group uint16, netns int, handle func(Packet), log *slog.Logger) (*Observer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Binding the group while the table already logs traffic can read a
	// logged packet where the kernel's acknowledgement was expected
	// ("mismatched sequence in netlink reply"): a restart under load hits
	// it. A fresh socket a moment later binds; only repeated failures are
	// an error.
	var err error
	for attempt := 1; attempt <= bindAttempts; attempt++ {
		var o *Observer
		if o, err = observe(ctx, group, netns, handle, log); err == nil {
			return o, nil
		}
		log.Debug("nflog: bind failed, retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	return nil, err
}

// bindAttempts bounds the tries to bind the NFLOG group at start.
const bindAttempts = 5

func observe(ctx context.Context, group uint16, netns int, handle func(Packet), log *slog.Logger) (*Observer, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("intercept: nflog group %d: %w", group, err)
	}
	if err := bindNFLog(c, group); err != nil {
		c.Close()
		return nil, fmt.Errorf("intercept: nflog group %d: %w", group, err)
	}
	// The kernel drops what does not fit; we count it instead of failing.
	if err := c.SetOption(netlink.NoENOBUFS, true); err != nil {
		log.Debug("nflog: NoENOBUFS not set", "err", err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("intercept: nflog group %d: %w", group, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	o := &Observer{c: c, cancel: cancel, done: make(chan struct{}), log: log}
	// A deadline in the past ends the blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	go func() {
		defer close(o.done)
		defer stop()
		o.read(ctx, rc, handle)
	}()
	return o, nil
}

// nflogBuffer is the receive buffer: a logged packet is at most a
// 64 KiB IP packet plus the message's headers and attributes; a larger
// one is truncated and counted as not parsed.
const nflogBuffer = 64<<10 + 512

// read receives logged packets until ctx ends or the socket fails: each
// datagram read with one read(2) into one buffer, every message in it
// parsed in place.
func (o *Observer) read(ctx context.Context, rc syscall.RawConn, handle func(Packet)) {
	buf := make([]byte, nflogBuffer)
	onMessage := func(typ uint16, data []byte) {
		if typ != unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket {
			return // NLMSG_DONE, an error or an ack out of turn
		}
		l, err := parseLogged(data)
		if err != nil {
			o.bad.Add(1)
			return
		}
		p, err := ParsePacket(kindOf(l.prefix), l.mac, l.payload)
		if err != nil {
			o.bad.Add(1)
			return
		}
		handle(p)
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			// RawSyscall: the socket never blocks, and a read that
			// entered the scheduler's syscall hooks woke the runtime's
			// monitor thread (sysmon, asleep while every P is idle)
			// for every logged packet, as listen's reads once did.
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			n, rerr = int(r), nil
			if e != 0 {
				rerr = e
			}
			return e != unix.EAGAIN
		})
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && rerr == nil:
		case err == nil && errors.Is(rerr, unix.ENOBUFS):
			o.dropped.Add(1)
			continue
		case err == nil && errors.Is(rerr, unix.EINTR):
			continue
		default:
			o.log.Error("nflog: receive failed; observer stopped", "err", errors.Join(err, rerr))
			return
		}
		// A datagram larger than buf was truncated: its message's length
		// is then more than was read, and it is counted as not parsed.
		if err := nflogMessages(buf[:n], onMessage); err != nil {
			o.bad.Add(1)
		}
	}
}

// Dropped is how many receive overruns the observer has seen.
func (o *Observer) Dropped() uint64 { return o.dropped.Load() }

// Unparsed is how many logged packets could not be read.
func (o *Observer) Unparsed() uint64 { return o.bad.Load() }

// Close stops the observer and waits for its reader.
func (o *Observer) Close() error {
	o.cancel()
	<-o.done
	return o.c.Close()
}

// kindOf is the Kind a rule's log prefix names (NUL-terminated), without
// allocating for the table's own kinds.
func kindOf(prefix []byte) Kind {
	b := bytes.TrimRight(prefix, "\x00 ")
	for _, k := range []Kind{KindDNS, KindDoT, KindDoQ, KindDoH} {
		if string(b) == string(k) {
			return k
		}
	}
	return Kind(b)
}
