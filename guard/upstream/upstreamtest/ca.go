// Package upstreamtest runs real upstreams for tests: a test CA, DoT and
// DoH servers that record every query they get, and unbound from Debian
// serving DoT with local data, so tests need no Internet.
package upstreamtest

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/certs"
)

// CA is a certificate authority made for one test (guard/certs, with
// failures failing the test).
type CA struct {
	*certs.CA
}

// NewCA makes a fresh CA, valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := certs.NewCA("dnsguard test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{ca}
}

// Issue makes a server certificate for the names, each a DNS name or an
// IP address.
func (ca *CA) Issue(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	c, _, _, err := ca.CA.Issue(24*time.Hour, names...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// IssuePEM is Issue in PEM form (certificate chain, then key), for servers
// that read files.
func (ca *CA) IssuePEM(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	_, certPEM, keyPEM, err := ca.CA.Issue(24*time.Hour, names...)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// Pin returns the pin of a certificate's key as upstream URLs write it.
func Pin(t testing.TB, cert tls.Certificate) string {
	t.Helper()
	p, err := certs.Pin(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}
