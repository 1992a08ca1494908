package localzone

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/miekg/dns"
)

// LocalZones returns the zones that belong to the local network whatever
// the configuration, in presentation form: the IANA Locally-Served DNS
// Zones registry (RFC 6303 §4, RFC 7793) and home.arpa (RFC 8375). Their
// queries go to the local server, or are answered here when there is
// none, and never reach an upstream.
func LocalZones() []string {
	z := []string{
		// RFC 6303 §4.1: RFC 1918 space.
		"10.in-addr.arpa.",
	}
	for i := 16; i <= 31; i++ {
		z = append(z, strconv.Itoa(i)+".172.in-addr.arpa.")
	}
	z = append(z,
		"168.192.in-addr.arpa.",
		// §4.2: RFC 5735 and RFC 5737 (this network, loopback,
		// link-local, the documentation nets, broadcast).
		"0.in-addr.arpa.",
		"127.in-addr.arpa.",
		"254.169.in-addr.arpa.",
		"2.0.192.in-addr.arpa.",
		"100.51.198.in-addr.arpa.",
		"113.0.203.in-addr.arpa.",
		"255.255.255.255.in-addr.arpa.",
	)
	// RFC 7793: shared address space 100.64.0.0/10 (CGNAT, RFC 6598).
	for i := 64; i <= 127; i++ {
		z = append(z, strconv.Itoa(i)+".100.in-addr.arpa.")
	}
	z = append(z,
		// §4.3: the unspecified address :: and loopback ::1.
		zeros(32)+"ip6.arpa.",
		"1."+zeros(31)+"ip6.arpa.",
		// §4.4: unique local addresses fd00::/8 (RFC 4193 §4.4).
		"d.f.ip6.arpa.",
		// §4.5: link-local fe80::/10.
		"8.e.f.ip6.arpa.",
		"9.e.f.ip6.arpa.",
		"a.e.f.ip6.arpa.",
		"b.e.f.ip6.arpa.",
		// §4.6: the documentation prefix 2001:db8::/32.
		"8.b.d.0.1.0.0.2.ip6.arpa.",
		// RFC 8375: the home network's special-use domain.
		"home.arpa.",
	)
	return z
}

// zeros returns n "0." labels.
func zeros(n int) string { return strings.Repeat("0.", n) }

// zoneSet finds, on the wire, the closest enclosing zone of a name among
// a fixed set of zones. It looks at the name's suffixes from the
// top-level label down, and only as far as they lead towards a zone:
// a name under an unrelated top-level domain costs one or two short
// map lookups.
type zoneSet struct {
	byWire map[string]int  // lower-case wire form -> index in names
	inner  map[string]bool // lower-case wire forms of the zones' proper ancestors (not the root)
	names  []string        // presentation form, with the trailing dot
}

func newZoneSet() *zoneSet { return &zoneSet{byWire: map[string]int{}, inner: map[string]bool{}} }

// add adds zone (presentation form, any case) and returns its index; a
// zone already there keeps its first index.
func (s *zoneSet) add(zone string) (int, error) {
	var buf [dnswire.MaxName + 1]byte
	n, err := dns.PackDomainName(dns.Fqdn(zone), buf[:], 0, nil, false)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", zone, err)
	}
	if n <= 1 {
		return 0, fmt.Errorf("zone %q: the root is no local zone", zone)
	}
	key := dnswire.AppendLower(nil, buf[:n])
	if i, ok := s.byWire[string(key)]; ok {
		return i, nil
	}
	s.byWire[string(key)] = len(s.names)
	s.names = append(s.names, dnswire.NameString(buf[:n]))
	for off := int(key[0]) + 1; key[off] != 0; off += int(key[off]) + 1 {
		s.inner[string(key[off:])] = true
	}
	return len(s.names) - 1, nil
}

// match returns the index of the longest zone that is name or an
// ancestor of it, and whether name is that zone's apex. name is a
// well-formed uncompressed wire-format name (as dnswire.ParseQuery
// gives); labels are compared as octets, ASCII letters without case.
func (s *zoneSet) match(name []byte) (zone int, apex, ok bool) {
	if len(s.byWire) == 0 || len(name) > dnswire.MaxName {
		return 0, false, false
	}
	var (
		buf  [dnswire.MaxName]byte
		offs [dnswire.MaxName / 2]uint8
		n    int
	)
	off := 0
	for off < len(name) && name[off] != 0 {
		offs[n] = uint8(off)
		n++
		off += int(name[off]) + 1
	}
	if off >= len(name) {
		return 0, false, false // no root label: not a whole name
	}
	// Lower-case label by label from the end, only as far as needed.
	end := off + 1
	buf[off] = 0
	for k := n - 1; k >= 0; k-- {
		for j := int(offs[k]); j < off; j++ {
			c := name[j]
			if 'A' <= c && c <= 'Z' && j > int(offs[k]) {
				c += 'a' - 'A'
			}
			buf[j] = c
		}
		off = int(offs[k])
		key := buf[off:end]
		if i, found := s.byWire[string(key)]; found {
			zone, apex, ok = i, k == 0, true
		}
		if !s.inner[string(key)] {
			break
		}
	}
	return zone, apex, ok
}
