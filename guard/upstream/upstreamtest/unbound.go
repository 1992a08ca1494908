package upstreamtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/portpair"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// UnboundOptions configure a test unbound.
type UnboundOptions struct {
	// Name is the name on unbound's certificate; default "unbound.test".
	Name string
	// Records are local-data lines ("a.test. 300 IN A 192.0.2.10"). Each
	// owner's zone is served statically, so names not listed get NXDOMAIN
	// without any Internet. Default: a.test A and AAAA, b.test TXT.
	Records []string
	// Extra lines appended to the server: clause.
	Extra []string
	// PortExtra, when set, gives more lines for the server: clause that
	// need a port of their own (https-port): it is called with a port
	// free on 127.0.0.1 at the time, and again with another when unbound
	// could not bind (another test took a port meanwhile).
	PortExtra func(port uint16) []string
	// takePorts, when set (by a test of StartUnbound), is called with the
	// ports of a try just before unbound is started on them.
	takePorts func(t testing.TB, tlsPort, plainPort uint16)
}

// Unbound is unbound (Debian's package) serving DNS over TLS with a
// certificate from a test CA, and plain DNS on UDP and TCP, all on
// 127.0.0.1.
type Unbound struct {
	Addr  netip.AddrPort // DoT
	Do53  netip.AddrPort // plain UDP and TCP
	Extra netip.AddrPort // the port given to PortExtra, if any
	Name  string         // the certificate's name
	CA    *CA
	CAPEM []byte
}

// URL returns the tls:// upstream URL for this unbound.
func (u *Unbound) URL() string { return "tls://" + u.Addr.String() + "?sni=" + u.Name }

// StartUnbound runs unbound for the test (skipped outside CI, failed in
// CI, when unbound is not installed) and waits until it answers over TLS.
func StartUnbound(t testing.TB, opts UnboundOptions) *Unbound {
	t.Helper()
	bin := testenv.Require(t, "unbound")[0]
	if opts.Name == "" {
		opts.Name = "unbound.test"
	}
	if opts.Records == nil {
		opts.Records = []string{
			"a.test. 300 IN A 192.0.2.10",
			"a.test. 300 IN AAAA 2001:db8::10",
			`b.test. 300 IN TXT "dnsguard"`,
		}
	}
	ca := NewCA(t)
	for try := 1; ; try++ {
		u, out, err := startUnbound(t, bin, ca, opts)
		if err == nil {
			return u
		}
		// Ports are chosen free, then bound by unbound: a test running
		// at the same time may take one in between (any process's
		// query socket or connection may get it as its ephemeral
		// port). unbound says "Address already in use" (strerror) for
		// TCP, "address already in use" for UDP.
		if try < 3 && strings.Contains(strings.ToLower(out), "address already in use") {
			t.Logf("unbound: a port was taken meanwhile, again with others:\n%s", out)
			continue
		}
		t.Fatalf("unbound: %v\n%s", err, out)
	}
}

// startUnbound is one try of StartUnbound, on ports free just before.
func startUnbound(t testing.TB, bin string, ca *CA, opts UnboundOptions) (*Unbound, string, error) {
	dir := t.TempDir()
	certPEM, keyPEM := ca.IssuePEM(t, opts.Name, "127.0.0.1")
	write(t, filepath.Join(dir, "cert.pem"), certPEM)
	write(t, filepath.Join(dir, "key.pem"), keyPEM)
	tlsPort, plainPort := freePort(t), freePort(t)
	var extraPort uint16
	if opts.PortExtra != nil {
		extraPort = freePort(t)
		opts.Extra = append(slices.Clip(opts.Extra), opts.PortExtra(extraPort)...)
	}
	if opts.takePorts != nil {
		opts.takePorts(t, tlsPort, plainPort)
	}
	conf := unboundConf(dir, tlsPort, plainPort, opts)
	write(t, filepath.Join(dir, "unbound.conf"), []byte(conf))

	cmd := exec.Command(bin, "-d", "-c", filepath.Join(dir, "unbound.conf"))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unbound: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("unbound output:\n%s", out.String())
		}
	})
	lo := netip.MustParseAddr("127.0.0.1")
	u := &Unbound{
		Addr: netip.AddrPortFrom(lo, tlsPort),
		Do53: netip.AddrPortFrom(lo, plainPort),
		Name: opts.Name, CA: ca, CAPEM: ca.PEM,
	}
	if extraPort != 0 {
		u.Extra = netip.AddrPortFrom(lo, extraPort)
	}
	if err := u.waitReady(exited, &waitErr); err != nil {
		return nil, out.String(), err
	}
	return u, "", nil
}

func unboundConf(dir string, tlsPort, plainPort uint16, opts UnboundOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, `server:
	verbosity: 1
	interface: 127.0.0.1@%d
	interface: 127.0.0.1@%d
	tls-port: %d
	tls-service-key: %q
	tls-service-pem: %q
	do-ip6: no
	do-daemonize: no
	chroot: ""
	username: ""
	directory: %q
	pidfile: %q
	use-syslog: no
	logfile: ""
	num-threads: 1
	so-reuseport: no
	access-control: 127.0.0.0/8 allow
	module-config: "iterator"
	pad-responses: yes
	pad-responses-block-size: 468
`, tlsPort, plainPort, tlsPort, filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"),
		dir, filepath.Join(dir, "unbound.pid"))
	zones := map[string]bool{}
	for _, r := range opts.Records {
		owner := strings.Fields(r)[0]
		zone := owner
		if labels := dns.SplitDomainName(owner); len(labels) > 1 {
			zone = dns.Fqdn(strings.Join(labels[len(labels)-1:], "."))
		}
		if !zones[zone] {
			zones[zone] = true
			fmt.Fprintf(&b, "\tlocal-zone: %s static\n", quote(zone))
		}
		fmt.Fprintf(&b, "\tlocal-data: %s\n", quote(r))
	}
	for _, e := range opts.Extra {
		fmt.Fprintf(&b, "\t%s\n", e)
	}
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	return b.String()
}

// quote quotes a config value for unbound, which takes what is between
// the quotes as it is (no escapes): single quotes unless the value has
// one. Write names with \DDD escapes for anything odd.
func quote(s string) string {
	if strings.Contains(s, "'") {
		return `"` + s + `"`
	}
	return "'" + s + "'"
}

// waitReady polls unbound over TLS until it answers.
func (u *Unbound) waitReady(exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(15 * time.Second)
	cfg := &tls.Config{ServerName: u.Name, RootCAs: u.CA.Pool, MinVersion: tls.VersionTLS12}
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("exited: %v", *waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", u.Addr.String())
		cancel()
		if err == nil {
			_ = c.Close()
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not answering on %s: %v", u.Addr, lastErr)
}

// freePort returns a TCP and UDP port free on 127.0.0.1 just now.
func freePort(t testing.TB) uint16 {
	t.Helper()
	u, l, err := portpair.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = u.Close()
	_ = l.Close()
	return u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for a process's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
