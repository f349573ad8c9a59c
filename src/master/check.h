/*
 * check — what `postfix check` does for mxgate: every directory and file
 * a process will use is tried as the user that process runs as, before
 * anything starts.
 *
 * check_access() forks one short-lived child per process role (queue,
 * delivery, smtp), drops it to the role's user exactly as the master
 * will (server.user, server.group, server.queue_user), and lets it try
 * each path with access(2): the queue directory and its files, the
 * maildir roots, pipe commands, CA files, attachment directories, the
 * credential files.  As root it also looks at the modes of secrets (TLS
 * keys, credentials, a configuration holding passwords) and of plugins.
 *
 * Each problem is one line on stderr naming the process, the user, the
 * path, what is wrong and the fix:
 *
 *   mxgated: queue process (user mxgate): /var/spool/mxgate/queue.db:
 *       cannot read and write it: Permission denied (owner root, mode
 *       0600); fix: chown mxgate /var/spool/mxgate/queue.db*
 *
 * starting: false for mxgated -n (lines on stderr; every problem counts),
 * true for the start (lines logged; what only defers some mail -- a
 * maildir root, a pipe command, credentials -- is a warning there).
 *
 * Return: the number of problems that count (exit 1 on any); warnings
 * (secrets readable by others) are printed but never counted.
 */
#ifndef MXGATE_CHECK_H
#define MXGATE_CHECK_H

#include <stdbool.h>

struct mxconf;

int check_access(const struct mxconf *conf, bool starting);

#endif
