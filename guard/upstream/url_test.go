package upstream

import (
	"crypto/sha256"
	"encoding/base64"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	sum := sha256.Sum256([]byte("key"))
	pin := "sha256/" + base64.StdEncoding.EncodeToString(sum[:])
	sum2 := sha256.Sum256([]byte("backup"))
	pin2 := "sha256/" + base64.StdEncoding.EncodeToString(sum2[:])
	ok := []struct {
		in         string
		scheme     Scheme
		addr       string
		serverName string
		pins       int
		url        string
	}{
		{"udp://192.0.2.1", UDP, "192.0.2.1:53", "", 0, ""},
		{"udp://192.0.2.1:5300", UDP, "192.0.2.1:5300", "", 0, ""},
		{"UDP://192.0.2.1:53/", UDP, "192.0.2.1:53", "", 0, ""},
		{"udp://[2001:db8::1]", UDP, "[2001:db8::1]:53", "", 0, ""},
		{"udp://[2001:db8::1]:5353", UDP, "[2001:db8::1]:5353", "", 0, ""},
		{"tcp://127.0.0.1:53", TCP, "127.0.0.1:53", "", 0, ""},
		{"tls://1.1.1.1", TLS, "1.1.1.1:853", "1.1.1.1", 0, ""},
		{"tls://1.1.1.1:853?sni=Cloudflare-DNS.com", TLS, "1.1.1.1:853", "cloudflare-dns.com", 0, ""},
		{"tls://9.9.9.9?sni=dns.quad9.net&pin=" + pin + "&pin=" + pin2, TLS, "9.9.9.9:853", "dns.quad9.net", 2, ""},
		{"tls://9.9.9.9?pin=" + strings.ReplaceAll(pin, "+", "%2B"), TLS, "9.9.9.9:853", "9.9.9.9", 1, ""},
		{"https://dns.google/dns-query?ip=8.8.8.8", HTTPS, "8.8.8.8:443", "dns.google", 0, "https://dns.google/dns-query"},
		{"https://doh.test:8443/q?ip=127.0.0.1&pin=" + pin, HTTPS, "127.0.0.1:8443", "doh.test", 1, "https://doh.test:8443/q"},
		{"https://doh.test/dns-query?ip=2001:db8::2&x=1", HTTPS, "[2001:db8::2]:443", "doh.test", 0, "https://doh.test/dns-query?x=1"},
		{"https://1.1.1.1/dns-query", HTTPS, "1.1.1.1:443", "1.1.1.1", 0, "https://1.1.1.1/dns-query"},
	}
	for _, c := range ok {
		t.Run(c.in, func(t *testing.T) {
			ep, err := ParseURL(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if ep.Scheme != c.scheme || ep.Addr != netip.MustParseAddrPort(c.addr) || ep.ServerName != c.serverName ||
				len(ep.Pins) != c.pins || ep.URL != c.url {
				t.Errorf("got %+v", ep)
			}
			if ep.String() != c.in {
				t.Errorf("String() = %q", ep.String())
			}
		})
	}
	bad := []struct{ in, want string }{
		{"", "missing scheme"},
		{"192.0.2.1:53", "missing scheme"},
		{"quic://192.0.2.1", "unknown scheme"},
		{"udp://", "missing host"},
		{"udp:192.0.2.1", "missing scheme"},
		{"udp://dns.google", "must be an IP address"},
		{"udp://192.0.2.1:0", "bad port"},
		{"udp://192.0.2.1:65536", "bad port"},
		{"udp://192.0.2.1:x", "invalid port"},
		{"udp://2001:db8::1", "brackets"},
		{"udp://[fe80::1%25eth0]:53", "must be an IP address"},
		{"udp://192.0.2.1?sni=x", "unknown parameter"},
		{"udp://192.0.2.1/path", "path is only allowed"},
		{"udp://user@192.0.2.1", "user information"},
		{"udp://192.0.2.1#frag", "fragment"},
		{"tls://1.1.1.1?sni=bad_name!", "sni"},
		{"tls://1.1.1.1?pin=md5/abc", "want sha256/BASE64"},
		{"tls://1.1.1.1?pin=sha256/abc", "not a base64 SHA-256"},
		{"tls://1.1.1.1?ip=1.1.1.1", "unknown parameter"},
		{"https://dns.google/dns-query", "missing ip parameter"},
		{"https://dns.google/dns-query?ip=dns.google", "not an IP address"},
		{"https://dns.google?ip=8.8.8.8", "missing path"},
		{"https://dns.google/dns-query?ip=8.8.8.8&sni=x", "no sni parameter"},
		{"https://a..b/dns-query?ip=8.8.8.8", "host"},
		{"https://dns.google/dns-query?ip=8.8.8.8&pin=x", "want sha256/BASE64"},
		{"tls://1.1.1.1?sni=%zz", "bad query string"},
		{"://x", "not a URL"}, {"udp://%zz", "not a URL"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.in, func(t *testing.T) {
			ep, err := ParseURL(c.in)
			if err == nil {
				t.Fatalf("accepted: %+v", ep)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"udp://192.0.2.1:53", "tcp://[::1]:53", "tls://1.1.1.1?sni=one.one.one.one&pin=sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"https://dns.google/dns-query?ip=8.8.8.8", "https://x:1/p?ip=::1&a=b", "udp://[fe80::1%eth0]", "tls://%", "https://[::1]/q",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseURL(s)
		if err != nil {
			if ep != nil {
				t.Fatal("endpoint with an error")
			}
			return
		}
		if !ep.Addr.IsValid() || ep.Addr.Port() == 0 {
			t.Fatalf("%q: bad address %v", s, ep.Addr)
		}
		switch ep.Scheme {
		case UDP, TCP:
		case TLS:
			if ep.ServerName == "" {
				t.Fatalf("%q: TLS without a name", s)
			}
		case HTTPS:
			// The ip and pin parameters are the guard's, never sent (a
			// path may well hold "ip=").
			u, err := url.Parse(ep.URL)
			if ep.ServerName == "" || !strings.HasPrefix(ep.URL, "https://") || err != nil || u.Query().Has("ip") || u.Query().Has("pin") {
				t.Fatalf("%q: bad DoH endpoint %+v", s, ep)
			}
		default:
			t.Fatalf("%q: scheme %q", s, ep.Scheme)
		}
		// What parsed once parses the same again.
		again, err := ParseURL(ep.Raw)
		if err != nil || again.Addr != ep.Addr || again.ServerName != ep.ServerName || again.URL != ep.URL {
			t.Fatalf("%q: reparse %+v, %v", s, again, err)
		}
	})
}
