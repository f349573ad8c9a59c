/*
 * unit — a minimal test harness for mxgate's C unit tests.
 *
 *     static void test_something(void) { CHECK(1 + 1 == 2); CHECK_STR(a, b); }
 *     REQUIRE(p != NULL) checks, and ends the test when it fails.
 *     int main(void) { RUN(test_something); return unit_done(); }
 *
 * Output is TAP ("ok 3 - test_something", "not ok 4 - ..."), with each
 * failed check as a "#" line naming file and line; the exit status is 1
 * when any test failed, so automake's harness and tests/run.sh both see it.
 */
#ifndef MXGATE_UNIT_H
#define MXGATE_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_tests_run, unit_tests_failed, unit_current_failed;

#define CHECK(cond) do { \
	if (!(cond)) { \
		printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		unit_current_failed = 1; \
	} \
} while (0)

#define CHECK_STR(got, want) do { \
	const char *g_ = (got), *w_ = (want); \
	if (g_ == NULL || w_ == NULL || strcmp(g_, w_) != 0) { \
		printf("#   %s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, \
		    g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
		unit_current_failed = 1; \
	} \
} while (0)

#define CHECK_INT(got, want) do { \
	long long g_ = (long long)(got), w_ = (long long)(want); \
	if (g_ != w_) { \
		printf("#   %s:%d: %s is %lld, want %lld\n", __FILE__, __LINE__, \
		    #got, g_, w_); \
		unit_current_failed = 1; \
	} \
} while (0)

/* A check the rest of the test depends on: it stops there when false. */
#define REQUIRE(cond) do { \
	CHECK(cond); \
	if (!(cond)) \
		return; \
} while (0)

#define RUN(fn) do { \
	unit_current_failed = 0; \
	fn(); \
	unit_tests_run++; \
	if (unit_current_failed) unit_tests_failed++; \
	printf("%sok %d - %s\n", unit_current_failed ? "not " : "", \
	    unit_tests_run, #fn); \
	fflush(stdout); \
} while (0)

static inline int unit_done(void)
{
	printf("1..%d\n", unit_tests_run);
	return unit_tests_failed ? 1 : 0;
}

#endif
