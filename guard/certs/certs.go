// Package certs makes the X.509 certificates the lab's DoT and DoH
// listeners, the tests' upstreams and scripts/attacktool serve: a CA made
// for one run, server certificates it issues, self-signed certificates,
// and the key pins upstream URLs carry. ECDSA P-256 throughout.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority made for one run.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte         // the CA certificate, for a CA file or --upstream-ca
	Pool *x509.CertPool // a pool holding only this CA
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA named cn, valid from an hour ago for validity.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert, key, der, err := create(tmpl, nil, nil, validity)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, PEM: encode(der), Pool: pool, key: key}, nil
}

// Issue makes a server certificate for names (each a DNS name or an IP
// address; the first is also the subject), valid for validity. It returns
// the key pair and its PEM forms (certificate, then key) for servers that
// read files.
func (ca *CA) Issue(validity time.Duration, names ...string) (c tls.Certificate, certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return c, nil, nil, fmt.Errorf("certs: a server certificate needs a name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addNames(tmpl, names)
	_, key, der, err := create(tmpl, ca.Cert, ca.key, validity)
	if err != nil {
		return c, nil, nil, err
	}
	return pair(der, key)
}

// SelfSigned makes a self-signed server certificate for hosts (DNS names
// or IP addresses), subject cn, that a client trusts as its own root.
func SelfSigned(cn string, validity time.Duration, hosts ...string) (c tls.Certificate, certPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{cn + " (self-signed)"}},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	addNames(tmpl, hosts)
	_, key, der, err := create(tmpl, nil, nil, validity)
	if err != nil {
		return c, nil, err
	}
	c, certPEM, _, err = pair(der, key)
	return c, certPEM, err
}

// Pin returns the pin of a certificate's key as upstream URLs write it:
// sha256/ and the base64 SHA-256 of its SubjectPublicKeyInfo (RFC 7469).
func Pin(der []byte) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("certs: pin: %w", err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256/" + base64.StdEncoding.EncodeToString(sum[:]), nil
}

func addNames(tmpl *x509.Certificate, names []string) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
}

// create signs tmpl with a fresh key, by parent (nil: self-signed), valid
// from an hour ago (clock skew) for validity, under a random serial.
func create(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120)); err != nil {
		return nil, nil, nil, fmt.Errorf("certs: serial: %w", err)
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(validity)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: %s: %w", tmpl.Subject.CommonName, err)
	}
	return cert, key, der, nil
}

func encode(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pair makes the tls.Certificate (leaf parsed) and the PEM forms.
func pair(der []byte, key *ecdsa.PrivateKey) (c tls.Certificate, certPEM, keyPEM []byte, err error) {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return c, nil, nil, fmt.Errorf("certs: key: %w", err)
	}
	certPEM = encode(der)
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	c, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return c, nil, nil, fmt.Errorf("certs: key pair: %w", err)
	}
	return c, certPEM, keyPEM, nil
}
