//go:build !router

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/guard/lab"
	"github.com/miekg/dns"
)

// tableOptions is one run of the experiment table.
type tableOptions struct {
	Binary      string // the dnsguard binary that plays the guard
	Experiments []lab.Experiment
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

// tableRow is what one experiment did to the device, directly and
// through the guard.
type tableRow struct {
	Experiment lab.Experiment
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

// labRun is a lab serving UDP and TCP on loopback.
type labRun struct {
	lab  *lab.Lab
	addr string
	stop func()
}

func startLabRun(ctx context.Context, sched lab.Schedule, ttl uint32, signer *lab.Signer) (*labRun, error) {
	z := lab.DefaultZone()
	z.TTL = ttl
	l := lab.New(lab.Config{Zone: z, Schedule: sched, Signer: signer})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.ServeUDP(ctx, pc) }()
	go func() { defer wg.Done(); l.ServeStream(ctx, ln, "tcp") }()
	return &labRun{lab: l, addr: pc.LocalAddr().String(), stop: func() { cancel(); wg.Wait() }}, nil
}

var servingRE = regexp.MustCompile(`msg="dnsguard serving"`)

// guardRun is a dnsguard run process.
type guardRun struct {
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

func (g *guardRun) logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

// startGuardRun starts binary as a guard in front of upstream and waits
// until it serves.
func startGuardRun(ctx context.Context, binary, upstream, extraConfig, dir string) (*guardRun, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "dnsguard.conf")
	text := fmt.Sprintf(`config dnsguard 'main'
	list listen '%s'
	list upstream 'udp://%s'
	option state_file '%s'
	option log_level 'info'
	# The lab's zone is unsigned unless --dnssec (a section below turns
	# validation on with the lab's own trust anchor): no root chain here.
	option dnssec '0'

config answers
	# The lab's honest answers are in documentation ranges.
	list allow_private '198.51.100.0/24'
	list allow_private '3fff:51::/32'
%s
`, addr, upstream, filepath.Join(dir, "state.db"), extraConfig)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	g := &guardRun{cmd: exec.CommandContext(ctx, binary, "run", "--config", conf), addr: addr, done: make(chan struct{})}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		defer close(g.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			g.mu.Lock()
			g.log.WriteString(sc.Text() + "\n")
			g.mu.Unlock()
			if servingRE.MatchString(sc.Text()) {
				once.Do(func() { close(ready) })
			}
		}
		g.cmd.Wait()
	}()
	select {
	case <-ready:
		return g, nil
	case <-g.done:
		return nil, fmt.Errorf("dnsguard exited before serving:\n%s", g.logs())
	case <-time.After(20 * time.Second):
		g.stop()
		return nil, fmt.Errorf("dnsguard did not start serving:\n%s", g.logs())
	}
}

func (g *guardRun) stop() {
	g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

func freeAddr() (string, error) {
	for i := 0; i < 50; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		a := u.LocalAddr().String()
		l, err := net.Listen("tcp", a)
		u.Close()
		if err == nil {
			l.Close()
			return a, nil
		}
	}
	return "", errors.New("no free port")
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
func runExperiment(ctx context.Context, o tableOptions, e lab.Experiment, i int) tableRow {
	row := tableRow{Experiment: e}
	sched := lab.Schedule{{Experiment: lab.Experiment{Kind: lab.Baseline}, Duration: o.Baseline}, {Experiment: e}}
	if o.Baseline <= 0 {
		sched = lab.Schedule{{Experiment: e}}
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
		var signer *lab.Signer
		if o.DNSSEC {
			if signer, gerr = lab.NewSigner(lab.DefaultZone().Suffix, nil); gerr != nil {
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

func runTable(ctx context.Context, o tableOptions) []tableRow {
	rows := make([]tableRow, len(o.Experiments))
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

// forged reports how many of the answers carried the lab's forged data.
func forgedAnswers(s emulate.Summary) int {
	n := 0
	for a, c := range s.Addrs {
		if _, ok := forgedAddrs[a]; ok {
			n += c
		}
	}
	return n
}

var forgedAddrs = map[netip.Addr]bool{
	netip.MustParseAddr("192.0.2.1"):   true,
	netip.MustParseAddr("2001:db8::1"): true,
}

func perMinute(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Minutes()
}

// gets describes in a few words what the device got.
func gets(s emulate.Summary) string {
	var parts []string
	pct := func(n int) int {
		if s.Queries == 0 {
			return 0
		}
		return 100 * n / s.Queries
	}
	parts = append(parts, fmt.Sprintf("%d%% usable", pct(s.Usable)))
	if f := forgedAnswers(s); f > 0 {
		parts = append(parts, fmt.Sprintf("%d forged addr", f))
	}
	if s.Timeouts > 0 {
		parts = append(parts, fmt.Sprintf("%d timeouts", s.Timeouts))
	}
	if s.ServFail > 0 {
		parts = append(parts, fmt.Sprintf("%d SERVFAIL", s.ServFail))
	}
	if s.Refused > 0 {
		parts = append(parts, fmt.Sprintf("%d REFUSED", s.Refused))
	}
	if r := s.RecordsPerAnswer(); r > 2.5 {
		parts = append(parts, fmt.Sprintf("%.0f RR/answer", r))
	}
	if s.Answers > 0 && s.Datagrams > s.Answers*3/2 {
		parts = append(parts, fmt.Sprintf("%.0f datagrams/answer", float64(s.Datagrams)/float64(s.Answers)))
	}
	return strings.Join(parts, ", ")
}

func edeSummary(s emulate.Summary) string {
	if len(s.EDE) == 0 {
		return "-"
	}
	codes := make([]int, 0, len(s.EDE))
	for c := range s.EDE {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s %d", edeName(uint16(c)), s.EDE[uint16(c)]))
	}
	return strings.Join(parts, ", ")
}

func edeName(c uint16) string {
	if n, ok := dns.ExtendedErrorCodeToString[c]; ok {
		return strings.ReplaceAll(n, " ", "")
	}
	return fmt.Sprint("EDE", c)
}

func writeTable(w io.Writer, o tableOptions, rows []tableRow) error {
	fmt.Fprintf(w, "device profile %s (re-asks every %v whatever the TTL, x%d on failure, %v timeout), names %s;\n",
		o.Profile.Name, o.Profile.Interval, o.Profile.FailFactor, o.Profile.Timeout, strings.Join(o.Names, " "))
	fmt.Fprintf(w, "each run: lab honest for %v, then the experiment, %v in all; lab TTL %d s; guard with its default config.\n", o.Baseline, o.Duration, o.TTL)
	if o.DNSSEC {
		fmt.Fprintln(w, "dnssec: the lab signs its zone (keys made per run); the guard validates with option dnssec '1' and the lab's DS as its trust anchor.")
	}
	if len(o.Fresh) > 0 {
		fmt.Fprintf(w, "a second device asks %s from the experiment's start (a name the guard has not cached).\n", strings.Join(o.Fresh, " "))
	}
	fmt.Fprintln(w, "through the guard the device sends EDNS so the guard's Extended DNS Errors can be counted.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "experiment\tdirect: device gets\tdevice q/min\tthrough guard: device gets\tdevice q/min\tSERVFAIL (refused)\tupstream q/min (experiment phase)\tstale answers\tEDE seen")
	for _, r := range rows {
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\terror: %v\n", r.Experiment, strings.SplitN(r.Err.Error(), "\n", 2)[0])
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f\t%d\t%.1f\t%d\t%s\n",
			r.Experiment, gets(r.Direct), perMinute(r.Direct.Queries, o.Duration),
			gets(r.Guarded), perMinute(r.Guarded.Queries, o.Duration), r.Guarded.ServFail, perMinute(r.Upstream, r.UpstreamPhase), r.Guarded.EDE[3], edeSummary(r.Guarded))
	}
	return tw.Flush()
}

func labTable(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 60*time.Second, "run length per experiment")
	baseline := fs.Duration("baseline", 10*time.Second, "honest phase before each experiment")
	ttl := fs.Uint("ttl", 5, "the lab's honest TTL (short, so the guard's cache refreshes during the run)")
	profile := fs.String("profile", "random", "device profile: "+strings.Join(emulate.ProfileNames(), ", "))
	interval := fs.Duration("interval", time.Second, "the re-query interval of a TTL-ignoring profile")
	timeout := fs.Duration("timeout", 500*time.Millisecond, "the device's answer timeout")
	names := fs.String("names", "www.lab.example.,cname-cdn.lab.example.", "names the device asks for")
	fresh := fs.String("fresh", "fresh.lab.example.", "names a second device starts asking after the baseline (not cached by the guard); empty for none")
	only := fs.String("experiments", "", "comma-separated experiments (default: all)")
	parallel := fs.Int("parallel", 16, "experiments run at once")
	binary := fs.String("binary", "", "dnsguard binary playing the guard (default: this one)")
	signed := fs.Bool("dnssec", false, "the lab signs its zone and the guard validates it (its DS as the trust anchor)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := emulate.ProfileByName(*profile)
	if err != nil {
		return err
	}
	p.Timeout = *timeout
	if p.Interval > 0 {
		p.Interval = *interval
	}
	o := tableOptions{Binary: *binary, Baseline: *baseline, Duration: *duration, TTL: uint32(*ttl), Profile: p,
		Names: strings.Split(*names, ","), Fresh: splitList(*fresh), Parallel: *parallel, Experiments: lab.Experiments(), DNSSEC: *signed}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return err
		}
	}
	if *only != "" {
		o.Experiments = nil
		for _, n := range strings.Split(*only, ",") {
			e, err := lab.ParseExperiment(n)
			if err != nil {
				return err
			}
			o.Experiments = append(o.Experiments, e)
		}
	}
	rows := runTable(ctx, o)
	if err := writeTable(stdout, o, rows); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Err != nil {
			return fmt.Errorf("lab table: %s: %w", r.Experiment, r.Err)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
