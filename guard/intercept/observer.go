package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	nflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Observer reads the packets the table logs to its NFLOG group and hands
// each parsed packet to a function.
type Observer struct {
	nf      *nflog.Nflog
	cancel  context.CancelFunc
	log     *slog.Logger
	dropped atomic.Uint64 // packets the kernel could not queue to us (ENOBUFS)
	bad     atomic.Uint64 // packets that did not parse
}

// Observe starts reading NFLOG group in the network namespace netns (0:
// the current one) and calls handle for each packet, from one goroutine,
// until ctx is done or Close is called.
func Observe(ctx context.Context, group uint16, netns int, handle func(Packet), log *slog.Logger) (*Observer, error) {
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
	nf, err := nflog.Open(&nflog.Config{
		Group:    group,
		Copymode: nflog.CopyPacket,
		QThresh:  1, // hand over each packet at once
		NetNS:    netns,
	})
	if err != nil {
		return nil, fmt.Errorf("intercept: nflog group %d: %w", group, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	o := &Observer{nf: nf, cancel: cancel, log: log}
	// The kernel drops what does not fit; we count it instead of failing.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		log.Debug("nflog: NoENOBUFS not set", "err", err)
	}
	hook := func(a nflog.Attribute) int {
		if a.Payload == nil || a.Prefix == nil {
			return 0
		}
		var mac []byte
		if a.HwAddr != nil {
			mac = *a.HwAddr
		}
		p, err := ParsePacket(Kind(strings.TrimRight(*a.Prefix, "\x00 ")), mac, *a.Payload)
		if err != nil {
			o.bad.Add(1)
			return 0
		}
		handle(p)
		return 0
	}
	onErr := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		var op *netlink.OpError
		if errors.As(err, &op) && (op.Timeout() || errors.Is(op.Err, unix.ENOBUFS)) {
			o.dropped.Add(1)
			return 0
		}
		if errors.Is(err, unix.ENOBUFS) {
			o.dropped.Add(1)
			return 0
		}
		if errors.Is(err, net.ErrClosed) {
			return 1
		}
		log.Error("nflog: receive failed; observer stopped", "err", err)
		return 1
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		cancel()
		nf.Close()
		return nil, fmt.Errorf("intercept: nflog group %d: %w", group, err)
	}
	return o, nil
}

// Dropped is how many receive overruns the observer has seen.
func (o *Observer) Dropped() uint64 { return o.dropped.Load() }

// Unparsed is how many logged packets could not be read.
func (o *Observer) Unparsed() uint64 { return o.bad.Load() }

// Close stops the observer.
func (o *Observer) Close() error {
	o.cancel() // the library waits for its reader, which waits for this
	return o.nf.Close()
}
