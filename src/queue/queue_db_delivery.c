/*
 * queue_db_delivery — the queue store's statements for the delivery side
 * of the queue process: the scheduler's (due recipients, claims,
 * outcomes, history, retention) and the bounces' (queue_db.h).
 *
 * They are prepared once (queue_db_delivery_init()) and reused: the
 * scheduler runs them up to every SCHEDULER_MIN_INTERVAL_MS.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dsn.h"
#include "common/log.h"
#include "common/util.h"
#include "queue/queue_db.h"
#include "queue/queue_db_private.h"

enum dstmt_id {
	DS_DUE_QUEUED,
	DS_DUE_DEFERRED,
	DS_CLAIM,
	DS_EVENT,
	DS_FINAL,
	DS_DEFER,
	DS_PENDING_COUNT,
	DS_DELETE_MESSAGE,
	DS_DELETE_CONTENT,
	DS_HEAD,
	DS_PURGE,
	DS_LOAD,
	DS_COUNT
};

_Static_assert(DS_COUNT == QDB_DELIVERY_STMTS, "QDB_DELIVERY_STMTS");

#define DUE_SQL(state) \
	"SELECT r.id, r.message_id, r.address, r.route, r.action," \
	" r.action_params, r.attempts, coalesce(r.last_attempt_at, 0)," \
	" m.received_at, m.sender, r.dsn_notify, r.dsn_orcpt" \
	" FROM recipients r JOIN messages m ON m.id = r.message_id" \
	" WHERE r.state = '" state "' AND r.next_attempt_at <= ?1" \
	" ORDER BY r.next_attempt_at LIMIT ?2 OFFSET ?3"

/* Contents up to this size come with the message's row; larger ones are
 * read a piece at a time (copy_blob()). */
#define SMALL_CONTENT (256 * 1024)

static const char *const dstmt_sql[DS_COUNT] = {
	/* One state at a time: the (state, next_attempt_at) index gives
	 * the rows in order, with no sort of the whole backlog. */
	[DS_DUE_QUEUED] = DUE_SQL("queued"),
	[DS_DUE_DEFERRED] = DUE_SQL("deferred"),
	[DS_CLAIM] =
	    "UPDATE recipients SET state = 'delivering',"
	    " attempts = attempts + 1, last_attempt_at = ?2, updated_at = ?2"
	    " WHERE id = ?1 AND state IN ('queued', 'deferred')",
	[DS_EVENT] =
	    "INSERT INTO events (message_id, recipient_id, at, kind, detail)"
	    " VALUES (?1, ?2, ?3, ?4, ?5)",
	/* "held" while delivering: the operator's hold does not undo an
	 * outcome that is final anyway. */
	[DS_FINAL] =
	    "UPDATE recipients SET state = ?2, last_reply = ?3,"
	    " destination = ?4, next_attempt_at = NULL, updated_at = ?5"
	    " WHERE id = ?1 AND state IN ('delivering', 'held')",
	[DS_DEFER] =
	    "UPDATE recipients SET state = CASE state WHEN 'held' THEN 'held'"
	    " ELSE 'deferred' END, last_reply = ?2, destination = ?3,"
	    " next_attempt_at = ?4, updated_at = ?5"
	    " WHERE id = ?1 AND state IN ('delivering', 'held')",
	[DS_PENDING_COUNT] =
	    "SELECT count(*) FROM recipients WHERE message_id = ?1"
	    " AND state NOT IN ('delivered', 'bounced')",
	[DS_DELETE_MESSAGE] = "DELETE FROM messages WHERE id = ?1",
	[DS_DELETE_CONTENT] =
	    "DELETE FROM message_contents WHERE message_id = ?1",
	[DS_HEAD] =
	    "SELECT substr(content, 1, ?2) FROM message_contents"
	    " WHERE message_id = ?1",
	[DS_PURGE] =
	    "DELETE FROM messages WHERE id IN (SELECT message_id FROM"
	    " recipients GROUP BY message_id HAVING"
	    " sum(state NOT IN ('delivered', 'bounced')) = 0"
	    " AND max(updated_at) < ?1)",
	[DS_LOAD] =
	    "SELECT m.sender, m.client_ip, m.helo, m.protocol, m.auth_user,"
	    " m.received_at, m.body_8bitmime, m.smtputf8, c.rowid,"
	    " length(c.content), CASE WHEN length(c.content) <= ?2"
	    " THEN c.content END, m.dsn_ret, m.dsn_envid"
	    " FROM messages m JOIN message_contents c ON c.message_id = m.id"
	    " WHERE m.id = ?1",
};

static void
sched_fail(struct queue_db *db, const char *what)
{
	qdb_save_error(db);
	qdb_note_error(db);
	log_error("scheduler: %s: %s", what, db->err);
}

static sqlite3_stmt *
dstmt(struct queue_db *db, enum dstmt_id id)
{
	sqlite3_reset(db->dstmt[id]);
	sqlite3_clear_bindings(db->dstmt[id]);
	return db->dstmt[id];
}

/* Run a statement that returns no rows; -1 (logged) on failure. */
static int
step_done(struct queue_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		sched_fail(db, what);
		return -1;
	}
	return 0;
}

static int
exec_logged(struct queue_db *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &err) != SQLITE_OK) {
		qdb_save_error(db);
		qdb_note_error(db);
		log_error("scheduler: %s: %s", sql, err != NULL ? err :
		    db->err);
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

int
queue_db_delivery_init(struct queue_db *db)
{
	if (qdb_check_writable(db) == -1)
		return -1;
	for (int i = 0; i < DS_COUNT; i++) {
		if (db->dstmt[i] != NULL)
			continue;
		if (sqlite3_prepare_v3(db->h, dstmt_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &db->dstmt[i], NULL) !=
		    SQLITE_OK) {
			qdb_log_error(db, "preparing the scheduler's statements");
			return -1;
		}
	}
	return 0;
}

/* ---- durability ---- */

/* Every commit after a delivery transaction must sync again: the group
 * commit's 250s depend on it. */
static void
restore_sync(struct queue_db *db)
{
	if (db->lower_sync && exec_logged(db, "PRAGMA synchronous = FULL") < 0)
		fatalx("queue database %s: cannot restore synchronous = FULL",
		    db->path);
}

int
queue_db_txn_begin(struct queue_db *db)
{
	db->out_of_space = false;
	db->txn_broken = false;
	if (db->lower_sync && exec_logged(db, "PRAGMA synchronous = NORMAL") < 0)
		return -1;
	if (exec_logged(db, "BEGIN IMMEDIATE") < 0) {
		restore_sync(db);
		return -1;
	}
	return 0;
}

bool
queue_db_txn_broken(const struct queue_db *db)
{
	return db->txn_broken;
}

int
queue_db_txn_rollback(struct queue_db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
	restore_sync(db);
	return 0;
}

int
queue_db_txn_commit(struct queue_db *db)
{
	/* A statement that failed for want of space may have left part of
	 * its work undone, or SQLite may have rolled everything back and
	 * run the later statements on their own: commit nothing. */
	if (db->txn_broken || sqlite3_get_autocommit(db->h)) {
		db->txn_broken = true;
		return queue_db_txn_rollback(db), -1;
	}
	if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		qdb_save_error(db);
		qdb_note_error(db);
		/* A full disk is the scheduler's to report, once. */
		if (!db->out_of_space)
			log_error("scheduler: COMMIT: %s", db->err);
		db->txn_broken = true;
		return queue_db_txn_rollback(db), -1;
	}
	restore_sync(db);
	return 0;
}

void
queue_db_read_end(struct queue_db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
}

/* ---- due recipients ---- */

static void
read_due(sqlite3_stmt *st, struct queue_due *row)
{
	const char *notify;
	int bits;

	row->id = sqlite3_column_int64(st, 0);
	row->msgid = qdb_column_dup(st, 1);
	row->address = qdb_column_dup(st, 2);
	row->route = qdb_column_dup(st, 3);
	row->action = qdb_column_dup(st, 4);
	row->params = qdb_column_dup(st, 5);
	row->attempts = (unsigned)sqlite3_column_int(st, 6);
	row->last_attempt_at = sqlite3_column_int64(st, 7);
	row->received_at = sqlite3_column_int64(st, 8);
	row->sender = qdb_column_dup(st, 9);
	/* Written by queue_db_insert() from a checked envelope; a value
	 * edited into something else by hand counts as none. */
	notify = (const char *)sqlite3_column_text(st, 10);
	bits = notify != NULL ? dsn_notify_parse(notify, strlen(notify)) : 0;
	row->dsn_notify = bits > 0 ? (unsigned)bits : 0;
	row->dsn_orcpt = qdb_column_dup(st, 11);
}

int
queue_db_due(struct queue_db *db, enum queue_due_state state, int64_t now,
    int64_t offset, struct queue_due *rows, int max)
{
	sqlite3_stmt *st = dstmt(db, state == QUEUE_DUE_QUEUED ?
	    DS_DUE_QUEUED : DS_DUE_DEFERRED);
	int rc, n = 0;

	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int(st, 2, max);
	sqlite3_bind_int64(st, 3, offset);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
		read_due(st, &rows[n++]);
	if (n == max)
		rc = SQLITE_DONE;
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		sched_fail(db, "reading due recipients");
		while (n > 0)
			queue_db_due_free(&rows[--n]);
		return -1;
	}
	return n;
}

void
queue_db_due_free(struct queue_due *row)
{
	free(row->msgid);
	free(row->address);
	free(row->route);
	free(row->action);
	free(row->params);
	free(row->sender);
	free(row->dsn_orcpt);
	memset(row, 0, sizeof(*row));
}

int
queue_db_claim(struct queue_db *db, int64_t rcpt_id, int64_t now)
{
	sqlite3_stmt *st = dstmt(db, DS_CLAIM);

	sqlite3_bind_int64(st, 1, rcpt_id);
	sqlite3_bind_int64(st, 2, now);
	if (step_done(db, st, "marking a recipient") < 0)
		return -1;
	return sqlite3_changes(db->h) == 1 ? 1 : 0;
}

int
queue_db_event(struct queue_db *db, const char *msgid, int64_t rcpt_id,
    int64_t at, const char *kind, const char *detail)
{
	sqlite3_stmt *st = dstmt(db, DS_EVENT);

	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	if (rcpt_id > 0)
		sqlite3_bind_int64(st, 2, rcpt_id);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, at);
	sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
	qdb_bind_text(st, 5, detail);
	return step_done(db, st, "history");
}

/* ---- outcomes ---- */

int
queue_db_set_final(struct queue_db *db, int64_t rcpt_id, const char *state,
    const char *reply, const char *dest, int64_t now)
{
	sqlite3_stmt *st = dstmt(db, DS_FINAL);

	sqlite3_bind_int64(st, 1, rcpt_id);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, reply, -1, SQLITE_STATIC);
	qdb_bind_text(st, 4, dest);
	sqlite3_bind_int64(st, 5, now);
	if (step_done(db, st, "recording an outcome") < 0)
		return -1;
	return sqlite3_changes(db->h) == 1 ? 0 : -1;
}

int
queue_db_set_deferred(struct queue_db *db, int64_t rcpt_id, const char *reply,
    const char *dest, int64_t next_at, int64_t now)
{
	sqlite3_stmt *st = dstmt(db, DS_DEFER);

	sqlite3_bind_int64(st, 1, rcpt_id);
	sqlite3_bind_text(st, 2, reply, -1, SQLITE_STATIC);
	qdb_bind_text(st, 3, dest);
	sqlite3_bind_int64(st, 4, next_at);
	sqlite3_bind_int64(st, 5, now);
	if (step_done(db, st, "recording a deferral") < 0)
		return -1;
	return sqlite3_changes(db->h) == 1 ? 0 : -1;
}

char *
queue_db_content_head(struct queue_db *db, const char *msgid, size_t max,
    size_t *len)
{
	sqlite3_stmt *st = dstmt(db, DS_HEAD);
	const char *p;
	char *out = NULL;

	*len = 0;
	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    (p = sqlite3_column_blob(st, 0)) != NULL) {
		*len = (size_t)sqlite3_column_bytes(st, 0);
		out = xmalloc(*len + 1);
		memcpy(out, p, *len);
		out[*len] = '\0';
	}
	sqlite3_reset(st);
	return out;
}

int
queue_db_retire_if_final(struct queue_db *db, const char *msgid,
    bool keep_rows)
{
	sqlite3_stmt *st = dstmt(db, DS_PENDING_COUNT);
	int64_t pending = -1;

	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		pending = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (pending != 0)
		return 0;
	st = dstmt(db, keep_rows ? DS_DELETE_CONTENT : DS_DELETE_MESSAGE);
	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	return step_done(db, st, "retiring a message") == 0 ? 1 : -1;
}

int
queue_db_purge(struct queue_db *db, int64_t before)
{
	sqlite3_stmt *st = dstmt(db, DS_PURGE);

	sqlite3_bind_int64(st, 1, before);
	if (step_done(db, st, "purging old messages") < 0)
		return -1;
	return sqlite3_changes(db->h);
}

/* Three statements, once a minute: prepared at each call. */
int
queue_db_purge_history(struct queue_db *db, int64_t before)
{
	static const char *const sql[] = {
		"DELETE FROM history_events WHERE message_id IN (SELECT id"
		" FROM history_messages WHERE finished_at < ?1)",
		"DELETE FROM history_recipients WHERE message_id IN (SELECT id"
		" FROM history_messages WHERE finished_at < ?1)",
		"DELETE FROM history_messages WHERE finished_at < ?1",
	};
	sqlite3_stmt *st;
	int rc = SQLITE_DONE;

	for (size_t i = 0; i < ARRAY_LEN(sql) && rc == SQLITE_DONE; i++) {
		if (sqlite3_prepare_v2(db->h, sql[i], -1, &st, NULL) !=
		    SQLITE_OK) {
			sched_fail(db, "purging old history");
			return -1;
		}
		sqlite3_bind_int64(st, 1, before);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE) {
		sched_fail(db, "purging old history");
		return -1;
	}
	return sqlite3_changes(db->h);
}

int
queue_db_requeue_interrupted(struct queue_db *db, int64_t now)
{
	char sql[512];

	db->out_of_space = false;
	if (exec_logged(db, "BEGIN IMMEDIATE") < 0)
		return -1;
	snprintf(sql, sizeof(sql), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT message_id, id, %" PRId64
	    ", 'deferred', 'reply=451 4.3.0 delivery interrupted (mxgated"
	    " stopped); retried now' FROM recipients WHERE state ="
	    " 'delivering'", now);
	if (exec_logged(db, sql) < 0)
		goto fail;
	snprintf(sql, sizeof(sql), "UPDATE recipients SET state = 'deferred',"
	    " next_attempt_at = %" PRId64 ", updated_at = %" PRId64 ","
	    " last_reply = '451 4.3.0 delivery interrupted (mxgated"
	    " stopped)' WHERE state = 'delivering'", now, now);
	if (exec_logged(db, sql) < 0 || exec_logged(db, "COMMIT") < 0)
		goto fail;
	return sqlite3_changes(db->h);
fail:
	if (!sqlite3_get_autocommit(db->h))
		exec_logged(db, "ROLLBACK");
	return -1;
}

/* ---- a message, for its delivery ---- */

/* A large content, a piece at a time (no second copy in memory). */
static int
copy_blob(struct queue_db *db, int fd, sqlite3_int64 rowid, size_t len)
{
	sqlite3_blob *blob;
	char chunk[65536];
	size_t off = 0, n;

	if (sqlite3_blob_open(db->h, "main", "message_contents", "content",
	    rowid, 0, &blob) != SQLITE_OK)
		return -1;
	while (off < len) {
		n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
		if (sqlite3_blob_read(blob, chunk, (int)n, (int)off) !=
		    SQLITE_OK || fd_write_all(fd, chunk, n) < 0)
			break;
		off += n;
	}
	sqlite3_blob_close(blob);
	return off == len ? 0 : -1;
}

int
queue_db_message_copy(struct queue_db *db, const char *queue_id,
    struct queue_message *m, int fd)
{
	sqlite3_stmt *st = dstmt(db, DS_LOAD);
	sqlite3_int64 rowid;
	const void *small;
	const char *ret;
	int rc, ok;

	memset(m, 0, sizeof(*m));
	sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, SMALL_CONTENT);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		if (rc != SQLITE_DONE)
			sched_fail(db, "reading a message");
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? 0 : -1;
	}
	m->sender = qdb_column_dup(st, 0);
	m->client_ip = qdb_column_dup(st, 1);
	m->helo = qdb_column_dup(st, 2);
	m->protocol = qdb_column_dup(st, 3);
	m->auth_user = qdb_column_dup(st, 4);
	m->received_at = sqlite3_column_int64(st, 5);
	m->dsn_envid = qdb_column_dup(st, 12);
	ret = (const char *)sqlite3_column_text(st, 11);
	m->dsn_ret = ret != NULL && dsn_ret_parse(ret) > 0 ?
	    dsn_ret_parse(ret) : DSN_RET_NONE;
	m->body_8bitmime = sqlite3_column_int(st, 6) != 0;
	m->smtputf8 = sqlite3_column_int(st, 7) != 0;
	rowid = sqlite3_column_int64(st, 8);
	m->content_len = (size_t)sqlite3_column_int64(st, 9);
	errno = 0;
	small = sqlite3_column_blob(st, 10);
	if (m->content_len == 0)
		ok = 0;
	else if (small != NULL)
		ok = fd_write_all(fd, small, m->content_len);
	else
		ok = copy_blob(db, fd, rowid, m->content_len);
	sqlite3_reset(st);
	if (ok < 0) {
		log_error("id=%s cannot copy the message for delivery: %s",
		    queue_id, errno != 0 ? strerror(errno) :
		    sqlite3_errmsg(db->h));
		queue_db_message_free(m);
		return -1;
	}
	return 1;
}

void
queue_db_message_free(struct queue_message *m)
{
	free(m->sender);
	free(m->client_ip);
	free(m->helo);
	free(m->protocol);
	free(m->auth_user);
	free(m->dsn_envid);
	memset(m, 0, sizeof(*m));
}

/* ---- bounces ---- */

/*
 * queue_db_insert() inside the caller's transaction, under a savepoint:
 * a DSN that cannot be written must not take the outcomes recorded with
 * it down too (queue_db_insert() leaves a failed insert half done in a
 * batch).
 */
int
queue_db_insert_alone(struct queue_db *db, const struct envelope *env,
    const char *content, size_t len)
{
	bool nested = sqlite3_get_autocommit(db->h) == 0;

	if (nested && sqlite3_exec(db->h, "SAVEPOINT dsn", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return -1;
	if (queue_db_insert(db, env, content, len) == 0) {
		if (nested)
			sqlite3_exec(db->h, "RELEASE dsn", NULL, NULL, NULL);
		return 0;
	}
	if (nested) {
		sqlite3_exec(db->h, "ROLLBACK TO dsn", NULL, NULL, NULL);
		sqlite3_exec(db->h, "RELEASE dsn", NULL, NULL, NULL);
	}
	return -1;
}
