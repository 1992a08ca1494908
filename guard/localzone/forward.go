package localzone

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// Defaults for Config fields left zero.
const (
	// DefaultMaxTTL caps the TTLs of local answers: DHCP names come and
	// go, and a configuration change must show within a minute.
	DefaultMaxTTL = time.Minute
	// DefaultTimeout is one attempt at the local server; there are
	// attempts of them (a lost datagram on loopback is rare, a busy
	// dnsmasq is not).
	DefaultTimeout = 750 * time.Millisecond
	attempts       = 2
)

// Config is what Local is built from.
type Config struct {
	// Domains are the LAN's domains ("lan"), besides LocalZones.
	Domains []string
	// Server is the local server's IP:PORT (dnsmasq on 127.0.0.1:5354 on
	// OpenWrt). Empty: local names are answered NXDOMAIN here.
	Server  string
	MaxTTL  time.Duration // DefaultMaxTTL if 0
	Timeout time.Duration // per attempt; DefaultTimeout if 0
	// Check validates the local server's answer resp to q, asked under
	// the device's terms t: the answer shield without rebinding
	// protection (validate's Trusted). It returns the answer to use or
	// why it is refused. Nil accepts every answer.
	Check  func(t policy.Terms, q, resp *dns.Msg) (*dns.Msg, error)
	Logger *slog.Logger // slog.Default() if nil
}

// Stats counts what Local did.
type Stats struct {
	Forwarded atomic.Uint64 // questions sent to the local server (answered or not)
	Failed    atomic.Uint64 // of those, without a usable answer
	Refused   atomic.Uint64 // of the failed, answers Check refused
	Answered  atomic.Uint64 // answered here, without a local server
}

// Local is the stage that keeps local names local: the LAN domains,
// home.arpa, the locally served reverse zones (LocalZones) and address
// queries for plain one-label names (DHCP host names asked without their
// domain) go to the local server over Do53 (UDP from a fresh random port
// with a fresh CSPRNG ID, TCP when truncated) and never to next; without
// a local server they are answered NXDOMAIN here, with the zone's SOA
// where there is a zone. Every TTL of a local answer is capped at MaxTTL.
//
// It belongs inside the cache stage, in front of the upstreams: local
// answers are then cached, coalesced, served stale and their failures
// backed off like any other, and MaxTTL keeps them short.
type Local struct {
	zones    *zoneSet
	server   string
	tr       upstream.Transport // nil without a server
	counters upstream.Counters
	maxTTL   uint32
	timeout  time.Duration
	check    func(t policy.Terms, q, resp *dns.Msg) (*dns.Msg, error)
	log      *slog.Logger
	down     atomic.Bool // the last exchange failed (logged once per change)
	Stats    Stats
}

// New builds the stage for cfg. It opens no socket until a query comes.
func New(cfg Config) (*Local, error) {
	l := &Local{
		zones:   newZoneSet(),
		server:  cfg.Server,
		maxTTL:  uint32(DefaultMaxTTL / time.Second),
		timeout: cfg.Timeout,
		check:   cfg.Check,
		log:     cfg.Logger,
	}
	if cfg.MaxTTL > 0 {
		l.maxTTL = uint32(max(cfg.MaxTTL/time.Second, 1))
	}
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	for _, z := range append(LocalZones(), cfg.Domains...) {
		if _, err := l.zones.add(z); err != nil {
			return nil, fmt.Errorf("local names: %w", err)
		}
	}
	if cfg.Server != "" {
		// No TLS here: an empty pool spares loading the system roots.
		tr, err := upstream.NewTransport("udp://"+cfg.Server, upstream.Options{Roots: x509.NewCertPool()}, &l.counters)
		if err != nil {
			return nil, fmt.Errorf("local server: %w", err)
		}
		l.tr = tr
	}
	return l, nil
}

// Zones returns the zones Local keeps local, in presentation form.
func (l *Local) Zones() []string { return append([]string(nil), l.zones.names...) }

// Close closes the connection kept for truncated answers.
func (l *Local) Close() error {
	if l.tr == nil {
		return nil
	}
	return l.tr.Close()
}

// Name is "local".
func (l *Local) Name() string { return "local" }

// Wrap returns the stage in front of next (the upstreams).
func (l *Local) Wrap(next stage.Handler) stage.Handler {
	return stage.HandlerFunc(func(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
		if req.Q.Opcode != dns.OpcodeQuery {
			return next.ServeDNS(ctx, req)
		}
		i, apex, ok := l.zones.match(req.Q.Name)
		switch {
		case ok && l.tr == nil:
			l.Stats.Answered.Add(1)
			return emptyZone(req, l.zones.names[i], apex, l.maxTTL)
		case ok:
			return l.forward(ctx, req)
		case plainName(req.Q.Name) && (req.Q.Type == dns.TypeHTTPS || req.Q.Type == dns.TypeSVCB):
			// A browser's HTTPS lookup of a typed host name: no public
			// name without a dot has one, and asking the local server
			// would let dnsmasq (domain-needed covers A/AAAA only) pass
			// the DHCP host name to its WAN upstreams. No data: the
			// browser goes on with A/AAAA.
			l.Stats.Answered.Add(1)
			return stage.Synth(req, dns.RcodeSuccess, nil, nil)
		case !plainAddressQuery(&req.Q):
			return next.ServeDNS(ctx, req)
		case l.tr == nil:
			// No public name has addresses without a dot (RFC 7085;
			// ICANN prohibits dotless domains): nothing to find.
			l.Stats.Answered.Add(1)
			return stage.Synth(req, dns.RcodeNameError, nil, nil)
		default:
			return l.forward(ctx, req)
		}
	})
}

// forward asks the local server.
func (l *Local) forward(ctx context.Context, req *stage.Request) (*dnswire.Reply, error) {
	l.Stats.Forwarded.Add(1)
	q := forward.Query(req)
	var (
		resp *dns.Msg
		err  error
	)
	for range attempts {
		actx, cancel := context.WithTimeout(ctx, l.timeout)
		resp, err = l.tr.Exchange(actx, q, upstream.QueryOptions{})
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		l.Stats.Failed.Add(1)
		if !l.down.Swap(true) {
			l.log.Warn("local server not answering; local names fail until it does", "server", l.server, "name", req.Q.String(), "err", err)
		}
		return nil, stage.Fail(dnswire.EDENoReachableAut, "local server "+l.server+" did not answer", err)
	}
	if l.down.Swap(false) {
		l.log.Info("local server answering again", "server", l.server)
	}
	if l.check != nil {
		checked, cerr := l.check(req.Terms, q, resp)
		if cerr != nil {
			l.Stats.Failed.Add(1)
			l.Stats.Refused.Add(1)
			l.log.Debug("local server's answer refused", "server", l.server, "name", req.Q.String(), "err", cerr)
			var se *stage.Error
			if errors.As(cerr, &se) {
				return nil, cerr
			}
			return nil, stage.Fail(dnswire.EDEInvalidData, "local server's answer refused", cerr)
		}
		resp = checked
	}
	capTTLs(resp, l.maxTTL)
	return forward.Stored(req, resp)
}

// plainAddressQuery reports whether q asks for the addresses of a plain
// name, one label without a dot ("mylaptop"): a DHCP host name asked
// without its domain. Like dnsmasq's domain-needed (on by default on
// OpenWrt), such queries stay local; other types (a DS or SOA query for
// a top-level domain) go upstream.
func plainAddressQuery(q *dnswire.Query) bool {
	return (q.Type == dns.TypeA || q.Type == dns.TypeAAAA) && plainName(q.Name)
}

// plainName reports whether the wire name n has exactly one label.
func plainName(n []byte) bool {
	return len(n) > 1 && n[0] > 0 && int(n[0])+1 < len(n) && n[int(n[0])+1] == 0
}

// capTTLs lowers every TTL of m (and the SOA minimum, which bounds
// negative caching) to at most max.
func capTTLs(m *dns.Msg, max uint32) {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			h.Ttl = min(h.Ttl, max)
			if s, ok := rr.(*dns.SOA); ok {
				s.Minttl = min(s.Minttl, max)
			}
		}
	}
}
