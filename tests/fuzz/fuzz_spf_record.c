/*
 * libFuzzer harness for the SPF record grammar check and the rewrite for
 * libspf2 (spf.c): a record the check accepts must still be accepted
 * once rewritten, for either client family, and rewriting twice changes
 * nothing more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "smtp/spf.h"

static void
rewritten_ok(const char *rec, int family)
{
	char why[128], *once, *twice;

	if ((once = spf_record_rewrite(rec, family)) == NULL)
		return;
	if (spf_record_check(once, why, sizeof(why)) != 0)
		abort();
	twice = spf_record_rewrite(once, family);
	/* Only the trailing space of a bare "v=spf1" may come back. */
	if (twice != NULL && strcmp(twice, once) != 0)
		abort();
	free(twice);
	free(once);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char *rec = malloc(len + 8), why[128];

	/* As our DNS layer sees them: text starting with the version. */
	memcpy(rec, "v=spf1 ", 7);
	memcpy(rec + 7, data, len);
	rec[len + 7] = '\0';
	if (strlen(rec) == len + 7 && spf_record_check(rec, why,
	    sizeof(why)) == 0) {
		rewritten_ok(rec, AF_INET);
		rewritten_ok(rec, AF_INET6);
	}
	free(rec);
	return 0;
}
