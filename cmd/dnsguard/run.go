package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/intercept"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
)

const runUsage = `usage: dnsguard run [flags]

Runs the guard. Without --config it uses the embedded default
(listen on 127.0.0.1:5337 and [::1]:5337, DoT/DoH upstreams by IP).
Flags override the config file. SIGHUP reloads the config (the cache is
kept); SIGUSR1 says NTP has synced (--dnssec-wait-ntp); SIGTERM stops
cleanly.

Upstream URLs:
  tls://IP:PORT?sni=NAME[&pin=sha256/BASE64]    DNS over TLS
  https://NAME/dns-query?ip=IP[&pin=...]        DNS over HTTPS (ip= is dialled)
  udp://IP:PORT, tcp://IP:PORT                  cleartext DNS

flags:
`

// runFlags are the command-line settings laid over the config file.
type runFlags struct {
	config     string
	listen     listFlag
	upstreams  listFlag
	upstreamCA string
	lan        listFlag
	state      string
	logLevel   string
	check      bool
	pprof      string
	dnssec     optBool
	waitNTP    bool
	readyFile  string
}

// optBool is a boolean flag that knows whether it was given, so that an
// absent flag leaves the config file's value.
type optBool struct{ set, v bool }

func (b *optBool) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatBool(b.v)
}

func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.set, b.v = true, v
	return nil
}

func (b *optBool) IsBoolFlag() bool { return true }

func (f *runFlags) load() (*policy.Config, error) {
	cfg, err := policy.Load(f.config)
	if err != nil {
		return nil, err
	}
	if len(f.listen) > 0 {
		cfg.Listen = f.listen
	}
	if len(f.upstreams) > 0 {
		cfg.Upstreams = f.upstreams
	}
	if f.upstreamCA != "" {
		cfg.UpstreamCA = f.upstreamCA
	}
	if len(f.lan) > 0 {
		cfg.Intercept.LAN = f.lan
	}
	if f.state != "" {
		cfg.State.File = f.state
	}
	if f.logLevel != "" {
		cfg.LogLevel = f.logLevel
	}
	if f.dnssec.set {
		cfg.DNSSEC.Enabled = f.dnssec.v
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	return cfg, nil
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, runUsage); fs.PrintDefaults() }
	fs.StringVar(&f.config, "config", "", "config `FILE` (UCI syntax, e.g. /etc/config/dnsguard); default: embedded")
	fs.Var(&f.listen, "listen", "serve on `IP:PORT` (UDP and TCP; repeatable)")
	fs.Var(&f.upstreams, "upstream", "upstream `URL` (repeatable)")
	fs.StringVar(&f.upstreamCA, "upstream-ca", "", "PEM `FILE` trusted for DoT/DoH upstreams besides the system roots")
	fs.Var(&f.lan, "lan", "intercept DNS from LAN interface `IFACE` (repeatable)")
	fs.StringVar(&f.state, "state", "", "per-device state `FILE` (bbolt)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fs.Var(&f.dnssec, "dnssec", "validate answers with DNSSEC (--dnssec=false: off); default: the config's option dnssec, on")
	fs.BoolVar(&f.waitNTP, "dnssec-wait-ntp", false, "do not check DNSSEC signature times until told NTP has synced (SIGUSR1), even with the clock past the build time (the OpenWrt init script sets it when sysntpd is enabled)")
	fs.StringVar(&f.readyFile, "ready-file", "", "once every listener serves, write `FILE` (atomically: \"pid N\", then \"listen ADDR\" per bound address and \"api ADDR\" when the API serves, \"reloads N\" and \"reload_failures N\"), again after each SIGHUP; removed at exit. For supervisors and tests: wait for the file, not for a log line")
	fs.BoolVar(&f.check, "check", false, "build everything the config asks for (upstreams, pins, CA file, classes) without opening a socket, and exit; a --config file must have its \"config dnsguard\" section")
	if profilesBuilt {
		fs.StringVar(&f.pprof, "pprof", "", "serve Go profiles (net/http/pprof) on `IP:PORT`, for benchmarks")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "run: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	if f.check {
		if err := checkConfig(cfg, f.config); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "config ok")
		return nil
	}
	ready := &readyFile{path: f.readyFile}
	if err := ready.clear(); err != nil {
		return err
	}
	defer ready.remove()
	// SIGUSR1 (NTP synced, from the hotplug script) must not kill a guard
	// still starting: caught from here on.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	logLevel := new(slog.LevelVar)
	logLevel.Set(parseLevel(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	runtimeLimits(cfg, os.Getenv)

	if f.pprof != "" {
		stopProfiles, err := serveProfiles(f.pprof)
		if err != nil {
			return err
		}
		defer stopProfiles()
	}
	c := cache.New(cfg.Cache, log.With("stage", "cache"), nil)
	// Closed last (deferred first) if serving never started: its flight
	// workers joined once the listener and every chain are done.
	defer c.Close()
	// The router side's parts stop working with ctx (a signal); it is
	// released, its goroutines joined and its table removed, only when
	// cmdRun returns, after the queries in progress are done.
	router, err := newRouterSide(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("router side: %w", err)
	}
	routerCtx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	defer func() {
		stopRouter()
		if err := <-routerDone; err != nil {
			log.Error("stopping router side", "err", err)
		}
	}()
	// Upstream pools live across reloads (kept when their settings are
	// unchanged); the cache forgets the failures it recorded while every
	// upstream was down as soon as one answers again.
	ups := upstream.NewPools(log)
	router.Clock = bootClockFor(router.State, log.With("stage", "dnssec"), f.waitNTP)
	g, err := buildGuard(cfg, c, router, log, ups)
	if err != nil {
		return err
	}
	srv := listen.New(g.handler, listen.Options{
		TCPIdleTimeout:  cfg.TCPIdleTimeout,
		TCPMaxConns:     cfg.TCPMaxConns,
		TCPMaxPerClient: cfg.TCPMaxPerClient,
		Access:          router.Access,
	}, log.With("stage", "listen"))
	if err := bindListeners(srv, cfg, log); err != nil {
		g.close(ctx)
		return err
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	// The listener's queries do not give up when serving stops; the
	// cache's flights they wait on end then instead, so that Serve
	// returns without waiting for upstreams (its sockets are closed: no
	// answer could be sent).
	cacheClosed := make(chan struct{})
	go func() { <-serveCtx.Done(); c.Close(); close(cacheClosed) }()
	defer func() { stopServe(); <-cacheClosed }()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx) }()
	// Replaced chains draining, until drainTimeout or the stop.
	var drains sync.WaitGroup
	drainCtx, stopDrains := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDrains()
	// Only now, with the sockets bound and served, is LAN port 53
	// redirected to the guard.
	log.Info("listening", "addrs", srv.Addrs())
	router.Intercept(cfg.ListenAddrs())
	// The API is beside DNS: when it cannot start, DNS goes on.
	api, err := startAPI(cfg, router, srv, c, ups, log)
	if err != nil {
		log.Error("api not served", "err", err)
	}
	if api != nil {
		defer api.Close(context.WithoutCancel(ctx))
	}
	log.Info("dnsguard serving", "version", version, "listen", srv.Addrs(), "upstreams", cfg.Upstreams)
	// The ready file comes after every line logged while starting: whoever
	// waits for it and reads the log finds them.
	ready.listen = srv.Addrs()
	if api != nil {
		ready.api = api.Addr().String()
	}
	readyErr := ready.write()
	if readyErr != nil {
		// Whoever waits for the file would wait forever: stop.
		log.Error("stopping", "err", readyErr)
		stopServe()
	}
	for {
		select {
		case <-usr1:
			router.Clock.NTPSynced()
		case <-hup:
			next, err := f.load()
			if err != nil {
				log.Error("reload failed; keeping the running config", "err", err)
				ready.failed++
				ready.rewrite(log)
				continue
			}
			if fmt.Sprint(next.API) != fmt.Sprint(cfg.API) {
				log.Warn("api settings change only on restart")
			}
			if fmt.Sprint(next.ListenAddrs()) != fmt.Sprint(cfg.ListenAddrs()) {
				log.Warn("listen addresses change only on restart", "running", cfg.ListenAddrs(), "config", next.ListenAddrs())
			}
			ng, err := buildGuard(next, c, router, log, ups)
			if err != nil {
				log.Error("reload failed; keeping the running config", "err", err)
				ready.failed++
				ready.rewrite(log)
				continue
			}
			c.SetPolicy(next.Cache)
			router.Reload(next)
			logLevel.Set(parseLevel(next.LogLevel))
			srv.SetHandler(ng.handler)
			// The old chain drains: its queries in progress finish on it
			// (and on its upstream pool, unless the new chain shares it).
			drains.Add(1)
			go func(old *guardChain) {
				defer drains.Done()
				dctx, cancel := context.WithTimeout(drainCtx, drainTimeout)
				defer cancel()
				old.close(dctx)
			}(g)
			g, cfg = ng, next
			log.Info("config reloaded", "upstreams", cfg.Upstreams)
			ready.reloads++
			ready.rewrite(log)
		case err := <-done:
			// Queries in progress get a short while to finish, on the
			// running chain and on any still draining.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			stop := context.AfterFunc(dctx, stopDrains)
			g.close(dctx)
			drains.Wait()
			stop()
			cancel()
			st := &srv.Stats
			log.Info("listener totals", "queries", st.Queries.Load(), "malformed", st.Malformed.Load(),
				"refused_clients", st.Denied.Load(), "dropped", st.Dropped.Load(), "tcp_refused", st.TCPRefused.Load())
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			if readyErr != nil {
				return readyErr
			}
			log.Info("dnsguard stopped")
			return nil
		}
	}
}

// bindListeners binds the listen addresses. An explicit list must bind
// whole; the addresses derived from LAN interfaces (0.0.0.0 and [::] on
// guard_port) may lack a family the system does not have (a router
// without IPv6 still serves IPv4), but a family whose port is taken
// (another resolver holds it) is an error: serving the other family
// alone would leave that family's LAN DNS and the router's own
// resolver to whatever holds the port while the redirect points at it,
// and keep the init script's fail-safe from acting.
func bindListeners(srv *listen.Server, cfg *policy.Config, log *slog.Logger) error {
	if !cfg.ListenDerived() {
		return srv.Listen(cfg.ListenAddrs())
	}
	var errs []error
	for _, a := range cfg.ListenAddrs() {
		if err := srv.ListenOne(a); err != nil {
			if !familyMissing(err) {
				return err
			}
			log.Warn("not listening on one address family", "addr", a, "err", err)
			errs = append(errs, err)
		}
	}
	if len(srv.Addrs()) == 0 {
		return errors.Join(errs...)
	}
	return nil
}

// familyMissing reports whether a listen error means the system lacks
// the address family (no IPv6), as opposed to the port being taken or
// not permitted.
func familyMissing(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT) ||
		errors.Is(err, syscall.EADDRNOTAVAIL)
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// checkConfig builds what the daemon builds from cfg (the upstream pool
// with its URLs, pins and CA file, the answer shield, the limits, local
// names, the device classes, the interception table's settings) without
// opening a socket, so that --check refuses what the daemon would. A
// config file given by path must hold the main section (config dnsguard):
// an empty or comment-only file is a broken install, not "all defaults".
func checkConfig(cfg *policy.Config, path string) error {
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		sections, err := policy.ParseUCI(f, path)
		f.Close()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(sections, func(s policy.Section) bool { return s.Type == "dnsguard" }) {
			return fmt.Errorf("%s: no \"config dnsguard\" section (the file is empty or holds only comments or other sections)", path)
		}
	}
	discard := slog.New(slog.DiscardHandler)
	c := cache.New(cfg.Cache, discard, nil)
	defer c.Close()
	g, err := buildGuard(cfg, c, &routerSide{Counters: control.NewCounters(0)}, discard, nil)
	if err != nil {
		return err
	}
	g.close(context.Background())
	if ic := cfg.Intercept; len(ic.LAN) > 0 {
		if _, err := intercept.NewTable(intercept.Config{
			LAN: ic.LAN, GuardPort: ic.GuardPort, RedirectDNS: ic.RedirectDNS,
			BlockDoT: ic.BlockDoT, BlockDoH: ic.BlockDoH, NFLogGroup: ic.NFLogGroup,
		}, discard); err != nil {
			return err
		}
	}
	return nil
}

// runtimeLimits applies the configured memory limit and CPU count to the
// Go runtime, where the environment (GOMEMLIMIT, GOMAXPROCS) does not set
// them.
func runtimeLimits(cfg *policy.Config, getenv func(string) string) {
	if cfg.MemoryLimit > 0 && getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	if cfg.CPUs > 0 && getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cfg.CPUs)
	}
}
