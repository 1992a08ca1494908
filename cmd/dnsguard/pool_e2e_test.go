package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/upstream/upstreamtest"
	"github.com/miekg/dns"
)

// scriptedUpstream is a Do53 upstream (UDP) for the issue 10 attacks:
// names under never.test. are never answered (their servers never do),
// everything else gets an A record at once; while off, nothing is
// answered at all.
type scriptedUpstream struct {
	addr    string
	off     atomic.Bool
	queries atomic.Int64
}

func startScriptedUpstream(t *testing.T) *scriptedUpstream {
	t.Helper()
	u := &scriptedUpstream{addr: freePort(t)}
	srv := &dns.Server{Addr: u.addr, Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		u.queries.Add(1)
		if u.off.Load() || len(q.Question) != 1 || dns.IsSubDomain("never.test.", strings.ToLower(q.Question[0].Name)) {
			return
		}
		w.WriteMsg(upstreamtest.AnswerA(publicAddr)(q))
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ListenAndServe()
	<-started
	t.Cleanup(func() { srv.ShutdownContext(context.Background()) })
	return u
}

// lookups sends n queries at qps for fresh names under suffix from its own
// goroutines and reports how many were answered NOERROR or NXDOMAIN.
func lookups(addr string, qps, n int, suffix string) (ok int) {
	var wg sync.WaitGroup
	var good atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(qps))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("n%d-%d.%s", i, time.Now().UnixNano()%1e6, suffix), dns.TypeA)
			r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
			if err == nil && (r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError) {
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(good.Load())
}

// TestRunSlowNameAttack: a device asking 5 names a second whose servers
// never answer takes nothing from another device's lookups (issue 10
// item 1): the upstream is never marked down, the victim gets every
// answer.
func TestRunSlowNameAttack(t *testing.T) {
	up := startScriptedUpstream(t)
	g := startGuard(t, "--listen", anyPort, "--upstream", "udp://"+up.addr)
	var attackerOK int
	done := make(chan struct{})
	go func() {
		defer close(done)
		attackerOK = lookups(g.addr, 5, 30, "never.test.")
	}()
	victimOK := lookups(g.addr, 10, 60, "victim.example.")
	<-done
	t.Logf("victim answered %d/60, attacker %d/30", victimOK, attackerOK)
	if victimOK != 60 {
		t.Errorf("victim answered %d of 60 under the slow-name attack, want all", victimOK)
	}
	if attackerOK != 0 {
		t.Errorf("%d never-answering names answered", attackerOK)
	}
	if strings.Contains(g.log(), "upstream down") {
		t.Errorf("upstream marked down by unanswered names:\n%s", g.log())
	}
}

// TestRunRecoveryAfterOutage: a name a device retried during an outage is
// answered as soon as the upstream is back: the failures cached while
// every upstream was down did not grow its backoff (with fail_min 2 s,
// backing off would hold it for 8 s after this outage) and are forgotten
// when the pool sees the upstream answer again (issue 10 item 4).
func TestRunRecoveryAfterOutage(t *testing.T) {
	up := startScriptedUpstream(t)
	conf := filepath.Join(t.TempDir(), "dnsguard.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("config dnsguard 'main'\n\tlist upstream 'udp://%s'\n\toption upstream_timeout '300ms'\n\nconfig cache\n\toption fail_min '2s'\n\toption fail_max '5m'\n\toption serve_stale '0'\n", up.addr)), 0o644)
	g := startGuard(t, "--config", conf, "--listen", anyPort)
	up.off.Store(true)
	retry := func() int {
		m := new(dns.Msg)
		m.SetQuestion("retried.example.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, g.addr)
		if err != nil {
			return -1
		}
		return r.Rcode
	}
	// The outage: 6 s of retries, every 200 ms.
	for range 30 {
		if rc := retry(); rc == dns.RcodeSuccess {
			t.Fatal("answered during the outage")
		}
		time.Sleep(200 * time.Millisecond)
	}
	up.off.Store(false)
	n := 0
	for ; n < 60 && retry() != dns.RcodeSuccess; n++ {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("answered on retry %d after the upstream came back", n+1)
	// fail_min (2 s, the longest a pool-down failure is held) is 20
	// retries at 100 ms; a grown backoff would be 80.
	if n > 25 {
		t.Errorf("answered only on retry %d (100 ms apart) after recovery", n+1)
	}
}

// TestRunReloadDrainsDoT: 30 SIGHUP reloads under steady load through a
// DoT upstream answering in 150 ms, so that queries are in flight at
// every reload: no query fails (issue 10 item 5). The first 15 reloads
// keep the upstream (the pool and its one connection are kept), the next
// 15 alternate between two upstreams (each old pool drains, then closes).
func TestRunReloadDrainsDoT(t *testing.T) {
	ca := upstreamtest.NewCA(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	lag := func(q *dns.Msg) *dns.Msg {
		time.Sleep(150 * time.Millisecond)
		return upstreamtest.AnswerA(publicAddr)(q)
	}
	a := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: lag})
	b := upstreamtest.StartDoT(t, ca, upstreamtest.DoTOptions{Handler: lag})
	conf := filepath.Join(dir, "dnsguard.conf")
	write := func(d *upstreamtest.DoT) {
		os.WriteFile(conf, []byte(fmt.Sprintf("config dnsguard 'main'\n\tlist upstream '%s'\n\toption upstream_ca '%s'\n", d.URL("dot.test"), caFile)), 0o644)
	}
	write(a)
	g := startGuard(t, "--config", conf, "--listen", anyPort)

	var sent, answered, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("w%d-q%d.reload.example.", w, i), dns.TypeA)
				sent.Add(1)
				r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, g.addr)
				answered.Add(1)
				if err != nil || r.Rcode != dns.RcodeSuccess {
					failed.Add(1)
					if err == nil {
						t.Logf("%s: %s %v", m.Question[0].Name, dns.RcodeToString[r.Rcode], edeOf(r))
					} else {
						t.Logf("%s: %v", m.Question[0].Name, err)
					}
				}
			}
		}()
	}
	// more waits until n more queries have had their answer (or failed):
	// the load goes on between reloads.
	more := func(n int64) {
		want := answered.Load() + n
		for deadline := time.Now().Add(30 * time.Second); answered.Load() < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d queries answered, waiting for %d", answered.Load(), want)
			}
		}
	}
	reloads := 0
	reload := func() {
		if !g.reload(t) {
			t.Fatal("SIGHUP: config not reloaded")
		}
		reloads++
		more(8) // queries on the new chain (and in flight at the next reload)
	}
	more(16)
	for range 15 {
		reload()
	}
	keptConns := a.Conns()
	for i := range 15 {
		if i%2 == 0 {
			write(b)
		} else {
			write(a)
		}
		reload()
	}
	more(16)
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d queries, %d failed; connections to the kept upstream over 15 reloads: %d", reloads, sent.Load(), failed.Load(), keptConns)
	if failed.Load() != 0 {
		t.Errorf("%d of %d queries failed across %d reloads", failed.Load(), sent.Load(), reloads)
	}
	if keptConns != 1 {
		t.Errorf("%d DoT connections over 15 reloads that kept the upstream, want 1 (the pool kept)", keptConns)
	}
	if strings.Contains(g.log(), "no upstream reachable") {
		t.Errorf("a reload logged 'no upstream reachable':\n%s", g.log())
	}
}
