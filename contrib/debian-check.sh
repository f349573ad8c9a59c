#!/bin/bash
# debian-check.sh — prove the Debian package: build it from the committed
# tree, install it in a fresh Debian 12 chroot, start the daemon the way
# the systemd unit does, send a message, find it.  Run as root, from the
# repository:
#
#     contrib/debian-check.sh            # last line: "debian-check: OK"
#
# Needs dpkg-dev and debhelper (contrib/install-deps.sh) and debootstrap
# (installed here if missing); the chroot's base is made once in
# $BASE (default /tmp/mxgate-bookworm, about a minute) and copied for
# each run.  KEEP=1 keeps the run's directory; DEB=FILE checks that
# package instead of building one.  Steps:
#   1. git archive HEAD, dpkg-buildpackage -us -uc -b;
#   2. apt-get install ./mxgate_*.deb in a copy of the base (dependencies
#      from the mirror);
#   3. the users and the spool exist, the unit, the manuals and the
#      configuration are where they belong;
#   4. mxgated -n, then mxgated -f as ExecStart says (no systemd in a
#      chroot: the command lines are taken from the unit), in a network
#      namespace of its own; a message to postmaster@localhost over SMTP
#      (bash's /dev/tcp), the 250, the message in the queue and in the
#      maildir the installed configuration names;
#   5. an edited /etc/mxgate/mxgate.conf survives reinstalling the package.
set -euo pipefail

top=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
base=${BASE:-/tmp/mxgate-bookworm}
work=$(mktemp -d /tmp/mxgate-debian-check.XXXXXX)
root=$work/root
say() { echo "debian-check: $*"; }
fail() { echo "debian-check: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (chroot)"
for t in dpkg-buildpackage dh; do
	command -v $t >/dev/null || fail "$t missing: contrib/install-deps.sh"
done

mounted=no
cleanup() {
	if [ "$mounted" = yes ]; then
		umount -R "$root/dev" 2>/dev/null || umount -l "$root/dev" || true
		umount "$root/proc" || true
	fi
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# 1. The package, from what is committed (DEB=FILE: check that one).
if [ -n "${DEB:-}" ]; then
	deb=$DEB
	say "checking $deb"
else
	say "building the package from $(git -C "$top" rev-parse --short HEAD)"
	mkdir -p "$work/src/mxgate"
	git -C "$top" archive HEAD | tar -x -C "$work/src/mxgate"
	(cd "$work/src/mxgate" && DEB_BUILD_OPTIONS="parallel=${JOBS:-2}" \
	    dpkg-buildpackage -us -uc -b) > "$work/build.log" 2>&1 ||
		{ tail -40 "$work/build.log"; fail "dpkg-buildpackage (log: $work/build.log)"; }
	deb=$(ls "$work"/src/mxgate_*.deb)
	say "built $(basename "$deb")"
fi
dpkg-deb -c "$deb" | awk '{print $6}' > "$work/contents"
for f in ./usr/sbin/mxgated ./usr/sbin/mxgatectl ./etc/mxgate/mxgate.conf \
    ./lib/systemd/system/mxgated.service ./usr/lib/sysusers.d/mxgate.conf \
    ./usr/lib/tmpfiles.d/mxgate.conf ./usr/share/man/man8/mxgated.8.gz \
    ./usr/share/man/man8/mxgatectl.8.gz ./usr/share/man/man5/mxgate.conf.5.gz; do
	grep -qx "$f" "$work/contents" || fail "$f not in the package"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/mxgate/mxgate.conf ||
	fail "/etc/mxgate/mxgate.conf is not a conffile"

# 2. A fresh Debian 12.
if [ ! -x "$base/bin/bash" ]; then
	command -v debootstrap >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
	mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	say "making the base chroot in $base ($mirror)"
	debootstrap --variant=minbase bookworm "$base.new" "$mirror" \
	    > "$work/debootstrap.log" 2>&1 || fail "debootstrap ($work/debootstrap.log)"
	mv "$base.new" "$base"
fi
cp -a "$base" "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mounted=yes
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 /bin/bash -c "$1"; }
cp "$deb" "$root/tmp/"
say "installing in a fresh chroot"
# Services never start in a chroot (no systemd); policy-rc.d says so.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_root "apt-get update -qq && apt-get install -y -qq /tmp/$(basename "$deb")" \
    > "$work/install.log" 2>&1 || { tail -30 "$work/install.log"; fail "apt-get install"; }

# 3. What the package made.
for u in mxgate mxgate-smtp mxgate-deliver mxgate-auth; do
	in_root "getent passwd $u" >/dev/null || fail "no user $u"
done
[ "$(in_root 'stat -c "%U:%G %a" /var/spool/mxgate')" = "mxgate:mxgate 700" ] ||
	fail "/var/spool/mxgate: $(in_root 'stat -c "%U:%G %a" /var/spool/mxgate')"
[ "$(in_root 'stat -c "%U:%G %a" /var/lib/mxgate/empty')" = "root:root 755" ] ||
	fail "/var/lib/mxgate/empty"
grep -q '^ExecStart=/usr/sbin/mxgated -f -c /etc/mxgate/mxgate.conf$' \
    "$root/lib/systemd/system/mxgated.service" || fail "unit ExecStart"
in_root "mxgatectl --version" | grep -q '^mxgatectl ' || fail "mxgatectl --version"
say "users, spool, unit, manuals and configuration in place"

# 4. Start as the unit does, send, find: one script in the chroot, in a
# network namespace of its own when unshare(1) allows, so that port 2525
# is ours even on a shared machine.
cat > "$root/tmp/check-run.sh" <<'RUN'
set -u
unit=/lib/systemd/system/mxgated.service
pre=$(sed -n 's/^ExecStartPre=//p' $unit)
start=$(sed -n 's/^ExecStart=//p' $unit)
$pre || { echo "FAIL ExecStartPre: $pre"; exit 1; }
$start > /var/log/mxgated-check.log 2>&1 &
pid=$!
stop() { kill -TERM $pid; wait $pid; }
up=no
for _ in $(seq 1 100); do
	if (exec 3<>/dev/tcp/127.0.0.1/2525 && head -c 3 <&3) 2>/dev/null | grep -q 220; then
		up=yes; break
	fi
	sleep 0.1
done
[ $up = yes ] || { cat /var/log/mxgated-check.log; echo "FAIL no 220 on 127.0.0.1:2525"; exit 1; }
marker=debian-check-$$-$(date +%s)
exec 3<>/dev/tcp/127.0.0.1/2525
r() { IFS= read -r line <&3; echo "$line"; case "$line" in ???-*) r;; esac; }
r >/dev/null
printf 'EHLO check.example\r\n' >&3; r >/dev/null
printf 'MAIL FROM:<check@example.org>\r\n' >&3; r >/dev/null
printf 'RCPT TO:<postmaster@localhost>\r\n' >&3; r >/dev/null
printf 'DATA\r\n' >&3; r >/dev/null
printf 'Subject: %s\r\n\r\nsent by contrib/debian-check.sh\r\n.\r\n' "$marker" >&3
reply=$(r)
printf 'QUIT\r\n' >&3; r >/dev/null
exec 3<&-
qid=$(echo "$reply" | sed -n 's/^250 .*queued as \([0-9A-Z]\{16\}\).*/\1/p')
[ -n "$qid" ] || { stop; cat /var/log/mxgated-check.log; echo "FAIL no 250: $reply"; exit 1; }
echo "accepted: $qid"
# In the queue: mxgatectl shows it, unless delivery was quicker and
# (delivery.keep_delivered = 0) removed it; then the log has its commit.
if mxgatectl queue show "$qid" > /tmp/show 2>&1; then
	echo "found in the queue (mxgatectl queue show $qid)"
elif grep -q "queue\[.*id=$qid from=" /var/log/mxgated-check.log; then
	echo "committed to the queue (log), already delivered and removed (keep_delivered = 0)"
else
	stop; cat /tmp/show /var/log/mxgated-check.log; echo "FAIL $qid not in the queue"; exit 1
fi
found=no
for _ in $(seq 1 50); do
	if grep -rlq "$marker" /var/lib/mxgate/mail/postmaster/new/ 2>/dev/null; then
		found=yes; break
	fi
	sleep 0.2
done
stop
[ $found = yes ] || { cat /var/log/mxgated-check.log; echo "FAIL not in /var/lib/mxgate/mail/postmaster/new/"; exit 1; }
echo "delivered to /var/lib/mxgate/mail/postmaster/new/"
RUN
run_check() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    LANG=C.UTF-8 /bin/bash /tmp/check-run.sh
}
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
	export root
	out=$(unshare -n /bin/bash -c "ip link set lo up && $(declare -f run_check); run_check") || true
else
	say "no unshare -n here: using the machine's 127.0.0.1:2525"
	out=$(run_check) || true
fi
echo "$out" | sed 's/^/debian-check: /'
echo "$out" | grep -q '^delivered to ' || fail "send and find"

# 5. An edited configuration survives the package's reinstall (dpkg keeps
# a changed conffile when the package's version of it did not change).
echo "# edited by debian-check" >> "$root/etc/mxgate/mxgate.conf"
in_root "dpkg -i /tmp/$(basename "$deb")" > "$work/reinstall.log" 2>&1 ||
	{ cat "$work/reinstall.log"; fail "reinstall"; }
tail -1 "$root/etc/mxgate/mxgate.conf" | grep -q '^# edited by debian-check$' ||
	fail "the edited configuration was replaced"
in_root "mxgated -n" >/dev/null || fail "mxgated -n after reinstall"
say "an edited configuration is kept on reinstall"
say "OK"
