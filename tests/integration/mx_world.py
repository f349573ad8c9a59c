"""A small private internet for MX delivery, run by test_delivery.py's
test_mx_delivery inside its own network and mount namespaces
(`unshare --net --mount`, as root):

    loopback only; 127.0.0.0/8 is all ours
    a DNS server (python3-dnslib) on 127.0.0.1:53, named by a
        bind-mounted /etc/resolv.conf:
          mx.test       MX 10 mx1.mx.test (127.0.0.3: nothing listens)
                        MX 20 mx2.mx.test (127.0.0.1)
          nomx.test     A 127.0.0.1 only (implicit MX, RFC 5321 5.1)
          nullmx.test   MX 0 .  (null MX, RFC 7505)
          broken.test   SERVFAIL
          anything else NXDOMAIN
    aiosmtpd on 127.0.0.1:25 (the mail exchanger)
    mxgated relaying every recipient with upstream "mx"

Usage: mx_world.py MXGATED WORKDIR.  Sends one message per domain, waits
for their outcomes and prints them as JSON: {address: [state, reply]},
plus "captured": the recipients the exchanger received.
"""

import json
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time

from aiosmtpd.controller import Controller
from dnslib import QTYPE, RCODE, RR, A, MX
from dnslib.server import BaseResolver, DNSServer

ZONE = {
    ("mx.test", "MX"): [MX("mx1.mx.test", 10), MX("mx2.mx.test", 20)],
    ("mx1.mx.test", "A"): [A("127.0.0.3")],
    ("mx2.mx.test", "A"): [A("127.0.0.1")],
    ("nomx.test", "A"): [A("127.0.0.1")],
    ("nullmx.test", "MX"): [MX(".", 0)],
}
NAMES = {name for name, _ in ZONE}


class Resolver(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name == "broken.test":
            reply.header.rcode = RCODE.SERVFAIL
        elif name not in NAMES:
            reply.header.rcode = RCODE.NXDOMAIN
        for rdata in ZONE.get((name, qtype), []):
            reply.add_answer(RR(name, getattr(QTYPE, qtype), rdata=rdata,
                                ttl=60))
        return reply


class Handler:
    def __init__(self):
        self.rcpts = []

    async def handle_DATA(self, server, session, envelope):
        self.rcpts.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: exchanged"


def main():
    mxgated, work = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = os.path.join(work, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"],
                   check=True)
    dns = DNSServer(Resolver(), port=53, address="127.0.0.1")
    dns.start_thread()
    handler = Handler()
    mx = Controller(handler, hostname="127.0.0.1", port=25)
    mx.start()

    conf = os.path.join(work, "mxgate.conf")
    queue = os.path.join(work, "queue")
    with open(conf, "w") as f:
        f.write("""
server = { hostname = "mx.world.test"; workers = 1; log_level = "debug";
           chroot_dir = "%s/empty"; };
listen = ( { address = "127.0.0.1"; port = 2525; role = "mx"; } );
queue = { directory = "%s"; };
routes = ( { rcpt = ".*"; action = "relay"; upstream = "mx"; } );
delivery = { retry_schedule = [ 3600 ]; keep_delivered = "1d"; connect_timeout = 5;
             command_timeout = 10; };
""" % (work, queue))
    log = open(os.path.join(work, "mxgated.log"), "wb")
    proc = subprocess.Popen([mxgated, "-f", "-c", conf], stdout=log,
                            stderr=subprocess.STDOUT, cwd=work)
    results = {}
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                s = smtplib.SMTP("127.0.0.1", 2525, timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rcpts = ["bob@mx.test", "carol@nomx.test", "dave@nullmx.test",
                 "erin@nx.test", "frank@broken.test"]
        with s:
            for r in rcpts:
                s.sendmail("alice@sender.test", [r],
                           "Subject: to %s\r\n\r\nhello\r\n" % r)
        db = os.path.join(queue, "queue.db")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            con = sqlite3.connect("file:%s?mode=ro" % db, uri=True,
                                  timeout=10)
            rows = con.execute("SELECT address, state, last_reply FROM"
                               " recipients").fetchall()
            con.close()
            results = {a: [st, rep] for a, st, rep in rows}
            if all(a in results and results[a][0] not in
                   ("queued", "delivering") for a in rcpts):
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
        mx.stop()
        dns.stop()
    results["captured"] = handler.rcpts
    print(json.dumps(results))


if __name__ == "__main__":
    main()
