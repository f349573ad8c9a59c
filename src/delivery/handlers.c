/*
 * handlers — see handlers.h: the dispatch on the action, and the two
 * handlers too small for a file of their own, discard and debug.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"

/* debug prints at most this much of a message, and splits longer lines
 * so that each fits in one log line. */
#define DEBUG_MAX_BYTES  (256 * 1024)
#define DEBUG_LINE_CHUNK 900

static int handle_discard(struct delivery_job *, const struct json_value *);
static int handle_debug(struct delivery_job *, const struct json_value *);

static const struct {
	const char *action;
	int (*deliver)(struct delivery_job *, const struct json_value *);
} handlers[] = {
	{ "maildir", handler_maildir },
	{ "pipe", handler_pipe },
	{ "lmtp", handler_lmtp },
	{ "webhook", handler_webhook },
	{ "discard", handle_discard },
	{ "debug", handle_debug },
};

static int
handle_discard(struct delivery_job *job, const struct json_value *params)
{
	strlcpy_mx(job->destination, "discard", sizeof(job->destination));
	for (size_t i = 0; i < job->nrcpts; i++)
		log_info("id=%s discarded rcpt=<%s> route=%s", job->queue_id,
		    job->rcpts[i].address, job->route);
	delivery_set_pending(job, DELIVERY_OK, "2.0.0 discarded");
	return 0;
}

/* One line of the message, as log lines "| ..." (control characters as
 * '?', long lines split). */
static void
debug_line(const char *id, const char *line, size_t len)
{
	char chunk[DEBUG_LINE_CHUNK + 1];
	size_t off = 0;

	do {
		size_t n = len - off < DEBUG_LINE_CHUNK ? len - off :
		    DEBUG_LINE_CHUNK;

		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)line[off + i];

			chunk[i] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' :
			    (char)c;
		}
		chunk[n] = '\0';
		log_info("id=%s debug %s %s", id, off == 0 ? "|" : "+", chunk);
		off += n;
	} while (off < len);
}

/*
 * The sink developers test their applications against: one block per
 * message in the log (every line starts with the queue id, so a block
 * stays whole under grep even when other processes log in between).
 */
static int
handle_debug(struct delivery_job *job, const struct json_value *params)
{
	const char *content = delivery_content(job), *p, *end, *nl;
	char date[64];
	struct buf rcpts;

	if (content == NULL)
		return -1;
	buf_init(&rcpts);
	for (size_t i = 0; i < job->nrcpts; i++)
		buf_appendf(&rcpts, "%s<%s>", i > 0 ? " " : "",
		    job->rcpts[i].address);
	rfc5322_date(date, sizeof(date), (time_t)job->received_at);
	log_info("id=%s debug ---- message %s ----", job->queue_id,
	    job->queue_id);
	log_info("id=%s debug from=<%s> to=%s route=%s", job->queue_id,
	    job->sender, rcpts.data, job->route);
	log_info("id=%s debug client=%s helo=%s protocol=%s auth=%s size=%zu "
	    "received=\"%s\"", job->queue_id,
	    job->client_ip != NULL ? job->client_ip : "unknown",
	    job->helo != NULL ? job->helo : "", job->protocol,
	    job->auth_user != NULL ? job->auth_user : "-", job->content_len,
	    date);
	end = content + (job->content_len < DEBUG_MAX_BYTES ?
	    job->content_len : DEBUG_MAX_BYTES);
	for (p = content; p < end; p = nl + 1) {
		size_t len;

		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		len = (size_t)(nl - p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		debug_line(job->queue_id, p, len);
	}
	if (job->content_len > DEBUG_MAX_BYTES)
		log_info("id=%s debug | ... %zu more bytes not shown",
		    job->queue_id, job->content_len - DEBUG_MAX_BYTES);
	log_info("id=%s debug ---- end of message %s ----", job->queue_id,
	    job->queue_id);
	buf_free(&rcpts);
	strlcpy_mx(job->destination, "log", sizeof(job->destination));
	delivery_set_pending(job, DELIVERY_OK, "2.0.0 printed to the log");
	return 0;
}

const struct route_conf *
handler_route_conf(const struct delivery_job *job)
{
	const struct mxconf *conf = job->conf;

	for (size_t i = 0; conf != NULL && job->route != NULL &&
	    i < conf->nroutes; i++)
		if (conf->routes[i].name != NULL &&
		    strcmp(conf->routes[i].name, job->route) == 0)
			return &conf->routes[i];
	return NULL;
}

const char *
handler_attachments_dir(const struct delivery_job *job,
    const struct json_value *params)
{
	const char *dir = json_get_string(params, "attachments_dir");
	const struct route_conf *rc;

	if (dir == NULL && (rc = handler_route_conf(job)) != NULL)
		dir = rc->attachments_dir;
	return dir;
}

int
handler_deliver(struct delivery_job *job)
{
	const char *text = job->params_json != NULL ? job->params_json : "{}";
	struct json_value *params;
	char err[128];
	int rc = -1;

	params = json_parse(text, strlen(text), err, sizeof(err));
	if (params == NULL || params->type != JSON_OBJECT) {
		/* Only a bug or a damaged queue gets here; deferring keeps the
		 * message until an operator looks (or it expires). */
		log_error("id=%s action=%s bad action parameters: %s",
		    job->queue_id, job->action,
		    params == NULL ? err : "not an object");
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.5 bad action parameters in the queue");
		json_free(params);
		return -1;
	}
	for (size_t i = 0; i < ARRAY_LEN(handlers); i++) {
		if (strcmp(job->action, handlers[i].action) == 0) {
			rc = handlers[i].deliver(job, params);
			json_free(params);
			return rc;
		}
	}
	log_error("id=%s unknown action %s", job->queue_id, job->action);
	delivery_set_pending(job, DELIVERY_DEFER, "4.3.5 unknown action %s",
	    job->action);
	json_free(params);
	return -1;
}
