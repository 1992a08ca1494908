#!/usr/bin/env bash
# Prints the directory of shared/tools/openwrt-root found beside the
# checkout (walking up from it), or nothing.
set -euo pipefail
dir=$(cd "$(dirname "$0")/.." && pwd)
while [ "$dir" != / ]; do
	if [ -f "$dir/shared/tools/openwrt-root/build.sh" ]; then
		echo "$dir/shared/tools/openwrt-root"
		exit 0
	fi
	dir=$(dirname "$dir")
done
