package validate

import "net/netip"

// Range is a special-purpose address block (IANA IPv4 and IPv6
// Special-Purpose Address Registries, RFC 6890 and later) that a public
// name has no business resolving to.
type Range struct {
	Prefix netip.Prefix
	Name   string
	Source string
}

// specialRanges lists every block of the two IANA special-purpose registries
// that is not globally reachable, plus multicast (never a unicast answer)
// and the deprecated site-local block. Blocks the registries mark globally
// reachable (AS112 192.31.196.0/24 and 192.175.48.0/24, AMT
// 192.52.193.0/24, the NAT64 well-known prefix 64:ff9b::/96, 6to4
// 2002::/16) are not refused for themselves; for the two that embed an
// IPv4 address, the embedded address is checked instead. 192.0.0.0/24 and
// 2001::/23 are refused whole: their few globally reachable members are
// anycast service addresses no name should point a device at.
var specialRanges = func() []Range {
	rs := []struct{ p, name, src string }{
		{"0.0.0.0/8", "this network", "RFC 791"},
		{"10.0.0.0/8", "private-use", "RFC 1918"},
		{"100.64.0.0/10", "shared address space (CGNAT)", "RFC 6598"},
		{"127.0.0.0/8", "loopback", "RFC 1122"},
		{"169.254.0.0/16", "link-local", "RFC 3927"},
		{"172.16.0.0/12", "private-use", "RFC 1918"},
		{"192.0.0.0/24", "IETF protocol assignments", "RFC 6890"},
		{"192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"},
		{"192.88.99.0/24", "deprecated 6to4 relay anycast", "RFC 7526"},
		{"192.168.0.0/16", "private-use", "RFC 1918"},
		{"198.18.0.0/15", "benchmarking", "RFC 2544"},
		{"198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"},
		{"203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"},
		{"224.0.0.0/4", "multicast", "RFC 5771"},
		{"240.0.0.0/4", "reserved", "RFC 1112"},
		{"255.255.255.255/32", "limited broadcast", "RFC 919"},
		{"::/128", "unspecified", "RFC 4291"},
		{"::1/128", "loopback", "RFC 4291"},
		{"64:ff9b:1::/48", "local-use IPv4/IPv6 translation", "RFC 8215"},
		{"100::/64", "discard-only", "RFC 6666"},
		{"100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780"},
		{"2001::/23", "IETF protocol assignments", "RFC 2928"},
		{"2001:2::/48", "benchmarking", "RFC 5180"},
		{"2001:db8::/32", "documentation", "RFC 3849"},
		{"2001:10::/28", "deprecated ORCHID", "RFC 4843"},
		{"3fff::/20", "documentation", "RFC 9637"},
		{"5f00::/16", "segment routing SIDs", "RFC 9602"},
		{"fc00::/7", "unique-local", "RFC 4193"},
		{"fe80::/10", "link-local unicast", "RFC 4291"},
		{"fec0::/10", "deprecated site-local", "RFC 3879"},
		{"ff00::/8", "multicast", "RFC 4291"},
	}
	out := make([]Range, len(rs))
	for i, r := range rs {
		out[i] = Range{netip.MustParsePrefix(r.p), r.name, r.src}
	}
	return out
}()

var (
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	sixTo = netip.MustParsePrefix("2002::/16")
	// mapped is refused whatever IPv4 address it carries: an AAAA record
	// has no business holding one.
	mapped = Range{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped", "RFC 4291"}
)

// Special returns the special-purpose range a holds, if any. IPv4 addresses
// embedded in NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are
// checked as IPv4.
func Special(a netip.Addr) (Range, bool) {
	if a.Is4In6() {
		return mapped, true
	}
	for _, r := range specialRanges {
		if r.Prefix.Contains(a) {
			return r, true
		}
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return Special(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixTo.Contains(a):
			return Special(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	return Range{}, false
}
