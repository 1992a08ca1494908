package upstreamtest

import (
	"fmt"
	"net"
	"testing"
)

// TestStartUnboundPortTaken: a port taken by another socket between its
// choice and unbound's bind (on a busy machine any process's query
// socket or connection may get it as its ephemeral port) costs a try,
// not the test: a TCP port (unbound: "can't bind socket: Address already
// in use"), then a UDP port ("bind: address already in use").
func TestStartUnboundPortTaken(t *testing.T) {
	var taken []uint16
	takePorts := func(t testing.TB, tlsPort, plainPort uint16) {
		switch len(taken) {
		case 0:
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			taken = append(taken, tlsPort)
		case 1:
			pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", plainPort))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pc.Close() })
			taken = append(taken, plainPort)
		}
	}
	u := StartUnbound(t, UnboundOptions{takePorts: takePorts})
	if len(taken) != 2 || u.Addr.Port() == taken[0] || u.Do53.Port() == taken[1] {
		t.Fatalf("ports taken %v, unbound on %v and %v", taken, u.Addr, u.Do53)
	}
}
