#!/usr/bin/env bash
# bench.sh: dnsguard against dnsmasq, unbound and dnsdist, on one machine,
# in one run, with dnsperf (issue 2).
#
#   scripts/bench.sh             full benchmark, prints one table
#   scripts/bench.sh --profile   CPU profiles of the guard under hit, miss and DoT
#                                miss load
#
# Every server under test has a cache and forwards to the same local upstream:
# an unbound instance configured as an authoritative stand-in (local zones
# only, no recursion, no cache of its own to warm), so each server's misses
# cost the same on the far side. The upstream and dnsperf share one core
# (BENCH_CLIENT_CPU); the server under test is pinned alone to another
# (BENCH_SERVER_CPU). All configs live in a temp dir; no system service is
# touched; every process started here is stopped on exit.
#
# Per server and run (medians of BENCH_RUNS runs are reported):
#   hit qps       dnsperf over BENCH_HIT_NAMES names after a warm-up
#   miss qps      dnsperf over unique names (never repeated) answered NXDOMAIN
#   cpu/hit, cpu/miss  server utime+stime (/proc/PID/stat) / queries answered,
#                 also shown split into user and system time
#   cpu/dot miss, cpu/doh miss  the same for misses when the server forwards
#                 over DNS over TLS / DNS over HTTPS to the same upstream, which
#                 serves both itself (unbound tls-port, https-port); unbound
#                 forwards with forward-tls-upstream (it has no DoH client),
#                 dnsdist uses a DoT and a DoH backend, dnsmasq has neither ("-")
#   hit avg, p99  latency under full hit load (separate dnsperf -v pass)
#   2k avg, p99   latency at a steady 2,000 queries/s (-Q 2000), hits and misses;
#                 the hits measured with every server up at once, each asked in
#                 turn for a second at a time (steady_hits), so that the
#                 machine's drift over minutes falls on all servers alike
#   rss, hwm      VmRSS and VmHWM of a fresh instance after 100,000 unique names
#   noise         CPU time on the server's core not spent by the server
#
# Environment:
#   BENCH_RUNS=5  BENCH_SECONDS=5  BENCH_SERVERS="dnsguard dnsmasq unbound dnsdist"
#   BENCH_SERVER_CPU=0  BENCH_CLIENT_CPU=1  BENCH_PORT=15300 (upstream; +1 server,
#                        +2 pprof, +3 upstream DoT, +4 upstream DoH, +5... the
#                        servers of the 2k hit turns)
#   BENCH_TLS=1          measure the DoT/DoH misses (0: skip, columns print "-")
#   BENCH_PHASES="hit latency miss mem tls"   the phases measured (others print
#                        "-"); "latency" alone judges a latency change over many
#                        interleaved runs in a fraction of the time
#   BENCH_CLIENTS=4  BENCH_OUTSTANDING=100   dnsperf -c and -q
#   BENCH_CACHE_ENTRIES=20000  BENCH_CACHE_BYTES=8M   every server's cache size
#                               (the guard's shipped defaults; peers sized alike)
#   BENCH_HIT_NAMES=100  BENCH_MEM_NAMES=100000
#   BENCH_SCHED=rr       how servers, upstream and dnsperf are scheduled, so other
#                        work on a shared machine disturbs the figures less:
#                        rr (SCHED_RR priority 10, needs root), nice
#                        (BENCH_NICE=-10), none
#   BENCH_MAX_LOST=0     lost queries tolerated per phase before failing
#   BENCH_KEEP=1         keep the work dir (configs, dnsperf logs, results)
#   BENCH_GUARD_BIN=FILE use this guard binary instead of building the tree as
#                        the router's (scripts/go-build-flags.sh; for --profile,
#                        GO_TAGS=router,pprof)
#   BENCH_OUT=DIR        where --profile writes (default /tmp/dnsguard-profile)
#   BENCH_RESULTS=FILE   per-run figures (default /tmp/dnsguard-bench-results.tsv)
#
# Needs (Debian): golang (or Go in /usr/local/go), dnsperf, dnsmasq-base,
# unbound, dnsdist, util-linux (taskset, chrt), openssl (the upstream's TLS
# certificate); curl for --profile (linux-perf when the guard has no --pprof flag).
set -euo pipefail

RUNS=${BENCH_RUNS:-5}
SECONDS_PER_PHASE=${BENCH_SECONDS:-5}
SERVERS=${BENCH_SERVERS:-dnsguard dnsmasq unbound dnsdist}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
UP_PORT=${BENCH_PORT:-15300}
SRV_PORT=$((UP_PORT + 1))
UP_DOT_PORT=$((UP_PORT + 3))
UP_DOH_PORT=$((UP_PORT + 4))
TLS=${BENCH_TLS:-1}
CLIENTS=${BENCH_CLIENTS:-4}
OUTSTANDING=${BENCH_OUTSTANDING:-100}
CACHE_ENTRIES=${BENCH_CACHE_ENTRIES:-20000}
CACHE_BYTES=${BENCH_CACHE_BYTES:-8M}
HIT_NAMES=${BENCH_HIT_NAMES:-100}
MEM_NAMES=${BENCH_MEM_NAMES:-100000}
MAX_LOST=${BENCH_MAX_LOST:-0}
SCHED=${BENCH_SCHED:-rr}
NICE=${BENCH_NICE:--10}
PHASES=" ${BENCH_PHASES:-hit latency miss mem tls} "
STEADY_QPS=2000
PROFILE=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

for arg in "$@"; do
	case $arg in
	--profile) PROFILE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench.sh: unknown argument $arg" >&2; usage >&2; exit 2 ;;
	esac
done

die() { echo "bench.sh: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $SECONDS_PER_PHASE =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
case " $SERVERS " in *" dnsguard "*) ;; *) die "BENCH_SERVERS must include dnsguard" ;; esac
for p in $PHASES; do
	case $p in hit | latency | miss | mem | tls) ;; *) die "unknown phase $p in BENCH_PHASES (hit latency miss mem tls)" ;; esac
done
phase() { [[ $PHASES == *" $1 "* ]]; }
phase tls || TLS=0

export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
need=(go dnsperf unbound taskset chrt awk sort)
((TLS)) && need+=(openssl)
for s in $SERVERS; do
	case $s in
	dnsguard | unbound) ;;
	dnsmasq | dnsdist) need+=("$s") ;;
	*) die "unknown server $s (dnsguard, dnsmasq, unbound, dnsdist)" ;;
	esac
done
for t in "${need[@]}"; do
	command -v "$t" >/dev/null || die "$t not found (apt-get install dnsperf dnsmasq-base unbound dnsdist util-linux)"
done
ncpu=$(nproc --all)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "CPUs $SERVER_CPU/$CLIENT_CPU not present ($ncpu CPUs)"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "server and client must be on different CPUs"

PIN_SERVER=(taskset -c "$SERVER_CPU")
PIN_CLIENT=(taskset -c "$CLIENT_CPU")
case $SCHED in
rr)
	chrt -r 10 true 2>/dev/null || die "chrt -r 10 failed (not root?); try BENCH_SCHED=nice"
	PIN_SERVER=(chrt -r 10 "${PIN_SERVER[@]}")
	PIN_CLIENT=(chrt -r 10 "${PIN_CLIENT[@]}")
	;;
nice)
	[[ $NICE =~ ^-?[0-9]+$ ]] || die "BENCH_NICE must be an integer"
	PIN_SERVER=(nice -n "$NICE" "${PIN_SERVER[@]}")
	PIN_CLIENT=(nice -n "$NICE" "${PIN_CLIENT[@]}")
	;;
none) ;;
*) die "BENCH_SCHED must be rr, nice or none" ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/dnsguard-bench.XXXXXX)
mkdir -p "$WORK/logs"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
PIDS=()
CLK_TCK=$(getconf CLK_TCK)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
		echo "bench.sh: work dir kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# ---- build -------------------------------------------------------------

GUARD=$WORK/dnsguard
if [[ -n ${BENCH_GUARD_BIN:-} ]]; then
	log "using prebuilt guard $BENCH_GUARD_BIN"
	cp "$BENCH_GUARD_BIN" "$GUARD"
else
	# Built as the router's binary is (go-build-flags.sh: -tags router,
	# stripped, inlining only on the query path), so its CPU and resident
	# memory are the shipped binary's. --profile needs run --pprof, which
	# only -tags pprof builds serve.
	tags=router
	((PROFILE)) && tags=router,pprof
	mapfile -t goflags < <(GO_TAGS=$tags bash "$ROOT/scripts/go-build-flags.sh")
	log "building dnsguard (linux/amd64, ${goflags[*]})"
	(cd "$ROOT" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build "${goflags[@]}" -o "$GUARD" ./cmd/dnsguard)
fi

# ---- query files -------------------------------------------------------

# Hit names are answered A by the upstream with a long TTL; miss names are
# unique and answered NXDOMAIN (with SOA, so negative caching applies);
# memory names fall under a redirect zone answering A for any label.
awk -v n="$HIT_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "h%d.hit.bench A\n", i }' >"$WORK/hit.txt"
MISS_NAMES=$((150000 * SECONDS_PER_PHASE))
awk -v n="$MISS_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "u%07d.miss.bench A\n", i }' >"$WORK/miss.txt"
awk -v n=$((STEADY_QPS * SECONDS_PER_PHASE + STEADY_QPS)) 'BEGIN { for (i = 1; i <= n; i++) printf "s%07d.miss.bench A\n", i }' >"$WORK/steady-miss.txt"
awk -v n="$MEM_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "m%06d.mem.bench A\n", i }' >"$WORK/mem.txt"
# DoT and DoH misses: names of their own, never asked before
TLS_MISS_NAMES=$((100000 * SECONDS_PER_PHASE))
awk -v n="$TLS_MISS_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "t%07d.miss.bench A\n", i }' >"$WORK/dot-miss.txt"
awk -v n="$TLS_MISS_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "w%07d.miss.bench A\n", i }' >"$WORK/doh-miss.txt"

# ---- configs -----------------------------------------------------------

bytes() { # 8M -> 8388608
	local v=$1
	case $v in
	*[kK]) echo $((${v%?} * 1024)) ;;
	*[mM]) echo $((${v%?} * 1024 * 1024)) ;;
	*[gG]) echo $((${v%?} * 1024 * 1024 * 1024)) ;;
	*) echo "$v" ;;
	esac
}
CACHE_BYTES_N=$(bytes "$CACHE_BYTES")

# The upstream's certificate for DoT and DoH: self-signed, for the name
# upstream.bench and the address 127.0.0.1; every server trusts it.
TLS_NAME=upstream.bench
if ((TLS)); then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=$TLS_NAME" -addext "subjectAltName=DNS:$TLS_NAME,IP:127.0.0.1" \
		-keyout "$WORK/upstream.key" -out "$WORK/upstream.pem" >"$WORK/logs/openssl.log" 2>&1 ||
		{ cat "$WORK/logs/openssl.log" >&2; die "openssl could not make the upstream certificate"; }
fi

{
	cat <<EOF
# upstream stand-in: authoritative local zones only, never recurses
server:
	interface: 127.0.0.1@$UP_PORT
	port: $UP_PORT
	num-threads: 1
	do-daemonize: no
	chroot: ""
	username: ""
	pidfile: ""
	directory: "$WORK"
	use-syslog: no
	logfile: ""
	verbosity: 0
	do-ip6: no
	access-control: 127.0.0.0/8 allow
	module-config: "iterator"
	num-queries-per-thread: 4096
	local-zone: "." static
	local-zone: "hit.bench." static
	local-data: "hit.bench. 3600 IN SOA ns.hit.bench. host.hit.bench. 1 3600 600 86400 3600"
	local-zone: "miss.bench." static
	local-data: "miss.bench. 3600 IN SOA ns.miss.bench. host.miss.bench. 1 3600 600 86400 3600"
	local-zone: "mem.bench." redirect
	local-data: "mem.bench. 3600 IN A 11.0.1.1"
EOF
	if ((TLS)); then
		cat <<EOF
	interface: 127.0.0.1@$UP_DOT_PORT
	interface: 127.0.0.1@$UP_DOH_PORT
	tls-port: $UP_DOT_PORT
	https-port: $UP_DOH_PORT
	http-endpoint: "/dns-query"
	tls-service-key: "$WORK/upstream.key"
	tls-service-pem: "$WORK/upstream.pem"
	incoming-num-tcp: 256
	http-max-streams: 1000
EOF
	fi
	awk -v n="$HIT_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "\tlocal-data: \"h%d.hit.bench. 3600 IN A 11.0.%d.%d\"\n", i, 2 + int(i / 250), 1 + i % 250 }'
	printf 'remote-control:\n\tcontrol-enable: no\n'
} >"$WORK/upstream.conf"

# The guard: the shipped cache defaults; limits lifted (dnsperf is one
# "device" sending tens of thousands of queries a second); state in WORK.
cat >"$WORK/dnsguard.conf" <<EOF
config dnsguard 'main'
	option log_level 'warn'
	option state_file '$WORK/dnsguard-state.db'
	option upstream_timeout '600ms'
	# The unbound upstream serves unsigned local-data (*.bench) and no
	# root chain, and dnsmasq and unbound do not validate here either.
	option dnssec '0'

config cache
	option max_entries '$CACHE_ENTRIES'
	option max_bytes '$CACHE_BYTES'
	option min_ttl '30s'
	option max_ttl '7d'
	option neg_max_ttl '1h'

config limits
	option device_rate '10000000'
	option device_burst '10000000'
EOF

cat >"$WORK/dnsmasq.conf" <<EOF
port=$SRV_PORT
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
server=127.0.0.1#$UP_PORT
cache-size=$CACHE_ENTRIES
dns-forward-max=4096
pid-file=
log-facility=$WORK/logs/dnsmasq-daemon.log
EOF

cat >"$WORK/unbound.conf" <<EOF
server:
	interface: 127.0.0.1@$SRV_PORT
	port: $SRV_PORT
	num-threads: 1
	do-daemonize: no
	chroot: ""
	username: ""
	pidfile: ""
	directory: "$WORK"
	use-syslog: no
	logfile: ""
	verbosity: 0
	do-ip6: no
	access-control: 127.0.0.0/8 allow
	module-config: "iterator"
	do-not-query-localhost: no
	qname-minimisation: no
	num-queries-per-thread: 4096
	msg-cache-size: $((CACHE_BYTES_N / 2))
	rrset-cache-size: $((CACHE_BYTES_N / 2))
forward-zone:
	name: "."
	forward-addr: 127.0.0.1@$UP_PORT
remote-control:
	control-enable: no
EOF

# dnsdist_conf FILE BACKEND: dnsdist's config with one backend.
dnsdist_conf() {
	cat >"$1" <<EOF
setLocal("127.0.0.1:$SRV_PORT")
newServer({$2, checkName="h1.hit.bench.", checkInterval=1})
pc = newPacketCache($CACHE_ENTRIES, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60, dontAge=false})
getPool(""):setCache(pc)
setSecurityPollSuffix("")
EOF
}
dnsdist_conf "$WORK/dnsdist.conf" "address=\"127.0.0.1:$UP_PORT\""
dnsdist_tls="tls=\"openssl\", subjectName=\"$TLS_NAME\", caStore=\"$WORK/upstream.pem\", validateCertificates=true"
dnsdist_conf "$WORK/dnsdist-dot.conf" "address=\"127.0.0.1:$UP_DOT_PORT\", $dnsdist_tls"
dnsdist_conf "$WORK/dnsdist-doh.conf" "address=\"127.0.0.1:$UP_DOH_PORT\", $dnsdist_tls, dohPath=\"/dns-query\""

# unbound forwarding over TLS (it has no DoH client)
sed -e "s|^\tforward-addr: .*|\tforward-addr: 127.0.0.1@$UP_DOT_PORT#$TLS_NAME\n\tforward-tls-upstream: yes|" \
	-e "s|^\tnum-queries-per-thread: 4096|&\n\ttls-cert-bundle: \"$WORK/upstream.pem\"|" \
	"$WORK/unbound.conf" >"$WORK/unbound-dot.conf"

# ---- processes ---------------------------------------------------------

# start_server NAME TAG [do53|dot|doh [PORT]]: starts a server pinned to
# SERVER_CPU, listening on PORT (default SRV_PORT) and forwarding to the
# upstream over the given transport; sets SRV_PID and SRV_AT (the port
# dnsperf_phase asks).
SRV_PID=
SRV_AT=$SRV_PORT
start_server() {
	local name=$1 tag=$2 up=${3:-do53} port=${4:-$SRV_PORT} err=$WORK/logs/$1.$2.stderr
	local -a cmd
	local sfx='' conf
	[[ $up == do53 ]] || sfx=-$up
	case $name in
	dnsguard)
		local url=udp://127.0.0.1:$UP_PORT
		case $up in
		dot) url="tls://127.0.0.1:$UP_DOT_PORT?sni=$TLS_NAME" ;;
		doh) url="https://$TLS_NAME:$UP_DOH_PORT/dns-query?ip=127.0.0.1" ;;
		esac
		cmd=("$GUARD" run --config "$WORK/dnsguard.conf" --listen "127.0.0.1:$port" --upstream "$url" "${GUARD_EXTRA[@]}")
		[[ $up == do53 ]] || cmd+=(--upstream-ca "$WORK/upstream.pem")
		;;
	*)
		# the peer's config, on PORT if not the usual one
		conf=$WORK/$name$sfx.conf
		if ((port != SRV_PORT)); then
			sed -E "s/([@:=] ?)$SRV_PORT\b/\1$port/g" "$conf" >"$WORK/$name$sfx.$port.conf"
			conf=$WORK/$name$sfx.$port.conf
		fi
		case $name in
		dnsmasq) cmd=(dnsmasq -k -C "$conf") ;;
		unbound) cmd=(unbound -d -c "$conf") ;;
		dnsdist) cmd=(dnsdist --supervised --disable-syslog -C "$conf") ;;
		esac
		;;
	esac
	"${PIN_SERVER[@]}" "${cmd[@]}" </dev/null >"$err" 2>&1 &
	SRV_PID=$!
	SRV_AT=$port
	PIDS+=("$SRV_PID")
	wait_ready "$name" "$port" "$SRV_PID" "$err"
}
GUARD_EXTRA=()

stop_server() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
}

# probe PORT NAME: prints the response code of one query (or "none").
probe() {
	local out
	out=$(echo "$2 A" | dnsperf -s 127.0.0.1 -p "$1" -n 1 -t 1 2>&1) || true
	awk '/Response codes:/ { print $3; found = 1 } END { if (!found) print "none" }' <<<"$out"
}

wait_ready() {
	local name=$1 port=$2 pid=$3 err=$4 rc
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; die "$name exited during start-up"; }
		rc=$(probe "$port" h1.hit.bench)
		[[ $rc == NOERROR ]] && return 0
		sleep 0.2
	done
	cat "$err" >&2
	die "$name on port $port does not answer h1.hit.bench with NOERROR (last: $rc)"
}

cpu_ticks() { # "utime stime" of all threads of PID, in clock ticks
	local stat f
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) }
	read -r -a f <<<"$stat"
	echo "${f[11]} ${f[12]}"
}

# record_cpu NAME RUN WHAT "U0 S0" "U1 S1" QUERIES: CPU microseconds per
# query, in all and split into user and system (kernel) time.
record_cpu() {
	local u0 s0 u1 s1
	read -r u0 s0 <<<"$4"
	read -r u1 s1 <<<"$5"
	record "$1" "$2" "cpu_$3" "$(per_query $((u1 - u0 + s1 - s0)) "$6")"
	record "$1" "$2" "usr_$3" "$(per_query $((u1 - u0)) "$6")"
	record "$1" "$2" "sys_$3" "$(per_query $((s1 - s0)) "$6")"
}

per_query() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }'; }

core_busy() { # busy ticks of SERVER_CPU since boot
	awk -v c="cpu$SERVER_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# dnsperf_phase LABEL EXPECT_RCODE ARGS...: runs dnsperf on CLIENT_CPU at the
# server, fails loudly on lost queries or any other response code, and sets
# DP_DONE, DP_QPS and DP_LOG.
dnsperf_phase() {
	local label=$1 expect=$2
	shift 2
	DP_LOG=$WORK/logs/$label.log
	"${PIN_CLIENT[@]}" dnsperf -s 127.0.0.1 -p "$SRV_AT" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 "$@" >"$DP_LOG" 2>&1 ||
		{ tail -20 "$DP_LOG" >&2; die "$label: dnsperf failed"; }
	local stats
	stats=$(awk '
		/Queries completed:/ { done = $3 }
		/Queries lost:/ { lost = $3 }
		/Queries per second:/ { qps = $4 }
		/Average Latency \(s\):/ { avg = $4 }
		/Response codes:/ { sub(/.*Response codes: */, ""); codes = $0; gsub(/ /, "_", codes) }
		END { print done + 0, lost + 0, qps + 0, avg + 0, (codes == "" ? "none" : codes) }' "$DP_LOG")
	local lost codes
	read -r DP_DONE lost DP_QPS _ codes <<<"$stats"
	((DP_DONE > 0)) || { tail -20 "$DP_LOG" >&2; die "$label: no query answered"; }
	if ((lost > MAX_LOST)); then
		tail -12 "$DP_LOG" >&2
		die "$label: $lost queries lost (BENCH_MAX_LOST=$MAX_LOST)"
	fi
	# Every answer must carry the expected code: "NOERROR_N_(100.00%)".
	if [[ $codes != "${expect}_${DP_DONE}_"* ]]; then
		tail -12 "$DP_LOG" >&2
		die "$label: expected only $expect, got: ${codes//_/ }"
	fi
}

# latency LOG: prints "avg_us p99_us" from dnsperf -v per-query lines.
latency() {
	awk '$1 == ">" { print $NF }' "$1" | sort -g | awk '
		{ v[NR] = $1; s += $1 }
		END {
			if (NR == 0) { print "nan nan"; exit }
			i = int(NR * 0.99); if (i < NR * 0.99) i++
			printf "%.1f %.1f\n", s / NR * 1e6, v[i] * 1e6
		}'
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# measure NAME RUN: one run of every phase against server NAME.
measure() {
	local name=$1 run=$2 tag="$1.r$2" t0 t1 b0 b1 e0 e1 lat
	start_server "$name" "$tag"
	local pid=$SRV_PID

	# warm-up: fill the cache with the hit names and let the server settle
	dnsperf_phase "$tag.warm" NOERROR -d "$WORK/hit.txt" -l 1

	# (a) hits, (c) CPU per hit
	if phase hit; then
		t0=$(cpu_ticks "$pid") b0=$(core_busy) e0=$(date +%s%N)
		dnsperf_phase "$tag.hit" NOERROR -d "$WORK/hit.txt" -l "$SECONDS_PER_PHASE"
		t1=$(cpu_ticks "$pid") b1=$(core_busy) e1=$(date +%s%N)
		record "$name" "$run" hit_qps "$DP_QPS"
		record_cpu "$name" "$run" hit "$t0" "$t1" "$DP_DONE"
		# other work on the server's core during the hit phase, in % of the core
		local used
		used=$(awk -v a="$t0" -v b="$t1" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[1] + y[2] - x[1] - x[2] }')
		record "$name" "$run" noise "$(awk -v b=$((b1 - b0 - used)) -v hz="$CLK_TCK" -v ns=$((e1 - e0)) 'BEGIN { x = b / hz / (ns / 1e9) * 100; printf "%.1f", (x < 0 ? 0 : x) }')"
	fi

	# (d) latency under full hit load (per-query output costs dnsperf
	# some speed, hence its own pass)
	if phase latency; then
		dnsperf_phase "$tag.hitlat" NOERROR -d "$WORK/hit.txt" -l "$SECONDS_PER_PHASE" -v
		read -r -a lat <<<"$(latency "$DP_LOG")"
		record "$name" "$run" hit_avg "${lat[0]}"
		record "$name" "$run" hit_p99 "${lat[1]}"
	fi

	# (b) misses: unique names, each asked once (-n 1), NXDOMAIN upstream
	if phase miss; then
		t0=$(cpu_ticks "$pid")
		dnsperf_phase "$tag.miss" NXDOMAIN -d "$WORK/miss.txt" -n 1 -l "$SECONDS_PER_PHASE"
		t1=$(cpu_ticks "$pid")
		record "$name" "$run" miss_qps "$DP_QPS"
		record_cpu "$name" "$run" miss "$t0" "$t1" "$DP_DONE"
		((DP_DONE < MISS_NAMES)) || die "$tag.miss: ran out of unique names; raise MISS_NAMES"

		# (e) steady 2,000 queries/s: misses
		dnsperf_phase "$tag.steadymiss" NXDOMAIN -d "$WORK/steady-miss.txt" -n 1 -l "$SECONDS_PER_PHASE" -Q "$STEADY_QPS" -v
		read -r -a lat <<<"$(latency "$DP_LOG")"
		record "$name" "$run" s2k_miss_avg "${lat[0]}"
		record "$name" "$run" s2k_miss_p99 "${lat[1]}"
	fi
	stop_server "$pid"

	# (f) memory of a fresh instance after MEM_NAMES unique names
	if phase mem; then
		start_server "$name" "$tag.mem"
		pid=$SRV_PID
		dnsperf_phase "$tag.mem" NOERROR -d "$WORK/mem.txt" -n 1
		((DP_DONE == MEM_NAMES)) || die "$tag.mem: $DP_DONE of $MEM_NAMES answered"
		sleep 1
		record "$name" "$run" rss "$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
		record "$name" "$run" hwm "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
		stop_server "$pid"
	fi

	# (g) misses forwarded over DoT and DoH, where the server can
	((TLS)) || return 0
	local up
	for up in dot doh; do
		case $name/$up in
		dnsmasq/* | unbound/doh) continue ;;
		esac
		start_server "$name" "$tag.$up" "$up"
		pid=$SRV_PID
		dnsperf_phase "$tag.$up.warm" NOERROR -d "$WORK/hit.txt" -l 1
		t0=$(cpu_ticks "$pid")
		dnsperf_phase "$tag.$up.miss" NXDOMAIN -d "$WORK/$up-miss.txt" -n 1 -l "$SECONDS_PER_PHASE"
		t1=$(cpu_ticks "$pid")
		record "$name" "$run" "${up}_miss_qps" "$DP_QPS"
		record_cpu "$name" "$run" "${up}_miss" "$t0" "$t1" "$DP_DONE"
		((DP_DONE < TLS_MISS_NAMES)) || die "$tag.$up.miss: ran out of unique names; raise TLS_MISS_NAMES"
		stop_server "$pid"
	done
}

# steady_hits RUN: (e) steady 2,000 queries/s, hits, for every server:
# all of them up at once, each on a port of its own, asked in turn for one
# second at a time, SECONDS_PER_PHASE turns each, the order rotating every
# turn; each server's latencies are pooled over its turns. At a trickle
# the servers' paths take a few tens of microseconds and their p99s differ
# by a few percent, while the machine's own wake-up latency drifts by tens
# of percent over the minutes between one server's phase and the next's:
# measured one after the other, the comparison showed mostly the drift.
# An idle server waits in epoll and takes no time from the one asked.
steady_hits() {
	local run=$1 name turn pid f
	local -a order pids=()
	local -A at
	read -r -a order <<<"$SERVERS"
	for name in "${order[@]}"; do
		start_server "$name" "r$run.steady" do53 $((UP_PORT + 5 + ${#pids[@]}))
		pids+=("$SRV_PID")
		at[$name]=$SRV_AT
		dnsperf_phase "$name.r$run.steady.warm" NOERROR -d "$WORK/hit.txt" -l 1
	done
	for turn in $(seq "$SECONDS_PER_PHASE"); do
		for name in "${order[@]}"; do
			SRV_AT=${at[$name]}
			dnsperf_phase "$name.r$run.steadyhit.$turn" NOERROR -d "$WORK/hit.txt" -l 1 -Q "$STEADY_QPS" -v
		done
		order=("${order[@]:1}" "${order[0]}")
	done
	for name in $SERVERS; do
		f=$WORK/logs/$name.r$run.steadyhit.all.log
		cat "$WORK/logs/$name.r$run.steadyhit."[0-9]*.log >"$f"
		read -r -a lat <<<"$(latency "$f")"
		record "$name" "$run" s2k_hit_avg "${lat[0]}"
		record "$name" "$run" s2k_hit_p99 "${lat[1]}"
	done
	for pid in "${pids[@]}"; do stop_server "$pid"; done
	SRV_AT=$SRV_PORT
}

start_upstream() {
	"${PIN_CLIENT[@]}" unbound -d -c "$WORK/upstream.conf" </dev/null >"$WORK/logs/upstream.stderr" 2>&1 &
	UP_PID=$!
	PIDS+=("$UP_PID")
	wait_ready upstream "$UP_PORT" "$UP_PID" "$WORK/logs/upstream.stderr"
	[[ $(probe "$UP_PORT" x.miss.bench) == NXDOMAIN ]] || die "upstream does not answer NXDOMAIN for miss names"
	[[ $(probe "$UP_PORT" x.mem.bench) == NOERROR ]] || die "upstream does not answer the mem zone"
	if ((TLS)); then
		# a DoT handshake answered with the certificate made above
		echo | openssl s_client -connect "127.0.0.1:$UP_DOT_PORT" -servername "$TLS_NAME" -CAfile "$WORK/upstream.pem" \
			-verify_return_error >"$WORK/logs/upstream-tls.log" 2>&1 ||
			{ tail -5 "$WORK/logs/upstream-tls.log" >&2; die "upstream does not serve DoT on port $UP_DOT_PORT"; }
	fi
}

# ---- profile mode ------------------------------------------------------

# The guard is built with -tags pprof, so `run --pprof ADDR` serves Go
# profiles over HTTP (go tool pprof reads them); a guard without that flag
# is sampled with perf instead.
profile() {
	local out=${BENCH_OUT:-/tmp/dnsguard-profile} phase pid bg
	local pprof_addr=127.0.0.1:$((UP_PORT + 2)) use_pprof=0
	mkdir -p "$out"
	# (not "run -h | grep -q": with pipefail, grep quitting early fails it)
	if grep -q -- '-pprof' <<<"$("$GUARD" run -h 2>&1)"; then
		use_pprof=1
		command -v curl >/dev/null || die "curl not found (apt-get install curl)"
		GUARD_EXTRA=(--pprof "$pprof_addr")
	elif ! command -v perf >/dev/null; then
		die "the guard has no --pprof flag and perf is not installed (apt-get install linux-perf)"
	fi
	local secs=$((SECONDS_PER_PHASE * 2)) phases=(hit miss)
	((TLS)) && phases+=(dot)
	for phase in "${phases[@]}"; do
		start_server dnsguard "profile.$phase" "$([[ $phase == dot ]] && echo dot || echo do53)"
		pid=$SRV_PID
		dnsperf_phase "profile.$phase.warm" NOERROR -d "$WORK/hit.txt" -l 1
		rm -f "$out/$phase.pprof" "$out/$phase.perf.data"
		if ((use_pprof)); then
			"${PIN_CLIENT[@]}" curl -sf -o "$out/$phase.pprof" "http://$pprof_addr/debug/pprof/profile?seconds=$secs" &
		else
			"${PIN_CLIENT[@]}" perf record -q -F 2999 -g -p "$pid" -o "$out/$phase.perf.data" -- sleep "$secs" >"$WORK/logs/perf.$phase.log" 2>&1 &
		fi
		bg=$!
		PIDS+=("$bg")
		sleep 0.2
		case $phase in
		hit) dnsperf_phase "profile.hit" NOERROR -d "$WORK/hit.txt" -l "$((secs + 1))" ;;
		miss) dnsperf_phase "profile.miss" NXDOMAIN -d "$WORK/miss.txt" -n 1 -l "$((secs + 1))" ;;
		dot) dnsperf_phase "profile.dot" NXDOMAIN -d "$WORK/dot-miss.txt" -n 1 -l "$((secs + 1))" ;;
		esac
		wait "$bg" || die "profiling $phase failed"
		forget_pid "$bg"
		if ((use_pprof)) && [[ $phase == miss ]]; then
			# what the cache holds after the miss load, for the memory figure
			curl -sf -o "$out/heap.pprof" "http://$pprof_addr/debug/pprof/heap" || true
		fi
		stop_server "$pid"
		echo
		echo "=== dnsguard CPU profile under cache-$phase load ($DP_QPS q/s, cpu profile over $secs s) ==="
		if ((use_pprof)); then
			go tool pprof -top -nodecount=45 "$GUARD" "$out/$phase.pprof" 2>/dev/null
			echo "--- cumulative ---"
			go tool pprof -top -cum -nodecount=45 "$GUARD" "$out/$phase.pprof" 2>/dev/null | sed -n '6,$p'
		else
			perf report -i "$out/$phase.perf.data" --stdio --no-children --sort symbol --percent-limit 0.7 2>/dev/null |
				grep -E '^ +[0-9.]+%' | head -45
			echo "--- cumulative (children) ---"
			perf report -i "$out/$phase.perf.data" --stdio --children --sort symbol --percent-limit 3 2>/dev/null |
				grep -E '^ +[0-9.]+% +[0-9.]+%' | head -45
		fi
	done
	if [[ -s $out/heap.pprof ]]; then
		echo
		echo "=== dnsguard heap in use after the miss load ==="
		go tool pprof -top -sample_index=inuse_space -nodecount=20 "$GUARD" "$out/heap.pprof" 2>/dev/null
	fi
	cp "$GUARD" "$out/dnsguard"
	echo
	echo "profiles and the binary they belong to are in $out, e.g."
	if ((use_pprof)); then
		echo "  go tool pprof -top $out/dnsguard $out/hit.pprof"
	else
		echo "  perf report -i $out/hit.perf.data"
	fi
}

# ---- table -------------------------------------------------------------

table() {
	awk -F'\t' -v servers="$SERVERS" -v runs="$RUNS" '
	function median(key,   n, i, j, t, a) {
		n = split(vals[key], a, " ")
		if (n == 0) return ""
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ vals[$1 SUBSEP $3] = vals[$1 SUBSEP $3] " " $4 }
	END {
		nm = split("hit_qps miss_qps cpu_hit cpu_miss cpu_dot_miss cpu_doh_miss hit_avg hit_p99 s2k_hit_avg s2k_hit_p99 s2k_miss_avg s2k_miss_p99 rss hwm noise", m, " ")
		split("hit q/s|miss q/s|cpu us/hit|cpu us/miss|cpu us/dot miss|cpu us/doh miss|hit avg us|hit p99 us|2k hit avg|2k hit p99|2k miss avg|2k miss p99|RSS MiB|HWM MiB|noise %", head, "|")
		ns = split(servers, s, " ")
		printf "%-16s", "server"
		for (k = 1; k <= nm; k++) { w[k] = length(head[k]) < 11 ? 11 : length(head[k]); printf " %" w[k] "s", head[k] }
		printf "\n"
		for (i = 1; i <= ns; i++) {
			printf "%-16s", s[i]
			for (k = 1; k <= nm; k++) {
				v = median(s[i] SUBSEP m[k]); med[s[i], m[k]] = v
				if (v == "") printf " %" w[k] "s", "-"
				else printf " %" w[k] (m[k] ~ /qps/ ? ".0f" : ".1f"), v
			}
			printf "\n"
		}
		for (i = 1; i <= ns; i++) {
			if (s[i] == "dnsguard") continue
			printf "%-16s", "guard/" s[i]
			for (k = 1; k < nm; k++) {
				p = med[s[i], m[k]]; g = med["dnsguard", m[k]]
				if (p + 0 == 0 || g == "") printf " %" w[k] "s", "-"; else printf " %" w[k] ".2f", g / p
			}
			printf " %" w[nm] "s\n", ""
		}
		printf "\nCPU per query split, microseconds (user + system = total):\n"
		printf "%-16s %11s %11s %11s %11s\n", "server", "hit usr", "hit sys", "miss usr", "miss sys"
		split("usr_hit sys_hit usr_miss sys_miss", sk, " ")
		for (i = 1; i <= ns; i++) {
			printf "%-16s", s[i]
			for (k = 1; k <= 4; k++) { v = median(s[i] SUBSEP sk[k]); if (v == "") printf " %11s", "-"; else printf " %11.1f", v }
			printf "\n"
		}
		# latency varies from run to run more than the medians show: the
		# p99 of each run, the guard beside that of the peer in the same run
		if (med["dnsguard", "hit_p99"] != "" && med["unbound", "hit_p99"] != "") {
			printf "\np99 latency per run, guard/unbound, us:\n"
			split("hit_p99 s2k_hit_p99", lk, " "); split("hit p99|2k hit p99", lh, "|")
			for (k = 1; k <= 2; k++) {
				ng = split(vals["dnsguard" SUBSEP lk[k]], ga, " "); split(vals["unbound" SUBSEP lk[k]], ua, " ")
				printf "  %-11s", lh[k]; le = 0
				for (j = 1; j <= ng; j++) { printf " %.0f/%.0f", ga[j], ua[j]; if (ga[j] + 0 <= ua[j] + 0) le++ }
				printf "  (guard <= unbound in %d of %d runs)\n", le, ng
			}
		}
		printf "\nmedians of %d runs; ratios are guard/peer (q/s: higher is better; cpu, latency, memory: lower is better)\n", runs
		printf "noise %%: time on the server core not charged to the server during the hit phase\n"
		printf "         (other processes, interrupts), in %% of the core; high values make the figures suspect\n"
		# the targets of issue 2
		printf "\ntargets (issue 2):\n"
		g = med["dnsguard", "cpu_hit"]
		if (g != "" && med["dnsdist", "cpu_hit"] != "") printf "  cpu/hit %.1f us <= dnsdist x1.1 = %.1f: %s\n", g, med["dnsdist", "cpu_hit"] * 1.1, (g <= med["dnsdist", "cpu_hit"] * 1.1 ? "met" : "NOT met")
		if (g != "" && med["dnsmasq", "cpu_hit"] != "") printf "  cpu/hit %.1f us < dnsmasq %.1f: %s\n", g, med["dnsmasq", "cpu_hit"], (g < med["dnsmasq", "cpu_hit"] ? "met" : "NOT met")
		g = med["dnsguard", "cpu_miss"]
		if (g != "" && med["unbound", "cpu_miss"] != "") printf "  cpu/miss %.1f us <= unbound / 2 = %.1f: %s\n", g, med["unbound", "cpu_miss"] / 2, (g <= med["unbound", "cpu_miss"] / 2 ? "met" : "NOT met")
		g = med["dnsguard", "hit_p99"]
		if (g != "" && med["unbound", "hit_p99"] != "") printf "  hit p99 %.0f us <= unbound %.0f us: %s\n", g, med["unbound", "hit_p99"], (g <= med["unbound", "hit_p99"] ? "met" : "NOT met")
		g = med["dnsguard", "rss"]
		if (g != "") printf "  RSS %.1f MiB < 30 MiB after %s names: %s\n", g, "'"$MEM_NAMES"'", (g < 30 ? "met" : "NOT met")
		# the targets of issue 14
		printf "\ntargets (issue 14):\n"
		target("cpu/hit", "cpu_hit", "dnsdist", "cpu_hit", 1)
		target("cpu/miss", "cpu_miss", "unbound", "cpu_miss", 1)
		target("cpu/dot miss", "cpu_dot_miss", "unbound", "cpu_dot_miss", 1)
		target("cpu/dot miss", "cpu_dot_miss", "dnsdist", "cpu_dot_miss", 1.5)
		target("cpu/doh miss", "cpu_doh_miss", "unbound", "cpu_dot_miss", 1)
		target("cpu/doh miss", "cpu_doh_miss", "dnsdist", "cpu_dot_miss", 1.5)
		target("hit p99", "hit_p99", "unbound", "hit_p99", 1)
		target("2k hit p99", "s2k_hit_p99", "unbound", "s2k_hit_p99", 1)
		if (med["dnsguard", "rss"] != "") printf "  RSS %.1f MiB < 30 MiB after %s names: %s\n", med["dnsguard", "rss"], "'"$MEM_NAMES"'", (med["dnsguard", "rss"] < 30 ? "met" : "NOT met")
	}
	# target LABEL KEY PEER PEERKEY FACTOR: the KEY of the guard at most
	# PEERKEY of PEER times FACTOR.
	function target(label, key, peer, pkey, f,   g, p) {
		g = med["dnsguard", key]; p = med[peer, pkey]
		if (g == "" || p == "") return
		printf "  %s %.1f us <= %s%s%s = %.1f: %s\n", label, g, peer, (pkey == key ? "" : " " pkey), (f == 1 ? "" : " x" f), p * f, (g <= p * f ? "met" : "NOT met")
	}' "$RESULTS"
}

# ---- main --------------------------------------------------------------

log "work dir $WORK; server on CPU $SERVER_CPU, dnsperf and upstream on CPU $CLIENT_CPU"
start_upstream

if ((PROFILE)); then
	profile
	exit 0
fi

log "$RUNS runs x $SECONDS_PER_PHASE s per phase; servers: $SERVERS"
# Odd runs go through the servers in the order given, even runs in reverse,
# so no server is always measured first after the upstream's start or
# always next to the same neighbour in time.
read -r -a servers <<<"$SERVERS"
for run in $(seq "$RUNS"); do
	order=("${servers[@]}")
	if ((run % 2 == 0)); then
		order=()
		for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
	fi
	for name in "${order[@]}"; do
		log "run $run/$RUNS: $name"
		measure "$name" "$run"
	done
	if phase latency; then
		log "run $run/$RUNS: 2k hits, servers in turn"
		steady_hits "$run"
	fi
done

echo
echo "dnsguard benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), load average before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "dnsguard ${BENCH_GUARD_BIN:+$BENCH_GUARD_BIN, prebuilt, tree }$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'); $(dnsmasq --version 2>/dev/null | head -1 | awk '{print "dnsmasq " $3}'); unbound $(unbound -V 2>/dev/null | awk '/^Version/ {print $2}'); $(dnsdist --version 2>/dev/null | awk 'NR == 1 {print $1, $2}'); $(dnsperf -h 2>&1 | awk '/^Version/ {print "dnsperf " $2}')"
echo "dnsperf -c $CLIENTS -q $OUTSTANDING, $SECONDS_PER_PHASE s per phase, scheduling $SCHED; $HIT_NAMES hit names; cache $CACHE_ENTRIES entries / $CACHE_BYTES each"
echo
table
cp "$RESULTS" "${BENCH_RESULTS:-/tmp/dnsguard-bench-results.tsv}"
echo "per-run figures: ${BENCH_RESULTS:-/tmp/dnsguard-bench-results.tsv}"
