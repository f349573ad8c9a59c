/*
 * hooks — the checks that decide each SMTP command of a session, in a
 * smtp worker, and the worker-wide services they use.
 *
 * For each stage the session calls hooks_run(); the answer comes through
 * the session's done callback, at once or later (the session keeps the
 * engine's event pending meanwhile: hooks_busy()).  The steps, in order;
 * the first reject or tempfail is the answer:
 *
 *   connect   reject_networks (554 5.7.1); plugins; policy service
 *   helo      helo_checks (501 5.5.2: the argument is not a host name or
 *             address literal -- a syntax error, and the client may try
 *             again); plugins; policy service
 *   mail      the message rate limit (450 4.7.1); the SPF check starts
 *             here, off the event loop; with spf.mail_from_policy =
 *             "reject_fail", wait for it: fail is 550 5.7.23; plugins;
 *             policy service
 *   rcpt      (the session matched a route first) the route's
 *             sender_auth: any listed method that passes admits the
 *             recipient -- "auth" the client authenticated, "tls" the
 *             session is encrypted, "spf" the result is in
 *             spf.pass_results; else 451 4.7.24 (SPF temperror), 550
 *             5.7.24 (permerror), 550 5.7.23 (other SPF results), or 530
 *             5.7.0 when only auth/tls were allowed; plugins; policy
 *             service
 *   data      plugins; policy service; then wait for the SPF result, which
 *             the Authentication-Results field reports (hooks_authres())
 *   end_of_message   plugins (with the header section and size); policy
 *             service
 * and at every stage, last, the milters (milter_client.h), for trusted
 * clients too.  At RCPT the policy service is the one the recipient's
 * route names (routes[].policy_service), else the global one; the
 * route's milters join the session's.
 *
 * A plugin's or the policy service's accept skips the later plugins and
 * the policy service of that stage, never the steps before them.
 * Clients in trusted_networks skip SPF (a route's "spf" passes for them),
 * the policy service and the message rate limit; plugins still run.
 *
 * SPF results are cached per session: the same HELO name and sender (the
 * client being the same) are checked once.
 *
 * Worker-wide: the SPF thread pool, the policy clients, the milter pool
 * and the message rate counter are made by hooks_worker_init() in each worker after the
 * fork; their descriptors go into the worker's epoll loop.
 */
#ifndef MXGATE_HOOKS_H
#define MXGATE_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "smtp/policy.h"
#include "smtp/route.h"
#include "common/util.h"

/* ---- the worker's services ---- */

/* 0, or -1 (logged) when a service cannot start. */
int  hooks_worker_init(const struct mxconf *conf);
void hooks_worker_free(void);
/* The descriptors to watch for reading; returns how many. */
size_t hooks_worker_fds(int *fds, size_t max);
/* One of them is readable. */
void hooks_worker_dispatch(int fd);
/* About once a second: timeouts and expiry. */
void hooks_worker_tick(uint64_t now_ms);

/* ---- a session's checks ---- */

struct hooks_client {
	uint64_t    conn_id;
	const char *ip;
	unsigned    port;
	const char *server_ip;
	unsigned    server_port;
};

/*
 * What the session knows at a stage.  The struct is copied, but what it
 * points to must stay as it is until the stage is answered (the session
 * changes nothing while the engine's event is pending); route is read
 * during hooks_run() only.
 */
struct hooks_view {
	const char *helo;
	bool        esmtp;
	bool        tls;
	const char *tls_version;     /* "TLSv1.3", NULL in plaintext */
	const char *tls_cipher;
	int         tls_bits;
	const char *auth_user;       /* NULL: not authenticated */
	const char *queue_id;
	const char *sender;          /* "" for <> */
	const char *rcpt;            /* rcpt stage */
	const char *const *rcpts;    /* accepted so far */
	unsigned    nrcpts;
	unsigned long long size;     /* SIZE= at MAIL, content at the end */
	const struct route_result *route;   /* rcpt stage: the decision */
	const char *headers;         /* end_of_message */
	size_t      headers_len;
	bool        headers_truncated;
	bool        body_8bitmime;   /* MAIL's BODY=8BITMIME */
	const char *message;         /* end_of_message, for the milters: */
	size_t      message_len;     /* the whole message */
};

/* later: called from the worker's loop rather than inside hooks_run(). */
typedef void (*hooks_done_fn)(void *arg, enum smtp_stage stage,
    const struct policy_answer *a, bool later);

struct hooks_session;

struct hooks_session *hooks_session_new(const struct mxconf *conf,
    const struct hooks_client *client, hooks_done_fn done, void *arg);
/* Cancels what is pending: done is not called after this. */
void hooks_session_free(struct hooks_session *h);

/* Check stage; done() answers, maybe before this returns. */
void hooks_run(struct hooks_session *h, enum smtp_stage stage,
    const struct hooks_view *v);
/* A stage is waiting for SPF or the policy service. */
bool hooks_busy(const struct hooks_session *h);
/* The client is in trusted_networks. */
bool hooks_trusted(const struct hooks_session *h);
/* A new transaction (RSET, HELO, after a message). */
void hooks_txn_reset(struct hooks_session *h);

/* The header fields the policy service asked to PREPEND (policy.h) for
 * this transaction: those of CONNECT and HELO, then those of MAIL, RCPT
 * and DATA, each with its CRLF, appended to out. */
void hooks_prepended(const struct hooks_session *h, struct buf *out);

/* Why the policy service asked to HOLD (queue the message held) or to
 * DISCARD it (answer 250, queue nothing): "policy service NAME: text",
 * or NULL; valid until hooks_txn_reset(). */
const char *hooks_policy_hold(const struct hooks_session *h);
const char *hooks_policy_discard(const struct hooks_session *h);

/* After end_of_message was answered: what the milters changed (NULL
 * when none is configured); valid until hooks_txn_reset(). */
struct milter_outcome;
struct milter_outcome *hooks_milter_outcome(struct hooks_session *h);

/* Our Authentication-Results field for the transaction (after the data
 * stage answered), appended to out. */
void hooks_authres(struct hooks_session *h, const struct hooks_view *v,
    struct buf *out);

#endif
