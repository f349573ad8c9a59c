"""Delivery: the scheduler, the relay client, bounces and queue management.

Each test starts the daemon under test ("A") with routes that relay to
upstreams the test starts on loopback:

    Capture      aiosmtpd (Debian's python3-aiosmtpd) recording every
                 envelope and message; optional STARTTLS and AUTH
    FakeSMTP     a scripted server written here: chosen extensions
                 (PIPELINING, 8BITMIME, SIZE...), chosen replies per
                 command, and a transcript that shows how commands arrived
                 (pipelined or not) and on how many connections
    a second mxgated, whose default routes keep what it receives in its
                 queue (relayed to a "parked" upstream that never answers)

Short retry schedules ([1] second) keep the tests quick; every wait is
bounded.
"""

import email
import email.policy
import os
import re
import signal
import smtplib
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_for, queued_id, TIME_SCALE

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - the CI image has it
    Controller = None

needs_aiosmtpd = pytest.mark.skipif(Controller is None,
                                    reason="python3-aiosmtpd not installed")

SENDER = "alice@sender.example"


# ---------------------------------------------------------------------------
# Upstream servers

class CaptureHandler:
    """aiosmtpd handler: records each message; replies can be scripted."""

    def __init__(self):
        self.messages = []          # dicts: mail_from, rcpts, data, options
        self.lock = threading.Lock()
        self.rcpt_replies = {}      # address -> reply for RCPT
        self.data_replies = []      # replies for the next DATAs, in order
        self.delay = 0.0            # seconds to sleep in DATA

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if self.data_replies:
                reply = self.data_replies.pop(0)
                if not reply.startswith("2"):
                    return reply
            self.messages.append({
                "mail_from": envelope.mail_from,
                "rcpts": list(envelope.rcpt_tos),
                "data": envelope.original_content,
                "options": list(envelope.mail_options),
                "tls": session.ssl is not None,
                "auth": getattr(session, "authenticated", False),
            })
        return "250 2.0.0 Ok: captured"

    def count(self):
        with self.lock:
            return len(self.messages)


class Capture:
    """aiosmtpd on 127.0.0.1:port (a free one unless given)."""

    def __init__(self, port=None, tls_context=None, require_starttls=False,
                 auth=None, handler=None, auth_exclude=()):
        self.port = port or free_port()
        self.handler = handler or CaptureHandler()
        self.auth_mechanisms = []   # the mechanism of each AUTH tried
        kw = {}
        if tls_context is not None:
            kw["tls_context"] = tls_context
            kw["require_starttls"] = require_starttls
        if auth is not None:
            user, password = auth

            def authenticator(server, session, envelope, mechanism, data):
                self.auth_mechanisms.append(mechanism)
                ok = (isinstance(data, LoginPassword)
                      and data.login == user.encode()
                      and data.password == password.encode())
                # handled=False: aiosmtpd then answers 535 itself.
                return AuthResult(success=ok, handled=False)
            kw["authenticator"] = authenticator
            kw["auth_require_tls"] = tls_context is not None
            if auth_exclude:
                kw["auth_exclude_mechanism"] = list(auth_exclude)
        self.controller = Controller(self.handler, hostname="127.0.0.1",
                                     port=self.port, decode_data=False,
                                     enable_SMTPUTF8=True,
                                     server_hostname="capture.test", **kw)
        self.controller.start()

    @property
    def messages(self):
        return self.handler.messages

    def stop(self):
        self.controller.stop()


class Gauge:
    """Connections open at once: now, and the most ever seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


class FakeSMTP:
    """A scripted SMTP server on 127.0.0.1, one thread per connection.

    ext:      the EHLO keywords offered
    ehlo:     the reply to EHLO when not 250 (e.g. "502 5.5.1 no EHLO")
    rcpt:     function(address) -> reply line
    data_end: function(n) -> reply to the n-th message's final dot
    gauges:   Gauges that count this server's connections open at once
              (one may be shared by several servers)
    Records: connections, commands (with the index of the recv() that
    brought each one), and messages (mail, rcpts, data)."""

    def __init__(self, ext=("PIPELINING", "8BITMIME", "SIZE 10000000"),
                 ehlo=None, rcpt=None, data_end=None, gauges=(), hang_up=None):
        self.ext = list(ext)
        self.gauges = list(gauges)
        self.ehlo = ehlo
        self.rcpt = rcpt or (lambda a: "250 2.1.5 Ok")
        self.data_end = data_end or (lambda n: "250 2.0.0 Ok: fake")
        # hang_up(n): True to close without a reply once message n's
        # content is read (BDAT LAST); it is not recorded.
        self.hang_up = hang_up or (lambda n: False)
        self.attempts = 0
        self.connections = 0
        self.commands = []          # (connection, recv_index, line)
        self.messages = []
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock):
        for g in self.gauges:
            g.enter()
        # A connection counts until QUIT is read (before the 221 that
        # lets the client go on) or until it ends otherwise.
        counted = [True]

        def uncount():
            if counted[0]:
                counted[0] = False
                for g in self.gauges:
                    g.leave()
        try:
            self._session(sock, uncount)
        finally:
            uncount()

    def _session(self, sock, uncount):
        sock.settimeout(20)
        with self.lock:
            self.connections += 1
            conn = self.connections
        buf = b""
        nrecv = 0
        state = {"mail": None, "rcpts": []}

        def send(line):
            sock.sendall(line.encode() + b"\r\n")

        def lines():
            nonlocal buf, nrecv
            while True:
                while b"\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    nrecv += 1
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                yield line.decode("utf-8", "replace")

        send("220 fake.test ESMTP")
        it = lines()
        for line in it:
            with self.lock:
                self.commands.append((conn, nrecv, line))
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                if self.ehlo:
                    send(self.ehlo)
                    continue
                out = ["fake.test"] + self.ext
                for i, e in enumerate(out):
                    send("250%s%s" % (" " if i == len(out) - 1 else "-", e))
            elif verb == "HELO":
                send("250 fake.test")
            elif verb == "MAIL":
                state = {"mail": line, "rcpts": []}
                send("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = re.search(r"<([^>]*)>", line).group(1)
                reply = self.rcpt(addr)
                if reply.startswith("2"):
                    state["rcpts"].append(addr)
                send(reply)
            elif verb == "DATA":
                if not state["rcpts"]:
                    send("554 5.5.1 no valid recipients")
                    continue
                send("354 go ahead")
                while b"\r\n.\r\n" not in b"\r\n" + buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                raw, buf = (b"\r\n" + buf).split(b"\r\n.\r\n", 1)
                raw = raw[2:]
                data = b"\r\n".join(l[1:] if l.startswith(b".") else l
                                    for l in raw.split(b"\r\n"))
                if raw:
                    data += b"\r\n"
                with self.lock:
                    self.messages.append({"mail": state["mail"],
                                          "rcpts": state["rcpts"],
                                          "data": data, "connection": conn})
                    n = len(self.messages)
                send(self.data_end(n))
            elif verb == "BDAT" and "CHUNKING" in self.ext:
                # RFC 3030: the chunk is read whatever the reply.
                words = line.split()
                size = int(words[1])
                last = len(words) > 2 and words[2].upper() == "LAST"
                while len(buf) < size:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                state.setdefault("chunks", []).append(buf[:size])
                buf = buf[size:]
                if not state["rcpts"]:
                    send("554 5.5.1 no valid recipients")
                    state = {"mail": None, "rcpts": []}
                    continue
                if not last:
                    send("250 2.0.0 %d octets" % size)
                    continue
                with self.lock:
                    self.attempts += 1
                    if self.hang_up(self.attempts):
                        return
                    self.messages.append({"mail": state["mail"],
                                          "rcpts": state["rcpts"],
                                          "data": b"".join(state["chunks"]),
                                          "connection": conn, "bdat": True})
                    n = len(self.messages)
                state = {"mail": None, "rcpts": []}
                send(self.data_end(n))
            elif verb == "RSET":
                state = {"mail": None, "rcpts": []}
                send("250 2.0.0 Ok")
            elif verb == "NOOP":
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                uncount()
                send("221 2.0.0 Bye")
                return
            else:
                send("502 5.5.2 unknown command")


def closed_port():
    """A loopback port where nothing listens (bound and closed again)."""
    return free_port()


# ---------------------------------------------------------------------------
# The daemon under test

def relay_settings(upstreams, routes=None, delivery=None, keep="1d"):
    """Overrides for daemon_factory: example.test relayed to the upstream
    "next" (or the routes given), quick retries, outcomes kept a day."""
    d = {"retry_schedule": [1], "keep_delivered": keep,
         "connect_timeout": 5, "command_timeout": 10, "data_timeout": 10}
    d.update(delivery or {})
    return {
        "upstreams": upstreams,
        "routes": routes or [
            {"name": "to_next", "rcpt": r"@example\.test$",
             "action": "relay", "upstream": "next"},
            {"name": "other", "rcpt": ".*", "action": "reject",
             "code": 550, "text": "5.7.1 no"},
        ],
        "delivery": d,
    }


def upstream(name, hosts, **kw):
    u = {"name": name, "hosts": hosts, "tls": "none"}
    u.update(kw)
    return u


def send(d, rcpts, data, sender=SENDER, mail_options=()):
    """Send one message with smtplib; returns the queue id."""
    with smtplib.SMTP(d.host, d.port, timeout=20) as s:
        s.ehlo("client.test")
        code, resp = s.mail(sender, list(mail_options))
        assert code == 250, resp
        for r in ([rcpts] if isinstance(rcpts, str) else rcpts):
            code, resp = s.rcpt(r)
            assert code == 250, resp
        code, resp = s.data(data)
        assert code == 250, resp
        return queued_id("%d %s" % (code, resp.decode()))


def message(subject, body="hello\r\n", extra=""):
    return ("From: <%s>\r\nTo: <bob@example.test>\r\nSubject: %s\r\n"
            "Message-ID: <%s@sender.example>\r\n%s\r\n%s"
            % (SENDER, subject, re.sub(r"\W", "", subject) or "x", extra,
               body))


def states(d, qid):
    return {r[0]: r[1] for r in d.db(
        "SELECT address, state FROM recipients WHERE message_id = ?",
        (qid,))}


def wait_state(d, qid, want, timeout=15.0):
    """Wait until every recipient of qid is in state want (a str) or in
    the states of the dict want."""
    def ok():
        st = states(d, qid)
        if isinstance(want, dict):
            return st == want
        return st and all(v == want for v in st.values())
    assert wait_for(ok, timeout), "states of %s: %s\n%s" % (
        qid, states(d, qid), d.log()[-3000:])


TRACE_FIELDS = (b"received:", b"authentication-results:")


def strip_trace(data):
    """The message without the trace fields gateways add on top
    (Received:, Authentication-Results:)."""
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines) and lines[i].lower().startswith(TRACE_FIELDS):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


def history(d, qid):
    """The kinds of a message's history, in order (message_history: the
    events table plus the derived "received" and "routed")."""
    return [r[0] for r in d.db(
        "SELECT kind FROM message_history WHERE message_id = ?", (qid,))]


# Content that exercises dot-stuffing, 8-bit bytes and long lines.
TRICKY_BODY = ("line one\r\n.leading dot\r\n..two dots\r\n.\r\nx\r\n"
               "caf\xe9 8-bit: \xc3\xa9\xc3\xa8\r\n" + "y" * 990 + "\r\n"
               "last line\r\n")


def tricky_bytes(subject):
    return message(subject, TRICKY_BODY).encode("latin-1")


# ---------------------------------------------------------------------------
# Relay: content, envelope, failover

@needs_aiosmtpd
def test_relay_to_aiosmtpd_byte_identical(daemon_factory):
    cap = Capture()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])]))
        raw = tricky_bytes("to aiosmtpd")
        qid = send(d, ["bob@example.test", "carol@example.test"], raw,
                   mail_options=["BODY=8BITMIME"])
        wait_state(d, qid, "delivered")
        assert wait_for(lambda: cap.handler.count() == 1, 5)
        m = cap.messages[0]
        # Both recipients in one transaction, the sender unchanged.
        assert m["mail_from"] == SENDER
        assert sorted(m["rcpts"]) == ["bob@example.test", "carol@example.test"]
        assert "BODY=8BITMIME" in m["options"]
        # Byte-identical apart from our Received: field on top.
        assert m["data"].startswith(b"Received: ")
        assert strip_trace(m["data"]) == raw
        # The outcome is recorded: reply, destination, history.
        row = d.db("SELECT last_reply, destination, attempts FROM recipients"
                   " WHERE message_id = ?", (qid,))
        assert all(r[0] == "250 2.0.0 Ok: captured" for r in row)
        assert all(r[1] == "[127.0.0.1]:%d" % cap.port for r in row)
        assert all(r[2] == 1 for r in row)
        assert history(d, qid).count("delivered") == 2
        # keep_delivered keeps the rows, never the content.
        assert d.db("SELECT count(*) FROM message_contents WHERE"
                    " message_id = ?", (qid,))[0][0] == 0
    finally:
        cap.stop()


def send_bdat(d, rcpt, chunks):
    """One message in BDAT chunks (RFC 3030), all pipelined in one write;
    the replies, one per chunk."""
    with d.raw(timeout=20) as c:
        assert c.line().startswith("220")
        c.send("EHLO client.test\r\n")
        code, texts, _ = c.reply()
        assert code == 250 and "CHUNKING" in texts, texts
        out = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (
            SENDER.encode(), rcpt.encode())
        for i, chunk in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            out += b"BDAT %d%s\r\n" % (len(chunk), last.encode()) + chunk
        c.sock.sendall(out)
        assert c.line().startswith("250 2.1.0")
        assert c.line().startswith("250 2.1.5")
        return [c.line() for _ in chunks]


def test_pipelined_bdat_replies_not_held_by_nagle(daemon):
    # MAIL, RCPT, "BDAT n LAST" and the message in one write, 20 times on
    # one connection.  The last reply of each group follows the commit,
    # after the others went out; with Nagle on the server's socket it
    # waited for the client's delayed ACK (40 ms at least on Linux).
    msg = message("nagle").encode()
    group = (b"MAIL FROM:<%s>\r\nRCPT TO:<bob@example.test>\r\n"
             b"BDAT %d LAST\r\n" % (SENDER.encode(), len(msg))) + msg
    took = []
    with daemon.raw(timeout=20) as c:
        assert c.line().startswith("220")
        c.send("EHLO client.test\r\n")
        code, texts, _ = c.reply()
        assert code == 250 and "CHUNKING" in texts, texts
        for _ in range(20):
            t0 = time.monotonic()
            c.sock.sendall(group)
            assert c.line().startswith("250 2.1.0")
            assert c.line().startswith("250 2.1.5")
            assert c.line().startswith("250 2.0.0 Ok: queued as")
            took.append(time.monotonic() - t0)
    took.sort()
    assert took[len(took) // 2] < 0.03 * TIME_SCALE, took


@needs_aiosmtpd
def test_bdat_received_relayed_with_data_byte_identical(daemon_factory):
    # Content received in chunks (no dot-stuffing: a lone "." line and
    # lines with leading dots are plain bytes) is relayed with DATA,
    # dot-stuffed, and arrives byte for byte.
    cap = Capture()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])]))
        raw = tricky_bytes("bdat chunks")
        cut = [0, 17, 18, 100, len(raw)]
        # A chunk boundary between CR and LF too.
        cr = raw.index(b"\r\n", 120) + 1
        cut = sorted(set(cut + [cr]))
        chunks = [raw[a:b] for a, b in zip(cut, cut[1:])]
        replies = send_bdat(d, "bob@example.test", chunks)
        for chunk, line in zip(chunks, replies[:-1]):
            assert line == "250 2.0.0 %d octets received" % len(chunk), line
        qid = queued_id(replies[-1])
        wait_state(d, qid, "delivered")
        assert wait_for(lambda: cap.handler.count() == 1, 5)
        assert strip_trace(cap.messages[0]["data"]) == raw
    finally:
        cap.stop()


def test_relay_to_second_mxgated_byte_identical(daemon_factory):
    b = daemon_factory()        # its default routes keep mail in its queue
    a = daemon_factory(relay_settings(
        [upstream("next", ["127.0.0.1:%d" % b.port])]))
    raw = tricky_bytes("to mxgated")
    qid = send(a, "bob@example.test", raw, mail_options=["BODY=8BITMIME"])
    wait_state(a, qid, "delivered")
    rows = b.db("SELECT m.id, m.sender, m.body_8bitmime, c.content FROM"
                " messages m JOIN message_contents c ON c.message_id = m.id")
    assert len(rows) == 1
    bid, sender, eight, content = rows[0]
    assert sender == SENDER and eight == 1
    # B's Received: and A's, then exactly what the client sent.
    assert content.count(b"Received: from ") >= 2
    assert strip_trace(content) == raw
    assert b.db("SELECT address FROM recipients WHERE message_id = ?",
                (bid,)) == [("bob@example.test",)]
    # The upstream's reply, with its queue id, is in our history.
    reply = a.db("SELECT last_reply FROM recipients WHERE message_id = ?",
                 (qid,))[0][0]
    assert reply == "250 2.0.0 Ok: queued as %s" % bid


def test_pipelining_and_connection_reuse(daemon_factory):
    fake = FakeSMTP()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])],
            delivery={"concurrency": 1}))
        # Hold the first delivery until several are queued, so that one
        # delivery process takes them all over one connection.
        ids = [send(d, "bob@example.test", message("reuse %d" % i))
               for i in range(5)]
        for qid in ids:
            wait_state(d, qid, "delivered")
        assert len(fake.messages) == 5
        # PIPELINING: MAIL, RCPT and DATA came in one write (one recv).
        by_cmd = {}
        for conn, nrecv, line in fake.commands:
            by_cmd.setdefault((conn, nrecv), []).append(line.split(":")[0])
        assert any(v[:3] == ["MAIL FROM", "RCPT TO", "DATA"]
                   for v in by_cmd.values()), fake.commands
        # Fewer connections than messages: reused within a process.
        assert fake.connections < 5, fake.connections
    finally:
        fake.stop()


# ---------------------------------------------------------------------------
# BDAT to upstreams that offer CHUNKING (RFC 3030)

CHUNKED = ("PIPELINING", "8BITMIME", "SIZE 30000000", "CHUNKING")


def groups(fake):
    """The verbs of each recv() of each connection, in order."""
    out = {}
    for conn, nrecv, line in fake.commands:
        out.setdefault((conn, nrecv), []).append(line.split(" ")[0].split(":")[0])
    return list(out.values())


def test_bdat_envelope_and_message_in_one_write(daemon_factory):
    fake = FakeSMTP(ext=CHUNKED)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        raw = tricky_bytes("bdat out")
        qid = send(d, ["bob@example.test", "carol@example.test"], raw,
                   mail_options=["BODY=8BITMIME"])
        wait_state(d, qid, "delivered")
        m = fake.messages[0]
        # As stored, no dot-stuffing: lone dots and leading dots intact.
        assert m["bdat"] and strip_trace(m["data"]) == raw
        assert sorted(m["rcpts"]) == ["bob@example.test", "carol@example.test"]
        # MAIL, both RCPT and one "BDAT n LAST" came in one write, the
        # message right after it; never DATA.
        bdat = [l for _, _, l in fake.commands if l.startswith("BDAT")]
        assert bdat == ["BDAT %d LAST" % len(m["data"])], bdat
        assert ["MAIL", "RCPT", "RCPT", "BDAT"] in groups(fake), groups(fake)
        assert not any(l == "DATA" for _, _, l in fake.commands)
        assert d.db("SELECT last_reply FROM recipients WHERE message_id = ?",
                    (qid,))[0][0] == "250 2.0.0 Ok: fake"
    finally:
        fake.stop()


def test_bdat_large_message_waits_for_the_envelope(daemon_factory):
    # Over 256 KB the body follows the replies to MAIL and RCPT: a
    # refused recipient costs no body; a taken one gets it whole.
    replies = {"gone@example.test": "550 5.1.1 gone"}
    fake = FakeSMTP(ext=CHUNKED, rcpt=lambda a: replies.get(a, "250 2.1.5 Ok"))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        big = message("big", ("z" * 998 + "\r\n") * 400).encode()
        qid = send(d, "gone@example.test", big)
        wait_state(d, qid, "bounced")
        assert not any(l.startswith("BDAT") for _, _, l in fake.commands)
        qid = send(d, "bob@example.test", big)
        wait_state(d, qid, "delivered")
        assert strip_trace(fake.messages[0]["data"]) == big
        g = groups(fake)
        assert ["MAIL", "RCPT"] in g and ["BDAT"] in g, g
    finally:
        fake.stop()


def test_bdat_every_recipient_refused_then_next_message(daemon_factory):
    # Sent with its envelope, the chunk is refused with it; the server
    # read it, so the connection goes on to the next message.
    replies = {"gone@example.test": "550 5.1.1 gone"}
    fake = FakeSMTP(ext=CHUNKED, rcpt=lambda a: replies.get(a, "250 2.1.5 Ok"))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        q1 = send(d, "gone@example.test", message("refused"))
        wait_state(d, q1, "bounced")
        assert d.db("SELECT last_reply FROM recipients WHERE message_id = ?",
                    (q1,))[0][0] == "550 5.1.1 gone"
        q2 = send(d, "bob@example.test", message("taken"))
        wait_state(d, q2, "delivered")
        assert len(fake.messages) == 1
        assert b"Subject: taken" in fake.messages[0]["data"]
    finally:
        fake.stop()


def test_bdat_refused_or_lost_is_deferred_then_delivered(daemon_factory):
    # A 4xx to BDAT defers; a connection closed after the chunk, before
    # its reply, defers too (the server may have the message) and tries
    # no other host now; both are delivered on the retry.
    fake = FakeSMTP(ext=CHUNKED, hang_up=lambda n: n == 2,
                    data_end=lambda n: "451 4.3.0 try later" if n == 1
                    else "250 2.0.0 Ok: fake")
    other = FakeSMTP(ext=CHUNKED)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port,
                               "127.0.0.1:%d" % other.port])]))
        q1 = send(d, "bob@example.test", message("first"))
        assert wait_for(lambda: fake.attempts >= 2, 15)
        wait_state(d, q1, "delivered")
        reply = d.db("SELECT detail FROM events WHERE message_id = ? AND"
                     " kind = 'deferred' ORDER BY id", (q1,))
        assert "451 4.3.0 try later" in reply[0][0], reply
        assert "lost after the message was sent" in reply[1][0], reply
        # Never to the second host while the first may have it.
        assert other.messages == [] and other.connections == 0
        # Recorded: the 451'd one and the last; the hung-up one is not.
        assert fake.attempts == 3 and len(fake.messages) == 2
    finally:
        fake.stop()
        other.stop()


def test_bdat_off_for_the_upstream(daemon_factory):
    fake = FakeSMTP(ext=CHUNKED)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port], chunking=False)]))
        raw = tricky_bytes("data anyway")
        qid = send(d, "bob@example.test", raw)
        wait_state(d, qid, "delivered")
        assert "DATA" in [l for _, _, l in fake.commands]
        assert not any(l.startswith("BDAT") for _, _, l in fake.commands)
        assert strip_trace(fake.messages[0]["data"]) == raw
    finally:
        fake.stop()


def test_no_pipelining_helo_fallback(daemon_factory):
    fake = FakeSMTP(ext=(), ehlo="502 5.5.1 EHLO not here")
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        qid = send(d, ["bob@example.test", "carol@example.test"],
                   message("helo"))
        wait_state(d, qid, "delivered")
        verbs = [l.split(" ")[0].split(":")[0] for _, _, l in fake.commands]
        assert verbs[:2] == ["EHLO", "HELO"]
        # No PIPELINING: one command per recv.
        seen = {}
        for conn, nrecv, line in fake.commands:
            seen.setdefault((conn, nrecv), []).append(line)
        assert all(len(v) == 1 for v in seen.values()), seen
        # No SIZE/BODY parameters to a server that announced nothing.
        mail = [l for _, _, l in fake.commands if l.startswith("MAIL")][0]
        assert mail == "MAIL FROM:<%s> SIZE=%d" % (SENDER, len(
            fake.messages[0]["data"])) or mail.startswith("MAIL FROM:<%s>"
                                                          % SENDER)
    finally:
        fake.stop()


@needs_aiosmtpd
def test_failover_to_second_host(daemon_factory):
    cap = Capture()
    dead = closed_port()
    try:
        d = daemon_factory(relay_settings([upstream(
            "next", ["127.0.0.1:%d" % dead, "127.0.0.1:%d" % cap.port])]))
        qid = send(d, "bob@example.test", message("failover"))
        wait_state(d, qid, "delivered")
        assert cap.handler.count() == 1
        dest = d.db("SELECT destination FROM recipients WHERE message_id = ?",
                    (qid,))[0][0]
        assert dest == "[127.0.0.1]:%d" % cap.port
        assert "connect to [127.0.0.1]:%d: Connection refused" % dead in d.log()
    finally:
        cap.stop()


# ---------------------------------------------------------------------------
# Temporary and permanent failures

@needs_aiosmtpd
def test_4xx_deferred_then_delivered_on_retry(daemon_factory):
    cap = Capture()
    cap.handler.data_replies = ["451 4.3.0 try again later"]
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])]))
        qid = send(d, "bob@example.test", message("retry"))
        wait_state(d, qid, "delivered")
        row = d.db("SELECT attempts, last_reply FROM recipients"
                   " WHERE message_id = ?", (qid,))[0]
        assert row == (2, "250 2.0.0 Ok: captured")
        h = history(d, qid)
        assert h.index("deferred") < h.index("delivered")
        detail = d.db("SELECT detail FROM events WHERE message_id = ? AND"
                      " kind = 'deferred'", (qid,))[0][0]
        assert "451 4.3.0 try again later" in detail
        assert cap.handler.count() == 1
    finally:
        cap.stop()


def parse_dsn(data):
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    # message/delivery-status: per-message fields, then one block per
    # recipient (the email package parses them as header blocks).
    blocks = parts[1].get_payload()
    return msg, parts, blocks[0], blocks[1:]


@needs_aiosmtpd
def test_5xx_bounced_with_dsn(daemon_factory):
    cap = Capture()
    cap.handler.rcpt_replies["nobody@example.test"] = \
        "550 5.1.1 <nobody@example.test>: no such user"
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])],
            delivery={"bounce_upstream": "next"}))
        qid = send(d, ["bob@example.test", "nobody@example.test"],
                   message("bounce me"))
        wait_state(d, qid, {"bob@example.test": "delivered",
                            "nobody@example.test": "bounced"})
        # The DSN went from <> to the sender, through "next" too.
        assert wait_for(lambda: cap.handler.count() == 2, 10), d.log()[-3000:]
        dsn = [m for m in cap.messages if m["mail_from"] == "<>"
               or m["mail_from"] == ""]
        assert len(dsn) == 1, [m["mail_from"] for m in cap.messages]
        assert dsn[0]["rcpts"] == [SENDER]
        msg, parts, per_msg, per_rcpt = parse_dsn(strip_trace(dsn[0]["data"]))
        assert msg["To"] == "<%s>" % SENDER
        assert msg["Auto-Submitted"] == "auto-replied"
        assert per_msg["Reporting-MTA"] == "dns; mx.test.example"
        assert per_msg["Arrival-Date"]
        assert len(per_rcpt) == 1
        r = per_rcpt[0]
        assert r["Final-Recipient"] == "rfc822; nobody@example.test"
        assert r["Action"] == "failed"
        assert r["Status"] == "5.1.1"
        assert r["Remote-MTA"] == "dns; 127.0.0.1" or \
            r["Remote-MTA"].startswith("dns; ")
        assert r["Diagnostic-Code"] == \
            "smtp; 550 5.1.1 <nobody@example.test>: no such user"
        # The original's header block, not its body.
        headers = parts[2].get_payload()
        assert "Subject: bounce me" in headers and "hello" not in headers
        # History: the bounced event names the DSN, which is in the queue.
        detail = d.db("SELECT detail FROM events WHERE message_id = ? AND"
                      " kind = 'bounced'", (qid,))[0][0]
        dsn_id = re.search(r"dsn=([0-9A-Z]{16})", detail).group(1)
        assert d.db("SELECT sender FROM messages WHERE id = ?",
                    (dsn_id,)) == [("",)]
    finally:
        cap.stop()


@needs_aiosmtpd
def test_bounce_of_a_bounce_is_dropped(daemon_factory):
    cap = Capture()
    cap.handler.rcpt_replies["nobody@example.test"] = "550 5.1.1 no such user"
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])],
            delivery={"bounce_upstream": "next"}))
        qid = send(d, "nobody@example.test", message("from null"), sender="")
        wait_state(d, qid, "bounced")
        time.sleep(1.5)
        assert cap.handler.count() == 0
        assert d.db("SELECT count(*) FROM messages WHERE sender = ''"
                    " AND id != ?", (qid,))[0][0] == 0
        assert "a bounce is never bounced" in d.log()
    finally:
        cap.stop()


@needs_aiosmtpd
def test_upstream_down_then_back(daemon_factory):
    port = closed_port()
    d = daemon_factory(relay_settings(
        [upstream("next", ["127.0.0.1:%d" % port])]))
    qid = send(d, "bob@example.test", message("down then up"))
    # Retried every second while nothing listens.
    assert wait_for(lambda: d.db("SELECT attempts FROM recipients WHERE"
                                 " message_id = ?", (qid,))[0][0] >= 3, 15)
    assert states(d, qid) in ({"bob@example.test": "deferred"},
                              {"bob@example.test": "delivering"})
    # Between attempts it is listed as deferred (during one, for a
    # moment, as delivering: hence the retries).
    assert wait_for(lambda: qid in d.ctl("queue", "list", "--state",
                                         "deferred").stdout, 10)
    cap = Capture(port=port)
    try:
        wait_state(d, qid, "delivered")
        assert cap.handler.count() == 1
        assert "Connection refused" in d.db(
            "SELECT detail FROM events WHERE message_id = ? AND kind ="
            " 'deferred' ORDER BY id LIMIT 1", (qid,))[0][0]
    finally:
        cap.stop()


@needs_aiosmtpd
def test_expiry_bounces_with_expiry_dsn(daemon_factory):
    dsn_cap = Capture()
    dead = closed_port()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % dead]),
             upstream("dsn", ["127.0.0.1:%d" % dsn_cap.port])],
            delivery={"max_queue_time": 3, "bounce_upstream": "dsn"}))
        qid = send(d, "bob@example.test", message("expire"))
        wait_state(d, qid, "bounced", timeout=20)
        assert "expired" in history(d, qid)
        assert wait_for(lambda: dsn_cap.handler.count() == 1, 10)
        _, parts, _, per_rcpt = parse_dsn(strip_trace(
            dsn_cap.messages[0]["data"]))
        assert per_rcpt[0]["Action"] == "failed"
        assert per_rcpt[0]["Status"] == "4.4.7"
        assert "Connection refused" in per_rcpt[0]["Diagnostic-Code"]
        assert "delivery time expired" in parts[0].get_payload()
    finally:
        dsn_cap.stop()


@needs_aiosmtpd
def test_delay_warning_once(daemon_factory):
    dsn_cap = Capture()
    dead = closed_port()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % dead]),
             upstream("dsn", ["127.0.0.1:%d" % dsn_cap.port])],
            delivery={"delay_warning": 2, "bounce_upstream": "dsn"}))
        qid = send(d, "bob@example.test", message("slow"))
        assert wait_for(lambda: dsn_cap.handler.count() >= 1, 15)
        # More failed attempts, but one warning only.
        assert wait_for(lambda: d.db(
            "SELECT attempts FROM recipients WHERE message_id = ?",
            (qid,))[0][0] >= 5, 15)
        assert dsn_cap.handler.count() == 1
        msg, _, _, per_rcpt = parse_dsn(strip_trace(
            dsn_cap.messages[0]["data"]))
        assert msg["Subject"].startswith("Delayed Mail")
        assert per_rcpt[0]["Action"] == "delayed"
        assert per_rcpt[0]["Status"] == "4.4.1"
        assert per_rcpt[0]["Will-Retry-Until"]
        assert states(d, qid)["bob@example.test"] in ("deferred",
                                                      "delivering")
    finally:
        dsn_cap.stop()


def test_8bit_to_server_without_8bitmime_converted(daemon_factory):
    # RFC 6152 3: for a server without 8BITMIME the 8-bit body is made
    # 7-bit MIME (quoted-printable here), the same text once decoded;
    # 8-bit header fields cannot be converted: that message bounces.
    fake = FakeSMTP(ext=("PIPELINING",))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        q8 = send(d, "bob@example.test", tricky_bytes("eight"),
                  mail_options=["BODY=8BITMIME"])
        # Declared 8BITMIME but all 7-bit: sent as it is, without BODY=.
        q7 = send(d, "carol@example.test", message("seven"),
                  mail_options=["BODY=8BITMIME"])
        qh = send(d, "dave@example.test",
                  message("head", extra="X-Name: caf\xe9\r\n").encode(
                      "latin-1"), mail_options=["BODY=8BITMIME"])
        wait_state(d, q8, "delivered")
        wait_state(d, q7, "delivered")
        wait_state(d, qh, "bounced")
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (qh,))[0][0]
        assert reply.startswith("554 5.6.3 ") and "header" in reply, reply
        assert len(fake.messages) == 2
        for m in fake.messages:
            assert "BODY=" not in m["mail"]
            assert all(b < 0x80 for b in m["data"]), m["data"][:200]
        converted = [m for m in fake.messages
                     if b"Subject: eight" in m["data"]][0]["data"]
        parsed = email.message_from_bytes(converted)
        assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
        assert parsed["MIME-Version"] is not None
        body = parsed.get_payload(decode=True)
        assert body == TRICKY_BODY.encode("latin-1"), body
        assert "converted to 7-bit MIME" in d.log()
    finally:
        fake.stop()


def send_utf8(d, rcpt, data):
    with smtplib.SMTP(d.host, d.port, timeout=20) as s:
        s.ehlo("client.test")
        s.command_encoding = "utf-8"
        code, resp = s.mail(SENDER, ["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250, resp
        code, resp = s.rcpt(rcpt)
        assert code == 250, resp
        code, resp = s.data(data.encode("utf-8"))
        assert code == 250, resp
        return queued_id("%d %s" % (code, resp.decode()))


def test_smtputf8_to_server_without_it(daemon_factory):
    fake = FakeSMTP(ext=("PIPELINING", "8BITMIME"))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        addr = send_utf8(d, "j\u00f6rg@example.test", message("addr"))
        head = send_utf8(d, "bob@example.test", message("caf\u00e9"))
        body = send_utf8(d, "carol@example.test",
                         message("body", "caf\u00e9\r\n"))
        wait_state(d, addr, "bounced")
        wait_state(d, head, "bounced")
        wait_state(d, body, "delivered")
        reply = lambda q: d.db("SELECT last_reply FROM recipients WHERE"
                               " message_id = ?", (q,))[0][0]
        assert reply(addr).startswith("553 5.6.7 "), reply(addr)
        assert reply(head).startswith("554 5.6.9 "), reply(head)
        # An 8-bit body needs 8BITMIME only: sent, without SMTPUTF8.
        assert len(fake.messages) == 1
        assert fake.messages[0]["mail"] == \
            "MAIL FROM:<%s> BODY=8BITMIME" % SENDER
    finally:
        fake.stop()


def test_size_limit_of_upstream_bounces(daemon_factory):
    fake = FakeSMTP(ext=("PIPELINING", "8BITMIME", "SIZE 200"))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])]))
        qid = send(d, "bob@example.test", message("big", "x" * 500 + "\r\n"))
        wait_state(d, qid, "bounced")
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (qid,))[0][0]
        assert reply.startswith("552 5.3.4 ")
        assert fake.messages == []
    finally:
        fake.stop()


def test_rcpt_4xx_and_5xx_in_one_transaction(daemon_factory):
    replies = {"later@example.test": "452 4.2.2 mailbox full",
               "gone@example.test": "550 5.1.1 gone"}
    fake = FakeSMTP(rcpt=lambda a: replies.get(a, "250 2.1.5 Ok"))
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])],
            delivery={"retry_schedule": [3600]}))
        qid = send(d, ["ok@example.test", "later@example.test",
                       "gone@example.test"], message("mixed"))
        wait_state(d, qid, {"ok@example.test": "delivered",
                            "later@example.test": "deferred",
                            "gone@example.test": "bounced"})
        assert len(fake.messages) == 1
        assert fake.messages[0]["rcpts"] == ["ok@example.test"]
    finally:
        fake.stop()


# ---------------------------------------------------------------------------
# Concurrency limits and timeouts per phase

def slow_dot(seconds):
    """data_end for FakeSMTP: the final dot's 250 comes `seconds` late."""
    def reply(n):
        time.sleep(seconds)
        return "250 2.0.0 Ok: slow"
    return reply


def send_spaced(d, rcpts, gap=0.1):
    """One message per recipient, `gap` seconds apart: sent at once, the
    scheduler would give them all to one child (one connection)."""
    ids = []
    for i, rcpt in enumerate(rcpts):
        if i:
            time.sleep(gap)
        ids.append(send(d, rcpt, message("spaced %d" % i)))
    return ids


def test_concurrency_per_destination(daemon_factory):
    """Six messages arrive a tenth of a second apart and each delivery
    takes half a second: a child per message could run, but never more
    than concurrency_per_destination of them talk to the upstream at
    once."""
    gauge = Gauge()
    fake = FakeSMTP(data_end=slow_dot(0.5), gauges=[gauge])
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])],
            delivery={"concurrency": 10, "concurrency_per_destination": 2}))
        ids = send_spaced(d, ["bob@example.test"] * 6)
        for qid in ids:
            wait_state(d, qid, "delivered", timeout=20)
        assert len(fake.messages) == 6
        # The limit is reached (so the test means something) and held.
        assert gauge.peak == 2, gauge.peak
    finally:
        fake.stop()


def test_concurrency_in_all(daemon_factory):
    """Two slow destinations, each allowed 5 connections: together they
    never get more than delivery.concurrency."""
    both = Gauge()
    one = FakeSMTP(data_end=slow_dot(0.5), gauges=[both])
    two = FakeSMTP(data_end=slow_dot(0.5), gauges=[both])
    try:
        d = daemon_factory(relay_settings(
            [upstream("one", ["127.0.0.1:%d" % one.port]),
             upstream("two", ["127.0.0.1:%d" % two.port])],
            routes=[{"rcpt": r"^one@", "action": "relay", "upstream": "one"},
                    {"rcpt": r"^two@", "action": "relay", "upstream": "two"}],
            delivery={"concurrency": 3, "concurrency_per_destination": 5}))
        ids = send_spaced(d, ["one@example.test", "two@example.test"] * 4)
        for qid in ids:
            wait_state(d, qid, "delivered", timeout=20)
        assert len(one.messages) == 4 and len(two.messages) == 4
        assert both.peak == 3, both.peak
    finally:
        one.stop()
        two.stop()


def test_timeouts_per_phase(daemon_factory):
    """Each phase has its own timeout: a connect that is never answered
    (a listener whose backlog is full), a server that accepts and never
    greets, one that never answers the final dot.  Each recipient is
    deferred with a 4.4.x reply saying it timed out, after its own
    phase's seconds and not much later."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    # One connection fills the backlog; the kernel drops the next SYNs.
    filler = socket.create_connection(full.getsockname(), timeout=5)
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    release = threading.Event()

    def never(n):
        release.wait(30)
        return "250 2.0.0 Ok: too late"
    stall = FakeSMTP(data_end=never)
    try:
        d = daemon_factory(relay_settings(
            [upstream("full", ["127.0.0.1:%d" % full.getsockname()[1]]),
             upstream("mute", ["127.0.0.1:%d" % mute.getsockname()[1]]),
             upstream("stall", ["127.0.0.1:%d" % stall.port])],
            routes=[{"rcpt": "^%s@" % u, "action": "relay", "upstream": u}
                    for u in ("full", "mute", "stall")],
            delivery={"retry_schedule": [3600], "connect_timeout": 1,
                      "command_timeout": 2, "data_timeout": 3}))
        t0 = {}
        for u in ("full", "mute", "stall"):
            t0[u] = time.monotonic()
            send(d, "%s@example.test" % u, message("timeout " + u))
        took = {}

        def poll():
            for addr, state, reply in d.db(
                    "SELECT address, state, last_reply FROM recipients"):
                u = addr.split("@")[0]
                if state == "deferred" and u not in took:
                    took[u] = (time.monotonic() - t0[u], reply)
            return len(took) == 3
        assert wait_for(poll, 15, interval=0.1), (took, d.log()[-3000:])
        limits = {"full": 1, "mute": 2, "stall": 3}
        for u, (secs, reply) in took.items():
            assert limits[u] - 0.1 <= secs < limits[u] + 2.5, (u, secs)
        assert took["full"][1] == "451 4.4.1 connect to [127.0.0.1]:%d:" \
            " timed out" % full.getsockname()[1]
        assert took["mute"][1] == \
            "451 4.4.2 no greeting from server: timeout"
        assert took["stall"][1] == (
            "451 4.4.2 connection with [127.0.0.1]:%d lost after the end"
            " of data: timeout" % stall.port)
        # The stalled server got the whole message: deferred, not lost.
        assert len(stall.messages) == 1
    finally:
        release.set()
        stall.stop()
        filler.close()
        full.close()
        mute.close()


# ---------------------------------------------------------------------------
# STARTTLS and AUTH

def make_cert(dirpath):
    """A self-signed certificate for 127.0.0.1 (IP SAN), readable by the
    daemon's unprivileged user."""
    dirpath = os.path.join(dirpath, "tls")
    os.makedirs(dirpath, exist_ok=True)
    for p in (dirpath, os.path.dirname(dirpath)):
        os.chmod(p, 0o755)
    cert = os.path.join(dirpath, "cert.pem")
    key = os.path.join(dirpath, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(cert, 0o644)
    return cert, key


def world_readable_dir(tmp_path):
    """pytest's tmp_path lies under a 0700 directory the daemon's user
    cannot enter: a directory of our own in /tmp instead, removed when
    the tests end."""
    import atexit
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="mxgate-tls-", dir="/tmp")
    os.chmod(d, 0o755)
    atexit.register(shutil.rmtree, d, True)
    return d


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


@needs_aiosmtpd
def test_starttls_required_refused_never_in_clear(daemon_factory):
    cap = Capture()         # no STARTTLS offered
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port],
                      tls="required")]))
        qid = send(d, "bob@example.test", message("secret"))
        assert wait_for(lambda: d.db("SELECT attempts FROM recipients WHERE"
                                     " message_id = ?", (qid,))[0][0] >= 2, 10)
        assert cap.handler.count() == 0
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (qid,))[0][0]
        assert reply.startswith("451 4.7.4 TLS is required"), reply
    finally:
        cap.stop()


@needs_aiosmtpd
def test_starttls_required_and_verified(daemon_factory, tmp_path):
    cert, key = make_cert(world_readable_dir(tmp_path))
    cap = Capture(tls_context=tls_context(cert, key), require_starttls=True)
    try:
        d = daemon_factory(relay_settings([
            upstream("next", ["127.0.0.1:%d" % cap.port], tls="required",
                     tls_verify=True, tls_ca=cert)]))
        qid = send(d, "bob@example.test", message("over tls"))
        wait_state(d, qid, "delivered")
        assert cap.messages[0]["tls"] is True
    finally:
        cap.stop()


@needs_aiosmtpd
def test_starttls_untrusted_certificate(daemon_factory, tmp_path):
    cert, key = make_cert(world_readable_dir(tmp_path))
    cap = Capture(tls_context=tls_context(cert, key))
    try:
        d = daemon_factory(relay_settings([
            upstream("strict", ["127.0.0.1:%d" % cap.port], tls="required",
                     tls_verify=True),
            upstream("next", ["127.0.0.1:%d" % cap.port],
                     tls="opportunistic", tls_verify=True)],
            routes=[{"rcpt": r"^strict@", "action": "relay",
                     "upstream": "strict"},
                    {"rcpt": r"@example\.test$", "action": "relay",
                     "upstream": "next"}]))
        strict = send(d, "strict@example.test", message("strict"))
        opport = send(d, "bob@example.test", message("opportunistic"))
        # Required + verify, signed by nobody we trust: never sent.
        assert wait_for(lambda: d.db("SELECT attempts FROM recipients WHERE"
                                     " message_id = ?", (strict,))[0][0] >= 2,
                        10)
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (strict,))[0][0]
        assert "4.7.5 certificate of" in reply and "not trusted" in reply
        # Opportunistic: encrypted all the same, the doubt logged.
        wait_state(d, opport, "delivered")
        assert [m["rcpts"] for m in cap.messages] == [["bob@example.test"]]
        assert cap.messages[0]["tls"] is True
        assert "unverified certificate" in d.log()
    finally:
        cap.stop()


@needs_aiosmtpd
def test_auth_to_upstream(daemon_factory, tmp_path):
    cert, key = make_cert(world_readable_dir(tmp_path))
    cap = Capture(tls_context=tls_context(cert, key), require_starttls=True,
                  auth=("relayuser", "s3cret"))
    try:
        d = daemon_factory(relay_settings([
            upstream("next", ["127.0.0.1:%d" % cap.port], tls="required",
                     tls_verify=False, auth_user="relayuser",
                     auth_password="s3cret"),
            upstream("wrong", ["127.0.0.1:%d" % cap.port], tls="required",
                     tls_verify=False, auth_user="relayuser",
                     auth_password="nope")],
            routes=[{"rcpt": r"^wrong@", "action": "relay",
                     "upstream": "wrong"},
                    {"rcpt": r"@example\.test$", "action": "relay",
                     "upstream": "next"}]))
        good = send(d, "bob@example.test", message("auth ok"))
        bad = send(d, "wrong@example.test", message("auth bad"))
        wait_state(d, good, "delivered")
        assert cap.messages[0]["auth"]
        assert wait_for(lambda: d.db("SELECT last_reply FROM recipients WHERE"
                                     " message_id = ?", (bad,))[0][0]
                        is not None, 10)
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (bad,))[0][0]
        assert "4.7.8" in reply and "authentication failed" in reply, reply
        assert states(d, bad)["wrong@example.test"] in ("deferred",
                                                        "delivering")
        assert "s3cret" not in d.log() and "nope" not in d.log()
    finally:
        cap.stop()


@needs_aiosmtpd
def test_auth_login_to_upstream(daemon_factory):
    """An upstream that offers AUTH LOGIN only: the user name and the
    password go in LOGIN's two steps (in the clear: tls = none), and a
    wrong password is deferred with the server's reply."""
    cap = Capture(auth=("relayuser", "s3cret"), auth_exclude=("PLAIN",))
    try:
        d = daemon_factory(relay_settings([
            upstream("next", ["127.0.0.1:%d" % cap.port],
                     auth_user="relayuser", auth_password="s3cret"),
            upstream("wrong", ["127.0.0.1:%d" % cap.port],
                     auth_user="relayuser", auth_password="nope")],
            routes=[{"rcpt": r"^wrong@", "action": "relay",
                     "upstream": "wrong"},
                    {"rcpt": r"@example\.test$", "action": "relay",
                     "upstream": "next"}],
            delivery={"retry_schedule": [3600]}))
        good = send(d, "bob@example.test", message("login ok"))
        wait_state(d, good, "delivered")
        assert cap.messages[0]["auth"]
        assert cap.auth_mechanisms == ["LOGIN"]
        bad = send(d, "wrong@example.test", message("login bad"))
        wait_state(d, bad, "deferred")
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id ="
                     " ?", (bad,))[0][0]
        assert reply.startswith("451 4.7.8 [127.0.0.1]:%d authentication"
                                " failed: 535 5.7.8 " % cap.port), reply
        assert cap.auth_mechanisms == ["LOGIN", "LOGIN"]
        assert cap.handler.count() == 1
        assert "s3cret" not in d.log() and "nope" not in d.log()
    finally:
        cap.stop()


# ---------------------------------------------------------------------------
# What stays after delivery

@needs_aiosmtpd
def test_keep_delivered_expires(daemon_factory):
    """keep_delivered = "4s": a delivered message's rows stay that long,
    then go.  The queue process purges when it starts and every minute
    after (SCHED_PURGE_MS): a restart stands in for the minute.  Only
    the message older than the period goes; a younger one stays."""
    cap = Capture()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])], keep="4s"))

        def updated(qid):
            return d.db("SELECT max(updated_at) FROM recipients WHERE"
                        " message_id = ?", (qid,))[0][0]

        def present(qid):
            return d.db("SELECT count(*) FROM messages WHERE id = ?",
                        (qid,))[0][0] == 1
        old = send(d, "bob@example.test", message("kept old"))
        wait_state(d, old, "delivered")
        done_old = updated(old)
        wait_for(lambda: time.time() >= done_old + 3, 5)
        young = send(d, "bob@example.test", message("kept young"))
        wait_state(d, young, "delivered")
        done_young = updated(young)
        assert done_young >= done_old + 3
        # Purged when updated_at < now - 4: from done_old + 5 on.
        wait_for(lambda: time.time() >= done_old + 5.05, 5)
        assert present(old) and present(young)
        d.restart()
        assert wait_for(lambda: not present(old), 5), d.log()[-2000:]
        # The young one is kept until done_young + 5 (2 s from now or
        # more): still there, its outcome readable.
        assert time.time() < done_young + 5, "restart too slow to tell"
        assert present(young)
        assert states(d, young) == {"bob@example.test": "delivered"}
        assert d.db("SELECT count(*) FROM recipients WHERE message_id = ?",
                    (old,))[0][0] == 0
        assert d.db("SELECT count(*) FROM events WHERE message_id = ?",
                    (old,))[0][0] == 0
        assert "purged 1 messages older than keep_delivered" in d.log()
    finally:
        cap.stop()


# ---------------------------------------------------------------------------
# Crash safety

def count_ids(cap):
    ids = {}
    for m in cap.messages:
        mid = re.search(rb"^Message-ID: <([^>]+)>", m["data"], re.M | re.I)
        if mid:
            ids[mid.group(1)] = ids.get(mid.group(1), 0) + 1
    return ids


def send_many(d, n, prefix, threads=8):
    """n messages over `threads` connections; returns the queue ids."""
    out = []
    lock = threading.Lock()

    def worker(k):
        with smtplib.SMTP(d.host, d.port, timeout=60) as s:
            s.ehlo("load.test")
            for i in range(k, n, threads):
                s.sendmail(SENDER, ["bob@example.test"],
                           message("%s %d" % (prefix, i),
                                   extra="X-Seq: %d\r\n" % i))
                with lock:
                    out.append(i)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


@needs_aiosmtpd
def test_master_killed_old_queue_finishes_first(daemon_factory):
    """SIGKILL only the master in mid-delivery and start a new one at
    once: the old queue process lets its deliveries finish (it has
    shutdown_grace / 2) and records them, while the new one waits on the
    queue lock before it requeues what is left.  Every message arrives
    exactly once; two queue processes at a time would send the ones in
    flight twice."""
    n = 40
    port = free_port()
    handler = CaptureHandler()
    handler.delay = 0.05
    settings = relay_settings(
        [upstream("next", ["127.0.0.1:%d" % port])], keep="0",
        delivery={"concurrency": 4, "concurrency_per_destination": 4})
    settings["timeouts"] = {"shutdown_grace": 6}
    d = daemon_factory(settings)
    sent = send_many(d, n, "orphan", threads=4)
    assert len(sent) == n
    cap = Capture(port=port, handler=handler)
    try:
        assert wait_for(lambda: handler.count() >= 4, 30)
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(10)
        at_kill = handler.count()
        assert at_kill < n, "delivery finished before the kill"
        d.start(wait=20)
        assert wait_for(lambda: d.db("SELECT count(*) FROM recipients")[0][0]
                        == 0, 60), d.ctl("queue", "stats").stdout
        ids = count_ids(cap)
        assert len(ids) == n, "lost %d messages" % (n - len(ids))
        twice = sorted(k for k, c in ids.items() if c > 1)
        assert twice == [], twice
    finally:
        cap.stop()


@needs_aiosmtpd
def test_sigkill_during_delivery_loses_nothing(daemon_factory, capsys):
    n = 1000
    port = free_port()
    handler = CaptureHandler()
    handler.delay = 0.004
    d = daemon_factory(relay_settings(
        [upstream("next", ["127.0.0.1:%d" % port])], keep="0",
        delivery={"concurrency": 4, "concurrency_per_destination": 4}))
    # Nothing listens yet: every message waits, deferred, until all of
    # them are acknowledged.
    sent = send_many(d, n, "crash")
    assert len(sent) == n
    cap = Capture(port=port, handler=handler)
    try:
        # Kill everything (the master and its children, SIGKILL; the
        # delivery processes die with the queue process) in mid-delivery.
        assert wait_for(lambda: handler.count() >= n // 5, 60)
        d.kill_all()
        d.proc.wait(10)
        got_at_kill = handler.count()
        assert got_at_kill < n, "delivery finished before the kill"
        d.start()
        assert wait_for(lambda: d.db("SELECT count(*) FROM recipients")[0][0]
                        == 0, 120), d.ctl("queue", "stats").stdout
        ids = count_ids(cap)
        duplicates = sum(c - 1 for c in ids.values())
        # Shown in every run, not only when the test fails.
        with capsys.disabled():
            print("\nSIGKILL during delivery of %d messages: %d delivered"
                  " before the kill, %d distinct delivered in all, %d"
                  " duplicates" % (n, got_at_kill, len(ids), duplicates))
        assert len(ids) == n, "lost %d messages" % (n - len(ids))
        # A duplicate needs a crash between the upstream's 250 and our
        # commit: at most what was in flight (4 processes, 20 each).
        assert duplicates <= 4 * 20
    finally:
        cap.stop()


# ---------------------------------------------------------------------------
# mxgatectl queue management while the daemon runs

@needs_aiosmtpd
def test_mxgatectl_queue_commands(daemon_factory):
    port = closed_port()
    d = daemon_factory(relay_settings(
        [upstream("next", ["127.0.0.1:%d" % port])],
        delivery={"retry_schedule": [3600], "bounce_upstream": "next"}))
    q1 = send(d, "bob@example.test", message("first"))
    q2 = send(d, "carol@example.test", message("second"),
              sender="zed@other.example")
    q3 = send(d, "dave@example.test", message("third"))
    for q in (q1, q2, q3):
        wait_state(d, q, "deferred")

    def listed(*args):
        r = d.ctl("queue", "list", *args)
        assert r.returncode == 0, r.stderr
        return set(re.findall(r"^([0-9A-Z]{16}) ", r.stdout, re.M))

    assert listed() == {q1, q2, q3}
    assert listed("--state", "deferred") == {q1, q2, q3}
    assert listed("--state", "held") == set()
    assert listed("--state", "delivered") == set()
    assert listed("--rcpt", "^CAROL@") == {q2}
    # q2 is kept for `bounce` below.
    assert d.ctl("queue", "hold", q2).returncode == 0
    assert listed("--sender", r"@other\.example$") == {q2}
    assert listed("--state", "deferred", "--rcpt", "dave") == {q3}
    assert listed("--state", "held", "--rcpt", "dave") == set()
    assert d.ctl("queue", "list", "--state", "nonsense").returncode == 2
    assert d.ctl("queue", "list", "--rcpt", "(").returncode == 1

    # hold: never attempted while held, even when asked to retry.
    r = d.ctl("queue", "hold", q1)
    assert r.returncode == 0 and "held: 1 recipient" in r.stdout
    assert states(d, q1) == {"bob@example.test": "held"}
    assert listed("--state", "held") == {q1, q2}

    # The upstream comes back; retry makes q3 due now (not in an hour).
    cap = Capture(port=port)
    try:
        r = d.ctl("queue", "retry", q3)
        assert r.returncode == 0, r.stderr
        wait_state(d, q3, "delivered", timeout=5)
        d.ctl("queue", "retry", "--all")
        time.sleep(2)
        assert states(d, q1) == {"bob@example.test": "held"}
        # release: due at once.
        r = d.ctl("queue", "release", q1)
        assert "released, due now: 1 recipient" in r.stdout
        wait_state(d, q1, "delivered", timeout=5)
        assert history(d, q1).count("held") == 1
        assert "released" in history(d, q1) and "retry" in history(d, q3)

        # bounce: q2's recipient bounced, a DSN queued and delivered.
        r = d.ctl("queue", "bounce", q2)
        assert r.returncode == 0, r.stderr
        m = re.search(r"DSN ([0-9A-Z]{16}) queued", r.stdout)
        assert m, r.stdout
        wait_state(d, q2, "bounced")
        wait_state(d, m.group(1), "delivered", timeout=5)
        dsn = [x for x in cap.messages if x["rcpts"] == ["zed@other.example"]]
        assert len(dsn) == 1
        _, _, _, per_rcpt = parse_dsn(strip_trace(dsn[0]["data"]))
        assert per_rcpt[0]["Final-Recipient"] == "rfc822; carol@example.test"
        assert per_rcpt[0]["Status"] == "5.0.0"

        # delete: gone, history and all.
        q4 = send(d, "erin@example.test", message("fourth"))
        d.ctl("queue", "hold", q4)
        r = d.ctl("queue", "delete", q4)
        assert r.returncode == 0 and "deleted" in r.stdout
        assert d.db("SELECT count(*) FROM messages WHERE id = ?",
                    (q4,))[0][0] == 0
        assert d.ctl("queue", "delete", q4).returncode == 1
        assert d.ctl("queue", "hold", "NOTANID").returncode == 1

        # stats: states, oldest, destinations.
        r = d.ctl("queue", "stats")
        assert r.returncode == 0, r.stderr
        assert re.search(r"^delivered\s+\d+\s+\d+$", r.stdout, re.M)
        assert re.search(r"^bounced\s+1\s+1$", r.stdout, re.M)
        assert "[127.0.0.1]:%d" % cap.port in r.stdout
        # show: outcome kept, content retired.
        r = d.ctl("queue", "show", q1)
        assert r.returncode == 0
        assert "state=delivered" in r.stdout
        assert "content removed" in r.stdout
    finally:
        cap.stop()


@needs_aiosmtpd
def test_mxgatectl_queue_stats(daemon_factory):
    """stats: recipients and messages per state, the oldest message still
    pending (not the oldest kept), and per destination (the host a
    recipient last went to) what became of its recipients."""
    cap = Capture()
    cap.handler.rcpt_replies["nobody@example.test"] = "550 5.1.1 no such user"
    dead = closed_port()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port]),
             upstream("dead", ["127.0.0.1:%d" % dead])],
            routes=[{"rcpt": r"@slow\.test$", "action": "relay",
                     "upstream": "dead"},
                    {"rcpt": r"@example\.test$", "action": "relay",
                     "upstream": "next"}],
            delivery={"retry_schedule": [3600], "bounce_upstream": "next"}))

        def stats():
            r = d.ctl("queue", "stats")
            assert r.returncode == 0, r.stderr
            return r.stdout

        # Nothing pending yet: the oldest message is final.
        first = send(d, ["bob@example.test", "nobody@example.test"],
                     message("final"))
        wait_state(d, first, {"bob@example.test": "delivered",
                              "nobody@example.test": "bounced"})
        dsn = re.search(r"dsn=([0-9A-Z]{16})", d.db(
            "SELECT detail FROM events WHERE message_id = ? AND kind ="
            " 'bounced'", (first,))[0][0]).group(1)
        wait_state(d, dsn, "delivered")
        out = stats()
        assert "\noldest pending: none\n" in out, out
        assert "messages:" not in out

        time.sleep(1.1)     # received_at is in seconds: keep them apart
        later = send(d, "x@slow.test", message("waiting"))
        latest = send(d, ["y@slow.test", "z@slow.test"], message("held"))
        wait_state(d, later, "deferred")
        wait_state(d, latest, "deferred")
        assert d.ctl("queue", "hold", latest).returncode == 0
        out = stats()
        table = re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", out, re.M)
        assert table == [("bounced", "1", "1"), ("deferred", "1", "1"),
                         ("delivered", "2", "2"), ("held", "2", "1")], out
        m = re.search(r"^messages: (\d+)\noldest pending: ([0-9A-Z]{16}),"
                      r" received (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"
                      r" \((\d+) s ago\)$", out, re.M)
        assert m, out
        assert m.group(1) == "4"
        assert m.group(2) == later
        received = d.db("SELECT datetime(received_at, 'unixepoch'),"
                        " received_at FROM messages WHERE id = ?", (later,))
        assert m.group(3) == received[0][0]
        assert 0 <= int(m.group(4)) <= int(time.time()) - received[0][1] + 1
        dests = {r[0]: tuple(int(x) for x in r[1:]) for r in re.findall(
            r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$",
            out.split("\nDESTINATION", 1)[1], re.M)}
        assert dests == {
            # DELIVERED, DEFERRED, BOUNCED, PENDING (queued, in delivery
            # or held)
            "[127.0.0.1]:%d" % cap.port: (2, 0, 1, 0),
            "[127.0.0.1]:%d" % dead: (0, 1, 0, 2),
        }, out
    finally:
        cap.stop()


def test_restart_requeues_interrupted_deliveries(daemon_factory):
    # An upstream that accepts the connection and then says nothing: the
    # delivery is in progress when the daemon is stopped.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % silent.getsockname()[1]])],
            delivery={"command_timeout": 300}))
        qid = send(d, "bob@example.test", message("interrupted"))
        wait_state(d, qid, "delivering")
        d.kill_all()
        d.proc.wait(10)
        assert states(d, qid) == {"bob@example.test": "delivering"}
        d.start()
        assert wait_for(lambda: "interrupted" in (d.db(
            "SELECT group_concat(detail) FROM events WHERE message_id = ?",
            (qid,))[0][0] or ""), 10)
        assert d.db("SELECT attempts FROM recipients WHERE message_id = ?",
                    (qid,))[0][0] >= 1
    finally:
        silent.close()


# ---------------------------------------------------------------------------
# MX delivery, in a private network with its own DNS

def _can_unshare():
    if os.geteuid() != 0:
        return False
    try:
        import dnslib  # noqa: F401
    except ImportError:
        return False
    return subprocess.run(["unshare", "--net", "--mount", "true"],
                          capture_output=True).returncode == 0


@needs_aiosmtpd
@pytest.mark.skipif(not _can_unshare(),
                    reason="needs root, unshare and python3-dnslib")
def test_mx_delivery(tmp_path):
    import json
    import tempfile
    from conftest import mxgated_path
    work = tempfile.mkdtemp(prefix="mxgate-mx-", dir="/tmp")
    os.chmod(work, 0o755)
    helper = os.path.join(os.path.dirname(__file__), "mx_world.py")
    r = subprocess.run(["unshare", "--net", "--mount", "/usr/bin/python3",
                        helper, mxgated_path(), work],
                       capture_output=True, text=True, timeout=120)
    log = open(os.path.join(work, "mxgated.log"), errors="replace").read() \
        if os.path.exists(os.path.join(work, "mxgated.log")) else ""
    assert r.returncode == 0, r.stderr[-3000:] + log[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # MX 10 refuses connections: the next preference takes it.
    assert out["bob@mx.test"][0] == "delivered", out
    assert out["bob@mx.test"][1] == "250 2.0.0 Ok: exchanged"
    # No MX: the domain's own address (RFC 5321 5.1).
    assert out["carol@nomx.test"][0] == "delivered", out
    # A null MX and a domain that does not exist bounce.
    assert out["dave@nullmx.test"][0] == "bounced"
    assert out["dave@nullmx.test"][1].startswith("556 5.1.10 "), out
    assert out["erin@nx.test"][0] == "bounced"
    assert out["erin@nx.test"][1].startswith("550 5.1.2 "), out
    # A DNS failure waits.
    assert out["frank@broken.test"][0] == "deferred"
    assert out["frank@broken.test"][1].startswith("451 4.4.3 "), out
    assert sorted(out["captured"]) == ["bob@mx.test", "carol@nomx.test"]
    assert "connect to mx1.mx.test[127.0.0.3]:25" in log
    assert "SUMMARY: AddressSanitizer" not in log
    import shutil
    shutil.rmtree(work, ignore_errors=True)
