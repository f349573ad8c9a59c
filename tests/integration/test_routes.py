"""Routes through the daemon: each action decided at RCPT and stored per
recipient in the queue with its expanded parameters, reject routes, no
route, continue, per-route max_size, every open-relay trick, and
`mxgatectl route test` (one recipient, and --script; --auth against
authenticated routes)."""

import json
import os
import subprocess

import pytest

from conftest import (HOSTNAME, SRC_TOP, make_message, mxgatectl_path,
                      mxgated_path, queued_id)


def routes_daemon(factory, routes, upstreams=None, **sections):
    """A daemon with these routes (and no accept_domains)."""
    overrides = {"accept_domains": None, "routes": routes}
    if upstreams is not None:
        overrides["upstreams"] = upstreams
    overrides.update(sections)
    return factory(overrides)


def ehlo(c, name="client.example"):
    c.send("EHLO %s\r\n" % name)
    code, texts, lines = c.reply()
    assert code == 250, lines


def transaction(d, rcpts, sender="alice@sender.example", content=None,
                helo="client.example"):
    """MAIL, each RCPT (replies returned), then DATA when any was accepted.
    Returns (rcpt replies, final reply or None)."""
    replies = []
    with d.raw() as c:
        c.line()
        ehlo(c, helo)
        assert c.cmd("MAIL FROM:<%s>" % sender).startswith("250 2.1.0")
        for r in rcpts:
            replies.append(c.cmd("RCPT TO:<%s>" % r))
        final = None
        if any(x.startswith("250") for x in replies):
            assert c.cmd("DATA").startswith("354")
            c.send((content or make_message("routes")) + ".\r\n")
            final = c.line()
        else:
            assert c.cmd("DATA").startswith("503 5.5.1")
        c.cmd("QUIT")
    return replies, final


def stored(d, qid):
    """[(address, route, action, params dict)] of message qid."""
    rows = d.db("SELECT address, route, action, action_params FROM recipients"
                " WHERE message_id = ? ORDER BY id", (qid,))
    return [(a, r, act, json.loads(p)) for a, r, act, p in rows]


# ---------------------------------------------------------------------------
# Each action, stored with its expanded parameters

ALL_ACTIONS = [
    {"name": "tickets",
     "rcpt": r"^(?<queue>support|billing)\+(?<ticket>[0-9]+)@help\.example\.test$",
     "action": "pipe", "format": "json", "timeout": 30,
     "command": ["/bin/true", "--queue", "${queue}", "${ticket}",
                 "--id=${queue_id}", "${sender}"]},
    {"name": "mailboxes", "rcpt": r"@mail\.example\.test$",
     "action": "maildir", "path": "mail/${domain}/${local}/"},
    {"name": "lmtp", "rcpt": r"@lmtp\.example\.test$", "action": "lmtp",
     "address": "unix:lmtp.sock"},
    {"name": "hook", "rcpt": r"^(?<who>[^@]+)@hook\.example\.test$",
     "action": "webhook", "url": "http://127.0.0.1:1/in?to=${who}",
     "secret": "not-in-the-queue"},
    {"name": "corp", "rcpt": r"@corp\.example\.test$", "action": "relay",
     "upstream": "exchange"},
    {"name": "sink", "rcpt": r"@discard\.example\.test$", "action": "discard"},
    {"name": "debug", "rcpt": r"@debug\.example\.test$", "action": "debug"},
    {"name": "gone", "rcpt": r"^old@", "action": "reject", "code": 551,
     "text": "5.1.6 <${rcpt}> has moved"},
]
UPSTREAMS = [{"name": "exchange", "hosts": ["127.0.0.1:1"]}]


def test_each_action_stored(daemon_factory):
    d = routes_daemon(daemon_factory, ALL_ACTIONS, UPSTREAMS)
    rcpts = ["Support+42@help.example.test", "Bob@mail.example.test",
             "carol@lmtp.example.test", "dave@hook.example.test",
             "erin@corp.example.test", "frank@discard.example.test",
             "grace@debug.example.test"]
    replies, final = transaction(d, rcpts, sender="alice@sender.example")
    assert all(r.startswith("250 2.1.5") for r in replies), replies
    qid = queued_id(final)
    rows = stored(d, qid)
    assert [(a, r, act) for a, r, act, _ in rows] == [
        ("Support+42@help.example.test", "tickets", "pipe"),
        ("Bob@mail.example.test", "mailboxes", "maildir"),
        ("carol@lmtp.example.test", "lmtp", "lmtp"),
        ("dave@hook.example.test", "hook", "webhook"),
        ("erin@corp.example.test", "corp", "relay"),
        ("frank@discard.example.test", "sink", "discard"),
        ("grace@debug.example.test", "debug", "debug"),
    ], rows
    params = [p for _, _, _, p in rows]
    assert params[0] == {
        "command": ["/bin/true", "--queue", "Support", "42",
                    "--id=" + qid, "alice@sender.example"],
        "format": "json", "timeout": 30,
        "vars": {"queue": "Support", "ticket": "42"}}
    # relative paths are resolved against mxgated's start directory
    assert params[1] == {"path": os.path.join(
        d.dir, "mail/mail.example.test/Bob/"), "vars": {}}
    assert params[2] == {"address": "unix:" + os.path.join(d.dir, "lmtp.sock"),
                         "vars": {}}
    assert params[3] == {"url": "http://127.0.0.1:1/in?to=dave",
                         "format": "json", "timeout": 30,
                         "vars": {"who": "dave"}}
    assert params[4] == {"upstream": "exchange", "vars": {}}
    assert params[5] == {"vars": {}}
    assert params[6] == {"vars": {}}
    # the webhook's secret never reaches the queue
    assert "not-in-the-queue" not in json.dumps(params)


def test_reject_route_and_no_route(daemon_factory):
    d = routes_daemon(daemon_factory, ALL_ACTIONS, UPSTREAMS)
    replies, final = transaction(d, ["old@anything.example",
                                     "bob@nowhere.example",
                                     "grace@debug.example.test"])
    assert replies[0] == "551 5.1.6 <old@anything.example> has moved"
    assert replies[1] == ("550 5.1.1 <bob@nowhere.example>: Recipient "
                          "address rejected")
    assert replies[2].startswith("250 2.1.5")
    qid = queued_id(final)
    assert [a for a, _, _, _ in stored(d, qid)] == ["grace@debug.example.test"]
    assert 'event=reject stage=rcpt' in d.log()
    assert 'dsn=5.1.6 reply="551 5.1.6' in d.log()
    assert 'reason="no route"' in d.log()


def test_continue_stores_each_route(daemon_factory):
    routes = [
        {"name": "archive", "rcpt": r"@example\.test$", "continue": True,
         "action": "maildir", "path": "archive/"},
        {"name": "deliver", "rcpt": r"@example\.test$", "action": "maildir",
         "path": "mail/${local}/"},
        {"name": "never", "rcpt": ".*", "action": "discard"},
    ]
    d = routes_daemon(daemon_factory, routes)
    replies, final = transaction(d, ["bob@example.test", "x@other.example"])
    assert replies[0].startswith("250") and replies[1].startswith("250")
    rows = stored(d, queued_id(final))
    assert [(a, r) for a, r, _, _ in rows] == [
        ("bob@example.test", "archive"), ("bob@example.test", "deliver"),
        ("x@other.example", "never")]
    assert rows[0][3]["path"] == os.path.join(d.dir, "archive/")
    assert rows[1][3]["path"] == os.path.join(d.dir, "mail/bob/")


def test_unsafe_expansion_refused(daemon_factory):
    routes = [{"name": "m", "rcpt": r"@example\.test$", "action": "maildir",
               "path": "mail/${local}/"},
              {"name": "p", "rcpt": r"@pipe\.example\.test$", "action": "pipe",
               "command": ["/bin/true", "${local}"]}]
    d = routes_daemon(daemon_factory, routes)
    replies, final = transaction(d, ["a/b@example.test",
                                     "-oQ/tmp@pipe.example.test",
                                     "ok@example.test"])
    assert replies[0] == ("553 5.1.3 <a/b@example.test>: Recipient address "
                          "not usable here (unsafe ${local})")
    assert replies[1] == ("553 5.1.3 <-oQ/tmp@pipe.example.test>: Recipient "
                          "address not usable here (unsafe ${local})")
    assert replies[2].startswith("250")
    assert [a for a, _, _, _ in stored(d, queued_id(final))] == [
        "ok@example.test"]


def test_helo_in_a_path_is_checked(daemon_factory):
    routes = [{"name": "byhelo", "rcpt": ".", "action": "maildir",
               "path": "mail/${helo}/"}]
    d = routes_daemon(daemon_factory, routes)
    replies, _ = transaction(d, ["bob@example.test"], helo="..")
    assert replies[0].startswith("553 5.1.3"), replies


def test_bare_postmaster(daemon_factory):
    routes = [{"name": "postmaster",
               "rcpt": r"^postmaster@" + HOSTNAME.replace(".", r"\.") + "$",
               "action": "maildir", "path": "mail/postmaster/"}]
    d = routes_daemon(daemon_factory, routes)
    replies, final = transaction(d, ["Postmaster", "postmaster@" + HOSTNAME,
                                     "postmaster@other.example"], sender="")
    assert replies[0].startswith("250") and replies[1].startswith("250")
    assert replies[2].startswith("550 5.1.1")
    rows = stored(d, queued_id(final))
    assert [(a, r) for a, r, _, _ in rows] == [
        ("Postmaster", "postmaster"), ("postmaster@" + HOSTNAME, "postmaster")]


def test_accept_domains_shorthand(daemon_factory):
    """accept_domains without routes: a debug route per domain."""
    daemon = daemon_factory({"accept_domains": ["example.test", "localhost"],
                             "routes": None, "upstreams": None})
    replies, final = transaction(daemon, ["bob@example.test", "Postmaster",
                                          "bob@evil.example"])
    assert replies[2] == "550 5.7.1 <bob@evil.example>: Relay access denied"
    rows = stored(daemon, queued_id(final))
    assert [(a, r, act, p) for a, r, act, p in rows] == [
        ("bob@example.test", "accept_domains", "debug", {"vars": {}}),
        ("Postmaster", "postmaster", "debug", {"vars": {}})]


# ---------------------------------------------------------------------------
# max_size per route

SIZE_ROUTES = [
    {"name": "small", "rcpt": r"@small\.example\.test$", "max_size": "2K",
     "action": "debug"},
    {"name": "big", "rcpt": r"@big\.example\.test$", "max_size": "100K",
     "action": "debug"},
    {"name": "any", "rcpt": r"@example\.test$", "action": "debug"},
]


def test_max_size_declared_at_rcpt(daemon_factory):
    d = routes_daemon(daemon_factory, SIZE_ROUTES)
    with d.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example> SIZE=5000").startswith("250")
        assert c.cmd("RCPT TO:<x@small.example.test>") == (
            "552 5.3.4 Message size exceeds fixed limit for "
            "<x@small.example.test>")
        assert c.cmd("RCPT TO:<x@big.example.test>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(make_message("sized", body_lines=20) + ".\r\n")
        qid = queued_id(c.line())
    assert [a for a, _, _, _ in stored(d, qid)] == ["x@big.example.test",
                                                    "x@example.test"]


def test_max_size_at_end_of_data(daemon_factory):
    d = routes_daemon(daemon_factory, SIZE_ROUTES)
    big = make_message("too big", body_lines=200)     # about 6K
    assert len(big) > 2048
    replies, final = transaction(d, ["x@big.example.test",
                                     "y@small.example.test"], content=big)
    assert all(r.startswith("250") for r in replies)
    # the strictest route of the transaction decides
    assert final == "552 5.3.4 Message size exceeds fixed limit"
    assert d.message_count() == 0
    # within every limit: queued
    replies, final = transaction(d, ["x@big.example.test",
                                     "y@small.example.test"],
                                 content=make_message("small"))
    queued_id(final)
    # the limit belonged to that transaction only
    replies, final = transaction(d, ["x@big.example.test"], content=big)
    queued_id(final)
    assert d.message_count() == 2


# ---------------------------------------------------------------------------
# No open relay, whatever the address tricks

RELAY_ROUTES = [
    {"name": "corp", "rcpt": r"@corp\.example$", "action": "relay",
     "upstream": "exchange"},
    # deliberately sloppy: unanchored, a relay to the recipient's MX
    {"name": "sloppy", "rcpt": r"partner\.example", "action": "relay",
     "upstream": "mx"},
    {"name": "local", "rcpt": r"@example\.test$", "action": "maildir",
     "path": "mail/${domain}/${local}/"},
]

TRICKS = [
    # (RCPT TO argument, expected reply prefix)
    ("user@evil.example", "550 5.1.1"),
    ("user%evil.example@corp.example", "550 5.7.1"),     # %-hack
    ("evil.example!user@corp.example", "550 5.7.1"),     # bang path
    ('"user@evil.example"@corp.example', "550 5.7.1"),   # quoted @
    ('"user%evil.example"@corp.example', "550 5.7.1"),
    ('"user"@corp.example', "550 5.7.1"),                # any quoted form
    ('"x@partner.example"@evil.example', "550 5.7.1"),   # fools the pattern
    ("@corp.example:user@evil.example", "550 5.1.1"),    # source route
    ("@corp.example,@a.example:user@evil.example", "550 5.1.1"),
    ("user@evil.example@corp.example", "501 5.1.3"),     # several @
    ("user@corp.example@evil.example", "501 5.1.3"),
    ("user@evil.example.", "501 5.1.3"),
    ("user@[192.0.2.1]", "550 5.1.1"),                   # address literal
    ("user@corp.example.evil.example", "550 5.1.1"),     # look-alike
    ("user@evilcorp.example", "550 5.1.1"),
    ("user@corp.example\\@evil.example", "501 5.1.3"),
    ("user@evil.example\x00@corp.example", "500 5.5.2"),   # NUL
]


@pytest.mark.parametrize("rcpt,expect", TRICKS)
def test_open_relay_trick(daemon_factory, rcpt, expect):
    d = routes_daemon(daemon_factory, RELAY_ROUTES,
                      [{"name": "exchange", "hosts": ["127.0.0.1:1"]}])
    with d.raw() as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        line = c.cmd("RCPT TO:<%s>" % rcpt)
        assert line.startswith(expect), line
        # nothing was accepted: no transaction can carry it
        assert c.cmd("DATA").startswith("503 5.5.1"), rcpt
    assert d.message_count() == 0


def test_relay_routes_still_relay(daemon_factory):
    """The legitimate forms do go through (the tests above can fail)."""
    d = routes_daemon(daemon_factory, RELAY_ROUTES,
                      [{"name": "exchange", "hosts": ["127.0.0.1:1"]}])
    replies, final = transaction(d, ["User@CORP.example", "bob@partner.example",
                                     "bob.smith@example.test"])
    assert all(r.startswith("250") for r in replies), replies
    rows = stored(d, queued_id(final))
    assert [(a, r, act) for a, r, act, _ in rows] == [
        ("User@corp.example", "corp", "relay"),
        ("bob@partner.example", "sloppy", "relay"),
        ("bob.smith@example.test", "local", "maildir")]
    assert rows[1][3] == {"upstream": "mx", "vars": {}}


# ---------------------------------------------------------------------------
# Configuration errors, with their line, from mxgated -n

def check_config(tmp_path, text):
    path = tmp_path / "bad.conf"
    path.write_text('listen = ( { address = "127.0.0.1"; port = 2525; } );\n'
                    + text)
    r = subprocess.run([mxgated_path(), "-n", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    return r, str(path)


@pytest.mark.parametrize("text,line,words", [
    ('routes = (\n { rcpt = "^(x"; action = "debug"; } );\n', 3,
     "'routes[0].rcpt' is not a valid regular expression: missing closing "
     "parenthesis"),
    ('routes = ( { rcpt = ".";\n  action = "maildir";\n'
     '  path = "/m/${ticket}/"; } );\n', 4,
     "'routes[0].path' uses ${ticket}, which no matcher of this route "
     "provides"),
    ('routes = ( { rcpt = "."; action = "relay";\n  upstream = "nope"; } );\n',
     3, "'routes[0].upstream' names no upstream"),
    ('routes = ( { rcpt = "."; action = "pipe";\n'
     '  command = [ "/bin/x", "${auth_user}" ]; } );\n', 3,
     "'routes[0].command[1]' uses ${auth_user}, which this route provides "
     "only with 'authenticated = true'"),
    ('routes = ( { rcpt = "."; action = "frobnicate"; } );\n', 2,
     "'routes[0].action' must be"),
    ('routes = ( { rcpt = "."; action = "reject";\n  code = 550;\n'
     '  text = "no"; } );\n', 4,
     "'routes[0].text' must start with an enhanced status code"),
    ('routes = ( { rcpt = "."; action = "debug";\n'
     '  client = [ "192.0.2.1/24" ]; } );\n', 3,
     "'routes[0].client[0]' has bits set after the prefix length"),
])
def test_config_errors(tmp_path, text, line, words):
    r, path = check_config(tmp_path, text)
    assert r.returncode == 1, r.stdout
    assert "%s:%d: %s" % (path, line, words) in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# mxgatectl route test

def ctl(config, *args):
    """mxgatectl in the directory of config (relative paths in routes are
    resolved against the current directory, as mxgated does)."""
    return subprocess.run([mxgatectl_path(), "-c", config] + list(args),
                          capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(config))


@pytest.fixture
def routes_conf(daemon_factory):
    """A configuration file with ALL_ACTIONS (the daemon is not needed by
    route test; it is started to prove the file is a working one)."""
    d = routes_daemon(daemon_factory, ALL_ACTIONS, UPSTREAMS)
    return d.config_path


def test_route_test_accept(routes_conf):
    r = ctl(routes_conf, "route", "test", "support+7@help.example.test",
            "--from", "alice@sender.example", "--ip", "2001:db8::5",
            "--helo", "h.example")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "route tickets (routes[0])" in out, out
    assert "action      pipe" in out, out
    for v in ("rcpt=support+7@help.example.test", "local=support+7",
              "domain=help.example.test", "sender=alice@sender.example",
              "sender_domain=sender.example", "client_ip=2001:db8::5",
              "helo=h.example", "queue_id=00000000000TEST0",
              "queue=support", "ticket=7"):
        assert v in out, (v, out)
    params = [l for l in out.splitlines() if l.startswith("  params")][0]
    assert json.loads(params.split(None, 1)[1])["command"] == [
        "/bin/true", "--queue", "support", "7", "--id=00000000000TEST0",
        "alice@sender.example"]
    assert out.rstrip().endswith("accepted by 1 route"), out


def test_route_test_reject(routes_conf):
    r = ctl(routes_conf, "route", "test", "old@x.example")
    assert r.returncode == 1
    assert "rejected: 551 5.1.6 <old@x.example> has moved (route=gone)" \
        in r.stdout, r.stdout
    r = ctl(routes_conf, "route", "test", "<nobody@x.example>")
    assert r.returncode == 1
    assert ("rejected: 550 5.1.1 <nobody@x.example>: Recipient address "
            "rejected (no route)") in r.stdout, r.stdout
    r = ctl(routes_conf, "route", "test", "a@b@c.example")
    assert r.returncode == 1
    assert "rejected: 501 5.1.3 Bad recipient address syntax" in r.stdout


def test_route_test_usage(routes_conf):
    r = ctl(routes_conf, "route", "test", "a@b.example", "--ip", "nowhere")
    assert r.returncode == 2
    assert "--ip nowhere is not an IPv4 or IPv6 address" in r.stderr
    r = ctl(routes_conf, "route", "test", "a@b.example", "--frobnicate")
    assert r.returncode == 2
    r = ctl(routes_conf, "route", "test", "--script")
    assert r.returncode == 2


SCRIPT_OK = """\
# tests of the routes of ALL_ACTIONS
support+42@help.example.test --from a@b.example => route=tickets action=pipe var.ticket=42 var.queue=support
<Bob@mail.example.test> => accept route=mailboxes param.path=%(dir)s/mail/mail.example.test/Bob/

dave@hook.example.test => action=webhook param.url=http://127.0.0.1:1/in?to=dave param.timeout=30
erin@corp.example.test --ip 192.0.2.9 --helo h.example --tls => route=corp param.upstream=exchange
"john smith"@debug.example.test => route=debug var.local="\\"john smith\\""
old@x.example => reject 551 5.1.6
nobody@x.example => reject 550
a@b@c.example => reject 501 5.1.3
"""

SCRIPT_BAD = """\
support+42@help.example.test => route=tickets
# the next two are wrong
bob@mail.example.test => route=tickets action=pipe
nobody@x.example => accept

old@x.example => reject 550
bob@mail.example.test --from => accept
bob@mail.example.test accept
bob@mail.example.test => frobnicate
"""


def test_route_test_script(routes_conf, tmp_path):
    d = os.path.dirname(routes_conf)
    ok = tmp_path / "ok.test"
    ok.write_text(SCRIPT_OK % {"dir": d})
    r = ctl(routes_conf, "route", "test", "--script", str(ok))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "8 tests, 0 failed", r.stdout

    bad = tmp_path / "bad.test"
    bad.write_text(SCRIPT_BAD)
    r = ctl(routes_conf, "route", "test", "--script", str(bad))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    p = str(bad)
    assert lines == [
        "%s:3: bob@mail.example.test: expected route=tickets action=pipe, "
        "got route=mailboxes action=maildir" % p,
        "%s:4: nobody@x.example: expected accept, got reject 550 5.1.1 "
        "<nobody@x.example>: Recipient address rejected" % p,
        "%s:6: old@x.example: expected reject 550, got reject 551 5.1.6 "
        "<old@x.example> has moved" % p,
        "%s:7: --from needs a value" % p,
        "%s:8: no \" => \" followed by the expected outcome" % p,
        "%s:9: cannot read the expected outcome at \"frobnicate\"" % p,
        "7 tests, 6 failed",
    ], r.stdout


# Routes for authenticated clients: a user pattern with a capture, any
# user, and only the unauthenticated.
AUTH_ROUTES = [
    {"name": "admins", "rcpt": "^",
     "authenticated": r"^(?<team>[a-z]+)-admin$",
     "action": "maildir", "path": "mail/admins/${team}/${auth_user}/"},
    {"name": "submission", "rcpt": "^", "authenticated": True,
     "action": "maildir", "path": "mail/sent/${auth_user}/"},
    {"name": "inbound", "rcpt": r"@example\.test$", "authenticated": False,
     "action": "debug"},
]

SCRIPT_AUTH = """\
# authenticated = true matches with --auth only, and ${auth_user} expands
bob@elsewhere.example --auth alice => route=submission var.auth_user=alice param.path=%(dir)s/mail/sent/alice/
bob@elsewhere.example => reject 550 5.1.1
# authenticated = false: only without --auth
carol@example.test => route=inbound action=debug
carol@example.test --auth alice => route=submission param.path=%(dir)s/mail/sent/alice/
# a user pattern, case-sensitive, with its capture
x@elsewhere.example --auth ops-admin => route=admins var.team=ops var.auth_user=ops-admin param.path=%(dir)s/mail/admins/ops/ops-admin/
x@elsewhere.example --auth Ops-admin => route=submission
# a user name cannot leave the Maildir root
x@elsewhere.example --auth ../alice => reject 553 5.1.3
"""


def test_route_test_auth(daemon_factory, tmp_path):
    conf = routes_daemon(daemon_factory, AUTH_ROUTES).config_path
    r = ctl(conf, "route", "test", "bob@elsewhere.example", "--auth", "alice")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "auth=alice" in out.splitlines()[2], out
    assert "route submission (routes[1])" in out, out
    assert "auth_user=alice" in out, out
    params = [l for l in out.splitlines() if l.startswith("  params")][0]
    assert json.loads(params.split(None, 1)[1])["path"] == os.path.join(
        os.path.dirname(conf), "mail/sent/alice/")
    r = ctl(conf, "route", "test", "bob@elsewhere.example")
    assert r.returncode == 1
    assert "auth=-" in r.stdout.splitlines()[2], r.stdout
    assert ("rejected: 550 5.1.1 <bob@elsewhere.example>: Recipient address "
            "rejected (no route)") in r.stdout, r.stdout
    # ${auth_user} belongs to routes with authenticated only
    r = ctl(conf, "route", "test", "carol@example.test")
    assert r.returncode == 0, r.stdout
    assert "route inbound" in r.stdout and "auth_user" not in r.stdout

    script = tmp_path / "auth.test"
    script.write_text(SCRIPT_AUTH % {"dir": os.path.dirname(conf)})
    r = ctl(conf, "route", "test", "--script", str(script))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "7 tests, 0 failed", r.stdout


def test_sample_routes_script():
    """etc/routes.test passes against etc/mxgate.conf, as shipped."""
    conf = os.path.join(SRC_TOP, "etc", "mxgate.conf")
    script = os.path.join(SRC_TOP, "etc", "routes.test")
    if not os.path.exists(script):
        pytest.skip("etc/routes.test not written yet")
    r = ctl(conf, "route", "test", "--script", script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(" 0 failed"), r.stdout
