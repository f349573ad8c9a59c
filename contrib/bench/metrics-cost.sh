#!/bin/bash
# metrics-cost.sh — what the metrics and the richer logs cost acceptance,
# "on" against "off" in one run:
#
#   on:  metrics.listen set and scraped every second while the load runs,
#        server.log_format = "json"
#   off: no metrics.listen, server.log_format = "text"
#
# both at log_level info (every reception and refusal logged, to a file),
# delivery paused (acceptance alone, as accept-rate.sh measures it).
#
#     contrib/bench/metrics-cost.sh
#     MESSAGES=5000 ROUNDS=5 contrib/bench/metrics-cost.sh
#
# Each round starts mxgated on a fresh queue with one configuration,
# sends MESSAGES (default 4000) messages of 1 KB with smtp-source over
# SESSIONS (default 10) sessions, a new connection per message and then
# one connection per session (-d), and stops it; then the same with the
# other configuration (the rounds alternate which goes first).  One
# daemon at a time on the same port and paths: two side by side showed
# a bias of 10 % between identical configurations.  Figures are medians
# of ROUNDS (default 3): messages per second (ratio on/off: 1.00 no
# cost, the budget 0.95) and the daemon's CPU per message, user and
# system, all its processes (ratio on/off, the budget 1.05).  On a
# shared machine the throughput swings by more than the budget from run
# to run; the CPU per message is the steadier figure.  Every queue must
# hold every acknowledged message, and the last scrape must count them.
#
# Needs /usr/sbin/smtp-source (Debian package postfix) and curl.
# Environment: MXGATED, MESSAGES, ROUNDS, SESSIONS, WORKERS, KEEP=1;
# ON_FORMAT (default json), ON_METRICS=0, SCRAPE=0 take a part out of
# "on", to see what each costs.
# Exit status: 0 when every run succeeded and every message is queued.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
MESSAGES=${MESSAGES:-4000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-10}
WORKERS=${WORKERS:-0}
SOURCE=/usr/sbin/smtp-source

for prog in "$MXGATED" "$SOURCE" /usr/bin/curl; do
	if [ ! -x "$prog" ]; then
		echo "metrics-cost: $prog not found (build mxgate; apt-get install postfix curl)" >&2
		exit 2
	fi
done

. "$top/contrib/bench/common.sh"

dir=$(mktemp -d /tmp/mxgate-bench.XXXXXX)
chmod 0755 "$dir"
mx_pid="" scraper_pid=""
stop_daemon() {
	if [ -n "$scraper_pid" ]; then
		kill "$scraper_pid" 2>/dev/null
		wait "$scraper_pid" 2>/dev/null
		scraper_pid=""
	fi
	if [ -n "$mx_pid" ] && kill -0 "$mx_pid" 2>/dev/null; then
		kill -TERM "$mx_pid"
		for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mx_pid" 2>/dev/null
		wait "$mx_pid" 2>/dev/null
	fi
	mx_pid=""
}
cleanup() {
	stop_daemon
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
metrics_port=$(free_port)
while [ "$metrics_port" = "$port" ]; do metrics_port=$(free_port); done
failures=0

# config WHO: the configuration of "on" or "off", on a fresh queue
config() {
	local format=text metrics=""
	if [ "$1" = on ]; then
		format=${ON_FORMAT:-json}
		[ "${ON_METRICS:-1}" = 1 ] &&
			metrics="metrics = { listen = \"127.0.0.1:$metrics_port\"; };"
	fi
	rm -rf "$dir/queue"
	cat > "$dir/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "info"; log_format = "$format"; };
listen = ( { address = "127.0.0.1"; port = $port; role = "mx"; } );
queue = { directory = "$dir/queue"; };
limits = { connections = 20000; connections_per_ip = 0; message_size = "10M"; };
routes = ( { name = "bench"; rcpt = "@example\\.test$"; action = "discard"; } );
delivery = { paused = true; };
trusted_networks = [ "127.0.0.0/8" ];
$metrics
EOF
}

# cpu PID: user + system CPU of the daemon (the master and every process
# under it), in microseconds.
cpu() {
	/usr/bin/python3 -c '
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def tree(pid):
    out = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            for c in f.read().split():
                out += tree(int(c))
    except OSError:
        pass
    return out
total = 0
for p in tree(int(sys.argv[1])):
    try:
        with open("/proc/%d/stat" % p) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print(total * 1000000 // tick)
' "$1"
}

# run SESSIONS MODE -> "msg/s cpu-us-per-message"
run() {
	local sessions=$1 mode=$2 t0 t1 c0 c1 opts=()
	if [ "$mode" = reuse ]; then opts=(-d); fi
	c0=$(cpu "$mx_pid")
	t0=$(now)
	if ! timeout 600 "$SOURCE" "${opts[@]}" -s "$sessions" -m "$MESSAGES" -l 1024 \
		-M bench.example -f sender@bench.example -t bob@example.test \
		"127.0.0.1:$port" > "$dir/smtp-source.out" 2>&1; then
		echo "metrics-cost: smtp-source failed:" >&2
		tail -5 "$dir/smtp-source.out" >&2
		return 1
	fi
	t1=$(now)
	c1=$(cpu "$mx_pid")
	awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" \
		'BEGIN { printf "%.0f %.1f", n / (b - a), c / n }'
}

count() {
	/usr/bin/python3 -c '
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(con.execute("SELECT count(*) FROM messages").fetchone()[0])
' "$1"
}

declare -A rate cpuus
# measure WHO ROUND: one daemon's runs, appended to rate[WHO,MODE]
measure() {
	local who=$1 sent=0 r mode s scraped queued
	config "$who"
	"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated-$who.log" 2>&1 &
	mx_pid=$!
	if ! wait_banner "$port"; then
		echo "metrics-cost: mxgated ($who) did not start" >&2
		cat "$dir/mxgated-$who.log" >&2
		exit 1
	fi
	if [ "$who" = on ] && [ "${ON_METRICS:-1}" = 1 ] && [ "${SCRAPE:-1}" = 1 ]; then
		# A scraper as Prometheus would be, a little more eager.
		( while :; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done ) &
		scraper_pid=$!
	fi
	for mode in per-message reuse; do
		for s in $SESSIONS; do
			if r=$(run "$s" "$mode"); then
				sent=$((sent + MESSAGES))
			else
				r="0 0"; failures=$((failures + 1))
			fi
			rate[$who,$mode,$s]="${rate[$who,$mode,$s]:-} ${r% *}"
			cpuus[$who,$mode,$s]="${cpuus[$who,$mode,$s]:-} ${r#* }"
		done
	done
	scraped=$sent
	if [ "$who" = on ] && [ "${ON_METRICS:-1}" = 1 ]; then
		scraped=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
			awk '$1 == "mxgate_messages_accepted_total" { print $2 }')
	fi
	stop_daemon
	queued=$(count "$dir/queue/queue.db") || queued="?"
	if [ "$queued" != "$sent" ] || [ "$scraped" != "$sent" ]; then
		echo "metrics-cost: FAIL ($who): $sent acknowledged, $queued queued, $scraped scraped" >&2
		failures=$((failures + 1))
	fi
}

median() {
	printf '%s\n' $@ | sort -n | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then measure on; measure off
	else measure off; measure on; fi
done

printf '%d messages of 1 KB per run, workers=%s, delivery paused, median of %d rounds\n' \
	"$MESSAGES" "$WORKERS" "$ROUNDS"
printf 'on: metrics.listen (scraped each second) + log_format json; off: neither\n\n'
printf '%-9s %-23s %9s %9s %6s  %9s %9s %6s\n' sessions mode \
	"on msg/s" "off" "ratio" "on us/msg" "off" "ratio"
for mode in per-message reuse; do
	for s in $SESSIONS; do
		label=$([ "$mode" = reuse ] && echo "one connection (-d)" || echo "connection per message")
		on=$(median ${rate[on,$mode,$s]}) off=$(median ${rate[off,$mode,$s]})
		onc=$(median ${cpuus[on,$mode,$s]}) offc=$(median ${cpuus[off,$mode,$s]})
		printf '%-9s %-23s %9s %9s %6s  %9s %9s %6s\n' "$s" "$label" \
			"$on" "$off" "$(awk -v a="$on" -v b="$off" 'BEGIN { if (b > 0) printf "%.3f", a / b }')" \
			"$onc" "$offc" "$(awk -v a="$onc" -v b="$offc" 'BEGIN { if (b > 0) printf "%.3f", a / b }')"
		printf '%-33s rounds: msg/s on%s / off%s; us/msg on%s / off%s\n' "" \
			"${rate[on,$mode,$s]}" "${rate[off,$mode,$s]}" \
			"${cpuus[on,$mode,$s]}" "${cpuus[off,$mode,$s]}"
	done
done
[ "$failures" -eq 0 ]
