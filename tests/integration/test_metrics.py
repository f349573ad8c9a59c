"""The Prometheus endpoint (metrics.listen): scraped during traffic, the
numbers match what was sent; every scrape passes `promtool check
metrics` (Debian package prometheus); counters survive a killed smtp
process and a killed queue process; the queue gauges follow the queue;
the exporter answers only GET /metrics, bounds its connections, and runs
confined; nothing listens unless configured.
"""
import os
import tempfile
import re
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, mxgated_path, wait_for

SERIES_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")

ROUTES = [
    {"name": "sink", "rcpt": r"@sink\.example$", "action": "discard"},
    {"name": "accepted", "rcpt": r"@example\.test$", "action": "relay",
     "upstream": "parked"},
    {"name": "relay_denied", "rcpt": ".*", "action": "reject",
     "code": 550, "text": "5.7.1 <${rcpt}>: Relay access denied"},
]


def promtool():
    for p in ("/usr/bin/promtool", "/usr/local/bin/promtool"):
        if os.access(p, os.X_OK):
            return p
    pytest.fail("promtool not installed (Debian package prometheus, "
                "contrib/install-deps.sh)")


def http_get(port, path="/metrics", raw=None, timeout=5.0):
    """(status code, headers text, body) of one request."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw if raw is not None else
                  ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(), body.decode()


def scrape_text(port):
    status, head, body = http_get(port)
    assert status == 200, (head, body)
    assert "Content-Type: text/plain; version=0.0.4" in head, head
    return body


def promtool_check(body):
    r = subprocess.run([promtool(), "check", "metrics"], input=body,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr, body)


def parse(body):
    """{series: value}; every sample line well formed, none twice."""
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SERIES_RE.match(line)
        assert m, "not a sample line: %r" % line
        assert m.group(1) not in out, "series twice: %s" % m.group(1)
        out[m.group(1)] = float(m.group(2))
    return out


def scrape(port, check=True):
    """{series: value}, after promtool accepted the text."""
    body = scrape_text(port)
    if check:
        promtool_check(body)
    return parse(body)


@pytest.fixture
def md(daemon_factory):
    """A daemon with the exporter on a free loopback port."""
    port = free_port()
    d = daemon_factory({"metrics": {"listen": "127.0.0.1:%d" % port},
                        "routes": ROUTES,
                        "delivery": {"retry_schedule": [3600],
                                     "keep_delivered": "1d"}})
    d.mport = port
    wait_for(lambda: _up(port), 10.0)
    return d


def _up(port):
    try:
        http_get(port, timeout=1.0)
        return True
    except OSError:
        return False


def message(subject, body_lines=5):
    body = "".join("line %d of the message body\r\n" % i
                   for i in range(body_lines))
    return ("From: a@sender.example\r\nTo: b@example.test\r\n"
            "Subject: %s\r\n\r\n%s" % (subject, body))


def send(d, rcpts, subject="m", body_lines=5):
    """Send one message; returns smtplib's refused dict."""
    with smtplib.SMTP(d.host, d.port, timeout=30) as c:
        return c.sendmail("a@sender.example", rcpts,
                          message(subject, body_lines))


def test_scrape_during_traffic_matches_what_was_sent(md):
    """Three clients send while the endpoint is scraped every 50 ms:
    every scrape is valid and the counters only grow; at the end they
    are exactly what was sent, received, refused and delivered."""
    nthreads, per_thread = 3, 8
    errors, scrapes = [], []
    stop = threading.Event()

    def client(k):
        try:
            for i in range(per_thread):
                refused = {}
                try:
                    refused = send(md, ["u%d@sink.example" % k,
                                        "v%d@example.test" % k,
                                        "w%d@elsewhere.example" % k],
                                   subject="t%d-%d" % (k, i),
                                   body_lines=1 + i)
                except smtplib.SMTPRecipientsRefused as e:
                    refused = e.recipients
                assert list(refused) == ["w%d@elsewhere.example" % k]
        except Exception as e:  # reported by the main thread
            errors.append(e)

    def scraper():
        # Three at least: the traffic may be over in 40 ms.
        while not stop.is_set() or len(scrapes) < 3:
            scrapes.append(scrape_text(md.mport))
            time.sleep(0.02)

    # the start's readiness check made a connection: count from here
    base = scrape(md.mport)
    st = threading.Thread(target=scraper)
    st.start()
    assert wait_for(lambda: scrapes, 10.0)
    threads = [threading.Thread(target=client, args=(k,))
               for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    st.join(60)
    assert not errors, errors
    assert len(scrapes) >= 3
    # the exposition taken mid-traffic is valid too
    promtool_check(scrapes[len(scrapes) // 2])
    parsed = [parse(b) for b in scrapes]
    for key in ("mxgate_messages_accepted_total",
                "mxgate_recipients_accepted_total",
                "mxgate_received_bytes_total",
                'mxgate_smtp_commands_total{command="RCPT"}'):
        values = [p[key] for p in parsed]
        assert values == sorted(values), (key, values)
    assert parsed[0]["mxgate_messages_accepted_total"] < \
        parsed[-1]["mxgate_messages_accepted_total"] or \
        parsed[-1]["mxgate_messages_accepted_total"] == \
        nthreads * per_thread

    n = nthreads * per_thread
    sizes = md.db("SELECT sum(size), count(*) FROM messages")[0]
    assert sizes[1] == n
    # the sink recipients are delivered (discard) at once
    delivered = 'mxgate_deliveries_total{outcome="delivered",destination="discard"}'
    assert wait_for(lambda: scrape(md.mport).get(delivered, 0) -
                    base.get(delivered, 0) == n, 30.0), \
        (scrape(md.mport).get(delivered, 0), base.get(delivered, 0), n)
    now = scrape(md.mport)
    m = {k: v - base.get(k, 0) for k, v in now.items()}
    assert m["mxgate_messages_accepted_total"] == n
    assert m["mxgate_queue_committed_messages_total"] == n
    assert m["mxgate_recipients_accepted_total"] == 2 * n
    assert m['mxgate_recipients_rejected_total{reason="route"}'] == n
    assert m["mxgate_received_bytes_total"] == sizes[0]
    assert m["mxgate_connections_accepted_total"] == n
    assert m['mxgate_smtp_commands_total{command="MAIL"}'] == n
    assert m['mxgate_smtp_commands_total{command="RCPT"}'] == 3 * n
    assert m['mxgate_smtp_commands_total{command="DATA"}'] == n
    assert m['mxgate_smtp_replies_total{class="5xx"}'] == n
    assert m['mxgate_smtp_replies_total{class="3xx"}'] == n
    assert m["mxgate_queue_commit_batch_size_sum"] == n
    assert m['mxgate_queue_commit_seconds_bucket{le="+Inf"}'] == \
        m["mxgate_queue_commit_seconds_count"] >= 1
    assert m["mxgate_delivery_latency_seconds_count"] == n
    assert m['mxgate_deliveries_total{outcome="delivered",'
             'destination="discard"}'] == n
    # the parked upstream: every attempt deferred
    wait_for(lambda: scrape(md.mport).get(
        'mxgate_deliveries_total{outcome="deferred",'
        'destination="[127.0.0.1]:9"}', 0) == n, 20.0)
    # sessions: all ended
    wait_for(lambda: scrape(md.mport)["mxgate_smtp_sessions"] == 0, 5.0)


def test_sessions_gauge_and_queue_gauges(md):
    """An open session is counted while it lasts; the queue gauges show
    the deferred recipients by destination and the oldest one's age,
    within the 5 s they may lag while scraped."""
    with md.raw() as c:
        assert c.line().startswith("220")
        assert wait_for(lambda: scrape(md.mport)["mxgate_smtp_sessions"]
                        == 1, 5.0)
    send(md, ["x@example.test", "y@example.test"])
    send(md, ["z@example.test"])
    key = ('mxgate_queue_recipients{state="deferred",'
           'destination="[127.0.0.1]:9"}')
    assert wait_for(lambda: scrape(md.mport).get(key) == 3, 15.0), \
        scrape(md.mport)
    m = scrape(md.mport)
    assert m['mxgate_queue_recipients_by_state{state="deferred"}'] == 3
    assert m['mxgate_queue_recipients_by_state{state="queued"}'] == 0
    assert 0 <= m["mxgate_queue_oldest_message_age_seconds"] < 60
    assert 0 <= m["mxgate_queue_gauges_age_seconds"] <= 6
    # held by the operator: the gauges follow within a second or two
    qid = md.db("SELECT id FROM messages ORDER BY id LIMIT 1")[0][0]
    r = md.ctl("queue", "hold", qid)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: scrape(md.mport).get(
        'mxgate_queue_recipients_by_state{state="held"}') == 2, 10.0)
    assert scrape(md.mport)[key] == 1


def test_counters_survive_killed_processes(md):
    """The counters live in memory the master holds: an smtp process or
    the queue process killed with SIGKILL and started again loses none."""
    for i in range(3):
        send(md, ["k%d@sink.example" % i])
    before = scrape(md.mport)
    assert before["mxgate_messages_accepted_total"] == 3
    for pid in md.smtp_pids() + md.queue_pids():
        os.kill(pid, 9)
    assert wait_for(lambda: scrape(md.mport).get(
        'mxgate_process_starts_total{role="smtp"}', 0) >=
        before['mxgate_process_starts_total{role="smtp"}'] + 2 and
        scrape(md.mport)['mxgate_process_starts_total{role="queue"}'] ==
        before['mxgate_process_starts_total{role="queue"}'] + 1, 15.0)
    after = scrape(md.mport)
    for k in ("mxgate_messages_accepted_total",
              "mxgate_recipients_accepted_total",
              "mxgate_received_bytes_total",
              "mxgate_queue_committed_messages_total",
              'mxgate_smtp_commands_total{command="MAIL"}'):
        assert after[k] == before[k], k
    # and the new processes count on from there
    assert wait_for(lambda: _send_ok(md), 15.0)
    assert scrape(md.mport)["mxgate_messages_accepted_total"] == 4


def _send_ok(d):
    try:
        send(d, ["again@sink.example"])
        return True
    except (OSError, smtplib.SMTPException):
        return False


def test_http_answers(md):
    """GET /metrics only; anything else a short error; a request that
    never ends its headers is cut at 4 KB."""
    assert http_get(md.mport, "/")[0] == 404
    assert http_get(md.mport, "/metrics?x=1")[0] == 200
    assert http_get(md.mport, raw=b"POST /metrics HTTP/1.1\r\n\r\n")[0] == 405
    assert http_get(md.mport, raw=b"HELLO\r\n\r\n")[0] == 400
    assert http_get(md.mport, raw=b"GET /metrics HTTP/1.1\r\nX: " +
                    b"a" * 5000)[0] == 431


def test_connection_limit(md):
    """16 idle connections at most: the 17th is closed at once, and the
    endpoint serves again as soon as one goes."""
    held = [socket.create_connection(("127.0.0.1", md.mport), timeout=5)
            for _ in range(16)]
    try:
        time.sleep(0.2)
        s = socket.create_connection(("127.0.0.1", md.mport), timeout=5)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass    # closed with our request unread: a reset
        s.close()
    finally:
        for h in held:
            h.close()
    assert wait_for(lambda: _up(md.mport), 5.0)
    assert scrape(md.mport)["mxgate_messages_accepted_total"] == 0


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)


def test_exporter_confined(md):
    """The exporter runs as the smtp user, chrooted, with no capability,
    no_new_privs and its seccomp filter; the master never reads a
    scraper's byte."""
    pids = [p for p, t in md.titles().items()
            if t.startswith("mxgated: metrics")]
    assert len(pids) == 1, md.titles()
    st = proc_status(pids[0])
    import pwd
    uid = pwd.getpwnam("mxgate-smtp").pw_uid
    assert st["Uid"].split()[0] == str(uid)
    assert st["NoNewPrivs"].strip() == "1"
    assert st["Seccomp"].strip() == "2"
    assert int(st["CapEff"].strip(), 16) == 0
    assert os.readlink("/proc/%d/root" % pids[0]) == \
        md.settings["server"]["chroot_dir"]


def test_off_by_default(daemon):
    assert not [t for t in daemon.titles().values()
                if t.startswith("mxgated: metrics")]
    assert "metrics on http" not in daemon.log()


@pytest.mark.parametrize("value, why", [
    ("127.0.0.1", "no port"),
    ("localhost:9187", "numeric"),
    ("::1:9187", "brackets"),
    ("127.0.0.1:99999", "1 to 65535"),
])
def test_bad_listen_refused_with_its_line(daemon_factory, value, why):
    d = daemon_factory({"metrics": {"listen": value}}, start=False)
    r = subprocess.run([mxgated_path(), "-n", "-c", d.config_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert re.search(r"%s:\d+: 'metrics.listen': .*%s" %
                     (re.escape(d.config_path), why), r.stderr), r.stderr


def test_real_prometheus_scrapes_it(md, tmp_path):
    """Debian's prometheus, a private instance scraping the endpoint
    every second: the target is up and the series it stored are what was
    sent."""
    import json
    import urllib.parse
    import urllib.request
    if not os.access("/usr/bin/prometheus", os.X_OK):
        pytest.fail("prometheus not installed (contrib/install-deps.sh)")
    for i in range(3):
        send(md, ["p%d@sink.example" % i, "q%d@example.test" % i])
    web = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: mxgate\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % md.mport)
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["/usr/bin/prometheus", "--config.file=%s" % conf,
         "--storage.tsdb.path=%s" % (tmp_path / "data"),
         "--web.listen-address=127.0.0.1:%d" % web],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))

    def query(q):
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (
            web, urllib.parse.quote(q))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                res = json.load(r)["data"]["result"]
        except (OSError, ValueError, KeyError):
            return None
        return [float(x["value"][1]) for x in res] or None

    try:
        assert wait_for(lambda: query('up{job="mxgate"}') == [1.0], 30.0,
                        interval=0.5), \
            (tmp_path / "prometheus.log").read_text()[-3000:]
        assert wait_for(lambda: query("mxgate_messages_accepted_total")
                        == [3.0], 10.0, interval=0.5)
        assert query("mxgate_recipients_accepted_total") == [6.0]
        assert query('sum(mxgate_deliveries_total{outcome="delivered"})') \
            == [3.0]
        assert query("mxgate_queue_commit_seconds_count") is not None
        # a histogram Prometheus can take quantiles of
        assert query("histogram_quantile(0.5, "
                     "mxgate_queue_commit_seconds_bucket)") is not None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_milter_outcomes_counted(daemon_factory):
    """The milters' answers (python3-milter's test milter, as
    test_milter.py starts it): a refused recipient, a temporary
    failure, and the stages it let through."""
    import test_milter
    procs = []
    try:
        port = free_port()
        tmp = tempfile.mkdtemp(prefix="mxgate-mm-", dir="/tmp")
        procs.append(test_milter.Proc(
            [test_milter.PY, os.path.join(test_milter.HERE,
                                          "milter_actions.py"),
             "inet:%d@127.0.0.1" % port, os.path.join(tmp, "milter.log")],
            os.path.join(tmp, "milter.out")))
        test_milter.wait_listening(port)
        mport = free_port()
        settings = test_milter.milter_settings("inet:127.0.0.1:%d" % port)
        settings["metrics"] = {"listen": "127.0.0.1:%d" % mport}
        d = daemon_factory(settings)
        wait_for(lambda: _up(mport), 10.0)
        base = scrape(mport)
        assert test_milter.send(d, "x", rcpts=("reject-me@example.test",))[0] \
            == 550
        assert test_milter.send(d, "tempfail")[0] == 451
        assert test_milter.send(d, "fine")[0] == 250
        m = scrape(mport)
        diff = {k: m[k] - base.get(k, 0) for k in m}
        assert diff['mxgate_milter_outcomes_total{verdict="reject"}'] == 1
        assert diff['mxgate_milter_outcomes_total{verdict="defer"}'] == 1
        assert diff['mxgate_milter_outcomes_total{verdict="continue"}'] >= 5
        assert diff["mxgate_messages_accepted_total"] == 1
        assert diff['mxgate_messages_rejected_total{reason="check"}'] == 1
        assert diff['mxgate_recipients_rejected_total{reason="check"}'] == 1
    finally:
        for p in procs:
            p.stop()


# ---------------------------------------------------------------------------
# SPF results, policy and plugin verdicts: in a private network namespace
# (netns.py) whose DNS server gives each SPF result, with clients that
# have addresses of their own (as test_sender_auth.py and
# test_policy_checks.py run them); the numbers scraped are exact.

NS_SERVER = "192.0.2.1"
NS_CLIENT = "198.51.100.20"       # the one pass.example allows
NS_OTHER = "198.51.100.66"
NS_ZONE = {
    "pass.example": {"TXT": ["v=spf1 ip4:198.51.100.20 -all"]},
    "fail.example": {"TXT": ["v=spf1 ip4:192.0.2.99 -all"]},
    "soft.example": {"TXT": ["v=spf1 ip4:192.0.2.99 ~all"]},
    "neutral.example": {"TXT": ["v=spf1 ?all"]},
    "nospf.example": {"TXT": ["just some text"]},
    "servfail.example": {"servfail": True},
    "syntax.example": {"TXT": ["v=spf1 ip4:198.51.100.20 foo:bar -all"]},
}
NS_PORTS = iter(range(2700, 2800))


@pytest.fixture(scope="module")
def spf_ns():
    from netns import NetNS, can_unshare
    if not can_unshare():
        pytest.skip("needs root and unshare(1)")
    with NetNS([NS_SERVER, NS_CLIENT, NS_OTHER], NS_ZONE) as n:
        yield n


@pytest.fixture
def ns_start(request, spf_ns, daemon_factory):
    """ns_start(**sections) -> a daemon in the namespace with its
    exporter on 127.0.0.1 there (d.mport), and scrape(d) from inside."""
    from conftest import default_settings, merge_settings
    from netns import NetnsDaemon
    started = request.node._mxgate_daemons

    def go(**sections):
        dirpath = tempfile.mkdtemp(prefix="mxgate-it-", dir="/tmp")
        os.chmod(dirpath, 0o755)
        port, mport = next(NS_PORTS), next(NS_PORTS)
        settings = merge_settings(default_settings(dirpath, port), {
            "listen": [{"address": NS_SERVER, "port": port, "role": "mx"}],
            "accept_domains": None, "upstreams": None,
            "metrics": {"listen": "127.0.0.1:%d" % mport},
            "spf": {"timeout": 5},
            "routes": [
                {"name": "spf", "rcpt": r"@spf\.test$",
                 "sender_auth": ["spf"], "action": "discard"},
                {"name": "open", "rcpt": r"@open\.test$",
                 "action": "discard"}],
        })
        d = NetnsDaemon(spf_ns, dirpath, merge_settings(settings, sections),
                        NS_SERVER, source=NS_CLIENT)
        d.mport = mport
        started.append(d)
        d.start()
        wait_for(lambda: ns_up(d), 10.0)
        return d

    return go


def ns_up(d):
    with d.ns.entered():
        return _up(d.mport)


def ns_scrape(d):
    with d.ns.entered():
        return scrape(d.mport)


def diff(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items()}


def test_spf_and_policy_outcomes_counted(ns_start):
    """Each SPF result the namespace's DNS gives, once per (sender,
    HELO) of a session and whatever the verdict made of it; the policy
    service's answers at RCPT: OK, REJECT, DEFER and DUNNO, and none for
    recipients refused before it is asked."""
    from test_policy_checks import PolicyServer
    sockdir = tempfile.mkdtemp(prefix="mxgate-policy-", dir="/tmp")
    os.chmod(sockdir, 0o755)
    policy = PolicyServer(unix_dir=sockdir)
    policy.answers.update({"ok": "OK", "no": "REJECT", "later": "DEFER"})
    try:
        d = ns_start(policy={"service": policy.service})
        base = ns_scrape(d)
        with d.raw() as c:
            assert c.line().startswith("220")
            assert c.cmd("EHLO client.example").startswith("250")
            assert c.cmd("MAIL FROM:<u@pass.example>").startswith("250")
            for local, reply in (("ok", "250 "), ("no", "554 "),
                                 ("later", "450 "), ("fine", "250 ")):
                line = c.cmd("RCPT TO:<%s@spf.test>" % local, timeout=20)
                assert line.startswith(reply), (local, line)
            # the same sender again: the session's SPF result, cached
            assert c.cmd("RSET").startswith("250")
            assert c.cmd("MAIL FROM:<u@pass.example>").startswith("250")
            assert c.cmd("RCPT TO:<again@spf.test>",
                         timeout=20).startswith("250 ")
            assert c.cmd("QUIT").startswith("221")
        expect_spf = {"pass": 2}
        for domain, result, reply in (
                ("pass", "pass", "250 "), ("fail", "fail", "550 "),
                ("soft", "softfail", "550 "), ("neutral", "neutral", "550 "),
                ("nospf", "none", "550 "), ("servfail", "temperror", "451 "),
                ("syntax", "permerror", "550 ")):
            with d.raw() as c:
                assert c.line().startswith("220")
                assert c.cmd("EHLO client.example").startswith("250")
                assert c.cmd("MAIL FROM:<u@%s.example>" %
                             domain).startswith("250")
                line = c.cmd("RCPT TO:<x@spf.test>", timeout=20)
                assert line.startswith(reply), (domain, line)
                assert c.cmd("QUIT").startswith("221")
            if domain != "pass":
                expect_spf[result] = 1
        m = diff(ns_scrape(d), base)
        for result in ("pass", "fail", "softfail", "neutral", "none",
                       "temperror", "permerror"):
            assert m['mxgate_spf_results_total{result="%s"}' % result] == \
                expect_spf[result], (result, m)
        # the refusals by SPF came before the policy service: not asked
        assert len([r for r in policy.requests
                    if r.get("client_address") == NS_CLIENT]) == 6
        assert m['mxgate_policy_outcomes_total{verdict="accept"}'] == 1
        assert m['mxgate_policy_outcomes_total{verdict="reject"}'] == 1
        assert m['mxgate_policy_outcomes_total{verdict="defer"}'] == 1
        assert m['mxgate_policy_outcomes_total{verdict="continue"}'] == 3
        assert m['mxgate_recipients_rejected_total{reason="check"}'] == 8
        assert m["mxgate_recipients_accepted_total"] == 4
        # no plugin loaded: none counted
        assert all(v == 0 for k, v in m.items()
                   if k.startswith("mxgate_plugin_outcomes_total"))
    finally:
        policy.close()


def test_plugin_outcomes_counted(ns_start):
    """The C plugins' verdicts (contrib/plugins/example.c), one per
    stage a plugin was asked about: a refused client, a trusted HELO, a
    refused sender and recipient, a deferred message, and the stages
    they let through."""
    from test_policy_checks import example_plugin
    d = ns_start(plugins=[{"path": example_plugin(), "args":
                           "prefix=blocked- refuse_client=%s "
                           "refuse_sender=spam@pass.example "
                           "defer_sender=bulk@pass.example "
                           "trust_helo=friend.example" % NS_OTHER}])
    base = ns_scrape(d)
    with d.raw(source=NS_OTHER) as c:             # connect: reject
        assert c.line().startswith("554 5.7.1")
        assert c.cmd("QUIT").startswith("221")
    with d.raw() as c:                            # connect: continue
        assert c.line().startswith("220")
        # helo: accept (the session's later checks are skipped)
        assert c.cmd("EHLO friend.example").startswith("250")
        assert c.cmd("QUIT").startswith("221")
    with d.raw() as c:                            # connect: continue
        assert c.line().startswith("220")
        assert c.cmd("EHLO client.example").startswith("250")   # continue
        assert c.cmd("MAIL FROM:<spam@pass.example>").startswith("550")
        assert c.cmd("MAIL FROM:<bulk@pass.example>").startswith("250")
        assert c.cmd("RCPT TO:<blocked-x@open.test>").startswith("550")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("250")
        assert c.cmd("DATA").startswith("451")                  # defer
        assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<a@pass.example>").startswith("250")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")                  # continue
        c.send("Subject: counted\r\n\r\nbody\r\n.\r\n")         # continue
        assert c.line(timeout=20).startswith("250")
        assert c.cmd("QUIT").startswith("221")
    m = diff(ns_scrape(d), base)
    assert m['mxgate_plugin_outcomes_total{verdict="reject"}'] == 3
    assert m['mxgate_plugin_outcomes_total{verdict="accept"}'] == 1
    assert m['mxgate_plugin_outcomes_total{verdict="defer"}'] == 1
    # connect twice, then helo, mail, rcpt, mail, rcpt, data, message
    assert m['mxgate_plugin_outcomes_total{verdict="continue"}'] == 9
    assert m["mxgate_messages_accepted_total"] == 1
    assert all(v == 0 for k, v in m.items()
               if k.startswith("mxgate_policy_outcomes_total"))
