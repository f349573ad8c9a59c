#!/bin/bash
# accept-rate.sh — how many messages per second mxgated accepts, with
# Postfix's smtp-sink (which throws messages away) as the reference.
#
#     contrib/bench/accept-rate.sh
#     MXGATED=build-asan/src/mxgated MESSAGES=2000 contrib/bench/accept-rate.sh
#
# Builds nothing: the daemon is $MXGATED (default build/src/mxgated under
# the source tree).  Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink
# (Debian package postfix; contrib/install-deps.sh installs it).
#
# mxgated runs on a loopback port with a fresh queue in a temporary
# directory (log_level warn).  smtp-source sends MESSAGES (default 10000)
# messages of 1 KB (-l 1024) over 1, 10 and 50 parallel sessions (-s),
# once with a new connection per message and once with every message of a
# session on one connection (-d).  The same runs go to smtp-sink on another
# loopback port.  A table gives messages per second for both and the ratio.
# Afterwards the queue database must hold exactly as many messages as
# smtp-source delivered to mxgated: every 250 was a durable commit.
#
# By default (ACTION=paused) delivery is paused: what is measured is
# acceptance alone, as smtp-sink's figure is, every message committed and
# left queued.  ACTION=discard delivers to a "discard" route while
# accepting (the rows stay, delivery.keep_delivered, so the count covers
# them); ACTION=relay relays to an upstream that is never there (one
# failed attempt, then deferred for an hour).
# The loopback client is in trusted_networks, which skips the SPF lookup
# each MAIL would make (set SPF=1 to measure with it: then the DNS
# resolver's latency is part of the result).
#
# QUEUE_ON=DIR puts the queue in a fresh directory under DIR instead of
# the temporary one: QUEUE_ON=/dev/shm (tmpfs, where fdatasync costs
# nothing) shows what the disk's sync latency costs (not durable there).
#
# Each figure is the median of ROUNDS (default 3) runs; mxgated and
# smtp-sink take turns going first, and the last column shows each
# round's ratio (how noisy the machine was).
#
# Environment: MXGATED, MESSAGES, ROUNDS, SESSIONS (default "1 10 50"), WORKERS
# (default 0: one per CPU), ACTION=paused|discard|relay, SPF=1, QUEUE_ON,
# KEEP=1 to keep the temporary directories.
# Exit status: 0 when every run succeeded and every message is in the queue.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
MESSAGES=${MESSAGES:-10000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-1 10 50}
WORKERS=${WORKERS:-0}
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink

for prog in "$MXGATED" "$SOURCE" "$SINK"; do
	if [ ! -x "$prog" ]; then
		echo "accept-rate: $prog not found (build mxgate; apt-get install postfix)" >&2
		exit 2
	fi
done

. "$top/contrib/bench/common.sh"

dir=$(mktemp -d /tmp/mxgate-bench.XXXXXX)
chmod 0755 "$dir"
queue_dir=$dir/queue
if [ -n "${QUEUE_ON:-}" ]; then
	queue_dir=$(mktemp -d "$QUEUE_ON/mxgate-bench-queue.XXXXXX") || exit 2
	chmod 0777 "$queue_dir"
	queue_dir=$queue_dir/queue
fi
mx_pid=""
sink_pid=""
cleanup() {
	# Stop what we started, by pid, and wait for it.
	if [ -n "$mx_pid" ] && kill -0 "$mx_pid" 2>/dev/null; then
		kill -TERM "$mx_pid"
		for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mx_pid" 2>/dev/null
	fi
	if [ -n "$sink_pid" ] && kill -0 "$sink_pid" 2>/dev/null; then
		kill -TERM "$sink_pid"
		wait "$sink_pid" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $dir $queue_dir"
	else
		rm -rf "$dir"
		[ "$queue_dir" = "$dir/queue" ] || rm -rf "$(dirname "$queue_dir")"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Loopback clients are trusted unless SPF=1: the SPF lookup every MAIL
# otherwise makes would measure the DNS resolver, not mxgated.
trusted='trusted_networks = [ "127.0.0.0/8" ];'
if [ "${SPF:-0}" = 1 ]; then trusted=""; fi

ACTION=${ACTION:-paused}
if [ "$ACTION" = paused ]; then
	# Acceptance alone, as smtp-sink measures it: accepted, committed,
	# and left queued (delivery.paused).
	route='routes = ( { name = "bench"; rcpt = "@example\\.test$"; action = "discard"; } );
delivery = { paused = true; };'
elif [ "$ACTION" = relay ]; then
	# Relayed to an upstream that is never there, retried an hour later.
	route='upstreams = ( { name = "parked"; hosts = [ "127.0.0.1:9" ]; } );
routes = ( { name = "bench"; rcpt = "@example\\.test$"; action = "relay"; upstream = "parked"; } );
delivery = { retry_schedule = [ 3600 ]; };'
else
	# Delivered (discarded) messages stay in the queue for the final count.
	route='routes = ( { name = "bench"; rcpt = "@example\\.test$"; action = "discard"; } );
delivery = { keep_delivered = "1d"; };'
fi

mx_port=$(free_port)
sink_port=$(free_port)
while [ "$sink_port" = "$mx_port" ]; do sink_port=$(free_port); done

cat > "$dir/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "warn"; };
listen = ( { address = "127.0.0.1"; port = $mx_port; role = "mx"; } );
queue = { directory = "$queue_dir"; };
limits = { connections = 20000; connections_per_ip = 0; message_size = "10M"; };
$route
$trusted
EOF

"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated.log" 2>&1 &
mx_pid=$!
if ! wait_banner "$mx_port"; then
	echo "accept-rate: mxgated did not start; its log:" >&2
	cat "$dir/mxgated.log" >&2
	exit 1
fi

# smtp-sink: 1000 is its listen backlog; as root it wants a user to be.
sink_user=()
if [ "$(id -u)" -eq 0 ]; then sink_user=(-u nobody); fi
"$SINK" "${sink_user[@]}" "127.0.0.1:$sink_port" 1000 > "$dir/smtp-sink.log" 2>&1 &
sink_pid=$!
if ! wait_banner "$sink_port"; then
	echo "accept-rate: smtp-sink did not start" >&2
	cat "$dir/smtp-sink.log" >&2
	exit 1
fi

failures=0
mx_sent=0

printf '%d messages of 1 KB per run, mxgated workers=%s, route action %s%s, queue in %s\n\n' \
	"$MESSAGES" "$WORKERS" "$ACTION" "$([ "${SPF:-0}" = 1 ] && echo ", SPF on")" \
	"$(df --output=fstype "$(dirname "$queue_dir")" | tail -1)"
# median of the numbers given as arguments
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

printf '%-9s %-23s %15s %16s %6s  %s\n' sessions mode "mxgated msg/s" \
	"smtp-sink msg/s" ratio "each round"
for mode in per-message reuse; do
	for s in $SESSIONS; do
		label=$([ "$mode" = reuse ] && echo "one connection (-d)" || echo "connection per message")
		mxs=() sinks=() ratios=""
		# Rounds alternate which server goes first, so that a drift in
		# the machine's speed does not always favour the same one.
		for round in $(seq 1 "$ROUNDS"); do
			order="mx sink"
			[ $((round % 2)) = 0 ] && order="sink mx"
			for who in $order; do
				if [ "$who" = mx ]; then
					if mx=$(source_rate "$mx_port" "$s" "$mode"); then
						mx_sent=$((mx_sent + MESSAGES))
					else
						mx=0; failures=$((failures + 1))
					fi
				elif ! sink=$(source_rate "$sink_port" "$s" "$mode"); then
					sink=0; failures=$((failures + 1))
				fi
			done
			mxs+=("$mx") sinks+=("$sink")
			ratios="$ratios $(awk -v a="$mx" -v b="$sink" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		done
		mx=$(median "${mxs[@]}")
		sink=$(median "${sinks[@]}")
		ratio=$(awk -v a="$mx" -v b="$sink" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }')
		printf '%-9s %-23s %15s %16s %6s %s\n' "$s" "$label" "$mx" "$sink" "$ratio" "$ratios"
	done
done

# Stop mxgated cleanly, then count what it committed.
kill -TERM "$mx_pid"
for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mx_pid" 2>/dev/null; then
	echo "accept-rate: mxgated did not stop within 30 s" >&2
	failures=$((failures + 1))
fi
wait "$mx_pid" 2>/dev/null
mx_pid=""

queued=$(/usr/bin/python3 - "$queue_dir/queue.db" <<'EOF'
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(con.execute("SELECT count(*) FROM messages").fetchone()[0])
EOF
) || queued="?"
echo
echo "queued in SQLite: $queued of $mx_sent acknowledged"
if [ "$queued" != "$mx_sent" ]; then
	echo "accept-rate: FAIL: the queue does not hold every acknowledged message" >&2
	failures=$((failures + 1))
fi
if grep -qiE 'error|fatal' "$dir/mxgated.log"; then
	echo "mxgated logged errors:"
	grep -iE 'error|fatal' "$dir/mxgated.log" | head -20
fi
[ "$failures" -eq 0 ]
