package main

import (
	"context"
	"errors"

	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/intercept"
	"github.com/dnsguard/dnsguard/guard/localzone"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
)

// routerSide is the router half of the guard, beside the query chain:
// interception (nftables, NFLOG), device identity (netlink neighbours,
// DHCP leases) and per-device state (bbolt).
type routerSide struct {
	// Stages go into the chain after the listener and before limits and
	// cache, outermost first (identify, local answers, ...).
	Stages []stage.Middleware
	// Close removes the nftables table and flushes state.
	Close func(context.Context) error
	// Reload applies what a config reload may change without a restart:
	// the device classes. (Interception settings change on restart.)
	Reload func(*policy.Config)
}

// Router-side timings.
const (
	tableCheckEvery = time.Second      // the watchdog puts a removed table back within this
	dohRefreshEvery = 30 * time.Minute // DoH host names are resolved again this often
	macWait         = 50 * time.Millisecond
)

// startRouterSide starts what cfg asks for: interception when
// cfg.Intercept.LAN is non-empty, the device store at cfg.State.File.
func startRouterSide(ctx context.Context, cfg *policy.Config, log *slog.Logger) (*routerSide, error) {
	ctx, cancel := context.WithCancel(ctx)
	var closers []func(context.Context) error
	closeAll := func(ctx context.Context) error {
		cancel()
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i](ctx))
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (*routerSide, error) {
		closeAll(context.Background())
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
			closers = append(closers, func(context.Context) error { return store.Close() })
		}
	}

	var table *intercept.Table
	if intercepting {
		port := ic.GuardPort
		if port == 0 {
			port = 53
		}
		if !listensOn(cfg.Listen, port) {
			log.Warn("no listen address on the guard port: redirected queries will find nothing", "guard_port", port, "listen", cfg.Listen)
		}
		var err error
		table, err = intercept.NewTable(intercept.Config{
			LAN: ic.LAN, GuardPort: port, RedirectDNS: ic.RedirectDNS,
			BlockDoT: ic.BlockDoT, BlockDoH: ic.BlockDoH, NFLogGroup: ic.NFLogGroup,
		}, log.With("part", "nftables"))
		if err != nil {
			return fail(err)
		}
		if err := table.Install(); err != nil {
			return fail(err)
		}
		closers = append(closers, func(context.Context) error { return table.Remove() })
		if err := table.SetDoH(ic.DoHAddresses); err != nil {
			return fail(err)
		}
		go table.Watch(ctx, tableCheckEvery)
		if ic.BlockDoH && len(ic.DoHHosts) > 0 {
			go refreshDoH(ctx, table, ic, cfg.Listen, port, log.With("part", "doh"))
		}
		log.Info("intercepting LAN DNS", "lan", ic.LAN, "table", "inet "+intercept.TableName, "guard_port", port)
	}

	var neigh *device.Neighbours
	var reg *device.Registry
	nlog := log.With("part", "neighbours")
	neigh, err := device.WatchNeighbours(ctx, ic.LAN, func(mac string) {
		if reg != nil {
			reg.Gone(mac)
		}
	}, nlog)
	if err != nil {
		if intercepting {
			return fail(err)
		}
		log.Warn("no neighbour table: devices known by address only", "err", err)
		neigh = nil
	}
	opts := device.Options{
		Store: store, Persist: cfg.State.Persist, PersistInterval: cfg.State.PersistInterval,
		FlushInterval: cfg.State.FlushInterval, Leases: cfg.State.Leases, Classes: cfg.Classes,
		Neighbours: neigh, Log: log.With("part", "devices"),
	}
	if table != nil {
		opts.OnExempt = func(macs []net.HardwareAddr) {
			if err := table.SetExempt(macs, nil); err != nil {
				log.Error("updating exempt devices", "err", err)
			}
		}
	}
	reg, err = device.NewRegistry(opts)
	if err != nil {
		return fail(err)
	}
	regDone := make(chan struct{})
	go func() { reg.Run(ctx); close(regDone) }()
	closers = append(closers, func(context.Context) error {
		<-regDone
		return reg.Close()
	})

	observing := intercepting && ic.NFLogGroup != 0
	if observing {
		obs, err := intercept.Observe(ctx, ic.NFLogGroup, 0, observe(reg), log.With("part", "nflog"))
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func(context.Context) error { return obs.Close() })
	}

	if store != nil {
		ctl, err := device.ServeControl(device.ControlPath(cfg.State.File), reg, log.With("part", "control"))
		if err != nil {
			return fail(err)
		}
		closers = append(closers, ctl.Close)
	}

	idopts := device.IdentifyOptions{Feed: !observing}
	if observing {
		idopts.WaitForMAC = macWait
	}
	return &routerSide{
		Stages: []stage.Middleware{device.Identify(reg, idopts), localzone.Stage()},
		Close:  closeAll,
		Reload: func(next *policy.Config) { reg.SetClasses(next.Classes) },
	}, nil
}

// observe turns logged packets into device observations.
func observe(reg *device.Registry) func(intercept.Packet) {
	return func(p intercept.Packet) {
		if len(p.MAC) != 6 {
			return
		}
		mac := p.MAC.String()
		switch p.Kind {
		case intercept.KindDNS:
			if p.DNS == nil {
				return // a TCP segment without a query in it
			}
			q := &device.Query{ID: p.DNS.ID, EDNS: p.DNS.EDNS, Name: p.DNS.Name, Type: p.DNS.Type}
			if !p.TCP {
				q.Port = p.Src.Port()
			}
			reg.ObserveQuery(mac, p.Src, p.Dst, q)
		case intercept.KindDoT, intercept.KindDoQ, intercept.KindDoH:
			reg.ObserveBypass(mac, p.Src, p.Dst, string(p.Kind))
		}
	}
}

// refreshDoH resolves the DoH host names through the guard itself (its
// own listener, so through its chain and upstreams) and keeps the table's
// DoH set filled with them and the fixed addresses.
func refreshDoH(ctx context.Context, table *intercept.Table, ic policy.Intercept, listen []string, port uint16, log *slog.Logger) {
	server := resolverAddr(listen, port)
	for _, l := range listen { // any listen address will do
		if ap, err := netip.ParseAddrPort(l); err == nil && !server.IsValid() {
			server = resolverAddr(listen, ap.Port())
		}
	}
	if !server.IsValid() {
		log.Warn("no listen address to resolve DoH host names through")
		return
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server.String())
	}}
	wait := time.Second // the listener starts after the router side
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		addrs := append([]netip.Addr(nil), ic.DoHAddresses...)
		failed := 0
		for _, h := range ic.DoHHosts {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err := r.LookupNetIP(lctx, "ip", h)
			cancel()
			if err != nil {
				failed++
				log.Debug("resolving DoH host", "host", h, "err", err)
				continue
			}
			addrs = append(addrs, ips...)
		}
		if err := table.SetDoH(addrs); err != nil {
			log.Error("filling the DoH set", "err", err)
		} else {
			log.Info("DoH endpoints blocked", "addresses", len(addrs), "hosts", len(ic.DoHHosts), "unresolved", failed)
		}
		switch {
		case failed == 0:
			wait = dohRefreshEvery
		case wait < time.Minute:
			wait *= 2 // the listener or the upstreams are not there yet: try again soon
		default:
			wait = time.Minute
		}
	}
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
