#!/usr/bin/env bash
# Installs, on Debian or Ubuntu (as root), every real part the tests start:
# resolvers to compare with and to stand in for upstreams (unbound,
# dnsmasq, dnsdist, dnsperf), nftables and iproute2 for the namespace
# testbeds, dig/kdig/ldns, qemu-user for the cross-built packages,
# tshark and chromium for the capture and report tests, promtool; then
# OpenWrt's package tools (opkg, apk-tools 3, uci, jshn) from
# shared/tools/openwrt-root beside the checkout, when it is there.
# .ci/run runs it; scripts/test.sh runs it when it finds parts missing and
# runs as root. It prints, as its last line, the environment the tests
# need to find the OpenWrt tools (eval it, or let test.sh do so).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "scripts/setup.sh installs Debian packages: run it as root on Debian or Ubuntu" >&2
	exit 1
fi
apt-get update >&2
apt-get install -y --no-install-recommends \
	unbound dnsmasq-base dnsdist dnsperf \
	nftables iproute2 dnsutils knot-dnsutils ldnsutils \
	qemu-user-static binutils shellcheck \
	tshark chromium ca-certificates \
	prometheus python3-prometheus-client >&2
# Debian starts services on install; the tests start their own instances
# (prometheus is there for promtool, its server is not needed).
# Without systemd (a container) the package's init script started them:
# stop the instances on the system's configuration only, never those
# that name their own (-c/-C: the tests', scripts/bench.sh's, which may
# be running on a shared machine).
systemctl stop unbound dnsdist prometheus >/dev/null 2>&1 || true
stop_system_instances() { # NAME CONFIG-FLAG
	local pid args
	for pid in $(pgrep -x "$1"); do
		args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
		case " $args " in
		*" $2 "*) ;;
		*) kill "$pid" 2>/dev/null || true ;;
		esac
	done
}
stop_system_instances unbound -c
stop_system_instances dnsdist -C

# OpenWrt's package tools: scripts/build-packages.sh packs .apk with its
# apk, scripts/pkgtest installs the packages in the OpenWrt-like root it
# makes. Built once into /var/tmp (build.sh skips what is already built).
tool=$(bash scripts/openwrt-tool.sh)
if [ -n "$tool" ]; then
	# shellcheck disable=SC2046 # a word list of Debian packages
	apt-get install -y --no-install-recommends $(bash "$tool/build.sh" --deps) >&2
	bash "$tool/build.sh" /var/tmp/openwrt-root >&2
	echo "export OPENWRT_ROOT_TOOL=$tool OPENWRT_ROOT_OUT=/var/tmp/openwrt-root"
else
	echo "no shared/tools/openwrt-root beside $(pwd): the OpenWrt root and .apk tests will skip" >&2
	echo ":"
fi
