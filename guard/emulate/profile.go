// Package emulate plays IoT devices that resolve names the way the study
// (../shared/reference/study.md) measured them: fixed or few source ports,
// near-constant or narrow transaction IDs, no EDNS(0), TTLs ignored and
// retry storms when resolution fails. A Device sends real UDP DNS from the
// source ports and IDs its profile picks, to a target address, and records
// every datagram it receives, so tests and the lab can see what a weak
// device would have got.
package emulate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Profile is how one kind of device resolves names.
type Profile struct {
	Name string
	// Port picks the source port of the next query; 0 means an ephemeral
	// port chosen by the kernel (a well randomised stack).
	Port func(r *rand.Rand) uint16
	// ID picks the transaction ID of the next query.
	ID func(r *rand.Rand) uint16
	// EDNS: send an OPT record advertising this UDP size (0: no EDNS, the
	// study's 34 of 35 devices).
	EDNS uint16
	// Server is the resolver the firmware hard-codes (8.8.8.8:53 for most);
	// used when a Device is given no target.
	Server netip.AddrPort
	// Interval is how often the device asks for each of its names,
	// whatever the TTL said (the study: TTLs often ignored). Zero means it
	// honours TTLs instead (asks again only when the answer expired).
	Interval time.Duration
	// FailFactor multiplies the query rate for a name while its resolution
	// fails (timeout, SERVFAIL, REFUSED, empty or unusable answer): 10 is
	// the study's "query rates rise by an order of magnitude". No backoff.
	FailFactor int
	// Timeout is how long the device waits for an answer.
	Timeout time.Duration
}

// hardCoded is the resolver most firmwares fall back to.
var hardCoded = netip.MustParseAddrPort("8.8.8.8:53")

func randomID(r *rand.Rand) uint16 { return uint16(r.Uint32()) }
func ephemeral(*rand.Rand) uint16  { return 0 }

// Profiles returns the built-in profiles, each after a device of the study.
// The names are what --profile and ProfileByName take.
func Profiles() []Profile {
	base := Profile{
		Server:     hardCoded,
		Interval:   30 * time.Second,
		FailFactor: 10,
		Timeout:    2 * time.Second,
	}
	with := func(name string, port, id func(*rand.Rand) uint16) Profile {
		p := base
		p.Name, p.Port, p.ID = name, port, id
		return p
	}
	ps := []Profile{
		// Cosori air fryer: always source port 4096 (sigma 0).
		with("fixed-port", func(*rand.Rand) uint16 { return 4096 }, randomID),
		// Arlo Pro 4, Yi camera: transaction ID sigma ~0.5.
		with("constant-id", ephemeral, func(r *rand.Rand) uint16 { return 0x1234 + uint16(r.IntN(2)) }),
		// PetSafe feeder: >99% of queries on three ports, narrow IDs (sigma 116).
		with("three-ports", func(r *rand.Rand) uint16 {
			if r.IntN(200) == 0 {
				return 0
			}
			return []uint16{49153, 49154, 49155}[r.IntN(3)]
		}, func(r *rand.Rand) uint16 { return 0x2000 + uint16(r.IntN(400)) }),
		// Eufy chime: IDs confined to 0x00-0x4F.
		with("narrow-id", ephemeral, func(r *rand.Rand) uint16 { return uint16(r.IntN(0x50)) }),
		// LG TV: 43% of queries from one port, the rest random.
		with("one-port", func(r *rand.Rand) uint16 {
			if r.Float64() < 0.43 {
				return 35000
			}
			return 0
		}, randomID),
		// Swan kettle: the study's reference good device, except that it
		// still ignores TTLs and storms (every device but one did).
		with("random", ephemeral, randomID),
	}
	// A device that honours TTLs and backs off: what the guard makes every
	// device look like from the upstream's side.
	good := with("well-behaved", ephemeral, randomID)
	good.Interval, good.FailFactor, good.EDNS = 0, 1, 1232
	return append(ps, good)
}

// ProfileByName finds a built-in profile.
func ProfileByName(name string) (Profile, error) {
	ps := Profiles()
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	sort.Strings(names)
	return Profile{}, fmt.Errorf("emulate: no profile %q (have %v)", name, names)
}

// ProfileNames lists the built-in profiles.
func ProfileNames() []string {
	var names []string
	for _, p := range Profiles() {
		names = append(names, p.Name)
	}
	return slices.Clip(names)
}
