#!/usr/bin/python3
"""relay-rate.py — mxgate end to end against Postfix, in one run.

    contrib/bench/relay-rate.py
    MESSAGES=2000 ROUNDS=1 contrib/bench/relay-rate.py

Builds nothing: the daemon is $MXGATED (default build/src/mxgated under the
source tree).  Needs Debian's postfix package (smtp-source, smtp-sink and a
Postfix to run privately; contrib/install-deps.sh installs it) and root
(Postfix starts as root, as mxgated does).

Started side by side, each on its own loopback port:
  - smtp-sink, the upstream every relay delivers to (it stores nothing);
  - mxgated with delivery paused: acceptance alone (every message
    committed, left queued);
  - mxgated relaying every message to the sink (end to end);
  - a private Postfix (its own config_directory, queue_directory and
    data_directory in the temporary directory, an smtpd on a loopback
    port, relayhost = the sink, no local delivery): it never touches the
    system's Postfix, /etc/postfix or port 25.
For each column (BENCH_COLUMNS, default "10 10d 50d 1 100k": sessions, "d" for
every message of a session on one connection (-d), "k" for a size in KB
with 10 sessions), smtp-source sends MESSAGES (default 5000) messages of
1 KB to each server in turn; an end to end figure counts until the
server's queue is empty again (every message relayed and removed).  Each
figure is the median of ROUNDS (default 3), the order of the servers
rotating between rounds.

During the last round of each column it also reads, for each process of
the two relays, the CPU time (/proc/PID/stat) and the bytes written to
disk (/proc/PID/io write_bytes) and prints them per message, by process
role.  (Sampled every 100 ms: a process that exits between two samples
loses its last share; Postfix's reuse their processes, mxgate's live on.)
The same round gives the CPU of the load itself (smtp-source, and
smtp-sink receiving the relayed messages) and how busy the machine's
CPUs were (/proc/stat): the two runs' CPU per message, everything on the
machine counted, bound the end to end / accept only ratio when the CPUs
are the limit (README "Performance").

Environment: MXGATED, MESSAGES, ROUNDS, BENCH_COLUMNS, WORKERS (default 0),
MXGATE_DELIVERY (delivery settings for both mxgated),
KEEP=1 to keep the temporary directory.
Exit status: 0 when every run succeeded.
"""
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MXGATED = os.environ.get("MXGATED", os.path.join(TOP, "build/src/mxgated"))
MESSAGES = int(os.environ.get("MESSAGES", "5000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
COLUMNS = os.environ.get("BENCH_COLUMNS", "10 10d 50d 1 100k").split()
WORKERS = os.environ.get("WORKERS", "0")
# More delivery settings for both mxgated, e.g. MXGATE_DELIVERY='concurrency_per_destination = 20;'
MXGATE_DELIVERY = os.environ.get("MXGATE_DELIVERY", "")
SOURCE, SINK = "/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
DRAIN_TIMEOUT = 600


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as s:
                s.settimeout(2)
                if s.recv(512).startswith(b"220"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# ---- process trees, CPU and disk writes ----

def children_map():
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    st = f.read()
            except OSError:
                continue
            parent[int(name)] = int(st[st.rfind(")") + 2:].split()[1])
    return parent


def tree(root):
    parent = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def proc_sample(pid):
    """(role, cpu seconds, write_bytes) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        with open("/proc/%d/io" % pid) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("latin-1").strip()
    except (OSError, ValueError):
        return None
    fields = st[st.rfind(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    return role_of(cmd, st), cpu, int(io.get("write_bytes", 0))


def role_of(cmd, st):
    if cmd.startswith("mxgated:"):
        r = cmd[len("mxgated:"):].strip()
        for word in ("smtp worker", "delivery", "queue", "spawner", "lookup"):
            if r.startswith(word) or word in r.split(" ")[0:2]:
                return "mxgate " + word
        return "mxgate " + r.split(" ")[0]
    if "mxgated" in cmd:
        return "mxgate master"
    comm = st[st.find("(") + 1:st.rfind(")")]
    if comm == "smtp-sink":
        return "load smtp-sink"
    return "postfix " + comm


def cpu_ticks():
    """(busy, total) jiffies of every CPU of the machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]          # idle, iowait
    return sum(v[:8]) - idle, sum(v[:8])


class Sampler:
    """Per process of the trees: first and last (cpu, write_bytes)."""

    def __init__(self, roots):
        self.roots = roots
        self.first, self.last, self.role = {}, {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self, initial):
        for root in self.roots:
            for pid in tree(root):
                s = proc_sample(pid)
                if s is None:
                    continue
                self.role[pid] = s[0]
                if pid not in self.first:
                    self.first[pid] = (s[1], s[2]) if initial else (0.0, 0)
                self.last[pid] = (s[1], s[2])

    def run(self):
        while not self.stop.wait(0.1):
            self.sample(False)

    def __enter__(self):
        self.sample(True)
        self.ticks0 = cpu_ticks()
        self.source0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample(False)
        busy, total = cpu_ticks()
        self.busy = (busy - self.ticks0[0]) / max(1, total - self.ticks0[1])
        # smtp-source is the only child waited for meanwhile.
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.source_cpu = (r.ru_utime + r.ru_stime
                           - self.source0.ru_utime - self.source0.ru_stime)

    def by_role(self):
        out = {}
        for pid, (cpu1, wb1) in self.last.items():
            cpu0, wb0 = self.first[pid]
            cpu, wb = out.get(self.role[pid], (0.0, 0))
            out[self.role[pid]] = (cpu + cpu1 - cpu0, wb + wb1 - wb0)
        out["load smtp-source"] = (self.source_cpu, 0)
        return out


# ---- the servers ----

class Bench:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mxgate-relay-bench.")
        os.chmod(self.dir, 0o755)
        self.pids = []
        self.postfix_dir = None

    def spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=open(os.path.join(self.dir, log), "w"),
                             stderr=subprocess.STDOUT)
        self.pids.append(p)
        return p

    def start_sink(self):
        self.sink_port = free_port()
        user = ["-u", "nobody"] if os.getuid() == 0 else []
        self.sink = self.spawn([SINK] + user + ["127.0.0.1:%d" % self.sink_port, "1000"],
                               "smtp-sink.log")
        if not wait_banner(self.sink_port):
            sys.exit("relay-rate: smtp-sink did not start")

    def start_mxgated(self, name, paused):
        port = free_port()
        qdir = os.path.join(self.dir, name, "queue")
        os.makedirs(os.path.dirname(qdir))
        os.chmod(os.path.dirname(qdir), 0o755)
        if paused:
            route = ('routes = ( { name = "bench"; rcpt = "@example\\\\.test$"; action = "discard"; } );\n'
                     'delivery = { paused = true; %s };\n' % MXGATE_DELIVERY)
        else:
            route = ('upstreams = ( { name = "sink"; hosts = [ "127.0.0.1:%d" ]; tls = "none"; } );\n'
                     'routes = ( { name = "bench"; rcpt = "@example\\\\.test$"; action = "relay";'
                     ' upstream = "sink"; } );\n'
                     'delivery = { %s };\n' % (self.sink_port, MXGATE_DELIVERY))
        conf = os.path.join(self.dir, name, "mxgate.conf")
        with open(conf, "w") as f:
            f.write('server = { hostname = "mx.bench.example"; user = "nobody"; workers = %s;'
                    ' log_level = "warn"; };\n' % WORKERS)
            f.write('listen = ( { address = "127.0.0.1"; port = %d; role = "mx"; } );\n' % port)
            f.write('queue = { directory = "%s"; };\n' % qdir)
            f.write('limits = { connections = 20000; connections_per_ip = 0;'
                    ' message_size = "10M"; };\n')
            f.write('trusted_networks = [ "127.0.0.0/8" ];\n')
            f.write(route)
        p = self.spawn([MXGATED, "-f", "-c", conf], name + ".log")
        if not wait_banner(port):
            sys.stderr.write(open(os.path.join(self.dir, name + ".log")).read())
            sys.exit("relay-rate: mxgated (%s) did not start" % name)
        return port, p.pid, os.path.join(qdir, "queue.db")

    def start_postfix(self):
        """A private Postfix: nothing of the system's but its programs."""
        base = os.path.join(self.dir, "postfix")
        etc, spool, data = (os.path.join(base, d) for d in ("etc", "spool", "data"))
        for d in (etc, spool, data):
            os.makedirs(d)
        os.chmod(base, 0o755)
        shutil.chown(data, "postfix", "postfix")
        self.postfix_port = free_port()
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write("""compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
myhostname = postfix.bench.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
smtpd_relay_restrictions = permit_mynetworks, reject
local_transport = error:no local delivery here
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
message_size_limit = 10485760
""".format(etc=etc, spool=spool, data=data, sink=self.sink_port, base=base))
        # The system's master.cf with our listener instead of port 25,
        # and no chroot (the private queue has no chroot files).
        lines = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                w = line.split()
                if w and not line[0].isspace() and not line.startswith("#"):
                    if len(w) >= 8 and w[1] == "inet":
                        continue
                    if len(w) >= 8:
                        w[4] = "n"
                        line = " ".join(w) + "\n"
                lines.append(line)
        lines.append("127.0.0.1:%d inet n - n - - smtpd\n" % self.postfix_port)
        lines.append("postlog unix-dgram n - n - 1 postlogd\n")
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.writelines(l for l in lines if not l.startswith("postlog "))
            f.write(lines[-1])
        self.postfix_dir = etc
        self.postfix_spool = spool
        r = subprocess.run([POSTFIX, "-c", etc, "start"], capture_output=True, text=True)
        if r.returncode != 0 or not wait_banner(self.postfix_port):
            sys.exit("relay-rate: the private postfix did not start: %s %s"
                     % (r.stdout, r.stderr))
        with open(os.path.join(data, "master.lock")) as f:
            self.postfix_master = int(f.read().split()[0])

    def stop(self):
        if self.postfix_dir is not None:
            subprocess.run([POSTFIX, "-c", self.postfix_dir, "stop"], capture_output=True)
        for p in self.pids:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if os.environ.get("KEEP") == "1":
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def mx_queued(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        con.close()


def postfix_queued(spool):
    n = 0
    for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _, _, files in os.walk(os.path.join(spool, sub)):
            n += len(files)
    return n


def send(port, column):
    """smtp-source per column; seconds it took, or None."""
    sessions, opts, size = column.rstrip("dk"), [], 1024
    if column.endswith("d"):
        opts.append("-d")
    if column.endswith("k"):
        size, sessions = int(column[:-1]) * 1024, "10"
    argv = [SOURCE] + opts + ["-s", sessions, "-m", str(MESSAGES), "-l", str(size),
                              "-M", "bench.example", "-f", "sender@bench.example",
                              "-t", "bob@example.test", "127.0.0.1:%d" % port]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, timeout=DRAIN_TIMEOUT)
    if r.returncode != 0:
        sys.stderr.write("relay-rate: smtp-source %s: %s\n" % (column, r.stderr.decode()[-300:]))
        return None
    return time.monotonic() - t0


def drain(count, t0):
    """Wait until count() is 0; the seconds since t0, or None."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if count() == 0:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def label(column):
    if column.endswith("k"):
        return "%s KB, 10 sess" % column[:-1]
    return "%s sess%s" % (column.rstrip("d"), " -d" if column.endswith("d") else "")


def main():
    for prog in (MXGATED, SOURCE, SINK, POSTFIX):
        if not os.access(prog, os.X_OK):
            sys.exit("relay-rate: %s not found (build mxgate; apt-get install postfix)" % prog)
    if os.getuid() != 0:
        sys.exit("relay-rate: run as root (Postfix and mxgated start as root)")
    b = Bench()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
    failures = 0
    try:
        b.start_sink()
        pa_port, pa_pid, pa_db = b.start_mxgated("paused", True)
        mx_port, mx_pid, mx_db = b.start_mxgated("relay", False)
        b.start_postfix()
        print("%d messages per run, %d round%s (median), mxgated workers=%s, queue on %s"
              % (MESSAGES, ROUNDS, "" if ROUNDS == 1 else "s", WORKERS,
                 subprocess.run(["df", "--output=fstype", b.dir], capture_output=True,
                                text=True).stdout.split()[-1]))
        servers = {
            "sink": lambda c: send(b.sink_port, c),
            "accept": lambda c: send(pa_port, c),
            "mxgate": None,
            "postfix": None,
        }
        results = {name: {} for name in servers}
        costs, busy = {}, {}

        def end_to_end(port, count, column):
            t0 = time.monotonic()
            if send(port, column) is None:
                return None
            return drain(count, t0)

        servers["mxgate"] = lambda c: end_to_end(mx_port, lambda: mx_queued(mx_db), c)
        servers["postfix"] = lambda c: end_to_end(b.postfix_port,
                                                  lambda: postfix_queued(b.postfix_spool), c)
        order = list(servers)
        for column in COLUMNS:
            for rnd in range(ROUNDS):
                names = order[rnd % len(order):] + order[:rnd % len(order)]
                for name in names:
                    last = rnd == ROUNDS - 1 and name != "sink"
                    roots = {"accept": [pa_pid], "mxgate": [mx_pid, b.sink.pid],
                             "postfix": [b.postfix_master, b.sink.pid]}.get(name)
                    if last:
                        with Sampler(roots) as smp:
                            took = servers[name](column)
                        costs[(column, name)] = smp.by_role()
                        busy[(column, name)] = smp.busy
                    else:
                        took = servers[name](column)
                    if took is None:
                        failures += 1
                        rate = 0
                    else:
                        rate = MESSAGES / took
                    results[name].setdefault(column, []).append(rate)
                    sys.stdout.write(".")
                    sys.stdout.flush()
        print("\n")
        med = {n: {c: statistics.median(v) for c, v in r.items()} for n, r in results.items()}
        names = [("sink", "smtp-sink (no storage, no relay)"),
                 ("accept", "mxgate, delivery paused (accept only)"),
                 ("mxgate", "mxgate, relaying (end to end)"),
                 ("postfix", "Postfix, relaying (end to end)")]
        head = "| msg/s | " + " | ".join(label(c) for c in COLUMNS) + " |"
        print(head)
        print("|---" * (len(COLUMNS) + 1) + "|")
        for n, title in names:
            print("| %s | %s |" % (title, " | ".join("{:,.0f}".format(med[n][c]) for c in COLUMNS)))
        print("| end to end / accept only | %s |" % " | ".join(
            "%.2f" % (med["mxgate"][c] / med["accept"][c]) if med["accept"][c] else "-"
            for c in COLUMNS))
        print("| mxgate / Postfix end to end | %s |" % " | ".join(
            "%.1f" % (med["mxgate"][c] / med["postfix"][c]) if med["postfix"][c] else "-"
            for c in COLUMNS))
        print("\nPer message, last round of each column: CPU ms and KB written to disk,"
              " by process role")
        for column in COLUMNS:
            for name in ("accept", "mxgate", "postfix"):
                roles = {r: v for r, v in costs.get((column, name), {}).items()
                         if not r.startswith("load ")}
                total_cpu = sum(v[0] for v in roles.values())
                total_wb = sum(v[1] for v in roles.values())
                parts = ", ".join("%s %.3f ms %.1f KB" % (r.split(" ", 1)[1],
                                  1000 * v[0] / MESSAGES, v[1] / 1024 / MESSAGES)
                                  for r, v in sorted(roles.items()) if v[0] > 0 or v[1] > 0)
                print("  %-14s %-8s total %.3f ms CPU, %.1f KB written: %s"
                      % (label(column), name, 1000 * total_cpu / MESSAGES,
                         total_wb / 1024 / MESSAGES, parts))
        print("\nThe whole machine per message, last round: CPU ms of the server and of"
              " the load (smtp-source sending, smtp-sink receiving the relayed messages),"
              " and how busy its CPUs were")
        for column in COLUMNS:
            whole = {}
            for name in ("accept", "mxgate", "postfix"):
                roles = costs.get((column, name), {})
                load = {r.split(" ", 1)[1]: 1000 * v[0] / MESSAGES
                        for r, v in roles.items() if r.startswith("load ")}
                server = sum(1000 * v[0] / MESSAGES for r, v in roles.items()
                             if not r.startswith("load "))
                whole[name] = server + sum(load.values())
                print("  %-14s %-8s %.3f ms: server %.3f, %s; CPUs %.0f%% busy"
                      % (label(column), name, whole[name], server,
                         ", ".join("%s %.3f" % kv for kv in sorted(load.items())),
                         100 * busy.get((column, name), 0)))
            if whole.get("mxgate"):
                # Equal CPU use in both runs would make the rates inverse
                # to the CPU per message.
                print("  %-14s %-8s accept only / end to end CPU per message = %.2f"
                      % (label(column), "", whole["accept"] / whole["mxgate"]))
    finally:
        b.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
