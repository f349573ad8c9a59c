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
# their 220 greeting and then stay silent.  The clients come from many
# loopback addresses (127.0.0.2 and up, SOURCE_CONNS (20000) each), so
# that 100,000 of them do not run out of ephemeral ports.  With all of
# them open it measures
#   - the memory of mxgated: VmRSS from /proc/PID/status and Pss from
#     /proc/PID/smaps_rollup (shared pages divided among their sharers),
#     summed over the master and all its children, before and after, and
#     what one idle session costs (the growth of the PSS sum / CONNS),
#     against SESSION_LIMIT_KB (4);
#   - the total RSS, against RSS_LIMIT_MB (default 64 + 4 KB per
#     connection);
#   - the time a fresh client waits for its 220 greeting (median of 5),
#     against 100 ms.
# Everything is bounded in time (connecting at most 120 s + 1 s per 1000).
#
#     CONNS=100000 contrib/bench/idle-conns.sh
#
# Environment: MXGATED, CONNS, WORKERS (default 0: one per CPU),
# RSS_LIMIT_MB, SESSION_LIMIT_KB (4), BANNER_LIMIT_MS (100), SOURCE_CONNS,
# KEEP=1 to keep the temp dir.
# Exit status: 0 when every connection was greeted and both limits hold.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
CONNS=${CONNS:-5000}
WORKERS=${WORKERS:-0}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-$((64 + CONNS * 4 / 1024))}
SESSION_LIMIT_KB=${SESSION_LIMIT_KB:-4}
SOURCE_CONNS=${SOURCE_CONNS:-20000}
BANNER_LIMIT_MS=${BANNER_LIMIT_MS:-100}

if [ ! -x "$MXGATED" ]; then
	echo "idle-conns: $MXGATED not found (build mxgate first)" >&2
	exit 2
fi

want=$((CONNS + 1000 > 65536 ? CONNS + 1000 : 65536))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
	if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
		ulimit -Hn "$want" 2>/dev/null || true
	fi
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
echo "open files limit: $(ulimit -n)"
# Each session is a descriptor in one worker: with a limit we cannot
# raise (a container without CAP_SYS_RESOURCE), more workers share them.
if [ "$(ulimit -n)" != unlimited ] && [ "$WORKERS" = 0 ]; then
	per=$(( $(ulimit -n) - 1000 ))
	need=$(( (CONNS + per - 1) / per ))
	[ "$need" -gt "$(nproc)" ] && WORKERS=$need
fi
w=$WORKERS; [ "$w" = 0 ] && w=$(nproc)
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNS / w + 100)) ]; then
	echo "idle-conns: ulimit -n $(ulimit -n) is too low for $CONNS connections" >&2
	exit 2
fi
echo "workers: $w"


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
limits = { connections = $((CONNS + 100)); connections_per_ip = 0; };
timeouts = { command = 600; };
accept_domains = [ "example.test" ];
EOF

"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated.log" 2>&1 &
mx_pid=$!

/usr/bin/python3 - "$port" "$mx_pid" "$CONNS" "$RSS_LIMIT_MB" "$BANNER_LIMIT_MS" \
	"$SESSION_LIMIT_KB" "$SOURCE_CONNS" <<'PYEOF'
import json
import os
import selectors
import socket
import statistics
import sys
import time

port, master, nconns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rss_limit_mb, banner_limit_ms = float(sys.argv[4]), float(sys.argv[5])
session_limit_kb, source_conns = float(sys.argv[6]), int(sys.argv[7])
IP_BIND_ADDRESS_NO_PORT = 24
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


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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
pss_before = sum(pss_kb(p) for p in family(master))


def open_idle(n, source, deadline):
    """Open n connections from 127.0.0.<source> (the next address every
    source_conns), at most 500 waiting for a greeting at a time; returns
    (greeted sockets, failures, reasons)."""
    sel = selectors.DefaultSelector()
    greeted, pending, failed, reasons = [], {}, 0, {}
    opened = 0
    while len(greeted) < n and time.monotonic() < deadline:
        while len(pending) < 500 and opened < n + failed and opened < 2 * n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            # The port is chosen at connect(), for this address and the
            # server's: a source address holds ~28,000 clients.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(("127.0.0.%d" % (source + opened // source_conns), 0))
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
    for s in list(pending):
        sel.unregister(s)
        s.close()
    return greeted, failed, reasons


# One process holds at most CLIENT_CONNS connections (a descriptor
# limit that a container may not let us raise); more take several
# client processes, each from its own source addresses, which report
# and then hold their connections until told to let go.
CLIENT_CONNS = 15000
t0 = time.monotonic()
deadline = t0 + 120 + nconns / 1000
greeted, failed, reasons, holders = [], 0, {}, []
if nconns <= CLIENT_CONNS:
    greeted, failed, reasons = open_idle(nconns, 2, deadline)
    ngreeted = len(greeted)
else:
    ngreeted = 0
    nclients = (nconns + CLIENT_CONNS - 1) // CLIENT_CONNS
    per_source = max(1, (CLIENT_CONNS + source_conns - 1) // source_conns)
    for k in range(nclients):
        share = nconns // nclients + (1 if k < nconns % nclients else 0)
        rd, wr = os.pipe()
        hold_rd, hold_wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            os.close(hold_wr)
            # Only the parent may hold a holder's pipe open.
            for _, prd, phold in holders:
                os.close(prd)
                os.close(phold)
            g, f, r = open_idle(share, 2 + k * per_source, deadline)
            os.write(wr, (json.dumps([len(g), f, r]) + "\n").encode())
            os.read(hold_rd, 1)       # until the parent closes it
            os._exit(0)
        os.close(wr)
        os.close(hold_rd)
        holders.append((pid, rd, hold_wr))
    for pid, rd, _ in holders:
        with os.fdopen(rd) as f:
            line = f.readline()
        if line:
            g, f_, r = json.loads(line)
            ngreeted += g
            failed += f_
            for why, c in r.items():
                reasons[why] = reasons.get(why, 0) + c
connect_time = time.monotonic() - t0

time.sleep(1.0)   # let the workers settle after the burst
pids = family(master)
rss = {p: rss_kb(p) for p in pids}
total_mb = sum(rss.values()) / 1024.0
pss = {p: pss_kb(p) for p in pids}
pss_total_mb = sum(pss.values()) / 1024.0
per_session_kb = (sum(pss.values()) - pss_before) / max(ngreeted, 1)
times = [banner_time(5.0) for _ in range(5)]
ok_times = [t * 1000 for t in times if t is not None]

print("idle connections greeted: %d of %d (%d failed, %.1fs to open)"
      % (ngreeted, nconns, failed, connect_time))
for why, n in sorted(reasons.items(), key=lambda x: -x[1]):
    print("  %5d refused: %s" % (n, why))
print("mxgated processes:")
for p in pids:
    print("  %7d %-20s RSS %8.1f MB  PSS %8.1f MB" % (p, title(p), rss[p] / 1024.0, pss[p] / 1024.0))
print("total RSS: %.1f MB (%.1f MB before the connections)"
      % (total_mb, rss_before / 1024.0))
print("total PSS: %.1f MB (%.1f MB before): %.2f KB per idle session"
      % (pss_total_mb, pss_before / 1024.0, per_session_kb))
if ok_times:
    med = statistics.median(ok_times)
    print("fresh client greeting: median %.1f ms, max %.1f ms (%d of 5 answered)"
          % (med, max(ok_times), len(ok_times)))
else:
    med = None
    print("fresh client greeting: no answer")

ok = True
if ngreeted < nconns:
    print("FAIL: only %d of %d connections were greeted" % (ngreeted, nconns))
    ok = False
if per_session_kb <= session_limit_kb:
    print("PASS: %.2f KB per idle session <= %.1f KB" % (per_session_kb, session_limit_kb))
else:
    print("FAIL: %.2f KB per idle session > %.1f KB" % (per_session_kb, session_limit_kb))
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
for pid, _, hold in holders:
    os.close(hold)
for pid, _, _ in holders:
    os.waitpid(pid, 0)
sys.exit(0 if ok else 1)
PYEOF
status=$?
if grep -qiE 'error|fatal' "$dir/mxgated.log"; then
	echo "mxgated logged errors:"
	grep -iE 'error|fatal' "$dir/mxgated.log" | head -20
fi
exit "$status"
