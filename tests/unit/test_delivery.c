/*
 * Unit tests for the pure parts of delivery: the retry schedule, expiry
 * and delay warnings, job and destination keys (retry.c), replies
 * (delivery.c), and DSNs (bounce.c).
 */
#include <stdlib.h>
#include <string.h>

#include "queue/bounce.h"
#include "delivery/dane.h"
#include "delivery/delivery.h"
#include "delivery/mime7bit.h"
#include "delivery/mta_sts.h"
#include "delivery/relay.h"
#include "queue/retry.h"
#include "unit.h"
#include "common/util.h"

static const unsigned schedule[] = { 60, 300, 900 };
static const struct retry_policy policy = {
	schedule, 3, 5 * 86400, 4 * 3600
};

static void
test_retry_delay(void)
{
	CHECK_INT(retry_delay(&policy, 1), 60);
	CHECK_INT(retry_delay(&policy, 2), 300);
	CHECK_INT(retry_delay(&policy, 3), 900);
	/* Past the end of the list, the last interval repeats. */
	CHECK_INT(retry_delay(&policy, 4), 900);
	CHECK_INT(retry_delay(&policy, 1000), 900);
	CHECK_INT(retry_delay(&policy, 0), 60);
}

static void
test_retry_plan_next(void)
{
	int64_t next;
	bool warn;

	CHECK(!retry_plan(&policy, 1000, 1, 0, 1010, 1010, &next, &warn));
	CHECK_INT(next, 1070);
	CHECK(!warn);
	CHECK(!retry_plan(&policy, 1000, 2, 1010, 1070, 1070, &next, &warn));
	CHECK_INT(next, 1370);
}

static void
test_retry_plan_expiry(void)
{
	int64_t next;
	bool warn;
	int64_t deadline = 1000 + 5 * 86400;

	/* The retry would come after the deadline: one last attempt at it. */
	CHECK(!retry_plan(&policy, 1000, 50, deadline - 500, deadline - 100,
	    deadline - 100, &next, &warn));
	CHECK_INT(next, deadline);
	/* At the deadline a failure expires, and warns nobody. */
	CHECK(retry_plan(&policy, 1000, 51, deadline - 100, deadline,
	    deadline, &next, &warn));
	CHECK(!warn);
	CHECK(retry_plan(&policy, 1000, 51, deadline - 100, deadline + 7,
	    deadline + 7, &next, &warn));
}

static void
test_retry_plan_warning_once(void)
{
	int64_t next;
	bool warn;
	int64_t warn_at = 1000 + 4 * 3600;

	/* Before the threshold: no warning. */
	CHECK(!retry_plan(&policy, 1000, 3, 1000, warn_at - 1, warn_at - 1,
	    &next, &warn));
	CHECK(!warn);
	/* The first failure at or after it, the previous one before it. */
	CHECK(!retry_plan(&policy, 1000, 4, warn_at - 1, warn_at + 5,
	    warn_at + 5, &next, &warn));
	CHECK(warn);
	/* The next failure: the previous attempt was after it already. */
	CHECK(!retry_plan(&policy, 1000, 5, warn_at + 5, warn_at + 905,
	    warn_at + 905, &next, &warn));
	CHECK(!warn);
	/* An attempt that began before the threshold and failed after it:
	 * no warning yet; the next attempt warns, and it alone. */
	CHECK(!retry_plan(&policy, 1000, 4, warn_at - 60, warn_at - 1,
	    warn_at + 1, &next, &warn));
	CHECK(!warn);
	CHECK(!retry_plan(&policy, 1000, 5, warn_at - 1, warn_at + 300,
	    warn_at + 301, &next, &warn));
	CHECK(warn);
	CHECK(!retry_plan(&policy, 1000, 6, warn_at + 300, warn_at + 1200,
	    warn_at + 1201, &next, &warn));
	CHECK(!warn);
	/* A first attempt long after arrival (held, released) warns. */
	CHECK(!retry_plan(&policy, 1000, 1, 0, warn_at + 100, warn_at + 100,
	    &next, &warn));
	CHECK(warn);
}

static void
test_retry_plan_no_warning(void)
{
	struct retry_policy p = policy;
	int64_t next;
	bool warn;

	p.delay_warning = 0;
	CHECK(!retry_plan(&p, 1000, 4, 1000, 1000 + 86400, 1000 + 86400,
	    &next, &warn));
	CHECK(!warn);
}

static void
test_keys_relay(void)
{
	char job[RETRY_KEY_MAX], dest[RETRY_KEY_MAX];

	CHECK_INT(retry_keys("relay", "{\"upstream\":\"exchange\","
	    "\"vars\":{\"a\":\"1\"}}", "bob@Example.ORG", job, dest), 0);
	CHECK_STR(job, "relay:exchange");
	CHECK_STR(dest, "relay:exchange");
	CHECK_INT(retry_keys("relay", "{\"upstream\":\"mx\",\"vars\":{}}",
	    "bob@Example.ORG", job, dest), 0);
	CHECK_STR(job, "relay:mx:example.org");
	CHECK_STR(dest, "relay:mx:example.org");
	/* A quoted local part may hold an '@': the domain is after the last. */
	CHECK_INT(retry_keys("relay", "{\"upstream\":\"mx\"}",
	    "\"a@b\"@c.example", job, dest), 0);
	CHECK_STR(job, "relay:mx:c.example");
}

static void
test_keys_local(void)
{
	char job[RETRY_KEY_MAX], dest[RETRY_KEY_MAX];
	const char *p1 = "{\"path\":\"/var/mail/a/\",\"vars\":{}}";

	CHECK_INT(retry_keys("maildir", p1, "a@x", job, dest), 0);
	CHECK_STR(dest, "maildir:/var/mail/a/");
	CHECK(strstr(job, "maildir:") == job);
	CHECK(strstr(job, "/var/mail/a/") != NULL);
	CHECK_INT(retry_keys("pipe", "{\"command\":[\"/bin/x\",\"--q\",\"1\"]}",
	    "a@x", job, dest), 0);
	CHECK_STR(dest, "pipe:/bin/x");
	CHECK_INT(retry_keys("discard", "{\"vars\":{}}", "a@x", job, dest), 0);
	CHECK_STR(dest, "discard");
	CHECK_INT(retry_keys("webhook", "{\"url\":\"https://h/in\"}", "a@x",
	    job, dest), 0);
	CHECK_STR(dest, "webhook:https://h/in");
	/* Parameters that are not JSON: keys anyway, and -1. */
	CHECK_INT(retry_keys("pipe", "not json", "a@x", job, dest), -1);
	CHECK_STR(dest, "pipe");
	CHECK_INT(retry_keys("pipe", NULL, "a@x", job, dest), -1);
}

static void
test_delivery_set(void)
{
	struct delivery_rcpt r;

	memset(&r, 0, sizeof(r));
	delivery_set(&r, DELIVERY_FAIL, "5.3.0 command exited with status %d",
	    1);
	CHECK_INT(r.status, DELIVERY_FAIL);
	CHECK_STR(r.reply, "554 5.3.0 command exited with status 1");
	delivery_set(&r, DELIVERY_DEFER, "timed out");
	CHECK_STR(r.reply, "451 4.0.0 timed out");
	delivery_set(&r, DELIVERY_OK, "250 2.0.0 Ok: queued as X");
	CHECK_STR(r.reply, "250 2.0.0 Ok: queued as X");
	delivery_set(&r, DELIVERY_FAIL, "550 bad\r\nline\x1b[2J");
	CHECK_STR(r.reply, "550 bad  line [2J");
}

static void
test_delivery_set_pending(void)
{
	struct delivery_rcpt rc[3];
	struct delivery_job job;

	memset(rc, 0, sizeof(rc));
	memset(&job, 0, sizeof(job));
	job.rcpts = rc;
	job.nrcpts = 3;
	delivery_set(&rc[1], DELIVERY_OK, "ok");
	delivery_set_pending(&job, DELIVERY_DEFER, "4.4.1 connection refused");
	CHECK_INT(rc[0].status, DELIVERY_DEFER);
	CHECK_STR(rc[0].reply, "451 4.4.1 connection refused");
	CHECK_INT(rc[1].status, DELIVERY_OK);
	CHECK_STR(rc[1].reply, "250 2.0.0 ok");
	CHECK_INT(rc[2].status, DELIVERY_DEFER);
}

static void
test_bounce_status(void)
{
	struct bounce_rcpt r = { .address = "a@b" };
	char st[BOUNCE_STATUS_SIZE];

	r.reply = "550 5.1.1 <a@b>: user unknown";
	bounce_status(&r, st);
	CHECK_STR(st, "5.1.1");
	r.reply = "552 5.3.4";
	bounce_status(&r, st);
	CHECK_STR(st, "5.3.4");
	r.reply = "550 user unknown";
	bounce_status(&r, st);
	CHECK_STR(st, "5.0.0");
	r.reply = "451 4.4.1 connection refused";
	bounce_status(&r, st);
	CHECK_STR(st, "4.4.1");
	r.reply = "421 5.1.1x";
	bounce_status(&r, st);
	CHECK_STR(st, "4.0.0");
	r.expired = true;
	bounce_status(&r, st);
	CHECK_STR(st, "4.4.7");
	r.expired = false;
	r.reply = NULL;
	bounce_status(&r, st);
	CHECK_STR(st, "5.0.0");
}

static void
test_bounce_header_len(void)
{
	const char *m = "A: 1\r\nB: 2\r\n\r\nbody\r\n";

	CHECK_INT(bounce_header_len(m, strlen(m)), 12);
	CHECK_INT(bounce_header_len("\r\nbody", 6), 0);
	CHECK_INT(bounce_header_len("A: 1\r\n", 6), 6);
	CHECK_INT(bounce_header_len("A: 1\n\nx", 7), 5);
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
test_bounce_build(void)
{
	const char *hdr = "From: alice@a.example\r\nSubject: hi\r\n";
	struct bounce_rcpt rc[3] = {
		{ "bob@b.example", "550 5.1.1 <bob@b.example>: no such user",
		  "mx.b.example", 1700000100, false, true, false, NULL },
		{ "carol@b.example", "451 4.4.1 connection refused", NULL,
		  1700000200, true, false, false, NULL },
		/* An LMTP server's reply over a unix socket: no Remote-MTA,
		 * but its words are SMTP's. */
		{ "dave@b.example", "550 5.2.2 dave: mailbox full", NULL,
		  1700000200, false, true, false, NULL },
	};
	struct bounce_report r = {
		BOUNCE_FAILED, "0ABCDEFGHIJKLMNO", "alice@a.example",
		1700000000, "mx.test.example", hdr, strlen(hdr), 0, rc, 3,
		NULL, 0, NULL
	};
	struct buf b;

	buf_init(&b);
	bounce_build(&r, "0ZZZZZZZZZZZZZZZ", 1700000300, &b);
	CHECK(strstr(b.data, "To: <alice@a.example>\r\n") != NULL);
	CHECK(strstr(b.data, "From: Mail Delivery System"
	    " <MAILER-DAEMON@mx.test.example>\r\n") != NULL);
	CHECK(strstr(b.data, "Auto-Submitted: auto-replied\r\n") != NULL);
	CHECK(strstr(b.data, "Content-Type: multipart/report;"
	    " report-type=delivery-status;\r\n\tboundary="
	    "\"0ZZZZZZZZZZZZZZZ/mx.test.example\"\r\n") != NULL);
	CHECK(strstr(b.data, "Content-Transfer-Encoding: 7bit\r\n") != NULL);
	CHECK_INT(count(b.data, "\r\n--0ZZZZZZZZZZZZZZZ/mx.test.example\r\n"),
	    3);
	CHECK_INT(count(b.data, "--0ZZZZZZZZZZZZZZZ/mx.test.example--\r\n"),
	    1);
	CHECK(strstr(b.data, "Content-Type: message/delivery-status\r\n\r\n"
	    "Reporting-MTA: dns; mx.test.example\r\n") != NULL);
	CHECK(strstr(b.data, "Arrival-Date: ") != NULL);
	CHECK(strstr(b.data, "\r\n\r\nFinal-Recipient: rfc822; bob@b.example\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.b.example\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@b.example>: no such user\r\n"
	    "Last-Attempt-Date: ") != NULL);
	CHECK(strstr(b.data, "Final-Recipient: rfc822; carol@b.example\r\n"
	    "Action: failed\r\nStatus: 4.4.7\r\n"
	    "Diagnostic-Code: X-mxgate; 451 4.4.1 connection refused\r\n")
	    != NULL);
	CHECK(strstr(b.data, "Final-Recipient: rfc822; dave@b.example\r\n"
	    "Action: failed\r\nStatus: 5.2.2\r\n"
	    "Diagnostic-Code: smtp; 550 5.2.2 dave: mailbox full\r\n")
	    != NULL);
	CHECK(strstr(b.data, "Content-Type: text/rfc822-headers\r\n\r\n"
	    "From: alice@a.example\r\nSubject: hi\r\n\r\n--") != NULL);
	CHECK(strstr(b.data, "Will-Retry-Until") == NULL);
	/* No bare LF anywhere. */
	for (size_t i = 0; i < b.len; i++)
		if (b.data[i] == '\n' && (i == 0 || b.data[i - 1] != '\r'))
			CHECK(!"bare LF");
	buf_free(&b);
}

static void
test_bounce_build_delayed_global(void)
{
	const char *hdr = "Subject: caf\xc3\xa9\n";
	struct bounce_rcpt rc = { "j\xc3\xb6rg@b.example",
	    "451 4.4.1 connection refused", NULL, 1700000100, false, false,
	    false, NULL };
	struct bounce_report r = {
		BOUNCE_DELAYED, "0ABCDEFGHIJKLMNO", "alice@a.example",
		1700000000, "mx.test.example", hdr, strlen(hdr), 1700400000,
		&rc, 1, NULL, 0, NULL
	};
	struct buf b;

	buf_init(&b);
	bounce_build(&r, "0ZZZZZZZZZZZZZZZ", 1700000300, &b);
	CHECK(strstr(b.data, "report-type=global-delivery-status") != NULL);
	CHECK(strstr(b.data, "Content-Type: message/global-delivery-status")
	    != NULL);
	CHECK(strstr(b.data, "Final-Recipient: utf-8; j\xc3\xb6rg@b.example\r\n"
	    "Action: delayed\r\nStatus: 4.4.1\r\n") != NULL);
	CHECK(strstr(b.data, "Will-Retry-Until: ") != NULL);
	CHECK(strstr(b.data, "Subject: Delayed Mail") != NULL);
	CHECK(strstr(b.data, "Content-Type: message/global-headers\r\n\r\n"
	    "Subject: caf\xc3\xa9\r\n") != NULL);
	CHECK(strstr(b.data, "Content-Transfer-Encoding: 8bit\r\n") != NULL);
	buf_free(&b);
}

/* DSN (RFC 3461): a success report, and a failure with RET=FULL. */
static void
test_bounce_build_dsn(void)
{
	const char *hdr = "From: alice@a.example\r\nSubject: hi\r\n";
	const char *whole = "From: alice@a.example\r\nSubject: hi\r\n\r\n"
	    "the body\r\n";
	struct bounce_rcpt rc[2] = {
		{ "bob@b.example", "250 2.0.0 Ok: queued as 7", "mx.b.example",
		  1700000100, false, true, true, "rfc822;Bob+x@b.example" },
		{ "carol@b.example", "250 2.0.0 delivered to /var/mail/c/",
		  NULL, 1700000100, false, false, false, NULL },
	};
	struct bounce_report r = {
		BOUNCE_SUCCESS, "0ABCDEFGHIJKLMNO", "alice@a.example",
		1700000000, "mx.test.example", hdr, strlen(hdr), 0, rc, 2,
		whole, strlen(whole), "env 1"
	};
	char status[BOUNCE_STATUS_SIZE];
	struct buf b;

	buf_init(&b);
	bounce_build(&r, "0ZZZZZZZZZZZZZZZ", 1700000300, &b);
	CHECK(strstr(b.data, "Subject: Successful Mail Delivery Report\r\n")
	    != NULL);
	CHECK(strstr(b.data, "Reporting-MTA: dns; mx.test.example\r\n"
	    "Original-Envelope-Id: env 1\r\n") != NULL);
	CHECK(strstr(b.data, "\r\n\r\nOriginal-Recipient: rfc822;Bob+x@b.example"
	    "\r\nFinal-Recipient: rfc822; bob@b.example\r\nAction: relayed\r\n"
	    "Status: 2.0.0\r\nRemote-MTA: dns; mx.b.example\r\n"
	    "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 7\r\n") != NULL);
	CHECK(strstr(b.data, "\r\n\r\nFinal-Recipient: rfc822; carol@b.example"
	    "\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
	    "Diagnostic-Code: X-mxgate; 250 2.0.0 delivered") != NULL);
	/* A success never returns the body, whatever RET said. */
	CHECK(strstr(b.data, "Content-Type: text/rfc822-headers\r\n") != NULL);
	CHECK(strstr(b.data, "the body") == NULL);
	CHECK(strstr(b.data, "Will-Retry-Until") == NULL);

	/* A failure with the whole message (RET=FULL). */
	rc[0].reply = "550 5.1.1 no such user";
	r.kind = BOUNCE_FAILED;
	r.nrcpts = 1;
	buf_reset(&b);
	bounce_build(&r, "0ZZZZZZZZZZZZZZZ", 1700000300, &b);
	CHECK(strstr(b.data, "Action: failed\r\nStatus: 5.1.1\r\n") != NULL);
	CHECK(strstr(b.data, "Content-Description: Undelivered Message\r\n"
	    "Content-Type: message/rfc822\r\n\r\nFrom: alice@a.example\r\n"
	    "Subject: hi\r\n\r\nthe body\r\n\r\n--0ZZZZZZZZZZZZZZZ/"
	    "mx.test.example--\r\n") != NULL);
	CHECK(strstr(b.data, "text/rfc822-headers") == NULL);
	buf_free(&b);

	/* A 2xx reply without an enhanced code is 2.0.0, not 5.0.0. */
	rc[1].reply = "250 ok";
	bounce_status(&rc[1], status);
	CHECK_STR(status, "2.0.0");
}


/* ---- relay: the pure parts ---- */

static void
test_reply_single_and_multi(void)
{
	struct relay_reply r;

	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "250 2.0.0 Ok: queued as X"), 1);
	CHECK_INT(r.code, 250);
	CHECK_STR(r.text, "250 2.0.0 Ok: queued as X");
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "550-5.1.1 first"), 0);
	CHECK_INT(relay_reply_line(&r, "550-second"), 0);
	CHECK_INT(relay_reply_line(&r, "550 5.1.1 third"), 1);
	CHECK_STR(r.text, "550 5.1.1 first / second / 5.1.1 third");
	CHECK_INT(r.nlines, 3);
	/* A bare code is a whole reply. */
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "354"), 1);
	CHECK_STR(r.text, "354");
}

static void
test_reply_malformed(void)
{
	struct relay_reply r;

	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "hello"), -1);
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "25 short"), -1);
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "250x"), -1);
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "199 below"), -1);
	/* The code may not change inside a reply. */
	relay_reply_init(&r);
	CHECK_INT(relay_reply_line(&r, "250-a"), 0);
	CHECK_INT(relay_reply_line(&r, "550 b"), -1);
}

static void
test_reply_long_is_cut(void)
{
	struct relay_reply r;
	char line[2000];

	memset(line, 'x', sizeof(line));
	memcpy(line, "250-", 4);
	line[sizeof(line) - 1] = '\0';
	relay_reply_init(&r);
	for (int i = 0; i < 5; i++)
		CHECK_INT(relay_reply_line(&r, line), 0);
	CHECK_INT(relay_reply_line(&r, "250 end"), 1);
	CHECK(strlen(r.text) < sizeof(r.text));
	CHECK(strncmp(r.text, "250 xxx", 7) == 0);
}

static void
test_ehlo_parse(void)
{
	const char *lines[] = { "PIPELINING", "SIZE 10240000", "8BITMIME",
	    "smtputf8", "STARTTLS", "AUTH=LOGIN", "AUTH PLAIN CRAM-MD5",
	    "ENHANCEDSTATUSCODES", "PIPELININGX" };
	struct relay_ext x;

	relay_ehlo_parse(&x, lines, ARRAY_LEN(lines));
	CHECK(x.pipelining && x.eightbitmime && x.smtputf8 && x.starttls);
	CHECK(x.size);
	CHECK_INT(x.size_max, 10240000);
	CHECK(x.auth_plain && x.auth_login);
	relay_ehlo_parse(&x, lines + 7, 2);
	CHECK(!x.pipelining && !x.size && !x.auth_plain && !x.starttls);
	/* SIZE without a number: offered, no limit. */
	lines[0] = "SIZE";
	relay_ehlo_parse(&x, lines, 1);
	CHECK(x.size);
	CHECK_INT(x.size_max, 0);
	CHECK(!x.dsn);
	/* DSN (RFC 3461), as a whole word only. */
	lines[0] = "dsn";
	lines[1] = "DSNX";
	relay_ehlo_parse(&x, lines, 1);
	CHECK(x.dsn);
	relay_ehlo_parse(&x, lines + 1, 1);
	CHECK(!x.dsn);
	/* CHUNKING (RFC 3030), as a whole word only. */
	CHECK(!x.chunking);
	lines[0] = "Chunking";
	lines[1] = "CHUNKINGS";
	relay_ehlo_parse(&x, lines, 1);
	CHECK(x.chunking);
	relay_ehlo_parse(&x, lines + 1, 1);
	CHECK(!x.chunking);
}

static char *
stuff_as(const char *in, size_t len, size_t piece, bool raw)
{
	struct relay_stuff st = { .raw = raw };
	struct buf b;
	size_t off;

	buf_init(&b);
	for (off = 0; off < len; off += piece)
		relay_dot_stuff(&st, in + off, len - off < piece ? len - off :
		    piece, &b);
	relay_dot_end(&st, &b);
	buf_append(&b, "", 1);  /* NUL-terminated, "" when empty */
	return b.data;
}

static char *
stuff(const char *in, size_t len, size_t piece)
{
	return stuff_as(in, len, piece, false);
}

static void
test_dot_stuffing(void)
{
	const char *in = "A: b\r\n\r\n.x\r\n..\r\n.\r\nend";
	char *out;

	/* Whatever the piece size, the same bytes. */
	for (size_t piece = 1; piece <= strlen(in); piece++) {
		out = stuff(in, strlen(in), piece);
		CHECK_STR(out, "A: b\r\n\r\n..x\r\n...\r\n..\r\nend\r\n.\r\n");
		free(out);
	}
	/* Bare LF and bare CR become CRLF; a dot after either is stuffed. */
	out = stuff("a\n.b\r.c\r\n", 9, 3);
	CHECK_STR(out, "a\r\n..b\r\n..c\r\n.\r\n");
	free(out);
	out = stuff("", 0, 1);
	CHECK_STR(out, ".\r\n");
	free(out);
	/* A dot in mid-line stays single. */
	out = stuff("a.b\r\n", 5, 5);
	CHECK_STR(out, "a.b\r\n.\r\n");
	free(out);
	/* Ending in CR. */
	out = stuff("x\r", 2, 1);
	CHECK_STR(out, "x\r\n.\r\n");
	free(out);
}

/* For BDAT: line ends made CRLF, dots left alone, the last line ended. */
static void
test_bdat_content(void)
{
	const char *in = "A: b\r\n\r\n.x\r\n.\r\nend";
	char *out;

	for (size_t piece = 1; piece <= strlen(in); piece++) {
		out = stuff_as(in, strlen(in), piece, true);
		CHECK_STR(out, "A: b\r\n\r\n.x\r\n.\r\nend\r\n");
		free(out);
	}
	out = stuff_as("a\n.b\r.c\r\n", 9, 2, true);
	CHECK_STR(out, "a\r\n.b\r\n.c\r\n");
	free(out);
	out = stuff_as("", 0, 1, true);
	CHECK_STR(out, "");
	free(out);
	/* What may go out as stored. */
	CHECK(relay_crlf_clean("a\r\n", 3));
	CHECK(relay_crlf_clean("A: b\r\n\r\n.\r\n..x\r\n", 16));
	CHECK(relay_crlf_clean("\r\n", 2));
	CHECK(!relay_crlf_clean("", 0));
	CHECK(!relay_crlf_clean("a", 1));
	CHECK(!relay_crlf_clean("a\r\nb", 4));        /* last line open */
	CHECK(!relay_crlf_clean("a\nb\r\n", 5));      /* bare LF */
	CHECK(!relay_crlf_clean("a\rb\r\n", 5));      /* bare CR */
	CHECK(!relay_crlf_clean("a\r\r\n", 4));       /* CR before CRLF */
	CHECK(!relay_crlf_clean("\n\r\n", 3));         /* LF first */
	CHECK(!relay_crlf_clean("a\r\n\r", 4));
}

static void
test_parse_host(void)
{
	char host[256];
	int port;

	CHECK_INT(relay_parse_host("smtp.example", 25, host, sizeof(host),
	    &port), 0);
	CHECK_STR(host, "smtp.example");
	CHECK_INT(port, 25);
	CHECK_INT(relay_parse_host("192.0.2.1:2525", 25, host, sizeof(host),
	    &port), 0);
	CHECK_STR(host, "192.0.2.1");
	CHECK_INT(port, 2525);
	CHECK_INT(relay_parse_host("[2001:db8::1]:587", 25, host,
	    sizeof(host), &port), 0);
	CHECK_STR(host, "2001:db8::1");
	CHECK_INT(port, 587);
	CHECK_INT(relay_parse_host("[2001:db8::1]", 26, host, sizeof(host),
	    &port), 0);
	CHECK_INT(port, 26);
	CHECK_INT(relay_parse_host("2001:db8::1", 25, host, sizeof(host),
	    &port), 0);
	CHECK_STR(host, "2001:db8::1");
	CHECK_INT(relay_parse_host("h:0", 25, host, sizeof(host), &port), -1);
	CHECK_INT(relay_parse_host("h:65536", 25, host, sizeof(host), &port),
	    -1);
	CHECK_INT(relay_parse_host("h:", 25, host, sizeof(host), &port), -1);
	CHECK_INT(relay_parse_host("[::1]x", 25, host, sizeof(host), &port),
	    -1);
	CHECK_INT(relay_parse_host("", 25, host, sizeof(host), &port), -1);
	CHECK_INT(relay_parse_host("[]:25", 25, host, sizeof(host), &port),
	    -1);
}

/* A DNS answer: header, the question, then MX records. */
static size_t
dns_name(unsigned char *p, const char *name)
{
	size_t n = 0;
	const char *dot;

	while (*name != '\0') {
		dot = strchr(name, '.');
		size_t len = dot != NULL ? (size_t)(dot - name) : strlen(name);

		p[n++] = (unsigned char)len;
		memcpy(p + n, name, len);
		n += len;
		name += len + (dot != NULL);
	}
	p[n++] = 0;
	return n;
}

static size_t
dns_mx_answer(unsigned char *buf, const int *prefs, const char **hosts,
    size_t count)
{
	size_t n = 12, i, rd;

	memset(buf, 0, 12);
	buf[2] = 0x81;
	buf[3] = 0x80;
	buf[5] = 1;                     /* one question */
	buf[7] = (unsigned char)count;  /* answers */
	n += dns_name(buf + n, "example.org");
	buf[n++] = 0; buf[n++] = 15;    /* MX */
	buf[n++] = 0; buf[n++] = 1;     /* IN */
	for (i = 0; i < count; i++) {
		buf[n++] = 0xc0; buf[n++] = 12;     /* the question's name */
		buf[n++] = 0; buf[n++] = 15;
		buf[n++] = 0; buf[n++] = 1;
		buf[n++] = 0; buf[n++] = 0; buf[n++] = 1; buf[n++] = 0;
		rd = 2 + (hosts[i][0] != '\0' ? strlen(hosts[i]) + 2 : 1);
		buf[n++] = (unsigned char)(rd >> 8);
		buf[n++] = (unsigned char)rd;
		buf[n++] = (unsigned char)(prefs[i] >> 8);
		buf[n++] = (unsigned char)prefs[i];
		n += dns_name(buf + n, hosts[i]);
	}
	return n;
}

static void
test_parse_mx(void)
{
	const int prefs[] = { 20, 10, 30 };
	const char *hosts[] = { "mx2.example.org", "mx1.example.org",
	    "mx3.example.org" };
	unsigned char buf[512];
	struct relay_mx mx[8];
	size_t len = dns_mx_answer(buf, prefs, hosts, 3);

	CHECK_INT(relay_parse_mx(buf, (int)len, mx, 8), 3);
	CHECK_STR(mx[0].host, "mx1.example.org");
	CHECK_INT(mx[0].pref, 10);
	CHECK_STR(mx[1].host, "mx2.example.org");
	CHECK_STR(mx[2].host, "mx3.example.org");
	/* At most max records. */
	CHECK_INT(relay_parse_mx(buf, (int)len, mx, 2), 2);
	/* Truncated answers are refused, never read past their end. */
	for (size_t cut = 0; cut < len; cut++)
		CHECK(relay_parse_mx(buf, (int)cut, mx, 8) <= 2);
	CHECK_INT(relay_parse_mx(buf, 5, mx, 8), -1);
}

/* A TLSA answer: records given as usage, selector, mtype, data length
 * (the data is that many 0xab), and one RRSIG that is not a record. */
static size_t
dns_tlsa_answer(unsigned char *buf, const int (*recs)[4], size_t count)
{
	size_t n = 12, i, rd;

	memset(buf, 0, 12);
	buf[2] = 0x81;
	buf[3] = 0xa0;                  /* RA, AD */
	buf[5] = 1;
	buf[7] = (unsigned char)(count + 1);
	n += dns_name(buf + n, "_25._tcp.mx.example.org");
	buf[n++] = 0; buf[n++] = 52;    /* TLSA */
	buf[n++] = 0; buf[n++] = 1;
	for (i = 0; i <= count; i++) {
		rd = i < count ? 3 + (size_t)recs[i][3] : 4;
		buf[n++] = 0xc0; buf[n++] = 12;
		buf[n++] = 0; buf[n++] = i < count ? 52 : 46;   /* RRSIG */
		buf[n++] = 0; buf[n++] = 1;
		buf[n++] = 0; buf[n++] = 0; buf[n++] = 1; buf[n++] = 0;
		buf[n++] = (unsigned char)(rd >> 8);
		buf[n++] = (unsigned char)rd;
		if (i == count) {
			memset(buf + n, 0, 4);
			n += 4;
			break;
		}
		buf[n++] = (unsigned char)recs[i][0];
		buf[n++] = (unsigned char)recs[i][1];
		buf[n++] = (unsigned char)recs[i][2];
		memset(buf + n, 0xab, (size_t)recs[i][3]);
		n += (size_t)recs[i][3];
	}
	return n;
}

/* RFC 7672 3.1.3: DANE-TA(2) and DANE-EE(3) are usable, PKIX-TA(0)
 * and PKIX-EE(1) are not; digests must have their length. */
static void
test_dane_parse_tlsa(void)
{
	const int recs[][4] = {
		{ 3, 1, 1, 32 }, { 2, 0, 2, 64 }, { 1, 1, 1, 32 },
		{ 0, 0, 1, 32 }, { 3, 1, 1, 20 }, { 3, 2, 1, 32 },
		{ 3, 0, 0, 300 }, { 3, 1, 9, 32 },
	};
	unsigned char buf[2048];
	struct dane_records d;
	size_t len = dns_tlsa_answer(buf, recs, ARRAY_LEN(recs));

	CHECK_INT(dane_parse_tlsa(buf, (int)len, &d), 0);
	CHECK_INT(d.n, 3);
	CHECK_INT(d.nunusable, 5);
	CHECK_INT(d.tlsa[0].usage, 3);
	CHECK_INT(d.tlsa[0].len, 32);
	CHECK_INT(d.tlsa[0].data[31], 0xab);
	CHECK_INT(d.tlsa[1].usage, 2);
	CHECK_INT(d.tlsa[1].mtype, 2);
	CHECK_INT(d.tlsa[2].len, 300);
	for (size_t cut = 0; cut < len; cut++) {
		int r = dane_parse_tlsa(buf, (int)cut, &d);

		CHECK(r == -1 || d.n + d.nunusable < ARRAY_LEN(recs));
	}
	/* Without dane_resolver_init() and delivery.dnssec, AD means
	 * nothing. */
	CHECK(!dane_answer_secure(buf, (int)len));
}

/* RFC 8461 3.1-3.2 and 4.1: the TXT record, the policy file, the MX
 * patterns, and the line the queue keeps. */
static void
test_mta_sts_parts(void)
{
	static const char sample[] = "version: STSv1\r\nmode: enforce\r\n"
	    "mx: mx1.example.com\r\nmx: *.Example.NET\r\n"
	    "max_age: 604800\r\nfuture: ignored\r\n";
	struct sts_policy p, q;
	char id[33], why[200];
	struct buf b;

	CHECK_INT(sts_parse_txt("v=STSv1; id=20160831085700Z;", id,
	    sizeof(id)), 0);
	CHECK_STR(id, "20160831085700Z");
	CHECK_INT(sts_parse_txt("v=STSv1;id=abc", id, sizeof(id)), 0);
	CHECK_STR(id, "abc");
	CHECK_INT(sts_parse_txt("v=STSv1; ", id, sizeof(id)), -1);
	CHECK_INT(sts_parse_txt("v=STSv2; id=1;", id, sizeof(id)), -1);
	CHECK_INT(sts_parse_txt("v=STSv1; id=a-b;", id, sizeof(id)), -1);
	CHECK_INT(sts_parse_txt("v=STSv1; id=123456789012345678901234567890123;",
	    id, sizeof(id)), -1);

	memset(&p, 0, sizeof(p));
	CHECK_INT(sts_parse_policy(sample, strlen(sample), &p, why,
	    sizeof(why)), 0);
	CHECK_INT(p.mode, STS_MODE_ENFORCE);
	CHECK_INT(p.max_age, 604800);
	CHECK_INT(p.nmx, 2);
	CHECK_STR(p.mx[1], "*.example.net");
	CHECK(sts_mx_match(&p, "mx1.example.com"));
	CHECK(sts_mx_match(&p, "MX1.example.com."));
	CHECK(sts_mx_match(&p, "a.example.net"));
	CHECK(!sts_mx_match(&p, "a.b.example.net"));
	CHECK(!sts_mx_match(&p, "example.net"));
	CHECK(!sts_mx_match(&p, "mx2.example.com"));
	CHECK_INT(sts_parse_policy("version: STSv1\nmode: enforce\n"
	    "max_age: 60\n", 40, &p, why, sizeof(why)), -1);
	CHECK_STR(why, "policy without mx");
	CHECK_INT(sts_parse_policy("version: STSv1\nmode: strict\n", 28, &p,
	    why, sizeof(why)), -1);
	CHECK_INT(sts_parse_policy("version: STSv1\nmode: none\n"
	    "max_age: 99999999999\n", 48, &p, why, sizeof(why)), -1);
	CHECK_INT(sts_parse_policy("mode: none\nmax_age: 1\n", 22, &p, why,
	    sizeof(why)), -1);

	CHECK_INT(sts_parse_policy(sample, strlen(sample), &p, why,
	    sizeof(why)), 0);
	snprintf(p.id, sizeof(p.id), "x1");
	p.fetched_at = 1700000000;
	buf_init(&b);
	sts_policy_format(&p, &b);
	CHECK_STR(b.data, "x1 enforce 604800 1700000000 mx1.example.com"
	    " *.example.net");
	CHECK_INT(sts_policy_scan(b.data, &q), 0);
	CHECK_STR(q.id, "x1");
	CHECK_INT(q.mode, STS_MODE_ENFORCE);
	CHECK_INT(q.fetched_at, 1700000000);
	CHECK_INT(q.nmx, 2);
	CHECK_STR(q.mx[1], "*.example.net");
	CHECK_INT(sts_policy_scan("x1 sometimes 1 2 mx", &q), -1);
	CHECK_INT(sts_policy_scan(NULL, &q), -1);
	buf_reset(&b);
	sts_policy_lines(&p, &b);
	CHECK_STR(b.data, "version: STSv1\nmode: enforce\nmx: mx1.example.com"
	    "\nmx: *.example.net\nmax_age: 604800");
	buf_free(&b);
}

/* Equal preferences are tried in a random order, drawn anew each time:
 * with two hosts, 64 parses giving one order only would be a 1 in 2^63
 * event. */
static void
test_parse_mx_spreads_equal(void)
{
	const int prefs[] = { 10, 10, 20 };
	const char *hosts[] = { "a.example.org", "b.example.org",
	    "c.example.org" };
	unsigned char buf[512];
	struct relay_mx mx[4];
	size_t len = dns_mx_answer(buf, prefs, hosts, 3);
	int a_first = 0;

	for (int i = 0; i < 64; i++) {
		CHECK_INT(relay_parse_mx(buf, (int)len, mx, 4), 3);
		if (strcmp(mx[0].host, "a.example.org") == 0)
			a_first++;
		else
			CHECK_STR(mx[0].host, "b.example.org");
		CHECK_STR(mx[2].host, "c.example.org");
	}
	CHECK(a_first > 0 && a_first < 64);
}

/* RFC 6152 3: 8-bit parts made 7-bit MIME, the rest left as it was. */
static void
test_mime_to_7bit(void)
{
	const char *multi =
	    "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "From: <a@b.example>\r\n"
	    "Subject: parts\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
	    "\r\n"
	    "--XX\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"
	    "\r\n"
	    "caf\xc3\xa9 au lait\r\n"
	    "--XX\r\n"
	    "Content-Type: text/plain\r\n"
	    "\r\n"
	    "plain ascii stays\r\n"
	    "--XX\r\n"
	    "Content-Type: application/octet-stream\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"
	    "\r\n"
	    "\x80\x81\x82\x83\xfe\xff\x80\x81\x82\x83\xfe\xff\r\n"
	    "--XX--\r\n";
	struct buf out;

	buf_init(&out);
	CHECK_INT(mime_to_7bit(multi, strlen(multi), &out), 0);
	CHECK(!relay_has_8bit(out.data, out.len));
	CHECK(strncmp(out.data, "Received: from x by y;", 22) == 0);
	CHECK(strstr(out.data, "Content-Transfer-Encoding: quoted-printable"
	    "\r\n\r\ncaf=C3=A9 au lait") != NULL);
	CHECK(strstr(out.data, "Content-Transfer-Encoding: base64") != NULL);
	CHECK(strstr(out.data, "\r\n\r\nplain ascii stays\r\n") != NULL);
	for (size_t i = 0; i < out.len; i++)
		if (out.data[i] == '\n' && (i == 0 || out.data[i - 1] != '\r'))
			CHECK(!"bare LF");
	/* 8-bit header fields cannot be made 7-bit. */
	CHECK_INT(mime_to_7bit("Subject: caf\xc3\xa9\r\n\r\nx\xc3\xa9\r\n",
	    21, &out), -1);
	CHECK_INT((int)out.len, 0);
	buf_free(&out);
}

static void
test_parse_null_mx(void)
{
	const int prefs[] = { 0 };
	const char *hosts[] = { "" };
	unsigned char buf[512];
	struct relay_mx mx[2];
	size_t len = dns_mx_answer(buf, prefs, hosts, 1);

	CHECK_INT(relay_parse_mx(buf, (int)len, mx, 2), 1);
	CHECK_STR(mx[0].host, "");
}

static void
test_has_8bit(void)
{
	CHECK(!relay_has_8bit("plain ascii\r\n", 13));
	CHECK(relay_has_8bit("caf\xc3\xa9", 5));
	CHECK(!relay_has_8bit("", 0));
}

int
main(void)
{
	RUN(test_retry_delay);
	RUN(test_retry_plan_next);
	RUN(test_retry_plan_expiry);
	RUN(test_retry_plan_warning_once);
	RUN(test_retry_plan_no_warning);
	RUN(test_keys_relay);
	RUN(test_keys_local);
	RUN(test_delivery_set);
	RUN(test_delivery_set_pending);
	RUN(test_bounce_status);
	RUN(test_bounce_header_len);
	RUN(test_bounce_build);
	RUN(test_bounce_build_delayed_global);
	RUN(test_bounce_build_dsn);
	RUN(test_reply_single_and_multi);
	RUN(test_reply_malformed);
	RUN(test_reply_long_is_cut);
	RUN(test_ehlo_parse);
	RUN(test_dot_stuffing);
	RUN(test_bdat_content);
	RUN(test_parse_host);
	RUN(test_parse_mx);
	RUN(test_dane_parse_tlsa);
	RUN(test_mta_sts_parts);
	RUN(test_parse_mx_spreads_equal);
	RUN(test_parse_null_mx);
	RUN(test_mime_to_7bit);
	RUN(test_has_8bit);
	return unit_done();
}
