package upstream

import (
	"bufio"
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
	tc := tlsClient(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// tlsClient is TLS over c, read through a read-ahead buffer.
func tlsClient(c net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Client(&readAhead{Conn: c, r: bufio.NewReaderSize(c, readAheadSize)}, cfg)
}

// readAheadSize is what a TLS connection reads from its socket at once.
const readAheadSize = 16 << 10

// readAhead is the socket under a TLS connection, read through a buffer.
// crypto/tls reads about one record (and 512 octets more) a read(2): its
// raw input buffer takes what one record needs. Pipelined answers come
// several at once, and DNS records are small (a padded answer: 468
// octets), so through this buffer one read(2) takes all that has come,
// up to a full-size record, and the next records are read from memory.
// A lone answer is still one read(2).
type readAhead struct {
	net.Conn
	r *bufio.Reader
}

func (c *readAhead) Read(b []byte) (int, error) { return c.r.Read(b) }
