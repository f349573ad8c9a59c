/*
 * libFuzzer harness for the Authentication-Results filter (authres.c):
 * the input is message content; it is filtered whole and in pieces of
 * a size taken from its first byte, and both outputs must be equal (the
 * filter keeps its state across pieces), no longer than the input, and
 * free of a field claiming our authserv-id in the header section.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/authres.h"

#define ID "mx.fuzz.example"

static void
run(const char *data, size_t len, size_t step, struct buf *out)
{
	struct authres_filter f;

	authres_filter_init(&f, ID);
	for (size_t off = 0; off < len; ) {
		size_t n = step == 0 || len - off < step ? len - off : step;
		authres_filter_feed(&f, data + off, n, out);
		off += n;
	}
	authres_filter_finish(&f, out);
	authres_filter_free(&f);
}

/* A field name (printable, no space, no colon), WSP, ':' -- anything
 * else ends the header section (RFC 5322 2.2, as Postfix reads it). */
static int
is_field(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && s[i] > 0x20 && s[i] < 0x7f && s[i] != ':')
		i++;
	if (i == 0)
		return 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i < len && s[i] == ':';
}

/* No field of the output's header section claims our id. */
static void
check_headers(const char *s, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && !(s[i] == '\n' && (i + 1 == len ||
		    (s[i + 1] != ' ' && s[i + 1] != '\t'))))
			continue;
		size_t flen = (i < len ? i + 1 : i) - start;
		if (flen == 0 || s[start] == '\r' || s[start] == '\n')
			return;             /* the body starts */
		if (!is_field(s + start, flen))
			return;             /* not a field: the body */
		if (authres_is_ours(s + start, flen, ID))
			abort();
		start = i + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct buf whole, pieces;
	size_t step;

	if (len == 0)
		return 0;
	step = data[0] % 17;
	data++;
	len--;
	buf_init(&whole);
	buf_init(&pieces);
	run((const char *)data, len, 0, &whole);
	run((const char *)data, len, step, &pieces);
	if (whole.len != pieces.len || whole.len > len ||
	    (whole.len > 0 && memcmp(whole.data, pieces.data, whole.len) != 0))
		abort();
	check_headers(whole.data ? whole.data : "", whole.len);
	buf_free(&whole);
	buf_free(&pieces);
	return 0;
}
