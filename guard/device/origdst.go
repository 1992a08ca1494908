package device

import (
	"net/netip"
)

// OrigDst returns where a redirected query from client with the given ID
// was first sent, if the observer saw it.
func (r *Registry) OrigDst(client netip.AddrPort, id uint16) (netip.AddrPort, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orig.get(client, id)
}

// origRing remembers the original destination of the last redirected
// queries, bounded.
type origRing struct {
	keys [1024]origKey
	next int
	m    map[origKey]netip.AddrPort
}

type origKey struct {
	src netip.AddrPort
	id  uint16
}

func (o *origRing) put(src netip.AddrPort, id uint16, dst netip.AddrPort) {
	if o.m == nil {
		o.m = make(map[origKey]netip.AddrPort, len(o.keys))
	}
	k := origKey{netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port()), id}
	if _, ok := o.m[k]; !ok {
		if old := o.keys[o.next]; old.src.IsValid() {
			delete(o.m, old)
		}
		o.keys[o.next] = k
		o.next = (o.next + 1) % len(o.keys)
	}
	o.m[k] = dst
}

func (o *origRing) get(src netip.AddrPort, id uint16) (netip.AddrPort, bool) {
	d, ok := o.m[origKey{netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port()), id}]
	return d, ok
}
