"""Local handlers end to end: a route sends recipients to maildir, pipe,
lmtp, webhook, discard or debug, the scheduler runs the handler in a
delivery child (as the delivery user, "mxgate-deliver" by default), and we
look at what arrived and at the recipient's state and last reply in the queue.

Servers the handlers talk to are started here on loopback: an LMTP server
(aiosmtpd's LMTP class) on a unix socket and on 127.0.0.1, and an HTTPS
server (http.server + ssl, a throwaway self-signed certificate made with
the openssl command) for webhooks.  Everything that waits is bounded.
"""

import base64
import email
import email.policy
import hashlib
import hmac
import http.server
import json
import os
import pwd
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import free_port, queued_id, wait_for

SRC_TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(SRC_TOP, "tests", "unit", "data")
FINAL = ("delivered", "bounced")
SECRET = "whsec_0123456789abcdef"


# ---------------------------------------------------------------------------
# Helpers

def owned_by_queue_user(path, mode=0o755):
    """Delivery children run as the delivery user ("mxgate-deliver"): make
    path theirs (when we are root) and open enough either way."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam("mxgate-deliver")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


@pytest.fixture
def outdir():
    """A directory the delivery children (mxgate-deliver) can reach: pytest's
    tmp_path sits under 0700 directories."""
    path = tempfile.mkdtemp(prefix="mxgate-handlers-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def workdir(base, name):
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    owned_by_queue_user(path, 0o777)
    return path


def handler_settings(routes, **delivery):
    """Overrides: these routes, quick retries, rows kept after delivery
    (so the tests can read the final state), bounces to a closed port."""
    sink_port = free_port()
    dl = {"retry_schedule": [1], "keep_delivered": "1d",
          "bounce_upstream": "sink"}
    dl.update(delivery)
    return {
        "accept_domains": None,
        "routes": routes,
        "upstreams": [{"name": "sink", "hosts": ["127.0.0.1:%d" % sink_port],
                       "tls": "none"}],
        "delivery": dl,
    }


def send(d, rcpts, content, sender="alice@sender.example"):
    """One message over SMTP; returns its queue id."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    with smtplib.SMTP(d.host, d.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = s.data(content)
        assert code == 250, (code, text)
        return queued_id("%d %s" % (code, text.decode()))


def recipients(d, qid):
    """{address: (state, last_reply, attempts, destination)}"""
    rows = d.db("SELECT address, state, last_reply, attempts, destination "
                "FROM recipients WHERE message_id = ?", (qid,))
    return {r[0]: tuple(r[1:]) for r in rows}


def wait_states(d, qid, want, timeout=20.0):
    """Wait until every recipient is in a state of want (a set, or a
    {address: state} dict); returns recipients()."""
    def done():
        rc = recipients(d, qid)
        if not rc:
            return None
        if isinstance(want, dict):
            ok = all(rc.get(a, (None,))[0] == s for a, s in want.items())
        else:
            ok = all(v[0] in want for v in rc.values())
        return rc if ok else None
    rc = wait_for(done, timeout, interval=0.1)
    assert rc, "message %s not in %r after %.0fs: %r\n%s" % (
        qid, want, timeout, recipients(d, qid), d.log()[-4000:])
    return rc


def simple_message(subject="handler test", body="first line\r\n.dot line\r\n"):
    return ("From: Alice <alice@sender.example>\r\n"
            "To: <bob@example.test>\r\n"
            "Subject: %s\r\n"
            "Message-ID: <%s@sender.example>\r\n"
            "\r\n%s" % (subject, re.sub(r"\W", "", subject), body))


def fixture_message():
    """The multipart fixture of the unit tests: text + html alternative
    (quoted-printable and base64), a PDF with an RFC 2047 name, an image
    with an RFC 2231 name.  Its Received: line goes: we add our own."""
    with open(os.path.join(DATA, "multipart.eml"), "rb") as f:
        raw = f.read()
    return raw.split(b"\r\n", 2)[2]


def fixture_bytes(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------
# maildir

def test_maildir(daemon_factory, outdir):
    mail = workdir(outdir, "mail")
    d = daemon_factory(handler_settings([
        {"name": "boxes", "rcpt": r"^(?<user>[a-z]+)@maildir\.test$",
         "action": "maildir", "path": mail + "/${user}/Maildir/"},
    ]))
    qid = send(d, ["alice@maildir.test", "bob@maildir.test"],
               simple_message("maildir test"))
    rc = wait_states(d, qid, {"delivered"})
    for user in ("alice", "bob"):
        box = os.path.join(mail, user, "Maildir")
        assert rc["%s@maildir.test" % user][0] == "delivered"
        assert rc["%s@maildir.test" % user][1].startswith(
            "250 2.0.0 delivered to %s/new/" % box)
        assert rc["%s@maildir.test" % user][3] == box + "/"
        assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]
        assert os.listdir(os.path.join(box, "tmp")) == []
        assert os.stat(box).st_mode & 0o777 == 0o700
        files = os.listdir(os.path.join(box, "new"))
        assert len(files) == 1
        assert re.match(r"^\d+\.M\d+P\d+Q\d+\.[^/:]+$", files[0]), files
        with open(os.path.join(box, "new", files[0]), "rb") as f:
            got = f.read()
        assert got.startswith(b"Return-Path: <alice@sender.example>\n"
                              b"Delivered-To: %s@maildir.test\nReceived: "
                              % user.encode())
        assert b"\r" not in got
        assert b"\nSubject: maildir test\n" in got
        assert got.endswith(b"\n\nfirst line\n.dot line\n")


def test_maildir_permission_defers(daemon_factory, outdir):
    if os.geteuid() != 0:
        pytest.skip("needs root: deliveries must run as mxgate-deliver")
    locked = os.path.join(outdir, "locked")
    os.makedirs(locked)
    os.chmod(locked, 0o755)      # root's, not writable by the queue user
    d = daemon_factory(handler_settings([
        {"name": "locked", "rcpt": r"@locked\.test$", "action": "maildir",
         # the root (locked/) exists and is root's: mxgated leaves it
         # alone, and the queue's user cannot create x/ in it
         "path": locked + "/${local}/"},
    ]))
    qid = send(d, ["x@locked.test"], simple_message("locked"))
    rc = wait_states(d, qid, {"deferred"})
    assert rc["x@locked.test"][1].startswith("451 4.3.0 cannot create ")
    assert "Permission denied" in rc["x@locked.test"][1]


# ---------------------------------------------------------------------------
# pipe

PIPE_SCRIPT = r"""#!/bin/sh
# $1: what to do; the message goes to $OUT/<local part>.in
out="%(out)s/${RECIPIENT%%%%@*}"
cat > "$out.in"
env | sort > "$out.env"
case "$1" in
  ok) exit 0 ;;
  tempfail) echo "mailbox locked, try later" >&2; exit 75 ;;
  fail) echo "no such ticket: $MXGATE_VAR_TICKET" >&2; exit 1 ;;
  hang) echo "hanging" >&2; exec sleep 60 ;;
esac
exit 64
"""


def pipe_setup(base):
    out = workdir(base, "pipe-out")
    script = os.path.join(base, "handler.sh")
    with open(script, "w") as f:
        f.write(PIPE_SCRIPT % {"out": out})
    os.chmod(script, 0o755)
    return out, script


def test_pipe_exit_statuses(daemon_factory, outdir):
    out, script = pipe_setup(outdir)
    routes = [
        {"name": "p-" + what, "rcpt": r"^%s\+(?<ticket>[0-9]+)@pipe\.test$"
         % what, "action": "pipe", "command": [script, what], "timeout": 2}
        for what in ("ok", "tempfail", "fail", "hang")
    ]
    d = daemon_factory(handler_settings(
        routes, retry_schedule=[3600]))
    t0 = time.monotonic()
    qid = send(d, ["ok+1@pipe.test", "tempfail+2@pipe.test",
                   "fail+3@pipe.test", "hang+4@pipe.test"],
               simple_message("pipe statuses"))
    rc = wait_states(d, qid, {"ok+1@pipe.test": "delivered",
                              "tempfail+2@pipe.test": "deferred",
                              "fail+3@pipe.test": "bounced",
                              "hang+4@pipe.test": "deferred"})
    assert time.monotonic() - t0 < 15
    assert rc["ok+1@pipe.test"][1] == \
        "250 2.0.0 delivered to command %s" % script
    assert rc["ok+1@pipe.test"][3] == script
    assert rc["tempfail+2@pipe.test"][1] == (
        "451 4.3.0 command exited with status 75 (EX_TEMPFAIL): "
        "mailbox locked, try later")
    assert rc["fail+3@pipe.test"][1] == \
        "554 5.3.0 command exited with status 1: no such ticket: 3"
    assert rc["hang+4@pipe.test"][1] == (
        "451 4.4.7 command %s timed out after 2 seconds: hanging" % script)

    # stdin: the message as queued, LF line ends
    with open(os.path.join(out, "ok+1.in"), "rb") as f:
        got = f.read()
    assert got.startswith(b"Received: from client.example")
    assert b"\r" not in got
    assert got.endswith(b"\nSubject: pipe statuses\nMessage-ID: "
                        b"<pipestatuses@sender.example>\n\n"
                        b"first line\n.dot line\n")
    # the environment: ours only
    with open(os.path.join(out, "ok+1.env")) as f:
        env = dict(l.rstrip("\n").split("=", 1) for l in f if "=" in l)
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["SENDER"] == "alice@sender.example"
    assert env["RECIPIENT"] == "ok+1@pipe.test"
    assert env["RECIPIENTS"] == "ok+1@pipe.test"
    assert env["QUEUE_ID"] == qid
    assert env["CLIENT_IP"] == "127.0.0.1"
    assert env["HELO"] == "client.example"
    assert env["ROUTE"] == "p-ok"
    assert env["MXGATE_VAR_TICKET"] == "1"
    for leaked in ("HOME", "USER", "MXGATE_SRCDIR", "PYTEST_CURRENT_TEST"):
        assert leaked not in env, leaked

    # the bounce carries the command's stderr to the sender
    dsn = d.db("SELECT m.id, c.content FROM messages m JOIN message_contents c"
               " ON c.message_id = m.id WHERE m.sender = ''")
    assert len(dsn) == 1, dsn
    body = dsn[0][1] if isinstance(dsn[0][1], bytes) else dsn[0][1].encode()
    assert b"fail+3@pipe.test" in body
    assert b"no such ticket: 3" in body


def test_pipe_deferred_then_delivered(daemon_factory, outdir):
    """EX_TEMPFAIL is retried from the queue: the second run succeeds."""
    out = workdir(outdir, "flaky")
    script = os.path.join(outdir, "flaky.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\ncat > /dev/null\n"
                "if [ -e %(o)s/tried ]; then exit 0; fi\n"
                "touch %(o)s/tried; echo busy >&2; exit 75\n" % {"o": out})
    os.chmod(script, 0o755)
    d = daemon_factory(handler_settings([
        {"name": "flaky", "rcpt": r"@flaky\.test$", "action": "pipe",
         "command": [script]}]))
    qid = send(d, ["x@flaky.test"], simple_message("flaky"))
    rc = wait_states(d, qid, {"delivered"}, timeout=30)
    assert rc["x@flaky.test"][2] == 2
    kinds = [r[0] for r in d.db("SELECT kind FROM events WHERE message_id = ?"
                               " ORDER BY id", (qid,))]
    assert "deferred" in kinds and kinds[-1] == "delivered", kinds


def check_document(doc, qid, rcpts, route, vars_):
    assert doc["queue_id"] == qid
    assert doc["sender"] == "alice@sender.example"
    assert doc["recipients"] == rcpts
    assert doc["client_ip"] == "127.0.0.1"
    assert doc["helo"] == "client.example"
    assert doc["route"] == route
    assert doc["vars"] == vars_
    assert isinstance(doc["received_at"], int)
    assert abs(doc["received_at"] - time.time()) < 120
    assert doc["subject"] == "Rapport mensuel \u2014 novembre (final)"
    assert doc["from"] == "\u00c9lodie Dupr\u00e9 <elodie@sender.example>"
    assert doc["message_id"] == "report-42@sender.example"
    names = [h["name"] for h in doc["headers"]]
    assert names[0] == "Received" and names[-1] == "Content-Type", names
    assert doc["text"].startswith("Bonjour \u00c9lodie,\nthe report")
    assert "100 \u20ac \u2014 see below." in doc["text"]
    assert doc["html"].startswith("<html><body><p>Bonjour <b>\u00c9lodie</b>")
    att = doc["attachments"]
    assert [a["filename"] for a in att] == [
        "R\u00e9sum\u00e9 2026.pdf", "\u00e9t\u00e9 ../../pic.PNG"]
    assert [a["extension"] for a in att] == ["pdf", "png"]
    assert [a["content_type"] for a in att] == ["application/pdf", "image/png"]
    assert [a["size"] for a in att] == [len(fixture_bytes("multipart.pdf")),
                                        len(fixture_bytes("multipart.png"))]
    return att


def test_pipe_json_with_attachments(daemon_factory, outdir):
    out = workdir(outdir, "json-out")
    saved = workdir(outdir, "attachments")
    script = os.path.join(outdir, "save.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\ncat > %s/$1.json\n" % out)
    os.chmod(script, 0o755)
    d = daemon_factory(handler_settings([
        {"name": "tickets",
         "rcpt": r"^(?<queue>support|billing)\+(?<ticket>[0-9]+)@help\.test$",
         "action": "pipe", "command": [script, "inline"], "format": "json"},
        {"name": "files", "rcpt": r"^files@help\.test$", "action": "pipe",
         "command": [script, "files"], "format": "json",
         "attachments_dir": saved},
    ]))
    qid = send(d, ["support+42@help.test", "files@help.test"],
               fixture_message(), sender="alice@sender.example")
    wait_states(d, qid, {"delivered"})

    with open(os.path.join(out, "inline.json"), "rb") as f:
        doc = json.loads(f.read())
    att = check_document(doc, qid, ["support+42@help.test"], "tickets",
                         {"queue": "support", "ticket": "42"})
    assert base64.b64decode(att[0]["content_base64"]) == \
        fixture_bytes("multipart.pdf")
    assert base64.b64decode(att[1]["content_base64"]) == \
        fixture_bytes("multipart.png")
    assert "path" not in att[0]

    with open(os.path.join(out, "files.json"), "rb") as f:
        doc = json.loads(f.read())
    att = check_document(doc, qid, ["files@help.test"], "files", {})
    assert "content_base64" not in att[0]
    for a, name in zip(att, ("multipart.pdf", "multipart.png")):
        assert os.path.dirname(a["path"]) == saved
        assert os.path.basename(a["path"]).startswith(qid + "-")
        with open(a["path"], "rb") as f:
            assert f.read() == fixture_bytes(name)
    assert sorted(os.listdir(saved)) == sorted(
        os.path.basename(a["path"]) for a in att)


# ---------------------------------------------------------------------------
# lmtp

class LMTPHandler:
    """Per-recipient verdicts by local part: gone* refused at RCPT,
    full* 452 after the dot, anything else delivered."""

    def __init__(self):
        self.messages = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("gone"):
            return "550 5.1.1 <%s>: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        # aiosmtpd's LMTP class sends one status after the dot; RFC 2033
        # wants one per accepted recipient, so we hand it all the lines.
        lines = []
        for r in envelope.rcpt_tos:
            if r.startswith("full"):
                lines.append("452 4.2.2 <%s>: mailbox full" % r)
            else:
                lines.append("250 2.0.0 <%s>: delivered" % r)
        return "\r\n".join(lines)


def start_lmtp(unix_path=None):
    from aiosmtpd.controller import Controller, UnixSocketController
    from aiosmtpd.lmtp import LMTP

    handler = LMTPHandler()
    if unix_path:
        class Ctl(UnixSocketController):
            def factory(self):
                return LMTP(self.handler)
        ctl = Ctl(handler, unix_socket=unix_path)
    else:
        class Ctl(Controller):
            def factory(self):
                return LMTP(self.handler)
        ctl = Ctl(handler, hostname="127.0.0.1", port=free_port())
    ctl.start()
    if unix_path:
        os.chmod(unix_path, 0o777)
    return ctl, handler


def test_lmtp_unix_and_inet(daemon_factory, outdir):
    sock = os.path.join(workdir(outdir, "lmtp"), "lmtp.sock")
    unix_ctl, unix_h = start_lmtp(sock)
    inet_ctl, inet_h = start_lmtp()
    try:
        d = daemon_factory(handler_settings([
            {"name": "dovecot", "rcpt": r"@unix\.test$", "action": "lmtp",
             "address": "unix:" + sock},
            {"name": "tcp", "rcpt": r"@inet\.test$", "action": "lmtp",
             "address": "inet:127.0.0.1:%d" % inet_ctl.port},
        ], retry_schedule=[3600]))
        qid = send(d, ["ann@unix.test", "full@unix.test", "gone@unix.test",
                       "bea@inet.test"], simple_message("lmtp test"))
        rc = wait_states(d, qid, {"ann@unix.test": "delivered",
                                  "full@unix.test": "deferred",
                                  "gone@unix.test": "bounced",
                                  "bea@inet.test": "delivered"})
        assert rc["ann@unix.test"][1] == "250 2.0.0 <ann@unix.test>: delivered"
        assert rc["full@unix.test"][1] == \
            "452 4.2.2 <full@unix.test>: mailbox full"
        assert rc["gone@unix.test"][1] == \
            "550 5.1.1 <gone@unix.test>: no such user"
        assert rc["ann@unix.test"][3] == "unix:" + sock
        assert rc["bea@inet.test"][3] == "inet:127.0.0.1:%d" % inet_ctl.port

        # The bounce gives the LMTP server's reply as "smtp;" (RFC 3464
        # 2.3.6), as bounce parsers look for it, and no Remote-MTA for a
        # unix socket, which has no DNS name.
        dsn = wait_for(lambda: d.db(
            "SELECT c.content FROM messages m JOIN message_contents c"
            " ON c.message_id = m.id WHERE m.sender = ''"), 10.0)
        assert len(dsn) == 1, dsn
        body = bytes(dsn[0][0]).decode()
        assert ("Final-Recipient: rfc822; gone@unix.test\r\n"
                "Action: failed\r\nStatus: 5.1.1\r\n"
                "Diagnostic-Code: smtp; 550 5.1.1 <gone@unix.test>: no such"
                " user\r\n") in body, body

        assert len(unix_h.messages) == 1 and len(inet_h.messages) == 1
        mail_from, rcpts, content = unix_h.messages[0]
        assert mail_from == "alice@sender.example"
        assert rcpts == ["ann@unix.test", "full@unix.test"]
        # what we queued, byte for byte (dot-stuffing undone by the server)
        queued = d.db("SELECT content FROM message_contents "
                      "WHERE message_id = ?", (qid,))
        if queued:
            assert content == bytes(queued[0][0])
        assert content.endswith(b"\r\n\r\nfirst line\r\n.dot line\r\n")
        assert inet_h.messages[0][1] == ["bea@inet.test"]
    finally:
        unix_ctl.stop()
        inet_ctl.stop()


def test_lmtp_down_defers(daemon_factory):
    d = daemon_factory(handler_settings([
        {"name": "down", "rcpt": r"@down\.test$", "action": "lmtp",
         "address": "inet:127.0.0.1:%d" % free_port()}],
        retry_schedule=[3600]))
    qid = send(d, ["x@down.test"], simple_message("lmtp down"))
    rc = wait_states(d, qid, {"deferred"})
    assert rc["x@down.test"][1].startswith("451 4.4.1 cannot connect to inet:")


# ---------------------------------------------------------------------------
# webhook

def make_cert(dirpath):
    key = os.path.join(dirpath, "hook.key")
    cert = os.path.join(dirpath, "hook.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    os.chmod(cert, 0o644)
    return cert, key


class Hook:
    """An HTTPS server on 127.0.0.1 that records each POST and answers by
    path: /ok 200, /bad 400 (with a body), /flaky 503 once then 200,
    /hang not before stop() (30 s at most)."""

    def __init__(self, cert, key):
        self.requests = []
        self.flaky_seen = 0
        self.release = threading.Event()
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                hook.requests.append((self.path, dict(self.headers), body))
                status, text = 200, b"thanks"
                if self.path == "/bad":
                    status, text = 400, b"unknown mailbox\n"
                elif self.path == "/flaky":
                    hook.flaky_seen += 1
                    if hook.flaky_seen == 1:
                        status, text = 503, b"busy"
                elif self.path == "/hang":
                    hook.release.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
                                            server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def hook(outdir):
    cert, key = make_cert(outdir)
    h = Hook(cert, key)
    h.cert = cert
    yield h
    h.stop()


def verify_signature(headers, body, secret=SECRET):
    """What an application does (README, "Webhooks")."""
    ts = headers["X-Mxgate-Timestamp"]
    sig = headers["X-Mxgate-Signature"]
    want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sig, want), (sig, want)
    assert abs(int(ts) - time.time()) < 300


def webhook_route(name, rcpt, url, cert, **kw):
    r = {"name": name, "rcpt": rcpt, "action": "webhook", "url": url,
         "secret": SECRET, "tls_ca": cert}
    r.update(kw)
    return r


def test_webhook_json_signed(daemon_factory, hook):
    d = daemon_factory(handler_settings([
        webhook_route("inbound", r"^(?<box>[a-z]+)@hook\.test$",
                      hook.url("/ok"), hook.cert)]))
    qid = send(d, ["support@hook.test"], fixture_message())
    rc = wait_states(d, qid, {"delivered"})
    assert rc["support@hook.test"][1] == "250 2.0.0 webhook answered HTTP 200"
    assert rc["support@hook.test"][3] == hook.url("/ok")
    assert len(hook.requests) == 1
    path, headers, body = hook.requests[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Mxgate-Queue-Id"] == qid
    assert headers["User-Agent"].startswith("mxgate/")
    verify_signature(headers, body)
    # a signature over anything else does not verify
    with pytest.raises(AssertionError):
        verify_signature(headers, body + b" ")
    with pytest.raises(AssertionError):
        verify_signature(headers, body, secret="wrong")
    doc = json.loads(body)
    att = check_document(doc, qid, ["support@hook.test"], "inbound",
                         {"box": "support"})
    assert base64.b64decode(att[0]["content_base64"]) == \
        fixture_bytes("multipart.pdf")


def test_webhook_raw(daemon_factory, hook):
    d = daemon_factory(handler_settings([
        webhook_route("raw", r"@raw\.test$", hook.url("/ok"), hook.cert,
                      format="raw")]))
    qid = send(d, ["x@raw.test"], simple_message("raw hook"))
    wait_states(d, qid, {"delivered"})
    path, headers, body = hook.requests[0]
    assert headers["Content-Type"] == "message/rfc822"
    verify_signature(headers, body)
    assert body.startswith(b"Received: from client.example")
    msg = email.message_from_bytes(body, policy=email.policy.default)
    assert msg["Subject"] == "raw hook"
    assert body.endswith(b"\r\n\r\nfirst line\r\n.dot line\r\n")


def test_webhook_503_retried_then_delivered(daemon_factory, hook):
    d = daemon_factory(handler_settings([
        webhook_route("flaky", r"@flaky\.test$", hook.url("/flaky"),
                      hook.cert)]))
    qid = send(d, ["x@flaky.test"], simple_message("flaky hook"))
    rc = wait_states(d, qid, {"delivered"}, timeout=30)
    assert rc["x@flaky.test"][2] == 2
    assert len(hook.requests) == 2
    details = [r[0] for r in d.db(
        "SELECT detail FROM events WHERE message_id = ? AND kind = 'deferred'",
        (qid,))]
    assert any("451 4.3.0 webhook answered HTTP 503: busy" in (x or "")
               for x in details), details
    # the same queue id both times: the application can drop duplicates
    assert hook.requests[0][1]["X-Mxgate-Queue-Id"] == \
        hook.requests[1][1]["X-Mxgate-Queue-Id"] == qid


def test_webhook_400_bounces(daemon_factory, hook):
    d = daemon_factory(handler_settings([
        webhook_route("bad", r"@bad\.test$", hook.url("/bad"), hook.cert)]))
    qid = send(d, ["x@bad.test"], simple_message("bad hook"))
    rc = wait_states(d, qid, {"bounced"})
    assert rc["x@bad.test"][1] == \
        "554 5.3.0 webhook answered HTTP 400: unknown mailbox"
    assert len(hook.requests) == 1


def test_webhook_timeout_defers(daemon_factory, hook):
    """A server that takes the request and never answers: after the
    route's timeout the recipient is deferred (4.4.7), to be retried."""
    d = daemon_factory(handler_settings([
        webhook_route("slow", r"@slow\.test$", hook.url("/hang"), hook.cert,
                      timeout=2)], retry_schedule=[3600]))
    t0 = time.monotonic()
    qid = send(d, ["x@slow.test"], simple_message("slow hook"))
    rc = wait_states(d, qid, {"deferred"}, timeout=25)
    took = time.monotonic() - t0
    # The route's 2 s, well before the server's own 30 s.
    assert 2 <= took < 20, took
    reply = rc["x@slow.test"][1]
    assert reply.startswith("451 4.4.7 webhook: "), reply
    assert "timed out" in reply, reply
    assert rc["x@slow.test"][3] == hook.url("/hang")
    # The request went through: it is the answer that never came.
    assert [r[0] for r in hook.requests] == ["/hang"]


def test_webhook_verifies_tls_by_default(daemon_factory, hook):
    """Without tls_ca the self-signed certificate is not trusted: deferred,
    nothing posted.  tls_verify = false (tests only) goes through."""
    d = daemon_factory(handler_settings([
        {"name": "strict", "rcpt": r"@strict\.test$", "action": "webhook",
         "url": hook.url("/ok"), "secret": SECRET},
        {"name": "lax", "rcpt": r"@lax\.test$", "action": "webhook",
         "url": hook.url("/ok?lax"), "secret": SECRET, "tls_verify": False},
    ], retry_schedule=[3600]))
    qid = send(d, ["x@strict.test", "y@lax.test"], simple_message("tls"))
    rc = wait_states(d, qid, {"x@strict.test": "deferred",
                              "y@lax.test": "delivered"})
    assert rc["x@strict.test"][1].startswith("451 4.7.5 webhook TLS: ")
    assert [r[0] for r in hook.requests] == ["/ok?lax"]


def test_webhook_routes_with_the_same_parameters(daemon_factory, hook):
    """Each route's own secret and TLS settings apply, even when two
    routes post to the same URL."""
    d = daemon_factory(handler_settings([
        webhook_route("one", r"@one\.test$", hook.url("/ok"), hook.cert),
        webhook_route("two", r"@two\.test$", hook.url("/ok"), hook.cert,
                      secret="another secret"),
    ], retry_schedule=[3600]))
    qid = send(d, ["x@one.test", "y@two.test"], simple_message("same"))
    wait_states(d, qid, {"delivered"})
    assert len(hook.requests) == 2
    secrets = set()
    for _, headers, body in hook.requests:
        doc = json.loads(body)
        secret = SECRET if doc["route"] == "one" else "another secret"
        verify_signature(headers, body, secret=secret)
        secrets.add(secret)
    assert len(secrets) == 2


def test_webhook_down_defers(daemon_factory):
    d = daemon_factory(handler_settings([
        {"name": "down", "rcpt": r"@down\.test$", "action": "webhook",
         "url": "https://127.0.0.1:%d/x" % free_port(), "secret": SECRET}],
        retry_schedule=[3600]))
    qid = send(d, ["x@down.test"], simple_message("hook down"))
    rc = wait_states(d, qid, {"deferred"})
    assert rc["x@down.test"][1].startswith("451 4.4.1 webhook: ")


# ---------------------------------------------------------------------------
# discard, debug

def test_discard(daemon_factory):
    d = daemon_factory(handler_settings([
        {"name": "void", "rcpt": r"@void\.test$", "action": "discard"}]))
    qid = send(d, ["x@void.test"], simple_message("discard me"))
    rc = wait_states(d, qid, {"delivered"})
    assert rc["x@void.test"][1] == "250 2.0.0 discarded"
    assert wait_for(lambda: "id=%s discarded rcpt=<x@void.test> route=void"
                    % qid in d.log(), 5)


def test_debug_prints_the_message(daemon_factory):
    d = daemon_factory(handler_settings([
        {"name": "sink", "rcpt": r"@sink\.test$", "action": "debug"}]))
    qid = send(d, ["dev@sink.test", "ops@sink.test"],
               simple_message("debug sink"))
    rc = wait_states(d, qid, {"delivered"})
    assert rc["dev@sink.test"][1] == "250 2.0.0 printed to the log"
    assert wait_for(lambda: "debug ---- end of message %s ----" % qid
                    in d.log(), 5)
    block = [l.split(" debug ", 1)[1] for l in d.log().splitlines()
             if "id=%s debug " % qid in l]
    assert block[0] == "---- message %s ----" % qid
    assert block[1] == ("from=<alice@sender.example> "
                        "to=<dev@sink.test> <ops@sink.test> route=sink")
    assert block[2].startswith("client=127.0.0.1 helo=client.example ")
    assert "| Subject: debug sink" in block
    assert "| .dot line" in block
    assert block[-1] == "---- end of message %s ----" % qid
    # one block per message, however many recipients
    assert d.log().count("---- message %s ----" % qid) == 1
