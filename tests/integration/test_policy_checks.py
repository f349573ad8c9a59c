"""Policy hooks through the daemon: the Postfix policy delegation protocol
against a policy server started here (attributes at every stage, each
action at RCPT, refusals at every other stage, unix: and inet:, the
default when the service is down or slow, connection reuse, HOLD and
DISCARD), the real postgrey and policyd-spf unchanged, the example
C plugin (contrib/plugins/example.c, built as plugins/example.so in the
build tree) loaded by the daemon, each of its hooks giving a verdict, and
the built-in checks: reject_networks, trusted_networks, helo_checks, and
the connection and message rate limits.

Run in a private network namespace (netns.py) so that clients have
addresses of their own and the SPF lookups every message gets stay
inside; skipped where unshare is not allowed.
"""

import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (QUEUED_RE, default_settings, make_message,
                      merge_settings, mxgated_path, wait_for)
from netns import NetNS, NetnsDaemon, can_unshare

pytestmark = pytest.mark.skipif(not can_unshare(),
                                reason="needs root and unshare(1)")

SERVER = "192.0.2.1"
CLIENT = "198.51.100.20"
OTHER = "198.51.100.66"
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]}}
PORTS = itertools.count(2600)       # one per daemon: several per test


def example_plugin():
    path = os.environ.get("MXGATE_EXAMPLE_PLUGIN")
    if path is None:
        build = os.path.dirname(os.path.dirname(mxgated_path()))
        path = os.path.join(build, "plugins", "example.so")
    return path


@pytest.fixture(scope="module")
def ns():
    with NetNS([SERVER, CLIENT, OTHER], ZONE) as n:
        yield n


@pytest.fixture
def start(request, ns, daemon_factory):
    started = request.node._mxgate_daemons

    def go(**sections):
        dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(dirpath, 0o755)
        port = next(PORTS)
        settings = merge_settings(default_settings(dirpath, port), {
            "listen": [{"address": SERVER, "port": port, "role": "mx"}],
            "accept_domains": None, "upstreams": None,
            # Delivered messages stay countable: the debug delivery is
            # quicker than a test's look at the queue.
            "delivery": {"keep_delivered": "1d"},
            "routes": [{"name": "open", "rcpt": r"@open\.test$",
                        "action": "debug"}],
        })
        settings = merge_settings(settings, sections)
        d = NetnsDaemon(ns, dirpath, settings, SERVER, source=CLIENT)
        started.append(d)
        return d.start()

    return go


class PolicyServer:
    """A Postfix-style policy service: records every request's attributes
    and answers by recipient local part (answers[local] = action), else
    by protocol_state (answers[state]), else DUNNO; "slow" sleeps 8 s."""

    def __init__(self, ns=None, unix_dir=None):
        self.requests = []
        self.connections = 0
        self.answers = {}
        self.lock = threading.Lock()
        if unix_dir is not None:
            self.path = os.path.join(unix_dir, "policy.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.path)
            os.chmod(self.path, 0o666)
            self.service = "unix:" + self.path
        else:
            with ns.entered():
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.service = "inet:127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(conn,),
                             daemon=True).start()

    def decide(self, attrs):
        local = attrs.get("recipient", "").split("@")[0]
        return self.answers.get(local) or self.answers.get(
            attrs.get("protocol_state"), "DUNNO")

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
                    with self.lock:
                        self.requests.append(attrs)
                    action = self.decide(attrs)
                    if action == "slow":
                        time.sleep(8)
                        action = "DUNNO"
                    conn.sendall(("action=%s\n\n" % action).encode())
        except OSError:
            pass
        finally:
            conn.close()

    def states(self, client=CLIENT):
        """The stages asked about for client (the daemon's start-up probe
        connects too)."""
        with self.lock:
            return [r["protocol_state"] for r in self.requests
                    if r["client_address"] == client]

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def policy(ns):
    d = tempfile.mkdtemp(prefix="mxgate-policy-", dir="/tmp")
    os.chmod(d, 0o755)
    p = PolicyServer(unix_dir=d)
    yield p
    p.close()


def session(d, source=CLIENT):
    c = d.raw(source=source)
    assert c.line().startswith("220")
    assert c.cmd("EHLO client.example").startswith("250")
    return c


def rcpt(d, local, source=CLIENT):
    with session(d, source) as c:
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        return c.cmd("RCPT TO:<%s@open.test>" % local, timeout=20)


def send_message(c, rcpt_to="bob@open.test", subject="checks"):
    assert c.cmd("MAIL FROM:<a@sender.example> SIZE=300").startswith("250")
    line = c.cmd("RCPT TO:<%s>" % rcpt_to)
    assert line.startswith("250"), line
    assert c.cmd("DATA").startswith("354")
    c.send(make_message(subject, sender="a@sender.example", rcpt=rcpt_to)
           + ".\r\n")
    return c.line(timeout=20)


# ---------------------------------------------------------------------------
# The policy delegation protocol


def test_policy_attributes_at_every_stage(start, policy):
    d = start(policy={"service": policy.service, "stages": [
        "connect", "helo", "mail", "rcpt", "data", "end_of_message"]})
    with session(d) as c:
        line = send_message(c)
    m = QUEUED_RE.match(line)
    assert m, line
    qid = m.group(1)
    assert policy.states() == ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA",
                               "END-OF-MESSAGE"]
    mine = [r for r in policy.requests if r["client_address"] == CLIENT]
    by_state = {r["protocol_state"]: r for r in mine}
    for r in mine:
        assert r["request"] == "smtpd_access_policy"
        assert r["client_name"] == "unknown"
        assert r["server_address"] == SERVER
        assert r["server_port"] == str(d.port)
        assert int(r["client_port"]) > 0
        for attr in ("protocol_name", "helo_name", "queue_id", "sender",
                     "recipient", "recipient_count", "instance",
                     "sasl_username", "size", "encryption_protocol",
                     "reverse_client_name"):
            assert attr in r, (attr, r)
    assert by_state["CONNECT"]["helo_name"] == ""
    assert by_state["EHLO"]["helo_name"] == "client.example"
    assert by_state["EHLO"]["protocol_name"] == "ESMTP"
    assert by_state["MAIL"]["sender"] == "a@sender.example"
    assert by_state["MAIL"]["size"] == "300"
    assert by_state["MAIL"]["queue_id"] == qid
    assert by_state["RCPT"]["recipient"] == "bob@open.test"
    assert by_state["RCPT"]["recipient_count"] == "0"
    assert by_state["DATA"]["recipient_count"] == "1"
    assert by_state["END-OF-MESSAGE"]["instance"] == qid
    assert int(by_state["END-OF-MESSAGE"]["size"]) > 100


@pytest.mark.parametrize("action,expect", [
    ("DUNNO", "250 2.1.5"),
    ("OK", "250 2.1.5"),
    ("REJECT", "554 5.7.1 Access denied"),
    ("REJECT not you", "554 5.7.1 not you"),
    ("DEFER", "450 4.7.1"),
    ("DEFER_IF_PERMIT greylisted", "450 4.7.1 greylisted"),
    ("450 4.2.0 greylisted, come back later", "450 4.2.0 greylisted"),
    ("550 5.1.1 no such user", "550 5.1.1 no such user"),
    ("521 go away", "521 5.7.1 go away"),
    ("PREPEND X-Policy: yes", "250 2.1.5"),       # no opinion, a header
    ("PREPEND no header field", "451 4.3.5"),     # malformed: default
    ("WARN watch this one", "250 2.1.5"),         # logged, as DUNNO
    ("INFO noted", "250 2.1.5"),
    ("DEFER_IF_REJECT maybe", "250 2.1.5"),       # nothing later rejects
    ("HOLD", "250 2.1.5"),                        # the message is held
    ("DISCARD", "250 2.1.5"),                     # the message is dropped
    ("FILTER smtp:[127.0.0.1]:10025", "451 4.3.5"),   # Postfix only
    ("my_restriction_class", "451 4.3.5"),
])
def test_policy_actions_at_rcpt(start, policy, action, expect):
    policy.answers["bob"] = action
    d = start(policy={"service": policy.service})
    line = rcpt(d, "bob")
    assert line.startswith(expect), line
    assert policy.states() == ["RCPT"]
    if action == "PREPEND no header field":
        assert "malformed PREPEND" in d.log()
    if action.startswith("WARN") or action.startswith("INFO"):
        # (the daemon names the socket as its sandbox sees it)
        assert re.search(r"session=[0-9a-f]{16} policy service unix:\S+: "
                         r"stage=RCPT %s" % action, d.log()), \
            d.log()[-2000:]
    if action.startswith("FILTER"):
        assert re.search(r'policy service unix:\S+: action "FILTER" is not '
                         r'supported by mxgate \(see mxgate.conf\(5\)\); '
                         r'applying the default "451 4\.3\.5', d.log()), \
            d.log()[-2000:]


def stored_content(d, qid):
    rows = d.db("SELECT c.content FROM message_contents c WHERE "
                "c.message_id = ?", (qid,))
    assert rows, qid
    content = rows[0][0]
    return content.decode() if isinstance(content, bytes) else content


def test_policy_prepend_adds_headers(start, policy):
    # postgrey answers PREPEND X-Greylist at RCPT, policyd-spf PREPEND
    # Received-SPF: both reach the stored message, in the order given,
    # after our Received and Authentication-Results fields.
    policy.answers["CONNECT"] = "PREPEND X-Connect: first"
    policy.answers["bob"] = "PREPEND X-Greylist: delayed 62 seconds"
    policy.answers["DATA"] = "PREPEND Received-SPF: none (test)"
    policy.answers["END-OF-MESSAGE"] = "PREPEND X-Late: too late"
    d = start(policy={"service": policy.service, "stages": [
        "connect", "rcpt", "data", "end_of_message"]})
    with session(d) as c:
        line = send_message(c)
        m = QUEUED_RE.match(line)
        assert m, line
        first = stored_content(d, m.group(1))
        # The next transaction keeps the session's field only.
        policy.answers.pop("bob")
        policy.answers.pop("DATA")
        line = send_message(c)
        m = QUEUED_RE.match(line)
        assert m, line
        second = stored_content(d, m.group(1))
    head = first.split("\r\n\r\n", 1)[0]
    names = [l.split(":", 1)[0] for l in head.split("\r\n")
             if l and not l[0].isspace()]
    assert names[:5] == ["Received", "Authentication-Results",
                         "X-Connect", "X-Greylist", "Received-SPF"], names
    assert "X-Greylist: delayed 62 seconds\r\n" in head
    assert "X-Late" not in first
    assert "PREPEND at END-OF-MESSAGE" in d.log()
    head2 = second.split("\r\n\r\n", 1)[0]
    assert "X-Connect: first\r\n" in head2
    assert "X-Greylist" not in head2 and "Received-SPF" not in head2


def test_policy_hold_and_discard(start, policy):
    # HOLD: the message is queued held, as a milter's quarantine, with
    # the service's reason; DISCARD: 250, and nothing queued.
    policy.answers["held"] = "HOLD looks odd"
    policy.answers["gone"] = "DISCARD spam trap"
    d = start(policy={"service": policy.service})
    with session(d) as c:
        line = send_message(c, rcpt_to="held@open.test")
        m = QUEUED_RE.match(line)
        assert m, line
        held = m.group(1)
        line = send_message(c, rcpt_to="gone@open.test")
        assert line.startswith("250 2.0.0 Ok: discarded"), line
        # The next transaction is neither held nor discarded.
        line = send_message(c, rcpt_to="bob@open.test")
        m = QUEUED_RE.match(line)
        assert m, line
        plain = m.group(1)
    rows = d.db("SELECT address, state FROM recipients WHERE "
                "message_id = ?", (held,))
    assert rows == [("held@open.test", "held")], rows
    ev = d.db("SELECT kind, detail FROM events WHERE message_id = ?",
              (held,))
    assert len(ev) == 1 and ev[0][0] == "held", ev
    assert re.fullmatch(r"policy service unix:\S+: looks odd", ev[0][1]), ev
    assert "held by policy: policy service" in d.log()
    assert d.db("SELECT COUNT(*) FROM recipients WHERE address = ?",
                ("gone@open.test",)) == [(0,)]
    assert re.search(r"message discarded: policy service unix:\S+: spam "
                     r"trap", d.log()), d.log()[-2000:]
    rows = d.db("SELECT state FROM recipients WHERE message_id = ?",
                (plain,))
    assert rows and rows[0][0] != "held", rows


def test_postgrey_greylists_then_prepends(start):
    # The real postgrey (Debian's), unchanged: DEFER_IF_PERMIT the first
    # time, PREPEND X-Greylist once the delay has passed.
    postgrey = shutil.which("postgrey") or "/usr/sbin/postgrey"
    if not os.path.exists(postgrey):
        pytest.skip("postgrey is not installed (contrib/install-deps.sh)")
    tmp = tempfile.mkdtemp(prefix="mxgate-postgrey-", dir="/tmp")
    os.chmod(tmp, 0o777)
    dbdir = os.path.join(tmp, "db")
    os.mkdir(dbdir)
    shutil.chown(dbdir, "postgrey", "postgrey")
    sock = os.path.join(tmp, "postgrey.sock")
    proc = subprocess.Popen(
        [postgrey, "--unix=" + sock, "--socketmode=0666",
         "--dbdir=" + dbdir, "--delay=2", "--user=postgrey",
         "--group=postgrey", "--pidfile=" + os.path.join(tmp, "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock) or
                        proc.poll() is not None, 15)
        assert proc.poll() is None, proc.stderr.read()
        d = start(policy={"service": "unix:" + sock})
        line = rcpt(d, "grey")
        assert line.startswith("450 4.2.0 Greylisted"), line
        time.sleep(3)
        with session(d) as c:
            line = send_message(c, rcpt_to="grey@open.test")
            m = QUEUED_RE.match(line)
            assert m, line
            content = stored_content(d, m.group(1))
        head = content.split("\r\n\r\n", 1)[0]
        assert "\r\nX-Greylist: delayed " in head, head
        assert "by postgrey" in head, head
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


class SpawnedPolicy:
    """What Postfix's spawn(8) does for a stdin/stdout policy program: a
    unix socket whose every connection gets its own process (run in the
    namespace, for its DNS), the socket as its stdin and stdout."""

    def __init__(self, ns, argv):
        self.ns, self.argv, self.procs = ns, argv, []
        self.dir = tempfile.mkdtemp(prefix="mxgate-spawn-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        path = os.path.join(self.dir, "policy.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.service = "unix:" + path
        self.stopping = False
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                self.procs.append(self.ns.popen(
                    self.argv, stdin=conn.fileno(), stdout=conn.fileno(),
                    stderr=subprocess.DEVNULL))

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_policyd_spf_prepends_received_spf(start, ns):
    # Debian's postfix-policyd-spf-python, unchanged, as Postfix runs it:
    # its PREPEND Received-SPF reaches the stored message.
    prog = shutil.which("policyd-spf")
    if prog is None:
        pytest.skip("policyd-spf is not installed (Debian package "
                    "postfix-policyd-spf-python, contrib/install-deps.sh)")
    spawned = SpawnedPolicy(ns, [prog])
    try:
        d = start(policy={"service": spawned.service})
        with session(d) as c:
            line = send_message(c)
            m = QUEUED_RE.match(line)
            assert m, line
            content = stored_content(d, m.group(1))
    finally:
        spawned.close()
    head = content.split("\r\n\r\n", 1)[0]
    assert re.search(r"\r\nReceived-SPF: Pass \(mailfrom\) identity=mailfrom;"
                     r" client-ip=198\.51\.100\.20;", head), head


# The service's answer at each stage other than RCPT, and what the
# session is left with: the command refused, nothing after it done.
ALL_STAGES = ["connect", "helo", "mail", "rcpt", "data", "end_of_message"]
STAGE_ACTIONS = [
    ("REJECT no thanks", "554 5.7.1 no thanks"),
    ("DEFER", "450 4.7.1 Try again later"),
    ("DEFER_IF_PERMIT greylisted", "450 4.7.1 greylisted"),
    ("551 5.7.2 go elsewhere", "551 5.7.2 go elsewhere"),
    ("452 4.3.1 come back later", "452 4.3.1 come back later"),
]


def until_state(d, state):
    """A session from CLIENT up to the command the service is asked about
    at state (sending each command before it, each accepted); returns the
    client and the reply to that command."""
    c = d.raw()
    line = c.line()
    if state == "CONNECT":
        return c, line
    assert line.startswith("220 "), line
    line = c.cmd("EHLO client.example")
    if state == "EHLO":
        return c, line
    assert line.startswith("250"), line
    line = c.cmd("MAIL FROM:<a@sender.example>")
    if state == "MAIL":
        return c, line
    assert line.startswith("250 2.1.0"), line
    assert c.cmd("RCPT TO:<bob@open.test>").startswith("250 2.1.5")
    line = c.cmd("DATA")
    if state == "DATA":
        return c, line
    assert line.startswith("354"), line
    c.send(make_message("stages", sender="a@sender.example",
                        rcpt="bob@open.test") + ".\r\n")
    return c, c.line(timeout=20)


# protocol_state, in dialogue order, and the stage mxgate logs for it
STATES = [("CONNECT", "connect"), ("EHLO", "helo"), ("MAIL", "mail"),
          ("RCPT", "rcpt"), ("DATA", "data"),
          ("END-OF-MESSAGE", "end_of_message")]


@pytest.mark.parametrize("state,stage", [x for x in STATES if x[0] != "RCPT"])
def test_policy_actions_at_other_stages(start, policy, state, stage):
    d = start(policy={"service": policy.service, "stages": ALL_STAGES})
    names = [x[0] for x in STATES]
    asked = names[:names.index(state) + 1]
    for action, expect in STAGE_ACTIONS:
        policy.requests.clear()
        policy.answers[state] = action
        if state == "CONNECT":
            # RFC 5321 3.1, 4.2.5: a greeting is 554 or 421, nothing else
            expect = ("554" if expect[0] == "5" else "421") + expect[3:]
        c, line = until_state(d, state)
        with c:
            assert line == expect, (action, line)
            # the stage was refused, and the session went no further
            if state == "CONNECT" and expect.startswith("421"):
                # 421: the server closes the connection
                assert c.closed_by_peer(), "connection left open"
                assert policy.states() == asked, (action, policy.states())
                continue
            if state == "CONNECT":
                # RFC 5321 3.1: after a refusing greeting only QUIT
                assert c.cmd("EHLO client.example").startswith("503 ")
            elif state == "EHLO":
                assert c.cmd("MAIL FROM:<a@sender.example>").startswith(
                    "503 ")
            elif state == "MAIL":
                assert c.cmd("RCPT TO:<bob@open.test>").startswith("503 ")
            elif state == "DATA":
                # no 354: what follows is no message, RSET starts over
                assert c.cmd("RSET").startswith("250 ")
            assert c.cmd("QUIT").startswith("221 ")
        assert policy.states() == asked, (action, policy.states())
    assert d.message_count() == 0
    assert re.search(r'event=reject stage=%s .*reply="450 4\.7\.1 Try again '
                     r'later" reason="action=DEFER"' % stage, d.log()), \
        d.log()[-2000:]
    # DUNNO at every stage: the same dialogue goes through
    policy.answers.clear()
    with session(d) as c:
        assert QUEUED_RE.match(send_message(c))
    assert d.message_count() == 1

def test_policy_421_closes(start, policy):
    policy.answers["bob"] = "421 4.7.0 closing now"
    d = start(policy={"service": policy.service})
    with session(d) as c:
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("421 4.7.0")
        assert c.closed_by_peer()


def test_policy_inet_and_reuse(start, ns):
    p = PolicyServer(ns=ns)
    try:
        p.answers["no"] = "REJECT"
        d = start(policy={"service": p.service},
                  server={"workers": 1})
        for i in range(5):
            assert rcpt(d, "no").startswith("554 ")
            assert rcpt(d, "yes").startswith("250 ")
        assert len(p.requests) == 10
        # one worker, one request at a time: one connection for all
        assert p.connections == 1
    finally:
        p.close()


def test_policy_service_down_uses_default(start):
    d = start(policy={"service": "unix:/nonexistent/policy.sock",
                      "default": "DEFER policy service unavailable"})
    assert rcpt(d, "bob") == "450 4.7.1 policy service unavailable"
    # Postfix's default: a service that is down is a temporary failure,
    # never greylisting silently off.
    d2 = start(policy={"service": "unix:/nonexistent/policy.sock"})
    assert rcpt(d2, "bob") == "451 4.3.5 Server configuration problem"
    d3 = start(policy={"service": "unix:/nonexistent/policy.sock",
                       "default": "DUNNO"})
    assert rcpt(d3, "bob").startswith("250 ")


def test_policy_timeout_uses_default(start, policy):
    policy.answers["bob"] = "slow"
    d = start(policy={"service": policy.service, "timeout": 1,
                      "default": "451 4.3.0 policy timeout"})
    t0 = time.monotonic()
    assert rcpt(d, "bob") == "451 4.3.0 policy timeout"
    assert time.monotonic() - t0 < 6      # the answer would take 8 s
    # the next request works (on a new connection)
    assert rcpt(d, "alice").startswith("250 ")


def test_named_policy_services_per_route(start, policy):
    """A route's policy_service is asked about its recipients instead of
    the global service, which stays the default for the other routes; a
    named service that is down takes its own default."""
    other_dir = tempfile.mkdtemp(prefix="mxgate-policy-", dir="/tmp")
    os.chmod(other_dir, 0o755)
    named = PolicyServer(unix_dir=other_dir)
    try:
        policy.answers["carol"] = "REJECT global says no"
        named.answers["carol"] = "OK"
        named.answers["dave"] = "550 5.7.1 named says no"
        d = start(policy={"service": policy.service},
                  policy_services=[
                      {"name": "strict", "service": named.service},
                      {"name": "gone", "service": "unix:/nonexistent/p.sock",
                       "default": "DEFER named service unavailable"}],
                  routes=[
                      {"name": "special", "rcpt": r"@special\.test$",
                       "action": "debug", "policy_service": "strict"},
                      {"name": "down", "rcpt": r"@down\.test$",
                       "action": "debug", "policy_service": "gone"},
                      {"name": "open", "rcpt": r"@open\.test$",
                       "action": "debug"}])
        assert rcpt(d, "carol") == "554 5.7.1 global says no"
        with session(d) as c:
            assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
            assert c.cmd("RCPT TO:<carol@special.test>").startswith("250")
            assert c.cmd("RCPT TO:<dave@special.test>") == \
                "550 5.7.1 named says no"
            assert c.cmd("RCPT TO:<erin@down.test>") == \
                "450 4.7.1 named service unavailable"
        with named.lock:
            asked = sorted(r["recipient"] for r in named.requests)
        assert asked == ["carol@special.test", "dave@special.test"]
        with policy.lock:
            assert all(r["recipient"].endswith("@open.test")
                       for r in policy.requests)
    finally:
        named.close()
        shutil.rmtree(other_dir, ignore_errors=True)


def test_trusted_client_skips_policy(start, policy):
    policy.answers["bob"] = "REJECT"
    d = start(policy={"service": policy.service},
              trusted_networks=[CLIENT])
    assert rcpt(d, "bob").startswith("250 ")
    assert rcpt(d, "bob", source=OTHER).startswith("554 ")
    assert len(policy.requests) == 1


# ---------------------------------------------------------------------------
# The example plugin


def test_example_plugin(start):
    d = start(plugins=[{"path": example_plugin(),
                        "args": "prefix=blocked- max_messages=1"}])
    assert rcpt(d, "blocked-carol") == (
        "550 5.7.1 <blocked-carol@open.test>: recipient blocked by the "
        "example plugin")
    assert rcpt(d, "carol").startswith("250 ")
    with session(d) as c:
        assert QUEUED_RE.match(send_message(c, subject="first"))
        line = send_message(c, subject="second")
        assert line.startswith("451 4.7.1 example plugin: more than 1 "
                               "messages"), line
    assert wait_for(lambda: "example plugin: session" in d.log()
                    and "subject first" in d.log(), 5), d.log()[-2000:]


def test_example_plugin_connect_mail_data(start):
    """on_connect, on_mail and on_data, each on its trigger in the args;
    the sessions, senders and messages that do not match go through."""
    d = start(plugins=[{"path": example_plugin(), "args":
                        "refuse_client=%s refuse_sender=spam@sender.example "
                        "defer_sender=bulk@sender.example" % OTHER}])
    with d.raw(source=OTHER) as c:
        assert c.line() == ("554 5.7.1 <%s>: client refused by the example "
                            "plugin" % OTHER)
        # RFC 5321 3.1: after a refusing greeting only QUIT
        assert c.cmd("EHLO client.example").startswith("503 ")
        assert c.cmd("QUIT").startswith("221 ")
    with session(d) as c:                       # CLIENT: welcome
        # on_mail; the plugin compares without regard to case (mxgate
        # gives it the domain in lower case)
        assert c.cmd("MAIL FROM:<Spam@Sender.example>") == (
            "550 5.7.1 <Spam@sender.example>: sender refused by the "
            "example plugin")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("503 ")
        # on_data, with the whole envelope
        assert c.cmd("MAIL FROM:<bulk@sender.example>").startswith("250 ")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<carol@open.test>").startswith("250 ")
        assert c.cmd("DATA") == ("451 4.7.1 <bulk@sender.example>: message "
                                 "for 2 recipient(s) deferred by the example "
                                 "plugin")
        assert c.cmd("RSET").startswith("250 ")
        # another sender in the same session: MAIL and DATA accepted
        assert QUEUED_RE.match(send_message(c))
    log = d.log()
    for stage, reply in (("connect", "554 5.7.1 <%s>" % OTHER),
                         ("mail", "550 5.7.1 <Spam@sender.example>"),
                         ("data", "451 4.7.1 <bulk@sender.example>")):
        assert re.search(r'event=reject stage=%s .*reply="%s[^"]*" '
                         r'reason="plugin=example"' % (stage, re.escape(reply)),
                         log), log
    # only that message was queued, the only one on_message saw
    assert d.message_count() == 1
    assert wait_for(lambda: "example plugin: session" in d.log(), 5)
    assert d.log().count("example plugin: session") == 1, d.log()[-2000:]


def test_plugin_accept_skips_policy(start, policy):
    d = start(plugins=[{"path": example_plugin(),
                        "args": "trust_helo=friend.example"}],
              policy={"service": policy.service, "stages": ["helo", "rcpt"]})
    with d.raw() as c:
        c.line()
        assert c.cmd("EHLO friend.example").startswith("250")
        assert c.cmd("EHLO stranger.example").startswith("250")
    assert [r["helo_name"] for r in policy.requests] == ["stranger.example"]
    # a plugin's reject comes before the policy service
    assert rcpt(d, "blocked-x").startswith("550 5.7.1")
    assert "blocked-x@open.test" not in [r.get("recipient")
                                         for r in policy.requests]


def test_plugin_errors_stop_the_start(tmp_path):
    conf = tmp_path / "mxgate.conf"
    base = ('listen = ( { address = "127.0.0.1"; port = 2525; } );\n'
            'queue = { directory = "%s"; };\n' % (tmp_path / "q"))
    conf.write_text(base + 'plugins = (\n  { path = "%s"; args = "colour=blue"; } );\n'
                    % example_plugin())
    # -n loads and checks the ABI, without init()
    r = subprocess.run([mxgated_path(), "-n", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # a real start calls init(), which refuses the args
    r = subprocess.run([mxgated_path(), "-f", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert ("%s:4: 'plugins[0]': plugin %s: init failed: unknown argument "
            "\"colour\"" % (conf, example_plugin())) in r.stderr, r.stderr
    libm = subprocess.run(["sh", "-c", "ls /lib/*/libm.so.6 | head -1"],
                          capture_output=True, text=True).stdout.strip()
    conf.write_text(base + 'plugins = ( { path = "%s"; } );\n' % libm)
    r = subprocess.run([mxgated_path(), "-n", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "not an mxgate plugin" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# Built-in checks


def test_reject_networks(start):
    d = start(reject_networks=["198.51.100.64/26"])
    with d.raw(source=OTHER) as c:
        assert c.line() == ("554 5.7.1 <%s>: Client host rejected: Access "
                            "denied" % OTHER)
        # RFC 5321 3.1: then only QUIT
        assert c.cmd("EHLO client.example").startswith("503")
        assert c.cmd("QUIT").startswith("221")
    with d.raw(source=CLIENT) as c:
        assert c.line().startswith("220 ")


def test_helo_checks(start):
    d = start(helo_checks=True)
    with d.raw() as c:
        c.line()
        assert c.cmd("EHLO my_pc") == ("501 5.5.2 <my_pc>: Helo command "
                                       "rejected: not a host name or address "
                                       "literal")
        assert c.cmd("EHLO [198.51.100.20]").startswith("250")
        assert c.cmd("HELO [IPv6:2001:db8::1]").startswith("250")
        assert c.cmd("HELO bad..name").startswith("501 5.5.2")
        assert c.cmd("EHLO client.example").startswith("250")
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    d2 = start()                            # off by default
    with d2.raw() as c:
        c.line()
        assert c.cmd("EHLO my_pc").startswith("250")


def test_message_rate_limit(start):
    d = start(rate_limits={"messages_per_minute": 2},
              trusted_networks=["198.51.100.64/26"])
    with session(d) as c:
        for i in range(2):
            assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
            assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<a@sender.example>") == (
            "450 4.7.1 Too many messages from %s, slow down" % CLIENT)
    with session(d, source=OTHER) as c:       # trusted: no limit
        for i in range(4):
            assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
            assert c.cmd("RSET").startswith("250")


def test_connection_rate_limit(start):
    d = start(rate_limits={"connections_per_minute": 3},
              trusted_networks=["198.51.100.64/26"])
    for i in range(3):
        with d.raw(source=CLIENT) as c:
            assert c.line().startswith("220 ")
    with d.raw(source=CLIENT) as c:
        assert c.line() == ("421 4.7.0 Too many connections from your "
                            "address, try again later")
    for i in range(5):                        # trusted: not counted
        with d.raw(source=OTHER) as c:
            assert c.line().startswith("220 ")
    assert "refused: over 3 connections per minute" in d.log()
