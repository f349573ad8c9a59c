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
 * than this binary knows is an error: never downgrade silently).
 *
 * Errors: functions returning int give 0 on success and -1 on failure
 * after logging the SQLite message once.
 */
#ifndef MXGATE_QUEUE_DB_H
#define MXGATE_QUEUE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <sqlite3.h>
#include "envelope.h"

#define QUEUE_SCHEMA_VERSION 1

struct queue_db;

/* readonly: for mxgatectl's listing commands. */
struct queue_db *queue_db_open(const char *path, bool readonly);
void queue_db_close(struct queue_db *db);
sqlite3 *queue_db_handle(struct queue_db *db);

/* One transaction around a batch of inserts (group commit). */
int queue_db_begin(struct queue_db *db);
int queue_db_commit(struct queue_db *db);
int queue_db_rollback(struct queue_db *db);

/*
 * Insert one message (envelope, content, recipients and the history rows
 * "received" and one "routed" per recipient) inside the current
 * transaction, under a savepoint: on failure only this message is undone
 * and the batch goes on.
 */
int queue_db_insert(struct queue_db *db, const struct envelope *env,
    const char *content, size_t content_len);

#endif
