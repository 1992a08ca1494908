package policy

import (
	"net/netip"
	"time"
)

// builtin holds the values that options missing from a file take. The
// embedded default.conf spells out the same values with the reasons; a
// test keeps the two in step.
func builtin() *Config {
	return &Config{
		Upstreams: []string{
			"tls://1.1.1.1:853?sni=cloudflare-dns.com",
			"tls://9.9.9.9:853?sni=dns.quad9.net",
			"https://dns.google/dns-query?ip=8.8.8.8",
		},
		LogLevel:    "info",
		MemoryLimit: 24 << 20,
		// One: a query of a LAN device wakes two goroutines (its packet
		// logged by NFLOG, then the query itself); with a second P the
		// runtime wakes another thread to run one of them, and spins it
		// down again, for every query. Issue 14: CPU per cache hit of a
		// device at 2,000 q/s, 78 us with two, 30 with one (unbound 18-22).
		CPUs: 1,
		// Issue 12: validation on, with the built-in root anchors.
		DNSSEC:          DNSSEC{Enabled: true},
		UpstreamTimeout: 600 * time.Millisecond,
		TCPIdleTimeout:  10 * time.Second,
		TCPMaxConns:     256,
		TCPMaxPerClient: 16,
		State: State{
			File:            "/tmp/dnsguard/state.db",
			PersistInterval: 6 * time.Hour,
			FlushInterval:   5 * time.Second,
			Leases:          "/tmp/dhcp.leases",
		},
		Cache: Cache{
			MaxEntries:  20000,
			MaxBytes:    8 << 20,
			MinTTL:      30 * time.Second,
			MaxTTL:      7 * 24 * time.Hour,
			NegMaxTTL:   time.Hour,
			ServeStale:  true,
			StaleTTL:    30 * time.Second,
			MaxStale:    24 * time.Hour,
			FailMin:     time.Second,
			FailMax:     5 * time.Minute,
			UpstreamMax: 3,
		},
		Limits: Limits{DeviceRate: 50, DeviceBurst: 200},
		Answers: Answers{
			MaxRecords:    64,
			MaxRRset:      32,
			MaxSize:       8192,
			MaxCNAMEChain: 8,
			RebindProtect: true,
			TTLJumpFactor: 100,
		},
		Intercept: Intercept{
			RedirectDNS: true,
			BlockDoT:    true,
			BlockDoH:    true,
			NFLogGroup:  53,
			GuardPort:   53,
			DoHHosts: []string{"dns.google", "cloudflare-dns.com", "mozilla.cloudflare-dns.com",
				"dns.quad9.net", "doh.opendns.com", "dns.adguard-dns.com", "dns.nextdns.io"},
			DoHAddresses: addrs("8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
				"2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001"),
		},
		Local: Local{Domains: []string{"lan"}, MaxTTL: time.Minute},
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}
