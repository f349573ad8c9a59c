"""DSN, the SMTP extension of RFC 3461, end to end.

The client side: EHLO offers DSN; MAIL takes RET and ENVID, RCPT takes
NOTIFY and ORCPT, each checked strictly (501 5.5.4).  The queue stores
them, xtext decoded (schema version 3, read here with sqlite3).  The
notifications mxgate writes honour them: failures and delays only when
NOTIFY allows, successes when NOTIFY has SUCCESS ("delivered" by a local
handler, "relayed" to an upstream without DSN, nothing when the upstream
took the request), RET=FULL returns the whole message in a failure DSN,
ENVID and ORCPT come back as Original-Envelope-Id and Original-Recipient.
An upstream that offers DSN gets the parameters passed on (ORCPT added
when the client gave none); one without DSN gets none of them.  The
same for an LMTP server (the lmtp handler), which then sends the
success notices itself.

Upstreams are Debian's aiosmtpd (python3-aiosmtpd): the stock server,
which offers no DSN and refuses parameters it does not know (555), and a
subclass that offers DSN and records the MAIL and RCPT lines as they
arrived.  Every DSN is parsed with Python's email package.
"""

import email
import email.policy
import json
import re
import smtplib
import time

from conftest import free_port, wait_for
from test_delivery import (Capture, CaptureHandler, FakeSMTP, SENDER,
                           closed_port,
                           message, needs_aiosmtpd, relay_settings, send,
                           states, strip_trace, upstream, wait_state)

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.lmtp import LMTP
    from aiosmtpd.smtp import SMTP
except ImportError:  # pragma: no cover - the CI image has it
    Controller = SMTP = LMTP = None

DSN_PARAMS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")


# ---------------------------------------------------------------------------
# An upstream that offers DSN

class DSNHandler(CaptureHandler):
    """Offers DSN in its EHLO reply; records the raw MAIL and RCPT
    arguments (aiosmtpd would upper-case them)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        return responses[:-1] + ["250-DSN", responses[-1]]


if SMTP is not None:
    class DSNServer(SMTP):
        """aiosmtpd that takes DSN's parameters: it keeps the raw line
        and hands aiosmtpd the rest, which it knows."""

        def _strip(self, verb, arg):
            self.event_handler.lines.append("%s %s" % (verb, arg))
            return " ".join(w for w in arg.split(" ")
                            if not w.upper().startswith(DSN_PARAMS))

        async def smtp_MAIL(self, arg):
            await super().smtp_MAIL(self._strip("MAIL", arg))

        async def smtp_RCPT(self, arg):
            # RFC 3461 4: RCPT lines may be 500 characters longer.
            self.command_size_limits["RCPT"] = 1024
            await super().smtp_RCPT(self._strip("RCPT", arg))

    class DSNController(Controller):
        def factory(self):
            return DSNServer(self.handler, **self.SMTP_kwargs)


    class DSNLMTPServer(LMTP):
        """aiosmtpd's LMTP server taking DSN's parameters, as
        DSNServer."""
        _strip = DSNServer._strip

        async def smtp_MAIL(self, arg):
            await super().smtp_MAIL(self._strip("MAIL", arg))

        async def smtp_RCPT(self, arg):
            self.command_size_limits["RCPT"] = 1024
            await super().smtp_RCPT(self._strip("RCPT", arg))

    class LMTPController(Controller):
        def factory(self):
            return (DSNLMTPServer if self.handler.offer_dsn else LMTP)(
                self.handler, **self.SMTP_kwargs)


class LMTPHandler(DSNHandler):
    """An LMTP server's handler: one reply per recipient after the dot
    (RFC 2033 4.2; aiosmtpd sends what DATA returns); offers DSN if
    offer_dsn."""

    def __init__(self, offer_dsn):
        super().__init__()
        self.offer_dsn = offer_dsn

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        if self.offer_dsn:
            return await super().handle_EHLO(server, session, envelope,
                                              hostname, responses)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        return "\r\n".join("250 2.0.0 <%s> delivered" % r
                            for r in envelope.rcpt_tos)


class LMTPCapture(Capture):
    """An LMTP server on 127.0.0.1, with DSN or without."""

    def __init__(self, offer_dsn):
        self.handler = LMTPHandler(offer_dsn)
        self.port = free_port()
        self.controller = LMTPController(
            self.handler, hostname="127.0.0.1", port=self.port,
            decode_data=False)
        self.controller.start()

    def lines(self, verb):
        return [l for l in self.handler.lines if l.startswith(verb + " ")]


class DSNCapture(Capture):
    """Capture, with the server that offers DSN."""

    def __init__(self):
        self.handler = DSNHandler()
        self.port = free_port()
        self.controller = DSNController(
            self.handler, hostname="127.0.0.1", port=self.port,
            decode_data=False, enable_SMTPUTF8=True,
            server_hostname="dsn-capture.test")
        self.controller.start()

    def lines(self, verb):
        return [l for l in self.handler.lines if l.startswith(verb + " ")]


# ---------------------------------------------------------------------------
# Helpers

def dsn_send(d, rcpts, data, mail_options=(), sender=SENDER):
    """rcpts: [(address, [rcpt options])]; returns the queue id."""
    with smtplib.SMTP(d.host, d.port, timeout=20) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        code, resp = s.mail(sender, list(mail_options))
        assert code == 250, resp
        for addr, opts in rcpts:
            code, resp = s.rcpt(addr, list(opts))
            assert code == 250, (addr, resp)
        code, resp = s.data(data)
        assert code == 250, resp
        return re.search(rb"queued as ([0-9A-Z]{16})", resp).group(1).decode()


def parse_report(data, last_type="text/rfc822-headers"):
    """A DSN: the message, its parts, the per-message fields and one
    block of fields per recipient."""
    msg = email.message_from_bytes(strip_trace(data),
                                   policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", last_type]
    blocks = parts[1].get_payload()
    return msg, parts, blocks[0], blocks[1:]


def dsns(cap):
    """The messages from <> a capture received."""
    return [m for m in cap.messages if m["mail_from"] in ("", "<>")]


def relay_and_dsn(next_port, dsn_port, delivery=None, routes=None):
    delivery = dict(delivery or {})
    delivery.setdefault("bounce_upstream", "dsn")
    return relay_settings(
        [upstream("next", ["127.0.0.1:%d" % next_port]),
         upstream("dsn", ["127.0.0.1:%d" % dsn_port])],
        delivery=delivery, routes=routes)


# ---------------------------------------------------------------------------
# The SMTP side

def test_ehlo_offers_dsn_and_syntax_is_strict(daemon_factory):
    d = daemon_factory({"limits": {"errors": 100}})
    with smtplib.SMTP(d.host, d.port, timeout=20) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        for params, want in [
                (["RET=ALL"], b"5.5.4 Bad RET parameter syntax"),
                (["RET=FULL", "RET=HDRS"], b"5.5.4 Duplicate RET parameter"),
                (["ENVID=a+2b"], b"5.5.4 Bad ENVID parameter syntax"),
                (["ENVID=a+0D+0AX:1"], b"5.5.4 Bad ENVID parameter syntax"),
                (["ENVID=" + "e" * 101], b"5.5.4 Bad ENVID parameter syntax"),
                (["ENVID=a", "ENVID=a"], b"5.5.4 Duplicate ENVID parameter"),
        ]:
            code, resp = s.mail(SENDER, params)
            assert (code, resp) == (501, want), params
        code, resp = s.mail(SENDER, ["RET=hdrs", "ENVID=" + "e" * 100])
        assert code == 250, resp
        for params, want in [
                (["NOTIFY=NEVER,SUCCESS"], b"5.5.4 Bad NOTIFY parameter syntax"),
                (["NOTIFY=DELAY,DELAY"], b"5.5.4 Bad NOTIFY parameter syntax"),
                (["NOTIFY=SOMETIMES"], b"5.5.4 Bad NOTIFY parameter syntax"),
                (["NOTIFY=DELAY", "NOTIFY=DELAY"],
                 b"5.5.4 Duplicate NOTIFY parameter"),
                (["ORCPT=bob@example.test"], b"5.5.4 Bad ORCPT parameter syntax"),
                (["ORCPT=rfc822;"], b"5.5.4 Bad ORCPT parameter syntax"),
                (["ORCPT=rfc822;b+7fb"], b"5.5.4 Bad ORCPT parameter syntax"),
                (["ORCPT=rfc822;" + "x" * 494], b"5.5.4 Bad ORCPT parameter syntax"),
                (["ORCPT=rfc822;a", "ORCPT=rfc822;a"],
                 b"5.5.4 Duplicate ORCPT parameter"),
        ]:
            code, resp = s.rcpt("bob@example.test", params)
            assert (code, resp) == (501, want), params
        # The longest ORCPT (500 characters) on a line longer than
        # limits.line_length (512): RFC 3461 4 gives RCPT 500 more.
        code, resp = s.rcpt("bob@example.test", [
            "NOTIFY=SUCCESS,FAILURE,DELAY", "ORCPT=rfc822;" + "x" * 493])
        assert code == 250, resp
        s.rset()
    with smtplib.SMTP(d.host, d.port, timeout=20) as s:
        s.helo("client.test")
        # smtplib drops the options after HELO: the command as it is.
        code, resp = s.docmd("MAIL FROM:<%s> RET=FULL" % SENDER)
        assert (code, resp) == (555, b"5.5.4 Parameters not allowed after HELO")


def test_dsn_values_stored_decoded(daemon_factory):
    d = daemon_factory({"delivery": {"paused": True}})
    qid = dsn_send(d, [
        ("bob@example.test", ["NOTIFY=success,DELAY",
                              "ORCPT=rfc822;Bob+2Bx@Example.test"]),
        ("carol@example.test", ["NOTIFY=NEVER"]),
        ("dave@example.test", [])],
        message("stored"), ["RET=HDRS", "ENVID=QQ+2B314+3Dx+20y"])
    assert d.db("SELECT dsn_ret, dsn_envid FROM messages WHERE id = ?",
                (qid,)) == [("HDRS", "QQ+314=x y")]
    assert d.db("SELECT address, dsn_notify, dsn_orcpt FROM recipients"
                " WHERE message_id = ? ORDER BY id", (qid,)) == [
        ("bob@example.test", "SUCCESS,DELAY", "rfc822;Bob+x@Example.test"),
        ("carol@example.test", "NEVER", None),
        ("dave@example.test", None, None)]
    # Version 4 brought the DSN columns; later ones keep them.
    assert d.db("SELECT version FROM schema_version")[0][0] >= 4
    # mxgatectl shows them too.
    r = d.ctl("queue", "show", qid)
    assert r.returncode == 0, r.stderr
    assert "dsn:         RET=HDRS ENVID=QQ+314=x y\n" in r.stdout
    assert "    dsn: NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+x@Example.test\n" \
        in r.stdout
    assert "    dsn: NOTIFY=NEVER\n" in r.stdout
    r = d.ctl("queue", "show", "--json", qid)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["dsn_ret"], shown["dsn_envid"]) == ("HDRS", "QQ+314=x y")
    assert [(x["dsn_notify"], x["dsn_orcpt"]) for x in shown["recipients"]] \
        == [("SUCCESS,DELAY", "rfc822;Bob+x@Example.test"),
            ("NEVER", None), (None, None)]
    # Without any DSN parameter: nothing stored.
    qid = dsn_send(d, [("erin@example.test", [])], message("plain"))
    assert d.db("SELECT dsn_ret, dsn_envid FROM messages WHERE id = ?",
                (qid,)) == [(None, None)]


# ---------------------------------------------------------------------------
# Relay: passed on, or dropped

@needs_aiosmtpd
def test_relay_passes_dsn_to_an_upstream_that_offers_it(daemon_factory):
    up = DSNCapture()
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(up.port, dsn_cap.port))
        qid = dsn_send(d, [
            ("bob@example.test", ["NOTIFY=SUCCESS,FAILURE",
                                  "ORCPT=rfc822;orig+2Bx@example.test"]),
            ("carol@example.test", [])],
            message("passed on"), ["RET=FULL", "ENVID=abc+2Bdef+3D"])
        wait_state(d, qid, "delivered")
        assert up.handler.count() == 1
        mail = up.lines("MAIL")
        assert len(mail) == 1
        assert mail[0].startswith("MAIL FROM:<%s>" % SENDER)
        # Encoded again as xtext: "+" and "=" are hexchars.
        assert " RET=FULL" in mail[0] and " ENVID=abc+2Bdef+3D" in mail[0]
        rcpt = sorted(up.lines("RCPT"))
        assert rcpt == [
            "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE"
            " ORCPT=rfc822;orig+2Bx@example.test",
            # No NOTIFY from the client: none passed; ORCPT added, as
            # Postfix does.
            "RCPT TO:<carol@example.test> ORCPT=rfc822;carol@example.test"]
        # The upstream took the request: its success DSN is its job.
        time.sleep(1.5)
        assert dsns(dsn_cap) == []
        assert all("dsn=" not in r[0] for r in d.db(
            "SELECT detail FROM events WHERE message_id = ? AND kind ="
            " 'delivered'", (qid,)))
    finally:
        up.stop()
        dsn_cap.stop()


@needs_aiosmtpd
def test_lmtp_passes_dsn_to_a_server_that_offers_it(daemon_factory):
    """The lmtp handler gives an LMTP server that offers DSN the
    parameters as the relay client does (ORCPT added where the client
    gave none); that server is then the one to report success, so no
    success DSN comes from mxgate for its recipients.  An LMTP server
    without DSN gets none of them (aiosmtpd would answer 555) and its
    recipients' success is reported by mxgate ("delivered")."""
    with_dsn, without = LMTPCapture(True), LMTPCapture(False)
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(closed_port(), dsn_cap.port, routes=[
            {"name": "lmtp_dsn", "rcpt": r"@dsn\.test$", "action": "lmtp",
             "address": "inet:127.0.0.1:%d" % with_dsn.port},
            {"name": "lmtp_plain", "rcpt": r"@plain\.test$",
             "action": "lmtp",
             "address": "inet:127.0.0.1:%d" % without.port},
            {"name": "other", "rcpt": ".*", "action": "reject",
             "code": 550, "text": "5.7.1 no"}]))
        qid = dsn_send(d, [
            ("ann@dsn.test", ["NOTIFY=SUCCESS,FAILURE",
                              "ORCPT=rfc822;orig+2Bx@example.test"]),
            ("bob@dsn.test", []),
            ("cy@plain.test", ["NOTIFY=SUCCESS"])],
            message("lmtp dsn"), ["RET=HDRS", "ENVID=lm+2Btp+3D"])
        wait_state(d, qid, "delivered")
        mail = with_dsn.lines("MAIL")
        assert len(mail) == 1, with_dsn.handler.lines
        assert mail[0] == "MAIL FROM:<%s> RET=HDRS ENVID=lm+2Btp+3D" % SENDER
        assert with_dsn.lines("RCPT") == [
            "RCPT TO:<ann@dsn.test> NOTIFY=SUCCESS,FAILURE"
            " ORCPT=rfc822;orig+2Bx@example.test",
            "RCPT TO:<bob@dsn.test> ORCPT=rfc822;bob@dsn.test"]
        assert with_dsn.handler.count() == 1
        assert without.handler.count() == 1
        assert without.handler.lines == []
        # The success notices were queued with the outcomes, in the same
        # transaction: one, for cy only.
        notices = d.db("SELECT id FROM messages WHERE sender = '' AND"
                       " protocol = 'DSN'")
        assert len(notices) == 1, notices
        assert wait_for(lambda: len(dsns(dsn_cap)) == 1, 10), d.log()[-3000:]
        _, _, per_msg, per_rcpt = parse_report(dsns(dsn_cap)[0]["data"])
        assert per_msg["Original-Envelope-Id"] == "lm+tp="
        assert [(r["Final-Recipient"], r["Action"]) for r in per_rcpt] == [
            ("rfc822; cy@plain.test", "delivered")]
    finally:
        with_dsn.stop()
        without.stop()
        dsn_cap.stop()


@needs_aiosmtpd
def test_relay_to_upstream_without_dsn_gives_relayed_dsn(daemon_factory):
    # The stock aiosmtpd offers no DSN and answers 555 to parameters it
    # does not know: delivery proves none was sent.
    up = Capture()
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(up.port, dsn_cap.port))
        qid = dsn_send(d, [
            ("bob@example.test", ["NOTIFY=SUCCESS",
                                  "ORCPT=rfc822;orig+2Bx@example.test"]),
            ("carol@example.test", ["NOTIFY=FAILURE"])],
            message("relayed", body="the body\r\n"),
            ["RET=FULL", "ENVID=env+2B1"])
        wait_state(d, qid, "delivered")
        assert up.handler.count() == 1
        assert not [o for o in up.messages[0]["options"]
                    if o.startswith(DSN_PARAMS)]
        assert wait_for(lambda: len(dsns(dsn_cap)) == 1, 10), d.log()[-3000:]
        dsn = dsns(dsn_cap)[0]
        assert dsn["rcpts"] == [SENDER]
        msg, parts, per_msg, per_rcpt = parse_report(dsn["data"])
        assert msg["Subject"] == "Successful Mail Delivery Report"
        assert msg["To"] == "<%s>" % SENDER
        assert per_msg["Reporting-MTA"] == "dns; mx.test.example"
        assert per_msg["Original-Envelope-Id"] == "env+1"
        assert per_msg["Arrival-Date"]
        # Only bob asked for success.
        assert len(per_rcpt) == 1
        r = per_rcpt[0]
        assert r["Original-Recipient"] == "rfc822;orig+x@example.test"
        assert r["Final-Recipient"] == "rfc822; bob@example.test"
        assert r["Action"] == "relayed"
        assert r["Status"] == "2.0.0"
        assert r["Remote-MTA"].startswith("dns; ")
        assert r["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: captured"
        assert r["Last-Attempt-Date"]
        assert r["Will-Retry-Until"] is None
        # RET=FULL is for failures: a success returns the headers only.
        headers = parts[2].get_payload()
        assert "Subject: relayed" in headers and "the body" not in headers
        assert "<bob@example.test>: relayed;" in parts[0].get_payload()
        # The DSN itself asks for no DSN, and the history names it.
        dsn_id = re.search(r"dsn=([0-9A-Z]{16})", d.db(
            "SELECT detail FROM events WHERE message_id = ? AND kind ="
            " 'delivered' AND recipient_id = (SELECT id FROM recipients"
            " WHERE message_id = ? AND address = 'bob@example.test')",
            (qid, qid))[0][0]).group(1)
        assert d.db("SELECT sender, protocol FROM messages WHERE id = ?",
                    (dsn_id,)) == [("", "DSN")]
        assert d.db("SELECT dsn_notify FROM recipients WHERE message_id = ?",
                    (dsn_id,)) == [("NEVER",)]
    finally:
        up.stop()
        dsn_cap.stop()


@needs_aiosmtpd
def test_local_handler_gives_delivered_dsn(daemon_factory):
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(closed_port(), dsn_cap.port, routes=[
            {"name": "void", "rcpt": r"@void\.test$", "action": "discard"},
            {"name": "other", "rcpt": ".*", "action": "reject",
             "code": 550, "text": "5.7.1 no"}]))
        qid = dsn_send(d, [("bob@void.test", ["NOTIFY=SUCCESS"]),
                           ("carol@void.test", [])],
                       message("local"), ["ENVID=local1"])
        wait_state(d, qid, "delivered")
        assert wait_for(lambda: len(dsns(dsn_cap)) == 1, 10), d.log()[-3000:]
        _, parts, per_msg, per_rcpt = parse_report(dsns(dsn_cap)[0]["data"])
        assert per_msg["Original-Envelope-Id"] == "local1"
        assert [r["Final-Recipient"] for r in per_rcpt] == [
            "rfc822; bob@void.test"]
        r = per_rcpt[0]
        assert r["Action"] == "delivered"
        assert r["Status"] == "2.0.0"
        assert r["Original-Recipient"] is None
        assert r["Remote-MTA"] is None
        assert r["Diagnostic-Code"].startswith("X-mxgate; 250 ")
        time.sleep(1)
        assert len(dsns(dsn_cap)) == 1
    finally:
        dsn_cap.stop()


# ---------------------------------------------------------------------------
# Failures and delays, by NOTIFY

@needs_aiosmtpd
def test_failure_dsn_honours_notify_and_ret_full(daemon_factory):
    up = Capture()
    for who in ("never", "fail", "plain"):
        up.handler.rcpt_replies["%s@example.test" % who] = \
            "550 5.1.1 <%s@example.test>: no such user" % who
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(up.port, dsn_cap.port))
        qid = dsn_send(d, [
            ("never@example.test", ["NOTIFY=NEVER"]),
            ("fail@example.test", ["NOTIFY=FAILURE",
                                   "ORCPT=rfc822;fail+2Borig@example.test"]),
            ("plain@example.test", []),
            ("success@example.test", ["NOTIFY=SUCCESS"])],
            message("full return", body="body line one\r\nline two\r\n"),
            ["RET=FULL", "ENVID=ret-full"])
        wait_state(d, qid, {"never@example.test": "bounced",
                            "fail@example.test": "bounced",
                            "plain@example.test": "bounced",
                            "success@example.test": "delivered"})
        # One failure DSN (fail and plain: absent NOTIFY means FAILURE),
        # one success DSN (relayed: aiosmtpd has no DSN).
        assert wait_for(lambda: len(dsns(dsn_cap)) == 2, 10), d.log()[-3000:]
        reports = {}
        for m in dsns(dsn_cap):
            msg = email.message_from_bytes(strip_trace(m["data"]),
                                           policy=email.policy.compat32)
            reports[msg["Subject"]] = m["data"]
        failed = reports["Undelivered Mail Returned to Sender"]
        msg, parts, per_msg, per_rcpt = parse_report(
            failed, last_type="message/rfc822")
        assert per_msg["Original-Envelope-Id"] == "ret-full"
        assert [r["Final-Recipient"] for r in per_rcpt] == [
            "rfc822; fail@example.test", "rfc822; plain@example.test"]
        assert [r["Action"] for r in per_rcpt] == ["failed", "failed"]
        assert [r["Status"] for r in per_rcpt] == ["5.1.1", "5.1.1"]
        assert per_rcpt[0]["Original-Recipient"] == \
            "rfc822;fail+orig@example.test"
        assert per_rcpt[1]["Original-Recipient"] is None
        assert per_rcpt[0]["Diagnostic-Code"] == \
            "smtp; 550 5.1.1 <fail@example.test>: no such user"
        # RET=FULL: the whole original, body included.
        original = parts[2].get_payload()[0]
        assert original["Subject"] == "full return"
        assert original.get_payload() == "body line one\r\nline two\r\n" or \
            original.get_payload().replace("\r\n", "\n") == \
            "body line one\nline two\n"
        _, _, _, ok = parse_report(reports["Successful Mail Delivery Report"])
        assert [(r["Final-Recipient"], r["Action"]) for r in ok] == [
            ("rfc822; success@example.test", "relayed")]
        # The history says why "never" has no DSN.
        details = dict(d.db(
            "SELECT r.address, e.detail FROM events e JOIN recipients r"
            " ON r.id = e.recipient_id WHERE e.message_id = ? AND"
            " e.kind = 'bounced'", (qid,)))
        assert "dsn=none notify=NEVER" in details["never@example.test"]
        assert re.search(r"dsn=[0-9A-Z]{16} notify=FAILURE",
                         details["fail@example.test"])
    finally:
        up.stop()
        dsn_cap.stop()


@needs_aiosmtpd
def test_ret_hdrs_failure_returns_headers_only(daemon_factory):
    up = Capture()
    up.handler.rcpt_replies["bob@example.test"] = "550 5.1.1 no such user"
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(up.port, dsn_cap.port))
        qid = dsn_send(d, [("bob@example.test", [])],
                       message("headers only", body="secret body\r\n"),
                       ["RET=HDRS"])
        wait_state(d, qid, "bounced")
        assert wait_for(lambda: len(dsns(dsn_cap)) == 1, 10), d.log()[-3000:]
        _, parts, per_msg, per_rcpt = parse_report(dsns(dsn_cap)[0]["data"])
        assert per_msg["Original-Envelope-Id"] is None
        assert per_rcpt[0]["Action"] == "failed"
        headers = parts[2].get_payload()
        assert "Subject: headers only" in headers
        assert "secret body" not in headers
    finally:
        up.stop()
        dsn_cap.stop()


@needs_aiosmtpd
def test_delay_dsn_only_where_notify_allows(daemon_factory):
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(closed_port(), dsn_cap.port,
                                         delivery={"delay_warning": 2}))
        qid = dsn_send(d, [("fail@example.test", ["NOTIFY=FAILURE"]),
                           ("delay@example.test", ["NOTIFY=DELAY"]),
                           ("plain@example.test", []),
                           ("never@example.test", ["NOTIFY=NEVER"])],
                       message("slow"), ["ENVID=slow1"])
        assert wait_for(lambda: len(dsns(dsn_cap)) >= 1, 15), d.log()[-3000:]
        # More failed attempts, one warning only.
        assert wait_for(lambda: min(r[0] for r in d.db(
            "SELECT attempts FROM recipients WHERE message_id = ?",
            (qid,))) >= 4, 15)
        assert len(dsns(dsn_cap)) == 1
        msg, _, per_msg, per_rcpt = parse_report(dsns(dsn_cap)[0]["data"])
        assert msg["Subject"].startswith("Delayed Mail")
        assert per_msg["Original-Envelope-Id"] == "slow1"
        assert sorted(r["Final-Recipient"] for r in per_rcpt) == [
            "rfc822; delay@example.test", "rfc822; plain@example.test"]
        assert {r["Action"] for r in per_rcpt} == {"delayed"}
        assert all(r["Will-Retry-Until"] for r in per_rcpt)
        assert set(states(d, qid).values()) <= {"deferred", "delivering"}
    finally:
        dsn_cap.stop()


@needs_aiosmtpd
def test_one_delay_dsn_when_an_attempt_straddles_the_threshold(
        daemon_factory):
    # The upstream takes 2.5 s to refuse each recipient: the first
    # attempt begins before delay_warning (2 s) and fails after it.
    # Warned then, the next attempt (whose previous one began before the
    # threshold) warned again: two "Delayed Mail" for one message.
    slow = FakeSMTP(rcpt=lambda a: (time.sleep(2.5), "451 4.3.0 later")[1])
    dsn_cap = Capture()
    try:
        d = daemon_factory(relay_and_dsn(slow.port, dsn_cap.port,
                                         delivery={"delay_warning": 2}))
        qid = dsn_send(d, [("bob@example.test", ["NOTIFY=DELAY"])],
                       message("straddle"))
        assert wait_for(lambda: len(dsns(dsn_cap)) >= 1, 20), d.log()[-3000:]
        assert wait_for(lambda: d.db(
            "SELECT attempts FROM recipients WHERE message_id = ?",
            (qid,))[0][0] >= 4, 30)
        assert len(dsns(dsn_cap)) == 1, d.log()[-3000:]
    finally:
        slow.stop()
        dsn_cap.stop()


def test_operator_bounce_honours_notify(daemon_factory):
    """mxgatectl queue bounce writes the failure DSN the scheduler
    would: NOTIFY=NEVER recipients left out, RET, ENVID, ORCPT kept."""
    d = daemon_factory({"delivery": {"paused": True}})
    qid = dsn_send(d, [
        ("never@example.test", ["NOTIFY=NEVER"]),
        ("bob@example.test", ["ORCPT=rfc822;b+2Bo@example.test"])],
        message("bounced by hand", body="whole body\r\n"),
        ["RET=FULL", "ENVID=op+3D1"])
    r = d.ctl("queue", "bounce", qid)
    assert r.returncode == 0, r.stderr
    dsn_id = re.search(r"DSN ([0-9A-Z]{16}) queued", r.stdout).group(1)
    content = d.db("SELECT content FROM message_contents WHERE"
                   " message_id = ?", (dsn_id,))[0][0]
    _, parts, per_msg, per_rcpt = parse_report(
        content, last_type="message/rfc822")
    assert per_msg["Original-Envelope-Id"] == "op=1"
    assert [r["Final-Recipient"] for r in per_rcpt] == [
        "rfc822; bob@example.test"]
    assert per_rcpt[0]["Original-Recipient"] == "rfc822;b+o@example.test"
    assert per_rcpt[0]["Action"] == "failed"
    assert "whole body" in parts[2].get_payload()[0].get_payload()
    details = dict(d.db(
        "SELECT r.address, e.detail FROM events e JOIN recipients r"
        " ON r.id = e.recipient_id WHERE e.message_id = ? AND"
        " e.kind = 'bounced'", (qid,)))
    assert "dsn=none notify=NEVER" in details["never@example.test"]
    assert "dsn=%s" % dsn_id in details["bob@example.test"]

    # Nobody asked: no DSN, and the operator is told why.
    qid = dsn_send(d, [("never@example.test", ["NOTIFY=NEVER"])],
                   message("quiet"))
    r = d.ctl("queue", "bounce", qid)
    assert r.returncode == 0, r.stderr
    assert "no DSN (NOTIFY=NEVER)" in r.stdout
    assert states(d, qid) == {"never@example.test": "bounced"}
