"""The PROXY protocol (HAProxy's, v1 and v2) on a listener with
proxy_protocol = true: the client the header names is the client for the
limits, the logs, the queue and the Received header; anything else on
such a listener is refused.  The last test puts a real HAProxy (Debian's
haproxy) in front of two mxgated, with send-proxy and send-proxy-v2.

Each daemon has a plain listener first (the fixtures probe its banner)
and the PROXY one second."""

import os
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import time

import pytest

from conftest import free_port, make_message, queued_id, wait_for

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_settings(**more):
    s = {"listen": [{"address": "127.0.0.1", "port": free_port()},
                    {"address": "127.0.0.1", "port": free_port(),
                     "proxy_protocol": True, "proxy_from": ["127.0.0.1"]}],
         # The documentation addresses the headers carry are trusted
         # like loopback: no SPF lookup at MAIL.
         "trusted_networks": ["127.0.0.0/8", "::1/128", "192.0.2.0/24",
                              "2001:db8::/32"],
         "timeouts": {"proxy": 2}}
    s.update(more)
    return s


def proxy_port(d):
    return d.settings["listen"][1]["port"]


def v1(src, sport=40000, dst=None, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def crc32c(data):
    """CRC32c (RFC 4960 appendix B), for the PP2_TYPE_CRC32C TLV."""
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def with_crc32c(header, damage=None):
    """header (v2) with a PP2_TYPE_CRC32C TLV appended and sealed as a
    sender does; damage: the offset of a byte to flip afterwards."""
    body_len = struct.unpack("!H", header[14:16])[0] + 7
    h = header[:14] + struct.pack("!H", body_len) + header[16:] + \
        b"\x03\x00\x04\x00\x00\x00\x00"
    h = h[:-4] + struct.pack("!I", crc32c(h))
    if damage is not None:
        h = h[:damage] + bytes([h[damage] ^ 0x01]) + h[damage + 1:]
    return h


def v2(src, sport=40000, dst=None, dport=25, tlvs=b"", local=False):
    if local:
        return SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        fam, af = 0x21, socket.AF_INET6
        dst = dst or "2001:db8::1"
    else:
        fam, af = 0x11, socket.AF_INET
        dst = dst or "198.51.100.1"
    body = (socket.inet_pton(af, src) + socket.inet_pton(af, dst) +
            struct.pack("!HH", sport, dport) + tlvs)
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def lb_connect(d, source="127.0.0.1"):
    s = socket.create_connection((d.host, proxy_port(d)), timeout=10,
                                 source_address=(source, 0))
    s.settimeout(10)
    _pending.pop(id(s), None)
    return s


_pending = {}


def read_reply(s, timeout=10):
    """One whole reply (its lines), or [] at EOF; what came after it
    waits for the next call on the same socket."""
    s.settimeout(timeout)
    data = _pending.pop(id(s), b"")
    lines = []
    while True:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return lines
            data += chunk
        line, data = data.split(b"\r\n", 1)
        lines.append(line.decode("latin-1"))
        if len(line) < 4 or line[3:4] != b"-":
            _pending[id(s)] = data
            return lines


def read_until_closed(s, timeout):
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return data
    return None


def send_message(s, subject):
    """A whole transaction on s, after the greeting; the queue id."""
    for cmd in (b"EHLO lb-client.example", b"MAIL FROM:<a@sender.example>",
                b"RCPT TO:<bob@example.test>", b"DATA"):
        s.sendall(cmd + b"\r\n")
        r = read_reply(s)
        assert r and r[-1][:1] in "23", (cmd, r)
    s.sendall(make_message(subject).encode() + b".\r\n")
    r = read_reply(s)
    return queued_id(r[-1])


def stored(d, qid):
    (client_ip, content), = d.db(
        "SELECT m.client_ip, c.content FROM messages m JOIN "
        "message_contents c ON c.message_id = m.id WHERE m.id = ?", (qid,))
    return client_ip, content.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize("header,client", [
    (v1("192.0.2.7"), "192.0.2.7"),
    (v1("2001:db8::7"), "2001:db8::7"),
    (v2("192.0.2.9", tlvs=b"\x04\x00\x02\xaa\xbb\x05\x00\x03abc"),
     "192.0.2.9"),
    (v2("2001:db8::9"), "2001:db8::9"),
], ids=["v1-tcp4", "v1-tcp6", "v2-tcp4-tlvs", "v2-tcp6"])
def test_client_is_carried(daemon_factory, header, client):
    d = daemon_factory(proxy_settings())
    with lb_connect(d) as s:
        s.sendall(header)
        assert read_reply(s)[-1].startswith("220 ")
        qid = send_message(s, "proxied")
    client_ip, received = stored(d, qid)
    assert client_ip == client
    assert received == "Received: from lb-client.example ([%s])" % client, \
        received
    log = d.log()
    assert "client=%s connected" % client in log
    assert re.search(r"proxy v%d: client=%s via 127\.0\.0\.1" %
                     (1 if header.startswith(b"PROXY") else 2,
                      re.escape(client)), log)


def test_header_and_commands_in_one_write(daemon_factory):
    """The worker reads the header and not a byte more: the pipelined
    EHLO behind it is the session's."""
    d = daemon_factory(proxy_settings())
    with lb_connect(d) as s:
        s.sendall(v1("192.0.2.7") + b"EHLO x.example\r\nQUIT\r\n")
        data = read_until_closed(s, 10)
    assert data is not None
    lines = data.decode().split("\r\n")
    assert lines[0].startswith("220 "), lines
    assert any(l.startswith("250 ") for l in lines), lines
    assert lines[-2].startswith("221 "), lines


def test_header_split_over_writes(daemon_factory):
    d = daemon_factory(proxy_settings())
    header = v2("192.0.2.9", tlvs=b"\x04\x00\x10" + b"\x00" * 16)
    with lb_connect(d) as s:
        for i in range(0, len(header), 5):
            s.sendall(header[i:i + 5])
            time.sleep(0.02)
        assert read_reply(s)[-1].startswith("220 ")
    assert "client=192.0.2.9 connected" in d.log()


def test_health_check(daemon_factory):
    """v2 LOCAL (and v1 UNKNOWN): the balancer's own connection; the
    client is the balancer."""
    d = daemon_factory(proxy_settings())
    for header in (v2("", local=True), b"PROXY UNKNOWN\r\n"):
        with lb_connect(d) as s:
            s.sendall(header)
            assert read_reply(s)[-1].startswith("220 ")
            s.sendall(b"QUIT\r\n")
            assert read_reply(s)[-1].startswith("221 ")
    assert d.log().count("(the balancer's own: no client carried)") == 2


@pytest.mark.parametrize("data,why", [
    (b"EHLO direct.example\r\n", "not a PROXY protocol header"),
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 40000\r\n", "v1: 5 fields"),
    (b"PROXY TCP4 192.0.2.999 127.0.0.1 1 25\r\n", "v1: bad IPv4 address"),
    (SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12, "v2: transport 2"),
    (SIG + b"\x21\x11\x00\x0f" + b"\x00" * 12 + b"\x04\x00\x09",
     "v2: malformed TLV"),
], ids=["smtp", "v1-fields", "v1-address", "v2-udp", "v2-tlv"])
def test_bad_header_refused(daemon_factory, data, why):
    d = daemon_factory(proxy_settings())
    with lb_connect(d) as s:
        s.sendall(data)
        got = read_until_closed(s, 5)
    assert got == b"421 4.7.0 PROXY protocol header expected\r\n", got
    log = d.log()
    m = re.search(r"session=(\w+) client=127\.0\.0\.1 proxy: %s" %
                  re.escape(why), log)
    assert m, log
    # Never a session (the fixture's banner probe may log after it).
    assert not re.search(r"session=%s .*connected" % m.group(1), log), log


def scrape(port):
    """The metrics exposition text ("" while the exporter is not up)."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    return data.partition(b"\r\n\r\n")[2].decode()


REFUSED_HEADER = 'mxgate_connections_refused_total{reason="proxy_header"}'


def test_checksum(daemon_factory):
    """PP2_TYPE_CRC32C: a header whose checksum matches is taken (a
    health check's too); one damaged on the way (a bit of the client's
    address flipped after the balancer sealed it) is refused, logged
    with the balancer's address and counted as a refused connection."""
    mport = free_port()
    d = daemon_factory(proxy_settings(
        metrics={"listen": "127.0.0.1:%d" % mport}))
    good = with_crc32c(v2("192.0.2.9"))
    with lb_connect(d) as s:
        s.sendall(good)
        assert read_reply(s)[-1].startswith("220 ")
        qid = send_message(s, "sealed")
    assert stored(d, qid)[0] == "192.0.2.9"
    with lb_connect(d) as s:
        s.sendall(with_crc32c(v2("", local=True)))
        assert read_reply(s)[-1].startswith("220 ")
        s.sendall(b"QUIT\r\n")
        assert read_reply(s)[-1].startswith("221 ")
    for damage in (19, len(good) - 1):      # the address, the checksum
        with lb_connect(d) as s:
            s.sendall(with_crc32c(v2("192.0.2.9"), damage=damage))
            got = read_until_closed(s, 5)
        assert got == b"421 4.7.0 PROXY protocol header expected\r\n", got
    with lb_connect(d) as s:
        s.sendall(with_crc32c(v2("", local=True), damage=22))  # its value
        assert read_until_closed(s, 5) == \
            b"421 4.7.0 PROXY protocol header expected\r\n"
    log = d.log()
    assert log.count("client=127.0.0.1 proxy: v2: CRC32C checksum "
                     "mismatch; closed") == 3, log
    assert "client=192.0.2.8" not in log
    # The exporter sums the workers' counts when scraped.
    assert wait_for(lambda: "%s 3\n" % REFUSED_HEADER in scrape(mport), 10), \
        scrape(mport)


def test_no_header_in_time(daemon_factory):
    d = daemon_factory(proxy_settings())
    t0 = time.monotonic()
    with lb_connect(d) as s:
        s.sendall(b"PROXY TCP4 192.0.2")     # and nothing more
        got = read_until_closed(s, 30)
    assert got == b"421 4.7.0 PROXY protocol header expected\r\n", got
    # timeouts.proxy (2 s), not timeouts.command (300 s)
    assert 1.5 <= time.monotonic() - t0 < 20
    assert "no header in time (timeouts.proxy)" in d.log()


def test_only_from_the_balancers(daemon_factory):
    """A connection from an address not in proxy_from is refused by the
    master before any byte is read."""
    d = daemon_factory(proxy_settings())
    with lb_connect(d, source="127.0.0.2") as s:
        got = read_until_closed(s, 5)
    assert got == (b"421 4.7.0 This port takes connections from its load "
                   b"balancers only\r\n"), got
    assert "client=127.0.0.2 refused: not a load balancer" in d.log()


def test_limits_apply_to_the_carried_client(daemon_factory):
    """limits.connections_per_ip counts the clients the headers name, not
    the balancer: two from 192.0.2.7, the third refused; another client
    through the same balancer still served."""
    d = daemon_factory(proxy_settings(limits={"connections_per_ip": 2}))
    held = []
    try:
        for _ in range(2):
            s = lb_connect(d)
            held.append(s)
            s.sendall(v1("192.0.2.7"))
            assert read_reply(s)[-1].startswith("220 ")
        s = lb_connect(d)
        held.append(s)
        s.sendall(v1("192.0.2.7"))
        got = read_until_closed(s, 5)
        assert got == b"421 4.7.0 Too many connections from your address\r\n"
        for ip in ("192.0.2.8", "192.0.2.9"):
            s = lb_connect(d)
            held.append(s)
            s.sendall(v2(ip))
            assert read_reply(s)[-1].startswith("220 ")
        assert "client=192.0.2.7 refused: 2 connections from it" in d.log()
    finally:
        for s in held:
            s.close()
    # Closed: the counts went back to nothing, 192.0.2.7 is served again.
    def served():
        with lb_connect(d) as s:
            s.sendall(v1("192.0.2.7"))
            return read_reply(s)[-1].startswith("220 ")
    assert wait_for(served, 5)


@pytest.mark.parametrize("prefix", [64, 128])
def test_ipv6_clients_counted_by_network(daemon_factory, prefix):
    """limits.ipv6_prefix: IPv6 clients count as their network (carried
    by PROXY headers, since loopback has one IPv6 address): with /64,
    two addresses of 2001:db8:1:2::/64 use up its connections_per_ip of
    2; with 128 every address counts apart."""
    d = daemon_factory(proxy_settings(limits={"connections_per_ip": 2,
                                              "ipv6_prefix": prefix}))
    held = []
    try:
        for ip in ("2001:db8:1:2::a", "2001:db8:1:2::b"):
            s = lb_connect(d)
            held.append(s)
            s.sendall(v2(ip))
            assert read_reply(s)[-1].startswith("220 ")
        s = lb_connect(d)
        held.append(s)
        s.sendall(v2("2001:db8:1:2:ffff::c"))
        if prefix == 64:
            got = read_until_closed(s, 5)
            assert got == (b"421 4.7.0 Too many connections from your "
                           b"address\r\n"), got
            assert "client=2001:db8:1:2:ffff::c counted as " \
                "2001:db8:1:2::/64" in d.log()
        else:
            assert read_reply(s)[-1].startswith("220 ")
        s = lb_connect(d)
        held.append(s)
        s.sendall(v2("2001:db8:1:3::1"))
        assert read_reply(s)[-1].startswith("220 ")
    finally:
        for s in held:
            s.close()


def test_proxy_then_tls(daemon_factory, tmp_path):
    """STARTTLS after a PROXY header: the handshake's bytes are not
    taken for the header's."""
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=mx.test.example"], check=True,
                   capture_output=True)
    os.chmod(str(tmp_path), 0o755)
    d = daemon_factory(proxy_settings(
        tls={"certificates": [{"cert": cert, "key": key}]}))
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with lb_connect(d) as s:
        s.sendall(v1("192.0.2.77") + b"EHLO x.example\r\n")
        assert read_reply(s)[-1].startswith("220 ")
        assert read_reply(s)[-1].startswith("250 ")
        s.sendall(b"STARTTLS\r\n")
        assert read_reply(s)[-1].startswith("220 ")
        t = ctx.wrap_socket(s, server_hostname="mx.test.example")
        t.sendall(b"EHLO x.example\r\n")
        assert read_reply(t)[-1].startswith("250 ")
        qid = send_message(t, "tls via proxy")
        t.close()
    assert stored(d, qid)[0] == "192.0.2.77"


# ---- a real HAProxy in front of two mxgated ----

HAPROXY_CFG = """
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_v1
    bind 127.0.0.1:%(f1)d
    default_backend mx_v1
frontend smtp_v2
    bind 127.0.0.1:%(f2)d
    default_backend mx_v2
backend mx_v1
    balance roundrobin
    server a 127.0.0.1:%(a)d send-proxy
    server b 127.0.0.1:%(b)d send-proxy
backend mx_v2
    balance roundrobin
    server a 127.0.0.1:%(a)d send-proxy-v2
    server b 127.0.0.1:%(b)d send-proxy-v2
"""


def start_haproxy(tmp_path, cfg_text, ports):
    """A private HAProxy with cfg_text, listening on ports["f1"] and
    ports["f2"]; (its Popen, its log file)."""
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(exe, os.X_OK):
        pytest.fail("haproxy not installed (contrib/install-deps.sh)")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(cfg_text)
    log = open(str(tmp_path / "haproxy.log"), "wb")
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        # Not by connecting: HAProxy would pass that on to a backend,
        # and the round robin would be off by one.
        def listening():
            for p in (ports["f1"], ports["f2"]):
                with socket.socket() as probe:
                    try:
                        probe.bind(("127.0.0.1", p))
                        return False
                    except OSError:
                        pass
            return True
        assert wait_for(listening, 10), (tmp_path / "haproxy.log").read_text()
    except BaseException:
        stop_haproxy(proc, log)
        raise
    return proc, log


def stop_haproxy(proc, log):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def haproxy(daemon_factory, tmp_path):
    """Two mxgated behind a private HAProxy: (frontend v1 port, frontend
    v2 port, [daemons])."""
    daemons = [daemon_factory(proxy_settings()) for _ in range(2)]
    ports = {"f1": free_port(), "f2": free_port(),
             "a": proxy_port(daemons[0]), "b": proxy_port(daemons[1])}
    proc, log = start_haproxy(tmp_path, HAPROXY_CFG % ports, ports)
    try:
        yield ports["f1"], ports["f2"], daemons
    finally:
        stop_haproxy(proc, log)


def test_haproxy_two_mxgated(haproxy):
    """send-proxy and send-proxy-v2, round robin over two mxgated:
    both get messages, and each logs and records the original client's
    address (127.0.0.2, 127.0.0.3), never HAProxy's own (127.0.0.1)."""
    f1, f2, daemons = haproxy
    sent = []
    for port, source in ((f1, "127.0.0.2"), (f2, "127.0.0.3")):
        for i in range(4):
            with smtplib.SMTP("127.0.0.1", port, timeout=10,
                              source_address=(source, 0)) as c:
                c.ehlo("client%d.example" % i)
                c.sendmail("a@sender.example", ["bob@example.test"],
                           make_message("via %d %s %d" % (port, source, i)))
            sent.append(source)
    seen = []
    for d in daemons:
        rows = d.db("SELECT m.client_ip, c.content FROM messages m JOIN "
                    "message_contents c ON c.message_id = m.id")
        # Round robin: each got half of each frontend's.
        assert sorted(r[0] for r in rows) == ["127.0.0.2"] * 2 + \
            ["127.0.0.3"] * 2, rows
        for ip, content in rows:
            first = content.split(b"\r\n", 1)[0].decode()
            assert first.startswith("Received: from client") and \
                first.endswith("([%s])" % ip), first
            seen.append(ip)
        log = d.log()
        assert re.search(r"proxy v1: client=127\.0\.0\.2 via 127\.0\.0\.1",
                         log)
        assert re.search(r"proxy v2: client=127\.0\.0\.3 via 127\.0\.0\.1",
                         log)
    assert sorted(seen) == sorted(sent)


# ---- HAProxy's checksum, and its TLS termination ----

HAPROXY_TLS_CFG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_plain
    bind 127.0.0.1:%(f1)d
    default_backend mx_crc
frontend smtp_tls
    bind 127.0.0.1:%(f2)d ssl crt %(pem)s ca-file %(ca)s verify optional
    default_backend mx_tls
backend mx_crc
    server a 127.0.0.1:%(a)d send-proxy-v2 proxy-v2-options crc32c
backend mx_tls
    server a 127.0.0.1:%(a)d send-proxy-v2 proxy-v2-options crc32c,ssl,cert-cn
"""


def make_pki(tmp_path):
    """A CA, HAProxy's certificate and key in one file, and a client
    certificate from the CA: paths (ca, haproxy pem, client cert,
    client key)."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True,
                       capture_output=True, cwd=str(tmp_path))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=test balancer CA")
    openssl("req", "-x509", *ec, "-keyout", "lb.key", "-out", "lb.crt",
            "-days", "1", "-subj", "/CN=lb.test.example")
    (tmp_path / "lb.pem").write_bytes((tmp_path / "lb.crt").read_bytes() +
                                      (tmp_path / "lb.key").read_bytes())
    openssl("req", "-new", *ec, "-keyout", "client.key", "-out",
            "client.csr", "-subj", "/CN=client.test.example")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-out", "client.pem", "-days", "1")
    return tuple(str(tmp_path / n) for n in
                 ("ca.pem", "lb.pem", "client.pem", "client.key"))


def test_haproxy_crc32c_and_tls(daemon_factory, tmp_path):
    """A real HAProxy sealing its v2 headers (proxy-v2-options crc32c)
    is taken -- the checksum is computed as HAProxy computes it -- and
    where HAProxy terminates TLS (ssl, cert-cn) the log says what the
    client's TLS was: its version, its certificate verified by the
    balancer and that certificate's name, or no certificate."""
    import ssl
    ca, pem, client_cert, client_key = make_pki(tmp_path)
    d = daemon_factory(proxy_settings())
    ports = {"f1": free_port(), "f2": free_port(), "a": proxy_port(d),
             "pem": pem, "ca": ca}
    proc, log = start_haproxy(tmp_path, HAPROXY_TLS_CFG % ports, ports)
    try:
        with smtplib.SMTP("127.0.0.1", ports["f1"], timeout=10,
                          source_address=("127.0.0.2", 0)) as c:
            c.ehlo("plain.example")
            c.sendmail("a@sender.example", ["bob@example.test"],
                       make_message("sealed by haproxy"))
        for cert, source in ((True, "127.0.0.3"), (False, "127.0.0.4")):
            ctx = ssl.create_default_context(cafile=ca)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            if cert:
                ctx.load_cert_chain(client_cert, client_key)
            with smtplib.SMTP_SSL("127.0.0.1", ports["f2"], timeout=10,
                                  context=ctx,
                                  source_address=(source, 0)) as c:
                c.ehlo("tls.example")
                c.sendmail("a@sender.example", ["bob@example.test"],
                           make_message("tls via haproxy"))
    finally:
        stop_haproxy(proc, log)
    rows = sorted(r[0] for r in d.db("SELECT client_ip FROM messages"))
    assert rows == ["127.0.0.2", "127.0.0.3", "127.0.0.4"], rows
    text = d.log()
    assert "CRC32C" not in text, text
    assert re.search(r"proxy v2: client=127\.0\.0\.2 via 127\.0\.0\.1\n",
                     text), text
    assert ('proxy v2: client=127.0.0.3 via 127.0.0.1 tls=TLSv1.3 '
            'client_cert=verified cn="client.test.example"') in text, text
    assert ("proxy v2: client=127.0.0.4 via 127.0.0.1 tls=TLSv1.3 "
            "client_cert=none\n") in text, text
