"""Many clients at once: every accepted message is queued exactly once."""

import collections

import pytest
import smtplib
import sqlite3
import threading
import time

from conftest import QUEUED_RE, wait_for

CLIENTS = 20
MESSAGES = 50            # per client
PER_CONNECTION = 10      # messages sent on one connection


def client(daemon, n, results, errors):
    sent = 0
    try:
        while sent < MESSAGES:
            with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as s:
                s.ehlo("client%d.example" % n)
                for _ in range(PER_CONNECTION):
                    if sent >= MESSAGES:
                        break
                    marker = "c%02d-m%03d" % (n, sent)
                    msg = ("From: <c%d@sender.example>\r\n"
                           "To: <bob@example.test>\r\n"
                           "Subject: load %s\r\n\r\n"
                           "unique marker %s\r\n" % (n, marker, marker))
                    code, resp = s.mail("c%d@sender.example" % n)
                    assert code == 250, (code, resp)
                    code, resp = s.rcpt("bob@example.test")
                    assert code == 250, (code, resp)
                    code, resp = s.data(msg)
                    line = "%d %s" % (code, resp.decode())
                    m = QUEUED_RE.match(line)
                    assert m, line
                    results.append((marker, m.group(1)))
                    sent += 1
    except Exception as e:  # reported by the main thread
        errors.append("client %d after %d messages: %r" % (n, sent, e))


def test_concurrent_clients(daemon):
    results, errors = [], []
    threads = [threading.Thread(target=client,
                                args=(daemon, n, results, errors))
               for n in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    took = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "clients still running"
    assert not errors, errors[:5]
    total = CLIENTS * MESSAGES
    assert len(results) == total
    print("%d messages from %d clients in %.1fs (%.0f/s)"
          % (total, CLIENTS, took, total / took))

    ids = [qid for _, qid in results]
    assert len(set(ids)) == total, "the server reported duplicate ids"

    assert daemon.message_count() == total
    db_ids = collections.Counter(r[0] for r in daemon.db(
        "SELECT id FROM messages"))
    assert set(db_ids) == set(ids)
    assert max(db_ids.values()) == 1

    # each message stored once, under the id the client was told
    by_subject = collections.Counter(r[0] for r in daemon.db(
        "SELECT subject FROM messages"))
    for marker, _ in results:
        assert by_subject["load " + marker] == 1, marker
    told = dict((qid, marker) for marker, qid in results)
    for qid, content in daemon.db("SELECT message_id, content "
                                  "FROM message_contents"):
        if isinstance(content, str):
            content = content.encode()
        marker = told[qid]
        assert content.count(("unique marker %s\r\n" % marker).encode()) == 1
    assert daemon.db("SELECT count(*) FROM recipients")[0][0] == total
    assert daemon.db("PRAGMA integrity_check") == [("ok",)]


def test_connection_burst_all_greeted(daemon_factory):
    """A burst of connections larger than what a worker's channel holds:
    the master queues the sockets for the workers (and pauses accepting)
    instead of refusing them; every client gets its 220."""
    import resource
    import selectors
    import socket

    n = 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        want = min(hard, n + 200) if hard != resource.RLIM_INFINITY else n + 200
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < n + 200:
            pytest.skip("cannot open %d descriptors" % n)
    d = daemon_factory({"limits": {"connections": 5000,
                                   "connections_per_ip": 0}})
    sel = selectors.DefaultSelector()
    socks, greeted, refused = [], 0, 0
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((d.host, d.port))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        pending = n
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                try:
                    data = key.fileobj.recv(512)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                sel.unregister(key.fileobj)
                pending -= 1
                if data.startswith(b"220 "):
                    greeted += 1
                else:
                    refused += 1
        assert (greeted, refused, pending) == (n, 0, 0), d.log()[-2000:]
    finally:
        sel.close()
        for s in socks:
            s.close()


def test_sizes_around_the_inline_limit(daemon):
    """Messages up to 64 KB (with their envelope) reach the queue inline in
    the submission, larger ones in a sealed memfd: either way the stored
    content is the message received, byte for byte."""
    import random
    sizes = [1, 1024, 60 * 1024, 64 * 1024 - 600, 64 * 1024 - 100,
             64 * 1024, 64 * 1024 + 100, 70 * 1024, 300 * 1024]
    rnd = random.Random(7)
    sent = {}
    with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as s:
        s.ehlo("sizes.example")
        for size in sizes:
            head = "Subject: size %d\r\n\r\n" % size
            line = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                           for _ in range(70)) + "\r\n"
            body = (line * (size // len(line) + 1))[:max(0, size - len(head))]
            body = body[:len(body) - len(body) % 72] if size > 100 else "x\r\n"
            msg = head + body
            code, resp = s.sendmail("sizes@sender.example",
                                    ["bob@example.test"], msg), None
            assert code == {}, code
            sent[size] = msg.encode()
    rows = daemon.db("SELECT m.subject, m.size, c.content FROM messages m"
                     " JOIN message_contents c ON c.message_id = m.id")
    got = {int(subject.split()[1]): (size, content)
           for subject, size, content in rows}
    assert sorted(got) == sorted(sizes)
    for size, msg in sent.items():
        stored_size, content = got[size]
        assert stored_size == len(content), size
        # Our Received: and Authentication-Results: come first.
        assert content.startswith(b"Received: "), size
        assert content.endswith(msg), size


def burst_with_queue_stopped(daemon, n, then):
    """n clients end DATA of a 50 KB message while the queue process is
    stopped (SIGSTOP): more than its channel's socket buffer holds.  After
    1.5 s, then(queue_pid); returns each client's reply to DATA."""
    import os
    import signal
    body = ("y" * 78 + "\r\n") * 640          # about 50 KB
    assert wait_for(lambda: len(daemon.queue_pids()) == 1, 5.0)
    qpid = daemon.queue_pids()[0]
    replies = [None] * n
    ready = threading.Barrier(n + 1, timeout=30)

    def one(i):
        with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as s:
            s.ehlo("burst%d.example" % i)
            s.mail("burst%d@sender.example" % i)
            s.rcpt("bob@example.test")
            ready.wait()
            replies[i] = s.data("Subject: burst %d\r\n\r\n%s" % (i, body))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    os.kill(qpid, signal.SIGSTOP)
    try:
        for t in threads:
            t.start()
        ready.wait()
        time.sleep(1.5)
    finally:
        then(qpid)
        try:
            os.kill(qpid, signal.SIGCONT)
        except ProcessLookupError:
            pass        # then() killed it, and the master reaped it

    for t in threads:
        t.join(60)
    return replies


def test_burst_while_queue_stalled(daemon):
    """Submissions the queue channel cannot take wait in the worker and go
    out once the queue reads again: every client gets its 250, none a
    451."""
    n = 40
    replies = burst_with_queue_stopped(daemon, n, lambda pid: None)
    codes = [r[0] if r else None for r in replies]
    assert codes == [250] * n, replies
    assert daemon.message_count() == n
    log = daemon.log()
    assert "queue channel full: submissions wait for it" in log
    assert "queue unavailable" not in log


def test_queue_dies_with_submissions_waiting(daemon):
    """The queue process dies while submissions wait for its channel:
    every one of those clients hears 451 (nothing was committed), none
    hangs, and the respawned queue process takes mail again."""
    import os
    import signal
    n = 40
    old = daemon.queue_pids()
    replies = burst_with_queue_stopped(
        daemon, n, lambda pid: os.kill(pid, signal.SIGKILL))
    codes = [r[0] if r else None for r in replies]
    assert codes == [451] * n, replies
    assert wait_for(lambda: daemon.queue_pids() not in ([], old), 10.0)
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as s:
        assert s.sendmail("after@sender.example", ["bob@example.test"],
                          "Subject: after\r\n\r\nok\r\n") == {}
    assert daemon.db("SELECT subject FROM messages") == [("after",)]



def test_readers_see_every_acknowledged_message(daemon_factory):
    """The queue's writers gather WAL frames in memory (queue_vfs.h): a
    reader in another process must find each message whole as soon as its
    client heard 250, while deliveries commit alongside (the scheduler's
    commits have no sync of their own to write the frames at)."""
    d = daemon_factory({
        "routes": [{"name": "sink", "rcpt": r"@example\.test$",
                    "action": "discard"}],
        "upstreams": None,
    })
    acknowledged = []            # (queue id, marker), in order
    done = threading.Event()
    errors = []

    def send(n):
        try:
            with smtplib.SMTP(d.host, d.port, timeout=60) as s:
                s.ehlo("reader-test%d.example" % n)
                for i in range(60):
                    # sizes from tiny to several pages
                    marker = "r%d-m%03d-%s" % (n, i, "x" * (i * 397 % 9000))
                    assert s.mail("c%d@sender.example" % n)[0] == 250
                    assert s.rcpt("bob@example.test")[0] == 250
                    code, resp = s.data("Subject: r%d-m%03d\r\n\r\n%s\r\n"
                                        % (n, i, marker))
                    m = QUEUED_RE.match("%d %s" % (code, resp.decode()))
                    assert m, (code, resp)
                    acknowledged.append((m.group(1), marker))
        except Exception as e:
            errors.append("client %d: %r" % (n, e))

    def read():
        checked = 0
        while not done.is_set() or checked < len(acknowledged):
            if checked >= len(acknowledged):
                time.sleep(0.001)
                continue
            qid, marker = acknowledged[checked]
            try:
                con = sqlite3.connect("file:%s?mode=rw" % d.db_path,
                                      uri=True, timeout=10)
                try:
                    subject = con.execute(
                        "SELECT subject FROM messages WHERE id = ?",
                        (qid,)).fetchall()
                    # Delivered messages lose their content (not their
                    # rows): the race with delivery is part of the test.
                    content = con.execute(
                        "SELECT content FROM message_contents"
                        " WHERE message_id = ?", (qid,)).fetchall()
                    state = con.execute(
                        "SELECT state FROM recipients WHERE message_id = ?",
                        (qid,)).fetchall()
                finally:
                    con.close()
            except sqlite3.Error as e:
                errors.append("reading %s: %r" % (qid, e))
                return
            if subject != [(marker[:marker.index("-", 4)],)] or (
                    content and marker.encode() not in bytes(content[0][0])
                    ) or (not content and state != [("delivered",)]):
                errors.append("message %s not whole: %r %r %r"
                              % (qid, subject, content[:1], state))
                return
            checked += 1

    senders = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in senders:
        t.start()
    for t in senders:
        t.join(timeout=120)
    done.set()
    reader.join(timeout=120)
    assert not errors, errors[:5]
    assert len(acknowledged) == 240
    # Deliveries ran meanwhile: the scheduler's commits were in the mix.
    assert wait_for(lambda: d.db("SELECT count(*) FROM recipients"
                                 " WHERE state = 'delivered'")[0][0] == 240,
                    30)
    assert d.db("PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("vfs", ["queue", "stock"])
def test_queue_killed_during_acceptance_loses_nothing(daemon_factory,
                                                      monkeypatch, vfs):
    """SIGKILL the queue process while many clients submit: every message
    a client heard 250 for is in queue.db afterwards, whole (the group
    commit syncs before answering, and the queue VFS writes a
    transaction's WAL frames before that sync: queue_vfs.h).  The stock
    VFS (MXGATE_QUEUE_VFS=stock) is held to the same promise."""
    import os
    import signal
    if vfs == "stock":
        monkeypatch.setenv("MXGATE_QUEUE_VFS", "stock")
    d = daemon_factory()
    if vfs == "stock":
        assert wait_for(lambda: "stock VFS" in d.log(), 5.0), d.log()
    acknowledged = []            # (queue id, marker)
    refused = collections.Counter()
    errors = []
    stop = threading.Event()

    def send(n):
        i = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP(d.host, d.port, timeout=60) as s:
                    s.ehlo("crash%d.example" % n)
                    while not stop.is_set():
                        marker = "k%02d-%04d" % (n, i)
                        i += 1
                        s.mail("c%d@sender.example" % n)
                        s.rcpt("bob@example.test")
                        code, resp = s.data("Subject: %s\r\n\r\n%s\r\n"
                                            % (marker, marker))
                        if code == 250:
                            m = QUEUED_RE.match("250 " + resp.decode())
                            assert m, resp
                            acknowledged.append((m.group(1), marker))
                        else:
                            refused[code] += 1
            except (smtplib.SMTPException, OSError) as e:
                refused[type(e).__name__] += 1
            except Exception as e:  # reported by the main thread
                errors.append(repr(e))
                return

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(acknowledged) >= 200, 30.0), \
            "no load before the kill"
        old = d.queue_pids()
        assert len(old) == 1
        at_kill = len(acknowledged)
        os.kill(old[0], signal.SIGKILL)
        # The master respawns it; acceptance goes on.
        assert wait_for(lambda: d.queue_pids() not in ([], old), 15.0)
        assert wait_for(lambda: len(acknowledged) >= at_kill + 200, 30.0), \
            "no acceptance after the respawn"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:5]
    rows = dict(d.db("SELECT id, subject FROM messages"))
    missing = [(qid, marker) for qid, marker in acknowledged
               if rows.get(qid) != marker]
    assert not missing, "%d of %d acknowledged messages lost: %r" % (
        len(missing), len(acknowledged), missing[:5])
    print("\nqueue (%s VFS) SIGKILLed after %d acknowledged messages: "
          "%d acknowledged in all, all in queue.db; refused meanwhile: %s"
          % (vfs, at_kill, len(acknowledged), dict(refused)))
