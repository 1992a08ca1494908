package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The NFLOG netlink protocol (linux/netfilter/nfnetlink_log.h). The
// observer reads it itself: each logged packet is one netlink message,
// read with one read(2) into a buffer that is reused, and only the three
// attributes it needs are looked at. go-nflog peeked at every message
// before reading it (two system calls), allocated a buffer for it, and
// decoded every attribute into pointers: on the device path that was half
// of the guard's CPU time per query.
const (
	nfulnlMsgPacket = 0 // NFULNL_MSG_PACKET
	nfulnlMsgConfig = 1 // NFULNL_MSG_CONFIG

	nfulaCfgCmd     = 1 // NFULA_CFG_CMD
	nfulaCfgMode    = 2 // NFULA_CFG_MODE
	nfulaCfgQThresh = 5 // NFULA_CFG_QTHRESH

	nfulnlCfgCmdBind = 1 // NFULNL_CFG_CMD_BIND

	nfulnlCopyPacket = 2 // NFULNL_COPY_PACKET

	nfulaHWAddr  = 8  // NFULA_HWADDR: struct nfulnl_msg_packet_hw
	nfulaPayload = 9  // NFULA_PAYLOAD: the packet from its network header
	nfulaPrefix  = 10 // NFULA_PREFIX: the rule's prefix, NUL-terminated

	nfgenmsgLen = 4      // struct nfgenmsg: family, version, resource id
	nlaTypeMask = 0x3fff // NLA_TYPE_MASK: without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// bindNFLog binds c to NFLOG group, copying whole packets, each handed
// over at once (a queue threshold of 1: identify waits on them). One
// config message: the kernel binds the group, then sets the mode and
// the threshold of the instance the bind made. A group another socket
// holds is an error (EBUSY).
func bindNFLog(c *netlink.Conn, group uint16) error {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})
	// struct nfulnl_msg_config_mode: copy range (0: as much as fits),
	// copy mode, padding.
	ae.Bytes(nfulaCfgMode, []byte{0, 0, 0, 0, nfulnlCopyPacket, 0})
	ae.Bytes(nfulaCfgQThresh, binary.BigEndian.AppendUint32(nil, 1))
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	data := append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}, attrs...)
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: data,
	})
	return err
}

// logged is what the observer reads of one logged packet; its slices
// point into the receive buffer.
type logged struct {
	prefix, mac, payload []byte
}

var errNotPacket = errors.New("not a logged packet")

// nflogMessages calls fn for each netlink message in b (one datagram),
// with the message's type and its payload; it stops at the first
// malformed header.
func nflogMessages(b []byte, fn func(typ uint16, data []byte)) error {
	for len(b) >= unix.NLMSG_HDRLEN {
		n := int(binary.NativeEndian.Uint32(b))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return fmt.Errorf("netlink message of %d octets in %d", n, len(b))
		}
		fn(binary.NativeEndian.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:n])
		n = (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if n >= len(b) {
			return nil
		}
		b = b[n:]
	}
	return nil
}

// parseLogged reads a NFULNL_MSG_PACKET message's payload (after the
// netlink header): its prefix, source hardware address and packet.
func parseLogged(data []byte) (logged, error) {
	var l logged
	if len(data) < nfgenmsgLen {
		return l, errNotPacket
	}
	b := data[nfgenmsgLen:]
	for len(b) >= unix.NLA_HDRLEN {
		n := int(binary.NativeEndian.Uint16(b))
		if n < unix.NLA_HDRLEN || n > len(b) {
			return l, fmt.Errorf("nflog attribute of %d octets in %d", n, len(b))
		}
		v := b[unix.NLA_HDRLEN:n]
		switch binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask {
		case nfulaPrefix:
			l.prefix = v
		case nfulaHWAddr:
			// struct nfulnl_msg_packet_hw: __be16 length, pad, 8 octets
			if len(v) >= 4 {
				if hl := int(binary.BigEndian.Uint16(v)); hl <= len(v)-4 {
					l.mac = v[4 : 4+hl]
				}
			}
		case nfulaPayload:
			l.payload = v
		}
		n = (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if n >= len(b) {
			break
		}
		b = b[n:]
	}
	if l.payload == nil || l.prefix == nil {
		return l, errNotPacket
	}
	return l, nil
}
