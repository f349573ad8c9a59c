/*
 * test_envelope — envelope serialization round trips, and the parser's
 * defences: the serialized envelope comes from the less-trusted smtp
 * worker, so every malformed record must fail cleanly (and leak nothing:
 * run under ASan or valgrind).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/dsn.h"
#include "common/envelope.h"
#include "common/util.h"
#include "unit.h"

#define TEST_ID "0123456789ABCDEF"

/* Hand-built records, to produce what envelope_serialize() never would. */
static void
raw_u32(struct buf *b, uint32_t v)
{
	unsigned char x[4] = { v >> 24, v >> 16, v >> 8, v };

	buf_append(b, x, 4);
}

static void
raw_str(struct buf *b, const char *s)
{
	raw_u32(b, (uint32_t)strlen(s));
	buf_appends(b, s);
}

/* Header of a record up to (not including) the recipient count. */
static void
raw_head(struct buf *b, const char *id, uint32_t flags)
{
	buf_append(b, "MXEV", 4);
	raw_u32(b, 2);
	raw_str(b, id);
	raw_u32(b, 0);
	raw_u32(b, 1700000000);
	raw_u32(b, flags);
	raw_str(b, "s@example.org");
	raw_str(b, "192.0.2.1");
	raw_str(b, "client.example.org");
	raw_str(b, "ESMTP");
	raw_u32(b, UINT32_MAX);          /* no auth user */
	raw_u32(b, UINT32_MAX);          /* no ENVID */
}

static void
raw_rcpt(struct buf *b, const char *addr)
{
	raw_str(b, addr);
	raw_str(b, "r");
	raw_str(b, "queue");
	raw_str(b, "{}");
	raw_u32(b, 0);                   /* no NOTIFY */
	raw_u32(b, UINT32_MAX);          /* no ORCPT */
}

static void
full_envelope(struct envelope *e)
{
	envelope_init(e);
	memcpy(e->queue_id, TEST_ID, sizeof(TEST_ID));
	e->received_at = 1700000000;
	e->sender = xstrdup("alice@example.org");
	e->client_ip = xstrdup("2001:db8::1");
	e->helo = xstrdup("mail.example.org");
	e->protocol = xstrdup("ESMTPS");
	e->auth_user = xstrdup("alice");
	e->body_8bitmime = true;
	e->smtputf8 = false;
	envelope_add_rcpt(e, "bob@example.com", "local", "queue",
	    "{\"path\":\"/var/mail/bob\"}");
	envelope_add_rcpt(e, "carol@example.com", NULL, "queue", NULL);
	envelope_add_rcpt(e, "d\xc3\xa9@example.com", "utf8", "relay", "{}");
	e->dsn_ret = DSN_RET_HDRS;
	e->dsn_envid = xstrdup("QQ 314=x");
	envelope_rcpt_dsn(e, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY,
	    "rfc822;d+x@example.com");
}

static int
parses(const void *data, size_t len)
{
	struct envelope e;
	int rc = envelope_parse(data, len, &e);

	/* A failed parse leaves an empty envelope. */
	if (rc == -1 && (e.sender != NULL || e.rcpts != NULL || e.nrcpts != 0))
		return -2;
	envelope_free(&e);
	return rc;
}

static void
test_round_trip(void)
{
	struct envelope e, p;
	struct buf b;

	full_envelope(&e);
	buf_init(&b);
	envelope_serialize(&e, &b);
	CHECK_INT(envelope_parse(b.data, b.len, &p), 0);
	CHECK_STR(p.queue_id, TEST_ID);
	CHECK_INT(p.received_at, 1700000000);
	CHECK_STR(p.sender, "alice@example.org");
	CHECK_STR(p.client_ip, "2001:db8::1");
	CHECK_STR(p.helo, "mail.example.org");
	CHECK_STR(p.protocol, "ESMTPS");
	CHECK_STR(p.auth_user, "alice");
	CHECK(p.body_8bitmime);
	CHECK(!p.smtputf8);
	CHECK_INT(p.nrcpts, 3);
	if (p.nrcpts == 3) {
		CHECK_STR(p.rcpts[0].address, "bob@example.com");
		CHECK_STR(p.rcpts[0].route, "local");
		CHECK_STR(p.rcpts[0].action, "queue");
		CHECK_STR(p.rcpts[0].params, "{\"path\":\"/var/mail/bob\"}");
		CHECK(p.rcpts[1].route == NULL);
		CHECK(p.rcpts[1].params == NULL);
		CHECK_STR(p.rcpts[2].address, "d\xc3\xa9@example.com");
		CHECK_STR(p.rcpts[2].action, "relay");
		CHECK_INT(p.rcpts[0].dsn_notify, 0);
		CHECK(p.rcpts[0].dsn_orcpt == NULL);
		CHECK_INT(p.rcpts[2].dsn_notify,
		    DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY);
		CHECK_STR(p.rcpts[2].dsn_orcpt, "rfc822;d+x@example.com");
	}
	CHECK_INT(p.dsn_ret, DSN_RET_HDRS);
	CHECK_STR(p.dsn_envid, "QQ 314=x");
	envelope_free(&p);
	envelope_free(&e);
	buf_free(&b);
}

static void
test_round_trip_minimal(void)
{
	struct envelope e, p;
	struct buf b;

	envelope_init(&e);
	memcpy(e.queue_id, TEST_ID, sizeof(TEST_ID));
	e.received_at = -1;              /* any int64 survives */
	e.sender = xstrdup("");          /* null sender */
	e.smtputf8 = true;
	envelope_add_rcpt(&e, "postmaster", NULL, "queue", NULL);
	buf_init(&b);
	envelope_serialize(&e, &b);
	CHECK_INT(envelope_parse(b.data, b.len, &p), 0);
	CHECK_STR(p.sender, "");
	CHECK_INT(p.received_at, -1);
	CHECK(p.client_ip == NULL && p.helo == NULL && p.protocol == NULL);
	CHECK(p.auth_user == NULL);
	CHECK(!p.body_8bitmime && p.smtputf8);
	CHECK_INT(p.nrcpts, 1);
	envelope_free(&p);
	envelope_free(&e);
	buf_free(&b);
}

/* Many recipients, and growing an envelope that came out of the parser. */
static void
test_many_rcpts(void)
{
	struct envelope e, p;
	struct buf b;
	char addr[64];
	size_t i;

	envelope_init(&e);
	memcpy(e.queue_id, TEST_ID, sizeof(TEST_ID));
	e.sender = xstrdup("s@example.org");
	for (i = 0; i < 1000; i++) {
		snprintf(addr, sizeof(addr), "user%zu@example.com", i);
		envelope_add_rcpt(&e, addr, "r", "queue", "{}");
	}
	buf_init(&b);
	envelope_serialize(&e, &b);
	CHECK_INT(envelope_parse(b.data, b.len, &p), 0);
	CHECK_INT(p.nrcpts, 1000);
	CHECK_STR(p.rcpts[999].address, "user999@example.com");
	for (i = 0; i < 100; i++)
		envelope_add_rcpt(&p, "more@example.com", NULL, "queue", NULL);
	CHECK_INT(p.nrcpts, 1100);
	CHECK_STR(p.rcpts[1099].address, "more@example.com");
	envelope_free(&p);

	/* A parsed envelope with 3 recipients must also grow safely. */
	buf_reset(&b);
	envelope_free(&e);
	full_envelope(&e);
	envelope_serialize(&e, &b);
	CHECK_INT(envelope_parse(b.data, b.len, &p), 0);
	for (i = 0; i < 10; i++)
		envelope_add_rcpt(&p, "x@example.com", NULL, "queue", NULL);
	CHECK_INT(p.nrcpts, 13);
	envelope_free(&p);
	envelope_free(&p);               /* freeing twice is harmless */
	envelope_free(&e);
	buf_free(&b);
}

static void
test_every_truncation(void)
{
	struct envelope e;
	struct buf b;
	size_t n, bad = 0;

	full_envelope(&e);
	buf_init(&b);
	envelope_serialize(&e, &b);
	for (n = 0; n < b.len; n++) {
		if (parses(b.data, n) != -1)
			bad++;
	}
	CHECK_INT(bad, 0);
	CHECK_INT(parses(b.data, b.len), 0);

	/* One byte too many is as wrong as one too few. */
	buf_append(&b, "", 1);
	CHECK_INT(parses(b.data, b.len), -1);
	CHECK_INT(parses(NULL, 0), -1);
	envelope_free(&e);
	buf_free(&b);
}

static void
test_bad_header(void)
{
	struct envelope e;
	struct buf b;

	full_envelope(&e);
	buf_init(&b);
	envelope_serialize(&e, &b);
	b.data[0] = 'X';                         /* magic */
	CHECK_INT(parses(b.data, b.len), -1);
	b.data[0] = 'M';
	b.data[7] = 1;                           /* version 1 */
	CHECK_INT(parses(b.data, b.len), -1);
	b.data[7] = 3;
	CHECK_INT(parses(b.data, b.len), -1);
	b.data[7] = 2;
	CHECK_INT(parses(b.data, b.len), 0);
	envelope_free(&e);
	buf_free(&b);

	/* Unknown flag bits; RET=FULL and RET=HDRS at once. */
	buf_init(&b);
	raw_head(&b, TEST_ID, 0xc);
	raw_u32(&b, 1);
	raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0x10);
	raw_u32(&b, 1);
	raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0x3);
	raw_u32(&b, 1);
	raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), 0);
	buf_free(&b);
}

/* common/dsn.c: xtext both ways, NOTIFY's sets. */
static void
test_dsn_values(void)
{
	char out[32], notify[DSN_NOTIFY_TEXT_MAX];
	struct buf b;

	CHECK_INT(dsn_xtext_decode("a+2Bb+3D+20c", 12, out, sizeof(out)), 6);
	CHECK_STR(out, "a+b= c");
	CHECK_INT(dsn_xtext_decode("a+2b", 4, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("a+2", 3, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("a=b", 3, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("a b", 3, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("+0A", 3, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("+7F", 3, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("\xc3\xa9", 2, out, sizeof(out)), -1);
	CHECK_INT(dsn_xtext_decode("abcd", 4, out, 4), -1);
	CHECK_INT(dsn_xtext_decode("abc", 3, out, 4), 3);
	buf_init(&b);
	dsn_xtext_put(&b, "a+b= c\x01~");
	CHECK_STR(b.data, "a+2Bb+3D+20c+01~");
	buf_free(&b);

	CHECK_INT(dsn_notify_parse("NEVER", 5), DSN_NOTIFY_NEVER);
	CHECK_INT(dsn_notify_parse("delay,Success", 13),
	    DSN_NOTIFY_DELAY | DSN_NOTIFY_SUCCESS);
	CHECK_INT(dsn_notify_parse("NEVER,DELAY", 11), -1);
	CHECK_INT(dsn_notify_parse("DELAY,DELAY", 11), -1);
	CHECK_INT(dsn_notify_parse("DELAY,", 6), -1);
	CHECK_INT(dsn_notify_parse("", 0), -1);
	CHECK_STR(dsn_notify_format(DSN_NOTIFY_DELAY | DSN_NOTIFY_SUCCESS |
	    DSN_NOTIFY_FAILURE, notify), "SUCCESS,FAILURE,DELAY");
	CHECK_STR(dsn_notify_format(0, notify), "");
	CHECK(dsn_wants_failure(0) && dsn_wants_delay(0) &&
	    !dsn_wants_success(0));
	CHECK(!dsn_wants_failure(DSN_NOTIFY_NEVER) &&
	    !dsn_wants_delay(DSN_NOTIFY_NEVER));
	CHECK(!dsn_wants_delay(DSN_NOTIFY_FAILURE) &&
	    dsn_wants_success(DSN_NOTIFY_SUCCESS));
	CHECK_INT(dsn_ret_parse("hdrs"), DSN_RET_HDRS);
	CHECK_INT(dsn_ret_parse("ALL"), -1);
}

/* NOTIFY bits the engine never gives, an ORCPT without its type. */
static void
test_bad_dsn(void)
{
	static const uint32_t bad_notify[] = { 0x10, 0x3, 0x9, 0xffffffffu };
	struct buf b;
	size_t i;

	buf_init(&b);
	for (i = 0; i < ARRAY_LEN(bad_notify); i++) {
		buf_reset(&b);
		raw_head(&b, TEST_ID, 0);
		raw_u32(&b, 1);
		raw_str(&b, "a@b");
		raw_str(&b, "r");
		raw_str(&b, "queue");
		raw_str(&b, "{}");
		raw_u32(&b, bad_notify[i]);
		raw_u32(&b, UINT32_MAX);
		CHECK_INT(parses(b.data, b.len), -1);
	}
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0x4);
	raw_u32(&b, 1);
	raw_str(&b, "a@b");
	raw_str(&b, "r");
	raw_str(&b, "queue");
	raw_str(&b, "{}");
	raw_u32(&b, DSN_NOTIFY_NEVER);
	raw_str(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);
	b.len -= 4 + 3;
	raw_str(&b, "rfc822;a@b");
	CHECK_INT(parses(b.data, b.len), 0);
	buf_free(&b);
}

static void
test_bad_queue_id(void)
{
	static const char *const ids[] = {
		"", "0123456789ABCDE", "0123456789ABCDEF0", "0123456789abcdef",
		"0123456789ABCDE/", "0123456789ABCDE\xff", "../../etc/passwd",
	};
	struct buf b;
	size_t i;

	buf_init(&b);
	for (i = 0; i < ARRAY_LEN(ids); i++) {
		buf_reset(&b);
		raw_head(&b, ids[i], 0);
		raw_u32(&b, 1);
		raw_rcpt(&b, "a@b");
		CHECK_INT(parses(b.data, b.len), -1);
	}

	/* An id with an embedded NUL is refused too. */
	buf_reset(&b);
	buf_append(&b, "MXEV", 4);
	raw_u32(&b, 2);
	raw_u32(&b, QUEUE_ID_LEN);
	buf_append(&b, "0123456\0" "89ABCDEF", QUEUE_ID_LEN);
	CHECK_INT(parses(b.data, b.len), -1);
	buf_free(&b);
}

static void
test_bad_strings(void)
{
	struct buf b;

	buf_init(&b);

	/* A length larger than the rest of the record. */
	buf_append(&b, "MXEV", 4);
	raw_u32(&b, 2);
	raw_str(&b, TEST_ID);
	raw_u32(&b, 0);
	raw_u32(&b, 0);
	raw_u32(&b, 0);
	raw_u32(&b, 1000);
	buf_appends(&b, "short");
	CHECK_INT(parses(b.data, b.len), -1);

	/* Lengths near the top of the range (pointer overflow bait). */
	b.len -= 5 + 4;
	raw_u32(&b, UINT32_MAX - 1);
	buf_appends(&b, "short");
	CHECK_INT(parses(b.data, b.len), -1);
	b.len -= 5 + 4;
	raw_u32(&b, 0x80000000u);
	CHECK_INT(parses(b.data, b.len), -1);

	/* An absent sender (the null sender is "", never absent). */
	b.len -= 4;
	raw_u32(&b, UINT32_MAX);
	raw_str(&b, "192.0.2.1");
	raw_str(&b, "h");
	raw_str(&b, "SMTP");
	raw_u32(&b, UINT32_MAX);
	raw_u32(&b, 1);
	raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);

	/* An embedded NUL in the sender. */
	buf_reset(&b);
	buf_append(&b, "MXEV", 4);
	raw_u32(&b, 2);
	raw_str(&b, TEST_ID);
	raw_u32(&b, 0);
	raw_u32(&b, 0);
	raw_u32(&b, 0);
	raw_u32(&b, 5);
	buf_append(&b, "a\0b@c", 5);
	raw_str(&b, "192.0.2.1");
	raw_str(&b, "h");
	raw_str(&b, "SMTP");
	raw_u32(&b, UINT32_MAX);
	raw_u32(&b, 1);
	raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);

	/* Empty and absent recipient address and action. */
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 1);
	raw_str(&b, "");
	raw_str(&b, "r");
	raw_str(&b, "queue");
	raw_str(&b, "{}");
	CHECK_INT(parses(b.data, b.len), -1);
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 1);
	raw_str(&b, "a@b");
	raw_str(&b, "r");
	raw_u32(&b, UINT32_MAX);
	raw_str(&b, "{}");
	CHECK_INT(parses(b.data, b.len), -1);

	/* Failure after some recipients were read: nothing may leak. */
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 3);
	raw_rcpt(&b, "a@b");
	raw_rcpt(&b, "c@d");
	raw_str(&b, "e@f");
	raw_str(&b, "r");
	raw_u32(&b, 100);
	CHECK_INT(parses(b.data, b.len), -1);
	buf_free(&b);
}

static void
test_bad_counts(void)
{
	struct buf b;
	uint32_t i;

	buf_init(&b);

	/* No recipient: nothing a worker may submit. */
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 0);
	CHECK_INT(parses(b.data, b.len), -1);

	/* Huge counts with nothing behind them: refused before allocating. */
	b.len -= 4;
	raw_u32(&b, UINT32_MAX);
	CHECK_INT(parses(b.data, b.len), -1);
	b.len -= 4;
	raw_u32(&b, 100001);
	CHECK_INT(parses(b.data, b.len), -1);

	/* More than the limit, with the data actually present. */
	b.len -= 4;
	raw_u32(&b, 100001);
	for (i = 0; i < 100001; i++)
		raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), -1);

	/* Exactly the limit is fine. */
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 100000);
	for (i = 0; i < 100000; i++)
		raw_rcpt(&b, "a@b");
	CHECK_INT(parses(b.data, b.len), 0);

	/* A count larger than the recipients that follow. */
	buf_reset(&b);
	raw_head(&b, TEST_ID, 0);
	raw_u32(&b, 3);
	raw_rcpt(&b, "a@b");
	raw_rcpt(&b, "c@d");
	CHECK_INT(parses(b.data, b.len), -1);
	buf_free(&b);
}

/* Deterministic xorshift: the same mutations on every run. */
static uint32_t
rnd(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

static void
test_random_mutations(void)
{
	static const uint32_t interesting[] = {
		0, 1, 0x7f, 0x80, 0xff, 0x7fffffff, 0x80000000u, 0xfffffffeu,
		0xffffffffu, 100000, 100001,
	};
	struct envelope e;
	struct buf orig, b;
	uint32_t seed = 0x6d786761;      /* "mxga" */
	int i, j, ok = 0, crashed = 0;

	full_envelope(&e);
	buf_init(&orig);
	envelope_serialize(&e, &orig);
	envelope_free(&e);
	buf_init(&b);
	for (i = 0; i < 50000; i++) {
		size_t len = orig.len, pos;
		int nmut = 1 + rnd(&seed) % 4, rc;

		buf_reset(&b);
		buf_append(&b, orig.data, orig.len);
		for (j = 0; j < nmut; j++) {
			pos = rnd(&seed) % len;
			switch (rnd(&seed) % 4) {
			case 0:         /* flip a bit */
				b.data[pos] ^= 1 << (rnd(&seed) % 8);
				break;
			case 1:         /* random byte */
				b.data[pos] = (char)rnd(&seed);
				break;
			case 2: {       /* an interesting u32 */
				uint32_t v = interesting[rnd(&seed) %
				    ARRAY_LEN(interesting)];
				unsigned char x[4] = { v >> 24, v >> 16, v >> 8, v };
				size_t k;

				for (k = 0; k < 4 && pos + k < len; k++)
					b.data[pos + k] = (char)x[k];
				break;
			}
			default:        /* truncate */
				len = pos + 1;
				break;
			}
		}
		rc = parses(b.data, len);
		if (rc == 0)
			ok++;
		else if (rc != -1)
			crashed++;
	}
	/* Some mutations only touch string contents and stay valid. */
	CHECK(ok > 0);
	CHECK_INT(crashed, 0);
	buf_free(&b);
	buf_free(&orig);
}

int
main(void)
{
	RUN(test_round_trip);
	RUN(test_round_trip_minimal);
	RUN(test_many_rcpts);
	RUN(test_every_truncation);
	RUN(test_bad_header);
	RUN(test_bad_queue_id);
	RUN(test_bad_dsn);
	RUN(test_dsn_values);
	RUN(test_bad_strings);
	RUN(test_bad_counts);
	RUN(test_random_mutations);
	return unit_done();
}
