package policy

import "testing"

// TestStrictness: strict terms change every answer only when some
// upstream is cleartext and randomize_case is off (0x20 for strict
// devices only); otherwise only DO queries' answers (the shield).
func TestStrictness(t *testing.T) {
	for _, tc := range []struct {
		upstreams []string
		randomize bool
		want      bool
	}{
		{[]string{"tls://9.9.9.9:853?sni=dns.quad9.net", "https://dns.example/dns-query?ip=192.0.2.1"}, false, false},
		{[]string{"tls://9.9.9.9:853?sni=dns.quad9.net", "udp://192.0.2.53:53"}, false, true},
		{[]string{"TCP://192.0.2.53"}, false, true},
		{[]string{"udp://192.0.2.53:53"}, true, false},
		{nil, false, false},
	} {
		c := &Config{Upstreams: tc.upstreams, Randomize0x20: tc.randomize}
		if got := c.Strictness().Case0x20Differs; got != tc.want {
			t.Errorf("%q randomize=%v: Case0x20Differs %v, want %v", tc.upstreams, tc.randomize, got, tc.want)
		}
	}
	for _, tc := range []struct {
		t    Terms
		do   bool
		s    Strictness
		want bool
	}{
		{Lenient, true, Strictness{Case0x20Differs: true}, false},
		{Strict, false, Strictness{}, false},
		{Strict, true, Strictness{}, true},
		{Strict, false, Strictness{Case0x20Differs: true}, true},
	} {
		if got := tc.t.OwnAnswers(tc.do, tc.s); got != tc.want {
			t.Errorf("%v DO=%v %+v: OwnAnswers %v, want %v", tc.t, tc.do, tc.s, got, tc.want)
		}
	}
	if !Strict.Case0x20() || Lenient.Case0x20() || !Strict.MinimalShield() || Lenient.MinimalShield() || TermsOf(true) != Strict || TermsOf(false) != Lenient {
		t.Error("Terms methods")
	}
}
