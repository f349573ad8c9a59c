"""SMTP dialogue over a real socket: replies to every command, sequence
and syntax errors, limits, relay denial and the address tricks around it."""

import contextlib
import socket
import smtplib
import time

import pytest

from conftest import HOSTNAME


def ehlo(c, name="client.example"):
    c.send("EHLO %s\r\n" % name)
    code, texts, lines = c.reply()
    assert code == 250, lines
    return texts


@contextlib.contextmanager
def session(d, mail=None):
    """A raw client past the greeting and EHLO, and MAIL FROM:<mail>
    (accepted) when mail is given."""
    with d.raw() as c:
        c.line()
        ehlo(c)
        if mail is not None:
            line = c.cmd("MAIL FROM:<%s>" % mail)
            assert line.startswith("250 "), line
        yield c


def test_greeting(daemon):
    with daemon.raw() as c:
        line = c.line()
        assert line.startswith("220 %s ESMTP mxgate" % HOSTNAME), line


def test_ehlo_extensions(daemon):
    with daemon.raw() as c:
        c.line()
        texts = ehlo(c)
        assert texts[0].startswith(HOSTNAME), texts
        keywords = {t.split()[0].upper(): t.split()[1:] for t in texts[1:]}
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES",
                  "SMTPUTF8"):
            assert k in keywords, texts
        assert keywords["SIZE"] == ["1048576"], texts


def test_helo(daemon):
    with daemon.raw() as c:
        c.line()
        line = c.cmd("HELO client.example")
        assert line.startswith("250 " + HOSTNAME), line


def test_smtplib_ehlo(daemon):
    with smtplib.SMTP(daemon.host, daemon.port, timeout=10) as s:
        code, _ = s.ehlo("client.example")
        assert code == 250
        assert s.has_extn("pipelining") and s.has_extn("size")
        assert s.has_extn("enhancedstatuscodes")


@pytest.mark.parametrize("command,expect", [
    ("NOOP", "250 2.0.0"),
    ("NOOP with an argument", "250 2.0.0"),
    ("RSET", "250 2.0.0"),
    ("HELP", "214 "),
    ("VRFY bob@example.test", "252 "),
    ("VRFY bob", "252 "),
    ("FOO", "500 5.5.2"),
    ("FOO BAR BAZ", "500 5.5.2"),
])
def test_simple_commands(daemon, command, expect):
    with session(daemon) as c:
        line = c.cmd(command)
        assert line.startswith(expect), (command, line)
        # The session goes on after every one of them.
        assert c.cmd("NOOP").startswith("250 ")


def test_commands_are_case_insensitive(daemon):
    with daemon.raw() as c:
        c.line()
        assert c.cmd("ehlo client.example").startswith("250 ")
        assert c.cmd("mail from:<a@sender.example>").startswith("250 2.1.0")
        assert c.cmd("rcpt to:<bob@example.test>").startswith("250 2.1.5")
        assert c.cmd("rset").startswith("250 2.0.0")


def test_quit(daemon):
    with session(daemon) as c:
        line = c.cmd("QUIT")
        assert line.startswith("221 2.0.0"), line
        assert c.closed_by_peer(5.0)


@pytest.mark.parametrize("commands", [
    ["RCPT TO:<bob@example.test>"],                   # RCPT before MAIL
    ["DATA"],                                         # DATA before MAIL
    ["MAIL FROM:<a@sender.example>", "DATA"],         # DATA before RCPT
    ["MAIL FROM:<a@sender.example>",
     "MAIL FROM:<b@sender.example>"],                 # nested MAIL
])
def test_bad_sequence(daemon, commands):
    with session(daemon) as c:
        for cmd in commands[:-1]:
            assert c.cmd(cmd).startswith("250 "), cmd
        line = c.cmd(commands[-1])
        assert line.startswith("503 5.5.1"), (commands, line)
        assert c.cmd("NOOP").startswith("250 ")


def test_rset_ends_transaction(daemon):
    with session(daemon) as c:
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250 2.1.0")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250 2.1.5")
        assert c.cmd("RSET").startswith("250 2.0.0")
        assert c.cmd("DATA").startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250 2.1.0")
    assert daemon.message_count() == 0


@pytest.mark.parametrize("command,expect", [
    ("EHLO", "501 "),
    ("HELO", "501 "),
    ("MAIL FROM:<a@sender.example", "501 5."),
    ("MAIL FROM:", "501 5."),
    ("MAIL TO:<a@sender.example>", "501 5."),
    ("MAIL FROM:<a@@sender.example>", "501 5."),
    ("MAIL FROM:<a@sender..example>", "501 5."),
    ("MAIL FROM:<a@sender.example> SIZE=abc", "501 5."),
])
def test_syntax_errors(daemon, command, expect):
    with daemon.raw() as c:
        c.line()
        if not command.startswith(("EHLO", "HELO")):
            ehlo(c)
        line = c.cmd(command)
        assert line.startswith(expect), (command, line)
        assert c.cmd("NOOP").startswith("250 ")


def test_rcpt_syntax_error(daemon):
    with session(daemon, mail="a@sender.example") as c:
        for bad in ("RCPT TO:", "RCPT TO:<>", "RCPT TO:<bob@example.test",
                    "RCPT FROM:<bob@example.test>"):
            line = c.cmd(bad)
            assert line.startswith("501 5."), (bad, line)


def test_unknown_mail_parameter(daemon):
    with session(daemon) as c:
        line = c.cmd("MAIL FROM:<a@sender.example> FOO=BAR")
        assert line.startswith("555 5.5.4"), line
        # the transaction did not start
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("503 5.5.1")


def test_known_mail_parameters(daemon):
    with session(daemon) as c:
        line = c.cmd("MAIL FROM:<a@sender.example> SIZE=1000 BODY=8BITMIME")
        assert line.startswith("250 2.1.0"), line
        assert c.cmd("RSET").startswith("250 ")
        line = c.cmd("MAIL FROM:<a@sender.example> SMTPUTF8")
        assert line.startswith("250 2.1.0"), line


def test_size_parameter_over_limit(daemon):
    with session(daemon) as c:
        line = c.cmd("MAIL FROM:<a@sender.example> SIZE=2000000")
        assert line.startswith("552 5.3.4"), line
        assert c.cmd("MAIL FROM:<a@sender.example> SIZE=2000").startswith("250 ")


def test_null_sender_and_postmaster(daemon):
    with session(daemon) as c:
        assert c.cmd("MAIL FROM:<>").startswith("250 2.1.0")
        line = c.cmd("RCPT TO:<postmaster>")
        assert line.startswith("250 2.1.5"), line
        line = c.cmd("RCPT TO:<Postmaster>")
        assert line.startswith("250 2.1.5"), line


@pytest.mark.parametrize("rcpt,expect", [
    ("<bob@example.test>", "250 2.1.5"),
    ("<bob@EXAMPLE.TEST>", "250 2.1.5"),
    ("<bob@localhost>", "250 2.1.5"),
    ("<bob@evil.example>", "550 5.7.1"),
    ("<bob@example.test.evil.example>", "550 5.7.1"),
    ("<bob@evilexample.test>", "550 5.7.1"),
    # the source route is ignored: the real domain is evil.example
    ("<@example.test:user@evil.example>", "550 5.7.1"),
    ("<@a.example,@example.test:user@evil.example>", "550 5.7.1"),
    # and the other way round: relayed via evil, delivered to us
    ("<@evil.example:user@example.test>", "250 2.1.5"),
    ("<bob@[127.0.0.1]>", "550 5.7.1"),
])
def test_relay_denied(daemon, rcpt, expect):
    with session(daemon, mail="a@sender.example") as c:
        line = c.cmd("RCPT TO:%s" % rcpt)
        assert line.startswith(expect), (rcpt, line)


TRICKY_LOCAL_PARTS = ["<user%other.example@example.test>",
                      "<\"bob smith\"@example.test>",
                      "<\"user@other.example\"@example.test>",
                      "<other.example!user@example.test>"]


@pytest.mark.parametrize("rcpt", TRICKY_LOCAL_PARTS)
def test_tricky_local_part_delivered_locally(daemon_factory, rcpt):
    """For a domain we deliver ourselves (accept_domains), '%', '!', '@'
    and quotes are only characters of a local part: accepted."""
    d = daemon_factory({"routes": None, "upstreams": None, "delivery": None,
                        "accept_domains": ["example.test"]})
    with session(d, mail="a@sender.example") as c:
        line = c.cmd("RCPT TO:%s" % rcpt)
        assert line.startswith("250 2.1.5"), (rcpt, line)


@pytest.mark.parametrize("rcpt", TRICKY_LOCAL_PARTS)
def test_tricky_local_part_not_relayed(daemon_factory, rcpt):
    """Relayed to an upstream, the same forms could route mail onwards
    (the %-hack, bang paths): refused unless authenticated."""
    d = daemon_factory({
        "accept_domains": None,
        "upstreams": [{"name": "parked", "hosts": ["127.0.0.1:9"]}],
        "routes": [{"name": "out", "rcpt": r"@example\.test$",
                    "action": "relay", "upstream": "parked"}],
        "delivery": {"retry_schedule": [3600]}})
    with session(d, mail="a@sender.example") as c:
        assert c.cmd("RCPT TO:<plain@example.test>").startswith("250 2.1.5")
        line = c.cmd("RCPT TO:%s" % rcpt)
        assert line.startswith("550 5.7.1"), (rcpt, line)


def test_relay_denied_then_data_refused(daemon):
    with session(daemon, mail="a@sender.example") as c:
        assert c.cmd("RCPT TO:<bob@evil.example>").startswith("550 5.7.1")
        assert c.cmd("DATA").startswith("503 5.5.1")
    assert daemon.message_count() == 0


def test_too_many_recipients(daemon_factory):
    d = daemon_factory({"limits": {"recipients": 3}})
    with session(d, mail="a@sender.example") as c:
        for i in range(3):
            assert c.cmd("RCPT TO:<u%d@example.test>" % i).startswith("250 2.1.5")
        line = c.cmd("RCPT TO:<u9@example.test>")
        assert line.startswith("452 4.5.3"), line
        # The transaction goes on with the three accepted.
        assert c.cmd("DATA").startswith("354 ")
        c.send("Subject: three\r\n\r\nhello\r\n.\r\n")
        line = c.line()
        assert line.startswith("250 2.0.0 Ok: queued as "), line
        qid = line.split()[-1]
    rows = d.db("SELECT address FROM recipients WHERE message_id = ? "
                "ORDER BY address", (qid,))
    assert [r[0] for r in rows] == ["u0@example.test", "u1@example.test",
                                    "u2@example.test"]


def test_line_too_long(daemon):
    with session(daemon) as c:
        line = c.cmd("NOOP " + "x" * 600)
        assert line.startswith("500 5.5.2"), line
        # the rest of the long line was discarded, not taken as a command
        assert c.cmd("NOOP").startswith("250 ")
        # a very long line, sent in pieces
        c.send("MAIL FROM:<" + "y" * 100000)
        c.send("@sender.example>\r\n")
        line = c.line()
        assert line.startswith("500 5.5.2"), line
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250 2.1.0")


def test_line_at_the_limit(daemon):
    with session(daemon) as c:
        # 512 bytes with CRLF is allowed, 513 is not
        line = c.cmd("NOOP " + "x" * (512 - 2 - 5))
        assert line.startswith("250 "), line
        line = c.cmd("NOOP " + "x" * (512 - 2 - 5 + 1))
        assert line.startswith("500 5.5.2"), line


def test_bare_lf_in_command(daemon):
    # RFC 5321 2.3.8: a bare LF is not a line end.  The text after it is
    # part of the same (refused) line, never a second command.
    with session(daemon) as c:
        assert c.cmd("MAIL FROM:<a@example.org>").startswith("250 ")
        c.send("NOOP\nRCPT TO:<postmaster@example.com>\r\n")
        line = c.line()
        assert line == "500 5.5.2 Bare LF received, use CRLF", line
        # Nothing else was answered: the next reply is the next command's.
        line = c.cmd("NOOP")
        assert line.startswith("250 "), line
        # The smuggled RCPT never ran: DATA has no recipient.
        line = c.cmd("DATA")
        assert line.startswith("503 "), line


def test_too_many_errors(daemon):
    # errors = 10 in the test configuration: the tenth error reply is
    # followed by (or replaced with) 421 4.7.0 and the connection closes.
    with session(daemon) as c:
        last = None
        for i in range(10):
            last = c.cmd("BOGUS%d" % i)
            if last.startswith("421"):
                assert i == 9, "421 after only %d errors: %s" % (i + 1, last)
                break
            assert last.startswith("500 5.5.2"), last
        if not last.startswith("421"):
            try:
                last = c.line(timeout=2)
            except TimeoutError:
                last = c.cmd("BOGUS10")
        assert last.startswith("421 4.7.0"), last
        assert c.closed_by_peer(5.0)


def test_command_timeout(daemon_factory):
    d = daemon_factory({"timeouts": {"command": 2}})
    with d.raw(timeout=15) as c:
        c.line()
        ehlo(c)
        line = c.line(timeout=10)   # idle: the server speaks first
        assert line.startswith("421 4.4.2"), line
        assert c.closed_by_peer(5.0)


def test_connections_per_ip_limit(daemon_factory):
    d = daemon_factory({"limits": {"connections_per_ip": 3}})
    held = []
    try:
        for _ in range(3):
            c = d.raw()
            assert c.line().startswith("220 ")
            held.append(c)
        extra = d.raw()
        held.append(extra)
        try:
            line = extra.line(timeout=5)
        except (EOFError, ConnectionResetError):
            line = ""
        assert not line.startswith("220"), line
        # once one is closed, a new client is served again
        held[0].cmd("QUIT")
        held[0].close()
        ok = False
        for _ in range(50):
            c = d.raw()
            try:
                first = c.line(timeout=5)
            except (EOFError, ConnectionResetError):
                first = ""
            c.close()
            if first.startswith("220"):
                ok = True
                break
            time.sleep(0.1)
        assert ok
    finally:
        for c in held:
            c.close()


def test_client_disconnect_midway(daemon):
    """Clients that vanish at any point must not disturb the daemon."""
    for upto in ("banner", "ehlo", "mail", "data", "content"):
        s = socket.create_connection((daemon.host, daemon.port), timeout=5)
        steps = {"ehlo": b"EHLO x\r\n",
                 "mail": b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n",
                 "data": b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                         b"RCPT TO:<bob@example.test>\r\nDATA\r\n",
                 "content": b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
                            b"Subject: half\r\n\r\nhalf a mess"}
        if upto in steps:
            s.sendall(steps[upto])
        s.close()
    with daemon.raw() as c:
        assert c.line().startswith("220 ")
        ehlo(c)
    assert daemon.message_count() == 0
    assert daemon.running()


def test_data_timeout(daemon_factory):
    d = daemon_factory({"timeouts": {"data": 2}})
    with d.raw(timeout=15) as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: stalled\r\n\r\nhalf a li")
        line = c.line(timeout=10)
        assert line.startswith("421 4.4.2"), line
        assert c.closed_by_peer(5.0)
    assert d.message_count() == 0


def drip(c, data, every, until_closed=8.0):
    """Send data a piece at a time; the seconds until the server closed
    (or until_closed if it never did)."""
    t0 = time.monotonic()
    for piece in data:
        try:
            c.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
        time.sleep(every)
        if time.monotonic() - t0 >= until_closed:
            break
    return time.monotonic() - t0


def test_command_drip_does_not_extend_deadline(daemon_factory):
    # One byte every 0.3 s keeps arriving, but the line never completes:
    # timeouts.command runs from the last complete command, not per read.
    d = daemon_factory({"timeouts": {"command": 2}})
    with d.raw(timeout=15) as c:
        c.line()
        ehlo(c)
        start = time.monotonic()
        drip(c, ["X"] * 60, 0.3, until_closed=12.0)
        reply = c.line(timeout=5)
        assert reply.startswith("421 4.4.2"), reply
        # Closed at the deadline (2 s), not after the drip ran out (a
        # deadline per read would close at 12 + 2 s).
        assert "timeout" in d.log()
    elapsed = time.monotonic() - start
    assert elapsed < 11.0, elapsed


def test_data_drip_below_min_rate_times_out(daemon_factory):
    # 10 bytes per 0.3 s (33 B/s) against a minimum of 1000 B/s: the
    # message's deadline (2 s + 1 s per 1000 bytes) runs out.
    d = daemon_factory({"timeouts": {"data": 2},
                        "limits": {"min_data_rate": 1000}})
    with d.raw(timeout=15) as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: drip\r\n\r\n")
        drip(c, ["0123456789"] * 40, 0.3, until_closed=6.0)
        line = c.line(timeout=5)
        assert line.startswith("421 4.4.2"), line
    assert d.message_count() == 0


def test_data_at_min_rate_is_not_cut(daemon_factory):
    # 1000 bytes per 0.2 s (5000 B/s) for 4 s, twice timeouts.data: the
    # bytes received keep extending the deadline, and the message lands.
    d = daemon_factory({"timeouts": {"data": 2},
                        "limits": {"min_data_rate": 1000,
                                   "message_size": "1M"}})
    with d.raw(timeout=15) as c:
        c.line()
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: slow link\r\n\r\n")
        line = ("x" * 98 + "\r\n") * 10
        drip(c, [line] * 20, 0.2, until_closed=10.0)
        c.send(".\r\n")
        reply = c.line(timeout=10)
        assert reply.startswith("250 2.0.0"), reply
    assert d.message_count() == 1


def test_pregreet_refused(daemon_factory):
    # greet_pause: a client that talks before the 220 is refused and
    # disconnected; one that waits is served.  (The multi-line trap and
    # the pass cache: test_conn_limits.py.)
    # (The daemon's start waited for its greeting from this address:
    # nothing remembered, so that it waits again.)
    d = daemon_factory({"greet_pause": 2, "trusted_networks": [],
                        "greet_multiline": False, "greet_pass_time": 0})
    s = socket.create_connection((d.host, d.port), timeout=10)
    try:
        s.sendall(b"EHLO eager.example\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data == b"554 5.5.1 Error: talked before the greeting\r\n", \
            data
        assert s.recv(4096) == b""      # closed
    finally:
        s.close()
    assert "pregreet" in d.log()
    t0 = time.monotonic()
    with d.raw(timeout=10) as c:
        assert c.line().startswith("220 ")
        waited = time.monotonic() - t0
        assert waited >= 1.5, waited
        ehlo(c)
        assert c.cmd("QUIT").startswith("221")
    assert d.message_count() == 0


def test_pregreet_not_for_trusted(daemon_factory):
    d = daemon_factory({"greet_pause": 5,
                        "trusted_networks": ["127.0.0.0/8"]})
    t0 = time.monotonic()
    with d.raw(timeout=10) as c:
        assert c.line().startswith("220 ")
    assert time.monotonic() - t0 < 4.0     # the pause is 5 s


def test_ehlo_resets_transaction(daemon):
    """RFC 5321 4.1.4: EHLO in a transaction ends it, like RSET."""
    with session(daemon) as c:
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        ehlo(c, "again.example")
        assert c.cmd("DATA").startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250 2.1.0")


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_two_listeners_ipv4_and_ipv6(daemon_factory):
    from conftest import free_port
    port4 = free_port()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        port6 = s.getsockname()[1]
    d = daemon_factory({"listen": [
        {"address": "127.0.0.1", "port": port4, "role": "mx"},
        {"address": "::1", "port": port6, "role": "mx"}]})
    with socket.create_connection(("::1", port6), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(512).startswith(b"220 " + HOSTNAME.encode())
        s.sendall(b"EHLO v6.example\r\nMAIL FROM:<a@sender.example>\r\n"
                  b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"\r\n354 ") + data.startswith(b"354 ") == 0 \
                and time.monotonic() < deadline:
            data += s.recv(4096)
        s.sendall(b"Subject: over v6\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        deadline = time.monotonic() + 5
        while b"221 " not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert b"250 2.0.0 Ok: queued as" in data, data
    assert d.db("SELECT client_ip FROM messages") == [("::1",)]
