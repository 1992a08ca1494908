//go:build !router

package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/dnsguard/dnsguard/guard/lab"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// TestLabExperiments plays every experiment of the study to an emulated
// weak device (ignores TTLs, retries ten times as often on failure, no
// EDNS), once straight from the lab and once through a real dnsguard run
// process, and checks what the device got and how much reached the
// upstream. The lab plays the experiment from the first query, so the
// guard has nothing cached to fall back on.
func TestLabExperiments(t *testing.T) {
	testenv.Short(t)
	p, err := emulate.ProfileByName("random")
	if err != nil {
		t.Fatal(err)
	}
	p.Interval, p.Timeout = 500*time.Millisecond, 2*time.Second
	names := []string{"www.lab.example.", "cname-cdn.lab.example."}
	const run = 5 * time.Second

	type check func(t *testing.T, r lab.TableRow)
	// The checks that the lab misbehaved as asked look at the answers the
	// device straight at the lab got; a machine loaded enough may have
	// left it none (every query timed out), and then the lab is not
	// judged (the guard's checks still are).
	directAnswered := func(t *testing.T, r lab.TableRow) bool {
		if r.Direct.Answers == 0 {
			t.Logf("the device straight at the lab got no answer (%s): the lab's behaviour is not judged", lab.Describe(r.Direct))
			return false
		}
		return true
	}
	noForged := func(t *testing.T, r lab.TableRow) {
		if f := lab.ForgedAnswers(r.Guarded); f > 0 {
			t.Errorf("through the guard the device got %d forged addresses", f)
		}
		if directAnswered(t, r) && lab.ForgedAnswers(r.Direct) == 0 {
			t.Errorf("the lab did not forge (direct: %s)", lab.Describe(r.Direct))
		}
	}
	refusedWith := func(ede uint16) check {
		return func(t *testing.T, r lab.TableRow) {
			noForged(t, r)
			// Every answer is a refusal; on a loaded machine a few may
			// say the upstream timed out instead of why it was refused.
			if r.Guarded.Usable != 0 || r.Guarded.ServFail == 0 || r.Guarded.EDE[ede] == 0 {
				t.Errorf("want SERVFAIL with EDE %d: %s, EDE %v", ede, lab.Describe(r.Guarded), r.Guarded.EDE)
			}
		}
	}
	// Failures are cached with backoff (1 s, doubling) and each costs at
	// most upstream_max (3) attempts: in 5 s, per name, a few rounds.
	boundedUpstream := func(max int) check {
		return func(t *testing.T, r lab.TableRow) {
			if r.Upstream > max {
				t.Errorf("%d queries reached the upstream (device sent %d), want at most %d", r.Upstream, r.Guarded.Queries, max)
			}
		}
	}
	// An honest answer is fetched once per name and then served from the
	// cache; an attempt lost on a busy machine may be retried, up to
	// upstream_max (3) per name.
	cached := 3 * len(names)
	// An inflated answer (4096 octets) is more than the guard asks for
	// over UDP (EDNS 1232): each attempt is asked again over TCP, two
	// queries at the upstream (4 in all on an idle machine; a loaded one
	// that lost attempts saw 9).
	cachedOverTCP := 2 * cached
	// The shield refuses nothing an honest (or cleanable) answer holds:
	// the device gets usable answers and no refusal for its content (a
	// loaded machine may still make an upstream attempt time out).
	allUsable := func(t *testing.T, r lab.TableRow) {
		if r.Guarded.Usable == 0 {
			t.Errorf("through the guard: %s", lab.Describe(r.Guarded))
		}
		for _, code := range []uint16{4, 15, 24} { // Forged Answer, Blocked, Invalid Data
			if n := r.Guarded.EDE[code]; n > 0 {
				t.Errorf("the shield refused %d answers (EDE %d): %v", n, code, r.Guarded.EDE)
			}
		}
	}
	maxRecords := func(t *testing.T, r lab.TableRow) {
		for _, ex := range r.GuardedDevice.Exchanges() {
			if ex.Reply != nil && len(ex.Reply.Answer) > 2 {
				t.Fatalf("device got %d records for %s", len(ex.Reply.Answer), ex.Name)
			}
		}
		if directAnswered(t, r) && r.Direct.RecordsPerAnswer() < 5 {
			t.Errorf("the lab did not amplify: %.1f records per answer", r.Direct.RecordsPerAnswer())
		}
	}
	oneDatagram := func(t *testing.T, r lab.TableRow) {
		// One datagram per query (port and ID) through the guard.
		type key struct{ port, id uint16 }
		per := map[key]int{}
		for _, d := range r.GuardedDevice.Received() {
			if per[key{d.Port, d.ID}]++; per[key{d.Port, d.ID}] > 1 {
				t.Fatalf("device got %d copies of answer %#04x on port %d", per[key{d.Port, d.ID}], d.ID, d.Port)
			}
		}
		if directAnswered(t, r) && r.Direct.Datagrams < 2*r.Direct.Answers {
			t.Errorf("the lab did not flood: %d datagrams for %d answers", r.Direct.Datagrams, r.Direct.Answers)
		}
	}
	tests := []struct {
		exp    string
		checks []check
	}{
		{"baseline", []check{allUsable, boundedUpstream(cached)}},
		{"ttl-zero", []check{allUsable, boundedUpstream(cached), printCounts}},
		{"ttl-one", []check{allUsable, boundedUpstream(cached)}},
		{"ttl-huge", []check{allUsable, boundedUpstream(cached), func(t *testing.T, r lab.TableRow) {
			for _, ex := range r.GuardedDevice.Exchanges() {
				if ex.Reply == nil {
					continue
				}
				for _, rr := range ex.Reply.Answer {
					if rr.Header().Ttl > 7*24*3600 {
						t.Fatalf("TTL %d reached the device", rr.Header().Ttl)
					}
				}
			}
		}}},
		{"forged-a", []check{refusedWith(15), boundedUpstream(36)}},
		{"forged-aaaa", []check{refusedWith(4), boundedUpstream(36)}},
		{"forged-cname", []check{refusedWith(15), boundedUpstream(36)}},
		{"empty", []check{func(t *testing.T, r lab.TableRow) {
			// NOERROR without records is a valid NODATA: the guard passes
			// it on; it cannot know the name has addresses.
			got := 0
			for _, ex := range r.GuardedDevice.Exchanges() {
				if ex.Reply == nil {
					continue // a timeout on a busy machine
				}
				if ex.Reply.Rcode != dns.RcodeSuccess {
					continue // an upstream attempt lost on a loaded machine
				}
				got++
				if len(ex.Reply.Answer) != 0 {
					t.Fatalf("device got %v", ex.Reply)
				}
			}
			if got == 0 {
				t.Error("no answer through the guard")
			}
		}, printCounts}},
		{"inflate", []check{allUsable, boundedUpstream(cachedOverTCP), func(t *testing.T, r lab.TableRow) {
			for _, d := range r.GuardedDevice.Received() {
				if d.Size > 1232 {
					t.Fatalf("device got %d octets", d.Size)
				}
			}
			big := 0
			for _, d := range r.DirectDevice.Received() {
				if d.Size > 512 {
					big++
				}
			}
			if big == 0 && directAnswered(t, r) {
				t.Error("the lab did not inflate")
			}
		}}},
		{"unavailable", []check{func(t *testing.T, r lab.TableRow) {
			if r.Guarded.Usable != 0 || r.Guarded.ServFail == 0 {
				t.Errorf("through the guard: %s", lab.Describe(r.Guarded))
			}

		}, boundedUpstream(36), printCounts}},
		{"amplify-10", []check{allUsable, maxRecords, boundedUpstream(cached)}},
		{"amplify-50", []check{allUsable, maxRecords, boundedUpstream(cached)}},
		{"amplify-100", []check{allUsable, maxRecords, boundedUpstream(cached)}},
		{"flood-10", []check{allUsable, oneDatagram, boundedUpstream(cached)}},
		{"flood-50", []check{allUsable, oneDatagram, boundedUpstream(cached)}},
		{"flood-100", []check{allUsable, oneDatagram, boundedUpstream(cached)}},
	}
	// All experiments at once (each with its own labs and guard), then the
	// checks per experiment.
	var exps []string
	for _, tt := range tests {
		exps = append(exps, tt.exp)
	}
	rows := playTable(t, lab.TableOptions{Binary: binary, Duration: run, TTL: 300, Profile: p, Names: names}, exps...)
	for i, tt := range tests {
		t.Run(tt.exp, func(t *testing.T) {
			r := rows[i]
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			t.Logf("%s: direct %s (%d queries); through guard %s (%d queries), %d reached the upstream",
				tt.exp, lab.Describe(r.Direct), r.Direct.Queries, lab.Describe(r.Guarded), r.Guarded.Queries, r.Upstream)
			for _, c := range tt.checks {
				c(t, r)
			}
			if t.Failed() {
				t.Logf("guard log:\n%s", r.GuardLog)
			}
		})
	}
}

// playTable plays the named experiments with o, all at once (each with
// its own labs and guard), and returns their rows in that order.
func playTable(t *testing.T, o lab.TableOptions, exps ...string) []lab.TableRow {
	t.Helper()
	for _, name := range exps {
		e, err := lab.ParseExperiment(name)
		if err != nil {
			t.Fatal(err)
		}
		o.Experiments = append(o.Experiments, e)
	}
	o.Parallel = len(exps)
	return lab.RunTable(context.Background(), o)
}

// printCounts shows the device's query count next to the upstream's, the
// figure the issue asks to see for the retry storm and TTL 0.
func printCounts(t *testing.T, r lab.TableRow) {
	t.Logf("%s: device sent %d queries through the guard; %d reached the upstream (%d sent straight to the lab)",
		r.Experiment, r.Guarded.Queries, r.Upstream, r.Direct.Queries)
	if r.Upstream >= r.Guarded.Queries {
		t.Errorf("the guard passed on every query: %d device, %d upstream", r.Guarded.Queries, r.Upstream)
	}
}

// TestLabCommand runs dnsguard lab as a process, drives it with the
// emulated air fryer, and reads its report.
func TestLabCommand(t *testing.T) {
	testenv.Short(t)
	dir := t.TempDir()
	addr := freePort(t)
	record := dir + "/record.json"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- cmdLab(ctx, []string{"--listen", addr, "--record", record, "--record-every", "100ms", "--schedule", "baseline:2s,unavailable"}, discard{}, discard{})
	}()
	p, _ := emulate.ProfileByName("fixed-port")
	p.Interval, p.Timeout = 100*time.Millisecond, 100*time.Millisecond
	ap := netip.MustParseAddrPort(addr)
	d := emulate.New(emulate.Config{Profile: p, Target: ap, Local: netip.MustParseAddr("127.0.33.7")})
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	d.Run(rctx, dns.TypeA, "www.lab.example.")
	rcancel()
	d.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := lab.ReadSnapshot(record)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Client("127.0.33.7")
	if c == nil || c.Experiments["baseline"] == nil || c.Experiments["unavailable"] == nil {
		t.Fatalf("record %+v", s)
	}
	for _, port := range c.Ports {
		if port != 4096 {
			t.Fatalf("recorded port %d", port)
		}
	}
	g := lab.Grades(s)[0]
	if g.RandomPort.Mark != tablei.Vulnerable || g.QueryConsistency.Mark != tablei.Vulnerable {
		t.Errorf("air fryer graded port %s, consistency %s", g.RandomPort, g.QueryConsistency)
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// TestLabEncryptedUpstreams: the lab's DoT and DoH, with the certificate
// it generates (--cert-out), are upstreams the guard can trust with
// --upstream-ca.
func TestLabEncryptedUpstreams(t *testing.T) {
	testenv.Short(t)
	dir := t.TempDir()
	dot, doh := freePort(t), freePort(t)
	cert, record := dir+"/lab.pem", dir+"/record.json"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cmdLab(ctx, []string{"--dot", dot, "--doh", doh, "--cert-out", cert, "--record", record,
			"--record-every", "100ms"}, discard{}, discard{})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", doh); err == nil {
			c.Close()
			if _, err := os.Stat(cert); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("lab did not start")
		}
	}
	conf := dir + "/guard.conf"
	if err := os.WriteFile(conf, []byte("config answers\n\tlist allow_private '198.51.100.0/24'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, dohPort, _ := net.SplitHostPort(doh)
	for _, up := range []string{"tls://" + dot + "?sni=localhost", "https://localhost:" + dohPort + "/dns-query?ip=127.0.0.1"} {
		g := startGuard(t, "--config", conf, "--listen", anyPort, "--upstream", up, "--upstream-ca", cert, "--state", dir+"/state.db")
		r := ask(t, g.addr, "www.lab.example.", dns.TypeA, false)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s: %v", up, r)
		}
		g.stop(t, syscall.SIGTERM)
	}
	snap := waitRecord(t, record, func(s *lab.Snapshot) bool {
		c := s.Client("127.0.0.1")
		return c != nil && c.Transports["dot"] > 0 && c.Transports["doh"] > 0
	})
	t.Logf("lab saw transports %v", snap.Client("127.0.0.1").Transports)
}

// waitRecord reads the lab's record file until ok accepts it.
func waitRecord(t *testing.T, path string, ok func(*lab.Snapshot) bool) *lab.Snapshot {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		s, err := lab.ReadSnapshot(path)
		if err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never matched (last error %v)", err)
		}
	}
}

// TestLabDNSSEC: with the lab's zone signed (lab table --dnssec), the
// guard validates: honest answers pass, and the forged experiments are
// refused by DNSSEC (EDE 6 for an altered address, 10 for unsigned forged
// records; for "empty" 9, since the lab's DNSKEY answer is emptied too, or
// 12 once keys are cached: an empty answer without proof).
func TestLabDNSSEC(t *testing.T) {
	testenv.Short(t)
	p, err := emulate.ProfileByName("random")
	if err != nil {
		t.Fatal(err)
	}
	p.Interval, p.Timeout = 500*time.Millisecond, 2*time.Second
	tests := []struct {
		exp string
		ede []uint16 // none: every answer usable
	}{{"baseline", nil}, {"ttl-huge", nil}, {"forged-a", []uint16{6}}, {"forged-aaaa", []uint16{10}}, {"forged-cname", []uint16{10}}, {"empty", []uint16{9, 12}}}
	var exps []string
	for _, tt := range tests {
		exps = append(exps, tt.exp)
	}
	rows := playTable(t, lab.TableOptions{Binary: binary, Duration: 4 * time.Second, TTL: 300, Profile: p,
		Names: []string{"www.lab.example.", "cname-cdn.lab.example."}, DNSSEC: true}, exps...)
	for i, tt := range tests {
		t.Run(tt.exp, func(t *testing.T) {
			r := rows[i]
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if f := lab.ForgedAnswers(r.Guarded); f > 0 {
				t.Errorf("through the guard the device got %d forged addresses", f)
			}
			seen := 0
			for _, c := range tt.ede {
				seen += r.Guarded.EDE[c]
			}
			if len(tt.ede) == 0 {
				if r.Guarded.Usable == 0 || r.Guarded.ServFail != 0 {
					t.Errorf("honest signed answers: %s, EDE %v", lab.Describe(r.Guarded), r.Guarded.EDE)
				}
				// RFC 4035 §5.3.3: no longer than the signature's original
				// TTL (the lab's 300 s), whatever TTL the upstream gives.
				for _, ex := range r.GuardedDevice.Exchanges() {
					if ex.Reply == nil {
						continue
					}
					for _, rr := range ex.Reply.Answer {
						if rr.Header().Ttl > 300 {
							t.Fatalf("TTL %d reached the device: %v", rr.Header().Ttl, rr)
						}
					}
				}
			} else if r.Guarded.Usable != 0 || seen == 0 {
				t.Errorf("want SERVFAIL with EDE %v: %s, EDE %v", tt.ede, lab.Describe(r.Guarded), r.Guarded.EDE)
			}
			if t.Failed() {
				t.Logf("guard log:\n%s", r.GuardLog)
			}
		})
	}
}
