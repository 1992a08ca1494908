package lab

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/dnsguard/dnsguard/guard/certs"
)

// SelfSigned makes a certificate for the lab's DoT and DoH listeners,
// valid for the given host names and IP addresses for a week. It returns
// the TLS certificate and its PEM, which a client (the guard's
// --upstream-ca) trusts as its own root.
func SelfSigned(hosts []string) (tls.Certificate, []byte, error) {
	c, certPEM, err := certs.SelfSigned("dnsguard lab", 7*24*time.Hour, hosts...)
	if err != nil {
		return c, nil, fmt.Errorf("lab: %w", err)
	}
	return c, certPEM, nil
}
