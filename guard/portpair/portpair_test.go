package portpair

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

func TestListen(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"} {
		u, l, err := Listen(addr)
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Logf("%s: %v (no such address here)", addr, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		ua, ta := u.LocalAddr().(*net.UDPAddr).AddrPort(), l.Addr().(*net.TCPAddr).AddrPort()
		if ua != ta || ua.Port() == 0 {
			t.Errorf("%s: udp on %s, tcp on %s", addr, ua, ta)
		}
		// The same fixed port again is taken, for UDP first.
		_, _, err = Listen(ua.String())
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("%s again: %v, want address in use", ua, err)
		}
		u.Close()
		l.Close()
	}
	if _, _, err := Listen("localhost:53"); err == nil {
		t.Error("a host name was accepted")
	}
}

// TestListenFixedPortTCPTaken: a fixed port free for UDP but taken for
// TCP is an error, and the UDP socket bound on the way is closed.
func TestListenFixedPortTCPTaken(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	if _, _, err := Listen(addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("%s: %v, want address in use", addr, err)
	}
	u, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("the UDP socket of the failed pair was left bound: %v", err)
	}
	u.Close()
}

func TestRetry(t *testing.T) {
	inUse := fmt.Errorf("listen tcp: %w", syscall.EADDRINUSE)
	other := fmt.Errorf("listen tcp: %w", syscall.EACCES)
	for _, tc := range []struct {
		name    string
		anyPort bool
		errs    []error // what the binds return, in turn; then success
		calls   int
		fail    bool
	}{
		{"first free", true, nil, 1, false},
		{"taken twice then free", true, []error{inUse, inUse}, 3, false},
		{"fixed port taken", false, []error{inUse}, 1, true},
		{"other error", true, []error{other}, 1, true},
		{"always taken", true, repeat(inUse, tries+1), tries, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			_, _, err := retry(tc.anyPort, func() (int, int, error) {
				calls++
				if calls <= len(tc.errs) {
					return 0, 0, tc.errs[calls-1]
				}
				return 1, 1, nil
			})
			if calls != tc.calls || (err != nil) != tc.fail {
				t.Errorf("%d calls, err %v; want %d calls, failure %v", calls, err, tc.calls, tc.fail)
			}
		})
	}
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}
