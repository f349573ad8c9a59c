"""Messages end to end: accepted, committed to the queue database before the
250, stored as received (plus our Received: header); pipelining, size
limits, bare newlines and SMTP smuggling."""

import os
import pwd
import re
import tempfile
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import HOSTNAME, QUEUE_ID_RE, make_message, queued_id


def ehlo(c, name="client.example"):
    c.send("EHLO %s\r\n" % name)
    code, texts, lines = c.reply()
    assert code == 250, lines
    return texts


def content_of(d, qid):
    rows = d.db("SELECT content FROM message_contents WHERE message_id = ?",
                (qid,))
    assert len(rows) == 1, "message %s: %d content rows" % (qid, len(rows))
    c = rows[0][0]
    return c if isinstance(c, bytes) else c.encode("utf-8")


def send_one(c, sender, rcpts, content):
    """A whole transaction, step by step; returns the final reply line."""
    assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250 2.1.0")
    for r in rcpts:
        assert c.cmd("RCPT TO:<%s>" % r).startswith("250 2.1.5")
    assert c.cmd("DATA").startswith("354 ")
    c.send(content + ".\r\n")
    return c.line()


def test_schema_tables(daemon):
    names = {r[0] for r in daemon.db(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    for t in ("messages", "message_contents", "recipients", "events"):
        assert t in names, names
    mode = daemon.db("PRAGMA journal_mode")[0][0]
    assert mode.lower() == "wal"


def test_message_stored(daemon):
    content = make_message("stored subject", body_lines=5)
    with daemon.raw() as c:
        c.line()
        ehlo(c, "client.example")
        line = send_one(c, "alice@sender.example",
                        ["bob@example.test", "carol@example.test"], content)
        qid = queued_id(line)
        assert c.cmd("QUIT").startswith("221 ")
    assert QUEUE_ID_RE.match(qid)

    rows = daemon.db("SELECT id, sender, client_ip, helo, protocol, size, "
                     "subject, received_at FROM messages")
    assert len(rows) == 1, rows
    mid, sender, ip, helo, proto, size, subject, received_at = rows[0]
    assert mid == qid
    assert sender == "alice@sender.example"
    assert ip == "127.0.0.1"
    assert helo == "client.example"
    assert proto == "ESMTP"
    assert subject == "stored subject"
    assert received_at

    stored = content_of(daemon, qid)
    assert stored.startswith(b"Received: "), stored[:200]
    header = stored.split(b"\r\n\r\n", 1)[0]
    received = re.match(rb"Received: (.*?)\r\n(?![ \t])", header, re.S)
    assert received, header
    assert b"id " + qid.encode() in received.group(1), received.group(1)
    assert HOSTNAME.encode() in received.group(1)
    # after our header, exactly what the client sent
    assert stored.endswith(content.encode()), stored[-300:]
    assert size in (len(content), len(stored)), (size, len(content),
                                                 len(stored))

    # The test configuration parks mail for a dead upstream: the first
    # attempt may already have deferred it.
    rcpts = daemon.db("SELECT address, route, action FROM recipients "
                      "WHERE message_id = ? ORDER BY address", (qid,))
    assert rcpts == [("bob@example.test", "accepted", "relay"),
                     ("carol@example.test", "accepted", "relay")]
    states = {r[0] for r in daemon.db(
        "SELECT state FROM recipients WHERE message_id = ?", (qid,))}
    assert states <= {"queued", "delivering", "deferred"}, states
    kinds = [r[0] for r in daemon.db(
        "SELECT kind FROM message_history WHERE message_id = ?", (qid,))]
    assert kinds[:2] == ["received", "routed"], kinds


def test_null_sender_stored(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<>").startswith("250 ")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250 ")
        assert c.cmd("DATA").startswith("354 ")
        c.send("Subject: bounce\r\n\r\nreport\r\n.\r\n")
        qid = queued_id(c.line())
    assert daemon.db("SELECT sender FROM messages WHERE id = ?",
                     (qid,)) == [("",)]


def test_helo_protocol_is_smtp(daemon):
    with daemon.raw() as c:
        c.line()
        assert c.cmd("HELO old.example").startswith("250 ")
        qid = queued_id(send_one(c, "a@sender.example", ["bob@example.test"],
                                 "Subject: old\r\n\r\nhi\r\n"))
    assert daemon.db("SELECT protocol, helo FROM messages WHERE id = ?",
                     (qid,)) == [("SMTP", "old.example")]


def test_dot_stuffing_removed(daemon):
    body = ("Subject: dots\r\n\r\n"
            "..leading dot\r\n"
            "...two dots\r\n"
            ".\t\r\n"
            "middle . dot\r\n")
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        qid = queued_id(send_one(c, "a@sender.example", ["bob@example.test"],
                                 body))
    stored = content_of(daemon, qid)
    assert stored.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n"
                           b"..two dots\r\n\t\r\nmiddle . dot\r\n"), stored


def test_empty_body_and_8bit(daemon):
    content = "Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\ncaf\u00e9 \u00fcber\r\n"
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example> BODY=8BITMIME").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(content + ".\r\n")
        qid = queued_id(c.line())
        # a message with no content at all
        qid2 = queued_id(send_one(c, "a@sender.example", ["bob@example.test"],
                                  ""))
    assert content_of(daemon, qid).endswith(content.encode("utf-8"))
    assert qid2 != qid


def test_smtputf8_addresses(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        line = c.cmd("MAIL FROM:<j\u00f6rg@sender.example> SMTPUTF8")
        assert line.startswith("250 2.1.0"), line
        line = c.cmd("RCPT TO:<m\u00fcller@example.test>")
        assert line.startswith("250 2.1.5"), line
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: utf8\r\n\r\nhi\r\n.\r\n")
        qid = queued_id(c.line())
    assert daemon.db("SELECT address FROM recipients WHERE message_id = ?",
                     (qid,)) == [("m\u00fcller@example.test",)]


def test_utf8_address_without_smtputf8_refused(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        line = c.cmd("MAIL FROM:<j\u00f6rg@sender.example>")
        assert line[:1] == "5", line


def test_pipelined_session(daemon):
    content = make_message("pipelined")
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        c.send("MAIL FROM:<alice@sender.example>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        replies = [c.line() for _ in range(4)]
        assert replies[0].startswith("250 2.1.0"), replies
        assert replies[1].startswith("250 2.1.5"), replies
        assert replies[2].startswith("250 2.1.5"), replies
        assert replies[3].startswith("354 "), replies
        c.send(content + ".\r\nQUIT\r\n")
        qid = queued_id(c.line())
        assert c.line().startswith("221 ")
    rows = daemon.db("SELECT address FROM recipients "
                     "WHERE message_id = ? ORDER BY address", (qid,))
    assert rows == [("bob@example.test",), ("carol@example.test",)]
    assert daemon.db("SELECT subject FROM messages") == [("pipelined",)]


def test_pipelined_with_rejected_recipient(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        c.send("MAIL FROM:<alice@sender.example>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<mallory@evil.example>\r\n"
               "RCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        replies = [c.line() for _ in range(5)]
        expect = ["250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354 "]
        for r, e in zip(replies, expect):
            assert r.startswith(e), replies
        c.send(make_message("partly") + ".\r\n")
        qid = queued_id(c.line())
    rows = daemon.db("SELECT address FROM recipients WHERE message_id = ? "
                     "ORDER BY address", (qid,))
    assert rows == [("bob@example.test",), ("carol@example.test",)]


def test_whole_session_in_one_write(daemon):
    """A client that does not wait for anything (not allowed by RFC 2920
    before 354, but seen in the wild): everything must still come out
    right and in order."""
    msgs = [make_message("burst %d" % i) for i in range(3)]
    blob = "EHLO burst.example\r\n"
    for m in msgs:
        blob += ("MAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@example.test>\r\n"
                 "DATA\r\n" + m + ".\r\n")
    blob += "QUIT\r\n"
    with daemon.raw() as c:
        c.line()
        c.send(blob)
        code, _, lines = c.reply()
        assert code == 250, lines
        ids = []
        for _ in msgs:
            assert c.line().startswith("250 2.1.0")
            assert c.line().startswith("250 2.1.5")
            assert c.line().startswith("354 ")
            ids.append(queued_id(c.line()))
        assert c.line().startswith("221 ")
    assert len(set(ids)) == 3
    subjects = sorted(r[0] for r in daemon.db("SELECT subject FROM messages"))
    assert subjects == ["burst 0", "burst 1", "burst 2"]


def test_oversize_message_rejected_and_session_continues(daemon):
    # message_size = 1M in the test configuration
    big = "Subject: too big\r\n\r\n" + ("x" * 998 + "\r\n") * 1100
    with daemon.raw(timeout=30) as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(big + ".\r\n")
        line = c.line()
        assert line.startswith("552 5.3.4"), line
        # the session goes on: a normal message is accepted
        qid = queued_id(send_one(c, "a@sender.example", ["bob@example.test"],
                                 make_message("small after big")))
    rows = daemon.db("SELECT id, subject FROM messages")
    assert rows == [(qid, "small after big")]


def test_message_at_size_limit(daemon_factory):
    d = daemon_factory({"limits": {"message_size": "10K"}})
    head = "Subject: exact\r\n\r\n"
    fill = 10 * 1024 - len(head) - 2
    exact = head + "y" * fill + "\r\n"
    assert len(exact) == 10240
    with d.raw() as c:
        c.line()
        ehlo(c)
        line = send_one(c, "a@sender.example", ["bob@example.test"], exact)
        assert line.startswith("250 2.0.0"), line
        over = head + "y" * (fill + 1) + "\r\n"
        line = send_one(c, "a@sender.example", ["bob@example.test"], over)
        assert line.startswith("552 5.3.4"), line
    assert d.message_count() == 1


def test_bare_lf_in_content_rejected(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        line = send_one(c, "a@sender.example", ["bob@example.test"],
                        "Subject: bare\r\n\r\nline one\nline two\r\n")
        assert line.startswith("550 5.6.11"), line
        # bare CR too
        line = send_one(c, "a@sender.example", ["bob@example.test"],
                        "Subject: bare cr\r\n\r\nline one\rline two\r\n")
        assert line.startswith("550 5.6.11"), line
        qid = queued_id(send_one(c, "a@sender.example", ["bob@example.test"],
                                 make_message("clean")))
    assert daemon.db("SELECT id FROM messages") == [(qid,)]


def test_lf_dot_lf_does_not_end_data(daemon):
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: lf\r\n\r\nfirst\n.\nNOOP\n")
        with pytest.raises(TimeoutError):
            c.line(timeout=1.0)       # nothing may come back yet
        c.send("still data\r\n.\r\n")
        line = c.line()
        assert line.startswith("550 5.6.11"), line
        assert c.cmd("NOOP").startswith("250")
    assert daemon.message_count() == 0


SMUGGLE_ENDS = ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r",
                "\r.\r", "\r\n\x00.\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDS,
                         ids=[repr(e) for e in SMUGGLE_ENDS])
def test_smuggling_rejected(daemon, fake_end):
    smuggled = ("MAIL FROM:<smuggled@evil.example>\r\n"
                "RCPT TO:<victim@example.test>\r\n"
                "DATA\r\n"
                "From: <ceo@example.test>\r\n"
                "Subject: smuggled\r\n\r\n"
                "wire the money\r\n")
    with daemon.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: carrier\r\n\r\nhello" + fake_end + smuggled
               + ".\r\n")
        replies = []
        line = c.line()
        replies.append(line)
        c.send("QUIT\r\n")
        while True:
            line = c.line()
            replies.append(line)
            if line.startswith("221") or len(replies) > 10:
                break
        # exactly one reply to the message, then the QUIT
        assert len(replies) == 2, replies
        if fake_end == "\r\n\x00.\r\n":
            # a NUL is no line break: either refused or accepted as one
            assert replies[0][:3] in ("250", "550", "554"), replies
        else:
            assert replies[0].startswith("550 5.6.11"), replies
    senders = [r[0] for r in daemon.db("SELECT sender FROM messages")]
    assert "smuggled@evil.example" not in senders
    assert daemon.db("SELECT count(*) FROM messages WHERE subject = "
                     "'smuggled'")[0][0] == 0


def test_smuggling_normalize_mode(daemon_factory):
    d = daemon_factory({"limits": {"bare_newlines": "normalize"}})
    with d.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: carrier\r\n\r\nhello\n.\n"
               "MAIL FROM:<smuggled@evil.example>\r\n"
               "RCPT TO:<victim@example.test>\r\nDATA\r\n"
               "Subject: smuggled\r\n\r\nx\r\n.\r\n")
        qid = queued_id(c.line())
        assert c.cmd("QUIT").startswith("221")
    assert d.db("SELECT id, sender FROM messages") == [(qid, "a@sender.example")]
    stored = content_of(d, qid)
    # the bare LFs became CRLF, and the smuggled commands are only content
    assert b"hello\r\n" in stored
    assert b"\n" not in stored.replace(b"\r\n", b"")
    assert b"MAIL FROM:<smuggled@evil.example>\r\n" in stored


def test_smtplib_sendmail(daemon):
    with smtplib.SMTP(daemon.host, daemon.port, timeout=10) as s:
        s.ehlo("lib.example")
        refused = s.sendmail("alice@sender.example",
                             ["bob@example.test", "eve@evil.example"],
                             make_message("via smtplib"))
        assert list(refused) == ["eve@evil.example"]
        assert refused["eve@evil.example"][0] == 550
    assert daemon.db("SELECT subject FROM messages") == [("via smtplib",)]


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks(daemon):
    r = subprocess.run(
        ["swaks", "--server", "%s:%d" % (daemon.host, daemon.port),
         "--from", "alice@sender.example", "--to", "bob@example.test",
         "--helo", "swaks.example", "--header", "Subject: swaks test",
         "--body", "hello from swaks", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"<[-~]\s+250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})", r.stdout)
    assert m, r.stdout
    qid = m.group(1)
    assert daemon.db("SELECT subject, helo FROM messages WHERE id = ?",
                     (qid,)) == [("swaks test", "swaks.example")]
    assert b"hello from swaks" in content_of(daemon, qid)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_pipelining(daemon):
    r = subprocess.run(
        ["swaks", "--server", "%s:%d" % (daemon.host, daemon.port),
         "--pipeline", "--from", "alice@sender.example",
         "--to", "bob@example.test,carol@example.test",
         "--header", "Subject: swaks pipelined", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert daemon.db("SELECT count(*) FROM recipients")[0][0] == 2


def test_received_header_and_ids_in_order(daemon):
    from email.utils import parsedate_to_datetime
    ids = []
    with daemon.raw() as c:
        c.line()
        ehlo(c, "order.example")
        for i in range(5):
            ids.append(queued_id(send_one(c, "a@sender.example",
                                          ["bob@example.test"],
                                          make_message("order %d" % i))))
    # time-ordered ids: they sort by arrival
    assert ids == sorted(ids), ids
    stored = content_of(daemon, ids[0])
    header = re.match(rb"Received: (.*?)\r\n(?![ \t])", stored, re.S).group(1)
    text = header.decode()
    assert "order.example" in text and "127.0.0.1" in text, text
    assert ";" in text, text
    when = parsedate_to_datetime(text.rsplit(";", 1)[1].strip())
    assert when is not None


def test_delivery_paused_keeps_messages_queued(daemon_factory):
    """delivery.paused: accepted and queued, never handed to a handler."""
    d = daemon_factory({
        "routes": [{"name": "sink", "rcpt": r"@example\.test$",
                    "action": "discard"}],
        "upstreams": None,
        "delivery": {"paused": True},
    })
    with d.raw() as c:
        c.line()
        ehlo(c)
        qid = queued_id(send_one(c, "alice@sender.example",
                                 ["bob@example.test"],
                                 make_message(subject="paused")))
    # The scheduler looks every second; give it three chances.
    time.sleep(3.5)
    assert d.db("SELECT state, attempts FROM recipients WHERE message_id = ?",
                (qid,)) == [("queued", 0)]
    assert len(content_of(d, qid)) > 0
    assert "delivery process" not in d.log()


def test_maildir_root_made_for_the_unprivileged_user(daemon_factory):
    """Started as root, mxgated creates a maildir route's missing root
    (the path before its first variable) for the queue's user, so the
    first delivery works; a root the operator made is left alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root: privileges are only dropped by root")
    top = tempfile.mkdtemp(prefix="mxgate-md-", dir="/tmp")
    os.chmod(top, 0o755)
    own = os.path.join(top, "own")
    os.mkdir(own, 0o755)
    d = daemon_factory({
        "routes": [
            {"name": "made", "rcpt": r"@example\.test$", "action": "maildir",
             "path": os.path.join(top, "mail", "${domain}", "${local}") + "/"},
            {"name": "own", "rcpt": r"@localhost$", "action": "maildir",
             "path": os.path.join(own, "${local}") + "/"},
        ],
        "upstreams": None,
    })
    try:
        with d.raw() as c:
            c.line()
            ehlo(c)
            send_one(c, "alice@sender.example", ["bob@example.test"],
                     make_message(subject="made root"))
        new = os.path.join(top, "mail", "example.test", "bob", "new")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                os.path.isdir(new) and os.listdir(new)):
            time.sleep(0.1)
        assert os.listdir(new), d.log()[-2000:]
        st = os.stat(os.path.join(top, "mail"))
        # deliveries run as the delivery user (server.delivery_user)
        assert st.st_uid == pwd.getpwnam("mxgate-deliver").pw_uid
        # The operator's own root keeps its owner.
        assert os.stat(own).st_uid == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)
