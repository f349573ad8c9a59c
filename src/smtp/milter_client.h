/*
 * milter_client — the milters of an smtp worker's sessions: one
 * connection per session and milter (the protocol is a conversation
 * about one SMTP session), in an event loop of the worker's own (as the
 * policy client's), spoken as milter.h encodes it.
 *
 * Which milters a message meets: those of `smtp_milters`, for every
 * session from its connection on, then those of the routes of its
 * recipients (routes[].milters), each once, in that order.  A route's
 * milter joins at the RCPT of the first recipient of that route: it is
 * told, then, what it missed (CONNECT, HELO, MAIL), and the RCPT commands
 * of the recipients of its routes only.  What it says at RCPT applies to
 * that recipient; at DATA and end of message to the message.  A message
 * is stored once, so a milter's edits (headers, body, recipients,
 * quarantine) apply to the message as a whole, whatever route brought
 * the milter in: the union, as Postfix applies its smtpd_milters to
 * every recipient of a message.
 *
 * At each stage the milters are asked one after the other, in order; the
 * first reject or tempfail is the answer.  At end of message each one
 * sees the message as the ones before it left it.  Their verdicts:
 *   continue          the next milter
 *   accept            this milter says nothing more about the message
 *                     (at CONNECT or HELO: about the session)
 *   reject, tempfail  550 5.7.1 / 451 4.7.1 (Postfix's words); the
 *                     reply's own code and text with SMFIR_REPLYCODE;
 *                     421 closes the session
 *   discard           the message is answered 250 and not queued; at
 *                     CONNECT or HELO every message of the session
 *                     (Postfix's reading of the protocol), and the
 *                     milter sees nothing more of it
 *   quarantine        the message is queued held (mxgatectl queue
 *                     release), with the reason in its history
 * A milter that cannot be reached, fails negotiation, breaks the
 * protocol or does not answer within its timeout is left out of the
 * rest of the session, and its default_action applies at that stage and
 * each later one it would have been asked at: "tempfail" (451 4.7.1,
 * 421 at CONNECT), "reject" (550 5.7.1, 554 at CONNECT) or "accept"
 * (nothing).
 */
#ifndef MXGATE_MILTER_CLIENT_H
#define MXGATE_MILTER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/util.h"
#include "smtp/policy.h"

/* ---- the worker's pool ---- */

/* Once per worker, after the fork; conf's milters[].address as
 * reachable from inside the worker (milter_address_inside()).  0, or -1
 * (logged). */
int  milter_pool_init(const struct mxconf *conf);
void milter_pool_free(void);
int  milter_pool_fd(void);      /* -1 when no milter is configured */
void milter_pool_dispatch(void);
void milter_pool_tick(uint64_t now_ms);

/* ---- a session's milters ---- */

struct milter_client_info {
	uint64_t    conn_id;
	const char *hostname;       /* ours: macro j */
	const char *client_ip;
	unsigned    client_port;
	const char *server_ip;
	unsigned    server_port;
};

/* What is known at a stage (the hooks' view, hooks.h). */
struct milter_stage_input {
	const char *helo;
	bool        esmtp;
	const char *tls_version;    /* NULL in plaintext */
	const char *tls_cipher;
	int         tls_bits;
	const char *auth_user;
	const char *queue_id;
	const char *sender;         /* "" for <> */
	bool        body_8bitmime;
	const char *rcpt;           /* rcpt stage */
	const char *rcpt_action;    /* its route's action: {rcpt_mailer} */
	const size_t *route_milters;/* rcpt stage: indexes in conf->milters */
	size_t      nroute_milters;
	const char *message;        /* end_of_message: the whole message */
	size_t      message_len;
};

/* What the end-of-message stage changed, for the session to apply. */
struct milter_outcome {
	bool        changed;        /* content holds the new message */
	struct buf  content;
	char      **add_rcpts;      /* "local@domain", without <> */
	size_t      nadd_rcpts;
	char      **del_rcpts;
	size_t      ndel_rcpts;
	char       *new_sender;     /* SMFIR_CHGFROM, without <>; NULL */
	char       *quarantine;     /* "milter=NAME reason", NULL */
	char       *discard;        /* "milter=NAME", NULL */
};

typedef void (*milter_done_fn)(void *arg, const struct policy_answer *a);

struct milter_session;

/* NULL when no milter applies to any session. */
struct milter_session *milter_session_new(const struct mxconf *conf,
    const struct milter_client_info *ci);
void milter_session_free(struct milter_session *ms);

/*
 * Ask the milters of stage; done() is called exactly once, maybe
 * before this returns (then with nothing to wait for), never after
 * milter_session_free().
 */
void milter_run(struct milter_session *ms, enum smtp_stage stage,
    const struct milter_stage_input *in, milter_done_fn done, void *arg);
/* The transaction ended (RSET, a new MAIL, after a message, an abort). */
void milter_txn_reset(struct milter_session *ms);
/* After end_of_message answered: what to apply; valid until the next
 * milter_txn_reset(). */
struct milter_outcome *milter_outcome(struct milter_session *ms);

/* The address a milter (or policy service) has inside a chrooted
 * worker: "unix:/dir/sock" is reached in the directory mounted for it
 * (sandbox.h); others are unchanged.  dirs/ndirs: the directories
 * mounted, in order (sandbox's bind_dirs). */
void milter_address_inside(const char *address, char *const *dirs,
    size_t ndirs, char *out, size_t size);

#endif
