"""Long-lived delivery processes and their cached upstream connections.

A delivery process runs batch after batch (spawner.h), and its relay
client keeps its connection to the upstream from one batch to the next:
these tests count the connections and processes a real upstream
(python3-aiosmtpd) and the process table see, and kill a delivery
process in the middle of a batch.
"""

import os
import signal

from aiosmtpd.controller import Controller

from conftest import free_port, pids_with_parent, proc_cmdline, wait_for
from test_delivery import (Capture, CaptureHandler, FakeSMTP, count_ids,
                           message, needs_aiosmtpd, relay_settings, send,
                           send_many, upstream, wait_state)


class PeerHandler(CaptureHandler):
    """Also records the client's address and port of every message and
    every QUIT: one peer, one connection."""

    def __init__(self):
        super().__init__()
        self.peers = []
        self.quits = 0

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                self.peers.append(session.peer)
        return reply

    async def handle_QUIT(self, server, session, envelope):
        with self.lock:
            self.quits += 1
        return "221 2.0.0 Bye"


def delivery_pids(d):
    """The delivery processes: children of the spawner."""
    out = []
    for p, t in d.titles().items():
        if t.startswith("mxgated: spawner"):
            out += [k for k in pids_with_parent(p)
                    if proc_cmdline(k).startswith("mxgated: delivery")]
    return out


@needs_aiosmtpd
def test_one_process_one_connection_across_batches(daemon_factory):
    """Messages that arrive one after the other, each delivered before the
    next comes (a batch each), go through one delivery process over one
    connection: no fork and no new session per batch."""
    handler = PeerHandler()
    cap = Capture(handler=handler)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])],
            delivery={"concurrency": 1, "connection_cache_time": 60}))
        pids = set()
        for i in range(4):
            qid = send(d, "bob@example.test", message("batch %d" % i))
            wait_state(d, qid, "delivered")
            pids |= set(delivery_pids(d))
        assert handler.count() == 4
        assert len(set(handler.peers)) == 1, handler.peers
        assert len(pids) == 1, pids
        assert handler.quits == 0
    finally:
        cap.stop()


@needs_aiosmtpd
def test_unused_connection_closed_with_quit(daemon_factory):
    """Left unused delivery.connection_cache_time, the connection is
    closed with QUIT; the process stays for the next batch, which opens
    a new connection."""
    handler = PeerHandler()
    cap = Capture(handler=handler)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])],
            delivery={"concurrency": 1, "connection_cache_time": 1}))
        qid = send(d, "bob@example.test", message("first"))
        wait_state(d, qid, "delivered")
        pids = set(delivery_pids(d))
        assert len(pids) == 1, pids
        assert wait_for(lambda: handler.quits == 1, 10), handler.quits
        qid = send(d, "bob@example.test", message("after the idle time"))
        wait_state(d, qid, "delivered")
        assert len(set(handler.peers)) == 2, handler.peers
        assert set(delivery_pids(d)) == pids
    finally:
        cap.stop()


def test_pipelined_transactions_on_a_reused_connection(daemon_factory):
    """On a reused connection each message is one pipelined group (MAIL,
    RCPT, DATA in one write), with no RSET or second EHLO between
    messages that were accepted."""
    fake = FakeSMTP()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % fake.port])],
            delivery={"concurrency": 1, "connection_cache_time": 60}))
        for i in range(3):
            qid = send(d, ["bob@example.test", "carol@example.test"],
                       message("pipelined %d" % i))
            wait_state(d, qid, "delivered")
        assert len(fake.messages) == 3
        assert fake.connections == 1, fake.connections
        groups = {}
        for conn, nrecv, line in fake.commands:
            groups.setdefault(nrecv, []).append(line.split(":")[0].split(" ")[0])
        verbs = [v for _, _, l in fake.commands
                 for v in [l.split(":")[0].split(" ")[0]]]
        assert verbs.count("EHLO") == 1 and "RSET" not in verbs, verbs
        mail_groups = [g for g in groups.values() if g[0] == "MAIL"]
        assert len(mail_groups) == 3
        assert all(g == ["MAIL", "RCPT", "RCPT", "DATA"]
                   for g in mail_groups), groups
    finally:
        fake.stop()


def established(port):
    """Whether a TCP connection to 127.0.0.1:port is established (from
    the server's side: /proc/net/tcp, local port, state 01)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and state == "01":
                return True
    return False


@needs_aiosmtpd
def test_upstream_closed_the_idle_connection(daemon_factory):
    """The upstream ends a session left idle (aiosmtpd's timeout, shorter
    than ours): the next message goes over a new connection at its first
    attempt, nothing deferred."""
    handler = PeerHandler()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, timeout=0.5,
                     decode_data=False)
    ctl.start()
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % port])],
            delivery={"concurrency": 1, "connection_cache_time": 60}))
        first = send(d, "bob@example.test", message("first"))
        wait_state(d, first, "delivered")
        # aiosmtpd ends the idle session after 0.5 s: wait until it has,
        # however loaded the machine.
        assert wait_for(lambda: not established(port), 30.0)
        second = send(d, "bob@example.test", message("second"))
        wait_state(d, second, "delivered")
        assert d.db("SELECT attempts FROM recipients WHERE message_id = ?",
                    (second,)) == [(1,)]
        assert len(set(handler.peers)) == 2, handler.peers
    finally:
        ctl.stop()


@needs_aiosmtpd
def test_sigkill_of_a_delivery_process_mid_batch_loses_nothing(
        daemon_factory):
    """SIGKILL to a long-lived delivery process while it delivers a batch:
    what it had not reported is deferred and delivered again by a new
    process; every message arrives."""
    n = 60
    handler = PeerHandler()
    handler.delay = 0.05
    cap = Capture(handler=handler)
    try:
        d = daemon_factory(relay_settings(
            [upstream("next", ["127.0.0.1:%d" % cap.port])], keep="1d",
            delivery={"concurrency": 1}))
        sent = send_many(d, n, "sigkill", threads=4)
        assert len(sent) == n
        assert wait_for(lambda: handler.count() >= 5 and delivery_pids(d),
                        30)
        victim = delivery_pids(d)[0]
        os.kill(victim, signal.SIGKILL)
        got_at_kill = handler.count()
        assert got_at_kill < n, "delivery finished before the kill"

        def delivered():
            return d.db("SELECT count(*) FROM recipients WHERE state ="
                        " 'delivered'")[0][0]
        assert wait_for(lambda: delivered() == n, 60), \
            d.ctl("queue", "stats").stdout
        ids = count_ids(cap)
        assert len(ids) == n, "lost %d messages" % (n - len(ids))
        # The killed process's unreported recipients were deferred, then
        # delivered by another process.
        assert d.db("SELECT count(*) FROM events WHERE kind = 'deferred'"
                    " AND detail LIKE '%ended without reporting%'")[0][0] > 0
        assert victim not in delivery_pids(d)
    finally:
        cap.stop()
