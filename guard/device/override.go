package device

import (
	"errors"
	"fmt"
	"net"

	"github.com/dnsguard/dnsguard/policy"
)

// SetClasses replaces the device classes (a config reload) and decides
// every device's policy again.
func (r *Registry) SetClasses(classes []policy.Class) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.Classes = classes
	r.cls = NewClassifier(classes)
	for _, e := range r.devices {
		e.decision = r.cls.Decide(e.rec)
	}
}

// ClassNames returns the configured classes' names, in order.
func (r *Registry) ClassNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(r.opts.Classes))
	for i, c := range r.opts.Classes {
		names[i] = c.Name
	}
	return names
}

// ErrUnknownDevice is returned for an override of a device never seen.
var ErrUnknownDevice = errors.New("device: no such device")

// SetOverride sets (nil: clears) the policy override of device id (a MAC
// or "ip:ADDR"). It takes effect on the device's next query; the exempt
// set follows at the next flush.
func (r *Registry) SetOverride(id string, o *Override) (Decision, error) {
	if hw, err := net.ParseMAC(id); err == nil {
		id = hw.String()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return Decision{}, fmt.Errorf("%w: %s", ErrUnknownDevice, id)
	}
	if o != nil && *o == (Override{}) {
		o = nil
	}
	e.rec.Override = o
	e.decision = r.cls.Decide(e.rec)
	now := r.opts.Now()
	switch {
	case o != nil && e.list != nil:
		// An operator's decision is never forgotten to make room: the
		// record leaves the lists (and is confirmed: it is kept).
		e.list.remove(e)
		e.confirmed = true
	case o == nil && e.list == nil:
		r.makeRoomLocked(&r.main, MaxDevices, now)
		r.main.pushFront(e)
	}
	r.markLocked(e)
	r.log.Info("device policy override", "device", id, "override", o, "class", e.decision.Class,
		"strict", e.decision.Strict, "exempt", e.decision.Exempt)
	return e.decision, nil
}
