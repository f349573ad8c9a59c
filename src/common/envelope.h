/*
 * envelope — what travels with a message from the smtp worker to the
 * queue: the SMTP envelope, the client, and the recipients with the route
 * decided for each.  Serialized into the message's memfd after the
 * content, read back by the queue process with every length checked (the
 * worker is less trusted than the queue).
 */
#ifndef MXGATE_ENVELOPE_H
#define MXGATE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/util.h"

struct envelope_rcpt {
	char *address;          /* "local@domain" */
	char *route;            /* name of the route that accepted it */
	char *action;           /* "queue" until delivery exists */
	char *params;           /* action parameters, JSON object text */
	unsigned dsn_notify;    /* DSN_NOTIFY_* bits, 0: none given */
	char *dsn_orcpt;        /* "type;address" decoded, NULL: none */
};

struct envelope {
	char     queue_id[QUEUE_ID_LEN + 1];
	int64_t  received_at;   /* unix seconds */
	char    *sender;        /* "" for the null sender */
	char    *client_ip;
	char    *helo;
	char    *protocol;      /* "SMTP", "ESMTP", "ESMTPS", ... */
	char    *auth_user;     /* NULL when not authenticated */
	char    *hold_reason;   /* non-NULL: commit the recipients held
	                         * (a milter's quarantine), and why */
	bool     body_8bitmime;
	bool     smtputf8;
	int      dsn_ret;       /* enum dsn_ret (common/dsn.h) */
	char    *dsn_envid;     /* ENVID decoded, NULL: none given */
	struct envelope_rcpt *rcpts;
	size_t   nrcpts;
};

void envelope_init(struct envelope *e);
void envelope_free(struct envelope *e);
/* Copies address, route, action and params; DSN values none. */
void envelope_add_rcpt(struct envelope *e, const char *address,
    const char *route, const char *action, const char *params);
/* Set the DSN values of the last recipient added (orcpt copied). */
void envelope_rcpt_dsn(struct envelope *e, unsigned notify,
    const char *orcpt);

/* Append the serialized form to b. */
void envelope_serialize(const struct envelope *e, struct buf *b);
/* Parse; -1 on any malformation (truncation, bad length, bad id). */
int envelope_parse(const char *data, size_t len, struct envelope *out);

#endif
