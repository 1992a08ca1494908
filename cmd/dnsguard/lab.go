//go:build !router

package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/guard/lab"
	"github.com/miekg/dns"
)

const labUsage = `usage: dnsguard lab [serve] [flags]     play an adversarial resolver
       dnsguard lab report [--record FILE]  grade each client seen (study's Table I)
       dnsguard lab device [flags]          run an emulated IoT device against a resolver
       dnsguard lab table [flags]           every experiment, weak device direct vs through the guard

The lab serves a synthetic zone (any name under --suffix: A, AAAA, TXT;
nx* names NXDOMAIN; cname* names a CNAME; self* names the --self address)
and manipulates its answers as the study's experiments do:

  baseline ttl-zero ttl-one ttl-huge forged-a forged-aaaa forged-cname
  empty inflate unavailable amplify-10 amplify-50 amplify-100
  flood-10 flood-50 flood-100          (amplify-N, flood-N: any N <= 1000)

--schedule plays several in turn: baseline:60s,unavailable:60s,baseline
(the last phase plays on). What each client did is written to --record
(JSON, rewritten every --record-every and at exit); 'dnsguard lab report'
reads it. Honest addresses are in 198.51.100.0/24 and 3fff:51::/32
(documentation ranges): a guard in front of the lab must allow them
(config answers: list allow_private '198.51.100.0/24').

--dnssec signs the zone online (ECDSA P-256 keys made at start, NSEC
white lies for negative answers) for queries with DO=1; the forged
experiments alter the signed answers as an attacker without the keys
would. A guard given the logged DS (--ds-out FILE) as its trust_anchor,
with option dnssec '1', refuses them as bogus; 'lab table --dnssec' shows it.

flags:
`

func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			return labServe(ctx, args[1:], stdout, stderr)
		case "report":
			return labReport(args[1:], stdout, stderr)
		case "device":
			return labDevice(ctx, args[1:], stdout, stderr)
		case "table":
			return labTable(ctx, args[1:], stdout, stderr)
		}
	}
	return labServe(ctx, args, stdout, stderr)
}

func labServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		listens, dots, dohs, probes, selfs listFlag
	)
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, labUsage); fs.PrintDefaults() }
	fs.Var(&listens, "listen", "serve Do53 on `IP:PORT`, UDP and TCP (repeatable)")
	fs.Var(&dots, "dot", "serve DNS over TLS on `IP:PORT` (repeatable)")
	fs.Var(&dohs, "doh", "serve DNS over HTTPS on `IP:PORT`, any path (repeatable)")
	fs.Var(&probes, "probe", "accept TCP on `IP:PORT` and count clients that connect (use of a forged address; repeatable)")
	fs.Var(&selfs, "self", "`IP` that self* names resolve to (repeatable)")
	experiment := fs.String("experiment", "baseline", "the experiment to play")
	schedule := fs.String("schedule", "", "experiments in turn, `NAME:DUR,...` (overrides --experiment)")
	suffix := fs.String("suffix", "lab.example.", "the zone served")
	ttl := fs.Uint("ttl", 300, "honest TTL in seconds")
	aNet := fs.String("a-net", "198.51.100.0/24", "honest A answers are drawn from this `PREFIX`")
	aaaaNet := fs.String("aaaa-net", "3fff:51::/32", "honest AAAA answers are drawn from this `PREFIX`")
	forgeA := fs.String("forge-a", "192.0.2.1", "the forged IPv4 `ADDR` (forged-a, forged-cname)")
	forgeAAAA := fs.String("forge-aaaa", "2001:db8::1", "the forged IPv6 `ADDR` (forged-aaaa)")
	inflateTo := fs.Int("inflate-to", 4096, "octets the inflate experiment pads answers to")
	certFile := fs.String("cert", "", "PEM certificate `FILE` for DoT/DoH (default: self-signed, generated now)")
	keyFile := fs.String("key", "", "PEM key `FILE` for --cert")
	certOut := fs.String("cert-out", "", "write the generated certificate to `FILE` (for dnsguard run --upstream-ca); default: print it")
	record := fs.String("record", "lab-record.json", "write what clients did to `FILE`")
	recordEvery := fs.Duration("record-every", 2*time.Second, "how often the record file is rewritten")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	signed := fs.Bool("dnssec", false, "sign the zone (new ECDSA keys each start): answers to DO queries carry RRSIG/NSEC; the forged experiments then fail validation")
	dsOut := fs.String("ds-out", "", "with --dnssec, write the zone's DS record to `FILE` (for list trust_anchor); default: log it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lab: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if len(listens)+len(dots)+len(dohs) == 0 {
		fmt.Fprintln(stderr, "lab: give at least one of --listen, --dot, --doh")
		return errUsage
	}
	sched, err := lab.ParseSchedule(*experiment)
	if *schedule != "" {
		sched, err = lab.ParseSchedule(*schedule)
	}
	if err != nil {
		return err
	}
	zone := lab.Zone{Suffix: dns.Fqdn(*suffix), TTL: uint32(*ttl)}
	if zone.ANet, err = netip.ParsePrefix(*aNet); err != nil || !zone.ANet.Addr().Is4() {
		return fmt.Errorf("lab: --a-net %q is not an IPv4 prefix", *aNet)
	}
	if zone.AAAANet, err = netip.ParsePrefix(*aaaaNet); err != nil || zone.AAAANet.Addr().Is4() {
		return fmt.Errorf("lab: --aaaa-net %q is not an IPv6 prefix", *aaaaNet)
	}
	for _, s := range selfs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("lab: --self %q: %w", s, err)
		}
		zone.Self = append(zone.Self, a)
	}
	forgery := lab.DefaultForgery()
	forgery.InflateTo = *inflateTo
	if forgery.A, err = netip.ParseAddr(*forgeA); err != nil || !forgery.A.Is4() {
		return fmt.Errorf("lab: --forge-a %q is not an IPv4 address", *forgeA)
	}
	if forgery.AAAA, err = netip.ParseAddr(*forgeAAAA); err != nil || forgery.AAAA.Is4() {
		return fmt.Errorf("lab: --forge-aaaa %q is not an IPv6 address", *forgeAAAA)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: parseLevel(*logLevel)}))
	var signer *lab.Signer
	if *signed {
		if signer, err = lab.NewSigner(zone.Suffix, nil); err != nil {
			return err
		}
		ds := signer.DS().String()
		log.Info("lab dnssec: zone signed; trust anchor", "ds", ds)
		if *dsOut != "" {
			if err := os.WriteFile(*dsOut, []byte(ds+"\n"), 0o644); err != nil {
				return fmt.Errorf("lab: --ds-out: %w", err)
			}
		}
	}
	l := lab.New(lab.Config{Zone: zone, Forgery: forgery, Schedule: sched, Log: log, Signer: signer})

	var tlsCfg *tls.Config
	if len(dots)+len(dohs) > 0 {
		if tlsCfg, err = labTLS(*certFile, *keyFile, *certOut, append(append(dots, dohs...), "localhost"), stdout); err != nil {
			return err
		}
	}
	ls, err := l.Listen(lab.Endpoints{Do53: listens, DoT: dots, DoH: dohs, Probe: probes}, tlsCfg)
	if err != nil {
		return err
	}
	return l.Run(ctx, ls, *record, *recordEvery)
}

// labTLS loads or generates the DoT/DoH certificate.
func labTLS(certFile, keyFile, certOut string, hosts []string, stdout io.Writer) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1", "dot"}}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("lab: certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		return cfg, nil
	}
	var names []string
	for _, h := range hosts {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		names = append(names, h)
	}
	cert, pemBytes, err := lab.SelfSigned(names)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{cert}
	if certOut != "" {
		if err := os.WriteFile(certOut, pemBytes, 0o644); err != nil {
			return nil, fmt.Errorf("lab: --cert-out: %w", err)
		}
	} else {
		stdout.Write(pemBytes)
	}
	return cfg, nil
}

func labReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	record := fs.String("record", "lab-record.json", "the record `FILE` a running or finished lab wrote")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := lab.ReadSnapshot(*record)
	if err != nil {
		return err
	}
	return lab.WriteReport(stdout, s)
}

func labDevice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab device", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "random", "device profile: "+strings.Join(emulate.ProfileNames(), ", "))
	target := fs.String("target", "", "resolver `IP:PORT` (default: the profile's hard-coded 8.8.8.8:53)")
	local := fs.String("local", "", "source `IP` (e.g. 127.0.0.7)")
	names := fs.String("names", "www.lab.example.,cname-cdn.lab.example.", "comma-separated names to resolve")
	qtype := fs.String("type", "A", "query type")
	duration := fs.Duration("duration", 30*time.Second, "how long to run")
	interval := fs.Duration("interval", 0, "override the re-query interval of a TTL-ignoring profile")
	timeout := fs.Duration("timeout", 0, "override the profile's answer timeout")
	seed := fs.Uint64("seed", 1, "seed for ports and IDs")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := emulate.ProfileByName(*profile)
	if err != nil {
		return err
	}
	if *interval > 0 && p.Interval > 0 {
		p.Interval = *interval
	}
	if *timeout > 0 {
		p.Timeout = *timeout
	}
	cfg := emulate.Config{Profile: p, Seed: *seed}
	if *target != "" {
		if cfg.Target, err = netip.ParseAddrPort(*target); err != nil {
			return fmt.Errorf("lab device: --target: %w", err)
		}
	}
	if *local != "" {
		if cfg.Local, err = netip.ParseAddr(*local); err != nil {
			return fmt.Errorf("lab device: --local: %w", err)
		}
	}
	t, ok := dns.StringToType[strings.ToUpper(*qtype)]
	if !ok {
		return fmt.Errorf("lab device: unknown type %q", *qtype)
	}
	d := emulate.New(cfg)
	defer d.Close()
	rctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	d.Run(rctx, t, strings.Split(*names, ",")...)
	d.Close()
	s := emulate.Summarize(d)
	fmt.Fprintf(stdout, "profile %s: %d queries, %d answered with an address, %d failed; %d datagrams received; records per answer %.1f\n",
		p.Name, s.Queries, s.Usable, s.Failed, s.Datagrams, s.RecordsPerAnswer())
	return nil
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
	o := lab.TableOptions{Binary: *binary, Baseline: *baseline, Duration: *duration, TTL: uint32(*ttl), Profile: p,
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
	rows := lab.RunTable(ctx, o)
	if err := lab.WriteTable(stdout, o, rows); err != nil {
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
