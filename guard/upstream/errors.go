package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"syscall"
)

// ErrDial marks a failure to connect (TCP or TLS) to an upstream.
var ErrDial = errors.New("cannot connect")

// hardFailure reports whether err says the upstream cannot be reached or
// trusted at all (connection refused, no route, a failed TLS handshake,
// a pin mismatch, a connect that timed out), as opposed to one query going unanswered.
func hardFailure(err error) bool {
	var (
		opErr   *net.OpError
		certErr *tls.CertificateVerificationError
		hostErr x509.HostnameError
		authErr x509.UnknownAuthorityError
		alert   tls.AlertError
		recErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrDial), errors.Is(err, ErrPin), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &authErr),
		errors.As(err, &alert), errors.As(err, &recErr):
		return true
	case errors.As(err, &opErr) && opErr.Op == "dial" && !opErr.Timeout():
		return true
	}
	return false
}
