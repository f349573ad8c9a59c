/*
 * lookup — the credentials lookup process: the only process that reads
 * auth.passwd_file and auth.sqlite (read at each check, so that edits
 * apply at once), as OpenSMTPD's lookup process does.  The smtp workers,
 * chrooted into an empty directory, send it the credentials of each AUTH
 * (IPC_AUTH_CHECK) over a channel of their own and get the verdict back
 * (IPC_AUTH_RESULT); the hashes are checked in its thread pool (auth.h).
 *
 * It runs as server.lookup_user, without capabilities, with no_new_privs
 * and a seccomp filter (sandbox.h).  The master starts it when a listener
 * offers AUTH, with one channel per running worker, and passes it the
 * channel of each worker started later (IPC_WORKER_CHANNEL).  A verdict
 * goes back only on the channel the check came from, and only if that
 * channel has not been replaced meanwhile: a new worker in the same slot
 * never receives the verdict meant for the one before.
 *
 * lookup_main() returns only to exit: on SIGTERM, or when the master
 * goes away.
 */
#ifndef MXGATE_LOOKUP_H
#define MXGATE_LOOKUP_H

#include <stdbool.h>

#include "common/config.h"

/* Does this configuration need the lookup process (a listener offers
 * AUTH)? */
bool lookup_wanted(const struct mxconf *conf);

int lookup_main(const struct mxconf *conf, int master_fd,
    const int *worker_fds, int nworkers);

#endif
