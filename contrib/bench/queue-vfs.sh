#!/bin/bash
# queue-vfs.sh — does the queue VFS (src/queue/queue_vfs.c) pay for
# itself?  The same load with it and with SQLite's stock VFS, in one
# session, side by side.
#
#     contrib/bench/queue-vfs.sh
#     MESSAGES=20000 SESSIONS=20 ROUNDS=5 contrib/bench/queue-vfs.sh
#
# Builds nothing: the daemon is $MXGATED (default build/src/mxgated under
# the source tree).  Needs /usr/sbin/smtp-source (Debian package postfix).
#
# Each round starts mxgated twice on a loopback port, each time with a
# fresh queue (delivery paused: acceptance alone, every message committed
# and left queued), once with the queue VFS and once with the stock one
# (MXGATE_QUEUE_VFS=stock, queue_vfs.h); the rounds alternate which goes
# first.  smtp-source sends MESSAGES (default 10000) messages of 1 KB over
# SESSIONS (default 10) parallel sessions, one connection each (-d).
# Measured, per run:
#   - msg/s at the client;
#   - the queue process's system and user CPU per message (utime and
#     stime of /proc/PID/stat over the run);
#   - its mean commit time, sync included, and the messages per batch
#     (the "stopped:" line it logs at SIGTERM).
# The table gives the median of the rounds for each VFS and the ratio
# queue VFS / stock (below 1: the queue VFS costs less).  Afterwards each
# queue must hold exactly as many messages as were acknowledged.
#
# QUEUE_ON=DIR puts the queues under DIR instead of the temporary
# directory (e.g. /dev/shm: tmpfs, where the sync costs nothing).
#
# Environment: MXGATED, MESSAGES, SESSIONS, ROUNDS (default 3), WORKERS
# (default 0: one per CPU), QUEUE_ON, KEEP=1 to keep the temporary
# directory.  Exit status: 0 when every run succeeded and every
# acknowledged message is in its queue.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-10}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-0}
SOURCE=/usr/sbin/smtp-source

for prog in "$MXGATED" "$SOURCE"; do
	if [ ! -x "$prog" ]; then
		echo "queue-vfs: $prog not found (build mxgate; apt-get install postfix)" >&2
		exit 2
	fi
done

. "$top/contrib/bench/common.sh"

dir=$(mktemp -d /tmp/mxgate-bench.XXXXXX)
chmod 0755 "$dir"
queue_base=$dir
if [ -n "${QUEUE_ON:-}" ]; then
	queue_base=$(mktemp -d "$QUEUE_ON/mxgate-bench-queue.XXXXXX") || exit 2
	chmod 0777 "$queue_base"
fi
mx_pid=""
cleanup() {
	# Stop what we started, by pid, and wait for it.
	if [ -n "$mx_pid" ] && kill -0 "$mx_pid" 2>/dev/null; then
		kill -TERM "$mx_pid"
		for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mx_pid" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $dir $queue_base"
	else
		rm -rf "$dir"
		[ "$queue_base" = "$dir" ] || rm -rf "$queue_base"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

clk_tck=$(getconf CLK_TCK)
failures=0

# The queue process of the mxgated whose pid is $1: the child titled so.
queue_pid() {
	local p
	for p in $(pgrep -P "$1"); do
		if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q '^mxgated: queue'; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# utime and stime of a process, in clock ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}

# run VFS N: one run; prints "msg/s sys_us user_us commit_us per_batch"
run() {
	local vfs=$1 n=$2 qdir port log t0 t1 qpid before after stopped
	qdir=$queue_base/queue-$vfs-$n
	port=$(free_port)
	log=$dir/mxgated-$vfs-$n.log
	cat > "$dir/mxgate-$vfs-$n.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "info"; };
listen = ( { address = "127.0.0.1"; port = $port; role = "mx"; } );
queue = { directory = "$qdir"; };
limits = { connections = 20000; connections_per_ip = 0; message_size = "10M"; };
routes = ( { name = "bench"; rcpt = "@example\\.test\$"; action = "discard"; } );
delivery = { paused = true; };
trusted_networks = [ "127.0.0.0/8" ];
EOF
	if [ "$vfs" = stock ]; then
		MXGATE_QUEUE_VFS=stock "$MXGATED" -f -c "$dir/mxgate-$vfs-$n.conf" > "$log" 2>&1 &
	else
		env -u MXGATE_QUEUE_VFS "$MXGATED" -f -c "$dir/mxgate-$vfs-$n.conf" > "$log" 2>&1 &
	fi
	mx_pid=$!
	if ! wait_banner "$port"; then
		echo "queue-vfs: mxgated did not start; its log:" >&2
		cat "$log" >&2
		return 1
	fi
	for _ in $(seq 1 50); do qpid=$(queue_pid "$mx_pid") && break; sleep 0.1; done
	if [ -z "${qpid:-}" ]; then
		echo "queue-vfs: no queue process" >&2
		return 1
	fi
	before=$(cpu_ticks "$qpid")
	t0=$(now)
	if ! timeout 600 "$SOURCE" -d -s "$SESSIONS" -m "$MESSAGES" -l 1024 \
		-M bench.example -f sender@bench.example -t bob@example.test \
		"127.0.0.1:$port" > "$dir/smtp-source.out" 2>&1; then
		echo "queue-vfs: smtp-source ($vfs) failed:" >&2
		tail -5 "$dir/smtp-source.out" >&2
		return 1
	fi
	t1=$(now)
	after=$(cpu_ticks "$qpid")
	kill -TERM "$mx_pid"
	for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
	wait "$mx_pid" 2>/dev/null
	mx_pid=""
	if [ "$vfs" = stock ] && ! grep -q "stock VFS" "$log"; then
		echo "queue-vfs: the stock run did not use the stock VFS" >&2
		return 1
	fi
	queued=$(/usr/bin/python3 - "$qdir/queue.db" <<'EOF'
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(con.execute("SELECT count(*) FROM messages").fetchone()[0])
EOF
) || queued="?"
	if [ "$queued" != "$MESSAGES" ]; then
		echo "queue-vfs: FAIL: $vfs queue holds $queued of $MESSAGES acknowledged messages" >&2
		return 1
	fi
	stopped=$(grep -o 'stopped: [0-9]* messages in [0-9]* batches, [0-9.]* us per commit' "$log" | tail -1)
	awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" -v before="$before" \
	    -v after="$after" -v hz="$clk_tck" -v stopped="$stopped" 'BEGIN {
		split(before, x, " "); split(after, y, " ")
		split(stopped, s, " ")      # stopped: M messages in B batches, C us ...
		printf "%.0f %.1f %.1f %s %.1f\n", n / (b - a),
		    (y[2] - x[2]) * 1e6 / hz / n, (y[1] - x[1]) * 1e6 / hz / n,
		    s[7], (s[5] > 0 ? s[2] / s[5] : 0)
	}'
}

# median of the numbers given as arguments
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

printf '%d messages of 1 KB per run over %d sessions, %d rounds, queue on %s, SQLite %s\n\n' \
	"$MESSAGES" "$SESSIONS" "$ROUNDS" \
	"$(df --output=fstype "$queue_base" | tail -1)" \
	"$(/usr/bin/python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')"

declare -A col
for round in $(seq 1 "$ROUNDS"); do
	order="queue stock"
	[ $((round % 2)) = 0 ] && order="stock queue"
	for vfs in $order; do
		if ! out=$(run "$vfs" "$round"); then
			failures=$((failures + 1))
			continue
		fi
		read -r rate sys user commit batch <<<"$out"
		printf 'round %d %-5s  %6s msg/s  sys %6s us/msg  user %6s us/msg  commit %7s us  %6s msg/batch\n' \
			"$round" "$vfs" "$rate" "$sys" "$user" "$commit" "$batch"
		col[$vfs-rate]="${col[$vfs-rate]:-} $rate"
		col[$vfs-sys]="${col[$vfs-sys]:-} $sys"
		col[$vfs-user]="${col[$vfs-user]:-} $user"
		col[$vfs-commit]="${col[$vfs-commit]:-} $commit"
		col[$vfs-batch]="${col[$vfs-batch]:-} $batch"
	done
done

echo
printf '%-34s %12s %12s %8s\n' "median" "queue VFS" "stock VFS" "ratio"
for m in "rate:client msg/s" "sys:queue system CPU us/msg" \
	"user:queue user CPU us/msg" "commit:mean commit us (sync incl.)" \
	"batch:messages per batch"; do
	key=${m%%:*} label=${m#*:}
	# shellcheck disable=SC2086
	q=$(median ${col[queue-$key]:-0})
	# shellcheck disable=SC2086
	s=$(median ${col[stock-$key]:-0})
	ratio=$(awk -v a="$q" -v b="$s" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')
	printf '%-34s %12s %12s %8s\n' "$label" "$q" "$s" "$ratio"
done
[ "$failures" -eq 0 ]
