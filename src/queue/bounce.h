/*
 * bounce — delivery status notifications (RFC 3464): the message that
 * tells a sender that some of its recipients failed permanently, expired
 * (delivery.max_queue_time), are delayed (delivery.delay_warning), or,
 * when they asked for it with NOTIFY=SUCCESS (RFC 3461), were delivered
 * or relayed.
 *
 * A DSN is a multipart/report (RFC 6522) with three parts: a text for
 * people, a message/delivery-status (Reporting-MTA, Original-Envelope-Id
 * when the sender gave ENVID, Arrival-Date, and per recipient
 * Original-Recipient when it gave ORCPT, Final-Recipient, Action, Status,
 * Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until), and
 * the original: the whole message (message/rfc822) in a failure DSN of a
 * message sent with RET=FULL, else its header block
 * (text/rfc822-headers; RFC 3461 4.3 leaves the choice to us without
 * RET, and a delay or success DSN never returns the body).  When an
 * address is not ASCII (SMTPUTF8 mail) the parts become
 * message/global-delivery-status, message/global-headers and
 * message/global (RFC 6533).
 *
 * bounce_queue() puts a DSN into the queue as a new message from the null
 * sender to the original sender, inside the caller's transaction, with
 * one recipient routed by action "relay" to the upstream given (the
 * configuration's delivery.bounce_upstream, "mx" by default), with
 * NOTIFY=NEVER: a DSN is never the subject of another.  There is never a
 * DSN to the null sender (RFC 5321 4.5.5): a DSN that fails is dropped,
 * which the caller logs.  Which recipients get one (their NOTIFY) is
 * the caller's decision.
 */
#ifndef MXGATE_BOUNCE_H
#define MXGATE_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/queue_db.h"
#include "common/util.h"

enum bounce_kind {
	BOUNCE_FAILED,          /* Action: failed (permanent or expired) */
	BOUNCE_DELAYED,         /* Action: delayed (a warning, still retried) */
	BOUNCE_SUCCESS,         /* Action: delivered or relayed (NOTIFY=SUCCESS) */
};

struct bounce_rcpt {
	const char *address;
	const char *reply;              /* the last reply, "550 5.1.1 ...";
	                                 * NULL when there was none */
	const char *remote_mta;         /* host that gave it; NULL for local */
	int64_t     last_attempt_at;    /* 0 when never attempted */
	bool        expired;            /* failed because time ran out */
	bool        smtp_reply;         /* the reply is an SMTP or LMTP
	                                 * server's: Diagnostic-Code smtp */
	bool        relayed;            /* BOUNCE_SUCCESS: Action relayed (to
	                                 * a server without DSN), not
	                                 * delivered */
	const char *orcpt;              /* ORCPT "type;address", or NULL */
};

struct bounce_report {
	enum bounce_kind kind;
	const char *queue_id;           /* the original message */
	const char *sender;             /* its sender: the DSN goes there */
	int64_t     received_at;
	const char *reporting_mta;      /* our host name */
	const char *headers;            /* the original header block */
	size_t      headers_len;
	int64_t     retry_until;        /* BOUNCE_DELAYED: when we give up */
	const struct bounce_rcpt *rcpts;
	size_t      nrcpts;
	const char *content;            /* the whole original, for a failure
	                                 * DSN with RET=FULL; else NULL */
	size_t      content_len;
	const char *envid;              /* ENVID, or NULL */
};

/*
 * The RFC 3463 status for a recipient: the reply's enhanced code if it
 * has one, else its class ("2.0.0", "4.0.0", "5.0.0"); "4.4.7" (delivery
 * time expired) for an expired recipient; out needs BOUNCE_STATUS_SIZE
 * bytes.
 */
#define BOUNCE_STATUS_SIZE 16
void bounce_status(const struct bounce_rcpt *r, char out[BOUNCE_STATUS_SIZE]);

/* Append the DSN (headers and body, CRLF line ends) for r to out.  id
 * (the DSN's own queue id) makes its Message-ID and MIME boundary. */
void bounce_build(const struct bounce_report *r, const char *id,
    int64_t now, struct buf *out);

/*
 * Queue the DSN inside the current transaction (queue_db_insert()):
 * 0 and its queue id in new_id; 1 when none is due (null sender); -1 on
 * failure (logged by queue_db).
 */
int bounce_queue(struct queue_db *db, const struct bounce_report *r,
    const char *upstream, int64_t now, char new_id[QUEUE_ID_LEN + 1]);

/* The header block of a message: its length up to the empty line that
 * ends it (excluded), or the whole text when there is none. */
size_t bounce_header_len(const char *content, size_t len);

#endif
