// Package audit turns packet captures into a per-device report of DNS
// hygiene: the passive metrics of the study this project follows (query
// rate and intervals, names, record types, TTL behaviour, sizes, EDNS(0),
// encrypted DNS, resolvers, retries), transaction-ID and source-port
// randomness graded by guard/entropy, and the study's Table I columns as
// far as a passive capture shows them.
//
// Captures are streamed (guard/capture); every per-device table is
// bounded, so memory stays flat whatever the size of the input.
package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/dnswire"
)

// Limits that keep memory bounded.
const (
	maxDevices = 2048 // DNS clients analysed in full
	maxHosts   = 65536
	nameBudget = 1 << 18 // distinct names counted exactly, over all devices
)

// Options configure an Auditor.
type Options struct {
	// Devices limits the report to these devices (MAC addresses, or IP
	// addresses for captures without a link layer). Empty: every device.
	Devices []string
	// Progress, if set, is called now and then with the bytes read of the
	// current input and its size.
	Progress func(done, total int64)
	Logger   *slog.Logger
}

// Auditor accumulates captures. It is not safe for concurrent use.
type Auditor struct {
	opts     Options
	log      *slog.Logger
	only     map[string]bool // normalised device keys, when filtering
	devices  map[string]*device
	order    []string              // device keys in order of first query
	byIP     map[netip.Addr]string // device key by address, for answers without a MAC
	hosts    map[[6]byte]netip.Addr
	answered map[netip.Addr]int // addresses that answered DNS: resolvers
	dhcpDNS  map[netip.Addr]bool
	files    []FileStat
	tcp      *capture.Reassembler
	dropped  int // devices beyond maxDevices
	names    int // what is left of nameBudget

	msg   message // scratch
	frame capture.Frame
}

// New returns an Auditor.
func New(opts Options) (*Auditor, error) {
	a := &Auditor{
		opts:     opts,
		log:      opts.Logger,
		devices:  make(map[string]*device),
		byIP:     make(map[netip.Addr]string),
		hosts:    make(map[[6]byte]netip.Addr),
		answered: make(map[netip.Addr]int),
		dhcpDNS:  make(map[netip.Addr]bool),
		tcp:      capture.NewReassembler(),
		names:    nameBudget,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if len(opts.Devices) > 0 {
		a.only = make(map[string]bool)
		for _, d := range opts.Devices {
			k, err := NormalizeDevice(d)
			if err != nil {
				return nil, err
			}
			a.only[k] = true
		}
	}
	return a, nil
}

// NormalizeDevice spells a MAC (any of the usual notations) or an IP
// address the way the report does.
func NormalizeDevice(s string) (string, error) {
	if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
		return hw.String(), nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap().String(), nil
	}
	return "", fmt.Errorf("audit: %q is neither a MAC nor an IP address", s)
}

// FileStat is what was read from one input.
type FileStat struct {
	Path        string `json:"path"`
	Boot        uint32 `json:"boot"`
	Bytes       int64  `json:"bytes"`
	Packets     int64  `json:"packets"`
	DNS         int64  `json:"dns_messages"`
	Corrupt     int64  `json:"corrupt_packets"`
	Unsupported int64  `json:"unsupported_link_packets,omitempty"`
	Error       string `json:"error,omitempty"`
}

// AddFile reads one capture as one boot of every device in it. A corrupt
// packet is skipped and counted; an error that stops the file (unknown
// format, truncation) is returned after what came before it was counted,
// and recorded in the report.
func (a *Auditor) AddFile(ctx context.Context, path string, boot uint32) error {
	f, err := os.Open(path)
	if err != nil {
		a.files = append(a.files, FileStat{Path: path, Boot: boot, Error: err.Error()})
		return fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	err = a.AddReader(ctx, f, path, boot, size)
	return err
}

// AddReader is AddFile for any reader; size (may be 0) feeds the progress
// callback.
func (a *Auditor) AddReader(ctx context.Context, r io.Reader, name string, boot uint32, size int64) error {
	st := FileStat{Path: name, Boot: boot}
	err := a.read(ctx, r, name, boot, size, &st)
	if err != nil {
		st.Error = err.Error()
	}
	a.files = append(a.files, st)
	a.log.Debug("capture read", "file", name, "packets", st.Packets, "dns", st.DNS, "corrupt", st.Corrupt, "err", err)
	return err
}

func (a *Auditor) read(ctx context.Context, r io.Reader, name string, boot uint32, size int64, st *FileStat) error {
	cr, err := capture.NewReader(r, name)
	if err != nil {
		return err
	}
	// TCP streams do not survive from one capture to the next.
	a.tcp = capture.NewReassembler()
	for {
		p, err := cr.Next()
		if err == io.EOF {
			st.Bytes = size
			if a.opts.Progress != nil {
				a.opts.Progress(size, size)
			}
			return nil
		}
		if err != nil {
			st.Bytes = p.Offset
			return err
		}
		st.Packets++
		if st.Packets&0xFFFF == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if a.opts.Progress != nil {
				a.opts.Progress(p.Offset, size)
			}
		}
		a.packet(&p, boot, st)
	}
}

func (a *Auditor) packet(p *capture.Packet, boot uint32, st *FileStat) {
	f := &a.frame
	if err := capture.Decode(p.LinkType, p.Data, f); err != nil {
		switch {
		case errors.Is(err, capture.ErrMalformed):
			st.Corrupt++
		case errors.Is(err, capture.ErrLinkType):
			st.Unsupported++
		}
		return
	}
	if f.HasMAC {
		a.noteHost(f.SrcMAC, f.Src)
	}
	if f.Fragment && f.Proto == 0 {
		return
	}
	switch f.Proto {
	case capture.ProtoUDP:
		switch {
		case f.DstPort == 53 || f.SrcPort == 53:
			a.dns(f, f.Payload, p.Time, boot, false, st)
		case f.SrcPort == 67 && f.DstPort == 68:
			a.dhcp(f.Payload)
		case f.DstPort == 853:
			a.encrypted(f, p.Time, boot, "DoQ")
		}
	case capture.ProtoTCP:
		switch {
		case f.DstPort == 53 || f.SrcPort == 53:
			a.tcp.Feed(f, p.Time, func(m []byte) { a.dns(f, m, p.Time, boot, true, st) })
		case f.DstPort == 853:
			if f.Flags&(capture.TCPSyn|capture.TCPAck) == capture.TCPSyn {
				a.encrypted(f, p.Time, boot, "DoT")
			}
		case f.DstPort == 443:
			a.https(f, p.Time, boot)
		}
	}
}

func (a *Auditor) noteHost(mac [6]byte, ip netip.Addr) {
	if _, ok := a.hosts[mac]; ok || len(a.hosts) >= maxHosts {
		return
	}
	a.hosts[mac] = ip
}

// deviceKey names the device that sent a packet: its MAC when the link
// layer has one, else its IP address.
func deviceKey(f *capture.Frame) string {
	if f.HasMAC {
		return net.HardwareAddr(f.SrcMAC[:]).String()
	}
	return f.Src.Unmap().String()
}

// clientOf finds the device an answer goes to.
func (a *Auditor) clientOf(f *capture.Frame) *device {
	if f.HasMAC && f.DstMAC != ([6]byte{}) {
		if d := a.devices[net.HardwareAddr(f.DstMAC[:]).String()]; d != nil {
			return d
		}
	}
	if k, ok := a.byIP[f.Dst.Unmap()]; ok {
		return a.devices[k]
	}
	return nil
}

// device returns the sender's record, creating it; nil when filtered out
// or over the limit.
func (a *Auditor) device(f *capture.Frame) *device {
	k := deviceKey(f)
	if d := a.devices[k]; d != nil {
		d.noteIP(f.Src.Unmap())
		return d
	}
	if a.only != nil && !a.only[k] && !a.only[f.Src.Unmap().String()] {
		return nil
	}
	if len(a.devices) >= maxDevices {
		a.dropped++
		return nil
	}
	d := newDevice(k, f.HasMAC)
	d.noteIP(f.Src.Unmap())
	a.devices[k] = d
	a.order = append(a.order, k)
	if len(a.byIP) < maxHosts {
		a.byIP[f.Src.Unmap()] = k
	}
	return d
}

func (a *Auditor) dns(f *capture.Frame, payload []byte, t int64, boot uint32, tcp bool, st *FileStat) {
	m := &a.msg
	if err := m.parse(payload); err != nil {
		if f.DstPort == 53 || f.SrcPort == 53 {
			st.Corrupt++
		}
		return
	}
	st.DNS++
	switch {
	case !m.Response && f.DstPort == 53:
		if d := a.device(f); d != nil {
			d.query(m, f, t, boot, tcp, len(payload), &a.names)
		}
	case m.Response && f.SrcPort == 53:
		a.answered[f.Src.Unmap()]++
		if d := a.clientOf(f); d != nil {
			d.response(m, t, len(payload))
		}
	}
}

func (a *Auditor) encrypted(f *capture.Frame, t int64, boot uint32, kind string) {
	if d := a.device(f); d != nil {
		d.encrypted(kind, f.Dst.Unmap().String(), t, boot)
	}
}

func (a *Auditor) https(f *capture.Frame, t int64, boot uint32) {
	dst := f.Dst.Unmap()
	if f.Flags&(capture.TCPSyn|capture.TCPAck) == capture.TCPSyn && isPublicResolver(dst) {
		a.encrypted(f, t, boot, "DoH")
		return
	}
	if len(f.Payload) > 0 {
		if sni := clientHelloSNI(f.Payload); sni != "" && isDoHHost(sni) && !isPublicResolver(dst) {
			if d := a.device(f); d != nil {
				d.encrypted("DoH", sni, t, boot)
			}
		}
	}
}

// dhcp notes the DNS servers a DHCP server hands out (option 6).
func (a *Auditor) dhcp(b []byte) {
	if len(b) < 240 || b[0] != 2 || string(b[236:240]) != "\x63\x82\x53\x63" {
		return
	}
	opts := b[240:]
	for len(opts) >= 2 {
		code := opts[0]
		if code == 0 {
			opts = opts[1:]
			continue
		}
		if code == 255 {
			return
		}
		n := int(opts[1])
		if len(opts) < 2+n {
			return
		}
		if code == 6 {
			for v := opts[2 : 2+n]; len(v) >= 4; v = v[4:] {
				if len(a.dhcpDNS) < 64 {
					a.dhcpDNS[netip.AddrFrom4([4]byte(v[:4]))] = true
				}
			}
		}
		opts = opts[2+n:]
	}
}

// Report builds the report of everything read so far.
func (a *Auditor) Report() *Report {
	network := a.networkResolvers()
	r := &Report{Files: a.files, DroppedDevices: a.dropped, TCP: a.tcp.Stats}
	for _, n := range network {
		r.NetworkResolvers = append(r.NetworkResolvers, n.String())
	}
	for _, k := range a.order {
		r.Devices = append(r.Devices, a.devices[k].report(network))
	}
	// Devices asked for by name that sent no DNS, and other hosts seen.
	for mac, ip := range a.hosts {
		k := net.HardwareAddr(mac[:]).String()
		if _, ok := a.devices[k]; ok {
			continue
		}
		if a.only != nil {
			if a.only[k] {
				r.Devices = append(r.Devices, silentDevice(k, ip))
			}
			continue
		}
		if a.answered[ip.Unmap()] > 0 {
			r.Resolvers = append(r.Resolvers, k)
			continue
		}
		r.Silent = append(r.Silent, k)
	}
	if a.only != nil {
		for k := range a.only {
			if _, ok := a.devices[k]; ok {
				continue
			}
			if hw, err := net.ParseMAC(k); err == nil && a.hosts[[6]byte(hw)] != (netip.Addr{}) {
				continue // reported above
			}
			r.Devices = append(r.Devices, silentDevice(k, netip.Addr{}))
		}
	}
	r.sort()
	return r
}

// networkResolvers are the resolvers the network hands out: from DHCP when
// the capture has it, else the resolvers that answered the most devices.
func (a *Auditor) networkResolvers() []netip.Addr {
	var out []netip.Addr
	for ip := range a.dhcpDNS {
		out = append(out, ip)
	}
	if len(out) == 0 {
		users := map[netip.Addr]int{}
		for _, d := range a.devices {
			for ip := range d.resolvers {
				if a.answered[ip] > 0 || !isPublicResolver(ip) {
					users[ip]++
				}
			}
		}
		best := 0
		for _, n := range users {
			best = max(best, n)
		}
		for ip, n := range users {
			if n == best && !isPublicResolver(ip) {
				out = append(out, ip)
			}
		}
	}
	sortAddrs(out)
	return out
}

// isPublicResolver reports well-known public resolver addresses (the
// usual hard-coded ones, also DoH/DoT endpoints).
func isPublicResolver(ip netip.Addr) bool {
	switch ip.String() {
	case "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
		"208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15",
		"185.228.168.168", "76.76.2.0", "76.76.10.0", "114.114.114.114", "223.5.5.5",
		"2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111",
		"2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9", "2620:119:35::35":
		return true
	}
	return false
}

func isDoHHost(h string) bool {
	switch strings.ToLower(strings.TrimSuffix(h, ".")) {
	case "dns.google", "dns.google.com", "cloudflare-dns.com", "mozilla.cloudflare-dns.com",
		"chrome.cloudflare-dns.com", "one.one.one.one", "1dot1dot1dot1.cloudflare-dns.com",
		"security.cloudflare-dns.com", "family.cloudflare-dns.com", "dns.quad9.net",
		"dns9.quad9.net", "dns10.quad9.net", "dns11.quad9.net", "doh.opendns.com",
		"dns.adguard.com", "dns.adguard-dns.com", "doh.cleanbrowsing.org", "dns.nextdns.io",
		"doh.dns.apple.com", "doh.familyshield.opendns.com", "dns.alidns.com", "doh.pub":
		return true
	}
	return false
}

// message is a DNS message as the audit counts it: what dnswire reads of
// it, and its question's name in the form the report shows.
type message struct {
	dnswire.Message
	name []byte // lower-case presentation form without the final dot ("" for the root)
}

func (m *message) parse(b []byte) error {
	if err := dnswire.ParseMessage(b, &m.Message); err != nil {
		return err
	}
	m.name = dnswire.AppendName(m.name[:0], m.Name)
	m.name = m.name[:len(m.name)-1]
	return nil
}
