/*
 * queue_db — the SQLite queue: schema, migrations and the insert path.
 *
 * The schema is a public interface documented in README ("The queue
 * schema"); change it only through a new migration, never by editing one
 * that has shipped.
 *
 * The insert path is the hot path: the queue process's group commit
 * inserts thousands of messages a second, each message being one row in
 * messages and message_contents, one per recipient, and one history row
 * per step.  Every statement on it is prepared once, at open, and reused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "common/dsn.h"
#include "common/log.h"
#include "queue/queue_db.h"
#include "queue/queue_db_private.h"
#include "queue/queue_vfs.h"
#include "common/util.h"

/* Longest Subject / Message-ID value kept in messages (bytes, unfolded). */
#define HEADER_VALUE_MAX 998

/*
 * Schema version 1.  Times are unix seconds.  Views exist for the
 * questions operators ask; the tables stay plain so that the daemon's
 * statements stay simple.
 */
static const char schema_v1[] =
	"CREATE TABLE schema_version ("
	"  version INTEGER NOT NULL"
	");"
	"CREATE TABLE messages ("
	"  id                TEXT PRIMARY KEY,"
	"  received_at       INTEGER NOT NULL,"
	"  sender            TEXT NOT NULL,"
	"  client_ip         TEXT,"
	"  helo              TEXT,"
	"  protocol          TEXT,"
	"  auth_user         TEXT,"
	"  body_8bitmime     INTEGER NOT NULL CHECK (body_8bitmime IN (0, 1)),"
	"  smtputf8          INTEGER NOT NULL CHECK (smtputf8 IN (0, 1)),"
	"  size              INTEGER NOT NULL,"
	"  message_id_header TEXT,"
	"  subject           TEXT"
	/* Keyed by the queue id alone: a rowid table would keep a second
	 * b-tree for the id, one more page written by every commit. */
	") WITHOUT ROWID;"
	/* Bodies apart, so that listing messages never pages through them. */
	"CREATE TABLE message_contents ("
	"  message_id TEXT PRIMARY KEY"
	"             REFERENCES messages (id) ON DELETE CASCADE,"
	"  content    BLOB NOT NULL"
	");"
	"CREATE TABLE recipients ("
	"  id              INTEGER PRIMARY KEY,"
	"  message_id      TEXT NOT NULL"
	"                  REFERENCES messages (id) ON DELETE CASCADE,"
	"  address         TEXT NOT NULL,"
	"  route           TEXT,"
	"  action          TEXT NOT NULL,"
	"  action_params   TEXT,"
	"  state           TEXT NOT NULL DEFAULT 'queued'"
	/* Comparisons, not "IN (...)": SQLite builds a temporary b-tree
	 * for an IN list on every row written, which made these checks
	 * cost more than the rest of the insert (measured). */
	"                  CHECK (state = 'queued' OR state = 'delivering'"
	"                         OR state = 'deferred' OR state = 'delivered'"
	"                         OR state = 'bounced' OR state = 'held'),"
	"  attempts        INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt_at INTEGER,"
	"  last_attempt_at INTEGER,"
	"  last_reply      TEXT,"
	"  destination     TEXT,"
	"  updated_at      INTEGER NOT NULL"
	");"
	/* The scheduler's question: what is due now. */
	"CREATE INDEX recipients_due ON recipients (state, next_attempt_at);"
	"CREATE INDEX recipients_message ON recipients (message_id);"
	"CREATE TABLE events ("
	"  id           INTEGER PRIMARY KEY,"
	"  message_id   TEXT NOT NULL"
	"               REFERENCES messages (id) ON DELETE CASCADE,"
	"  recipient_id INTEGER"
	"               REFERENCES recipients (id) ON DELETE CASCADE,"
	"  at           INTEGER NOT NULL,"
	"  kind         TEXT NOT NULL"
	"               CHECK (kind = 'received' OR kind = 'routed'"
	"                      OR kind = 'attempt' OR kind = 'delivered'"
	"                      OR kind = 'deferred' OR kind = 'bounced'"
	"                      OR kind = 'held' OR kind = 'released'"
	"                      OR kind = 'expired' OR kind = 'deleted'"
	"                      OR kind = 'retry'),"
	"  detail       TEXT"
	");"
	"CREATE INDEX events_message ON events (message_id);"
	/* Without it, deleting a recipient scans every event (the cascade). */
	"CREATE INDEX events_recipient ON events (recipient_id);"
	"CREATE VIEW queue_summary AS"
	"  SELECT state,"
	"         count(*) AS recipients,"
	"         count(DISTINCT message_id) AS messages"
	"  FROM recipients GROUP BY state;"
	"CREATE VIEW message_status AS"
	"  SELECT m.id AS id,"
	"         datetime(m.received_at, 'unixepoch') AS received,"
	"         m.received_at AS received_at,"
	"         m.sender AS sender,"
	"         m.size AS size,"
	"         m.subject AS subject,"
	"         (SELECT count(*) FROM recipients r"
	"           WHERE r.message_id = m.id) AS recipients,"
	"         (SELECT group_concat(s.state, ',') FROM"
	"           (SELECT DISTINCT r.state AS state FROM recipients r"
	"             WHERE r.message_id = m.id ORDER BY r.state) s) AS states"
	"  FROM messages m;"
	"CREATE VIEW recipient_status AS"
	"  SELECT r.message_id AS message_id,"
	"         r.id AS recipient_id,"
	"         m.sender AS sender,"
	"         r.address AS address,"
	"         r.route AS route,"
	"         r.action AS action,"
	"         r.action_params AS action_params,"
	"         r.state AS state,"
	"         r.attempts AS attempts,"
	"         datetime(r.next_attempt_at, 'unixepoch') AS next_attempt,"
	"         datetime(r.last_attempt_at, 'unixepoch') AS last_attempt,"
	"         r.last_reply AS last_reply,"
	"         r.destination AS destination,"
	"         datetime(r.updated_at, 'unixepoch') AS updated"
	"  FROM recipients r JOIN messages m ON m.id = r.message_id;"
	"CREATE VIEW message_history AS"
	"  SELECT e.message_id AS message_id,"
	"         e.id AS event_id,"
	"         datetime(e.at, 'unixepoch') AS time,"
	"         e.at AS at,"
	"         e.kind AS kind,"
	"         r.address AS recipient,"
	"         e.detail AS detail"
	"  FROM events e LEFT JOIN recipients r ON r.id = e.recipient_id"
	"  ORDER BY e.message_id, e.at, e.id;";

/*
 * Schema version 2: "received" and "routed" are no longer rows of events.
 * They said again what messages and recipients already hold, and writing
 * them was a third of every commit's pages (an events leaf and two index
 * leaves per batch; measured: 17.4 WAL frames per commit of four messages
 * before, 11.6 after).  message_history derives them, with the same kinds
 * and details, and gains a recipient_id column to order them.
 */
static const char schema_v2[] =
	"DELETE FROM events WHERE kind = 'received' OR kind = 'routed';"
	"DROP VIEW message_history;"
	"CREATE VIEW message_history AS"
	"  SELECT message_id, event_id, datetime(at, 'unixepoch') AS time, at,"
	"         kind, recipient_id, recipient, detail"
	"  FROM ("
	"    SELECT m.id AS message_id, NULL AS event_id, m.received_at AS at,"
	"           'received' AS kind, NULL AS recipient_id, NULL AS recipient,"
	"           'from=<' || m.sender || '> client=' || ifnull(m.client_ip, '')"
	"           || ' helo=' || ifnull(m.helo, '') || ' size=' || m.size"
	"           || ' nrcpt=' || (SELECT count(*) FROM recipients c"
	"                            WHERE c.message_id = m.id) AS detail"
	"    FROM messages m"
	"    UNION ALL"
	"    SELECT r.message_id, NULL, m.received_at, 'routed', r.id, r.address,"
	"           'route=' || ifnull(r.route, '') || ' action=' || r.action"
	"           || ' params=' || ifnull(r.action_params, '')"
	"    FROM recipients r JOIN messages m ON m.id = r.message_id"
	"    UNION ALL"
	"    SELECT e.message_id, e.id, e.at, e.kind, e.recipient_id, r.address,"
	"           e.detail"
	"    FROM events e LEFT JOIN recipients r ON r.id = e.recipient_id)"
	/* At the same second: received, then routed in recipient order,
	 * then the events as they were written (README). */
	"  ORDER BY message_id, at, event_id IS NOT NULL,"
	"           ifnull(event_id, recipient_id);";

/*
 * Schema version 3: history outlives the queue.  A message that leaves
 * messages (delivered or bounced and retired, purged after
 * keep_delivered, deleted by the operator or by hand) leaves its
 * envelope, recipients and events in the history_ tables, copied by a
 * trigger in the same transaction, so that no path forgets it; the
 * scheduler purges them queue.keep_history after finished_at.  Ids of
 * recipients and events are kept as columns, not keys: SQLite may give
 * a deleted row's id to a new one.
 */
static const char schema_v3[] =
	"CREATE TABLE history_messages ("
	"  id                TEXT PRIMARY KEY,"
	"  received_at       INTEGER NOT NULL,"
	"  sender            TEXT NOT NULL,"
	"  client_ip         TEXT,"
	"  helo              TEXT,"
	"  protocol          TEXT,"
	"  auth_user         TEXT,"
	"  body_8bitmime     INTEGER NOT NULL,"
	"  smtputf8          INTEGER NOT NULL,"
	"  size              INTEGER NOT NULL,"
	"  message_id_header TEXT,"
	"  subject           TEXT,"
	"  finished_at       INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX history_messages_finished ON history_messages (finished_at);"
	"CREATE TABLE history_recipients ("
	"  seq             INTEGER PRIMARY KEY,"
	"  message_id      TEXT NOT NULL,"
	"  recipient_id    INTEGER NOT NULL,"
	"  address         TEXT NOT NULL,"
	"  route           TEXT,"
	"  action          TEXT NOT NULL,"
	"  action_params   TEXT,"
	"  state           TEXT NOT NULL,"
	"  attempts        INTEGER NOT NULL,"
	"  next_attempt_at INTEGER,"
	"  last_attempt_at INTEGER,"
	"  last_reply      TEXT,"
	"  destination     TEXT,"
	"  updated_at      INTEGER NOT NULL"
	");"
	"CREATE INDEX history_recipients_message ON history_recipients"
	"  (message_id);"
	"CREATE TABLE history_events ("
	"  seq          INTEGER PRIMARY KEY,"
	"  message_id   TEXT NOT NULL,"
	"  event_id     INTEGER NOT NULL,"
	"  recipient_id INTEGER,"
	"  at           INTEGER NOT NULL,"
	"  kind         TEXT NOT NULL,"
	"  detail       TEXT"
	");"
	"CREATE INDEX history_events_message ON history_events (message_id);"
	/* BEFORE: the recipients and events are still there (the cascade
	 * comes after). */
	"CREATE TRIGGER messages_keep_history BEFORE DELETE ON messages"
	" BEGIN"
	"  INSERT OR REPLACE INTO history_messages (id, received_at, sender,"
	"    client_ip, helo, protocol, auth_user, body_8bitmime, smtputf8,"
	"    size, message_id_header, subject, finished_at)"
	"  VALUES (old.id, old.received_at, old.sender, old.client_ip, old.helo,"
	"    old.protocol, old.auth_user, old.body_8bitmime, old.smtputf8,"
	"    old.size, old.message_id_header, old.subject,"
	"    max(old.received_at,"
	"        ifnull((SELECT max(updated_at) FROM recipients"
	"                WHERE message_id = old.id), 0),"
	"        ifnull((SELECT max(at) FROM events"
	"                WHERE message_id = old.id), 0)));"
	"  INSERT INTO history_recipients (message_id, recipient_id, address,"
	"    route, action, action_params, state, attempts, next_attempt_at,"
	"    last_attempt_at, last_reply, destination, updated_at)"
	"  SELECT message_id, id, address, route, action, action_params, state,"
	"    attempts, next_attempt_at, last_attempt_at, last_reply,"
	"    destination, updated_at FROM recipients WHERE message_id = old.id"
	"    ORDER BY id;"
	"  INSERT INTO history_events (message_id, event_id, recipient_id, at,"
	"    kind, detail)"
	"  SELECT message_id, id, recipient_id, at, kind, detail FROM events"
	"    WHERE message_id = old.id ORDER BY id;"
	" END;"
	/* message_history for what left the queue: the same columns. */
	"CREATE VIEW history_trace AS"
	"  SELECT message_id, event_id, datetime(at, 'unixepoch') AS time, at,"
	"         kind, recipient_id, recipient, detail"
	"  FROM ("
	"    SELECT m.id AS message_id, NULL AS event_id, m.received_at AS at,"
	"           'received' AS kind, NULL AS recipient_id, NULL AS recipient,"
	"           'from=<' || m.sender || '> client=' || ifnull(m.client_ip, '')"
	"           || ' helo=' || ifnull(m.helo, '') || ' size=' || m.size"
	"           || ' nrcpt=' || (SELECT count(*) FROM history_recipients c"
	"                            WHERE c.message_id = m.id) AS detail"
	"    FROM history_messages m"
	"    UNION ALL"
	"    SELECT r.message_id, NULL, m.received_at, 'routed', r.recipient_id,"
	"           r.address, 'route=' || ifnull(r.route, '') || ' action='"
	"           || r.action || ' params=' || ifnull(r.action_params, '')"
	"    FROM history_recipients r JOIN history_messages m"
	"      ON m.id = r.message_id"
	"    UNION ALL"
	"    SELECT e.message_id, e.event_id, e.at, e.kind, e.recipient_id,"
	"           r.address, e.detail"
	"    FROM history_events e LEFT JOIN history_recipients r"
	"      ON r.message_id = e.message_id"
	"      AND r.recipient_id = e.recipient_id)"
	"  ORDER BY message_id, at, event_id IS NOT NULL,"
	"           ifnull(event_id, recipient_id);";

/*
 * Schema version 4: the DSN extension (RFC 3461), xtext decoded.  Per
 * message RET ('FULL', 'HDRS', NULL when not given) and ENVID; per
 * recipient NOTIFY ('NEVER' or a comma list of SUCCESS, FAILURE, DELAY,
 * NULL when not given) and ORCPT ('addr-type;address').
 */
static const char schema_v4[] =
	"ALTER TABLE messages ADD COLUMN dsn_ret TEXT"
	"  CHECK (dsn_ret IN ('FULL', 'HDRS'));"
	"ALTER TABLE messages ADD COLUMN dsn_envid TEXT;"
	"ALTER TABLE recipients ADD COLUMN dsn_notify TEXT;"
	"ALTER TABLE recipients ADD COLUMN dsn_orcpt TEXT;";

/*
 * Schema version 5: the relay client's TLS (relay.h, mta_sts.h).
 * mta_sts_policies: the MTA-STS policy of a recipient domain (RFC 8461),
 * as fetched, kept until expires_at (fetched_at + max_age); mx is its
 * patterns separated by spaces.  tls_results: TLS-RPT (RFC 8460) counts
 * per UTC day, recipient domain, policy applied ('sts', 'tlsa',
 * 'no-policy-found' and its lines), MX host, RFC 8460 result type (''
 * for a successful session) and addresses.
 */
static const char schema_v5[] =
	"CREATE TABLE mta_sts_policies ("
	"  domain      TEXT PRIMARY KEY,"
	"  policy_id   TEXT NOT NULL,"
	"  mode        TEXT NOT NULL CHECK (mode IN ('none', 'testing',"
	"                'enforce')),"
	"  mx          TEXT NOT NULL,"
	"  max_age     INTEGER NOT NULL,"
	"  fetched_at  INTEGER NOT NULL,"
	"  expires_at  INTEGER NOT NULL);"
	"CREATE TABLE tls_results ("
	"  day          TEXT NOT NULL,"
	"  domain       TEXT NOT NULL,"
	"  policy_type  TEXT NOT NULL CHECK (policy_type IN ('sts', 'tlsa',"
	"                 'no-policy-found')),"
	"  policy       TEXT NOT NULL,"
	"  mx_host      TEXT NOT NULL,"
	"  result_type  TEXT NOT NULL,"
	"  sending_ip   TEXT NOT NULL,"
	"  receiving_ip TEXT NOT NULL,"
	"  sessions     INTEGER NOT NULL,"
	"  PRIMARY KEY (day, domain, policy_type, policy, mx_host,"
	"    result_type, sending_ip, receiving_ip));";

/*
 * Schema version 6: the DSN parameters outlive the queue with the rest
 * of the envelope (mxgatectl queue trace): history_messages gets dsn_ret
 * and dsn_envid, history_recipients dsn_notify and dsn_orcpt, and the
 * trigger copies them.  Rows copied before have none (NULL).
 */
static const char schema_v6[] =
	"ALTER TABLE history_messages ADD COLUMN dsn_ret TEXT;"
	"ALTER TABLE history_messages ADD COLUMN dsn_envid TEXT;"
	"ALTER TABLE history_recipients ADD COLUMN dsn_notify TEXT;"
	"ALTER TABLE history_recipients ADD COLUMN dsn_orcpt TEXT;"
	"DROP TRIGGER IF EXISTS messages_keep_history;"
	"CREATE TRIGGER messages_keep_history BEFORE DELETE ON messages"
	" BEGIN"
	"  INSERT OR REPLACE INTO history_messages (id, received_at, sender,"
	"    client_ip, helo, protocol, auth_user, body_8bitmime, smtputf8,"
	"    size, message_id_header, subject, finished_at, dsn_ret,"
	"    dsn_envid)"
	"  VALUES (old.id, old.received_at, old.sender, old.client_ip, old.helo,"
	"    old.protocol, old.auth_user, old.body_8bitmime, old.smtputf8,"
	"    old.size, old.message_id_header, old.subject,"
	"    max(old.received_at,"
	"        ifnull((SELECT max(updated_at) FROM recipients"
	"                WHERE message_id = old.id), 0),"
	"        ifnull((SELECT max(at) FROM events"
	"                WHERE message_id = old.id), 0)),"
	"    old.dsn_ret, old.dsn_envid);"
	"  INSERT INTO history_recipients (message_id, recipient_id, address,"
	"    route, action, action_params, state, attempts, next_attempt_at,"
	"    last_attempt_at, last_reply, destination, updated_at, dsn_notify,"
	"    dsn_orcpt)"
	"  SELECT message_id, id, address, route, action, action_params, state,"
	"    attempts, next_attempt_at, last_attempt_at, last_reply,"
	"    destination, updated_at, dsn_notify, dsn_orcpt FROM recipients"
	"    WHERE message_id = old.id ORDER BY id;"
	"  INSERT INTO history_events (message_id, event_id, recipient_id, at,"
	"    kind, detail)"
	"  SELECT message_id, id, recipient_id, at, kind, detail FROM events"
	"    WHERE message_id = old.id ORDER BY id;"
	" END;";

/*
 * Migrations, in order: migrations[i] takes the schema from version
 * migrations[i].version - 1 to migrations[i].version.  Each runs in its own
 * transaction together with the update of schema_version.
 */
static const struct migration {
	int         version;
	const char *sql;
} migrations[] = {
	{ 1, schema_v1 },
	{ 2, schema_v2 },
	{ 3, schema_v3 },
	{ 4, schema_v4 },
	{ 5, schema_v5 },
	{ 6, schema_v6 },
};

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_INSERT_MESSAGE,
	ST_INSERT_CONTENT,
	ST_INSERT_RCPT,
	ST_INSERT_EVENT,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	/* IMMEDIATE: take the write lock at BEGIN, so that a batch never
	 * fails half-way on a lock upgrade. */
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_INSERT_MESSAGE] =
	    "INSERT INTO messages (id, received_at, sender, client_ip, helo,"
	    " protocol, auth_user, body_8bitmime, smtputf8, size,"
	    " message_id_header, subject, dsn_ret, dsn_envid)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	    " ?14)",
	[ST_INSERT_CONTENT] =
	    "INSERT INTO message_contents (message_id, content) VALUES (?1, ?2)",
	[ST_INSERT_RCPT] =
	    "INSERT INTO recipients (message_id, address, route, action,"
	    " action_params, state, next_attempt_at, updated_at, dsn_notify,"
	    " dsn_orcpt)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?9, ?6, ?6, ?7, ?8)",
	/* A message committed held (a milter's quarantine): why, in its
	 * history, as mxgatectl's hold writes it. */
	[ST_INSERT_EVENT] =
	    "INSERT INTO events (message_id, recipient_id, at, kind, detail)"
	    " VALUES (?1, NULL, ?2, 'held', ?3)",
};

_Static_assert(ST_COUNT == QDB_INSERT_STMTS, "QDB_INSERT_STMTS");

/* A header field value being collected from the header block. */
struct header_value {
	const char *name;
	size_t      namelen;
	bool        found;
	size_t      len;
	char        text[HEADER_VALUE_MAX + 1];
};

/* A full file system or quota: SQLITE_FULL from a write, or an I/O
 * error (a sync, a WAL append) whose errno says the same.  Either, an
 * I/O error, or a transaction SQLite rolled back by itself also spoils
 * the delivery side's open transaction (queue_db_txn_broken()). */
void
qdb_note_error(struct queue_db *db)
{
	int sys = sqlite3_system_errno(db->h);
	int code = sqlite3_errcode(db->h) & 0xff;

	db->out_of_space = code == SQLITE_FULL || sys == ENOSPC ||
	    sys == EDQUOT;
	if (db->out_of_space || code == SQLITE_IOERR ||
	    sqlite3_get_autocommit(db->h))
		db->txn_broken = true;
}

void
qdb_log_error(struct queue_db *db, const char *what)
{
	qdb_note_error(db);
	log_error("queue database %s: %s: %s", db->path, what,
	    sqlite3_errmsg(db->h));
}

/* On the insert path the queue id says more than the file name. */
static void
insert_log_error(struct queue_db *db, const char *queue_id, const char *what)
{
	qdb_note_error(db);
	log_error("%s queue insert failed, message not queued: %s: %s",
	    queue_id, what, sqlite3_errmsg(db->h));
}

int
qdb_exec(struct queue_db *db, const char *sql, const char *what)
{
	char *err = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &err) != SQLITE_OK) {
		log_error("queue database %s: %s: %s", db->path, what,
		    err != NULL ? err : sqlite3_errmsg(db->h));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

/*
 * Run a prepared statement that returns no rows, and make it reusable.
 * queue_id: the message it is for, when there is one (for the log).
 */
static int
run_stmt(struct queue_db *db, enum stmt_id id, const char *queue_id,
    const char *what)
{
	sqlite3_stmt *st = db->stmt[id];
	int rc;

	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		if (queue_id != NULL)
			insert_log_error(db, queue_id, what);
		else
			qdb_log_error(db, what);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* One integer from a query with no parameters; -1 when it fails. */
static int
query_int(struct queue_db *db, const char *sql, long long *out)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, "reading the schema");
		return -1;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 :
		    sqlite3_column_int64(st, 0);
	else
		qdb_log_error(db, "reading the schema");
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

/*
 * The schema version: 0 for an empty database, -1 (logged) for one that is
 * not an mxgate queue or cannot be read.
 */
static int
schema_version(struct queue_db *db, int *version)
{
	long long n, v;

	if (query_int(db, "SELECT count(*) FROM sqlite_master WHERE"
	    " type = 'table' AND name = 'schema_version'", &n) == -1)
		return -1;
	if (n == 0) {
		if (query_int(db, "SELECT count(*) FROM sqlite_master", &n) == -1)
			return -1;
		/* Never build a queue inside somebody else's database. */
		if (n != 0) {
			log_error("queue database %s: not an mxgate queue"
			    " (no schema_version table)", db->path);
			return -1;
		}
		*version = 0;
		return 0;
	}
	if (query_int(db, "SELECT max(version) FROM schema_version", &v) == -1)
		return -1;
	if (v < 1 || v > 1000000) {
		log_error("queue database %s: bad schema_version %lld",
		    db->path, v);
		return -1;
	}
	*version = (int)v;
	return 0;
}

static int
apply_migration(struct queue_db *db, const struct migration *m)
{
	char sql[128];
	int version;

	if (qdb_exec(db, "BEGIN IMMEDIATE", "migration") == -1)
		return -1;
	/* Another process may have migrated while we waited for the lock. */
	if (schema_version(db, &version) == -1)
		goto fail;
	if (version >= m->version) {
		qdb_exec(db, "ROLLBACK", "migration");
		return 0;
	}
	snprintf(sql, sizeof(sql), "DELETE FROM schema_version;"
	    " INSERT INTO schema_version (version) VALUES (%d);", m->version);
	if (qdb_exec(db, m->sql, "migration") == -1 ||
	    qdb_exec(db, sql, "migration") == -1 ||
	    qdb_exec(db, "COMMIT", "migration") == -1)
		goto fail;
	log_info("queue database %s: schema migrated to version %d",
	    db->path, m->version);
	return 0;
fail:
	if (!sqlite3_get_autocommit(db->h))
		qdb_exec(db, "ROLLBACK", "migration");
	return -1;
}

static int
migrate(struct queue_db *db)
{
	size_t i;
	int version;

	if (schema_version(db, &version) == -1)
		return -1;
	if (version > QUEUE_SCHEMA_VERSION) {
		log_error("queue database %s: schema version %d is newer than"
		    " this mxgate knows (%d); refusing to use it (upgrade"
		    " mxgate, never downgrade a queue)", db->path, version,
		    QUEUE_SCHEMA_VERSION);
		return -1;
	}
	if (version == QUEUE_SCHEMA_VERSION)
		return 0;
	if (db->readonly && version == 0) {
		log_error("queue database %s: empty, not a queue yet (start"
		    " mxgated once to create it)", db->path);
		return -1;
	}
	if (db->readonly) {
		log_error("queue database %s: schema version %d, expected %d"
		    " (start mxgated once to migrate it)", db->path, version,
		    QUEUE_SCHEMA_VERSION);
		return -1;
	}
	for (i = 0; i < ARRAY_LEN(migrations); i++) {
		if (migrations[i].version > version &&
		    migrations[i].version <= QUEUE_SCHEMA_VERSION &&
		    apply_migration(db, &migrations[i]) == -1)
			return -1;
	}
	return 0;
}

/* journal_mode answers with the mode in force: check it, a silent
 * fallback to a rollback journal would cost every commit dearly. */
static int
enable_wal(struct queue_db *db)
{
	sqlite3_stmt *st;
	const char *mode = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db->h, "PRAGMA journal_mode = WAL", -1, &st,
	    NULL) != SQLITE_OK) {
		qdb_log_error(db, "journal_mode");
		return -1;
	}
	if (sqlite3_step(st) == SQLITE_ROW)
		mode = (const char *)sqlite3_column_text(st, 0);
	if (mode != NULL && strcasecmp(mode, "wal") == 0)
		rc = 0;
	else
		log_error("queue database %s: cannot enable WAL mode (%s)",
		    db->path, mode != NULL ? mode : sqlite3_errmsg(db->h));
	sqlite3_finalize(st);
	return rc;
}

static int
configure_connection(struct queue_db *db)
{
	long long n;

	if (sqlite3_busy_timeout(db->h, 5000) != SQLITE_OK) {
		qdb_log_error(db, "busy timeout");
		return -1;
	}
	/* A read-only connection cannot change the mode; it reads a WAL
	 * database as one all the same. */
	if (!db->readonly && enable_wal(db) == -1)
		return -1;
	/*
	 * synchronous FULL: in WAL mode every commit is on disk before it
	 * returns, one fdatasync of the WAL.  temp_store MEMORY keeps statement
	 * journals in memory: in a temporary file they cost dozens of
	 * write(2) calls per message.  secure_delete FAST: Debian's SQLite
	 * zeroes every deleted page by default, which wrote each delivered
	 * body a second time (WAL, then checkpoint: 358 KB written per
	 * 100 KB message); FAST still clears what is deleted inside pages
	 * it writes anyway, and the freed overflow pages of bodies are
	 * overwritten by the next messages.  The checkpoints: see
	 * queue_db_wal_budget().
	 */
	if (qdb_exec(db, "PRAGMA synchronous = FULL", "synchronous") == -1 ||
	    qdb_exec(db, "PRAGMA foreign_keys = ON", "foreign_keys") == -1 ||
	    qdb_exec(db, "PRAGMA temp_store = MEMORY", "temp_store") == -1 ||
	    qdb_exec(db, "PRAGMA secure_delete = FAST", "secure_delete") == -1)
		return -1;
	if (query_int(db, "PRAGMA foreign_keys", &n) == -1 || n != 1) {
		log_error("queue database %s: SQLite lacks foreign keys",
		    db->path);
		return -1;
	}
	return 0;
}

static int
prepare_statements(struct queue_db *db)
{
	int i;

	for (i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(db->h, stmt_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &db->stmt[i], NULL) != SQLITE_OK) {
			qdb_log_error(db, "preparing statements");
			return -1;
		}
	}
	return 0;
}

/*
 * Can this connection write?  A reader started as root (sqlite3, a
 * test, a backup script) that opens the database while no -shm file
 * exists creates one as root, and changes its owner to the database's
 * only a moment later: a writer opening the file in between maps it
 * read-only, and every write of its connection fails with
 * SQLITE_READONLY.  0 writable, 1 read-only, -1 another error.
 */
static int
probe_writable(struct queue_db *db)
{
	int rc = sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);

	if (rc == SQLITE_OK)
		return qdb_exec(db, "ROLLBACK", "write probe") == -1 ? -1 : 0;
	if ((rc & 0xff) == SQLITE_READONLY)
		return 1;
	qdb_log_error(db, "write probe");
	return -1;
}

static struct queue_db *open_once(const char *path, bool readonly,
    bool *retry);

/* A read-only mapping is a moment's state (probe_writable): a new
 * connection a little later sees the file its owner's. */
#define QDB_OPEN_ATTEMPTS 50		/* 100 ms apart */

struct queue_db *
queue_db_open(const char *path, bool readonly)
{
	struct queue_db *db;
	bool retry = false;

	for (int i = 0; i < QDB_OPEN_ATTEMPTS; i++) {
		db = open_once(path, readonly, &retry);
		if (db != NULL || !retry)
			return db;
		nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
	}
	log_error("queue database %s: writes fail with \"readonly\": %s-wal"
	    " and %s-shm must be writable by the queue user (chown them, or"
	    " remove them while mxgated is stopped)", path, path, path);
	return NULL;
}

static struct queue_db *
open_once(const char *path, bool readonly, bool *retry)
{
	struct queue_db *db;
	int flags, rc;

	db = xcalloc(1, sizeof(*db));
	db->path = xstrdup(path);
	db->readonly = readonly;
	flags = readonly ? SQLITE_OPEN_READONLY :
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	/* Writers gather each transaction's WAL frames into one write. */
	rc = sqlite3_open_v2(path, &db->h, flags,
	    readonly ? NULL : queue_vfs_name());
	if (rc != SQLITE_OK) {
		log_error("queue database %s: cannot open: %s", path,
		    db->h != NULL ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(db->h, 1);
	if (configure_connection(db) == -1)
		goto fail;
	if (!readonly && (rc = probe_writable(db)) != 0) {
		*retry = rc == 1;
		goto fail;
	}
	/* The WAL file outlives the connection, written-ahead blocks and
	 * all (queue_db_wal_budget()): a restart does not write it again. */
	if (!readonly) {
		int persist = 1;

		sqlite3_file_control(db->h, "main", SQLITE_FCNTL_PERSIST_WAL,
		    &persist);
	}
	if (migrate(db) == -1)
		goto fail;
	if (!readonly) {
		long long sync;

		if (query_int(db, "PRAGMA synchronous", &sync) == -1)
			goto fail;
		db->lower_sync = sync >= 2;
	}
	if (!readonly && prepare_statements(db) == -1)
		goto fail;
	return db;
fail:
	queue_db_close(db);
	return NULL;
}

void
queue_db_close(struct queue_db *db)
{
	int i;

	if (db == NULL)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(db->stmt[i]);
	for (i = 0; i < QDB_DELIVERY_STMTS; i++)
		sqlite3_finalize(db->dstmt[i]);
	/* _v2: statements a caller prepared on the handle and forgot do
	 * not keep the file open forever. */
	if (db->h != NULL && sqlite3_close_v2(db->h) != SQLITE_OK)
		log_error("queue database %s: close: %s", db->path,
		    sqlite3_errmsg(db->h));
	free(db->path);
	free(db);
}

void
qdb_save_error(struct queue_db *db)
{
	snprintf(db->err, sizeof(db->err), "%s", sqlite3_errmsg(db->h));
	db->err_code = sqlite3_errcode(db->h);
}

char *
qdb_column_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? xstrdup((const char *)t) : NULL;
}

int
qdb_check_writable(struct queue_db *db)
{
	if (db->readonly) {
		log_error("queue database %s: opened read-only", db->path);
		return -1;
	}
	return 0;
}

int
queue_db_begin(struct queue_db *db)
{
	if (qdb_check_writable(db) == -1)
		return -1;
	db->out_of_space = false;
	return run_stmt(db, ST_BEGIN, NULL, "begin");
}

bool
queue_db_out_of_space(const struct queue_db *db)
{
	return db->out_of_space;
}

int
queue_db_commit(struct queue_db *db)
{
	if (qdb_check_writable(db) == -1)
		return -1;
	return run_stmt(db, ST_COMMIT, NULL, "commit");
}

int
queue_db_rollback(struct queue_db *db)
{
	if (qdb_check_writable(db) == -1)
		return -1;
	/* A failed COMMIT or an I/O error may have ended the transaction
	 * already; there is nothing left to undo then. */
	if (sqlite3_get_autocommit(db->h))
		return 0;
	return run_stmt(db, ST_ROLLBACK, NULL, "rollback");
}

/* Append a header line's bytes to a value being collected (unfolding). */
static void
header_append(struct header_value *hv, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && hv->len < HEADER_VALUE_MAX; i++) {
		/* A NUL would cut the TEXT short in C clients. */
		if (p[i] != '\0' && p[i] != '\r')
			hv->text[hv->len++] = p[i];
	}
	hv->text[hv->len] = '\0';
}

static void
header_trim(struct header_value *hv)
{
	size_t start = 0;

	while (hv->len > 0 && (hv->text[hv->len - 1] == ' ' ||
	    hv->text[hv->len - 1] == '\t'))
		hv->len--;
	while (start < hv->len && (hv->text[start] == ' ' ||
	    hv->text[start] == '\t'))
		start++;
	memmove(hv->text, hv->text + start, hv->len - start);
	hv->len -= start;
	hv->text[hv->len] = '\0';
}

/*
 * Collect the first occurrence of each wanted field from the header block
 * (up to the first empty line), raw: folded lines are joined (RFC 5322
 * 2.2.3) but nothing is decoded.  Cheap on purpose: one pass over the
 * header block, nothing allocated.
 */
static void
scan_headers(const char *content, size_t len, struct header_value *hv,
    size_t nhv)
{
	struct header_value *cur = NULL;
	const char *p = content, *end = content + len, *eol, *colon;
	size_t i, linelen;

	while (p < end) {
		eol = memchr(p, '\n', (size_t)(end - p));
		linelen = eol != NULL ? (size_t)(eol - p) : (size_t)(end - p);
		if (linelen > 0 && p[linelen - 1] == '\r')
			linelen--;
		if (linelen == 0)
			break;                  /* end of the header block */
		if (p[0] == ' ' || p[0] == '\t') {
			if (cur != NULL)
				header_append(cur, p, linelen);
		} else {
			cur = NULL;
			colon = memchr(p, ':', linelen);
			for (i = 0; colon != NULL && i < nhv; i++) {
				if (!hv[i].found &&
				    (size_t)(colon - p) == hv[i].namelen &&
				    strncasecmp(p, hv[i].name, hv[i].namelen) == 0) {
					cur = &hv[i];
					cur->found = true;
					header_append(cur, colon + 1,
					    linelen - (size_t)(colon + 1 - p));
					break;
				}
			}
		}
		if (eol == NULL)
			break;
		p = eol + 1;
	}
	for (i = 0; i < nhv; i++)
		if (hv[i].found)
			header_trim(&hv[i]);
}

void
qdb_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
	if (s != NULL)
		sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, idx);
}

static const char *
or_empty(const char *s)
{
	return s != NULL ? s : "";
}

static int
insert_message(struct queue_db *db, const struct envelope *env,
    const char *content, size_t content_len)
{
	struct header_value hv[2] = {
		{ .name = "Message-ID", .namelen = 10 },
		{ .name = "Subject", .namelen = 7 },
	};
	sqlite3_stmt *st;

	scan_headers(content, content_len, hv, ARRAY_LEN(hv));

	st = db->stmt[ST_INSERT_MESSAGE];
	sqlite3_bind_text(st, 1, env->queue_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, env->received_at);
	sqlite3_bind_text(st, 3, or_empty(env->sender), -1, SQLITE_STATIC);
	qdb_bind_text(st, 4, env->client_ip);
	qdb_bind_text(st, 5, env->helo);
	qdb_bind_text(st, 6, env->protocol);
	qdb_bind_text(st, 7, env->auth_user);
	sqlite3_bind_int(st, 8, env->body_8bitmime ? 1 : 0);
	sqlite3_bind_int(st, 9, env->smtputf8 ? 1 : 0);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)content_len);
	qdb_bind_text(st, 11, hv[0].found ? hv[0].text : NULL);
	qdb_bind_text(st, 12, hv[1].found ? hv[1].text : NULL);
	qdb_bind_text(st, 13, dsn_ret_name(env->dsn_ret));
	qdb_bind_text(st, 14, env->dsn_envid);
	if (run_stmt(db, ST_INSERT_MESSAGE, env->queue_id,
	    "insert message") == -1)
		return -1;

	st = db->stmt[ST_INSERT_CONTENT];
	sqlite3_bind_text(st, 1, env->queue_id, -1, SQLITE_STATIC);
	/* A NULL pointer would bind SQL NULL, not an empty blob. */
	if (content_len == 0)
		sqlite3_bind_zeroblob(st, 2, 0);
	else
		sqlite3_bind_blob64(st, 2, content, content_len, SQLITE_STATIC);
	if (run_stmt(db, ST_INSERT_CONTENT, env->queue_id,
	    "insert content") == -1)
		return -1;

	/* Its "received" event is message_history's (schema_v2). */
	return 0;
}

static int
insert_rcpt(struct queue_db *db, const struct envelope *env,
    const struct envelope_rcpt *rc)
{
	sqlite3_stmt *st = db->stmt[ST_INSERT_RCPT];
	char notify[DSN_NOTIFY_TEXT_MAX];

	sqlite3_bind_text(st, 1, env->queue_id, -1, SQLITE_STATIC);
	qdb_bind_text(st, 2, rc->address);
	qdb_bind_text(st, 3, rc->route);
	qdb_bind_text(st, 4, rc->action);
	qdb_bind_text(st, 5, rc->params);
	/* Due at once: the scheduler picks it up on its next pass. */
	sqlite3_bind_int64(st, 6, env->received_at);
	qdb_bind_text(st, 7, rc->dsn_notify != 0 ?
	    dsn_notify_format(rc->dsn_notify, notify) : NULL);
	qdb_bind_text(st, 8, rc->dsn_orcpt);
	sqlite3_bind_text(st, 9, env->hold_reason != NULL ? "held" : "queued",
	    -1, SQLITE_STATIC);
	/* Its "routed" event is message_history's (schema_v2). */
	return run_stmt(db, ST_INSERT_RCPT, env->queue_id, "insert recipient");
}

static int
insert_held(struct queue_db *db, const struct envelope *env)
{
	sqlite3_stmt *st = db->stmt[ST_INSERT_EVENT];

	sqlite3_bind_text(st, 1, env->queue_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, env->received_at);
	qdb_bind_text(st, 3, env->hold_reason);
	return run_stmt(db, ST_INSERT_EVENT, env->queue_id, "insert event");
}

int
queue_db_insert(struct queue_db *db, const struct envelope *env,
    const char *content, size_t content_len)
{
	bool own_transaction;
	size_t i;

	if (qdb_check_writable(db) == -1)
		return -1;
	/* No savepoint per message: they were a third of the insert's cost
	 * (measured with callgrind), and a failure is rare enough that the
	 * caller redoing its batch without the culprit is cheaper. */
	own_transaction = sqlite3_get_autocommit(db->h) != 0;
	if (own_transaction && queue_db_begin(db) == -1)
		return -1;
	if (insert_message(db, env, content, content_len) == -1)
		goto fail;
	for (i = 0; i < env->nrcpts; i++)
		if (insert_rcpt(db, env, &env->rcpts[i]) == -1)
			goto fail;
	if (env->hold_reason != NULL && insert_held(db, env) == -1)
		goto fail;
	if (own_transaction && queue_db_commit(db) == -1)
		goto fail;
	return 0;
fail:
	if (own_transaction)
		queue_db_rollback(db);
	return -1;
}

/* ---- the queue lock (see queue_db.h) ---- */

#define QUEUE_LOCK_POLL_US 50000

static long
lock_holder(int fd)
{
	char text[32];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);

	if (n <= 0)
		return 0;
	text[n] = '\0';
	return strtol(text, NULL, 10);
}

/*
 * Wait for flock(fd, operation | LOCK_NB) to succeed, saying once who is
 * in the way.  0 once locked, -1 (logged) on timeout or error.
 */
static int
lock_within(int fd, const char *path, int operation, unsigned wait_seconds)
{
	uint64_t deadline = monotonic_ms() + (uint64_t)wait_seconds * 1000;
	bool told = false;

	while (flock(fd, operation | LOCK_NB) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			log_error("%s: flock: %s", path, strerror(errno));
			return -1;
		}
		if (monotonic_ms() >= deadline) {
			log_error("%s: the queue is in use by process %ld (another"
			    " mxgated on this queue directory?)", path,
			    lock_holder(fd));
			return -1;
		}
		if (!told) {
			log_warn("%s: waiting up to %u s for process %ld to"
			    " release the queue", path, wait_seconds,
			    lock_holder(fd));
			told = true;
		}
		usleep(QUEUE_LOCK_POLL_US);
	}
	return 0;
}

int
queue_lock(const char *path, unsigned wait_seconds)
{
	char pid[32];
	int fd, len;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_error("%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (lock_within(fd, path, LOCK_EX, wait_seconds) < 0) {
		close(fd);
		return -1;
	}
	len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
		log_warn("%s: cannot record our pid: %s", path, strerror(errno));
	return fd;
}

int
queue_lock_wait(const char *path, unsigned wait_seconds)
{
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		log_error("%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	/* A shared lock is granted only when no queue process holds it. */
	rc = lock_within(fd, path, LOCK_SH, wait_seconds);
	close(fd);
	return rc;
}

/*
 * The WAL pages after which a commit checkpoints: SQLite's default, 1000
 * (4 MB), up to 16384 (64 MB) where the file system has room for it.  A
 * checkpoint copies the newest version of each page once, so a page
 * written again before it (the pages of a delivered body reused by the
 * next messages) costs one copy, not one per write: with a 64 MB WAL a
 * relayed 100 KB message wrote 137 KB to disk instead of 201 KB, and the
 * queue process spent 0.58 ms on it instead of 0.69 ms (fewer
 * checkpoints, each with its fsyncs).  The WAL never takes more than a
 * quarter of the free space: it is reused only after a checkpoint, which
 * a commit that cannot grow it never reaches.
 */
#define WAL_PAGES_MIN  1000
#define WAL_PAGES_MAX  16384
#define WAL_PAGE_BYTES 4096
#define WAL_FRAME_BYTES (WAL_PAGE_BYTES + 24)   /* header and page */

/*
 * The WAL file is written ahead, zeros up to its budget, a step at a
 * time: a commit that appends to a file makes its fdatasync write the
 * new size and block allocation as well as the data; one that writes
 * over blocks already on disk syncs the data alone.  Measured at one
 * session (A/B on fresh daemons), the reply to the end of data took
 * 466 us (median) without it, 400 us with it.  Zeros after the last
 * frame are what SQLite finds there after a crash anyway: no valid frame.
 * Only under the write lock (mxgatectl's commands append frames too),
 * past the end of the file, and where the file system has room to
 * spare; a disk that refuses gets the file back as it was.
 */
/* A step holds the queue process for its write and fdatasync, once a
 * second: 2 MB about 3 ms on this project's VM (8 MB: 12 ms); 64 MB
 * then take 32 s. */
#define WAL_AHEAD_STEP  (2U << 20)     /* written per call, at most */
#define WAL_AHEAD_ROOM  16             /* free space: this many times more */

static void
wal_write_ahead(struct queue_db *db, uint64_t target)
{
	static const char zeros[65536];
	char path[4096];
	struct stat st;
	uint64_t off, end;
	int fd;

	if (snprintf(path, sizeof(path), "%s-wal", db->path) >= (int)sizeof(path) ||
	    !sqlite3_get_autocommit(db->h) ||
	    sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return;
	/* O_APPEND: every write past the end, never over a frame. */
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto out;
	off = (uint64_t)st.st_size;
	if (off >= target) {
		db->wal_ahead = off;
		goto out;
	}
	end = target - off > WAL_AHEAD_STEP ? off + WAL_AHEAD_STEP : target;
	for (; off < end; off += sizeof(zeros)) {
		size_t n = end - off < sizeof(zeros) ? (size_t)(end - off) :
		    sizeof(zeros);

		if (fd_write_all(fd, zeros, n) < 0)
			break;
	}
	if (off < end || fdatasync(fd) < 0) {
		log_warn("queue database %s: writing its WAL ahead: %s"
		    " (left as it was)", db->path, strerror(errno));
		if (ftruncate(fd, st.st_size) < 0)
			log_warn("queue database %s: truncating its WAL back: %s",
			    db->path, strerror(errno));
		/* Not again in this process. */
		db->wal_ahead = UINT64_MAX;
	} else
		db->wal_ahead = end;
out:
	if (fd >= 0)
		close(fd);
	sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

void
queue_db_wal_budget(struct queue_db *db, uint64_t free_bytes)
{
	uint64_t pages = free_bytes / 4 / WAL_PAGE_BYTES, target;

	if (pages < WAL_PAGES_MIN)
		pages = WAL_PAGES_MIN;
	if (pages > WAL_PAGES_MAX)
		pages = WAL_PAGES_MAX;
	/* Steps of an eighth: no call at every measure. */
	if (pages != db->wal_pages && (db->wal_pages == 0 ||
	    (pages > db->wal_pages ? pages - db->wal_pages :
	    db->wal_pages - pages) >= WAL_PAGES_MAX / 8 ||
	    pages == WAL_PAGES_MIN || pages == WAL_PAGES_MAX) &&
	    sqlite3_wal_autocheckpoint(db->h, (int)pages) == SQLITE_OK)
		db->wal_pages = (unsigned)pages;
	target = 32 + (uint64_t)db->wal_pages * WAL_FRAME_BYTES;
	if (db->wal_pages != 0 && !db->readonly && db->wal_ahead < target &&
	    free_bytes / WAL_AHEAD_ROOM >= target)
		wal_write_ahead(db, target);
}
