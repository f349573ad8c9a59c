#!/bin/bash
# accept-upstream-down.sh — does a dead upstream slow acceptance down?
#
#     contrib/bench/accept-upstream-down.sh
#     MXGATED=build/src/mxgated MESSAGES=5000 ROUNDS=5 contrib/bench/accept-upstream-down.sh
#
# mxgated relays everything for example.test to one upstream.  smtp-source
# (Postfix) sends MESSAGES (default 10000) messages of 1 KB over SESSIONS
# (default 10) parallel sessions, a new connection per message (MODE=reuse:
# one connection per session, -d), twice per round:
#   up    the upstream is Postfix's smtp-sink: delivery runs alongside
#         acceptance (forks, connections, outcomes, deletions);
#   down  nothing listens on the upstream's port: every delivery attempt
#         fails and the recipients are deferred (written back, retried
#         later).
# Each run starts a fresh mxgated with an empty queue in a temporary
# directory.  The script prints acceptance in messages per second for both
# (each round, then the median), and the ratio down/up: the issue asks that
# acceptance with the upstream down be within 10% of it with the upstream
# up (ratio >= 0.90).  It also checks, after each run, that no acknowledged
# message was lost: "up" runs wait (up to 60 s) until every message was
# delivered to smtp-sink and removed; "down" runs count the deferred ones.
#
# Environment: MXGATED, MESSAGES, SESSIONS, ROUNDS (default 3), MODE
# (per-message | reuse), WORKERS (default 0: one per CPU), KEEP=1 to keep
# the temporary directory, NETNS=0 to run in the host's network.
# Exit status: 0 when every run succeeded, nothing was lost and the median
# ratio is at least 0.90; 1 otherwise; 2 when a program is missing.

set -u

# In a private network namespace (as root): loopback only, and a resolver
# (127.0.0.1, where nothing listens) that fails at once.  Otherwise the
# SPF lookups at MAIL FROM wait for whatever /etc/resolv.conf names, and
# DNS timeouts, not delivery, decide the figures.  NETNS=0 to skip.
if [ "${NETNS:-1}" = 1 ] && [ -z "${MXGATE_BENCH_NETNS:-}" ] &&
    [ "$(id -u)" -eq 0 ] && command -v unshare > /dev/null; then
	export MXGATE_BENCH_NETNS=1
	exec unshare --mount --net -- "$0" "$@"
fi

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-10}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-per-message}
WORKERS=${WORKERS:-0}
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink

for prog in "$MXGATED" "$SOURCE" "$SINK"; do
	if [ ! -x "$prog" ]; then
		echo "accept-upstream-down: $prog not found (build mxgate; apt-get install postfix)" >&2
		exit 2
	fi
done

. "$top/contrib/bench/common.sh"

# query DB SQL: one number from the queue (read-only).
query() {
	/usr/bin/python3 - "$1" "$2" <<'EOF'
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
print(con.execute(sys.argv[2]).fetchone()[0])
EOF
}

dir=$(mktemp -d /tmp/mxgate-bench.XXXXXX)
chmod 0755 "$dir"
mx_pid=""
sink_pid=""

stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid"
	for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

cleanup() {
	stop_pid "$mx_pid"
	stop_pid "$sink_pid"
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $dir"
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${MXGATE_BENCH_NETNS:-}" ]; then
	ip link set lo up
	printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$dir/resolv.conf"
	mount --bind "$dir/resolv.conf" /etc/resolv.conf
fi

up_port=$(free_port)
sink_user=()
if [ "$(id -u)" -eq 0 ]; then sink_user=(-u nobody); fi

start_sink() {
	"$SINK" "${sink_user[@]}" "127.0.0.1:$up_port" 1000 > "$dir/smtp-sink.log" 2>&1 &
	sink_pid=$!
	if ! wait_banner "$up_port"; then
		echo "accept-upstream-down: smtp-sink did not start" >&2
		cat "$dir/smtp-sink.log" >&2
		exit 1
	fi
}

# start_mx NAME: a fresh mxgated with its queue in $dir/NAME.
start_mx() {
	local run=$dir/$1
	mkdir -p "$run"
	chmod 0755 "$run"
	mx_port=$(free_port)
	while [ "$mx_port" = "$up_port" ]; do mx_port=$(free_port); done
	cat > "$run/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "warn"; };
listen = ( { address = "127.0.0.1"; port = $mx_port; role = "mx"; } );
queue = { directory = "$run/queue"; };
limits = { connections = 20000; connections_per_ip = 0; message_size = "10M"; };
routes = ( { name = "relayed"; rcpt = "@example\\\\.test\$"; action = "relay"; upstream = "up"; } );
upstreams = ( { name = "up"; hosts = [ "127.0.0.1:$up_port" ]; tls = "none"; } );
EOF
	"$MXGATED" -f -c "$run/mxgate.conf" > "$run/mxgated.log" 2>&1 &
	mx_pid=$!
	if ! wait_banner "$mx_port"; then
		echo "accept-upstream-down: mxgated did not start; its log:" >&2
		cat "$run/mxgated.log" >&2
		exit 1
	fi
}

failures=0
ups=()
downs=()

# one_run up|down ROUND -> appends the rate, checks the queue
one_run() {
	local kind=$1 round=$2 rate db left deferred
	if [ "$kind" = up ]; then start_sink; fi
	start_mx "$kind-$round"
	db=$dir/$kind-$round/queue/queue.db
	if ! rate=$(source_rate "$mx_port" "$SESSIONS" "$MODE"); then
		failures=$((failures + 1))
		rate=0
	fi
	if [ "$kind" = up ]; then
		# Every message delivered and removed (keep_delivered = 0).
		for _ in $(seq 1 600); do
			left=$(query "$db" "SELECT count(*) FROM messages") || left="?"
			[ "$left" = 0 ] && break
			sleep 0.1
		done
		if [ "$left" != 0 ]; then
			echo "accept-upstream-down: up run $round: $left messages not delivered after 60 s" >&2
			failures=$((failures + 1))
		fi
		ups+=("$rate")
	else
		deferred=$(query "$db" "SELECT count(DISTINCT message_id) FROM recipients WHERE state IN ('deferred', 'delivering', 'queued')") || deferred="?"
		if [ "$deferred" != "$MESSAGES" ]; then
			echo "accept-upstream-down: down run $round: $deferred of $MESSAGES messages waiting in the queue" >&2
			failures=$((failures + 1))
		fi
		downs+=("$rate")
	fi
	stop_pid "$mx_pid"
	mx_pid=""
	if grep -qiE ' error: |fatal' "$dir/$kind-$round/mxgated.log"; then
		echo "accept-upstream-down: mxgated ($kind, round $round) logged errors:" >&2
		grep -iE ' error: |fatal' "$dir/$kind-$round/mxgated.log" | head -5 >&2
	fi
	if [ "$kind" = up ]; then
		stop_pid "$sink_pid"
		sink_pid=""
	fi
	printf '%-6s %-5s %10s msg/s\n' "$round" "$kind" "$rate"
}

median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

printf '%d messages of 1 KB per run, %d sessions, %s, mxgated workers=%s\n\n' \
    "$MESSAGES" "$SESSIONS" "$MODE" "$WORKERS"
printf '%-6s %-5s %16s\n' round upstream acceptance
for round in $(seq 1 "$ROUNDS"); do
	one_run up "$round"
	one_run down "$round"
done

up=$(median "${ups[@]}")
down=$(median "${downs[@]}")
ratio=$(awk -v a="$down" -v b="$up" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "0" }')
echo
printf 'median acceptance, upstream up:   %s msg/s\n' "$up"
printf 'median acceptance, upstream down: %s msg/s\n' "$down"
printf 'ratio down/up: %s (within 10%%: >= 0.90)\n' "$ratio"
if awk -v r="$ratio" 'BEGIN { exit !(r < 0.90) }'; then
	echo "accept-upstream-down: FAIL: acceptance with the upstream down is more than 10% slower" >&2
	failures=$((failures + 1))
fi
[ "$failures" -eq 0 ]
