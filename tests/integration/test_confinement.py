"""What the kernel enforces (README, "Processes and what the kernel
enforces"), read from /proc: each process's user, capabilities,
no_new_privs, seccomp mode and root directory; as each unprivileged user,
the queue, a TLS key and the credentials cannot be opened; a worker that
makes a forbidden system call dies alone and is replaced; configurations
that would let the workers reach the queue are refused; a queue under a
0700 directory (a clone in /root) works."""

import os
import pwd
import shutil
import stat
import smtplib
import sqlite3
import subprocess
import tempfile

import pytest

from conftest import (free_port, make_message, mxgated_path, queued_id,
                      read_banner, wait_for)

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: users and chroot")

SRC_TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(SRC_TOP, "tests", "unit", "data")

SMTP_USER = "mxgate-smtp"
QUEUE_USER = "mxgate"
DELIVERY_USER = "mxgate-deliver"
LOOKUP_USER = "mxgate-auth"


def build_dir():
    return os.path.dirname(os.path.dirname(mxgated_path()))


def status(pid):
    """/proc/PID/status as {field: value}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def uid_of(user):
    return pwd.getpwnam(user).pw_uid


def assert_confined(pid, user, root, seccomp):
    st = status(pid)
    assert [int(x) for x in st["Uid"].split()] == [uid_of(user)] * 4, st
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[caps], 16) == 0, (caps, st[caps])
    assert st["NoNewPrivs"] == "1", st
    assert st["Seccomp"] == seccomp, st
    assert os.readlink("/proc/%d/root" % pid) == root


def test_each_process_confined(daemon):
    assert wait_for(lambda: len(daemon.smtp_pids()) == 2, 5.0)
    master = status(daemon.pid)
    assert master["Uid"].split()[0] == "0"
    chroot = daemon.settings["server"]["chroot_dir"]
    for p in daemon.smtp_pids():
        # 2: a seccomp filter
        assert_confined(p, SMTP_USER, chroot, "2")
        assert int(status(p)["CapBnd"], 16) == 0
    for p in daemon.queue_pids():
        # 2: its deny-list (inherited by the delivery processes)
        assert_confined(p, QUEUE_USER, daemon.queue_dir, "2")
        assert os.readlink("/proc/%d/cwd" % p) == daemon.queue_dir
    # The workers' root: root's, not writable by others, nothing in it
    # but the resolver's files.
    st = os.stat(chroot)
    assert st.st_uid == 0 and st.st_mode & 0o022 == 0
    assert sorted(os.listdir(chroot)) == ["etc", "run"]
    assert set(os.listdir(os.path.join(chroot, "etc"))) <= {
        "resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf"}
    # The queue directory is the queue user's alone.
    st = os.stat(daemon.queue_dir)
    assert st.st_uid == uid_of(QUEUE_USER) and st.st_mode & 0o777 == 0o700


def try_open_as(user, paths):
    """{path: errno name or "opened"} for each path opened as user."""
    code = ("import os, sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        os.close(os.open(p, os.O_RDONLY))\n"
            "        print('opened')\n"
            "    except OSError as e:\n"
            "        print(type(e).__name__)\n")
    pw = pwd.getpwnam(user)

    def drop():
        os.setgroups([pw.pw_gid])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    r = subprocess.run(["/usr/bin/python3", "-c", code] + list(paths),
                       preexec_fn=drop, capture_output=True, text=True,
                       timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    return dict(zip(paths, r.stdout.split()))


def test_users_cannot_open_what_is_not_theirs(daemon_factory, tmp_path):
    secret = tempfile.mkdtemp(prefix="mxgate-secret-", dir="/tmp")
    try:
        os.chmod(secret, 0o755)
        key = os.path.join(secret, "key.pem")
        # As the README asks of keys: root's alone (the master reads
        # them before anything forks).
        with open(key, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\n")
        os.chmod(key, 0o600)
        passwd = os.path.join(secret, "passwd")
        with open(passwd, "w") as f:
            f.write("alice:$6$x$y\n")
        os.chown(passwd, 0, pwd.getpwnam(LOOKUP_USER).pw_gid)
        os.chmod(passwd, 0o640)
        d = daemon_factory()
        db = d.db_path
        got = {u: try_open_as(u, [db, key, passwd])
               for u in (SMTP_USER, DELIVERY_USER, LOOKUP_USER, QUEUE_USER)}
        for u in (SMTP_USER, DELIVERY_USER, LOOKUP_USER):
            assert got[u][db] == "PermissionError", (u, got[u])
        for u in (SMTP_USER, DELIVERY_USER, LOOKUP_USER, QUEUE_USER):
            assert got[u][key] == "PermissionError", (u, got[u])
        for u in (SMTP_USER, DELIVERY_USER, QUEUE_USER):
            assert got[u][passwd] == "PermissionError", (u, got[u])
        assert got[QUEUE_USER][db] == "opened"
        assert got[LOOKUP_USER][passwd] == "opened"
    finally:
        shutil.rmtree(secret, ignore_errors=True)


def test_forbidden_system_call_kills_only_that_worker(daemon_factory):
    plugin = os.path.join(build_dir(), "plugins", "forbidden.so")
    d = daemon_factory({"plugins": [{"path": plugin}]})
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0)
    before = set(d.smtp_pids())
    # The first session goes to one worker, the second (least loaded)
    # to the other, whose plugin then makes the forbidden call.
    with d.raw() as a, d.raw() as b:
        assert a.line().startswith("220")
        assert b.line().startswith("220")
        assert a.cmd("EHLO client.example").startswith("250")
        b.send("EHLO forbidden.example\r\n")
        assert b.closed_by_peer(10.0)
        assert wait_for(lambda: "killed by signal 31" in d.log(), 10.0), \
            d.log()[-3000:]
        # replaced
        assert wait_for(lambda: len(d.smtp_pids()) == 2
                        and set(d.smtp_pids()) != before, 10.0)
        # the other session goes on, to the end of a message
        assert a.cmd("MAIL FROM:<alice@sender.example>").startswith("250")
        assert a.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert a.cmd("DATA").startswith("354")
        a.send(make_message("after the kill").replace("\r\n.", "\r\n..")
               + ".\r\n")
        qid = queued_id(a.line())
        assert a.cmd("QUIT").startswith("221")
    assert d.db("SELECT count(*) FROM messages WHERE id = ?", (qid,)) \
        == [(1,)]


def start_fails(tmp_path, server, extra=""):
    conf = tmp_path / "mxgate.conf"
    conf.write_text(
        "server = { %s };\n"
        'listen = ( { address = "127.0.0.1"; port = %d; } );\n'
        'queue = { directory = "%s"; };\n%s'
        % (" ".join('%s = "%s";' % kv for kv in server.items()),
           free_port(), tmp_path / "q", extra))
    r = subprocess.run([mxgated_path(), "-f", "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    return r.stderr


def test_workers_sharing_the_queue_user_refused(tmp_path):
    err = start_fails(tmp_path, {"user": "mxgate",
                                 "chroot_dir": str(tmp_path / "empty")})
    assert ('server.user "mxgate" is the queue\'s user (server.queue_user'
            ' "mxgate"): the smtp workers could open the queue database'
            in err), err
    err = start_fails(tmp_path, {"delivery_user": "mxgate-smtp",
                                 "queue_user": "mxgate-smtp",
                                 "chroot_dir": str(tmp_path / "empty")})
    assert "server.user \"mxgate-smtp\" is the queue's user" in err, err


def test_queue_acl_for_workers_is_masked():
    # A queue directory an ACL opens to the workers' user: the start makes
    # it 0700, whose ACL mask then grants that entry nothing, so the
    # workers still cannot list it.  Not under pytest's tmp_path: its
    # 0700 parents would stop the workers' user before the ACL counts.
    import pathlib
    top = pathlib.Path(tempfile.mkdtemp(prefix="mxgate-acl-", dir="/tmp"))
    proc = None
    try:
        os.chmod(top, 0o755)
        q = top / "q"
        q.mkdir()
        if subprocess.run(["setfacl", "-m", "u:%s:rx" % SMTP_USER, str(q)],
                          capture_output=True).returncode != 0:
            pytest.skip("this file system has no ACL support")
        as_worker = ["su", "-s", "/bin/sh", SMTP_USER, "-c", "ls %s" % q]
        assert subprocess.run(as_worker, capture_output=True).returncode == 0
        port = free_port()
        conf = top / "mxgate.conf"
        conf.write_text(
            'server = { chroot_dir = "%s"; };\n'
            'listen = ( { address = "127.0.0.1"; port = %d; } );\n'
            'queue = { directory = "%s"; };\n' % (top / "empty", port, q))
        proc = subprocess.Popen([mxgated_path(), "-f", "-c", str(conf)],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        assert wait_for(lambda: (read_banner("127.0.0.1", port) or "")
                        .startswith("220"), 15.0)
        assert stat.S_IMODE(os.stat(q).st_mode) == 0o700
        assert subprocess.run(as_worker, capture_output=True).returncode != 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(top, ignore_errors=True)


def test_writable_chroot_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o777)
    err = start_fails(tmp_path, {"chroot_dir": str(empty)})
    assert ("server.chroot_dir: %s must be a directory of root's that root"
            " alone can write" % empty) in err, err


def test_readme_first_command_in_a_0700_tree():
    """The README's first command from a clone inside a 0700 directory
    (as /root is): the built binary and the sample configuration, the
    queue in ./var/queue under it."""
    top = tempfile.mkdtemp(prefix="mxgate-0700-", dir="/tmp")
    try:
        os.chmod(top, 0o700)
        build = os.path.join(top, "clone", "build")
        os.makedirs(os.path.join(build, "src"))
        os.makedirs(os.path.join(top, "clone", "etc"))
        shutil.copy(mxgated_path(), os.path.join(build, "src", "mxgated"))
        port = free_port()
        with open(os.path.join(SRC_TOP, "etc", "mxgate.conf")) as f:
            conf = f.read()
        assert "port = 2525;" in conf
        conf = conf.replace("port = 2525;", "port = %d;" % port, 1)
        with open(os.path.join(top, "clone", "etc", "mxgate.conf"), "w") as f:
            f.write(conf)
        log = open(os.path.join(top, "mxgated.log"), "wb")
        proc = subprocess.Popen(["src/mxgated", "-f", "-c",
                                 "../etc/mxgate.conf"], cwd=build,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: proc.poll() is not None or (
                (read_banner("127.0.0.1", port) or "").startswith("220")),
                15.0)
            assert proc.poll() is None, open(log.name).read()
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("alice@sender.example")
                s.rcpt("bob@example.test")
                code, resp = s.data(make_message("in a 0700 tree"))
            assert code == 250, (code, resp)
            qid = queued_id("%d %s" % (code, resp.decode()))
            db = os.path.join(build, "var", "queue", "queue.db")
            con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
            try:
                rows = con.execute("SELECT count(*) FROM messages WHERE"
                                   " id = ?", (qid,)).fetchall()
            finally:
                con.close()
            assert rows == [(1,)]
            assert "respawns" not in open(log.name).read()
            # ... and delivered to the sample's maildir under the tree,
            # which the delivery user reaches from the start directory
            # although it cannot search the 0700 directory above.
            new = os.path.join(build, "var", "mail", "example.test", "bob",
                               "new")
            assert wait_for(lambda: os.path.isdir(new) and
                            len(os.listdir(new)) == 1, 15.0), \
                open(log.name).read()[-3000:]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_credentials_only_in_the_lookup_process(daemon_factory):
    """AUTH with a passwd file only the lookup user can read: the
    workers ask the lookup process, which is confined too."""
    import base64
    secret = tempfile.mkdtemp(prefix="mxgate-lookup-", dir="/tmp")
    try:
        os.chmod(secret, 0o755)
        passwd = os.path.join(secret, "passwd")
        h = subprocess.run(["openssl", "passwd", "-6", "s3cret"],
                           capture_output=True, text=True, check=True,
                           timeout=30).stdout.strip()
        with open(passwd, "w") as f:
            f.write("alice:%s\n" % h)
        os.chown(passwd, 0, pwd.getpwnam(LOOKUP_USER).pw_gid)
        os.chmod(passwd, 0o640)
        port = free_port()
        d = daemon_factory({
            "listen": [{"address": "127.0.0.1", "port": port, "role": "mx",
                        "auth": True, "allow_plaintext_auth": True}],
            "auth": {"passwd_file": passwd, "failure_delay": 0},
        })
        lookup = [p for p, t in d.titles().items()
                  if t.startswith("mxgated: lookup")]
        assert len(lookup) == 1, d.titles()
        assert_confined(lookup[0], LOOKUP_USER, "/", "2")
        with d.raw() as c:
            c.line()
            assert c.cmd("EHLO client.example").startswith("250")
            plain = base64.b64encode(b"\0alice\0wrong").decode()
            assert c.cmd("AUTH PLAIN " + plain).startswith("535")
            plain = base64.b64encode(b"\0alice\0s3cret").decode()
            assert c.cmd("AUTH PLAIN " + plain).startswith("235")
        # A lookup process that dies is replaced, and AUTH works again.
        os.kill(lookup[0], 9)
        assert wait_for(lambda: [p for p, t in d.titles().items()
                                 if t.startswith("mxgated: lookup")
                                 and p != lookup[0]], 10.0)
        assert wait_for(lambda: "new lookup channel" in d.log(), 10.0)
        with d.raw() as c:
            c.line()
            assert c.cmd("EHLO client.example").startswith("250")
            plain = base64.b64encode(b"\0alice\0s3cret").decode()
            assert c.cmd("AUTH PLAIN " + plain).startswith("235")
    finally:
        shutil.rmtree(secret, ignore_errors=True)


def test_deliveries_inherit_the_queue_deny_list(daemon_factory):
    """A pipe command runs under the queue's filter: the calls it refuses
    fail with EPERM (here unshare(2), which needs no privilege
    otherwise), and the command's ordinary work goes on."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    d = daemon_factory({
        "routes": [{"name": "ns", "rcpt": r"@ns\.test$", "action": "pipe",
                    "command": [shutil.which("unshare"), "--user", "true"]},
                   {"name": "plain", "rcpt": r"@plain\.test$",
                    "action": "pipe", "command": ["/bin/cat"]}],
        "delivery": {"retry_schedule": [3600], "keep_delivered": "1d"},
    })
    with smtplib.SMTP(d.host, d.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail("alice@sender.example")
        s.rcpt("x@ns.test")
        s.rcpt("y@plain.test")
        code, resp = s.data(make_message("deny list"))
        qid = queued_id("%d %s" % (code, resp.decode()))

    def states():
        rows = d.db("SELECT address, state, last_reply FROM recipients"
                    " WHERE message_id = ?", (qid,))
        got = {r[0]: (r[1], r[2]) for r in rows}
        return got if all(v[0] in ("delivered", "bounced")
                          for v in got.values()) and got else None

    got = wait_for(states, 20.0, interval=0.1)
    assert got, d.log()[-3000:]
    assert got["y@plain.test"][0] == "delivered", got
    assert got["x@ns.test"][0] == "bounced", got
    assert "Operation not permitted" in got["x@ns.test"][1], got


def test_delivery_process_runs_as_the_delivery_user(daemon_factory):
    """The delivery spawner (root, nothing else) starts each delivery
    process as mxgate-deliver, confined, in the directory mxgated started
    from (entered as root, so that targets under it stay reachable): it
    reads the message from its descriptor, and cannot open the queue."""
    out = tempfile.mkdtemp(prefix="mxgate-deliver-", dir="/tmp")
    try:
        os.chmod(out, 0o777)
        script = os.path.join(out, "slow.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\ncat > %s/got\nsleep 3\n" % out)
        os.chmod(script, 0o755)
        d = daemon_factory({
            "routes": [{"name": "slow", "rcpt": r"@slow\.test$",
                        "action": "pipe", "command": [script]}],
            "delivery": {"retry_schedule": [3600], "keep_delivered": "1d"},
        })
        spawner = [p for p, t in d.titles().items()
                   if t.startswith("mxgated: spawner")]
        assert len(spawner) == 1, d.titles()
        st = status(spawner[0])
        assert st["Uid"].split()[0] == "0"
        # CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP and nothing else
        want = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
        assert int(st["CapEff"], 16) == want, st["CapEff"]
        assert int(st["CapPrm"], 16) == want, st["CapPrm"]
        assert int(st["CapBnd"], 16) == want, st["CapBnd"]
        assert st["NoNewPrivs"] == "1"
        with smtplib.SMTP(d.host, d.port, timeout=10) as s:
            s.ehlo("client.example")
            s.mail("alice@sender.example")
            s.rcpt("x@slow.test")
            code, resp = s.data(make_message("as the delivery user"))
            qid = queued_id("%d %s" % (code, resp.decode()))
        from conftest import pids_with_parent, proc_cmdline
        kids = wait_for(lambda: [p for p in pids_with_parent(spawner[0])
                                 if proc_cmdline(p).startswith(
                                     "mxgated: delivery")], 10.0)
        assert kids, d.log()[-3000:]
        assert_confined(kids[0], DELIVERY_USER, "/", "2")
        assert os.readlink("/proc/%d/cwd" % kids[0]) == d.dir
        assert wait_for(lambda: d.db("SELECT state FROM recipients WHERE"
                                     " message_id = ?", (qid,))
                        == [("delivered",)], 20.0), d.log()[-3000:]
        with open(os.path.join(out, "got"), "rb") as f:
            assert b"Subject: as the delivery user" in f.read()
        assert os.stat(os.path.join(out, "got")).st_uid == \
            uid_of(DELIVERY_USER)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_route_user(daemon_factory, tmp_path):
    """pipe and maildir routes may name the user they run as (user=, as
    Postfix's pipe); never the queue's."""
    out = tempfile.mkdtemp(prefix="mxgate-routeuser-", dir="/tmp")
    try:
        os.chmod(out, 0o777)
        d = daemon_factory({
            "routes": [
                {"name": "asnobody", "rcpt": r"@nobody\.test$",
                 "action": "pipe", "user": "nobody",
                 "command": ["/bin/sh", "-c", "cat > %s/pipe" % out]},
                {"name": "box", "rcpt": r"@box\.test$", "action": "maildir",
                 "user": "nobody", "path": out + "/mail/${local}/"},
                {"name": "default", "rcpt": r"@default\.test$",
                 "action": "pipe",
                 "command": ["/bin/sh", "-c", "cat > %s/default" % out]},
            ],
            "delivery": {"retry_schedule": [3600], "keep_delivered": "1d"},
        })
        with smtplib.SMTP(d.host, d.port, timeout=10) as s:
            s.ehlo("client.example")
            s.mail("alice@sender.example")
            for r in ("a@nobody.test", "b@box.test", "c@default.test"):
                s.rcpt(r)
            code, resp = s.data(make_message("route user"))
            qid = queued_id("%d %s" % (code, resp.decode()))
        assert wait_for(lambda: d.db(
            "SELECT count(*) FROM recipients WHERE message_id = ? AND"
            " state = 'delivered'", (qid,)) == [(3,)], 20.0), \
            d.log()[-3000:]
        nobody = uid_of("nobody")
        assert os.stat(os.path.join(out, "pipe")).st_uid == nobody
        assert os.stat(os.path.join(out, "mail")).st_uid == nobody
        new = os.path.join(out, "mail", "b", "new")
        assert [os.stat(os.path.join(new, f)).st_uid
                for f in os.listdir(new)] == [nobody]
        assert os.stat(os.path.join(out, "default")).st_uid == \
            uid_of(DELIVERY_USER)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    # The queue's user is refused, like any role sharing it.
    err = start_fails(tmp_path, {"chroot_dir": str(tmp_path / "empty")},
                      'routes = ( { rcpt = ".*"; action = "pipe";'
                      ' user = "mxgate"; command = [ "/bin/true" ]; } );\n')
    assert 'routes[0].user "mxgate" is the queue\'s user' in err, err


def test_new_passwd_file_is_for_the_lookup_user(tmp_path):
    """mxgatectl passwd makes a new file root's, group mxgate-auth, mode
    0640: the lookup process reads it, the workers cannot."""
    from conftest import mxgatectl_path
    path = str(tmp_path / "passwd")
    r = subprocess.run([mxgatectl_path(), "passwd", "erin", "--file", path],
                       input="a password\na password\n", text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = os.stat(path)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o640
    assert st.st_gid == pwd.getpwnam(LOOKUP_USER).pw_gid


def test_daemon_mode_survives_its_filters(tmp_path):
    """Without -f mxgated logs to syslog, and syslog(3) opens a socket
    again whenever /dev/log is not connected (no syslog daemon, or one
    that restarted): the filters must let it try, from every process."""
    from conftest import proc_exists
    top = tempfile.mkdtemp(prefix="mxgate-daemon-", dir="/tmp")
    master = None
    try:
        os.chmod(top, 0o755)
        port = free_port()
        passwd = os.path.join(top, "passwd")
        with open(passwd, "w") as f:
            f.write("bob:*\n")
        os.chmod(passwd, 0o644)
        conf = os.path.join(top, "mxgate.conf")
        with open(conf, "w") as f:
            f.write('server = { hostname = "mx.test"; workers = 1;'
                    ' log_level = "debug"; chroot_dir = "%s/empty"; };\n'
                    'listen = ( { address = "127.0.0.1"; port = %d;'
                    ' auth = true; allow_plaintext_auth = true; } );\n'
                    'auth = { passwd_file = "%s"; failure_delay = 0; };\n'
                    'queue = { directory = "%s/q"; };\n'
                    'routes = ( { rcpt = ".*"; action = "discard"; } );\n'
                    'delivery = { keep_delivered = "1d"; };\n'
                    'trusted_networks = [ "127.0.0.0/8" ];\n'
                    % (top, port, passwd, top))
        r = subprocess.run([mxgated_path(), "-c", conf], timeout=30,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: (read_banner("127.0.0.1", port) or "")
                        .startswith("220"), 15.0)
        lock = os.path.join(top, "q", "queue.lock")
        assert wait_for(lambda: os.path.exists(lock)
                        and open(lock).read().strip(), 10.0)
        queue = int(open(lock).read().split()[0])
        with open("/proc/%d/stat" % queue) as f:
            master = int(f.read().rsplit(")", 1)[1].split()[1])
        import base64
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("client.example")
            code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(
                b"\0bob\0nope").decode())
            assert code == 535
            s.mail("alice@sender.example")
            s.rcpt("x@example.test")
            code, resp = s.data(make_message("daemon mode"))
            assert code == 250, resp
        import time
        time.sleep(1.5)
        from conftest import pids_with_parent, proc_cmdline
        titles = sorted(proc_cmdline(p).split()[1]
                        for p in pids_with_parent(master))
        assert titles == ["lookup", "queue", "smtp", "spawner"], titles
        assert proc_exists(queue), "the queue process died"
    finally:
        if master is None:
            master = daemon_master_in(top)
        if master is not None:
            os.kill(master, 15)
            wait_for(lambda: not proc_exists(master), 30.0)
        shutil.rmtree(top, ignore_errors=True)


def daemon_master_in(top):
    """The master a failed daemon-mode test left: a daemonized mxgated
    (parent init, in /) whose smtp worker's root is top's empty/."""
    from conftest import pids_with_parent, proc_cmdline
    for p in pids_with_parent(1):
        if not proc_cmdline(p).startswith("mxgated: master"):
            continue
        for k in pids_with_parent(p):
            try:
                if os.readlink("/proc/%d/root" % k) == top + "/empty":
                    return p
            except OSError:
                pass
    return None
