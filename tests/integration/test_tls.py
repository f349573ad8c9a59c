"""TLS and AUTH: STARTTLS and implicit TLS on every listener role, the
STARTTLS injection class, protocol floor, certificates by SNI, session
resumption, AUTH PLAIN/LOGIN with the passwd file and SQLite, submission
policy, and slow handshakes that must not stall anyone else.

Throwaway certificates are made with `openssl req` once per module: RSA
and ECDSA for mx.test.example (served together), ECDSA for
other.test.example (chosen by SNI).  Their keys sit in a directory only
root can enter: the workers (user nobody) could not open them, so a
working handshake also shows that the master loaded them.
"""

import base64
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (HOSTNAME, SMTPRaw, free_port, make_message,
                      mxgatectl_path, mxgated_path, queued_id, wait_for)

OTHER = "other.test.example"
PASSWORD = "correct horse"


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def openssl(*args, **kw):
    return subprocess.run(["openssl"] + list(args), capture_output=True,
                          text=True, timeout=60, **kw)


def make_cert(dirpath, name, cn, keytype):
    key = os.path.join(dirpath, name + ".key")
    cert = os.path.join(dirpath, name + ".pem")
    if keytype == "rsa":
        newkey = ["-newkey", "rsa:2048"]
    else:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    r = openssl("req", "-x509", *newkey, "-nodes", "-keyout", key,
                "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                "-addext", "subjectAltName=DNS:" + cn)
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    return cert, key


@pytest.fixture(scope="module")
def pki():
    """Certificates (keys readable by root only) and the passwd file."""
    top = tempfile.mkdtemp(prefix="mxgate-tls-", dir="/tmp")
    os.chmod(top, 0o755)
    keys = os.path.join(top, "keys")
    os.mkdir(keys, 0o700)
    p = {"dir": top}
    p["rsa"] = make_cert(keys, "rsa", HOSTNAME, "rsa")
    p["ec"] = make_cert(keys, "ec", HOSTNAME, "ec")
    p["other"] = make_cert(keys, "other", OTHER, "ec")
    # a key that belongs to no certificate
    p["stray_key"] = make_cert(keys, "stray", "stray.example", "rsa")[1]
    # users: bob with SHA-512-crypt, carol with yescrypt (mxgatectl)
    p["passwd"] = os.path.join(top, "passwd")
    r = openssl("passwd", "-6", PASSWORD)
    assert r.returncode == 0, r.stderr
    with open(p["passwd"], "w") as f:
        f.write("# test users\nbob:%s\n" % r.stdout.strip())
    r = subprocess.run([mxgatectl_path(), "passwd", "carol", "--file",
                        p["passwd"]], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    os.chmod(p["passwd"], 0o644)
    yield p
    shutil.rmtree(top, ignore_errors=True)


def tls_overrides(pki, **extra):
    ports = {"mx": free_port(), "submission": free_port(),
             "submissions": free_port()}
    o = {
        "listen": [
            {"address": "127.0.0.1", "port": ports["mx"], "role": "mx"},
            {"address": "127.0.0.1", "port": ports["submission"],
             "role": "submission"},
            {"address": "127.0.0.1", "port": ports["submissions"],
             "role": "submissions"},
        ],
        "tls": {"certificates": [
            {"cert": pki["rsa"][0], "key": pki["rsa"][1]},
            {"cert": pki["ec"][0], "key": pki["ec"][1]},
            {"cert": pki["other"][0], "key": pki["other"][1]},
        ]},
        "auth": {"passwd_file": pki["passwd"], "failure_delay": 1,
                 "max_failures": 3},
        # delivered at once by the debug handler, which prints what the
        # tests check (protocol, user, Received:) into the log
        "accept_domains": None,
        "routes": [
            {"name": "local", "rcpt": "@example\\.test$", "action": "debug"},
            {"name": "relay_denied", "rcpt": "^", "action": "reject",
             "code": 550, "text": "5.7.1 <${rcpt}>: Relay access denied"},
        ],
    }
    o.update(extra)
    return o, ports


@pytest.fixture
def tlsd(daemon_factory, pki):
    """A daemon with mx, submission and submissions listeners."""
    o, ports = tls_overrides(pki)
    d = daemon_factory(o)
    d.ports = ports
    return d


def client_ctx(minimum=None, maximum=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def ehlo(c, name="client.example"):
    c.send("EHLO %s\r\n" % name)
    code, texts, _ = c.reply()
    assert code == 250, texts
    return texts


def raw_starttls(port, ctx=None, sni=HOSTNAME):
    """A raw client on port after EHLO and STARTTLS, encrypted."""
    c = SMTPRaw("127.0.0.1", port)
    assert c.line().startswith("220 ")
    assert "STARTTLS" in ehlo(c)
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    assert c.buf == b""
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname=sni)
    return c


def raw_implicit(port, ctx=None, sni=HOSTNAME):
    c = SMTPRaw.__new__(SMTPRaw)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sock = (ctx or client_ctx()).wrap_socket(s, server_hostname=sni)
    c.sock.settimeout(10)
    c.buf = b""
    c.timeout = 10.0
    return c


def debug_print(d, qid):
    """What the debug handler printed of message qid (delivered messages
    leave the queue at once): ({"protocol": ..., "auth": ...}, content)."""
    tag = "id=%s debug " % qid
    assert wait_for(lambda: tag + "---- end of message" in d.log(), 10.0), \
        d.log()[-3000:]
    lines = [l.split(tag, 1)[1] for l in d.log().splitlines() if tag in l]
    meta = [l for l in lines if l.startswith("client=")][0]
    fields = dict(f.split("=", 1) for f in meta.split() if "=" in f)
    content = "\n".join(l[2:] for l in lines if l[:2] in ("| ", "+ "))
    return fields, content


def message_row(d, qid):
    fields = debug_print(d, qid)[0]
    return fields["protocol"], (None if fields["auth"] == "-"
                                else fields["auth"])


def content_of(d, qid):
    return debug_print(d, qid)[1]


def send_one(c, rcpt="bob@example.test", subject="tls test"):
    """MAIL, RCPT, DATA on a raw client; the queue id."""
    assert c.cmd("MAIL FROM:<alice@sender.example>").startswith("250 ")
    line = c.cmd("RCPT TO:<%s>" % rcpt)
    assert line.startswith("250 "), line
    assert c.cmd("DATA").startswith("354 ")
    c.send(make_message(subject, rcpt=rcpt) + ".\r\n")
    return queued_id(c.line())


# ---------------------------------------------------------------------------
# STARTTLS and implicit TLS, with real clients


def s_client(port, starttls, servername, *extra, data="EHLO c.example\nQUIT\n"):
    args = ["s_client", "-connect", "127.0.0.1:%d" % port, "-crlf",
            "-quiet", "-servername", servername] + list(extra)
    if starttls:
        args += ["-starttls", "smtp"]
    return openssl(*args, input=data)


@pytest.mark.parametrize("role", ["mx", "submission", "submissions"])
def test_openssl_s_client_every_role(tlsd, role):
    r = s_client(tlsd.ports[role], role != "submissions", HOSTNAME)
    out = r.stdout
    assert "CN = " + HOSTNAME in r.stderr, r.stderr
    # the EHLO after the handshake: no STARTTLS any more
    assert "250-" + HOSTNAME in out, out
    assert "STARTTLS" not in out.split("250-" + HOSTNAME)[-1], out
    if role == "mx":
        assert "AUTH" not in out
    else:
        assert "250 AUTH PLAIN LOGIN" in out, out
    assert "221 2.0.0 Bye" in out, out
    assert "TLS established version=TLSv1.3" in tlsd.log()


@pytest.mark.parametrize("role", ["mx", "submission"])
def test_smtplib_starttls(tlsd, role):
    import smtplib
    with smtplib.SMTP("127.0.0.1", tlsd.ports[role], timeout=10) as s:
        s.ehlo("client.example")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")
        code, _ = s.starttls(context=client_ctx())
        assert code == 220
        s.ehlo("client.example")
        assert not s.has_extn("starttls")
        assert s.has_extn("auth") == (role == "submission")
        if role == "submission":
            s.login("bob", PASSWORD)
        s.mail("alice@sender.example")
        code, _ = s.rcpt("bob@example.test")
        assert code == 250
        code, resp = s.data(make_message("smtplib " + role))
        qid = queued_id("%d %s" % (code, resp.decode()))
    proto, user = message_row(tlsd, qid)
    text = content_of(tlsd, qid)
    if role == "mx":
        assert (proto, user) == ("ESMTPS", None)
        assert "with ESMTPS id " + qid in text
    else:
        assert (proto, user) == ("ESMTPSA", "bob")
        assert "with ESMTPSA id " + qid in text
    # As Postfix words it.
    assert re.match(r"Received: from client\.example \(\[127\.0\.0\.1\]\)\n"
                    r"\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+"
                    r" \((128|256)/(128|256) bits\)\)\n\tby ", text), text[:400]


def test_implicit_tls_submissions(tlsd):
    import smtplib
    with smtplib.SMTP_SSL("127.0.0.1", tlsd.ports["submissions"], timeout=10,
                          context=client_ctx()) as s:
        code, _ = s.ehlo("client.example")
        assert code == 250
        assert not s.has_extn("starttls")
        assert s.has_extn("auth")
        s.login("carol", PASSWORD)       # yescrypt, from mxgatectl passwd
        s.mail("carol@sender.example")
        assert s.rcpt("bob@example.test")[0] == 250
        code, resp = s.data(make_message("implicit"))
        qid = queued_id("%d %s" % (code, resp.decode()))
    assert message_row(tlsd, qid) == ("ESMTPSA", "carol")


def test_implicit_tls_greets_after_handshake(tlsd):
    # a plaintext client on 465 hears nothing: the server waits for TLS
    with socket.create_connection(("127.0.0.1", tlsd.ports["submissions"]),
                                  timeout=5) as s:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(b"EHLO plain.example\r\n")
        s.settimeout(5.0)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"2"), data
    assert wait_for(lambda: "TLS handshake failed" in tlsd.log(), 5.0)
    # ... and that failure was that session's only
    c = raw_implicit(tlsd.ports["submissions"])
    assert c.line().startswith("220 " + HOSTNAME)
    c.close()


def test_starttls_injection(tlsd):
    """CVE-2011-0411: commands pipelined after STARTTLS in the same packet
    are discarded, never answered after the handshake."""
    c = SMTPRaw("127.0.0.1", tlsd.ports["mx"])
    assert c.line().startswith("220 ")
    ehlo(c)
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.line() == "220 2.0.0 Ready to start TLS"
    c.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        extra = c.sock.recv(100)
        assert False, "answered after STARTTLS: %r" % extra
    assert c.buf == b""
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname=HOSTNAME)
    c.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        extra = c.sock.recv(100)
        assert False, "RSET answered after the handshake: %r" % extra
    # a fresh session: EHLO first, and its reply is the next thing heard
    assert c.cmd("MAIL FROM:<a@sender.example>") == \
        "503 5.5.1 Error: send HELO/EHLO first"
    texts = ehlo(c)
    assert texts[0] == HOSTNAME and "STARTTLS" not in texts
    qid = send_one(c)
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()
    assert "discarded 6 bytes sent after STARTTLS" in tlsd.log()
    assert message_row(tlsd, qid)[0] == "ESMTPS"


def test_starttls_sequence_errors(tlsd):
    c = SMTPRaw("127.0.0.1", tlsd.ports["mx"])
    c.line()
    assert c.cmd("STARTTLS") == "503 5.5.1 Error: send EHLO first"
    ehlo(c)
    assert c.cmd("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
    assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250 ")
    assert c.cmd("STARTTLS") == \
        "503 5.5.1 Error: MAIL transaction in progress"
    c.cmd("RSET")
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname=HOSTNAME)
    ehlo(c)
    assert c.cmd("STARTTLS") == "503 5.5.1 Error: TLS already active"
    c.close()


def test_handshake_failure_ends_only_that_session(tlsd):
    c = SMTPRaw("127.0.0.1", tlsd.ports["mx"])
    c.line()
    ehlo(c)
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.send(b"this is not a TLS ClientHello\r\n")
    assert c.closed_by_peer(5.0)
    c.close()
    assert wait_for(lambda: "TLS handshake failed" in tlsd.log(), 5.0)
    # the others carry on
    c = raw_starttls(tlsd.ports["mx"])
    ehlo(c)
    send_one(c)
    c.close()


# ---------------------------------------------------------------------------
# Protocol versions, certificates, resumption


def tls_works(server_ctx, client):
    """Can this machine's OpenSSL do a handshake with these contexts?"""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    result = {}

    def serve():
        try:
            conn, _ = srv.accept()
            with server_ctx.wrap_socket(conn, server_side=True):
                result["ok"] = True
        except (OSError, ssl.SSLError) as e:
            result["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with client.wrap_socket(s, server_hostname=HOSTNAME):
                pass
        ok = True
    except (OSError, ssl.SSLError):
        ok = False
    t.join(10)
    srv.close()
    return ok and result.get("ok", False)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused(tlsd, pki, version):
    v = getattr(ssl.TLSVersion, version)
    with pytest.warns(DeprecationWarning) if False else _nowarn():
        client = client_ctx(minimum=v, maximum=v,
                            ciphers="DEFAULT@SECLEVEL=0")
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = v
        server.maximum_version = v
        server.set_ciphers("DEFAULT@SECLEVEL=0")
        server.load_cert_chain(*pki["rsa"])
    if not tls_works(server, client):
        pytest.skip("the local OpenSSL cannot speak %s at all" % version)
    c = SMTPRaw("127.0.0.1", tlsd.ports["mx"])
    c.line()
    ehlo(c)
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        client.wrap_socket(c.sock, server_hostname=HOSTNAME)
    c.close()
    assert wait_for(lambda: "TLS handshake failed: unsupported protocol"
                    in tlsd.log(), 5.0), tlsd.log()[-2000:]


class _nowarn:
    def __enter__(self):
        import warnings
        self.cm = warnings.catch_warnings()
        self.cm.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_modern_tls_accepted(tlsd, version):
    v = getattr(ssl.TLSVersion, version)
    c = raw_starttls(tlsd.ports["mx"], client_ctx(minimum=v, maximum=v))
    assert c.sock.version() == version.replace("_", ".")
    ehlo(c)
    c.close()


def test_min_version_setting(daemon_factory, pki):
    """tls.min_version = "TLSv1.3": a TLS 1.2 client is refused (logged),
    a TLS 1.3 one served."""
    o, ports = tls_overrides(pki)
    o["tls"] = dict(o["tls"], min_version="TLSv1.3")
    d = daemon_factory(o)
    v12 = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        raw_implicit(ports["submissions"], client_ctx(minimum=v12,
                                                      maximum=v12))
    assert wait_for(lambda: "TLS handshake failed: unsupported protocol"
                    in d.log(), 5.0), d.log()[-2000:]
    c = raw_implicit(ports["submissions"])
    assert c.sock.version() == "TLSv1.3"
    assert c.line().startswith("220 ")
    c.close()


def test_default_ciphers_refuse_weak_ones(tlsd):
    """The default TLS 1.2 cipher list has forward secrecy and AEAD only:
    a client offering nothing but AES128-SHA (RSA key exchange, CBC) is
    refused; one offering ECDHE-RSA-AES128-GCM-SHA256 is served."""
    v12 = ssl.TLSVersion.TLSv1_2
    weak = client_ctx(minimum=v12, maximum=v12, ciphers="AES128-SHA")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        raw_implicit(tlsd.ports["submissions"], weak)
    assert wait_for(lambda: "TLS handshake failed: no shared cipher"
                    in tlsd.log(), 5.0), tlsd.log()[-2000:]
    good = client_ctx(minimum=v12, maximum=v12,
                      ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    c = raw_implicit(tlsd.ports["submissions"], good)
    assert c.sock.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    c.close()


def peer_der(port, sni, implicit=True, ctx=None):
    if implicit:
        c = raw_implicit(port, ctx, sni=sni)
    else:
        c = raw_starttls(port, ctx, sni=sni)
    try:
        return c.sock.getpeercert(binary_form=True)
    finally:
        c.close()


def test_sni_selects_certificate(tlsd, pki):
    port = tlsd.ports["submissions"]
    assert peer_der(port, OTHER) == der(pki["other"][0])
    assert peer_der(port, "OTHER.test.example") == der(pki["other"][0])
    # without SNI, or with a name nobody has, the first names serve
    # (RSA or ECDSA, as the client prefers)
    first = (der(pki["rsa"][0]), der(pki["ec"][0]))
    assert peer_der(port, None) in first
    assert peer_der(port, "unknown.example") in first
    assert peer_der(port, HOSTNAME) in first
    # after STARTTLS as well
    assert peer_der(tlsd.ports["mx"], OTHER, implicit=False) == \
        der(pki["other"][0])
    r = s_client(tlsd.ports["mx"], True, OTHER)
    assert "CN = " + OTHER in r.stderr, r.stderr


def test_sighup_reloads_certificates(daemon_factory, pki, tmp_path):
    """SIGHUP loads renewed certificate files: new connections get the new
    certificate from new smtp processes, a session opened before goes on
    on an old one, which retires when it ends.  A reload whose key does
    not match changes nothing."""
    site = tmp_path / "site"
    site.mkdir()
    cert, key = str(site / "site.pem"), str(site / "site.key")
    first = make_cert(str(tmp_path), "first", HOSTNAME, "ec")
    second = make_cert(str(tmp_path), "second", HOSTNAME, "ec")
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    o, ports = tls_overrides(pki)
    o["tls"] = {"certificates": [{"cert": cert, "key": key}]}
    d = daemon_factory(o)
    port = ports["submissions"]
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0)
    old_pids = set(d.smtp_pids())
    assert peer_der(port, HOSTNAME) == der(first[0])

    # A session in the middle of a transaction across the reload.
    c = raw_starttls(ports["mx"])
    ehlo(c)
    assert c.cmd("MAIL FROM:<alice@sender.example>").startswith("250 ")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250 ")

    shutil.copy(second[0], cert + ".new")
    shutil.copy(second[1], key + ".new")
    os.replace(key + ".new", key)
    os.replace(cert + ".new", cert)
    os.kill(d.pid, signal.SIGHUP)
    assert wait_for(lambda: "loaded: 2 smtp processes started, 2 old"
                    in d.log(), 10.0), d.log()[-2000:]
    assert peer_der(port, HOSTNAME) == der(second[0])
    assert peer_der(ports["mx"], HOSTNAME, implicit=False) == der(second[0])
    new_pids = set(d.smtp_pids()) - old_pids
    assert len(new_pids) == 2, d.titles()

    # The old session still completes its message, and goes on until
    # it quits.
    assert c.cmd("DATA").startswith("354 ")
    c.send(make_message("across the reload") + ".\r\n")
    assert queued_id(c.line())
    assert c.cmd("NOOP").startswith("250 ")
    assert c.cmd("QUIT").startswith("221 ")
    c.close()
    assert wait_for(lambda: set(d.smtp_pids()) == new_pids, 15.0), \
        d.titles()
    assert wait_for(lambda: d.log().count("retired") == 2, 5.0), \
        d.log()[-2000:]

    # A key that does not match: the reload is refused, nothing changes.
    shutil.copy(pki["stray_key"], key)
    os.kill(d.pid, signal.SIGHUP)
    assert wait_for(lambda: "refused: nothing changed" in d.log(),
                    10.0), d.log()[-2000:]
    assert "does not match certificate" in d.log()
    assert set(d.smtp_pids()) == new_pids
    assert peer_der(port, HOSTNAME) == der(second[0])

    # Fixed, a second reload replaces the new ones in turn.
    shutil.copy(first[1], key)
    shutil.copy(first[0], cert)
    os.kill(d.pid, signal.SIGHUP)
    assert wait_for(lambda: d.log().count("loaded: 2 smtp processes")
                    == 2, 10.0)
    assert peer_der(port, HOSTNAME) == der(first[0])
    assert wait_for(lambda: len(d.smtp_pids()) == 2 and
                    not set(d.smtp_pids()) & new_pids, 15.0), d.titles()
    assert send_one(raw_starttls_ehlo(ports["mx"]))


def raw_starttls_ehlo(port):
    c = raw_starttls(port)
    ehlo(c)
    return c


def test_rsa_and_ecdsa_for_one_name(tlsd, pki):
    tls12 = ssl.TLSVersion.TLSv1_2
    ecdsa = client_ctx(maximum=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    rsa = client_ctx(maximum=tls12, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    port = tlsd.ports["submissions"]
    assert peer_der(port, HOSTNAME, ctx=ecdsa) == der(pki["ec"][0])
    assert peer_der(port, HOSTNAME, ctx=rsa) == der(pki["rsa"][0])


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(tlsd, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(minimum=v, maximum=v)
    port = tlsd.ports["submissions"]
    reused = []
    for _ in range(4):         # two workers: resumption across them too
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t = ctx.wrap_socket(s, server_hostname=HOSTNAME,
                            session=reused[-1][0] if reused else None)
        t.settimeout(10)
        c = SMTPRaw.__new__(SMTPRaw)
        c.sock, c.buf, c.timeout = t, b"", 10.0
        assert c.line().startswith("220 ")   # TLS 1.3 tickets come now
        ehlo(c)
        c.cmd("QUIT")
        reused.append((t.session, t.session_reused))
        t.close()
    assert [r for _, r in reused] == [False, True, True, True]


# ---------------------------------------------------------------------------
# Configuration problems


def check_config(daemon_factory, pki, certs):
    o, _ = tls_overrides(pki)
    o["tls"] = {"certificates": certs}
    d = daemon_factory(o, start=False)
    r = subprocess.run([mxgated_path(), "-n", "-c", d.config_path],
                       capture_output=True, text=True, timeout=30)
    return d, r


def test_config_missing_key(daemon_factory, pki):
    missing = os.path.join(pki["dir"], "nonexistent.key")
    d, r = check_config(daemon_factory, pki, [
        {"cert": pki["rsa"][0], "key": pki["rsa"][1]},
        {"cert": pki["ec"][0], "key": missing}])
    assert r.returncode == 1
    assert "mxgate.conf:" in r.stderr
    assert ": 'tls.certificates[1]': cannot read key %s: No such file or " \
        "directory" % missing in r.stderr, r.stderr
    # the daemon does not start either
    p = subprocess.run([mxgated_path(), "-f", "-c", d.config_path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "cannot read key" in p.stderr


def test_config_key_mismatch(daemon_factory, pki):
    d, r = check_config(daemon_factory, pki, [
        {"cert": pki["rsa"][0], "key": pki["stray_key"]}])
    assert r.returncode == 1
    assert "'tls.certificates[0]': key %s does not match certificate %s" % (
        pki["stray_key"], pki["rsa"][0]) in r.stderr, r.stderr
    # an ECDSA key for an RSA certificate does not match either
    d, r = check_config(daemon_factory, pki, [
        {"cert": pki["rsa"][0], "key": pki["other"][1]}])
    assert r.returncode == 1
    assert "does not match certificate" in r.stderr, r.stderr


def test_config_not_a_certificate(daemon_factory, pki):
    d, r = check_config(daemon_factory, pki, [
        {"cert": pki["passwd"], "key": pki["rsa"][1]}])
    assert r.returncode == 1
    assert "not a PEM certificate" in r.stderr, r.stderr


def test_config_ok(daemon_factory, pki):
    d, r = check_config(daemon_factory, pki, [
        {"cert": pki["rsa"][0], "key": pki["rsa"][1]}])
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------
# AUTH


def auth_client(d):
    c = raw_starttls(d.ports["submission"])
    assert "AUTH PLAIN LOGIN" in ehlo(c)
    return c


def test_auth_plain(tlsd):
    c = auth_client(tlsd)
    assert c.cmd("MAIL FROM:<bob@sender.example>") == \
        "530 5.7.0 Authentication required"
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "503 5.5.1 Error: already authenticated"
    qid = send_one(c)
    c.close()
    assert message_row(tlsd, qid) == ("ESMTPSA", "bob")
    assert "auth=PLAIN user=bob authenticated" in tlsd.log()


def test_auth_plain_challenge_and_login(tlsd):
    c = auth_client(tlsd)
    assert c.cmd("AUTH PLAIN") == "334 "
    assert c.cmd(b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    c.close()
    c = auth_client(tlsd)
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd(b64("carol")) == "334 UGFzc3dvcmQ6"
    assert c.cmd(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
    c.close()


def test_auth_failure_is_delayed(tlsd):
    c = auth_client(tlsd)
    t0 = time.monotonic()
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0wrong")) == \
        "535 5.7.8 Authentication credentials invalid"
    took = time.monotonic() - t0
    assert took >= 0.9, took
    # unknown users look the same
    assert c.cmd("AUTH PLAIN " + b64("\0mallory\0wrong")) == \
        "535 5.7.8 Authentication credentials invalid"
    assert c.cmd("MAIL FROM:<bob@sender.example>") == \
        "530 5.7.0 Authentication required"
    # the third failure closes the session
    line = c.cmd("AUTH PLAIN " + b64("\0bob\0wrong"))
    assert line.startswith("421 4.7.0 "), line
    assert c.closed_by_peer(5.0)
    c.close()
    log = tlsd.log()
    assert "user=bob failed: wrong password" in log
    assert "user=mallory failed: no such user" in log
    assert "3 failed authentications: closing" in log


def test_auth_delay_does_not_stall_others(daemon_factory, pki):
    # One worker, so that both sessions share its event loop; a delay
    # long enough that a session served past it (TLS, AUTH, a message,
    # under ASan on a loaded machine) still tells a stalled loop apart.
    o, ports = tls_overrides(pki, server={"workers": 1})
    o["auth"] = dict(o["auth"], failure_delay=6)
    d = daemon_factory(o)
    d.ports = ports
    slow = auth_client(d)
    slow.send("AUTH PLAIN " + b64("\0bob\0wrong") + "\r\n")
    t0 = time.monotonic()
    c = auth_client(d)
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    send_one(c)
    assert time.monotonic() - t0 < 4.5
    assert slow.line(timeout=20).startswith("535 ")
    slow.close()
    c.close()


def test_auth_cancel_and_malformed(tlsd):
    c = auth_client(tlsd)
    assert c.cmd("AUTH PLAIN") == "334 "
    assert c.cmd("*") == "501 5.0.0 Authentication cancelled"
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd("*") == "501 5.0.0 Authentication cancelled"
    assert c.cmd("AUTH PLAIN not-base64!") == "501 5.5.2 Cannot decode response"
    assert c.cmd("AUTH PLAIN") == "334 "
    assert c.cmd("%%%%") == "501 5.5.2 Cannot decode response"
    assert c.cmd("AUTH PLAIN " + b64("bob" + PASSWORD)) == \
        "501 5.5.2 Malformed authentication response"
    # LOGIN: bad base64 at either prompt, or as the initial response
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd("%%%%") == "501 5.5.2 Cannot decode response"
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd(b64("bob")) == "334 UGFzc3dvcmQ6"
    assert c.cmd("not base64!") == "501 5.5.2 Cannot decode response"
    assert c.cmd("AUTH LOGIN %%%%") == "501 5.5.2 Cannot decode response"
    assert c.cmd("AUTH CRAM-MD5") == \
        "504 5.5.4 Unrecognized authentication type"
    # still usable
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    c.close()


def test_auth_failures_per_client(daemon_factory, pki):
    """rate_limits.auth_failures_per_minute: failures on separate
    connections (and workers) add up in the master; once the client has
    reached the limit its new connections, on every listener, get 421."""
    o, ports = tls_overrides(pki)
    o["auth"] = dict(o["auth"], failure_delay=0)
    o["rate_limits"] = {"auth_failures_per_minute": 2}
    o["trusted_networks"] = []
    d = daemon_factory(o)
    for attempt in range(2):
        c = raw_implicit(ports["submissions"])
        assert c.line().startswith("220 ")
        ehlo(c)
        # a success does not count
        assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
            "235 2.7.0 Authentication successful"
        c.close()
        c = raw_implicit(ports["submissions"])
        c.line()
        ehlo(c)
        assert c.cmd("AUTH PLAIN " + b64("\0bob\0wrong")) == \
            "535 5.7.8 Authentication credentials invalid"
        c.close()
        if attempt == 0:
            # one failure: still welcome
            c = SMTPRaw("127.0.0.1", ports["mx"])
            assert c.line().startswith("220 ")
            c.close()
    assert wait_for(lambda: "client=127.0.0.1 reached 2 failed"
                    " authentications per minute" in d.log(), 5.0), \
        d.log()[-2000:]
    for role in ("mx", "submission", "submissions"):
        with socket.create_connection(("127.0.0.1", ports[role]),
                                      timeout=5) as s:
            assert s.recv(512).startswith(
                b"421 4.7.0 Too many failed authentications"), role
    assert "refused: over 2 failed authentications per minute" in d.log()


def test_auth_before_ehlo(tlsd):
    c = raw_starttls(tlsd.ports["submission"])
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "503 5.5.1 Error: send EHLO first"
    c.close()
    c = raw_implicit(tlsd.ports["submissions"])
    c.line()
    assert c.cmd("HELO client.example").startswith("250 ")
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "503 5.5.1 Error: send EHLO first"
    c.close()


def test_auth_before_tls_refused(tlsd):
    c = SMTPRaw("127.0.0.1", tlsd.ports["submission"])
    c.line()
    texts = ehlo(c)
    assert "STARTTLS" in texts
    assert not any(t.startswith("AUTH") for t in texts)
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "538 5.7.11 Encryption required for requested authentication " \
        "mechanism"
    assert c.cmd("MAIL FROM:<bob@sender.example>") == \
        "530 5.7.0 Authentication required"
    c.close()
    # never on mx either (AUTH is not offered there at all)
    c = raw_starttls(tlsd.ports["mx"])
    assert not any(t.startswith("AUTH") for t in ehlo(c))
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "502 5.5.1 Command not implemented"
    c.close()


def test_starttls_forgets_plaintext_auth(daemon_factory, pki):
    o, ports = tls_overrides(pki)
    o["listen"][1]["allow_plaintext_auth"] = True
    d = daemon_factory(o)
    c = SMTPRaw("127.0.0.1", ports["submission"])
    c.line()
    assert "AUTH PLAIN LOGIN" in ehlo(c)
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    qid = send_one(c)
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname=HOSTNAME)
    ehlo(c)
    assert c.cmd("MAIL FROM:<bob@sender.example>") == \
        "530 5.7.0 Authentication required"
    c.close()
    assert message_row(d, qid) == ("ESMTPA", "bob")


def test_starttls_forgets_auth_for_routes(daemon_factory, pki):
    """On a listener that does not require AUTH, an AUTH made before
    STARTTLS must not let the client relay after it."""
    o, ports = tls_overrides(pki, routes=relay_routes())
    o["listen"][0].update({"auth": True, "allow_plaintext_auth": True})
    d = daemon_factory(o)
    c = SMTPRaw("127.0.0.1", ports["mx"])
    c.line()
    ehlo(c)
    assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname=HOSTNAME)
    ehlo(c)
    assert c.cmd("MAIL FROM:<bob@sender.example>").startswith("250 ")
    assert c.cmd("RCPT TO:<x@elsewhere.example>").startswith("550 5.7.1 ")
    assert c.cmd("RSET") == "250 2.0.0 Ok"
    qid = send_one(c)
    c.close()
    assert message_row(d, qid) == ("ESMTPS", None)


def test_submission_without_auth_refused(tlsd):
    import smtplib
    with smtplib.SMTP("127.0.0.1", tlsd.ports["submission"], timeout=10) as s:
        s.starttls(context=client_ctx())
        s.ehlo("client.example")
        code, resp = s.mail("alice@sender.example")
        assert (code, resp) == (530, b"5.7.0 Authentication required")
    assert tlsd.message_count() == 0


def relay_routes():
    return [
        {"name": "submission", "rcpt": "^", "authenticated": True,
         "action": "debug"},
        {"name": "local", "rcpt": "@example\\.test$", "action": "debug"},
        {"name": "relay_denied", "rcpt": "^", "action": "reject",
         "code": 550, "text": "5.7.1 <${rcpt}>: Relay access denied"},
    ]


def test_authenticated_relay(daemon_factory, pki):
    import smtplib
    o, ports = tls_overrides(pki, routes=relay_routes())
    d = daemon_factory(o)
    # a stranger on mx may not relay ...
    c = raw_starttls(ports["mx"])
    ehlo(c)
    c.cmd("MAIL FROM:<alice@sender.example>")
    assert c.cmd("RCPT TO:<x@elsewhere.example>").startswith("550 5.7.1 ")
    c.close()
    # ... an authenticated user may
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=10) as s:
        s.starttls(context=client_ctx())
        s.login("bob", PASSWORD)
        s.mail("bob@sender.example")
        assert s.rcpt("x@elsewhere.example")[0] == 250
        code, resp = s.data(make_message("relayed", rcpt="x@elsewhere.example"))
        qid = queued_id("%d %s" % (code, resp.decode()))
    assert message_row(d, qid) == ("ESMTPSA", "bob")
    assert ("id=%s debug from=<bob@sender.example> to=<x@elsewhere.example> "
            "route=submission" % qid) in d.log()


def test_auth_user_in_a_route(daemon_factory, pki):
    """${auth_user} is the authenticated user in a live session: each
    user's mail lands in a maildir named after them."""
    import smtplib
    top = tempfile.mkdtemp(prefix="mxgate-authuser-", dir="/tmp")
    os.chmod(top, 0o755)
    try:
        routes = [
            {"name": "per_user", "rcpt": "@example\\.test$",
             "authenticated": True, "action": "maildir",
             "path": top + "/mail/${auth_user}/"},
        ] + relay_routes()[1:]
        o, ports = tls_overrides(pki, routes=routes)
        d = daemon_factory(o)
        for user, password in (("bob", PASSWORD), ("carol", PASSWORD)):
            with smtplib.SMTP("127.0.0.1", ports["submission"],
                              timeout=10) as s:
                s.starttls(context=client_ctx())
                s.login(user, password)
                s.sendmail(user + "@sender.example", ["x@example.test"],
                           make_message("from " + user))
        for user in ("bob", "carol"):
            new = os.path.join(top, "mail", user, "new")
            assert wait_for(lambda: os.path.isdir(new) and
                            len(os.listdir(new)) == 1, 10.0), d.log()[-2000:]
            with open(os.path.join(new, os.listdir(new)[0]), "rb") as f:
                assert b"Subject: from " + user.encode() in f.read()
        # unauthenticated, the route does not apply: local debug instead
        c = raw_starttls(ports["mx"])
        ehlo(c)
        qid = send_one(c, rcpt="x@example.test")
        c.close()
        assert "id=%s debug" % qid in d.log() or wait_for(
            lambda: "id=%s debug" % qid in d.log(), 5.0)
        assert sorted(os.listdir(os.path.join(top, "mail"))) == \
            ["bob", "carol"]
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_auth_from_sqlite(daemon_factory, pki, tmp_path):
    r = openssl("passwd", "-6", "db secret")
    dbdir = tempfile.mkdtemp(prefix="mxgate-users-", dir="/tmp")
    os.chmod(dbdir, 0o755)
    db = os.path.join(dbdir, "users.db")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (name TEXT PRIMARY KEY,"
                " password_hash TEXT NOT NULL)")
    con.execute("INSERT INTO users VALUES ('dora', ?)", (r.stdout.strip(),))
    con.commit()
    con.close()
    os.chmod(db, 0o644)
    try:
        o, ports = tls_overrides(pki)
        o["auth"] = {"sqlite": db, "failure_delay": 0}
        d = daemon_factory(o)
        c = raw_implicit(ports["submissions"])
        c.line()
        ehlo(c)
        assert c.cmd("AUTH PLAIN " + b64("\0dora\0nope")) == \
            "535 5.7.8 Authentication credentials invalid"
        assert c.cmd("AUTH PLAIN " + b64("\0dora\0db secret")) == \
            "235 2.7.0 Authentication successful"
        c.close()
        # opened read-only: nothing was created beside it
        assert sorted(os.listdir(dbdir)) == ["users.db"]
    finally:
        shutil.rmtree(dbdir, ignore_errors=True)


def test_passwd_change_applies_at_once(tlsd, pki):
    r = subprocess.run([mxgatectl_path(), "passwd", "erin", "--file",
                        pki["passwd"]], input="fresh one\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    c = auth_client(tlsd)
    assert c.cmd("AUTH PLAIN " + b64("\0erin\0fresh one")) == \
        "235 2.7.0 Authentication successful"
    c.close()
    with open(pki["passwd"]) as f:
        text = f.read()
    assert text.startswith("# test users\nbob:$6$")
    assert "\ncarol:$y$" in text and "\nerin:$y$" in text


# ---------------------------------------------------------------------------
# Slow handshakes


def test_slow_handshakes_do_not_stall(daemon_factory, pki):
    o, ports = tls_overrides(pki)
    o["limits"] = {"connections_per_ip": 0}
    d = daemon_factory(o)
    stalled = []
    try:
        for i in range(50):
            if i % 2:
                s = socket.create_connection(
                    ("127.0.0.1", ports["submissions"]), timeout=5)
            else:
                c = SMTPRaw("127.0.0.1", ports["mx"])
                c.line()
                ehlo(c)
                assert c.cmd("STARTTLS").startswith("220 ")
                s = c.sock
            # the start of a ClientHello record, then nothing
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            stalled.append(s)
        # A worker stalled by a handshake would wait for it for good
        # (timeouts.command, 300 s): generous bounds still tell.
        t0 = time.monotonic()
        c = SMTPRaw("127.0.0.1", ports["mx"], timeout=15)
        assert c.line().startswith("220 ")
        assert time.monotonic() - t0 < 5.0
        c.close()
        t0 = time.monotonic()
        c = raw_implicit(ports["submissions"])
        assert c.line().startswith("220 ")
        ehlo(c)
        assert c.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD)) == \
            "235 2.7.0 Authentication successful"
        send_one(c)
        c.cmd("QUIT")
        c.close()
        assert time.monotonic() - t0 < 10.0
    finally:
        for s in stalled:
            s.close()
