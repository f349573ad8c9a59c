/*
 * queue_db_tls — the relay client's TLS in the queue store: the MTA-STS
 * policy cache and the TLS-RPT counts (queue_db.h).  Low rates (one
 * policy per domain and max_age, one row update per TLS session, a purge
 * a minute), so the statements are prepared at each use.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "queue/queue_db_private.h"

int
queue_db_sts_get(struct queue_db *db, const char *domain, int64_t now,
    char **line)
{
	sqlite3_stmt *st;
	int rc, r = -1;

	*line = NULL;
	if (sqlite3_prepare_v2(db->h, "SELECT policy_id || ' ' || mode || ' '"
	    " || max_age || ' ' || fetched_at || ' ' || mx"
	    " FROM mta_sts_policies WHERE domain = ? AND expires_at > ?",
	    -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, "reading an MTA-STS policy");
		return -1;
	}
	qdb_bind_text(st, 1, domain);
	sqlite3_bind_int64(st, 2, now);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*line = qdb_column_dup(st, 0);
		r = *line != NULL;
	} else if (rc == SQLITE_DONE) {
		r = 0;
	} else {
		qdb_log_error(db, "reading an MTA-STS policy");
	}
	sqlite3_finalize(st);
	return r;
}

int
queue_db_sts_put(struct queue_db *db, const char *domain, const char *id,
    const char *mode, int64_t max_age, int64_t fetched_at, const char *mx)
{
	sqlite3_stmt *st;
	int rc;

	if (qdb_check_writable(db) < 0)
		return -1;
	if (sqlite3_prepare_v2(db->h, "INSERT OR REPLACE INTO mta_sts_policies"
	    " (domain, policy_id, mode, mx, max_age, fetched_at, expires_at)"
	    " VALUES (?, ?, ?, ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, "storing an MTA-STS policy");
		return -1;
	}
	qdb_bind_text(st, 1, domain);
	qdb_bind_text(st, 2, id);
	qdb_bind_text(st, 3, mode);
	qdb_bind_text(st, 4, mx);
	sqlite3_bind_int64(st, 5, max_age);
	sqlite3_bind_int64(st, 6, fetched_at);
	sqlite3_bind_int64(st, 7, fetched_at + max_age);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		qdb_log_error(db, "storing an MTA-STS policy");
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* One DELETE of what is older than t (bound as ?1): the rows deleted,
 * -1 (logged, as what) on error. */
static int
delete_before(struct queue_db *db, const char *sql, int64_t t,
    const char *what)
{
	sqlite3_stmt *st;
	int rc;

	if (qdb_check_writable(db) < 0)
		return -1;
	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, what);
		return -1;
	}
	sqlite3_bind_int64(st, 1, t);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		qdb_log_error(db, what);
		return -1;
	}
	return sqlite3_changes(db->h);
}

int
queue_db_sts_purge(struct queue_db *db, int64_t now)
{
	/* The same test as queue_db_sts_get(): what it would no longer
	 * return. */
	return delete_before(db, "DELETE FROM mta_sts_policies"
	    " WHERE expires_at <= ?1", now, "purging expired MTA-STS policies");
}

int
queue_db_tls_result(struct queue_db *db, const struct queue_tls_result *r)
{
	sqlite3_stmt *st;
	int rc;

	if (qdb_check_writable(db) < 0)
		return -1;
	if (sqlite3_prepare_v2(db->h, "INSERT INTO tls_results (day, domain,"
	    " policy_type, policy, mx_host, result_type, sending_ip,"
	    " receiving_ip, sessions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
	    " ON CONFLICT DO UPDATE SET sessions = sessions + excluded.sessions",
	    -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, "counting a TLS result");
		return -1;
	}
	qdb_bind_text(st, 1, r->day);
	qdb_bind_text(st, 2, r->domain);
	qdb_bind_text(st, 3, r->policy_type);
	qdb_bind_text(st, 4, r->policy);
	qdb_bind_text(st, 5, r->mx_host);
	qdb_bind_text(st, 6, r->result_type);
	qdb_bind_text(st, 7, r->sending_ip);
	qdb_bind_text(st, 8, r->receiving_ip);
	sqlite3_bind_int64(st, 9, r->sessions);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		qdb_log_error(db, "counting a TLS result");
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static const char *
col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? (const char *)t : "";
}

int
queue_db_tls_results(struct queue_db *db, const char *day,
    const char *domain, int (*fn)(const struct queue_tls_result *, void *),
    void *arg)
{
	struct queue_tls_result r;
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, "SELECT day, domain, policy_type, policy,"
	    " mx_host, result_type, sending_ip, receiving_ip, sessions"
	    " FROM tls_results WHERE day = ?1 AND (?2 IS NULL OR domain = ?2)"
	    " ORDER BY domain, policy_type, policy, result_type, mx_host,"
	    " receiving_ip", -1, &st, NULL) != SQLITE_OK) {
		qdb_log_error(db, "reading TLS results");
		return -1;
	}
	qdb_bind_text(st, 1, day);
	qdb_bind_text(st, 2, domain);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r.day = col(st, 0);
		r.domain = col(st, 1);
		r.policy_type = col(st, 2);
		r.policy = col(st, 3);
		r.mx_host = col(st, 4);
		r.result_type = col(st, 5);
		r.sending_ip = col(st, 6);
		r.receiving_ip = col(st, 7);
		r.sessions = sqlite3_column_int64(st, 8);
		if (fn(&r, arg) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE)
		qdb_log_error(db, "reading TLS results");
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
queue_db_tls_purge(struct queue_db *db, int64_t before)
{
	/* "YYYY-MM-DD" (UTC) sorts as the days do; day leads the primary
	 * key. */
	return delete_before(db, "DELETE FROM tls_results WHERE day <"
	    " strftime('%Y-%m-%d', ?1, 'unixepoch')", before,
	    "purging old TLS results");
}
