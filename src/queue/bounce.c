/*
 * bounce — see bounce.h.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "queue/bounce.h"
#include "common/dsn.h"
#include "common/envelope.h"
#include "common/json.h"
#include "common/log.h"

static bool
is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

static bool
has_8bit(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

static bool
report_is_8bit(const struct bounce_report *r)
{
	size_t i;

	if (has_8bit(r->headers, r->headers_len))
		return true;
	if (r->content != NULL && has_8bit(r->content, r->content_len))
		return true;
	for (i = 0; i < r->nrcpts; i++)
		if (r->rcpts[i].reply != NULL && !is_ascii(r->rcpts[i].reply))
			return true;
	return false;
}

/* Any address in the report that needs RFC 6533's utf-8 type. */
static bool
report_is_global(const struct bounce_report *r)
{
	size_t i;

	if (!is_ascii(r->sender))
		return true;
	for (i = 0; i < r->nrcpts; i++)
		if (!is_ascii(r->rcpts[i].address))
			return true;
	return false;
}

void
bounce_status(const struct bounce_rcpt *r, char out[BOUNCE_STATUS_SIZE])
{
	const char *p = r->reply;
	size_t n1, n2, n3;

	if (r->expired) {
		snprintf(out, BOUNCE_STATUS_SIZE, "4.4.7");
		return;
	}
	if (p == NULL || strlen(p) < 3) {
		snprintf(out, BOUNCE_STATUS_SIZE, "5.0.0");
		return;
	}
	/* "550 5.1.1 text": the enhanced code after the basic one. */
	if (p[3] == ' ' || p[3] == '-') {
		const char *e = p + 4;

		n1 = strspn(e, "245");
		if (n1 == 1 && e[1] == '.') {
			n2 = strspn(e + 2, "0123456789");
			if (n2 >= 1 && n2 <= 3 && e[2 + n2] == '.') {
				n3 = strspn(e + 3 + n2, "0123456789");
				if (n3 >= 1 && n3 <= 3 &&
				    (e[3 + n2 + n3] == ' ' ||
				    e[3 + n2 + n3] == '\0')) {
					snprintf(out, BOUNCE_STATUS_SIZE,
					    "%.*s", (int)(3 + n2 + n3), e);
					return;
				}
			}
		}
	}
	snprintf(out, BOUNCE_STATUS_SIZE, "%c.0.0", p[0] == '2' || p[0] == '4' ?
	    p[0] : '5');
}

static const char *
kind_subject(enum bounce_kind kind)
{
	switch (kind) {
	case BOUNCE_DELAYED:
		return "Delayed Mail (still being retried)";
	case BOUNCE_SUCCESS:
		return "Successful Mail Delivery Report";
	case BOUNCE_FAILED:
		break;
	}
	return "Undelivered Mail Returned to Sender";
}

static const char *
kind_name(enum bounce_kind kind)
{
	switch (kind) {
	case BOUNCE_DELAYED:
		return "delayed";
	case BOUNCE_SUCCESS:
		return "success";
	case BOUNCE_FAILED:
		break;
	}
	return "failed";
}

static const char *
rcpt_action(const struct bounce_report *r, const struct bounce_rcpt *rc)
{
	if (r->kind == BOUNCE_SUCCESS)
		return rc->relayed ? "relayed" : "delivered";
	return kind_name(r->kind);
}

size_t
bounce_header_len(const char *content, size_t len)
{
	size_t i;

	if (len >= 2 && content[0] == '\r' && content[1] == '\n')
		return 0;
	if (len >= 1 && content[0] == '\n')
		return 0;
	for (i = 0; i < len; i++) {
		if (content[i] != '\n')
			continue;
		if (i + 1 < len && content[i + 1] == '\n')
			return i + 1;
		if (i + 2 < len && content[i + 1] == '\r' &&
		    content[i + 2] == '\n')
			return i + 1;
	}
	return len;
}

/* Append text with every line ending made CRLF, ending with one. */
static void
append_crlf(struct buf *out, const char *p, size_t len)
{
	size_t i, start = 0;

	for (i = 0; i < len; i++) {
		if (p[i] != '\n' && p[i] != '\r')
			continue;
		buf_append(out, p + start, i - start);
		buf_append(out, "\r\n", 2);
		if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')
			i++;
		start = i + 1;
	}
	if (start < len) {
		buf_append(out, p + start, len - start);
		buf_append(out, "\r\n", 2);
	}
}

static void
build_headers(const struct bounce_report *r, const char *id, int64_t now,
    bool global, struct buf *out)
{
	char date[64];

	rfc5322_date(date, sizeof(date), (time_t)now);
	buf_appendf(out, "Date: %s\r\n", date);
	buf_appendf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
	    r->reporting_mta);
	buf_appendf(out, "To: <%s>\r\n", r->sender);
	buf_appendf(out, "Subject: %s\r\n", kind_subject(r->kind));
	buf_appendf(out, "Message-ID: <%s.dsn@%s>\r\n", id, r->reporting_mta);
	/* RFC 3834: no autoresponder may answer this one. */
	buf_appends(out, "Auto-Submitted: auto-replied\r\n");
	buf_appends(out, "MIME-Version: 1.0\r\n");
	buf_appendf(out, "Content-Type: multipart/report;"
	    " report-type=%s;\r\n\tboundary=\"%s/%s\"\r\n",
	    global ? "global-delivery-status" : "delivery-status", id,
	    r->reporting_mta);
	buf_appendf(out, "Content-Transfer-Encoding: %s\r\n\r\n",
	    global || report_is_8bit(r) ? "8bit" : "7bit");
	buf_appends(out, "This is a MIME-encapsulated message.\r\n\r\n");
}

static void
build_human(const struct bounce_report *r, const char *boundary,
    struct buf *out)
{
	size_t i;

	buf_appendf(out, "--%s\r\n", boundary);
	buf_appends(out, "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n\r\n");
	buf_appendf(out, "This is the mail system at host %s.\r\n\r\n",
	    r->reporting_mta);
	if (r->kind == BOUNCE_DELAYED) {
		char until[64];

		rfc5322_date(until, sizeof(until), (time_t)r->retry_until);
		buf_appends(out, "Your message could not be delivered yet to"
		    " the recipients below.\r\nIt is still in the queue and"
		    " will be tried again until\r\n");
		buf_appendf(out, "%s. You do not need to send it again.\r\n",
		    until);
	} else if (r->kind == BOUNCE_SUCCESS) {
		buf_appends(out, "Your message was delivered to the recipients"
		    " below, as you asked.\r\nA recipient marked \"relayed\""
		    " went to a server that sends no\r\nfurther delivery"
		    " notifications.\r\n");
	} else {
		buf_appends(out, "Your message could not be delivered to the"
		    " recipients below.\r\nIt has been given up on; the"
		    " reasons follow.\r\n");
	}
	buf_appends(out, "\r\n");
	for (i = 0; i < r->nrcpts; i++) {
		const struct bounce_rcpt *rc = &r->rcpts[i];

		buf_appendf(out, "<%s>: ", rc->address);
		if (r->kind == BOUNCE_SUCCESS)
			buf_appendf(out, "%s; ", rcpt_action(r, rc));
		if (rc->expired)
			buf_appends(out, "delivery time expired; last error: ");
		buf_appendf(out, "%s\r\n", rc->reply != NULL ? rc->reply :
		    "no delivery attempt");
	}
	buf_appends(out, "\r\n");
}

static void
build_status(const struct bounce_report *r, const char *boundary,
    bool global, struct buf *out)
{
	char date[64], status[BOUNCE_STATUS_SIZE];
	const char *addr_type = global ? "utf-8" : "rfc822";
	size_t i;

	buf_appendf(out, "--%s\r\n", boundary);
	buf_appends(out, "Content-Description: Delivery report\r\n");
	buf_appendf(out, "Content-Type: message/%s\r\n\r\n", global ?
	    "global-delivery-status" : "delivery-status");
	buf_appendf(out, "Reporting-MTA: dns; %s\r\n", r->reporting_mta);
	/* RFC 3464 2.2.1: the ENVID, as the sender gave it (decoded). */
	if (r->envid != NULL)
		buf_appendf(out, "Original-Envelope-Id: %s\r\n", r->envid);
	buf_appendf(out, "X-Mxgate-Queue-ID: %s\r\n", r->queue_id);
	rfc5322_date(date, sizeof(date), (time_t)r->received_at);
	buf_appendf(out, "Arrival-Date: %s\r\n", date);
	for (i = 0; i < r->nrcpts; i++) {
		const struct bounce_rcpt *rc = &r->rcpts[i];

		bounce_status(rc, status);
		buf_appends(out, "\r\n");
		/* RFC 3464 2.3.1: the ORCPT, "type;address" decoded. */
		if (rc->orcpt != NULL)
			buf_appendf(out, "Original-Recipient: %s\r\n",
			    rc->orcpt);
		buf_appendf(out, "Final-Recipient: %s; %s\r\n", addr_type,
		    rc->address);
		buf_appendf(out, "Action: %s\r\n", rcpt_action(r, rc));
		buf_appendf(out, "Status: %s\r\n", status);
		if (rc->remote_mta != NULL && rc->remote_mta[0] != '\0')
			buf_appendf(out, "Remote-MTA: dns; %s\r\n",
			    rc->remote_mta);
		if (rc->reply != NULL)
			buf_appendf(out, "Diagnostic-Code: %s; %s\r\n",
			    rc->smtp_reply || rc->remote_mta != NULL ? "smtp" :
			    "X-mxgate",
			    rc->reply);
		if (rc->last_attempt_at > 0) {
			rfc5322_date(date, sizeof(date),
			    (time_t)rc->last_attempt_at);
			buf_appendf(out, "Last-Attempt-Date: %s\r\n", date);
		}
		if (r->kind == BOUNCE_DELAYED) {
			rfc5322_date(date, sizeof(date),
			    (time_t)r->retry_until);
			buf_appendf(out, "Will-Retry-Until: %s\r\n", date);
		}
	}
	buf_appends(out, "\r\n");
}

void
bounce_build(const struct bounce_report *r, const char *id, int64_t now,
    struct buf *out)
{
	bool global = report_is_global(r);
	char boundary[512];

	snprintf(boundary, sizeof(boundary), "%s/%s", id, r->reporting_mta);
	build_headers(r, id, now, global, out);
	build_human(r, boundary, out);
	build_status(r, boundary, global, out);
	buf_appendf(out, "--%s\r\n", boundary);
	if (r->content != NULL && r->kind == BOUNCE_FAILED) {
		/* RET=FULL (RFC 3461 4.3): the whole original. */
		buf_appends(out, "Content-Description: Undelivered Message\r\n");
		buf_appendf(out, "Content-Type: %s\r\n\r\n", global ?
		    "message/global" : "message/rfc822");
		append_crlf(out, r->content, r->content_len);
	} else {
		buf_appendf(out, "Content-Description: %s\r\n",
		    r->kind == BOUNCE_SUCCESS ? "Message Headers" :
		    "Undelivered Message Headers");
		buf_appendf(out, "Content-Type: %s\r\n\r\n", global ?
		    "message/global-headers" : "text/rfc822-headers");
		append_crlf(out, r->headers, r->headers_len);
	}
	buf_appendf(out, "\r\n--%s--\r\n", boundary);
}

/* The DSN's reception line, as every queued message has one (README
 * "Logs"): of= the message it reports on, reported= how many of its
 * recipients. */
static void
log_queued(const struct bounce_report *r, const struct envelope *env,
    size_t size)
{
	struct log_rec rec;

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	log_rec_begin(&rec);
	log_rec_str(&rec, "id", env->queue_id);
	log_rec_str(&rec, "event", "queued");
	log_rec_str(&rec, "origin", "dsn");
	log_rec_str(&rec, "kind", kind_name(r->kind));
	log_rec_str(&rec, "of", r->queue_id);
	log_rec_path(&rec, "from", "");
	log_rec_path(&rec, "to", r->sender);
	log_rec_num(&rec, "size", (long long)size);
	log_rec_num(&rec, "nrcpt", 1);
	log_rec_num(&rec, "reported", (long long)r->nrcpts);
	log_rec_emit(&rec, LOG_LEVEL_INFO);
}

int
bounce_queue(struct queue_db *db, const struct bounce_report *r,
    const char *upstream, int64_t now, char new_id[QUEUE_ID_LEN + 1])
{
	struct json_writer w;
	struct envelope env;
	struct buf content, params;
	int rc;

	if (r->sender == NULL || r->sender[0] == '\0')
		return 1;
	envelope_init(&env);
	queue_id_new(env.queue_id);
	env.received_at = now;
	env.sender = xstrdup("");
	env.helo = xstrdup(r->reporting_mta);
	env.protocol = xstrdup("DSN");
	buf_init(&content);
	bounce_build(r, env.queue_id, now, &content);
	env.body_8bitmime = has_8bit(content.data, content.len);
	env.smtputf8 = !is_ascii(r->sender);

	buf_init(&params);
	json_writer_init(&w, &params);
	json_begin_object(&w);
	json_key(&w, "upstream");
	json_string(&w, upstream);
	json_key(&w, "vars");
	json_begin_object(&w);
	json_end_object(&w);
	json_end_object(&w);
	envelope_add_rcpt(&env, r->sender, "bounce", "relay", params.data);
	/* A DSN is never the subject of another (RFC 3461 6.2). */
	envelope_rcpt_dsn(&env, DSN_NOTIFY_NEVER, NULL);

	rc = queue_db_insert_alone(db, &env, content.data, content.len);
	if (rc == 0) {
		memcpy(new_id, env.queue_id, QUEUE_ID_LEN + 1);
		log_queued(r, &env, content.len);
	}
	buf_free(&params);
	buf_free(&content);
	envelope_free(&env);
	return rc == 0 ? 0 : -1;
}
