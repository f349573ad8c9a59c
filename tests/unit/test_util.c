/*
 * Unit tests for util: buffers, queue ids, sizes, dates.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "common/util.h"

static void
test_buf_append_consume(void)
{
	struct buf b;

	buf_init(&b);
	buf_appends(&b, "hello ");
	buf_appendf(&b, "%s %d", "world", 42);
	CHECK_STR(b.data, "hello world 42");
	CHECK_INT(b.len, 14);
	buf_consume(&b, 6);
	CHECK_STR(b.data, "world 42");
	buf_consume(&b, 100);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
	buf_free(&b);
}

static void
test_buf_grows(void)
{
	struct buf b;
	char chunk[1000];

	memset(chunk, 'a', sizeof(chunk));
	buf_init(&b);
	for (int i = 0; i < 100; i++)
		buf_append(&b, chunk, sizeof(chunk));
	CHECK_INT(b.len, 100000);
	CHECK(b.cap > b.len);
	CHECK_INT(b.data[b.len], '\0');
	buf_free(&b);
}

static void
test_queue_id_shape_and_order(void)
{
	char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
	struct timespec pause = { 0, 2000000 };

	queue_id_new(a);
	nanosleep(&pause, NULL);
	queue_id_new(b);
	CHECK_INT(strlen(a), QUEUE_ID_LEN);
	CHECK(queue_id_valid(a));
	CHECK(queue_id_valid(b));
	/* time-ordered: a later id sorts after an earlier one */
	CHECK(strcmp(a, b) < 0);
	CHECK(strcmp(a, b) != 0);
}

/* An id for the time t_us, as queue_id_new() writes one. */
static void
id_at(uint64_t t_us, char out[QUEUE_ID_LEN + 1])
{
	static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";

	for (int i = 9; i >= 0; i--, t_us >>= 5)
		out[i] = digits[t_us & 31];
	memset(out + 10, 'K', QUEUE_ID_LEN - 10);
	out[QUEUE_ID_LEN] = '\0';
}

/* The time an id was made, to the microsecond, from its 50 bits and a
 * time in seconds from just before to a day after. */
static void
test_queue_id_time(void)
{
	char id[QUEUE_ID_LEN + 1];
	struct timeval before, after;
	const uint64_t span = 1ULL << 50;
	uint64_t t, wrap;

	gettimeofday(&before, NULL);
	queue_id_new(id);
	gettimeofday(&after, NULL);
	t = queue_id_time_us(id, (int64_t)after.tv_sec);
	CHECK(t >= (uint64_t)before.tv_sec * 1000000 + (uint64_t)before.tv_usec);
	CHECK(t <= (uint64_t)after.tv_sec * 1000000 + (uint64_t)after.tv_usec);
	/* A day later still, two days later no more. */
	CHECK_INT(queue_id_time_us(id, (int64_t)after.tv_sec + 86000), t);
	CHECK_INT(queue_id_time_us(id, (int64_t)after.tv_sec + 2 * 86400), 0);
	/* Made just before the 50 bits wrap, committed just after. */
	wrap = 2 * span;
	id_at(wrap - 300000, id);
	CHECK_INT(queue_id_time_us(id, (int64_t)(wrap / 1000000) + 1),
	    wrap - 300000);
	id_at(wrap + 1234567, id);
	CHECK_INT(queue_id_time_us(id, (int64_t)(wrap / 1000000) + 1),
	    wrap + 1234567);
	/* Not ours. */
	CHECK_INT(queue_id_time_us("short", (int64_t)after.tv_sec), 0);
	CHECK_INT(queue_id_time_us(id, 0), 0);
}

static void
test_queue_id_unique(void)
{
	enum { N = 2000 };
	static char ids[N][QUEUE_ID_LEN + 1];
	int dup = 0;

	for (int i = 0; i < N; i++)
		queue_id_new(ids[i]);
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N; j++)
			dup += strcmp(ids[i], ids[j]) == 0;
	CHECK_INT(dup, 0);
}

static void
test_queue_id_valid_rejects(void)
{
	CHECK(!queue_id_valid(""));
	CHECK(!queue_id_valid("0123456789ABCDE"));      /* 15 */
	CHECK(!queue_id_valid("0123456789ABCDEFG"));    /* 17 */
	CHECK(!queue_id_valid("0123456789ABCDEW"));     /* not base 32 */
	CHECK(!queue_id_valid("0123456789abcdef"));     /* lower case */
	CHECK(!queue_id_valid("../../etc/passwd"));
	CHECK(queue_id_valid("0123456789ABCDEF"));
}

static void
test_parse_size(void)
{
	CHECK_INT(parse_size("1000"), 1000);
	CHECK_INT(parse_size("512k"), 512 * 1024);
	CHECK_INT(parse_size("25M"), 25 * 1024 * 1024);
	CHECK_INT(parse_size("1G"), 1024LL * 1024 * 1024);
	CHECK_INT(parse_size("10MB"), 10 * 1024 * 1024);
	CHECK_INT(parse_size(""), -1);
	CHECK_INT(parse_size("M"), -1);
	CHECK_INT(parse_size("-5"), -1);
	CHECK_INT(parse_size("5X"), -1);
	CHECK_INT(parse_size("5MX"), -1);
	CHECK_INT(parse_size("10000000000G"), -1);     /* overflow */
	CHECK_INT(parse_size("99999999999999999999"), -1);
}

static void
test_rfc5322_date(void)
{
	char out[64];

	setenv("TZ", "UTC", 1);
	tzset();
	rfc5322_date(out, sizeof(out), (time_t)1795766365);
	CHECK_STR(out, "Fri, 27 Nov 2026 07:59:25 +0000");
	setenv("TZ", "EST5", 1);
	tzset();
	rfc5322_date(out, sizeof(out), (time_t)0);
	CHECK_STR(out, "Wed, 31 Dec 1969 19:00:00 -0500");
}

static void
test_strlcpy(void)
{
	char small[4];

	CHECK_INT(strlcpy_mx(small, "abcdef", sizeof(small)), 6);
	CHECK_STR(small, "abc");
}

static void
test_fd_write_all(void)
{
	char out[16] = { 0 };
	int pfd[2];

	CHECK(pipe(pfd) == 0);
	CHECK_INT(fd_write_all(pfd[1], "hello world", 11), 0);
	CHECK_INT(read(pfd[0], out, sizeof(out) - 1), 11);
	CHECK_STR(out, "hello world");
	close(pfd[0]);
	close(pfd[1]);
	CHECK_INT(fd_write_all(-1, "x", 1), -1);
}

static void
test_hash_string(void)
{
	/* FNV-1a reference values */
	CHECK_INT(hash_string(""), 2166136261u);
	CHECK_INT(hash_string("a"), 0xe40c292cu);
	CHECK(hash_string("192.0.2.1") != hash_string("192.0.2.2"));
}

static void
test_monotonic_clocks(void)
{
	uint64_t us = monotonic_us(), ms = monotonic_ms();

	CHECK(us / 1000 <= ms + 1);
	CHECK(monotonic_us() >= us);
}

int
main(void)
{
	RUN(test_buf_append_consume);
	RUN(test_buf_grows);
	RUN(test_queue_id_shape_and_order);
	RUN(test_queue_id_unique);
	RUN(test_queue_id_valid_rejects);
	RUN(test_parse_size);
	RUN(test_rfc5322_date);
	RUN(test_strlcpy);
	RUN(test_fd_write_all);
	RUN(test_queue_id_time);
	RUN(test_hash_string);
	RUN(test_monotonic_clocks);
	return unit_done();
}
