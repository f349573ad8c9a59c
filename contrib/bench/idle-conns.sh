#!/bin/bash
# idle-conns.sh — what thousands of idle clients cost mxgated: memory, and
# the wait of a fresh client for its greeting.
#
#     contrib/bench/idle-conns.sh
#     CONNS=10000 MXGATED=build/src/mxgated contrib/bench/idle-conns.sh
#
# Builds nothing: the daemon is $MXGATED (default build/src/mxgated under
# the source tree).  Raises the open-file limit (ulimit -n 65536; as root
# the hard limit too), starts mxgated on a loopback port with a fresh queue
# (limits.connections 20000, connections_per_ip 0 = unlimited, log_level
# warn), then opens CONNS (default 5000) TCP connections that each read
# their 220 greeting and then stay silent.  With all of them open it
# measures
#   - the total resident memory of mxgated: VmRSS from /proc/PID/status,
#     summed over the master and all its children (shared pages are counted
#     once per process, so this is an upper bound), against 256 MB;
#   - the time a fresh client waits for its 220 greeting (median of 5),
#     against 100 ms.
# Everything is bounded in time (connecting at most 120 s).
#
# Environment: MXGATED, CONNS, WORKERS (default 0: one per CPU),
# RSS_LIMIT_MB (256), BANNER_LIMIT_MS (100), KEEP=1 to keep the temp dir.
# Exit status: 0 when every connection was greeted and both limits hold.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
CONNS=${CONNS:-5000}
WORKERS=${WORKERS:-0}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-256}
BANNER_LIMIT_MS=${BANNER_LIMIT_MS:-100}

if [ ! -x "$MXGATED" ]; then
	echo "idle-conns: $MXGATED not found (build mxgate first)" >&2
	exit 2
fi

want=65536
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
	if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
		ulimit -Hn "$want" 2>/dev/null || true
	fi
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
echo "open files limit: $(ulimit -n)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNS + 100)) ]; then
	echo "idle-conns: ulimit -n $(ulimit -n) is too low for $CONNS connections" >&2
	exit 2
fi

dir=$(mktemp -d /tmp/mxgate-idle.XXXXXX)
chmod 0755 "$dir"
mx_pid=""
cleanup() {
	if [ -n "$mx_pid" ] && kill -0 "$mx_pid" 2>/dev/null; then
		kill -TERM "$mx_pid"
		for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mx_pid" 2>/dev/null
		wait "$mx_pid" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $dir"
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat > "$dir/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; workers = $WORKERS; log_level = "warn"; };
listen = ( { address = "127.0.0.1"; port = $port; role = "mx"; } );
queue = { directory = "$dir/queue"; };
limits = { connections = 20000; connections_per_ip = 0; };
timeouts = { command = 600; };
accept_domains = [ "example.test" ];
EOF

"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated.log" 2>&1 &
mx_pid=$!

/usr/bin/python3 - "$port" "$mx_pid" "$CONNS" "$RSS_LIMIT_MB" "$BANNER_LIMIT_MS" <<'PYEOF'
import os
import selectors
import socket
import statistics
import sys
import time

port, master, nconns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rss_limit_mb, banner_limit_ms = float(sys.argv[4]), float(sys.argv[5])
ADDR = ("127.0.0.1", port)


def banner_time(timeout=5.0):
    """Seconds from connect() to a complete 220 line, or None."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(ADDR, timeout) as s:
            s.settimeout(timeout)
            data = b""
            while b"\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    return None
                data += chunk
            if not data.startswith(b"220"):
                return None
            took = time.monotonic() - t0
            s.sendall(b"QUIT\r\n")
            return took
    except OSError:
        return None


def family(pid):
    """The master and every descendant, from /proc."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    stat = f.read()
            except OSError:
                continue
            parent[int(name)] = int(stat[stat.rfind(")") + 2:].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


# Wait for the daemon (at most 10 s).
deadline = time.monotonic() + 10
while banner_time(1.0) is None:
    if time.monotonic() > deadline:
        sys.exit("idle-conns: mxgated gives no 220 greeting")
    time.sleep(0.1)

rss_before = sum(rss_kb(p) for p in family(master))

# Open the idle connections, at most 500 waiting for a greeting at a time.
sel = selectors.DefaultSelector()
greeted, pending, failed, reasons = [], {}, 0, {}
opened = 0
t0 = time.monotonic()
deadline = t0 + 120
while len(greeted) < nconns and time.monotonic() < deadline:
    while len(pending) < 500 and opened < nconns + failed and opened < 2 * nconns:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(ADDR)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
        opened += 1
    if not pending:
        break
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            chunk = s.recv(512)
        except OSError:
            chunk = b""
        if chunk:
            pending[s] += chunk
            if b"\n" not in pending[s]:
                continue
        sel.unregister(s)
        data = pending.pop(s)
        if data.startswith(b"220"):
            greeted.append(s)
        else:
            failed += 1
            why = data.split(b"\r\n")[0][:60].decode("latin-1") or "closed"
            reasons[why] = reasons.get(why, 0) + 1
            s.close()
connect_time = time.monotonic() - t0
for s in list(pending):
    sel.unregister(s)
    s.close()

time.sleep(1.0)   # let the workers settle after the burst
pids = family(master)
rss = {p: rss_kb(p) for p in pids}
total_mb = sum(rss.values()) / 1024.0
times = [banner_time(5.0) for _ in range(5)]
ok_times = [t * 1000 for t in times if t is not None]

print("idle connections greeted: %d of %d (%d failed, %.1fs to open)"
      % (len(greeted), nconns, failed, connect_time))
for why, n in sorted(reasons.items(), key=lambda x: -x[1]):
    print("  %5d refused: %s" % (n, why))
print("mxgated processes:")
for p in pids:
    print("  %7d %-20s %8.1f MB" % (p, title(p), rss[p] / 1024.0))
print("total RSS: %.1f MB (%.1f MB before the connections)"
      % (total_mb, rss_before / 1024.0))
if ok_times:
    med = statistics.median(ok_times)
    print("fresh client greeting: median %.1f ms, max %.1f ms (%d of 5 answered)"
          % (med, max(ok_times), len(ok_times)))
else:
    med = None
    print("fresh client greeting: no answer")

ok = True
if len(greeted) < nconns:
    print("FAIL: only %d of %d connections were greeted" % (len(greeted), nconns))
    ok = False
if total_mb < rss_limit_mb:
    print("PASS: memory %.1f MB < %.0f MB" % (total_mb, rss_limit_mb))
else:
    print("FAIL: memory %.1f MB >= %.0f MB" % (total_mb, rss_limit_mb))
    ok = False
if med is not None and med < banner_limit_ms and len(ok_times) == 5:
    print("PASS: greeting %.1f ms < %.0f ms" % (med, banner_limit_ms))
else:
    print("FAIL: greeting %s ms, limit %.0f ms"
          % ("-" if med is None else "%.1f" % med, banner_limit_ms))
    ok = False
for s in greeted:
    s.close()
sys.exit(0 if ok else 1)
PYEOF
status=$?
if grep -qiE 'error|fatal' "$dir/mxgated.log"; then
	echo "mxgated logged errors:"
	grep -iE 'error|fatal' "$dir/mxgated.log" | head -20
fi
exit "$status"
