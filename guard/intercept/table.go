// Package intercept owns the guard's nftables table (inet dnsguard) and
// the NFLOG observer beside it. The table redirects every LAN port-53
// query not addressed to the router to the guard, rejects DoT/DoQ (853)
// from the LAN to the Internet and HTTPS to known DoH endpoints, and logs
// each device's original DNS packets (before the redirect) and every
// rejected bypass attempt to an NFLOG group, which the Observer reads.
// Nothing is added to any other table.
package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the guard's table in the inet family.
const TableName = "dnsguard"

// Names of the table's chains and sets.
const (
	chainObserve  = "observe_dns"  // prerouting, before NAT: NFLOG of original DNS packets
	chainRedirect = "redirect_dns" // prerouting NAT: port 53 -> the guard
	chainBlock    = "block_bypass" // forward filter: DoT, DoQ, DoH
	setLAN        = "lan"
	setExemptMAC  = "exempt_mac"
	setExempt4    = "exempt4"
	setExempt6    = "exempt6"
	setDoH4       = "doh4"
	setDoH6       = "doh6"
)

// Config is what the table does.
type Config struct {
	LAN         []string // interfaces devices come from
	GuardPort   uint16   // port the guard serves on, on the LAN interfaces' addresses
	RedirectDNS bool
	BlockDoT    bool // TCP and UDP 853 (DoT, DoQ)
	BlockDoH    bool // 443 to the DoH set
	NFLogGroup  uint16
	// NetNSFd, when non-zero, is a network namespace file descriptor the
	// table is installed in (tests); zero means the current namespace.
	NetNSFd int
	// OnInstall, if set, is called after each successful install (the
	// first and the watchdog's), saying whether the table logs to NFLOG.
	OnInstall func(logging bool)
}

// Table is the guard's nftables table. Its dynamic sets (DoH endpoints,
// exempt devices) are remembered, so a table put back by the watchdog has
// them again, and sets given before the table is installed go in with it.
type Table struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	doh       []netip.Addr
	exemptMAC []net.HardwareAddr
	exemptIP  []netip.Addr
	installed bool
	off       feature // left out of the installed table: the kernel refused them
	loggedOff feature // what the log last said was left out
	// refuse, in tests, stands in for a kernel without some features:
	// an install using one it names fails with its error.
	refuse func(uses feature) error

	repairs atomic.Uint64 // times Watch put a removed or changed table back
}

// feature is a kernel feature the table can do without.
type feature uint8

const (
	featNFLog feature = 1 << iota // nft log to an NFLOG group (nft_log, nfnetlink_log)
	featFib                       // fib daddr type (nft_fib_inet)
)

func (f feature) names() []string {
	var out []string
	if f&featNFLog != 0 {
		out = append(out, "nflog")
	}
	if f&featFib != 0 {
		out = append(out, "fib")
	}
	return out
}

// NewTable returns a table for cfg; nothing is installed until Install.
func NewTable(cfg Config, log *slog.Logger) (*Table, error) {
	if len(cfg.LAN) == 0 {
		return nil, errors.New("intercept: no LAN interface")
	}
	for _, n := range cfg.LAN {
		if n == "" || len(n) >= unix.IFNAMSIZ {
			return nil, fmt.Errorf("intercept: bad interface name %q", n)
		}
	}
	if cfg.GuardPort == 0 {
		cfg.GuardPort = 53
	}
	return &Table{cfg: cfg, log: log}, nil
}

func (t *Table) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if t.cfg.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(t.cfg.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("intercept: nftables: %w", err)
	}
	return c, nil
}

func (t *Table) table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Install creates the table, replacing any table of the same name in one
// atomic batch, with the sets as last given. When the kernel refuses it,
// it tries again without the rules that need an optional feature (NFLOG
// logging: the guard then serves without observation; the fib match
// that lets queries to the router itself pass: they are then redirected
// to the same port), logs once what was left out, and fails only when
// even the plainest table is refused.
func (t *Table) Install() error {
	var uses feature
	if t.cfg.NFLogGroup != 0 {
		uses |= featNFLog
	}
	if t.cfg.RedirectDNS && t.cfg.GuardPort == 53 {
		uses |= featFib
	}
	var first error
	for _, off := range []feature{0, featFib, featNFLog, featFib | featNFLog} {
		if off&^uses != 0 {
			continue // leaving out what is not used changes nothing
		}
		err := t.install(off, uses&^off)
		if err == nil {
			if off != 0 || first != nil {
				t.noteDegraded(off, first)
			}
			if t.cfg.OnInstall != nil {
				t.cfg.OnInstall(t.cfg.NFLogGroup != 0 && off&featNFLog == 0)
			}
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func (t *Table) install(off, uses feature) error {
	c, err := t.conn()
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refuse != nil {
		if err := t.refuse(uses); err != nil {
			return fmt.Errorf("intercept: install table inet %s: %w", TableName, err)
		}
	}
	prevOff := t.off
	t.off = off // the rule builders read it
	tab := t.table()
	c.AddTable(tab) // so the delete below cannot fail when there is none
	c.DelTable(tab)
	tab = c.AddTable(t.table())
	sets, err := t.addSets(c, tab)
	if err != nil {
		t.off = prevOff
		return err
	}
	t.addChains(c, tab, sets)
	if err := c.Flush(); err != nil {
		t.off = prevOff
		return fmt.Errorf("intercept: install table inet %s: %w", TableName, err)
	}
	t.installed = true
	return nil
}

// noteDegraded logs, once per change, which features the table runs without.
func (t *Table) noteDegraded(off feature, why error) {
	t.mu.Lock()
	changed := off != t.loggedOff
	t.loggedOff = off
	t.mu.Unlock()
	if !changed {
		return
	}
	if off == 0 {
		t.log.Info("nftables table installed with every feature again", "table", "inet "+TableName)
		return
	}
	t.log.Warn("nftables table installed without what the kernel refused", "table", "inet "+TableName,
		"missing", off.names(), "err", why,
		"effect", "without nflog: devices are not observed before the redirect (no hard-coded resolver or bypass records, no waiting on packets); without fib: queries to the router are redirected to the same port")
}

// Missing returns the optional features the installed table goes without
// ("nflog", "fib").
func (t *Table) Missing() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.off.names()
}

// Installed reports whether the table is in (as last installed; Watch
// puts it back when something removes it).
func (t *Table) Installed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.installed
}

// Logging reports whether the installed table logs packets to NFLOG.
func (t *Table) Logging() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.installed && t.cfg.NFLogGroup != 0 && t.off&featNFLog == 0
}

// Remove deletes the table. A table already gone is not an error.
func (t *Table) Remove() error {
	c, err := t.conn()
	if err != nil {
		return err
	}
	tab := t.table()
	c.AddTable(tab)
	c.DelTable(tab)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("intercept: remove table inet %s: %w", TableName, err)
	}
	t.mu.Lock()
	t.installed = false
	t.mu.Unlock()
	return nil
}

// Intact reports whether the table is there with all its chains and rules.
func (t *Table) Intact() (bool, error) {
	c, err := t.conn()
	if err != nil {
		return false, err
	}
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("intercept: list table: %w", err)
	}
	t.mu.Lock()
	want := t.ruleCounts()
	t.mu.Unlock()
	tab := t.table()
	for name, n := range want {
		rules, err := c.GetRules(tab, &nftables.Chain{Name: name, Table: tab})
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return false, nil
			}
			return false, fmt.Errorf("intercept: list chain %s: %w", name, err)
		}
		if len(rules) != n {
			return false, nil
		}
	}
	return true, nil
}

// Watch checks the table every interval and puts it back when something
// removed or emptied it (a firewall reload, nft flush ruleset). It returns
// when ctx is done.
func (t *Table) Watch(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ok, err := t.Intact()
		if err != nil {
			t.log.Warn("checking the nftables table", "err", err)
		}
		if ok {
			continue
		}
		if err := t.Install(); err != nil {
			// Logged once per distinct failure, not every interval.
			if err.Error() != lastErr {
				t.log.Error("putting the nftables table back; serving without interception meanwhile", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		if lastErr != "" {
			t.log.Info("nftables table installed", "table", "inet "+TableName)
			lastErr = ""
			continue
		}
		t.repairs.Add(1)
		t.log.Warn("nftables table was removed or changed; put back", "table", "inet "+TableName)
	}
}

// Repairs is how many times Watch put the table back after something
// removed or changed it.
func (t *Table) Repairs() uint64 { return t.repairs.Load() }

// SetDoH replaces the addresses HTTPS is rejected to.
func (t *Table) SetDoH(addrs []netip.Addr) error {
	t.mu.Lock()
	t.doh = uniqueAddrs(addrs)
	doh, installed := t.doh, t.installed
	t.mu.Unlock()
	if !installed {
		return nil // goes in with the table
	}
	return t.refill(setDoH4, setDoH6, doh)
}

// SetExempt replaces the devices that are neither redirected nor blocked.
func (t *Table) SetExempt(macs []net.HardwareAddr, ips []netip.Addr) error {
	t.mu.Lock()
	t.exemptMAC = slices.Clone(macs)
	t.exemptIP = uniqueAddrs(ips)
	macElems := macElements(t.exemptMAC)
	exemptIP, installed := t.exemptIP, t.installed
	t.mu.Unlock()
	if !installed {
		return nil // goes in with the table
	}
	c, err := t.conn()
	if err != nil {
		return err
	}
	tab := t.table()
	s := &nftables.Set{Table: tab, Name: setExemptMAC, KeyType: nftables.TypeEtherAddr}
	c.FlushSet(s)
	if len(macElems) > 0 {
		if err := c.SetAddElements(s, macElems); err != nil {
			return fmt.Errorf("intercept: exempt MACs: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("intercept: exempt MACs: %w", err)
	}
	return t.refill(setExempt4, setExempt6, exemptIP)
}

func (t *Table) refill(name4, name6 string, addrs []netip.Addr) error {
	c, err := t.conn()
	if err != nil {
		return err
	}
	tab := t.table()
	s4 := &nftables.Set{Table: tab, Name: name4, KeyType: nftables.TypeIPAddr}
	s6 := &nftables.Set{Table: tab, Name: name6, KeyType: nftables.TypeIP6Addr}
	e4, e6 := addrElements(addrs)
	c.FlushSet(s4)
	c.FlushSet(s6)
	if len(e4) > 0 {
		if err := c.SetAddElements(s4, e4); err != nil {
			return fmt.Errorf("intercept: set %s: %w", name4, err)
		}
	}
	if len(e6) > 0 {
		if err := c.SetAddElements(s6, e6); err != nil {
			return fmt.Errorf("intercept: set %s: %w", name6, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("intercept: fill sets %s, %s: %w", name4, name6, err)
	}
	return nil
}

type tableSets struct {
	lan, exMAC, ex4, ex6, doh4, doh6 *nftables.Set
}

func (t *Table) addSets(c *nftables.Conn, tab *nftables.Table) (tableSets, error) {
	var s tableSets
	lanElems := make([]nftables.SetElement, 0, len(t.cfg.LAN))
	for _, n := range t.cfg.LAN {
		lanElems = append(lanElems, nftables.SetElement{Key: ifname(n)})
	}
	e4, e6 := addrElements(t.exemptIP)
	d4, d6 := addrElements(t.doh)
	for _, x := range []struct {
		p     **nftables.Set
		name  string
		typ   nftables.SetDatatype
		elems []nftables.SetElement
	}{
		{&s.lan, setLAN, nftables.TypeIFName, lanElems},
		{&s.exMAC, setExemptMAC, nftables.TypeEtherAddr, macElements(t.exemptMAC)},
		{&s.ex4, setExempt4, nftables.TypeIPAddr, e4},
		{&s.ex6, setExempt6, nftables.TypeIP6Addr, e6},
		{&s.doh4, setDoH4, nftables.TypeIPAddr, d4},
		{&s.doh6, setDoH6, nftables.TypeIP6Addr, d6},
	} {
		set := &nftables.Set{Table: tab, Name: x.name, KeyType: x.typ}
		if x.typ == nftables.TypeIFName {
			// Interface names are strings in host order: without saying
			// so, nft lists the set as { "" } although it matches.
			set.KeyByteOrder = binaryutil.NativeEndian
		}
		if err := c.AddSet(set, x.elems); err != nil {
			return s, fmt.Errorf("intercept: set %s: %w", x.name, err)
		}
		*x.p = set
	}
	return s, nil
}

// ruleCounts is how many rules each chain has once installed.
func (t *Table) ruleCounts() map[string]int {
	return map[string]int{
		chainObserve:  len(t.observeRules(nil)),
		chainRedirect: len(t.redirectRules(tableSets{})),
		chainBlock:    len(t.blockRules(tableSets{})),
	}
}

func (t *Table) addChains(c *nftables.Conn, tab *nftables.Table, s tableSets) {
	accept := nftables.ChainPolicyAccept
	chains := []struct {
		chain *nftables.Chain
		rules [][]expr.Any
	}{
		{&nftables.Chain{Name: chainObserve, Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept},
			t.observeRules(s.lan)},
		{&nftables.Chain{Name: chainRedirect, Table: tab, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept},
			t.redirectRules(s)},
		{&nftables.Chain{Name: chainBlock, Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
			t.blockRules(s)},
	}
	for _, ch := range chains {
		chain := c.AddChain(ch.chain)
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: tab, Chain: chain, Exprs: r})
		}
	}
}

// observeRules log every port-53 packet from the LAN before any NAT.
func (t *Table) observeRules(lan *nftables.Set) [][]expr.Any {
	if t.cfg.NFLogGroup == 0 || t.off&featNFLog != 0 {
		return nil
	}
	var rules [][]expr.Any
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, cat(fromLAN(lan, false), dport(proto, 53), t.nflog(KindDNS)))
	}
	return rules
}

// redirectRules send LAN port-53 traffic not addressed to the router to
// the guard's port; exempt devices pass untouched.
func (t *Table) redirectRules(s tableSets) [][]expr.Any {
	if !t.cfg.RedirectDNS {
		return nil
	}
	rules := t.exemptions(s)
	// Sent to a broadcast or multicast address (a frame not addressed to
	// the router alone): redirected, the answer's source would be turned
	// back into that address by conntrack (ff02::1, 10.0.0.255), which no
	// host may send from (RFC 4291 §2.7, RFC 1122 §3.2.1.3). Left alone,
	// it reaches the guard, which does not answer it.
	rules = append(rules, cat([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyPKTTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.PACKET_HOST}},
	}, verdict(expr.VerdictReturn)))
	if t.cfg.GuardPort == 53 && t.off&featFib == 0 {
		// Addressed to the router itself: already the guard's port.
		rules = append(rules, cat(
			[]expr.Any{
				&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			}, verdict(expr.VerdictReturn)))
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, cat(dport(proto, 53), []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(t.cfg.GuardPort)},
			&expr.Redir{RegisterProtoMin: 1},
		}))
	}
	return rules
}

// blockRules reject DoT/DoQ and DoH from the LAN to the Internet, logging
// each attempt first.
func (t *Table) blockRules(s tableSets) [][]expr.Any {
	if !t.cfg.BlockDoT && !t.cfg.BlockDoH {
		return nil
	}
	rules := t.exemptions(s)
	if t.cfg.BlockDoT {
		rules = append(rules,
			cat(dport(unix.IPPROTO_TCP, 853), t.nflog(KindDoT), rejectTCP()),
			cat(dport(unix.IPPROTO_UDP, 853), t.nflog(KindDoQ), rejectUDP()))
	}
	if t.cfg.BlockDoH {
		for _, fam := range []struct {
			nfproto byte
			set     *nftables.Set
			off     uint32
			n       uint32
		}{{unix.NFPROTO_IPV4, s.doh4, 16, 4}, {unix.NFPROTO_IPV6, s.doh6, 24, 16}} {
			match := cat(nfproto(fam.nfproto), []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.n},
				lookup(fam.set, false),
			})
			rules = append(rules,
				cat(match, dport(unix.IPPROTO_TCP, 443), t.nflog(KindDoH), rejectTCP()),
				cat(match, dport(unix.IPPROTO_UDP, 443), t.nflog(KindDoH), rejectUDP()))
		}
	}
	return rules
}

// exemptions return from a chain for traffic that is not the guard's
// business: not from a LAN interface, or from an exempt device.
func (t *Table) exemptions(s tableSets) [][]expr.Any {
	ret := verdict(expr.VerdictReturn)
	return [][]expr.Any{
		cat(fromLAN(s.lan, true), ret),
		cat([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			lookup(s.exMAC, false),
		}, ret),
		cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			lookup(s.ex4, false),
		}, ret),
		cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			lookup(s.ex6, false),
		}, ret),
	}
}

func (t *Table) nflog(kind Kind) []expr.Any {
	if t.cfg.NFLogGroup == 0 || t.off&featNFLog != 0 {
		return nil
	}
	return []expr.Any{&expr.Log{
		Key:        1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_QTHRESHOLD,
		Group:      t.cfg.NFLogGroup,
		QThreshold: 1, // deliver each packet at once: identify waits on it
		Data:       []byte(kind),
	}}
}

func fromLAN(lan *nftables.Set, invert bool) []expr.Any {
	l := lookup(lan, invert)
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, l}
}

func lookup(s *nftables.Set, invert bool) *expr.Lookup {
	l := &expr.Lookup{SourceRegister: 1, Invert: invert}
	if s != nil {
		l.SetName, l.SetID = s.Name, s.ID
	}
	return l
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func rejectTCP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

func rejectUDP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func macElements(macs []net.HardwareAddr) []nftables.SetElement {
	var out []nftables.SetElement
	for _, m := range macs {
		if len(m) == 6 {
			out = append(out, nftables.SetElement{Key: []byte(m)})
		}
	}
	return out
}

func addrElements(addrs []netip.Addr) (v4, v6 []nftables.SetElement) {
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			b := a.As4()
			v4 = append(v4, nftables.SetElement{Key: b[:]})
		case a.Is6():
			b := a.As16()
			v6 = append(v6, nftables.SetElement{Key: b[:]})
		}
	}
	return v4, v6
}

func uniqueAddrs(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsValid() {
			out = append(out, a.WithZone(""))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
