/*
 * queue_db_metrics — the store's statement for the metrics' queue
 * gauges (queue_db.h, queue_db_depth()).
 */
#include <sqlite3.h>

#include "queue/queue_db.h"
#include "queue/queue_db_private.h"

int
queue_db_depth(struct queue_db *db,
    void (*fn)(void *arg, const char *state, const char *dest,
    int64_t recipients, int64_t oldest_received_at), void *arg)
{
	/* recipients_due (state, next_attempt_at) gives the four pending
	 * states as ranges; each row joins its message by primary key. */
	static const char sql[] =
	    "SELECT r.state, coalesce(r.destination, ''), count(*),"
	    " min(m.received_at) FROM recipients r JOIN messages m"
	    " ON m.id = r.message_id"
	    " WHERE r.state IN ('queued', 'delivering', 'deferred', 'held')"
	    " GROUP BY 1, 2";
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
		qdb_save_error(db);
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *state = (const char *)sqlite3_column_text(st, 0);
		const char *dest = (const char *)sqlite3_column_text(st, 1);

		fn(arg, state != NULL ? state : "", dest != NULL ? dest : "",
		    sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
	}
	if (rc != SQLITE_DONE)
		qdb_save_error(db);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}
