/*
 * fuzz_json — libFuzzer harness for the JSON reader and the writer's
 * escaping.
 *
 * The input is parsed (the sanitizers watch the reader, its depth limit
 * and its error paths).  Then it is written as a JSON string with
 * json_escape() and read back: the writer promises valid JSON for any
 * bytes, and the reader must return exactly the input when the input was
 * valid UTF-8 without NUL (otherwise the U+FFFD replacements).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_json: broken promise: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct json_value *v, *back;
	struct buf b;
	char err[128];

	v = json_parse(text, size, err, sizeof(err));
	check(v != NULL || err[0] != '\0', "an error without a reason");
	json_free(v);

	buf_init(&b);
	buf_append(&b, "\"", 1);
	json_escape(&b, text, size);
	buf_append(&b, "\"", 1);
	back = json_parse(b.data, b.len, err, sizeof(err));
	/* \u0000 is refused by design: only inputs without NUL come back */
	if (memchr(text, '\0', size) == NULL) {
		check(back != NULL, "escaped text does not parse");
		check(back->type == JSON_STRING, "escaped text is not a string");
		v = json_parse(b.data, b.len, NULL, 0);
		check(v != NULL && strcmp(v->string, back->string) == 0,
		    "parsing is not deterministic");
		json_free(v);
		/* identical when nothing needed replacing */
		if (strlen(back->string) == size)
			check(memcmp(back->string, text, size) == 0,
			    "round trip changed the text");
	}
	json_free(back);
	buf_free(&b);
	return 0;
}
