/*
 * wal_sync — makes committed queue transactions durable.
 *
 * The queue connection runs with synchronous=NORMAL: COMMIT writes the
 * transaction's frames to the WAL file without waiting for the disk, and
 * wal_sync() then fdatasync()s that file.  The queue process calls it
 * once per batch, after the batch's COMMIT and before it answers anyone:
 * what arrives meanwhile waits in the workers' channels and forms the
 * next batch, so the disk's latency is paid once per batch (group
 * commit).  (SQLite itself syncs the WAL before each checkpoint and the
 * database after it in NORMAL mode, so checkpointed frames stay durable.)
 *
 * A failed sync is fatal: the process must not acknowledge what it could
 * not persist, and the master restarts it.
 */
#ifndef MXGATE_WAL_SYNC_H
#define MXGATE_WAL_SYNC_H

struct wal_sync;

/* wal_path: the database's "-wal" file, opened when first needed (SQLite
 * creates it with the first write). */
struct wal_sync *wal_sync_new(const char *wal_path);
void wal_sync_free(struct wal_sync *ws);

/* Everything committed so far is on disk when this returns. */
void wal_sync(struct wal_sync *ws);

/* Syncs done and their mean duration in microseconds, for the log. */
void wal_sync_stats(const struct wal_sync *ws, unsigned long long *syncs,
    double *mean_us);

#endif
