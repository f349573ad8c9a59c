/*
 * fuzz_addr — libFuzzer harness for the path parser.
 *
 * Input: 1 option byte (1 null_ok, 2 postmaster_ok, 4 utf8_ok), then the
 * text after "MAIL FROM:" / "RCPT TO:" (cut at the first NUL, as the
 * engine never passes one).  Besides the sanitizers it checks what the
 * engine relies on: the consumed count, the limits, lower-cased domains,
 * no non-ASCII without utf8_ok, and that a formatted address parses back
 * to itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/addr.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_addr: broken promise: %s\n", what);
		abort();
	}
}

static int
has_nonascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

static void
check_parsed(const char *text, const struct addr_parse_opts *opts,
    const struct mailaddr *a, size_t used)
{
	char formatted[ADDR_LOCAL_MAX + ADDR_DOMAIN_MAX + 8];
	char again[sizeof(formatted) + 2];
	struct mailaddr b;
	const char *why, *d;
	size_t used2;

	check(used >= 2 && used <= ADDR_PATH_MAX, "consumed out of range");
	check(text[0] == '<' && text[used - 1] == '>', "path not bracketed");
	check(text[used] == '\0' || text[used] == ' ', "path not delimited");
	check(strlen(a->local) <= ADDR_LOCAL_MAX + 2, "local too long");
	check(strlen(a->domain) <= ADDR_DOMAIN_MAX, "domain too long");
	check(!a->is_null || opts->null_ok, "null path accepted");
	check(!a->is_null || (a->local[0] == '\0' && a->domain[0] == '\0'),
	    "null path with content");
	check(a->is_null || a->local[0] != '\0', "empty local part");
	check(a->is_null || a->domain[0] != '\0' || (opts->postmaster_ok &&
	    strcasecmp(a->local, "postmaster") == 0), "missing domain");
	for (d = a->domain; *d != '\0'; d++)
		check(*d < 'A' || *d > 'Z', "domain not lower-cased");
	if (!opts->utf8_ok)
		check(!has_nonascii(a->local) && !has_nonascii(a->domain),
		    "non-ASCII without utf8_ok");
	if (a->domain[0] == '[')
		check(addr_literal_valid(a->domain), "literal not valid");
	else if (a->domain[0] != '\0' && !has_nonascii(a->domain))
		check(addr_domain_valid(a->domain), "domain not valid");

	/* Round trip: the formatted address is a path of its own. */
	addr_format(a, formatted, sizeof(formatted));
	snprintf(again, sizeof(again), "<%s>", formatted);
	if (strlen(again) > ADDR_PATH_MAX)
		return;     /* a source route made room the address lacks */
	check(addr_parse_path(again, opts, &b, &used2, &why) == 0,
	    "formatted address does not parse");
	check(strcmp(a->local, b.local) == 0 &&
	    strcmp(a->domain, b.domain) == 0 && a->is_null == b.is_null,
	    "round trip changed the address");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr_parse_opts opts;
	struct mailaddr a;
	const char *why = NULL;
	char *text;
	size_t used = 12345;

	if (size < 1)
		return 0;
	opts.null_ok = (data[0] & 1) != 0;
	opts.postmaster_ok = (data[0] & 2) != 0;
	opts.utf8_ok = (data[0] & 4) != 0;
	if ((text = malloc(size)) == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';

	if (addr_parse_path(text, &opts, &a, &used, &why) == 0)
		check_parsed(text, &opts, &a, used);
	else
		check(why != NULL && why[0] != '\0' && used == 0,
		    "error without reason");

	/* The other entry points take any string. */
	if (addr_domain_valid(text))
		check(strlen(text) <= ADDR_DOMAIN_MAX && !has_nonascii(text),
		    "bad domain accepted");
	if (addr_literal_valid(text))
		check(text[0] == '[' && text[strlen(text) - 1] == ']',
		    "bad literal accepted");
	free(text);
	return 0;
}
