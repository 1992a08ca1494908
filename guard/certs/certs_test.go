package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

// TestHandshake: a certificate the CA issues serves a TLS handshake that a
// client trusting only that CA accepts for each of its names, and refuses
// for any other name.
func TestHandshake(t *testing.T) {
	ca, err := NewCA("certs test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, certPEM, keyPEM, err := ca.Issue(time.Hour, "dot.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("PEM forms: %v", err)
	}
	for _, tc := range []struct {
		sni  string
		fail bool
	}{{"dot.test", false}, {"127.0.0.1", false}, {"other.test", true}} {
		err := handshake(t, cert, &tls.Config{RootCAs: ca.Pool, ServerName: tc.sni})
		if (err != nil) != tc.fail {
			t.Errorf("name %s: handshake error %v, want failure %v", tc.sni, err, tc.fail)
		}
	}
	// A self-signed certificate is its own root.
	self, selfPEM, err := SelfSigned("lab", time.Hour, "lab.test")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(selfPEM)
	if err := handshake(t, self, &tls.Config{RootCAs: pool, ServerName: "lab.test"}); err != nil {
		t.Errorf("self-signed: %v", err)
	}
	if err := handshake(t, self, &tls.Config{RootCAs: ca.Pool, ServerName: "lab.test"}); err == nil {
		t.Error("self-signed certificate accepted by a client trusting another CA")
	}
}

func handshake(t *testing.T, cert tls.Certificate, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		srv := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		srv.Handshake()
		srv.Close()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		c.Close()
	}
	<-done
	return err
}

// TestPin: the pin is the leaf key's, as the upstream URLs write it, and
// differs between keys.
func TestPin(t *testing.T) {
	ca, err := NewCA("pin CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c1, _, _, err := ca.Issue(time.Hour, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _, err := ca.Issue(time.Hour, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	p1, err := Pin(c1.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := Pin(c2.Certificate[0])
	if !strings.HasPrefix(p1, "sha256/") || len(p1) != len("sha256/")+44 || p1 == p2 {
		t.Errorf("pins %q and %q", p1, p2)
	}
	if _, err := Pin([]byte("not a certificate")); err == nil {
		t.Error("pin of garbage: no error")
	}
	if _, _, _, err := ca.Issue(time.Hour); err == nil {
		t.Error("certificate without a name: no error")
	}
}
