package main

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/dnsguard/dnsguard/policy"
)

func TestRuntimeLimits(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	runtime.GOMAXPROCS(3)
	debug.SetMemoryLimit(1 << 40)
	runtimeLimits(&policy.Config{CPUs: 1, MemoryLimit: 24 << 20}, getenv)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("cpus 1: GOMAXPROCS %d", n)
	}
	if m := debug.SetMemoryLimit(-1); m != 24<<20 {
		t.Errorf("memory_limit 24M: limit %d", m)
	}

	// 0 leaves the runtime's own values.
	runtime.GOMAXPROCS(3)
	debug.SetMemoryLimit(1 << 40)
	runtimeLimits(&policy.Config{}, getenv)
	if n, m := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1); n != 3 || m != 1<<40 {
		t.Errorf("zeros: GOMAXPROCS %d, limit %d", n, m)
	}

	// The environment wins.
	env["GOMAXPROCS"], env["GOMEMLIMIT"] = "3", "1TiB"
	runtimeLimits(&policy.Config{CPUs: 1, MemoryLimit: 24 << 20}, getenv)
	if n, m := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1); n != 3 || m != 1<<40 {
		t.Errorf("environment set: GOMAXPROCS %d, limit %d", n, m)
	}
}
