/*
 * queue_db_private — what the files of the queue store share: the
 * connection and a few helpers.  Included by src/queue/queue_db*.c only;
 * nothing outside the store sees the SQLite handle.
 */
#ifndef MXGATE_QUEUE_DB_PRIVATE_H
#define MXGATE_QUEUE_DB_PRIVATE_H

#include <stdbool.h>
#include <sqlite3.h>

#include "queue/queue_db.h"

/* Statements of the insert path (queue_db.c). */
#define QDB_INSERT_STMTS   7
/* Statements of the delivery side (queue_db_delivery.c). */
#define QDB_DELIVERY_STMTS 12

struct queue_db {
	sqlite3      *h;
	char         *path;
	bool          readonly;
	/* The connection syncs every commit (synchronous FULL or EXTRA):
	 * the delivery side's transactions then run with NORMAL (see
	 * queue_db_txn_begin()). */
	bool          lower_sync;
	bool          out_of_space;     /* the last error was a full disk */
	/* The delivery side's open transaction cannot commit what it did:
	 * a statement failed for want of space or with an I/O error, or
	 * SQLite ended the transaction (queue_db_txn_broken()). */
	bool          txn_broken;
	sqlite3_stmt *stmt[QDB_INSERT_STMTS];
	sqlite3_stmt *dstmt[QDB_DELIVERY_STMTS];   /* NULL until prepared */
	bool          history;          /* show_* read the history tables */
	unsigned      wal_pages;        /* queue_db_wal_budget(); 0: default */
	uint64_t      wal_ahead;        /* the WAL file's size written ahead */
	char          err[256];         /* the last failure: queue_db_error() */
	int           err_code;         /* its SQLite code: queue_db_error_kind() */
};

/* "queue database PATH: what: SQLite's message". */
void qdb_log_error(struct queue_db *db, const char *what);
/* Note what the last failure was (out_of_space, txn_broken). */
void qdb_note_error(struct queue_db *db);
/* sqlite3_exec() with the error logged; 0 or -1. */
int  qdb_exec(struct queue_db *db, const char *sql, const char *what);
/* Binds NULL for a NULL string. */
void qdb_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* A copy of a text column, NULL for SQL NULL. */
char *qdb_column_dup(sqlite3_stmt *st, int i);
/* Keep SQLite's message of the failure for queue_db_error(). */
void qdb_save_error(struct queue_db *db);
/* -1 (logged) on a read-only connection. */
int  qdb_check_writable(struct queue_db *db);

#endif
