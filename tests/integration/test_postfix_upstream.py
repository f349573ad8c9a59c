"""The relay client against a real Postfix (Debian's postfix 3.7, the
package contrib/install-deps.sh installs for smtp-sink) as the upstream:
a private instance with its own configuration, queue and data
directories and an smtpd on a loopback port, relaying what it receives
to an aiosmtpd capture.  It never touches /etc/postfix, the system's
queue or port 25.

What it shows: mxgated sends with BDAT (RFC 3030) to a server that
offers CHUNKING and PIPELINING, and with DATA when told not to; Postfix
takes both and passes the message on byte for byte (Postfix counts the
commands of each session in its log: "bdat=1" or "data=1").

Needs root (Postfix starts as root, as mxgated does); skipped otherwise.
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import free_port, wait_for
from test_delivery import (Capture, needs_aiosmtpd, relay_settings, send,
                           strip_trace, tricky_bytes, upstream, wait_state)

POSTFIX = "/usr/sbin/postfix"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix starts as root"),
    pytest.mark.skipif(not os.access(POSTFIX, os.X_OK),
                       reason="needs Debian's postfix"
                              " (contrib/install-deps.sh)"),
    needs_aiosmtpd,
]


class PrivatePostfix:
    """A Postfix of its own, relaying everything to relay_port."""

    def __init__(self, relay_port):
        self.base = tempfile.mkdtemp(prefix="mxgate-postfix.")
        os.chmod(self.base, 0o755)
        self.etc, spool, data = (os.path.join(self.base, d)
                                 for d in ("etc", "spool", "data"))
        for d in (self.etc, spool, data):
            os.makedirs(d)
        shutil.chown(data, "postfix", "postfix")
        self.port = free_port()
        self.log = os.path.join(self.base, "maillog")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("\n".join([
                "compatibility_level = 3.6",
                "config_directory = " + self.etc,
                "queue_directory = " + spool,
                "data_directory = " + data,
                "myhostname = postfix.test.example",
                "mydestination =",
                "inet_interfaces = 127.0.0.1",
                "inet_protocols = ipv4",
                "mynetworks = 127.0.0.0/8",
                "relayhost = [127.0.0.1]:%d" % relay_port,
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                # Pass messages on as they came: no header rewriting.
                "local_header_rewrite_clients =",
                "local_transport = error:no local delivery here",
                "alias_maps =",
                "alias_database =",
                "local_recipient_maps =",
                "smtp_tls_security_level = none",
                "smtpd_tls_security_level = none",
                "maillog_file = " + self.log,
                "maillog_file_prefixes = " + self.base,
                "",
            ]))
        # The system's master.cf without its inet services and chroot,
        # and our smtpd on a loopback port.
        lines = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                w = line.split()
                if w and not line[0].isspace() and not line.startswith("#"):
                    if len(w) >= 8 and w[1] == "inet":
                        continue
                    if w[0] == "postlog":
                        continue
                    if len(w) >= 8:
                        w[4] = "n"
                        line = " ".join(w) + "\n"
                lines.append(line)
        lines.append("127.0.0.1:%d inet n - n - - smtpd\n" % self.port)
        lines.append("postlog unix-dgram n - n - 1 postlogd\n")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.writelines(lines)
        r = subprocess.run([POSTFIX, "-c", self.etc, "start"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(self.base, ignore_errors=True)
            pytest.fail("the private postfix did not start: %s %s"
                        % (r.stdout, r.stderr))

    def maillog(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        subprocess.run([POSTFIX, "-c", self.etc, "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def postfix():
    cap = Capture()
    pf = PrivatePostfix(cap.port)
    pf.capture = cap
    yield pf
    pf.stop()
    cap.stop()


def sessions(pf):
    """The command counts of Postfix smtpd's finished sessions."""
    return re.findall(r"disconnect from \S+ (.*)", pf.maillog())


@pytest.mark.parametrize("chunking", [True, False])
def test_relay_to_postfix_byte_identical(daemon_factory, postfix, chunking):
    d = daemon_factory(relay_settings(
        [upstream("next", ["127.0.0.1:%d" % postfix.port],
                  chunking=chunking)]))
    raws = [tricky_bytes("to postfix %d" % i) for i in range(3)]
    raws.append(b"Subject: large\r\n\r\n" + b"".join(
        b"%06d %s\r\n" % (i, b"." * 70) for i in range(4000)))   # 300 KB
    for raw in raws:
        qid = send(d, "bob@example.test", raw, mail_options=["BODY=8BITMIME"])
        wait_state(d, qid, "delivered", timeout=30)
        reply = d.db("SELECT last_reply FROM recipients WHERE message_id = ?",
                     (qid,))[0][0]
        assert re.match(r"250 2\.0\.0 Ok: .*queued as \w+$", reply), reply
    cap = postfix.capture
    assert wait_for(lambda: cap.handler.count() == len(raws), 30), \
        postfix.maillog()[-2000:]
    got = sorted(strip_trace(m["data"]) for m in cap.messages)
    assert got == sorted(raws)
    # Postfix's own count of what each session used.
    assert wait_for(lambda: sessions(postfix), 10), postfix.maillog()[-2000:]
    used = " ".join(sessions(postfix))
    if chunking:
        assert "bdat=" in used and "data=" not in used, used
    else:
        assert "data=" in used and "bdat=" not in used, used
