package upstream

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// tlsConfig is the trust shared by the DoT and DoH upstreams: the system
// roots plus any extra CA bundle (RFC 8310 strict profile: the chain and
// the name are always verified; there is no opportunistic fallback).
type tlsConfig struct {
	roots *x509.CertPool
}

// newTLSConfig loads the system roots and appends the PEM bundles.
func newTLSConfig(pool *x509.CertPool, file string, pem []byte) (*tlsConfig, error) {
	roots := pool
	if roots == nil {
		sys, err := x509.SystemCertPool()
		if err != nil || sys == nil {
			sys = x509.NewCertPool()
		}
		roots = sys
	} else {
		roots = roots.Clone()
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("upstream CA %s: no PEM certificates", file)
		}
	}
	if len(pem) > 0 && !roots.AppendCertsFromPEM(pem) {
		return nil, errors.New("upstream CA: no PEM certificates")
	}
	return &tlsConfig{roots: roots}, nil
}

// clientConfig is the TLS client configuration for one endpoint: TLS 1.2
// or later, the name verified against the roots, and the SPKI pins
// checked when there are any (RFC 7858 §4.2).
func (c *tlsConfig) clientConfig(ep *Endpoint, alpn ...string) *tls.Config {
	cfg := &tls.Config{
		ServerName:         ep.ServerName,
		RootCAs:            c.roots,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         alpn,
		ClientSessionCache: tls.NewLRUClientSessionCache(4), // RFC 8310 §9: resumption
		// DNS messages are small and gathered writes (see gather) meant
		// to leave as one record, one syscall: no 1 kB records for the
		// first 128 kB, which are for a browser's first paint.
		DynamicRecordSizingDisabled: true,
	}
	if len(ep.Pins) > 0 {
		pins := ep.Pins
		// Only the chains that verified count: PeerCertificates is
		// whatever the server sent, and a server holding any trusted
		// certificate for the name could append the pinned one.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return checkPins(cs.VerifiedChains, pins)
		}
	}
	return cfg
}

// ErrPin is returned when no certificate key matches a configured pin.
var ErrPin = errors.New("no certificate key matches a configured pin")

// checkPins accepts the connection when a certificate of one of the
// verified chains (leaf to trusted root) has a pinned SPKI SHA-256:
// pinning the leaf, an intermediate, the root or a backup key all work.
// No verified chain (verification off) matches nothing.
func checkPins(chains [][]*x509.Certificate, pins [][sha256.Size]byte) error {
	for _, chain := range chains {
		for _, cert := range chain {
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			for _, p := range pins {
				if sum == p {
					return nil
				}
			}
		}
	}
	return ErrPin
}
