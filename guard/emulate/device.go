package emulate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Config places a device on the network.
type Config struct {
	Profile Profile
	// Target is the resolver the device sends to; zero: Profile.Server.
	Target netip.AddrPort
	// Local is the source address (e.g. 127.0.0.7: each emulated device
	// on its own loopback address, so a server tells them apart and fixed
	// source ports do not collide). Zero: the kernel picks.
	Local netip.Addr
	// Seed makes the ports and IDs reproducible.
	Seed uint64
	// UsePort: after an address answer, open a TCP connection to that
	// address on this port, the way a device goes on to use what it was
	// told (the lab counts these when a forged name points at itself).
	// 0: never.
	UsePort uint16
}

// Datagram is one UDP message the device received.
type Datagram struct {
	At   time.Time
	Port uint16 // the device's port it arrived on
	From netip.AddrPort
	ID   uint16
	Size int
	Msg  *dns.Msg // nil if it did not parse
}

// Exchange is one query and the answer the device took for it: the first
// datagram on its socket with its ID (the study's devices accept that).
type Exchange struct {
	Name  string
	Type  uint16
	Sent  time.Time
	Port  uint16
	ID    uint16
	Reply *dns.Msg // nil when nothing came back in time
	RTT   time.Duration
	Err   error
	Used  bool // the device connected to the answer's address (UsePort)
}

// Failed reports whether the device would count the exchange as a failed
// resolution: no answer, an error rcode, or no address of the asked type
// at the end of the answer.
func (e *Exchange) Failed() bool {
	return e.Reply == nil || e.Reply.Rcode != dns.RcodeSuccess || len(Addresses(e.Reply, e.Type)) == 0
}

// Addresses returns the addresses of type qtype in m's answer section.
func Addresses(m *dns.Msg, qtype uint16) []netip.Addr {
	var out []netip.Addr
	for _, rr := range m.Answer {
		var ip net.IP
		switch r := rr.(type) {
		case *dns.A:
			ip = r.A
		case *dns.AAAA:
			ip = r.AAAA
		}
		if ip == nil || (qtype != dns.TypeANY && rr.Header().Rrtype != qtype) {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Device is one emulated device.
type Device struct {
	cfg    Config
	target netip.AddrPort

	mu        sync.Mutex
	rng       *rand.Rand
	socks     map[uint16]*socket // fixed ports, kept open as the firmware does
	exchanges []Exchange
	received  []Datagram
	closed    bool
	readers   sync.WaitGroup
}

type socket struct {
	busy sync.Mutex // one query in flight per socket
	conn *net.UDPConn
	port uint16
	in   chan Datagram
}

// New makes a device; it opens sockets as its profile asks for them.
func New(cfg Config) *Device {
	t := cfg.Target
	if !t.IsValid() {
		t = cfg.Profile.Server
	}
	if cfg.Profile.Port == nil {
		cfg.Profile.Port = ephemeral
	}
	if cfg.Profile.ID == nil {
		cfg.Profile.ID = randomID
	}
	if cfg.Profile.Timeout <= 0 {
		cfg.Profile.Timeout = 2 * time.Second
	}
	if cfg.Profile.FailFactor < 1 {
		cfg.Profile.FailFactor = 1
	}
	return &Device{
		cfg:    cfg,
		target: t,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		socks:  map[uint16]*socket{},
	}
}

// Profile returns the device's profile.
func (d *Device) Profile() Profile { return d.cfg.Profile }

// Query sends one query and waits (up to the profile's timeout) for the
// first datagram with its ID. Copies that arrive later are recorded in
// Received, not here.
func (d *Device) Query(ctx context.Context, name string, qtype uint16) Exchange {
	return d.query(ctx, name, qtype, d.cfg.Profile.Timeout)
}

func (d *Device) query(ctx context.Context, name string, qtype uint16, timeout time.Duration) Exchange {
	d.mu.Lock()
	port, id := d.cfg.Profile.Port(d.rng), d.cfg.Profile.ID(d.rng)
	d.mu.Unlock()
	ex := Exchange{Name: dns.Fqdn(name), Type: qtype, ID: id}
	s, release, err := d.socket(port)
	if err != nil {
		ex.Err, ex.Sent = err, time.Now()
		d.record(ex)
		return ex
	}
	defer release()
	ex.Port = s.port
	for len(s.in) > 0 { // late copies of an earlier answer
		<-s.in
	}
	q := new(dns.Msg)
	q.SetQuestion(ex.Name, qtype)
	q.Id = id
	if d.cfg.Profile.EDNS > 0 {
		q.SetEdns0(d.cfg.Profile.EDNS, false)
	}
	b, err := q.Pack()
	if err != nil {
		ex.Err = fmt.Errorf("emulate: pack: %w", err)
		d.record(ex)
		return ex
	}
	ex.Sent = time.Now()
	if _, err := s.conn.WriteToUDPAddrPort(b, d.target); err != nil {
		ex.Err = fmt.Errorf("emulate: send: %w", err)
		d.record(ex)
		return ex
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			ex.Err = ctx.Err()
			break wait
		case <-timer.C:
			ex.Err = errTimeout
			break wait
		case dg := <-s.in:
			if dg.ID != id || dg.Msg == nil || !dg.Msg.Response {
				continue
			}
			ex.Reply, ex.RTT = dg.Msg, dg.At.Sub(ex.Sent)
			break wait
		}
	}
	if ex.Reply != nil && d.cfg.UsePort != 0 {
		if addrs := Addresses(ex.Reply, qtype); len(addrs) > 0 {
			ex.Used = d.use(ctx, addrs[0])
		}
	}
	d.record(ex)
	return ex
}

var errTimeout = errors.New("emulate: no answer before the timeout")

// IsTimeout reports whether err is a query that got no answer.
func IsTimeout(err error) bool { return errors.Is(err, errTimeout) }

func (d *Device) use(ctx context.Context, a netip.Addr) bool {
	dl := net.Dialer{Timeout: d.cfg.Profile.Timeout}
	if d.cfg.Local.IsValid() {
		dl.LocalAddr = &net.TCPAddr{IP: d.cfg.Local.AsSlice()}
	}
	c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(d.cfg.UsePort))))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (d *Device) record(ex Exchange) {
	d.mu.Lock()
	d.exchanges = append(d.exchanges, ex)
	d.mu.Unlock()
}

// socket returns the socket for a source port (0: a fresh ephemeral one,
// closed by release) with its busy lock held.
func (d *Device) socket(port uint16) (*socket, func(), error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, nil, net.ErrClosed
	}
	s := d.socks[port]
	d.mu.Unlock()
	if s == nil || port == 0 {
		var err error
		if s, err = d.open(port); err != nil {
			return nil, nil, err
		}
		if port != 0 {
			d.mu.Lock()
			if prev := d.socks[port]; prev != nil { // lost a race: use the first
				s.conn.Close()
				s = prev
			} else {
				d.socks[port] = s
			}
			d.mu.Unlock()
		}
	}
	s.busy.Lock()
	if port == 0 {
		return s, func() { s.conn.Close(); s.busy.Unlock() }, nil
	}
	return s, s.busy.Unlock, nil
}

func (d *Device) open(port uint16) (*socket, error) {
	la := &net.UDPAddr{Port: int(port)}
	if d.cfg.Local.IsValid() {
		la.IP = d.cfg.Local.AsSlice()
	}
	network := "udp4"
	if d.target.Addr().Is6() && !d.target.Addr().Is4In6() {
		network = "udp6"
	}
	// A fixed source port (a device's habit) is bound with SO_REUSEADDR:
	// emulated devices on other local addresses, or a wildcard one, may
	// hold the same port at the same time, as real devices on a LAN do.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, la.String())
	if err != nil {
		return nil, fmt.Errorf("emulate: source port %d: %w", port, err)
	}
	c := pc.(*net.UDPConn)
	s := &socket{conn: c, port: uint16(c.LocalAddr().(*net.UDPAddr).Port), in: make(chan Datagram, 256)}
	d.readers.Add(1)
	go d.read(s)
	return s, nil
}

func (d *Device) read(s *socket) {
	defer d.readers.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dg := Datagram{At: time.Now(), Port: s.port, From: from, Size: n}
		if n >= 2 {
			dg.ID = uint16(buf[0])<<8 | uint16(buf[1])
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) == nil {
			dg.Msg = m
		}
		d.mu.Lock()
		d.received = append(d.received, dg)
		d.mu.Unlock()
		select {
		case s.in <- dg:
		default: // a flood: recorded, not waited for
		}
	}
}

// Run makes the device resolve names of type qtype until ctx ends, each
// name on its own schedule: every Interval whatever the TTL (or at TTL
// expiry when Interval is 0), FailFactor times as often while a name
// fails. A failing TTL-ignoring device does not wait out its timeout
// before asking again: it gives up on the answer when the next retry is
// due, so its rate really grows FailFactor-fold (the study's storms). It
// returns when ctx is done.
func (d *Device) Run(ctx context.Context, qtype uint16, names ...string) {
	var wg sync.WaitGroup
	p := d.cfg.Profile
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fails := 0
			timeout := p.Timeout
			for ctx.Err() == nil {
				ex := d.query(ctx, n, qtype, timeout)
				if ex.Failed() {
					fails++
				} else {
					fails = 0
				}
				period := d.next(&ex, fails)
				timeout = p.Timeout
				if fails > 0 && p.Interval > 0 {
					timeout = min(timeout, period)
				}
				t := time.NewTimer(max(period-time.Since(ex.Sent), 0))
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		}()
	}
	wg.Wait()
}

// next is the time from one query for a name to the next.
func (d *Device) next(ex *Exchange, fails int) time.Duration {
	p := d.cfg.Profile
	if p.Interval > 0 {
		if fails > 0 {
			return p.Interval / time.Duration(p.FailFactor)
		}
		return p.Interval
	}
	if fails > 0 { // a well-behaved stub: exponential backoff, 1 s .. 5 min
		return min(time.Second<<min(fails-1, 9), 5*time.Minute)
	}
	ttl := uint32(300)
	for i, rr := range ex.Reply.Answer {
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	return max(time.Duration(ttl)*time.Second, time.Second)
}

// Exchanges returns a copy of the queries made so far.
func (d *Device) Exchanges() []Exchange {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Exchange(nil), d.exchanges...)
}

// Received returns a copy of every datagram received so far.
func (d *Device) Received() []Datagram {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Datagram(nil), d.received...)
}

// Close closes the device's sockets and waits for its readers.
func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	socks := d.socks
	d.socks = map[uint16]*socket{}
	d.mu.Unlock()
	for _, s := range socks {
		s.conn.Close()
	}
	d.readers.Wait()
	return nil
}
