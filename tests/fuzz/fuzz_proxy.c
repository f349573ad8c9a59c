/*
 * fuzz_proxy — libFuzzer harness for proxy_parse() (proxy.h): the first
 * bytes of a connection on a listener that expects a PROXY protocol
 * header from a load balancer.
 *
 * Besides the sanitizers it checks the promises the worker's reader
 * relies on: a complete header is never longer than the input; parsing
 * exactly its bytes gives the same header (what follows never changes
 * it); one byte fewer is "more", never "bad" nor "done", so the reader may
 * consume every byte of an incomplete header; a refusal says why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/proxy.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_proxy: broken promise: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header h, again;
	char why[128];
	enum proxy_status r = proxy_parse(data, size, &h, why, sizeof(why));

	if (r == PROXY_BAD) {
		check(why[0] != '\0', "a refusal says why");
		return 0;
	}
	if (r == PROXY_MORE)
		return 0;
	check(h.len > 0 && h.len <= size, "the header fits the input");
	check(h.version == 1 || h.version == 2, "a known version");
	check(h.local || h.src.ss_family == AF_INET ||
	    h.src.ss_family == AF_INET6, "an IP client, or none");
	check(proxy_parse(data, h.len, &again, why, sizeof(why)) == PROXY_DONE,
	    "the header alone is complete");
	check(again.len == h.len && again.local == h.local &&
	    memcmp(&again.src, &h.src, sizeof(h.src)) == 0 &&
	    again.ssl == h.ssl && again.ssl_cert == h.ssl_cert &&
	    strcmp(again.ssl_version, h.ssl_version) == 0 &&
	    strcmp(again.ssl_cn, h.ssl_cn) == 0,
	    "the bytes after the header do not change it");
	check(strlen(h.ssl_version) < sizeof(h.ssl_version) &&
	    strlen(h.ssl_cn) < sizeof(h.ssl_cn), "TLS texts terminated");
	check(proxy_parse(data, h.len - 1, &again, why, sizeof(why)) ==
	    PROXY_MORE, "one byte fewer is incomplete");
	return 0;
}
