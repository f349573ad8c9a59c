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

#include "common/dsn.h"
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

/* ---- selections ---- */

/* mx_match(N, text): the caller's matcher for N (0 recipient, 1 sender,
 * 2 destination). */
static void
sql_mx_match(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
	const struct queue_select *f = sqlite3_user_data(cx);
	int which = sqlite3_value_int(argv[0]);
	const unsigned char *text = sqlite3_value_text(argv[1]);

	(void)argc;
	if (which < 0 || which > 2 || text == NULL) {
		sqlite3_result_int(cx, 0);
		return;
	}
	sqlite3_result_int(cx, f->match(f->arg, which, (const char *)text,
	    (size_t)sqlite3_value_bytes(argv[1])));
}

/* The condition on a recipient r of message m: parameters ?1 to ?6,
 * bound by bind_select(). */
#define SELECT_WHERE \
	" (?1 IS NULL OR r.state = ?1)" \
	" AND (?2 IS NULL OR mx_match(0, r.address))" \
	" AND (?3 IS NULL OR mx_match(1, m.sender))" \
	" AND (?4 IS NULL OR mx_match(2, coalesce(r.destination, ''))" \
	"      OR mx_match(2, substr(r.address, instr(r.address, '@') + 1)))" \
	" AND (?5 IS NULL OR m.received_at < ?5)" \
	" AND (?6 IS NULL OR r.message_id IN (SELECT id FROM temp.mx_select))"

/* The connection's own table of selected ids (queue_db_select_ids()):
 * a statement naming it needs it, used or not. */
static int
select_table(struct queue_db *db)
{
	return exec_saved(db, "CREATE TEMP TABLE IF NOT EXISTS mx_select"
	    " (id TEXT PRIMARY KEY)");
}

static int
select_prepare(struct queue_db *db, const struct queue_select *sel,
    const char *sql, sqlite3_stmt **st)
{
	if (select_table(db) == -1)
		return -1;
	if (sqlite3_create_function(db->h, "mx_match", 2, SQLITE_UTF8 |
	    SQLITE_DETERMINISTIC, (void *)sel, sql_mx_match, NULL, NULL) !=
	    SQLITE_OK) {
		qdb_save_error(db);
		return -1;
	}
	if (prepare(db, sql, st) == -1)
		return -1;
	if (sel->state != NULL)
		sqlite3_bind_text(*st, 1, sel->state, -1, SQLITE_STATIC);
	if (sel->rcpt)
		sqlite3_bind_int(*st, 2, 1);
	if (sel->sender)
		sqlite3_bind_int(*st, 3, 1);
	if (sel->dest)
		sqlite3_bind_int(*st, 4, 1);
	if (sel->received_before != 0)
		sqlite3_bind_int64(*st, 5, sel->received_before);
	if (sel->ids)
		sqlite3_bind_int(*st, 6, 1);
	return 0;
}

int
queue_db_select_ids(struct queue_db *db, char *const *ids, size_t n)
{
	sqlite3_stmt *st;
	size_t i;
	int rc = SQLITE_DONE;

	if (select_table(db) == -1 ||
	    exec_saved(db, "DELETE FROM temp.mx_select") == -1 ||
	    prepare(db, "INSERT OR IGNORE INTO temp.mx_select (id)"
	    " VALUES (?1)", &st) == -1)
		return -1;
	for (i = 0; i < n && rc == SQLITE_DONE; i++) {
		sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
	}
	return finish(db, st, rc, false);
}

/* ---- queue list ---- */

int
queue_db_list(struct queue_db *db, const struct queue_select *sel,
    void (*fn)(void *arg, const struct queue_list_row *row), void *arg)
{
	struct queue_list_row row;
	sqlite3_stmt *st;
	int rc;

	if (select_prepare(db, sel, "SELECT s.id, s.received, s.size,"
	    " s.sender, s.recipients, s.states, s.received_at, x.address,"
	    " x.state, x.last_reply, x.next_attempt, x.destination, x.route,"
	    " x.attempts FROM message_status s JOIN recipient_status x"
	    " ON x.message_id = s.id WHERE s.id IN (SELECT r.message_id"
	    " FROM recipients r JOIN messages m ON m.id = r.message_id"
	    " WHERE" SELECT_WHERE ")"
	    " ORDER BY s.received_at, s.id, x.recipient_id", &st) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row.id = col_text(st, 0);
		row.received = col_text(st, 1);
		row.size = sqlite3_column_int64(st, 2);
		row.sender = col_text(st, 3);
		row.sender_len = (size_t)sqlite3_column_bytes(st, 3);
		row.nrcpts = sqlite3_column_int64(st, 4);
		row.states = col_text(st, 5);
		row.received_at = sqlite3_column_int64(st, 6);
		row.address = col_text(st, 7);
		row.state = col_text(st, 8);
		row.last_reply = col_text(st, 9);
		row.next_attempt = col_text(st, 10);
		row.destination = col_text(st, 11);
		row.route = col_text(st, 12);
		row.attempts = sqlite3_column_int64(st, 13);
		fn(arg, &row);
	}
	return finish(db, st, rc, false);
}

/* ---- queue shape ---- */

#define SHAPE_MAX_BUCKETS 16

int
queue_db_shape(struct queue_db *db, const struct queue_select *sel,
    int64_t now, const int64_t *bounds, size_t nbounds,
    void (*fn)(void *arg, const char *dest, size_t len,
    const int64_t *counts), void *arg)
{
	int64_t counts[SHAPE_MAX_BUCKETS + 2];
	struct buf sql;
	sqlite3_stmt *st;
	size_t i;
	int rc;

	if (nbounds > SHAPE_MAX_BUCKETS) {
		snprintf(db->err, sizeof(db->err), "at most %d age buckets",
		    SHAPE_MAX_BUCKETS);
		db->err_code = SQLITE_MISUSE;
		return -1;
	}
	/* The age of each pending recipient's message, in buckets by
	 * count(CASE ...): one pass, whatever the number of buckets. */
	buf_init(&sql);
	buf_appends(&sql, "SELECT lower(substr(r.address, instr(r.address, '@')"
	    " + 1)) AS dest, count(*)");
	for (i = 0; i <= nbounds; i++) {
		buf_appendf(&sql, ", count(CASE WHEN ?7 - m.received_at");
		if (i > 0)
			buf_appendf(&sql, " >= %lld", (long long)bounds[i - 1]);
		if (i > 0 && i < nbounds)
			buf_appends(&sql, " AND ?7 - m.received_at");
		if (i < nbounds)
			buf_appendf(&sql, " < %lld", (long long)bounds[i]);
		buf_appends(&sql, " THEN 1 END)");
	}
	buf_appends(&sql, " FROM recipients r JOIN messages m ON m.id ="
	    " r.message_id WHERE r.state IN ('queued', 'deferred',"
	    " 'delivering', 'held') AND" SELECT_WHERE
	    " GROUP BY dest ORDER BY 2 DESC, dest");
	rc = select_prepare(db, sel, sql.data, &st);
	buf_free(&sql);
	if (rc == -1)
		return -1;
	sqlite3_bind_int64(st, 7, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (i = 0; i <= nbounds + 1; i++)
			counts[i] = sqlite3_column_int64(st, (int)i + 1);
		fn(arg, col_text(st, 0), (size_t)sqlite3_column_bytes(st, 0),
		    counts);
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
queue_db_message_where(struct queue_db *db, const char *id)
{
	sqlite3_stmt *st;
	int rc, where = 0;

	if (prepare(db, "SELECT CASE WHEN EXISTS (SELECT 1 FROM messages"
	    " WHERE id = ?1) THEN 1 WHEN EXISTS (SELECT 1 FROM"
	    " history_messages WHERE id = ?1) THEN 2 ELSE 0 END", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		where = sqlite3_column_int(st, 0);
	if (finish(db, st, rc, true) < 0)
		return -1;
	return where;
}

void
queue_db_use_history(struct queue_db *db, bool on)
{
	db->history = on;
}

int
queue_db_show_message(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_message_view *m), void *arg)
{
	struct queue_message_view m;
	sqlite3_stmt *st;
	int rc;

	if (prepare(db, db->history ?
	    "SELECT id, datetime(received_at, 'unixepoch'),"
	    " received_at, sender, client_ip, helo, protocol, auth_user,"
	    " size, body_8bitmime, smtputf8, message_id_header, subject,"
	    " dsn_ret, dsn_envid FROM history_messages WHERE id = ?1" :
	    "SELECT id, datetime(received_at, 'unixepoch'),"
	    " received_at, sender, client_ip, helo, protocol, auth_user,"
	    " size, body_8bitmime, smtputf8, message_id_header, subject,"
	    " dsn_ret, dsn_envid FROM messages WHERE id = ?1", &st) == -1)
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
		m.dsn_ret = col_text(st, 13);
		m.dsn_envid = col_text(st, 14);
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

	if (prepare(db, db->history ?
	    "SELECT address, route, action, action_params, state, attempts,"
	    " datetime(next_attempt_at, 'unixepoch'),"
	    " datetime(last_attempt_at, 'unixepoch'), last_reply,"
	    " destination, dsn_notify, dsn_orcpt FROM history_recipients"
	    " WHERE message_id = ?1 ORDER BY recipient_id" :
	    "SELECT s.address, s.route, s.action, s.action_params,"
	    " s.state, s.attempts, s.next_attempt, s.last_attempt,"
	    " s.last_reply, s.destination, r.dsn_notify, r.dsn_orcpt"
	    " FROM recipient_status s JOIN recipients r"
	    " ON r.id = s.recipient_id WHERE s.message_id = ?1"
	    " ORDER BY s.recipient_id", &st) == -1)
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
		r.dsn_notify = col_text(st, 10);
		r.dsn_orcpt = col_text(st, 11);
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

	if (prepare(db, db->history ?
	    "SELECT time, kind, recipient, detail FROM"
	    " history_trace WHERE message_id = ?1 ORDER BY at,"
	    " event_id IS NOT NULL, ifnull(event_id, recipient_id)" :
	    "SELECT time, kind, recipient, detail FROM"
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

/* Run a selecting statement that returns no rows, with ?7 = now and
 * ?8 = detail; *changed: the rows it changed (or, for a SELECT count,
 * that count). */
static int
run_selected(struct queue_db *db, const struct queue_select *sel,
    const char *sql, int64_t now, const char *detail, long long *changed)
{
	sqlite3_stmt *st;
	int rc;

	if (select_prepare(db, sel, sql, &st) == -1)
		return -1;
	if (sqlite3_bind_parameter_count(st) >= 7)
		sqlite3_bind_int64(st, 7, now);
	if (sqlite3_bind_parameter_count(st) >= 8)
		sqlite3_bind_text(st, 8, detail, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && changed != NULL)
		*changed = sqlite3_column_int64(st, 0);
	if (finish(db, st, rc, true) < 0)
		return -1;
	if (rc == SQLITE_DONE && changed != NULL)
		*changed = sqlite3_changes(db->h);
	return 0;
}

static const struct {
	const char *where, *set, *kind;
} changes[] = {
	[QUEUE_CHANGE_RETRY] = { "r.state IN ('queued', 'deferred')",
	    "next_attempt_at = ?7", "retry" },
	/* A recipient in delivery now is held too: if that attempt fails
	 * it stays held rather than being retried. */
	[QUEUE_CHANGE_HOLD] = {
	    "r.state IN ('queued', 'deferred', 'delivering')",
	    "state = 'held'", "held" },
	[QUEUE_CHANGE_RELEASE] = { "r.state = 'held'",
	    "state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,"
	    " next_attempt_at = ?7", "released" },
};

#define SELECTED_RCPTS \
	" FROM recipients r JOIN messages m ON m.id = r.message_id WHERE"

int
queue_db_change_selected(struct queue_db *db, const struct queue_select *sel,
    enum queue_change change, int64_t now, const char *by,
    long long *nrcpts, long long *nmsgs)
{
	char count[1024], events[1024], update[1024];

	*nrcpts = *nmsgs = 0;
	snprintf(count, sizeof(count), "SELECT count(DISTINCT r.message_id)"
	    SELECTED_RCPTS SELECT_WHERE " AND %s", changes[change].where);
	snprintf(events, sizeof(events), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT r.message_id, r.id, ?7,"
	    " '%s', ?8" SELECTED_RCPTS SELECT_WHERE " AND %s",
	    changes[change].kind, changes[change].where);
	snprintf(update, sizeof(update), "UPDATE recipients SET %s,"
	    " updated_at = ?7 WHERE id IN (SELECT r.id" SELECTED_RCPTS
	    SELECT_WHERE " AND %s)", changes[change].set,
	    changes[change].where);
	if (queue_db_admin_begin(db) == -1)
		return -1;
	if (run_selected(db, sel, count, now, NULL, nmsgs) == -1 ||
	    run_selected(db, sel, events, now, by, NULL) == -1 ||
	    run_selected(db, sel, update, now, NULL, nrcpts) == -1 ||
	    queue_db_admin_commit(db) == -1) {
		queue_db_admin_rollback(db);
		return -1;
	}
	return 0;
}

int
queue_db_delete_selected(struct queue_db *db, const struct queue_select *sel,
    int64_t now, const char *by, long long *nmsgs)
{
	*nmsgs = 0;
	if (queue_db_admin_begin(db) == -1)
		return -1;
	/* The ids first: deleting changes what the selection sees. */
	if (exec_saved(db, "CREATE TEMP TABLE IF NOT EXISTS mx_delete"
	    " (id TEXT PRIMARY KEY); DELETE FROM temp.mx_delete") == -1 ||
	    run_selected(db, sel, "INSERT OR IGNORE INTO temp.mx_delete (id)"
	    " SELECT r.message_id" SELECTED_RCPTS SELECT_WHERE, now, NULL,
	    NULL) == -1 ||
	    run_selected(db, sel, "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT id, NULL, ?7, 'deleted',"
	    " ?8 FROM temp.mx_delete",
	    now, by, NULL) == -1 ||
	    /* The content, recipients and events go with it (ON DELETE
	     * CASCADE), once the history trigger has kept what
	     * queue.keep_history keeps; a delivery running now finds
	     * nothing to record. */
	    exec_saved(db, "DELETE FROM messages WHERE id IN"
	    " (SELECT id FROM temp.mx_delete)") == -1) {
		queue_db_admin_rollback(db);
		return -1;
	}
	*nmsgs = sqlite3_changes(db->h);
	if (queue_db_admin_commit(db) == -1) {
		queue_db_admin_rollback(db);
		return -1;
	}
	return 0;
}

int
queue_db_selected_messages(struct queue_db *db,
    const struct queue_select *sel,
    void (*fn)(void *arg, const char *id), void *arg)
{
	sqlite3_stmt *st;
	int rc;

	if (select_prepare(db, sel, "SELECT m.id FROM messages m WHERE m.id"
	    " IN (SELECT r.message_id" SELECTED_RCPTS SELECT_WHERE ")"
	    " ORDER BY m.received_at, m.id", &st) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, col_text(st, 0));
	return finish(db, st, rc, false);
}

/* ---- queue reroute ---- */

int
queue_db_reroute_rows(struct queue_db *db, const struct queue_select *sel,
    void (*fn)(void *arg, const struct queue_reroute_row *r), void *arg)
{
	struct queue_reroute_row row;
	sqlite3_stmt *st;
	int rc;

	if (select_prepare(db, sel, "SELECT r.id, r.message_id, r.address,"
	    " r.route, r.action, r.action_params, r.state, m.sender,"
	    " m.client_ip, m.helo, m.protocol, m.auth_user" SELECTED_RCPTS
	    SELECT_WHERE " AND r.state IN ('queued', 'deferred', 'held')"
	    " ORDER BY m.received_at, m.id, r.id", &st) == -1)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row.rcpt_id = sqlite3_column_int64(st, 0);
		row.msgid = col_text(st, 1);
		row.address = col_text(st, 2);
		row.route = col_text(st, 3);
		row.action = col_text(st, 4);
		row.params = col_text(st, 5);
		row.state = col_text(st, 6);
		row.sender = col_text(st, 7);
		row.client_ip = col_text(st, 8);
		row.helo = col_text(st, 9);
		row.protocol = col_text(st, 10);
		row.auth_user = col_text(st, 11);
		fn(arg, &row);
	}
	return finish(db, st, rc, false);
}

int
queue_db_reroute(struct queue_db *db, int64_t rcpt_id, const char *route,
    const char *action, const char *params, int64_t now, const char *detail)
{
	sqlite3_stmt *up, *ev;
	int rc, changed = 0;

	if (prepare(db, "UPDATE recipients SET route = ?2, action = ?3,"
	    " action_params = ?4, updated_at = ?5, next_attempt_at = CASE"
	    " state WHEN 'held' THEN next_attempt_at ELSE ?5 END"
	    " WHERE id = ?1 AND state IN ('queued', 'deferred', 'held')",
	    &up) == -1)
		return -1;
	sqlite3_bind_int64(up, 1, rcpt_id);
	qdb_bind_text(up, 2, route);
	sqlite3_bind_text(up, 3, action, -1, SQLITE_STATIC);
	qdb_bind_text(up, 4, params);
	sqlite3_bind_int64(up, 5, now);
	rc = sqlite3_step(up);
	if (rc == SQLITE_DONE)
		changed = sqlite3_changes(db->h);
	if (finish(db, up, rc, false) < 0)
		return -1;
	if (changed == 0)
		return 0;
	if (prepare(db, "INSERT INTO events (message_id, recipient_id, at,"
	    " kind, detail) SELECT message_id, id, ?2, 'routed', ?3 FROM"
	    " recipients WHERE id = ?1", &ev) == -1)
		return -1;
	sqlite3_bind_int64(ev, 1, rcpt_id);
	sqlite3_bind_int64(ev, 2, now);
	sqlite3_bind_text(ev, 3, detail, -1, SQLITE_STATIC);
	rc = sqlite3_step(ev);
	return finish(db, ev, rc, false) < 0 ? -1 : 1;
}

/* ---- queue bounce ---- */

int
queue_db_pending_rcpts(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_pending_rcpt *r), void *arg)
{
	struct queue_pending_rcpt r;
	sqlite3_stmt *st;
	const char *notify;
	int rc, bits;

	if (prepare(db, "SELECT id, address, last_reply,"
	    " coalesce(last_attempt_at, 0), dsn_notify, dsn_orcpt FROM"
	    " recipients WHERE message_id = ?1 AND state IN ('queued',"
	    " 'deferred', 'held') ORDER BY id", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&r, 0, sizeof(r));
		r.id = sqlite3_column_int64(st, 0);
		r.address = col_text(st, 1);
		r.last_reply = col_text(st, 2);
		r.last_attempt_at = sqlite3_column_int64(st, 3);
		notify = col_text(st, 4);
		bits = notify != NULL ? dsn_notify_parse(notify,
		    strlen(notify)) : 0;
		r.dsn_notify = bits > 0 ? (unsigned)bits : 0;
		r.dsn_orcpt = col_text(st, 5);
		fn(arg, &r);
	}
	return finish(db, st, rc, false);
}

int
queue_db_bounce_source(struct queue_db *db, const char *id,
    int (*fn)(void *arg, const struct queue_bounce_source *src), void *arg)
{
	struct queue_bounce_source src;
	sqlite3_stmt *st;
	const char *ret;
	int rc, r = 0;

	if (prepare(db, "SELECT m.sender, m.received_at, c.content,"
	    " m.dsn_ret, m.dsn_envid FROM messages m LEFT JOIN"
	    " message_contents c ON c.message_id = m.id WHERE m.id = ?1",
	    &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(&src, 0, sizeof(src));
		src.sender = col_text(st, 0);
		src.received_at = sqlite3_column_int64(st, 1);
		src.content = sqlite3_column_blob(st, 2);
		src.len = src.content != NULL ?
		    (size_t)sqlite3_column_bytes(st, 2) : 0;
		ret = col_text(st, 3);
		src.dsn_ret = ret != NULL && dsn_ret_parse(ret) > 0 ?
		    dsn_ret_parse(ret) : DSN_RET_NONE;
		src.dsn_envid = col_text(st, 4);
		r = fn(arg, &src);
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
