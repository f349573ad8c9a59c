/*
 * worker — an smtp worker process: one epoll event loop serving many SMTP
 * sessions (session.c) on client sockets the master passes in.  Runs
 * unprivileged and never opens the queue: finished messages go to the
 * queue process over queue_fd, credentials to check to the lookup
 * process over lookup_fd.
 *
 * On SIGTERM the worker stops taking connections, lets sessions finish for
 * conf->shutdown_grace seconds, then answers the rest 421 and exits.
 */
#ifndef MXGATE_WORKER_H
#define MXGATE_WORKER_H

#include "common/config.h"

/*
 * Confine the calling process as an smtp worker (sandbox.h): its user,
 * chrooted into conf->chroot_dir (a unix policy service's directory
 * mounted inside), no capabilities, no_new_privs, the smtp seccomp
 * filter.  Fatal on failure.  worker_main() calls it once its channels
 * and epoll set exist, before it starts threads or plugins; the master
 * calls it in a child to try the plugins' init() at start.
 */
void worker_sandbox(const struct mxconf *conf);

/* lookup_fd: the channel to the credentials lookup process, -1 when
 * there is none (no listener offers AUTH, or it is being restarted). */
int worker_main(const struct mxconf *conf, int slot, int master_fd,
    int queue_fd, int lookup_fd);

#endif
