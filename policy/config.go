// Package policy is dnsguard's configuration model and its loader: what the
// guard listens on, where it resolves, and what each class of device is
// allowed and held to. It makes decisions from data; it opens no sockets.
//
// The file format is OpenWrt's UCI syntax, so /etc/config/dnsguard on a
// router is the daemon's configuration as it stands: one source of truth.
package policy

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

//go:embed default.conf
var defaultConf string

// DefaultText returns the embedded default configuration, with its comments.
func DefaultText() string { return defaultConf }

// Config is the whole configuration of one guard.
type Config struct {
	// Listen is where devices reach the guard; empty means the default
	// of ListenAddrs.
	Listen []string
	// AllowClient widens who is answered beyond loopback, the LAN
	// interfaces' prefixes and the router's own addresses.
	AllowClient []netip.Prefix
	Upstreams   []string
	UpstreamCA  string
	LogLevel    string
	MemoryLimit int64 // bytes; 0 leaves the Go runtime default
	// CPUs is how many threads run Go code at once (GOMAXPROCS); 0 leaves
	// the runtime's default, every CPU.
	CPUs int

	// DNSSEC validation (issue 12): on unless option dnssec '0'.
	DNSSEC DNSSEC

	// Upstream behaviour.
	UpstreamTimeout time.Duration // per attempt, before failing over
	Randomize0x20   bool          // 0x20 case randomisation on Do53 upstreams

	// Serving devices over TCP (RFC 7766 §6.2.3, §10).
	TCPIdleTimeout  time.Duration
	TCPMaxConns     int
	TCPMaxPerClient int

	State     State
	Cache     Cache
	Limits    Limits
	Answers   Answers
	Intercept Intercept
	Local     Local
	API       API
	Classes   []Class
}

// DNSSEC says whether and how answers are validated.
type DNSSEC struct {
	Enabled bool
	// TrustAnchors are DS or DNSKEY records in presentation format; given
	// ones replace the built-in root anchors.
	TrustAnchors []string
	// InsecureDomains are negative trust anchors (RFC 7646).
	InsecureDomains []string
}

// API is the HTTP API, the dashboard and the Prometheus metrics (config
// api 'api'). It is off while Listen is empty.
type API struct {
	Listen string // IP:PORT; empty: no API
	// Token is what every /api/ request must carry (Authorization:
	// Bearer, or the cookie POST /api/v1/login sets). Empty: /api/ and
	// the dashboard refuse everyone; /metrics still answers.
	Token string
	// AllowClient is who may connect at all (everyone else's connection
	// is closed); empty: loopback and the clients the DNS listener
	// answers (the router's addresses, the LAN prefixes, allow_client).
	AllowClient []netip.Prefix
}

// State says where per-device records live.
type State struct {
	File            string        // live bbolt file (RAM-backed storage on a router)
	Persist         string        // copy on flash; empty for none
	PersistInterval time.Duration // how often the live file is copied
	FlushInterval   time.Duration // how often batched writes are committed
	Leases          string        // DHCP leases file (dnsmasq format) naming devices
}

// Cache bounds and TTL policy.
type Cache struct {
	MaxEntries  int
	MaxBytes    int64
	MinTTL      time.Duration
	MaxTTL      time.Duration
	NegMaxTTL   time.Duration
	ServeStale  bool
	StaleTTL    time.Duration
	MaxStale    time.Duration
	FailMin     time.Duration
	FailMax     time.Duration
	UpstreamMax int // attempts per query across upstreams
}

// Limits against retry storms.
type Limits struct {
	DeviceRate  float64 // queries per second per device (token refill)
	DeviceBurst int
}

// Answers is the answer shield: what an upstream answer may contain.
type Answers struct {
	MaxRecords     int // per message
	MaxRRset       int // per RRset
	MaxSize        int // octets of an upstream message
	MaxCNAMEChain  int
	RebindProtect  bool    // refuse special-purpose addresses from the upstreams
	TTLJumpFactor  float64 // log a TTL that grows by more than this factor
	AllowedPrivate []netip.Prefix
}

// Intercept configures the nftables table and the NFLOG observer.
type Intercept struct {
	LAN          []string // LAN interfaces; interception is on when non-empty
	RedirectDNS  bool
	BlockDoT     bool
	BlockDoH     bool
	DoHHosts     []string
	DoHAddresses []netip.Addr
	NFLogGroup   uint16
	GuardPort    uint16 // port the guard listens on for redirected traffic
}

// Local names are the LAN's own: they go to the router's DHCP/DNS server
// (dnsmasq) and never to an upstream. Besides Domains, the reverse zones
// of private, CGNAT, loopback, link-local and ULA addresses (RFC 6303,
// RFC 7793) and home.arpa (RFC 8375) are always local. This is the one
// list of local domains: answers from the local server are exempt from
// rebinding protection because of where they came from, not their name.
type Local struct {
	Domains []string      // LAN domains: lower case, no trailing dot ("lan")
	Server  string        // IP:PORT of the local server; empty: local names answered NXDOMAIN
	MaxTTL  time.Duration // cap on the TTLs of local answers (they change with DHCP)
}

// Class is a device class and what its members are held to.
type Class struct {
	Name        string
	MACs        []string
	MACPrefixes []string
	Names       []string
	Rate        float64 // 0: the global device rate
	Burst       int
	Exempt      bool // not intercepted (may use its own resolver)
	Strict      bool // strictest checks and limits
	Line        int
}

// Load reads a configuration file; an empty path gives the embedded default.
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse(strings.NewReader(defaultConf), "default.conf")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a configuration in UCI syntax. Options it does not set keep
// the built-in defaults (those of the embedded default file).
func Parse(r io.Reader, file string) (*Config, error) {
	sections, err := ParseUCI(r, file)
	if err != nil {
		return nil, err
	}
	c := builtin()
	seenClass := map[string]int{}
	// config answers' local_domain is the old name of config local's
	// domain list (it also meant a rebinding exemption by name, which is
	// gone): its values are added to that list once every section is read.
	var aliasDomains []string
	for i := range sections {
		s := &sections[i]
		var fields map[string]setter
		switch s.Type {
		case "dnsguard":
			fields = c.mainFields()
		case "cache":
			fields = c.Cache.fields()
		case "limits":
			fields = c.Limits.fields()
		case "answers":
			fields = c.Answers.fields()
			fields["local_domain"] = domainAlias(&aliasDomains)
		case "intercept":
			fields = c.Intercept.fields()
		case "local":
			fields = c.Local.fields()
		case "api":
			fields = c.API.fields()
		case "class":
			if s.Name == "" {
				return nil, &ParseError{file, s.Line, "a class section needs a name: config class 'NAME'"}
			}
			if prev, dup := seenClass[s.Name]; dup {
				return nil, &ParseError{file, s.Line, fmt.Sprintf("class %q already defined on line %d", s.Name, prev)}
			}
			seenClass[s.Name] = s.Line
			c.Classes = append(c.Classes, Class{Name: s.Name, Line: s.Line})
			fields = c.Classes[len(c.Classes)-1].fields()
		default:
			return nil, &ParseError{file, s.Line, fmt.Sprintf("unknown section type %q", s.Type)}
		}
		for key, v := range s.Options {
			set, ok := fields[key]
			if !ok {
				return nil, &ParseError{file, v.Line, fmt.Sprintf("unknown option %q in %s section", key, s.Type)}
			}
			if err := set(v.Values); err != nil {
				return nil, &ParseError{file, v.Line, fmt.Sprintf("option %q: %v", key, err)}
			}
		}
	}
	for _, d := range aliasDomains {
		if !slices.Contains(c.Local.Domains, d) {
			c.Local.Domains = append(c.Local.Domains, d)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, &ParseError{File: file, Reason: err.Error()}
	}
	return c, nil
}

// Default listen addresses without a listen list: loopback off port 53
// when no LAN interface is given, so the guard runs anywhere without
// privileges. Port 5337 is unassigned (IANA leaves 5322-5342 free) and
// not a local resolver's habit: 5353 is mDNS (avahi holds it on most
// Linux desktops), 5354 mDNSResponder, 5355 LLMNR (systemd-resolved),
// 5335 the unbound of the Pi-hole guides.
var defaultListen = []string{"127.0.0.1:5337", "[::1]:5337"}

// ListenAddrs is where the guard serves: the listen list when one is
// given; else, with LAN interfaces, every address of the router on
// guard_port (one socket per family on the unspecified address, each
// answer sent from the address asked, so addresses that come and go
// are served and loopback is included); else loopback on port 5337.
func (c *Config) ListenAddrs() []string {
	if len(c.Listen) > 0 {
		return c.Listen
	}
	if len(c.Intercept.LAN) > 0 {
		port := c.Intercept.GuardPort
		if port == 0 {
			port = 53
		}
		p := strconv.Itoa(int(port))
		return []string{"0.0.0.0:" + p, "[::]:" + p}
	}
	return defaultListen
}

// ListenDerived reports whether ListenAddrs comes from the LAN
// interfaces rather than a listen list.
func (c *Config) ListenDerived() bool { return len(c.Listen) == 0 && len(c.Intercept.LAN) > 0 }

// Validate checks relations between options.
func (c *Config) Validate() error {
	for _, l := range c.Listen {
		if _, err := netip.ParseAddrPort(l); err != nil {
			return fmt.Errorf("listen %q: want IP:PORT", l)
		}
	}
	if c.Cache.MinTTL > c.Cache.MaxTTL {
		return fmt.Errorf("cache min_ttl %v above max_ttl %v", c.Cache.MinTTL, c.Cache.MaxTTL)
	}
	if c.Cache.FailMin > c.Cache.FailMax {
		return fmt.Errorf("cache fail_min %v above fail_max %v", c.Cache.FailMin, c.Cache.FailMax)
	}
	if c.Cache.FailMax > 5*time.Minute {
		return errors.New("cache fail_max above 5m (RFC 9520 §3.2 forbids caching a failure longer)")
	}
	for _, d := range c.Local.Domains {
		if _, err := LocalDomain(d); err != nil {
			return fmt.Errorf("local domain: %w", err)
		}
	}
	if c.Local.Server != "" {
		if _, err := LocalServer(c.Local.Server); err != nil {
			return fmt.Errorf("local server: %w", err)
		}
	}
	for _, a := range c.DNSSEC.TrustAnchors {
		if err := TrustAnchor(a); err != nil {
			return fmt.Errorf("trust_anchor: %w", err)
		}
	}
	if c.API.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.API.Listen); err != nil || ap.Port() == 0 {
			return fmt.Errorf("api listen %q: want IP:PORT", c.API.Listen)
		}
	}
	if strings.ContainsFunc(c.API.Token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return errors.New("api token: printable ASCII without spaces only")
	}
	return nil
}

// TrustAnchor checks a trust anchor: one DS record, or one DNSKEY record
// of a zone key, in presentation format.
func TrustAnchor(s string) error {
	rr, err := ParseTrustAnchor(s)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	switch a := rr.(type) {
	case *dns.DS:
	case *dns.DNSKEY:
		if a.Flags&dns.ZONE == 0 || a.Protocol != 3 {
			return fmt.Errorf("%q: not a zone key", s)
		}
	default:
		return fmt.Errorf("%q: want a DS or DNSKEY record", s)
	}
	return nil
}

// LocalDomain checks and normalises a LAN domain: lower case, no trailing
// dot, a valid DNS name (presentation escapes such as \032 allowed). The
// root, .local (mDNS, RFC 6762) and localhost (RFC 6761) are refused: the
// guard answers those itself and never forwards them.
func LocalDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	switch {
	case d == "":
		return "", fmt.Errorf("%q: the root cannot be a local domain", s)
	case d == "local" || strings.HasSuffix(d, ".local"):
		return "", fmt.Errorf("%q: .local is multicast DNS (RFC 6762), answered NXDOMAIN by the guard and never forwarded", s)
	case d == "localhost" || strings.HasSuffix(d, ".localhost"):
		return "", fmt.Errorf("%q: localhost is answered by the guard itself (RFC 6761 §6.3)", s)
	}
	if _, ok := dns.IsDomainName(d); !ok {
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	var buf [256]byte
	if _, err := dns.PackDomainName(dns.Fqdn(d), buf[:], 0, nil, false); err != nil {
		return "", fmt.Errorf("%q is not a domain name: %v", s, err)
	}
	return d, nil
}

// LocalServer reads the local server's address: IP:PORT, or an IP alone
// for port 53.
func LocalServer(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: want IP:PORT (127.0.0.1:5354)", s)
	}
	return ap, nil
}

type setter func([]string) error

func (c *Config) mainFields() map[string]setter {
	return map[string]setter{
		"listen":             strList(&c.Listen),
		"allow_client":       prefixList(&c.AllowClient),
		"upstream":           strList(&c.Upstreams),
		"upstream_ca":        str(&c.UpstreamCA),
		"log_level":          oneOf(&c.LogLevel, "debug", "info", "warn", "error"),
		"memory_limit":       size(&c.MemoryLimit),
		"cpus":               integer(&c.CPUs),
		"upstream_timeout":   dur(&c.UpstreamTimeout),
		"randomize_case":     boolean(&c.Randomize0x20),
		"dnssec":             boolean(&c.DNSSEC.Enabled),
		"trust_anchor":       wholeList(&c.DNSSEC.TrustAnchors),
		"insecure_domain":    nameList(&c.DNSSEC.InsecureDomains),
		"tcp_idle_timeout":   dur(&c.TCPIdleTimeout),
		"tcp_max_conns":      integer(&c.TCPMaxConns),
		"tcp_max_per_client": integer(&c.TCPMaxPerClient),
		"lan":                strList(&c.Intercept.LAN),
		"state_file":         str(&c.State.File),
		"state_persist":      str(&c.State.Persist),
		"persist_interval":   dur(&c.State.PersistInterval),
		"flush_interval":     dur(&c.State.FlushInterval),
		"leases_file":        str(&c.State.Leases),
	}
}

func (c *Cache) fields() map[string]setter {
	return map[string]setter{
		"max_entries":  integer(&c.MaxEntries),
		"max_bytes":    size(&c.MaxBytes),
		"min_ttl":      dur(&c.MinTTL),
		"max_ttl":      dur(&c.MaxTTL),
		"neg_max_ttl":  dur(&c.NegMaxTTL),
		"serve_stale":  boolean(&c.ServeStale),
		"stale_ttl":    dur(&c.StaleTTL),
		"max_stale":    dur(&c.MaxStale),
		"fail_min":     dur(&c.FailMin),
		"fail_max":     dur(&c.FailMax),
		"upstream_max": integer(&c.UpstreamMax),
	}
}

func (l *Limits) fields() map[string]setter {
	return map[string]setter{
		"device_rate":  float(&l.DeviceRate),
		"device_burst": integer(&l.DeviceBurst),
	}
}

func (a *Answers) fields() map[string]setter {
	return map[string]setter{
		"max_records":       integer(&a.MaxRecords),
		"max_rrset":         integer(&a.MaxRRset),
		"max_size":          integer(&a.MaxSize),
		"max_cname_chain":   integer(&a.MaxCNAMEChain),
		"rebind_protection": boolean(&a.RebindProtect),
		"ttl_jump_factor":   float(&a.TTLJumpFactor),
		"allow_private":     prefixList(&a.AllowedPrivate),
	}
}

func (i *Intercept) fields() map[string]setter {
	return map[string]setter{
		"lan":          strList(&i.LAN),
		"redirect_dns": boolean(&i.RedirectDNS),
		"block_dot":    boolean(&i.BlockDoT),
		"block_doh":    boolean(&i.BlockDoH),
		"doh_host":     strList(&i.DoHHosts),
		"doh_address":  addrList(&i.DoHAddresses),
		"nflog_group":  u16(&i.NFLogGroup),
		"guard_port":   u16(&i.GuardPort),
	}
}

func (a *API) fields() map[string]setter {
	return map[string]setter{
		"listen":       str(&a.Listen),
		"token":        str(&a.Token),
		"allow_client": prefixList(&a.AllowClient),
	}
}

func (l *Local) fields() map[string]setter {
	return map[string]setter{
		"domain":  domainList(&l.Domains),
		"server":  server(&l.Server),
		"max_ttl": dur(&l.MaxTTL),
	}
}

// domainList is strList for local domains: each checked and normalised
// (LocalDomain), duplicates dropped.
func domainList(p *[]string) setter {
	first := true
	return func(v []string) error {
		if first {
			*p, first = nil, false
		}
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				d, err := LocalDomain(w)
				if err != nil {
					return err
				}
				if !slices.Contains(*p, d) {
					*p = append(*p, d)
				}
			}
		}
		return nil
	}
}

// domainAlias reads the old answers.local_domain list. 'local' (in every
// old default) is dropped: .local is answered by the guard itself.
func domainAlias(p *[]string) setter {
	return func(v []string) error {
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				if d := strings.ToLower(strings.Trim(w, ".")); d == "local" {
					continue
				}
				d, err := LocalDomain(w)
				if err != nil {
					return err
				}
				if !slices.Contains(*p, d) {
					*p = append(*p, d)
				}
			}
		}
		return nil
	}
}

func server(p *string) setter {
	return func(v []string) error {
		s := strings.TrimSpace(v[len(v)-1])
		if s == "" {
			*p = ""
			return nil
		}
		ap, err := LocalServer(s)
		if err != nil {
			return err
		}
		*p = ap.String()
		return nil
	}
}

func (c *Class) fields() map[string]setter {
	return map[string]setter{
		"mac":        checkedList(&c.MACs, checkMAC),
		"mac_prefix": checkedList(&c.MACPrefixes, checkMACPrefix),
		"name":       checkedList(&c.Names, checkPattern),
		"rate":       float(&c.Rate),
		"burst":      integer(&c.Burst),
		"exempt":     boolean(&c.Exempt),
		"strict":     boolean(&c.Strict),
	}
}

func str(p *string) setter {
	return func(v []string) error { *p = v[len(v)-1]; return nil }
}

// wholeList is a list whose values keep their spaces (a DNS record).
func wholeList(p *[]string) setter {
	first := true
	return func(v []string) error {
		if first {
			*p, first = nil, false
		}
		for _, s := range v {
			if s = strings.TrimSpace(s); s != "" {
				*p = append(*p, s)
			}
		}
		return nil
	}
}

// nameList is a list of DNS names (any name, the root included).
func nameList(p *[]string) setter {
	first := true
	return func(v []string) error {
		if first {
			*p, first = nil, false
		}
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				if _, ok := dns.IsDomainName(w); !ok {
					return fmt.Errorf("%q is not a domain name", w)
				}
				*p = append(*p, dns.CanonicalName(w))
			}
		}
		return nil
	}
}

func strList(p *[]string) setter {
	first := true
	return func(v []string) error {
		if first { // a file's list replaces the default, it does not extend it
			*p, first = nil, false
		}
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				*p = append(*p, w)
			}
		}
		return nil
	}
}

// checkedList is strList refusing a value check rejects.
func checkedList(p *[]string, check func(string) error) setter {
	set := strList(p)
	return func(v []string) error {
		if err := set(v); err != nil {
			return err
		}
		for _, s := range *p {
			if err := check(s); err != nil {
				return err
			}
		}
		return nil
	}
}

// checkMAC accepts an EUI-48 address as the neighbour table and DHCP
// leases write it (six hex octets separated by colons or dashes).
func checkMAC(s string) error {
	if hw, err := net.ParseMAC(s); err != nil || len(hw) != 6 {
		return fmt.Errorf("%q is not a MAC address (want six octets: 00:11:22:33:44:55)", s)
	}
	return nil
}

// checkMACPrefix accepts one to five leading octets of a MAC address,
// colon-separated hex pairs (a vendor OUI is three: 9c:8e:cd).
func checkMACPrefix(s string) error {
	parts := strings.Split(s, ":")
	ok := len(parts) >= 1 && len(parts) <= 5
	for _, p := range parts {
		if len(p) != 2 {
			ok = false
		}
		for _, c := range []byte(p) {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				ok = false
			}
		}
	}
	if !ok {
		return fmt.Errorf("%q is not a MAC prefix (want one to five hex octets: 9c:8e:cd)", s)
	}
	return nil
}

// checkPattern accepts a device name or shell pattern (path.Match).
func checkPattern(s string) error {
	if _, err := path.Match(s, ""); err != nil {
		return fmt.Errorf("name pattern %q: %w", s, err)
	}
	return nil
}

func oneOf(p *string, allowed ...string) setter {
	return func(v []string) error {
		s := v[len(v)-1]
		for _, a := range allowed {
			if s == a {
				*p = s
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", s, strings.Join(allowed, ", "))
	}
}

func boolean(p *bool) setter {
	return func(v []string) error {
		switch strings.ToLower(v[len(v)-1]) {
		case "1", "yes", "on", "true", "enabled":
			*p = true
		case "0", "no", "off", "false", "disabled":
			*p = false
		default:
			return fmt.Errorf("%q is not a boolean (use 1 or 0)", v[len(v)-1])
		}
		return nil
	}
}

func integer(p *int) setter {
	return func(v []string) error {
		n, err := strconv.Atoi(v[len(v)-1])
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a non-negative integer", v[len(v)-1])
		}
		*p = n
		return nil
	}
}

func u16(p *uint16) setter {
	return func(v []string) error {
		n, err := strconv.ParseUint(v[len(v)-1], 10, 16)
		if err != nil {
			return fmt.Errorf("%q is not a number from 0 to 65535", v[len(v)-1])
		}
		*p = uint16(n)
		return nil
	}
}

func float(p *float64) setter {
	return func(v []string) error {
		f, err := strconv.ParseFloat(v[len(v)-1], 64)
		if err != nil || f < 0 {
			return fmt.Errorf("%q is not a non-negative number", v[len(v)-1])
		}
		*p = f
		return nil
	}
}

// dur accepts Go durations ("30s", "5m") or plain seconds ("30").
func dur(p *time.Duration) setter {
	return func(v []string) error {
		d, err := ParseDuration(v[len(v)-1])
		if err != nil {
			return err
		}
		*p = d
		return nil
	}
}

// ParseDuration reads "30", "30s", "5m", "1h30m".
func ParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	t := s
	days := time.Duration(0)
	if i := strings.IndexByte(t, 'd'); i > 0 {
		n, err := strconv.ParseUint(t[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (seconds, or like 30s, 5m, 1h, 7d)", s)
		}
		days, t = time.Duration(n)*24*time.Hour, t[i+1:]
		if t == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(t)
	d += days
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (seconds, or like 30s, 5m, 1h, 7d)", s)
	}
	return d, nil
}

// size accepts bytes with an optional K, M, G (or KiB, MiB, GiB) suffix.
func size(p *int64) setter {
	return func(v []string) error {
		n, err := ParseSize(v[len(v)-1])
		if err != nil {
			return err
		}
		*p = n
		return nil
	}
}

// ParseSize reads "1048576", "64K", "48MiB", "1G".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult, t = 1<<10, t[:len(t)-1]
		case 'M':
			mult, t = 1<<20, t[:len(t)-1]
		case 'G':
			mult, t = 1<<30, t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or like 64K, 48M, 1G)", s)
	}
	return n * mult, nil
}

func addrList(p *[]netip.Addr) setter {
	first := true
	return func(v []string) error {
		if first {
			*p, first = nil, false
		}
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				a, err := netip.ParseAddr(w)
				if err != nil {
					return fmt.Errorf("%q is not an IP address", w)
				}
				*p = append(*p, a)
			}
		}
		return nil
	}
}

func prefixList(p *[]netip.Prefix) setter {
	first := true
	return func(v []string) error {
		if first {
			*p, first = nil, false
		}
		for _, s := range v {
			for _, w := range strings.Fields(s) {
				pf, err := netip.ParsePrefix(w)
				if err != nil {
					return fmt.Errorf("%q is not a prefix like 10.0.0.0/8", w)
				}
				*p = append(*p, pf.Masked())
			}
		}
		return nil
	}
}
