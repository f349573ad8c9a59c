"""SIGHUP reloads the whole configuration (README "Reload").

Under load (a client thread sending messages on a listener that stays),
one reload changes a route, a limit, a check (helo_checks), the policy
service, an upstream (the relay target), TLS (a certificate where there
was none), the number of smtp processes, and the listeners (one added,
one removed); the next ones change a delivery setting (delivery.paused)
back and forth.  Each change shows on new sessions, while a session
opened before the reload finishes on the configuration it started with;
the client thread never sees a refused connection or a failed message,
and every message it was told is queued is a row in the queue.

Files that cannot be loaded change nothing, and the log names the
FILE:LINE: a syntax error, a semantic error, a setting only a restart
can change, a listener that cannot be bound.

Runs in a private network namespace (netns.py): the clients have
addresses of their own (not trusted, so the checks apply) and the SPF
lookups every message gets are answered inside; the relay upstreams and
the policy service are real servers started here, in the namespace.
"""

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (QUEUED_RE, default_settings, free_port, make_message,
                      merge_settings, proc_cmdline, render_config, wait_for)
from netns import NetNS, NetnsDaemon, can_unshare

try:
    from aiosmtpd.controller import Controller
except ImportError:     # python3-aiosmtpd (contrib/install-deps.sh)
    Controller = None

pytestmark = [
    pytest.mark.skipif(not can_unshare(), reason="needs root and unshare(1)"),
    pytest.mark.skipif(Controller is None,
                       reason="python3-aiosmtpd not installed"),
]

SERVER = "192.0.2.1"
CLIENT = "198.51.100.20"
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]}}
HOSTNAME = "mx.test.example"


@pytest.fixture(scope="module")
def ns():
    with NetNS([SERVER, CLIENT], ZONE) as n:
        yield n


# ---------------------------------------------------------------------------
# Real servers in the namespace: relay upstreams and a policy service


class Upstream:
    """aiosmtpd on 127.0.0.1 in the namespace, recording the recipients
    of each message it is given."""

    class Handler:
        def __init__(self):
            self.rcpts = []
            self.lock = threading.Lock()

        async def handle_DATA(self, server, session, envelope):
            with self.lock:
                self.rcpts.extend(envelope.rcpt_tos)
            return "250 2.0.0 Ok: upstream"

    def __init__(self, ns, port):
        self.port = port
        self.handler = self.Handler()
        self.controller = Controller(self.handler, hostname="127.0.0.1",
                                     port=port, server_hostname="up.test")
        # The server's thread is created here: it inherits the namespace.
        with ns.entered():
            self.controller.start()

    def got(self, rcpt):
        with self.handler.lock:
            return rcpt in self.handler.rcpts

    def stop(self):
        self.controller.stop()


class PolicyService:
    """A Postfix policy service on a unix socket: REJECT for the local
    part `block`, DUNNO for the rest."""

    def __init__(self, dirpath, block="policyblock"):
        self.block = block
        self.path = os.path.join(dirpath, "policy.sock")
        self.service = "unix:" + self.path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.asked = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.serve, args=(conn,),
                             daemon=True).start()

    def serve(self, conn):
        buf = b""
        conn.settimeout(30)
        try:
            while not self.stopping:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n\n" in buf:
                    req, buf = buf.split(b"\n\n", 1)
                    attrs = dict(l.split("=", 1) for l in
                                 req.decode().split("\n") if "=" in l)
                    self.asked += 1
                    local = attrs.get("recipient", "").split("@")[0]
                    action = ("REJECT 5.7.1 blocked by the policy service"
                              if local == self.block else "DUNNO")
                    conn.sendall(("action=%s\n\n" % action).encode())
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


def make_cert(dirpath, cn):
    key = os.path.join(dirpath, cn + ".key")
    cert = os.path.join(dirpath, cn + ".pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=" + cn, "-addext",
                        "subjectAltName=DNS:" + cn],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    return cert, key


# ---------------------------------------------------------------------------
# The daemon and its configuration files


def free_ports(ns, n):
    """n TCP ports free on SERVER in the namespace a moment ago."""
    socks, ports = [], []
    with ns.entered():
        for _ in range(n):
            s = socket.socket()
            s.bind((SERVER, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class World:
    """The daemon, its servers and its ports; write() replaces the
    configuration file, reload() sends SIGHUP and waits for its verdict."""

    def __init__(self, ns, daemon_factory, started):
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.kept, self.removed, self.added, up_a, up_b = free_ports(ns, 5)
        self.up_a = Upstream(ns, up_a)
        self.up_b = Upstream(ns, up_b)
        pdir = os.path.join(self.dir, "policy")
        os.mkdir(pdir)
        os.chmod(pdir, 0o755)
        self.policy = PolicyService(pdir)
        pdir = os.path.join(self.dir, "policy2")
        os.mkdir(pdir)
        os.chmod(pdir, 0o755)
        self.named = PolicyService(pdir, block="namedblock")
        keys = os.path.join(self.dir, "keys")
        os.mkdir(keys, 0o700)
        self.cert = make_cert(keys, HOSTNAME)
        self.passwd = os.path.join(self.dir, "passwd")
        r = subprocess.run(["openssl", "passwd", "-6", "secret"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        with open(self.passwd, "w") as f:
            f.write("bob:%s\n" % r.stdout.strip())
        os.chmod(self.passwd, 0o644)
        self.base = merge_settings(default_settings(self.dir, self.kept), {
            "server": {"workers": 2,
                       "pid_file": os.path.join(self.dir, "mxgated.pid")},
            "listen": [
                {"address": SERVER, "port": self.kept, "role": "mx"},
                {"address": SERVER, "port": self.removed, "role": "mx"}],
            "accept_domains": None,
            "upstreams": [{"name": "up",
                           "hosts": ["127.0.0.1:%d" % up_a]}],
            "routes": [
                {"name": "open", "rcpt": r"@open\.test$", "action": "debug"},
                {"name": "relayed", "rcpt": r"@relay\.test$",
                 "action": "relay", "upstream": "up"}],
            "limits": {"recipients": 100},
            "helo_checks": False,
            "trusted_networks": [],
        })
        self.settings = self.base
        self.d = NetnsDaemon(ns, self.dir, self.base, SERVER, source=CLIENT)
        started.append(self.d)
        self.d.start()
        self.hups = 0

    def write(self, settings=None, text=None):
        if text is None:
            self.settings = settings
            text = render_config(settings)
        tmp = self.d.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.d.config_path)

    def reload(self, ok=True):
        """SIGHUP; waits for the line that says how it went."""
        before = self.d.log()
        loaded = before.count(" loaded: ")
        refused = before.count(" refused: nothing changed")
        os.kill(self.d.pid, signal.SIGHUP)
        self.hups += 1
        assert wait_for(lambda: self.d.log().count(" loaded: ") > loaded or
                        self.d.log().count(" refused: nothing changed")
                        > refused, 20.0), self.d.log()[-3000:]
        log = self.d.log()[len(before):]
        assert (" loaded: " in log) == ok, log
        return log

    def session(self, port=None, helo="client.example"):
        c = self.d.raw()
        if port is not None:
            c.close()
            with self.ns.entered():
                sock = socket.create_connection((SERVER, port), timeout=10,
                                                source_address=(CLIENT, 0))
            c.sock = sock
            c.buf = b""
        assert c.line().startswith("220 ")
        if helo is not None:
            assert c.cmd("EHLO " + helo).startswith("250")
        return c

    def stop(self):
        self.up_a.stop()
        self.up_b.stop()
        self.policy.close()
        self.named.close()


@pytest.fixture
def world(ns, daemon_factory, request):
    w = World(ns, daemon_factory, request.node._mxgate_daemons)
    yield w
    w.stop()


def send(c, rcpt, subject="reload"):
    assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    line = c.cmd("RCPT TO:<%s>" % rcpt, timeout=20)
    assert line.startswith("250"), line
    assert c.cmd("DATA").startswith("354")
    c.send(make_message(subject, sender="a@sender.example", rcpt=rcpt)
           + ".\r\n")
    line = c.line(timeout=20)
    m = QUEUED_RE.match(line)
    assert m, line
    return m.group(1)


class Load:
    """A client thread sending one message per connection on `port`
    until stopped: every acknowledged queue id, and every failure."""

    def __init__(self, world, port):
        self.world = world
        self.port = port
        self.ids = []
        self.failures = []
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        n = 0
        while not self.stopping:
            n += 1
            try:
                c = self.world.session(self.port)
                try:
                    self.ids.append(send(c, "load%d@open.test" % n,
                                         "load %d" % n))
                    c.cmd("QUIT")
                finally:
                    c.close()
            except (OSError, AssertionError, EOFError, TimeoutError) as e:
                self.failures.append("message %d: %r" % (n, e))

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def peer_cert_der(world, port):
    """STARTTLS on port; the certificate the server shows."""
    c = world.session(port)
    try:
        assert c.cmd("STARTTLS").startswith("220")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        der = tls.getpeercert(binary_form=True)
        tls.close()
        return der
    finally:
        c.close()


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def connect_refused(world, port):
    try:
        with world.ns.entered():
            s = socket.create_connection((SERVER, port), timeout=5,
                                         source_address=(CLIENT, 0))
        s.close()
        return False
    except ConnectionRefusedError:
        return True


def rcpt_state(world, qid):
    rows = world.d.db("SELECT state FROM recipients WHERE message_id = ?",
                      (qid,))
    return rows[0][0] if rows else None


# ---------------------------------------------------------------------------


def test_reload_applies_every_kind_of_setting_under_load(world):
    w, d = world, world.d
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0)
    old_smtp = set(d.smtp_pids())
    queue_pid = d.queue_pids()

    # Before: the old configuration's behaviour, checked on new sessions.
    c = w.session(helo="my_pc")             # helo_checks off
    assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    assert c.cmd("RCPT TO:<x@new.test>").startswith("550")  # no route
    assert c.cmd("RCPT TO:<policyblock@open.test>").startswith("250")
    c.close()
    c = w.session()
    assert "STARTTLS" not in c.cmd("EHLO client.example") or True
    before_relay = send(c, "before@relay.test")
    c.close()
    assert wait_for(lambda: w.up_a.got("before@relay.test"), 15.0)
    assert not connect_refused(w, w.removed)
    assert connect_refused(w, w.added)
    assert not [t for t in d.titles().values() if "lookup" in t]

    load = Load(w, w.kept)
    assert wait_for(lambda: len(load.ids) >= 5, 20.0), load.failures

    # A session in progress on the listener about to go, on the old
    # configuration: helo_checks off, no route for new.test, 100
    # recipients allowed.
    old = w.session(w.removed, helo="my_pc")
    assert old.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    for i in range(3):
        assert old.cmd("RCPT TO:<old%d@open.test>" % i).startswith("250")

    new = merge_settings(w.base, {
        "server": {"workers": 3},
        "listen": [
            {"address": SERVER, "port": w.kept, "role": "mx"},
            {"address": SERVER, "port": w.added, "role": "submission",
             "auth": True, "allow_plaintext_auth": True}],
        "auth": {"passwd_file": w.passwd, "failure_delay": 1},
        "upstreams": [{"name": "up", "hosts": ["127.0.0.1:%d" % w.up_b.port]}],
        "routes": w.base["routes"] + [
            {"name": "new", "rcpt": r"@new\.test$", "action": "debug",
             "policy_service": "named"}],
        "policy_services": [{"name": "named", "service": w.named.service}],
        "limits": {"recipients": 2},
        "helo_checks": True,
        "policy": {"service": w.policy.service, "stages": ["rcpt"]},
        "tls": {"certificates": [{"cert": w.cert[0], "key": w.cert[1]}]},
    })
    w.write(new)
    log = w.reload()
    assert "3 smtp processes started, 2 old ones finish" in log, log

    # The listeners: the removed one refuses, the added one serves, with
    # AUTH (a lookup process started for it).
    assert wait_for(lambda: connect_refused(w, w.removed), 5.0)
    assert [t for t in d.titles().values() if "lookup" in t]
    c = w.session(w.added)
    plain = base64.b64encode(b"\0bob\0secret").decode()
    line = c.cmd("AUTH PLAIN " + plain, timeout=20)
    assert line.startswith("235 "), line
    c.cmd("QUIT")
    c.close()

    # The session in progress goes on with its old configuration.
    assert old.cmd("RCPT TO:<x@new.test>").startswith("550")
    assert old.cmd("RCPT TO:<old3@open.test>").startswith("250")
    assert old.cmd("DATA").startswith("354")
    old.send(make_message("across", sender="a@sender.example",
                          rcpt="old0@open.test") + ".\r\n")
    across = old.line(timeout=20)
    assert QUEUED_RE.match(across), across
    assert old.cmd("RSET").startswith("250")
    assert old.cmd("EHLO my_pc").startswith("250")
    assert old.cmd("QUIT").startswith("221")
    old.close()

    # New sessions: every change in effect.
    c = w.session(helo=None)
    line = c.cmd("EHLO my_pc")
    assert line.startswith("501 5.5.2"), line                # helo_checks
    c.send("EHLO client.example\r\n")
    code, texts, _ = c.reply()
    assert code == 250 and "STARTTLS" in texts, texts        # TLS
    assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    assert c.cmd("RCPT TO:<x@new.test>").startswith("250")   # route
    line = c.cmd("RCPT TO:<policyblock@open.test>", timeout=20)
    assert line.startswith("554 5.7.1") or line.startswith("550 5.7.1"), \
        line                                                 # policy
    line = c.cmd("RCPT TO:<namedblock@new.test>", timeout=20)
    assert line[:3] in ("550", "554"), line          # a route's policy
    assert c.cmd("RCPT TO:<namedblock@open.test>").startswith("250")
    assert c.cmd("RCPT TO:<z@open.test>").startswith("452 4.5.3")  # limit
    c.cmd("QUIT")
    c.close()
    assert w.policy.asked > 0
    assert peer_cert_der(w, w.kept) == der_of(w.cert[0])
    c = w.session()
    after_relay = send(c, "after@relay.test")
    c.close()
    assert wait_for(lambda: w.up_b.got("after@relay.test"), 15.0)  # upstream
    assert not w.up_a.got("after@relay.test")
    assert rcpt_state(w, before_relay) == "delivered"

    # Three new smtp processes; the old ones left with their sessions.
    assert wait_for(lambda: len(d.smtp_pids()) == 3 and
                    not set(d.smtp_pids()) & old_smtp, 15.0), d.titles()
    assert d.queue_pids() == queue_pid          # never restarted

    # A delivery setting: paused, then not.
    paused = merge_settings(new, {"delivery": {"paused": True}})
    w.write(paused)
    switched = d.log().count("delivery settings of")
    w.reload()
    assert wait_for(lambda: d.log().count("delivery settings of")
                    > switched, 5.0)
    c = w.session()
    held = send(c, "held@relay.test")
    c.close()
    time.sleep(3)
    assert rcpt_state(w, held) == "queued"
    assert not w.up_b.got("held@relay.test")
    w.write(new)
    w.reload()
    assert wait_for(lambda: w.up_b.got("held@relay.test"), 15.0)

    load.stop()
    # Nothing refused, nothing lost: every acknowledged message is a row.
    assert load.failures == [], load.failures
    assert len(load.ids) >= 10
    stored = {r[0] for r in d.db("SELECT id FROM messages")}
    missing = [i for i in load.ids if i not in stored]
    assert missing == [], missing
    assert QUEUED_RE.match(across).group(1) in stored


BAD = [
    # (name, how to spoil the file, what the log says)
    ("syntax", lambda text: text.replace("recipients = 100;",
                                         "recipients = 100\nbroken here;"),
     ":%d: syntax error"),
    ("semantic", lambda text: text.replace("recipients = 100;",
                                           "recipients = 0;"),
     ":%d: 'limits.recipients'"),
]


def line_of(text, needle):
    for i, l in enumerate(text.splitlines(), 1):
        if needle in l:
            return i
    raise AssertionError("%r not in the file" % needle)


@pytest.mark.parametrize("name,spoil,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_file_changes_nothing(world, name, spoil, expect):
    w, d = world, world.d
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0)
    pids = set(d.children())
    good = render_config(w.base)
    # The spoiled file also asks for a change that must not happen.
    text = spoil(good).replace("helo_checks = false;",
                               "helo_checks = true;")
    assert text != good
    w.write(text=text)
    log = w.reload(ok=False)
    needle = "broken here" if name == "syntax" else "recipients = 0"
    where = d.config_path + expect % line_of(text, needle)
    assert where in log, log
    assert set(d.children()) == pids
    c = w.session(helo="my_pc")
    assert send(c, "bob@open.test")
    c.close()


def test_fixed_setting_and_unbindable_listener_refused(world):
    w, d = world, world.d
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0)
    pids = set(d.children())
    w.write(merge_settings(w.base, {"queue": {"directory": w.dir + "/q2"},
                                    "helo_checks": True}))
    log = w.reload(ok=False)
    assert "queue.directory changed: it takes effect only at a restart" \
        in log, log
    # A user that does not exist (FILE:LINE, as at a start).
    w.write(merge_settings(w.base, {"server": {"delivery_user":
                                               "no-such-user-here"},
                                    "helo_checks": True}))
    log = w.reload(ok=False)
    assert "%s:1: 'server.delivery_user': no such user" % d.config_path \
        in log, log
    # A port somebody else holds: refused, the other listeners untouched.
    with w.ns.entered():
        holder = socket.socket()
    holder.bind((SERVER, 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        w.write(merge_settings(w.base, {
            "listen": w.base["listen"] + [
                {"address": SERVER, "port": taken, "role": "mx"}],
            "helo_checks": True}))
        log = w.reload(ok=False)
        assert "listen on %s port %d" % (SERVER, taken) in log, log
    finally:
        holder.close()
    assert set(d.children()) == pids
    c = w.session(helo="my_pc")
    assert send(c, "bob@open.test")
    c.close()
    assert not connect_refused(w, w.removed)


def test_mxgatectl_reload(world):
    """mxgatectl reload: its own check first (a bad file is reported
    FILE:LINE and no signal is sent), then SIGHUP and the master's
    verdict, read from its title."""
    w, d = world, world.d
    w.write(merge_settings(w.base, {"helo_checks": True}))
    r = d.ctl("reload")
    assert r.returncode == 0, r.stderr
    assert "loaded" in r.stdout, r.stdout
    assert proc_cmdline(d.pid) == "mxgated: master (reload 1 loaded)"
    c = w.session(helo=None)
    assert c.cmd("EHLO my_pc").startswith("501 5.5.2")
    c.close()

    text = render_config(w.base).replace("recipients = 100;",
                                         "recipients = 0;")
    w.write(text=text)
    hups = d.log().count("SIGHUP: reading")
    r = d.ctl("reload")
    assert r.returncode == 1
    assert "%s:%d: 'limits.recipients' must be between 1 and 10000" % (
        d.config_path, line_of(text, "recipients = 0")) in r.stderr, r.stderr
    time.sleep(0.5)
    assert d.log().count("SIGHUP: reading") == hups

    # What only the master can tell: a setting fixed until a restart.
    w.write(merge_settings(w.base, {"queue": {"directory": w.dir + "/q2"}}))
    r = d.ctl("reload")
    assert r.returncode == 1
    assert "refused" in r.stderr, r.stderr
    assert proc_cmdline(d.pid) == "mxgated: master (reload 2 refused)"
    c = w.session(helo=None)
    assert c.cmd("EHLO my_pc").startswith("501 5.5.2")    # still reload 1
    c.close()


def test_reload_listener_options(world):
    """A listener that stays (the same socket) takes its new options:
    the PROXY protocol switched on at a reload applies to the next
    connection, whose client is then the one the header names."""
    w, d = world, world.d
    listen = [dict(l) for l in w.base["listen"]]
    listen[0].update({"proxy_protocol": True, "proxy_from": [CLIENT]})
    w.write(merge_settings(w.base, {"listen": listen}))
    log = w.reload()
    assert "listening on" not in log, log      # no socket bound again
    with w.ns.entered():
        sock = socket.create_connection((SERVER, w.kept), timeout=10,
                                        source_address=(CLIENT, 0))
    c = d.raw()
    c.close()
    c.sock, c.buf = sock, b""
    c.send("PROXY TCP4 198.51.100.77 %s 40000 %d\r\n" % (SERVER, w.kept))
    assert c.line().startswith("220 ")
    assert c.cmd("EHLO client.example").startswith("250")
    qid = send(c, "bob@open.test", "proxied")
    c.close()
    assert d.db("SELECT client_ip FROM messages WHERE id = ?",
                (qid,)) == [("198.51.100.77",)]
    # The other listener did not change: no header there.
    c = w.session(w.removed)
    assert send(c, "bob@open.test", "direct")
    c.close()


def test_reload_adds_a_milter(daemon_factory, tmp_path):
    """milters (a real one: milter_actions.py on python3-milter) come with
    a reload like any setting: the next session is filtered by it."""
    from test_milter import PY, HERE, Proc, milter_settings, wait_listening
    port = free_port()
    milter = Proc([PY, os.path.join(HERE, "milter_actions.py"),
                   "inet:%d@127.0.0.1" % port, str(tmp_path / "milter.log")],
                  str(tmp_path / "milter.out"))
    try:
        wait_listening(port)
        d = daemon_factory()
        with d.raw() as c:
            c.line()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<a@sender.example>")
            assert c.cmd("RCPT TO:<reject-me@example.test>").startswith("250")
        with open(d.config_path, "w") as f:
            f.write(render_config(merge_settings(
                d.settings, milter_settings("inet:127.0.0.1:%d" % port))))
        os.kill(d.pid, signal.SIGHUP)
        assert wait_for(lambda: " loaded: " in d.log(), 20.0), d.log()[-2000:]
        with d.raw() as c:
            c.line()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<a@sender.example>")
            line = c.cmd("RCPT TO:<reject-me@example.test>", timeout=20)
            assert line.startswith("550 5.7.1"), line
    finally:
        milter.stop()
