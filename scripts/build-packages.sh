#!/usr/bin/env bash
# Cross-builds dnsguard for the OpenWrt package architectures and packs each
# build as the .ipk OpenWrt 24.10's opkg installs and the .apk OpenWrt
# 25.12's apk installs.
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
#   GO_INLINE  all: inline everywhere (default: only on the query path;
#            the go build flags are scripts/go-build-flags.sh's)
#   APK      apk-tools v3 to pack .apk with ('none': .ipk only). Default: an
#            apk v3 on PATH, else OPENWRT_ROOT_OUT/prefix/bin/apk (default
#            OPENWRT_ROOT_OUT /var/tmp/openwrt-root), else built there with
#            shared/tools/openwrt-root/build.sh found beside the checkout.
#
# One Go build serves every package architecture of its GOARCH/GOARM/GOMIPS
# variant (static, CGO-free). Writes OUTDIR/bin/ARCH/dnsguard (stripped),
# OUTDIR/dnsguard_VERSION-rRELEASE_ARCH.ipk and
# OUTDIR/ARCH/dnsguard-VERSION-rRELEASE.apk (apk names carry no
# architecture), then prints the footprint table.
#
# The .ipk layout follows OpenWrt's scripts/ipkg-build: an outer gzip'd tar
# (opkg has no ar reader) holding ./debian-binary, ./data.tar.gz and
# ./control.tar.gz, all GNU-format tars (opkg rejects PAX headers) owned by
# root; Installed-Size is the size of the uncompressed data tar, as
# ipkg-build computes it. The maintainer scripts are what OpenWrt's
# package-pack.mk generates: postinst/prerm call default_postinst/
# default_prerm from /lib/functions.sh, which add the package's user, run
# its uci-defaults and enable/start (or stop/disable) the init script.
#
# The .apk is what package-pack.mk makes with CONFIG_USE_APK: the same
# files plus lib/apk/packages/dnsguard.{list,conffiles,conffiles_static,
# rusers}, the scripts post-install, post-upgrade, pre-deinstall and
# post-deinstall, packed with 'apk mkpkg'. Run as root so the files are
# owned by root (OpenWrt runs it under fakeroot).
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

# OpenWrt package architecture -> Go build variant (golang-values.mk's
# mapping: MIPS without FPU -> softfloat; ARM: no FPU -> GOARM=5, a VFP/NEON
# suffix -> 7; arm64 cores -> v8.0; x86: GOAMD64=v1, GO386=sse2).
declare -A variant=(
	[mipsel_24kc]=mipsle [mipsel_74kc]=mipsle
	[mips_24kc]=mips
	[arm_cortex-a7]=armv5 [arm_cortex-a9]=armv5
	[arm_cortex-a7_neon-vfpv4]=armv7 [arm_cortex-a9_vfpv3-d16]=armv7
	[arm_cortex-a15_neon-vfpv4]=armv7
	[aarch64_cortex-a53]=arm64 [aarch64_cortex-a72]=arm64 [aarch64_generic]=arm64
	[x86_64]=amd64
	[i386_pentium4]=386
)
declare -A goenv=(
	[mipsle]="GOARCH=mipsle GOMIPS=softfloat"
	[mips]="GOARCH=mips GOMIPS=softfloat"
	[armv5]="GOARCH=arm GOARM=5"
	[armv7]="GOARCH=arm GOARM=7"
	[arm64]="GOARCH=arm64 GOARM64=v8.0"
	[amd64]="GOARCH=amd64 GOAMD64=v1"
	[386]="GOARCH=386 GO386=sse2"
)
all_arches="mipsel_24kc mipsel_74kc mips_24kc arm_cortex-a7 arm_cortex-a7_neon-vfpv4 \
	arm_cortex-a9 arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4 aarch64_cortex-a53 \
	aarch64_cortex-a72 aarch64_generic x86_64 i386_pentium4"
arches=${ARCHES:-$all_arches}
for a in $arches; do
	[ -n "${variant[$a]:-}" ] || { echo "unknown architecture $a (known: ${!variant[*]})" >&2; exit 2; }
done

# find_apk: apk-tools v3, from APK, PATH, the openwrt-root tools' build
# directory, or built there from shared/tools/openwrt-root beside the checkout.
find_apk() {
	local built=${OPENWRT_ROOT_OUT:-/var/tmp/openwrt-root} dir tool=
	if [ -n "${APK:-}" ]; then
		echo "$APK"
		return
	fi
	if command -v apk >/dev/null && apk --version 2>/dev/null | grep -q 'apk-tools 3'; then
		command -v apk
		return
	fi
	if [ -x "$built/prefix/bin/apk" ]; then
		echo "$built/prefix/bin/apk"
		return
	fi
	dir=$root
	while [ "$dir" != / ]; do
		if [ -f "$dir/shared/tools/openwrt-root/build.sh" ]; then
			tool=$dir/shared/tools/openwrt-root
			break
		fi
		dir=$(dirname "$dir")
	done
	if [ -n "$tool" ]; then
		echo "building apk-tools with $tool/build.sh into $built" >&2
		bash "$tool/build.sh" "$built" >&2
		echo "$built/prefix/bin/apk"
		return
	fi
	echo "no apk-tools v3 (apk mkpkg) found: set APK=/path/to/apk, or APK=none for .ipk only" >&2
	return 1
}
apk=$(find_apk)
if [ "$apk" != none ]; then
	"$apk" --version 2>/dev/null | grep -q 'apk-tools 3' || { echo "$apk is not apk-tools v3" >&2; exit 1; }
	[ "$(id -u)" = 0 ] || echo "warning: not root; the .apk records the files' owner ($(id -un)), not root" >&2
fi

files="$root/openwrt/files"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

depends="ca-bundle firewall4 kmod-nfnetlink-log"
rusers="dnsguard=353:dnsguard=353"
description="DNS guard for home routers: answers the LAN's DNS on port 53 for
 every device, resolves over DoT/DoH, caches, rate-limits retry storms,
 refuses forged or oversized answers and intercepts hard-coded resolvers.
 dnsmasq keeps DHCP and local names on 127.0.0.1:5354."

# tar_gz DIR FILE: a reproducible GNU tar of DIR's contents, gzip'd without a name or time.
tar_gz() {
	tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
		--mtime="@$SOURCE_DATE_EPOCH" -C "$1" -cf - . | gzip -n -9 >"$2"
}

# stage_data DIR BINARY: the files the package installs (Package/dnsguard/install).
stage_data() {
	local d=$1
	install -D -m 0755 "$2" "$d/usr/sbin/dnsguard"
	install -D -m 0755 "$files/dnsguard.init" "$d/etc/init.d/dnsguard"
	install -D -m 0755 "$files/dnsguard.failsafe" "$d/usr/libexec/dnsguard-failsafe"
	install -D -m 0755 "$files/dnsguard.ntp-hotplug" "$d/etc/hotplug.d/ntp/25-dnsguard"
	install -D -m 0644 "$files/dnsguard.capabilities" "$d/etc/capabilities/dnsguard.json"
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
Depends: ${depends// /, }
Source: feeds/packages/net/dnsguard
SourceName: dnsguard
License: ${LICENSE:-Apache-2.0}
LicenseFiles: LICENSE
Section: net
Require-User: $rusers
SourceDateEpoch: $SOURCE_DATE_EPOCH
URL: https://github.com/dnsguard/dnsguard
Maintainer: dnsguard maintainers
Architecture: $2
Installed-Size: $3
Description: $description
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
	local arch=$1 w="$work/$1/ipk"
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

# build_apk ARCH BINARY: writes OUTDIR/ARCH/dnsguard-VER.apk as package-pack.mk does.
build_apk() {
	local arch=$1 w="$work/$1/apk" idir pkgs f
	rm -rf "$w"
	idir=$w/idir
	pkgs=$idir/lib/apk/packages
	mkdir -p "$idir" "$w/scripts"
	stage_data "$idir" "$2"
	mkdir -p "$pkgs"
	echo "$rusers" >"$pkgs/dnsguard.rusers"
	# the list is made before the conffiles files are added
	(cd "$idir" && find . -type f,l -printf "/%P\n" | LC_ALL=C sort >"$w/list")
	mv "$w/list" "$pkgs/dnsguard.list"
	printf '/etc/config/dnsguard\n' >"$pkgs/dnsguard.conffiles"
	while read -r f; do
		if [ -f "$idir/$f" ]; then echo "$f $(sha256sum <"$idir/$f" | cut -d' ' -f1)"; fi
	done <"$pkgs/dnsguard.conffiles" >"$pkgs/dnsguard.conffiles_static"
	chmod 0644 "$pkgs"/*
	# The scripts package-pack.mk writes (no postinst-pkg/prerm-pkg here).
	cat >"$w/scripts/post-install" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
export root="${IPKG_INSTROOT}"
export pkgname="dnsguard"
add_group_and_user
default_postinst
EOF
	{
		echo '#!/bin/sh'
		echo 'export PKG_UPGRADE=1'
		sed '/^\s*#!/d' "$w/scripts/post-install"
	} >"$w/scripts/post-upgrade"
	cat >"$w/scripts/pre-deinstall" <<'EOF'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
export root="${IPKG_INSTROOT}"
export pkgname="dnsguard"
default_prerm
EOF
	cp "$files/dnsguard.postrm" "$w/scripts/post-deinstall"
	chmod 0755 "$w/scripts"/*
	mkdir -p "$out/$arch"
	"$apk" mkpkg \
		--info "name:dnsguard" --info "version:$pkgver" \
		--info "description:$(echo "$description" | tr -s '\n ' '  ' | sed 's/ $//')" \
		--info "arch:$arch" --info "license:${LICENSE:-Apache-2.0}" \
		--info "origin:feeds/packages/net/dnsguard" \
		--info "url:https://github.com/dnsguard/dnsguard" \
		--info "maintainer:dnsguard maintainers" \
		--script "post-install:$w/scripts/post-install" \
		--script "post-upgrade:$w/scripts/post-upgrade" \
		--script "pre-deinstall:$w/scripts/pre-deinstall" \
		--script "post-deinstall:$w/scripts/post-deinstall" \
		--info "depends:$depends" \
		--files "$idir" --output "$out/$arch/dnsguard-$pkgver.apk"
}

# The go build flags (trimmed paths, stripped, -tags GO_TAGS, inlining only
# on the query path) are in go-build-flags.sh, which the benchmark and the
# memory measurement share.
mapfile -t goflags < <(GO_TAGS=$GO_TAGS bash "$root/scripts/go-build-flags.sh" "-X main.version=$pkgver" "-X main.buildTime=$SOURCE_DATE_EPOCH")

# One Go build per variant, shared by the architectures of that variant.
declare -A built=()
rows=()
for arch in $arches; do
	v=${variant[$arch]}
	vbin="$out/bin/go-$v/dnsguard"
	if [ -z "${built[$v]:-}" ]; then
		mkdir -p "$(dirname "$vbin")"
		echo "building $v (${goenv[$v]}) for $arch" >&2
		# shellcheck disable=SC2086 # goenv values are word lists of VAR=value
		(cd "$root" && env CGO_ENABLED=0 GOOS=linux GOTOOLCHAIN=local ${goenv[$v]} \
			go build "${goflags[@]}" -o "$vbin" ./cmd/dnsguard)
		built[$v]=1
	fi
	bin="$out/bin/$arch/dnsguard"
	mkdir -p "$(dirname "$bin")"
	ln -f "$vbin" "$bin" 2>/dev/null || cp "$vbin" "$bin"
	build_ipk "$arch" "$bin"
	ipk="$out/dnsguard_${pkgver}_${arch}.ipk"
	isize=$(tar -xzOf "$ipk" ./control.tar.gz | tar -xzOf - ./control | sed -n 's/^Installed-Size: //p')
	apksize=-
	if [ "$apk" != none ]; then
		build_apk "$arch" "$bin"
		apksize=$(stat -c %s "$out/$arch/dnsguard-$pkgver.apk")
	fi
	rows+=("$arch $v $(stat -c %s "$bin") $(stat -c %s "$ipk") $apksize $isize")
done

mib() { if [ "$1" = - ]; then echo -; else awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; fi; }
echo "footprint in bytes (MiB); Installed-Size is what opkg compares with the free space of /overlay"
printf '%-26s %-6s %9s %6s %9s %6s %9s %6s %9s %6s\n' arch go binary MiB .ipk MiB .apk MiB inst-size MiB
for r in "${rows[@]}"; do
	read -r a v b p k i <<<"$r"
	printf '%-26s %-6s %9s %6s %9s %6s %9s %6s %9s %6s\n' "$a" "$v" "$b" "$(mib "$b")" "$p" "$(mib "$p")" "$k" "$(mib "$k")" "$i" "$(mib "$i")"
done
