package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/miekg/dns"
)

// TableOptions is one run of the experiment table (dnsguard lab table):
// every experiment played to an emulated device twice, straight from a
// lab and through a guard in front of another lab.
type TableOptions struct {
	Binary      string // the dnsguard binary that plays the guard
	Experiments []Experiment
	Baseline    time.Duration // honest phase before the experiment
	Duration    time.Duration // whole run per experiment (baseline included)
	TTL         uint32        // the lab's honest TTL
	Profile     emulate.Profile
	Names       []string
	Fresh       []string // names asked only after the baseline
	GuardConfig string   // extra UCI text appended to the guard's config
	Parallel    int
	DNSSEC      bool // the lab signs its zone; the guard validates with its DS
}

// TableRow is what one experiment did to the device, directly and
// through the guard.
type TableRow struct {
	Experiment Experiment
	Direct     emulate.Summary
	Guarded    emulate.Summary
	// Upstream queries the lab saw from the guard during the experiment
	// phase, and that phase's length.
	Upstream      int
	UpstreamPhase time.Duration
	// The device's own queries during the same run, as the direct lab saw
	// them (the storm the guard absorbs).
	DirectLab int
	GuardLog  string
	Err       error
	// The devices themselves, for tests that look at every exchange.
	DirectDevice, GuardedDevice *emulate.Device
}

// RunTable plays every experiment of o, o.Parallel at a time, each with
// its own labs and guard process, and returns a row per experiment in
// o.Experiments' order.
func RunTable(ctx context.Context, o TableOptions) []TableRow {
	rows := make([]TableRow, len(o.Experiments))
	sem := make(chan struct{}, max(o.Parallel, 1))
	var wg sync.WaitGroup
	for i, e := range o.Experiments {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i] = runExperiment(ctx, o, e, i)
		}()
	}
	wg.Wait()
	return rows
}

// labRun is a lab serving UDP and TCP on loopback.
type labRun struct {
	lab  *Lab
	addr string
	stop func()
}

func startLabRun(ctx context.Context, sched Schedule, ttl uint32, signer *Signer) (*labRun, error) {
	z := DefaultZone()
	z.TTL = ttl
	l := New(Config{Zone: z, Schedule: sched, Signer: signer})
	pc, ln, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.ServeUDP(ctx, pc) }()
	go func() { defer wg.Done(); l.ServeStream(ctx, ln, "tcp") }()
	return &labRun{lab: l, addr: pc.LocalAddr().String(), stop: func() { cancel(); wg.Wait() }}, nil
}

// runDevice runs an emulated device against target for d and returns it
// (closed). If fresh names are given, a second device of the same profile
// (the next loopback address) asks them from after the baseline on: names
// the guard has not cached, so its refusals show.
func runDevice(ctx context.Context, p emulate.Profile, target string, local netip.Addr, seed uint64, d time.Duration, names []string, baseline time.Duration, fresh []string) ([]*emulate.Device, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	devs := []*emulate.Device{emulate.New(emulate.Config{Profile: p, Target: ap, Local: local, Seed: seed})}
	var wg sync.WaitGroup
	if len(fresh) > 0 && baseline > 0 && baseline < d {
		late := emulate.New(emulate.Config{Profile: p, Target: ap, Local: local.Next(), Seed: seed + 1000})
		devs = append(devs, late)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-rctx.Done():
				return
			case <-time.After(baseline):
			}
			late.Run(rctx, dns.TypeA, fresh...)
		}()
	}
	devs[0].Run(rctx, dns.TypeA, names...)
	wg.Wait()
	for _, dev := range devs {
		dev.Close()
	}
	return devs, nil
}

// runExperiment plays one experiment to the device twice, directly and
// through a guard, each against its own lab.
func runExperiment(ctx context.Context, o TableOptions, e Experiment, i int) TableRow {
	row := TableRow{Experiment: e}
	sched := Schedule{{Experiment: Experiment{Kind: Baseline}, Duration: o.Baseline}, {Experiment: e}}
	if o.Baseline <= 0 {
		sched = Schedule{{Experiment: e}}
	}
	var wg sync.WaitGroup
	var direct, guarded []*emulate.Device
	var directLab, guardLab *labRun
	var derr, gerr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		if directLab, derr = startLabRun(ctx, sched, o.TTL, nil); derr != nil {
			return
		}
		defer directLab.stop()
		direct, derr = runDevice(ctx, o.Profile, directLab.addr, netip.AddrFrom4([4]byte{127, 0, 10, byte(1 + 2*i)}), uint64(i), o.Duration, o.Names, o.Baseline, o.Fresh)
	}()
	go func() {
		defer wg.Done()
		guardConfig := o.GuardConfig
		var signer *Signer
		if o.DNSSEC {
			if signer, gerr = NewSigner(DefaultZone().Suffix, nil); gerr != nil {
				return
			}
			guardConfig += fmt.Sprintf("\nconfig dnsguard 'dnssec'\n\toption dnssec '1'\n\tlist trust_anchor '%s'\n", signer.DS())
		}
		if guardLab, gerr = startLabRun(ctx, sched, o.TTL, signer); gerr != nil {
			return
		}
		defer guardLab.stop()
		dir, err := os.MkdirTemp("", "dnsguard-lab-table")
		if err != nil {
			gerr = err
			return
		}
		defer os.RemoveAll(dir)
		g, err := startGuardRun(ctx, o.Binary, guardLab.addr, guardConfig, dir)
		if err != nil {
			gerr = err
			return
		}
		defer func() { g.stop(); row.GuardLog = g.logs() }()
		// The same device, with EDNS so that the guard's Extended DNS
		// Errors (stale, forged, blocked) can be counted.
		p := o.Profile
		p.EDNS = 1232
		guarded, gerr = runDevice(ctx, p, g.addr, netip.AddrFrom4([4]byte{127, 0, 20, byte(1 + 2*i)}), uint64(i), o.Duration, o.Names, o.Baseline, o.Fresh)
	}()
	wg.Wait()
	if row.Err = errors.Join(derr, gerr); row.Err != nil {
		return row
	}
	row.Direct, row.Guarded = emulate.Summarize(direct...), emulate.Summarize(guarded...)
	row.DirectDevice, row.GuardedDevice = direct[0], guarded[0]
	ds := directLab.lab.Snapshot()
	for _, c := range ds.Clients {
		for _, x := range c.Experiments {
			row.DirectLab += x.Queries
		}
	}
	gs := guardLab.lab.Snapshot()
	for _, c := range gs.Clients {
		if x := c.Experiments[e.String()]; x != nil {
			row.Upstream += x.Queries
		}
	}
	row.UpstreamPhase = gs.Duration(e.String())
	return row
}
