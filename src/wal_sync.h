/*
 * wal_sync — makes committed queue transactions durable off the queue
 * process's event loop (pipelined group commit).
 *
 * The queue connection runs with synchronous=NORMAL: COMMIT writes the
 * transaction's frames to the WAL file without waiting for the disk.  A
 * background thread then fdatasync()s the WAL file; a transaction is
 * durable once a sync that started after its COMMIT returned has
 * completed, and only then may the client hear "250 queued".  While one
 * sync runs, the event loop goes on receiving and committing the next
 * batch, so the disk's latency is paid once per sync, not per batch.
 * (SQLite itself syncs the WAL before each checkpoint and the database
 * after it in NORMAL mode, so checkpointed frames stay durable.)
 *
 * Sequence numbers are the caller's: wal_sync_request(seq) asks that
 * everything committed up to seq be made durable; wal_sync_done() says up
 * to which seq that is true.  A failed sync is fatal: the process must
 * not acknowledge what it could not persist, and the master restarts it.
 */
#ifndef MXGATE_WAL_SYNC_H
#define MXGATE_WAL_SYNC_H

#include <stdint.h>

struct wal_sync;

/* wal_path: the database's "-wal" file, opened by the thread when it
 * first needs it (SQLite creates it with the first write). */
struct wal_sync *wal_sync_new(const char *wal_path);
/* Stops the thread after a final sync of what was requested. */
void wal_sync_free(struct wal_sync *ws);

/* Readable (an eventfd) when wal_sync_done() has news. */
int wal_sync_fd(const struct wal_sync *ws);

void wal_sync_request(struct wal_sync *ws, uint64_t seq);
/* Highest seq known durable; consumes the eventfd's readiness. */
uint64_t wal_sync_done(struct wal_sync *ws);
/* Syncs done and their mean duration in microseconds, for the log. */
void wal_sync_stats(struct wal_sync *ws, unsigned long long *syncs,
    double *mean_us);

/* Block until everything requested is durable (used when stopping). */
void wal_sync_wait(struct wal_sync *ws);

#endif
