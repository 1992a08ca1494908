#!/usr/bin/env bash
# Cross-builds dnsguard for the OpenWrt package architectures and packs each
# build into an .ipk that OpenWrt's opkg (24.10) installs.
#
#   scripts/build-packages.sh OUTDIR
#
# Environment:
#   VERSION  package version without release (default 0.1.0)
#   RELEASE  package release (default: number of commits on HEAD)
#   ARCHES   space-separated subset of the architectures below (default: all)
#   SOURCE_DATE_EPOCH  timestamp of every packed file (default: HEAD's commit time)
#   GO_TAGS  build tags (default: router, which leaves out what only a
#            workstation needs: the lab, profiling)
#
# Writes OUTDIR/bin/ARCH/dnsguard (stripped static binary) and
# OUTDIR/dnsguard_VERSION-rRELEASE_ARCH.ipk, then prints a size table.
#
# The .ipk layout follows OpenWrt's scripts/ipkg-build: an outer gzip'd tar
# (opkg has no ar reader) holding ./debian-binary, ./data.tar.gz and
# ./control.tar.gz, all GNU-format tars (opkg rejects PAX headers) owned by
# root. The maintainer scripts are what OpenWrt's package-pack.mk generates:
# postinst/prerm call default_postinst/default_prerm from /lib/functions.sh,
# which run the package's uci-defaults and enable/start (or stop/disable) the
# init script.
#
# OpenWrt 25.12 uses apk-tools v3 packages (ADB format, built with
# 'apk mkpkg'). No apk-tools v3 can be installed here (Debian bookworm, the
# Go module proxy and npm have none), so this script packs .ipk only; the
# feed Makefile in openwrt/ gives the .apk when built in a 25.12 SDK.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
export PATH="/usr/local/go/bin:$PATH"

VERSION=${VERSION:-0.1.0}
RELEASE=${RELEASE:-$(git -C "$root" rev-list --count HEAD 2>/dev/null || echo 1)}
pkgver="$VERSION-r$RELEASE"
GO_TAGS=${GO_TAGS-router}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

# OpenWrt package architecture -> Go target (GOARCH and its variant).
declare -A goenv=(
	[mipsel_24kc]="GOARCH=mipsle GOMIPS=softfloat"
	[mips_24kc]="GOARCH=mips GOMIPS=softfloat"
	[arm_cortex-a7_neon-vfpv4]="GOARCH=arm GOARM=7"
	[aarch64_cortex-a53]="GOARCH=arm64"
	[x86_64]="GOARCH=amd64"
)
all_arches="mipsel_24kc mips_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53 x86_64"
arches=${ARCHES:-$all_arches}
for a in $arches; do
	[ -n "${goenv[$a]:-}" ] || { echo "unknown architecture $a (known: $all_arches)" >&2; exit 2; }
done

files="$root/openwrt/files"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# tar_gz DIR FILE: a reproducible GNU tar of DIR's contents, gzip'd without a name or time.
tar_gz() {
	tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
		--mtime="@$SOURCE_DATE_EPOCH" -C "$1" -cf - . | gzip -n -9 >"$2"
}

# stage_data DIR BINARY: the files the package installs.
stage_data() {
	local d=$1
	install -D -m 0755 "$2" "$d/usr/sbin/dnsguard"
	install -D -m 0755 "$files/dnsguard.init" "$d/etc/init.d/dnsguard"
	install -D -m 0644 "$files/dnsguard.config" "$d/etc/config/dnsguard"
	install -D -m 0755 "$files/dnsguard.uci-defaults" "$d/etc/uci-defaults/90-dnsguard"
	install -D -m 0755 "$files/dnsguard.postrm" "$d/etc/uci-defaults/99-dnsguard-restore-dnsmasq"
	install -d -m 0755 "$d/lib/upgrade/keep.d"
	printf '%s\n' /etc/uci-defaults/99-dnsguard-restore-dnsmasq /etc/dnsguard/ >"$d/lib/upgrade/keep.d/dnsguard"
	chmod 0644 "$d/lib/upgrade/keep.d/dnsguard"
}

# stage_control DIR ARCH INSTALLED_SIZE: control file, conffiles, maintainer scripts.
stage_control() {
	local d=$1
	mkdir -p "$d"
	cat >"$d/control" <<EOF
Package: dnsguard
Version: $pkgver
Depends: ca-bundle, firewall4
Source: feeds/packages/net/dnsguard
SourceName: dnsguard
License: ${LICENSE:-Apache-2.0}
Section: net
SourceDateEpoch: $SOURCE_DATE_EPOCH
URL: https://github.com/dnsguard/dnsguard
Maintainer: dnsguard maintainers
Architecture: $2
Installed-Size: $3
Description: DNS guard for home routers: answers the LAN's DNS on port 53 for
 every device, resolves over DoT/DoH, caches, rate-limits retry storms,
 refuses forged or oversized answers and intercepts hard-coded resolvers.
 dnsmasq keeps DHCP and local names on 127.0.0.1:5354.
EOF
	printf '/etc/config/dnsguard\n' >"$d/conffiles"
	# The wrappers OpenWrt's package-pack.mk writes for every package.
	cat >"$d/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null # OpenWrt's, on the router
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
EOF
	cat >"$d/prerm" <<'EOF'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null # OpenWrt's, on the router
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
EOF
	install -m 0755 "$files/dnsguard.postrm" "$d/postrm"
	chmod 0755 "$d/postinst" "$d/prerm"
	chmod 0644 "$d/control" "$d/conffiles"
}

# build_ipk ARCH BINARY: writes OUTDIR/dnsguard_VER_ARCH.ipk.
build_ipk() {
	local arch=$1 w="$work/$1"
	rm -rf "$w"
	mkdir -p "$w/data" "$w/pkg"
	stage_data "$w/data" "$2"
	tar_gz "$w/data" "$w/pkg/data.tar.gz"
	# ipkg-build: Installed-Size is the size of the uncompressed data tar.
	stage_control "$w/control" "$arch" "$(gzip -dc "$w/pkg/data.tar.gz" | wc -c)"
	tar_gz "$w/control" "$w/pkg/control.tar.gz"
	printf '2.0\n' >"$w/pkg/debian-binary"
	tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" \
		-C "$w/pkg" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz |
		gzip -n -9 >"$out/dnsguard_${pkgver}_${arch}.ipk"
}

rows=()
for arch in $arches; do
	bin="$out/bin/$arch/dnsguard"
	mkdir -p "$(dirname "$bin")"
	echo "building $arch (${goenv[$arch]})" >&2
	# shellcheck disable=SC2086 # goenv values are word lists of VAR=value
	(cd "$root" && env CGO_ENABLED=0 GOOS=linux GOTOOLCHAIN=local ${goenv[$arch]} \
		go build -trimpath -buildvcs=false -tags "$GO_TAGS" \
		-ldflags "-s -w -X main.version=$pkgver" -o "$bin" ./cmd/dnsguard)
	build_ipk "$arch" "$bin"
	ipk="$out/dnsguard_${pkgver}_${arch}.ipk"
	rows+=("$arch $(stat -c %s "$bin") $(stat -c %s "$ipk")")
done

mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
printf '%-26s %22s %22s\n' arch "stripped binary" "package (.ipk)"
for r in "${rows[@]}"; do
	read -r a b p <<<"$r"
	printf '%-26s %10s %11s %10s %11s\n' "$a" "$b" "($(mib "$b"))" "$p" "($(mib "$p"))"
done
