package device

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Lease is one line of a dnsmasq leases file.
type Lease struct {
	Expiry time.Time // zero for an infinite lease
	MAC    net.HardwareAddr
	IP     netip.Addr
	Name   string // empty when the client sent none ("*")
}

// ParseLeases reads a dnsmasq leases file (/tmp/dhcp.leases on OpenWrt):
//
//	EXPIRY MAC IP NAME CLIENT-ID          DHCPv4
//	duid SERVER-DUID                      marks the start of DHCPv6 leases
//	EXPIRY IAID IPV6 NAME CLIENT-DUID     DHCPv6 (no MAC)
//
// Malformed lines are skipped; the count of them is returned so a caller
// can say so.
func ParseLeases(r io.Reader) ([]Lease, int, error) {
	var (
		out []Lease
		bad int
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "duid" {
			continue
		}
		if len(f) < 4 {
			bad++
			continue
		}
		exp, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || exp < 0 {
			bad++
			continue
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			bad++
			continue
		}
		l := Lease{IP: ip.WithZone("")}
		if exp > 0 {
			l.Expiry = time.Unix(exp, 0)
		}
		if ip.Is4() {
			mac, err := net.ParseMAC(f[1])
			if err != nil || len(mac) != 6 {
				bad++
				continue
			}
			l.MAC = mac
		}
		if f[3] != "*" && validName(f[3]) {
			l.Name = f[3]
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return out, bad, fmt.Errorf("leases: %w", err)
	}
	return out, bad, nil
}

// validName accepts a DHCP host name as dnsmasq writes it: letters,
// digits, '-', '_' and '.', at most 63 octets.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// leaseFile re-reads a leases file when it changes.
type leaseFile struct {
	path    string
	modTime time.Time
	size    int64
}

// load returns the leases when the file changed since the last call
// (changed=false otherwise). A missing file is no leases, not an error.
func (lf *leaseFile) load() (leases []Lease, changed bool, err error) {
	st, err := os.Stat(lf.path)
	if os.IsNotExist(err) {
		changed = !lf.modTime.IsZero()
		lf.modTime, lf.size = time.Time{}, 0
		return nil, changed, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("leases: %w", err)
	}
	if st.ModTime().Equal(lf.modTime) && st.Size() == lf.size {
		return nil, false, nil
	}
	f, err := os.Open(lf.path)
	if err != nil {
		return nil, false, fmt.Errorf("leases: %w", err)
	}
	defer f.Close()
	leases, _, err = ParseLeases(f)
	if err != nil {
		return nil, false, err
	}
	lf.modTime, lf.size = st.ModTime(), st.Size()
	return leases, true, nil
}
