package device

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Neighbours is the kernel's neighbour table (ARP and NDP) as seen through
// netlink, kept current from its updates, plus the router's own addresses
// (to tell a device's hard-coded resolver from the router itself) and
// which interfaces are the LAN.
type Neighbours struct {
	log    *slog.Logger
	lan    map[string]bool // interface names; empty: every interface
	onGone func(mac string)

	mu      sync.RWMutex
	byIP    map[netip.Addr]string // IP -> MAC
	local   map[netip.Addr]int    // router address -> interface index
	lanIdx  map[int]bool          // interface indexes known to be LAN
	notLAN  map[int]bool          // interface indexes known not to be
	lanNets []netip.Prefix

	done chan struct{} // closed when follow returns

	learned broadcast // a neighbour's MAC became known
	addrs   broadcast // the router's addresses or the LAN prefixes changed

	// Applied counts the neighbour, address and link updates taken in
	// (those listed at the start included).
	Applied Signal
}

// WatchNeighbours starts following the neighbour table and interface
// addresses until ctx is done. onGone (may be nil) is called with the MAC
// of each neighbour that disappears or fails (a device leaving or
// rebooting).
func WatchNeighbours(ctx context.Context, lan []string, onGone func(mac string), log *slog.Logger) (*Neighbours, error) {
	n := &Neighbours{
		log:    log,
		lan:    map[string]bool{},
		onGone: onGone,
		byIP:   map[netip.Addr]string{},
		local:  map[netip.Addr]int{},
		lanIdx: map[int]bool{},
	}
	for _, name := range lan {
		n.lan[name] = true
		l, err := net.InterfaceByName(name)
		if err != nil {
			// At boot the guard may start before netifd makes br-lan:
			// the interface counts as LAN once netlink says it exists
			// (RTM_NEWLINK, in order with its addresses).
			log.Warn("LAN interface not present yet; its devices are served once it appears", "interface", name, "err", err)
			continue
		}
		n.lanIdx[l.Index] = true
	}
	// The first subscriptions list what exists, so the table is complete
	// before the first query is identified.
	sub, err := n.subscribe(ctx)
	if err != nil {
		return nil, err
	}
	n.drainInitial(sub)
	n.done = make(chan struct{})
	go n.follow(ctx, sub)
	return n, nil
}

// Wait returns once the watch started by WatchNeighbours has stopped (its
// context done) and its netlink sockets are closed.
func (n *Neighbours) Wait() { <-n.done }

// subscription is one netlink subscription (neighbours and addresses);
// stop ends it and waits until its reader has closed both channels.
type subscription struct {
	neigh  chan neighUpdate
	addr   chan addrUpdate
	cancel context.CancelFunc
}

func (s *subscription) stop() {
	s.cancel()
	for range s.neigh { // the reader closes both once its socket is closed
	}
	for range s.addr {
	}
}

func (n *Neighbours) subscribe(ctx context.Context) (*subscription, error) {
	sctx, cancel := context.WithCancel(ctx)
	sub := &subscription{neigh: make(chan neighUpdate, 256), addr: make(chan addrUpdate, 64), cancel: cancel}
	errf := func(err error) { n.subscriptionError(sctx, err) }
	if err := rtnlSubscribe(sctx, sub.neigh, sub.addr, errf); err != nil {
		cancel()
		return nil, fmt.Errorf("device: neighbour and address updates: %w", err)
	}
	return sub, nil
}

// subscriptionError logs what the netlink reader reports, except the
// error it gets when its socket is closed at a clean stop. (Messages from
// other processes' netlink sockets, which vishvananda/netlink reported as
// "Wrong sender portid" (its issue 786), are not errors here: the reader
// keeps neighbour and address updates only.)
func (n *Neighbours) subscriptionError(ctx context.Context, err error) {
	if quiet, why := benignNetlinkError(ctx, err); quiet {
		n.log.Debug("netlink subscription", "err", err, "ignored", why)
		return
	}
	n.log.Warn("netlink subscription", "err", err)
}

func benignNetlinkError(ctx context.Context, err error) (bool, string) {
	switch {
	case ctx.Err() != nil:
		return true, "subscription stopping"
	}
	return false, ""
}

// drainInitial applies the listed entries, waiting briefly for the dump.
func (n *Neighbours) drainInitial(sub *subscription) {
	quiet := time.NewTimer(200 * time.Millisecond)
	defer quiet.Stop()
	for {
		select {
		case u, ok := <-sub.neigh:
			if !ok {
				return
			}
			n.applyNeigh(u)
		case u, ok := <-sub.addr:
			if !ok {
				return
			}
			n.applyAddr(u)
		case <-quiet.C:
			return
		}
		quiet.Reset(50 * time.Millisecond)
	}
}

func (n *Neighbours) follow(ctx context.Context, sub *subscription) {
	defer close(n.done)
	for {
		select {
		case <-ctx.Done():
			sub.stop()
			return
		case u, ok := <-sub.neigh:
			if ok {
				n.applyNeigh(u)
				continue
			}
		case u, ok := <-sub.addr:
			if ok {
				n.applyAddr(u)
				continue
			}
		}
		sub.stop()
		if ctx.Err() != nil {
			return
		}
		// A subscription ended on a socket error (logged above; an
		// overflowing socket buffer, ENOBUFS, is the usual one): start
		// both again, listing what exists so nothing is missed.
		n.log.Info("netlink subscription ended; resubscribing")
		for {
			var err error
			if sub, err = n.subscribe(ctx); err == nil {
				break
			}
			n.log.Error("netlink resubscribe", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (n *Neighbours) applyNeigh(u neighUpdate) {
	defer n.Applied.add()
	ip := u.ip
	gone := u.del || u.state&(unix.NUD_FAILED|unix.NUD_INCOMPLETE) != 0
	n.mu.Lock()
	if len(n.lan) > 0 && !n.isLANLocked(u.linkIndex) {
		n.mu.Unlock()
		return
	}
	old, had := n.byIP[ip]
	learned := false
	if gone {
		delete(n.byIP, ip)
	} else if len(u.mac) == 6 {
		mac := u.mac.String()
		learned = old != mac
		n.byIP[ip] = mac
	}
	n.mu.Unlock()
	if learned {
		n.learned.Fire()
	}
	if gone && had && n.onGone != nil {
		n.onGone(old)
	}
}

func (n *Neighbours) applyAddr(u addrUpdate) {
	defer n.Applied.add() // after the lock is released
	ip := u.ip
	pfx := netip.PrefixFrom(ip, u.bits).Masked()
	n.mu.Lock()
	defer n.mu.Unlock()
	defer n.addrs.Fire()
	if u.link {
		n.applyLinkLocked(u)
		return
	}
	if !u.del {
		n.local[ip] = u.linkIndex
	} else {
		delete(n.local, ip)
	}
	if len(n.lan) == 0 || !n.isLANLocked(u.linkIndex) {
		return
	}
	nets := n.lanNets[:0:0]
	for _, p := range n.lanNets {
		if p != pfx {
			nets = append(nets, p)
		}
	}
	if !u.del {
		nets = append(nets, pfx)
	}
	n.lanNets = nets
}

// isLANLocked reports whether the interface with index idx is one of the
// LAN interfaces. n.mu is held.
func (n *Neighbours) isLANLocked(idx int) bool { return n.lanIdx[idx] }

// applyLinkLocked follows an interface made, renamed or removed: a LAN
// interface made after the start (br-lan at boot) counts from then on.
func (n *Neighbours) applyLinkLocked(u addrUpdate) {
	was := n.lanIdx[u.linkIndex]
	is := !u.del && n.lan[u.name]
	switch {
	case is && !was:
		n.lanIdx[u.linkIndex] = true
		n.log.Info("LAN interface present", "interface", u.name, "index", u.linkIndex)
	case !is && was:
		delete(n.lanIdx, u.linkIndex)
		n.log.Info("LAN interface gone", "interface", u.name, "index", u.linkIndex)
	}
}

// Addresses returns the router's own addresses, the LAN interfaces'
// prefixes and their indexes, as they stand.
func (n *Neighbours) Addresses() (local []netip.Addr, lanNets []netip.Prefix, lanIdx []int) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for a := range n.local {
		local = append(local, a)
	}
	for i := range n.lanIdx {
		lanIdx = append(lanIdx, i)
	}
	return local, slices.Clone(n.lanNets), lanIdx
}

// AddressesChanged returns a channel closed at the next change of the
// router's addresses or the LAN prefixes.
func (n *Neighbours) AddressesChanged() <-chan struct{} { return n.addrs.C() }

// Learned returns a channel closed the next time a neighbour's MAC
// becomes known.
func (n *Neighbours) Learned() <-chan struct{} { return n.learned.C() }

// MAC returns the MAC address of the neighbour at ip.
func (n *Neighbours) MAC(ip netip.Addr) (string, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	mac, ok := n.byIP[ip.Unmap().WithZone("")]
	return mac, ok
}

// IPs returns the neighbour addresses of a MAC.
func (n *Neighbours) IPs(mac string) []netip.Addr {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []netip.Addr
	for ip, m := range n.byIP {
		if m == mac {
			out = append(out, ip)
		}
	}
	return out
}

// IsLocal reports whether ip is one of the router's own addresses.
func (n *Neighbours) IsLocal(ip netip.Addr) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	_, ok := n.local[ip.Unmap().WithZone("")]
	return ok
}

// OnLAN reports whether ip is inside a LAN interface's prefix (every
// address is, when no LAN interface was given).
func (n *Neighbours) OnLAN(ip netip.Addr) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if len(n.lan) == 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	if ip.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range n.lanNets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// macString normalises a MAC for use as a device ID.
func macString(b []byte) string {
	if len(b) != 6 {
		return ""
	}
	return net.HardwareAddr(b).String()
}
