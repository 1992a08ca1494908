#!/usr/bin/env bash
# Benchmarks `dnsguard audit` against tshark's field extraction of the same
# DNS fields, on the same capture of at least 500 MB, in one run.
#
# The capture is built in a temporary directory (never committed) by
# concatenating the IoT Sentinel captures (mergecap -a) as many times as it
# takes. Prints each tool's throughput in MB/s, the ratio, and peak RSS.
#
#   scripts/bench-audit.sh [MIN_MB]     (default 500)
#   KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
MIN_MB="${1:-500}"
DATA="${DATA:-../shared/data/iot-sentinel}"

for tool in tshark mergecap /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "bench-audit: needs $tool (Debian: tshark, wireshark-common, time)" >&2; exit 1; }
done

tmp=$(mktemp -d)
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$tmp"' EXIT; fi

go build -o "$tmp/dnsguard" ./cmd/dnsguard

# One pass over the data set, then that pass repeated until large enough.
mapfile -t files < <(find "$DATA" -name '*.pcap' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "bench-audit: no captures under $DATA" >&2; exit 1; }
mergecap -F pcap -a -w "$tmp/pass.pcap" "${files[@]}"
pass=$(stat -c %s "$tmp/pass.pcap")
copies=$(( (MIN_MB * 1000 * 1000 + pass - 1) / pass ))
big="$tmp/big.pcap"
mapfile -t repeated < <(for _ in $(seq "$copies"); do echo "$tmp/pass.pcap"; done)
mergecap -F pcap -a -w "$big" "${repeated[@]}"
rm -f "$tmp/pass.pcap"
size=$(stat -c %s "$big")
mb=$(awk -v s="$size" 'BEGIN{printf "%.1f", s/1e6}')
packets=$(capinfos -c -M "$big" | awk -F: '/Number of packets/{gsub(/ /,"",$2); print $2}')
echo "capture: $big, $mb MB, $packets packets"

# run NAME CMD...: prints seconds and peak RSS (KiB) of CMD, output discarded.
run() {
	local name=$1; shift
	/usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || {
		echo "bench-audit: $name failed:" >&2; tail -5 "$tmp/$name.err" >&2; exit 1; }
	local wall rss
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$tmp/$name.time" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
	rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tmp/$name.time")
	echo "$wall $rss"
}

# Warm the page cache so both tools read from memory.
cat "$big" >/dev/null

read -r a_s a_rss < <(run audit "$tmp/dnsguard" audit --json "$big")
read -r t_s t_rss < <(run tshark tshark -n -r "$big" -T fields \
	-e eth.src -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst -e udp.srcport -e udp.dstport -e tcp.dstport \
	-e dns.id -e dns.flags.response -e dns.qry.name -e dns.qry.type -e dns.resp.ttl -e dns.resp.type)

queries=$(python3 -c 'import json,sys; print(sum(d["queries"] for d in json.load(sys.stdin)["devices"]))' <"$tmp/audit.out")
lines=$(awk -F'\t' '$9 != "" && $10 == "0" && ($7 == "53" || $8 == "53")' "$tmp/tshark.out" | wc -l)
echo "DNS queries to port 53: audit counted $queries, tshark printed $lines"

awk -v mb="$mb" -v as="$a_s" -v ts="$t_s" -v ar="$a_rss" -v tr="$t_rss" 'BEGIN{
	printf "%-8s %10s %10s %14s\n", "tool", "seconds", "MB/s", "peak RSS MiB"
	printf "%-8s %10.2f %10.1f %14.1f\n", "audit", as, mb/as, ar/1024
	printf "%-8s %10.2f %10.1f %14.1f\n", "tshark", ts, mb/ts, tr/1024
	printf "ratio: audit is %.1fx tshark\n", ts/as
}'
