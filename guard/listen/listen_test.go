package listen_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/cache"
	"github.com/dnsguard/dnsguard/guard/forward"
	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/protocol"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// zone answers like an upstream: n A records for "N.many.test.", a
// delay for "slow.test.", NXDOMAIN for the rest.
type zone struct {
	calls atomic.Int64
	gate  chan struct{} // names under gate.test. wait for it to close
}

func (z *zone) Exchange(ctx context.Context, q *dns.Msg, _ policy.Terms) (*dns.Msg, error) {
	z.calls.Add(1)
	m := new(dns.Msg)
	m.SetReply(q)
	name := q.Question[0].Name
	var n int
	switch {
	case dns.IsSubDomain("gate.test.", name) && z.gate != nil:
		select {
		case <-z.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		n = 1
	case name == "slow.test.":
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		n = 1
	case manyRecords(name, &n):
	default:
		soa, _ := dns.NewRR("test. 300 IN SOA ns.test. h.test. 1 2 3 4 60")
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
		return m, nil
	}
	for i := 0; i < n; i++ {
		rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A 198.51.100.%d", name, i%250))
		m.Answer = append(m.Answer, rr)
	}
	return m, nil
}

// manyRecords reports whether name is "N.many.test." and sets n to N.
func manyRecords(name string, n *int) bool {
	_, err := fmt.Sscanf(name, "%d.many.test.", n)
	return err == nil
}

func start(t *testing.T, opts listen.Options) (string, *zone, *listen.Server) {
	t.Helper()
	z := &zone{gate: make(chan struct{})}
	t.Cleanup(func() { close(z.gate) })
	c := cache.New(policy.Cache{MaxEntries: 1000, MaxBytes: 1 << 20, MinTTL: 30 * time.Second, MaxTTL: time.Hour,
		NegMaxTTL: time.Hour, FailMin: time.Second, FailMax: time.Minute}, nil, nil)
	h := stage.Chain(protocol.New(), c, forward.New(z))
	s := listen.New(h, opts, nil)
	if err := s.Listen([]string{"127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	// As cmd/dnsguard: the cache's flights end when serving stops (the
	// queries waiting on them do not give up).
	t.Cleanup(func() { cancel(); c.Close(); <-done })
	return s.Addrs()[0].String(), z, s
}

func exchange(t *testing.T, netw, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %v: %v", netw, m.Question, err)
	}
	return r
}

func TestProtocolRules(t *testing.T) {
	addr, _, _ := start(t, listen.Options{})
	q := func(name string, qt uint16) *dns.Msg { m := new(dns.Msg); m.SetQuestion(name, qt); return m }

	notify := q("x.test.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	v1 := q("3.many.test.", dns.TypeA)
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	chaos := q("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	unknownOpt := q("3.many.test.", dns.TypeA)
	unknownOpt.SetEdns0(1232, false)
	unknownOpt.IsEdns0().Option = append(unknownOpt.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65000, Data: []byte("x")})
	mixed := q("3.MaNy.TeSt.", dns.TypeA)

	tests := []struct {
		name  string
		m     *dns.Msg
		rcode int
		check func(t *testing.T, r *dns.Msg)
	}{
		{"NOTIMP for NOTIFY", notify, dns.RcodeNotImplemented, nil},
		{"BADVERS for EDNS version 1", v1, dns.RcodeBadVers, func(t *testing.T, r *dns.Msg) {
			if r.IsEdns0() == nil || r.IsEdns0().Version() != 0 {
				t.Error("BADVERS answer must carry an OPT of version 0")
			}
		}},
		{"minimal ANY", q("3.many.test.", dns.TypeANY), dns.RcodeSuccess, func(t *testing.T, r *dns.Msg) {
			if len(r.Answer) != 1 || r.Answer[0].(*dns.HINFO).Cpu != "RFC8482" {
				t.Errorf("ANY answer %v", r.Answer)
			}
		}},
		{"REFUSED for CHAOS", chaos, dns.RcodeRefused, nil},
		{"unknown EDNS option ignored", unknownOpt, dns.RcodeSuccess, func(t *testing.T, r *dns.Msg) {
			if len(r.Answer) != 3 || r.IsEdns0() == nil {
				t.Errorf("answer %v", r)
			}
		}},
		{"no OPT without one in the query, device's case kept", mixed, dns.RcodeSuccess, func(t *testing.T, r *dns.Msg) {
			if r.IsEdns0() != nil {
				t.Error("OPT in the answer to a query without one")
			}
			if r.Question[0].Name != "3.MaNy.TeSt." {
				t.Errorf("question case %q", r.Question[0].Name)
			}
		}},
		{"NXDOMAIN with SOA", q("nothing.test.", dns.TypeA), dns.RcodeNameError, func(t *testing.T, r *dns.Msg) {
			if len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 60 {
				t.Errorf("authority %v (want the SOA with TTL min(300, 60))", r.Ns)
			}
		}},
	}
	for _, tt := range tests {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+netw, func(t *testing.T) {
				r := exchange(t, netw, addr, tt.m.Copy())
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if r.Id != tt.m.Id {
					t.Errorf("id %d, want %d", r.Id, tt.m.Id)
				}
				if tt.check != nil {
					tt.check(t, r)
				}
			})
		}
	}
}

func rawUDP(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestMalformed(t *testing.T) {
	addr, _, _ := start(t, listen.Options{})
	m := new(dns.Msg)
	m.SetQuestion("3.many.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.Extra = append(m.Extra, m.Extra[0])
	twoOPT, _ := m.Pack()
	if r := rawUDP(t, addr, twoOPT); r == nil || r[3]&0xF != dns.RcodeFormatError {
		t.Errorf("two OPT records: %x, want FORMERR", r)
	}
	if r := rawUDP(t, addr, []byte{1, 2, 3}); r != nil {
		t.Errorf("answered a 3-byte message: %x", r)
	}
	resp := new(dns.Msg)
	resp.SetQuestion("x.test.", dns.TypeA)
	resp.Response = true
	rb, _ := resp.Pack()
	if r := rawUDP(t, addr, rb); r != nil {
		t.Errorf("answered a response (reflection loop risk): %x", r)
	}
}

func TestSizeAndTruncation(t *testing.T) {
	addr, _, s := start(t, listen.Options{})
	// 60 A records: 1000+ octets. No EDNS: TC over UDP, full over TCP.
	m := new(dns.Msg)
	m.SetQuestion("60.many.test.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("no-EDNS answer of >512 octets: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	if r := exchange(t, "tcp", addr, m.Copy()); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	// EDNS 4096 is capped at 1232: 60 records fit, 80 do not.
	m.SetEdns0(4096, false)
	if r := exchange(t, "udp", addr, m.Copy()); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("EDNS 60 records: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	m.Question[0].Name = "80.many.test."
	r, _, err = (&dns.Client{Net: "udp", UDPSize: 4096}).Exchange(m, addr)
	if err != nil || !r.Truncated {
		t.Errorf("EDNS 80 records over 1232 octets: TC=%v err=%v", r != nil && r.Truncated, err)
	}
	if s.Stats.Truncated.Load() < 2 {
		t.Errorf("truncations counted %d", s.Stats.Truncated.Load())
	}
}

// TestTCPPipelining sends a slow query then fast ones on one connection:
// the fast answers come back first (RFC 7766 §7).
func TestTCPPipelining(t *testing.T) {
	addr, _, _ := start(t, listen.Options{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	names := []string{"slow.test.", "1.many.test.", "2.many.test.", "3.many.test."}
	var buf []byte
	for i, n := range names {
		m := new(dns.Msg)
		m.SetQuestion(n, dns.TypeA)
		m.Id = uint16(100 + i)
		b, _ := m.Pack()
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(b)))
		buf = append(buf, b...)
	}
	conn.Write(buf) // all four in one segment
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var order []uint16
	for range names {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint16(hdr))
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		order = append(order, binary.BigEndian.Uint16(b))
	}
	if order[len(order)-1] != 100 {
		t.Errorf("answer order %v: the slow query (100) should come last", order)
	}
}

func TestTCPLimits(t *testing.T) {
	// The idle timeout leaves the third connection time to be accepted
	// (and refused) while the first two are open, on a loaded machine
	// too: at 200 ms CI once saw the first closed idle before the third
	// was accepted, which then was not refused.
	addr, _, s := start(t, listen.Options{TCPIdleTimeout: 2 * time.Second, TCPMaxPerClient: 2})
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The third is closed at once; the first two are closed when idle.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == nil {
			t.Errorf("conn %d: read data, want close", i)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("conn %d: not closed by the server (idle timeout / per-client limit)", i)
		}
	}
	if s.Stats.TCPRefused.Load() != 1 {
		t.Errorf("refused %d connections, want 1", s.Stats.TCPRefused.Load())
	}
}

// TestCorpusReplay sends every message of the shared fuzzing corpus over
// UDP and TCP: each is answered or dropped, and the server keeps serving.
func TestCorpusReplay(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testenv.Data(t, "dns-fuzzing"), "packet", "*"))
	if len(files) == 0 {
		t.Fatal("no messages in ../shared/data/dns-fuzzing/packet")
	}
	if testing.Short() {
		files = files[:500]
	}
	addr, _, s := start(t, listen.Options{})
	udp, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // drain answers
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			udp.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := udp.Read(buf); err != nil {
				return
			}
		}
	}()
	tcp, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) > 65535 {
			continue
		}
		udp.Write(b)
		if i%4 == 0 {
			tcp.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		}
		if i%200 == 0 {
			time.Sleep(5 * time.Millisecond) // stay under the UDP socket buffer
		}
	}
	wg.Wait()
	// Still serving, both ways.
	m := new(dns.Msg)
	m.SetQuestion("2.many.test.", dns.TypeA)
	if r := exchange(t, "udp", addr, m.Copy()); len(r.Answer) != 2 {
		t.Errorf("after replay: %v", r)
	}
	if r := exchange(t, "tcp", addr, m.Copy()); len(r.Answer) != 2 {
		t.Errorf("after replay (tcp): %v", r)
	}
	t.Logf("replayed %d messages: %d queries, %d malformed", len(files), s.Stats.Queries.Load(), s.Stats.Malformed.Load())
}

// TestHitsNotHeldBySlowMisses: with every UDP reader waiting on a slow
// upstream, a cached name is still answered (the waiting queries spill
// onto goroutines of their own).
func TestHitsNotHeldBySlowMisses(t *testing.T) {
	addr, _, s := start(t, listen.Options{UDPReaders: 8})
	m := new(dns.Msg)
	m.SetQuestion("1.many.test.", dns.TypeA)
	exchange(t, "udp", addr, m.Copy()) // cached now
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 40; i++ { // more slow misses than readers
		q := new(dns.Msg)
		q.SetQuestion(fmt.Sprintf("q%d.gate.test.", i), dns.TypeA)
		b, _ := q.Pack()
		c.Write(b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.Spilled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Stats.Spilled.Load() == 0 {
		t.Fatal("no query spilled while the readers waited")
	}
	// The gate is still closed: this answer can only come from the cache.
	if r := exchange(t, "udp", addr, m.Copy()); len(r.Answer) != 1 {
		t.Errorf("cached name while readers wait: %v", r)
	}
}

// paddedQuery is a query for name whose OPT carries a Padding option
// making it exactly size octets long.
func paddedQuery(t *testing.T, name string, size int) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(1232, false)
	pad := &dns.EDNS0_PADDING{}
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, pad)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	pad.Padding = make([]byte, size-len(b))
	if b, _ := m.Pack(); len(b) != size {
		t.Fatalf("padded query of %d octets, want %d", len(b), size)
	}
	return m
}

// TestLongUDPQuery: a query longer than the listener's UDP buffer is read
// cut short; it is answered TC=1 with its question (no records, no OPT),
// so the device asks again over TCP, where it gets the answer. One that
// fits exactly is answered in full; what would not be answered anyway is
// not answered now either.
func TestLongUDPQuery(t *testing.T) {
	addr, _, s := start(t, listen.Options{})
	for _, size := range []int{1232, 1233, 4000, 9000} {
		m := paddedQuery(t, "3.many.test.", size)
		m.Id = uint16(size)
		b, _ := m.Pack()
		raw := rawUDP(t, addr, b)
		r := new(dns.Msg)
		if err := r.Unpack(raw); err != nil {
			t.Fatalf("%d octets: answer %x: %v", size, raw, err)
		}
		if r.Id != m.Id || !r.Response || r.Rcode != dns.RcodeSuccess || len(r.Question) != 1 || r.Question[0] != m.Question[0] {
			t.Errorf("%d octets: answer %v", size, r)
		}
		if size <= 1232 {
			if r.Truncated || len(r.Answer) != 3 || r.IsEdns0() == nil {
				t.Errorf("%d octets (fits): TC=%v answers=%d", size, r.Truncated, len(r.Answer))
			}
			continue
		}
		if !r.Truncated || len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 || !r.RecursionDesired {
			t.Errorf("%d octets: want TC=1, RD echoed and no records: %v", size, r)
		}
		// As the device then does: the same query over TCP.
		if r := exchange(t, "tcp", addr, m.Copy()); r.Truncated || len(r.Answer) != 3 {
			t.Errorf("%d octets over TCP: TC=%v answers=%d", size, r.Truncated, len(r.Answer))
		}
	}
	if n := s.Stats.Truncated.Load(); n != 3 {
		t.Errorf("truncated answers counted %d, want 3", n)
	}

	long := func(edit func(m *dns.Msg)) []byte {
		m := paddedQuery(t, "3.many.test.", 2000)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if r := rawUDP(t, addr, long(func(m *dns.Msg) { m.Response = true })); r != nil {
		t.Errorf("answered a long response: %x", r)
	}
	notify := long(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })
	if r := rawUDP(t, addr, notify); len(r) < 12 || r[3]&0xF != dns.RcodeNotImplemented || r[2]&0x02 != 0 {
		t.Errorf("long NOTIFY: %x, want NOTIMP", r)
	}
	twoQ := long(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) })
	if r := rawUDP(t, addr, twoQ); len(r) < 12 || r[3]&0xF != dns.RcodeFormatError || r[2]&0x02 != 0 {
		t.Errorf("long query with two questions: %x, want FORMERR", r)
	}
}
