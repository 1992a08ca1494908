package device

import (
	"net/netip"

	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Observation is one query a device sent, as the graders take it: the
// query as read from the wire, where it came from, and whether over TCP.
// It is read during the call that is given it, never kept.
type Observation struct {
	Query *dnswire.Query
	// Src is the device's address and source port. The query is graded
	// only when this address and the device's MAC agree with the
	// neighbour table; the port is graded over UDP only.
	Src netip.AddrPort
	TCP bool
}

// port is the source port the graders see: none over TCP (the kernel
// picks those, not the device's resolver).
func (o *Observation) port() uint16 {
	if o.TCP {
		return 0
	}
	return o.Src.Port()
}
