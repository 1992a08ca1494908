// Command attacktool is the scriptable upstream and the measuring client
// of scripts/attack.sh, which replays issue 10's attacks against the real
// dnsguard binary. It is not part of the guard.
//
//	attacktool serve -udp ADDR [-dot ADDR] -dir DIR
//	    An upstream: plain DNS on ADDR (UDP and TCP) and DNS over TLS on
//	    -dot. It writes DIR/ca.pem (the CA to trust), DIR/name (the TLS
//	    name), DIR/pin-leaf (pin of the certificate it is) and
//	    DIR/pin-extra (pin of an unrelated self-signed certificate it
//	    appends to its chain: a pin check that reads the chain as sent,
//	    not the verified chain, passes with it). SIGUSR1 makes it stop
//	    answering anything, SIGUSR2 answer again. What it answers:
//	      *.never.test.  nothing, ever (a name whose servers never answer)
//	      *.slow.test.   after -slow (default 3s)
//	      *.lag.test.    after -lag (default 200ms: inside the guard's
//	                     upstream_timeout, so queries are in flight)
//	      *.nx.test.     NXDOMAIN
//	      *.ede.test.    SERVFAIL with an EDE whose text holds control
//	                     characters, an ANSI escape and 300 octets
//	      *.hint.test.   HTTPS with ipv4hint 192.168.1.1 and ipv6hint fd00::1
//	      anything else  A 93.184.215.14, AAAA 2606:2800:21f:cb07::1,
//	                     HTTPS with public hints, NODATA for other types
//	    On SIGTERM it prints "upstream queries=N dropped=N".
//
//	attacktool query -s ADDR [-src IP] [-tcp] [-opcode N] [-noquestion] [-t TYPE] [NAME]
//	    One query; prints "rcode=NAME ra=0|1 opcode=N ede=CODE answers=N
//	    addrs=A,B,hint:C edetext=QUOTED" (QUOTED last: it may hold spaces;
//	    Go's ASCII quoting, so any byte outside printable ASCII shows as an
//	    escape) or "timeout".
//
//	attacktool load -s ADDR [-src IP] -qps N -duration D [-prefix P] [-timeout D]
//	    A device: N queries a second for names never asked before
//	    (COUNTER.RANDOM.PREFIX), each waiting up to -timeout. Prints
//	    "sent=N ok=N servfail=N other=N timeout=N" (ok: NOERROR or NXDOMAIN).
//
//	attacktool until -s ADDR [-src IP] -name NAME [-every D] [-max D]
//	    Asks NAME every -every until it is answered NOERROR; prints the
//	    seconds that took ("seconds=F") or "seconds=never".
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/dnsguard/dnsguard/guard/certs"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attacktool serve|query|load|until [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "query":
		err = query(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "until":
		err = until(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attacktool:", err)
		os.Exit(1)
	}
}

// Addresses the upstream answers with: not special-purpose, so they pass
// the guard's rebinding rule.
const (
	publicA    = "93.184.215.14"
	publicAAAA = "2606:2800:21f:cb07::1"
)

type upstream struct {
	slow    time.Duration
	lag     time.Duration
	down    atomic.Bool
	queries atomic.Int64
	dropped atomic.Int64
	wg      sync.WaitGroup // slow answers in progress
}

func under(name, zone string) bool { return dns.IsSubDomain(zone, strings.ToLower(name)) }

func (u *upstream) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	u.queries.Add(1)
	if u.down.Load() || len(q.Question) != 1 {
		u.dropped.Add(1)
		return
	}
	qs := q.Question[0]
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if o := q.IsEdns0(); o != nil {
		m.SetEdns0(1232, o.Do())
	}
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		r.Header().Name = qs.Name // the asker's octets and case
		return r
	}
	soa := func() dns.RR {
		r, _ := dns.NewRR("test. 300 IN SOA ns.test. host.test. 1 3600 600 86400 60")
		return r
	}
	switch {
	case under(qs.Name, "never.test."):
		u.dropped.Add(1)
		return
	case under(qs.Name, "slow.test."), under(qs.Name, "lag.test."):
		d := u.slow
		if under(qs.Name, "lag.test.") {
			d = u.lag
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			time.Sleep(d)
			m.Answer = []dns.RR{rr(". 60 IN A " + publicA)}
			w.WriteMsg(m)
		}()
		return
	case under(qs.Name, "nx.test."):
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa()}
	case under(qs.Name, "ede.test."):
		m.Rcode = dns.RcodeServerFailure
		if m.IsEdns0() == nil {
			m.SetEdns0(1232, false)
		}
		text := "\x1b[31mupstream\r\n" + `level=ERROR msg="forged log line"` + "\x00\x07" + strings.Repeat("x", 300)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeNetworkError, ExtraText: text})
	case under(qs.Name, "hint.test.") && qs.Qtype == dns.TypeHTTPS:
		m.Answer = []dns.RR{rr(". 60 IN HTTPS 1 . alpn=h2 ipv4hint=192.168.1.1 ipv6hint=fd00::1")}
	case qs.Qtype == dns.TypeA:
		m.Answer = []dns.RR{rr(". 60 IN A " + publicA)}
	case qs.Qtype == dns.TypeAAAA:
		m.Answer = []dns.RR{rr(". 60 IN AAAA " + publicAAAA)}
	case qs.Qtype == dns.TypeHTTPS:
		m.Answer = []dns.RR{rr(". 60 IN HTTPS 1 . alpn=h2 ipv4hint=" + publicA + " ipv6hint=" + publicAAAA)}
	default:
		m.Ns = []dns.RR{soa()}
	}
	w.WriteMsg(m)
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	udpAddr := fs.String("udp", "", "plain DNS on `ADDR` (UDP and TCP)")
	dotAddr := fs.String("dot", "", "DNS over TLS on `ADDR`")
	dir := fs.String("dir", "", "write ca.pem, name, pin-leaf, pin-extra into `DIR`")
	slow := fs.Duration("slow", 3*time.Second, "delay of *.slow.test. answers")
	lag := fs.Duration("lag", 200*time.Millisecond, "delay of *.lag.test. answers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u := &upstream{slow: *slow, lag: *lag}
	var servers []*dns.Server
	if *udpAddr != "" {
		servers = append(servers, &dns.Server{Addr: *udpAddr, Net: "udp", Handler: u}, &dns.Server{Addr: *udpAddr, Net: "tcp", Handler: u})
	}
	if *dotAddr != "" {
		cfg, err := tlsSetup(*dir)
		if err != nil {
			return err
		}
		servers = append(servers, &dns.Server{Addr: *dotAddr, Net: "tcp-tls", TLSConfig: cfg, Handler: u})
	}
	if len(servers) == 0 {
		return errors.New("serve: give -udp and/or -dot")
	}
	errc := make(chan error, len(servers))
	var started sync.WaitGroup
	for _, s := range servers {
		started.Add(1)
		s.NotifyStartedFunc = started.Done
		go func() { errc <- s.ListenAndServe() }()
	}
	ready := make(chan struct{})
	go func() { started.Wait(); close(ready) }()
	select {
	case err := <-errc:
		return err
	case <-ready:
	}
	fmt.Println("upstream ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	for s := range sig {
		switch s {
		case syscall.SIGUSR1:
			u.down.Store(true)
			fmt.Println("upstream down")
		case syscall.SIGUSR2:
			u.down.Store(false)
			fmt.Println("upstream up")
		default:
			for _, srv := range servers {
				srv.Shutdown()
			}
			u.wg.Wait()
			fmt.Printf("upstream queries=%d dropped=%d\n", u.queries.Load(), u.dropped.Load())
			return nil
		}
	}
	return nil
}

// tlsSetup makes a CA, a certificate for the name "upstream.attack.test"
// issued by it, and an unrelated self-signed certificate sent after it
// in the chain; it writes the CA and both pins into dir.
func tlsSetup(dir string) (*tls.Config, error) {
	const name = "upstream.attack.test"
	ca, err := certs.NewCA("attack.sh CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	leaf, _, _, err := ca.Issue(24*time.Hour, name)
	if err != nil {
		return nil, err
	}
	extra, _, err := certs.SelfSigned("pinned.attack.test", 24*time.Hour, "pinned.attack.test")
	if err != nil {
		return nil, err
	}
	pinLeaf, err := certs.Pin(leaf.Certificate[0])
	if err != nil {
		return nil, err
	}
	pinExtra, err := certs.Pin(extra.Certificate[0])
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.pem":    ca.PEM,
		"name":      []byte(name + "\n"),
		"pin-leaf":  []byte(pinLeaf + "\n"),
		"pin-extra": []byte(pinExtra + "\n"),
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return nil, err
		}
	}
	// The unrelated certificate is sent after the leaf, in its chain.
	leaf.Certificate = append(leaf.Certificate, extra.Certificate[0])
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf}}, nil
}

func query(args []string) error {
	fs := flag.NewFlagSet("query", flag.ContinueOnError)
	server := fs.String("s", "127.0.0.1:53", "server `ADDR`")
	tcp := fs.Bool("tcp", false, "over TCP")
	opcode := fs.Int("opcode", 0, "opcode")
	noq := fs.Bool("noquestion", false, "send no question")
	qtype := fs.String("t", "A", "query type")
	edns := fs.Bool("edns", true, "send an OPT record")
	timeout := fs.Duration("timeout", 3*time.Second, "wait this long")
	src := fs.String("src", "", "send from `IP`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.Opcode = *opcode
	if !*noq {
		if fs.NArg() != 1 {
			return errors.New("query: one NAME")
		}
		t, ok := dns.StringToType[strings.ToUpper(*qtype)]
		if !ok {
			return fmt.Errorf("query: type %q", *qtype)
		}
		m.Question = []dns.Question{{Name: dns.Fqdn(fs.Arg(0)), Qtype: t, Qclass: dns.ClassINET}}
	}
	if *edns {
		m.SetEdns0(1232, false)
	}
	c := client(*src, *tcp, *timeout)
	r, _, err := c.Exchange(m, *server)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			fmt.Println("timeout")
			return nil
		}
		return err
	}
	ede, text := -1, ""
	if o := r.IsEdns0(); o != nil {
		for _, op := range o.Option {
			if e, ok := op.(*dns.EDNS0_EDE); ok {
				ede, text = int(e.InfoCode), e.ExtraText
			}
		}
	}
	ra := 0
	if r.RecursionAvailable {
		ra = 1
	}
	var addrs []string
	for _, rr := range r.Answer {
		switch a := rr.(type) {
		case *dns.A:
			addrs = append(addrs, a.A.String())
		case *dns.AAAA:
			addrs = append(addrs, a.AAAA.String())
		case *dns.HTTPS:
			addrs = append(addrs, hintAddrs(a.Value)...)
		case *dns.SVCB:
			addrs = append(addrs, hintAddrs(a.Value)...)
		}
	}
	if len(addrs) == 0 {
		addrs = []string{"-"}
	}
	fmt.Printf("rcode=%s ra=%d opcode=%d ede=%d answers=%d addrs=%s edetext=%s\n",
		dns.RcodeToString[r.Rcode], ra, r.Opcode, ede, len(r.Answer), strings.Join(addrs, ","), strconv.QuoteToASCII(text))
	return nil
}

// hintAddrs lists the ipv4hint and ipv6hint addresses of SVCB parameters.
func hintAddrs(kv []dns.SVCBKeyValue) []string {
	var out []string
	for _, p := range kv {
		switch h := p.(type) {
		case *dns.SVCBIPv4Hint:
			for _, ip := range h.Hint {
				out = append(out, "hint:"+ip.String())
			}
		case *dns.SVCBIPv6Hint:
			for _, ip := range h.Hint {
				out = append(out, "hint:"+ip.String())
			}
		}
	}
	return out
}

// client is a DNS client sending from src (any address if empty).
func client(src string, tcp bool, timeout time.Duration) *dns.Client {
	c := &dns.Client{Net: "udp", Timeout: timeout}
	if tcp {
		c.Net = "tcp"
	}
	if ip := net.ParseIP(src); ip != nil {
		c.Dialer = &net.Dialer{Timeout: timeout, LocalAddr: &net.UDPAddr{IP: ip}}
		if tcp {
			c.Dialer.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return c
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	server := fs.String("s", "127.0.0.1:53", "server `ADDR`")
	qps := fs.Int("qps", 10, "queries a second")
	duration := fs.Duration("duration", 10*time.Second, "for this long")
	prefix := fs.String("prefix", "victim.example", "names under `ZONE`")
	qtype := fs.String("t", "A", "query type")
	timeout := fs.Duration("timeout", 2*time.Second, "each query waits this long")
	src := fs.String("src", "", "send from `IP`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, ok := dns.StringToType[strings.ToUpper(*qtype)]
	if !ok || *qps <= 0 {
		return fmt.Errorf("load: type %q, qps %d", *qtype, *qps)
	}
	var sent, okN, servfail, other, timeouts atomic.Int64
	tag := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	tick := time.NewTicker(time.Second / time.Duration(*qps))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			fmt.Printf("sent=%d ok=%d servfail=%d other=%d timeout=%d\n", sent.Load(), okN.Load(), servfail.Load(), other.Load(), timeouts.Load())
			return nil
		case <-tick.C:
		}
		sent.Add(1)
		name := fmt.Sprintf("%d.%s.%s.", i, tag, strings.Trim(*prefix, "."))
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := new(dns.Msg)
			m.SetQuestion(name, t)
			r, _, err := client(*src, false, *timeout).Exchange(m, *server)
			switch {
			case err != nil:
				timeouts.Add(1)
			case r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError:
				okN.Add(1)
			case r.Rcode == dns.RcodeServerFailure:
				servfail.Add(1)
			default:
				other.Add(1)
			}
		}()
	}
}

func until(args []string) error {
	fs := flag.NewFlagSet("until", flag.ContinueOnError)
	server := fs.String("s", "127.0.0.1:53", "server `ADDR`")
	name := fs.String("name", "", "ask `NAME`")
	every := fs.Duration("every", 100*time.Millisecond, "ask this often")
	maxWait := fs.Duration("max", 30*time.Second, "give up after this long")
	src := fs.String("src", "", "send from `IP`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("until: -name")
	}
	start := time.Now()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(*name), dns.TypeA)
	c := client(*src, false, time.Second)
	for time.Since(start) < *maxWait {
		r, _, err := c.Exchange(m, *server)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			fmt.Printf("seconds=%.2f\n", time.Since(start).Seconds())
			return nil
		}
		if err == nil {
			time.Sleep(*every)
		}
	}
	fmt.Println("seconds=never")
	return nil
}
