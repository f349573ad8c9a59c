/*
 * Unit tests for json: the writer's commas and escaping (invalid UTF-8
 * becomes U+FFFD), the reader's strictness, and a round trip.
 */
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "unit.h"
#include "common/util.h"

static char *
write_sample(void)
{
	struct buf b;
	struct json_writer w;

	buf_init(&b);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	json_key(&w, "a");
	json_string(&w, "x\"y\\z\n\t\x01");
	json_key(&w, "list");
	json_begin_array(&w);
	json_int(&w, -3);
	json_bool(&w, true);
	json_null(&w);
	json_begin_object(&w);
	json_end_object(&w);
	json_string(&w, NULL);
	json_end_array(&w);
	json_key(&w, "big");
	json_string_begin(&w);
	json_escape(&b, "ab", 2);
	buf_appends(&b, "cd");
	json_string_end(&w);
	json_end_object(&w);
	return b.data;
}

static void
test_writer(void)
{
	char *s = write_sample();

	CHECK_STR(s, "{\"a\":\"x\\\"y\\\\z\\n\\t\\u0001\","
	    "\"list\":[-3,true,null,{},null],\"big\":\"abcd\"}");
	free(s);
}

static void
test_escape_utf8(void)
{
	struct buf b;

	buf_init(&b);
	/* valid 2-, 3-, 4-byte sequences pass; Latin-1 byte, overlong,
	 * surrogate and truncated sequences become U+FFFD */
	json_escape(&b, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
	CHECK_STR(b.data, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	buf_reset(&b);
	json_escape(&b, "caf\xe9!", 5);
	CHECK_STR(b.data, "caf\xef\xbf\xbd!");
	buf_reset(&b);
	json_escape(&b, "\xc0\xaf", 2);
	CHECK_STR(b.data, "\xef\xbf\xbd\xef\xbf\xbd");
	buf_reset(&b);
	json_escape(&b, "\xed\xa0\x80", 3);
	CHECK_STR(b.data, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	buf_reset(&b);
	json_escape(&b, "a\xe2\x82", 3);
	CHECK_STR(b.data, "a\xef\xbf\xbd\xef\xbf\xbd");
	buf_reset(&b);
	json_escape(&b, "nul\0x", 5);
	CHECK_STR(b.data, "nul\\u0000x");
	buf_free(&b);
}

static void
test_parse_params(void)
{
	const char *text = " {\"command\":[\"/bin/prog\",\"--q\",\"a b\"],"
	    "\"format\":\"json\",\"timeout\":60,\"vars\":{\"queue\":\"support\","
	    "\"e\":\"\\u00e9\\ud83d\\ude00\\/\"},\"f\":1.5,\"n\":null,"
	    "\"t\":true,\"x\":-0.25e2} ";
	char err[128];
	struct json_value *v = json_parse(text, strlen(text), err, sizeof(err));
	const struct json_value *cmd, *vars;
	long long n;

	CHECK(v != NULL);
	if (v == NULL) {
		printf("# %s\n", err);
		return;
	}
	cmd = json_get(v, "command");
	CHECK(cmd != NULL && cmd->type == JSON_ARRAY && cmd->count == 3);
	CHECK_STR(cmd->items[2]->string, "a b");
	CHECK_STR(json_get_string(v, "format"), "json");
	CHECK(json_get_int(v, "timeout", &n) == 0 && n == 60);
	CHECK(json_get_int(v, "f", &n) == -1);
	CHECK(json_get_int(v, "format", &n) == -1);
	CHECK(json_get_int(v, "absent", &n) == -1);
	vars = json_get(v, "vars");
	CHECK_STR(json_get_string(vars, "queue"), "support");
	CHECK_STR(json_get_string(vars, "e"), "\xc3\xa9\xf0\x9f\x98\x80/");
	CHECK(json_get(v, "n")->type == JSON_NULL);
	CHECK(json_get(v, "t")->type == JSON_TRUE);
	CHECK(json_get(v, "x")->number == -25.0);
	CHECK(json_get_string(v, "timeout") == NULL);
	CHECK(json_get(cmd, "x") == NULL);
	json_free(v);
}

static void
test_parse_rejects(void)
{
	static const char *const bad[] = {
		"", "{", "{\"a\":1,}", "[1,]", "{\"a\" 1}", "{a:1}", "01", "1.",
		".5", "-", "1e", "tru", "\"abc", "\"\\x\"", "\"\\u12\"",
		"\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u0000\"",
		"\"a\tb\"", "\"\xff\"", "\"\xc0\xaf\"", "{\"a\":1,\"a\":2}",
		"1 2", "[1] x", "/* c */ 1", "'a'", "NaN", "+1",
	};
	char err[128];

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct json_value *v = json_parse(bad[i], strlen(bad[i]), err,
		    sizeof(err));

		if (v != NULL)
			printf("#   accepted: %s\n", bad[i]);
		CHECK(v == NULL);
		CHECK(err[0] != '\0');
		json_free(v);
	}
	CHECK(json_parse("[1,2", 4, err, sizeof(err)) == NULL);
	CHECK_STR(err, "offset 4: expected ',' or ']'");
}

static void
test_depth_limit(void)
{
	char deep[2 * (JSON_MAX_DEPTH + 1) + 1];
	struct json_value *v;
	size_t n = 0;

	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	v = json_parse(deep, n, NULL, 0);
	CHECK(v != NULL);
	json_free(v);
	n = 0;
	for (int i = 0; i <= JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i <= JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	CHECK(json_parse(deep, n, NULL, 0) == NULL);
}

static void
test_round_trip(void)
{
	char *s = write_sample();
	struct json_value *v = json_parse(s, strlen(s), NULL, 0);
	const struct json_value *list;

	CHECK(v != NULL);
	CHECK_STR(json_get_string(v, "a"), "x\"y\\z\n\t\x01");
	list = json_get(v, "list");
	CHECK(list != NULL && list->count == 5 && list->items[0]->number == -3);
	CHECK_STR(json_get_string(v, "big"), "abcd");
	json_free(v);
	free(s);
}

int
main(void)
{
	RUN(test_writer);
	RUN(test_escape_utf8);
	RUN(test_parse_params);
	RUN(test_parse_rejects);
	RUN(test_depth_limit);
	RUN(test_round_trip);
	return unit_done();
}
