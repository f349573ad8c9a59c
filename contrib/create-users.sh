#!/bin/sh
# create-users.sh — create the service users listed in
# contrib/sysusers.d/mxgate.conf, for a machine where mxgated runs from the
# build tree (the README's first command).  An installed mxgate gets them
# from systemd-sysusers or the Debian package instead.  Idempotent; root only.
set -eu

conf=$(dirname "$0")/sysusers.d/mxgate.conf
if [ "$(id -u)" -ne 0 ]; then
	echo "create-users: run as root to create the users in $conf" >&2
	exit 1
fi
# Only "u" lines: name, id, quoted GECOS, home, shell.
sed -n 's/^u[[:space:]]\{1,\}\([^[:space:]]*\)[[:space:]]\{1,\}[^[:space:]]*[[:space:]]\{1,\}"\([^"]*\)"[[:space:]]\{1,\}\([^[:space:]]*\)[[:space:]]\{1,\}\([^[:space:]]*\).*/\1|\2|\3|\4/p' "$conf" |
while IFS='|' read -r name gecos home shell; do
	if getent passwd "$name" >/dev/null; then
		continue
	fi
	useradd --system --user-group --no-create-home \
	    --home-dir "$home" --shell "$shell" --comment "$gecos" "$name"
	echo "create-users: created $name"
done
