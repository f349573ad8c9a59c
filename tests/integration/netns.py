"""A private network namespace for hermetic DNS tests (SPF).

    with NetNS(addresses, zone) as ns:      # needs root (unshare, setns)
        d = ns_daemon(ns, factory, overrides)   # mxgated inside it
        with ns.entered():                  # this thread's sockets are
            smtplib.SMTP(...)               # inside the namespace

The namespace has its own loopback with the given documentation
addresses (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32) and its own
/etc/resolv.conf (bind-mounted in a private mount namespace) pointing at a
DNS server on 127.0.0.1:53 that answers from `zone` only:

    zone = {"pass.example": {"TXT": ["v=spf1 ip4:198.51.100.20 -all"],
                             "A": ["192.0.2.5"], "MX": [[10, "mx.example"]]},
            "broken.example": {"servfail": True},
            "slow.example": {"drop": True}}

A name not in the zone is NXDOMAIN; a name without records of the type
asked is NODATA.  With zone None no server is started: the caller runs
its own on 127.0.0.1:53 (tls_world.py: nsd and a validating unbound).  Nothing leaves the namespace: it has no other interface.

Run as a script (`netns.py serve-dns ZONE.json`), this file is that DNS
server; the namespace runs it with nsenter.  Every process is stopped by
pid; every wait is bounded.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLONE_NEWNET = 0x40000000
HERE = os.path.dirname(os.path.abspath(__file__))


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def can_unshare():
    """Root, and unshare(1) works here (a container may forbid it)."""
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(["unshare", "-m", "-n", "true"], timeout=10,
                           capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class NetNS:
    def __init__(self, addresses, zone):
        self.addresses = list(addresses)
        self.zone = zone
        self.dir = tempfile.mkdtemp(prefix="mxgate-netns-", dir="/tmp")
        self.holder = None
        self.dns = None
        self.pid = None

    # -- lifecycle --

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        resolv = os.path.join(self.dir, "resolv.conf")
        with open(resolv, "w") as f:
            # Our server only, one try; a dropped query takes 5 s, longer
            # than the SPF timeouts the tests set, which must win.
            f.write("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")
        zone = os.path.join(self.dir, "zone.json")
        with open(zone, "w") as f:
            json.dump(self.zone, f)
        setup = ["set -e", "ip link set lo up"]
        for a in self.addresses:
            if ":" in a:
                setup.append("ip -6 addr add %s/128 dev lo nodad" % a)
            else:
                setup.append("ip addr add %s/32 dev lo" % a)
        setup.append("mount --bind %s /etc/resolv.conf" % resolv)
        setup.append("echo ready")
        setup.append("exec sleep 3600")
        # unshare -m makes the mount namespace private: the bind mount
        # stays in it.
        self.holder = subprocess.Popen(
            ["unshare", "-m", "-n", "--", "sh", "-c", "; ".join(setup)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read(2000) if self.holder.poll() is not None else b""
            raise RuntimeError("namespace setup failed: %r %r" % (line, err))
        self.pid = self.holder.pid
        if self.zone is None:
            # The caller runs its own DNS on 127.0.0.1:53 (a validating
            # unbound for DANE, test_outbound_tls.py).
            return
        self.dns_log = open(os.path.join(self.dir, "dns.log"), "ab")
        self.dns = self.popen([sys.executable, os.path.join(HERE, "netns.py"),
                               "serve-dns", zone],
                              stdout=self.dns_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dns.poll() is not None:
                raise RuntimeError("DNS server exited: see %s" % self.dir)
            if self.query_ok():
                return
            time.sleep(0.05)
        raise RuntimeError("DNS server not answering in the namespace")

    def stop(self):
        for p in (self.dns, self.holder):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        if self.holder is not None:
            self.holder.stdout.close()
            self.holder.stderr.close()
        if getattr(self, "dns_log", None) is not None:
            self.dns_log.close()

    # -- inside --

    def command(self, argv):
        """argv run in the namespace (network and mounts)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "--"] + list(argv)

    def popen(self, argv, **kw):
        return subprocess.Popen(self.command(argv), **kw)

    @contextlib.contextmanager
    def entered(self):
        """This thread's new sockets are in the namespace meanwhile."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open("/proc/%d/ns/net" % self.pid, os.O_RDONLY)
        try:
            _setns(there)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(home)
            os.close(there)

    def query_ok(self):
        """Does our DNS server answer (a query for a name not in the zone)?"""
        from dnslib import DNSRecord
        q = DNSRecord.question("probe.invalid", "A").pack()
        with self.entered():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(0.3)
            s.sendto(q, ("127.0.0.1", 53))
            s.recvfrom(4096)
            return True
        except OSError:
            return False
        finally:
            s.close()


# ---------------------------------------------------------------------------
# mxgated inside the namespace

def _daemon_class():
    from conftest import Daemon, SMTPRaw, read_banner, wait_for
    import pytest
    import smtplib

    class NetnsDaemon(Daemon):
        """mxgated in the namespace, listening on server (and server6);
        clients connect from `source` unless told otherwise."""

        def __init__(self, netns, dirpath, settings, server, server6=None,
                     source=None):
            super().__init__(dirpath, settings)
            self.ns = netns
            self.host = server
            self.host6 = server6
            self.source = source

        def start(self, wait=30.0):
            self.starts += 1
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    self.ns.command([self.mxgated, "-f", "-c",
                                     self.config_path]),
                    stdin=subprocess.DEVNULL, stdout=logf,
                    stderr=subprocess.STDOUT, cwd=self.dir)
            self.pid = self.proc.pid
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail("mxgated exited during startup:\n"
                                + self.log())
                with self.ns.entered():
                    banner = read_banner(self.host, self.port, timeout=1.0)
                if banner is not None and banner[:1] in ("2", "5"):
                    wait_for(self._db_ready,
                             max(0.0, deadline - time.monotonic()))
                    return self
                time.sleep(0.05)
            pytest.fail("no banner in the namespace:\n" + self.log())

        def raw(self, timeout=10.0, source=None):
            source = source or self.source
            host = self.host6 if source and ":" in source else self.host
            with self.ns.entered():
                sock = socket.create_connection(
                    (host, self.port), timeout=timeout,
                    source_address=(source, 0) if source else None)
            c = SMTPRaw.__new__(SMTPRaw)
            c.sock = sock
            c.sock.settimeout(timeout)
            c.buf = b""
            c.timeout = timeout
            return c

        def smtp(self, source=None):
            source = source or self.source
            with self.ns.entered():
                return smtplib.SMTP(
                    self.host, self.port, timeout=15,
                    local_hostname="client.example",
                    source_address=(source, 0) if source else None)

    return NetnsDaemon


def __getattr__(name):
    # Made on first use: conftest is importable only under pytest.
    if name == "NetnsDaemon":
        cls = _daemon_class()
        globals()["NetnsDaemon"] = cls
        return cls
    raise AttributeError(name)


# ---------------------------------------------------------------------------
# The DNS server (run inside the namespace)

def _txt_chunks(text):
    data = text.encode()
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def _answer(zone, data):
    from dnslib import (AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord)
    try:
        q = DNSRecord.parse(data)
    except Exception:
        return None
    name = str(q.q.qname).rstrip(".").lower()
    qtype = QTYPE.get(q.q.qtype)
    entry = zone.get(name)
    if entry is not None and entry.get("drop"):
        return None
    r = q.reply()
    if entry is None:
        r.header.rcode = RCODE.NXDOMAIN
    elif entry.get("servfail"):
        r.header.rcode = RCODE.SERVFAIL
    else:
        for v in entry.get(qtype, []):
            if qtype == "TXT":
                rdata = TXT(_txt_chunks(v))
            elif qtype == "A":
                rdata = A(v)
            elif qtype == "AAAA":
                rdata = AAAA(v)
            elif qtype == "MX":
                rdata = MX(v[1], v[0])
            else:
                continue
            r.add_answer(RR(q.q.qname, q.q.qtype, rdata=rdata, ttl=60))
    return r.pack()


def serve_dns(zone_path):
    with open(zone_path) as f:
        zone = {k.lower(): v for k, v in json.load(f).items()}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 53))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        data, addr = s.recvfrom(4096)
        out = _answer(zone, data)
        if out is not None:
            s.sendto(out, addr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-dns":
        serve_dns(sys.argv[2])
    else:
        sys.exit("usage: netns.py serve-dns ZONE.json")
