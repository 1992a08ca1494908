package device

import (
	"path"
	"strings"

	"github.com/dnsguard/dnsguard/policy"
)

// StrictClass is the class name given to a device moved to strict policy
// when the configuration has no strict class of its own.
const StrictClass = "strict"

// Decision is the policy a device is held to.
type Decision struct {
	Class  string
	Strict bool
	Exempt bool
	Rate   float64 // 0: the global default
	Burst  int
}

// Classifier matches devices to the configured classes.
type Classifier struct {
	classes []policy.Class
	strict  *policy.Class // the first strict, non-exempt class, if any
}

// NewClassifier returns a classifier for classes, in configuration order:
// the first class that matches a device wins.
func NewClassifier(classes []policy.Class) *Classifier {
	c := &Classifier{classes: classes}
	for i := range classes {
		if classes[i].Strict && !classes[i].Exempt {
			c.strict = &c.classes[i]
			break
		}
	}
	return c
}

// Match returns the first class matching a MAC (exactly or by prefix) or
// one of the device's names (exactly or as a shell pattern).
func (c *Classifier) Match(mac string, names []string) *policy.Class {
	mac = strings.ToLower(mac)
	for i := range c.classes {
		cl := &c.classes[i]
		for _, m := range cl.MACs {
			if mac != "" && strings.EqualFold(m, mac) {
				return cl
			}
		}
		for _, p := range cl.MACPrefixes {
			if mac != "" && p != "" && strings.HasPrefix(mac, strings.ToLower(p)) {
				return cl
			}
		}
		for _, pat := range cl.Names {
			for _, n := range names {
				if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(n)); ok {
					return cl
				}
			}
		}
	}
	return nil
}

func (c *Classifier) byName(name string) *policy.Class {
	for i := range c.classes {
		if c.classes[i].Name == name {
			return &c.classes[i]
		}
	}
	return nil
}

// Decide returns the policy for a device: its override first, then its
// class; a device the guard graded weak is held to the strict class and
// never exempt.
func (c *Classifier) Decide(r *Record) Decision {
	var cl *policy.Class
	if r.Override != nil && r.Override.Class != "" {
		cl = c.byName(r.Override.Class)
	}
	if cl == nil {
		cl = c.Match(r.MAC, r.Names)
	}
	var d Decision
	if cl != nil {
		d = Decision{Class: cl.Name, Strict: cl.Strict, Exempt: cl.Exempt, Rate: cl.Rate, Burst: cl.Burst}
	}
	if o := r.Override; o != nil {
		if o.Strict != nil {
			d.Strict = *o.Strict
		}
		if o.Exempt != nil {
			d.Exempt = *o.Exempt
		}
	}
	if r.Strict && (r.Override == nil || r.Override.Strict == nil) {
		d.Strict, d.Exempt = true, false
		if cl == nil || !cl.Strict {
			if c.strict != nil {
				d.Class, d.Rate, d.Burst = c.strict.Name, c.strict.Rate, c.strict.Burst
			} else {
				d.Class = StrictClass
			}
		}
	}
	if d.Strict {
		d.Exempt = false // a strict device is always intercepted
	}
	return d
}
