/*
 * Unit tests of the milter protocol codec (milter.h): packets, option
 * negotiation, macros, replies, and the editing of a message by a
 * milter's header and body changes.
 */
#include <stdlib.h>
#include <string.h>

#include "smtp/milter.h"
#include "common/util.h"
#include "unit.h"

static void
test_packets(void)
{
	struct buf b;
	struct milter_packet p;
	const char *s[2] = { "Subject", "hi" };

	buf_init(&b);
	milter_put(&b, SMFIC_DATA, NULL, 0);
	CHECK_INT((int)b.len, 5);
	CHECK(memcmp(b.data, "\0\0\0\1T", 5) == 0);
	milter_put_strings(&b, SMFIC_HEADER, s, 2);
	/* 1 + "Subject\0" + "hi\0" = 12 */
	CHECK(memcmp(b.data + 5, "\0\0\0\x0cLSubject\0hi\0", 16) == 0);
	CHECK_INT((int)milter_get(b.data, 4, &p), 0);
	CHECK_INT((int)milter_get(b.data, b.len, &p), 5);
	CHECK(p.cmd == SMFIC_DATA && p.len == 0);
	CHECK_INT((int)milter_get(b.data + 5, b.len - 6, &p), 0);
	CHECK_INT((int)milter_get(b.data + 5, b.len - 5, &p), 16);
	CHECK(p.cmd == SMFIC_HEADER && p.len == 11);
	/* A zero length and a huge one are never valid. */
	CHECK_INT((int)milter_get("\0\0\0\0c", 5, &p), -1);
	CHECK_INT((int)milter_get("\x7f\0\0\0c", 5, &p), -1);
	buf_free(&b);
}

static void
put_u32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

static void
test_optneg(void)
{
	struct buf b;
	struct milter_options o;
	char d[64], why[160];
	size_t n;

	buf_init(&b);
	milter_put_optneg(&b);
	CHECK_INT((int)b.len, 4 + 1 + 12);
	CHECK(b.data[4] == 'O' && b.data[8] == MILTER_VERSION);
	buf_free(&b);

	put_u32(d, 6);
	put_u32(d + 4, SMFIF_ADDHDRS | SMFIF_QUARANTINE);
	put_u32(d + 8, SMFIP_NOHELO | SMFIP_NR_HDR);
	CHECK_INT(milter_optneg_parse(d, 12, &o, why, sizeof(why)), 0);
	CHECK(o.actions == (SMFIF_ADDHDRS | SMFIF_QUARANTINE));
	CHECK(o.protocol == (SMFIP_NOHELO | SMFIP_NR_HDR));
	CHECK(o.macros[MILTER_M_MAIL] == NULL);
	milter_options_free(&o);
	/* A macro list for MAIL. */
	put_u32(d + 12, MILTER_M_MAIL);
	memcpy(d + 16, "{auth_authen} i", 16);
	n = 32;
	CHECK_INT(milter_optneg_parse(d, n, &o, why, sizeof(why)), 0);
	CHECK_STR(o.macros[MILTER_M_MAIL], "{auth_authen} i");
	milter_options_free(&o);
	/* What we did not offer fails it. */
	put_u32(d + 8, SMFIP_RCPT_REJ);
	CHECK_INT(milter_optneg_parse(d, 12, &o, why, sizeof(why)), -1);
	CHECK(strstr(why, "protocol") != NULL);
	put_u32(d + 8, 0);
	put_u32(d, 1);
	CHECK_INT(milter_optneg_parse(d, 12, &o, why, sizeof(why)), -1);
	CHECK_INT(milter_optneg_parse(d, 8, &o, why, sizeof(why)), -1);
}

static void
test_macros(void)
{
	struct milter_macro_values v = {
		.j = "mx.example", .i = "0123456789ABCDEF",
		.auth_authen = "alice", .client_addr = "192.0.2.1",
	};
	struct buf b;
	struct milter_packet p;

	buf_init(&b);
	milter_put_macros(&b, MILTER_M_MAIL, SMFIC_MAIL, NULL, &v);
	CHECK(milter_get(b.data, b.len, &p) > 0);
	CHECK(p.cmd == SMFIC_MACRO && p.data[0] == 'M');
	CHECK(memmem(p.data, p.len, "i\0000123456789ABCDEF\0", 19) != NULL);
	CHECK(memmem(p.data, p.len, "{auth_authen}\0alice\0", 20) != NULL);
	buf_reset(&b);
	/* What the milter asked for, "{i}" as well as "i". */
	milter_put_macros(&b, MILTER_M_CONNECT, SMFIC_CONNECT,
	    "{i} {client_addr} {nothing}", &v);
	CHECK(milter_get(b.data, b.len, &p) > 0);
	CHECK_INT((int)p.len, 1 + 4 + 17 + 14 + 10);
	buf_reset(&b);
	/* No value at all: no packet. */
	milter_put_macros(&b, MILTER_M_RCPT, SMFIC_RCPT, "{rcpt_addr}", &v);
	CHECK_INT((int)b.len, 0);
	buf_free(&b);
}

static struct milter_packet
pkt(char cmd, const char *data, size_t len)
{
	struct milter_packet p = { cmd, data, len };
	return p;
}

static void
test_replies(void)
{
	struct milter_reply r;
	struct milter_packet p;
	char why[160], text[200];
	int code;

	p = pkt('c', "", 0);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_CONTINUE);
	p = pkt('y', "554 5.7.1 GTUBE\0", 16);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_REPLYCODE && r.code == 554);
	p = pkt('y', "250 ok\0", 7);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), -1);
	p = pkt('h', "X-Spam\0yes\0", 11);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_ADDHEADER);
	CHECK_STR(r.name, "X-Spam");
	CHECK_STR(r.value, "yes");
	p = pkt('m', "\0\0\0\2Subject\0new\0", 16);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_CHGHEADER && r.index == 2);
	p = pkt('m', "\0\0\0\2Subject", 11);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), -1);
	p = pkt('+', "<b@example.org>\0", 16);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_ADDRCPT);
	CHECK_STR(r.name, "<b@example.org>");
	p = pkt('q', "virus\0", 6);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), 0);
	CHECK(r.kind == MR_QUARANTINE);
	p = pkt('Z', "", 0);
	CHECK_INT(milter_reply_parse(&p, &r, why, sizeof(why)), -1);

	CHECK_INT(milter_replycode_parse("550 5.7.1 no", &code, text,
	    sizeof(text)), 0);
	CHECK_INT(code, 550);
	CHECK_STR(text, "5.7.1 no");
	CHECK_INT(milter_replycode_parse("451-4.7.1 one\r\n451 4.7.1 two",
	    &code, text, sizeof(text)), 0);
	CHECK_STR(text, "4.7.1 one 4.7.1 two");
	CHECK_INT(milter_replycode_parse("354 go", &code, text, sizeof(text)),
	    -1);
}

struct seen {
	char names[8][32];
	char values[8][64];
	int n;
};

static void
walk_cb(void *arg, const char *name, const char *value)
{
	struct seen *s = arg;

	snprintf(s->names[s->n], 32, "%s", name);
	snprintf(s->values[s->n], 64, "%s", value);
	s->n++;
}

static const char message[] =
    "Received: from a\r\n\tby b\r\n"
    "Subject: one\r\n"
    "X-A: 1\r\n"
    "x-a: 2\r\n"
    "\r\n"
    "body\r\n";

static void
test_walk(void)
{
	struct seen s = { .n = 0 };
	size_t body = milter_headers_walk(message, sizeof(message) - 1,
	    walk_cb, &s);

	CHECK_INT(s.n, 4);
	CHECK_STR(s.names[0], "Received");
	CHECK_STR(s.values[0], "from a\n\tby b");
	CHECK_STR(s.values[1], "one");
	CHECK_STR(message + body, "body\r\n");
}

static void
edit(struct milter_edits *e, enum milter_reply_kind k, uint32_t index,
    const char *name, const char *value)
{
	struct milter_reply r = { .kind = k, .index = index, .name = name,
	    .value = value };
	char why[160];

	CHECK_INT(milter_edits_add(e, &r, why, sizeof(why)), 0);
}

static void
test_edits(void)
{
	struct milter_edits e;
	struct milter_reply r;
	struct buf out;
	char why[160];

	milter_edits_init(&e);
	buf_init(&out);
	edit(&e, MR_ADDHEADER, 0, "X-Spam", "yes");
	edit(&e, MR_INSHEADER, 0, "DKIM-Signature", "v=1;\n\tb=xyz");
	edit(&e, MR_CHGHEADER, 2, "X-A", "two");
	edit(&e, MR_CHGHEADER, 1, "Subject", "");
	edit(&e, MR_CHGHEADER, 5, "X-New", "added");
	milter_edits_apply(message, sizeof(message) - 1, &e, &out);
	buf_append(&out, "", 1);
	CHECK_STR(out.data,
	    "DKIM-Signature: v=1;\r\n\tb=xyz\r\n"
	    "Received: from a\r\n\tby b\r\n"
	    "X-A: 1\r\n"
	    "X-A: two\r\n"
	    "X-Spam: yes\r\n"
	    "X-New: added\r\n"
	    "\r\n"
	    "body\r\n");
	milter_edits_free(&e);

	/* The body replaced, bare LF made CRLF; an insert past the end. */
	milter_edits_init(&e);
	r.kind = MR_REPLBODY;
	r.body = "new\nbody\r\n";
	r.body_len = 10;
	CHECK_INT(milter_edits_add(&e, &r, why, sizeof(why)), 0);
	edit(&e, MR_INSHEADER, 99, "X-Last", "z");
	buf_reset(&out);
	milter_edits_apply(message, sizeof(message) - 1, &e, &out);
	buf_append(&out, "", 1);
	CHECK(strstr(out.data, "x-a: 2\r\nX-Last: z\r\n\r\nnew\r\nbody\r\n") !=
	    NULL);
	/* Malformed fields are refused. */
	r.kind = MR_ADDHEADER;
	r.name = "Bad Name";
	r.value = "v";
	CHECK_INT(milter_edits_add(&e, &r, why, sizeof(why)), -1);
	r.name = "X";
	r.value = "a\nb";
	CHECK_INT(milter_edits_add(&e, &r, why, sizeof(why)), -1);
	milter_edits_free(&e);
	buf_free(&out);
}

int
main(void)
{
	RUN(test_packets);
	RUN(test_optneg);
	RUN(test_macros);
	RUN(test_replies);
	RUN(test_walk);
	RUN(test_edits);
	return unit_done();
}
