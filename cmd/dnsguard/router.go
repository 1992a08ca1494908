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
	"github.com/dnsguard/dnsguard/guard/dnssec"
	"github.com/dnsguard/dnsguard/guard/intercept"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
)

// routerSide is the router half of the guard, beside the query chain:
// interception (nftables, NFLOG), device identity (netlink neighbours,
// DHCP leases), per-device state (bbolt) and who may be answered.
//
// newRouterSide opens and builds its parts; Run runs it: every goroutine
// of the router side is started by Run (or by a part Run closes: the
// NFLOG observer, the neighbour watcher) and joined before Run returns,
// then the nftables table is removed (so nothing can put it back
// afterwards) and the state flushed and closed.
type routerSide struct {
	// Identify is the identify stage over Registry (buildGuard puts it
	// in the chain, after Counters); nil: none.
	Identify stage.Stage
	// Access is who the listener answers, kept current as the router's
	// addresses and LAN prefixes change.
	Access *listen.Access
	// Counters count the chain's answers and the bypass attempts for the
	// API and /metrics (the outermost stage counts); Registry is the
	// device table they serve.
	Counters *control.Counters
	Registry *device.Registry
	// State is the state file (nil: none); the DNSSEC trust anchors'
	// RFC 5011 state is kept in it.
	State *device.Store
	// Clock is the DNSSEC clock check, kept across reloads (nil: each
	// chain gets one of its own); set by cmdRun.
	Clock *dnssec.BootClock

	cfg          *policy.Config
	log          *slog.Logger
	intercepting bool               // LAN interfaces are given
	ctx          context.Context    // the parts work until it ends
	cancel       context.CancelFunc // ends ctx (at the latest when Run ends)
	obs          *intercept.Observer
	neigh        *device.Neighbours
	ctl          *control.Socket
	table        *intercept.Table
	observer     bool        // the NFLOG observer runs
	observed     atomic.Bool // the observer runs and the installed table logs to it

	allowClient atomic.Pointer[[]netip.Prefix] // allow_client, replaced on reload
	reallow     chan struct{}                  // allow_client changed
	intercepted chan []string                  // Intercept to Run: the table is in, for these listen addresses

	mu      sync.Mutex
	stopped bool // Run is tearing down: no more interception
	ownsTab bool // Intercept ran: the table is removed at the end
}

// Router-side timings.
const (
	tableCheckEvery = time.Second      // the watchdog puts a removed table back within this
	dohRefreshEvery = 30 * time.Minute // DoH host names are resolved again this often
	macWait         = 50 * time.Millisecond
)

// newRouterSide builds what cfg asks for: the device store at
// cfg.State.File, the neighbour table, the device registry, the NFLOG
// observer and the nftables table (not installed) when cfg.Intercept.LAN
// is non-empty. The parts work until ctx ends; Run must be called to run
// them and, at its end, to release them. The table goes in later, from
// Intercept, once the guard listens.
func newRouterSide(ctx context.Context, cfg *policy.Config, log *slog.Logger) (*routerSide, error) {
	r := &routerSide{cfg: cfg, log: log, reallow: make(chan struct{}, 1), intercepted: make(chan []string, 1),
		Counters: control.NewCounters(0), intercepting: len(cfg.Intercept.LAN) > 0}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.allowClient.Store(&cfg.AllowClient)
	fail := func(err error) (*routerSide, error) {
		r.cancel()
		r.release()
		return nil, err
	}
	ic := cfg.Intercept

	if cfg.State.File != "" {
		store, err := device.OpenStore(cfg.State.File, cfg.State.Persist, log.With("part", "state"))
		switch {
		case errors.Is(err, device.ErrLocked):
			// Another guard runs on this file: keep records in memory
			// and leave its file and control socket alone.
			log.Error("state file held by another process; device records kept in memory only", "file", cfg.State.File)
		case err != nil:
			return fail(err)
		default:
			r.State = store
		}
	}

	// The neighbour callback and the observer may run before the registry
	// exists: they read it through an atomic.
	var regp atomic.Pointer[device.Registry]
	nflogGroup := uint16(0)
	if r.intercepting && ic.NFLogGroup != 0 {
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
			r.obs, r.observer, nflogGroup = obs, true, ic.NFLogGroup
		}
	}

	if r.intercepting {
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
		if r.intercepting {
			return fail(err)
		}
		log.Warn("no neighbour table: devices known by address only", "err", err)
	} else {
		r.neigh = neigh
	}

	r.Access = listen.NewAccess(r.allowed())
	log.Info("answering clients", "allow", r.Access.Prefixes(), "lan", ic.LAN)

	opts := device.Options{
		Store: r.State, Persist: cfg.State.Persist, PersistInterval: cfg.State.PersistInterval,
		FlushInterval: cfg.State.FlushInterval, Leases: cfg.State.Leases, Classes: cfg.Classes,
		Neighbours: r.neigh, Log: log.With("part", "devices"), OnBypass: r.Counters.Bypass,
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

	if r.State != nil {
		ctl, err := control.ServeSocket(control.SocketPath(cfg.State.File), reg, log.With("part", "control"))
		if err != nil {
			return fail(err)
		}
		r.ctl = ctl
	}

	idopts := device.IdentifyOptions{Feed: true, Observed: &r.observed}
	if r.intercepting {
		// A LAN client's first query may come before the neighbour
		// table (or the observer) has its MAC: wait for it, briefly.
		idopts.WaitForMAC = macWait
	}
	r.Identify = device.NewIdentify(reg, idopts)
	return r, nil
}

// Run runs the router side until ctx ends: the registry's flushing and
// persisting, the following of the router's addresses, and once Intercept
// has put the table in, its watchdog and the DoH set's refresher. Then it
// ends the parts' work, joins every goroutine, removes the table and
// closes the control socket, the registry (a last flush) and the store.
func (r *routerSide) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { r.Registry.Run(r.ctx) })
	if r.intercepting && r.neigh != nil {
		wg.Go(r.followAddresses)
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case listenAddrs := <-r.intercepted:
			wg.Go(func() { r.table.Watch(r.ctx, tableCheckEvery) })
			if refresh, ok := r.dohRefresh(listenAddrs); ok {
				wg.Go(func() { r.table.RefreshDoH(r.ctx, refresh) })
			}
		}
	}
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.cancel()
	wg.Wait()
	st := r.Registry.Stats()
	r.log.Info("device identification totals", "mac_waits", st.MACWaits, "mac_waits_timed_out", st.MACWaitsTimedOut)
	return r.release()
}

// release removes the table (when Intercept put it in) and closes what
// newRouterSide opened, the last opened first, once nothing runs on
// them: the parts' context has ended (the observer and the neighbour
// watcher are joined here) and Run's goroutines are joined.
func (r *routerSide) release() error {
	var errs []error
	if r.ownsTab {
		errs = append(errs, r.table.Remove())
	}
	if r.ctl != nil {
		errs = append(errs, r.ctl.Close(context.Background()))
	}
	if r.Registry != nil {
		errs = append(errs, r.Registry.Close())
	}
	if r.neigh != nil {
		r.neigh.Wait()
	}
	if r.obs != nil {
		errs = append(errs, r.obs.Close())
	}
	if r.State != nil {
		errs = append(errs, r.State.Close())
	}
	return errors.Join(errs...)
}

// Reload applies what a config reload may change without a restart: the
// device classes and allow_client. (Interception settings change on
// restart.)
func (r *routerSide) Reload(next *policy.Config) {
	if r.Registry == nil { // run --check: nothing runs
		return
	}
	r.Registry.SetClasses(next.Classes)
	r.allowClient.Store(&next.AllowClient)
	if r.intercepting && r.neigh != nil {
		select {
		case r.reallow <- struct{}{}:
		default:
		}
	} else {
		r.Access.Set(r.allowed(), nil, nil)
	}
}

// allowed is who may be answered: loopback and allow_client; with LAN
// interfaces also the router's own addresses and the LAN prefixes.
func (r *routerSide) allowed() []netip.Prefix {
	out := append(listen.Loopback(), *r.allowClient.Load()...)
	if r.neigh == nil || !r.intercepting {
		return out
	}
	local, lanNets, _ := r.neigh.Addresses()
	for _, a := range local {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return append(out, lanNets...)
}

// followAddresses keeps Access current as the router's addresses and the
// LAN prefixes come and go (a new IPv6 prefix, a DHCP WAN lease), and as
// allow_client is reloaded.
func (r *routerSide) followAddresses() {
	for {
		changed := r.neigh.AddressesChanged()
		_, _, lanIdx := r.neigh.Addresses()
		r.Access.Set(r.allowed(), lanIdx, r.cfg.Intercept.LAN)
		select {
		case <-r.ctx.Done():
			return
		case <-changed:
		case <-r.reallow:
		}
	}
}

// Intercept installs the nftables table, once the guard listens on
// listenAddrs, and has Run keep it there. A table the kernel refuses is
// logged and the guard goes on serving its listen addresses without
// interception (the watchdog keeps trying); a table without NFLOG
// logging leaves the guard serving without observation.
func (r *routerSide) Intercept(listenAddrs []string) {
	if r.table == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.ownsTab {
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
	r.ownsTab = true
	if err := r.table.Install(); err != nil {
		r.log.Error("nftables table not installed: serving the listen addresses without interception", "err", err, "listen", listenAddrs)
	} else {
		r.log.Info("intercepting LAN DNS", "lan", ic.LAN, "table", "inet "+intercept.TableName, "guard_port", port, "missing", r.table.Missing())
	}
	r.intercepted <- listenAddrs
}

// dohRefresh is how Run keeps the DoH set filled, when DoH is blocked and
// host names are given (ok false: nothing to refresh).
func (r *routerSide) dohRefresh(listenAddrs []string) (intercept.DoHRefresh, bool) {
	ic := r.cfg.Intercept
	if !ic.BlockDoH || len(ic.DoHHosts) == 0 {
		return intercept.DoHRefresh{}, false
	}
	server := dohResolver(listenAddrs, guardPort(ic))
	if !server.IsValid() {
		r.log.Warn("no listen address to resolve DoH host names through", "part", "doh")
		return intercept.DoHRefresh{}, false
	}
	return intercept.DoHRefresh{
		Fixed: ic.DoHAddresses, Hosts: ic.DoHHosts, Every: dohRefreshEvery, Log: r.log.With("part", "doh"),
		Lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return upstream.LookupHost(ctx, server, host)
		},
	}, true
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
