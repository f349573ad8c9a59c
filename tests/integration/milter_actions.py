"""A test milter (python3-milter, libmilter underneath) that takes the
action the message asks for, so that test_milter.py can check how
mxgated applies each one.

    /usr/bin/python3 milter_actions.py SOCKET LOGFILE

SOCKET is libmilter's "inet:PORT@127.0.0.1" or "unix:/path".  The
Subject chooses at end of message: "headers" (add, insert, change,
delete), "rcpts" (add added@example.test, delete drop@example.test),
"body" (replace), "quarantine", "discard", "tempfail", "reply" (550
with our text), "chgfrom" (new sender); any other subject is accepted
as is.  RCPT refuses reject-me@... (setreply 550 5.7.1).  CONNECT
from 127.0.0.5 and HELO discard-session.example are answered DISCARD
(every message of the session discarded).  Every message
gets an X-Macros field with the macros it saw, and LOGFILE a line per
callback ("connect 127.0.0.1", "rcpt <b@example.test>", ...).
"""

import sys

import Milter

SOCKET, LOGFILE = sys.argv[1], sys.argv[2]


def log(line):
    with open(LOGFILE, "a") as f:
        f.write(line + "\n")


class Actions(Milter.Base):
    def __init__(self):
        self.subject = ""
        self.macros = {}

    def _macros(self, *names):
        for n in names:
            v = self.getsymval(n)
            if v is not None:
                self.macros[n] = v

    def connect(self, hostname, family, hostaddr):
        self._macros("j", "{client_addr}", "{daemon_name}")
        log("connect %s" % (hostaddr[0],))
        if hostaddr[0] == "127.0.0.5":
            return Milter.DISCARD
        return Milter.CONTINUE

    def hello(self, name):
        self._macros("{tls_version}")
        log("helo %s" % name)
        if name == "discard-session.example":
            return Milter.DISCARD
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self._macros("i", "{auth_authen}", "{mail_addr}")
        log("mail %s" % sender)
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *params):
        self._macros("{rcpt_addr}", "{rcpt_mailer}")
        log("rcpt %s" % rcpt)
        if rcpt.startswith("<reject-me@"):
            self.setreply("550", "5.7.1", "recipient refused by test milter")
            return Milter.REJECT
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == "subject":
            self.subject = value.strip()
        return Milter.CONTINUE

    def eoh(self):
        log("eoh")
        return Milter.CONTINUE

    def body(self, chunk):
        log("body %d" % len(chunk))
        return Milter.CONTINUE

    def eom(self):
        s = self.subject
        log("eom %s" % s)
        self.addheader("X-Macros", " ".join(
            "%s=%s" % kv for kv in sorted(self.macros.items())))
        if s == "headers":
            self.addheader("X-Added", "appended")
            self.addheader("X-Inserted", "on top", 0)
            self.chgheader("X-Change-Me", 1, "changed")
            self.chgheader("X-Delete-Me", 1, "")
        elif s == "rcpts":
            self.addrcpt("<added@example.test>")
            self.delrcpt("<drop@example.test>")
        elif s == "body":
            self.replacebody(b"replaced body line 1\r\nline 2\r\n")
        elif s == "quarantine":
            self.quarantine("held by the test milter")
        elif s == "discard":
            return Milter.DISCARD
        elif s == "tempfail":
            return Milter.TEMPFAIL
        elif s == "reply":
            self.setreply("550", "5.7.0", "refused by the test milter")
            return Milter.REJECT
        elif s == "chgfrom":
            self.chgfrom("<changed@sender.example>")
        return Milter.ACCEPT

    def abort(self):
        log("abort")
        return Milter.CONTINUE

    def close(self):
        log("close")
        return Milter.CONTINUE


Milter.factory = Actions
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY |
                 Milter.ADDRCPT | Milter.DELRCPT | Milter.QUARANTINE |
                 Milter.CHGFROM)
log("ready")
Milter.runmilter("actions", SOCKET, timeout=30)
