/*
 * fuzz_relay_mx — libFuzzer harness for relay_parse_mx() (relay.h): the
 * MX records of a DNS answer, which come from the network through the
 * resolver and are not to be trusted.
 *
 * Input: the answer, as res_query() would return it.  Besides the
 * sanitizers it checks: the count is -1 or within 0..max, every host is
 * terminated within its buffer, the records are sorted by preference,
 * and a null MX (".") has the empty host.  The same answer goes through
 * dane_parse_tlsa() (dane.h): at most DANE_MAX_TLSA records kept, each
 * one usable and within its buffer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/dane.h"
#include "delivery/relay.h"

#define MAX_MX 8

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_relay_mx: broken promise: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_mx mx[MAX_MX];
	static struct dane_records tlsa;
	unsigned char *answer;
	int n;

	if (size > 65535)
		return 0;
	/* A copy of its own, so that ASan sees a read past the end. */
	if ((answer = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(answer, data, size);
	memset(mx, 0x55, sizeof(mx));
	n = relay_parse_mx(answer, (int)size, mx, MAX_MX);
	check(n >= -1 && n <= MAX_MX, "count out of range");
	for (int i = 0; i < n; i++) {
		check(memchr(mx[i].host, '\0', sizeof(mx[i].host)) != NULL,
		    "host not terminated");
		check(mx[i].pref >= 0 && mx[i].pref <= 65535,
		    "preference out of range");
		check(strcmp(mx[i].host, ".") != 0, "null MX not made empty");
		if (i > 0)
			check(mx[i - 1].pref <= mx[i].pref, "not sorted");
	}
	if (dane_parse_tlsa(answer, (int)size, &tlsa) == 0) {
		check(tlsa.n <= DANE_MAX_TLSA, "too many TLSA records");
		for (size_t i = 0; i < tlsa.n; i++)
			check(tlsa.tlsa[i].len <= DANE_DATA_MAX &&
			    dane_tlsa_usable(&tlsa.tlsa[i]),
			    "unusable or oversized TLSA record kept");
	}
	free(answer);
	return 0;
}
