/*
 * smtp_proto — the sans-I/O SMTP server engine (RFC 5321 and extensions).
 *
 * Bytes in, replies and events out: no sockets, no clocks, no allocation
 * after proto_new() except for the output buffer and, at the first
 * message, the content staging buffer.  The session layer
 * (session.c) feeds what it reads from the client, answers the events the
 * engine raises, and writes what the engine puts in its output buffer.
 *
 *     p = proto_new(&params, data_sink, ctx);
 *     proto_start(p);                      raises PROTO_EV_CONNECT
 *     loop:
 *         n = proto_feed(p, in, len);      consume client bytes
 *         ev = proto_event(p);             a pending decision, or NULL
 *         ... proto_accept(p) / proto_reply(p, ...) now or later ...
 *         write proto_output(p, &len); proto_output_drain(p, len);
 *         if (proto_closing(p) && output is empty) close.
 *
 * Commands the engine can answer alone (NOOP, HELP, VRFY, syntax errors,
 * bad sequences, limits) are answered inside proto_feed().  Commands that
 * need the caller's decision (connect, HELO/EHLO, MAIL, RCPT, DATA, end of
 * message, RSET, QUIT, STARTTLS, AUTH) raise an event; until the caller answers it with
 * proto_accept() or proto_reply(), proto_feed() consumes nothing more.
 * That is what makes pipelining (RFC 2920) and asynchronous decisions (a
 * queue commit, an SPF lookup) work with one code path: replies always go
 * out in command order.
 *
 * Message content: after DATA is accepted, proto_feed() removes the
 * dot-stuffing (RFC 5321 4.5.2) and hands the content, with CRLF line
 * endings, to the data_sink callback, in pieces.  Only CRLF "." CRLF ends
 * the message.  A bare LF or bare CR inside the content never ends or
 * splits a message (SMTP smuggling, CVE-2023-51766); what happens to such a
 * message is params.bare_newlines:
 *   PROTO_BARE_REJECT    (default) the content is read to its end, then the
 *                        engine raises PROTO_EV_MESSAGE_ABORT with reply
 *                        "550 5.6.11 ..." and the session goes on;
 *   PROTO_BARE_NORMALIZE a bare LF or bare CR becomes CRLF in the content.
 * In command lines a bare LF ends the line but the command is answered
 * "500 5.5.2 Bare LF received, use CRLF" (no smuggling via commands either).
 *
 * Limits: a command line longer than params.max_line bytes (with CRLF;
 * MAIL 100 and RCPT 500 more, for DSN's parameters, RFC 3461 4) is
 * answered "500 5.5.2 Line too long" and the rest of that line discarded.  A
 * message larger than params.max_size is read to its end without being
 * passed further to the sink (on PROTO_EV_MESSAGE_ABORT the caller drops
 * whatever the sink got), then PROTO_EV_MESSAGE_ABORT is raised with reply
 * "552 5.3.4 Message size exceeds fixed limit"; the session goes on.  After
 * params.max_rcpts accepted recipients RCPT gets "452 4.5.3 Too many
 * recipients".  After params.max_errors error replies (4xx/5xx of any kind
 * but that 452, which RFC 5321 4.5.3.1.10 makes flow control, not a client
 * error) the engine answers "421 4.7.0 Too many errors, closing connection"
 * and enters the closing state.  A limit of 0 means no limit.
 *
 * DSN (RFC 3461) is offered after EHLO: MAIL takes RET=FULL|HDRS and
 * ENVID=xtext, RCPT takes NOTIFY=NEVER|list of SUCCESS,FAILURE,DELAY and
 * ORCPT=addr-type;xtext, strictly: bad xtext (lower case hex, a character
 * that must be encoded, a decoded control character), ENVID over 100 or
 * ORCPT over 500 characters, an unknown or repeated NOTIFY keyword, NEVER
 * with another one, or any parameter given twice is "501 5.5.4 ...".
 *
 * Every reply that has an RFC 3463 enhanced status code carries one
 * (ENHANCEDSTATUSCODES), except the greeting and the EHLO/HELO reply which
 * RFC 2034 exempts.
 *
 * STARTTLS (RFC 3207): offered while params.starttls and the connection is
 * not encrypted; PROTO_EV_STARTTLS is raised after EHLO, outside a
 * transaction.  Once it is accepted ("220 2.0.0 Ready to start TLS") the
 * engine consumes and discards every byte fed to it until the caller,
 * after its handshake, calls proto_tls_started(): nothing a client
 * pipelined behind STARTTLS is ever answered (CVE-2011-0411).  The caller
 * must also drop what it has read but not fed yet.  proto_tls_started()
 * forgets the session (RFC 3207 4.2): a new EHLO is needed, STARTTLS is no
 * longer offered, AUTH is forgotten.  With params.tls the connection is
 * encrypted from the start (implicit TLS, RFC 8314) and STARTTLS is never
 * offered.
 *
 * AUTH (RFC 4954) with the SASL mechanisms PLAIN (RFC 4616) and LOGIN:
 * offered when params.auth and the connection is encrypted, or without
 * TLS when params.auth_plaintext.  The engine runs the SASL exchange (334
 * challenges, the optional initial response, "=" for an empty one, "*" to
 * cancel: "501 5.0.0", bad base64 or a malformed response: "501 5.5.2")
 * and raises PROTO_EV_AUTH with the decoded credentials; the caller checks
 * them (slowly, asynchronously) and answers: accept is "235 2.7.0
 * Authentication successful", a failure is proto_reply(535, "5.7.8 ...").
 * The password is wiped from the engine once the event is answered.  AUTH
 * before EHLO and a second AUTH are "503 5.5.1"; AUTH where it is not
 * offered because the connection is not encrypted is "538 5.7.11"
 * (RFC 4954 6).  With params.auth_required MAIL before a successful AUTH
 * is "530 5.7.0 Authentication required" (submission, RFC 6409).
 */
#ifndef MXGATE_SMTP_PROTO_H
#define MXGATE_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include "common/addr.h"

enum proto_bare_newlines { PROTO_BARE_REJECT, PROTO_BARE_NORMALIZE };

struct proto_params {
	const char *hostname;        /* in the greeting and EHLO reply */
	const char *greeting_text;   /* after "220 hostname ", e.g. "ESMTP mxgate" */
	size_t      max_line;        /* command line incl. CRLF, >= 512 */
	size_t      max_size;        /* message content bytes; SIZE advertised */
	unsigned    max_rcpts;       /* accepted recipients per transaction */
	unsigned    max_errors;      /* error replies before 421 and close */
	enum proto_bare_newlines bare_newlines;
	bool        starttls;        /* offer STARTTLS (until TLS is on) */
	bool        tls;             /* encrypted from the start (RFC 8314) */
	bool        auth;            /* offer AUTH PLAIN LOGIN under TLS */
	bool        auth_plaintext;  /* ... and without TLS as well */
	bool        auth_required;   /* MAIL only after a successful AUTH */
};

enum proto_event_type {
	PROTO_EV_CONNECT,        /* accept: "220 <hostname> <greeting_text>" */
	PROTO_EV_HELO,           /* accept: 250 reply, EHLO lists extensions */
	PROTO_EV_MAIL,           /* accept: "250 2.1.0 Ok" */
	PROTO_EV_RCPT,           /* accept: "250 2.1.5 Ok" */
	PROTO_EV_DATA,           /* accept: "354 End data with <CR><LF>.<CR><LF>" */
	PROTO_EV_MESSAGE,        /* content complete; the caller must reply
	                            (proto_reply 250 with the queue id, or an
	                            error); accept alone: "250 2.0.0 Ok" */
	PROTO_EV_MESSAGE_ABORT,  /* content refused by the engine (size, bare
	                            newlines); accept sends the engine's reply
	                            (abort_code / abort_text) */
	PROTO_EV_RSET,           /* accept: "250 2.0.0 Ok" */
	PROTO_EV_QUIT,           /* accept: "221 2.0.0 Bye", then closing */
	PROTO_EV_STARTTLS,       /* accept: "220 2.0.0 Ready to start TLS",
	                            then input is discarded until
	                            proto_tls_started() */
	PROTO_EV_AUTH,           /* credentials complete; accept: "235 2.7.0
	                            Authentication successful"; refuse with
	                            proto_reply(535, "5.7.8 ...") */
};

/*
 * The pending event.  Strings point into the engine and stay valid until
 * the event is answered.
 */
struct proto_event {
	enum proto_event_type type;
	/* HELO/EHLO */
	const char *helo;            /* the argument as given */
	bool        esmtp;           /* EHLO rather than HELO */
	/* MAIL, RCPT */
	struct mailaddr addr;        /* parsed path */
	const char *addr_text;       /* "local@domain", "" for <> */
	/* MAIL parameters (RFC 1870, RFC 6152, RFC 6531) */
	unsigned long long size_param;  /* SIZE=, 0 if absent */
	bool        body_8bitmime;   /* BODY=8BITMIME */
	bool        smtputf8;        /* SMTPUTF8 */
	/* DSN (RFC 3461), xtext decoded (common/dsn.h).  MAIL: RET= as
	 * enum dsn_ret (0 absent), ENVID= (NULL absent).  RCPT: NOTIFY= as
	 * DSN_NOTIFY_* bits (0 absent), ORCPT= as "type;address" (NULL
	 * absent). */
	int         dsn_ret;
	const char *dsn_envid;
	unsigned    dsn_notify;
	const char *dsn_orcpt;
	/* DATA: the first chunk of a BDAT transaction (RFC 3030); accepting
	 * it sends no 354, the chunk's 250 follows once it is read */
	bool        bdat;
	/* MESSAGE */
	size_t      message_size;    /* content bytes passed to the sink */
	/* MESSAGE_ABORT */
	int         abort_code;
	const char *abort_text;      /* "5.3.4 Message size exceeds fixed limit" */
	/* AUTH: decoded, NUL-free, non-empty (authzid may be empty) */
	const char *auth_mech;       /* "PLAIN" or "LOGIN" */
	const char *auth_authzid;    /* PLAIN's authorization identity or "" */
	const char *auth_user;       /* the authentication identity */
	const char *auth_pass;       /* wiped when the event is answered */
};

/* Receives unstuffed message content with CRLF line endings. */
typedef void (*proto_data_fn)(void *ctx, const char *data, size_t len);

struct proto;

struct proto *proto_new(const struct proto_params *params,
    proto_data_fn sink, void *sink_ctx);
void proto_free(struct proto *p);

/* Raise PROTO_EV_CONNECT.  Call once, first. */
void proto_start(struct proto *p);

/*
 * Consume client bytes.  Returns how many of len were consumed: all of
 * them unless an event is pending or the engine is closing, in which case
 * the caller keeps the rest and feeds it again after answering.
 * A partial line is kept inside the engine, so feeding one byte at a time
 * works.
 */
size_t proto_feed(struct proto *p, const char *data, size_t len);

/* The event waiting for an answer, or NULL. */
const struct proto_event *proto_event(const struct proto *p);

/* Answer the pending event with its default positive reply. */
void proto_accept(struct proto *p);

/*
 * Answer the pending event with this reply.  text starts with the
 * enhanced status code where one applies ("550 5.7.1 ..." is given as
 * code 550, text "5.7.1 Relay access denied").  A 2xx/3xx reply to MAIL,
 * RCPT or DATA advances the transaction as proto_accept() would; 4xx/5xx
 * leaves it where it was (and counts as an error).  Code 421 replies and
 * enters the closing state.  For PROTO_EV_MESSAGE the transaction ends
 * whatever the code.  text may contain '\n' for a multi-line reply.
 */
void proto_reply(struct proto *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replies waiting to be written. */
const char *proto_output(const struct proto *p, size_t *len);
void proto_output_drain(struct proto *p, size_t n);

/* A 221 or 421 was queued: write the output, then close. */
bool proto_closing(const struct proto *p);

/* Phase for the caller's timer (RFC 5321 4.5.3.2). */
enum proto_phase { PROTO_PHASE_COMMAND, PROTO_PHASE_DATA };
enum proto_phase proto_phase(const struct proto *p);
/* Requests complete so far: command lines (AUTH exchange lines too) and
 * messages.  The session's deadlines run per request, not per read. */
unsigned long proto_requests(const struct proto *p);
/* Bytes read in the current DATA phase (0 outside it). */
unsigned long long proto_data_bytes(const struct proto *p);

/* Queue "421 4.4.2 <hostname> Error: timeout exceeded" and close. */
void proto_timeout(struct proto *p);
/* The error replies before 421 and close from now on (params.max_errors
 * changed: stress mode); those already made count. */
void proto_set_max_errors(struct proto *p, unsigned max_errors);

/* Queue "421 4.3.2 <hostname> Service shutting down" and close, unless an
 * event is pending (then the caller answers it first) or a message is being
 * received: the 421 then follows that answer, or the answer to the message,
 * by itself. */
void proto_shutdown(struct proto *p);

/* In a transaction (after MAIL, before end of message or RSET)? */
bool proto_in_transaction(const struct proto *p);

/*
 * The TLS handshake after an accepted STARTTLS succeeded: start over as
 * on a new connection that has had its greeting (RFC 3207 4.2).
 */
void proto_tls_started(struct proto *p);

/* A STARTTLS was accepted and proto_tls_started() not called yet. */
bool proto_tls_waiting(const struct proto *p);

/* AUTH succeeded in this session (since the last TLS start). */
bool proto_authenticated(const struct proto *p);

#endif
