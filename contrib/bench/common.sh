# common.sh — helpers the benchmark scripts source (not run on its own).
#
#   free_port       print a free TCP port on 127.0.0.1
#   wait_banner P   wait (at most 10 s) until 127.0.0.1:P greets with 220;
#                   exit status 0 if it did
#   now             the time in seconds, with nanoseconds

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_banner() {
	/usr/bin/python3 -c '
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1) as s:
            s.settimeout(1)
            if s.recv(512).startswith(b"220"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
' "$1"
}

now() { date +%s.%N; }
