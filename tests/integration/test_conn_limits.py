"""Connection slots under pressure: the fair share per client address,
stress mode's shorter timeouts, greeting pause and error limit, the
connection limit computed from the memory, and greet_pause's multi-line
trap and pass cache.

Clients come from several loopback addresses (127.0.0.10, ...), which
are all local on Linux, so that the master counts them apart."""

import re
import socket
import time

from conftest import HOSTNAME, wait_for


def connect(d, source, timeout=5.0):
    """A connection from source; (socket, first line or None)."""
    s = socket.create_connection((d.host, d.port), timeout=timeout,
                                 source_address=(source, 0))
    s.settimeout(timeout)
    data = b""
    try:
        while b"\n" not in data:
            chunk = s.recv(512)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    line = data.split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
    return s, (line or None)


def read_until_closed(s, timeout):
    """Everything the server sends until it closes; None if it does not
    close within timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def fill(d, source, at_most, held):
    """Open connections from source until one is refused (or at_most);
    the accepted ones go to held.  Returns (accepted, the refusal)."""
    accepted = 0
    for _ in range(at_most):
        s, line = connect(d, source)
        if line is not None and line.startswith("220"):
            held.append(s)
            accepted += 1
            continue
        s.close()
        return accepted, line
    return accepted, None


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def fairness_settings(**stress):
    st = {"threshold": 50, "command": 300, "data": 180}
    st.update(stress)
    return {"limits": {"connections": 20, "connections_per_ip": 0,
                       "fair_share": 50},
            "stress": st,
            "trusted_networks": ["127.0.0.99/32"]}


def test_fair_share_leaves_a_slot(daemon_factory):
    """Two addresses holding all they may, with no per-address limit:
    under stress each gets only its share of what is free, and a third
    address is still served and can send a message."""
    d = daemon_factory(fairness_settings())
    held = []
    try:
        # Below the threshold (10 of 20) anyone may open more; at 10
        # stress begins and .10, holding all 10, gets no 11th.
        a, refusal = fill(d, "127.0.0.10", 20, held)
        assert a == 10, (a, refusal)
        assert refusal.startswith("421 4.7.0 Too many connections from "
                                  "your address"), refusal
        # .11 holds h of the 10 - h free: refused once 2h >= 10 - h.
        b, refusal = fill(d, "127.0.0.11", 20, held)
        assert b == 4, (b, refusal)
        assert refusal.startswith("421 4.7.0"), refusal
        assert len(held) == 14
        # A fresh address: a slot, at once, and a message through.
        t0 = time.monotonic()
        s, line = connect(d, "127.0.0.99")
        banner = time.monotonic() - t0
        assert line.startswith("220 "), line
        assert banner < 5.0, banner         # "at once": not a queue
        s.sendall(b"EHLO fresh.example\r\nMAIL FROM:<a@sender.example>\r\n"
                  b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
        data = b""
        while data.count(b"\r\n354 ") == 0:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        s.sendall(b"Subject: fair\r\n\r\nfair share\r\n.\r\nQUIT\r\n")
        rest = read_until_closed(s, 10)
        assert b"250 2.0.0 Ok: queued as" in rest, rest
        s.close()
        log = d.log()
        assert "stress mode entered: 10 of 20 connections" in log
        assert re.search(r"client=127\.0\.0\.11 refused: 4 connections "
                         r"from it, its fair share under stress", log), log
    finally:
        close_all(held)
    # All closed: the master says stress is over.
    assert wait_for(lambda: "stress mode left" in d.log(), 10)


def test_fair_share_off(daemon_factory):
    """limits.fair_share = 0: the same two addresses take every slot and
    a third one is refused, which is what the share prevents."""
    settings = fairness_settings()
    settings["limits"]["fair_share"] = 0
    d = daemon_factory(settings)
    held = []
    try:
        a, _ = fill(d, "127.0.0.10", 15, held)
        b, _ = fill(d, "127.0.0.11", 15, held)
        assert a + b == 20, (a, b)
        s, line = connect(d, "127.0.0.99")
        s.close()
        assert line.startswith("421 4.7.0 Too many connections"), line
    finally:
        close_all(held)


def test_stress_timeouts(daemon_factory):
    """Over stress.threshold every session, those open before too, gets
    stress.command instead of timeouts.command; both changes are logged.
    (Threshold 20% of 10: stress at 2 connections, over at 0.)"""
    d = daemon_factory({"limits": {"connections": 10},
                        "stress": {"threshold": 20, "command": 2},
                        "timeouts": {"command": 300}})
    held = []
    # The fixture's start probe must no longer be counted, or it and
    # our first connection make 2 of 10: its worker logs its end, then
    # tells the master.
    assert wait_for(lambda: "disconnected" in d.log(), 30)
    time.sleep(1.0)
    try:
        s, line = connect(d, "127.0.0.1")
        assert line.startswith("220 "), line
        held.append(s)
        # One of ten: no stress, the 300 s timeout holds.
        assert read_until_closed(held[0], 2.5) is None
        assert "stress mode entered" not in d.log()
        t0 = time.monotonic()
        for _ in range(2):
            s, line = connect(d, "127.0.0.1")
            assert line.startswith("220 "), line
            held.append(s)
        assert wait_for(lambda: "stress mode entered: 2 of 10" in d.log(), 30)
        for s in held:
            data = read_until_closed(s, 30)
            assert data is not None, "still open under stress"
            assert data.startswith(b"421 4.4.2"), data
        took = time.monotonic() - t0
        # stress.command (2 s), not timeouts.command (300 s).
        assert 1.5 <= took < 30, took
        assert wait_for(lambda: "stress mode left: 0 of 10" in d.log(), 30)
        assert d.log().count("timeout (stress)") == 3
    finally:
        close_all(held)


def test_stress_data_deadline(daemon_factory):
    """A message dripping in: under stress it has stress.data in all (and
    what limits.min_data_rate adds), not timeouts.data."""
    d = daemon_factory({"limits": {"connections": 10, "min_data_rate": 0},
                        "stress": {"threshold": 20, "data": 3,
                                   "command": 60},
                        "timeouts": {"data": 300}})
    held = []
    try:
        s, line = connect(d, "127.0.0.1")
        assert line.startswith("220 "), line
        held.append(s)
        s.sendall(b"EHLO drip.example\r\nMAIL FROM:<a@sender.example>\r\n"
                  b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
        data = b""
        while b"\r\n354 " not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        t0 = time.monotonic()
        s2, line = connect(d, "127.0.0.1")      # 2 of 10: stress
        held.append(s2)
        assert wait_for(lambda: "stress mode entered" in d.log(), 30)
        closed = None
        for i in range(40):
            try:
                s.sendall(b"line %d of a slow message\r\n" % i)
            except OSError:
                pass
            closed = read_until_closed(s, 0.5)
            if closed is not None:
                break
        assert closed is not None, "the message still goes on"
        assert closed.startswith(b"421 4.4.2"), closed
        took = time.monotonic() - t0
        # stress.data (3 s), not timeouts.data (300 s).
        assert 2 <= took < 15, took
        assert d.message_count() == 0
    finally:
        close_all(held)


def read_reply(s, timeout=10):
    """One whole reply's lines (b"" lines at EOF: the list ends)."""
    s.settimeout(timeout)
    data = b""
    while not re.search(rb"(^|\n)\d\d\d [^\n]*\n", data):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1").rstrip("\r\n").split("\r\n")


def test_stress_error_limit(daemon_factory):
    """Under stress limits.errors drops to stress.errors (1, Postfix's
    hard error limit under stress) for a session opened before too: two
    errors are let pass before stress, one closes the session after."""
    # Stress at 3 of 10: the fixture's probe, if still counted, cannot
    # bring it on early.
    d = daemon_factory({"limits": {"connections": 10, "errors": 10},
                        "stress": {"threshold": 30}})
    held = []
    try:
        s, line = connect(d, "127.0.0.30")
        assert line.startswith("220 "), line
        held.append(s)
        for _ in range(2):
            s.sendall(b"BOGUS\r\n")
            assert read_reply(s)[-1].startswith("500 "), "still open"
        for source in ("127.0.0.31", "127.0.0.32"):     # 3 of 10: stress
            s2, line = connect(d, source)
            assert line.startswith("220 "), line
            held.append(s2)
        assert wait_for(lambda: "stress mode entered" in d.log(), 10)
        assert "greet_pause=0s, errors=1," in d.log()
        # The master tells the workers before it logs; a round trip
        # makes sure the worker has read it before the next error.
        s.sendall(b"NOOP\r\n")
        assert read_reply(s)[-1].startswith("250 ")
        s.sendall(b"BOGUS\r\n")
        data = read_until_closed(s, 10)
        assert data is not None, "still open under stress"
        lines = data.decode().rstrip("\r\n").split("\r\n")
        assert lines[0].startswith("500 ") and \
            lines[-1] == "421 4.7.0 Too many errors, closing connection", lines
    finally:
        close_all(held)


def test_stress_greet_pause(daemon_factory):
    """Under stress the greeting pause drops to stress.greet_pause (here
    none): the greetings held back (30 s) go out, and a new client is
    greeted at once."""
    d = daemon_factory({"limits": {"connections": 10},
                        "stress": {"threshold": 30, "greet_pause": 0},
                        "greet_pause": 30, "greet_multiline": False,
                        "trusted_networks": [], "greet_pass_time": 0})
    held = []
    try:
        a, line = connect(d, "127.0.0.40", timeout=2)
        held.append(a)
        assert line is None, "greeted without the pause: %r" % line
        t0 = time.monotonic()
        for source in ("127.0.0.41", "127.0.0.45"):    # 3 of 10: stress
            held.append(socket.create_connection(
                (d.host, d.port), timeout=10, source_address=(source, 0)))
        assert wait_for(lambda: "stress mode entered" in d.log(), 10)
        for s in held:
            assert read_reply(s, 20) == ["220 %s ESMTP mxgate" % HOSTNAME]
        assert time.monotonic() - t0 < 20
        t0 = time.monotonic()
        c, line = connect(d, "127.0.0.42", timeout=10)
        held.append(c)
        assert line == "220 %s ESMTP mxgate" % HOSTNAME, line
        assert time.monotonic() - t0 < 15     # not the 30 s pause
    finally:
        close_all(held)


def test_stress_greet_pause_shortened(daemon_factory):
    """stress.greet_pause shorter than greet_pause: the pause is
    shortened, not dropped -- a client that talks first is still refused."""
    d = daemon_factory({"limits": {"connections": 10},
                        "stress": {"threshold": 10, "greet_pause": 3},
                        "greet_pause": 30, "greet_multiline": False,
                        "trusted_networks": [], "greet_pass_time": 0})
    held = []
    try:
        a = socket.create_connection((d.host, d.port), timeout=10,
                                     source_address=("127.0.0.43", 0))
        held.append(a)
        assert wait_for(lambda: "stress mode entered" in d.log(), 10)
        assert "greet_pause=3s," in d.log()
        t0 = time.monotonic()
        b = socket.create_connection((d.host, d.port), timeout=10,
                                     source_address=("127.0.0.44", 0))
        held.append(b)
        b.sendall(b"EHLO eager.example\r\n")
        data = read_until_closed(b, 20)
        assert data == b"554 5.5.1 Error: talked before the greeting\r\n", \
            data
        assert read_reply(a, 20) == ["220 %s ESMTP mxgate" % HOSTNAME]
        assert time.monotonic() - t0 < 20
    finally:
        close_all(held)


def test_stress_never(daemon_factory):
    """stress.threshold = 0: no stress mode, the long timeout holds."""
    d = daemon_factory({"limits": {"connections": 10},
                        "stress": {"threshold": 0, "command": 1}})
    held = []
    try:
        for _ in range(9):
            s, line = connect(d, "127.0.0.1")
            assert line.startswith("220 "), line
            held.append(s)
        assert read_until_closed(held[0], 3) is None
        assert "stress mode" not in d.log()
    finally:
        close_all(held)


def test_connections_from_memory(daemon_factory):
    """limits.connections = 0: computed from the memory and logged."""
    d = daemon_factory({"limits": {"connections": 0}})
    m = re.search(r"limits\.connections = (\d+) \(computed: (\d+) MB of "
                  r"memory / 8 / 16 KB a session", d.log())
    assert m, d.log()
    n, mb = int(m.group(1)), int(m.group(2))
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    assert abs(mb - total_kb // 1024) <= 1
    assert 100 <= n <= 100000
    assert n <= max(100, min(100000, mb * 1024 // 8 // 16))


# ---- greet_pause: the multi-line trap and the pass cache ----

# The pause, and the bounds that tell a greeting at once from one after
# it, with room for a loaded machine under ASan on both sides.
GREET_PAUSE = 4
AT_ONCE = 2.5
WAITED = 3.5


def greet_settings(**more):
    s = {"greet_pause": GREET_PAUSE, "trusted_networks": [],
         "greet_pass_time": "1h"}
    s.update(more)
    return s


def test_pregreet_multiline_trap(daemon_factory):
    """The first line of the greeting comes at once, the end after the
    pause; talking in between is talking before the greeting."""
    d = daemon_factory(greet_settings())
    t0 = time.monotonic()
    s, first = connect(d, "127.0.0.20")
    try:
        assert first == "220-%s ESMTP mxgate" % HOSTNAME, first
        assert time.monotonic() - t0 < AT_ONCE
        s.sendall(b"EHLO eager.example\r\n")
        data = read_until_closed(s, 20)
        assert data == b"554 5.5.1 Error: talked before the greeting\r\n", \
            data
    finally:
        s.close()
    assert re.search(r"client=127\.0\.0\.20 pregreet: 20 bytes before the "
                     r"end of the multi-line greeting; refused", d.log())
    # A violator is not remembered as one that passed: it waits again.
    t0 = time.monotonic()
    with_wait = greeting(d, "127.0.0.20")
    assert with_wait == ["220-%s ESMTP mxgate" % HOSTNAME,
                         "220 %s ESMTP mxgate" % HOSTNAME], with_wait
    assert time.monotonic() - t0 >= WAITED


def greeting(d, source, hold=None):
    """The whole greeting's lines; the socket goes to hold, or closed."""
    s = socket.create_connection((d.host, d.port), timeout=10,
                                 source_address=(source, 0))
    data = b""
    while not re.search(rb"(^|\n)\d\d\d [^\n]*\n", data):
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    if hold is not None:
        hold.append(s)
    else:
        s.sendall(b"QUIT\r\n")
        s.close()
    return data.decode().rstrip("\r\n").split("\r\n")


def test_pregreet_pass_cache(daemon_factory):
    """A client that waited for the whole greeting is remembered by the
    master: its next connections, on either worker, are greeted at once;
    another address still waits."""
    d = daemon_factory(greet_settings())
    held = []
    try:
        t0 = time.monotonic()
        assert len(greeting(d, "127.0.0.21", held)) == 2
        assert time.monotonic() - t0 >= WAITED
        # Held open, so the least-loaded worker for the next ones is
        # the other one; then the first again.
        for _ in range(3):
            t0 = time.monotonic()
            lines = greeting(d, "127.0.0.21", held)
            assert lines == ["220 %s ESMTP mxgate" % HOSTNAME], lines
            assert time.monotonic() - t0 < AT_ONCE
        t0 = time.monotonic()
        assert len(greeting(d, "127.0.0.22")) == 2
        assert time.monotonic() - t0 >= WAITED
    finally:
        close_all(held)
    pids = set(re.findall(r"smtp\[(\d+)\].*client=127\.0\.0\.21 connected",
                          d.log()))
    assert len(pids) == 2, pids


def test_pregreet_pass_not_remembered(daemon_factory):
    """greet_pass_time = 0: every connection waits."""
    d = daemon_factory(greet_settings(greet_pass_time=0))
    for _ in range(2):
        t0 = time.monotonic()
        assert len(greeting(d, "127.0.0.23")) == 2
        assert time.monotonic() - t0 >= WAITED


def test_pregreet_single_line(daemon_factory):
    """greet_multiline = false: nothing at all before the pause ends."""
    d = daemon_factory(greet_settings(greet_multiline=False))
    t0 = time.monotonic()
    lines = greeting(d, "127.0.0.24")
    assert lines == ["220 %s ESMTP mxgate" % HOSTNAME], lines
    assert time.monotonic() - t0 >= WAITED
