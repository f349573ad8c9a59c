"""mxgatectl's queue tools at scale: JSON output, bulk actions on IDs from
stdin or filters, why a message waits, the queue's shape by age, and a
message's history after it left the queue (issue 14)."""

import json
import os
import re
import time

import pytest

from conftest import make_message, queued_id, wait_for

# Deliveries paused: what the tests send stays queued.  Subdomains of
# example.test are relayed too, for per-destination filters and shapes.
PAUSED = {"delivery": {"paused": True, "retry_schedule": [3600],
                       "keep_delivered": "1d"},
          "routes": [{"name": "sub", "rcpt": r"@([a-z]+\.)?example\.test$",
                      "action": "relay", "upstream": "parked"},
                     {"name": "relay_denied", "rcpt": ".*",
                      "action": "reject", "code": 550,
                      "text": "5.7.1 relay denied"}]}


def send_many(d, rcpts_list, sender="alice@sender.example"):
    """One message per entry (a list of recipients), over one session."""
    ids = []
    with d.raw() as c:
        c.line()
        assert c.cmd("EHLO ctl.example").startswith("250")
        for i, rcpts in enumerate(rcpts_list):
            assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250")
            for r in rcpts:
                line = c.cmd("RCPT TO:<%s>" % r)
                assert line.startswith("250"), line
            assert c.cmd("DATA").startswith("354")
            c.send(make_message("m%d" % i, marker="mk-%d-%s" % (
                i, time.monotonic()), sender=sender, rcpt=rcpts[0])
                + ".\r\n")
            ids.append(queued_id(c.line()))
    return ids


def ctl_ok(d, *args, stdin=None):
    r = d.ctl(*args) if stdin is None else ctl_input(d, stdin, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def ctl_input(d, text, *args):
    import subprocess
    from conftest import mxgatectl_path
    return subprocess.run([mxgatectl_path(), "-c", d.config_path]
                          + list(args), input=text, capture_output=True,
                          text=True, timeout=60)


def states(d, qid):
    return dict(d.db("SELECT address, state FROM recipients"
                     " WHERE message_id = ?", (qid,)))


def test_list_json_and_why_it_waits(daemon_factory):
    # The parked upstream refuses connections: each recipient is
    # deferred with the relay's reply.
    d = daemon_factory()
    qid = send_many(d, [["bob@example.test", "carol@example.test"]])[0]
    assert wait_for(lambda: set(states(d, qid).values()) == {"deferred"},
                    10.0), states(d, qid)
    out = json.loads(ctl_ok(d, "queue", "list", "--json"))
    assert [m["id"] for m in out] == [qid]
    m = out[0]
    assert m["sender"] == "alice@sender.example"
    assert m["states"] == "deferred"
    assert [r["address"] for r in m["recipients"]] == \
        ["bob@example.test", "carol@example.test"]
    for r in m["recipients"]:
        assert r["state"] == "deferred" and r["attempts"] == 1
        assert r["last_reply"].startswith("4"), r
        assert r["next_attempt"]
    text = ctl_ok(d, "queue", "list")
    reply = m["recipients"][0]["last_reply"]
    assert re.search(r"^    <bob@example\.test> deferred, 1 attempt, next"
                     r" \S+ \S+ UTC: " + re.escape(reply) + "$", text,
                     re.M), text
    assert ctl_ok(d, "queue", "list", "--ids").split() == [qid]
    # show and stats as JSON.
    shown = json.loads(ctl_ok(d, "queue", "show", qid, "--json"))
    assert shown["id"] == qid and shown["client_ip"] == "127.0.0.1"
    assert [e["kind"] for e in shown["history"]][:3] == \
        ["received", "routed", "routed"]
    assert "deferred" in [e["kind"] for e in shown["history"]]
    stats = json.loads(ctl_ok(d, "queue", "stats", "--json"))
    assert stats["messages"] == 1
    assert stats["oldest_pending"]["id"] == qid
    assert {s["state"]: s["recipients"] for s in stats["states"]} == \
        {"deferred": 2}
    assert sum(x["deferred"] for x in stats["destinations"]) == 2


def test_bulk_actions_on_hundreds(daemon_factory):
    d = daemon_factory(PAUSED)
    n = 300
    rcpts = [["user%d@%s" % (i, "a.example.test" if i % 3 else
                             "b.example.test")] for i in range(n)]
    ids = send_many(d, rcpts)
    assert len(set(ids)) == n
    b_ids = [q for i, q in enumerate(ids) if i % 3 == 0]
    # A filter alone never touches the whole queue.
    r = d.ctl("queue", "hold", "--rcpt", "@b\\.")
    assert r.returncode == 2 and "--all" in r.stderr, r
    # Filters on --all: every third message goes to b.example.test.
    out = ctl_ok(d, "queue", "hold", "--all", "--dest", "^b\\.example")
    assert out.strip() == "held: 100 recipients of 100 messages", out
    held = d.db("SELECT message_id FROM recipients WHERE state = 'held'")
    assert sorted(x[0] for x in held) == sorted(b_ids)
    # Held again: nothing left to hold.
    out = ctl_ok(d, "queue", "hold", "--all", "--rcpt", "@b\\.")
    assert out.strip() == "held: 0 recipients of 0 messages", out
    # IDs from stdin, as queue list --ids prints them.
    listed = ctl_ok(d, "queue", "list", "--ids", "--all", "--state", "held")
    assert sorted(listed.split()) == sorted(b_ids)
    out = ctl_ok(d, "queue", "release", "-", stdin=listed)
    assert out.strip() == "released, due now: 100 recipients of 100" \
        " messages", out
    assert d.db("SELECT count(*) FROM recipients WHERE state = 'held'") \
        == [(0,)]
    # The operator is in each message's history, with the uid.
    ev = d.db("SELECT kind, detail FROM events WHERE message_id = ?",
              (b_ids[0],))
    assert ("held", "by mxgatectl uid=%d user=root" % os.getuid()) in ev, ev
    assert ("released", "by mxgatectl uid=%d user=root" % os.getuid()) \
        in ev, ev
    # --sender, --older-than.
    assert ctl_ok(d, "queue", "retry", "--all", "--sender",
                  "^nobody@").strip() == \
        "due now: 0 recipients of 0 messages"
    old = ids[:10]
    d.db_write = None
    import sqlite3
    h = sqlite3.connect(d.db_path, timeout=30)
    with h:
        h.executemany("UPDATE messages SET received_at = received_at - 7200"
                      " WHERE id = ?", [(q,) for q in old])
    h.close()
    out = ctl_ok(d, "queue", "list", "--ids", "--all", "--older-than", "1h")
    assert sorted(out.split()) == sorted(old), out
    # Several IDs as arguments; then delete through stdin.
    out = ctl_ok(d, "queue", "hold", ids[1], ids[2])
    assert out.strip() == "held: 2 recipients of 2 messages", out
    victims = ids[100:250]
    out = ctl_ok(d, "queue", "delete", "-", stdin="\n".join(victims) + "\n")
    assert out.strip() == "deleted: 150 messages", out
    assert d.db("SELECT count(*) FROM messages")[0][0] == n - 150
    # A bad line on stdin changes nothing.
    r = ctl_input(d, ids[0] + "\nnot-an-id\n", "queue", "delete", "-")
    assert r.returncode != 0 and "line 2" in r.stderr, r
    assert d.db("SELECT count(*) FROM messages")[0][0] == n - 150
    # Bounce by filter: DSNs for the messages of a.example.test older
    # than an hour (ids[:10] minus the b ones).
    a_old = [q for i, q in enumerate(old) if i % 3]
    out = ctl_ok(d, "queue", "bounce", "--all", "--older-than", "1h",
                 "--rcpt", "@a\\.example")
    assert out.strip().splitlines()[-1] == \
        "bounced: %d recipients of %d messages, %d DSNs queued" % (
            len(a_old), len(a_old), len(a_old)), out
    for q in a_old:
        assert set(states(d, q).values()) == {"bounced"}


def test_shape_buckets(daemon_factory):
    d = daemon_factory(PAUSED)
    ids = send_many(d, [["a%d@one.example.test" % i] for i in range(5)] +
                    [["b%d@two.example.test" % i] for i in range(3)] +
                    [["c@one.example.test", "d@two.example.test"]])
    ages = {ids[0]: 0, ids[1]: 400, ids[2]: 700, ids[3]: 4000,
            ids[4]: 90000, ids[5]: 30, ids[6]: 1300, ids[7]: 50000,
            ids[8]: 100}
    import sqlite3
    h = sqlite3.connect(d.db_path, timeout=30)
    now = int(time.time())
    with h:
        for q, age in ages.items():
            h.execute("UPDATE messages SET received_at = ? WHERE id = ?",
                      (now - age, q))
    h.close()
    shape = json.loads(ctl_ok(d, "queue", "shape", "--buckets",
                              "5m,20m,1h,1d", "--json"))
    assert shape["buckets"] == ["5m", "20m", "1h", "1d", "older"]
    rows = {r["destination"]: r for r in shape["destinations"]}
    # one: ages 0, 400, 700, 4000, 90000, and c at 100.
    assert rows["one.example.test"]["buckets"] == [2, 2, 0, 1, 1]
    assert rows["one.example.test"]["total"] == 6
    # two: 30, 1300, 50000, and d at 100.
    assert rows["two.example.test"]["buckets"] == [2, 0, 1, 1, 0]
    assert shape["total"] == 10
    # Most pending first; the text form has the same numbers.
    assert [r["destination"] for r in shape["destinations"]] == \
        ["one.example.test", "two.example.test"]
    text = ctl_ok(d, "queue", "shape", "--buckets", "5m,20m,1h,1d")
    assert re.search(r"^one\.example\.test +6 +2 +2 +0 +1 +1$", text,
                     re.M), text
    assert re.search(r"^TOTAL +10 +4 +2 +1 +2 +1$", text, re.M), text
    # Filters apply; held recipients still count as pending.
    ctl_ok(d, "queue", "hold", ids[0])
    shape = json.loads(ctl_ok(d, "queue", "shape", "--json", "--rcpt",
                              "^a"))
    assert [(r["destination"], r["total"]) for r in
            shape["destinations"]] == [("one.example.test", 5)]
    r = d.ctl("queue", "shape", "--buckets", "1h,5m")
    assert r.returncode == 2 and "increasing" in r.stderr


def test_trace_after_delete_and_delivery(daemon_factory):
    d = daemon_factory(PAUSED)
    qid, other = send_many(d, [["bob@example.test", "carol@example.test"],
                               ["dan@example.test"]])
    ctl_ok(d, "queue", "hold", qid)
    ctl_ok(d, "queue", "delete", qid)
    # Gone from the queue ...
    r = d.ctl("queue", "show", qid)
    assert r.returncode == 1
    assert d.db("SELECT count(*) FROM messages WHERE id = ?", (qid,)) \
        == [(0,)]
    # ... but not its story.
    out = ctl_ok(d, "queue", "trace", qid)
    assert out.startswith("no longer in the queue"), out
    assert "alice@sender.example" in out and "<carol@example.test>" in out
    hist = out.split("\nhistory:\n", 1)[1].splitlines()
    kinds = [l.split()[2] for l in hist]
    assert kinds == ["received", "routed", "routed", "held", "held",
                     "deleted"], hist
    assert "by mxgatectl uid=%d" % os.getuid() in hist[-1], hist
    t = json.loads(ctl_ok(d, "queue", "trace", qid, "--json"))
    assert t["in_queue"] is False and t["id"] == qid
    assert [r["state"] for r in t["recipients"]] == ["held", "held"]
    assert t["history"][-1]["kind"] == "deleted"
    # A message still queued is traced from the queue.
    t = json.loads(ctl_ok(d, "queue", "trace", other, "--json"))
    assert t["in_queue"] is True
    r = d.ctl("queue", "trace", "0000000000000000")
    assert r.returncode == 1 and "keep_history" in r.stderr


def test_history_of_delivered_and_keep_history(daemon_factory, tmp_path):
    """Delivered with keep_delivered = 0: the message leaves the queue at
    once, its history stays; keep_history = 0 forgets it at the next
    purge (the scheduler's, once a minute: checked in the database)."""
    maildir = tmp_path / "mail"
    os.chmod(str(tmp_path), 0o755)
    d = daemon_factory({
        "routes": [{"name": "box", "rcpt": r"@box\.test$",
                    "action": "discard"}],
        "delivery": {"keep_delivered": 0}})
    qid = send_many(d, [["x@box.test"]])[0]
    assert wait_for(lambda: d.db("SELECT count(*) FROM messages")[0][0]
                    == 0, 10.0)
    t = json.loads(ctl_ok(d, "queue", "trace", qid, "--json"))
    assert t["in_queue"] is False
    assert [r["state"] for r in t["recipients"]] == ["delivered"]
    kinds = [e["kind"] for e in t["history"]]
    assert kinds == ["received", "routed", "attempt", "delivered"], kinds


def test_trace_keeps_dsn_parameters(daemon_factory):
    """RET, ENVID, NOTIFY and ORCPT (RFC 3461, xtext decoded) stay in
    the history once the message has left the queue (schema version 6),
    in queue trace's text and JSON."""
    d = daemon_factory({
        "routes": [{"name": "box", "rcpt": r"@box\.test$",
                    "action": "discard"}],
        "delivery": {"keep_delivered": 0}})
    with d.raw() as c:
        assert c.line().startswith("220")
        assert c.cmd("EHLO client.example").startswith("250")
        assert c.cmd("MAIL FROM:<a@sender.example> RET=HDRS "
                     "ENVID=QQ+2B314").startswith("250")
        assert c.cmd("RCPT TO:<x@box.test> NOTIFY=SUCCESS,FAILURE "
                     "ORCPT=rfc822;X+2By@box.test").startswith("250")
        assert c.cmd("RCPT TO:<y@box.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(make_message("dsn", sender="a@sender.example",
                            rcpt="x@box.test") + ".\r\n")
        qid = queued_id(c.line(timeout=20))
    assert wait_for(lambda: d.db("SELECT count(*) FROM messages")[0][0]
                    == 0, 10.0)
    t = json.loads(ctl_ok(d, "queue", "trace", qid, "--json"))
    assert t["in_queue"] is False
    assert (t["dsn_ret"], t["dsn_envid"]) == ("HDRS", "QQ+314")
    assert [(r["address"], r["dsn_notify"], r["dsn_orcpt"])
            for r in t["recipients"]] == [
        ("x@box.test", "SUCCESS,FAILURE", "rfc822;X+y@box.test"),
        ("y@box.test", None, None)]
    out = ctl_ok(d, "queue", "trace", qid)
    assert "RET=HDRS" in out and "QQ+314" in out, out
    assert "SUCCESS,FAILURE" in out and "rfc822;X+y@box.test" in out, out


def run_mxgated(*args):
    import subprocess
    from conftest import mxgated_path
    return subprocess.run([mxgated_path()] + list(args), capture_output=True,
                          text=True, timeout=60)


def table_settings():
    """Every setting of the table, from the manual made from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    page = open(os.path.join(here, "..", "..", "doc", "mxgate.conf.5")).read()
    return set(re.findall(r"^\.TP\n\.B ([a-z_.]+)$", page, re.M))


def test_effective_configuration_round_trip(daemon_factory, tmp_path):
    d = daemon_factory({"limits": {"recipients": 7},
                        "queue": {"keep_history": "2h"}})
    full = ctl_ok(d, "config")
    # Every top-level setting of the table, with its value or "not set".
    names = set(re.findall(r"^(?:  )?(?:# )?([a-z_]+)(?: = |: not set)",
                           full, re.M))
    # Settings of list elements (a route's action, ...) are shown as
    # written, inside their list: the others each have a line (the
    # grouped ones, and the top-level ones named here).
    top = {"listen", "accept_domains", "routes", "upstreams", "plugins",
           "greet_pause", "helo_checks", "reject_networks",
           "trusted_networks"}
    settings = {n for n in table_settings() if "." in n or n in top}
    assert "queue.keep_history" in settings and "routes" in settings
    missing = {n for n in settings if n.split(".")[-1] not in names}
    assert not missing, missing
    assert re.search(r"^limits = \{\n(  .*\n)*  recipients = 7;$", full,
                     re.M), full
    assert "  keep_history = \"2h\";" in full
    assert "  errors = 10;" in full          # a default
    # Read back: the same configuration.
    path = tmp_path / "effective.conf"
    path.write_text(full)
    r = run_mxgated("-n", "-c", str(path))
    assert r.returncode == 0, (r.stdout, r.stderr, full)
    again = run_mxgated("-n", "-v", "-c", str(path))
    assert again.returncode == 0, again.stderr
    body = lambda t: [l for l in t.splitlines() if not l.startswith("# ")]
    assert body(again.stdout) == body(full)
    assert again.stdout.splitlines()[-1] == \
        "# %s: configuration OK" % path
    # -d: only what differs from the defaults, and mxgated -n -v -d says
    # the same.
    diff = ctl_ok(d, "config", "-d")
    assert "  recipients = 7;" in diff and "errors" not in diff
    assert "keep_history = \"2h\";" in diff
    assert "min_free_space" not in diff
    r = run_mxgated("-n", "-v", "-d", "-c", d.config_path)
    assert r.returncode == 0, r.stderr
    assert body(r.stdout) == body(diff)
    # The differences alone make the same configuration too.
    path2 = tmp_path / "diff.conf"
    path2.write_text(diff)
    r = run_mxgated("-n", "-v", "-c", str(path2))
    assert r.returncode == 0, r.stderr
    assert body(r.stdout) == body(full)
    # -v only with -n, -d only with -v.
    assert run_mxgated("-v", "-c", d.config_path).returncode == 2
    assert run_mxgated("-n", "-d", "-c", d.config_path).returncode == 2


def test_reroute_after_a_configuration_change(daemon_factory, tmp_path):
    from conftest import merge_settings, render_config
    d = daemon_factory(PAUSED)
    one, two, held, other = send_many(d, [["a@one.example.test"],
                                          ["b@two.example.test"],
                                          ["c@one.example.test"],
                                          ["d@example.test"]])
    ctl_ok(d, "queue", "hold", held)
    before = d.db("SELECT address, route, action, action_params, state"
                  " FROM recipients ORDER BY id")
    # The new configuration: one.example.test goes to another upstream,
    # two.example.test is refused now; the rest as before.
    new = merge_settings(d.settings, {
        "upstreams": d.settings["upstreams"] +
        [{"name": "newup", "hosts": ["192.0.2.25:25"]}],
        "routes": [{"name": "one", "rcpt": r"@one\.example\.test$",
                    "action": "relay", "upstream": "newup"},
                   {"name": "two", "rcpt": r"@two\.example\.test$",
                    "action": "reject", "code": 550,
                    "text": "5.1.1 gone"}] + PAUSED["routes"]})
    conf = tmp_path / "new.conf"
    conf.write_text(render_config(new))

    def reroute(*args):
        # mxgatectl with the new configuration; the daemon keeps its own.
        return _ctl_conf(conf, "queue", "reroute", *args)

    out = reroute("--all", "--dry-run")
    assert out.splitlines()[-1] == "would reroute: 2 recipients of 2" \
        " messages; 1 unchanged, 1 left as they were", out
    assert d.db("SELECT address, route, action, action_params, state"
                " FROM recipients ORDER BY id") == before
    # Filters: only two.example.test, which is refused now.
    out = reroute("--all", "--rcpt", "@two\\.")
    assert "%s <b@two.example.test>: the routes refuse it now (550 5.1.1" \
        " gone): left as it was" % two in out, out
    out = reroute("--all")
    lines = out.splitlines()
    assert lines[-1] == "rerouted: 2 recipients of 2 messages; 1" \
        " unchanged, 1 left as they were", out
    assert ("%s <a@one.example.test>: route=sub action=relay params=" % one
            ) in out and "-> route=one action=relay params=" in out, out
    rows = {r[0]: r[1:] for r in d.db(
        "SELECT address, route, action, action_params, state,"
        " next_attempt_at FROM recipients")}
    assert rows["a@one.example.test"][0] == "one"
    assert json.loads(rows["a@one.example.test"][2])["upstream"] == "newup"
    assert rows["a@one.example.test"][3] == "queued"
    assert rows["c@one.example.test"][:2] == ("one", "relay")
    assert rows["c@one.example.test"][3] == "held"       # still held
    assert rows["b@two.example.test"][0] == "sub"        # left as it was
    assert rows["d@example.test"][0] == "sub"            # unchanged
    # The history says what changed and who did it.
    ev = d.db("SELECT kind, detail FROM events WHERE message_id = ?"
              " AND kind = 'routed'", (one,))
    assert len(ev) == 1 and "(was route=sub action=relay" in ev[0][1] \
        and "by mxgatectl uid=%d" % os.getuid() in ev[0][1], ev
    # Done again: nothing left to change.
    out = reroute("--all")
    assert out.splitlines()[-1] == "rerouted: 0 recipients of 0 messages;" \
        " 3 unchanged, 1 left as they were", out
    # --bounce-refused: the refused one is bounced with the route's
    # reply, a DSN to its sender.
    out = reroute("--all", "--bounce-refused", "--dry-run")
    assert out.splitlines()[-1].endswith(", 0 left as they were, 1 would"
                                         " be bounced"), out
    assert states(d, two) == {"b@two.example.test": "deferred"} or \
        states(d, two) == {"b@two.example.test": "queued"}
    out = reroute("--all", "--bounce-refused")
    assert "%s <b@two.example.test>: the routes refuse it now (550 5.1.1" \
        " gone): bounced" % two in out, out
    m = re.search(r"^%s: bounced 1 recipient, DSN ([0-9A-Z]{16}) queued$"
                  % two,
                  out, re.M)
    assert m, out
    assert states(d, two) == {"b@two.example.test": "bounced"}
    assert d.db("SELECT last_reply FROM recipients WHERE message_id = ?",
                (two,)) == [("550 5.1.1 gone",)]
    assert states(d, m.group(1)) == {"alice@sender.example": "queued"}
    # The message's trace shows the rerouting.
    t = json.loads(ctl_ok(d, "queue", "trace", one, "--json"))
    assert [e["kind"] for e in t["history"]] == ["received", "routed",
                                                 "routed"]


def _ctl_conf(conf, *args):
    import subprocess
    from conftest import mxgatectl_path
    r = subprocess.run([mxgatectl_path(), "-c", str(conf)] + list(args),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_reroute_is_in_the_operators_log(daemon_factory):
    """The reroute is logged like the other actions (audit.h)."""
    from conftest import merge_settings, render_config
    from test_logs import ctl_syslog, parse_kv
    d = daemon_factory(PAUSED)
    qid = send_many(d, [["a@one.example.test", "b@one.example.test"]])[0]
    # The configuration file changes under the running daemon (which
    # keeps what it read); mxgatectl reads the new one.
    new = merge_settings(d.settings, {
        "routes": [{"name": "one", "rcpt": r"@one\.example\.test$",
                    "action": "relay", "upstream": "parked"}] +
        PAUSED["routes"]})
    with open(d.config_path, "w") as f:
        f.write(render_config(new))
    out, lines = ctl_syslog(d, "queue", "reroute", "--all")
    assert out["rc"] == 0, out
    assert len(lines) == 1, out
    rec = parse_kv(lines[0])
    assert rec["action"] == "reroute" and rec["event"] == "operator", rec
    assert rec["messages"] == "1" and rec["nrcpt"] == "2", rec
    assert rec["uid"] == str(os.getuid())
    assert d.db("SELECT DISTINCT route FROM recipients WHERE message_id = ?",
                (qid,)) == [("one",)]
