/*
 * queue_db — the SQLite queue: schema, migrations, and the statements the
 * queue process and mxgatectl run.  The schema is a public interface
 * (README, "The queue schema"): operators query it with the sqlite3 shell
 * while the daemon runs.
 *
 * Only the queue process writes messages; mxgatectl reads (and, for queue
 * management, changes recipient states in short transactions).
 *
 * queue_db_open() sets WAL mode, synchronous=FULL, foreign keys and a busy
 * timeout, and migrates the schema to QUEUE_SCHEMA_VERSION (a newer schema
 * than this binary knows is an error: never downgrade silently).  A
 * writable connection goes through the queue VFS (queue_vfs.h).
 *
 * Errors: functions returning int give 0 on success and -1 on failure
 * after logging the SQLite message once.
 */
#ifndef MXGATE_QUEUE_DB_H
#define MXGATE_QUEUE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <sqlite3.h>
#include "common/envelope.h"

#define QUEUE_SCHEMA_VERSION 2
#define QUEUE_LOCK_NAME      "queue.lock"

/*
 * One queue process per queue directory.  Two would both find the same
 * recipients "delivering" after a crash and deliver them twice, and each
 * would record outcomes over the other's.  The queue process holds an
 * exclusive flock on QUEUE_LOCK_NAME (its pid written inside, for the
 * message) for its whole life; its delivery children inherit the lock and
 * die with it, so the lock is free only when nothing delivers.
 *
 * queue_lock() takes the lock, waiting up to wait_seconds for a holder
 * to go (a queue process whose master died finishes its deliveries
 * first); it returns the descriptor to keep open, or -1 after logging.
 * queue_lock_wait() only waits for the lock to be free (the master's
 * check at start: another mxgated on the same queue is an error), 0 or
 * -1.  Both create nothing but the lock file.
 */
int queue_lock(const char *path, unsigned wait_seconds);
int queue_lock_wait(const char *path, unsigned wait_seconds);

struct queue_db;

/* readonly: for mxgatectl's listing commands. */
struct queue_db *queue_db_open(const char *path, bool readonly);
void queue_db_close(struct queue_db *db);
sqlite3 *queue_db_handle(struct queue_db *db);

/* One transaction around a batch of inserts (group commit). */
int queue_db_begin(struct queue_db *db);
int queue_db_commit(struct queue_db *db);
int queue_db_rollback(struct queue_db *db);
/* The last failure since queue_db_begin() was a full file system: the
 * batch can be refused (452 4.3.1) and the connection goes on. */
bool queue_db_out_of_space(const struct queue_db *db);

/*
 * Insert one message (envelope, content, recipients and the history rows
 * "received" and one "routed" per recipient).  Inside a batch
 * (queue_db_begin) a failure leaves part of the message written: the
 * caller must roll the whole transaction back, and may redo the batch
 * without that message.  Outside a batch the message is its own
 * transaction, all or nothing.
 */
int queue_db_insert(struct queue_db *db, const struct envelope *env,
    const char *content, size_t content_len);

#endif
