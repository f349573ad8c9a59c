"""The relay client's TLS to MX hosts: levels (none, may, encrypt, verify,
dane), DANE (RFC 7672) from a validating resolver.

Everything runs in a private network namespace (netns.py) with its own
DNS (tls_world.py): nsd serves the DNSSEC-signed zone "test." (and an
unsigned child, insecure.test, delegated without DS) to a validating
unbound on 127.0.0.1, the namespace's only resolver, whose one trust
anchor is the zone's key.  The MX hosts are aiosmtpd servers on
documentation addresses, with STARTTLS (certificates of a test CA,
expired ones, a self-signed one) or without it (a downgrade: what a
network attacker who strips STARTTLS shows).  mxgated relays every
recipient to its domain's MX hosts; each case is one domain.
"""

import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import default_settings, merge_settings, wait_for, free_port
from netns import NetNS, NetnsDaemon, can_unshare
from tls_world import PYTHON, DnsWorld, Pki, stop_proc

pytestmark = pytest.mark.skipif(not can_unshare(),
                                reason="needs root and unshare(1)")

SERVER = "192.0.2.1"            # mxgated
HOSTS = {                       # MX host: address
    "mx.dane-ok": "192.0.2.10", "mx.dane-bad": "192.0.2.11",
    "mx.dane-strip": "192.0.2.12", "mx.dane-ta": "192.0.2.13",
    "mx.dane-expired": "192.0.2.14", "mx.dane-ee-expired": "192.0.2.15",
    "mx.pkix-only": "192.0.2.16", "mx.pkix-strip": "192.0.2.17",
    "mx.dane-bogus": "192.0.2.18", "mx.nodane": "192.0.2.19",
    "mx.verify-ok": "192.0.2.21", "mx.verify-bad": "192.0.2.22",
}
INSECURE_MX = "192.0.2.20"      # mx.insecure.test, in the unsigned child


def zone(pki):
    ok_cert, ok_key, ok_spki = pki.leaf("mx.dane-ok.test")
    bad_cert, bad_key, _ = pki.leaf("mx.dane-bad.test")
    ta_cert, ta_key, _ = pki.leaf("mx.dane-ta.test")
    exp_cert, exp_key, _ = pki.leaf("mx.dane-expired.test", expired=True)
    eexp_cert, eexp_key, eexp_spki = pki.leaf("mx.dane-ee-expired.test",
                                              expired=True)
    self_cert, self_key, self_spki = pki.leaf("mx.pkix-only.test",
                                              self_signed=True)
    bog_cert, bog_key, bog_spki = pki.leaf("mx.dane-bogus.test")
    vok_cert, vok_key, _ = pki.leaf("mx.verify-ok.test")
    vbad_cert, vbad_key, _ = pki.leaf("someone-else.test")
    servers = {
        "mx.dane-ok": (ok_cert, ok_key), "mx.dane-bad": (bad_cert, bad_key),
        "mx.dane-strip": (None, None), "mx.dane-ta": (ta_cert, ta_key),
        "mx.dane-expired": (exp_cert, exp_key),
        "mx.dane-ee-expired": (eexp_cert, eexp_key),
        "mx.pkix-only": (self_cert, self_key), "mx.pkix-strip": (None, None),
        "mx.dane-bogus": (bog_cert, bog_key), "mx.nodane": (None, None),
        "mx.verify-ok": (vok_cert, vok_key),
        "mx.verify-bad": (vbad_cert, vbad_key),
    }
    text = ""
    for host, addr in HOSTS.items():
        domain = host[3:]
        text += "%s MX 10 %s\n%s A %s\n" % (domain, host, host, addr)
    text += "dane-backup MX 10 mx.dane-bad\ndane-backup MX 20 mx.dane-ok\n"
    text += "none MX 10 mx.dane-ok\nencrypt-strip MX 10 mx.dane-strip\n"
    wrong = "ab" * 32
    tlsa = {
        "mx.dane-ok": "3 1 1 " + ok_spki,
        "mx.dane-bad": "3 1 1 " + wrong,
        "mx.dane-strip": "3 1 1 " + wrong,
        "mx.dane-ta": "2 0 1 " + pki.ca_digest(),
        "mx.dane-expired": "2 0 1 " + pki.ca_digest(),
        "mx.dane-ee-expired": "3 1 1 " + eexp_spki,
        "mx.pkix-only": "1 1 1 " + self_spki,
        "mx.pkix-strip": "1 1 1 " + wrong,
        "mx.dane-bogus": "3 1 1 " + bog_spki,
    }
    for host, rdata in tlsa.items():
        text += "_25._tcp.%s TLSA %s\n" % (host, rdata)
    child = ("@ MX 10 mx\nmx A %s\n_25._tcp.mx TLSA 3 1 1 %s\n"
             % (INSECURE_MX, wrong))
    servers["mx.insecure"] = (None, None)
    return text, {"insecure": child}, servers


@pytest.fixture(scope="module")
def world():
    work = tempfile.mkdtemp(prefix="mxgate-outtls-", dir="/tmp")
    os.chmod(work, 0o755)
    pki = Pki(work)
    os.chmod(pki.ca_file, 0o644)
    text, children, servers = zone(pki)
    addrs = [SERVER] + list(HOSTS.values()) + [INSECURE_MX]
    with NetNS(addrs, None) as ns:
        dns = DnsWorld(ns, work, text, children,
                       bogus=["_25._tcp.mx.dane-bogus.test"])
        smtp = None
        try:
            dns.start()
            log = os.path.join(work, "received.jsonl")
            config = {"log": log, "servers": []}
            for host, (cert, key) in servers.items():
                addr = HOSTS.get(host, INSECURE_MX)
                config["servers"].append({"address": addr, "name": host + ".test",
                                          "cert": cert, "key": key})
            cpath = os.path.join(work, "smtp.json")
            with open(cpath, "w") as f:
                json.dump(config, f)
            smtp = ns.popen([PYTHON, os.path.join(os.path.dirname(__file__),
                                                  "tls_world.py"),
                             "serve-smtp", cpath], stdout=subprocess.PIPE,
                            stderr=open(os.path.join(work, "smtp.log"), "ab"))
            assert smtp.stdout.readline().strip() == b"ready"
            yield {"ns": ns, "dns": dns, "pki": pki, "log": log, "dir": work}
        finally:
            stop_proc(smtp)
            dns.stop()


@pytest.fixture
def relay(request, world, daemon_factory):
    """mxgated in the namespace relaying everything to the MX hosts."""
    started = request.node._mxgate_daemons     # stopped by daemon_factory

    def go(delivery):
        dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(dirpath, 0o755)
        port = free_port()
        settings = merge_settings(default_settings(dirpath, port), {
            "listen": [{"address": SERVER, "port": port, "role": "mx"}],
            "trusted_networks": ["192.0.2.0/24"],
            "upstreams": None,
            "routes": [{"name": "out", "rcpt": ".*", "action": "relay",
                        "upstream": "mx"}],
            "delivery": merge_settings(
                {"retry_schedule": [3600], "keep_delivered": "1d",
                 "connect_timeout": 5, "command_timeout": 10}, delivery),
        })
        d = NetnsDaemon(world["ns"], dirpath, settings, SERVER, source=SERVER)
        started.append(d)
        return d.start()

    return go


def send(d, rcpts):
    """One message per recipient; their final states by address."""
    with d.smtp() as s:
        for r in rcpts:
            s.sendmail("alice@sender.example", [r],
                       "Subject: to %s\r\n\r\nhello\r\n" % r)

    def done():
        rows = d.db("SELECT address, state, last_reply FROM recipients")
        got = {a: (st, rep) for a, st, rep in rows}
        if all(a in got and got[a][0] not in ("queued", "delivering")
               for a in rcpts):
            return got
        return None
    got = wait_for(done, 60)
    assert got, d.db("SELECT address, state, last_reply FROM recipients")
    return got


def received(world, rcpt):
    """The exchangers' records of the message to rcpt."""
    if not os.path.exists(world["log"]):
        return []
    with open(world["log"]) as f:
        return [m for m in map(json.loads, f) if rcpt in m["rcpts"]]


def delivered_over(world, got, rcpt, tls, server):
    state, reply = got[rcpt]
    assert state == "delivered", (rcpt, state, reply)
    recs = received(world, rcpt)
    assert len(recs) == 1, recs
    assert recs[0]["tls"] is tls and recs[0]["server"] == server, recs


def deferred_with(world, got, rcpt, text):
    state, reply = got[rcpt]
    assert state == "deferred", (rcpt, state, reply)
    assert text in reply, reply
    assert reply.startswith("451 4.7."), reply
    assert received(world, rcpt) == []


def test_world_is_signed(world):
    # The premise of every case: unbound validates our zone, and says
    # when it cannot (the bogus TLSA) or when the zone is unsigned.
    dns = world["dns"]
    assert dns.secure("_25._tcp.mx.dane-ok.test", "TLSA")
    assert dns.query("_25._tcp.mx.dane-bogus.test", "TLSA").header.rcode == 2
    a = dns.query("_25._tcp.mx.insecure.test", "TLSA")
    assert a.header.rcode == 0 and not a.header.ad and a.rr


DANE_CASES = {
    # rcpt: (expected, detail)
    "a@dane-ok.test": ("tls", HOSTS["mx.dane-ok"]),
    "b@dane-ta.test": ("tls", HOSTS["mx.dane-ta"]),
    # RFC 7671 5.1: DANE-EE ignores the certificate's dates.
    "c@dane-ee-expired.test": ("tls", HOSTS["mx.dane-ee-expired"]),
    # Only PKIX-* records: unusable, so TLS without authentication.
    "d@pkix-only.test": ("tls", HOSTS["mx.pkix-only"]),
    # No TLSA records; TLSA records in an unsigned zone: no DANE, and
    # the servers offer no STARTTLS: in the clear.
    "e@nodane.test": ("clear", HOSTS["mx.nodane"]),
    "f@insecure.test": ("clear", INSECURE_MX),
    # The first MX does not match its records; the second one does.
    "g@dane-backup.test": ("tls", HOSTS["mx.dane-ok"]),
    "h@dane-bad.test": ("deferred", "does not match its DANE TLSA records"),
    "i@dane-expired.test": ("deferred", "certificate has expired"),
    "j@dane-strip.test": ("deferred", "has DANE TLSA records and does not"
                          " offer STARTTLS"),
    "k@pkix-strip.test": ("deferred", "does not offer STARTTLS"),
    "l@dane-bogus.test": ("deferred", "TLSA lookup of"
                          " _25._tcp.mx.dane-bogus.test failed"),
}


def test_dane(world, relay):
    d = relay({"dnssec": True})
    got = send(d, list(DANE_CASES))
    for rcpt, (how, what) in DANE_CASES.items():
        if how == "deferred":
            deferred_with(world, got, rcpt, what)
        else:
            delivered_over(world, got, rcpt, how == "tls", what)
    log = d.log()
    assert "certificate matches its DANE TLSA records" in log
    assert "does not match its DANE TLSA records" in log


def test_without_dnssec_no_dane(world, relay):
    # The same resolver, but its AD bit not trusted: TLSA records never
    # apply; the default level is may.
    d = relay({})
    got = send(d, ["m@dane-bad.test", "n@dane-strip.test"])
    delivered_over(world, got, "m@dane-bad.test", True, HOSTS["mx.dane-bad"])
    delivered_over(world, got, "n@dane-strip.test", False,
                   HOSTS["mx.dane-strip"])


def test_levels_per_domain(world, relay):
    d = relay({"dnssec": True, "tls_ca": world["pki"].ca_file,
               "tls_level": "may",
               "tls_policy": [
                   {"domain": "verify-ok.test", "level": "verify"},
                   {"domain": ".verify-bad.test", "level": "verify"},
                   {"domain": "verify-bad.test", "level": "verify"},
                   {"domain": "encrypt-strip.test", "level": "encrypt"},
                   {"domain": "none.test", "level": "none"},
                   {"domain": "dane-ok.test", "level": "dane"}]})
    got = send(d, ["o@verify-ok.test", "p@verify-bad.test",
                   "q@encrypt-strip.test", "r@none.test", "s@dane-ok.test",
                   "t@dane-bad.test"])
    delivered_over(world, got, "o@verify-ok.test", True, HOSTS["mx.verify-ok"])
    deferred_with(world, got, "p@verify-bad.test", "not trusted: hostname"
                  " mismatch")
    deferred_with(world, got, "q@encrypt-strip.test", "TLS is required"
                  " (level encrypt)")
    delivered_over(world, got, "r@none.test", False, HOSTS["mx.dane-ok"])
    delivered_over(world, got, "s@dane-ok.test", True, HOSTS["mx.dane-ok"])
    # tls_level may: the TLSA records are not looked at.
    delivered_over(world, got, "t@dane-bad.test", True, HOSTS["mx.dane-bad"])


def test_dane_needs_dnssec(world, tmp_path):
    # A level that cannot work is refused at start, with its line.
    from conftest import mxgated_path, render_config
    settings = merge_settings(default_settings(str(tmp_path), 2525), {
        "delivery": {"tls_level": "dane"},
        "upstreams": [{"name": "parked", "hosts": ["127.0.0.1:9"],
                       "tls": "dane"}]})
    conf = tmp_path / "mxgate.conf"
    conf.write_text(render_config(settings))
    r = subprocess.run([mxgated_path(), "-n", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "'delivery.tls_level' is \"dane\": DANE needs TLSA records" in r.stderr
    assert "'upstreams[0].tls' is \"dane\"" in r.stderr
