/*
 * ctl_action — queue retry, hold, release, delete, bounce and reroute
 * (ctl_action.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dsn.h"
#include "common/util.h"
#include "ctl/audit.h"
#include "ctl/ctl_action.h"
#include "ctl/queue_reroute.h"
#include "queue/bounce.h"
#include "queue/queue_db.h"

/* Queue management.  Each command is one short write transaction; the
 * daemon's scheduler reads the due recipients again every second, so a
 * change takes effect without telling it anything.  Each names the
 * operator in the history rows it writes. */

static int
rollback_fail(struct ctl *ctl, const char *what)
{
	ctl_query_failed(ctl, what);
	queue_db_admin_rollback(ctl->db);
	return 1;
}

/* The selection of an action command: 0, or the exit status. */
static int
action_select(struct ctl *ctl, struct ctl_select *sel, int argc, char **argv)
{
	size_t i, missing = 0;
	int r;

	if ((r = ctl_select_args(ctl, sel, argc, argv, SEL_IDS | SEL_ALL,
	    false)) != 0)
		return r;
	/* IDs named must all be there: a typo acts on nothing. */
	for (i = 0; i < sel->nids; i++) {
		if ((r = queue_db_message_exists(ctl->db, sel->ids[i])) < 0) {
			ctl_select_free(sel);
			return ctl_query_failed(ctl, "queue");
		}
		if (r == 0 && missing++ < 10)
			fprintf(stderr, "mxgatectl: no message %s in the queue\n",
			    sel->ids[i]);
	}
	if (missing > 0) {
		fprintf(stderr, "mxgatectl: %zu of the messages named %s not"
		    " in the queue: nothing done\n", missing, missing == 1 ?
		    "is" : "are");
		ctl_select_free(sel);
		return 1;
	}
	if (ctl_select_load(sel, ctl->db) < 0) {
		ctl_select_free(sel);
		return ctl_query_failed(ctl, "queue");
	}
	return 0;
}

/* Change the selected recipients; say how many. */
static int
change_selected(struct ctl *ctl, int argc, char **argv,
    enum queue_change change, const char *action, const char *what)
{
	struct ctl_select sel;
	long long nrcpts = 0, nmsgs = 0;
	int rc;

	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	if (queue_db_change_selected(ctl->db, &sel.q, change,
	    (int64_t)time(NULL), ctl_operator(), &nrcpts, &nmsgs) < 0)
		rc = ctl_query_failed(ctl, what);
	else {
		ctl_audit(ctl, action, &sel, argc, argv, nmsgs, nrcpts, NULL);
		printf("%s: %lld recipient%s of %lld message%s\n", what, nrcpts,
		    nrcpts == 1 ? "" : "s", nmsgs, nmsgs == 1 ? "" : "s");
	}
	ctl_select_free(&sel);
	return rc;
}

int
ctl_queue_retry(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_RETRY, "retry",
	    "due now");
}

int
ctl_queue_hold(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_HOLD, "hold",
	    "held");
}

int
ctl_queue_release(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_RELEASE,
	    "release", "released, due now");
}

int
ctl_queue_delete(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_select sel;
	long long n = 0;
	int rc;

	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	if (queue_db_delete_selected(ctl->db, &sel.q, (int64_t)time(NULL),
	    ctl_operator(), &n) < 0)
		rc = ctl_query_failed(ctl, "queue delete");
	else {
		ctl_audit(ctl, "delete", &sel, argc, argv, n, -1, NULL);
		printf("deleted: %lld message%s\n", n, n == 1 ? "" : "s");
	}
	ctl_select_free(&sel);
	return rc;
}

/* queue bounce */

struct bounce_rows {
	int64_t *ids;
	struct bounce_rcpt *rcpts;
	char   **replies;
	unsigned *notify;
	size_t   n;
};

static void
bounce_rows_free(struct bounce_rows *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free((char *)b->rcpts[i].address);
		free((char *)b->rcpts[i].orcpt);
		free(b->replies[i]);
	}
	free(b->ids);
	free(b->rcpts);
	free(b->replies);
	free(b->notify);
}

/* One recipient to bounce, with its reply (taken). */
static void
bounce_push(struct bounce_rows *b, const struct queue_pending_rcpt *p,
    char *reply)
{
	b->ids = xrealloc(b->ids, (b->n + 1) * sizeof(*b->ids));
	b->rcpts = xrealloc(b->rcpts, (b->n + 1) * sizeof(*b->rcpts));
	b->replies = xrealloc(b->replies, (b->n + 1) * sizeof(*b->replies));
	b->notify = xrealloc(b->notify, (b->n + 1) * sizeof(*b->notify));
	memset(&b->rcpts[b->n], 0, sizeof(b->rcpts[b->n]));
	b->ids[b->n] = p->id;
	b->rcpts[b->n].address = xstrdup(p->address);
	b->rcpts[b->n].orcpt = p->dsn_orcpt != NULL ?
	    xstrdup(p->dsn_orcpt) : NULL;
	b->replies[b->n] = reply;
	b->rcpts[b->n].reply = b->replies[b->n];
	b->rcpts[b->n].last_attempt_at = p->last_attempt_at;
	b->notify[b->n] = p->dsn_notify;
	b->n++;
}

static void
bounce_add(void *arg, const struct queue_pending_rcpt *p)
{
	const char *last = p->last_reply;
	char *reply;

	xasprintf(&reply, "554 5.0.0 returned to the sender"
	    " by the postmaster%s%s%s", last != NULL ? " (last error: " :
	    "", last != NULL ? last : "", last != NULL ? ")" : "");
	bounce_push(arg, p, reply);
}

struct bounce_send {
	struct ctl         *ctl;
	const char         *id;
	struct bounce_rows *rows;
	long long           now;
	char               *dsn;
	const char         *why;        /* when there is no DSN */
};

/* The DSN lists the recipients whose NOTIFY asks for failures (RFC
 * 3461 4.1; none given: they do), as the scheduler's do. */
static int
bounce_write(void *arg, const struct queue_bounce_source *src)
{
	struct bounce_send *bs = arg;
	struct bounce_report r;
	struct bounce_rcpt *wanted;
	size_t n = 0;
	int rc;

	wanted = xcalloc(bs->rows->n + 1, sizeof(*wanted));
	for (size_t i = 0; i < bs->rows->n; i++)
		if (dsn_wants_failure(bs->rows->notify[i]))
			wanted[n++] = bs->rows->rcpts[i];
	bs->dsn[0] = '\0';
	if (n == 0) {
		bs->why = "NOTIFY=NEVER";
		free(wanted);
		return 0;
	}
	memset(&r, 0, sizeof(r));
	r.kind = BOUNCE_FAILED;
	r.queue_id = bs->id;
	r.sender = src->sender;
	r.received_at = src->received_at;
	r.reporting_mta = bs->ctl->conf->hostname;
	r.headers = src->content != NULL ? src->content : "";
	r.headers_len = src->content != NULL ?
	    bounce_header_len(src->content, src->len) : 0;
	if (src->dsn_ret == DSN_RET_FULL && src->content != NULL) {
		r.content = src->content;
		r.content_len = src->len;
	}
	r.envid = src->dsn_envid;
	r.rcpts = wanted;
	r.nrcpts = n;
	rc = bounce_queue(bs->ctl->db, &r, bs->ctl->conf->bounce_upstream,
	    bs->now, bs->dsn);
	if (rc == 1) {
		bs->dsn[0] = '\0';
		rc = 0;
	}
	free(wanted);
	return rc;
}

/* The DSN: 0 with its id ("" for none: *why says why), -1 on failure. */
static int
bounce_send(struct ctl *ctl, const char *id, struct bounce_rows *b,
    long long now, char dsn[QUEUE_ID_LEN + 1], const char **why)
{
	struct bounce_send bs = { ctl, id, b, now, dsn, "null sender" };
	int rc;

	dsn[0] = '\0';
	rc = queue_db_bounce_source(ctl->db, id, bounce_write, &bs) < 0 ?
	    -1 : 0;
	*why = bs.why;
	return rc;
}

static int
bounce_mark(struct ctl *ctl, struct bounce_rows *b, const char *dsn,
    long long now)
{
	char detail[256];

	for (size_t i = 0; i < b->n; i++) {
		/* As the scheduler writes it: who is not in the DSN, why. */
		bool in_dsn = dsn[0] != '\0' &&
		    dsn_wants_failure(b->notify[i]);

		snprintf(detail, sizeof(detail), "%s dsn=%s%s",
		    ctl_operator(), in_dsn ? dsn : "none",
		    dsn_wants_failure(b->notify[i]) ? "" : " notify=NEVER");
		if (queue_db_mark_bounced(ctl->db, b->ids[i], b->replies[i],
		    detail, now) < 0)
			return -1;
	}
	return 0;
}

/* Bounce the pending recipients of one message, in a transaction of
 * its own: 1 bounced, 0 nothing to bounce, -1 failed (said). */
static int
bounce_one(struct ctl *ctl, const char *id, long long now, size_t *nrcpts,
    size_t *ndsn)
{
	struct bounce_rows b;
	char dsn[QUEUE_ID_LEN + 1];
	const char *why = NULL;

	memset(&b, 0, sizeof(b));
	if (queue_db_admin_begin(ctl->db) == -1)
		return ctl_query_failed(ctl, "queue bounce"), -1;
	if (queue_db_pending_rcpts(ctl->db, id, bounce_add, &b) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce"), -1;
	}
	if (b.n == 0) {
		queue_db_admin_rollback(ctl->db);
		return 0;
	}
	/* As the scheduler does once every recipient is final. */
	if (bounce_send(ctl, id, &b, now, dsn, &why) == -1 ||
	    bounce_mark(ctl, &b, dsn, now) == -1 ||
	    queue_db_retire_if_final(ctl->db, id,
	    ctl->conf->keep_delivered != 0) == -1 ||
	    queue_db_admin_commit(ctl->db) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce"), -1;
	}
	{
		/* One record per message: each queued its own DSN. */
		char detail[QUEUE_ID_LEN + 8];

		snprintf(detail, sizeof(detail), "dsn=%s",
		    dsn[0] != '\0' ? dsn : "none");
		audit_init(ctl->conf != NULL ? ctl->conf->log_format : NULL);
		audit_log("bounce", id, 1, (long long)b.n, NULL, detail);
	}
	*nrcpts += b.n;
	if (dsn[0] != '\0')
		(*ndsn)++;
	printf("%s: bounced %zu recipient%s, ", id, b.n, b.n == 1 ? "" : "s");
	if (dsn[0] != '\0')
		printf("DSN %s queued\n", dsn);
	else
		printf("no DSN (%s)\n", why);
	bounce_rows_free(&b);
	return 1;
}

struct id_list {
	char  **ids;
	size_t  n;
};

static void
id_add(void *arg, const char *id)
{
	struct id_list *l = arg;

	l->ids = xrealloc(l->ids, (l->n + 1) * sizeof(*l->ids));
	l->ids[l->n++] = xstrdup(id);
}

static void
id_list_free(struct id_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->ids[i]);
	free(l->ids);
}

int
ctl_queue_bounce(struct ctl *ctl, int argc, char **argv)
{
	long long now = (long long)time(NULL);
	struct ctl_select sel;
	struct id_list l = { NULL, 0 };
	size_t i, nmsgs = 0, nrcpts = 0, ndsn = 0;
	int rc, r = 0;

	if (ctl_load_config(ctl) == -1)
		return 1;
	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	/* Retiring the message is the scheduler's statement. */
	if (queue_db_delivery_init(ctl->db) == -1) {
		ctl_select_free(&sel);
		return 1;
	}
	if (queue_db_selected_messages(ctl->db, &sel.q, id_add, &l) < 0)
		rc = ctl_query_failed(ctl, "queue bounce");
	for (i = 0; rc == 0 && i < l.n && r >= 0; i++)
		if ((r = bounce_one(ctl, l.ids[i], now, &nrcpts, &ndsn)) > 0)
			nmsgs++;
	if (r < 0)
		rc = 1;
	if (rc == 0)
		printf("bounced: %zu recipient%s of %zu message%s, %zu DSN%s"
		    " queued\n", nrcpts, nrcpts == 1 ? "" : "s", nmsgs,
		    nmsgs == 1 ? "" : "s", ndsn, ndsn == 1 ? "" : "s");
	id_list_free(&l);
	ctl_select_free(&sel);
	return rc;
}

/* queue reroute: queue_reroute.h.  With --bounce-refused, the
 * recipients the routes refuse now are bounced here, a DSN per message,
 * inside the reroute's transaction. */

struct refused {
	struct ctl         *ctl;
	char                msgid[QUEUE_ID_LEN + 1];
	int64_t            *ids;            /* of msgid, refused now */
	char              **replies;
	size_t              n;
	struct bounce_rows  rows;
	long long           now;
};

static void
refused_clear(struct refused *rf)
{
	for (size_t i = 0; i < rf->n; i++)
		free(rf->replies[i]);
	free(rf->ids);
	free(rf->replies);
	rf->ids = NULL;
	rf->replies = NULL;
	rf->n = 0;
	bounce_rows_free(&rf->rows);
	memset(&rf->rows, 0, sizeof(rf->rows));
}

/* The message's pending recipients that are refused now, with their
 * DSN parameters (NOTIFY, ORCPT) as queue bounce takes them. */
static void
refused_pick(void *arg, const struct queue_pending_rcpt *p)
{
	struct refused *rf = arg;

	for (size_t i = 0; i < rf->n; i++)
		if (rf->ids[i] == p->id)
			bounce_push(&rf->rows, p, xstrdup(rf->replies[i]));
}

/* Bounce what was gathered for one message: 0 or -1. */
static int
refused_flush(void *arg)
{
	struct refused *rf = arg;
	char dsn[QUEUE_ID_LEN + 1];
	const char *why = NULL;
	int rc = 0;

	if (rf->n == 0)
		return 0;
	if (queue_db_pending_rcpts(rf->ctl->db, rf->msgid, refused_pick,
	    rf) == -1)
		rc = -1;
	else if (rf->rows.n > 0 &&
	    (bounce_send(rf->ctl, rf->msgid, &rf->rows, rf->now, dsn,
	    &why) == -1 ||
	    bounce_mark(rf->ctl, &rf->rows, dsn, rf->now) == -1 ||
	    queue_db_retire_if_final(rf->ctl->db, rf->msgid,
	    rf->ctl->conf->keep_delivered != 0) == -1))
		rc = -1;
	else if (rf->rows.n > 0 && dsn[0] != '\0')
		printf("%s: bounced %zu recipient%s, DSN %s queued\n",
		    rf->msgid, rf->rows.n, rf->rows.n == 1 ? "" : "s", dsn);
	else if (rf->rows.n > 0)
		printf("%s: bounced %zu recipient%s, no DSN (%s)\n",
		    rf->msgid, rf->rows.n, rf->rows.n == 1 ? "" : "s",
		    why != NULL ? why : "none");
	refused_clear(rf);
	return rc;
}

static int
refused_add(void *arg, const char *msgid, int64_t rcpt_id,
    const char *address, int code, const char *text)
{
	struct refused *rf = arg;

	(void)address;
	if (strcmp(rf->msgid, msgid) != 0 && refused_flush(rf) == -1)
		return -1;
	snprintf(rf->msgid, sizeof(rf->msgid), "%s", msgid);
	rf->ids = xrealloc(rf->ids, (rf->n + 1) * sizeof(*rf->ids));
	rf->replies = xrealloc(rf->replies, (rf->n + 1) *
	    sizeof(*rf->replies));
	rf->ids[rf->n] = rcpt_id;
	xasprintf(&rf->replies[rf->n], "%d %s", code, text);
	rf->n++;
	return 0;
}

int
ctl_queue_reroute(struct ctl *ctl, int argc, char **argv)
{
	struct refused rf;
	struct reroute_bounce rb = { refused_add, refused_flush, &rf };
	struct reroute_done done;
	int rc;

	if (ctl_load_config(ctl) == -1)
		return 1;
	memset(&rf, 0, sizeof(rf));
	rf.ctl = ctl;
	rf.now = (long long)time(NULL);
	/* Retiring a message is the scheduler's statement. */
	if (queue_db_delivery_init(ctl->db) == -1)
		return 1;
	rc = queue_reroute_main(ctl->conf, ctl->db, ctl_operator(), &rb,
	    argc, argv, &done);
	refused_clear(&rf);
	if (rc == 0 && (done.recipients > 0 || done.bounced > 0)) {
		char detail[64];

		snprintf(detail, sizeof(detail), "bounced=%lld", done.bounced);
		ctl_audit(ctl, "reroute", NULL, argc, argv, done.messages,
		    done.recipients, done.bounced > 0 ? detail : NULL);
	}
	return rc;
}
