"""mxgatectl reads the queue while the daemon runs."""

import re

from conftest import make_message, queued_id


def send(d, subjects):
    ids = []
    with d.raw() as c:
        c.line()
        assert c.cmd("EHLO ctl.example").startswith("250")
        for s in subjects:
            assert c.cmd("MAIL FROM:<alice@sender.example>").startswith("250")
            assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
            assert c.cmd("RCPT TO:<carol@example.test>").startswith("250")
            assert c.cmd("DATA").startswith("354")
            c.send(make_message(s, marker="marker-" + s.replace(" ", "-"))
                   + ".\r\n")
            ids.append(queued_id(c.line()))
    return ids


def test_list_empty(daemon):
    r = daemon.ctl("queue", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert re.match(r"^0 messages?$", lines[-1]), r.stdout


def test_list(daemon):
    ids = send(daemon, ["one", "two", "three"])
    r = daemon.ctl("queue", "list")
    assert r.returncode == 0, r.stderr
    # Deferred recipients (the parked upstream) come under their
    # message, indented, with their last reply.
    lines = [l for l in r.stdout.strip().splitlines()
             if not l.startswith("    ")]
    assert len(lines) == 1 + 3 + 1, r.stdout      # header, rows, total
    assert lines[-1] == "3 messages", r.stdout
    for qid in ids:
        rows = [l for l in lines[1:-1] if qid in l]
        assert len(rows) == 1, (qid, r.stdout)
        assert "alice@sender.example" in rows[0], rows[0]
    assert not any(qid in lines[0] for qid in ids)


def test_show(daemon):
    qid = send(daemon, ["shown"])[0]
    r = daemon.ctl("queue", "show", qid)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for want in (qid, "alice@sender.example", "bob@example.test",
                 "carol@example.test", "127.0.0.1"):
        assert want in out, (want, out)
    # each recipient's state (the test upstream may have deferred it)
    assert re.search(r"\b(queued|delivering|deferred)\b", out), out
    # without --body, no body
    assert "body line 0 of marker-shown" not in out
    # the history starts with reception and one routing per recipient
    hist = out.split("\nhistory:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    kinds = [line.split()[2] for line in hist]
    assert kinds[:3] == ["received", "routed", "routed"], hist
    assert "from=<alice@sender.example> client=127.0.0.1" in hist[0], hist
    assert "<bob@example.test> route=accepted action=relay" in hist[1], hist


def test_show_body(daemon):
    qid = send(daemon, ["with body"])[0]
    r = daemon.ctl("queue", "show", qid, "--body")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Received: " in out
    assert "Subject: with body" in out
    assert "body line 2 of marker-with-body" in out


def test_show_unknown_id(daemon):
    send(daemon, ["exists"])
    r = daemon.ctl("queue", "show", "0000000000000000")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "0000000000000000" in (r.stdout + r.stderr)


def test_show_malformed_id(daemon):
    r = daemon.ctl("queue", "show", "'; DROP TABLE messages; --")
    assert r.returncode != 0
    assert daemon.db("SELECT count(*) FROM messages")[0][0] == 0


def test_unknown_command(daemon):
    r = daemon.ctl("frobnicate")
    assert r.returncode != 0
    assert r.stderr.strip(), "no usage message"


def test_list_after_stop(daemon):
    """mxgatectl works on a queue whose daemon is down."""
    ids = send(daemon, ["a", "b"])
    daemon.stop()
    r = daemon.ctl("queue", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "2 messages"
    for qid in ids:
        assert qid in r.stdout
