package listen

import (
	"net/netip"
	"slices"
	"sync/atomic"
)

// Access is who the guard answers: clients inside the prefixes it was
// given (loopback, the LAN interfaces' prefixes, the router's own
// addresses, the operator's allow_client list), and link-local clients
// that arrive on a LAN interface. Everyone else gets REFUSED (TCP: the
// connection is closed). Reads are lock-free and allocate nothing: one
// prefix walk per query; the set is replaced whole when addresses change.
type Access struct {
	set atomic.Pointer[accessSet]
}

type accessSet struct {
	prefixes []netip.Prefix
	// lanIndex and lanNames are the interfaces a link-local client may
	// arrive on; both empty: link-local clients are judged by prefix only.
	lanIndex []int
	lanNames []string
}

// Loopback is 127.0.0.0/8 and ::1/128.
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// NewAccess returns an Access that allows the given prefixes.
func NewAccess(prefixes []netip.Prefix) *Access {
	a := &Access{}
	a.Set(prefixes, nil, nil)
	return a
}

// Set replaces the allowed prefixes and the interfaces (by index and by
// name, as zones appear on addresses) link-local clients may come from.
func (a *Access) Set(prefixes []netip.Prefix, lanIndex []int, lanNames []string) {
	s := &accessSet{lanIndex: slices.Clone(lanIndex), lanNames: slices.Clone(lanNames)}
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		a := p.Addr().Unmap().WithZone("")
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
		}
		p = netip.PrefixFrom(a, max(bits, 0)).Masked()
		if !slices.Contains(s.prefixes, p) {
			s.prefixes = append(s.prefixes, p)
		}
	}
	a.set.Store(s)
}

// Prefixes returns the allowed prefixes (for logging).
func (a *Access) Prefixes() []netip.Prefix { return slices.Clone(a.set.Load().prefixes) }

// Allow reports whether client may be answered; ifindex is the interface
// the query arrived on (0 if unknown).
func (a *Access) Allow(client netip.Addr, ifindex int) bool {
	client = client.Unmap()
	s := a.set.Load()
	if client.Is6() && client.IsLinkLocalUnicast() && (len(s.lanIndex) > 0 || len(s.lanNames) > 0) {
		if ifindex > 0 {
			return slices.Contains(s.lanIndex, ifindex)
		}
		if z := client.Zone(); z != "" {
			return slices.Contains(s.lanNames, z)
		}
	}
	client = client.WithZone("")
	for _, p := range s.prefixes {
		if p.Contains(client) {
			return true
		}
	}
	return false
}
