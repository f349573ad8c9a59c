/*
 * fuzz_exporter — libFuzzer harness for the metrics exporter's request
 * parser (exporter_parse(), src/metrics/exporter.h).
 *
 * Input: the bytes a scraper sent so far.  Besides the sanitizers it
 * checks the promises the exporter relies on: the parser reads nothing
 * past len (ASan sees it: the input is copied to a buffer of exactly
 * len), says "incomplete" only below EXPORTER_REQUEST_MAX, says
 * "metrics" only for a GET of /metrics, and a complete answer does not
 * change when more bytes follow.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/exporter.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_exporter: broken promise: %s\n", what);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy, *more;
	enum exporter_request r, r2;

	if (size > EXPORTER_REQUEST_MAX)
		size = EXPORTER_REQUEST_MAX;
	copy = malloc(size ? size : 1);
	memcpy(copy, data, size);
	r = exporter_parse(copy, size);
	if (r == EXPORTER_INCOMPLETE)
		check(size < EXPORTER_REQUEST_MAX, "incomplete at the limit");
	if (r == EXPORTER_METRICS)
		check(size >= 14 && memcmp(copy, "GET /metrics", 12) == 0,
		    "metrics for something else");
	if (r != EXPORTER_INCOMPLETE && r != EXPORTER_TOO_LARGE &&
	    size < EXPORTER_REQUEST_MAX) {
		more = malloc(size + 1);
		memcpy(more, copy, size);
		more[size] = 'x';
		r2 = exporter_parse(more, size + 1);
		check(r2 == r, "answer changed by a later byte");
		free(more);
	}
	free(copy);
	return 0;
}
