package listen

import (
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A socket bound to the unspecified address (0.0.0.0 or [::]) takes
// queries sent to every address of the router, including those that
// appear later (a new IPv6 prefix, a link-local address with its zone)
// and those nftables redirected a hard-coded resolver's queries to. Its
// answers must leave from the address each query was sent to, or the
// device (and conntrack, for a redirected query) drops them: the
// destination and arrival interface come with each packet as an
// IP_PKTINFO / IPV6_PKTINFO control message and go back out as one.
// TCP needs none of this: an accepted connection is bound to the address
// it was opened to.

// oobSize fits one in_pktinfo or in6_pktinfo control message.
var oobSize = unix.CmsgSpace(max(unix.SizeofInet4Pktinfo, unix.SizeofInet6Pktinfo))

// enablePktinfo asks the kernel for each packet's destination address.
func enablePktinfo(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("packet info: %w", err)
	}
	return nil
}

// parsePktinfo returns the destination address and arrival interface in
// a received control message. It allocates nothing.
func parsePktinfo(oob []byte) (dst netip.Addr, ifindex int, ok bool) {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return netip.Addr{}, 0, false
		}
		data := oob[hdr:l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			if pi.Addr != pi.Spec_dst && pi.Addr != [4]byte{} {
				// The kernel sets spec_dst to the header's destination
				// only for a local unicast address: this one was sent to
				// a broadcast or multicast address, which cannot be
				// answered from.
				return netip.Addr{}, 0, false
			}
			return netip.AddrFrom4(pi.Addr), int(pi.Ifindex), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr), int(pi.Ifindex), true
		}
		next := unix.CmsgSpace(l - hdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.Addr{}, 0, false
}

// appendPktinfo appends a control message that sends a datagram from src
// (out of interface ifindex, for link-local addresses; 0 lets routing
// choose). b must have room (oobSize) for it not to allocate.
func appendPktinfo(b []byte, src netip.Addr, ifindex int) []byte {
	src = src.Unmap()
	var n int
	if src.Is4() {
		n = unix.SizeofInet4Pktinfo
	} else {
		n = unix.SizeofInet6Pktinfo
	}
	start, size := len(b), unix.CmsgSpace(n)
	if cap(b)-start < size {
		b = append(b, make([]byte, size)...)
	} else {
		b = b[:start+size]
		clear(b[start:])
	}
	m := b[start:]
	h := (*unix.Cmsghdr)(unsafe.Pointer(&m[0]))
	h.SetLen(unix.CmsgLen(n))
	data := m[unix.CmsgLen(0):]
	if src.Is4() {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
		pi.Spec_dst = src.As4()
		pi.Ifindex = 0
	} else {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
		pi.Addr = src.As16()
		pi.Ifindex = uint32(ifindex)
	}
	return b
}
