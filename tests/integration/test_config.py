"""mxgated -n: the configuration is checked completely, every problem is
reported as "FILE:LINE: problem", and nothing is ever ignored."""

import os
import signal
import subprocess

import pytest

from conftest import mxgated_path

GOOD = """\
server = {
  hostname = "mx.test.example";
  user = "nobody";
  group = "nogroup";
  workers = 2;
  log_level = "debug";
};
listen = (
  { address = "127.0.0.1"; port = 2525; role = "mx"; }
);
queue = {
  directory = "QUEUE";
};
limits = {
  line_length = 512;
  message_size = "1M";
  recipients = 100;
  errors = 10;
  connections = 1000;
  connections_per_ip = 50;
  bare_newlines = "reject";
};
timeouts = {
  command = 300;
  data = 180;
  shutdown_grace = 5;
};
accept_domains = [ "example.test", "localhost" ];
"""


def run_daemon(args, timeout=20):
    """Run mxgated expecting it to exit; killed (its whole process group,
    which is its own) if it does not."""
    p = subprocess.Popen([mxgated_path()] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        pytest.fail("mxgated %s did not exit within %ds:\n%s"
                    % (" ".join(args), timeout, err))
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


def check(tmp_path, text):
    path = tmp_path / "mxgate.conf"
    path.write_text(text.replace("QUEUE", str(tmp_path / "queue")))
    r = run_daemon(["-n", "-c", str(path)])
    return str(path), r


def test_good_config(tmp_path):
    path, r = check(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr


def test_minimal_config(tmp_path):
    """Everything has a default except what only the operator knows:
    where to listen and where the queue is."""
    path, r = check(tmp_path, 'listen = ( { address = "127.0.0.1"; '
                    'port = 2525; } );\nqueue = { directory = "QUEUE"; };\n')
    assert r.returncode == 0, r.stderr


def test_check_has_no_side_effects(tmp_path):
    path, r = check(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "queue" / "queue.db").exists()


def test_sample_config_is_valid():
    """etc/mxgate.conf, as shipped, passes the check."""
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "etc",
                          "mxgate.conf")
    if not os.path.exists(sample):
        pytest.skip("etc/mxgate.conf not written yet")
    r = run_daemon(["-n", "-c", sample])
    assert r.returncode == 0, r.stderr


BROKEN = {
    # name: (replace this, with that, the line to blame, words expected)
    "unknown key": ('  errors = 10;', '  errors = 10;\n  bogus_limit = 3;',
                    "bogus_limit", ["bogus_limit"]),
    "unknown section": ('accept_domains', 'frobnicate = { a = 1; };\naccept_domains',
                        "frobnicate", ["frobnicate"]),
    "wrong type int": ('  recipients = 100;', '  recipients = "many";',
                       "recipients", ["recipients"]),
    "wrong type string": ('  hostname = "mx.test.example";', '  hostname = 42;',
                          "hostname", ["hostname"]),
    "bad port": ('port = 2525;', 'port = 70000;', "port = 70000", ["port"]),
    "port zero": ('port = 2525;', 'port = 0;', "port = 0", ["port"]),
    "bad address": ('address = "127.0.0.1"', 'address = "127.0.0.256"',
                    "127.0.0.256", ["address"]),
    "bad role": ('role = "mx"', 'role = "relay-everything"',
                 "relay-everything", ["role"]),
    "bad size": ('message_size = "1M"', 'message_size = "huge"', "huge",
                 ["message_size"]),
    "bad log level": ('log_level = "debug"', 'log_level = "chatty"',
                      "chatty", ["log_level"]),
    "bad bare_newlines": ('bare_newlines = "reject"', 'bare_newlines = "maybe"',
                          "maybe", ["bare_newlines"]),
    "negative workers": ('workers = 2;', 'workers = -1;', "workers = -1",
                         ["workers"]),
    "line_length too small": ('line_length = 512;', 'line_length = 100;',
                              "line_length = 100", ["line_length"]),
    "bad domain": ('"example.test", "localhost"', '"example.test", "bad domain!"',
                   "bad domain!", ["accept_domains"]),
    "unknown user": ('user = "nobody";', 'user = "no-such-user-here";',
                     "no-such-user-here", ["no-such-user-here"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config(tmp_path, name):
    old, new, blame, words = BROKEN[name]
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path, r = check(tmp_path, text)
    assert r.returncode == 1, (r.returncode, r.stderr)
    want = "%s:%d:" % (path, line_of(text, blame))
    # "FILE:LINE: problem", possibly after the program's name
    lines = [l for l in r.stderr.splitlines()
             if l.startswith(want) or l.startswith("mxgated: " + want)]
    assert lines, "no %r line in stderr:\n%s" % (want, r.stderr)
    for w in words:
        assert any(w in l for l in lines), (w, r.stderr)


def test_syntax_error(tmp_path):
    text = GOOD.replace("  errors = 10;", "  errors = 10\n  connections = ;")
    path, r = check(tmp_path, text)
    assert r.returncode == 1, r.stderr
    assert ("%s:%d:" % (path, line_of(text, "connections = ;"))) in r.stderr \
        or ("%s:%d:" % (path, line_of(text, "errors = 10"))) in r.stderr, \
        r.stderr


def test_unterminated_group(tmp_path):
    text = GOOD.replace("};\nlisten", "\nlisten", 1)
    path, r = check(tmp_path, text)
    assert r.returncode == 1, r.stderr
    assert path + ":" in r.stderr, r.stderr


def test_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.conf")
    r = run_daemon(["-n", "-c", path])
    assert r.returncode == 1
    assert path in r.stderr, r.stderr


def test_every_problem_reported(tmp_path):
    text = GOOD.replace("  recipients = 100;", '  recipients = "x";') \
               .replace("  data = 180;", "  data = 180;\n  dta = 1;")
    path, r = check(tmp_path, text)
    assert r.returncode == 1
    assert "%s:%d:" % (path, line_of(text, 'recipients = "x"')) in r.stderr
    assert "%s:%d:" % (path, line_of(text, "dta = 1")) in r.stderr, r.stderr


def test_daemon_refuses_broken_config(tmp_path):
    """Not only -n: the daemon itself does not start on a broken file."""
    text = GOOD.replace("  errors = 10;", "  errors = 10;\n  bogus = 1;")
    path = tmp_path / "mxgate.conf"
    path.write_text(text.replace("QUEUE", str(tmp_path / "queue")))
    r = run_daemon(["-f", "-c", str(path)])
    assert r.returncode != 0
    assert "%s:%d:" % (path, line_of(text, "bogus = 1")) in r.stderr, r.stderr


def test_port_in_use(daemon, tmp_path):
    """A second daemon on the same port fails at startup, loudly."""
    text = GOOD.replace("port = 2525", "port = %d" % daemon.port)
    path = tmp_path / "mxgate.conf"
    path.write_text(text.replace("QUEUE", str(tmp_path / "queue")))
    r = run_daemon(["-f", "-c", str(path)])
    assert r.returncode != 0
    assert str(daemon.port) in r.stderr, r.stderr
    assert daemon.running()
