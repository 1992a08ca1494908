package device

import (
	"fmt"
	"net"
	"slices"
)

// updateExempt tells OnExempt the exempt MACs when they changed: those
// named in exempt classes and the known devices whose policy exempts them.
func (r *Registry) updateExempt() {
	if r.opts.OnExempt == nil {
		return
	}
	set := map[string]bool{}
	r.mu.Lock()
	classes := r.opts.Classes
	r.mu.Unlock()
	for _, c := range classes {
		if c.Exempt && !c.Strict {
			for _, m := range c.MACs {
				if hw, err := net.ParseMAC(m); err == nil && len(hw) == 6 {
					set[hw.String()] = true
				}
			}
		}
	}
	r.mu.Lock()
	for _, e := range r.devices {
		if e.rec.MAC == "" || !e.confirmed {
			continue
		}
		if e.decision.Exempt {
			set[e.rec.MAC] = true
		} else {
			delete(set, e.rec.MAC) // graded weak: intercepted whatever its class
		}
	}
	r.mu.Unlock()
	macs := make([]string, 0, len(set))
	for m := range set {
		macs = append(macs, m)
	}
	slices.Sort(macs)
	key := fmt.Sprint(macs)
	if key == r.exempt {
		return
	}
	r.exempt = key
	hws := make([]net.HardwareAddr, 0, len(macs))
	for _, m := range macs {
		hw, _ := net.ParseMAC(m)
		hws = append(hws, hw)
	}
	r.opts.OnExempt(hws)
}
