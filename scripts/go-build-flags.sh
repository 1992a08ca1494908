#!/usr/bin/env bash
# go-build-flags.sh: the `go build` flags the router's binary is built
# with, one per line, for scripts/build-packages.sh (which ships it),
# scripts/bench.sh and the memory measurement (cmd/dnsguard
# TestRouterMemory50Devices), so what they measure is what a router runs.
#
#   scripts/go-build-flags.sh [LDFLAG...]
#
# LDFLAGs (e.g. -X main.version=...) are added after -s -w.
# Environment: GO_TAGS build tags (default router: leaves out what only a
# workstation needs, the lab and profiling; 'router,pprof' for profiles),
# GO_INLINE=all builds with inlining everywhere.
#
# Inlining: kept where the query path runs (the guard's own packages,
# miekg/dns, the runtime, crypto for DoT/DoH, the poller and syscalls,
# netip) and turned off elsewhere (fmt, encoding/json, bbolt, nftables,
# slog..., and the guard's packages off the query path), which takes about 0.6 MB off the mipsel binary (8847553 ->
# 8257729 bytes, under the 8 MiB budget) at no measured cost on the hit
# path (BenchmarkUDPHit, BenchmarkChainHit built both ways).
set -euo pipefail

echo -trimpath
echo -buildvcs=false
echo "-tags=${GO_TAGS-router}"
if [ "${GO_INLINE:-}" != all ]; then
	echo -gcflags=all=-l
	for p in github.com/dnsguard/dnsguard/... github.com/miekg/dns runtime 'crypto/...' internal/poll syscall net/netip; do
		echo "-gcflags=$p="
	done
	# ...but not in the guard's packages that no query runs through
	# (configuration, audit, the lab, the admin's tables): 25 kB of text and 12 kB of rodata off the mipsel
	# binary, which had just grown over its 8 MiB budget (8388801 ->
	# 8323265 bytes: the text and rodata segments each a 64 kB step
	# down). policy is among them: a query calls only TermsOf there.
	# intercept and capture are not: every query of a LAN device is read
	# from the NFLOG group and parsed there (inlined, the binary is the
	# same size: 8323265 bytes).
	for p in policy guard/audit guard/emulate guard/minihttp guard/tablei guard/certs guard/lab; do
		echo "-gcflags=github.com/dnsguard/dnsguard/$p=-l"
	done
fi
echo "-ldflags=-s -w${*:+ $*}"
