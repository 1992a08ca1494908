package device

import (
	"strings"
	"testing"
)

func TestParseLeases(t *testing.T) {
	const file = `1764230000 20:f8:5e:ca:91:52 192.168.1.20 aria-scale 01:20:f8:5e:ca:91:52
0 00:17:88:aa:bb:cc 192.168.1.21 * *
1764230000 not-a-mac 192.168.1.22 broken *
1764230000 00:17:88:aa:bb:cd 192.168.1.300 badip *
short line
duid 00:01:00:01:2c:5f:aa:bb:00:11:22:33:44:55
1764230000 1234 fd00::21 hue-bridge 00:01:00:01:aa
1764230000 00:17:88:aa:bb:ce 192.168.1.23 bad/name *
`
	leases, bad, err := ParseLeases(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if bad != 3 {
		t.Errorf("bad = %d, want 3", bad)
	}
	want := []struct{ mac, ip, name string }{
		{"20:f8:5e:ca:91:52", "192.168.1.20", "aria-scale"},
		{"00:17:88:aa:bb:cc", "192.168.1.21", ""},
		{"", "fd00::21", "hue-bridge"},
		{"00:17:88:aa:bb:ce", "192.168.1.23", ""},
	}
	if len(leases) != len(want) {
		t.Fatalf("got %d leases: %+v", len(leases), leases)
	}
	for i, w := range want {
		l := leases[i]
		if l.MAC.String() != w.mac || l.IP.String() != w.ip || l.Name != w.name {
			t.Errorf("lease %d = %v %v %q, want %v %v %q", i, l.MAC, l.IP, l.Name, w.mac, w.ip, w.name)
		}
	}
	if !leases[1].Expiry.IsZero() {
		t.Errorf("infinite lease has expiry %v", leases[1].Expiry)
	}
}

func FuzzParseLeases(f *testing.F) {
	f.Add("1764230000 20:f8:5e:ca:91:52 192.168.1.20 aria *\n")
	f.Add("duid 00:01\n1 2 fd00::1 x y\n")
	f.Fuzz(func(t *testing.T, s string) {
		leases, _, err := ParseLeases(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, l := range leases {
			if !l.IP.IsValid() {
				t.Fatalf("lease without an address: %+v", l)
			}
			if l.IP.Is4() && len(l.MAC) != 6 {
				t.Fatalf("IPv4 lease without a MAC: %+v", l)
			}
			if l.Name != "" && !validName(l.Name) {
				t.Fatalf("invalid name kept: %q", l.Name)
			}
		}
	})
}
