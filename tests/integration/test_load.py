"""Many clients at once: every accepted message is queued exactly once."""

import collections
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
