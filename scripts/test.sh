#!/usr/bin/env bash
# Runs every test of dnsguard: format and vet checks, unit, table and
# end-to-end tests, then each fuzz target briefly (FUZZTIME, default 10s).
# End-to-end tests need root and the Debian packages .ci/run installs; run
# outside CI they skip what is missing, under DNSGUARD_CI=1 they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
FUZZTIME="${FUZZTIME:-10s}"

unformatted=$(gofmt -l cmd guard policy scripts 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
if command -v shellcheck >/dev/null; then
	shellcheck scripts/*.sh .ci/run
elif [ "${DNSGUARD_CI:-}" = 1 ]; then
	echo "shellcheck missing"; exit 1
fi
go test -count=1 -timeout 30m "$@" ./...

# Every fuzz target, briefly, seeded from testdata and the shared corpus.
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($FUZZTIME)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
	done
done
echo "all tests passed"
