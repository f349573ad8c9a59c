#!/bin/bash
# fair-share.sh — 20 client addresses holding every connection they can,
# idle or dripping a byte at a time, and a fresh client from another
# address: is it still served, and how fast?
#
#     contrib/bench/fair-share.sh
#     CONNS=1000 HOLD=60 MXGATED=build/src/mxgated contrib/bench/fair-share.sh
#
# Builds nothing: the daemon is $MXGATED (default build/src/mxgated under
# the source tree).  Two runs, each with its own mxgated on a loopback
# port (limits.connections CONNS, default 1000; connections_per_ip 50;
# delivery paused), first the reference without the protections
# (limits.fair_share = 0, stress.threshold = 0), then the defaults
# (fair_share 10, stress at 80% with a 10 s command timeout):
#   - the attackers: 127.0.0.10 to 127.0.0.29, each keeping as many
#     connections open as it is given (at most ATTACK_PER_IP, default 50,
#     so 20 x 50 = every slot), half silent after the greeting, half
#     sending one byte every 2 s, never a whole command; a connection the
#     server closes or refuses is opened again (at most 20 tries a second
#     per address);
#   - after RAMP seconds (default 5), and then every second for HOLD
#     seconds (default 30), a fresh client from 127.0.0.99 connects,
#     waits for its 220, and sends one message (EHLO, MAIL, RCPT, DATA):
#     the time to the greeting and to the 250 after the message.
# It prints, per run, the connections the attackers held (least and most
# over the measurement), how many of the fresh client's tries were served,
# the median and worst time to the greeting and to the 250, and the
# master's stress and fair share log lines.  127.0.0.99 is in
# trusted_networks (no SPF lookup for its message); the attackers are not.
#
# Environment: MXGATED, CONNS, ATTACK_PER_IP, RAMP, HOLD, KEEP=1 to keep
# the temp dirs.  Exit status: 0 when, with the defaults, every try of the
# fresh client was greeted within a second and got its 250.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
MXGATED=${MXGATED:-$top/build/src/mxgated}
CONNS=${CONNS:-1000}
ATTACK_PER_IP=${ATTACK_PER_IP:-50}
RAMP=${RAMP:-5}
HOLD=${HOLD:-30}
. "$top/contrib/bench/common.sh"

if [ ! -x "$MXGATED" ]; then
	echo "fair-share: $MXGATED not found (build mxgate first)" >&2
	exit 2
fi
want=$((CONNS * 2 + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

dirs=()
mx_pid=""
stop_mx() {
	if [ -n "$mx_pid" ] && kill -0 "$mx_pid" 2>/dev/null; then
		kill -TERM "$mx_pid"
		for _ in $(seq 1 300); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mx_pid" 2>/dev/null
		wait "$mx_pid" 2>/dev/null
	fi
	mx_pid=""
}
cleanup() {
	stop_mx
	for d in "${dirs[@]}"; do
		if [ "${KEEP:-0}" = 1 ]; then echo "kept $d"; else rm -rf "$d"; fi
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run NAME FAIR_SHARE STRESS_THRESHOLD: one daemon, one measurement.
run() {
	local name=$1 fair=$2 stress=$3 dir port status
	dir=$(mktemp -d /tmp/mxgate-fair.XXXXXX)
	chmod 0755 "$dir"
	dirs+=("$dir")
	port=$(free_port)
	cat > "$dir/mxgate.conf" <<EOF
server = { hostname = "mx.bench.example"; user = "nobody"; log_level = "info"; };
listen = ( { address = "127.0.0.1"; port = $port; role = "mx"; } );
queue = { directory = "$dir/queue"; };
limits = { connections = $CONNS; connections_per_ip = 50; fair_share = $fair; };
stress = { threshold = $stress; };
delivery = { paused = true; };
trusted_networks = [ "127.0.0.99/32" ];
accept_domains = [ "example.test" ];
EOF
	"$MXGATED" -f -c "$dir/mxgate.conf" > "$dir/mxgated.log" 2>&1 &
	mx_pid=$!
	if ! wait_banner "$port"; then
		echo "fair-share: mxgated did not start:" >&2
		cat "$dir/mxgated.log" >&2
		return 2
	fi
	echo "== $name: limits.connections $CONNS, fair_share $fair, stress.threshold $stress"
	/usr/bin/python3 - "$port" "$ATTACK_PER_IP" "$RAMP" "$HOLD" <<'PYEOF'
import selectors
import socket
import statistics
import sys
import threading
import time

port, per_ip, ramp, hold = (int(a) for a in sys.argv[1:5])
ATTACKERS = ["127.0.0.%d" % i for i in range(10, 30)]
FRESH = "127.0.0.99"
stop = threading.Event()
held = {"now": 0, "min": None, "max": 0}
lock = threading.Lock()


class Attacker:
    """One address's connections: (re)opened, greeted, then idle or
    dripping."""

    def __init__(self, ip, sel):
        self.ip, self.sel = ip, sel
        self.conns = {}            # socket -> [greeted, buffer, drip]
        self.next_open = 0.0
        self.opened = 0

    def open_more(self, now):
        # Up to 20 tries a second once refused, as a bot would.
        while len(self.conns) < per_ip and now >= self.next_open:
            s = socket.socket()
            s.setblocking(False)
            s.bind((self.ip, 0))
            s.connect_ex(("127.0.0.1", port))
            self.opened += 1
            self.conns[s] = [False, b"", self.opened % 2 == 0]
            self.sel.register(s, selectors.EVENT_READ, self)

    def readable(self, s, now):
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        st = self.conns[s]
        if data and not st[0]:
            st[1] += data
            if b"\n" in st[1]:
                if st[1].startswith(b"220"):
                    st[0] = True
                else:
                    data = b""      # refused: 421
        if not data:
            self.sel.unregister(s)
            s.close()
            del self.conns[s]
            if not st[0]:
                self.next_open = now + 0.05

    def drip(self):
        for s, st in self.conns.items():
            if st[0] and st[2]:
                try:
                    s.send(b"X")
                except OSError:
                    pass

    def greeted(self):
        return sum(1 for st in self.conns.values() if st[0])


def attack():
    sel = selectors.DefaultSelector()
    bots = [Attacker(ip, sel) for ip in ATTACKERS]
    last_drip = 0.0
    while not stop.is_set():
        now = time.monotonic()
        for b in bots:
            b.open_more(now)
        for key, _ in sel.select(timeout=0.05):
            key.data.readable(key.fileobj, time.monotonic())
        if now - last_drip >= 2.0:
            for b in bots:
                b.drip()
            last_drip = now
        with lock:
            held["now"] = sum(b.greeted() for b in bots)
    for b in bots:
        for s in list(b.conns):
            s.close()


def fresh_client():
    """(seconds to the 220, seconds to the 250), None where it failed."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10,
                                     source_address=(FRESH, 0))
    except OSError:
        return None, None
    buf = b""

    def reply():
        nonlocal buf
        while True:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise EOFError
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line

    try:
        with s:
            if not reply().startswith(b"220"):
                return None, None
            banner = time.monotonic() - t0
            for cmd in (b"EHLO fresh.example", b"MAIL FROM:<a@sender.example>",
                        b"RCPT TO:<bob@example.test>", b"DATA"):
                s.sendall(cmd + b"\r\n")
                if reply()[:1] not in (b"2", b"3"):
                    return banner, None
            s.sendall(b"Subject: fair share\r\n\r\nstill served\r\n.\r\n")
            if not reply().startswith(b"250"):
                return banner, None
            done = time.monotonic() - t0
            s.sendall(b"QUIT\r\n")
            return banner, done
    except (OSError, EOFError):
        return None, None


t = threading.Thread(target=attack)
t.start()
time.sleep(ramp)
banners, dones, tries = [], [], 0
end = time.monotonic() + hold
while time.monotonic() < end:
    with lock:
        n = held["now"]
    held["min"] = n if held["min"] is None else min(held["min"], n)
    held["max"] = max(held["max"], n)
    tries += 1
    b, d = fresh_client()
    if b is not None:
        banners.append(b)
    if d is not None:
        dones.append(d)
    time.sleep(1.0)
stop.set()
t.join()


def ms(v):
    return "%.1f ms" % (v * 1000)


print("attackers held %d to %d connections while measured" %
      (held["min"] or 0, held["max"]))
print("fresh client from %s: %d tries, %d greeted, %d got the 250" %
      (FRESH, tries, len(banners), len(dones)))
if banners:
    print("  time to the 220: median %s, worst %s" %
          (ms(statistics.median(banners)), ms(max(banners))))
if dones:
    print("  time to the 250 after the message: median %s, worst %s" %
          (ms(statistics.median(dones)), ms(max(dones))))
ok = len(dones) == tries and banners and max(banners) < 1.0
print("RESULT: %s" % ("served" if ok else "NOT served every time"))
sys.exit(0 if ok else 1)
PYEOF
	status=$?
	grep -E "stress mode|computed" "$dir/mxgated.log" | sed -e 's/^/  log: /' | head -6
	echo "  log: $(grep -c "its fair share under stress" "$dir/mxgated.log") refusals for the fair share, $(grep -c "timeout (stress)" "$dir/mxgated.log") stress timeouts"
	stop_mx
	return $status
}

run "reference (no fair share, no stress mode)" 0 0
run "mxgate defaults" 10 80
