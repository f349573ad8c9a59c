"""A private world for the relay client's TLS (test_outbound_tls.py):
DNSSEC, DANE and MX hosts with and without STARTTLS, inside a network
namespace (netns.py, started with zone None: this module brings the DNS).

    pki = Pki(dir)                      # a test CA and leaf certificates
    world = DnsWorld(ns, dir, zone_text, child_zones, bogus=[names])
    world.start()                       # nsd on 127.0.0.2 serving the
                                        # signed zone "test." (and unsigned
                                        # children: insecure delegations),
                                        # unbound on 127.0.0.1 validating
                                        # with the zone's key as its only
                                        # trust anchor
    smtp = ns.popen([python, tls_world.py, "serve-smtp", CONFIG.json])

Run as a script, `tls_world.py serve-smtp CONFIG.json` runs aiosmtpd
servers (inside the namespace): CONFIG is {"log": PATH, "servers":
[{"address", "port", "name", "cert", "key"}]}, STARTTLS offered when cert
is set; each message received is a JSON line in log: {"server", "rcpts",
"tls", "subject"}.  `tls_world.py serve-https CONFIG.json` serves MTA-STS
policy files over HTTPS (serve_https).  Every process is stopped by pid.
"""

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# Certificates

class Pki:
    """A CA and the leaf certificates the tests ask for, as PEM files."""

    def __init__(self, dirpath):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.x509, self.hashes, self.ser, self.ec = x509, hashes, serialization, ec
        self.NameOID = NameOID
        self.dir = dirpath
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                             "mxgate test CA")])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = os.path.join(dirpath, "ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, name, expired=False, self_signed=False, more_names=()):
        """(chain file, key file, SHA-256 of the SPKI): the chain is the
        leaf then the CA (only the leaf when self-signed)."""
        x509, ser = self.x509, self.ser
        key = self.ec.generate_private_key(self.ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            start, end = now - datetime.timedelta(days=20), now - datetime.timedelta(days=2)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        subject = x509.Name([x509.NameAttribute(self.NameOID.COMMON_NAME, name)])
        issuer = subject if self_signed else self.ca_cert.subject
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in (name,) + tuple(more_names)]),
                critical=False)
            .sign(key if self_signed else self.ca_key, self.hashes.SHA256()))
        base = os.path.join(self.dir, name + (".expired" if expired else ""))
        with open(base + ".key", "wb") as f:
            f.write(key.private_bytes(ser.Encoding.PEM,
                                      ser.PrivateFormat.PKCS8,
                                      ser.NoEncryption()))
        with open(base + ".pem", "wb") as f:
            f.write(cert.public_bytes(ser.Encoding.PEM))
            if not self_signed:
                f.write(self.ca_cert.public_bytes(ser.Encoding.PEM))
        spki = key.public_key().public_bytes(
            ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        return base + ".pem", base + ".key", hashlib.sha256(spki).hexdigest()

    def ca_digest(self):
        """SHA-256 of the CA certificate (TLSA 2 0 1)."""
        return hashlib.sha256(self.ca_cert.public_bytes(
            self.ser.Encoding.DER)).hexdigest()


# ---------------------------------------------------------------------------
# DNS: nsd (authoritative, signed "test.") and unbound (validating)

SOA = "@ 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n"


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (argv[0], r.stderr.decode()))
    return r.stdout.decode()


class DnsWorld:
    """zone_text: the records of "test." (relative names, after the SOA
    and NS this class adds); children: {"insecure": records} become
    unsigned zones delegated without DS; bogus: owner names whose TLSA
    records are altered after signing (their signatures then fail)."""

    def __init__(self, ns, dirpath, zone_text, children=None, bogus=()):
        self.ns = ns
        self.dir = dirpath
        self.zone_text = zone_text
        self.children = children or {}
        self.bogus = list(bogus)
        self.procs = []

    def _zones(self):
        d = self.dir
        text = "$ORIGIN test.\n$TTL 300\n" + SOA + "@ NS ns.test.\nns A 127.0.0.2\n"
        for child in self.children:
            text += "%s NS ns.%s\nns.%s A 127.0.0.2\n" % (child, child, child)
        text += self.zone_text
        with open(os.path.join(d, "test.zone"), "w") as f:
            f.write(text)
        out = _run(["ldns-keygen", "-k", "-a", "ECDSAP256SHA256", "test"], d).strip()
        _run(["ldns-signzone", "-f", "test.zone.signed", "test.zone", out], d)
        with open(os.path.join(d, out + ".key")) as f:
            self.anchor = f.read()
        signed = os.path.join(d, "test.zone.signed")
        with open(signed) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            f = line.split()
            if len(f) >= 8 and f[0].rstrip(".") in self.bogus and f[3] == "TLSA":
                # The digest changed, the signature not: bogus.
                f[7] = "00" * (len(f[7]) // 2)
                lines[i] = "\t".join(f)
        with open(signed, "w") as f:
            f.write("\n".join(lines) + "\n")
        for child, records in self.children.items():
            with open(os.path.join(d, child + ".zone"), "w") as f:
                f.write("$ORIGIN %s.test.\n$TTL 300\n" % child + SOA +
                        "@ NS ns.%s.test.\nns A 127.0.0.2\n" % child + records)

    def _nsd_conf(self):
        d = self.dir
        conf = ("server:\n  ip-address: 127.0.0.2\n  port: 53\n"
                "  username: \"\"\n  chroot: \"\"\n  zonesdir: \"%s\"\n"
                "  pidfile: \"%s/nsd.pid\"\n  database: \"\"\n"
                "  zonelistfile: \"%s/zone.list\"\n  xfrdfile: \"%s/xfrd.state\"\n"
                "  xfrdir: \"%s\"\n  logfile: \"%s/nsd.log\"\n"
                "  server-count: 1\n  verbosity: 1\n"
                "remote-control:\n  control-enable: no\n"
                "zone:\n  name: test.\n  zonefile: test.zone.signed\n"
                % (d, d, d, d, d, d))
        for child in self.children:
            conf += "zone:\n  name: %s.test.\n  zonefile: %s.zone\n" % (child, child)
        path = os.path.join(d, "nsd.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def _unbound_conf(self):
        d = self.dir
        with open(os.path.join(d, "anchor.key"), "w") as f:
            f.write(self.anchor)
        conf = ("server:\n  interface: 127.0.0.1\n  port: 53\n"
                "  username: \"\"\n  chroot: \"\"\n  directory: \"%s\"\n"
                "  pidfile: \"%s/unbound.pid\"\n  do-daemonize: no\n"
                "  use-syslog: no\n  logfile: \"%s/unbound.log\"\n"
                "  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n"
                "  do-not-query-localhost: no\n  do-ip6: no\n"
                "  access-control: 127.0.0.0/8 allow\n"
                "  module-config: \"validator iterator\"\n"
                "  trust-anchor-file: \"%s/anchor.key\"\n"
                "  cache-max-ttl: 5\n  cache-max-negative-ttl: 5\n"
                # "test." is special-use (RFC 6761): unbound answers it
                # itself unless told not to.
                "  local-zone: \"test.\" nodefault\n"
                "stub-zone:\n  name: \"test.\"\n  stub-addr: 127.0.0.2\n"
                "remote-control:\n  control-enable: no\n" % (d, d, d, d))
        path = os.path.join(d, "unbound.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def start(self):
        self._zones()
        nsd = self._nsd_conf()
        unbound = self._unbound_conf()
        log = open(os.path.join(self.dir, "servers.log"), "ab")
        self.procs.append(self.ns.popen(["nsd", "-d", "-c", nsd],
                                        stdout=log, stderr=subprocess.STDOUT))
        self.procs.append(self.ns.popen(["unbound", "-d", "-c", unbound],
                                        stdout=log, stderr=subprocess.STDOUT))
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("DNS server exited: see %s" % self.dir)
            if self.secure("test", "SOA"):
                return
            time.sleep(0.1)
        raise RuntimeError("unbound does not validate test.: see %s" % self.dir)

    def query(self, name, qtype):
        """unbound's answer (a dnslib record) to name/qtype, with AD asked."""
        import socket
        from dnslib import DNSRecord
        q = DNSRecord.question(name, qtype)
        q.header.ad = 1
        with self.ns.entered():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(2)
            s.sendto(q.pack(), ("127.0.0.1", 53))
            return DNSRecord.parse(s.recvfrom(8192)[0])
        except OSError:
            return None
        finally:
            s.close()

    def secure(self, name, qtype):
        a = self.query(name, qtype)
        return a is not None and a.header.rcode == 0 and bool(a.header.ad)

    def stop(self):
        for p in self.procs:
            stop_proc(p)


def stop_proc(p):
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


# ---------------------------------------------------------------------------
# SMTP servers (run inside the namespace)

def serve_smtp(config_path):
    import ssl
    import threading
    from aiosmtpd.controller import Controller

    with open(config_path) as f:
        config = json.load(f)
    lock = threading.Lock()

    class Handler:
        def __init__(self, address):
            self.address = address

        async def handle_DATA(self, server, session, envelope):
            subject = ""
            for line in envelope.content.decode("utf-8", "replace").splitlines():
                if line.lower().startswith("subject:"):
                    subject = line.split(":", 1)[1].strip()
                    break
                if line == "":
                    break
            with lock, open(config["log"], "a") as f:
                f.write(json.dumps({"server": self.address,
                                    "rcpts": envelope.rcpt_tos,
                                    "tls": session.ssl is not None,
                                    "subject": subject}) + "\n")
            return "250 2.0.0 Ok: received by %s" % self.address

    controllers = []
    for s in config["servers"]:
        kw = {}
        if s.get("cert"):
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(s["cert"], s["key"])
            kw = {"tls_context": ctx, "require_starttls": False}
        c = Controller(Handler(s["address"]), hostname=s["address"],
                       port=s.get("port", 25), server_hostname=s["name"],
                       ready_timeout=10, **kw)
        c.start()
        controllers.append(c)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        for c in controllers:
            c.stop()


# ---------------------------------------------------------------------------
# HTTPS servers for MTA-STS policies (run inside the namespace)

def serve_https(config_path):
    """CONFIG: {"servers": [{"address", "port", "cert", "key", "files":
    {HOST: [status, content type, body]}}]}: GET /.well-known/mta-sts.txt
    answers by the Host header; anything else is 404."""
    import http.server
    import ssl
    import threading

    with open(config_path) as f:
        config = json.load(f)
    servers = []
    for conf in config["servers"]:
        files = conf["files"]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self, files=files):
                host = (self.headers.get("Host") or "").split(":")[0]
                entry = files.get(host) if self.path == "/.well-known/mta-sts.txt" else None
                status, ctype, body = entry or [404, "text/plain", "no\n"]
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer((conf["address"], conf.get("port", 443)),
                                              Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(conf["cert"], conf["key"])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-smtp":
        serve_smtp(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "serve-https":
        serve_https(sys.argv[2])
    else:
        sys.exit("usage: tls_world.py serve-smtp|serve-https CONFIG.json")
