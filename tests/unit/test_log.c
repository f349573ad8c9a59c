/*
 * Unit tests for log's line encoders: a JSON record is one line, one
 * valid JSON object with "time", "level", "role", "pid" and then its
 * fields in order, whatever bytes the values hold (control characters,
 * quotes, backslashes, bytes that are not UTF-8, values longer than the
 * line buffer keeps); numbers and seconds as printf would write them; the
 * time stamps (UTC with ms in JSON, local time in text) follow the clock
 * across seconds although the formatted second is cached.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "unit.h"

/* Everything written to stderr while fn runs (fn's lines). */
static char *
captured(void (*fn)(void *), void *arg)
{
	FILE *f = tmpfile();
	int saved = dup(2);
	struct buf out;
	char chunk[8192];
	size_t n;

	dup2(fileno(f), 2);
	fn(arg);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	buf_init(&out);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&out, chunk, n);
	fclose(f);
	if (out.data == NULL)
		buf_append(&out, "", 0);
	return out.data;
}

static void
emit_str(void *arg)
{
	struct log_rec r;

	log_rec_begin(&r);
	log_rec_str(&r, "id", "ABC");
	log_rec_str(&r, "event", "test");
	log_rec_str(&r, "v", arg);
	log_rec_emit(&r, LOG_LEVEL_WARN);
}

/* The one line fn wrote, parsed; its text in *line (freed by caller). */
static struct json_value *
json_line(void (*fn)(void *), void *arg, char **line)
{
	char err[128];
	char *text = captured(fn, arg);
	size_t len = strlen(text);
	struct json_value *v;

	*line = text;
	CHECK(len > 0 && text[len - 1] == '\n');
	CHECK(memchr(text, '\n', len) == text + len - 1);
	v = json_parse(text, len, err, sizeof(err));
	if (v == NULL)
		printf("#   not JSON (%s): %.200s\n", err, text);
	CHECK(v != NULL && v->type == JSON_OBJECT);
	return v;
}

static void
test_json_members_in_order(void)
{
	struct json_value *v;
	char *line;
	long long pid;

	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_str, "plain value", &line);
	log_set_format(LOG_FORMAT_TEXT);
	if (v == NULL) {
		free(line);
		return;
	}
	CHECK_INT(v->count, 7);
	if (v->count == 7) {
		const char *want[] = { "time", "level", "role", "pid", "id",
		    "event", "v" };

		for (size_t i = 0; i < 7; i++)
			CHECK_STR(v->keys[i], want[i]);
	}
	CHECK_STR(json_get_string(v, "level"), "warn");
	CHECK_STR(json_get_string(v, "role"), "unit \"role\"");
	CHECK(json_get_int(v, "pid", &pid) == 0 && pid == (long long)getpid());
	CHECK_STR(json_get_string(v, "v"), "plain value");
	json_free(v);
	free(line);
}

/* The value round-trips through the JSON text: want is what a reader
 * gets back (bytes that are not UTF-8 become U+FFFD). */
static void
check_round_trip(const char *val, const char *want, const char *text)
{
	struct json_value *v;
	char *line;

	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_str, (void *)val, &line);
	log_set_format(LOG_FORMAT_TEXT);
	if (v != NULL)
		CHECK_STR(json_get_string(v, "v"), want);
	if (text != NULL && strstr(line, text) == NULL) {
		printf("#   %.300s does not contain %s\n", line, text);
		CHECK(0);
	}
	json_free(v);
	free(line);
}

static void
test_json_escapes(void)
{
	char ctl[40], ctl_json[200];
	size_t n = 0, m = 0;

	check_round_trip("say \"hi\" \\ there", "say \"hi\" \\ there",
	    "\"v\":\"say \\\"hi\\\" \\\\ there\"}\n");
	check_round_trip("a\nb\rc\td", "a\nb\rc\td",
	    "\"v\":\"a\\nb\\rc\\td\"}");
	/* every other control character, and DEL, as \u00XX */
	for (int c = 1; c < 0x20; c++) {
		if (c == '\n' || c == '\r' || c == '\t')
			continue;
		ctl[n++] = (char)c;
		m += (size_t)snprintf(ctl_json + m, sizeof(ctl_json) - m,
		    "\\u%04x", c);
	}
	ctl[n++] = 0x7f;
	ctl[n] = '\0';
	m += (size_t)snprintf(ctl_json + m, sizeof(ctl_json) - m, "\\u007f");
	check_round_trip(ctl, ctl, ctl_json);
	/* valid UTF-8 as it is; a Latin-1 byte, an overlong form, a
	 * surrogate, a cut sequence and 0xff each become U+FFFD */
	check_round_trip("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	    "\"v\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	check_round_trip("caf\xe9|\xc0\xaf|\xed\xa0\x80|\xff|\xe2\x82",
	    "caf\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
	    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd|"
	    "\xef\xbf\xbd\xef\xbf\xbd", NULL);
	check_round_trip("", "", "\"v\":\"\"}");
}

static void
emit_null_and_numbers(void *arg)
{
	struct log_rec r;

	(void)arg;
	log_rec_begin(&r);
	log_rec_str(&r, "id", NULL);
	log_rec_path(&r, "from", "");
	log_rec_path(&r, "to", "a \"b\"@example.test");
	log_rec_num(&r, "zero", 0);
	log_rec_num(&r, "neg", -42);
	log_rec_num(&r, "max", LLONG_MAX);
	log_rec_num(&r, "min", LLONG_MIN);
	log_rec_secs(&r, "s1", 1.5);
	log_rec_secs(&r, "s2", 12.3456);
	log_rec_secs(&r, "s3", 0.0004);
	log_rec_secs(&r, "s4", -3);
	log_rec_secs(&r, "s5", 86400.9999);
	log_rec_emit(&r, LOG_LEVEL_INFO);
}

static void
test_numbers(void)
{
	struct json_value *v;
	char *line;

	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_null_and_numbers, NULL, &line);
	CHECK(strstr(line, "\"pid\":") != NULL);
	CHECK(strstr(line, ",\"id\":null,\"from\":\"\",\"to\":\"a \\\"b\\\""
	    "@example.test\",\"zero\":0,\"neg\":-42,"
	    "\"max\":9223372036854775807,\"min\":-9223372036854775808,"
	    "\"s1\":1.500,\"s2\":12.346,\"s3\":0.000,\"s4\":0.000,"
	    "\"s5\":86401.000}\n") != NULL);
	json_free(v);
	free(line);
	log_set_format(LOG_FORMAT_TEXT);
	line = captured(emit_null_and_numbers, NULL);
	CHECK(strstr(line, " info: id=- from=<> to=\"<a \\\"b\\\"@example.test>\" "
	    "zero=0 neg=-42 max=9223372036854775807 min=-9223372036854775808 "
	    "s1=1.500 s2=12.346 s3=0.000 s4=0.000 s5=86401.000\n") != NULL);
	free(line);
}

/* A value far longer than the kept line buffer, then a short line: both
 * whole (the buffer given back and taken again). */
static void
test_long_values(void)
{
	size_t len = 200 * 1024;
	char *big = malloc(len + 1);
	struct json_value *v;
	char *line;

	for (size_t i = 0; i < len; i++)
		big[i] = (char)('a' + i % 26);
	big[len / 2] = '"';
	big[len] = '\0';
	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_str, big, &line);
	if (v != NULL)
		CHECK_STR(json_get_string(v, "v"), big);
	json_free(v);
	free(line);
	v = json_line(emit_str, "short", &line);
	if (v != NULL)
		CHECK_STR(json_get_string(v, "v"), "short");
	json_free(v);
	free(line);
	log_set_format(LOG_FORMAT_TEXT);
	line = captured(emit_str, big);
	CHECK(strlen(line) > len && line[strlen(line) - 1] == '\n');
	free(line);
	free(big);
}

static void
emit_message(void *arg)
{
	log_info("plain %s line", (const char *)arg);
}

/* log_info() in JSON: "msg" after the head; a message longer than the
 * 2 KB a plain line holds is cut, still valid. */
static void
test_json_message(void)
{
	struct json_value *v;
	char *line, *big = malloc(5000);

	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_message, "a \"quoted\"\x01", &line);
	if (v != NULL) {
		CHECK_INT(v->count, 5);
		CHECK_STR(json_get_string(v, "msg"), "plain a \"quoted\"\x01 line");
		CHECK_STR(json_get_string(v, "level"), "info");
	}
	json_free(v);
	free(line);
	memset(big, 'x', 4999);
	big[4999] = '\0';
	v = json_line(emit_message, big, &line);
	if (v != NULL)
		CHECK_INT(strlen(json_get_string(v, "msg")), 2047);
	json_free(v);
	free(line);
	log_set_format(LOG_FORMAT_TEXT);
	free(big);
}

static void
emit_two_fields(void *arg)
{
	(void)arg;
	log_fields_emit(LOG_LEVEL_INFO, ",\"a\":1", 6);
}

/* "2026-12-06T10:20:00.123Z": digits where digits are, and within a
 * second or two of the clock, also after the second changed. */
static void
check_json_time(void)
{
	struct json_value *v;
	char *line;
	const char *t;
	struct tm tm;
	time_t now = time(NULL), got;

	log_set_format(LOG_FORMAT_JSON);
	v = json_line(emit_two_fields, NULL, &line);
	log_set_format(LOG_FORMAT_TEXT);
	t = v != NULL ? json_get_string(v, "time") : NULL;
	CHECK(t != NULL && strlen(t) == 24);
	if (t != NULL && strlen(t) == 24) {
		const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

		for (size_t i = 0; i < 24; i++)
			CHECK(shape[i] == 'd' ? (t[i] >= '0' && t[i] <= '9') :
			    t[i] == shape[i]);
		memset(&tm, 0, sizeof(tm));
		CHECK(strptime(t, "%Y-%m-%dT%H:%M:%S", &tm) != NULL);
		got = timegm(&tm);
		CHECK(got >= now - 1 && got <= now + 2);
	}
	CHECK(v != NULL && json_get(v, "a") != NULL);
	json_free(v);
	free(line);
}

static void
test_time_across_seconds(void)
{
	struct timespec pause = { 0, 300 * 1000 * 1000 };

	for (int i = 0; i < 5; i++) {
		check_json_time();
		nanosleep(&pause, NULL);
	}
}

static void
test_text_prefix(void)
{
	char *line = captured(emit_message, "text");
	int y, mo, d, h, mi, s, ms, n = 0;

	CHECK(sscanf(line, "%4d-%2d-%2d %2d:%2d:%2d.%3d %n", &y, &mo, &d, &h,
	    &mi, &s, &ms, &n) == 7);
	CHECK(n == 24);
	CHECK(strstr(line, " unit \"role\"[") != NULL);
	CHECK(strstr(line, "] info: plain text line\n") != NULL);
	free(line);
}

int
main(void)
{
	log_init(true, LOG_LEVEL_DEBUG);
	log_set_role("unit \"role\"");
	RUN(test_json_members_in_order);
	RUN(test_json_escapes);
	RUN(test_numbers);
	RUN(test_long_values);
	RUN(test_json_message);
	RUN(test_time_across_seconds);
	RUN(test_text_prefix);
	return unit_done();
}
