package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/intercept"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/localzone"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
)

// routerSide is the router half of the guard, beside the query chain:
// interception (nftables, NFLOG), device identity (netlink neighbours,
// DHCP leases), per-device state (bbolt) and who may be answered. It owns
// every goroutine it starts and joins them all in Close, before the
// nftables table is removed (so nothing can put it back afterwards).
type routerSide struct {
	// Stages go into the chain after the listener and before limits and
	// cache, outermost first (identify, local answers, ...).
	Stages []stage.Middleware
	// Access is who the listener answers, kept current as the router's
	// addresses and LAN prefixes change.
	Access *listen.Access
	// Reload applies what a config reload may change without a restart:
	// the device classes. (Interception settings change on restart.)
	Reload func(*policy.Config)
	// Counters count the chain's answers and the bypass attempts for the
	// API and /metrics (the first of Stages counts); Registry is the
	// device table they serve.
	Counters *control.Counters
	Registry *device.Registry
	// State is the state file (nil: none); the DNSSEC trust anchors'
	// RFC 5011 state is kept in it.
	State *device.Store
	// Clock is the DNSSEC clock check, kept across reloads (nil: each
	// chain gets one of its own); set by cmdRun.
	Clock *bootClock

	cfg      *policy.Config
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closers  []func(context.Context) error
	table    *intercept.Table
	observer bool        // the NFLOG observer runs
	observed atomic.Bool // the observer runs and the installed table logs to it

	allowClient atomic.Pointer[[]netip.Prefix] // allow_client, replaced on reload
	reallow     chan struct{}                  // allow_client changed
}

// Router-side timings.
const (
	tableCheckEvery = time.Second      // the watchdog puts a removed table back within this
	dohRefreshEvery = 30 * time.Minute // DoH host names are resolved again this often
	macWait         = 50 * time.Millisecond
)

// goJoined runs f on a goroutine Close waits for.
func (r *routerSide) goJoined(f func()) {
	r.wg.Add(1)
	go func() { defer r.wg.Done(); f() }()
}

// Close stops everything the router side started, joins its goroutines,
// then removes the nftables table and flushes state.
func (r *routerSide) Close(ctx context.Context) error {
	r.cancel()
	r.wg.Wait()
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i](ctx))
	}
	return errors.Join(errs...)
}

// startRouterSide starts what cfg asks for: the device store at
// cfg.State.File, the neighbour table, the device registry, the NFLOG
// observer when cfg.Intercept.LAN is non-empty. The nftables table comes
// later, from Intercept, once the guard listens.
func startRouterSide(ctx context.Context, cfg *policy.Config, log *slog.Logger) (*routerSide, error) {
	r := &routerSide{cfg: cfg, log: log, reallow: make(chan struct{}, 1), Counters: control.NewCounters(0)}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.allowClient.Store(&cfg.AllowClient)
	fail := func(err error) (*routerSide, error) {
		r.Close(context.Background())
		return nil, err
	}
	ic := cfg.Intercept
	intercepting := len(ic.LAN) > 0

	var store *device.Store
	if cfg.State.File != "" {
		var err error
		store, err = device.OpenStore(cfg.State.File, cfg.State.Persist, log.With("part", "state"))
		switch {
		case errors.Is(err, device.ErrLocked):
			// Another guard runs on this file: keep records in memory
			// and leave its file and control socket alone.
			log.Error("state file held by another process; device records kept in memory only", "file", cfg.State.File)
			store = nil
		case err != nil:
			return fail(err)
		default:
			r.closers = append(r.closers, func(context.Context) error { return store.Close() })
			r.State = store
		}
	}

	// The neighbour callback and the observer may run before the registry
	// exists: they read it through an atomic.
	var regp atomic.Pointer[device.Registry]
	nflogGroup := uint16(0)
	if intercepting && ic.NFLogGroup != 0 {
		obs, err := intercept.Observe(r.ctx, ic.NFLogGroup, 0, func(p intercept.Packet) {
			if reg := regp.Load(); reg != nil {
				observePacket(reg, p)
			}
		}, log.With("part", "nflog"))
		if err != nil {
			// No NFLOG in this kernel (kmod-nfnetlink-log missing), or
			// the group is taken: serve and intercept without observing,
			// and without log rules in the table.
			log.Warn("NFLOG unavailable: serving without observing devices before the redirect (no hard-coded resolver or bypass records)",
				"group", ic.NFLogGroup, "err", err)
		} else {
			r.observer, nflogGroup = true, ic.NFLogGroup
			r.closers = append(r.closers, func(context.Context) error { return obs.Close() })
		}
	}

	if intercepting {
		var err error
		r.table, err = intercept.NewTable(intercept.Config{
			LAN: ic.LAN, GuardPort: guardPort(ic), RedirectDNS: ic.RedirectDNS,
			BlockDoT: ic.BlockDoT, BlockDoH: ic.BlockDoH, NFLogGroup: nflogGroup,
			// The observer has packets to read only while the
			// table logs: until then identify feeds the graders.
			OnInstall: func(logging bool) { r.observed.Store(r.observer && logging) },
		}, log.With("part", "nftables"))
		if err != nil {
			return fail(err)
		}
	}

	neigh, err := device.WatchNeighbours(r.ctx, ic.LAN, func(mac string) {
		if reg := regp.Load(); reg != nil {
			reg.Gone(mac)
		}
	}, log.With("part", "neighbours"))
	if err != nil {
		if intercepting {
			return fail(err)
		}
		log.Warn("no neighbour table: devices known by address only", "err", err)
		neigh = nil
	} else {
		r.closers = append(r.closers, func(context.Context) error { neigh.Wait(); return nil })
	}

	r.Access = listen.NewAccess(r.allowed(neigh))
	if intercepting {
		r.goJoined(func() { r.followAddresses(neigh) })
	}
	log.Info("answering clients", "allow", r.Access.Prefixes(), "lan", ic.LAN)

	opts := device.Options{
		Store: store, Persist: cfg.State.Persist, PersistInterval: cfg.State.PersistInterval,
		FlushInterval: cfg.State.FlushInterval, Leases: cfg.State.Leases, Classes: cfg.Classes,
		Neighbours: neigh, Log: log.With("part", "devices"), OnBypass: r.Counters.Bypass,
	}
	if r.table != nil {
		table := r.table
		opts.OnExempt = func(macs []net.HardwareAddr) {
			if err := table.SetExempt(macs, nil); err != nil {
				log.Error("updating exempt devices", "err", err)
			}
		}
	}
	reg, err := device.NewRegistry(opts)
	if err != nil {
		return fail(err)
	}
	regp.Store(reg)
	r.Registry = reg
	regDone := make(chan struct{})
	go func() { reg.Run(r.ctx); close(regDone) }()
	r.closers = append(r.closers, func(context.Context) error {
		<-regDone
		st := reg.Stats()
		log.Info("device identification totals", "mac_waits", st.MACWaits, "mac_waits_timed_out", st.MACWaitsTimedOut)
		return reg.Close()
	})

	if store != nil {
		ctl, err := control.ServeSocket(control.SocketPath(cfg.State.File), reg, log.With("part", "control"))
		if err != nil {
			return fail(err)
		}
		r.closers = append(r.closers, ctl.Close)
	}

	idopts := device.IdentifyOptions{Feed: true, Observed: &r.observed}
	if intercepting {
		// A LAN client's first query may come before the neighbour
		// table (or the observer) has its MAC: wait for it, briefly.
		idopts.WaitForMAC = macWait
	}
	r.Stages = []stage.Middleware{r.Counters.Stage(), device.Identify(reg, idopts), localzone.Stage()}
	r.Reload = func(next *policy.Config) {
		reg.SetClasses(next.Classes)
		r.allowClient.Store(&next.AllowClient)
		if intercepting {
			select {
			case r.reallow <- struct{}{}:
			default:
			}
		} else {
			r.Access.Set(r.allowed(nil), nil, nil)
		}
	}
	return r, nil
}

// allowed is who may be answered: loopback and allow_client; with LAN
// interfaces also the router's own addresses and the LAN prefixes.
func (r *routerSide) allowed(neigh *device.Neighbours) []netip.Prefix {
	out := append(listen.Loopback(), *r.allowClient.Load()...)
	if neigh == nil || len(r.cfg.Intercept.LAN) == 0 {
		return out
	}
	local, lanNets, _ := neigh.Addresses()
	for _, a := range local {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return append(out, lanNets...)
}

// followAddresses keeps Access current as the router's addresses and the
// LAN prefixes come and go (a new IPv6 prefix, a DHCP WAN lease), and as
// allow_client is reloaded.
func (r *routerSide) followAddresses(neigh *device.Neighbours) {
	for {
		changed := neigh.AddressesChanged()
		_, _, lanIdx := neigh.Addresses()
		r.Access.Set(r.allowed(neigh), lanIdx, r.cfg.Intercept.LAN)
		select {
		case <-r.ctx.Done():
			return
		case <-changed:
		case <-r.reallow:
		}
	}
}

// Intercept installs the nftables table, once the guard listens on
// listenAddrs, and keeps it there. A table the kernel refuses is logged
// and the guard goes on serving its listen addresses without
// interception (the watchdog keeps trying); a table without NFLOG
// logging leaves the guard serving without observation.
func (r *routerSide) Intercept(listenAddrs []string) {
	if r.table == nil {
		return
	}
	ic := r.cfg.Intercept
	port := guardPort(ic)
	if !listensOn(listenAddrs, port) {
		r.log.Warn("no listen address on the guard port: redirected queries will find nothing", "guard_port", port, "listen", listenAddrs)
	}
	if err := r.table.SetDoH(ic.DoHAddresses); err != nil {
		r.log.Error("filling the DoH set", "err", err)
	}
	r.closers = append(r.closers, func(context.Context) error { return r.table.Remove() })
	if err := r.table.Install(); err != nil {
		r.log.Error("nftables table not installed: serving the listen addresses without interception", "err", err, "listen", listenAddrs)
	} else {
		r.log.Info("intercepting LAN DNS", "lan", ic.LAN, "table", "inet "+intercept.TableName, "guard_port", port, "missing", r.table.Missing())
	}
	r.goJoined(func() { r.table.Watch(r.ctx, tableCheckEvery) })
	if ic.BlockDoH && len(ic.DoHHosts) > 0 {
		server := dohResolver(listenAddrs, port)
		if !server.IsValid() {
			r.log.Warn("no listen address to resolve DoH host names through", "part", "doh")
			return
		}
		r.goJoined(func() {
			r.table.RefreshDoH(r.ctx, intercept.DoHRefresh{
				Fixed: ic.DoHAddresses, Hosts: ic.DoHHosts, Every: dohRefreshEvery, Log: r.log.With("part", "doh"),
				Lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
					return upstream.LookupHost(ctx, server, host)
				},
			})
		})
	}
}

func guardPort(ic policy.Intercept) uint16 {
	if ic.GuardPort == 0 {
		return 53
	}
	return ic.GuardPort
}

// observePacket turns a logged packet into a device observation.
func observePacket(reg *device.Registry, p intercept.Packet) {
	if len(p.MAC) != 6 {
		return
	}
	mac := p.MAC.String()
	switch p.Kind {
	case intercept.KindDNS:
		if p.DNS == nil {
			return // a TCP segment without a query in it
		}
		reg.ObserveQuery(mac, p.Dst, device.Observation{Query: p.DNS, Src: p.Src, TCP: p.TCP})
	case intercept.KindDoT, intercept.KindDoQ, intercept.KindDoH:
		reg.ObserveBypass(mac, p.Src, p.Dst, string(p.Kind))
	}
}

// dohResolver is where the guard sends its own lookups of DoH host
// names: a listen address on the guard port, else any listen address (an
// unspecified address becomes loopback), so they go through its chain
// and upstreams.
func dohResolver(listen []string, port uint16) netip.AddrPort {
	server := resolverAddr(listen, port)
	for _, l := range listen {
		if ap, err := netip.ParseAddrPort(l); err == nil && !server.IsValid() {
			server = resolverAddr(listen, ap.Port())
		}
	}
	return server
}

// listensOn reports whether one of the listen addresses has port.
func listensOn(listen []string, port uint16) bool {
	return resolverAddr(listen, port).IsValid()
}

// resolverAddr picks a listen address with port to send the guard's own
// queries to; an unspecified address becomes loopback.
func resolverAddr(listen []string, port uint16) netip.AddrPort {
	for _, l := range listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil || ap.Port() != port {
			continue
		}
		a := ap.Addr()
		if a.IsUnspecified() {
			if a.Is4() {
				a = netip.MustParseAddr("127.0.0.1")
			} else {
				a = netip.IPv6Loopback()
			}
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}
