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
 * Each finding is one line on stderr (-n) or in the log (the start)
 * naming the process, the user, the path, what is wrong and the fix:
 *
 *   mxgated: queue process (user mxgate): /var/spool/mxgate/queue.db:
 *       cannot read and write it: Permission denied (owner root, mode
 *       0600); fix: chown mxgate /var/spool/mxgate/queue.db*
 *
 * What would keep the daemon from taking mail (the queue's directory and
 * files, where the master makes them) is a problem: -n and the start
 * exit 1.  What would only defer or refuse some of it (a maildir root or
 * a pipe command delivery cannot reach, credentials the workers cannot
 * read) and secrets others can read are warnings ("warning:" lines), so
 * that -n's exit status is the start's.
 *
 * starting: false for mxgated -n (stderr), true for the start (log).
 * Returns the number of problems; *warnings gets the number of warnings.
 */
#ifndef MXGATE_CHECK_H
#define MXGATE_CHECK_H

#include <stdbool.h>

struct mxconf;

int check_access(const struct mxconf *conf, bool starting, int *warnings);

/*
 * What the master prepares as root before the processes start, at the
 * start and at each reload: mkdir -p of a path's parents (given to
 * uid:gid when give is set), and the maildir routes' fixed roots (their
 * paths up to the first variable), given to the user that delivers
 * them.  0, or -1 after logging why.
 */
int check_make_parents(const char *dir, bool give, unsigned uid,
    unsigned gid);
int check_prepare_maildirs(const struct mxconf *conf);

#endif
