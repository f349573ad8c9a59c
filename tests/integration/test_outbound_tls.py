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

# MTA-STS: MX hosts, and the policy servers (mta-sts.DOMAIN).
STS_HOSTS = {
    "mx.sts-ok": "192.0.2.40", "mx.sts-mismatch": "192.0.2.41",
    "mx.sts-expired": "192.0.2.42", "mx.sts-strip": "192.0.2.43",
    "mx.sts-testing": "192.0.2.44", "mx.sts-plain": "192.0.2.45",
}
HTTPS = "192.0.2.30"            # a good certificate for every mta-sts name
HTTPS_BAD = "192.0.2.31"        # a self-signed one
STS_DOMAINS = {                 # domain: (MX host, policy server, policy)
    "sts-ok": ("mx.sts-ok", HTTPS, "enforce", "mx.sts-ok.test"),
    "sts-wild": ("mx.sts-ok", HTTPS, "enforce", "*.sts-ok.test"),
    "sts-mismatch": ("mx.sts-mismatch", HTTPS, "enforce", "mx.elsewhere.test"),
    "sts-expired": ("mx.sts-expired", HTTPS, "enforce", "mx.sts-expired.test"),
    "sts-strip": ("mx.sts-strip", HTTPS, "enforce", "mx.sts-strip.test"),
    "sts-testing": ("mx.sts-testing", HTTPS, "testing", "mx.sts-testing.test"),
    "sts-missing": ("mx.sts-plain", HTTPS, None, None),        # 404
    "sts-badcert": ("mx.sts-plain", HTTPS_BAD, "enforce", "mx.sts-plain.test"),
    "nosts": ("mx.sts-plain", None, None, None),               # no TXT
}


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
    # MTA-STS
    for host, addr in STS_HOSTS.items():
        text += "%s A %s\n" % (host, addr)
    servers["mx.sts-ok"] = pki.leaf("mx.sts-ok.test")[:2]
    servers["mx.sts-mismatch"] = pki.leaf("mx.sts-mismatch.test")[:2]
    servers["mx.sts-expired"] = pki.leaf("mx.sts-expired.test", expired=True)[:2]
    servers["mx.sts-strip"] = (None, None)
    servers["mx.sts-testing"] = (vbad_cert, vbad_key)
    servers["mx.sts-plain"] = (None, None)
    for domain, (mx, server, mode, pattern) in STS_DOMAINS.items():
        text += "%s MX 10 %s\n" % (domain, mx)
        if server is not None:
            text += ('_mta-sts.%s TXT "v=STSv1; id=20261206T01;"\n'
                     'mta-sts.%s A %s\n' % (domain, domain, server))
    return text, {"insecure": child}, servers


def https_config(pki, work):
    names = ["mta-sts.%s.test" % d for d in STS_DOMAINS]
    good_cert, good_key, _ = pki.leaf(names[0], more_names=names[1:])
    bad_cert, bad_key, _ = pki.leaf("mta-sts.sts-badcert.test",
                                    self_signed=True)
    files = {}
    for domain, (mx, server, mode, pattern) in STS_DOMAINS.items():
        if mode is not None:
            files["mta-sts.%s.test" % domain] = [
                200, "text/plain",
                "version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: 86400\r\n"
                % (mode, pattern)]
    return {"servers": [
        {"address": HTTPS, "cert": good_cert, "key": good_key, "files": files},
        {"address": HTTPS_BAD, "cert": bad_cert, "key": bad_key,
         "files": files}]}


@pytest.fixture(scope="module")
def world():
    work = tempfile.mkdtemp(prefix="mxgate-outtls-", dir="/tmp")
    os.chmod(work, 0o755)
    pki = Pki(work)
    os.chmod(pki.ca_file, 0o644)
    text, children, servers = zone(pki)
    addrs = ([SERVER] + list(HOSTS.values()) + [INSECURE_MX] +
             list(STS_HOSTS.values()) + [HTTPS, HTTPS_BAD])
    with NetNS(addrs, None) as ns:
        dns = DnsWorld(ns, work, text, children,
                       bogus=["_25._tcp.mx.dane-bogus.test"])
        smtp = https = None
        try:
            dns.start()
            log = os.path.join(work, "received.jsonl")
            config = {"log": log, "servers": []}
            for host, (cert, key) in servers.items():
                addr = HOSTS.get(host) or STS_HOSTS.get(host) or INSECURE_MX
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
            hpath = os.path.join(work, "https.json")
            with open(hpath, "w") as f:
                json.dump(https_config(pki, work), f)
            https = ns.popen([PYTHON, os.path.join(os.path.dirname(__file__),
                                                   "tls_world.py"),
                              "serve-https", hpath], stdout=subprocess.PIPE,
                             stderr=open(os.path.join(work, "https.log"), "ab"))
            assert https.stdout.readline().strip() == b"ready"
            yield {"ns": ns, "dns": dns, "pki": pki, "log": log, "dir": work}
        finally:
            stop_proc(https)
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


STS_CASES = {
    "a@sts-ok.test": ("tls", STS_HOSTS["mx.sts-ok"]),
    "b@sts-wild.test": ("tls", STS_HOSTS["mx.sts-ok"]),
    # Testing mode: the certificate names someone else; delivered, and
    # reported.
    "c@sts-testing.test": ("tls", STS_HOSTS["mx.sts-testing"]),
    # No policy to be had: the policy server says 404, or its
    # certificate does not verify, or there is no TXT record.
    "d@sts-missing.test": ("clear", STS_HOSTS["mx.sts-plain"]),
    "e@sts-badcert.test": ("clear", STS_HOSTS["mx.sts-plain"]),
    "f@nosts.test": ("clear", STS_HOSTS["mx.sts-plain"]),
    "g@sts-mismatch.test": ("deferred", "mx.sts-mismatch.test is not an MX"
                            " host of the MTA-STS policy of sts-mismatch.test"),
    "h@sts-expired.test": ("deferred", "not trusted: certificate has expired"),
    "i@sts-strip.test": ("deferred", "TLS is required (level verify) and"),
}


def test_mta_sts(world, relay):
    d = relay({"tls_ca": world["pki"].ca_file})
    got = send(d, list(STS_CASES))
    for rcpt, (how, what) in STS_CASES.items():
        if how == "deferred":
            deferred_with(world, got, rcpt, what)
        else:
            delivered_over(world, got, rcpt, how == "tls", what)
    # The policies fetched are cached in the queue for their max_age.
    rows = d.db("SELECT domain, policy_id, mode, mx, expires_at - fetched_at"
                " FROM mta_sts_policies ORDER BY domain")
    assert ("sts-ok.test", "20261206T01", "enforce", "mx.sts-ok.test",
            86400) in rows, rows
    assert ("sts-testing.test", "20261206T01", "testing",
            "mx.sts-testing.test", 86400) in rows, rows
    assert not [r for r in rows if r[0] in ("sts-missing.test",
                                            "sts-badcert.test", "nosts.test")]
    # TLS-RPT: what each session came to, per domain.
    res = d.db("SELECT domain, policy_type, result_type, mx_host, sessions"
               " FROM tls_results")
    got_res = {(a, b, c, m) for a, b, c, m, n in res}
    assert ("sts-ok.test", "sts", "", "mx.sts-ok.test") in got_res, res
    assert ("sts-testing.test", "sts", "certificate-host-mismatch",
            "mx.sts-testing.test") in got_res, res
    assert ("sts-expired.test", "sts", "certificate-expired",
            "mx.sts-expired.test") in got_res, res
    assert ("sts-strip.test", "sts", "starttls-not-supported",
            "mx.sts-strip.test") in got_res, res
    assert ("sts-mismatch.test", "sts", "validation-failure",
            "mx.sts-mismatch.test") in got_res, res
    assert ("sts-missing.test", "sts", "sts-policy-fetch-error", "") in got_res, res
    assert ("sts-badcert.test", "sts", "sts-webpki-invalid", "") in got_res, res
    assert not [r for r in res if r[0] == "nosts.test"], res
    # The day's RFC 8460 report of a domain.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    r = d.ctl("tls-report", "--date", day, "sts-testing.test")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["date-range"] == {"start-datetime": day + "T00:00:00Z",
                                 "end-datetime": day + "T23:59:59Z"}
    assert rep["report-id"].startswith(day + "_sts-testing.test@")
    [pol] = rep["policies"]
    assert pol["policy"] == {
        "policy-type": "sts", "policy-domain": "sts-testing.test",
        "policy-string": ["version: STSv1", "mode: testing",
                          "mx: mx.sts-testing.test", "max_age: 86400"],
        "mx-host": ["mx.sts-testing.test"]}, pol
    assert pol["summary"] == {"total-successful-session-count": 0,
                              "total-failure-session-count": 1}, pol
    # Our end of the connection: on the namespace's loopback, the kernel
    # picks the source, one of the addresses there.
    assert pol["failure-details"][0].pop("sending-mta-ip") in (
        [SERVER] + list(STS_HOSTS.values())), pol
    assert pol["failure-details"] == [{
        "result-type": "certificate-host-mismatch",
        "receiving-mx-hostname": "mx.sts-testing.test",
        "receiving-ip": STS_HOSTS["mx.sts-testing"],
        "failed-session-count": 1}], pol
    # Every domain: one report a line; a day without sessions: status 1.
    r = d.ctl("tls-report", "--date", day)
    assert r.returncode == 0, r.stderr
    domains = {json.loads(l)["policies"][0]["policy"]["policy-domain"]
               for l in r.stdout.splitlines()}
    assert {"sts-ok.test", "sts-expired.test", "sts-missing.test"} <= domains
    r = d.ctl("tls-report", "--date", "2001-01-01")
    assert r.returncode == 1 and "no TLS sessions recorded" in r.stderr
    r = d.ctl("tls-report", "--date", "yesterday")
    assert r.returncode == 2 and "--date wants YYYY-MM-DD" in r.stderr


def test_tls_report_dane(world, relay):
    # DANE sessions are reported under their TLSA records.
    d = relay({"dnssec": True, "tls_level": "dane"})
    got = send(d, ["u@dane-ok.test", "v@dane-bad.test"])
    assert got["u@dane-ok.test"][0] == "delivered"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    rep = json.loads(d.ctl("tls-report", "--date", day, "dane-ok.test").stdout)
    [pol] = rep["policies"]
    assert pol["policy"]["policy-type"] == "tlsa"
    assert pol["policy"]["policy-string"][0].startswith("3 1 1 ")
    assert pol["summary"]["total-successful-session-count"] == 1
    rep = json.loads(d.ctl("tls-report", "--date", day, "dane-bad.test").stdout)
    [pol] = rep["policies"]
    assert pol["failure-details"][0]["result-type"] == "validation-failure"


def test_mta_sts_cache_outlives_the_server(world, relay):
    # A policy in the queue's cache is used while it has not expired,
    # even when its server cannot be reached (RFC 8461 5.1).
    d = relay({"tls_ca": world["pki"].ca_file})
    d.db("SELECT 1")
    import sqlite3
    con = sqlite3.connect(d.db_path, timeout=10)
    now = int(time.time())
    con.execute("INSERT INTO mta_sts_policies VALUES ('nosts.test', 'x1',"
                " 'enforce', 'mx.other.test', 3600, ?, ?)", (now, now + 3600))
    con.commit()
    con.close()
    got = send(d, ["j@nosts.test"])
    deferred_with(world, got, "j@nosts.test", "is not an MX host of the"
                  " MTA-STS policy of nosts.test")


def test_check_warns_of_a_remote_dnssec_resolver(tmp_path):
    # mxgated -n: the AD bit of a resolver across the network can be
    # forged on the way; a local one is what delivery.dnssec trusts.
    from conftest import mxgated_path, render_config
    settings = merge_settings(default_settings(str(tmp_path), 2525), {
        "delivery": {"dnssec": True, "tls_ca": "/nonexistent/ca.pem"}})
    conf = tmp_path / "mxgate.conf"
    conf.write_text(render_config(settings))

    def check(nameserver):
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver %s\n" % nameserver)
        return subprocess.run(
            ["unshare", "-m", "--", "sh", "-c",
             "mount --bind %s /etc/resolv.conf && exec %s -n -c %s"
             % (resolv, mxgated_path(), conf)],
            capture_output=True, text=True, timeout=60)

    r = check("192.0.2.53")
    assert "delivery.dnssec trusts the AD bit of nameserver 192.0.2.53" \
        in r.stderr, r.stderr
    assert "delivery.tls_ca" in r.stderr and "/nonexistent/ca.pem" in r.stderr
    r = check("127.0.0.1")
    assert "trusts the AD bit" not in r.stderr, r.stderr
