"""The process model: titles, privileges, respawn of killed children,
graceful stop, restart on the same queue."""

import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import (make_message, proc_cmdline, proc_exists, queued_id,
                      wait_for)


def send_messages(d, n, subject="msg", per_conn=5):
    """Send n messages; returns their queue ids."""
    ids = []
    while len(ids) < n:
        with smtplib.SMTP(d.host, d.port, timeout=30) as s:
            s.ehlo("client.example")
            for _ in range(min(per_conn, n - len(ids))):
                s.mail("alice@sender.example")
                s.rcpt("bob@example.test")
                code, resp = s.data(make_message("%s %d" % (subject, len(ids))))
                ids.append(queued_id("%d %s" % (code, resp.decode())))
    return ids


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return None


def ps_args(pid):
    r = subprocess.run(["ps", "-o", "args=", "-p", str(pid)],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def test_process_titles(daemon):
    assert wait_for(lambda: len(daemon.smtp_pids()) == 2, 5.0), daemon.titles()
    assert ps_args(daemon.pid).startswith("mxgated: master"), ps_args(daemon.pid)
    titles = daemon.titles()
    smtp = [p for p, t in titles.items() if t.startswith("mxgated: smtp")]
    queue = [p for p, t in titles.items() if t.startswith("mxgated: queue")]
    assert len(smtp) == 2, titles      # workers = 2
    assert len(queue) == 1, titles
    for p in smtp + queue:
        assert ps_args(p).startswith("mxgated: "), ps_args(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_children_drop_privileges(daemon):
    assert wait_for(lambda: len(daemon.smtp_pids()) == 2, 5.0), daemon.titles()
    for p in daemon.smtp_pids() + daemon.queue_pids():
        uids = proc_uid(p)
        assert uids and 0 not in uids, (proc_cmdline(p), uids)
    # the queue directory belongs to the unprivileged user now
    assert os.stat(daemon.db_path).st_uid != 0


def test_version():
    from conftest import mxgated_path
    r = subprocess.run([mxgated_path(), "-V"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0
    assert "0.1" in (r.stdout + r.stderr)


def test_worker_killed_is_respawned(daemon):
    assert wait_for(lambda: len(daemon.smtp_pids()) == 2, 5.0), daemon.titles()
    acked, failures = [], []
    stop = threading.Event()

    def traffic():
        n = 0
        while not stop.is_set() and n < 2000:
            try:
                with smtplib.SMTP(daemon.host, daemon.port, timeout=10) as s:
                    s.ehlo("busy.example")
                    s.mail("alice@sender.example")
                    s.rcpt("bob@example.test")
                    code, resp = s.data(make_message("during kill %d" % n))
                    if code == 250:
                        acked.append(queued_id("%d %s" % (code, resp.decode())))
            except (OSError, smtplib.SMTPException) as e:
                failures.append(repr(e))   # sessions of the dead worker
            n += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:
        wait_for(lambda: len(acked) >= 5, 10.0)
        before = set(daemon.smtp_pids())
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        new = wait_for(lambda: set(daemon.smtp_pids()) - before, 10.0)
        assert new, "no new smtp worker within 10s: %s" % daemon.titles()
        assert wait_for(lambda: len(daemon.smtp_pids()) == 2, 10.0), \
            daemon.titles()
        assert victim not in daemon.smtp_pids()
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    assert daemon.running(), "the master died with its worker"
    # new connections succeed, on either worker
    ids = send_messages(daemon, 10, "after respawn", per_conn=1)
    assert len(ids) == 10
    # every message acknowledged, before, during or after, is queued
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    missing = [q for q in acked + ids if q not in stored]
    assert not missing, missing
    print("acked %d during the kill, %d client errors" % (len(acked),
                                                          len(failures)))


def test_queue_process_killed_is_respawned(daemon):
    assert wait_for(lambda: len(daemon.queue_pids()) == 1, 5.0), daemon.titles()
    before_ids = send_messages(daemon, 3, "before queue kill")
    victim = daemon.queue_pids()[0]
    os.kill(victim, signal.SIGKILL)
    new = wait_for(lambda: [p for p in daemon.queue_pids() if p != victim],
                   10.0)
    assert new, "no new queue process within 10s: %s" % daemon.titles()
    assert daemon.running()
    # the workers talk to the new queue process (allow it a moment)
    ids = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not ids:
        try:
            ids = send_messages(daemon, 3, "after queue kill", per_conn=3)
        except (AssertionError, OSError, smtplib.SMTPException):
            time.sleep(0.5)
    assert len(ids) == 3
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    assert set(before_ids + ids) <= stored


def test_restart_keeps_queue(daemon):
    first = send_messages(daemon, 10, "first run")
    status, took = daemon.stop()
    assert status == 0, daemon.log()[-3000:]
    daemon.start()
    second = send_messages(daemon, 5, "second run")
    assert daemon.message_count() == 15
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    assert stored == set(first + second)
    status, _ = daemon.stop()
    assert status == 0
    # and once more, with the daemon down: the database is whole
    assert daemon.db("PRAGMA integrity_check") == [("ok",)]
    assert daemon.message_count() == 15
    rows = daemon.db("SELECT count(*) FROM recipients"
                     " WHERE state IN ('queued', 'delivering', 'deferred')")
    assert rows[0][0] == 15


def test_sigterm_with_open_sessions(daemon):
    grace = daemon.settings["timeouts"]["shutdown_grace"]
    ids = send_messages(daemon, 3, "before stop")
    idle = daemon.raw()
    busy = daemon.raw()
    in_data = daemon.raw()
    for c in (idle, busy, in_data):
        assert c.line().startswith("220")
        assert c.cmd("EHLO open.example").startswith("250")
    assert busy.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    assert busy.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert in_data.cmd("MAIL FROM:<a@sender.example>").startswith("250")
    assert in_data.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert in_data.cmd("DATA").startswith("354")
    in_data.send("Subject: never finished\r\n\r\nhalf")

    t0 = time.monotonic()
    os.kill(daemon.pid, signal.SIGTERM)
    # a session in its transaction may still finish during the grace period
    late = None
    try:
        if busy.cmd("DATA").startswith("354"):
            busy.send(make_message("finished during grace") + ".\r\n")
            late = busy.line()
    except (EOFError, OSError, TimeoutError):
        late = None
    try:
        daemon.proc.wait(timeout=grace + 10)
    except subprocess.TimeoutExpired:
        pytest.fail("mxgated still running %ds after SIGTERM (grace %ds)"
                    % (grace + 10, grace))
    took = time.monotonic() - t0
    status = daemon.proc.returncode
    daemon.stop()
    assert status == 0, status
    assert took <= grace + 5, took

    # the idle session was told (421) or at least closed
    try:
        line = idle.line(timeout=2)
        assert line.startswith("421"), line
    except EOFError:
        pass
    for c in (idle, busy, in_data):
        c.close()
    # nothing listens any more
    with pytest.raises(OSError):
        socket.create_connection((daemon.host, daemon.port), timeout=1).close()

    assert daemon.db("PRAGMA integrity_check") == [("ok",)]
    stored = {r[0]: r[1] for r in daemon.db("SELECT id, subject FROM messages")}
    assert set(ids) <= set(stored)
    assert "never finished" not in stored.values()
    if late is not None and late.startswith("250"):
        assert queued_id(late) in stored
    elif late is not None:
        assert late.startswith("421"), late


def test_sigterm_idle_daemon_is_quick(daemon_factory):
    # Nothing to wait for: it must not sit out the grace period, long
    # here so that a stop slowed down by ASan's exit checks still tells.
    daemon = daemon_factory({"timeouts": {"shutdown_grace": 20}})
    kids = daemon.children()
    status, took = daemon.stop()
    assert status == 0
    assert took < 10.0, took
    for p in kids:
        assert not proc_exists(p)


def test_killed_workers_release_connection_slots(daemon_factory):
    """Connections of a worker that died must not stay counted against the
    client's limit (or the client would be locked out for good)."""
    d = daemon_factory({"limits": {"connections_per_ip": 4}})
    assert wait_for(lambda: len(d.smtp_pids()) == 2, 5.0), d.titles()
    held = []
    try:
        for _ in range(4):
            c = d.raw()
            assert c.line().startswith("220")
            held.append(c)
        before = set(d.smtp_pids())
        for p in before:
            os.kill(p, signal.SIGKILL)
        assert wait_for(lambda: len(set(d.smtp_pids()) - before) == 2, 10.0), \
            d.titles()
        for c in held:
            c.close()
        held = []
        # the master may learn of the closed sockets a moment later
        def four_fresh():
            cs = []
            try:
                for _ in range(4):
                    c = d.raw()
                    cs.append(c)
                    if not c.line(timeout=3).startswith("220"):
                        return False
                return True
            except (EOFError, OSError, TimeoutError):
                return False
            finally:
                for c in cs:
                    c.close()
        assert wait_for(four_fresh, 10.0, interval=0.3)
    finally:
        for c in held:
            c.close()


def test_acknowledged_messages_survive_sigkill(daemon):
    """A 250 means committed: kill every process at once, right after the
    last reply, and every acknowledged message is in the database."""
    assert wait_for(lambda: len(daemon.queue_pids()) == 1, 5.0)
    ids = send_messages(daemon, 20, "before the crash", per_conn=20)
    pids = daemon.all_pids()
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.proc.wait(timeout=10)
    assert wait_for(lambda: not any(proc_exists(p) for p in pids), 10.0)
    daemon.stop()
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    assert set(ids) <= stored, sorted(set(ids) - stored)
    assert daemon.db("PRAGMA integrity_check") == [("ok",)]
    # and the daemon starts again on that queue
    daemon.start()
    more = send_messages(daemon, 2, "after the crash")
    assert daemon.message_count() == len(stored) + 2
    assert not set(more) & stored


def test_slow_clients_do_not_block_others(daemon_factory):
    """Hundreds of clients that stall mid-command (slowloris) cost the
    others nothing: a fresh client is served at once."""
    daemon = daemon_factory({"limits": {"connections_per_ip": 0}})
    stalled = []
    try:
        for i in range(200):
            s = socket.create_connection((daemon.host, daemon.port), timeout=5)
            s.sendall(b"EHLO slow%d.example\r\nMAIL FROM:<a@sl" % i)
            stalled.append(s)
        t0 = time.monotonic()
        ids = send_messages(daemon, 3, "past the slow ones", per_conn=3)
        took = time.monotonic() - t0
        assert len(ids) == 3
        # Stalled for good they would hold a worker 300 s (timeouts.command).
        assert took < 20.0, took
    finally:
        for s in stalled:
            s.close()


def test_sighup_keeps_serving(daemon):
    """SIGHUP (reload) never takes the daemon down, whatever it reloads."""
    before = send_messages(daemon, 2, "before hup")
    os.kill(daemon.pid, signal.SIGHUP)
    time.sleep(1.0)
    assert daemon.running()
    after = send_messages(daemon, 2, "after hup")
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    assert set(before + after) <= stored


def test_second_daemon_on_same_queue_refused(daemon_factory):
    """One queue process per queue directory: a second mxgated pointed at
    a queue in use waits shutdown_grace / 2 + 6 s for it, then gives up
    naming the holder, and the first one serves on undisturbed."""
    first = daemon_factory({"timeouts": {"shutdown_grace": 2}})
    assert wait_for(lambda: len(first.queue_pids()) == 1, 5.0)
    queue_pid = first.queue_pids()[0]
    with open(os.path.join(first.queue_dir, "queue.lock")) as f:
        assert f.read().strip() == str(queue_pid)
    second = daemon_factory({"timeouts": {"shutdown_grace": 2},
                             "queue": {"directory": first.queue_dir}},
                            start=False)
    t0 = time.monotonic()
    r = subprocess.run([second.mxgated, "-f", "-c", second.config_path],
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "waiting up to 7 s for process %d" % queue_pid in out, out
    assert ("the queue is in use by process %d (another mxgated on this"
            " queue directory?)" % queue_pid) in out, out
    assert 6.5 <= took < 40, took
    assert read_banner_ok(first)
    assert send_messages(first, 1, "still served")


def read_banner_ok(d):
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        return s.recv(512).startswith(b"220 ")


def listener_inodes(port):
    """Socket inodes of the TCP listeners on port (/proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                found.add(cols[9])
    return found


def socket_inodes(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_only_the_master_holds_listeners(daemon):
    """A child must not keep the listening socket: a master killed alone
    would otherwise leave the port bound by its orphans, and the next
    mxgated could not start."""
    assert wait_for(lambda: len(daemon.smtp_pids()) == 2
                    and len(daemon.queue_pids()) == 1, 5.0)
    listeners = listener_inodes(daemon.port)
    assert listeners
    assert listeners <= socket_inodes(daemon.pid)
    for pid in daemon.children():
        assert not listeners & socket_inodes(pid), daemon.titles()[pid]


def test_queue_waits_out_a_root_owned_shm(daemon):
    """A reader started as root that opens the database while no -shm
    file exists creates it as root, and hands it to the database's owner
    a moment later: a queue process that maps it in between must wait
    and open again, not fail (it once exited, and the sessions waiting
    on it got 451 4.3.0).  Made lasting here: the master is stopped, the
    queue process killed, its -shm replaced by root's; the respawned one
    finds it, and the file is given back 1.5 s later."""
    first = send_messages(daemon, 2, "before")
    db = daemon.db_path
    st = os.stat(db)
    if os.geteuid() != 0 or st.st_uid == 0:
        pytest.skip("needs root and a queue user other than root")
    shm = db + "-shm"
    (old_queue,) = daemon.queue_pids()
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        os.kill(old_queue, signal.SIGKILL)
        assert wait_for(lambda: not proc_exists(old_queue) or
                        open("/proc/%d/stat" % old_queue).read()
                        .split(") ")[1].startswith("Z"), 10)
        if os.path.exists(shm):
            os.unlink(shm)
        with open(shm, "wb") as f:
            f.write(b"\0" * 32768)
        os.chmod(shm, 0o644)
        os.chown(shm, 0, 0)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    chowned = threading.Timer(1.5, lambda: os.chown(shm, st.st_uid,
                                                    st.st_gid))
    chowned.start()
    try:
        second = send_messages(daemon, 3, "after")
    finally:
        chowned.cancel()
    log = daemon.log()
    assert not re.search(r"queue process \d+ exited", log), log[-3000:]
    stored = {r[0] for r in daemon.db("SELECT id FROM messages")}
    assert stored == set(first + second)


def test_queue_refuses_a_shm_it_cannot_write(daemon_factory):
    """The same file left root's for good: mxgated refuses to start,
    naming the file and the fix, instead of taking mail it cannot
    store."""
    d = daemon_factory()
    d.stop()
    st = os.stat(d.db_path)
    if os.geteuid() != 0 or st.st_uid == 0:
        pytest.skip("needs root and a queue user other than root")
    shm = d.db_path + "-shm"
    with open(shm, "wb") as f:
        f.write(b"\0" * 32768)
    os.chmod(shm, 0o644)
    os.chown(shm, 0, 0)
    with open(d.log_path, "ab") as logf:
        proc = subprocess.Popen([d.mxgated, "-f", "-c", d.config_path],
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, cwd=d.dir)
    try:
        found = wait_for(lambda: proc.poll() is not None, 20.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = open(d.log_path).read()
    assert found and proc.returncode != 0, log[-3000:]
    assert "queue.db-shm: cannot read and write it" in log, log[-3000:]
    assert "fix: chown" in log
