/*
 * Unit tests of authres: building our Authentication-Results field, and
 * the filter that removes forged ones, fed whole and in every split.
 */
#include <stdlib.h>
#include <string.h>

#include "smtp/authres.h"
#include "common/util.h"
#include "unit.h"

#define ID "mx.test.example"

static char *
build(const struct authres_info *info)
{
	struct buf b;

	buf_init(&b);
	authres_header(&b, ID, info);
	return b.data;
}

static void
test_header_spf(void)
{
	struct authres_info in = {
		.spf_checked = true, .spf = SPF_RES_PASS,
		.spf_identity = "mailfrom", .spf_address = "alice@example.org",
		.spf_comment = "example.org: pass for 192.0.2.1",
		.helo = "client.example",
	};
	char *h = build(&in);

	CHECK_STR(h, "Authentication-Results: " ID ";\r\n"
	    "\tspf=pass\r\n\t(example.org: pass for 192.0.2.1)\r\n"
	    "\tsmtp.mailfrom=alice@example.org\r\n");
	free(h);

	in.spf = SPF_RES_FAIL;
	in.spf_comment = "see (this) \\ and\x01 that";
	in.spf_address = "\"odd local\"@example.org";
	h = build(&in);
	CHECK_STR(h, "Authentication-Results: " ID ";\r\n"
	    "\tspf=fail\r\n\t(see \\(this\\) \\\\ and? that)\r\n"
	    "\tsmtp.mailfrom=\"\\\"odd local\\\"@example.org\"\r\n");
	free(h);
}

static void
test_header_helo_auth_none(void)
{
	struct authres_info in = {
		.spf_checked = true, .spf = SPF_RES_NONE,
		.spf_identity = "helo", .spf_address = "postmaster@[192.0.2.1]",
		.helo = "[192.0.2.1]", .auth_user = "alice",
	};
	char *h = build(&in);

	CHECK_STR(h, "Authentication-Results: " ID ";\r\n"
	    "\tspf=none\r\n\tsmtp.helo=\"[192.0.2.1]\";\r\n"
	    "\tauth=pass smtp.auth=alice\r\n");
	free(h);

	memset(&in, 0, sizeof(in));
	h = build(&in);
	CHECK_STR(h, "Authentication-Results: " ID "; none\r\n");
	free(h);

	in.auth_user = "bob smith";
	h = build(&in);
	CHECK_STR(h, "Authentication-Results: " ID ";\r\n"
	    "\tauth=pass smtp.auth=\"bob smith\"\r\n");
	free(h);
}

static void
test_is_ours(void)
{
	static const char *const ours[] = {
		"Authentication-Results: mx.test.example; spf=pass",
		"authentication-results:MX.Test.Example;spf=pass",
		"Authentication-Results : mx.test.example; spf=pass",
		"Authentication-Results: (c (nested) \\) x) mx.test.example; none",
		"Authentication-Results:\r\n\tmx.test.example;\r\n\tspf=pass",
		"Authentication-Results: \"mx.test.example\"; spf=pass",
		"Authentication-Results: mx.test.example.; spf=pass",
		"Authentication-Results: mx.test.example(c); spf=pass",
		"Authentication-Results: mx.test.example 1; spf=pass",
	};
	static const char *const theirs[] = {
		"Authentication-Results: other.example; spf=pass",
		"Authentication-Results: mx.test.example.evil; spf=pass",
		"Authentication-Results: evil.mx.test.example; spf=pass",
		"Authentication-Results: (mx.test.example) other.example; none",
		"Authentication-Results-Extra: mx.test.example; none",
		"X-Authentication-Results: mx.test.example; none",
		"Received: from mx.test.example",
		"Authentication-Results: ; none",
	};

	for (size_t i = 0; i < ARRAY_LEN(ours); i++) {
		if (!authres_is_ours(ours[i], strlen(ours[i]), ID)) {
			printf("#   should be ours: %s\n", ours[i]);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(theirs); i++) {
		if (authres_is_ours(theirs[i], strlen(theirs[i]), ID)) {
			printf("#   should not be ours: %s\n", theirs[i]);
			CHECK(0);
		}
	}
}

/* Filter text in pieces of step bytes (0: whole). */
static char *
filter(const char *in, size_t len, size_t step, unsigned *removed,
    struct buf *headers)
{
	struct authres_filter f;
	struct buf out;

	buf_init(&out);
	buf_append(&out, "", 0);
	authres_filter_init(&f, ID);
	for (size_t off = 0; off < len; ) {
		size_t n = step == 0 || len - off < step ? len - off : step;
		authres_filter_feed(&f, in + off, n, &out);
		off += n;
	}
	authres_filter_finish(&f, &out);
	if (removed != NULL)
		*removed = f.removed;
	if (headers != NULL) {
		buf_reset(headers);
		buf_append(headers, f.headers.data, f.headers.len);
	}
	authres_filter_free(&f);
	return out.data;
}

/* Whole, and in every piece size from 1 to 17: the same output. */
static void
filter_is(const char *in, const char *want, unsigned want_removed)
{
	unsigned removed;

	for (size_t step = 0; step <= 17; step++) {
		char *got = filter(in, strlen(in), step, &removed, NULL);
		if (strcmp(got, want) != 0 || removed != want_removed) {
			printf("#   step %zu: got \"%s\" (%u removed), want \"%s\""
			    " (%u)\n", step, got, removed, want, want_removed);
			CHECK(0);
			free(got);
			return;
		}
		free(got);
	}
}

static void
test_filter_removes_ours(void)
{
	filter_is(
	    "Received: from a\r\n\tby b\r\n"
	    "Authentication-Results: mx.test.example;\r\n\tspf=pass\r\n"
	    "Subject: hi\r\n"
	    "authentication-results : (x) \"MX.TEST.EXAMPLE.\"; dkim=pass\r\n"
	    "Authentication-Results: other.example; spf=fail\r\n"
	    "\r\n"
	    "Authentication-Results: mx.test.example; in the body\r\n",
	    "Received: from a\r\n\tby b\r\n"
	    "Subject: hi\r\n"
	    "Authentication-Results: other.example; spf=fail\r\n"
	    "\r\n"
	    "Authentication-Results: mx.test.example; in the body\r\n", 2);
}

static void
test_filter_edges(void)
{
	/* Last header, no body. */
	filter_is("Subject: x\r\nAuthentication-Results: mx.test.example; none\r\n",
	    "Subject: x\r\n", 1);
	/* Not even a line end. */
	filter_is("Authentication-Results: mx.test.example; none",
	    "", 1);
	filter_is("Authentication-Results: mx.test.example", "", 1);
	filter_is("Authentication-Results: other; none",
	    "Authentication-Results: other; none", 0);
	/* No header section: the body starts at once. */
	filter_is("just text\r\nAuthentication-Results: mx.test.example\r\n",
	    "just text\r\nAuthentication-Results: mx.test.example\r\n", 0);
	filter_is("\r\nAuthentication-Results: mx.test.example\r\n",
	    "\r\nAuthentication-Results: mx.test.example\r\n", 0);
	/* A line that is not a field ends the header section. */
	filter_is("Subject: x\r\nnot a header\r\n"
	    "Authentication-Results: mx.test.example; none\r\n",
	    "Subject: x\r\nnot a header\r\n"
	    "Authentication-Results: mx.test.example; none\r\n", 0);
	/* A name with a space is no field either (RFC 5322 2.2; Postfix and
	 * Python's email parser agree): the body starts there. */
	filter_is("Bad name: x\r\nAuthentication-Results: mx.test.example\r\n",
	    "Bad name: x\r\nAuthentication-Results: mx.test.example\r\n", 0);
	filter_is(" folded first\r\nAuthentication-Results: mx.test.example\r\n",
	    " folded first\r\nAuthentication-Results: mx.test.example\r\n", 0);
	/* Bare LF line ends (normalize mode turns them to CRLF earlier, but
	 * the filter must not care). */
	filter_is("A: 1\nAuthentication-Results: mx.test.example\n\tx\nB: 2\n\nbody\n",
	    "A: 1\nB: 2\n\nbody\n", 1);
	filter_is("", "", 0);
}

static void
test_filter_long_fields(void)
{
	struct buf in, want;
	unsigned removed;
	char *got;

	/* A long comment hiding our id: dropped. */
	buf_init(&in);
	buf_appends(&in, "Authentication-Results: (");
	for (int i = 0; i < 1000; i++)
		buf_appends(&in, "padding ");
	buf_appends(&in, ") mx.test.example; spf=pass\r\n\tmore\r\nSubject: s\r\n\r\nb\r\n");
	got = filter(in.data, in.len, 0, &removed, NULL);
	CHECK_STR(got, "Subject: s\r\n\r\nb\r\n");
	CHECK_INT(removed, 1);
	free(got);
	got = filter(in.data, in.len, 7, &removed, NULL);
	CHECK_STR(got, "Subject: s\r\n\r\nb\r\n");
	free(got);

	/* A long A-R field of someone else: kept whole. */
	buf_reset(&in);
	buf_appends(&in, "Authentication-Results: other.example; spf=pass (");
	for (int i = 0; i < 2000; i++)
		buf_appends(&in, "long ");
	buf_appends(&in, ")\r\n\tcontinued\r\nSubject: s\r\n\r\nb\r\n");
	got = filter(in.data, in.len, 0, &removed, NULL);
	CHECK_STR(got, in.data);
	CHECK_INT(removed, 0);
	free(got);
	got = filter(in.data, in.len, 5, &removed, NULL);
	CHECK_STR(got, in.data);
	free(got);

	/* Any other long field streams through. */
	buf_init(&want);
	buf_reset(&in);
	buf_appends(&in, "X-Long: ");
	for (int i = 0; i < 5000; i++)
		buf_appends(&in, "abcd ");
	buf_appends(&in, "\r\n\r\nbody");
	got = filter(in.data, in.len, 3, &removed, NULL);
	CHECK_STR(got, in.data);
	free(got);
	buf_free(&in);
	buf_free(&want);
}

static void
test_filter_headers_copy(void)
{
	struct buf h;
	char *got;
	const char *msg = "A: 1\r\nAuthentication-Results: mx.test.example; x\r\n"
	    "B: 2\r\n\r\nbody\r\n";

	buf_init(&h);
	got = filter(msg, strlen(msg), 4, NULL, &h);
	buf_append(&h, "", 0);
	CHECK_STR(h.data, "A: 1\r\nB: 2\r\n\r\n");
	free(got);
	buf_free(&h);
}

int
main(void)
{
	RUN(test_header_spf);
	RUN(test_header_helo_auth_none);
	RUN(test_is_ours);
	RUN(test_filter_removes_ours);
	RUN(test_filter_edges);
	RUN(test_filter_long_fields);
	RUN(test_filter_headers_copy);
	return unit_done();
}
