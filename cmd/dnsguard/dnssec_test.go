package main

import (
	"testing"
	"time"
)

// TestReleaseTime: -X main.buildTime in Unix seconds or RFC 3339.
func TestReleaseTime(t *testing.T) {
	defer func(v string) { buildTime = v }(buildTime)
	for _, v := range []string{"1780000000", "2026-05-28T20:26:40Z"} {
		buildTime = v
		if got, reason := releaseTime(); !got.Equal(time.Unix(1780000000, 0)) || reason != "build time" {
			t.Errorf("buildTime %q: %v %q", v, got, reason)
		}
	}
}
