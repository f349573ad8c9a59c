"""Many clients at once: every accepted message is queued exactly once."""

import collections

import pytest
import smtplib
import threading
import time

from conftest import QUEUED_RE

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
