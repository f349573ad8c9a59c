/*
 * queue_db_admin — the queue store's statements for mxgatectl: listing,
 * showing, changing and bouncing messages, statistics (queue_db.h).
 *
 * They run once per command, so they are prepared at each call.  Rows go
 * to the caller's callback while the statement is open: a value is valid
 * during the call only.  A failure keeps SQLite's message for
 * queue_db_error(); mxgatectl prints it, prefixed with the command, and
 * nothing is logged here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "queue/queue_db.h"
#include "queue/queue_db_private.h"

static const char *
col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

static int
prepare(struct queue_db *db, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(db->h, sql, -1, st, NULL) != SQLITE_OK) {
		qdb_save_error(db);
		*st = NULL;
		return -1;
	}
	return 0;
}

/* Finalize a statement whose last step returned rc; -1 unless it ran to
 * its end (or stopped at a row, when that is all it wanted). */
static int
finish(struct queue_db *db, sqlite3_stmt *st, int rc, bool row_ok)
{
	int ok = rc == SQLITE_DONE || (row_ok && rc == SQLITE_ROW);

	if (!ok)
		qdb_save_error(db);
	sqlite3_finalize(st);
	return ok ? 0 : -1;
}

static int
exec_saved(struct queue_db *db, const char *sql)
{
	if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK) {
		qdb_save_error(db);
		return -1;
	}
	return 0;
}

const char *
queue_db_error(const struct queue_db *db)
{
	return db->err[0] != '\0' ? db->err : "unknown error";
}

enum queue_db_error_kind
queue_db_error_kind(const struct queue_db *db)
{
	switch (db->err_code & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return QDB_ERR_BUSY;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_CANTOPEN:
		return QDB_ERR_ACCESS;
	default:
		return QDB_ERR_OTHER;
	}
}

/* ---- transactions ---- */

int
queue_db_read_begin(struct queue_db *db)
{
	return exec_saved(db, "BEGIN");
}

int
queue_db_admin_begin(struct queue_db *db)
{
	return exec_saved(db, "BEGIN IMMEDIATE");
}

int
queue_db_admin_commit(struct queue_db *db)
{
	return exec_saved(db, "COMMIT");
}

void
queue_db_admin_rollback(struct queue_db *db)
{
	/* The failure that led here stays the one to report. */
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- queue list ---- */

struct list_ctx {
	const struct queue_list_filter *filter;
};

/* mx_match(N, text): the caller's matcher for N (0 recipient, 1 sender). */
static void
sql_mx_match(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
	const struct queue_list_filter *f = sqlite3_user_data(cx);
	int which = sqlite3_value_int(argv[0]);
	const unsigned char *text = sqlite3_value_text(argv[1]);

	(void)argc;
	if (which < 0 || which > 1 || text == NULL) {
		sqlite3_result_int(cx, 0);
		return;
	}
	sqlite3_result_int(cx, f->match(f->arg, which, (const char *)text,
	    (size_t)sqlite3_value_bytes(argv[1])));
}

int
queue_db_list(struct queue_db *db, const struct queue_list_filter *f,
    void (*fn)(void *arg, const struct queue_list_row *row), void *arg)
{
	struct queue_list_row row;
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_create_function(db->h, "mx_match", 2, SQLITE_UTF8 |
	    SQLITE_DETERMINISTIC, (void *)f, sql_mx_match, NULL, NULL) !=
	    SQLITE_OK) {
		qdb_save_error(db);
		return -1;
	}
	/* One recipient must match both the state and the pattern. */
	if (prepare(db, "SELECT m.id, m.received, m.size, m.sender,"
	    " m.recipients, m.states FROM message_status m"
	    " WHERE (?1 IS NULL AND ?2 IS NULL OR EXISTS (SELECT 1 FROM"
	    "  recipients r WHERE r.message_id = m.id"
	    "  AND (?1 IS NULL OR r.state = ?1)"
	    "  AND (?2 IS NULL OR mx_match(0, r.address))))"
	    " AND (?3 IS NULL OR mx_match(1, m.sender))"
	    " ORDER BY m.received_at, m.id", &st) == -1)
		return -1;
	if (f->state != NULL)
		sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
	if (f->rcpt)
		sqlite3_bind_int(st, 2, 1);
	if (f->sender)
		sqlite3_bind_int(st, 3, 1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row.id = col_text(st, 0);
		row.received = col_text(st, 1);
		row.size = sqlite3_column_int64(st, 2);
		row.sender = col_text(st, 3);
		row.sender_len = (size_t)sqlite3_column_bytes(st, 3);
		row.nrcpts = sqlite3_column_int64(st, 4);
		row.states = col_text(st, 5);
		fn(arg, &row);
	}
	return finish(db, st, rc, false);
}

/* ---- queue show ---- */

int
queue_db_message_exists(struct queue_db *db, const char *id)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT 1 FROM messages WHERE id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (finish(db, st, rc, true) < 0)
		return -1;
	return rc == SQLITE_ROW;
}

int
queue_db_show_message(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_message_view *m), void *arg)
{
	struct queue_message_view m;
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT id, datetime(received_at, 'unixepoch'),"
	    " received_at, sender, client_ip, helo, protocol, auth_user,"
	    " size, body_8bitmime, smtputf8, message_id_header, subject"
	    " FROM messages WHERE id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		m.id = col_text(st, 0);
		m.received = col_text(st, 1);
		m.received_at = sqlite3_column_int64(st, 2);
		m.sender = col_text(st, 3);
		m.client_ip = col_text(st, 4);
		m.helo = col_text(st, 5);
		m.protocol = col_text(st, 6);
		m.auth_user = col_text(st, 7);
		m.size = sqlite3_column_int64(st, 8);
		m.body_8bitmime = sqlite3_column_int(st, 9) != 0;
		m.smtputf8 = sqlite3_column_int(st, 10) != 0;
		m.message_id = col_text(st, 11);
		m.subject = col_text(st, 12);
		fn(arg, &m);
	}
	if (finish(db, st, rc, true) < 0)
		return -1;
	return rc == SQLITE_ROW;
}

int
queue_db_show_recipients(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_rcpt_view *r), void *arg)
{
	struct queue_rcpt_view r;
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT address, route, action, action_params,"
	    " state, attempts, next_attempt, last_attempt, last_reply,"
	    " destination FROM recipient_status WHERE message_id = ?1"
	    " ORDER BY recipient_id", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r.address = col_text(st, 0);
		r.route = col_text(st, 1);
		r.action = col_text(st, 2);
		r.params = col_text(st, 3);
		r.state = col_text(st, 4);
		r.attempts = sqlite3_column_int64(st, 5);
		r.next_attempt = col_text(st, 6);
		r.last_attempt = col_text(st, 7);
		r.last_reply = col_text(st, 8);
		r.destination = col_text(st, 9);
		fn(arg, &r);
	}
	return finish(db, st, rc, false);
}

int
queue_db_show_history(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_event_view *e), void *arg)
{
	struct queue_event_view e;
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT time, kind, recipient, detail FROM"
	    " message_history WHERE message_id = ?1 ORDER BY at,"
	    " event_id IS NOT NULL, ifnull(event_id, recipient_id)",
	    &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		e.time = col_text(st, 0);
		e.kind = col_text(st, 1);
		e.recipient = col_text(st, 2);
		e.detail = col_text(st, 3);
		fn(arg, &e);
	}
	return finish(db, st, rc, false);
}

int
queue_db_show_content(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const char *content, size_t len), void *arg)
{
	sqlite3_stmt *st;
	const char *p;
	size_t len;
	int rc;

	if (prepare(db, "SELECT content FROM message_contents"
	    " WHERE message_id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		p = sqlite3_column_blob(st, 0);
		len = p != NULL ? (size_t)sqlite3_column_bytes(st, 0) : 0;
		fn(arg, p != NULL ? p : "", len);
	}
	if (finish(db, st, rc, true) < 0)
		return -1;
	return rc == SQLITE_ROW;
}

/* ---- queue retry, hold, release, delete ---- */

/* Run sql with ?1 = id (or NULL), ?2 = now, ?3 = detail. */
static int
run_change(struct queue_db *db, const char *sql, const char *id, int64_t now,
    const char *detail, long long *changed)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, sql, &st) == -1)
		return -1;
	if (id != NULL)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, now);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_text(st, 3, detail, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (finish(db, st, rc, false) < 0)
		return -1;
	if (changed != NULL)
		*changed = sqlite3_changes(db->h);
	return 0;
}

static const struct {
	const char *where, *set, *kind;
} changes[] = {
	[QUEUE_CHANGE_RETRY] = { "state IN ('queued', 'deferred')",
	    "next_attempt_at = ?2", "retry" },
	/* A recipient in delivery now is held too: if that attempt fails
	 * it stays held rather than being retried. */
	[QUEUE_CHANGE_HOLD] = {
	    "state IN ('queued', 'deferred', 'delivering')",
	    "state = 'held'", "held" },
	[QUEUE_CHANGE_RELEASE] = { "state = 'held'",
	    "state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,"
	    " next_attempt_at = ?2", "released" },
};

int
queue_db_change_recipients(struct queue_db *db, const char *id,
    enum queue_change change, int64_t now, long long *changed)
{
	char events[512], update[512];

	*changed = 0;
	snprintf(events, sizeof(events), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT message_id, id, ?2, '%s',"
	    " ?3 FROM recipients WHERE (?1 IS NULL OR message_id = ?1)"
	    " AND %s", changes[change].kind, changes[change].where);
	snprintf(update, sizeof(update), "UPDATE recipients SET %s,"
	    " updated_at = ?2 WHERE (?1 IS NULL OR message_id = ?1) AND %s",
	    changes[change].set, changes[change].where);
	if (queue_db_admin_begin(db) == -1)
		return -1;
	if (run_change(db, events, id, now, "by mxgatectl", NULL) == -1 ||
	    run_change(db, update, id, now, NULL, changed) == -1 ||
	    queue_db_admin_commit(db) == -1) {
		queue_db_admin_rollback(db);
		return -1;
	}
	return 0;
}

int
queue_db_delete(struct queue_db *db, const char *id)
{
	/* The content, recipients and history go with it (ON DELETE
	 * CASCADE); a delivery running now finds nothing to record. */
	return run_change(db, "DELETE FROM messages WHERE id = ?1", id, 0,
	    NULL, NULL);
}

/* ---- queue bounce ---- */

int
queue_db_pending_rcpts(struct queue_db *db, const char *id,
    void (*fn)(void *arg, int64_t rcpt_id, const char *address,
    const char *last_reply, int64_t last_attempt_at), void *arg)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT id, address, last_reply,"
	    " coalesce(last_attempt_at, 0) FROM recipients WHERE message_id ="
	    " ?1 AND state IN ('queued', 'deferred', 'held') ORDER BY id",
	    &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, sqlite3_column_int64(st, 0), col_text(st, 1),
		    col_text(st, 2), sqlite3_column_int64(st, 3));
	return finish(db, st, rc, false);
}

int
queue_db_bounce_source(struct queue_db *db, const char *id,
    int (*fn)(void *arg, const char *sender, int64_t received_at,
    const char *content, size_t len), void *arg)
{
	sqlite3_stmt *st;
	const char *content;
	int rc, r = 0;

	if (prepare(db, "SELECT m.sender, m.received_at, c.content FROM"
	    " messages m LEFT JOIN message_contents c ON c.message_id = m.id"
	    " WHERE m.id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		content = sqlite3_column_blob(st, 2);
		r = fn(arg, col_text(st, 0), sqlite3_column_int64(st, 1),
		    content, content != NULL ?
		    (size_t)sqlite3_column_bytes(st, 2) : 0);
	}
	if (finish(db, st, rc, true) < 0)
		return -1;
	return rc == SQLITE_ROW ? r : -1;
}

int
queue_db_mark_bounced(struct queue_db *db, int64_t rcpt_id,
    const char *reply, const char *detail, int64_t now)
{
	sqlite3_stmt *up, *ev;
	int rc = 0;

	if (prepare(db, "UPDATE recipients SET state = 'bounced',"
	    " last_reply = ?2, next_attempt_at = NULL, updated_at = ?3"
	    " WHERE id = ?1", &up) == -1)
		return -1;
	if (prepare(db, "INSERT INTO events (message_id, recipient_id, at,"
	    " kind, detail) SELECT message_id, id, ?2, 'bounced', ?3 FROM"
	    " recipients WHERE id = ?1", &ev) == -1) {
		sqlite3_finalize(up);
		return -1;
	}
	sqlite3_bind_int64(up, 1, rcpt_id);
	sqlite3_bind_text(up, 2, reply, -1, SQLITE_STATIC);
	sqlite3_bind_int64(up, 3, now);
	sqlite3_bind_int64(ev, 1, rcpt_id);
	sqlite3_bind_int64(ev, 2, now);
	sqlite3_bind_text(ev, 3, detail, -1, SQLITE_STATIC);
	if (sqlite3_step(up) != SQLITE_DONE || sqlite3_step(ev) != SQLITE_DONE) {
		qdb_save_error(db);
		rc = -1;
	}
	sqlite3_finalize(up);
	sqlite3_finalize(ev);
	return rc;
}

/* ---- queue stats ---- */

int
queue_db_stats_states(struct queue_db *db,
    void (*fn)(void *arg, const char *state, int64_t recipients,
    int64_t messages), void *arg)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT state, recipients, messages FROM"
	    " queue_summary ORDER BY state", &st) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, col_text(st, 0), sqlite3_column_int64(st, 1),
		    sqlite3_column_int64(st, 2));
	return finish(db, st, rc, false);
}

int
queue_db_stats_oldest(struct queue_db *db,
    void (*fn)(void *arg, int64_t messages, const char *id,
    const char *received, int64_t received_at), void *arg)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT (SELECT count(*) FROM messages),"
	    " m.id, datetime(m.received_at, 'unixepoch'), m.received_at"
	    " FROM messages m WHERE EXISTS (SELECT 1 FROM recipients r"
	    " WHERE r.message_id = m.id AND r.state NOT IN ('delivered',"
	    " 'bounced')) ORDER BY m.received_at, m.id LIMIT 1", &st) == -1)
		return -1;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		fn(arg, sqlite3_column_int64(st, 0), col_text(st, 1),
		    col_text(st, 2), sqlite3_column_int64(st, 3));
	if (finish(db, st, rc, true) < 0)
		return -1;
	return rc == SQLITE_ROW;
}

int
queue_db_stats_destinations(struct queue_db *db,
    void (*fn)(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending), void *arg)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, "SELECT coalesce(destination, '(none yet)'),"
	    " sum(state = 'delivered'), sum(state = 'deferred'),"
	    " sum(state = 'bounced'), sum(state IN ('queued', 'delivering',"
	    " 'held')) FROM recipients GROUP BY 1 ORDER BY 2 DESC, 1",
	    &st) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, col_text(st, 0), (size_t)sqlite3_column_bytes(st, 0),
		    sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
		    sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4));
	return finish(db, st, rc, false);
}
