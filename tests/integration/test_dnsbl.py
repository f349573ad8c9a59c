"""DNS block and allow lists (dnsbl.sites, weighted, at connect) and
sender-domain lists (dnsbl.sender_sites, at MAIL), answered by the tests'
own DNS server in a private network namespace (netns.py)."""
import itertools
import os
import tempfile
import time

import pytest

from conftest import default_settings, merge_settings
from netns import NetNS, NetnsDaemon, can_unshare

pytestmark = pytest.mark.skipif(not can_unshare(),
                                reason="needs root and unshare(1)")

SERVER = "192.0.2.1"
SERVER6 = "2001:db8::1"
LISTED = "192.0.2.6"        # zen: weight 3, the threshold
ALLOWED = "192.0.2.5"       # zen 3, and the allow list -2: 1
FILTERED = "192.0.2.7"      # zen answers outside its filter
CLEAN = "192.0.2.8"         # in no list
V6 = "2001:db8::25"         # zen by nibbles
PORTS = itertools.count(2700)


def rev(ip):
    return ".".join(reversed(ip.split(".")))


V6_NAME = ("5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
           "8.b.d.0.1.0.0.2.zen.test")

ZONE = {
    rev(LISTED) + ".zen.test": {"A": ["127.0.0.2"]},
    rev(ALLOWED) + ".zen.test": {"A": ["127.0.0.4"]},
    rev(ALLOWED) + ".wl.test": {"A": ["127.0.9.2"]},
    rev(FILTERED) + ".zen.test": {"A": ["127.255.255.254"]},
    V6_NAME: {"A": ["127.0.0.10"]},
    "spam.example.dbl.test": {"A": ["127.0.1.2"]},
    # A list that never answers: it lists nobody, and says so.
    rev(CLEAN) + ".slow.test": {"drop": True},
}


@pytest.fixture(scope="module")
def ns():
    with NetNS([SERVER, SERVER6, LISTED, ALLOWED, FILTERED, CLEAN, V6],
               ZONE) as n:
        yield n


@pytest.fixture
def start(request, ns, daemon_factory):
    # daemon_factory's teardown stops what is in _mxgate_daemons.
    started = request.node._mxgate_daemons

    def go(**sections):
        dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(dirpath, 0o755)
        port = next(PORTS)
        settings = merge_settings(default_settings(dirpath, port), {
            "listen": [{"address": SERVER, "port": port, "role": "mx"},
                       {"address": SERVER6, "port": port, "role": "mx"}],
            "trusted_networks": [],
            "accept_domains": None, "upstreams": None, "delivery": None,
            "routes": [{"name": "open", "rcpt": r"@open\.test$",
                        "action": "debug"}],
            "spf": {"mail_from_policy": "none"},
            "dnsbl": {"sites": ["zen.test=127.0.0.[2..11]*3",
                                "wl.test=127.0.[0..255].[2;3]*-2",
                                "slow.test*5"],
                      "sender_sites": ["dbl.test=127.0.1.[2..99]*3"],
                      "threshold": 3, "timeout": 1},
        })
        settings = merge_settings(settings, sections)
        d = NetnsDaemon(ns, dirpath, settings, SERVER, SERVER6,
                        source=CLEAN)
        started.append(d)
        return d.start()

    return go


def greeting(d, source):
    with d.raw(source=source) as c:
        return c.line(timeout=10)


def mail(d, source, sender):
    with d.raw(source=source) as c:
        assert c.line(timeout=10).startswith("220 ")
        assert c.cmd("EHLO client.example").startswith("250")
        return c.cmd("MAIL FROM:<%s>" % sender, timeout=10)


def test_listed_client_refused_at_connect(start):
    d = start()
    line = greeting(d, LISTED)
    assert line == ("554 5.7.1 Service unavailable; client [%s] blocked "
                    "using zen.test=127.0.0.2" % LISTED), line
    assert "dnsbl client score=3 threshold=3" in d.log()


def test_weights_and_filters(start):
    d = start()
    # Listed, but the allow list's -2 brings the score under 3.
    assert greeting(d, ALLOWED).startswith("220 ")
    assert "score=1" in d.log()
    # An answer outside the filter lists nobody.
    assert greeting(d, FILTERED).startswith("220 ")
    # IPv6 clients are asked by nibbles.
    assert greeting(d, V6).startswith("554 5.7.1")


def test_list_that_never_answers_fails_open(start):
    d = start()
    t0 = time.monotonic()
    assert greeting(d, CLEAN).startswith("220 ")
    assert time.monotonic() - t0 < 5.0
    assert "slow.test: no answer" in d.log()


def test_scores_are_cached(start):
    # CLEAN's slow.test lookup times out the first time (logged); the
    # second connection is answered from the cache, without a lookup.
    # Each daemon here has one smtp worker, whose cache it is.
    d = start(server={"workers": 1})
    assert greeting(d, CLEAN).startswith("220 ")
    assert greeting(d, CLEAN).startswith("220 ")
    assert d.log().count("slow.test: no answer") == 1
    # Without a cache, every connection asks again.
    d = start(server={"workers": 1}, dnsbl={"cache_time": 0})
    assert greeting(d, CLEAN).startswith("220 ")
    assert greeting(d, CLEAN).startswith("220 ")
    assert d.log().count("slow.test: no answer") == 2


def test_sender_domain_list_at_mail(start):
    d = start()
    line = mail(d, CLEAN, "someone@spam.example")
    assert line == ("554 5.7.1 <someone@spam.example>: Sender address "
                    "rejected: spam.example blocked using "
                    "dbl.test=127.0.1.2"), line
    assert mail(d, CLEAN, "someone@fine.example").startswith("250 ")
    assert mail(d, CLEAN, "").startswith("250 ")


def test_trusted_clients_not_looked_up(start):
    d = start(trusted_networks=[LISTED + "/32"])
    assert greeting(d, LISTED).startswith("220 ")
    assert "dnsbl" not in d.log()
