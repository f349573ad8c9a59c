# common.sh — helpers the benchmark scripts source (not run on its own).
#
#   free_port       print a free TCP port on 127.0.0.1
#   wait_banner P   wait (at most 10 s) until 127.0.0.1:P greets with 220;
#                   exit status 0 if it did
#   now             the time in seconds, with nanoseconds
#   source_rate PORT SESSIONS MODE
#                   smtp-source ($SOURCE) sends $MESSAGES messages of 1 KB
#                   to 127.0.0.1:PORT over SESSIONS sessions, MODE "reuse"
#                   for one connection per session (-d); prints messages
#                   per second, or fails with smtp-source's last lines
#                   ($dir/smtp-source.out) on standard error

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_banner() {
	/usr/bin/python3 -c '
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1) as s:
            s.settimeout(1)
            if s.recv(512).startswith(b"220"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
' "$1"
}

now() { date +%s.%N; }

source_rate() {
	local port=$1 sessions=$2 mode=$3 t0 t1 opts=()
	if [ "$mode" = reuse ]; then opts=(-d); fi
	t0=$(now)
	if ! timeout 600 "$SOURCE" "${opts[@]}" -s "$sessions" -m "$MESSAGES" -l 1024 \
		-M bench.example -f sender@bench.example -t bob@example.test \
		"127.0.0.1:$port" > "$dir/smtp-source.out" 2>&1; then
		echo "$(basename "$0" .sh): smtp-source to port $port (-s $sessions $mode) failed:" >&2
		tail -5 "$dir/smtp-source.out" >&2
		return 1
	fi
	t1=$(now)
	awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}
