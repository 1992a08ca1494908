#!/usr/bin/env bash
# attack.sh: replays each attack of issue 10 against the real dnsguard
# binary and prints one line per attack with the figure it measures, and
# unbound's figure beside it where the same attack applies to unbound
# (unbound 'forward-zone: .' in front of the same upstream).
#
#   scripts/attack.sh                 every attack
#   scripts/attack.sh escape notimp   only the attacks named
#   scripts/attack.sh --list          the attacks, in order
#
# Everything runs inside a network namespace this script creates (and
# removes): the guard, unbound and the scriptable upstream listen on its
# own loopback addresses, so nothing leaves it and fixed ports are free.
#   127.0.0.2      the upstream: scripts/attacktool serve (plain DNS :53,
#                  DoT :853; see its doc for the names it answers, never
#                  answers, answers slowly or oddly)
#   127.0.0.1:53   dnsguard        127.0.0.3:53   unbound
#   127.0.0.10     the attacking device   127.0.0.20   the victim device
#
# Adding an attack: write attack_NAME (a function that starts what it
# needs with start_upstream / start_guard / start_unbound, measures, and
# calls `result NAME "guard figure" "unbound figure"`; processes it starts
# are stopped by stop_all, called between attacks), and add NAME to
# ATTACKS below. Helpers: q (one query with attacktool, prints its
# key=value line), field KEY LINE, load (a device's steady lookups for
# fresh names, prints sent= ok= ...), pct OK SENT.
#
# Environment: ATTACK_KEEP=1 keeps the work dir (logs, configs);
# ATTACK_SECONDS (default 30) is the length of the load phases;
# ATTACK_GUARD_BIN=FILE attacks that dnsguard binary instead of one built
# from this tree (e.g. an older build, for before/after figures; the
# macflood attack always runs this tree's test).
#
# Needs root, iproute2, Go, unbound. Not part of scripts/test.sh (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

ATTACKS="escape slowname macflood recovery reload pin check svcb ede notimp"
LOAD_SECONDS=${ATTACK_SECONDS:-30}

die() { echo "attack.sh: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

case ${1:-} in
--list) echo "$ATTACKS"; exit 0 ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
esac
for a in "$@"; do
	case " $ATTACKS " in
	*" $a "*) ;;
	*) die "unknown attack $a (have: $ATTACKS)" ;;
	esac
done

# Outside: make the namespace and run this script again inside it.
if [ -z "${ATTACK_NETNS:-}" ]; then
	[ "$(id -u)" = 0 ] || die "needs root (it creates a network namespace)"
	command -v ip >/dev/null || die "needs ip (iproute2)"
	ns="dnsguard-attack-$$-$RANDOM"
	ip netns add "$ns"
	trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
	ip -n "$ns" link set lo up
	rc=0
	ATTACK_NETNS=$ns ip netns exec "$ns" bash "$0" "$@" || rc=$?
	exit "$rc"
fi

UP=127.0.0.2
GUARD=127.0.0.1:53
UNBOUND=127.0.0.3:53
ATTACKER=127.0.0.10
VICTIM=127.0.0.20

W=$(mktemp -d /tmp/dnsguard-attack.XXXXXX)
PIDS=()
cleanup() {
	stop_all
	if [ "${ATTACK_KEEP:-}" = 1 ]; then
		log "work dir kept: $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT

stop_all() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	PIDS=()
}

log "building dnsguard and attacktool"
if [ -n "${ATTACK_GUARD_BIN:-}" ]; then
	BIN=$ATTACK_GUARD_BIN
else
	go build -o "$W/dnsguard" ./cmd/dnsguard
	BIN=$W/dnsguard
fi
go build -o "$W/attacktool" ./scripts/attacktool
TOOL=$W/attacktool
# The flags the attacked binary knows (an older ATTACK_GUARD_BIN lacks
# some), read once. Never probe with "run -h | grep -q": grep quits at the
# first match, the binary dies of SIGPIPE writing the rest, and pipefail
# makes the probe false now and then (about 1 in 20 here), so a guard
# would start with DNSSEC on against the unsigned stand-in.
BIN_HELP=$("$BIN" run -h 2>&1 || true)

# wait_for FILE PATTERN: wait up to 20 s for PATTERN in FILE.
wait_for() {
	local i
	for i in $(seq 200); do
		if grep -q -- "$2" "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "--- $1" >&2
	tail -20 "$1" >&2 || true
	die "timed out waiting for '$2' in $1"
}

# wait_file FILE PID LOG: wait up to 20 s for FILE (a guard's --ready-file,
# written once it serves), failing early if PID exits.
wait_file() {
	local i
	for i in $(seq 200); do
		if [ -e "$1" ]; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			tail -20 "$3" >&2 || true
			die "the guard exited before serving (log $3)"
		fi
		sleep 0.1
	done
	tail -20 "$3" >&2 || true
	die "timed out waiting for $1 (log $3)"
}

# start_upstream: the scriptable upstream.
# UP_PID is its pid (SIGUSR1: stop answering; SIGUSR2: answer again).
start_upstream() {
	mkdir -p "$W/up"
	"$TOOL" serve -udp "$UP:53" -dot "$UP:853" -dir "$W/up" >"$W/upstream.log" 2>&1 &
	UP_PID=$!
	PIDS+=("$UP_PID")
	wait_for "$W/upstream.log" "upstream ready"
	DOT_NAME=$(cat "$W/up/name")
	DOT_URL="tls://$UP:853?sni=$DOT_NAME"
}

# start_guard NAME [dnsguard run flags]: a guard on $GUARD. Without an
# --upstream flag it uses the upstream's plain DNS. Without a --dnssec flag
# validation is off: the stand-in upstream serves unsigned test names and
# cannot give the root's signed DNSKEY chain. GUARD_PID, GUARD_LOG.
start_guard() {
	local name=$1
	shift
	local args=("$@")
	case " ${args[*]} " in
	*" --upstream "*) ;;
	*) args+=(--upstream "udp://$UP:53") ;;
	esac
	case " ${args[*]} " in
	*" --dnssec"*) ;;
	*) # an older ATTACK_GUARD_BIN has no --dnssec (and validates nothing)
		case $BIN_HELP in *-dnssec*) args+=(--dnssec=false) ;; esac ;;
	esac
	GUARD_LOG=$W/guard-$name.log
	local ready=$W/ready-$name
	case $BIN_HELP in
	*-ready-file*) args+=(--ready-file "$ready") ;;
	*) ready= ;; # an older ATTACK_GUARD_BIN: only its log says when it serves
	esac
	"$BIN" run --listen "$GUARD" --state "$W/state-$name.db" "${args[@]}" >"$GUARD_LOG" 2>&1 &
	GUARD_PID=$!
	PIDS+=("$GUARD_PID")
	if [ -n "$ready" ]; then
		wait_file "$ready" "$GUARD_PID" "$GUARD_LOG"
	else
		wait_for "$GUARD_LOG" "dnsguard serving"
	fi
}

# start_unbound NAME [extra server: lines]: unbound on $UNBOUND forwarding
# everything to the upstream's plain DNS, with OpenWrt-style rebinding
# protection (private-address) like the guard's rebind_protection, and
# infra-keep-probing (without it, a forwarder unbound marked down is not
# asked again for infra-host-ttl, 15 minutes: the recovery attack would
# read "never").
start_unbound() {
	local name=$1
	shift
	local dir=$W/unbound-$name
	mkdir -p "$dir"
	{
		cat <<EOF
server:
	verbosity: 1
	interface: ${UNBOUND%:*}@${UNBOUND##*:}
	do-daemonize: no
	chroot: ""
	username: ""
	directory: "$dir"
	pidfile: "$dir/unbound.pid"
	use-syslog: no
	logfile: ""
	num-threads: 1
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	infra-keep-probing: yes
	module-config: "iterator"
	private-address: 10.0.0.0/8
	private-address: 172.16.0.0/12
	private-address: 192.168.0.0/16
	private-address: 169.254.0.0/16
	private-address: 127.0.0.0/8
	private-address: fc00::/7
	private-address: fe80::/10
	private-address: ::ffff:0:0/96
	local-zone: "test." nodefault
EOF
		local l
		for l in "$@"; do
			printf '\t%s\n' "$l"
		done
		cat <<EOF
forward-zone:
	name: "."
	forward-addr: $UP@53
EOF
	} >"$dir/unbound.conf"
	unbound -d -c "$dir/unbound.conf" >"$dir/log" 2>&1 &
	UNBOUND_PID=$!
	PIDS+=("$UNBOUND_PID")
	local i
	for i in $(seq 100); do
		if "$TOOL" query -s "$UNBOUND" -timeout 200ms probe.example >/dev/null 2>&1 &&
			[ "$("$TOOL" query -s "$UNBOUND" -timeout 500ms probe.example)" != timeout ]; then
			return 0
		fi
		sleep 0.1
		[ "$i" = 100 ] && { cat "$dir/log" >&2; die "unbound did not start"; }
	done
}

# q SERVER [attacktool query flags] NAME: one query, its key=value line.
q() {
	local s=$1
	shift
	"$TOOL" query -s "$s" "$@" 2>&1 || true
}

# field KEY LINE: the value of KEY in an attacktool line (edetext, the
# last, runs to the end of the line).
field() {
	if [ "$1" = edetext ]; then
		case $2 in
		*edetext=*) echo "${2#*edetext=}" ;;
		*) echo '""' ;;
		esac
		return
	fi
	local kv
	for kv in $2; do
		case $kv in
		"$1"=*) echo "${kv#*=}"; return ;;
		esac
	done
	echo "?"
}

# load SERVER SRC QPS SECONDS PREFIX: a device's lookups of fresh names.
load() {
	"$TOOL" load -s "$1" -src "$2" -qps "$3" -duration "${4}s" -prefix "$5"
}

# pct OK TOTAL
pct() {
	if [ "$2" -gt 0 ]; then
		awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'
	else
		echo "n/a"
	fi
}

# rss PID: resident set size in MB.
rss() { awk '/^VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

RESULTS=()
# result NAME GUARD_FIGURE [UNBOUND_FIGURE]
result() {
	local line
	line=$(printf '%-10s dnsguard: %s' "$1" "$2")
	if [ -n "${3:-}" ]; then
		line="$line  |  unbound: $3"
	fi
	RESULTS+=("$line")
	echo "$line"
}

# ---------------------------------------------------------------- attacks

# Item 0: names whose labels hold what presentation form escapes. Each is
# asked twice (the issue's trigger), then fresh names must still be
# answered: the upstream was not marked down.
ESCAPE_NAMES=('a\032b.example' 'a\(b.example' 'a\)b.example' 'a\"b.example' "a\\'b.example"
	'a\;b.example' 'a\@b.example' 'a\\b.example' 'a\.b.example')
escape_run() {
	local server=$1 ok=0 n=0 name r i follow=0
	for name in "${ESCAPE_NAMES[@]}"; do
		for i in 1 2; do
			r=$(q "$server" -src "$ATTACKER" "$name")
			if [ "$i" = 2 ]; then
				n=$((n + 1))
				if [ "$(field rcode "$r")" = NOERROR ] && [ "$(field answers "$r")" = 1 ]; then
					ok=$((ok + 1))
				fi
			fi
		done
	done
	for i in 1 2 3 4 5; do
		r=$(q "$server" -src "$VICTIM" "after-escape-$i-$RANDOM.example")
		if [ "$(field rcode "$r")" = NOERROR ]; then
			follow=$((follow + 1))
		fi
	done
	echo "escaped names answered $ok/$n, follow-up names answered $follow/5"
}
attack_escape() {
	start_upstream
	start_guard escape
	start_unbound escape
	result escape "$(escape_run "$GUARD")" "$(escape_run "$UNBOUND")"
}

# Item 1: a device asks 5 names a second whose servers never answer while
# another device looks up fresh names; the victim's success rate.
slowname_run() {
	local server=$1 logfile=$2 v before after
	before=$(wc -l <"$logfile")
	load "$server" "$ATTACKER" 5 "$LOAD_SECONDS" never.test >"$W/slow-attacker.txt" &
	local apid=$!
	v=$(load "$server" "$VICTIM" 10 "$LOAD_SECONDS" victim.example)
	wait "$apid" || true
	after=$(wc -l <"$logfile")
	echo "victim $(pct "$(field ok "$v")" "$(field sent "$v")") ok ($v), $((after - before)) log lines"
}
attack_slowname() {
	start_upstream
	start_guard slowname
	start_unbound slowname
	result slowname "$(slowname_run "$GUARD" "$GUARD_LOG")" "$(slowname_run "$UNBOUND" "$W/unbound-slowname/log")"
}

# Item 2: MAC flood. A LAN device sends queries in frames from 6,000
# random source MACs (raw frames from a macvlan device namespace behind
# the guard's LAN interface, interception and NFLOG as on a router): the
# end-to-end test TestRouterMACFlood sets it up, asserts what must hold and
# prints one MACFLOOD line with the figures, read here. Unbound keeps no
# per-MAC state: not applicable.
attack_macflood() {
	local out line
	out=$(go test -count=1 -timeout 10m -run '^TestRouterMACFlood$' -v ./cmd/dnsguard/ 2>&1) || true
	line=$(printf '%s\n' "$out" | grep -m1 '^MACFLOOD ' || true)
	if [ -z "$line" ]; then
		printf '%s\n' "$out" | tail -30 >&2
		result macflood "FAILED: the flood test printed no MACFLOOD line"
		return
	fi
	local verdict=passed
	if ! grep -q '^--- PASS: TestRouterMACFlood' <<<"$out"; then
		verdict=FAILED
	fi
	result macflood "$(field macs "$line") MACs: RSS $(($(field rss_before_kb "$line") / 1024)) -> peak $(($(field rss_peak_kb "$line") / 1024)) MB (anonymous $(($(field rss_anon_peak_kb "$line") / 1024)) MB; the rest is the binary's pages), victim $(field victim_ok "$line") answered, exempt override kept: $(field override_kept "$line"), records $(field records "$line") (stored $(field stored "$line")), $(field log_lines "$line") log lines, next start $(field start_next_ms "$line") ms; test $verdict"
}

# Item 4: the upstream goes silent for 20 s while a device retries one
# name every second; then it answers again. Seconds from recovery to the
# first answer for that name.
recovery_run() {
	local server=$1 name i s failed=0
	name="retried-$RANDOM.example"
	q "$server" -src "$VICTIM" "warm-$RANDOM.example" >/dev/null
	kill -USR1 "$UP_PID"
	# One retry a second, whether the answer is a quick SERVFAIL or a 1 s
	# timeout, so that the outage lasts 20 s for both resolvers.
	for i in $(seq 20); do
		q "$server" -src "$VICTIM" -timeout 1s "$name" >"$W/retry-$i.txt" &
		sleep 1
		wait $!
	done
	for i in $(seq 20); do
		if [ "$(field rcode "$(cat "$W/retry-$i.txt")")" != NOERROR ]; then
			failed=$((failed + 1))
		fi
	done
	kill -USR2 "$UP_PID"
	s=$("$TOOL" until -s "$server" -src "$VICTIM" -name "$name" -every 100ms -max 330s)
	echo "${s#seconds=} s from recovery to the first answer (outage: $failed/20 retries failed)"
}
attack_recovery() {
	start_upstream
	start_guard recovery
	start_unbound recovery
	local g u
	g=$(recovery_run "$GUARD")
	u=$(recovery_run "$UNBOUND")
	result recovery "$g" "$u"
}

# Item 5: 30 reloads (SIGHUP), one a second, under steady load through a
# DoT upstream that answers in 200 ms (so queries are in flight at each
# reload); queries that failed. The guard's upstream_timeout is 2 s and
# the device waits 5 s, so a busy machine does not turn the 200 ms answers
# into failures; the same load without reloads is the control all the same.
reload_run() {
	local server=$1 pid=$2 reloads=$3 out failed i
	"$TOOL" load -s "$server" -src "$VICTIM" -qps 20 -duration 35s -timeout 5s -prefix reload.lag.test >"$W/reload-load.txt" &
	local lpid=$!
	sleep 2
	for i in $(seq 30); do
		if [ "$reloads" = 1 ]; then
			kill -HUP "$pid"
		fi
		sleep 1
	done
	wait "$lpid" || true
	out=$(cat "$W/reload-load.txt")
	failed=$(($(field sent "$out") - $(field ok "$out")))
	echo "$failed/$(field sent "$out") (servfail $(field servfail "$out"), timeout $(field timeout "$out"))"
}
reload_both() {
	local with without
	with=$(reload_run "$1" "$2" 1)
	without=$(reload_run "$1" "$2" 0)
	echo "$with failed across 30 reloads (same load, no reload: $without)"
}
attack_reload() {
	start_upstream
	printf "config dnsguard 'main'\n\toption log_level 'info'\n\toption upstream_timeout '2s'\n" >"$W/reload.conf"
	start_guard reload --config "$W/reload.conf" --upstream "$DOT_URL" --upstream-ca "$W/up/ca.pem"
	local g
	g=$(reload_both "$GUARD" "$GUARD_PID")
	start_unbound reload "tls-cert-bundle: \"$W/up/ca.pem\""
	sed -i -e "s|forward-addr: .*|forward-addr: $UP@853#$DOT_NAME|" -e 's|forward-zone:|forward-zone:\n\tforward-tls-upstream: yes|' "$W/unbound-reload/unbound.conf"
	kill "$UNBOUND_PID"
	wait "$UNBOUND_PID" 2>/dev/null || true
	unbound -d -c "$W/unbound-reload/unbound.conf" >"$W/unbound-reload/log2" 2>&1 &
	UNBOUND_PID=$!
	PIDS+=("$UNBOUND_PID")
	sleep 1
	result reload "$g" "$(reload_both "$UNBOUND" "$UNBOUND_PID")"
}

# Item 6: a DoT upstream whose certificate chains to a trusted CA sends,
# after it, an unrelated certificate whose key is the pinned one. The pin
# must be checked against the verified chain: refused. The same upstream
# pinned to its own key answers (the set-up works).
attack_pin() {
	start_upstream
	local bypass honest
	start_guard pin-bypass --upstream "$DOT_URL&pin=$(cat "$W/up/pin-extra")" --upstream-ca "$W/up/ca.pem"
	bypass=$(q "$GUARD" -src "$VICTIM" pin-bypass.example)
	stop_pid "$GUARD_PID"
	start_guard pin-honest --upstream "$DOT_URL&pin=$(cat "$W/up/pin-leaf")" --upstream-ca "$W/up/ca.pem"
	honest=$(q "$GUARD" -src "$VICTIM" pin-honest.example)
	local verdict
	verdict="REFUSED (answered $(field rcode "$bypass"))"
	if [ "$(field rcode "$bypass")" = NOERROR ]; then
		verdict="BYPASSED (answered NOERROR)"
	fi
	result pin "appended pinned cert: $verdict; own pin: $(field rcode "$honest")" "no SPKI pins for forwarders"
}

stop_pid() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# Item 7: run --check on configs the daemon refuses; each must be refused.
attack_check() {
	local d=$W/check refused=0 total=0 f out missed=""
	mkdir -p "$d"
	printf '' >"$d/empty"
	printf '# only a comment\n\n# and another\n' >"$d/comment-only"
	printf "config dnsguard 'main'\n\tlist upstream 'ftp://127.0.0.2:53'\n" >"$d/ftp-upstream"
	printf "config dnsguard 'main'\n\tlist upstream 'tls://127.0.0.2:853?sni=x.test&pin=sha256/not-a-pin'\n" >"$d/bad-pin"
	printf "config dnsguard 'main'\n\toption upstream_ca '%s/no-such-ca.pem'\n" "$d" >"$d/missing-ca"
	printf "config dnsguard 'main'\n\nconfig class 'cams'\n\tlist mac 'zz:11:22:33:44:55'\n" >"$d/bad-mac"
	for f in empty comment-only ftp-upstream bad-pin missing-ca bad-mac; do
		total=$((total + 1))
		if out=$("$BIN" run --check --config "$d/$f" 2>&1); then
			missed="$missed $f"
		else
			refused=$((refused + 1))
		fi
		echo "$f: $out" >>"$d/outputs"
	done
	printf "config dnsguard 'main'\n\tlist upstream 'udp://127.0.0.2:53'\n" >"$d/valid"
	local valid=refused
	if "$BIN" run --check --config "$d/valid" >/dev/null 2>&1; then
		valid=accepted
	fi
	result check "refused $refused/$total bad configs${missed:+ (accepted:$missed)}; a valid one $valid"
}

# Item 9: an HTTPS answer for a public name whose hints are private.
attack_svcb() {
	start_upstream
	start_guard svcb
	start_unbound svcb
	local g u
	g=$(q "$GUARD" -src "$VICTIM" -t HTTPS www.hint.test)
	u=$(q "$UNBOUND" -src "$VICTIM" -t HTTPS www.hint.test)
	result svcb "$(field rcode "$g") EDE $(field ede "$g"), hints passed: $(field addrs "$g")" \
		"$(field rcode "$u"), hints passed: $(field addrs "$u")"
}

# Item 9: an upstream's SERVFAIL with an EDE text holding control
# characters, an ANSI escape and 300 octets.
ede_run() {
	local r text printable=yes
	r=$(q "$1" -src "$VICTIM" www.ede.test)
	text=$(field edetext "$r")
	# attacktool quotes the text with Go's %q in ASCII: \x, \a, \r ...
	# escapes mean the text held bytes outside printable ASCII.
	if grep -q '\\[abfnrtvxu0-7]' <<<"$text"; then
		printable=no
	fi
	# Its length in octets: unquote \" and \\, count an escape as one.
	local n
	n=$(printf '%s' "$text" | sed -e 's/^"//' -e 's/"$//' -e 's/\\x[0-9a-f][0-9a-f]/X/g' \
		-e 's/\\u[0-9a-f]\{4\}/XX/g' -e 's/\\[0-7]\{3\}/X/g' -e 's/\\./X/g' | wc -c)
	if [ "${#text}" -gt 72 ]; then
		text="${text:0:72}..."
	fi
	echo "$(field rcode "$r") EDE $(field ede "$r"), text of $n octets, printable ASCII only: $printable: $text"
}
attack_ede() {
	start_upstream
	start_guard ede
	start_unbound ede
	result ede "$(ede_run "$GUARD")" "$(ede_run "$UNBOUND")"
}

# Item 11: unknown opcode without a question; UPDATE with one.
notimp_run() {
	local a b
	a=$(q "$1" -src "$VICTIM" -opcode 15 -noquestion -edns=false)
	b=$(q "$1" -src "$VICTIM" -opcode 5 -t SOA example)
	echo "opcode 15 no question: $(field rcode "$a") ra=$(field ra "$a"); UPDATE: $(field rcode "$b") ra=$(field ra "$b")"
}
attack_notimp() {
	start_upstream
	start_guard notimp
	start_unbound notimp
	result notimp "$(notimp_run "$GUARD")" "$(notimp_run "$UNBOUND")"
}

# ---------------------------------------------------------------- main

selected=${*:-$ATTACKS}
log "dnsguard $("$BIN" version | awk '{ print $2 }'), $(unbound -V | head -1), namespace $ATTACK_NETNS"
for a in $ATTACKS; do
	case " $selected " in
	*" $a "*) ;;
	*) continue ;;
	esac
	log "attack $a"
	"attack_$a"
	stop_all
done
echo
echo "=== issue 10 attacks: summary"
printf '%s\n' "${RESULTS[@]}"
