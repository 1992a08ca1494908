package device

import (
	"testing"

	"github.com/dnsguard/dnsguard/policy"
)

func TestClassifier(t *testing.T) {
	no := false
	c := NewClassifier([]policy.Class{
		{Name: "trusted", MACs: []string{"00:11:22:33:44:55"}, Exempt: true},
		{Name: "cams", MACPrefixes: []string{"9c:8e:cd"}, Rate: 10, Burst: 20},
		{Name: "tvs", Names: []string{"lg-*"}},
		{Name: "jail", Strict: true, Rate: 2, Burst: 4},
	})
	tests := []struct {
		name string
		rec  Record
		want Decision
	}{
		{"by mac", Record{MAC: "00:11:22:33:44:55"}, Decision{Class: "trusted", Exempt: true}},
		{"by prefix", Record{MAC: "9C:8E:CD:01:02:03"}, Decision{Class: "cams", Rate: 10, Burst: 20}},
		{"by name", Record{MAC: "02:00:00:00:00:01", Names: []string{"LG-webOS"}}, Decision{Class: "tvs"}},
		{"none", Record{MAC: "02:00:00:00:00:02"}, Decision{}},
		{"weak goes to the strict class, loses exemption", Record{MAC: "00:11:22:33:44:55", Strict: true}, Decision{Class: "jail", Strict: true, Rate: 2, Burst: 4}},
		{"override class", Record{MAC: "02:00:00:00:00:03", Override: &Override{Class: "cams"}}, Decision{Class: "cams", Rate: 10, Burst: 20}},
		{"override un-strict", Record{MAC: "9c:8e:cd:00:00:00", Strict: true, Override: &Override{Strict: &no}}, Decision{Class: "cams", Rate: 10, Burst: 20}},
	}
	for _, tc := range tests {
		if got := c.Decide(&tc.rec); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
