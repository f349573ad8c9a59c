"""Milters through the daemon (milter_client.h), against real programs
started here: a Python milter (python3-milter, tests/integration/
milter_actions.py) for every action a milter may take, rspamd's milter
proxy refusing GTUBE and adding its headers, and OpenDKIM signing on a
submission route and verifying on an MX route.  Also: a milter that is
down (default_action), one that does not answer in time, and per-route
milters meeting only their routes' recipients.
"""

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import QUEUED_RE, free_port, make_message, queued_id, wait_for

PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))


def wait_listening(port, timeout=15.0):
    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    assert wait_for(up, timeout), "nothing listens on port %d" % port


class Proc:
    """A program of the test's own, stopped by its pid."""

    def __init__(self, argv, log, **kw):
        self.log = log
        self.p = subprocess.Popen(argv, stdout=open(log, "ab"),
                                  stderr=subprocess.STDOUT, **kw)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def pymilter(procs, tmp_path):
    """The action milter on a TCP port: (address, log path)."""
    port = free_port()
    log = str(tmp_path / "milter.log")
    procs.append(Proc([PY, os.path.join(HERE, "milter_actions.py"),
                       "inet:%d@127.0.0.1" % port, log],
                      str(tmp_path / "milter.out")))
    wait_listening(port)
    return "inet:127.0.0.1:%d" % port, log


def milter_settings(address, **kw):
    m = {"name": "test", "address": address}
    m.update(kw)
    return {"milters": [m], "smtp_milters": ["test"]}


def send(d, subject, rcpts=("bob@example.test",), sender="alice@sender.example",
         extra_headers=""):
    msg = make_message(subject, rcpt=rcpts[0], sender=sender)
    if extra_headers:
        msg = extra_headers + msg
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                return code, text.decode()
        code, text = s.data(msg.encode())
        return code, text.decode()


def content(d, qid):
    rows = d.db("SELECT content FROM message_contents WHERE message_id = ?",
                (qid,))
    return bytes(rows[0][0]).decode()


def rcpts_of(d, qid):
    return sorted((r[0], r[1]) for r in d.db(
        "SELECT address, state FROM recipients WHERE message_id = ?", (qid,)))


# ---------------------------------------------------------------------------
# The Python milter: every action

def test_milter_sees_the_session_and_its_macros(daemon_factory, pymilter):
    address, log = pymilter
    d = daemon_factory(milter_settings(address))
    code, text = send(d, "plain")
    assert code == 250, text
    qid = queued_id("250 " + text)
    c = content(d, qid)
    # What libmilter was told, callback by callback.
    seen = open(log).read()
    assert "connect 127.0.0.1" in seen
    assert "helo client.example" in seen
    assert "mail <alice@sender.example>" in seen
    assert "rcpt <bob@example.test>" in seen
    assert "eom plain" in seen
    # The macros milters rely on, with our values.
    macros = [l for l in c.splitlines() if l.startswith("X-Macros:")][0]
    assert "i=%s" % qid in macros
    assert "j=mx.test.example" in macros
    assert "{client_addr}=127.0.0.1" in macros
    assert "{mail_addr}=alice@sender.example" in macros
    assert "{rcpt_mailer}=relay" in macros


def test_milter_header_actions(daemon_factory, pymilter):
    address, _ = pymilter
    d = daemon_factory(milter_settings(address))
    code, text = send(d, "headers",
                      extra_headers="X-Change-Me: old\r\nX-Delete-Me: x\r\n")
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    head = c.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    assert lines[0] == "X-Inserted: on top"
    assert "X-Change-Me: changed" in lines
    assert not any(l.startswith("X-Delete-Me") for l in lines)
    # Added fields come last, in the order they were added.
    assert lines[-2] == "X-Macros: " + lines[-2][len("X-Macros: "):]
    assert lines[-1] == "X-Added: appended"
    assert c.endswith("body line 2 of headers\r\n")


def test_milter_recipients_body_and_sender(daemon_factory, pymilter):
    address, _ = pymilter
    d = daemon_factory(milter_settings(address))
    code, text = send(d, "rcpts", rcpts=("bob@example.test",
                                         "drop@example.test"))
    assert code == 250, text
    qid = queued_id("250 " + text)
    assert [a for a, _ in rcpts_of(d, qid)] == ["added@example.test",
                                                "bob@example.test"]
    route = d.db("SELECT route FROM recipients WHERE address = ?",
                 ("added@example.test",))
    assert route == [("accepted",)]

    code, text = send(d, "body")
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    assert c.endswith("\r\n\r\nreplaced body line 1\r\nline 2\r\n")

    code, text = send(d, "chgfrom")
    assert code == 250, text
    qid = queued_id("250 " + text)
    assert d.db("SELECT sender FROM messages WHERE id = ?", (qid,)) == \
        [("changed@sender.example",)]


def test_milter_quarantine_holds_the_message(daemon_factory, pymilter):
    address, _ = pymilter
    d = daemon_factory(milter_settings(address))
    code, text = send(d, "quarantine")
    assert code == 250, text
    qid = queued_id("250 " + text)
    assert rcpts_of(d, qid) == [("bob@example.test", "held")]
    ev = d.db("SELECT kind, detail FROM events WHERE message_id = ?", (qid,))
    assert ev == [("held", "milter=test held by the test milter")]
    # Held for good: nothing tries it until the operator releases it.
    time.sleep(1.5)
    assert rcpts_of(d, qid) == [("bob@example.test", "held")]
    r = d.ctl("queue", "release", qid)
    assert r.returncode == 0, r.stderr
    assert rcpts_of(d, qid)[0][1] != "held"


def test_milter_refusals(daemon_factory, pymilter):
    address, _ = pymilter
    d = daemon_factory(milter_settings(address))
    code, text = send(d, "x", rcpts=("reject-me@example.test",))
    assert code == 550 and "5.7.1 recipient refused by test milter" in text
    code, text = send(d, "tempfail")
    assert code == 451 and text.startswith("4.7.1"), text
    code, text = send(d, "reply")
    assert code == 550 and "5.7.0 refused by the test milter" in text
    before = d.db("SELECT count(*) FROM messages")[0][0]
    code, text = send(d, "discard")
    assert (code, text) == (250, "2.0.0 Ok: discarded")
    assert d.db("SELECT count(*) FROM messages")[0][0] == before
    assert "message discarded: milter=test" in d.log()


def test_milter_discard_at_connect_or_helo(daemon_factory, pymilter):
    """SMFIR_DISCARD at CONNECT or HELO is for the whole session: every
    message of it is answered 250 and not queued, logged with the
    milter's name, and the milter is asked nothing more; the next
    session is not affected."""
    address, log = pymilter
    d = daemon_factory(milter_settings(address))
    for helo, source in (("discard-session.example", "127.0.0.1"),
                         ("client.example", "127.0.0.5")):
        with smtplib.SMTP(d.host, d.port, timeout=30,
                          source_address=(source, 0)) as s:
            s.ehlo(helo)
            s.mail("a@sender.example")
            s.rcpt("bob@example.test")
            s.rset()
            for i in range(2):
                s.mail("a@sender.example")
                assert s.rcpt("bob@example.test")[0] == 250
                assert s.data(make_message("m%d" % i).encode()) == \
                    (250, b"2.0.0 Ok: discarded")
    assert d.db("SELECT count(*) FROM messages")[0][0] == 0
    text = d.log()
    assert text.count("message discarded: milter=test (at the connection: "
                      "every message of the session)") == 4, text
    seen = open(log).read()
    assert "helo discard-session.example" in seen
    assert "mail" not in seen and "eom" not in seen, seen
    code, text = send(d, "after")
    assert code == 250 and "queued as" in text, text
    assert d.db("SELECT count(*) FROM messages")[0][0] == 1


def test_milter_several_messages_in_a_session(daemon_factory, pymilter):
    """The conversation goes on across messages and RSET (SMFIC_ABORT)."""
    address, log = pymilter
    d = daemon_factory(milter_settings(address))
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("a@sender.example")
        s.rcpt("bob@example.test")
        s.rset()
        for i in range(3):
            s.sendmail("a@sender.example", ["bob@example.test"],
                       make_message("m%d" % i))
    assert d.db("SELECT count(*) FROM messages")[0][0] == 3
    seen = open(log).read()
    assert seen.count("helo client.example") == 1
    assert "abort" in seen
    for i in range(3):
        assert "eom m%d" % i in seen


def test_milter_down_default_actions(daemon_factory):
    dead = "inet:127.0.0.1:%d" % free_port()
    d = daemon_factory(milter_settings(dead))
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.ehlo("client.example")
        code, text = s.mail("a@sender.example")
    assert code == 451 and text.decode().startswith("4.7.1"), text
    assert "milter=test" in d.log() and "default tempfail" in d.log()

    d2 = daemon_factory(milter_settings(dead, default_action="accept"))
    code, text = send(d2, "down")
    assert code == 250, text

    d3 = daemon_factory(milter_settings(dead, default_action="reject"))
    with smtplib.SMTP(d3.host, d3.port, timeout=30) as s:
        s.ehlo("client.example")
        code, _ = s.mail("a@sender.example")
    assert code == 550


def test_milter_timeout(daemon_factory):
    """A milter that accepts connections and never answers (once the
    daemon is up: its start-up probe must get its banner)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    held, silent = [], threading.Event()
    stop = threading.Event()

    def serve():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except socket.timeout:
                continue
            if silent.is_set():
                held.append(c)
            else:
                c.close()
    t = threading.Thread(target=serve)
    t.start()
    try:
        d = daemon_factory(milter_settings("inet:127.0.0.1:%d" % port,
                                           connect_timeout=1))
        silent.set()
        t0 = time.monotonic()
        with smtplib.SMTP(d.host, d.port, timeout=30) as s:
            s.ehlo("client.example")
            code, _ = s.mail("a@sender.example")
        assert code == 451
        assert time.monotonic() - t0 < 8
        assert held, "the milter was not asked"
        assert "no answer in time" in d.log()
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        lsock.close()


def test_milter_on_a_unix_socket(daemon_factory, procs, request):
    """unix: milters are reached from inside the chrooted workers, their
    directory mounted read-only there (sandbox.h)."""
    top = tempfile.mkdtemp(prefix="mxgate-milter-", dir="/tmp")
    os.chmod(top, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    sock = os.path.join(top, "milter.sock")
    log = os.path.join(top, "milter.log")
    procs.append(Proc([PY, os.path.join(HERE, "milter_actions.py"),
                       "unix:" + sock, log], os.path.join(top, "out")))
    assert wait_for(lambda: os.path.exists(sock), 15)
    os.chmod(sock, 0o666)      # the workers' user connects to it
    d = daemon_factory(milter_settings("unix:" + sock))
    code, text = send(d, "headers")
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    assert "X-Added: appended" in c
    # The milter heard the whole session through the mount.
    assert "helo client.example" in open(log).read()


def test_milter_per_route(daemon_factory, pymilter):
    """A route's milter meets its recipients only, and joins late."""
    address, log = pymilter
    d = daemon_factory({
        "milters": [{"name": "test", "address": address}],
        "routes": [
            {"name": "filtered", "rcpt": r"^f.*@example\.test$",
             "action": "relay", "upstream": "parked", "milters": ["test"]},
            {"name": "accepted", "rcpt": r"@example\.test$",
             "action": "relay", "upstream": "parked"},
        ]})
    code, text = send(d, "plain", rcpts=("bob@example.test",))
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    assert "X-Macros:" not in c
    assert not os.path.exists(log) or "connect" not in open(log).read()
    code, text = send(d, "plain", rcpts=("bob@example.test",
                                         "fred@example.test"))
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    assert "X-Macros:" in c
    seen = open(log).read()
    # Told the session it missed, then its recipient only.
    assert "connect 127.0.0.1" in seen and "helo client.example" in seen
    assert "rcpt <fred@example.test>" in seen
    assert "rcpt <bob@example.test>" not in seen


def test_milter_config_errors(tmp_path):
    from conftest import mxgated_path
    conf = tmp_path / "bad.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1"; port = 2525; } );\n'
        'milters = ( { name = "a"; address = "tcp:1.2.3.4"; } );\n'
        'smtp_milters = [ "b" ];\n'
        'routes = ( { rcpt = ".*"; action = "discard"; milters = [ "c" ];'
        ' policy_service = "nope"; } );\n')
    r = subprocess.run([mxgated_path(), "-n", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "bad.conf:2:" in r.stderr and "unix:" in r.stderr
    assert "bad.conf:3: 'smtp_milters[0]': no milter named \"b\"" in r.stderr
    assert "'routes[0].milters[0]': no milter named \"c\"" in r.stderr
    assert "'routes[0].policy_service': no service named \"nope\"" in r.stderr


# ---------------------------------------------------------------------------
# rspamd: its milter proxy (worker "rspamd_proxy" with milter = yes),
# scanning itself, from the Debian package's configuration with a private
# directory of overrides, database and logs.

GTUBE = ("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")


@pytest.fixture(scope="module")
def rspamd():
    if shutil.which("rspamd") is None:
        pytest.skip("rspamd is not installed (contrib/install-deps.sh)")
    top = tempfile.mkdtemp(prefix="mxgate-rspamd-", dir="/tmp")
    port = free_port()
    for sub in ("local.d", "override.d", "db", "run", "log"):
        os.mkdir(os.path.join(top, sub))

    def write(name, text):
        with open(os.path.join(top, name), "w") as f:
            f.write(text)
    write("local.d/worker-proxy.inc",
          'bind_socket = "127.0.0.1:%d";\nmilter = yes;\ntimeout = 120s;\n'
          'upstream "local" { default = yes; self_scan = yes; }\n'
          'count = 1;\n' % port)
    for w in ("worker-normal.inc", "worker-controller.inc",
              "worker-fuzzy.inc"):
        write("override.d/" + w, "enabled = false;\n")
    write("local.d/logging.inc", 'type = "file";\nfilename = "%s/log/'
          'rspamd.log";\nlevel = "info";\n' % top)
    write("local.d/options.inc", 'pidfile = "%s/run/rspamd.pid";\n'
          'dns { timeout = 1s; retransmits = 1; }\n' % top)
    write("local.d/milter_headers.conf",
          'use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];\n'
          'skip_local = false;\nskip_authenticated = false;\n')
    p = Proc(["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c",
              "/etc/rspamd/rspamd.conf", "--var=LOCAL_CONFDIR=" + top,
              "--var=DBDIR=%s/db" % top, "--var=RUNDIR=%s/run" % top,
              "--var=LOGDIR=%s/log" % top], os.path.join(top, "out"))
    try:
        # It compiles its rules first: tens of seconds on a busy machine.
        wait_listening(port, timeout=400)
        yield "inet:127.0.0.1:%d" % port
    finally:
        p.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_rspamd_rejects_gtube_and_adds_its_headers(daemon_factory, rspamd):
    d = daemon_factory(milter_settings(rspamd, content_timeout=120))
    msg = make_message("gtube") + GTUBE + "\r\n"
    with smtplib.SMTP(d.host, d.port, timeout=120) as s:
        s.ehlo("client.example")
        s.mail("alice@sender.example")
        s.rcpt("bob@example.test")
        code, text = s.data(msg.encode())
    assert code == 554 or code == 550, (code, text)
    assert b"5.7.1" in text
    assert d.db("SELECT count(*) FROM messages")[0][0] == 0

    code, text = send(d, "an ordinary message")
    assert code == 250, text
    c = content(d, queued_id("250 " + text))
    head = c.split("\r\n\r\n", 1)[0]
    assert "\r\nX-Spamd-Result: default: False" in head, head
    assert "\r\nX-Rspamd-Queue-Id: " in head


# ---------------------------------------------------------------------------
# OpenDKIM: one instance signs (the submission route's milter), another
# verifies (the MX route's); the verifier reads the public key from the
# key file opendkim-genkey wrote, through its TestPublicKeys option.

def opendkim(procs, top, name, mode, extra):
    port = free_port()
    conf = os.path.join(top, name + ".conf")
    with open(conf, "w") as f:
        f.write("Syslog no\nSocket inet:%d@127.0.0.1\nMode %s\n"
                "PidFile %s/%s.pid\nCanonicalization relaxed/relaxed\n"
                "UserID root\nRequireSafeKeys false\n%s" % (port, mode, top, name,
                                                     extra))
    procs.append(Proc(["opendkim", "-f", "-x", conf],
                      os.path.join(top, name + ".log")))
    wait_listening(port)
    return "inet:127.0.0.1:%d" % port


@pytest.fixture
def dkim_pair(procs, tmp_path):
    if shutil.which("opendkim") is None:
        pytest.skip("opendkim is not installed (contrib/install-deps.sh)")
    top = str(tmp_path)
    subprocess.run(["opendkim-genkey", "-D", top, "-d", "sender.example",
                    "-s", "sel", "-b", "2048"], check=True, timeout=60)
    key = os.path.join(top, "sel.private")
    os.chmod(key, 0o600)
    # sel.txt is a zone file line: "sel._domainkey IN TXT ( "v=DKIM1; ..." )"
    txt = open(os.path.join(top, "sel.txt")).read()
    record = "".join(txt[txt.index("(") + 1:txt.index(")")].split('"')[1::2])
    with open(os.path.join(top, "keys"), "w") as f:
        f.write("sel._domainkey.sender.example %s\n" % record)
    sign = opendkim(procs, top, "sign", "s",
                    "Domain sender.example\nSelector sel\nKeyFile %s\n" % key)
    verify = opendkim(procs, top, "verify", "v",
                      "InternalHosts 192.0.2.250\nTestPublicKeys %s/keys\n"
                      "AuthservID verifier.test.example\n"
                      "AlwaysAddARHeader yes\n" % top)
    return sign, verify


def auth_listener(top):
    """AUTH on the listener; top: a directory the lookup user can read
    (pytest's are root's alone)."""
    passwd = os.path.join(top, "passwd")
    h = subprocess.run(["openssl", "passwd", "-6", "s3cret"],
                       capture_output=True, text=True, check=True,
                       timeout=30).stdout.strip()
    with open(passwd, "w") as f:
        f.write("alice:%s\n" % h)
    os.chmod(passwd, 0o644)
    return {"listen": [{"address": "127.0.0.1", "port": free_port(),
                        "role": "mx", "auth": True,
                        "allow_plaintext_auth": True}],
            "auth": {"passwd_file": passwd, "failure_delay": 0}}


def test_opendkim_signs_on_submission_and_verifies_on_mx(daemon_factory,
                                                          dkim_pair, request):
    sign, verify = dkim_pair
    top = tempfile.mkdtemp(prefix="mxgate-auth-", dir="/tmp")
    os.chmod(top, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    settings = auth_listener(top)
    settings.update({
        "milters": [{"name": "dkim_sign", "address": sign},
                    {"name": "dkim_verify", "address": verify}],
        "routes": [
            {"name": "submission", "rcpt": ".*", "authenticated": True,
             "action": "relay", "upstream": "parked",
             "milters": ["dkim_sign"]},
            {"name": "mx", "rcpt": r"@example\.test$", "action": "relay",
             "upstream": "parked", "milters": ["dkim_verify"]},
        ]})
    d = daemon_factory(settings)
    msg = make_message("signed", sender="alice@sender.example",
                       rcpt="carol@far.example")
    with smtplib.SMTP(d.host, d.port, timeout=60) as s:
        s.ehlo("client.example")
        s.login("alice", "s3cret")
        s.mail("alice@sender.example")
        s.rcpt("carol@far.example")
        code, text = s.data(msg.encode())
    assert code == 250, text
    signed = content(d, queued_id("250 " + text.decode()))
    assert "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; " \
        "d=sender.example; s=sel;" in signed.replace("\r\n\t", " "), signed

    # The signed message, as another MX would receive it from us.
    code, text = send_raw(d, signed, "alice@sender.example",
                          "bob@example.test")
    assert code == 250, text
    verified = content(d, queued_id("250 " + text))
    ar = [l for l in verified.replace("\r\n\t", " ").split("\r\n")
          if l.startswith("Authentication-Results: verifier.test.example")]
    assert ar and "dkim=pass" in ar[0], verified

    # Changed in transit: the verifier says so.
    code, text = send_raw(d, signed.replace("body line 1", "body line X"),
                          "alice@sender.example", "bob@example.test")
    assert code == 250, text
    broken = content(d, queued_id("250 " + text))
    assert "dkim=fail" in broken or "dkim=neutral" in broken, broken


def send_raw(d, msg, sender, rcpt):
    with smtplib.SMTP(d.host, d.port, timeout=60) as s:
        s.ehlo("client.example")
        s.mail(sender)
        s.rcpt(rcpt)
        code, text = s.data(msg.encode())
    return code, text.decode()
