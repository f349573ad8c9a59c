#!/bin/bash
# metrics-cost.sh — what the metrics, the richer logs and the history
# cost acceptance, "on" against "off" in one run, in two variants:
#
#   paused      delivery paused: acceptance alone, as accept-rate.sh
#               measures it.
#               on:  metrics.listen set and scraped every second while
#                    the load runs, server.log_format = "json"
#               off: no metrics.listen, server.log_format = "text"
#   delivering  as users run it: every message relayed to Postfix's
#               smtp-sink on a free loopback port while the load runs.
#               on-text: metrics.listen (scraped each second),
#                        queue.keep_history = "1d", log_format "text"
#               on-json: the same with log_format "json"
#               off:     no metrics.listen, queue.keep_history = 0,
#                        log_format "text"
#               (history rows are written in the same transactions as
#               the state they describe whatever keep_history says: "off"
#               forgets them within a minute, "on" keeps them a day.)
#
# all at log_level info (every reception, refusal and delivery logged, to
# a file).
#
#     contrib/bench/metrics-cost.sh
#     VARIANTS=delivering MESSAGES=5000 ROUNDS=5 contrib/bench/metrics-cost.sh
#
# Each run starts mxgated on a fresh queue with one configuration, sends
# MESSAGES (default 4000) messages of 1 KB with smtp-source over SESSIONS
# (default 10) sessions, a new connection per message and then (paused
# only) one connection per session (-d), and stops it; the runs of a round
# take the configurations in turn, each round starting with the next one
# (ABAB...), so that the machine's noise hits every side.  One daemon at
# a time on the same port and paths: two side by side showed a bias of
# 10 % between identical configurations.  Figures are medians of ROUNDS
# (default 3): messages per second seen by smtp-source (ratio on/off:
# 1.00 no cost, the budget 0.95) and the daemon's CPU per message, user
# and system, all its processes (delivering: delivery children included,
# until the queue is empty) (ratio on/off, the budget 1.05).  On a shared
# machine the throughput swings by more than the budget from run to run;
# the CPU per message is the steadier figure.  Paused: every queue must
# hold every acknowledged message; delivering: every message must have
# reached the sink and left the queue; with metrics, the last scrape must
# count them all.
#
# Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink (Debian package
# postfix) and curl.
# Environment: MXGATED, MESSAGES, ROUNDS, SESSIONS, WORKERS, KEEP=1;
# VARIANTS (default "paused delivering"); paused only: ON_FORMAT (default
# json), ON_METRICS=0, SCRAPE=0 take a part out of "on", to see what each
# costs.
# Exit status: 0 when every run succeeded and no message was lost.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
MESSAGES=${MESSAGES:-4000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-10}
WORKERS=${WORKERS:-0}
VARIANTS=${VARIANTS:-paused delivering}
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink

for prog in "$MXGATED" "$SOURCE" "$SINK" /usr/bin/curl; do
	if [ ! -x "$prog" ]; then
		echo "metrics-cost: $prog not found (build mxgate; apt-get install postfix curl)" >&2
		exit 2
	fi
done
for v in $VARIANTS; do
	case $v in paused|delivering) ;;
	*) echo "metrics-cost: VARIANTS: \"$v\" is neither paused nor delivering" >&2; exit 2 ;;
	esac
done

. "$top/contrib/bench/common.sh"

dir=$(mktemp -d /tmp/mxgate-bench.XXXXXX)
chmod 0755 "$dir"
mx_pid="" scraper_pid="" sink_pid=""
stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid"
	for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
stop_daemon() {
	if [ -n "$scraper_pid" ]; then
		kill "$scraper_pid" 2>/dev/null
		wait "$scraper_pid" 2>/dev/null
		scraper_pid=""
	fi
	stop_pid "$mx_pid"
	mx_pid=""
}
cleanup() {
	stop_daemon
	stop_pid "$sink_pid"
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
metrics_port=$(free_port)
while [ "$metrics_port" = "$port" ]; do metrics_port=$(free_port); done
sink_port=$(free_port)
while [ "$sink_port" = "$port" ] || [ "$sink_port" = "$metrics_port" ]; do
	sink_port=$(free_port)
done
sink_user=()
if [ "$(id -u)" -eq 0 ]; then sink_user=(-u nobody); fi
failures=0

# metrics_on WHO: whether that side runs the exporter
metrics_on() {
	case $1 in
	off) return 1 ;;
	on) [ "${ON_METRICS:-1}" = 1 ] ;;
	*) return 0 ;;
	esac
}

# config VARIANT WHO: the configuration of one side, on a fresh queue.
# paused: on | off; delivering: on-text | on-json | off.
config() {
	local variant=$1 who=$2 format=text metrics="" history=0 delivery
	# paused: nothing leaves the queue, history or not
	[ "$variant" = paused ] && history=1d
	case $who in
	on) format=${ON_FORMAT:-json} ;;
	on-text) history=1d ;;
	on-json) format=json history=1d ;;
	esac
	if metrics_on "$who"; then
		metrics="metrics = { listen = \"127.0.0.1:$metrics_port\"; };"
	fi
	if [ "$variant" = paused ]; then
		delivery='routes = ( { name = "bench"; rcpt = "@example\\.test$"; action = "discard"; } );
delivery = { paused = true; };'
	else
		delivery="routes = ( { name = \"bench\"; rcpt = \"@example\\\\.test\$\"; action = \"relay\"; upstream = \"sink\"; } );
upstreams = ( { name = \"sink\"; hosts = [ \"127.0.0.1:$sink_port\" ]; tls = \"none\"; } );"
	fi
	rm -rf "$dir/queue"
	cat > "$dir/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "info"; log_format = "$format"; };
listen = ( { address = "127.0.0.1"; port = $port; role = "mx"; } );
queue = { directory = "$dir/queue"; keep_history = "$history"; };
limits = { connections = 20000; connections_per_ip = 0; message_size = "10M"; };
$delivery
trusted_networks = [ "127.0.0.0/8" ];
$metrics
EOF
}

# cpu PID: user + system CPU of the daemon (the master and every process
# under it, and the children they reaped: delivery processes), in
# microseconds.
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
        total += sum(int(x) for x in fields[11:15])
    except OSError:
        pass
print(total * 1000000 // tick)
' "$1"
}

# per_message C0 C1: microseconds of CPU per message
per_message() {
	awk -v c="$(($2 - $1))" -v n="$MESSAGES" 'BEGIN { printf "%.1f", c / n }'
}

# query SQL: one number from the queue (read-only).
query() {
	/usr/bin/python3 - "$dir/queue/queue.db" "$1" <<'EOF'
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
print(con.execute(sys.argv[2]).fetchone()[0])
EOF
}

# scraped SERIES: its value now (an integer; empty if absent)
scraped() {
	curl -s "http://127.0.0.1:$metrics_port/metrics" |
		awk -v s="$1" '$1 == s { printf "%d", $2 }'
}

start_daemon() {
	local variant=$1 who=$2
	config "$variant" "$who"
	"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated-$variant-$who.log" 2>&1 &
	mx_pid=$!
	if ! wait_banner "$port"; then
		echo "metrics-cost: mxgated ($variant, $who) did not start" >&2
		cat "$dir/mxgated-$variant-$who.log" >&2
		exit 1
	fi
	if metrics_on "$who" && [ "${SCRAPE:-1}" = 1 ]; then
		# A scraper as Prometheus would be, a little more eager.
		( while :; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done ) &
		scraper_pid=$!
	fi
}

start_sink() {
	"$SINK" -c "${sink_user[@]}" "127.0.0.1:$sink_port" 1000 > "$dir/smtp-sink.out" 2>&1 &
	sink_pid=$!
	if ! wait_banner "$sink_port"; then
		echo "metrics-cost: smtp-sink did not start" >&2
		cat "$dir/smtp-sink.out" >&2
		exit 1
	fi
}

# sink_count: the messages smtp-sink received, from its running counters
# (-c: "sess=N quit=N mesg=N" lines ended by CR), read once it has stopped.
sink_count() {
	tr '\r' '\n' < "$dir/smtp-sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}

declare -A rate cpuus
# record KEY "RATE CPU"
record() {
	rate[$1]="${rate[$1]:-} ${2% *}"
	cpuus[$1]="${cpuus[$1]:-} ${2#* }"
}

# measure_paused WHO: one daemon's runs, both modes
measure_paused() {
	local who=$1 sent=0 r mode s c0 c1 seen queued
	start_daemon paused "$who"
	for mode in per-message reuse; do
		for s in $SESSIONS; do
			c0=$(cpu "$mx_pid")
			if r=$(source_rate "$port" "$s" "$mode"); then
				sent=$((sent + MESSAGES))
				c1=$(cpu "$mx_pid")
				r="$r $(per_message "$c0" "$c1")"
			else
				r="0 0"; failures=$((failures + 1))
			fi
			record "paused,$who,$mode,$s" "$r"
		done
	done
	seen=$sent
	if metrics_on "$who"; then
		seen=$(scraped mxgate_messages_accepted_total)
	fi
	stop_daemon
	queued=$(query "SELECT count(*) FROM messages") || queued="?"
	if [ "$queued" != "$sent" ] || [ "$seen" != "$sent" ]; then
		echo "metrics-cost: FAIL (paused, $who): $sent acknowledged, $queued queued, $seen scraped" >&2
		failures=$((failures + 1))
	fi
}

# measure_delivering WHO: a daemon per run, each with a fresh smtp-sink;
# its CPU counted until the queue is empty (every delivery done).
measure_delivering() {
	local who=$1 r s left c0 c1 accepted delivered got
	for s in $SESSIONS; do
		start_sink
		start_daemon delivering "$who"
		c0=$(cpu "$mx_pid")
		if ! r=$(source_rate "$port" "$s" per-message); then
			r=0; failures=$((failures + 1))
		fi
		left="?"
		for _ in $(seq 1 1200); do
			left=$(query "SELECT count(*) FROM messages") || left="?"
			[ "$left" = 0 ] && break
			sleep 0.1
		done
		c1=$(cpu "$mx_pid")
		record "delivering,$who,per-message,$s" "$r $(per_message "$c0" "$c1")"
		accepted=$MESSAGES delivered=$MESSAGES
		if metrics_on "$who"; then
			accepted=$(scraped mxgate_messages_accepted_total)
			delivered=$(scraped 'mxgate_deliveries_total{outcome="delivered",destination="[127.0.0.1]:'"$sink_port"'"}')
		fi
		stop_daemon
		stop_pid "$sink_pid"
		sink_pid=""
		got=$(sink_count)
		if [ "$left" != 0 ] || [ "${got:-?}" != "$MESSAGES" ] ||
		    [ "$accepted" != "$MESSAGES" ] || [ "$delivered" != "$MESSAGES" ]; then
			echo "metrics-cost: FAIL (delivering, $who): $MESSAGES sent, ${got:-?} at the sink, $left left in the queue; scraped: $accepted accepted, $delivered delivered" >&2
			failures=$((failures + 1))
		fi
	done
}

median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'
}

# row VARIANT ON OFF MODE SESSIONS LABEL
row() {
	local key_on=$1,$2,$4,$5 key_off=$1,$3,$4,$5 on off onc offc
	on=$(median ${rate[$key_on]}) off=$(median ${rate[$key_off]})
	onc=$(median ${cpuus[$key_on]}) offc=$(median ${cpuus[$key_off]})
	printf '%-9s %-23s %-8s %8s %8s %6s  %8s %8s %6s\n' "$5" "$6" "$2" \
		"$on" "$off" "$(ratio "$on" "$off")" "$onc" "$offc" "$(ratio "$onc" "$offc")"
	printf '%-42s rounds: msg/s%s / off%s; us/msg%s / off%s\n' "" \
		"${rate[$key_on]}" "${rate[$key_off]}" "${cpuus[$key_on]}" "${cpuus[$key_off]}"
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "load average at the start: $(load)"
for variant in $VARIANTS; do
	if [ "$variant" = paused ]; then sides=(on off); else sides=(off on-text on-json); fi
	n=${#sides[@]}
	for round in $(seq 1 "$ROUNDS"); do
		# Each round starts with the next side: every side goes first
		# as often as the others (ABAB...).
		for k in $(seq 0 $((n - 1))); do
			"measure_$variant" "${sides[$(((round - 1 + k) % n))]}"
		done
	done
done
echo "load average at the end: $(load)"

for variant in $VARIANTS; do
	echo
	if [ "$variant" = paused ]; then
		printf '%d messages of 1 KB per run, workers=%s, delivery paused, median of %d rounds\n' \
			"$MESSAGES" "$WORKERS" "$ROUNDS"
		printf 'on: metrics.listen (scraped each second) + log_format %s; off: neither\n\n' \
			"${ON_FORMAT:-json}"
	else
		printf '%d messages of 1 KB per run, workers=%s, relayed to smtp-sink, median of %d rounds\n' \
			"$MESSAGES" "$WORKERS" "$ROUNDS"
		printf 'on-FORMAT: metrics.listen (scraped each second), keep_history 1d, log_format FORMAT;\n'
		printf 'off: no metrics, keep_history 0, log_format text; CPU until the queue is empty\n\n'
	fi
	printf '%-9s %-23s %-8s %8s %8s %6s  %8s %8s %6s\n' sessions mode side \
		"msg/s" "off" "ratio" "us/msg" "off" "ratio"
	for mode in per-message reuse; do
		[ "$variant" = delivering ] && [ "$mode" = reuse ] && continue
		label=$([ "$mode" = reuse ] && echo "one connection (-d)" || echo "connection per message")
		for s in $SESSIONS; do
			if [ "$variant" = paused ]; then
				row paused on off "$mode" "$s" "$label"
			else
				row delivering on-text off "$mode" "$s" "$label"
				row delivering on-json off "$mode" "$s" "$label"
			fi
		done
	done
done
[ "$failures" -eq 0 ]
