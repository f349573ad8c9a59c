"""A full disk under the queue: refused with 452 4.3.1 at MAIL (or at the
end of DATA when a commit runs out of space), never a lost message, never
a queue process that exits; accepting again as soon as there is room.

The queue directory is a small tmpfs mounted by the test (root), so that
"full" is a few megabytes away and nothing else on the machine fills up.
"""
import os
import subprocess
import time

import pytest

from conftest import make_daemon, make_message, queued_id, wait_for

TMPFS_SIZE = "6m"


def ehlo(c):
    assert c.line().startswith("220")
    assert c.cmd("EHLO client.example").startswith("250")


def send(d, size_param=None, body_lines=3):
    with d.raw() as c:
        ehlo(c)
        mail = "MAIL FROM:<a@sender.example>"
        if size_param is not None:
            mail += " SIZE=%d" % size_param
        line = c.cmd(mail)
        if not line.startswith("250"):
            return line
        line = c.cmd("RCPT TO:<bob@example.test>")
        assert line.startswith("250"), line
        assert c.cmd("DATA").startswith("354")
        c.send(make_message("storage", body_lines=body_lines) + ".\r\n")
        return c.line(timeout=20)


def fill(path, leave=0):
    """Take the file system's free space but `leave` bytes, in one step
    (a disk that is completely full, even for a moment, is another test).
    Returns the filler's path."""
    filler = os.path.join(path, "filler")
    st = os.statvfs(path)
    size = st.f_bavail * st.f_frsize - leave
    assert size > 0, (st, leave)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_queue(request):
    """A daemon whose queue directory is a TMPFS_SIZE tmpfs."""
    made = []

    def go(min_free):
        d = make_daemon({"queue": {"min_free_space": min_free},
                         "limits": {"message_size": "8M"}}, start=False)
        os.makedirs(d.queue_dir, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            "size=%s,mode=0755" % TMPFS_SIZE, "tmpfs",
                            d.queue_dir], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
        made.append(d)
        request.node._mxgate_daemons.append(d)
        return d.start()

    yield go
    for d in made:
        d.stop()
        subprocess.run(["umount", "-l", d.queue_dir])


def queue_pid(d):
    pids = d.queue_pids()
    assert len(pids) == 1, pids
    return pids[0]


def test_low_space_refuses_mail_then_recovers(small_queue):
    d = small_queue("1M")
    qid = queued_id(send(d))
    pid = queue_pid(d)
    # Below queue.min_free_space: MAIL is refused before any data.
    filler = fill(d.queue_dir, leave=512 * 1024)
    # The queue looks each second and tells the workers.
    assert wait_for(lambda: "new mail is refused (452 4.3.1)" in d.log(),
                    5.0), d.log()
    line = send(d)
    assert line == "452 4.3.1 Insufficient system storage", line
    # Room again: accepted within the next check (one second).
    os.unlink(filler)
    line = wait_for(lambda: (lambda l: l if l.startswith("250") else None)(
        send(d)), 5.0)
    qid2 = queued_id(line)
    # A SIZE= that cannot fit with half again as margin is refused at MAIL.
    line = send(d, size_param=5 * 1024 * 1024)
    assert line == "452 4.3.1 Insufficient system storage", line
    queued_id(send(d, size_param=10000))
    # Nothing was lost, and the queue process never restarted.
    rows = d.db("SELECT id FROM messages WHERE id IN (?, ?)", (qid, qid2))
    assert len(rows) == 2
    assert queue_pid(d) == pid


def test_commit_out_of_space_is_452_and_queue_goes_on(small_queue):
    d = small_queue("0")
    queued_id(send(d))
    pid = queue_pid(d)
    # Its first delivery attempt (to a parked upstream) is recorded before
    # the disk fills: this test is about the accepting side.
    wait_for(lambda: "status=deferred" in d.log(), 5.0)
    # 16 KB left: MAIL is taken, but a 600 KB message cannot be committed.
    filler = fill(d.queue_dir, leave=16 * 1024)
    time.sleep(1.5)
    line = send(d, body_lines=20000)
    assert line == "452 4.3.1 Insufficient system storage", line
    assert "queue file system full" in d.log()
    assert queue_pid(d) == pid
    os.unlink(filler)
    line = wait_for(lambda: (lambda l: l if l.startswith("250") else None)(
        send(d, body_lines=20000)), 5.0)
    qid = queued_id(line)
    assert d.db("SELECT count(*) FROM messages WHERE id = ?", (qid,))[0][0] == 1
    assert queue_pid(d) == pid
