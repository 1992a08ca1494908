package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
)

// Upstreams are always dialled by address (netip.AddrPort), through
// net.Dialer.DialTCP rather than DialContext with a "host:port" string:
// with no string address anywhere in the router build the linker leaves
// out Go's stub resolver (about 200 kB of the mipsle binary), which the
// guard, itself the resolver, never needs.

// dialTCP connects to addr.
func dialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialTCP(ctx, "tcp", netip.AddrPort{}, addr)
}

// dialTLS connects to addr and completes the TLS handshake (verification
// and pins as cfg says) within ctx.
func dialTLS(ctx context.Context, addr netip.AddrPort, cfg *tls.Config) (*tls.Conn, error) {
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" { // as tls.Dialer does: verify the address
		cfg = cfg.Clone()
		cfg.ServerName = addr.Addr().Unmap().String()
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}
