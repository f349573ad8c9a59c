/*
 * test_proto — the SMTP engine, driven as session.c drives it: bytes in,
 * events answered, replies compared with the exact transcript expected.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_proto.h"
#include "common/dsn.h"
#include "common/util.h"
#include "unit.h"

#define EHLO_PREFIX \
	"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n" \
	"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
#define EHLO_REPLY EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250 DSN\r\n"

static struct buf content;
static char outbuf[1 << 20];

static void
sink(void *ctx, const char *data, size_t len)
{
	buf_append(ctx, data, len);
}

static struct proto_params
params(void)
{
	struct proto_params pp = {
		.hostname = "mx.example",
		.greeting_text = "ESMTP mxgate",
		.max_line = 512,
		.max_size = 1000,
		.max_rcpts = 3,
		.max_errors = 5,
		.bare_newlines = PROTO_BARE_REJECT,
	};
	return pp;
}

/* What the engine has written since the last call, then drained. */
static const char *
out(struct proto *p)
{
	size_t len;
	const char *o = proto_output(p, &len);

	if (len >= sizeof(outbuf))
		len = sizeof(outbuf) - 1;
	memcpy(outbuf, o, len);
	outbuf[len] = '\0';
	proto_output_drain(p, len);
	return outbuf;
}

/* A session past its greeting. */
static struct proto *
start_with(const struct proto_params *pp)
{
	struct proto *p;

	buf_reset(&content);
	p = proto_new(pp, sink, &content);
	proto_start(p);
	proto_accept(p);
	out(p);
	return p;
}

static struct proto *
start(void)
{
	struct proto_params pp = params();

	return start_with(&pp);
}

/* Feed everything, accepting every event as it comes; the replies. */
static const char *
run_n(struct proto *p, const char *in, size_t len)
{
	size_t off = 0;

	for (;;) {
		off += proto_feed(p, in + off, len - off);
		if (proto_event(p) == NULL)
			break;
		proto_accept(p);
	}
	return out(p);
}

static const char *
run(struct proto *p, const char *in)
{
	return run_n(p, in, strlen(in));
}

/* Feed expecting the engine to stop at an event of this type. */
static const struct proto_event *
until_event(struct proto *p, const char *in, enum proto_event_type type)
{
	const struct proto_event *ev;
	size_t len = strlen(in);

	if (proto_feed(p, in, len) != len) {
		printf("#   not all of \"%s\" consumed\n", in);
		return NULL;
	}
	ev = proto_event(p);
	if (ev == NULL || ev->type != type) {
		printf("#   event %d, want %d\n", ev ? (int)ev->type : -1,
		    (int)type);
		return NULL;
	}
	return ev;
}

/* For tests that make many mistakes on purpose. */
static struct proto *
start_patient(void)
{
	struct proto_params pp = params();

	pp.max_errors = 100;
	return start_with(&pp);
}

static struct proto *
in_transaction(void)
{
	struct proto *p = start();

	run(p, "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
	    "RCPT TO:<c@d.example>\r\n");
	return p;
}

/* ---- greeting, EHLO, HELO ----------------------------------------------- */

static void
test_greeting(void)
{
	struct proto_params pp = params();
	struct proto *p = proto_new(&pp, sink, &content);
	const struct proto_event *ev;

	CHECK_INT(proto_feed(p, "EHLO x\r\n", 8), 0);   /* not started */
	proto_start(p);
	ev = proto_event(p);
	CHECK(ev != NULL && ev->type == PROTO_EV_CONNECT);
	CHECK_STR(out(p), "");
	/* An early talker waits for the greeting decision. */
	CHECK_INT(proto_feed(p, "EHLO x\r\n", 8), 0);
	proto_accept(p);
	CHECK_STR(out(p), "220 mx.example ESMTP mxgate\r\n");
	CHECK(proto_event(p) == NULL);
	proto_free(p);
}

static void
test_greeting_refused(void)
{
	struct proto_params pp = params();
	struct proto *p = proto_new(&pp, sink, &content);

	proto_start(p);
	proto_reply(p, 554, "5.7.1 No SMTP service for you");
	CHECK_STR(out(p), "554 5.7.1 No SMTP service for you\r\n");
	CHECK(!proto_closing(p));
	/* RFC 5321 3.1: wait for QUIT, 503 to anything else. */
	CHECK_STR(run(p, "EHLO x\r\nNOOP\r\n"),
	    "503 5.5.1 Error: no SMTP service here\r\n"
	    "503 5.5.1 Error: no SMTP service here\r\n");
	CHECK_STR(run(p, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

static void
test_greeting_421(void)
{
	struct proto_params pp = params();
	struct proto *p = proto_new(&pp, sink, &content);

	proto_start(p);
	proto_reply(p, 421, "4.3.2 mx.example Too busy, try later");
	CHECK_STR(out(p), "421 4.3.2 mx.example Too busy, try later\r\n");
	CHECK(proto_closing(p));
	CHECK_INT(proto_feed(p, "EHLO x\r\n", 8), 0);
	proto_free(p);
}

static void
test_ehlo(void)
{
	struct proto *p = start();
	const struct proto_event *ev;

	ev = until_event(p, "EHLO client.example\r\n", PROTO_EV_HELO);
	CHECK(ev != NULL && ev->esmtp);
	CHECK_STR(ev ? ev->helo : NULL, "client.example");
	proto_accept(p);
	CHECK_STR(out(p), EHLO_REPLY);
	CHECK_STR(run(p, "EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
	CHECK_STR(run(p, "ehlo [192.0.2.1]\r\n"), EHLO_REPLY);
	proto_free(p);
}

static void
test_ehlo_starttls_auth(void)
{
	struct proto_params pp = params();
	struct proto *p;

	pp.starttls = true;
	pp.auth = true;
	p = start_with(&pp);
	/* AUTH waits for TLS (RFC 4954 4). */
	CHECK_STR(run(p, "EHLO c\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
	    "250 STARTTLS\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "538 5.7.11 Encryption required for requested authentication "
	    "mechanism\r\n");
	CHECK_STR(run(p, "STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
	CHECK(proto_tls_waiting(p));
	proto_tls_started(p);
	CHECK(!proto_tls_waiting(p));
	/* After the handshake: no STARTTLS, AUTH offered. */
	CHECK_STR(run(p, "EHLO c\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
	    "250 AUTH PLAIN LOGIN\r\n");
	proto_free(p);

	/* Plaintext AUTH allowed: both offered before TLS. */
	pp.auth_plaintext = true;
	p = start_with(&pp);
	CHECK_STR(run(p, "EHLO c\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
	    "250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n");
	proto_free(p);
}

/* ---- STARTTLS ------------------------------------------------------------ */

static struct proto *
start_tls_params(bool auth_required)
{
	struct proto_params pp = params();

	pp.starttls = true;
	pp.auth = true;
	pp.auth_required = auth_required;
	pp.max_errors = 100;
	return start_with(&pp);
}

static void
test_starttls_injection(void)
{
	struct proto *p = start_tls_params(false);
	const char *in = "EHLO c\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<x@y.example>"
	    "\r\nNOOP\r\n";
	const char *rest;
	size_t n;

	/* Everything pipelined in one packet: the engine stops at STARTTLS. */
	n = proto_feed(p, in, strlen(in));
	CHECK(proto_event(p) != NULL && proto_event(p)->type == PROTO_EV_HELO);
	proto_accept(p);
	rest = in + n;
	n = proto_feed(p, rest, strlen(rest));
	CHECK(proto_event(p) != NULL &&
	    proto_event(p)->type == PROTO_EV_STARTTLS);
	CHECK_STR(rest + n, "RSET\r\nMAIL FROM:<x@y.example>\r\nNOOP\r\n");
	proto_accept(p);
	out(p);
	/* What follows STARTTLS is consumed and never answered. */
	rest += n;
	CHECK_INT(proto_feed(p, rest, strlen(rest)), strlen(rest));
	CHECK_INT(proto_feed(p, "NOOP\r\n", 6), 6);
	CHECK(proto_event(p) == NULL);
	CHECK_STR(out(p), "");
	proto_tls_started(p);
	CHECK_STR(out(p), "");
	/* A fresh session: nothing of the old one remains. */
	CHECK_STR(run(p, "MAIL FROM:<x@y.example>\r\n"),
	    "503 5.5.1 Error: send HELO/EHLO first\r\n");
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);

	/* A partial line before STARTTLS's answer is not kept either. */
	p = start_tls_params(false);
	run(p, "EHLO c\r\n");
	CHECK(until_event(p, "STARTTLS\r\n", PROTO_EV_STARTTLS) != NULL);
	proto_accept(p);
	out(p);
	CHECK_INT(proto_feed(p, "RS", 2), 2);
	proto_tls_started(p);
	CHECK_STR(run(p, "ET\r\n"), "500 5.5.2 Error: command not recognized\r\n");
	proto_free(p);
}

static void
test_starttls_errors(void)
{
	struct proto *p = start_tls_params(false);

	CHECK_STR(run(p, "STARTTLS\r\n"), "503 5.5.1 Error: send EHLO first\r\n");
	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "STARTTLS now\r\n"), "501 5.5.4 Syntax: STARTTLS\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "STARTTLS\r\n"),
	    "503 5.5.1 Error: MAIL transaction in progress\r\n");
	run(p, "RSET\r\n");
	/* The caller may refuse (no certificate, say): nothing changes. */
	CHECK(until_event(p, "STARTTLS\r\n", PROTO_EV_STARTTLS) != NULL);
	proto_reply(p, 454, "4.7.0 TLS not available due to temporary reason");
	CHECK_STR(out(p), "454 4.7.0 TLS not available due to temporary "
	    "reason\r\n");
	CHECK(!proto_tls_waiting(p));
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");
	/* proto_tls_started() without an accepted STARTTLS does nothing. */
	proto_tls_started(p);
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");
	run(p, "STARTTLS\r\n");
	proto_tls_started(p);
	CHECK_STR(run(p, "EHLO c\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
	    "250 AUTH PLAIN LOGIN\r\n");
	CHECK_STR(run(p, "STARTTLS\r\n"),
	    "503 5.5.1 Error: TLS already active\r\n");
	proto_free(p);
}

static void
test_implicit_tls(void)
{
	struct proto_params pp = params();
	struct proto *p;

	pp.starttls = true;
	pp.tls = true;
	pp.auth = true;
	p = start_with(&pp);
	CHECK_STR(run(p, "EHLO c\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
	    "250 AUTH PLAIN LOGIN\r\n");
	CHECK_STR(run(p, "STARTTLS\r\n"),
	    "503 5.5.1 Error: TLS already active\r\n");
	proto_free(p);
}

/* Shutdown between STARTTLS and the handshake waits for the handshake:
 * a plaintext 421 would land in the middle of it. */
static void
test_starttls_shutdown(void)
{
	struct proto *p = start_tls_params(false);

	run(p, "EHLO c\r\nSTARTTLS\r\n");
	proto_shutdown(p);
	CHECK_STR(out(p), "");
	CHECK(!proto_closing(p));
	proto_tls_started(p);
	CHECK_STR(out(p), "421 4.3.2 mx.example Service shutting down\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

/* ---- AUTH ------------------------------------------------------------------ */

static struct proto *
start_auth(bool auth_required)
{
	struct proto *p = start_tls_params(auth_required);

	run(p, "EHLO c\r\nSTARTTLS\r\n");
	proto_tls_started(p);
	run(p, "EHLO c\r\n");
	return p;
}

static void
test_auth_plain(void)
{
	struct proto *p = start_auth(false);
	const struct proto_event *ev;
	const char *pass;

	ev = until_event(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", PROTO_EV_AUTH);
	REQUIRE(ev != NULL);
	CHECK_STR(ev->auth_mech, "PLAIN");
	CHECK_STR(ev->auth_authzid, "");
	CHECK_STR(ev->auth_user, "bob");
	CHECK_STR(ev->auth_pass, "secret");
	pass = ev->auth_pass;
	CHECK(!proto_authenticated(p));
	proto_accept(p);
	CHECK_STR(out(p), "235 2.7.0 Authentication successful\r\n");
	/* The password does not outlive the answer. */
	CHECK(pass[0] == '\0');
	CHECK(proto_authenticated(p));
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "503 5.5.1 Error: already authenticated\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> AUTH=<>\r\n"),
	    "250 2.1.0 Ok\r\n");
	proto_free(p);

	/* An authorization identity is passed on for the caller to judge. */
	p = start_auth(false);
	ev = until_event(p, "AUTH PLAIN YWRtaW4AYm9iAHNlY3JldA==\r\n",
	    PROTO_EV_AUTH);
	REQUIRE(ev != NULL);
	CHECK_STR(ev->auth_authzid, "admin");
	CHECK_STR(ev->auth_user, "bob");
	CHECK_STR(ev->auth_pass, "secret");
	proto_free(p);
}

static void
test_auth_plain_challenge(void)
{
	struct proto *p = start_auth(false);
	const struct proto_event *ev;

	/* The empty challenge keeps its space (RFC 4954 4). */
	CHECK_STR(run(p, "auth plain\r\n"), "334 \r\n");
	ev = until_event(p, "AGJvYgBzZWNyZXQ=\r\n", PROTO_EV_AUTH);
	REQUIRE(ev != NULL);
	CHECK_STR(ev->auth_user, "bob");
	CHECK_STR(ev->auth_pass, "secret");
	proto_accept(p);
	CHECK_STR(out(p), "235 2.7.0 Authentication successful\r\n");
	proto_free(p);
}

static void
test_auth_login(void)
{
	struct proto *p = start_auth(false);
	const struct proto_event *ev;

	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	CHECK_STR(run(p, "Ym9i\r\n"), "334 UGFzc3dvcmQ6\r\n");
	ev = until_event(p, "c2VjcmV0\r\n", PROTO_EV_AUTH);
	REQUIRE(ev != NULL);
	CHECK_STR(ev->auth_mech, "LOGIN");
	CHECK_STR(ev->auth_authzid, "");
	CHECK_STR(ev->auth_user, "bob");
	CHECK_STR(ev->auth_pass, "secret");
	proto_accept(p);
	CHECK_STR(out(p), "235 2.7.0 Authentication successful\r\n");
	proto_free(p);

	/* The user name as initial response. */
	p = start_auth(false);
	CHECK_STR(run(p, "AUTH LOGIN Ym9i\r\n"), "334 UGFzc3dvcmQ6\r\n");
	ev = until_event(p, "c2VjcmV0\r\n", PROTO_EV_AUTH);
	CHECK(ev != NULL && strcmp(ev->auth_user, "bob") == 0 &&
	    strcmp(ev->auth_pass, "secret") == 0);
	proto_free(p);
}

static void
test_auth_failure(void)
{
	struct proto *p = start_auth(true);
	const struct proto_event *ev;

	ev = until_event(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", PROTO_EV_AUTH);
	CHECK(ev != NULL);
	/* The caller's answer may come much later; nothing moves meanwhile. */
	CHECK_INT(proto_feed(p, "MAIL FROM:<a@b.example>\r\n", 25), 0);
	proto_reply(p, 535, "5.7.8 Authentication credentials invalid");
	CHECK_STR(out(p), "535 5.7.8 Authentication credentials invalid\r\n");
	CHECK(!proto_authenticated(p));
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"),
	    "530 5.7.0 Authentication required\r\n");
	/* A failure is not final: try again. */
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "235 2.7.0 Authentication successful\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	CHECK_STR(run(p, "AUTH LOGIN\r\n"),
	    "503 5.5.1 Error: already authenticated\r\n");
	proto_free(p);
}

static void
test_auth_cancel(void)
{
	struct proto *p = start_auth(false);

	CHECK_STR(run(p, "AUTH PLAIN\r\n"), "334 \r\n");
	CHECK_STR(run(p, "*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	CHECK_STR(run(p, "Ym9i\r\n"), "334 UGFzc3dvcmQ6\r\n");
	CHECK_STR(run(p, "*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
	CHECK(!proto_authenticated(p));
	/* A line of the exchange is never a command. */
	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	CHECK_STR(run(p, "QUIT\r\n"), "334 UGFzc3dvcmQ6\r\n");
	CHECK(!proto_closing(p));
	CHECK_STR(run(p, "QUIT now\r\n"), "501 5.5.2 Cannot decode response\r\n");
	CHECK(!proto_closing(p));
	proto_free(p);
}

static void
test_auth_malformed(void)
{
	static const char *const bad_b64[] = {
		"AUTH PLAIN !!!!\r\n",
		"AUTH PLAIN AGJvYgBzZWNyZXQ\r\n",         /* no padding */
		"AUTH PLAIN AGJvYgBz ZWNyZXQ=\r\n",       /* two arguments */
		"AUTH PLAIN AGJvYgBzZWNyZXQ==\r\n",       /* too much */
		"AUTH PLAIN YR==\r\n",                    /* stray bits */
		"AUTH PLAIN Y===\r\n",
		"AUTH PLAIN =AAA\r\n",
		"AUTH LOGIN Ym9i=\r\n",
	};
	struct proto *p = start_auth(false);
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad_b64); i++) {
		const char *r = run(p, bad_b64[i]);
		if (strcmp(r, "501 5.5.2 Cannot decode response\r\n") != 0 &&
		    strcmp(r, "501 5.5.4 Syntax: AUTH mechanism "
		    "[initial-response]\r\n") != 0) {
			printf("#   %s -> %s", bad_b64[i], r);
			CHECK(0);
		}
	}
	CHECK_STR(run(p, "AUTH PLAIN\r\n"), "334 \r\n");
	CHECK_STR(run(p, "c2VjcmV0 \r\n"), "501 5.5.2 Cannot decode response\r\n");
	/* Well-formed base64, but not what PLAIN is. */
	CHECK_STR(run(p, "AUTH PLAIN Ym9iAHNlY3JldA==\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgA=\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AABzZWNyZXQ=\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWMAcmV0\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH PLAIN =\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH LOGIN Ym8AYg==\r\n"),
	    "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	CHECK_STR(run(p, "\r\n"), "501 5.5.2 Malformed authentication response\r\n");
	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
	CHECK_STR(run(p, "Ym9i\n"), "");
	CHECK_STR(run(p, "\r\n"), "500 5.5.2 Bare LF received, use CRLF\r\n");
	CHECK_STR(run(p, "AUTH CRAM-MD5\r\n"),
	    "504 5.5.4 Unrecognized authentication type\r\n");
	CHECK_STR(run(p, "AUTH\r\n"),
	    "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
	CHECK(!proto_authenticated(p));
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_auth_line_too_long(void)
{
	struct proto *p = start_auth(false);
	char line[700];

	memset(line, 'A', sizeof(line) - 2);
	memcpy(line + sizeof(line) - 3, "\r\n", 3);
	CHECK_STR(run(p, "AUTH PLAIN\r\n"), "334 \r\n");
	CHECK_STR(run(p, line),
	    "500 5.5.6 Authentication Exchange line is too long\r\n");
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_auth_sequence(void)
{
	struct proto_params pp = params();
	struct proto *p;

	/* Not configured: the command does not exist. */
	p = start();
	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "502 5.5.1 Command not implemented\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> AUTH=<>\r\n"),
	    "555 5.5.4 Unsupported parameter\r\n");
	proto_free(p);

	pp.auth = true;
	pp.auth_plaintext = true;
	pp.max_errors = 100;
	p = start_with(&pp);
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "503 5.5.1 Error: send EHLO first\r\n");
	run(p, "HELO c\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "503 5.5.1 Error: send EHLO first\r\n");
	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "503 5.5.1 Error: MAIL transaction in progress\r\n");
	run(p, "RSET\r\n");
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	    "235 2.7.0 Authentication successful\r\n");
	proto_free(p);

	/* A pipelined MAIL waits for the AUTH decision, then sees it. */
	p = start_auth(true);
	CHECK_STR(run(p, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\nMAIL FROM:<a@b.example>"
	    "\r\n"), "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n");
	proto_free(p);
}

/* STARTTLS forgets an AUTH made in the clear (RFC 3207 4.2). */
static void
test_starttls_forgets_auth(void)
{
	struct proto_params pp = params();
	struct proto *p;

	pp.starttls = true;
	pp.auth = true;
	pp.auth_plaintext = true;
	pp.auth_required = true;
	p = start_with(&pp);
	CHECK_STR(run(p, "EHLO c\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"
	    "STARTTLS\r\n"), EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250-STARTTLS\r\n"
	    "250 AUTH PLAIN LOGIN\r\n235 2.7.0 Authentication successful\r\n"
	    "220 2.0.0 Ready to start TLS\r\n");
	proto_tls_started(p);
	CHECK(!proto_authenticated(p));
	CHECK_STR(run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n"),
	    EHLO_PREFIX "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 AUTH PLAIN LOGIN\r\n"
	    "530 5.7.0 Authentication required\r\n");
	proto_free(p);
}

/* However the SASL exchange is split, the transcript is the same. */
static void
test_auth_bytewise(void)
{
	const char *in = "AUTH LOGIN\r\nYm9i\r\nc2VjcmV0\r\nMAIL FROM:<a@b.example>"
	    "\r\n";
	char whole[512];
	struct buf got;
	struct proto *p;
	size_t i;

	p = start_auth(true);
	snprintf(whole, sizeof(whole), "%s", run(p, in));
	proto_free(p);
	CHECK_STR(whole, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
	    "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n");

	buf_init(&got);
	p = start_auth(true);
	for (i = 0; in[i] != '\0'; i++) {
		buf_appends(&got, run_n(p, in + i, 1));
	}
	CHECK_STR(got.data, whole);
	buf_free(&got);
	proto_free(p);
}


static void
test_helo(void)
{
	struct proto *p = start();
	const struct proto_event *ev;

	ev = until_event(p, "HELO client.example\r\n", PROTO_EV_HELO);
	CHECK(ev != NULL && !ev->esmtp);
	proto_accept(p);
	CHECK_STR(out(p), "250 mx.example\r\n");
	CHECK_STR(run(p, "HELO\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
	CHECK_STR(run(p, "HELO   \r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
	/* HELO negotiated no extension: MAIL parameters are refused. */
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=10\r\n"),
	    "555 5.5.4 Parameters not allowed after HELO\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	proto_free(p);
}

static void
test_helo_rejected_keeps_state(void)
{
	struct proto *p = start();

	CHECK(until_event(p, "EHLO bad\r\n", PROTO_EV_HELO) != NULL);
	proto_reply(p, 550, "5.7.1 Go away");
	CHECK_STR(out(p), "550 5.7.1 Go away\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"),
	    "503 5.5.1 Error: send HELO/EHLO first\r\n");
	proto_free(p);
}

/* ---- MAIL ---------------------------------------------------------------- */

static void
test_mail_sequence(void)
{
	struct proto *p = start();

	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"),
	    "503 5.5.1 Error: send HELO/EHLO first\r\n");
	CHECK_STR(run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n"),
	    EHLO_REPLY "250 2.1.0 Ok\r\n");
	CHECK(proto_in_transaction(p));
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"),
	    "503 5.5.1 Error: nested MAIL command\r\n");
	proto_free(p);
}

static void
test_mail_syntax(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;

	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "MAIL\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	CHECK_STR(run(p, "MAIL FROM:\r\n"),
	    "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	CHECK_STR(run(p, "MAIL TO:<a@b.example>\r\n"),
	    "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	CHECK_STR(run(p, "MAIL FROM <a@b.example>\r\n"),
	    "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	CHECK_STR(run(p, "MAIL FROM:a@b.example\r\n"),
	    "501 5.1.7 Bad sender address syntax: path must start with '<'\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example\r\n"),
	    "501 5.1.7 Bad sender address syntax: missing '>' at end of path\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a b@b.example>\r\n"),
	    "501 5.1.7 Bad sender address syntax: bad local part\r\n");
	CHECK_STR(run(p, "MAIL FROM:<postmaster>\r\n"),
	    "501 5.1.7 Bad sender address syntax: missing domain\r\n");

	/* Lenient about the space and the case, strict about the rest. */
	ev = until_event(p, "mail from: <A@B.Example>\r\n", PROTO_EV_MAIL);
	CHECK_STR(ev ? ev->addr_text : NULL, "A@b.example");
	CHECK_STR(ev ? ev->addr.domain : NULL, "b.example");
	CHECK(ev != NULL && !ev->addr.is_null && ev->size_param == 0 &&
	    !ev->body_8bitmime && !ev->smtputf8);
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");

	ev = until_event(p, "MAIL FROM:<>\r\n", PROTO_EV_MAIL);
	CHECK(ev != NULL && ev->addr.is_null);
	CHECK_STR(ev ? ev->addr_text : NULL, "");
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");

	/* Source routes are accepted and dropped. */
	ev = until_event(p, "MAIL FROM:<@relay.example:a@b.example>\r\n",
	    PROTO_EV_MAIL);
	CHECK_STR(ev ? ev->addr_text : NULL, "a@b.example");
	proto_accept(p);
	out(p);
	proto_free(p);
}

static void
test_mail_params(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;

	run(p, "EHLO c\r\n");
	ev = until_event(p, "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME "
	    "SMTPUTF8\r\n", PROTO_EV_MAIL);
	CHECK(ev != NULL && ev->size_param == 1000 && ev->body_8bitmime &&
	    ev->smtputf8);
	proto_accept(p);
	run(p, "RSET\r\n");
	ev = until_event(p, "MAIL FROM:<a@b.example>  size=7  body=7bit\r\n",
	    PROTO_EV_MAIL);
	CHECK(ev != NULL && ev->size_param == 7 && !ev->body_8bitmime);
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");

	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=1001\r\n"),
	    "552 5.3.4 Message size exceeds fixed limit\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n"),
	    "501 5.5.4 Bad SIZE parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=12k\r\n"),
	    "501 5.5.4 Bad SIZE parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE\r\n"),
	    "501 5.5.4 Bad SIZE parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n"),
	    "501 5.5.4 Bad SIZE parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SIZE=\r\n"),
	    "501 5.5.4 Syntax error in MAIL parameters\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> =1\r\n"),
	    "501 5.5.4 Syntax error in MAIL parameters\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"),
	    "501 5.5.4 Unsupported BODY type\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> BODY\r\n"),
	    "501 5.5.4 Bad BODY parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n"),
	    "501 5.5.4 Bad SMTPUTF8 parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> MT-PRIORITY=3\r\n"),
	    "555 5.5.4 Unsupported parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> X-VERY-LONG-PARAMETER-NAME-"
	    "THAT-GOES-ON-AND-ON=with-a-very-long-value-as-well-beyond-32\r\n"),
	    "555 5.5.4 Unsupported parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> AUTH=<>\r\n"),
	    "555 5.5.4 Unsupported parameter\r\n");
	CHECK(!proto_in_transaction(p));
	proto_free(p);
}

static void
test_smtputf8(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;

	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "MAIL FROM:<pel\xc3\xa9@b.example>\r\n"),
	    "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	ev = until_event(p, "MAIL FROM:<pel\xc3\xa9@b.example> SMTPUTF8\r\n",
	    PROTO_EV_MAIL);
	CHECK_STR(ev ? ev->addr_text : NULL, "pel\xc3\xa9@b.example");
	proto_accept(p);
	out(p);
	CHECK_STR(run(p, "RCPT TO:<\xe7\x94\xa8@\xe4\xbe\x8b.example>\r\n"),
	    "250 2.1.5 Ok\r\n");
	/* Not UTF-8 at all: a syntax error even with SMTPUTF8. */
	CHECK_STR(run(p, "RCPT TO:<\xe9t\xe9@b.example>\r\n"),
	    "501 5.1.3 Bad recipient address syntax: bad local part\r\n");
	run(p, "RSET\r\n");

	/* A transaction without SMTPUTF8 gets no UTF-8 recipients. */
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "RCPT TO:<\xe7\x94\xa8@b.example>\r\n"),
	    "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	/* Non-ASCII outside MAIL/RCPT. */
	CHECK_STR(run(p, "NOOP caf\xc3\xa9\r\n"),
	    "500 5.5.2 Error: non-ASCII character in command\r\n");
	CHECK_STR(run(p, "EHLO caf\xc3\xa9.example\r\n"),
	    "500 5.5.2 Error: non-ASCII character in command\r\n");
	proto_free(p);
}

/* ---- RCPT ---------------------------------------------------------------- */

static void
test_rcpt(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;

	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example>\r\n"),
	    "503 5.5.1 Error: need MAIL command\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "RCPT <c@d.example>\r\n"),
	    "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	CHECK_STR(run(p, "RCPT TO:\r\n"),
	    "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	CHECK_STR(run(p, "RCPT TO:c@d.example\r\n"),
	    "501 5.1.3 Bad recipient address syntax: path must start with '<'\r\n");
	CHECK_STR(run(p, "RCPT TO:<>\r\n"),
	    "501 5.1.3 Bad recipient address syntax: null path not allowed here\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d@example>\r\n"),
	    "501 5.1.3 Bad recipient address syntax: bad domain\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY-ME=NEVER\r\n"),
	    "555 5.5.4 Unsupported parameter\r\n");

	ev = until_event(p, "RCPT TO:<Postmaster>\r\n", PROTO_EV_RCPT);
	CHECK_STR(ev ? ev->addr_text : NULL, "Postmaster");
	CHECK_STR(ev ? ev->addr.domain : NULL, "");
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.5 Ok\r\n");
	ev = until_event(p, "rcpt to: <C@D.example> \r\n", PROTO_EV_RCPT);
	CHECK_STR(ev ? ev->addr_text : NULL, "C@d.example");
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.5 Ok\r\n");
	proto_free(p);
}


/* ---- DSN (RFC 3461) -------------------------------------------------------- */

static void
test_dsn_mail(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;
	char envid[DSN_ENVID_MAX + 40];

	run(p, "EHLO c\r\n");
	ev = until_event(p, "MAIL FROM:<a@b.example> RET=hdrs "
	    "ENVID=QQ+2B314+3Dx\r\n", PROTO_EV_MAIL);
	CHECK_INT(ev ? ev->dsn_ret : -1, DSN_RET_HDRS);
	CHECK_STR(ev ? ev->dsn_envid : NULL, "QQ+314=x");
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.0 Ok\r\n");
	run(p, "RSET\r\n");
	/* Absent: none, and nothing left over from the last transaction. */
	ev = until_event(p, "MAIL FROM:<a@b.example> RET=FULL\r\n",
	    PROTO_EV_MAIL);
	CHECK_INT(ev ? ev->dsn_ret : -1, DSN_RET_FULL);
	CHECK(ev != NULL && ev->dsn_envid == NULL);
	proto_accept(p);
	out(p);
	run(p, "RSET\r\n");
	ev = until_event(p, "MAIL FROM:<a@b.example>\r\n", PROTO_EV_MAIL);
	CHECK_INT(ev ? ev->dsn_ret : -1, DSN_RET_NONE);
	CHECK(ev != NULL && ev->dsn_envid == NULL);
	proto_accept(p);
	out(p);
	run(p, "RSET\r\n");

	CHECK_STR(run(p, "MAIL FROM:<a@b.example> RET=ALL\r\n"),
	    "501 5.5.4 Bad RET parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> RET\r\n"),
	    "501 5.5.4 Bad RET parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> RET=FULL RET=HDRS\r\n"),
	    "501 5.5.4 Duplicate RET parameter\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a ENVID=b\r\n"),
	    "501 5.5.4 Duplicate ENVID parameter\r\n");
	/* xtext: "+" and two UPPER case hex digits, whole. */
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+2b\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+2\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+G0\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	/* Decoded control characters would forge DSN header fields. */
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+0D+0AX-Evil:1\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=a+00\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> ENVID=+C3+A9\r\n"),
	    "501 5.5.4 Bad ENVID parameter syntax\r\n");
	/* A space is printable: encoded, it is allowed. */
	ev = until_event(p, "MAIL FROM:<a@b.example> ENVID=a+20b\r\n",
	    PROTO_EV_MAIL);
	CHECK_STR(ev ? ev->dsn_envid : NULL, "a b");
	proto_accept(p);
	out(p);
	run(p, "RSET\r\n");
	/* 100 characters of xtext at most (RFC 3461 4.4). */
	memset(envid, 'e', DSN_ENVID_MAX);
	envid[DSN_ENVID_MAX] = '\0';
	ev = NULL;
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "MAIL FROM:<a@b.example> ENVID=%s\r\n",
		    envid);
		ev = until_event(p, cmd, PROTO_EV_MAIL);
		CHECK_INT(ev && ev->dsn_envid ? (long)strlen(ev->dsn_envid) : -1,
		    DSN_ENVID_MAX);
		proto_accept(p);
		out(p);
		run(p, "RSET\r\n");
		snprintf(cmd, sizeof(cmd), "MAIL FROM:<a@b.example> ENVID=%se\r\n",
		    envid);
		CHECK_STR(run(p, cmd), "501 5.5.4 Bad ENVID parameter syntax\r\n");
		/* Counted as sent: 34 "+41" are 102 characters. */
		cmd[0] = '\0';
		strcpy(cmd, "MAIL FROM:<a@b.example> ENVID=");
		for (int i = 0; i < 34; i++)
			strcat(cmd, "+41");
		strcat(cmd, "\r\n");
		CHECK_STR(run(p, cmd), "501 5.5.4 Bad ENVID parameter syntax\r\n");
	}
	CHECK(!proto_in_transaction(p));
	proto_free(p);

	/* Parameters are an extension: not after HELO. */
	p = start_patient();
	run(p, "HELO c\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> RET=FULL\r\n"),
	    "555 5.5.4 Parameters not allowed after HELO\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=NEVER\r\n"),
	    "555 5.5.4 Parameters not allowed after HELO\r\n");
	proto_free(p);
}

static void
test_dsn_rcpt(void)
{
	struct proto *p = start_patient();
	const struct proto_event *ev;
	char cmd[700];
	int i;

	run(p, "EHLO c\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	ev = until_event(p, "RCPT TO:<c@d.example> NOTIFY=success,Delay "
	    "ORCPT=rfc822;Bob+2Bx@d.example\r\n", PROTO_EV_RCPT);
	CHECK_INT(ev ? (long)ev->dsn_notify : -1,
	    DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY);
	CHECK_STR(ev ? ev->dsn_orcpt : NULL, "rfc822;Bob+x@d.example");
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.5 Ok\r\n");
	ev = until_event(p, "RCPT TO:<e@d.example> NOTIFY=NEVER\r\n",
	    PROTO_EV_RCPT);
	CHECK_INT(ev ? (long)ev->dsn_notify : -1, DSN_NOTIFY_NEVER);
	CHECK(ev != NULL && ev->dsn_orcpt == NULL);
	proto_accept(p);
	out(p);
	ev = until_event(p, "RCPT TO:<f@d.example> ORCPT=utf-8;f@d.example\r\n",
	    PROTO_EV_RCPT);
	CHECK_INT(ev ? (long)ev->dsn_notify : -1, 0);
	CHECK_STR(ev ? ev->dsn_orcpt : NULL, "utf-8;f@d.example");
	proto_accept(p);
	out(p);

	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=FAILURE,NEVER\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=FAILURE,FAILURE\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=SUCCESS,\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=,DELAY\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=ALWAYS\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY\r\n"),
	    "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=DELAY NOTIFY=DELAY\r\n"),
	    "501 5.5.4 Duplicate NOTIFY parameter\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=rfc822;a@b ORCPT=rfc822;a@b\r\n"),
	    "501 5.5.4 Duplicate ORCPT parameter\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=c@d.example\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=;c@d.example\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=rfc822;\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=rfc822;a+0Ab\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=rfc822;a+3db\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT=rf(c);a\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> ORCPT\r\n"),
	    "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	/* 500 characters at most (RFC 3461 4.2), the type included. */
	run(p, "RSET\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	strcpy(cmd, "RCPT TO:<c@d.example> ORCPT=rfc822;");
	for (i = 0; i < 500 - 7 - 2; i++)
		strcat(cmd, "x");
	strcat(cmd, "@d\r\n");
	ev = until_event(p, cmd, PROTO_EV_RCPT);
	CHECK_INT(ev && ev->dsn_orcpt ? (long)strlen(ev->dsn_orcpt) : -1, 500);
	proto_accept(p);
	out(p);
	strcpy(cmd, "RCPT TO:<c@d.example> ORCPT=rfc822;");
	for (i = 0; i < 500 - 7 - 1; i++)
		strcat(cmd, "x");
	strcat(cmd, "@d\r\n");
	CHECK_STR(run(p, cmd), "501 5.5.4 Bad ORCPT parameter syntax\r\n");
	CHECK_STR(run(p, "RCPT TO:<c@d.example> NOTIFY=NEVER =x\r\n"),
	    "501 5.5.4 Syntax error in RCPT parameters\r\n");
	/* What was refused is not a recipient: one was accepted. */
	CHECK_STR(run(p, "RCPT TO:<g@d.example> NOTIFY=FAILURE\r\n"),
	    "250 2.1.5 Ok\r\n");
	/* Only RCPT (and MAIL, by 100) may be longer than max_line. */
	strcpy(cmd, "NOOP ");
	for (i = 0; i < 520; i++)
		strcat(cmd, "x");
	strcat(cmd, "\r\n");
	CHECK_STR(run(p, cmd), "500 5.5.2 Line too long\r\n");
	proto_free(p);
}

static void
test_max_rcpts(void)
{
	struct proto *p = start();
	int i;

	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "RCPT TO:<1@d.example>\r\nRCPT TO:<2@d.example>\r\n"
	    "RCPT TO:<3@d.example>\r\nRCPT TO:<4@d.example>\r\n"),
	    "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
	    "452 4.5.3 Too many recipients\r\n");
	/* 452 here is flow control, not a client error: max_errors (5) is
	 * not reached however many the client sends. */
	for (i = 0; i < 20; i++)
		CHECK_STR(run(p, "RCPT TO:<x@d.example>\r\n"),
		    "452 4.5.3 Too many recipients\r\n");
	CHECK(!proto_closing(p));
	/* A rejected recipient does not use up the allowance. */
	run(p, "RSET\r\nMAIL FROM:<a@b.example>\r\n");
	CHECK(until_event(p, "RCPT TO:<no@d.example>\r\n",
	    PROTO_EV_RCPT) != NULL);
	proto_reply(p, 550, "5.1.1 No such user");
	CHECK_STR(out(p), "550 5.1.1 No such user\r\n");
	CHECK_STR(run(p, "RCPT TO:<1@d.example>\r\nRCPT TO:<2@d.example>\r\n"
	    "RCPT TO:<3@d.example>\r\nRCPT TO:<4@d.example>\r\n"),
	    "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
	    "452 4.5.3 Too many recipients\r\n");
	proto_free(p);
}

/* ---- BDAT (RFC 3030) ------------------------------------------------------ */

static void
test_bdat_chunks(void)
{
	struct proto *p = in_transaction();
	const struct proto_event *ev;

	/* The first chunk goes through the DATA stage, then is read. */
	ev = until_event(p, "BDAT 13\r\n", PROTO_EV_DATA);
	CHECK(ev != NULL && ev->bdat);
	proto_accept(p);
	CHECK_STR(out(p), "");
	CHECK(proto_phase(p) == PROTO_PHASE_DATA);
	/* Binary framing: a "." line is content, nothing is unstuffed. */
	CHECK_STR(run(p, "Subject: a\r\n."), "250 2.0.0 13 octets received\r\n");
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	/* A CR at the end of one chunk and its LF in the next: CRLF. */
	CHECK_STR(run(p, "BDAT 3\r\n.x\r"), "250 2.0.0 3 octets received\r\n");
	CHECK_STR(run(p, "DATA\r\n"),
	    "503 5.5.1 Error: BDAT in progress, DATA not allowed\r\n");
	ev = NULL;
	CHECK_INT(proto_feed(p, "BDAT 7 LAST\r\n\nbody\r\n", 20), 20);
	ev = proto_event(p);
	CHECK(ev != NULL && ev->type == PROTO_EV_MESSAGE);
	CHECK_STR(content.data, "Subject: a\r\n..x\r\nbody\r\n");
	CHECK(ev != NULL && ev->message_size == strlen(content.data));
	proto_reply(p, 250, "2.0.0 Ok: queued as 0123456789ABCDEF");
	CHECK_STR(out(p), "250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n");
	CHECK(!proto_in_transaction(p));
	proto_free(p);
}

static void
test_bdat_pipelined_and_unterminated(void)
{
	struct proto *p = in_transaction();

	/* All in one write; a message without a final CRLF gets one, so
	 * that it can be relayed with DATA. */
	CHECK_STR(run(p, "BDAT 5\r\nHelloBDAT 0 LAST\r\n"
	    "RSET\r\n"), "250 2.0.0 5 octets received\r\n"
	    "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
	CHECK_STR(content.data, "Hello\r\n");
	proto_free(p);
}

static void
test_bdat_refusals_consume_the_chunk(void)
{
	struct proto *p = start();

	run(p, "EHLO c\r\n");
	/* Refused, its bytes still read and thrown away, never commands. */
	CHECK_STR(run(p, "BDAT 6\r\nQUIT\r\nNOOP\r\n"),
	    "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
	CHECK(!proto_closing(p));
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "BDAT 6 LAST\r\nQUIT\r\n"),
	    "503 5.5.1 Error: no valid recipients\r\n");
	CHECK(!proto_closing(p));
	proto_free(p);

	/* Refused at the DATA stage: this chunk and every later one of the
	 * transaction get the refusal; LAST ends the transaction. */
	p = in_transaction();
	CHECK(until_event(p, "BDAT 4\r\n", PROTO_EV_DATA) != NULL);
	proto_reply(p, 554, "5.7.1 No thanks");
	CHECK_STR(out(p), "554 5.7.1 No thanks\r\n");
	CHECK_STR(run(p, "QUITBDAT 3 LAST\r\nabc"), "554 5.7.1 No thanks\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(content.data == NULL ? "" : content.data, "");
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_bdat_limits(void)
{
	struct proto_params pp = params();
	struct proto *p;
	char big[700];

	pp.max_errors = 100;
	p = start_with(&pp);
	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	/* A chunk over SIZE (1000) is refused before it is read. */
	CHECK_STR(run(p, "BDAT 2000\r\n"),
	    "552 5.3.4 Message size exceeds fixed limit\r\n");
	memset(big, 'x', sizeof(big));
	CHECK_STR(run_n(p, big, sizeof(big)), "");
	CHECK_STR(run_n(p, big, sizeof(big)), "");
	CHECK_STR(run_n(p, big, 600), "");
	CHECK_STR(run(p, "BDAT 1 LAST\r\nx"),
	    "552 5.3.4 Message size exceeds fixed limit\r\n");
	CHECK(!proto_in_transaction(p));
	/* The total counts too: 700 + 400 > 1000. */
	run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	CHECK_STR(run(p, "BDAT 700\r\n"), "");
	CHECK_STR(run_n(p, big, sizeof(big)), "250 2.0.0 700 octets received\r\n");
	CHECK_STR(run(p, "BDAT 400 LAST\r\n"),
	    "552 5.3.4 Message size exceeds fixed limit\r\n");
	memset(big, 'y', 400);
	CHECK_STR(run_n(p, big, 400), "");
	CHECK(!proto_in_transaction(p));
	/* Bare LF in a chunk: refused as in DATA, at the end. */
	run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	CHECK_STR(run(p, "BDAT 9 LAST\r\na\n.\nQUIT\n"),
	    "550 5.6.11 Bare CR or LF received in message, use CRLF\r\n");
	CHECK(!proto_closing(p));
	/* Refused content in a chunk before the last ends the transaction:
	 * what was pipelined behind it is read, refused, never commands. */
	run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	CHECK_STR(run(p, "BDAT 3\r\na\nbBDAT 6 LAST\r\nQUIT\r\n"),
	    "550 5.6.11 Bare CR or LF received in message, use CRLF\r\n"
	    "503 5.5.1 Error: need MAIL command\r\n");
	CHECK(!proto_closing(p));
	/* No size: nothing tells where the chunk ends; close. */
	CHECK_STR(run(p, "BDAT x\r\n"), "501 5.5.4 Syntax: BDAT chunk-size "
	    "[LAST]\r\n421 4.5.4 mx.example Error: cannot find the end of the "
	    "BDAT chunk, closing\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
	p = start_with(&pp);
	CHECK_STR(run(p, "BDAT 99999999999999999999999 LAST\r\n"),
	    "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n421 4.5.4 mx.example "
	    "Error: cannot find the end of the BDAT chunk, closing\r\n");
	proto_free(p);
}

/* ---- DATA and content ---------------------------------------------------- */

static void
test_data_sequence(void)
{
	struct proto *p = start_patient();

	run(p, "EHLO c\r\n");
	CHECK_STR(run(p, "DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	run(p, "MAIL FROM:<a@b.example>\r\n");
	CHECK_STR(run(p, "DATA\r\n"), "503 5.5.1 Error: no valid recipients\r\n");
	/* Recipients refused by the caller do not count. */
	CHECK(until_event(p, "RCPT TO:<c@d.example>\r\n", PROTO_EV_RCPT));
	proto_reply(p, 450, "4.2.0 Try later");
	out(p);
	CHECK_STR(run(p, "DATA\r\n"), "503 5.5.1 Error: no valid recipients\r\n");
	run(p, "RCPT TO:<c@d.example>\r\n");
	CHECK_STR(run(p, "DATA now\r\n"), "501 5.5.4 Syntax: DATA\r\n");
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	CHECK(until_event(p, "DATA\r\n", PROTO_EV_DATA) != NULL);
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	proto_accept(p);
	CHECK_STR(out(p), "354 End data with <CR><LF>.<CR><LF>\r\n");
	CHECK(proto_phase(p) == PROTO_PHASE_DATA);
	proto_free(p);
}

static void
test_data_rejected_by_caller(void)
{
	struct proto *p = in_transaction();

	CHECK(until_event(p, "DATA\r\n", PROTO_EV_DATA) != NULL);
	proto_reply(p, 451, "4.3.0 Queue unavailable");
	CHECK_STR(out(p), "451 4.3.0 Queue unavailable\r\n");
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	CHECK(proto_in_transaction(p));
	/* The would-be content is read as commands. */
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_message(void)
{
	struct proto *p = in_transaction();
	const struct proto_event *ev;
	const char *msg = "Subject: hi\r\n\r\nhello\r\n";

	run(p, "DATA\r\n");
	CHECK_INT(proto_feed(p, msg, strlen(msg)), strlen(msg));
	CHECK(proto_event(p) == NULL);
	ev = until_event(p, ".\r\n", PROTO_EV_MESSAGE);
	CHECK(ev != NULL && ev->message_size == strlen(msg));
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	CHECK(proto_in_transaction(p));
	CHECK_STR(content.data, msg);
	proto_reply(p, 250, "2.0.0 Ok: queued as 0123456789ABCDEF");
	CHECK_STR(out(p), "250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n");
	CHECK(!proto_in_transaction(p));
	/* A new transaction right away. */
	CHECK_STR(run(p, "RCPT TO:<c@d.example>\r\n"),
	    "503 5.5.1 Error: need MAIL command\r\n");
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
	    "DATA\r\n"), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "354 End data with <CR><LF>.<CR><LF>\r\n");
	buf_reset(&content);
	CHECK_STR(run(p, "8bit \xff\xfe\x80 ok\r\n.\r\nQUIT\r\n"),
	    "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
	CHECK_STR(content.data, "8bit \xff\xfe\x80 ok\r\n");
	proto_free(p);
}

static void
test_message_error_ends_transaction(void)
{
	struct proto *p = in_transaction();

	run(p, "DATA\r\n");
	CHECK(until_event(p, "x\r\n.\r\n", PROTO_EV_MESSAGE) != NULL);
	proto_reply(p, 451, "4.3.0 Queue write failed");
	CHECK_STR(out(p), "451 4.3.0 Queue write failed\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(run(p, "DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	proto_free(p);
}

static void
test_empty_message(void)
{
	struct proto *p = in_transaction();
	const struct proto_event *ev;

	/* The DATA line's CRLF is the first CRLF of the terminator. */
	run(p, "DATA\r\n");
	ev = until_event(p, ".\r\n", PROTO_EV_MESSAGE);
	CHECK(ev != NULL && ev->message_size == 0);
	CHECK_INT(content.len, 0);
	proto_accept(p);
	CHECK_STR(out(p), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_dot_unstuffing(void)
{
	struct proto *p = in_transaction();

	run(p, "DATA\r\n");
	CHECK_STR(run(p, "..x\r\n..\r\n...\r\n.a.b\r\n x.\r\n.\r\n"),
	    "250 2.0.0 Ok\r\n");
	CHECK_STR(content.data, ".x\r\n.\r\n..\r\na.b\r\n x.\r\n");
	proto_free(p);
}

/* The sequences a lenient server might take for the end of data. */
static const char *const smuggle[] = {
	"\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\n.\r",
	"\n.\r", "\r.\n", "\r.\r\n",
};

static void
test_smuggling_reject(void)
{
	char msg[128];
	size_t i;

	for (i = 0; i < ARRAY_LEN(smuggle); i++) {
		struct proto *p = in_transaction();
		const struct proto_event *ev;

		run(p, "DATA\r\n");
		snprintf(msg, sizeof(msg), "line1%sMAIL FROM:<evil@x.example>"
		    "\r\n.\r\n", smuggle[i]);
		ev = until_event(p, msg, PROTO_EV_MESSAGE_ABORT);
		if (ev == NULL) {
			printf("#   smuggle[%zu] ended the message\n", i);
			unit_current_failed = 1;
			proto_free(p);
			continue;
		}
		CHECK_INT(ev->abort_code, 550);
		CHECK_STR(ev->abort_text,
		    "5.6.11 Bare CR or LF received in message, use CRLF");
		proto_accept(p);
		CHECK_STR(out(p), "550 5.6.11 Bare CR or LF received in message, "
		    "use CRLF\r\n");
		CHECK(!proto_in_transaction(p));
		CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
		proto_free(p);
	}
}

static void
test_smuggling_normalize(void)
{
	struct proto_params pp = params();
	char msg[128];
	size_t i;

	pp.bare_newlines = PROTO_BARE_NORMALIZE;
	for (i = 0; i < 5; i++) {
		struct proto *p = start_with(&pp);
		const struct proto_event *ev;

		run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
		    "RCPT TO:<c@d.example>\r\nDATA\r\n");
		snprintf(msg, sizeof(msg), "line1%sline2\r\n.\r\n", smuggle[i]);
		ev = until_event(p, msg, PROTO_EV_MESSAGE);
		CHECK(ev != NULL);
		/* Normalized to CRLF, the "." is content that a relay will
		 * stuff again: one message, not two. */
		CHECK_STR(content.data, "line1\r\n.\r\nline2\r\n");
		CHECK_INT(ev ? ev->message_size : 0, 17);
		proto_accept(p);
		CHECK_STR(out(p), "250 2.0.0 Ok\r\n");
		proto_free(p);
	}
}

static void
test_bare_newlines_normalize(void)
{
	struct proto_params pp = params();
	struct proto *p;

	pp.bare_newlines = PROTO_BARE_NORMALIZE;
	p = start_with(&pp);
	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
	    "DATA\r\n");
	CHECK_STR(run(p, "a\nb\rc\r\r\nd\n\n..e\r\n.\r\n"), "250 2.0.0 Ok\r\n");
	/* After a bare LF, "..e" is not at a real line start: kept as is. */
	CHECK_STR(content.data, "a\r\nb\r\nc\r\n\r\nd\r\n\r\n..e\r\n");
	proto_free(p);
}

static void
test_size_limit(void)
{
	struct proto *p = in_transaction();
	const struct proto_event *ev;
	char body[1200];

	/* 998 + CRLF = 1000 = max_size: fits. */
	memset(body, 'x', 998);
	memcpy(body + 998, "\r\n.\r\n", 6);
	run(p, "DATA\r\n");
	ev = until_event(p, body, PROTO_EV_MESSAGE);
	CHECK(ev != NULL && ev->message_size == 1000);
	proto_accept(p);
	CHECK_STR(out(p), "250 2.0.0 Ok\r\n");

	/* One more byte: read to the end, then 552, and the session goes on. */
	run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	buf_reset(&content);
	memset(body, 'y', 999);
	memcpy(body + 999, "\r\n.\r\n", 6);
	ev = until_event(p, body, PROTO_EV_MESSAGE_ABORT);
	CHECK(ev != NULL && ev->abort_code == 552);
	CHECK_INT(content.len, 0);
	proto_accept(p);
	CHECK_STR(out(p), "552 5.3.4 Message size exceeds fixed limit\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
	    "DATA\r\nsmall\r\n.\r\n"), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok\r\n");
	CHECK_STR(content.data, "small\r\n");
	proto_free(p);
}

static void
test_large_message_in_pieces(void)
{
	struct proto_params pp = params();
	struct proto *p;
	char line[100];
	size_t i, total = 0;

	pp.max_size = 10 * 1000 * 1000;
	p = start_with(&pp);
	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
	    "DATA\r\n");
	for (i = 0; i < 50000; i++) {
		snprintf(line, sizeof(line), "%s%zu the quick brown fox\r\n",
		    i % 7 == 0 ? "." : "", i);
		CHECK_INT(proto_feed(p, line, strlen(line)), strlen(line));
		total += strlen(line) - (i % 7 == 0);
	}
	CHECK(until_event(p, ".\r\n", PROTO_EV_MESSAGE) != NULL);
	CHECK_INT(proto_event(p)->message_size, total);
	CHECK_INT(content.len, total);
	proto_free(p);
}

/* ---- simple commands ------------------------------------------------------ */

static void
test_simple_commands(void)
{
	struct proto *p = start();

	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	CHECK_STR(run(p, "noop anything at all\r\n"), "250 2.0.0 Ok\r\n");
	CHECK_STR(run(p, "RSET\r\n"), "250 2.0.0 Ok\r\n");
	CHECK_STR(run(p, "RSET now\r\n"), "501 5.5.4 Syntax: RSET\r\n");
	CHECK_STR(run(p, "VRFY root\r\n"), "252 2.5.2 Cannot VRFY user, but "
	    "will accept message and attempt delivery\r\n");
	CHECK_STR(run(p, "VRFY\r\n"), "501 5.5.4 Syntax: VRFY address\r\n");
	CHECK_STR(run(p, "EXPN staff\r\n"),
	    "502 5.5.1 Command not implemented\r\n");
	proto_free(p);

	p = start();
	CHECK_STR(run(p, "HELP\r\n"), "214 2.0.0 Commands: HELO EHLO MAIL RCPT "
	    "DATA RSET NOOP QUIT VRFY HELP; see RFC 5321\r\n");
	CHECK_STR(run(p, "STARTTLS\r\n"), "502 5.5.1 Command not implemented\r\n");
	CHECK_STR(run(p, "AUTH LOGIN\r\n"), "502 5.5.1 Command not implemented\r\n");
	CHECK_STR(run(p, "XYZZY\r\n"), "500 5.5.2 Error: command not recognized\r\n");
	CHECK_STR(run(p, "\r\n"), "500 5.5.2 Error: bad syntax\r\n");
	proto_free(p);

	p = start();
	CHECK_STR(run(p, "  \r\n"), "500 5.5.2 Error: bad syntax\r\n");
	CHECK_STR(run(p, "MAILFROM:<a@b.example>\r\n"),
	    "500 5.5.2 Error: command not recognized\r\n");
	CHECK_STR(run(p, "QUIT now\r\n"), "501 5.5.4 Syntax: QUIT\r\n");
	CHECK_STR(run(p, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
	CHECK(proto_closing(p));
	CHECK_INT(proto_feed(p, "NOOP\r\n", 6), 0);
	proto_free(p);
}

static void
test_bad_command_lines(void)
{
	struct proto_params pp = params();
	struct proto *p;

	pp.max_errors = 100;
	p = start_with(&pp);
	/* RFC 5321 2.3.8: a bare LF does not end a line; the whole line,
	 * up to its CRLF, is refused, and nothing after the LF runs. */
	CHECK_STR(run(p, "NOOP\n"), "");
	CHECK_STR(run(p, "\r\n"), "500 5.5.2 Bare LF received, use CRLF\r\n");
	CHECK_STR(run(p, "\n\r\n"), "500 5.5.2 Bare LF received, use CRLF\r\n");
	CHECK_STR(run(p, "NOOP\nRCPT TO:<a@example.com>\r\n"),
	    "500 5.5.2 Bare LF received, use CRLF\r\n");
	CHECK_STR(run(p, "NOOP\nQUIT\r\n"),
	    "500 5.5.2 Bare LF received, use CRLF\r\n");
	CHECK(!proto_closing(p));
	/* The LF counts toward the line length: a line of bare LFs ends
	 * as an overlong one, never holding more than the limit. */
	{
		char many[2000];
		memset(many, '\n', sizeof many);
		CHECK_STR(run_n(p, many, sizeof many), "");
		CHECK_STR(run(p, "\r\n"), "500 5.5.2 Line too long\r\n");
	}
	CHECK_STR(run(p, "NOOP\rQUIT\r\n"),
	    "500 5.5.2 Bare CR received, use CRLF\r\n");
	CHECK_STR(run(p, "QUIT\r\r\n"), "500 5.5.2 Bare CR received, use CRLF\r\n");
	CHECK_STR(run_n(p, "NO\0OP\r\n", 7),
	    "500 5.5.2 Error: NUL character in command\r\n");
	CHECK_STR(run_n(p, "NOOP\0\r\n", 7),
	    "500 5.5.2 Error: NUL character in command\r\n");
	CHECK(!proto_closing(p));
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_line_too_long(void)
{
	struct proto *p = start();
	char line[2048];
	size_t i;

	/* 512 with CRLF is the limit and is fine. */
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', 505);
	memcpy(line + 510, "\r\n", 3);
	CHECK_INT(strlen(line), 512);
	CHECK_STR(run(p, line), "250 2.0.0 Ok\r\n");
	memset(line + 5, 'x', 506);
	memcpy(line + 511, "\r\n", 3);
	CHECK_STR(run(p, line), "500 5.5.2 Line too long\r\n");
	CHECK_STR(run(p, "NOOP\r\n"), "250 2.0.0 Ok\r\n");

	/* Much longer, byte by byte: consumed, one reply when it ends. */
	for (i = 0; i < 100000; i++)
		CHECK_INT(proto_feed(p, "A", 1), 1);
	CHECK_STR(out(p), "");
	CHECK_STR(run(p, "\r\nNOOP\r\n"),
	    "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	proto_free(p);
}

static void
test_max_errors(void)
{
	struct proto *p = start();
	const char *in = "X1\r\nX2\r\nNOOP\r\nX3\r\nVRFY\r\nX5\r\nNOOP\r\n";
	size_t n;

	n = proto_feed(p, in, strlen(in));
	CHECK_INT(n, strlen(in) - strlen("NOOP\r\n"));
	CHECK_STR(out(p), "500 5.5.2 Error: command not recognized\r\n"
	    "500 5.5.2 Error: command not recognized\r\n"
	    "250 2.0.0 Ok\r\n"
	    "500 5.5.2 Error: command not recognized\r\n"
	    "501 5.5.4 Syntax: VRFY address\r\n"
	    "500 5.5.2 Error: command not recognized\r\n"
	    "421 4.7.0 Too many errors, closing connection\r\n");
	CHECK(proto_closing(p));
	CHECK_INT(proto_feed(p, "NOOP\r\n", 6), 0);
	CHECK(proto_event(p) == NULL);
	proto_free(p);
}

static void
test_caller_errors_count(void)
{
	struct proto *p = start();
	int i;

	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
	for (i = 0; i < 5; i++) {
		CHECK(until_event(p, "RCPT TO:<x@d.example>\r\n",
		    PROTO_EV_RCPT) != NULL);
		proto_reply(p, 550, "5.1.1 No such user");
	}
	CHECK_STR(out(p), "550 5.1.1 No such user\r\n550 5.1.1 No such user\r\n"
	    "550 5.1.1 No such user\r\n550 5.1.1 No such user\r\n"
	    "550 5.1.1 No such user\r\n"
	    "421 4.7.0 Too many errors, closing connection\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

/* ---- resets ------------------------------------------------------------- */

static void
test_rset_resets(void)
{
	struct proto *p = in_transaction();

	CHECK(proto_in_transaction(p));
	CHECK(until_event(p, "RSET\r\n", PROTO_EV_RSET) != NULL);
	CHECK(proto_in_transaction(p));     /* until answered */
	proto_accept(p);
	CHECK_STR(out(p), "250 2.0.0 Ok\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(run(p, "RCPT TO:<c@d.example>\r\nDATA\r\n"),
	    "503 5.5.1 Error: need MAIL command\r\n"
	    "503 5.5.1 Error: need MAIL command\r\n");
	/* After RSET, MAIL is not nested and EHLO is still known. */
	CHECK_STR(run(p, "MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
	proto_free(p);
}

static void
test_helo_resets(void)
{
	struct proto *p = in_transaction();

	CHECK_STR(run(p, "HELO again\r\n"), "250 mx.example\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(run(p, "DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
	/* HELO replaced EHLO: no more parameters. */
	CHECK_STR(run(p, "MAIL FROM:<a@b.example> BODY=8BITMIME\r\n"),
	    "555 5.5.4 Parameters not allowed after HELO\r\n");
	CHECK_STR(run(p, "EHLO again\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\n"),
	    EHLO_REPLY "250 2.1.0 Ok\r\n");
	CHECK(proto_in_transaction(p));
	proto_free(p);
}

static void
test_rejected_mail_keeps_state(void)
{
	struct proto *p = start();

	run(p, "EHLO c\r\n");
	CHECK(until_event(p, "MAIL FROM:<spam@x.example>\r\n",
	    PROTO_EV_MAIL) != NULL);
	proto_reply(p, 550, "5.7.1 Sender rejected");
	CHECK_STR(out(p), "550 5.7.1 Sender rejected\r\n");
	CHECK(!proto_in_transaction(p));
	CHECK_STR(run(p, "RCPT TO:<c@d.example>\r\n"),
	    "503 5.5.1 Error: need MAIL command\r\n");
	proto_free(p);
}

/* ---- replies ---------------------------------------------------------------- */

static void
test_reply_multiline(void)
{
	struct proto *p = start();

	run(p, "EHLO c\r\n");
	CHECK(until_event(p, "MAIL FROM:<a@b.example>\r\n",
	    PROTO_EV_MAIL) != NULL);
	proto_reply(p, 550, "5.7.1 Rejected by policy\n5.7.1 See %s\n"
	    "5.7.1 Contact postmaster", "https://example.com/why");
	CHECK_STR(out(p), "550-5.7.1 Rejected by policy\r\n"
	    "550-5.7.1 See https://example.com/why\r\n"
	    "550 5.7.1 Contact postmaster\r\n");
	proto_free(p);
}

static void
test_reply_sanitized(void)
{
	struct proto *p = start();

	run(p, "EHLO c\r\n");
	CHECK(until_event(p, "MAIL FROM:<a@b.example>\r\n",
	    PROTO_EV_MAIL) != NULL);
	/* A caller echoing client text cannot inject a second reply. */
	proto_reply(p, 550, "5.7.1 bad\r250 ok\x01\n");
	CHECK_STR(out(p), "550 5.7.1 bad?250 ok?\r\n");
	CHECK(until_event(p, "MAIL FROM:<a@b.example>\r\n",
	    PROTO_EV_MAIL) != NULL);
	proto_reply(p, 250, "%s", "");
	CHECK_STR(out(p), "250\r\n");
	/* No event pending: nothing happens. */
	proto_reply(p, 250, "2.0.0 stray");
	proto_accept(p);
	CHECK_STR(out(p), "");
	proto_free(p);
}

static void
test_reply_421_closes(void)
{
	struct proto *p = in_transaction();
	const char *in = "DATA\r\nNOOP\r\n";

	CHECK_INT(proto_feed(p, in, strlen(in)), 6);
	proto_reply(p, 421, "4.3.0 mx.example Queue unavailable, closing");
	CHECK_STR(out(p), "421 4.3.0 mx.example Queue unavailable, closing\r\n");
	CHECK(proto_closing(p));
	CHECK(proto_phase(p) == PROTO_PHASE_COMMAND);
	CHECK_INT(proto_feed(p, in + 6, strlen(in + 6)), 0);
	proto_free(p);
}

static void
test_timeout(void)
{
	struct proto *p = in_transaction();

	run(p, "DATA\r\nsome content");
	CHECK(proto_phase(p) == PROTO_PHASE_DATA);
	proto_timeout(p);
	CHECK_STR(out(p), "421 4.4.2 mx.example Error: timeout exceeded\r\n");
	CHECK(proto_closing(p));
	CHECK(proto_event(p) == NULL);
	CHECK_INT(proto_feed(p, "\r\n.\r\n", 5), 0);
	proto_timeout(p);
	CHECK_STR(out(p), "");
	proto_free(p);
}

static void
test_shutdown(void)
{
	struct proto *p = start();

	proto_shutdown(p);
	CHECK_STR(out(p), "421 4.3.2 mx.example Service shutting down\r\n");
	CHECK(proto_closing(p));
	proto_shutdown(p);
	CHECK_STR(out(p), "");
	proto_free(p);

	/* An event pending: its answer goes first. */
	p = start();
	run(p, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
	CHECK(until_event(p, "RCPT TO:<c@d.example>\r\n",
	    PROTO_EV_RCPT) != NULL);
	proto_shutdown(p);
	CHECK_STR(out(p), "");
	CHECK(!proto_closing(p));
	proto_accept(p);
	CHECK_STR(out(p), "250 2.1.5 Ok\r\n"
	    "421 4.3.2 mx.example Service shutting down\r\n");
	CHECK(proto_closing(p));
	proto_free(p);

	/* A message being received is finished first. */
	p = in_transaction();
	run(p, "DATA\r\npart");
	proto_shutdown(p);
	CHECK_STR(out(p), "");
	CHECK(until_event(p, " two\r\n.\r\n", PROTO_EV_MESSAGE) != NULL);
	CHECK_STR(content.data, "part two\r\n");
	proto_reply(p, 250, "2.0.0 Ok: queued as X");
	CHECK_STR(out(p), "250 2.0.0 Ok: queued as X\r\n"
	    "421 4.3.2 mx.example Service shutting down\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

static void
test_quit_in_transaction(void)
{
	struct proto *p = in_transaction();

	CHECK_INT(proto_feed(p, "QUIT\r\nNOOP\r\n", 12), 6);
	CHECK(proto_event(p) != NULL && proto_event(p)->type == PROTO_EV_QUIT);
	CHECK(proto_in_transaction(p));
	proto_accept(p);
	CHECK_STR(out(p), "221 2.0.0 Bye\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

/* ---- pipelining and feeding ----------------------------------------------- */

static void
test_pipelining(void)
{
	struct proto *p = start();
	const char *in = "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=20\r\n"
	    "RCPT TO:<1@d.example>\r\nRCPT TO:<bad@d.example>\r\n"
	    "RCPT TO:<2@d.example>\r\nNOOP\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n";
	size_t len = strlen(in), off = 0;
	const struct proto_event *ev;
	static const enum proto_event_type want[] = {
		PROTO_EV_HELO, PROTO_EV_MAIL, PROTO_EV_RCPT, PROTO_EV_RCPT,
		PROTO_EV_RCPT, PROTO_EV_DATA, PROTO_EV_MESSAGE, PROTO_EV_QUIT,
	};
	size_t i;

	for (i = 0; i < ARRAY_LEN(want); i++) {
		off += proto_feed(p, in + off, len - off);
		ev = proto_event(p);
		CHECK(ev != NULL && ev->type == want[i]);
		if (ev == NULL)
			break;
		/* Nothing more is consumed while the event waits. */
		CHECK_INT(proto_feed(p, in + off, len - off), 0);
		if (ev->type == PROTO_EV_RCPT &&
		    strcmp(ev->addr_text, "bad@d.example") == 0)
			proto_reply(p, 550, "5.1.1 No such user");
		else if (ev->type == PROTO_EV_MESSAGE)
			proto_reply(p, 250, "2.0.0 Ok: queued as Q1");
		else
			proto_accept(p);
	}
	CHECK_INT(off, len);
	CHECK_STR(out(p), EHLO_REPLY "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
	    "354 End data with <CR><LF>.<CR><LF>\r\n"
	    "250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n");
	CHECK_STR(content.data, "hello\r\n");
	CHECK(proto_closing(p));
	proto_free(p);
}

/*
 * Answers for the equivalence runs: reject some, log everything.  Like a
 * session, drop the content of an aborted message (how much of it reached
 * the sink before the engine gave up depends on how it was fed).
 */
static void
answer(struct proto *p, struct buf *log, struct buf *msgs)
{
	const struct proto_event *ev = proto_event(p);
	static size_t msg_start;

	switch (ev->type) {
	case PROTO_EV_HELO:
		buf_appendf(log, "HELO %s %d\n", ev->helo, ev->esmtp);
		break;
	case PROTO_EV_MAIL:
	case PROTO_EV_RCPT:
		buf_appendf(log, "%s <%s> %llu %d %d\n",
		    ev->type == PROTO_EV_MAIL ? "MAIL" : "RCPT", ev->addr_text,
		    ev->size_param, ev->body_8bitmime, ev->smtputf8);
		if (strncmp(ev->addr_text, "bad", 3) == 0) {
			proto_reply(p, 550, "5.1.1 <%s> refused", ev->addr_text);
			return;
		}
		break;
	case PROTO_EV_MESSAGE:
		buf_appendf(log, "MESSAGE %zu\n", ev->message_size);
		proto_reply(p, 250, "2.0.0 Ok: %zu bytes", ev->message_size);
		return;
	case PROTO_EV_MESSAGE_ABORT:
		buf_appendf(log, "ABORT %d %s\n", ev->abort_code, ev->abort_text);
		msgs->len = msg_start;
		break;
	case PROTO_EV_DATA:
		buf_appendf(log, "DATA\n");
		msg_start = msgs->len;
		break;
	default:
		buf_appendf(log, "EVENT %d\n", (int)ev->type);
		break;
	}
	proto_accept(p);
}

struct result {
	struct buf out, log, content;
	size_t consumed;
};

/* Feed in pieces of `chunk` bytes (varying when chunk is 0) as a session
 * would: whatever is not consumed is offered again after the answer. */
static void
drive(const struct proto_params *pp, const char *in, size_t len,
    size_t chunk, struct result *r)
{
	struct proto *p;
	size_t off = 0, n, step, o;
	const char *s;
	unsigned seed = 7;

	buf_init(&r->out);
	buf_init(&r->log);
	buf_init(&r->content);
	p = proto_new(pp, sink, &r->content);
	proto_start(p);
	for (;;) {
		if (proto_event(p) != NULL)
			answer(p, &r->log, &r->content);
		s = proto_output(p, &o);
		buf_append(&r->out, s, o);
		proto_output_drain(p, o);
		if (proto_closing(p) || off == len)
			break;
		seed = seed * 1103515245 + 12345;
		step = chunk ? chunk : 1 + (seed >> 16) % 13;
		if (step > len - off)
			step = len - off;
		n = proto_feed(p, in + off, step);
		off += n;
		if (n == 0 && proto_event(p) == NULL)
			break;
	}
	/* Answer whatever the last bytes raised. */
	while (proto_event(p) != NULL) {
		answer(p, &r->log, &r->content);
		off += proto_feed(p, in + off, len - off);
	}
	s = proto_output(p, &o);
	buf_append(&r->out, s, o);
	r->consumed = off;
	proto_free(p);
}

static bool
same(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && (a->len == 0 ||
	    memcmp(a->data, b->data, a->len) == 0);
}

static void
test_bytewise_equivalence(void)
{
	static const char script[] =
	    "EHLO client.example\r\n"
	    "MAIL FROM:<a@b.example> SIZE=200 BODY=8BITMIME\r\n"
	    "RCPT TO:<1@d.example>\r\nRCPT TO:<bad@d.example>\r\n"
	    "RCPT TO:<>\r\nNOOP\r\nVRFY x\r\nDATA\r\n"
	    "From: a\r\n\r\n..stuffed\r\n.\r\n"
	    "MAIL FROM:<x@y.example>\r\nRCPT TO:<z@d.example>\r\nDATA\r\n"
	    "bare\nlf\r\n.\r\n"
	    "HELP\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<z@d.example>\r\n"
	    "DATA\r\n\xc3\xa9\x00\x01 8bit\r\n.\r\n"
	    "NOOP\nRSET\r\nQUIT\r\nNOOP\r\n";
	size_t len = sizeof(script) - 1;
	static const size_t chunks[] = { 1, 2, 3, 5, 7, 64, 0 };
	struct proto_params pp = params();
	struct result whole, part;
	size_t i;

	pp.max_errors = 50;
	drive(&pp, script, len, len, &whole);
	CHECK_INT(whole.consumed, len - strlen("NOOP\r\n"));
	CHECK(strstr(whole.log.data, "MESSAGE 21\n") != NULL);
	CHECK(strstr(whole.log.data, "MESSAGE 11\n") != NULL);
	CHECK(strstr(whole.log.data, "ABORT 550 ") != NULL);
	CHECK(strstr(whole.out.data, "221 2.0.0 Bye\r\n") != NULL);
	CHECK_INT(whole.content.len, 21 + 11);
	for (i = 0; i < ARRAY_LEN(chunks); i++) {
		drive(&pp, script, len, chunks[i], &part);
		if (!same(&whole.out, &part.out) || !same(&whole.log, &part.log) ||
		    !same(&whole.content, &part.content) ||
		    whole.consumed != part.consumed) {
			printf("#   chunk %zu differs:\n%s\n%s", chunks[i],
			    part.out.data, part.log.data);
			unit_current_failed = 1;
		}
		buf_free(&part.out);
		buf_free(&part.log);
		buf_free(&part.content);
	}
	buf_free(&whole.out);
	buf_free(&whole.log);
	buf_free(&whole.content);
}

int
main(void)
{
	buf_init(&content);
	RUN(test_greeting);
	RUN(test_greeting_refused);
	RUN(test_greeting_421);
	RUN(test_ehlo);
	RUN(test_ehlo_starttls_auth);
	RUN(test_starttls_injection);
	RUN(test_starttls_errors);
	RUN(test_implicit_tls);
	RUN(test_starttls_shutdown);
	RUN(test_auth_plain);
	RUN(test_auth_plain_challenge);
	RUN(test_auth_login);
	RUN(test_auth_failure);
	RUN(test_auth_cancel);
	RUN(test_auth_malformed);
	RUN(test_auth_line_too_long);
	RUN(test_auth_sequence);
	RUN(test_starttls_forgets_auth);
	RUN(test_auth_bytewise);
	RUN(test_helo);
	RUN(test_helo_rejected_keeps_state);
	RUN(test_mail_sequence);
	RUN(test_mail_syntax);
	RUN(test_mail_params);
	RUN(test_smtputf8);
	RUN(test_rcpt);
	RUN(test_dsn_mail);
	RUN(test_dsn_rcpt);
	RUN(test_max_rcpts);
	RUN(test_data_sequence);
	RUN(test_data_rejected_by_caller);
	RUN(test_message);
	RUN(test_message_error_ends_transaction);
	RUN(test_empty_message);
	RUN(test_dot_unstuffing);
	RUN(test_smuggling_reject);
	RUN(test_smuggling_normalize);
	RUN(test_bare_newlines_normalize);
	RUN(test_size_limit);
	RUN(test_large_message_in_pieces);
	RUN(test_simple_commands);
	RUN(test_bad_command_lines);
	RUN(test_line_too_long);
	RUN(test_max_errors);
	RUN(test_caller_errors_count);
	RUN(test_rset_resets);
	RUN(test_helo_resets);
	RUN(test_rejected_mail_keeps_state);
	RUN(test_reply_multiline);
	RUN(test_reply_sanitized);
	RUN(test_reply_421_closes);
	RUN(test_timeout);
	RUN(test_shutdown);
	RUN(test_quit_in_transaction);
	RUN(test_pipelining);
	RUN(test_bytewise_equivalence);
	RUN(test_bdat_chunks);
	RUN(test_bdat_pipelined_and_unterminated);
	RUN(test_bdat_refusals_consume_the_chunk);
	RUN(test_bdat_limits);
	buf_free(&content);
	return unit_done();
}
