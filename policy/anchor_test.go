package policy

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// ParseTrustAnchor against dns.NewRR, the parser it stands in for.
func TestParseTrustAnchor(t *testing.T) {
	good := []string{
		". 0 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
		". IN 0 DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16",
		"example. DS 12345 RSASHA256 2 E06D44B80B8F1D39 A95C0B0D7C65D084 58E880409BBC6834 57104237C7F8EC8D ; split, mnemonic, comment",
		"Example.COM 300 in ds 1 13 2 ( e06d44b80b8f1d39a95c0b0d7c65d08458e880409bbc683457104237c7f8ec8d )",
		"test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==",
		"sub.test. DNSKEY 257 3 8 AwEAAag/ 8Dg5F4Hz",
		`a\.b.test. IN DS 1 8 2 AB`,
	}
	for _, s := range good {
		want, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("dns.NewRR(%q): %v", s, err)
		}
		got, err := ParseTrustAnchor(s)
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if got.String() != want.String() {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
	for _, s := range []string{
		"", "; only a comment", ".", ". 0 IN", ". 0 IN A 192.0.2.1", ". 0 CH DS 1 8 2 AB", ". DS 1 8 2", ". DS 70000 8 2 AB",
		". DS 1 NOSUCHALG 2 AB", " 0 DS 0 0 0 00", ". DS 1 8 2 XYZ", ". DNSKEY 257 3 8 !!!", ". DNSKEY 257 300 8 AwEAAa==", "bad..name. DS 1 8 2 AB", ". DS (1 8 2 AB )", ". DS ( 1 8 2 AB)", "0 dS(0 0)0 00",
	} {
		if rr, err := ParseTrustAnchor(s); err == nil {
			t.Errorf("%q accepted: %v", s, rr)
		}
	}
}

// Whatever ParseTrustAnchor accepts, dns.NewRR reads as the same record.
func FuzzParseTrustAnchor(f *testing.F) {
	f.Add(". 0 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D")
	f.Add("test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTrustAnchor(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(s, "\"\\$@") { // zone-file syntax NewRR reads its own way
			return
		}
		want, err := dns.NewRR(s)
		if err != nil || want == nil {
			t.Fatalf("%q: accepted as %v, dns.NewRR: %v", s, got, err)
		}
		if got.String() != want.String() {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}
