package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultFileMatchesBuiltin(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, builtin()) {
		t.Errorf("default.conf and builtin() disagree:\nfile:    %+v\nbuiltin: %+v", c, builtin())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, conf, want string
	}{
		{"unknown option", "config cache\n\toption max_entrys '5'\n", "x.conf:2: unknown option \"max_entrys\" in cache section"},
		{"bad integer", "config cache\n\n\toption max_entries 'many'\n", "x.conf:3: option \"max_entries\""},
		{"bad duration", "config cache\n\toption min_ttl 'soon'\n", "x.conf:2: option \"min_ttl\": \"soon\" is not a duration"},
		{"unknown section", "config cahce\n", "x.conf:1: unknown section type \"cahce\""},
		{"option outside", "option x 'y'\n", "x.conf:1: option outside any config section"},
		{"unterminated quote", "config cache\n\toption min_ttl '30\n", "x.conf:2: unterminated ' quote"},
		{"bad bool", "config answers\n\toption rebind_protection 'maybe'\n", "x.conf:2: option \"rebind_protection\": \"maybe\" is not a boolean"},
		{"bad listen", "config dnsguard\n\tlist listen 'localhost'\n", "x.conf: listen \"localhost\": want IP:PORT"},
		{"min above max", "config cache\n\toption min_ttl '2h'\n\toption max_ttl '1h'\n", "min_ttl 2h0m0s above max_ttl 1h0m0s"},
		{"fail max too long", "config cache\n\toption fail_max '10m'\n", "RFC 9520"},
		{"class without name", "config class\n", "x.conf:1: a class section needs a name"},
		{"duplicate class", "config class 'a'\nconfig class 'a'\n", "x.conf:2: class \"a\" already defined on line 1"},
		{"option then list", "config dnsguard\n\toption listen '1.2.3.4:53'\n\tlist listen '1.2.3.4:54'\n", "x.conf:3: \"listen\" is an option"},
		{"bad prefix", "config answers\n\tlist allow_private '10.0.0.0'\n", "is not a prefix"},
		{"bad MAC in a class", "config class 'cams'\n\tlist mac '00:11:22:33:44:55'\n\tlist mac 'zz:11:22:33:44:55'\n", "option \"mac\": \"zz:11:22:33:44:55\" is not a MAC address"},
		{"short MAC in a class", "config class 'cams'\n\tlist mac '00:11:22:33:44'\n", "is not a MAC address"},
		{"EUI-64 in a class", "config class 'cams'\n\tlist mac '00:11:22:33:44:55:66:77'\n", "is not a MAC address"},
		{"bad MAC prefix", "config class 'cams'\n\tlist mac_prefix '9c:8e:c'\n", "x.conf:2: option \"mac_prefix\": \"9c:8e:c\" is not a MAC prefix"},
		{"MAC prefix too long", "config class 'cams'\n\tlist mac_prefix '00:11:22:33:44:55'\n", "is not a MAC prefix"},
		{"bad name pattern", "config class 'cams'\n\tlist name 'cam[1-'\n", "name pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.conf), "x.conf")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	conf := `
# comment
config dnsguard 'main'
	list listen '192.168.1.1:53'
	list listen "[fd00::1]:53"   # trailing comment
	list upstream 'udp://127.0.0.1:5300'
	option memory_limit '48MiB'
	option cpus '2'

config cache
	option min_ttl '5'
	option max_ttl '1d12h'

config class 'cams'
	list mac_prefix '9c:8e:cd'
	option rate '2.5'
	option strict 'yes'
`
	c, err := Parse(strings.NewReader(conf), "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.168.1.1:53", "[fd00::1]:53"}; !reflect.DeepEqual(c.Listen, want) {
		t.Errorf("listen = %v, want %v", c.Listen, want)
	}
	if want := []string{"udp://127.0.0.1:5300"}; !reflect.DeepEqual(c.Upstreams, want) {
		t.Errorf("upstreams = %v, want %v (a list in the file replaces the default)", c.Upstreams, want)
	}
	if c.MemoryLimit != 48<<20 {
		t.Errorf("memory_limit = %d", c.MemoryLimit)
	}
	if c.CPUs != 2 {
		t.Errorf("cpus = %d", c.CPUs)
	}
	if c.Cache.MinTTL != 5*time.Second || c.Cache.MaxTTL != 36*time.Hour {
		t.Errorf("ttls = %v %v", c.Cache.MinTTL, c.Cache.MaxTTL)
	}
	if c.Cache.MaxEntries != 20000 {
		t.Errorf("unset option lost its default: %d", c.Cache.MaxEntries)
	}
	if len(c.Classes) != 1 || c.Classes[0].Name != "cams" || !c.Classes[0].Strict || c.Classes[0].Rate != 2.5 || c.Classes[0].MACPrefixes[0] != "9c:8e:cd" {
		t.Errorf("classes = %+v", c.Classes)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultText())
	f.Add("config class 'a'\n\tlist mac \"x\\\"y\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(strings.NewReader(s), "fuzz.conf")
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

func TestListenAddrs(t *testing.T) {
	for _, tc := range []struct {
		conf    string
		want    []string
		derived bool
	}{
		{"", []string{"127.0.0.1:5337", "[::1]:5337"}, false},
		{"config dnsguard\n\tlist lan 'br-lan'\n", []string{"0.0.0.0:53", "[::]:53"}, true},
		{"config dnsguard\n\tlist lan 'br-lan'\nconfig intercept\n\toption guard_port '5300'\n", []string{"0.0.0.0:5300", "[::]:5300"}, true},
		{"config dnsguard\n\tlist lan 'br-lan'\n\tlist listen '192.168.1.1:53'\n", []string{"192.168.1.1:53"}, false},
	} {
		c, err := Parse(strings.NewReader(tc.conf), "x.conf")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ListenAddrs(); !reflect.DeepEqual(got, tc.want) || c.ListenDerived() != tc.derived {
			t.Errorf("%q: ListenAddrs %v derived %v, want %v %v", tc.conf, got, c.ListenDerived(), tc.want, tc.derived)
		}
	}
	c, err := Parse(strings.NewReader("config dnsguard\n\tlist allow_client '192.168.50.7/24'\n\tlist allow_client 'fd50::/48'\n"), "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.AllowClient); got != "[192.168.50.0/24 fd50::/48]" {
		t.Errorf("allow_client %s", got)
	}
	if _, err := Parse(strings.NewReader("config dnsguard\n\tlist allow_client '192.168.50.7'\n"), "x.conf"); err == nil || !strings.Contains(err.Error(), "not a prefix") {
		t.Errorf("bare address as allow_client: %v", err)
	}
}

func TestLocalSection(t *testing.T) {
	tests := []struct {
		name, conf  string
		wantDomains []string
		wantServer  string
		wantErr     string
	}{
		{name: "default", conf: "", wantDomains: []string{"lan"}},
		{name: "domains replace the default, normalised, deduplicated",
			conf:        "config local\n\tlist domain 'Home.'\n\tlist domain 'home'\n\tlist domain 'corp.example'\n\toption server '127.0.0.1:5354'\n",
			wantDomains: []string{"home", "corp.example"}, wantServer: "127.0.0.1:5354"},
		{name: "server without port", conf: "config local\n\toption server '::1'\n", wantDomains: []string{"lan"}, wantServer: "[::1]:53"},
		{name: "escaped label", conf: "config local\n\tlist domain 'my\\032lan'\n", wantDomains: []string{`my\032lan`}},
		// The old answers.local_domain list (before this section was
		// used) still loads: it is read as config local's domain list,
		// whichever section comes first; 'local' is dropped.
		{name: "old local_domain alias",
			conf:        "config answers\n\tlist local_domain 'lan'\n\tlist local_domain 'local'\n\tlist local_domain 'home.arpa'\n\tlist local_domain 'home'\nconfig local\n\tlist domain 'lan'\n",
			wantDomains: []string{"lan", "home.arpa", "home"}},
		{name: "alias after the section",
			conf:        "config local\n\tlist domain 'corp'\nconfig answers\n\tlist local_domain 'home'\n",
			wantDomains: []string{"corp", "home"}},
		{name: "alias alone", conf: "config answers\n\tlist local_domain 'home'\n", wantDomains: []string{"lan", "home"}},
		{name: "mdns refused", conf: "config local\n\tlist domain 'local'\n", wantErr: "x.conf:2: option \"domain\": \"local\": .local is multicast DNS"},
		{name: "below local refused", conf: "config local\n\tlist domain 'x.local.'\n", wantErr: "multicast DNS"},
		{name: "localhost refused", conf: "config local\n\tlist domain 'localhost'\n", wantErr: "localhost is answered by the guard"},
		{name: "root refused", conf: "config local\n\tlist domain '.'\n", wantErr: "the root cannot be a local domain"},
		{name: "empty label", conf: "config local\n\tlist domain 'a..lan'\n", wantErr: "not a domain name"},
		{name: "label too long", conf: "config local\n\tlist domain '" + strings.Repeat("x", 64) + ".lan'\n", wantErr: "not a domain name"},
		{name: "bad server", conf: "config local\n\toption server 'localhost:53'\n", wantErr: "want IP:PORT"},
		{name: "port zero", conf: "config local\n\toption server '127.0.0.1:0'\n", wantErr: "want IP:PORT"},
		{name: "bad alias", conf: "config answers\n\tlist local_domain 'a..b'\n", wantErr: "x.conf:2: option \"local_domain\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.conf), "x.conf")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Local.Domains, tt.wantDomains) || c.Local.Server != tt.wantServer {
				t.Errorf("domains %q server %q, want %q %q", c.Local.Domains, c.Local.Server, tt.wantDomains, tt.wantServer)
			}
			if c.Local.MaxTTL != time.Minute {
				t.Errorf("max_ttl %v", c.Local.MaxTTL)
			}
		})
	}
}

func TestDNSSECOptions(t *testing.T) {
	c, err := Parse(strings.NewReader(`config dnsguard 'main'
	option dnssec '1'
	list trust_anchor 'example. IN DS 12345 13 2 ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789'
	list trust_anchor 'example. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ=='
	list insecure_domain 'Broken.Example'
	list insecure_domain 'other.test.'
`), "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !c.DNSSEC.Enabled || len(c.DNSSEC.TrustAnchors) != 2 || !reflect.DeepEqual(c.DNSSEC.InsecureDomains, []string{"broken.example.", "other.test."}) {
		t.Errorf("got %+v", c.DNSSEC)
	}
	if d, _ := Load(""); !d.DNSSEC.Enabled || len(d.DNSSEC.TrustAnchors) != 0 {
		t.Errorf("default: %+v", d.DNSSEC)
	}
	for _, bad := range []string{
		"\tlist trust_anchor 'example. IN A 192.0.2.1'\n",
		"\tlist trust_anchor 'example. IN DNSKEY 256 2 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ=='\n",
		"\tlist trust_anchor 'nonsense'\n",
		"\tlist insecure_domain 'bad..name'\n",
		"\toption dnssec 'maybe'\n",
	} {
		if _, err := Parse(strings.NewReader("config dnsguard 'main'\n"+bad), "x.conf"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
