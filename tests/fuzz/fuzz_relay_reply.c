/*
 * fuzz_relay_reply — libFuzzer harness for the relay client's reading of
 * an upstream server's replies (relay.h): relay_reply_line() over a
 * multi-line reply, and relay_ehlo_parse() over the lines of an EHLO
 * reply.  The upstream is less trusted than the delivery child reading it.
 *
 * Input: the server's bytes; each LF ends a line (a CR before it is
 * dropped, as conn_line() does; a NUL cuts the line, as C strings do).
 * Besides the sanitizers it checks: a complete reply has a code in
 * 200..599 and text that starts with it, the text is always terminated
 * within its buffer, and a malformed line leaves the reply unchanged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/relay.h"

#define MAX_LINES 64

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_relay_reply: broken promise: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, *lines[MAX_LINES];
	struct relay_reply r, before;
	struct relay_ext x;
	size_t nlines = 0, i;
	char *p, *nl;
	int rc = 0;

	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (p = text; nlines < MAX_LINES && *p != '\0'; p = nl + 1) {
		lines[nlines++] = p;
		if ((nl = strchr(p, '\n')) == NULL)
			break;
		*nl = '\0';
		if (nl > p && nl[-1] == '\r')
			nl[-1] = '\0';
	}

	relay_reply_init(&r);
	for (i = 0; i < nlines && rc == 0; i++) {
		before = r;
		rc = relay_reply_line(&r, lines[i]);
		check(memchr(r.text, '\0', sizeof(r.text)) != NULL,
		    "reply text not terminated");
		if (rc < 0) {
			check(memcmp(&before, &r, sizeof(r)) == 0,
			    "malformed line changed the reply");
			break;
		}
		check(r.code >= 200 && r.code <= 599, "code out of range");
		check(r.nlines == before.nlines + 1, "line not counted");
		check(strncmp(r.text, lines[0], 3) == 0,
		    "text does not start with the code");
	}

	/* The EHLO reply: its first line is the greeting, the rest are the
	 * extensions. */
	if (nlines > 1)
		relay_ehlo_parse(&x, (const char *const *)lines + 1, nlines - 1);
	else
		relay_ehlo_parse(&x, (const char *const *)lines, nlines);
	check(x.size || x.size_max == 0, "size limit without SIZE");
	free(text);
	return 0;
}
