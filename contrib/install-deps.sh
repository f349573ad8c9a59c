#!/bin/sh
# install-deps.sh — install everything needed to build and test mxgate on a
# fresh Debian 12 (bookworm).  Run as root:
#
#     contrib/install-deps.sh
#
# Nothing is installed when every package is already present (dpkg -s), so
# reruns are fast.  postfix is needed only for smtp-source and smtp-sink
# (benchmarks); it is preseeded to "No configuration" so the install never
# prompts, and any postfix daemon the package starts is stopped again so
# nothing is left listening on port 25.  As root it also creates the
# service users mxgated's processes run as (contrib/create-users.sh).
# dpkg-dev and debhelper build the Debian package (contrib/debian-check.sh);
# acl's setfacl lets a test grant a worker's user access by ACL.
# rspamd, opendkim (+ opendkim-tools for opendkim-genkey) and python3-milter
# are the milters the milter tests start on their own (test_milter.py).
# prometheus ships promtool, which checks the metrics endpoint's output;
# util-linux's unshare gives the audit test a /dev/log of its own.
# haproxy stands in front of two mxgated in the PROXY protocol test (a
# private instance the test starts; the packaged service is not started).
# nsd, unbound and ldnsutils make the signed DNS of the relay's DANE tests
# (tests/integration/tls_world.py), python3-cryptography their certificates.
set -eu

PACKAGES="build-essential autoconf automake libtool pkg-config
libssl-dev libspf2-dev libpcre2-dev libconfig-dev libgmime-3.0-dev
libsqlite3-dev sqlite3 libcurl4-openssl-dev libcrypt-dev clang libclang-rt-14-dev
libseccomp-dev
python3 python3-pytest python3-aiosmtpd python3-dnslib
swaks openssl postfix iproute2 procps valgrind acl prometheus util-linux postgrey postfix-policyd-spf-python
dpkg-dev debhelper
rspamd opendkim opendkim-tools python3-milter
haproxy
nsd unbound ldnsutils python3-cryptography"

missing=""
for p in $PACKAGES; do
	if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
		missing="$missing $p"
	fi
done

here=$(cd "$(dirname "$0")" && pwd)

if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	# The service users (contrib/sysusers.d/mxgate.conf) for a daemon
	# started as root from the build tree.
	if [ "$(id -u)" -eq 0 ]; then "$here/create-users.sh"; fi
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing:$missing (run as root to install)" >&2
	exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive

# Never let a package start services while we install (postfix would try).
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 0755 "$policy"
	own_policy=yes
fi
cleanup() {
	if [ "$own_policy" = yes ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

# Preseed postfix so it neither prompts nor configures a mail server.
printf '%s\n' \
	"postfix postfix/main_mailer_type select No configuration" \
	"postfix postfix/mailname string localhost" \
	| debconf-set-selections

apt-get update
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $missing

# If a postfix master got started anyway, stop it: port 25 stays free.
if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
	postfix stop >/dev/null 2>&1 || true
fi
"$here/create-users.sh"
echo "install-deps: done"
