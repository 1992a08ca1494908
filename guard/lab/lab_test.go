package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/miekg/dns"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	m.Id = 0x4242
	return m
}

func TestZone(t *testing.T) {
	z := DefaultZone()
	z.Self = []netip.Addr{netip.MustParseAddr("127.0.0.9")}
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answer records as text, without TTL
		ns    int
	}{
		{"www.lab.example.", dns.TypeA, dns.RcodeSuccess, []string{"www.lab.example.\tIN\tA\t198.51.100."}, 0},
		{"www.lab.example.", dns.TypeAAAA, dns.RcodeSuccess, []string{"www.lab.example.\tIN\tAAAA\t3fff:51:"}, 0},
		{"www.lab.example.", dns.TypeTXT, dns.RcodeSuccess, []string{"www.lab.example.\tIN\tTXT\t\"dnsguard lab www.lab.example\""}, 0},
		{"www.lab.example.", dns.TypeMX, dns.RcodeSuccess, nil, 1},
		{"nx-1.lab.example.", dns.TypeA, dns.RcodeNameError, nil, 1},
		{"cname-cdn.lab.example.", dns.TypeA, dns.RcodeSuccess, []string{"cname-cdn.lab.example.\tIN\tCNAME\ttarget-cname-cdn.lab.example.", "target-cname-cdn.lab.example.\tIN\tA\t198.51.100."}, 0},
		{"cname-cdn.lab.example.", dns.TypeCNAME, dns.RcodeSuccess, []string{"cname-cdn.lab.example.\tIN\tCNAME\ttarget-cname-cdn.lab.example."}, 0},
		{"self.lab.example.", dns.TypeA, dns.RcodeSuccess, []string{"self.lab.example.\tIN\tA\t127.0.0.9"}, 0},
		{"lab.example.", dns.TypeSOA, dns.RcodeSuccess, []string{"lab.example.\tIN\tSOA\tns.lab.example. hostmaster.lab.example."}, 0},
		{"www.other.example.", dns.TypeA, dns.RcodeRefused, nil, 0},
	}
	for _, tt := range tests {
		m := z.Answer(query(tt.name, tt.qtype))
		if m.Rcode != tt.rcode || len(m.Answer) != len(tt.want) || len(m.Ns) != tt.ns || m.Id != 0x4242 || !m.Response {
			t.Errorf("%s %s: %v", tt.name, dns.Type(tt.qtype), m)
			continue
		}
		for i, w := range tt.want {
			got := strings.Replace(m.Answer[i].String(), "\t300\t", "\t", 1)
			if !strings.HasPrefix(got, w) {
				t.Errorf("%s: record %q, want prefix %q", tt.name, got, w)
			}
		}
	}
	a1, a2 := z.Answer(query("x.lab.example.", dns.TypeA)), z.Answer(query("X.LAB.example.", dns.TypeA))
	if a1.Answer[0].(*dns.A).A.String() != a2.Answer[0].(*dns.A).A.String() {
		t.Error("answers are not deterministic (or depend on case)")
	}
}

func TestApply(t *testing.T) {
	z := DefaultZone()
	f := DefaultForgery()
	one := func(name string, qtype uint16, e Experiment) []*dns.Msg {
		q := query(name, qtype)
		return e.Apply(q, z.Answer(q), f)
	}
	tests := []struct {
		exp   string
		qname string
		qtype uint16
		check func(t *testing.T, out []*dns.Msg)
	}{
		{"baseline", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if len(out) != 1 || len(out[0].Answer) != 1 || out[0].Answer[0].Header().Ttl != 300 {
				t.Errorf("%v", out)
			}
		}},
		{"ttl-zero", "a.lab.example.", dns.TypeA, ttlIs(0)},
		{"ttl-one", "a.lab.example.", dns.TypeA, ttlIs(1)},
		{"ttl-huge", "a.lab.example.", dns.TypeA, ttlIs(1_000_000_000)},
		{"forged-a", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if a := out[0].Answer[0].(*dns.A); a.A.String() != "192.0.2.1" {
				t.Errorf("%v", a)
			}
		}},
		{"forged-aaaa", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if a, ok := out[0].Answer[0].(*dns.AAAA); !ok || len(out[0].Answer) != 1 || a.AAAA.String() != "2001:db8::1" {
				t.Errorf("%v", out[0].Answer)
			}
		}},
		{"forged-cname", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			ans := out[0].Answer
			if len(ans) != 2 || ans[0].(*dns.CNAME).Target != "alias.example.com." || ans[1].Header().Name != "alias.example.com." {
				t.Errorf("%v", ans)
			}
		}},
		{"empty", "nx-1.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if m := out[0]; m.Rcode != dns.RcodeSuccess || len(m.Answer)+len(m.Ns)+len(m.Extra) != 0 {
				t.Errorf("%v", m)
			}
		}},
		{"inflate", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			b, _ := out[0].Pack()
			if len(b) != 4096 {
				t.Errorf("inflated to %d octets", len(b))
			}
		}},
		{"unavailable", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if len(out) != 0 {
				t.Errorf("answered: %v", out)
			}
		}},
		{"amplify-50", "cname-x.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if len(out[0].Answer) != 100 {
				t.Errorf("%d records, want 50 CNAME + 50 A", len(out[0].Answer))
			}
		}},
		{"flood-10", "a.lab.example.", dns.TypeA, func(t *testing.T, out []*dns.Msg) {
			if len(out) != 10 {
				t.Errorf("%d copies", len(out))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.exp, func(t *testing.T) {
			e, err := ParseExperiment(tt.exp)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, one(tt.qname, tt.qtype, e))
		})
	}
	if _, err := ParseExperiment("amplify-7"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "forged", "flood-0", "amplify-x", "flood-5000"} {
		if _, err := ParseExperiment(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if n := len(Experiments()); n != 16 {
		t.Errorf("%d experiments", n)
	}
}

func ttlIs(ttl uint32) func(t *testing.T, out []*dns.Msg) {
	return func(t *testing.T, out []*dns.Msg) {
		for _, rr := range out[0].Answer {
			if rr.Header().Ttl != ttl {
				t.Errorf("TTL %d, want %d", rr.Header().Ttl, ttl)
			}
		}
	}
}

func TestSchedule(t *testing.T) {
	s, err := ParseSchedule("baseline:60s,unavailable:30s,ttl-zero")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		at   time.Duration
		want string
	}{{0, "baseline"}, {59 * time.Second, "baseline"}, {60 * time.Second, "unavailable"}, {89 * time.Second, "unavailable"}, {90 * time.Second, "ttl-zero"}, {time.Hour, "ttl-zero"}} {
		if p, _ := s.At(tt.at); p.Experiment.String() != tt.want {
			t.Errorf("at %v: %s, want %s", tt.at, p.Experiment, tt.want)
		}
	}
	if s.String() != "baseline:1m0s,unavailable:30s,ttl-zero" {
		t.Errorf("String %q", s)
	}
	for _, bad := range []string{"", "baseline:x", "baseline:-1s", "nope:1s"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRecordAndReport plays a schedule against two clients with an
// injected clock: one honours TTLs and backs off, the other ignores TTLs
// and storms. The report must tell them apart.
func TestRecordAndReport(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	s, _ := ParseSchedule("baseline:100s,unavailable:100s,ttl-zero:100s,forged-aaaa:100s")
	l := New(Config{Zone: Zone{Suffix: "lab.example.", ANet: DefaultZone().ANet, AAAANet: DefaultZone().AAAANet, TTL: 20}, Schedule: s, Now: c.now})
	good := netip.MustParseAddrPort("10.0.0.1:0")
	weak := netip.MustParseAddrPort("10.0.0.2:4096")
	id := uint16(0)
	ask := func(client netip.AddrPort, name string) {
		id += 7919 // spread IDs for the good client
		q := query(name, dns.TypeA)
		if client == weak {
			q.Id = 0x11
		} else {
			q.Id = id
			client = netip.AddrPortFrom(client.Addr(), 1024+id%60000)
		}
		b, _ := q.Pack()
		l.Respond(b, client, "udp")
	}
	for sec := 0; sec < 400; sec++ {
		phase := sec / 100
		// The good client asks when the TTL (20 s) has expired, and backs
		// off while unavailable.
		if phase != 1 && sec%20 == 0 || phase == 1 && sec%50 == 0 {
			ask(good, "a.lab.example.")
		}
		// The weak one asks every 2 s whatever the TTL, ten times as
		// often when nothing answers, four times as often on forged AAAA.
		switch {
		case phase == 1:
			for i := 0; i < 5; i++ {
				ask(weak, "a.lab.example.")
			}
		case phase == 3:
			ask(weak, "a.lab.example.")
			ask(weak, "a.lab.example.")
		case sec%2 == 0:
			ask(weak, "a.lab.example.")
		}
		c.t = c.t.Add(time.Second)
	}
	snap := l.Snapshot()
	if len(snap.Phases) != 4 || snap.Duration("unavailable") != 100*time.Second {
		t.Fatalf("phases %+v", snap.Phases)
	}
	w := snap.Client("10.0.0.2").Experiments["baseline"]
	if w.Queries != 50 || w.Repeats != 49 || w.EarlyRepeats != 49 {
		t.Errorf("weak baseline %+v", w)
	}
	if u := snap.Client("10.0.0.2").Experiments["unavailable"]; u.AfterFailures != 499 {
		t.Errorf("weak unavailable %+v", u)
	}
	grades := map[string]Grade{}
	for _, g := range Grades(snap) {
		grades[g.Addr] = g
	}
	gw, gg := grades["10.0.0.2"], grades["10.0.0.1"]
	for _, tt := range []struct {
		col        string
		m          Cell
		vulnerable bool
	}{
		{"weak consistency", gw.QueryConsistency, true},
		{"weak DoS", gw.DoS, true},
		{"weak modified RR", gw.ModifiedRR, true},
		{"weak random ID", gw.RandomID, true},
		{"weak random port", gw.RandomPort, true},
		{"weak secure DNS", gw.SecureDNS, true},
		{"good consistency", gg.QueryConsistency, false},
		{"good DoS", gg.DoS, false},
		{"good modified RR", gg.ModifiedRR, false},
		{"good forged TTL", gg.ForgedTTL, false},
		{"good random ID", gg.RandomID, false},
		{"good random port", gg.RandomPort, false},
	} {
		if want := map[bool]tablei.Mark{true: tablei.Vulnerable, false: tablei.Resilient}[tt.vulnerable]; tt.m.Mark != want {
			t.Errorf("%s: %s (%s), want vulnerable=%v", tt.col, tt.m, tt.m.Figures, tt.vulnerable)
		}
	}
	var out bytes.Buffer
	if err := WriteReport(&out, snap); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.0.0.2", "unavailable x10.0", "query consistency", "49 of 49 repeats"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// Round trip through the record file.
	path := t.TempDir() + "/record.json"
	if err := snap.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	var out2 bytes.Buffer
	WriteReport(&out2, back)
	if out2.String() != out.String() {
		t.Error("report differs after the record file round trip")
	}
}

// TestTransports queries a real lab over UDP, TCP, DoT and DoH.
func TestTransports(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, _ := ParseSchedule("flood-3")
	l := New(Config{Schedule: s})
	cert, pemBytes, err := SelfSigned([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	tcfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	local := []string{"127.0.0.1:0"}
	ls, err := l.Listen(Endpoints{Do53: local, DoT: local, DoH: local}, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	addrs := ls.Addrs() // udp+tcp://, tls://, https://…/dns-query
	if len(addrs) != 3 {
		t.Fatalf("endpoints %v", addrs)
	}
	do53 := strings.TrimPrefix(addrs[0], "udp+tcp://")
	dot := strings.TrimPrefix(addrs[1], "tls://")
	record := filepath.Join(t.TempDir(), "record.json")
	ran := make(chan error, 1)
	go func() { ran <- l.Run(ctx, ls, record, time.Hour) }()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	q := query("www.lab.example.", dns.TypeA)
	for _, tt := range []struct {
		net, addr string
	}{{"udp", do53}, {"tcp", do53}, {"tcp-tls", dot}} {
		cl := &dns.Client{Net: tt.net, Timeout: 5 * time.Second, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
		r, _, err := cl.Exchange(q, tt.addr)
		if err != nil || len(r.Answer) != 1 {
			t.Errorf("%s: %v %v", tt.net, err, r)
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}
	b, _ := q.Pack()
	resp, err := hc.Post(addrs[2], "application/dns-message", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := new(dns.Msg)
	if err := r.Unpack(body); err != nil || len(r.Answer) != 1 {
		t.Errorf("doh: %v %v", err, r)
	}
	// Run ends with its context and writes the record a last time.
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("run: %v", err)
	}
	snap, err := ReadSnapshot(record)
	if err != nil || len(snap.Clients) != 1 {
		t.Fatalf("record: %v, clients %+v", err, snap)
	}
	tr := snap.Clients[0].Transports
	if tr["udp"] != 1 || tr["tcp"] != 1 || tr["dot"] != 1 || tr["doh"] != 1 {
		t.Errorf("transports %v", tr)
	}
}

// TestForgedAddressUse points the forged A record at the lab's own probe
// and lets an emulated device that uses what it is told resolve a name:
// the record shows the use, and the report marks the device.
func TestForgedAddressUse(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultForgery()
	f.A = netip.MustParseAddr("127.0.0.1")
	s, _ := ParseSchedule("forged-a")
	l := New(Config{Schedule: s, Forgery: f})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go l.ServeUDP(ctx, pc)
	go l.ServeProbe(ctx, probe)

	p, _ := emulate.ProfileByName("random")
	d := emulate.New(emulate.Config{Profile: p, Target: pc.LocalAddr().(*net.UDPAddr).AddrPort(),
		Local: netip.MustParseAddr("127.0.0.44"), UsePort: uint16(probe.Addr().(*net.TCPAddr).Port)})
	defer d.Close()
	for i := 0; i < 3; i++ {
		ex := d.Query(ctx, "shop.lab.example.", dns.TypeA)
		if ex.Failed() || !ex.Used {
			t.Fatalf("exchange %d: %+v", i, ex)
		}
	}
	// The probe records a connection when it accepts it, after the dial
	// returned: wait for the three.
	var used int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c := l.Snapshot().Client("127.0.0.44"); c != nil {
			if used = c.Experiments["forged-a"].Used; used == 3 {
				break
			}
		}
	}
	if used != 3 {
		t.Fatalf("probe saw %d uses, want 3", used)
	}
	g := Grades(l.Snapshot())[0]
	if g.ModifiedRR.Mark != tablei.Vulnerable || !strings.Contains(g.ModifiedRR.Figures, "used the forged address 3 times") {
		t.Errorf("modified RR %s: %s", g.ModifiedRR, g.ModifiedRR.Figures)
	}
}

// TestNoBackoffAndSlack: a client that keeps its rate when the resolver
// is down but never backs off is still marked (Recommendation 6), and a
// client that re-asks exactly when the TTL ends, timed from its own send,
// is not marked early.
func TestNoBackoffAndSlack(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	r := NewRecorder(start, "baseline:60s,unavailable:60s")
	r.Phase("baseline", start)
	client := netip.MustParseAddrPort("10.0.0.9:5000")
	for i := 0; i < 12; i++ { // every 5 s, TTL 5, the lab's clock a little late
		r.Record(Event{At: start.Add(time.Duration(i)*5*time.Second + 3*time.Millisecond), Client: client, Name: "a.", Type: dns.TypeA,
			Experiment: "baseline", Answered: true, HasTTL: true, TTL: 5, Transport: "udp"})
	}
	r.Phase("unavailable", start.Add(time.Minute))
	for i := 0; i < 12; i++ { // same rate, no backoff, but bursts of two
		at := start.Add(time.Minute + time.Duration(i/2)*10*time.Second + time.Duration(i%2)*500*time.Millisecond)
		r.Record(Event{At: at, Client: client, Name: "a.", Type: dns.TypeA, Experiment: "unavailable", Transport: "udp"})
	}
	s := r.Snapshot(start.Add(2 * time.Minute))
	g := Grades(s)[0]
	if g.QueryConsistency.Mark != tablei.Resilient {
		t.Errorf("consistency %s: %s", g.QueryConsistency, g.QueryConsistency.Figures)
	}
	if g.DoS.Mark != tablei.Vulnerable || !strings.Contains(g.DoS.Figures, "no backoff") {
		t.Errorf("DoS %s: %s", g.DoS, g.DoS.Figures)
	}
}
