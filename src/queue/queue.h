/*
 * queue — the queue process: the only process that opens the SQLite
 * queue.  It receives finished messages from the smtp workers, commits
 * them in batches (group commit: everything that arrived while the last
 * commit ran goes into the next transaction, one fsync per batch) and only
 * then answers each worker with the queue id.
 *
 * queue_main() runs after privileges are dropped, with the current
 * directory already the queue directory; it returns only to exit.  It
 * first takes the queue lock (queue_db.h), waiting QUEUE_LOCK_WAIT for
 * the queue process of a master that died to finish its deliveries.
 */
#ifndef MXGATE_QUEUE_H
#define MXGATE_QUEUE_H

#include "common/config.h"

/* master_fd: channel to the master; worker_fds: initial channels to the
 * workers (nworkers of them, -1 for a slot without a worker). */
/* Seconds: a stopping queue process gives its deliveries shutdown_grace
 * / 2, then kills them and waits at most 5 s more before its last
 * commit. */
#define QUEUE_LOCK_WAIT(conf) ((conf)->shutdown_grace / 2 + 6)

/* spawner_fd: the channel to the delivery spawner (spawner.h). */
int queue_main(const struct mxconf *conf, int master_fd,
    const int *worker_fds, int nworkers, int spawner_fd);

#endif
