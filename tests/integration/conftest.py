"""Integration tests: the real mxgated on loopback, driven by real clients.

The daemon under test is $MXGATED (default: build/src/mxgated under the
source tree) and the control tool $MXGATECTL (default build/src/mxgatectl);
tests/run.sh sets both.

Fixtures:
    daemon          a started mxgated with the default test configuration
    daemon_factory  start(**overrides) -> Daemon, for tests that need their
                    own limits or several daemons; every daemon started is
                    stopped at teardown

A Daemon has host, port, pid, dir, config_path, queue_dir, db_path,
log_path, and stop(), restart(), log(), db() (query the queue database).
When a test fails, the log of every daemon it started is attached to the
report.  A daemon whose log shows a sanitizer report fails the test at
teardown.

Everything that waits is bounded: no loop here runs forever.
"""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

SRC_TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _schema_version():
    """The queue schema version the sources migrate to (queue_db.h)."""
    with open(os.path.join(SRC_TOP, "src", "queue", "queue_db.h")) as f:
        m = re.search(r"#define QUEUE_SCHEMA_VERSION (\d+)", f.read())
    return int(m.group(1)) if m else 1


SCHEMA_VERSION = _schema_version()

HOSTNAME = "mx.test.example"
QUEUE_ID_RE = re.compile(r"^[0-9A-Z]{16}$")
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})\s*$")
SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
    r"SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer)")


def mxgated_path():
    return os.environ.get("MXGATED",
                          os.path.join(SRC_TOP, "build", "src", "mxgated"))


def mxgatectl_path():
    return os.environ.get("MXGATECTL",
                          os.path.join(SRC_TOP, "build", "src", "mxgatectl"))


# ---------------------------------------------------------------------------
# Configuration

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Raw(str):
    """A libconfig value written as is (not quoted)."""


def _value(v):
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        if v and isinstance(v[0], dict):
            return "( " + ", ".join(_group(g) for g in v) + " )"
        return "[ " + ", ".join(_value(x) for x in v) + " ]"
    if isinstance(v, dict):
        return _group(v)
    raise TypeError("no libconfig form for %r" % (v,))


def _group(d):
    return "{ " + " ".join("%s = %s;" % (k, _value(v)) for k, v in d.items()
                           if v is not None) + " }"


# A loopback port where nothing listens: the "parked" upstream.
PARKED_PORT = 9


def default_settings(dirpath, port):
    return {
        # The default users (mxgate-smtp, mxgate, mxgate-deliver,
        # mxgate-auth); a root for the workers of this daemon alone: the
        # copy of resolv.conf there is the one of its network namespace.
        "server": {"hostname": HOSTNAME, "workers": 2, "log_level": "debug",
                   "chroot_dir": os.path.join(dirpath, "empty")},
        "listen": [{"address": "127.0.0.1", "port": port, "role": "mx"}],
        "queue": {"directory": os.path.join(dirpath, "queue")},
        "limits": {"line_length": 512, "message_size": "1M",
                   "recipients": 100, "errors": 10, "connections": 1000,
                   "connections_per_ip": 50, "bare_newlines": "reject"},
        "timeouts": {"command": 300, "data": 180, "shutdown_grace": 5},
        # Mail for the accepted domains is relayed to an upstream that
        # is never there (a closed loopback port) and retried only an
        # hour later, so what the tests send stays in the queue to be
        # inspected; anything else is refused like an MX refuses relay.
        "upstreams": [{"name": "parked", "hosts": ["127.0.0.1:%d" % PARKED_PORT]}],
        "routes": [
            {"name": "accepted",
             "rcpt": r"@(example\.test|localhost)$",
             "action": "relay", "upstream": "parked"},
            {"name": "postmaster", "rcpt": r"^postmaster@",
             "action": "relay", "upstream": "parked"},
            {"name": "relay_denied", "rcpt": ".*", "action": "reject",
             "code": 550, "text": "5.7.1 <${rcpt}>: Relay access denied"},
        ],
        # Delivered recipients keep their rows (not their content), so
        # that tests can look at what happened after a quick delivery.
        "delivery": {"retry_schedule": [3600], "keep_delivered": "1d"},
        # Loopback clients are trusted: no SPF lookup at MAIL, so these
        # tests never wait for a real DNS resolver (one lost query is a
        # 5 s stall).  SPF, the policy service and rate limits are tested
        # in a network namespace with other addresses (netns.py).
        "trusted_networks": ["127.0.0.0/8", "::1/128"],
    }


def render_config(settings):
    """settings: {section: dict | list | value}; a None value drops it."""
    lines = []
    for key, v in settings.items():
        if v is None:
            continue
        lines.append("%s = %s;" % (key, _value(v)))
    return "\n".join(lines) + "\n"


def merge_settings(base, overrides):
    """overrides: {"limits": {"recipients": 3}} merges into the section;
    a non-dict value replaces the whole setting; None removes it."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(out.get(key), dict):
            out[key].update(v)
            out[key] = {k: x for k, x in out[key].items() if x is not None}
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------------------
# Low-level client helpers

def read_banner(host, port, timeout=1.0):
    """The first line the server sends, or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in data and time.monotonic() < deadline:
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
            return data.split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
    except OSError:
        return None


class SMTPRaw:
    """A raw SMTP client: send bytes exactly, read replies as lists of
    (code, text lines).  Used where smtplib would fix up what we send."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply line; have %r" % self.buf)
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def reply(self, timeout=None):
        """One (possibly multi-line) reply: (code, [texts], [raw lines])."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            line = self._line(deadline)
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        code = int(lines[-1][:3]) if lines[-1][:3].isdigit() else -1
        return code, [l[4:] for l in lines], lines

    def line(self, timeout=None):
        """The last line of the next reply, e.g. '250 2.1.0 Ok'."""
        return self.reply(timeout)[2][-1]

    def cmd(self, text, timeout=None):
        self.send(text + "\r\n")
        return self.line(timeout)

    def closed_by_peer(self, timeout=5.0):
        """True if the server closes the connection within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False


def db_query(path, sql, args=()):
    """Run one query on the queue database and close it again (so that no
    root-owned -wal/-shm file outlives us next to the daemon's database)."""
    # mode=rw: never create the file (a root-owned empty database would
    # stand in the daemon's way); wait a little for the queue process.
    wait_for(lambda: os.path.exists(path), 30.0)
    con = sqlite3.connect("file:%s?mode=rw" % path, uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------
# The daemon

def pids_with_parent(ppid):
    """Children of ppid, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, split after ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == ppid:
            out.append(int(name))
    return sorted(out)


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def proc_exists(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2:].split()[0]
    return state != "Z"


class Daemon:
    def __init__(self, dirpath, settings, mxgated=None):
        self.dir = dirpath
        self.settings = settings
        self.host = "127.0.0.1"
        self.port = settings["listen"][0]["port"]
        self.config_path = os.path.join(dirpath, "mxgate.conf")
        self.queue_dir = settings["queue"]["directory"]
        self.db_path = os.path.join(self.queue_dir, "queue.db")
        self.log_path = os.path.join(dirpath, "mxgated.log")
        self.mxgated = mxgated or mxgated_path()
        self.proc = None
        self.pid = None
        self.starts = 0
        self.problems = []
        with open(self.config_path, "w") as f:
            f.write(render_config(settings))

    # -- lifecycle --

    def start(self, wait=30.0):
        if not os.access(self.mxgated, os.X_OK):
            pytest.fail("mxgated not built: %s (set $MXGATED)" % self.mxgated)
        self.starts += 1
        logf = open(self.log_path, "ab")
        logf.write(b"---- start %d: %s -f -c %s\n"
                   % (self.starts, self.mxgated.encode(),
                      self.config_path.encode()))
        logf.flush()
        self.proc = subprocess.Popen(
            [self.mxgated, "-f", "-c", self.config_path],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=self.dir)
        logf.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("mxgated exited with status %s during startup:\n%s"
                            % (self.proc.returncode, self.log()))
            # greet_pause holds the banner back for its seconds (and a
            # loaded machine under ASan adds some).
            banner = read_banner(self.host, self.port, timeout=1.0 +
                                 2 * self.settings.get("greet_pause", 0))
            if banner is not None and banner.startswith("220"):
                # The queue process may still be opening its database:
                # give it a moment, so that tests can read the schema.
                wait_for(self._db_ready, max(0.0, deadline - time.monotonic()))
                return self
            time.sleep(0.05)
        pytest.fail("mxgated gave no 220 banner on port %d within %.0fs:\n%s"
                    % (self.port, wait, self.log()))

    def _db_ready(self):
        if not os.path.exists(self.db_path):
            return False
        # Migrated to the end: each migration is a transaction of its
        # own, and mxgatectl refuses a queue in between.
        try:
            return db_query(self.db_path, "SELECT max(version) FROM"
                            " schema_version")[0][0] >= SCHEMA_VERSION
        except (sqlite3.Error, TypeError, IndexError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, wait=30.0):
        """Signal the master, wait for it; SIGKILL after `wait` seconds.
        Returns (exit status, seconds it took).  Children still alive 5 s
        after their master exited are killed and noted in self.problems."""
        if self.proc is None:
            return None, 0.0
        kids = self.children()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.problems.append("master %d ignored signal %d for %.0fs"
                                     % (self.pid, sig, wait))
                self.kill_all()
                self.proc.wait(timeout=10)
        took = time.monotonic() - t0
        status = self.proc.returncode
        self._reap_orphans(kids)
        self.proc = None
        return status, took

    def kill_all(self):
        """SIGKILL the master and its children, by pid, as one crash: all
        are stopped first, so that the master cannot respawn a child it
        sees die before its own turn comes."""
        pids = [self.pid] + self.children()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def _reap_orphans(self, kids):
        """A master must not exit before its children: any child that
        outlives it is a bug, killed here (by pid) so tests stay clean."""
        left = wait_for(lambda: [p for p in kids if proc_exists(p)
                                 and proc_cmdline(p).startswith("mxgated")]
                        == [], 5.0)
        if left:
            return
        for p in kids:
            if proc_exists(p) and proc_cmdline(p).startswith("mxgated"):
                self.problems.append("child %d (%s) outlived the master"
                                     % (p, proc_cmdline(p)))
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def restart(self):
        self.stop()
        return self.start()

    # -- inspection --

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def children(self):
        return pids_with_parent(self.pid) if self.pid else []

    def titles(self):
        """{pid: cmdline} of the master's children."""
        return {p: proc_cmdline(p) for p in self.children()}

    def smtp_pids(self):
        return [p for p, t in self.titles().items()
                if t.startswith("mxgated: smtp")]

    def queue_pids(self):
        return [p for p, t in self.titles().items()
                if t.startswith("mxgated: queue")]

    def all_pids(self):
        return ([self.pid] if self.pid else []) + self.children()

    def db(self, sql, args=()):
        return db_query(self.db_path, sql, args)

    def message_count(self):
        return self.db("SELECT count(*) FROM messages")[0][0]

    def raw(self, timeout=10.0):
        return SMTPRaw(self.host, self.port, timeout=timeout)

    def ctl(self, *args, timeout=30):
        if not os.access(mxgatectl_path(), os.X_OK):
            pytest.fail("mxgatectl not built: %s (set $MXGATECTL)"
                        % mxgatectl_path())
        return subprocess.run([mxgatectl_path(), "-c", self.config_path]
                              + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def sanitizer_report(self):
        log = self.log()
        m = SANITIZER_RE.search(log)
        return log if m else None


def make_daemon(overrides=None, mxgated=None, start=True):
    dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
    os.chmod(dirpath, 0o755)
    port = free_port()
    settings = merge_settings(default_settings(dirpath, port), overrides)
    d = Daemon(dirpath, settings, mxgated)
    if start:
        d.start()
    return d


# ---------------------------------------------------------------------------
# Fixtures

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        for d in getattr(item, "_mxgate_daemons", []):
            log = d.log()
            if len(log) > 60000:
                log = "...\n" + log[-60000:]
            rep.sections.append(("mxgated log (port %d, %s)"
                                 % (d.port, d.log_path), log))


def _cleanup(daemons, request):
    problems = []
    for d in daemons:
        try:
            d.stop()
        except Exception as e:  # keep stopping the others
            problems.append("stop failed on port %d: %s" % (d.port, e))
        problems.extend(d.problems)
        report = d.sanitizer_report()
        if report:
            first = next(l for l in report.splitlines()
                         if SANITIZER_RE.search(l))
            problems.append("sanitizer report in %s: %s"
                            % (d.log_path, first.strip()))
    failed = any(getattr(request.node, "rep_" + w, None) is not None
                 and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    if not problems and not failed and not os.environ.get("MXGATE_KEEP"):
        for d in daemons:
            shutil.rmtree(d.dir, ignore_errors=True)
    if problems:
        pytest.fail("; ".join(problems))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item._mxgate_daemons = []
    yield


@pytest.fixture
def daemon_factory(request):
    started = request.node._mxgate_daemons

    def start(overrides=None, **kw):
        d = make_daemon(overrides, **kw)
        started.append(d)
        return d

    yield start
    _cleanup(started, request)


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


# ---------------------------------------------------------------------------
# Helpers shared by the tests

# Under ASan+UBSan (tests/run.sh --sanitizers builds in build-asan/)
# everything runs two to three times slower: the bounded waits stretch by
# this factor.  Only a wait that fails takes longer; none waits for a
# condition meant to stay false.
TIME_SCALE = 3.0 if "build-asan" in os.environ.get("MXGATED", "") else 1.0


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until truthy or timeout (times TIME_SCALE); returns its
    last value."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def make_message(subject, marker=None, body_lines=3, sender="alice@sender.example",
                 rcpt="bob@example.test"):
    marker = marker or subject
    lines = ["From: <%s>" % sender, "To: <%s>" % rcpt,
             "Subject: %s" % subject, "Message-ID: <%s@sender.example>" % marker,
             ""]
    lines += ["body line %d of %s" % (i, marker) for i in range(body_lines)]
    return "\r\n".join(lines) + "\r\n"


def queued_id(line):
    """The queue id from '250 2.0.0 Ok: queued as ID', or fail."""
    m = QUEUED_RE.match(line)
    assert m, "not a queued reply: %r" % line
    return m.group(1)
