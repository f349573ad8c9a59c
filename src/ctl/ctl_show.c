/*
 * ctl_show — queue list, queue show, queue trace (ctl_show.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"
#include "common/util.h"
#include "ctl/ctl_show.h"
#include "queue/queue_db.h"

/* queue list */

/* The rows of one message, gathered from queue_db_list()'s calls. */
struct list_out {
	struct ctl_select  *sel;
	struct json_writer  w;
	struct buf          json;
	char                last_id[QUEUE_ID_LEN + 1];
	long long           n;
};

static void
list_text_row(struct list_out *lo, const struct queue_list_row *row, bool first)
{
	if (first) {
		printf("%-16s  %-19s  %9lld  <", row->id, row->received,
		    (long long)row->size);
		ctl_put_safe_n(stdout, row->sender, row->sender_len, SAFE_LINE);
		printf(">%*s  %5lld  ", (int)(row->sender_len < 30 ?
		    30 - row->sender_len : 0), "", (long long)row->nrcpts);
		ctl_put_safe(row->states);
		putchar('\n');
	}
	(void)lo;
	/* Why a message waits: each deferred recipient's last reply. */
	if (strcmp(row->state, "deferred") != 0)
		return;
	printf("    <");
	ctl_put_safe(row->address);
	printf("> deferred, %lld attempt%s, next %s UTC: ",
	    (long long)row->attempts, row->attempts == 1 ? "" : "s",
	    row->next_attempt != NULL ? row->next_attempt : "-");
	ctl_put_safe(row->last_reply);
	putchar('\n');
}

static void
list_json_row(struct list_out *lo, const struct queue_list_row *row, bool first)
{
	struct json_writer *w = &lo->w;

	if (first) {
		if (lo->n > 1) {
			json_end_array(w);
			json_end_object(w);
		}
		json_begin_object(w);
		json_member_string(w, "id", row->id);
		json_member_string(w, "received", row->received);
		json_member_int(w, "received_at", row->received_at);
		json_key(w, "sender");
		json_stringn(w, row->sender, row->sender_len);
		json_member_int(w, "size", row->size);
		json_member_string(w, "states", row->states);
		json_key(w, "recipients");
		json_begin_array(w);
	}
	json_begin_object(w);
	json_member_string(w, "address", row->address);
	json_member_string(w, "state", row->state);
	json_member_string(w, "route", row->route);
	json_member_int(w, "attempts", row->attempts);
	json_member_string(w, "next_attempt", row->next_attempt);
	json_member_string(w, "last_reply", row->last_reply);
	json_member_string(w, "destination", row->destination);
	json_end_object(w);
}

static void
put_list_row(void *arg, const struct queue_list_row *row)
{
	struct list_out *lo = arg;
	bool first = strcmp(lo->last_id, row->id) != 0;

	if (first) {
		snprintf(lo->last_id, sizeof(lo->last_id), "%s", row->id);
		lo->n++;
	}
	if (lo->sel->json)
		list_json_row(lo, row, first);
	else if (lo->sel->ids_only) {
		if (first)
			printf("%s\n", row->id);
	} else
		list_text_row(lo, row, first);
}

int
ctl_queue_list(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_select sel;
	struct list_out lo;
	int rc = 0;

	if ((rc = ctl_select_args(ctl, &sel, argc, argv, SEL_IDS | SEL_ALL |
	    SEL_FILTERS | SEL_JSON | SEL_IDS_ONLY, false)) != 0)
		return rc;
	memset(&lo, 0, sizeof(lo));
	lo.sel = &sel;
	buf_init(&lo.json);
	json_writer_init(&lo.w, &lo.json);
	if (sel.json)
		json_begin_array(&lo.w);
	else if (!sel.ids_only)
		printf("%-16s  %-19s  %9s  %-32s  %5s  %s\n", "ID",
		    "RECEIVED (UTC)", "SIZE", "SENDER", "RCPTS", "STATE");
	if (ctl_select_load(&sel, ctl->db) < 0 ||
	    queue_db_list(ctl->db, &sel.q, put_list_row, &lo) < 0) {
		rc = ctl_query_failed(ctl, "queue list");
	} else if (sel.json) {
		if (lo.n > 0) {
			json_end_array(&lo.w);
			json_end_object(&lo.w);
		}
		json_end_array(&lo.w);
		ctl_put_json(&lo.json);
	} else if (!sel.ids_only) {
		printf("%lld message%s\n", lo.n, lo.n == 1 ? "" : "s");
	}
	buf_free(&lo.json);
	ctl_select_free(&sel);
	return rc;
}

/* queue show */

static void
put_message(void *arg, const struct queue_message_view *m)
{
	(void)arg;
	ctl_put_field("id:", m->id);
	printf("%-12s %s UTC (%lld)\n", "received:", m->received,
	    (long long)m->received_at);
	printf("%-12s <", "sender:");
	ctl_put_safe(m->sender);
	printf(">\n");
	ctl_put_field("client:", m->client_ip);
	ctl_put_field("helo:", m->helo);
	ctl_put_field("protocol:", m->protocol);
	ctl_put_field("auth user:", m->auth_user);
	printf("%-12s %lld bytes%s%s\n", "size:", (long long)m->size,
	    m->body_8bitmime ? ", 8BITMIME" : "",
	    m->smtputf8 ? ", SMTPUTF8" : "");
	ctl_put_field("message-id:", m->message_id);
	ctl_put_field("subject:", m->subject);
	/* DSN (RFC 3461), as the client asked, decoded. */
	if (m->dsn_ret != NULL || m->dsn_envid != NULL) {
		printf("%-12s", "dsn:");
		if (m->dsn_ret != NULL)
			printf(" RET=%s", m->dsn_ret);
		if (m->dsn_envid != NULL) {
			printf(" ENVID=");
			ctl_put_safe(m->dsn_envid);
		}
		putchar('\n');
	}
}

static int
show_message(struct ctl *ctl, const char *id)
{
	int r = queue_db_show_message(ctl->db, id, put_message, NULL);

	if (r == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
		return 1;
	}
	return r < 0 ? ctl_query_failed(ctl, "queue show") : 0;
}

static void
put_recipient(void *arg, const struct queue_rcpt_view *r)
{
	(void)arg;
	printf("  <");
	ctl_put_safe(r->address);
	printf(">\n    route=");
	ctl_put_safe(r->route);
	printf(" action=");
	ctl_put_safe(r->action);
	printf(" params=");
	ctl_put_safe(r->params);
	printf("\n    state=%s attempts=%lld", r->state,
	    (long long)r->attempts);
	if (r->next_attempt != NULL)
		printf(" next attempt=%s", r->next_attempt);
	if (r->last_attempt != NULL)
		printf(" last attempt=%s", r->last_attempt);
	putchar('\n');
	if (r->last_reply != NULL) {
		printf("    last reply: ");
		ctl_put_safe(r->last_reply);
		putchar('\n');
	}
	if (r->destination != NULL) {
		printf("    destination: ");
		ctl_put_safe(r->destination);
		putchar('\n');
	}
	if (r->dsn_notify != NULL || r->dsn_orcpt != NULL) {
		printf("    dsn:");
		if (r->dsn_notify != NULL) {
			printf(" NOTIFY=");
			ctl_put_safe(r->dsn_notify);
		}
		if (r->dsn_orcpt != NULL) {
			printf(" ORCPT=");
			ctl_put_safe(r->dsn_orcpt);
		}
		putchar('\n');
	}
}

static int
show_recipients(struct ctl *ctl, const char *id)
{
	printf("\nrecipients:\n");
	if (queue_db_show_recipients(ctl->db, id, put_recipient, NULL) < 0)
		return ctl_query_failed(ctl, "recipients");
	return 0;
}

static void
put_event(void *arg, const struct queue_event_view *e)
{
	(void)arg;
	printf("  %s  %-9s", e->time, e->kind);
	if (e->recipient != NULL) {
		printf(" <");
		ctl_put_safe(e->recipient);
		printf(">");
	}
	if (e->detail != NULL) {
		putchar(' ');
		ctl_put_safe(e->detail);
	}
	putchar('\n');
}

static int
show_history(struct ctl *ctl, const char *id)
{
	printf("\nhistory:\n");
	if (queue_db_show_history(ctl->db, id, put_event, NULL) < 0)
		return ctl_query_failed(ctl, "history");
	return 0;
}

/* Length of the header block, up to and including its empty line. */
static size_t
header_block_len(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < len && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return len;
}

static void
put_content(void *arg, const char *p, size_t len)
{
	bool body = *(bool *)arg;

	printf("\n%s:\n", body ? "message" : "headers");
	fflush(stdout);
	if (!body)
		len = header_block_len(p, len);
	/* Exact bytes when they go to a file or a pipe; a terminal gets
	 * them escaped. */
	if (body && !isatty(STDOUT_FILENO))
		fwrite(p, 1, len, stdout);
	else
		ctl_put_safe_n(stdout, p, len, SAFE_BLOCK);
}

static int
show_content(struct ctl *ctl, const char *id, bool body)
{
	int r = queue_db_show_content(ctl->db, id, put_content, &body);

	if (r < 0)
		return ctl_query_failed(ctl, "content");
	/* delivery.keep_delivered keeps the rest, not this. */
	if (r == 0)
		printf("\n(content removed: every recipient is final)\n");
	return 0;
}

/* queue show --json, queue trace --json: one object. */

static void
json_message(void *arg, const struct queue_message_view *m)
{
	struct json_writer *w = arg;

	json_member_string(w, "id", m->id);
	json_member_string(w, "received", m->received);
	json_member_int(w, "received_at", m->received_at);
	json_member_string(w, "sender", m->sender);
	json_member_string(w, "client_ip", m->client_ip);
	json_member_string(w, "helo", m->helo);
	json_member_string(w, "protocol", m->protocol);
	json_member_string(w, "auth_user", m->auth_user);
	json_member_int(w, "size", m->size);
	json_member_bool(w, "body_8bitmime", m->body_8bitmime);
	json_member_bool(w, "smtputf8", m->smtputf8);
	json_member_string(w, "message_id", m->message_id);
	json_member_string(w, "subject", m->subject);
	json_member_string(w, "dsn_ret", m->dsn_ret);
	json_member_string(w, "dsn_envid", m->dsn_envid);
}

static void
json_recipient(void *arg, const struct queue_rcpt_view *r)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_member_string(w, "address", r->address);
	json_member_string(w, "route", r->route);
	json_member_string(w, "action", r->action);
	json_member_string(w, "params", r->params);
	json_member_string(w, "state", r->state);
	json_member_int(w, "attempts", r->attempts);
	json_member_string(w, "next_attempt", r->next_attempt);
	json_member_string(w, "last_attempt", r->last_attempt);
	json_member_string(w, "last_reply", r->last_reply);
	json_member_string(w, "destination", r->destination);
	json_member_string(w, "dsn_notify", r->dsn_notify);
	json_member_string(w, "dsn_orcpt", r->dsn_orcpt);
	json_end_object(w);
}

static void
json_event(void *arg, const struct queue_event_view *e)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_member_string(w, "time", e->time);
	json_member_string(w, "kind", e->kind);
	json_member_string(w, "recipient", e->recipient);
	json_member_string(w, "detail", e->detail);
	json_end_object(w);
}

/* The message, its recipients and history as one JSON object;
 * in_queue: "in_queue" (trace: false when only its history is left). */
static int
show_json(struct ctl *ctl, const char *id, int in_queue)
{
	struct json_writer w;
	struct buf b;
	int r, rc = 0;

	buf_init(&b);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	if (in_queue >= 0) {
		json_member_bool(&w, "in_queue", in_queue != 0);
	}
	r = queue_db_show_message(ctl->db, id, json_message, &w);
	if (r == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
		rc = 1;
	} else if (r < 0) {
		rc = ctl_query_failed(ctl, "queue show");
	} else {
		json_key(&w, "recipients");
		json_begin_array(&w);
		if (queue_db_show_recipients(ctl->db, id, json_recipient,
		    &w) < 0)
			rc = ctl_query_failed(ctl, "recipients");
		json_end_array(&w);
		json_key(&w, "history");
		json_begin_array(&w);
		if (rc == 0 && queue_db_show_history(ctl->db, id, json_event,
		    &w) < 0)
			rc = ctl_query_failed(ctl, "history");
		json_end_array(&w);
		json_end_object(&w);
		if (rc == 0)
			ctl_put_json(&b);
	}
	buf_free(&b);
	return rc;
}

/* A queue id argument, or 1 (said). */
static int
id_argument(const char *id)
{
	if (queue_id_valid(id))
		return 0;
	fprintf(stderr, "mxgatectl: no message ");
	ctl_put_safe_n(stderr, id, strnlen(id, 64), SAFE_LINE);
	fprintf(stderr, " in the queue (not a queue id)\n");
	return 1;
}

/* The words of show and trace: ID [--json] (and more opts); 0, or the
 * exit status. */
static int
id_args(struct ctl *ctl, struct ctl_opt *opts, int argc, char **argv,
    const char **id)
{
	struct ctl_args a = { .opts = opts, .words = id, .maxwords = 1 };

	if (ctl_args_parse(&a, argc, argv) < 0 || a.nwords != 1)
		return ctl_usage(ctl);
	return id_argument(*id);
}

/* The envelope, recipients and history, as text. */
static int
show_text(struct ctl *ctl, const char *id)
{
	if (show_message(ctl, id) != 0 || show_recipients(ctl, id) != 0 ||
	    show_history(ctl, id) != 0)
		return 1;
	return 0;
}

int
ctl_queue_show(struct ctl *ctl, int argc, char **argv)
{
	const char *id = NULL;
	bool body = false, json = false;
	struct ctl_opt opts[] = {
		{ "--body", &body, NULL }, { "--json", &json, NULL },
		CTL_OPT_END
	};
	int rc;

	if ((rc = id_args(ctl, opts, argc, argv, &id)) != 0)
		return rc;
	if (body && json)
		return ctl_usage(ctl);
	if (json)
		return show_json(ctl, id, -1);
	if (show_text(ctl, id) != 0 || show_content(ctl, id, body) != 0)
		return 1;
	return 0;
}

/* queue trace */

int
ctl_queue_trace(struct ctl *ctl, int argc, char **argv)
{
	const char *id = NULL;
	bool json = false;
	struct ctl_opt opts[] = { { "--json", &json, NULL }, CTL_OPT_END };
	int rc, where;

	if ((rc = id_args(ctl, opts, argc, argv, &id)) != 0)
		return rc;
	if ((where = queue_db_message_where(ctl->db, id)) < 0)
		return ctl_query_failed(ctl, "queue trace");
	if (where == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue nor in"
		    " its history (queue.keep_history)\n", id);
		return 1;
	}
	queue_db_use_history(ctl->db, where == 2);
	if (json)
		return show_json(ctl, id, where == 1);
	printf("%s\n\n", where == 1 ? "in the queue" : "no longer in the"
	    " queue: its history");
	return show_text(ctl, id);
}
