/*
 * delivery — the contract between the scheduler (in the queue process)
 * and whatever delivers a message: the relay client (relay.c) and the
 * local handlers (handlers.c and handler_*.c).
 *
 * The scheduler groups the due recipients of one message that go to the
 * same destination (same action and same parameters; for relay the same
 * upstream, and with "mx" the same recipient domain) into one job, has
 * the delivery spawner start a process for it, which runs
 * relay_deliver() (action "relay") or handler_deliver() (every other
 * action).  The child reports each
 * recipient's outcome back to the queue process, which records it
 * (state, history row) and decides on retries and bounces: a handler
 * never retries, never bounces, and never touches the queue database.
 *
 * The process a job runs in:
 *   - a child of the delivery spawner (spawner.h), started for the queue
 *     process, as server.delivery_user or the route's user=, which
 *     cannot open the queue; no capability, no_new_privs, the delivery
 *     seccomp deny-list; the current directory is / (paths in params
 *     are absolute);
 *   - stdin is /dev/null, stdout and stderr are the daemon's (logs);
 *     every other inherited descriptor is closed except the job's own
 *     (content_fd) and the report channel (close-on-exec);
 *   - an empty signal mask, default dispositions, except SIGPIPE which is
 *     ignored (SIG_IGN survives execve: reset it to SIG_DFL in a child
 *     before exec'ing a command);
 *   - the process is long-lived (spawner.h): handler_deliver() and
 *     relay_deliver() are called for job after job, batch after batch;
 *     the relay client keeps its connection for the next job to the
 *     same upstream (connection reuse), relay_batch_end() after each
 *     batch, relay_finish() when the connection has been idle a while
 *     and before the process exits;
 *   - the queue process has the child killed (SIGKILL) when a job runs longer
 *     than DELIVERY_JOB_TIMEOUT seconds: handlers enforce their own,
 *     shorter, timeouts (a pipe command's "timeout", the network's) and
 *     report DELIVERY_DEFER themselves.
 *
 * Outcomes, per recipient (struct delivery_rcpt.status):
 *   DELIVERY_OK     delivered (remote 2xx, maildir written and fsynced,
 *                   command exited 0, webhook 2xx, discarded, printed);
 *   DELIVERY_DEFER  temporary failure (4xx, EX_TEMPFAIL, timeout,
 *                   connection failure): retried later per the schedule;
 *   DELIVERY_FAIL   permanent failure (5xx, any other exit status, 4xx
 *                   webhook answers other than 408/429): bounced to the
 *                   sender, with reply in the DSN.
 * A recipient left DELIVERY_PENDING when the job ends (or when the child
 * dies) is deferred with a generic reply.
 *
 * Replies (struct delivery_rcpt.reply) are one line in SMTP form: a
 * three-digit code, an RFC 3463 enhanced status code, and text:
 *   "250 2.0.0 Ok: queued as 4XYZ"                     (remote, verbatim)
 *   "550 5.1.1 <bob@example.org>: user unknown"        (remote, verbatim)
 *   "250 2.0.0 delivered to /var/mail/bob/new/1700..."  (local)
 *   "451 4.3.0 command exited with status 75 (EX_TEMPFAIL)"
 *   "554 5.3.0 command exited with status 1: <first line of stderr>"
 * A multi-line remote reply is joined with " / ".  The code class must
 * agree with the status (2 OK, 4 DEFER, 5 FAIL): delivery_set() fixes a
 * reply that does not carry a code.  The reply is what the operator sees
 * in `mxgatectl queue show`, and for DELIVERY_FAIL the Status and
 * Diagnostic-Code of the bounce (RFC 3464).
 */
#ifndef MXGATE_DELIVERY_H
#define MXGATE_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

/* The queue process's hard limit on one job, in seconds. */
#define DELIVERY_JOB_TIMEOUT 3600

#define DELIVERY_REPLY_MAX 512
#define DELIVERY_DEST_MAX  256

enum delivery_status {
	DELIVERY_PENDING = 0,   /* not decided yet */
	DELIVERY_OK,
	DELIVERY_DEFER,
	DELIVERY_FAIL,
};

struct delivery_rcpt {
	const char *address;            /* "local@domain" */
	int64_t     recipient_id;       /* recipients.id in the queue */
	int         status;             /* enum delivery_status; set it */
	char        reply[DELIVERY_REPLY_MAX];      /* set it (see above) */
	bool        remote;             /* reply is the remote server's (SMTP,
	                                 * LMTP): the bounce says
	                                 * "Diagnostic-Code: smtp; reply" and
	                                 * names the Remote-MTA; delivery_set()
	                                 * clears it */
	unsigned    dsn_notify;         /* DSN NOTIFY bits (common/dsn.h),
	                                 * 0 when the client gave none */
	const char *dsn_orcpt;          /* ORCPT "type;address", or NULL */
	bool        dsn_passed;         /* set by relay and LMTP: the server
	                                 * offered DSN and took the request,
	                                 * so its success DSN is its job, not
	                                 * ours */
};

/* One delivery job: one message, one action and destination, one or
 * more recipients. */
struct delivery_job {
	const char *queue_id;
	const char *sender;             /* envelope sender, "" for <> */
	const char *route;              /* name of the route (webhook secret) */
	const char *action;             /* "relay", "maildir", "pipe", ... */
	const char *params_json;        /* the route's expanded parameters
	                                 * and "vars": see the architecture
	                                 * notes, one JSON object */
	const struct mxconf *conf;

	/* The message: headers and body exactly as received (CRLF line
	 * ends, no dot-stuffing), with our Received: header on top.  A
	 * sealed read-only memfd, content_len bytes from content_off (the
	 * batch's other messages around them): read it with
	 * delivery_content(); never close it. */
	int         content_fd;
	uint64_t    content_off;
	size_t      content_len;

	const char *client_ip;          /* NULL when unknown */
	const char *helo;
	const char *protocol;           /* "ESMTP", "ESMTPS", ... */
	const char *auth_user;          /* NULL when not authenticated */
	int64_t     received_at;        /* unix seconds */
	bool        body_8bitmime;      /* the client declared BODY=8BITMIME */
	bool        smtputf8;           /* the client declared SMTPUTF8 */
	int         dsn_ret;            /* RET: enum dsn_ret */
	const char *dsn_envid;          /* ENVID decoded, or NULL */

	struct delivery_rcpt *rcpts;
	size_t      nrcpts;

	/* Relay to "mx": the domain's MTA-STS policy the queue database has
	 * cached (mta_sts.h's line), NULL for none. */
	const char *sts_cached;

	/* Set by the handler: where the message went, for the queue's
	 * destination column and the bounce's Remote-MTA, e.g.
	 * "mx.example.org[192.0.2.25]:25", "/var/mail/bob/",
	 * "/usr/local/bin/ticket-add", "unix:/run/dovecot/lmtp",
	 * "https://app.example/inbound".  Empty when unknown. */
	char        destination[DELIVERY_DEST_MAX];

	/* Set by the relay client when its connection is ready for the
	 * job's transaction (monotonic_us()); 0 for local handlers.  The
	 * log's delays: connecting before it, transfer after it. */
	uint64_t    connected_us;

	/* Private to delivery.c (what delivery_content() made: a mapping,
	 * or the content read into the process's buffer). */
	void       *content_map;
	const char *content_read;
};

/*
 * Local handlers (handlers.c): deliver the job by job->action (every
 * action but "relay"), setting each recipient's status and reply and
 * job->destination.  Returns 0, or -1 when the job could not be run at
 * all (also logged; the recipients still pending are deferred).
 */
int handler_deliver(struct delivery_job *job);

/*
 * The relay client (relay.c): deliver the job by SMTP to its upstream
 * ("upstream" in params: a name from the configuration's upstreams, or
 * "mx").  Same return convention.  May keep the connection open for the
 * next job of the same process; relay_finish() closes whatever is left
 * (QUIT) before the process exits.
 */
int relay_deliver(struct delivery_job *job);
void relay_finish(void);
/* The end of a batch of jobs (the process waits for the next): forget
 * the addresses that failed during it, which the next batch may try
 * again. */
void relay_batch_end(void);

/*
 * TLS notes from the relay client to the queue process, which keeps
 * them in the queue database (spawner.c sends them; outside a delivery
 * process they are dropped): a freshly fetched MTA-STS policy to cache
 * (mta_sts.h), one TLS session's result for TLS-RPT (RFC 8460).
 */
struct delivery_tls_result {
	const char *domain;             /* the recipient domain */
	const char *policy_type;        /* "sts", "tlsa", "no-policy-found" */
	const char *policy;             /* its lines, '\n'-separated */
	const char *mx_host;
	const char *result_type;        /* RFC 8460 4.3; "" for a success */
	const char *sending_ip, *receiving_ip;
};
extern int delivery_note_fd;   /* the report channel; -1: none */
void delivery_note_sts(const char *domain, const char *id, const char *mode,
    int64_t max_age, int64_t fetched_at, const char *mx);
void delivery_note_tls(const struct delivery_tls_result *r);

/* ---- helpers for both (delivery.c) ---- */

/*
 * Set one recipient's outcome.  fmt makes the reply; when it does not
 * start with a three-digit code, one matching status is put in front
 * ("250 2.0.0 ", "451 4.0.0 ", "554 5.0.0 "), so that
 *   delivery_set(r, DELIVERY_FAIL, "5.3.0 command exited with status %d", st)
 * stores "554 5.3.0 command exited with status 1".  Control characters
 * (from remote replies, stderr) become spaces.
 */
void delivery_set(struct delivery_rcpt *r, enum delivery_status status,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for every recipient of the job still DELIVERY_PENDING. */
void delivery_set_pending(struct delivery_job *job,
    enum delivery_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The content (content_len bytes, not NUL-terminated, read-only), valid
 * until delivery_content_release(): read into a buffer the process
 * reuses from job to job, or mapped when large; NULL (logged) if it
 * cannot be read. */
const char *delivery_content(struct delivery_job *job);
/* The end of the job: its content goes (the buffer stays, for the next). */
void delivery_content_release(struct delivery_job *job);

/*
 * The directory mxgated was started from, when the delivery process
 * entered it before giving up root (spawner.c): a target under it (the
 * sample's ./var/mail maildirs) is then reached by a path relative to
 * it, even when a directory above it (a 0700 /root) would stop the
 * delivery user.  NULL: paths are used as they are.
 */
extern const char *delivery_start_dir;
/* path relative to delivery_start_dir when it lies under it, else path. */
const char *delivery_local_path(const char *path);

#endif
