"""Sender authentication through the daemon: each sender_auth method at
RCPT (spf, auth, tls), every SPF result from a DNS server we run (pass,
fail, softfail, neutral, none, temperror by SERVFAIL and by timeout,
permerror by syntax and by too many lookups, include, redirect, and the
"/0" case where RFC 7208 and libspf2 disagree), spf.pass_results,
spf.mail_from_policy, trusted networks, and the Authentication-Results
header (ours added, forged ones removed).

Hermetic: the daemon, the DNS server and the clients live in a private
network namespace (netns.py) with documentation addresses on its
loopback; nothing is looked up outside it.  Needs root; skipped where
unshare is not allowed.
"""

import itertools
import os
import shutil
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import (HOSTNAME, QUEUED_RE, make_message, wait_for,
                      default_settings, merge_settings)
from netns import NetNS, NetnsDaemon, can_unshare

pytestmark = pytest.mark.skipif(not can_unshare(),
                                reason="needs root and unshare(1)")

SERVER = "192.0.2.1"          # the daemon listens here
SERVER6 = "2001:db8::1"       # and here
GOOD = "198.51.100.20"        # the client the SPF records allow
BAD = "198.51.100.66"         # a client no record allows
GOOD6 = "2001:db8::20"
PASSWORD = "sesame open"

ZONE = {
    "pass.example": {"TXT": ["v=spf1 ip4:198.51.100.20 ip6:2001:db8::20 -all"]},
    "fail.example": {"TXT": ["v=spf1 ip4:192.0.2.99 -all"]},
    "soft.example": {"TXT": ["v=spf1 ip4:192.0.2.99 ~all"]},
    "neutral.example": {"TXT": ["v=spf1 ?all"]},
    "nospf.example": {"A": ["192.0.2.50"], "TXT": ["just some text"]},
    "servfail.example": {"servfail": True},
    "slow.example": {"drop": True},
    "syntax.example": {"TXT": ["v=spf1 ip4:198.51.100.20 foo:bar -all"]},
    "lookups.example": {"TXT": ["v=spf1 a a a a a a a a a a a ip4:198.51.100.20 -all"]},
    "include.example": {"TXT": ["v=spf1 include:pass.example -all"]},
    "redirect.example": {"TXT": ["v=spf1 redirect=pass.example"]},
    # RFC 7208 5.6: a CIDR length of 0 matches everything; libspf2
    # refuses the record (it would be a permerror).
    "zero.example": {"TXT": ["v=spf1 -ip4:192.0.2.0/24 ip4:0.0.0.0/0 -all"]},
    # RFC 7208 7.1: "1.2.3.4" is no domain-spec (numeric top label);
    # libspf2 looks it up and would say fail.
    "numeric.example": {"TXT": ["v=spf1 a:192.0.2.1 -all"]},
    "helo.example": {"TXT": ["v=spf1 ip4:198.51.100.20 -all"]},
    "exp.example": {"TXT": ["v=spf1 -all exp=why.exp.example"]},
    "why.exp.example": {"TXT": ["%{i} is not one of %{d}'s servers"]},
}

ADDRESSES = [SERVER, SERVER6, GOOD, BAD, GOOD6]
PORTS = itertools.count(2500)       # one per daemon


@pytest.fixture(scope="module")
def ns():
    with NetNS(ADDRESSES, ZONE) as n:
        yield n


@pytest.fixture(scope="module")
def pki():
    top = tempfile.mkdtemp(prefix="mxgate-sa-", dir="/tmp")
    os.chmod(top, 0o755)
    key = os.path.join(top, "key.pem")
    cert = os.path.join(top, "cert.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=" + HOSTNAME], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    r = subprocess.run(["openssl", "passwd", "-6", PASSWORD],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    passwd = os.path.join(top, "passwd")
    with open(passwd, "w") as f:
        f.write("alice:%s\n" % r.stdout.strip())
    os.chmod(passwd, 0o644)
    yield {"cert": cert, "key": key, "passwd": passwd}
    shutil.rmtree(top, ignore_errors=True)


ROUTES = [
    {"name": "spf", "rcpt": r"@spf\.test$", "sender_auth": ["spf"],
     "action": "debug"},
    {"name": "auth", "rcpt": r"@auth\.test$", "sender_auth": ["auth"],
     "action": "debug"},
    {"name": "tls", "rcpt": r"@tls\.test$", "sender_auth": ["tls"],
     "action": "debug"},
    {"name": "any", "rcpt": r"@any\.test$",
     "sender_auth": ["spf", "auth", "tls"], "action": "debug"},
    {"name": "open", "rcpt": r"@open\.test$", "action": "debug"},
]


@pytest.fixture
def start(request, ns, pki, daemon_factory):
    """start(**sections) -> a daemon in the namespace with ROUTES, TLS and
    AUTH (plaintext AUTH allowed, for the tests of the auth method)."""
    started = request.node._mxgate_daemons

    def go(**sections):
        dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(dirpath, 0o755)
        port = next(PORTS)
        settings = merge_settings(default_settings(dirpath, port), {
            "listen": [{"address": a, "port": port, "role": "mx",
                        "auth": True, "allow_plaintext_auth": True}
                       for a in (SERVER, SERVER6)],
            "accept_domains": None, "upstreams": None, "delivery": None,
            "routes": ROUTES,
            "tls": {"certificates": [{"cert": pki["cert"],
                                      "key": pki["key"]}]},
            "auth": {"passwd_file": pki["passwd"], "failure_delay": 0},
            "spf": {"timeout": 2},
        })
        settings = merge_settings(settings, sections)
        d = NetnsDaemon(ns, dirpath, settings, SERVER, SERVER6, GOOD)
        started.append(d)
        return d.start()

    return go


def rcpt_reply(d, sender, rcpt, source=GOOD, helo="client.example"):
    """The reply to RCPT TO:<rcpt> after MAIL FROM:<sender>."""
    with d.raw(source=source) as c:
        assert c.line().startswith("220")
        assert c.cmd("EHLO " + helo).startswith("250")
        line = c.cmd("MAIL FROM:<%s>" % sender)
        assert line.startswith("250"), line
        return c.cmd("RCPT TO:<%s>" % rcpt, timeout=20)


def printed(d, qid):
    """What the debug handler printed of message qid (its content)."""
    tag = "id=%s debug " % qid
    assert wait_for(lambda: tag + "---- end of message" in d.log(), 15.0), \
        d.log()[-3000:]
    lines = [l.split(tag, 1)[1] for l in d.log().splitlines() if tag in l]
    return "\n".join(l[2:] for l in lines if l[:2] in ("| ", "+ "))


def send(d, sender, rcpt, body=None, source=GOOD):
    """A whole message; (queue id, content as the debug handler printed)."""
    s = d.smtp(source=source)
    try:
        s.ehlo()
        assert s.mail(sender)[0] == 250
        code, msg = s.rcpt(rcpt)
        assert code == 250, msg
        code, msg = s.data(body or make_message("sa", sender=sender,
                                                rcpt=rcpt))
    finally:
        s.quit()
    m = QUEUED_RE.match("%d %s" % (code, msg.decode()))
    assert m, (code, msg)
    return m.group(1), printed(d, m.group(1))


# ---------------------------------------------------------------------------
# sender_auth = [ "spf" ], every result


@pytest.mark.parametrize("domain,source,expect", [
    ("pass.example", GOOD, "250 2.1.5"),
    ("pass.example", BAD, "550 5.7.23"),
    ("fail.example", GOOD, "550 5.7.23"),
    ("soft.example", GOOD, "550 5.7.23"),
    ("neutral.example", GOOD, "550 5.7.23"),
    ("nospf.example", GOOD, "550 5.7.23"),
    ("nx.example", GOOD, "550 5.7.23"),
    ("servfail.example", GOOD, "451 4.7.24"),
    ("syntax.example", GOOD, "550 5.7.24"),
    ("lookups.example", GOOD, "550 5.7.24"),
    ("include.example", GOOD, "250 2.1.5"),
    ("include.example", BAD, "550 5.7.23"),
    ("redirect.example", GOOD, "250 2.1.5"),
    ("redirect.example", BAD, "550 5.7.23"),
])
def test_spf_results_at_rcpt(start, domain, source, expect):
    d = start()
    line = rcpt_reply(d, "user@" + domain, "x@spf.test", source=source)
    assert line.startswith(expect), line
    # a route without sender_auth does not care
    assert rcpt_reply(d, "user@" + domain, "x@open.test",
                      source=source).startswith("250 ")


def test_spf_result_names_in_log(start):
    d = start()
    for domain, result in [("pass.example", "pass"), ("fail.example", "fail"),
                           ("soft.example", "softfail"),
                           ("neutral.example", "neutral"),
                           ("nospf.example", "none"),
                           ("servfail.example", "temperror"),
                           ("syntax.example", "permerror")]:
        rcpt_reply(d, "u@" + domain, "x@spf.test")
        assert wait_for(lambda: "spf=%s identity=mailfrom address=<u@%s>"
                        % (result, domain) in d.log(), 5), d.log()[-2000:]


def test_spf_timeout_is_temperror(start):
    d = start()                         # spf.timeout = 2
    t0 = time.monotonic()
    line = rcpt_reply(d, "user@slow.example", "x@spf.test")
    took = time.monotonic() - t0
    assert line.startswith("451 4.7.24"), line
    # Our timer's words ("DNS timeout after 2000 ms"), not the resolver's
    # own 5 s failure: the bound only needs to be generous.
    assert "DNS timeout after 2000 ms" in line, line
    assert 1.5 < took < 15, took


def test_slow_lookup_does_not_stall_other_sessions(start):
    # One worker: both sessions share its event loop.  A lookup done on
    # the loop would hold it for the resolver's 5 s (netns.py).
    d = start(spf={"timeout": 4}, server={"workers": 1})
    slow = d.raw()
    try:
        assert slow.line().startswith("220")
        assert slow.cmd("EHLO client.example").startswith("250")
        assert slow.cmd("MAIL FROM:<u@slow.example>").startswith("250")
        slow.send("RCPT TO:<x@spf.test>\r\n")       # waits for SPF
        t0 = time.monotonic()
        assert rcpt_reply(d, "u@pass.example", "x@spf.test").startswith("250")
        assert time.monotonic() - t0 < 3.5
        assert slow.line(timeout=20).startswith("451 4.7.24")
    finally:
        slow.close()


def test_rfc_zero_cidr_beats_libspf2(start):
    """RFC 7208 5.6 allows ip4-cidr-length 0: "ip4:0.0.0.0/0" matches any
    IPv4 client.  libspf2 refuses such a record (it would be permerror);
    mxgate follows the RFC."""
    d = start()
    assert rcpt_reply(d, "u@zero.example", "x@spf.test").startswith("250 ")
    assert wait_for(lambda: "spf=pass identity=mailfrom "
                    "address=<u@zero.example>" in d.log(), 5)


def test_rfc_domain_spec_beats_libspf2(start):
    """RFC 7208 7.1: a domain-spec's top label is not numeric, so
    "a:192.0.2.1" is a syntax error, hence permerror; libspf2 evaluates it
    (and would say fail)."""
    d = start()
    line = rcpt_reply(d, "u@numeric.example", "x@spf.test")
    assert line.startswith("550 5.7.24"), line


def test_ipv6_client(start):
    d = start()
    assert rcpt_reply(d, "u@pass.example", "x@spf.test",
                      source=GOOD6).startswith("250 ")


def test_null_sender_checks_helo(start):
    d = start()
    assert rcpt_reply(d, "", "x@spf.test",
                      helo="helo.example").startswith("250 ")
    line = rcpt_reply(d, "", "x@spf.test", source=BAD, helo="helo.example")
    assert line.startswith("550 5.7.23"), line
    assert "postmaster@helo.example" in line


def test_fail_reply_quotes_explanation(start):
    d = start(spf={"mail_from_policy": "reject_fail"})
    with d.raw() as c:
        c.line()
        c.cmd("EHLO client.example")
        line = c.cmd("MAIL FROM:<u@exp.example>")
    assert line.startswith("550 5.7.23"), line
    assert "198.51.100.20 is not one of exp.example's servers" in line


def test_pass_results_configurable(start):
    d = start(spf={"pass_results": ["pass", "softfail", "neutral"]})
    assert rcpt_reply(d, "u@soft.example", "x@spf.test").startswith("250 ")
    assert rcpt_reply(d, "u@neutral.example", "x@spf.test").startswith("250 ")
    assert rcpt_reply(d, "u@fail.example", "x@spf.test").startswith("550 ")


def test_spf_cached_per_session(start):
    d = start()
    with d.raw() as c:
        c.line()
        c.cmd("EHLO client.example")
        for i in range(3):
            assert c.cmd("MAIL FROM:<u@pass.example>").startswith("250")
            assert c.cmd("RCPT TO:<x%d@spf.test>" % i).startswith("250")
            assert c.cmd("RSET").startswith("250")
    assert d.log().count("address=<u@pass.example>") == 1


# ---------------------------------------------------------------------------
# spf.mail_from_policy


def test_mail_from_policy_reject_fail(start):
    d = start(spf={"mail_from_policy": "reject_fail"})
    with d.raw() as c:
        c.line()
        c.cmd("EHLO client.example")
        line = c.cmd("MAIL FROM:<u@fail.example>")
        assert line.startswith("550 5.7.23"), line
        # softfail and temperror are not "fail"
        assert c.cmd("MAIL FROM:<u@soft.example>").startswith("250 ")
        assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<u@servfail.example>").startswith("250 ")
        assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<u@pass.example>").startswith("250 ")


def test_mail_from_policy_none_accepts_fail(start):
    d = start()
    assert rcpt_reply(d, "u@fail.example", "x@open.test").startswith("250 ")


# ---------------------------------------------------------------------------
# sender_auth "auth" and "tls", and any of them


def test_auth_method(start):
    d = start()
    assert rcpt_reply(d, "u@fail.example", "x@auth.test") == (
        "530 5.7.0 <x@auth.test>: Authentication required")
    s = d.smtp()
    try:
        s.ehlo()
        s.login("alice", PASSWORD)
        s.mail("u@fail.example")
        code, msg = s.rcpt("x@auth.test")
        assert code == 250, msg
    finally:
        s.quit()


def test_tls_method(start):
    d = start()
    assert rcpt_reply(d, "u@fail.example", "x@tls.test") == (
        "530 5.7.0 <x@tls.test>: Must issue a STARTTLS command first")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = d.smtp()
    try:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        s.mail("u@fail.example")
        code, msg = s.rcpt("x@tls.test")
        assert code == 250, msg
    finally:
        s.quit()


def test_any_method_admits(start):
    d = start()
    # SPF passes
    assert rcpt_reply(d, "u@pass.example", "x@any.test").startswith("250 ")
    # SPF fails, nothing else: the SPF reply
    assert rcpt_reply(d, "u@fail.example", "x@any.test").startswith(
        "550 5.7.23")
    # SPF fails, but the client authenticated
    s = d.smtp()
    try:
        s.ehlo()
        s.login("alice", PASSWORD)
        s.mail("u@fail.example")
        assert s.rcpt("x@any.test")[0] == 250
    finally:
        s.quit()


def test_trusted_network_skips_spf(start):
    d = start(trusted_networks=["198.51.100.0/24"])
    assert rcpt_reply(d, "u@fail.example", "x@spf.test").startswith("250 ")
    qid, content = send(d, "u@fail.example", "y@spf.test")
    assert "Authentication-Results: %s; none" % HOSTNAME in content
    assert "address=<u@fail.example>" not in d.log()


# ---------------------------------------------------------------------------
# Authentication-Results


def header_fields(content):
    """The header section as a list of unfolded fields."""
    head = content.split("\n\n", 1)[0]
    fields = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line)
    return fields


def test_authentication_results_added(start):
    d = start()
    qid, content = send(d, "alice@pass.example", "bob@open.test")
    fields = header_fields(content)
    assert fields[0].startswith("Received: from client.example")
    assert fields[1] == ("Authentication-Results: %s; spf=pass "
                         "(pass.example: pass for 198.51.100.20) "
                         "smtp.mailfrom=alice@pass.example" % HOSTNAME)
    qid, content = send(d, "bob@fail.example", "bob@open.test")
    assert "spf=fail" in header_fields(content)[1]


def test_forged_authentication_results_removed(start):
    d = start()
    body = ("Authentication-Results: %s; spf=pass smtp.mailfrom=ceo@pass.example\r\n"
            "Authentication-Results: (sneaky) %s;\r\n\tdkim=pass\r\n"
            "authentication-results : \"%s\"; dmarc=pass\r\n"
            "Authentication-Results: other.example; spf=fail\r\n"
            "From: <ceo@fail.example>\r\n"
            "Subject: forged\r\n"
            "\r\n"
            "Authentication-Results: %s; in the body stays\r\n"
            % (HOSTNAME, HOSTNAME, HOSTNAME.upper(), HOSTNAME))
    qid, content = send(d, "x@fail.example", "bob@open.test", body=body)
    fields = header_fields(content)
    ours = [f for f in fields if f.lower().startswith("authentication-results")]
    assert ours == [
        "Authentication-Results: %s; spf=fail (fail.example: fail for "
        "198.51.100.20) smtp.mailfrom=x@fail.example" % HOSTNAME,
        "Authentication-Results: other.example; spf=fail"], fields
    assert "Authentication-Results: %s; in the body stays" % HOSTNAME in content
    assert "Subject: forged" in fields
