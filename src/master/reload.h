/*
 * reload — the master's half of SIGHUP (README "Reload"): read the
 * configuration file again and check it as the start would, before
 * anything changes.
 *
 * reload_load() reads old->path from the directory mxgated started in
 * (relative paths and @include keep their meaning), then refuses the
 * new file when:
 *   - it does not parse or check ("FILE:LINE: problem", as at start);
 *   - it changes a setting that only a restart can change (below);
 *   - the users do not exist, or a process could not reach its files
 *     (the checks of mxgated -n, logged as at start).
 * It also makes the new maildir routes' roots, as the start does.
 * Every problem is logged once; NULL means nothing changed.  The caller
 * then loads the certificates (tls_init), the last thing that can fail.
 *
 * Settings fixed until a restart, because a process already running
 * holds what they name (the queue process its chrooted database, the
 * master its pid file, every process its user, the workers the plugins'
 * code): server.user, server.group, server.queue_user,
 * server.chroot_dir, server.pid_file, queue.directory, plugins,
 * metrics.listen (the exporter's listener and the counter store are
 * made before anything forks) and server.log_format.
 * Everything else takes effect at the reload.
 */
#ifndef MXGATE_RELOAD_H
#define MXGATE_RELOAD_H

#include "common/config.h"

struct mxconf *reload_load(const struct mxconf *old);

/* The name of the first setting fixed until a restart that differs
 * between a and b ("server.user"), or NULL. */
const char *reload_fixed_change(const struct mxconf *a,
    const struct mxconf *b);

#endif
