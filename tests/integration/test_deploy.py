"""mxgate on a real host: the access checks of mxgated -n and of the start,
the default configuration path, the pid file, logging for the journal,
stray signals, mxgatectl's command line, and `make install`.

Tests that switch users need root (mxgated checks as each role's user:
the queue's "mxgate", delivery's "mxgate-deliver", the lookup process's
"mxgate-auth"); the default-path tests need unshare(1) to put a configuration
at the compiled-in path in a private mount namespace, so that nothing on
the machine changes.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (make_daemon, make_message, mxgatectl_path,
                      mxgated_path, queued_id, read_banner, render_config,
                      wait_for, free_port, default_settings, merge_settings,
                      proc_exists)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (switches users)")


def check(config_path, cwd=None):
    return subprocess.run([mxgated_path(), "-n", "-c", config_path],
                          capture_output=True, text=True, timeout=30, cwd=cwd)


def start_fails(d):
    """Start d's configuration in the foreground; it must exit 1 at once."""
    r = subprocess.run([mxgated_path(), "-f", "-c", d.config_path],
                       capture_output=True, text=True, timeout=30, cwd=d.dir)
    return r


def default_conf_path():
    """The configuration path mxgated was built with (mxgated -h)."""
    r = subprocess.run([mxgated_path(), "-h"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    m = re.search(r"default (/\S+) when it exists", r.stdout)
    assert m, r.stdout
    return m.group(1)


# ---------------------------------------------------------------------------
# mxgated -n: every process's paths, tried as its user

def test_check_ok_names_the_file(daemon_factory):
    d = daemon_factory(start=False)
    r = check(d.config_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "%s: configuration OK" % d.config_path


@needs_root
def test_check_queue_db_of_another_user(daemon_factory):
    """A queue.db left by root (sqlite3 run as root, a restore): the
    queue process could not open it.  -n says so, and so does the start,
    which exits 1 instead of running without a queue."""
    d = daemon_factory(start=False)
    os.makedirs(d.queue_dir)
    with open(d.db_path, "w"):
        pass
    os.chmod(d.db_path, 0o600)
    r = check(d.config_path)
    assert r.returncode == 1, r.stdout + r.stderr
    line = [l for l in r.stderr.splitlines() if d.db_path in l]
    assert line, r.stderr
    assert "queue process (user mxgate)" in line[0], line
    assert "cannot read and write it" in line[0], line
    assert "fix: chown mxgate %s/queue.db*" % d.queue_dir in line[0], line

    r = start_fails(d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "queue process (user mxgate)" in r.stderr, r.stderr
    assert d.db_path in r.stderr and "fix: chown" in r.stderr, r.stderr
    assert "not started" in r.stderr, r.stderr
    assert read_banner(d.host, d.port, timeout=0.3) is None


@needs_root
def test_check_queue_in_a_0700_tree(daemon_factory):
    """A queue under a directory only root can search (a clone in /root):
    the master makes the queue directory and gives it to the queue user,
    and the queue process enters it as root, so the check passes; a
    root-owned queue.db in it is refused."""
    d = daemon_factory(start=False)
    private = os.path.join(d.dir, "private")
    os.mkdir(private, 0o700)
    qdir = os.path.join(private, "queue")
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(
            d.settings, {"queue": {"directory": qdir}})))
    r = check(d.config_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "%s: configuration OK" % d.config_path
    os.mkdir(qdir, 0o700)
    with open(os.path.join(qdir, "queue.db"), "w"):
        pass
    os.chmod(os.path.join(qdir, "queue.db"), 0o644)
    r = check(d.config_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("mxgated: queue process (user mxgate): %s/queue.db: cannot read "
            "and write it: Permission denied (owner root, mode 0644); fix: "
            "chown mxgate %s/queue.db*" % (qdir, qdir)) in r.stderr, r.stderr


def test_check_queue_directory_under_a_file(daemon_factory):
    d = daemon_factory(start=False)
    blocker = os.path.join(d.dir, "afile")
    with open(blocker, "w"):
        pass
    qdir = os.path.join(blocker, "queue")
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(
            d.settings, {"queue": {"directory": qdir}})))
    r = check(d.config_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not a directory" in r.stderr and "queue.directory" in r.stderr, \
        r.stderr
    assert start_fails(d).returncode == 1


@needs_root
def test_check_maildir_unreachable_by_delivery(daemon_factory):
    """A maildir route under a root-only directory: the delivery
    children (user mxgate-deliver) could never reach it.  -n warns, naming the
    route, the directory in the way and the fix; its exit status is the
    start's, and the start goes on with the same warning (the other
    routes work)."""
    d = daemon_factory(start=False)
    private = os.path.join(d.dir, "private")
    os.mkdir(private, 0o700)
    os.makedirs(os.path.join(private, "mail"))
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(d.settings, {"routes": [
            {"name": "boxes", "rcpt": "@example\\.test$",
             "action": "maildir",
             "path": os.path.join(private, "mail", "${local}") + "/"},
            {"name": "rest", "rcpt": ".*", "action": "reject",
             "code": 550, "text": "5.1.1 no"}]})))
    r = check(d.config_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == ("%s: configuration OK, with 1 warning "
                                "(on stderr)" % d.config_path), r.stdout
    line = [l for l in r.stderr.splitlines() if "delivery" in l]
    assert line, r.stderr
    assert line[0].startswith("mxgated: warning: delivery (user mxgate-deliver): ")
    assert "no search permission on %s" % private in line[0], line
    assert "routes[0].path (route boxes)" in line[0], line
    assert "fix: chmod o+x %s" % private in line[0], line

    d.start()
    assert re.search(r"warn.*delivery \(user mxgate-deliver\).*no search "
                     r"permission",
                     d.log()), d.log()


def make_key_and_cert(dirpath):
    key = os.path.join(dirpath, "mx.key")
    cert = os.path.join(dirpath, "mx.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=mx.test.example"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return key, cert


@needs_root
def test_check_warns_about_a_world_readable_key(daemon_factory):
    d = daemon_factory(start=False)
    key, cert = make_key_and_cert(d.dir)
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(d.settings, {
            "tls": {"certificates": [{"cert": cert, "key": key}]}})))
    os.chmod(key, 0o600)
    r = check(d.config_path)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr

    os.chmod(key, 0o644)
    r = check(d.config_path)
    assert r.returncode == 0, r.stderr      # a warning, not an error
    assert "configuration OK, with 1 warning" in r.stdout, r.stdout
    assert ("mxgated: warning: %s: the TLS private key is readable by "
            "every user (mode 0644); fix: chmod 0600 %s" % (key, key)) \
        in r.stderr, r.stderr


@needs_root
def test_check_credentials_unreadable_by_workers(daemon_factory):
    d = daemon_factory(start=False)
    pw = os.path.join(d.dir, "passwd")
    with open(pw, "w") as f:
        f.write("alice:$6$x$y\n")
    os.chmod(pw, 0o600)         # root's: the lookup process cannot read
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(d.settings, {
            "auth": {"passwd_file": pw}})))
    r = check(d.config_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with 1 warning" in r.stdout, r.stdout
    assert re.search(r"warning: lookup process \(user mxgate-auth\): %s: "
                     r"cannot read it: "
                     r"Permission denied \(owner root, mode 0600\); "
                     r"fix: chgrp mxgate-auth %s && chmod g\+r %s"
                     % (re.escape(pw), re.escape(pw), re.escape(pw)),
                     r.stderr), r.stderr


# ---------------------------------------------------------------------------
# One default configuration path

def can_unshare_mount():
    if not ROOT or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True,
                       timeout=10)
    return r.returncode == 0


def in_namespace_with_conf(conf_text, argv, **kw):
    """Run argv in a private mount namespace where the compiled-in default
    configuration path holds conf_text (a tmpfs over its parent's parent,
    e.g. /usr/local/etc)."""
    path = default_conf_path()
    top = os.path.dirname(os.path.dirname(path))
    if not os.path.isdir(top):
        pytest.skip("%s does not exist here" % top)
    script = ('mount -t tmpfs none "$1" && mkdir -p "$(dirname "$2")" && '
              'cat > "$2" && shift 2 && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
            "sh", top, path] + argv, path


@pytest.mark.skipif(not can_unshare_mount(), reason="needs unshare -m (root)")
def test_default_config_path_used_when_it_exists(daemon_factory):
    d = daemon_factory(start=False)
    with open(d.config_path) as f:
        text = f.read()
    argv, path = in_namespace_with_conf(text, [mxgated_path(), "-n"])
    r = subprocess.run(argv, input=text, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "%s: configuration OK" % path

    # The start says which configuration it runs on; mxgatectl, without
    # -c either, finds the same queue.
    argv, path = in_namespace_with_conf(text, [
        "sh", "-c", '"$1" -f & pid=$!; i=0; '
        'while [ ! -e "$3" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; '
        'sleep 0.5; "$2" queue list; echo "ctl=$?"; kill -TERM $pid; wait $pid',
        "sh", mxgated_path(), mxgatectl_path(), d.db_path])
    r = subprocess.run(argv, input=text, capture_output=True, text=True,
                       timeout=60, cwd=d.dir)
    assert "starting with %s" % path in r.stderr, r.stderr
    assert "ctl=0" in r.stdout and "0 messages" in r.stdout, \
        r.stdout + r.stderr


def test_embedded_default_when_no_file():
    path = default_conf_path()
    if os.path.exists(path):
        pytest.skip("%s exists on this machine" % path)
    with tempfile.TemporaryDirectory(prefix="mxgate-it-") as tmp:
        r = subprocess.run([mxgated_path(), "-n"], capture_output=True,
                           text=True, timeout=30, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("embedded default configuration (%s does "
                                "not exist): configuration OK" % path)


# ---------------------------------------------------------------------------
# pid file, logging, signals

def test_pid_file(daemon_factory):
    d = daemon_factory(start=False)
    pidfile = os.path.join(d.dir, "run", "mxgated.pid")
    os.mkdir(os.path.dirname(pidfile))
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(d.settings, {
            "server": {"pid_file": pidfile}})))
    d.start()
    with open(pidfile) as f:
        assert f.read() == "%d\n" % d.pid
    status, _ = d.stop()
    assert status == 0
    assert not os.path.exists(pidfile)


def start_with_journal(d):
    """mxgated -f with stderr on a file that JOURNAL_STREAM names, as
    systemd does for the journal's stream."""
    logf = open(d.log_path, "ab")
    st = os.fstat(logf.fileno())
    env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    proc = subprocess.Popen([mxgated_path(), "-f", "-c", d.config_path],
                            stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, cwd=d.dir, env=env)
    logf.close()
    return proc


def test_journal_priority_prefixes(daemon_factory):
    d = daemon_factory(start=False)
    proc = start_with_journal(d)
    try:
        assert wait_for(lambda: (read_banner(d.host, d.port, 0.3) or "")
                        .startswith("220"), 10), d.log()
        os.kill(proc.pid, signal.SIGUSR1)
        assert wait_for(lambda: "ignored" in d.log(), 5), d.log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    lines = [l for l in d.log().splitlines() if l and not l.startswith("----")]
    assert lines, d.log()
    for l in lines:
        assert re.match(r"^<[3467]>[a-z-]+\[\d+\]: "
                        r"(error|warn|info|debug): ", l), l
    assert any(l.startswith("<6>master[%d]: info: received signal %d"
                            % (proc.pid, signal.SIGUSR1)) for l in lines), lines

    # An error is "<3>": a second daemon on the same port cannot listen.
    d2 = make_daemon(start=False)
    with open(d2.config_path, "w") as f:
        f.write(render_config(merge_settings(d2.settings, {
            "listen": [{"address": "127.0.0.1", "port": d.port}]})))
    blocker = make_daemon({"listen": [{"address": "127.0.0.1",
                                       "port": d.port}]}, start=False)
    blocker.start()
    try:
        p2 = start_with_journal(d2)
        assert p2.wait(30) == 1
    finally:
        blocker.stop()
    assert re.search(r"^<3>master\[\d+\]: error: listen on 127\.0\.0\.1 port",
                     d2.log(), re.M), d2.log()
    shutil.rmtree(d2.dir, ignore_errors=True)
    shutil.rmtree(blocker.dir, ignore_errors=True)


def test_stderr_without_journal_has_time_stamps(daemon):
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} master\[\d+\] "
                     r"info: ", daemon.log(), re.M), daemon.log()
    assert "starting with %s" % daemon.config_path in daemon.log()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2,
                                 signal.SIGALRM, signal.SIGQUIT,
                                 signal.SIGPIPE, signal.SIGPWR,
                                 signal.SIGVTALRM, signal.SIGIO])
def test_stray_signals_do_not_kill_the_master(daemon, sig):
    kids = daemon.children()
    os.kill(daemon.pid, sig)
    time.sleep(0.3)
    assert daemon.running(), daemon.log()
    assert daemon.children() == kids
    with daemon.raw() as c:
        assert c.line().startswith("220")
        assert c.cmd("EHLO sig.example").startswith("250")
        assert c.cmd("MAIL FROM:<a@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(make_message("after signal %d" % sig) + ".\r\n")
        queued_id(c.line())
    status, _ = daemon.stop()
    assert status == 0


# ---------------------------------------------------------------------------
# mxgatectl's command line

def ctl(*args, cwd=None):
    return subprocess.run([mxgatectl_path()] + list(args),
                          capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize("opt", ["--help", "-h", "help"])
def test_ctl_help(opt):
    r = ctl(opt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: mxgatectl"), r.stdout
    for cmd in ("queue list", "queue show", "queue retry", "route test",
                "passwd"):
        assert "\n  %s " % cmd in r.stdout, r.stdout
    assert default_conf_path() in r.stdout


@pytest.mark.parametrize("opt", ["--version", "-V"])
def test_ctl_version(opt):
    r = ctl(opt)
    assert r.returncode == 0, r.stderr
    assert re.match(r"^mxgatectl \d+\.\d+\.\d+\n$", r.stdout), r.stdout


def test_ctl_help_command():
    r = ctl("help", "queue", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: mxgatectl queue list [ID... | -]")
    assert "--rcpt RE" in r.stdout and "deferred" in r.stdout
    r = ctl("help", "queue")
    assert r.returncode == 0
    # list show trace shape retry hold release delete bounce reroute stats
    assert r.stdout.count("usage: mxgatectl queue ") == 11, r.stdout
    r = ctl("help", "nonsense")
    assert r.returncode == 2
    assert "no command \"nonsense\"" in r.stderr and "--help" in r.stderr


def test_ctl_unknown_command_and_bad_usage():
    r = ctl("frobnicate")
    assert r.returncode == 2
    assert r.stderr.startswith('mxgatectl: unknown command "frobnicate"; '), \
        r.stderr
    r = ctl()
    assert r.returncode == 2 and "no command given" in r.stderr
    r = ctl("queue", "show")
    assert r.returncode == 2
    assert "usage: mxgatectl queue show ID" in r.stderr
    assert "mxgatectl help queue show" in r.stderr


def test_ctl_q_directory_or_file(daemon):
    with daemon.raw() as c:
        c.line()
        c.cmd("EHLO q.example")
        c.cmd("MAIL FROM:<a@sender.example>")
        c.cmd("RCPT TO:<bob@example.test>")
        c.cmd("DATA")
        c.send(make_message("by -q") + ".\r\n")
        qid = queued_id(c.line())
    for q in (daemon.queue_dir, daemon.db_path):
        r = ctl("-q", q, "queue", "list")
        assert r.returncode == 0, r.stderr
        assert qid in r.stdout, r.stdout
    r = ctl("--queue", daemon.queue_dir, "queue", "show", qid)
    assert r.returncode == 0 and qid in r.stdout, r.stderr


def test_ctl_q_wrong_path_says_what_it_wants(tmp_path):
    r = ctl("-q", str(tmp_path), "queue", "list")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "mxgatectl: -q %s: no queue database at %s/queue.db (No such file or "
        "directory); -q takes the queue directory (queue.directory of the "
        "configuration) or its queue.db file" % (tmp_path, tmp_path))
    assert not os.path.exists(tmp_path / "queue.db")     # never created


def test_ctl_no_queue_names_config_and_options(daemon_factory):
    d = daemon_factory(start=False)
    r = ctl("-c", d.config_path, "queue", "list")
    assert r.returncode == 1
    assert ("mxgatectl: no queue at %s (queue.directory of the "
            "configuration %s)" % (d.db_path, d.config_path)) in r.stderr, \
        r.stderr
    assert "-c FILE" in r.stderr and "-q DIR" in r.stderr
    assert "sqlite" not in r.stderr.lower()
    assert not os.path.exists(d.queue_dir)


def test_ctl_not_a_queue(tmp_path):
    bogus = tmp_path / "queue.db"
    bogus.write_bytes(b"this is not a database, but some text " * 200)
    r = ctl("-q", str(bogus), "queue", "list")
    assert r.returncode == 1
    assert "cannot use the queue %s" % bogus in r.stderr, r.stderr
    assert "Run mxgatectl as root or as the queue's owner" in r.stderr


def test_ctl_missing_config(tmp_path):
    r = ctl("-c", str(tmp_path / "nope.conf"), "queue", "list")
    assert r.returncode == 1
    assert "cannot read the configuration %s" % (tmp_path / "nope.conf") \
        in r.stderr and "-c FILE" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# make install

def build_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(mxgated_path())))


def make(*args):
    return subprocess.run(["make", "-s", "-C", build_dir()] + list(args),
                          capture_output=True, text=True, timeout=300)


def test_make_install_destdir(tmp_path):
    if not os.path.exists(os.path.join(build_dir(), "Makefile")):
        pytest.skip("no Makefile beside %s" % mxgated_path())
    dest = str(tmp_path / "root")
    r = make("install", "DESTDIR=" + dest)
    assert r.returncode == 0, r.stdout + r.stderr
    files = set()
    for dirpath, _, names in os.walk(dest):
        for n in names:
            files.add(os.path.relpath(os.path.join(dirpath, n), dest))
    conf = default_conf_path()          # SYSCONFDIR/mxgate/mxgate.conf
    sbin = [f for f in files if f.endswith("sbin/mxgated")]
    assert len(sbin) == 1, files
    sbindir = "/" + os.path.dirname(sbin[0])
    assert sbin[0].replace("mxgated", "mxgatectl") in files, files
    assert conf.lstrip("/") in files, files
    for suffix in ("share/man/man8/mxgated.8", "share/man/man8/mxgatectl.8",
                   "share/man/man5/mxgate.conf.5",
                   "systemd/system/mxgated.service",
                   "sysusers.d/mxgate.conf", "tmpfiles.d/mxgate.conf"):
        assert [f for f in files if f.endswith(suffix)], (suffix, files)

    def read(suffix):
        f = [f for f in files if f.endswith(suffix)][0]
        with open(os.path.join(dest, f)) as fh:
            return fh.read()

    unit = read("systemd/system/mxgated.service")
    assert "ExecStart=%s/mxgated -f -c %s\n" % (sbindir, conf) in unit, unit
    assert "ExecStartPre=%s/mxgated -n -c %s\n" % (sbindir, conf) in unit
    assert "@" not in re.sub(r"#.*", "", unit), unit
    tmpfiles = read("tmpfiles.d/mxgate.conf")
    spool = re.search(r"^d\s+(\S+/spool/mxgate)\s+0700\s+mxgate\s+mxgate",
                      tmpfiles, re.M)
    assert spool, tmpfiles
    assert re.search(r"^d\s+\S+/lib/mxgate/empty\s+0755\s+root\s+root",
                     tmpfiles, re.M), tmpfiles
    users = read("sysusers.d/mxgate.conf")
    for u in ("mxgate", "mxgate-smtp", "mxgate-deliver", "mxgate-auth"):
        assert re.search(r"^u\s+%s\s" % u, users, re.M), users
    installed = read(conf.lstrip("/"))
    assert 'directory = "%s";' % spool.group(1) in installed, installed
    assert "./var/" not in re.sub(r"#.*", "", installed)

    # The installed configuration passes the check (as far as paths that
    # exist here go: the queue's parent is in the DESTDIR tree).
    mans = [os.path.join(dest, f) for f in files if "/man/" in f]
    if shutil.which("man") is None:
        mans = []
    for m in mans:
        r2 = subprocess.run(["man", "--warnings", "-l", m],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, MANWIDTH="80"))
        assert r2.returncode == 0 and r2.stderr == "", (m, r2.stderr)

    # An edited configuration survives another install and the uninstall.
    path = os.path.join(dest, conf.lstrip("/"))
    with open(path, "a") as f:
        f.write("# edited by the operator\n")
    r = make("install", "DESTDIR=" + dest)
    assert r.returncode == 0, r.stderr
    assert "kept as it is" in r.stdout, r.stdout
    with open(path) as f:
        assert f.read().endswith("# edited by the operator\n")
    r = make("uninstall", "DESTDIR=" + dest)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(path)
    assert not os.path.exists(os.path.join(dest, sbin[0]))


# ---------------------------------------------------------------------------
# The Debian package, in a chroot (slow: MXGATE_DEBIAN_CHECK=1)

@pytest.mark.skipif(not os.environ.get("MXGATE_DEBIAN_CHECK"),
                    reason="slow; set MXGATE_DEBIAN_CHECK=1 (needs root, "
                    "dpkg-buildpackage, debootstrap)")
def test_debian_package():
    script = os.path.join(os.path.dirname(__file__), "..", "..", "contrib",
                          "debian-check.sh")
    r = subprocess.run([script], capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    assert "debian-check: OK" in r.stdout


@pytest.mark.skipif(not can_unshare_mount(), reason="needs unshare -m (root)")
def test_daemon_mode_syslog_mail_and_pid_file(daemon_factory):
    """Without -f: mxgated detaches, the pid file holds the daemon's pid
    (not the launcher's), and the lines go to syslog with facility mail
    (<22> = mail.info, <19> = mail.err).  /dev/log is our socket in a
    private mount namespace."""
    import socket as socketmod
    d = daemon_factory(start=False)
    pidfile = os.path.join(d.dir, "mxgated.pid")
    with open(d.config_path, "w") as f:
        f.write(render_config(merge_settings(d.settings, {
            "server": {"pid_file": pidfile}})))
    dev = os.path.join(d.dir, "dev")
    os.mkdir(dev)
    for n in ("null", "zero", "urandom", "random"):
        open(os.path.join(dev, n), "w").close()
    sock = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
    sock.bind(os.path.join(dev, "log"))
    os.chmod(os.path.join(dev, "log"), 0o666)
    sock.settimeout(0.2)
    script = ('for n in null zero urandom random; do '
              'mount --bind /dev/$n "$1/$n" || exit 1; done; '
              'mount --rbind "$1" /dev && shift && exec "$@"')
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh",
                        "-c", script, "sh", dev, mxgated_path(), "-c",
                        d.config_path], capture_output=True, text=True,
                       timeout=30, cwd=d.dir)
    assert r.returncode == 0, r.stderr
    try:
        assert wait_for(lambda: (read_banner(d.host, d.port, 0.3) or "")
                        .startswith("220"), 10)
        with open(pidfile) as f:
            pid = int(f.read())
        assert proc_exists(pid)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert f.read().startswith(b"mxgated: master")
        os.kill(pid, signal.SIGUSR2)        # ignored, and logged
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                "ignored" in g for g in got):
            try:
                got.append(sock.recv(4096).decode("utf-8", "replace"))
            except socketmod.timeout:
                pass
        assert any(re.match(r"^<22>.*mxgated\[%d\]: master: listening on "
                            r"127\.0\.0\.1" % pid, g) for g in got), got
        assert any(re.match(r"^<22>.*mxgated\[%d\]: master: received signal"
                            r" %d .*ignored" % (pid, signal.SIGUSR2), g)
                   for g in got), got
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not proc_exists(pid), 20)
        assert not os.path.exists(pidfile)
    finally:
        if os.path.exists(pidfile):
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        sock.close()
