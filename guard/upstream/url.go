package upstream

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Scheme is an upstream transport.
type Scheme string

// The transports an upstream URL can name.
const (
	UDP   Scheme = "udp"   // Do53 over UDP, retried over TCP when truncated
	TCP   Scheme = "tcp"   // Do53 over TCP
	TLS   Scheme = "tls"   // DNS over TLS, RFC 7858
	HTTPS Scheme = "https" // DNS over HTTPS, RFC 8484
)

// Default ports per scheme.
var defaultPort = map[Scheme]uint16{UDP: 53, TCP: 53, TLS: 853, HTTPS: 443}

// Endpoint is a parsed upstream URL.
//
//	udp://IP[:PORT]                       Do53, port 53
//	tcp://IP[:PORT]                       Do53 over TCP, port 53
//	tls://IP[:PORT][?sni=NAME][&pin=sha256/BASE64...]
//	                                      DoT, port 853; without sni the
//	                                      certificate must name the IP
//	https://NAME[:PORT]/PATH?ip=IP[&pin=sha256/BASE64...]
//	                                      DoH, port 443; IP is dialled (no
//	                                      bootstrap lookup), NAME is the SNI,
//	                                      Host and the name verified
//
// IPv6 addresses are written in brackets (udp://[2001:db8::1]:53). A pin is
// the base64 SHA-256 of the certificate's SubjectPublicKeyInfo (RFC 7858
// §4.2); pin may repeat, and any one matching is enough.
type Endpoint struct {
	Raw        string
	Scheme     Scheme
	Addr       netip.AddrPort // what is dialled
	ServerName string         // verified name and SNI (TLS, HTTPS)
	Pins       [][sha256.Size]byte
	URL        string // the DoH request URL, without ip and pin
}

// String returns the URL as configured.
func (e *Endpoint) String() string { return e.Raw }

// ParseURL parses an upstream URL.
func ParseURL(raw string) (*Endpoint, error) {
	ep, err := parseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", raw, err)
	}
	return ep, nil
}

func parseURL(raw string) (*Endpoint, error) {
	if !strings.Contains(raw, "://") {
		return nil, errors.New("missing scheme (udp://, tcp://, tls:// or https://)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	ep := &Endpoint{Raw: raw, Scheme: Scheme(strings.ToLower(u.Scheme))}
	port, known := defaultPort[ep.Scheme]
	switch {
	case u.Scheme == "":
		return nil, errors.New("missing scheme (udp://, tcp://, tls:// or https://)")
	case !known:
		return nil, fmt.Errorf("unknown scheme %q (want udp, tcp, tls or https)", u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return nil, errors.New("missing host (write SCHEME://HOST)")
	case u.User != nil:
		return nil, errors.New("user information is not allowed")
	case u.Fragment != "":
		return nil, errors.New("fragment is not allowed")
	}
	host, p, err := splitHostPort(u.Host, port)
	if err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query string: %w", err)
	}
	for k := range q {
		switch {
		case ep.Scheme == HTTPS && k == "sni":
			return nil, errors.New("no sni parameter for https: the URL's host is the name")
		case ep.Scheme == HTTPS:
			// Other parameters belong to the DoH server's URL.
		case ep.Scheme == TLS && (k == "sni" || k == "pin"):
		default:
			return nil, fmt.Errorf("unknown parameter %q for %s", k, ep.Scheme)
		}
	}
	if ep.Scheme != HTTPS && u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("a path is only allowed for https, not %s", ep.Scheme)
	}
	if ep.Pins, err = parsePins(q["pin"]); err != nil {
		return nil, err
	}
	if ep.Scheme == HTTPS {
		return ep, ep.parseHTTPS(u, host, p, q)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("host %q must be an IP address (no bootstrap lookup)", host)
	}
	ep.Addr = netip.AddrPortFrom(ip.Unmap(), p)
	if ep.Scheme == TLS {
		ep.ServerName = ip.Unmap().String()
		if sni, ok := one(q, "sni"); ok {
			if err := checkName(sni); err != nil {
				return nil, fmt.Errorf("sni: %w", err)
			}
			ep.ServerName = strings.ToLower(sni)
		}
	}
	return ep, nil
}

func (ep *Endpoint) parseHTTPS(u *url.URL, host string, port uint16, q url.Values) error {
	if err := checkName(host); err != nil {
		if _, ipErr := netip.ParseAddr(host); ipErr != nil {
			return fmt.Errorf("host: %w", err)
		}
	}
	ep.ServerName = strings.ToLower(host)
	ips, ok := one(q, "ip")
	if !ok {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return errors.New("missing ip parameter (https://NAME/PATH?ip=IP: the address to dial)")
		}
		ips = ip.String()
	}
	ip, err := netip.ParseAddr(ips)
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("ip parameter %q is not an IP address", ips)
	}
	ep.Addr = netip.AddrPortFrom(ip.Unmap(), port)
	if u.Path == "" {
		return errors.New("missing path (e.g. /dns-query)")
	}
	q.Del("ip")
	q.Del("pin")
	r := url.URL{Scheme: "https", Host: u.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: q.Encode()}
	ep.URL = r.String()
	return nil
}

// splitHostPort splits HOST[:PORT], HOST being a name, an IPv4 address or a
// bracketed IPv6 address.
func splitHostPort(hostport string, def uint16) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
			return hostport[1 : len(hostport)-1], def, nil
		}
		if strings.Count(hostport, ":") > 1 {
			return "", 0, fmt.Errorf("IPv6 address %q must be in brackets", hostport)
		}
		if strings.Contains(hostport, ":") {
			return "", 0, fmt.Errorf("bad host:port %q", hostport)
		}
		return hostport, def, nil
	}
	if host == "" {
		return "", 0, errors.New("missing host")
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("bad port %q (want 1-65535)", ps)
	}
	return host, uint16(p), nil
}

func parsePins(vals []string) ([][sha256.Size]byte, error) {
	var pins [][sha256.Size]byte
	for _, v := range vals {
		b64, ok := strings.CutPrefix(v, "sha256/")
		if !ok {
			return nil, fmt.Errorf("pin %q: want sha256/BASE64", v)
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			// url.ParseQuery turns '+' into ' '; accept the unescaped form.
			b, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(b64, " ", "+"))
		}
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("pin %q: not a base64 SHA-256 digest", v)
		}
		pins = append(pins, [sha256.Size]byte(b))
	}
	return pins, nil
}

func one(q url.Values, k string) (string, bool) {
	v, ok := q[k]
	if !ok {
		return "", false
	}
	return v[len(v)-1], true
}

// checkName accepts a DNS host name (letters, digits, hyphens, dots).
func checkName(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%q is not a host name", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a host name", s)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a host name", s)
			}
		}
	}
	return nil
}
