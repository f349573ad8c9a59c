/*
 * policy — a client of the Postfix SMTP access policy delegation protocol
 * (Postfix's SMTPD_POLICY_README), so that existing policy services
 * (postgrey, policyd-spf, rate limiters) work with mxgate unchanged.
 *
 * The protocol: for each SMTP stage configured (policy.stages), the worker
 * sends "name=value" lines -- request=smtpd_access_policy,
 * protocol_state, protocol_name, helo_name, queue_id, sender, recipient,
 * recipient_count, client_address, client_name, reverse_client_name,
 * instance, sasl_method, sasl_username, sasl_sender, size, ccert_*,
 * encryption_protocol, encryption_cipher, encryption_keysize, etrn_domain,
 * stress, client_port, policy_context, server_address, server_port --
 * ended by an empty line, and reads "action=..." (other attributes are
 * ignored) ended by an empty line.  client_name and reverse_client_name
 * are "unknown": the workers do no reverse DNS.  A value never holds a
 * newline (one would be replaced by a space).
 *
 * Actions honoured (access(5)):
 *   DUNNO                     continue with the next check
 *   OK                        accept: skip the remaining optional checks
 *                             of this stage (never routing, never a
 *                             route's sender_auth)
 *   REJECT [text]             554 5.7.1 text
 *   DEFER [text]              450 4.7.1 text
 *   DEFER_IF_PERMIT [text]    the policy service is the last check of a
 *                             stage, so this is DEFER
 *   4NN text, 5NN text        that reply; an enhanced status code in text
 *                             of the same class is kept, else 4.7.1 or
 *                             5.7.1 is put in front; 421 closes the session
 *   PREPEND name: value       no opinion (as DUNNO), and the header field
 *                             is added to the message, after our
 *                             Received and Authentication-Results fields,
 *                             in the order the answers came (postgrey's
 *                             X-Greylist, policyd-spf's Received-SPF).
 *                             As in Postfix, it must come before the
 *                             content: at END-OF-MESSAGE it is logged and
 *                             not added.  A field that is not "name:
 *                             value" in one printable line of at most
 *                             POLICY_HEADER_MAX bytes is a malformed
 *                             answer.
 *   WARN text, INFO text      no opinion (as DUNNO); the text is logged
 *                             with the session id and the stage
 *   DEFER_IF_REJECT [text]    no opinion (as DUNNO), logged: the policy
 *                             service is the last check of a stage, so
 *                             nothing after it can reject
 *   HOLD [text]               no opinion (as DUNNO), and the message is
 *                             queued held, as a milter's quarantine
 *                             (mxgatectl queue release); the reason is
 *                             "policy service NAME: text"
 *   DISCARD [text]            no opinion (as DUNNO), and the message is
 *                             answered 250 and not queued, as a milter's
 *                             discard (all its recipients)
 * Anything else -- FILTER, REDIRECT, BCC, restriction class names, which
 * mean nothing outside Postfix, and malformed answers -- is logged
 * ("action \"FILTER\" is not supported by mxgate") and
 * treated as policy.default, as is a service that cannot be reached,
 * closes the connection, or does not answer within policy.timeout
 * seconds.  The default policy.default is Postfix's answer to a policy
 * service that is down, 451 4.3.5: greylisting never turns itself off.
 *
 * The client is asynchronous inside the worker's event loop: non-blocking
 * sockets (unix:/path or inet:HOST:PORT), connections reused across
 * requests and sessions (one request at a time on each, at most
 * POLICY_MAX_CONNS, more requests wait in a queue), all in an event loop
 * of the client's own (event.h) whose descriptor the worker adds to its
 * loop.  A reused connection
 * the service had closed meanwhile is retried once on a fresh one.
 */
#ifndef MXGATE_POLICY_H
#define MXGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/util.h"

#define POLICY_MAX_CONNS    8
#define POLICY_ANSWER_MAX   4096
#define POLICY_HEADER_MAX   998     /* RFC 5322 2.1.1, CRLF not counted */

/* What a check (policy service, plugin, built-in) decided. */
enum policy_verdict {
	POLICY_CONTINUE,        /* no opinion: go on */
	POLICY_ACCEPT,          /* skip the remaining optional checks */
	POLICY_REJECT,          /* code 5xx and text */
	POLICY_TEMPFAIL,        /* code 4xx and text */
};

/* What an answer asks besides its verdict (access(5) actions that do
 * not decide the stage); with POLICY_CONTINUE only. */
enum policy_extra {
	POLICY_EXTRA_NONE,
	POLICY_EXTRA_WARN,      /* WARN text: logged */
	POLICY_EXTRA_INFO,      /* INFO text: logged */
	POLICY_EXTRA_DEFER_IF_REJECT, /* logged: nothing later rejects */
	POLICY_EXTRA_HOLD,      /* HOLD [text]: the message is queued held */
	POLICY_EXTRA_DISCARD,   /* DISCARD [text]: 250, and not queued */
};

struct policy_answer {
	enum policy_verdict verdict;
	enum policy_extra extra;
	int     code;           /* REJECT, TEMPFAIL */
	char    text[512];      /* "5.7.1 go away"; the text of WARN, INFO,
	                           HOLD and DISCARD (maybe empty) */
	bool    is_default;     /* policy.default was applied */
	char    prepend[POLICY_HEADER_MAX + 1]; /* PREPEND: "name: value" */
	char    why[160];       /* for the log: "action=DUNNO", "timeout" */
};

/* One request's attributes; NULL strings are sent empty. */
struct policy_request {
	const char *protocol_state;  /* CONNECT HELO EHLO MAIL RCPT DATA
	                                END-OF-MESSAGE */
	const char *protocol_name;   /* SMTP, ESMTP */
	const char *helo_name;
	const char *queue_id;
	const char *sender;
	const char *recipient;
	unsigned    recipient_count;
	const char *client_address;
	unsigned    client_port;
	const char *server_address;
	unsigned    server_port;
	const char *instance;
	const char *sasl_method;
	const char *sasl_username;
	unsigned long long size;
	const char *encryption_protocol;
	const char *encryption_cipher;
	int         encryption_keysize;
};

/* The service's name, as configured ("inet:127.0.0.1:10023"). */
struct policy_client;
const char *policy_client_service(const struct policy_client *c);

/* ---- pure parts (unit tested) ---- */

/*
 * Make a a reject (code 5xx) or tempfail (4xx) with text, or fallback
 * when text is empty; a text that does not start with an RFC 3463
 * enhanced status code of the code's class gets "5.7.1" or "4.7.1".
 */
void policy_answer_set(struct policy_answer *a, int code, const char *text,
    const char *fallback);

/* Append the request, empty line included. */
void policy_request_format(const struct policy_request *r, struct buf *out);

/*
 * Read an action value ("DUNNO", "REJECT go away", "450 4.2.0 later").
 * 0, or -1 when it is not one mxgate honours (a->why says why; a is then
 * untouched otherwise).
 */
int policy_action_parse(const char *action, struct policy_answer *a);
/* The parser of policy.default (config.h, config_value_fn): an action
 * policy_action_parse() takes; 0, or -1 with why. */
int policy_default_check(const char *action, char *why, size_t size);

/*
 * Find the end of one answer (the empty line) in data.  Returns the
 * answer's length including that line, 0 if it is not complete yet, -1 if
 * it can never be valid (too long, NUL byte).
 */
long policy_answer_end(const char *data, size_t len);

/* The value of "action=" in a complete answer, copied into out; -1 if
 * there is none. */
int policy_answer_action(const char *answer, size_t len, char *out,
    size_t size);

/* "unix:/path" or "inet:host:port" ("inet:[::1]:port"); 0 or -1 with a
 * reason.  The parser of policy.service (config.h, config_value_fn). */
int policy_address_check(const char *service, char *why, size_t whylen);
/* The same, and the socket address (milter_client.c shares it). */
int policy_address_parse(const char *service, struct sockaddr_storage *ss,
    socklen_t *sslen, char *why, size_t whylen);

/* ---- the asynchronous client ---- */

struct policy_client;

typedef void (*policy_done_fn)(void *ctx, const struct policy_answer *a);

/*
 * service as policy_address_check() accepts; default_action is the answer
 * when the service fails (it must parse).  NULL with errno on failure.
 */
struct policy_client *policy_client_new(const char *service,
    unsigned timeout_ms, const char *default_action);
void policy_client_free(struct policy_client *c);

/* One descriptor for the worker's loop: readable when there is work for
 * policy_client_dispatch(). */
int policy_client_fd(const struct policy_client *c);
void policy_client_dispatch(struct policy_client *c);
/* Time out requests and close long-idle connections. */
void policy_client_tick(struct policy_client *c, uint64_t now_ms);

/*
 * Send a request; done(ctx, answer) is called later from dispatch or
 * tick, exactly once unless cancelled.  Never calls done from inside.
 * Returns the request id (never 0).
 */
uint64_t policy_query(struct policy_client *c, const struct policy_request *r,
    policy_done_fn done, void *ctx);
void policy_cancel(struct policy_client *c, uint64_t id);
unsigned policy_pending(const struct policy_client *c);

#endif
