// Package portpair binds a UDP socket and a TCP listener on one address
// and port, as a DNS server serves both on one port.
package portpair

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// tries bounds how often a pair on any free port is tried again.
const tries = 16

// Listen binds UDP and then TCP on addr ("host:port"), in the family of
// the host: an IPv4 address binds udp4 and tcp4, any other udp6 and tcp6,
// so that 0.0.0.0 and [::] can both be bound. Port 0 asks for any free
// port: the kernel chooses the UDP socket's, and when that port is taken
// for TCP (another socket's port, bound or ephemeral) the pair is tried
// again on a new one. A fixed port that is taken is an error at once.
func Listen(addr string) (*net.UDPConn, *net.TCPListener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	udpNet, tcpNet := "udp6", "tcp6"
	if ap.Addr().Is4() {
		udpNet, tcpNet = "udp4", "tcp4"
	}
	return retry(ap.Port() == 0, func() (*net.UDPConn, *net.TCPListener, error) {
		u, err := net.ListenUDP(udpNet, net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", ap, err)
		}
		local := u.LocalAddr().(*net.UDPAddr).AddrPort()
		t, err := net.ListenTCP(tcpNet, net.TCPAddrFromAddrPort(local))
		if err != nil {
			u.Close()
			return nil, nil, fmt.Errorf("listen tcp %s: %w", local, err)
		}
		return u, t, nil
	})
}

// retry calls bind until it succeeds, and again while anyPort and the
// port it chose was in use, at most tries times.
func retry[U, T any](anyPort bool, bind func() (U, T, error)) (U, T, error) {
	for i := 1; ; i++ {
		u, t, err := bind()
		if err == nil || !anyPort || !errors.Is(err, syscall.EADDRINUSE) || i == tries {
			return u, t, err
		}
	}
}
