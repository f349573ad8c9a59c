/*
 * test_queue_db — the SQLite queue: creation and connection settings,
 * the insert path (rows, history, header fields, failed inserts), the views,
 * and the refusals (a newer schema, a foreign database, read-only).
 *
 * Works on a fresh directory under $TMPDIR (or /tmp), removed at the end.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sqlite3.h>

#include "common/dsn.h"
#include "common/envelope.h"
#include "common/log.h"
#include "queue/queue_db.h"
#include "queue/queue_db_private.h"
#include "queue/queue_vfs.h"
#include "common/util.h"
#include "unit.h"

static char dir[256];
static char path[300];
static int db_counter;
/* The test's own connection to path, beside the store's (which never
 * hands its handle out): through the queue VFS, with foreign keys on, as
 * the store's connection. */
static sqlite3 *side;

static void
side_close(void)
{
	if (side != NULL)
		sqlite3_close(side);
	side = NULL;
}

static sqlite3 *
side_h(void)
{
	if (side == NULL) {
		if (sqlite3_open_v2(path, &side, SQLITE_OPEN_READWRITE,
		    queue_vfs_name()) != SQLITE_OK)
			printf("# side connection: %s\n", sqlite3_errmsg(side));
		sqlite3_busy_timeout(side, 5000);
		sqlite3_exec(side, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
	}
	return side;
}

/* A fresh database path for each test. */
static void
new_path(void)
{
	side_close();
	snprintf(path, sizeof(path), "%s/q%d.db", dir, ++db_counter);
}

static void
remove_db(const char *p)
{
	char aux[320];

	side_close();
	unlink(p);
	snprintf(aux, sizeof(aux), "%s-wal", p);
	unlink(aux);
	snprintf(aux, sizeof(aux), "%s-shm", p);
	unlink(aux);
}

static void
make_env(struct envelope *e, const char *id, int nrcpts)
{
	char addr[64];
	int i;

	envelope_init(e);
	snprintf(e->queue_id, sizeof(e->queue_id), "%s", id);
	e->received_at = 1700000000;
	e->sender = xstrdup("alice@example.org");
	e->client_ip = xstrdup("192.0.2.7");
	e->helo = xstrdup("client.example.org");
	e->protocol = xstrdup("ESMTP");
	e->body_8bitmime = true;
	for (i = 0; i < nrcpts; i++) {
		snprintf(addr, sizeof(addr), "rcpt%d@example.com", i);
		envelope_add_rcpt(e, addr, "local", "queue", "{\"n\":1}");
	}
}

/* One text value from a query on any connection; NULL when no row or
 * SQL NULL. */
static char *
h_text(sqlite3 *h, const char *sql)
{
	sqlite3_stmt *st;
	char *out = NULL;

	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
		printf("# prepare: %s\n", sqlite3_errmsg(h));
		return NULL;
	}
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		out = xstrdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return out;
}

static char *
q_text(struct queue_db *db, const char *sql)
{
	return h_text(side_h(), sql);
}

static long long
q_int(struct queue_db *db, const char *sql)
{
	char *s = q_text(db, sql);
	long long v = s != NULL ? atoll(s) : -1;

	free(s);
	return v;
}

#define CHECK_H(h, sql, want) do { \
	char *got_ = h_text(h, sql); \
	CHECK_STR(got_, want); \
	free(got_); \
} while (0)
#define CHECK_Q(db, sql, want) CHECK_H(side_h(), sql, want)

static const char message[] =
	"Received: from client.example.org\r\n"
	"message-id: <abc@example.org>\r\n"
	"Subject: a folded\r\n"
	"\tsubject  \r\n"
	"Subject: not this one\r\n"
	"\r\n"
	"Subject: not in the body either\r\n";

/* A store at a fresh path (new_path()), created by queue_db_open(). */
static struct queue_db *
fresh_db(void)
{
	new_path();
	return queue_db_open(path, false);
}

/* Insert message, as queue id with nrcpts recipients (make_env()): the
 * store's answer. */
static int
insert_msg(struct queue_db *db, const char *id, int nrcpts)
{
	struct envelope e;
	int rc;

	make_env(&e, id, nrcpts);
	rc = queue_db_insert(db, &e, message, sizeof(message) - 1);
	envelope_free(&e);
	return rc;
}

static void
test_create(void)
{
	struct queue_db *db;

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(q_int(db, "SELECT version FROM schema_version"),
	    QUEUE_SCHEMA_VERSION);
	CHECK_INT(q_int(db, "SELECT count(*) FROM schema_version"), 1);
	CHECK_Q(db, "PRAGMA journal_mode", "wal");
	CHECK_INT(q_int(db, "PRAGMA synchronous"), 2);
	CHECK_INT(q_int(db, "PRAGMA foreign_keys"), 1);
	CHECK_INT(q_int(db, "SELECT count(*) FROM sqlite_master WHERE"
	    " type = 'view'"), 5);
	queue_db_close(db);

	/* Opening again migrates nothing and works read-only too. */
	db = queue_db_open(path, false);
	CHECK(db != NULL);
	queue_db_close(db);
	db = queue_db_open(path, true);
	CHECK(db != NULL);
	if (db != NULL) {
		CHECK_INT(q_int(db, "SELECT count(*) FROM messages"), 0);
		queue_db_close(db);
	}
	remove_db(path);
}

/* Back from version 6 to 5: history without the DSN columns (and the
 * trigger that copies them: version 6 makes it again). */
#define DROP_V6 \
	"DROP TRIGGER messages_keep_history;" \
	"ALTER TABLE history_messages DROP COLUMN dsn_ret;" \
	"ALTER TABLE history_messages DROP COLUMN dsn_envid;" \
	"ALTER TABLE history_recipients DROP COLUMN dsn_notify;" \
	"ALTER TABLE history_recipients DROP COLUMN dsn_orcpt;"

/* Back from version 4 to 3: without the DSN columns. */
#define DROP_V5 DROP_V6 \
	"DROP TABLE mta_sts_policies; DROP TABLE tls_results;"

#define DROP_V4 DROP_V5 \
	"ALTER TABLE messages DROP COLUMN dsn_ret;" \
	"ALTER TABLE messages DROP COLUMN dsn_envid;" \
	"ALTER TABLE recipients DROP COLUMN dsn_notify;" \
	"ALTER TABLE recipients DROP COLUMN dsn_orcpt;"

/*
 * A version 1 queue (history rows "received" and "routed" in events)
 * migrates to version 2: those rows go, message_history shows the same.
 */
static void
test_migration_v1_to_v2(void)
{
	struct queue_db *db;
	const char *history = "SELECT group_concat(kind || ' ' ||"
	    " ifnull(recipient, '-') || ' ' || detail, ';') FROM message_history";
	const char *expected = "received - from=<alice@example.org>"
	    " client=192.0.2.7 helo=client.example.org size=155 nrcpt=2;"
	    "routed rcpt0@example.com route=local action=queue params={\"n\":1};"
	    "routed rcpt1@example.com route=local action=queue params={\"n\":1};"
	    "deferred rcpt1@example.com 451 later";

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(insert_msg(db, "0000000001AAAAAA", 2), 0);
	/* Back to what version 1 wrote and showed. */
	CHECK(sqlite3_exec(side_h(),
	    "INSERT INTO events (message_id, recipient_id, at, kind, detail)"
	    " VALUES ('0000000001AAAAAA', NULL, 1700000000, 'received', 'x'),"
	    " ('0000000001AAAAAA', 1, 1700000000, 'routed', 'y'),"
	    " ('0000000001AAAAAA', 2, 1700000000, 'routed', 'z'),"
	    " ('0000000001AAAAAA', 2, 1700000060, 'deferred', '451 later');"
	    "DROP VIEW message_history;"
	    "CREATE VIEW message_history AS SELECT e.message_id AS message_id,"
	    " e.id AS event_id, datetime(e.at, 'unixepoch') AS time, e.at AS at,"
	    " e.kind AS kind, r.address AS recipient, e.detail AS detail"
	    " FROM events e LEFT JOIN recipients r ON r.id = e.recipient_id"
	    " ORDER BY e.message_id, e.at, e.id;"
	    DROP_V4
	    /* Nor had it version 3's history. */
	    "DROP VIEW history_trace;"
	    "DROP TABLE history_events; DROP TABLE history_recipients;"
	    "DROP TABLE history_messages;"
	    "UPDATE schema_version SET version = 1;", NULL, NULL, NULL) ==
	    SQLITE_OK);
	queue_db_close(db);

	db = queue_db_open(path, false);
	REQUIRE(db != NULL);
	CHECK_INT(q_int(db, "SELECT version FROM schema_version"),
	    QUEUE_SCHEMA_VERSION);
	CHECK_Q(db, "SELECT group_concat(kind) FROM events", "deferred");
	CHECK_Q(db, history, expected);
	queue_db_close(db);
	remove_db(path);
}

/*
 * Version 4 adds the DSN columns (RFC 3461): a version 3 queue's
 * messages get none (NULL: the behaviour of before), new ones store what
 * the envelope says, xtext decoded.
 */
static void
test_migration_v3_to_v4(void)
{
	struct queue_db *db;
	struct envelope e;

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(insert_msg(db, "0000000001AAAAAA", 1), 0);
	CHECK(sqlite3_exec(side_h(), DROP_V4
	    "UPDATE schema_version SET version = 3;", NULL, NULL, NULL) ==
	    SQLITE_OK);
	queue_db_close(db);

	db = queue_db_open(path, false);
	REQUIRE(db != NULL);
	CHECK_INT(q_int(db, "SELECT version FROM schema_version"),
	    QUEUE_SCHEMA_VERSION);
	CHECK_Q(db, "SELECT ifnull(dsn_ret, '-') || ifnull(dsn_envid, '-')"
	    " FROM messages", "--");
	CHECK_Q(db, "SELECT ifnull(dsn_notify, '-') || ifnull(dsn_orcpt, '-')"
	    " FROM recipients", "--");

	make_env(&e, "0000000002AAAAAA", 3);
	e.dsn_ret = DSN_RET_HDRS;
	e.dsn_envid = xstrdup("QQ 314=x");
	e.rcpts[0].dsn_notify = DSN_NOTIFY_NEVER;
	e.rcpts[1].dsn_notify = DSN_NOTIFY_DELAY | DSN_NOTIFY_SUCCESS |
	    DSN_NOTIFY_FAILURE;
	e.rcpts[1].dsn_orcpt = xstrdup("rfc822;Bob+x@example.com");
	CHECK_INT(queue_db_insert(db, &e, message, sizeof(message) - 1), 0);
	envelope_free(&e);
	CHECK_Q(db, "SELECT dsn_ret || '|' || dsn_envid FROM messages"
	    " WHERE id = '0000000002AAAAAA'", "HDRS|QQ 314=x");
	CHECK_Q(db, "SELECT group_concat(ifnull(dsn_notify, '-') || '|' ||"
	    " ifnull(dsn_orcpt, '-'), ' ') FROM recipients"
	    " WHERE message_id = '0000000002AAAAAA'",
	    "NEVER|- SUCCESS,FAILURE,DELAY|rfc822;Bob+x@example.com -|-");
	/* The schema refuses a RET that is neither. */
	CHECK(sqlite3_exec(side_h(), "UPDATE messages SET dsn_ret = 'ALL'",
	    NULL, NULL, NULL) != SQLITE_OK);
	queue_db_close(db);
	remove_db(path);
}

/*
 * Version 6 keeps the DSN parameters in the history: a message of a
 * version 5 queue that leaves the queue after the migration takes its
 * RET, ENVID, NOTIFY and ORCPT along.
 */
static void
test_migration_v5_to_v6(void)
{
	struct queue_db *db;
	struct envelope e;

	db = fresh_db();
	REQUIRE(db != NULL);
	make_env(&e, "0000000003AAAAAA", 2);
	e.dsn_ret = DSN_RET_FULL;
	e.dsn_envid = xstrdup("env-1");
	e.rcpts[0].dsn_notify = DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE;
	e.rcpts[0].dsn_orcpt = xstrdup("rfc822;a@example.com");
	CHECK_INT(queue_db_insert(db, &e, message, sizeof(message) - 1), 0);
	envelope_free(&e);
	CHECK(sqlite3_exec(side_h(), DROP_V6
	    "UPDATE schema_version SET version = 5;", NULL, NULL, NULL) ==
	    SQLITE_OK);
	queue_db_close(db);

	db = queue_db_open(path, false);
	REQUIRE(db != NULL);
	CHECK_INT(q_int(db, "SELECT version FROM schema_version"),
	    QUEUE_SCHEMA_VERSION);
	CHECK(sqlite3_exec(side_h(), "DELETE FROM messages", NULL, NULL,
	    NULL) == SQLITE_OK);
	CHECK_Q(db, "SELECT dsn_ret || '|' || dsn_envid FROM history_messages",
	    "FULL|env-1");
	CHECK_Q(db, "SELECT group_concat(ifnull(dsn_notify, '-') || '|' ||"
	    " ifnull(dsn_orcpt, '-'), ' ') FROM history_recipients",
	    "SUCCESS,FAILURE|rfc822;a@example.com -|-");
	queue_db_close(db);
	remove_db(path);
}

static void
test_insert(void)
{
	struct queue_db *db;
	struct envelope e;

	db = fresh_db();
	REQUIRE(db != NULL);
	make_env(&e, "0000000001AAAAAA", 2);
	CHECK_INT(queue_db_begin(db), 0);
	CHECK_INT(queue_db_insert(db, &e, message, sizeof(message) - 1), 0);
	CHECK_INT(queue_db_commit(db), 0);

	CHECK_Q(db, "SELECT sender || '|' || client_ip || '|' || helo || '|' ||"
	    " protocol || '|' || body_8bitmime || smtputf8 || '|' || size ||"
	    " '|' || received_at || '|' || (auth_user IS NULL) FROM messages",
	    "alice@example.org|192.0.2.7|client.example.org|ESMTP|10|155|"
	    "1700000000|1");
	CHECK_Q(db, "SELECT message_id_header FROM messages", "<abc@example.org>");
	CHECK_Q(db, "SELECT subject FROM messages", "a folded\tsubject");
	CHECK_INT(q_int(db, "SELECT length(content) FROM message_contents"),
	    sizeof(message) - 1);
	CHECK_INT(q_int(db, "SELECT CAST(substr(content, 1, 9) AS TEXT) ="
	    " 'Received:' FROM message_contents"), 1);

	CHECK_Q(db, "SELECT group_concat(address || ' ' || route || ' ' || action"
	    " || ' ' || action_params || ' ' || state || ' ' || attempts || ' ' ||"
	    " next_attempt_at || ' ' || updated_at, ';') FROM"
	    " (SELECT * FROM recipients ORDER BY id)",
	    "rcpt0@example.com local queue {\"n\":1} queued 0 1700000000"
	    " 1700000000;rcpt1@example.com local queue {\"n\":1} queued 0"
	    " 1700000000 1700000000");

	/* "received" and "routed" are derived, not written (schema v2). */
	CHECK_INT(q_int(db, "SELECT count(*) FROM events"), 0);
	CHECK_Q(db, "SELECT detail FROM message_history WHERE kind = 'received'",
	    "from=<alice@example.org> client=192.0.2.7"
	    " helo=client.example.org size=155 nrcpt=2");
	CHECK_INT(q_int(db, "SELECT (recipient_id IS NULL) + (event_id IS NULL)"
	    " FROM message_history WHERE kind = 'received'"), 2);
	CHECK_Q(db, "SELECT group_concat(recipient_id || ' ' || detail, ';')"
	    " FROM message_history WHERE kind = 'routed'",
	    "1 route=local action=queue params={\"n\":1};"
	    "2 route=local action=queue params={\"n\":1}");

	/* The views. */
	CHECK_Q(db, "SELECT state || ' ' || recipients || ' ' || messages"
	    " FROM queue_summary", "queued 2 1");
	CHECK_Q(db, "SELECT id || ' ' || received || ' ' || recipients || ' ' ||"
	    " states || ' ' || subject FROM message_status",
	    "0000000001AAAAAA 2023-11-14 22:13:20 2 queued a folded\tsubject");
	CHECK_Q(db, "SELECT group_concat(kind || ' ' || ifnull(recipient, '-'),"
	    " ';') FROM message_history WHERE message_id = '0000000001AAAAAA'",
	    "received -;routed rcpt0@example.com;routed rcpt1@example.com");
	/* Events written later follow, in the order written, also within
	 * the second of reception. */
	CHECK(sqlite3_exec(side_h(), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) VALUES"
	    " ('0000000001AAAAAA', 2, 1700000000, 'attempt', 'a'),"
	    " ('0000000001AAAAAA', 1, 1700000000, 'attempt', 'b'),"
	    " ('0000000001AAAAAA', 1, 1700000005, 'delivered', 'c')",
	    NULL, NULL, NULL) == SQLITE_OK);
	CHECK_Q(db, "SELECT group_concat(kind || ' ' || ifnull(recipient, '-'),"
	    " ';') FROM message_history WHERE message_id = '0000000001AAAAAA'",
	    "received -;routed rcpt0@example.com;routed rcpt1@example.com;"
	    "attempt rcpt1@example.com;attempt rcpt0@example.com;"
	    "delivered rcpt0@example.com");
	CHECK_Q(db, "SELECT address || ' ' || next_attempt FROM recipient_status"
	    " WHERE recipient_id = 1", "rcpt0@example.com 2023-11-14 22:13:20");

	/* A second state shows in the summary, sorted. */
	CHECK(sqlite3_exec(side_h(), "UPDATE recipients SET state ="
	    " 'delivered' WHERE id = 2", NULL, NULL, NULL) == SQLITE_OK);
	CHECK_Q(db, "SELECT states FROM message_status", "delivered,queued");
	/* States are checked by the schema. */
	CHECK(sqlite3_exec(side_h(), "UPDATE recipients SET state ="
	    " 'lost' WHERE id = 2", NULL, NULL, NULL) != SQLITE_OK);

	/* Deleting a message takes everything of it along. */
	CHECK(sqlite3_exec(side_h(), "DELETE FROM messages", NULL,
	    NULL, NULL) == SQLITE_OK);
	CHECK_INT(q_int(db, "SELECT (SELECT count(*) FROM message_contents) +"
	    " (SELECT count(*) FROM recipients) +"
	    " (SELECT count(*) FROM events)"), 0);

	envelope_free(&e);
	queue_db_close(db);
	remove_db(path);
}

/*
 * A failed insert inside a batch poisons the transaction: the caller
 * rolls back and redoes the batch without the culprit (as queue.c does).
 */
/*
 * Version 3: whatever deletes a message (retirement, purge, the operator,
 * the sqlite3 shell) leaves its envelope, recipients and events in the
 * history tables, and history_trace tells its story as message_history
 * did; queue_db_purge_history() forgets them after keep_history.
 */
static void
test_history_outlives_message(void)
{
	struct queue_db *db;
	const char *trace = "SELECT group_concat(kind || ' ' ||"
	    " ifnull(recipient, '-'), ';') FROM history_trace";

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(insert_msg(db, "0000000001AAAAAA", 2), 0);
	CHECK(sqlite3_exec(side_h(),
	    "INSERT INTO events (message_id, recipient_id, at, kind, detail)"
	    " VALUES ('0000000001AAAAAA', 2, 1700000060, 'deferred', '451'),"
	    " ('0000000001AAAAAA', NULL, 1700000100, 'deleted', 'by test');"
	    "PRAGMA foreign_keys = ON;"
	    "DELETE FROM messages;", NULL, NULL, NULL) == SQLITE_OK);
	CHECK_Q(db, "SELECT count(*) FROM messages", "0");
	CHECK_Q(db, "SELECT count(*) FROM events", "0");
	CHECK_Q(db, "SELECT id || ' ' || finished_at FROM history_messages",
	    "0000000001AAAAAA 1700000100");
	CHECK_Q(db, trace, "received -;routed rcpt0@example.com;"
	    "routed rcpt1@example.com;deferred rcpt1@example.com;deleted -");
	CHECK_INT(queue_db_delivery_init(db), 0);
	CHECK_INT(queue_db_purge_history(db, 1700000100), 0);
	CHECK_Q(db, "SELECT count(*) FROM history_messages", "1");
	CHECK_INT(queue_db_purge_history(db, 1700000101), 1);
	CHECK_Q(db, "SELECT count(*) FROM history_messages", "0");
	CHECK_Q(db, "SELECT count(*) FROM history_recipients", "0");
	CHECK_Q(db, "SELECT count(*) FROM history_events", "0");
	queue_db_close(db);
	remove_db(path);
}

static void
test_failed_insert_in_batch(void)
{
	struct queue_db *db;
	struct envelope a, b, c;

	db = fresh_db();
	REQUIRE(db != NULL);
	make_env(&a, "0000000001AAAAAA", 1);
	make_env(&b, "0000000002BBBBBB", 3);
	make_env(&c, "0000000003CCCCCC", 1);
	CHECK_INT(queue_db_begin(db), 0);
	CHECK_INT(queue_db_insert(db, &a, "x", 1), 0);
	/* The same id again: refused by the primary key. */
	CHECK_INT(queue_db_insert(db, &a, "y", 1), -1);
	CHECK_INT(queue_db_rollback(db), 0);
	CHECK_INT(q_int(db, "SELECT count(*) FROM messages"), 0);

	/* A recipient without an action fails after rows were written. */
	free(b.rcpts[2].action);
	b.rcpts[2].action = NULL;
	CHECK_INT(queue_db_begin(db), 0);
	CHECK_INT(queue_db_insert(db, &a, "x", 1), 0);
	CHECK_INT(queue_db_insert(db, &b, "z", 1), -1);
	CHECK_INT(queue_db_rollback(db), 0);

	/* The batch again without the culprits. */
	CHECK_INT(queue_db_begin(db), 0);
	CHECK_INT(queue_db_insert(db, &a, "x", 1), 0);
	CHECK_INT(queue_db_insert(db, &c, "w", 1), 0);
	CHECK_INT(queue_db_commit(db), 0);
	CHECK_Q(db, "SELECT group_concat(id, ',') FROM (SELECT id FROM messages"
	    " ORDER BY id)", "0000000001AAAAAA,0000000003CCCCCC");
	CHECK_INT(q_int(db, "SELECT count(*) FROM recipients"), 2);
	CHECK_INT(q_int(db, "SELECT count(*) FROM events"), 0);
	CHECK_INT(q_int(db, "SELECT count(*) FROM message_history"), 4);
	CHECK_INT(q_int(db, "SELECT count(*) FROM message_contents"), 2);

	/* Outside a batch a failing message leaves nothing behind. */
	CHECK_INT(queue_db_insert(db, &b, "z", 1), -1);
	CHECK_INT(q_int(db, "SELECT count(*) FROM messages"), 2);
	CHECK_INT(q_int(db, "SELECT count(*) FROM recipients"), 2);

	/* A rolled back batch leaves nothing; a second rollback is a no-op. */
	envelope_free(&b);
	make_env(&b, "0000000002BBBBBB", 3);
	CHECK_INT(queue_db_begin(db), 0);
	CHECK_INT(queue_db_insert(db, &b, "z", 1), 0);
	CHECK_INT(queue_db_rollback(db), 0);
	CHECK_INT(queue_db_rollback(db), 0);
	CHECK_INT(q_int(db, "SELECT count(*) FROM messages"), 2);

	/* Outside a batch, an insert is its own transaction. */
	CHECK_INT(queue_db_insert(db, &b, "z", 1), 0);
	CHECK_INT(q_int(db, "SELECT count(*) FROM messages"), 3);

	envelope_free(&a);
	envelope_free(&b);
	envelope_free(&c);
	queue_db_close(db);
	remove_db(path);
}

static void
test_headers(void)
{
	static const struct {
		const char *content;
		const char *subject;
		const char *msgid;
	} cases[] = {
		{ "", NULL, NULL },
		{ "no header block at all", NULL, NULL },
		{ "Subject: lf only\nMessage-Id:<x@y>\n\nbody", "lf only", "<x@y>" },
		{ "SUBJECT:no space\r\n", "no space", NULL },
		{ "Subject:\r\n\r\n", "", NULL },
		{ "X-Subject: no\r\nSubject : no either\r\n", NULL, NULL },
		{ "\r\nSubject: body\r\n", NULL, NULL },
		{ " Subject: continuation of nothing\r\n", NULL, NULL },
		{ "Subject: last line, no newline", "last line, no newline",
		  NULL },
		{ "Subject: a\r\n b\r\n  c\r\nTo: d\r\n e\r\n", "a b  c", NULL },
	};
	struct queue_db *db;
	struct envelope e;
	sqlite3_stmt *st;
	char id[QUEUE_ID_LEN + 1];
	size_t i;

	db = fresh_db();
	REQUIRE(db != NULL);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		snprintf(id, sizeof(id), "00000000000000%02zu", i);
		make_env(&e, id, 1);
		CHECK_INT(queue_db_insert(db, &e, cases[i].content,
		    strlen(cases[i].content)), 0);
		envelope_free(&e);
		sqlite3_prepare_v2(side_h(), "SELECT subject,"
		    " message_id_header, size, length(c.content),"
		    " typeof(c.content) FROM messages m JOIN message_contents c"
		    " ON c.message_id = m.id WHERE m.id = ?", -1, &st, NULL);
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		CHECK(sqlite3_step(st) == SQLITE_ROW);
		if (cases[i].subject == NULL)
			CHECK(sqlite3_column_type(st, 0) == SQLITE_NULL);
		else
			CHECK_STR((const char *)sqlite3_column_text(st, 0),
			    cases[i].subject);
		if (cases[i].msgid == NULL)
			CHECK(sqlite3_column_type(st, 1) == SQLITE_NULL);
		else
			CHECK_STR((const char *)sqlite3_column_text(st, 1),
			    cases[i].msgid);
		CHECK_INT(sqlite3_column_int64(st, 2), strlen(cases[i].content));
		CHECK_INT(sqlite3_column_int64(st, 3), strlen(cases[i].content));
		CHECK_STR((const char *)sqlite3_column_text(st, 4), "blob");
		sqlite3_finalize(st);
	}
	queue_db_close(db);
	remove_db(path);
}

/*
 * The delivery side's statements (queue_db_delivery.c), as the scheduler
 * and the bounces use them: due rows, claims, outcomes, retention, the
 * requeue at start, and an insert that fails alone inside a transaction.
 */
static void
test_delivery_side(void)
{
	struct queue_due rows[4];
	struct queue_message m;
	struct envelope e;
	struct queue_db *db;
	const int64_t t0 = 1700000000;
	char *head, buf[sizeof(message)];
	size_t len;
	FILE *f;

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(insert_msg(db, "0000000001AAAAAA", 2), 0);
	CHECK_INT(queue_db_delivery_init(db), 0);

	CHECK_INT(queue_db_txn_begin(db), 0);
	CHECK_INT(queue_db_due(db, QUEUE_DUE_QUEUED, t0 - 1, 0, rows, 4), 0);
	CHECK_INT(queue_db_due(db, QUEUE_DUE_QUEUED, t0, 0, rows, 4), 2);
	CHECK_STR(rows[0].msgid, "0000000001AAAAAA");
	CHECK_STR(rows[0].address, "rcpt0@example.com");
	CHECK_STR(rows[0].action, "queue");
	CHECK_STR(rows[0].sender, "alice@example.org");
	CHECK_INT(rows[0].attempts, 0);
	CHECK_INT(rows[0].received_at, t0);
	/* One claim only: the second finds it delivering. */
	CHECK_INT(queue_db_claim(db, rows[0].id, t0 + 1), 1);
	CHECK_INT(queue_db_claim(db, rows[0].id, t0 + 1), 0);
	CHECK_INT(queue_db_event(db, rows[0].msgid, rows[0].id, t0 + 1,
	    "attempt", "attempt=1"), 0);
	CHECK_INT(queue_db_set_deferred(db, rows[0].id, "451 later",
	    "mx.example", t0 + 60, t0 + 1), 0);
	/* An outcome for a recipient that is not being delivered. */
	CHECK_INT(queue_db_set_final(db, rows[0].id, "delivered", "250 ok",
	    NULL, t0 + 2), -1);
	CHECK_INT(queue_db_claim(db, rows[1].id, t0 + 1), 1);
	CHECK_INT(queue_db_set_final(db, rows[1].id, "delivered", "250 ok",
	    NULL, t0 + 2), 0);
	CHECK_INT(queue_db_retire_if_final(db, "0000000001AAAAAA", true), 0);
	CHECK_INT(queue_db_txn_commit(db), 0);
	CHECK_Q(db, "SELECT group_concat(state || ' ' || attempts || ' ' ||"
	    " ifnull(destination, '-'), ';') FROM recipients",
	    "deferred 1 mx.example;delivered 1 -");
	CHECK_Q(db, "SELECT count(*) FROM events WHERE kind = 'attempt'", "1");
	queue_db_due_free(&rows[0]);
	queue_db_due_free(&rows[1]);
	CHECK_INT(queue_db_due(db, QUEUE_DUE_DEFERRED, t0 + 59, 0, rows, 4), 0);
	CHECK_INT(queue_db_due(db, QUEUE_DUE_DEFERRED, t0 + 60, 0, rows, 4), 1);
	CHECK_INT(rows[0].attempts, 1);
	CHECK_INT(rows[0].last_attempt_at, t0 + 1);

	/* The message for its delivery, and the head for a DSN. */
	f = tmpfile();
	CHECK(f != NULL);
	if (f != NULL) {
		CHECK_INT(queue_db_message_copy(db, "0000000001AAAAAA", &m,
		    fileno(f)), 1);
		CHECK_STR(m.sender, "alice@example.org");
		CHECK_STR(m.helo, "client.example.org");
		CHECK(m.auth_user == NULL && m.body_8bitmime && !m.smtputf8);
		CHECK_INT(m.content_len, sizeof(message) - 1);
		rewind(f);
		CHECK_INT(fread(buf, 1, sizeof(buf), f), sizeof(message) - 1);
		CHECK(memcmp(buf, message, sizeof(message) - 1) == 0);
		queue_db_message_free(&m);
		CHECK_INT(queue_db_message_copy(db, "0000000009ZZZZZZ", &m,
		    fileno(f)), 0);
		fclose(f);
	}
	head = queue_db_content_head(db, "0000000001AAAAAA", 9, &len);
	CHECK_STR(head, "Received:");
	CHECK_INT(len, 9);
	free(head);
	CHECK(queue_db_content_head(db, "0000000009ZZZZZZ", 9, &len) == NULL);

	/* Final: the content goes, the rows stay until the purge. */
	CHECK_INT(queue_db_txn_begin(db), 0);
	CHECK_INT(queue_db_claim(db, rows[0].id, t0 + 61), 1);
	CHECK_INT(queue_db_set_final(db, rows[0].id, "bounced", "550 no",
	    NULL, t0 + 62), 0);
	CHECK_INT(queue_db_retire_if_final(db, "0000000001AAAAAA", true), 1);
	CHECK_INT(queue_db_txn_commit(db), 0);
	queue_db_due_free(&rows[0]);
	CHECK_Q(db, "SELECT (SELECT count(*) FROM messages) || ' ' ||"
	    " (SELECT count(*) FROM message_contents)", "1 0");
	CHECK_INT(queue_db_purge(db, t0 + 62), 0);
	CHECK_INT(queue_db_purge(db, t0 + 63), 1);
	CHECK_Q(db, "SELECT count(*) FROM messages", "0");

	/* What a stopped queue process left "delivering" is due again. */
	CHECK_INT(insert_msg(db, "0000000002BBBBBB", 1), 0);
	CHECK_INT(queue_db_due(db, QUEUE_DUE_QUEUED, t0, 0, rows, 4), 1);
	CHECK_INT(queue_db_claim(db, rows[0].id, t0 + 1), 1);
	queue_db_due_free(&rows[0]);
	CHECK_INT(queue_db_requeue_interrupted(db, t0 + 100), 1);
	CHECK_Q(db, "SELECT state || ' ' || next_attempt_at FROM recipients",
	    "deferred 1700000100");

	/* Inside a transaction, a failed insert takes only itself back. */
	CHECK_INT(queue_db_txn_begin(db), 0);
	CHECK_INT(queue_db_event(db, "0000000002BBBBBB", 0, t0 + 101, "held",
	    "kept"), 0);
	make_env(&e, "0000000002BBBBBB", 1);
	CHECK_INT(queue_db_insert_alone(db, &e, message, 4), -1);
	envelope_free(&e);
	make_env(&e, "0000000003CCCCCC", 1);
	CHECK_INT(queue_db_insert_alone(db, &e, message, 4), 0);
	envelope_free(&e);
	CHECK_INT(queue_db_txn_commit(db), 0);
	CHECK_Q(db, "SELECT group_concat(id) FROM messages",
	    "0000000002BBBBBB,0000000003CCCCCC");
	CHECK_Q(db, "SELECT detail FROM events WHERE kind = 'held'", "kept");

	queue_db_close(db);
	remove_db(path);
}

static void
test_refusals(void)
{
	struct queue_db *db;
	struct envelope e;
	sqlite3 *h;

	/* Read-only: no such file; and no writes through a read-only handle. */
	new_path();
	CHECK(queue_db_open(path, true) == NULL);
	CHECK(access(path, F_OK) == -1);
	db = queue_db_open(path, false);
	CHECK(db != NULL);
	queue_db_close(db);
	db = queue_db_open(path, true);
	CHECK(db != NULL);
	if (db != NULL) {
		make_env(&e, "0000000001AAAAAA", 1);
		CHECK_INT(queue_db_begin(db), -1);
		CHECK_INT(queue_db_insert(db, &e, "x", 1), -1);
		envelope_free(&e);
		queue_db_close(db);
	}

	/* A newer schema than this binary knows. */
	CHECK(sqlite3_open(path, &h) == SQLITE_OK);
	CHECK(sqlite3_exec(h, "UPDATE schema_version SET version = 1000",
	    NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(h);
	CHECK(queue_db_open(path, false) == NULL);
	CHECK(queue_db_open(path, true) == NULL);
	remove_db(path);

	/* Somebody else's database. */
	new_path();
	CHECK(sqlite3_open(path, &h) == SQLITE_OK);
	CHECK(sqlite3_exec(h, "CREATE TABLE t (x)", NULL, NULL, NULL) ==
	    SQLITE_OK);
	sqlite3_close(h);
	CHECK(queue_db_open(path, false) == NULL);
	remove_db(path);

	/* An empty file is a new database, but read-only cannot create it. */
	new_path();
	CHECK(sqlite3_open(path, &h) == SQLITE_OK);
	sqlite3_close(h);
	CHECK(queue_db_open(path, true) == NULL);
	remove_db(path);
}

static bool
sql_ok(sqlite3 *h, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK)
		return true;
	printf("# %s: %s\n", sql, err != NULL ? err : "?");
	sqlite3_free(err);
	return false;
}

/* Rows of t read through both handles, compared byte for byte: the number
 * of rows, or -1 at the first difference. */
static int
same_rows(sqlite3 *a, sqlite3 *b)
{
	sqlite3_stmt *sa = NULL, *sb = NULL;
	int n = 0, ra, rb;

	if (sqlite3_prepare_v2(a, "SELECT n, b FROM t ORDER BY n", -1, &sa,
	    NULL) != SQLITE_OK || sqlite3_prepare_v2(b,
	    "SELECT n, b FROM t ORDER BY n", -1, &sb, NULL) != SQLITE_OK) {
		n = -1;
		goto out;
	}
	for (;;) {
		ra = sqlite3_step(sa);
		rb = sqlite3_step(sb);
		if (ra != rb) {
			n = -1;
			break;
		}
		if (ra != SQLITE_ROW)
			break;
		if (sqlite3_column_int(sa, 0) != sqlite3_column_int(sb, 0) ||
		    sqlite3_column_bytes(sa, 1) != sqlite3_column_bytes(sb, 1) ||
		    memcmp(sqlite3_column_blob(sa, 1), sqlite3_column_blob(sb, 1),
		    (size_t)sqlite3_column_bytes(sa, 1)) != 0) {
			n = -1;
			break;
		}
		n++;
	}
out:
	sqlite3_finalize(sa);
	sqlite3_finalize(sb);
	return n;
}

/*
 * The queue VFS (queue_vfs.h) gathers a writer's WAL frames: another
 * connection, on the default VFS, must see every commit whole the moment
 * it is published, with synchronous=NORMAL (the scheduler's commits: no
 * sync to flush at) as with FULL, and a transaction larger than one
 * gathered run (spilled to the WAL before its commit, then read back by
 * the writer) must come out intact.
 */
static void
test_queue_vfs(void)
{
	struct queue_db *db;
	sqlite3 *h, *reader = NULL;
	sqlite3_vfs *vfs = NULL;
	char want[128], sql[160];

	db = fresh_db();
	REQUIRE(db != NULL);
	h = side_h();
	CHECK(sqlite3_file_control(h, "main", SQLITE_FCNTL_VFS_POINTER,
	    &vfs) == SQLITE_OK);
	CHECK(vfs != NULL && strcmp(vfs->zName, "mxgate-queue") == 0);
	CHECK(sql_ok(h, "CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB)"));
	CHECK(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL) ==
	    SQLITE_OK);

	CHECK(sql_ok(h, "PRAGMA synchronous = NORMAL"));
	for (int i = 1; i <= 40; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d,"
		    " randomblob(%d))", i, 1000 + 100 * i);
		CHECK(sql_ok(h, sql));
		snprintf(want, sizeof(want), "%d %d", i,
		    1000 * i + 50 * i * (i + 1));
		CHECK_H(reader, "SELECT count(*) || ' ' || sum(length(b))"
		    " FROM t", want);
	}

	CHECK(sql_ok(h, "PRAGMA synchronous = FULL"));
	CHECK(sql_ok(h, "PRAGMA cache_size = 64"));
	CHECK(sql_ok(h, "BEGIN"));
	for (int i = 41; i <= 1040; i++) {
		snprintf(sql, sizeof(sql),
		    "INSERT INTO t VALUES (%d, randomblob(4000))", i);
		CHECK(sql_ok(h, sql));
	}
	/* The writer reads its spilled pages back through the VFS. */
	CHECK_H(h, "SELECT count(*) FROM t", "1040");
	CHECK(sql_ok(h, "COMMIT"));
	CHECK_INT(same_rows(h, reader), 1040);
	CHECK_H(reader, "PRAGMA quick_check", "ok");
	sqlite3_close(reader);
	queue_db_close(db);
	remove_db(path);
}

/*
 * A transaction larger than the page cache spills frames to the WAL
 * before its commit; rolled back, those frames must never reach the file
 * later, over frames another writer has committed meanwhile.
 */
static void
test_queue_vfs_rollback(void)
{
	sqlite3 *h = NULL, *other = NULL, *reader = NULL;

	new_path();
	CHECK(sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, queue_vfs_name()) == SQLITE_OK);
	CHECK(sql_ok(h, "PRAGMA journal_mode = WAL"));
	CHECK(sql_ok(h, "PRAGMA cache_size = 10"));
	CHECK(sql_ok(h, "PRAGMA wal_autocheckpoint = 0"));
	CHECK(sql_ok(h, "CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB)"));
	CHECK(sql_ok(h, "INSERT INTO t (b) VALUES (randomblob(100))"));
	CHECK(sql_ok(h, "PRAGMA wal_checkpoint(TRUNCATE)"));
	CHECK(sql_ok(h, "BEGIN"));
	CHECK(sql_ok(h, "INSERT INTO t (b) WITH RECURSIVE s(i) AS (SELECT 1"
	    " UNION ALL SELECT i + 1 FROM s WHERE i < 100)"
	    " SELECT randomblob(4000) FROM s"));
	CHECK(sql_ok(h, "ROLLBACK"));

	CHECK(sqlite3_open_v2(path, &other, SQLITE_OPEN_READWRITE, NULL) ==
	    SQLITE_OK);
	CHECK(sql_ok(other, "INSERT INTO t (b) WITH RECURSIVE s(i) AS (SELECT 1"
	    " UNION ALL SELECT i + 1 FROM s WHERE i < 20)"
	    " SELECT randomblob(3000) FROM s"));
	/* The first writer reads again: its next barrier. */
	CHECK_H(h, "SELECT count(*) FROM t", "21");

	CHECK(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL) ==
	    SQLITE_OK);
	CHECK_H(reader, "PRAGMA integrity_check", "ok");
	CHECK_H(reader, "SELECT count(*) || ' ' || sum(length(b)) FROM t",
	    "21 60100");
	sqlite3_close(reader);
	sqlite3_close(other);
	sqlite3_close(h);
	remove_db(path);
}

/* The WAL between two checkpoints: a quarter of the free space, from
 * SQLite's 1000 pages up to 16384, changed in steps. */
static void
test_wal_budget(void)
{
	struct queue_db *db;

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_H(db->h, "PRAGMA wal_autocheckpoint", "1000");
	queue_db_wal_budget(db, (uint64_t)1 << 40);
	CHECK_H(db->h, "PRAGMA wal_autocheckpoint", "16384");
	queue_db_wal_budget(db, 40ULL << 20);
	CHECK_H(db->h, "PRAGMA wal_autocheckpoint", "2560");
	queue_db_wal_budget(db, 41ULL << 20);
	CHECK_H(db->h, "PRAGMA wal_autocheckpoint", "2560");
	queue_db_wal_budget(db, 6ULL << 20);
	CHECK_H(db->h, "PRAGMA wal_autocheckpoint", "1000");
	queue_db_close(db);
	remove_db(path);
}

static long long
wal_size(void)
{
	char wal[320];
	struct stat st;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	return stat(wal, &st) == 0 ? (long long)st.st_size : -1;
}

/*
 * The WAL file written ahead to its budget (32 bytes of header and
 * 4120 per frame), 2 MB a call, only where the free space is 16 times
 * that; SQLite writes over the zeros and reads its frames back, and the
 * file outlives the connection.
 */
static void
test_wal_write_ahead(void)
{
	struct queue_db *db;
	long long before;
	int i;

	/* 100 MB free: a budget of 6400 pages, 26 MB, not 16 times over. */
	db = fresh_db();
	REQUIRE(db != NULL);
	before = wal_size();
	queue_db_wal_budget(db, 100ULL << 20);
	CHECK_INT(wal_size(), before);
	queue_db_close(db);
	remove_db(path);

	db = fresh_db();
	REQUIRE(db != NULL);
	CHECK_INT(insert_msg(db, "AAAAAAAAAAAAAAA1", 2), 0);
	/* One step a call. */
	before = wal_size();
	queue_db_wal_budget(db, 1ULL << 40);
	CHECK_INT(wal_size(), before + (2 << 20));
	for (i = 0; i < 40; i++)
		queue_db_wal_budget(db, 1ULL << 40);
	CHECK_INT(wal_size(), 32 + 16384LL * 4120);
	CHECK_INT(insert_msg(db, "AAAAAAAAAAAAAAA2", 3), 0);
	CHECK_INT(wal_size(), 32 + 16384LL * 4120);
	CHECK_Q(db, "SELECT count(*) FROM messages", "2");
	CHECK_Q(db, "PRAGMA integrity_check", "ok");
	/* Ours the last connection (another's last close deletes it). */
	side_close();
	queue_db_close(db);
	/* Kept, and read again. */
	CHECK_INT(wal_size(), 32 + 16384LL * 4120);
	db = queue_db_open(path, false);
	REQUIRE(db != NULL);
	CHECK_Q(db, "SELECT count(*) FROM recipients", "5");
	queue_db_close(db);
	remove_db(path);
}

/*
 * tls_results (TLS-RPT counts per UTC day) are purged by day:
 * queue_db_tls_purge(before) forgets the days before before's, keeps
 * that day and the later ones, and reports how many rows went.
 */
static void
test_tls_results_purge(void)
{
	static const char *const days[] = {
		"2026-01-01", "2026-01-29", "2026-01-30", "2026-01-31",
	};
	struct queue_tls_result r = {
		.domain = "example.com", .policy_type = "sts",
		.policy = "version: STSv1", .mx_host = "mx.example.com",
		.result_type = "", .sending_ip = "192.0.2.1",
		.receiving_ip = "198.51.100.1", .sessions = 2,
	};
	struct queue_db *db;

	new_path();
	db = queue_db_open(path, false);
	CHECK(db != NULL);
	if (db == NULL)
		return;
	for (size_t i = 0; i < ARRAY_LEN(days); i++) {
		r.day = days[i];
		CHECK_INT(queue_db_tls_result(db, &r), 0);
	}
	r.domain = "example.net";
	CHECK_INT(queue_db_tls_result(db, &r), 0);
	CHECK_Q(db, "SELECT count(*) FROM tls_results", "5");
	/* 2026-01-30 00:00:00 UTC and its last second: the same day. */
	CHECK_INT(queue_db_tls_purge(db, 1769731200), 2);
	CHECK_INT(queue_db_tls_purge(db, 1769731200 + 86399), 0);
	CHECK_Q(db, "SELECT group_concat(day || ' ' || domain, ',') FROM"
	    " (SELECT day, domain FROM tls_results ORDER BY day, domain)",
	    "2026-01-30 example.com,2026-01-31 example.com,"
	    "2026-01-31 example.net");
	/* The next second is the next day. */
	CHECK_INT(queue_db_tls_purge(db, 1769731200 + 86400), 1);
	CHECK_Q(db, "SELECT sum(sessions) FROM tls_results", "4");
	queue_db_close(db);
	remove_db(path);
}

/*
 * mta_sts_policies: queue_db_sts_purge(now) deletes what
 * queue_db_sts_get(now) would no longer return, nothing else.
 */
static void
test_sts_policies_purge(void)
{
	struct queue_db *db;
	char *line = NULL;

	new_path();
	db = queue_db_open(path, false);
	CHECK(db != NULL);
	if (db == NULL)
		return;
	/* Fetched at 1000: expiring at 1100, 1200 and 2000. */
	CHECK_INT(queue_db_sts_put(db, "a.example", "id1", "enforce", 100,
	    1000, "mx.a.example"), 0);
	CHECK_INT(queue_db_sts_put(db, "b.example", "id2", "testing", 200,
	    1000, "*.b.example"), 0);
	CHECK_INT(queue_db_sts_put(db, "c.example", "id3", "enforce", 1000,
	    1000, "mx.c.example"), 0);
	CHECK_INT(queue_db_sts_purge(db, 1099), 0);
	CHECK_INT(queue_db_sts_get(db, "a.example", 1099, &line), 1);
	free(line);
	/* At its expiry it is gone for both. */
	CHECK_INT(queue_db_sts_get(db, "a.example", 1100, &line), 0);
	CHECK_INT(queue_db_sts_purge(db, 1100), 1);
	CHECK_INT(queue_db_sts_purge(db, 1500), 1);
	CHECK_Q(db, "SELECT group_concat(domain) FROM mta_sts_policies",
	    "c.example");
	CHECK_INT(queue_db_sts_get(db, "c.example", 1500, &line), 1);
	free(line);
	queue_db_close(db);
	remove_db(path);
}

int
main(void)
{
	const char *tmp = getenv("TMPDIR");
	int rc;

	log_init(true, LOG_LEVEL_ERROR);
	log_set_role("test");
	snprintf(dir, sizeof(dir), "%s/test_queue_db.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_create);
	RUN(test_insert);
	RUN(test_migration_v1_to_v2);
	RUN(test_history_outlives_message);
	RUN(test_migration_v3_to_v4);
	RUN(test_migration_v5_to_v6);
	RUN(test_failed_insert_in_batch);
	RUN(test_headers);
	RUN(test_delivery_side);
	RUN(test_refusals);
	RUN(test_queue_vfs);
	RUN(test_queue_vfs_rollback);
	RUN(test_wal_budget);
	RUN(test_tls_results_purge);
	RUN(test_sts_policies_purge);
	RUN(test_wal_write_ahead);
	rc = unit_done();
	rmdir(dir);
	return rc;
}
