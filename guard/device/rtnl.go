package device

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The part of rtnetlink the neighbour table needs (RTM_*NEIGH and
// RTM_*ADDR: a dump of what exists, then the changes), on
// mdlayher/netlink, which the guard links anyway for nftables and NFLOG.
// It replaces vishvananda/netlink, whose full link/route/qdisc model was
// about 260 kB of the mipsle binary for these two messages.

// neighUpdate is one neighbour table entry added, changed or deleted.
type neighUpdate struct {
	del       bool // RTM_DELNEIGH
	ip        netip.Addr
	mac       net.HardwareAddr
	state     uint16 // NUD_*
	linkIndex int
}

// addrUpdate is one of the router's addresses added or removed, or (link
// set) an interface made, renamed or removed: interfaces travel with the
// addresses so that an interface is known before its first address.
type addrUpdate struct {
	del       bool // RTM_DELADDR, RTM_DELLINK
	ip        netip.Addr
	bits      int // prefix length
	linkIndex int
	link      bool   // RTM_NEWLINK, RTM_DELLINK
	name      string // the interface's name (link updates)
}

// rtnlSubscribe joins the neighbour and address groups, then lists what
// exists (joined first, so a change during the listing is seen, at worst
// twice), and delivers both on the channels until ctx ends or the socket
// fails (errf is told why); its reader then closes both channels.
func rtnlSubscribe(ctx context.Context, neigh chan<- neighUpdate, addr chan<- addrUpdate, errf func(error)) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	for _, g := range []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR} {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return fmt.Errorf("netlink: join group %d: %w", g, err)
		}
	}
	existing, err := rtnlDump()
	if err != nil {
		c.Close()
		return err
	}
	go func() {
		defer close(neigh)
		defer close(addr)
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() }) // ends a blocked Receive
		defer stop()
		deliver := func(msgs []netlink.Message) bool {
			for _, m := range msgs {
				if !rtnlDeliver(ctx, m, neigh, addr) {
					return false
				}
			}
			return true
		}
		if !deliver(existing) {
			return
		}
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() == nil { // not the close that stops it
					errf(err)
				}
				return
			}
			if !deliver(msgs) {
				return
			}
		}
	}()
	return nil
}

// rtnlDump lists the neighbour table and the addresses (every family) on
// a socket of its own, so the replies are not mixed with group messages.
func rtnlDump() ([]netlink.Message, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer c.Close()
	var out []netlink.Message
	for _, req := range []struct {
		typ  netlink.HeaderType
		body []byte
	}{
		{unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg)}, // interfaces before their addresses
		{unix.RTM_GETNEIGH, make([]byte, unix.SizeofNdMsg)},
		{unix.RTM_GETADDR, make([]byte, unix.SizeofIfAddrmsg)},
	} {
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: req.typ, Flags: netlink.Request | netlink.Dump},
			Data:   req.body, // family AF_UNSPEC: all of them
		})
		if err != nil {
			return nil, fmt.Errorf("netlink: list existing (type %d): %w", req.typ, err)
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// rtnlDeliver parses one message onto its channel; false once ctx is done.
func rtnlDeliver(ctx context.Context, m netlink.Message, neigh chan<- neighUpdate, addr chan<- addrUpdate) bool {
	switch m.Header.Type {
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		u, ok := parseNeigh(m)
		if !ok {
			return true
		}
		select {
		case neigh <- u:
		case <-ctx.Done():
			return false
		}
	case unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_NEWLINK, unix.RTM_DELLINK:
		parse := parseAddr
		if m.Header.Type == unix.RTM_NEWLINK || m.Header.Type == unix.RTM_DELLINK {
			parse = parseLink
		}
		u, ok := parse(m)
		if !ok {
			return true
		}
		select {
		case addr <- u:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// parseNeigh reads a struct ndmsg and its NDA_DST and NDA_LLADDR.
func parseNeigh(m netlink.Message) (neighUpdate, bool) {
	if len(m.Data) < unix.SizeofNdMsg {
		return neighUpdate{}, false
	}
	u := neighUpdate{
		del:       m.Header.Type == unix.RTM_DELNEIGH,
		linkIndex: int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
		state:     binary.NativeEndian.Uint16(m.Data[8:10]),
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofNdMsg:])
	if err != nil {
		return neighUpdate{}, false
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NDA_DST:
			ip, ok := netip.AddrFromSlice(ad.Bytes())
			if !ok {
				return neighUpdate{}, false
			}
			u.ip = ip.Unmap()
		case unix.NDA_LLADDR:
			u.mac = net.HardwareAddr(ad.Bytes())
		}
	}
	return u, ad.Err() == nil && u.ip.IsValid()
}

// parseAddr reads a struct ifaddrmsg and its address: IFA_LOCAL where
// there is one (on a point-to-point link IFA_ADDRESS is the peer's),
// else IFA_ADDRESS.
func parseAddr(m netlink.Message) (addrUpdate, bool) {
	if len(m.Data) < unix.SizeofIfAddrmsg {
		return addrUpdate{}, false
	}
	u := addrUpdate{
		del:       m.Header.Type == unix.RTM_DELADDR,
		bits:      int(m.Data[1]),
		linkIndex: int(binary.NativeEndian.Uint32(m.Data[4:8])),
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfAddrmsg:])
	if err != nil {
		return addrUpdate{}, false
	}
	var address, local netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(ad.Bytes())
		}
	}
	u.ip = address
	if local.IsValid() {
		u.ip = local
	}
	u.ip = u.ip.Unmap()
	return u, ad.Err() == nil && u.ip.IsValid() && u.bits <= u.ip.BitLen()
}

// parseLink reads a struct ifinfomsg and its IFLA_IFNAME.
func parseLink(m netlink.Message) (addrUpdate, bool) {
	if len(m.Data) < unix.SizeofIfInfomsg {
		return addrUpdate{}, false
	}
	u := addrUpdate{
		link:      true,
		del:       m.Header.Type == unix.RTM_DELLINK,
		linkIndex: int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return addrUpdate{}, false
	}
	for ad.Next() {
		if ad.Type() == unix.IFLA_IFNAME {
			u.name = ad.String()
		}
	}
	return u, ad.Err() == nil && u.name != "" && u.linkIndex > 0
}
