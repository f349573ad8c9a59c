/*
 * queue_db — the queue store: the one module that owns the SQLite
 * connection, every SQL statement run on the queue, and the durability
 * policy.  The queue process (group commit), its scheduler, the bounces
 * and mxgatectl go through these functions; the SQLite handle never
 * leaves the store.  The schema is a public interface (README, "The queue
 * schema"): operators query it with the sqlite3 shell while the daemon
 * runs.
 *
 * Files: queue_db.c (connection, schema, migrations, the insert path,
 * the queue lock), queue_db_delivery.c (the scheduler's and the bounces'
 * statements), queue_db_admin.c (mxgatectl's), queue_db_tls.c (the
 * relay's MTA-STS cache and TLS-RPT counts), queue_vfs.c (the VFS of the
 * writers).
 *
 * Only the queue process writes messages; mxgatectl reads (and, for queue
 * management, changes recipient states in short transactions).
 *
 * Durability: queue_db_open() sets WAL mode, synchronous=FULL, foreign
 * keys and a busy timeout, and migrates the schema to QUEUE_SCHEMA_VERSION
 * (a newer schema than this binary knows is an error: never downgrade
 * silently).  A writable connection goes through the queue VFS
 * (queue_vfs.h).  The group commit's transactions (queue_db_begin(),
 * queue_db_commit()) are synced when COMMIT returns: only then may a
 * client hear 250.  The delivery side's transactions (queue_db_txn_begin(),
 * queue_db_txn_commit()) run with synchronous=NORMAL: the next synced
 * commit takes what they wrote to disk, and a crash before it can only
 * make a delivery happen twice, never lose a message.
 *
 * Errors: functions returning int give 0 on success and -1 on failure
 * after logging the SQLite message once, unless said otherwise.
 */
#ifndef MXGATE_QUEUE_DB_H
#define MXGATE_QUEUE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/envelope.h"

#define QUEUE_SCHEMA_VERSION 6
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

/* One transaction around a batch of inserts (group commit). */
int queue_db_begin(struct queue_db *db);
int queue_db_commit(struct queue_db *db);
int queue_db_rollback(struct queue_db *db);
/* The last failure since queue_db_begin() was a full file system: the
 * batch can be refused (452 4.3.1) and the connection goes on. */
bool queue_db_out_of_space(const struct queue_db *db);
/* The queue's file system has free_bytes free: how large the WAL may
 * grow between two checkpoints (queue_db.c), at each measure. */
void queue_db_wal_budget(struct queue_db *db, uint64_t free_bytes);

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

/*
 * queue_db_insert() as a unit inside the caller's transaction (under a
 * savepoint): a failure leaves nothing of this message and keeps what the
 * transaction wrote before (a DSN must not take the outcomes recorded
 * with it down).  Outside a transaction, queue_db_insert().
 */
int queue_db_insert_alone(struct queue_db *db, const struct envelope *env,
    const char *content, size_t content_len);

/* ---- the delivery side (scheduler.h): queue_db_delivery.c ---- */

/* Prepare the statements below; once, at the scheduler's start. */
int queue_db_delivery_init(struct queue_db *db);

/* A short transaction of the delivery side (see Durability above).
 * begin: -1 when busy (mxgatectl holds the lock) or failing: try later.
 * commit: -1 after a rollback (nothing of it is written: redo it all
 * later; queue_db_out_of_space() says whether the disk was full);
 * fatal if synchronous=FULL cannot be set again, as the next group
 * commit would acknowledge unsynced messages.  broken: a statement of
 * the open transaction failed for want of space or with an I/O error
 * (or SQLite ended the transaction): stop writing, the commit will roll
 * back.  rollback: give the transaction up. */
int  queue_db_txn_begin(struct queue_db *db);
int  queue_db_txn_commit(struct queue_db *db);
bool queue_db_txn_broken(const struct queue_db *db);
int  queue_db_txn_rollback(struct queue_db *db);

/* The end of a read transaction (queue_db_read_begin(), below): the
 * scheduler reads a batch's messages in one, SQLite's locks taken once,
 * not per statement.  Nothing was written: COMMIT only releases the
 * snapshot. */
void queue_db_read_end(struct queue_db *db);

/* Leave "delivering" for "deferred", due now, with a history row each:
 * the deliveries a stopped queue process left.  How many, or -1. */
int queue_db_requeue_interrupted(struct queue_db *db, int64_t now);

/* A recipient due for delivery, with what the scheduler needs of its
 * message (strings are copies, NULL for SQL NULL). */
struct queue_due {
	int64_t  id;
	char    *msgid, *address, *route, *action, *params, *sender;
	unsigned attempts;
	int64_t  last_attempt_at, received_at;
	unsigned dsn_notify;            /* DSN_NOTIFY_* bits, 0: none */
	char    *dsn_orcpt;             /* "type;address", NULL: none */
};
enum queue_due_state { QUEUE_DUE_QUEUED, QUEUE_DUE_DEFERRED };

/* Up to max recipients of one state due at now (next_attempt_at <= now),
 * earliest first, after skipping offset of them; how many, or -1. */
int  queue_db_due(struct queue_db *db, enum queue_due_state state,
    int64_t now, int64_t offset, struct queue_due *rows, int max);
void queue_db_due_free(struct queue_due *row);

/* queued / deferred -> delivering (one more attempt, at now): 1, or 0
 * when the row has changed since it was read (mxgatectl), or -1. */
int queue_db_claim(struct queue_db *db, int64_t rcpt_id, int64_t now);
/* One history row; rcpt_id 0 for the message as a whole. */
int queue_db_event(struct queue_db *db, const char *msgid, int64_t rcpt_id,
    int64_t at, const char *kind, const char *detail);
/* An outcome for a recipient being delivered (or held meanwhile): final
 * (state "delivered" or "bounced") or deferred to next_at.  dest NULL
 * when none.  -1 also when the row was not in such a state. */
int queue_db_set_final(struct queue_db *db, int64_t rcpt_id,
    const char *state, const char *reply, const char *dest, int64_t now);
int queue_db_set_deferred(struct queue_db *db, int64_t rcpt_id,
    const char *reply, const char *dest, int64_t next_at, int64_t now);
/* When no recipient of the message is pending any more: delete it, or
 * only its content (keep_rows).  1 done, 0 still pending, -1. */
int queue_db_retire_if_final(struct queue_db *db, const char *msgid,
    bool keep_rows);
/* Delete the finished messages last changed before before: how many, or
 * -1. */
int queue_db_purge(struct queue_db *db, int64_t before);
/* Forget the history of the messages that left the queue before before
 * (queue.keep_history): how many, or -1. */
int queue_db_purge_history(struct queue_db *db, int64_t before);

/* A message as its delivery needs it. */
struct queue_message {
	char    *sender, *client_ip, *helo, *protocol, *auth_user;
	int64_t  received_at;
	bool     body_8bitmime, smtputf8;
	int      dsn_ret;               /* enum dsn_ret */
	char    *dsn_envid;             /* NULL: none */
	size_t   content_len;
};
/* Fill m and write the content to fd: 1, 0 when there is no such
 * message (deleted meanwhile), -1 (logged) when it cannot be read or
 * written; m is empty unless 1. */
int  queue_db_message_copy(struct queue_db *db, const char *queue_id,
    struct queue_message *m, int fd);
void queue_db_message_free(struct queue_message *m);
/* The first max bytes of a message's content (NUL-terminated, *len
 * bytes, malloc'd), or NULL when it has none. */
char *queue_db_content_head(struct queue_db *db, const char *msgid,
    size_t max, size_t *len);

/* ---- mxgatectl (ctl/mxgatectl.c): queue_db_admin.c ---- */

/*
 * These report a failure by returning -1 and keeping SQLite's message
 * for queue_db_error(), without logging: mxgatectl prints it with the
 * command it was running.  Rows go to a callback, called while the query
 * runs: the values it gets are valid during the call only.
 */
const char *queue_db_error(const struct queue_db *db);
/* What kind of failure that was, for advice to the operator. */
enum queue_db_error_kind {
	QDB_ERR_OTHER,
	QDB_ERR_BUSY,           /* the daemon holds a lock: try again */
	QDB_ERR_ACCESS,         /* read-only, permission, cannot open */
};
enum queue_db_error_kind queue_db_error_kind(const struct queue_db *db);

/* A read transaction (the parts of a report agree); end it with
 * queue_db_admin_commit().  A write transaction: BEGIN IMMEDIATE, synced
 * at commit like every write of mxgatectl.  Rollback keeps the error. */
int  queue_db_read_begin(struct queue_db *db);
int  queue_db_admin_begin(struct queue_db *db);
int  queue_db_admin_commit(struct queue_db *db);
void queue_db_admin_rollback(struct queue_db *db);

/*
 * A selection of recipients, for queue list and the bulk actions: every
 * condition set must hold for the same recipient (state, address,
 * destination) and its message (sender, age, ids).  Patterns are the
 * caller's: match(arg, which, text, len) with which 0 for a recipient
 * address, 1 for the sender, 2 for a destination (the host, path or
 * command last tried, or the recipient's domain); rcpt, sender and dest
 * say whether to ask.  ids: only the messages given to
 * queue_db_select_ids() (a temporary table of this connection).
 */
struct queue_select {
	const char *state;              /* NULL: any */
	bool        rcpt, sender, dest, ids;
	int64_t     received_before;    /* 0: any age */
	int       (*match)(void *arg, int which, const char *text, size_t len);
	void       *arg;
};
int queue_db_select_ids(struct queue_db *db, char *const *ids, size_t n);

/* queue list: one call per recipient of each selected message (every
 * recipient of it, selected or not), messages in the order received. */
struct queue_list_row {
	const char *id, *received, *sender, *states;
	size_t      sender_len;
	int64_t     size, nrcpts, received_at;
	/* The recipient. */
	const char *address, *state, *last_reply, *next_attempt;
	const char *destination, *route;
	int64_t     attempts;
};
int queue_db_list(struct queue_db *db, const struct queue_select *sel,
    void (*fn)(void *arg, const struct queue_list_row *row), void *arg);

/* queue shape: per destination (the recipient's domain), the pending
 * recipients (queued, deferred, delivering, held) received in each age
 * bucket: bucket i holds those younger than bounds[i] seconds (and not
 * younger than bounds[i - 1]); the last bucket, nbounds, the rest.  fn
 * once per destination, most pending first, with counts[0] the total
 * and counts[1 + i] bucket i. */
int queue_db_shape(struct queue_db *db, const struct queue_select *sel,
    int64_t now, const int64_t *bounds, size_t nbounds,
    void (*fn)(void *arg, const char *dest, size_t len,
    const int64_t *counts), void *arg);

/* queue show.  The single-row ones return 1, 0 when there is no such
 * message (or content: removed once every recipient is final), -1. */
struct queue_message_view {
	const char *id, *received, *sender, *client_ip, *helo, *protocol;
	const char *auth_user, *message_id, *subject;
	const char *dsn_ret, *dsn_envid;        /* NULL: none given */
	int64_t     received_at, size;
	bool        body_8bitmime, smtputf8;
};
struct queue_rcpt_view {
	const char *address, *route, *action, *params, *state;
	const char *next_attempt, *last_attempt, *last_reply, *destination;
	const char *dsn_notify, *dsn_orcpt;     /* NULL: none given */
	int64_t     attempts;
};
struct queue_event_view {
	const char *time, *kind, *recipient, *detail;
};
int queue_db_message_exists(struct queue_db *db, const char *id);
/* queue trace: 1 when message id is in the queue, 2 when only its
 * history is left (schema version 3: it was delivered, bounced or
 * deleted), 0 when neither, -1.  queue_db_use_history(): the show
 * functions below read the history tables instead of the queue's. */
int  queue_db_message_where(struct queue_db *db, const char *id);
void queue_db_use_history(struct queue_db *db, bool on);
int queue_db_show_message(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_message_view *m), void *arg);
int queue_db_show_recipients(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_rcpt_view *r), void *arg);
int queue_db_show_history(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_event_view *e), void *arg);
int queue_db_show_content(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const char *content, size_t len), void *arg);

/* queue retry / hold / release: change the selected recipients that the
 * change applies to, with a history row each ("by" in its detail: who),
 * in one transaction; *nrcpts, *nmsgs: how many were changed. */
enum queue_change { QUEUE_CHANGE_RETRY, QUEUE_CHANGE_HOLD,
	QUEUE_CHANGE_RELEASE };
int queue_db_change_selected(struct queue_db *db, const struct queue_select *sel,
    enum queue_change change, int64_t now, const char *by,
    long long *nrcpts, long long *nmsgs);
/* queue delete: the messages with a selected recipient and everything
 * about them but their history ("deleted" event, then kept for
 * queue.keep_history), in one transaction; *nmsgs. */
int queue_db_delete_selected(struct queue_db *db, const struct queue_select *sel,
    int64_t now, const char *by, long long *nmsgs);
/* The ids of the messages with a selected recipient, oldest first. */
int queue_db_selected_messages(struct queue_db *db,
    const struct queue_select *sel,
    void (*fn)(void *arg, const char *id), void *arg);

/* queue reroute, inside queue_db_admin_begin(): the selected recipients
 * still to be delivered (queued, deferred, held; not in delivery now)
 * with what the routes are decided on; then each one's new decision,
 * with a "routed" history row (detail), due now unless held.
 * queue_db_reroute() returns 1, or 0 when the recipient changed state
 * meanwhile, or -1. */
struct queue_reroute_row {
	int64_t     rcpt_id;
	const char *msgid, *address, *route, *action, *params, *state;
	const char *sender, *client_ip, *helo, *protocol, *auth_user;
};
int queue_db_reroute_rows(struct queue_db *db, const struct queue_select *sel,
    void (*fn)(void *arg, const struct queue_reroute_row *r), void *arg);
int queue_db_reroute(struct queue_db *db, int64_t rcpt_id, const char *route,
    const char *action, const char *params, int64_t now, const char *detail);

/* queue bounce, inside queue_db_admin_begin(): the recipients still
 * pending (not in delivery right now), with their DSN values; the
 * original for the DSN, with its RET and ENVID (fn's result is
 * returned; -1 when there is no such message); each recipient bounced,
 * with its history row.  Then queue_db_retire_if_final() (after
 * queue_db_delivery_init()). */
struct queue_pending_rcpt {
	int64_t     id;
	const char *address, *last_reply;     /* last_reply NULL: none */
	int64_t     last_attempt_at;
	unsigned    dsn_notify;               /* DSN_NOTIFY_* bits, 0: none */
	const char *dsn_orcpt;                /* NULL: none */
};
struct queue_bounce_source {
	const char *sender;
	int64_t     received_at;
	const char *content;                  /* NULL: content gone */
	size_t      len;
	int         dsn_ret;                  /* enum dsn_ret */
	const char *dsn_envid;                /* NULL: none */
};
int queue_db_pending_rcpts(struct queue_db *db, const char *id,
    void (*fn)(void *arg, const struct queue_pending_rcpt *r), void *arg);
int queue_db_bounce_source(struct queue_db *db, const char *id,
    int (*fn)(void *arg, const struct queue_bounce_source *src), void *arg);
int queue_db_mark_bounced(struct queue_db *db, int64_t rcpt_id,
    const char *reply, const char *detail, int64_t now);

/* queue stats: recipients and messages per state; the oldest message
 * with a pending recipient (1, or 0 when none); per destination. */
int queue_db_stats_states(struct queue_db *db,
    void (*fn)(void *arg, const char *state, int64_t recipients,
    int64_t messages), void *arg);
int queue_db_stats_oldest(struct queue_db *db,
    void (*fn)(void *arg, int64_t messages, const char *id,
    const char *received, int64_t received_at), void *arg);
int queue_db_stats_destinations(struct queue_db *db,
    void (*fn)(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending), void *arg);

/* The metrics' queue gauges (queue_db_metrics.c): per pending state
 * (queued, delivering, deferred, held) and destination ("" before the
 * first attempt), the recipients and the oldest reception among them. */
int queue_db_depth(struct queue_db *db,
    void (*fn)(void *arg, const char *state, const char *dest,
    int64_t recipients, int64_t oldest_received_at), void *arg);

/*
 * The relay client's TLS (queue_db_tls.c).  queue_db_sts_get(): the
 * cached MTA-STS policy of domain that has not expired at now, as the
 * line of mta_sts.h ("ID MODE MAX_AGE FETCHED_AT MX..."), malloc'd into
 * *line: 1, 0 none, -1 error.  queue_db_sts_put(): store (replace) one.
 * queue_db_sts_purge(): delete the policies expired at now (never used
 * again, RFC 8461 5.1: an expired policy is fetched anew); the number
 * deleted, -1 on error.  queue_db_tls_result(): count one session in
 * tls_results.  Each is one statement, its own transaction.
 */
int queue_db_sts_get(struct queue_db *db, const char *domain, int64_t now,
    char **line);
int queue_db_sts_put(struct queue_db *db, const char *domain,
    const char *id, const char *mode, int64_t max_age, int64_t fetched_at,
    const char *mx);
int queue_db_sts_purge(struct queue_db *db, int64_t now);
struct queue_tls_result {
	const char *day;                /* "YYYY-MM-DD", UTC */
	const char *domain;
	const char *policy_type;        /* "sts", "tlsa", "no-policy-found" */
	const char *policy;             /* its lines, '\n'-separated */
	const char *mx_host;
	const char *result_type;        /* "" for a success */
	const char *sending_ip, *receiving_ip;
	long long   sessions;
};
int queue_db_tls_result(struct queue_db *db, const struct queue_tls_result *r);
/* The day's rows (of one domain, or all when domain is NULL), ordered by
 * domain, policy type and policy; fn returns nonzero to stop.  0 or -1. */
int queue_db_tls_results(struct queue_db *db, const char *day,
    const char *domain, int (*fn)(const struct queue_tls_result *, void *),
    void *arg);
/* Forget the days before the UTC day of before (queue.keep_tls_results):
 * the rows deleted, or -1 (logged). */
int queue_db_tls_purge(struct queue_db *db, int64_t before);

#endif
