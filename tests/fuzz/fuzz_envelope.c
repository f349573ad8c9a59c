/*
 * fuzz_envelope — libFuzzer harness for envelope_parse() (envelope.h):
 * the envelope an smtp worker hands to the queue process, which trusts
 * the worker less than itself.
 *
 * Input: the serialized envelope.  Besides the sanitizers it checks that
 * what parses has a valid queue id and its strings, and that it
 * serializes and parses back to the same envelope.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/envelope.h"
#include "common/util.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_envelope: broken promise: %s\n", what);
		abort();
	}
}

static int
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope e, again;
	struct buf b;
	char *copy;

	/* A copy of its own, so that ASan sees a read past the end. */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	if (envelope_parse(copy, size, &e) < 0) {
		free(copy);
		return 0;
	}
	free(copy);
	check(queue_id_valid(e.queue_id), "bad queue id accepted");
	check(e.sender != NULL, "absent sender accepted");
	check(e.nrcpts >= 1, "no recipient accepted");
	for (size_t i = 0; i < e.nrcpts; i++)
		check(e.rcpts[i].address != NULL && e.rcpts[i].address[0] &&
		    e.rcpts[i].action != NULL && e.rcpts[i].action[0],
		    "recipient without address or action");

	buf_init(&b);
	envelope_serialize(&e, &b);
	check(envelope_parse(b.data, b.len, &again) == 0,
	    "serialized envelope does not parse");
	check(strcmp(e.queue_id, again.queue_id) == 0 &&
	    e.received_at == again.received_at &&
	    same_str(e.sender, again.sender) &&
	    same_str(e.client_ip, again.client_ip) &&
	    same_str(e.helo, again.helo) &&
	    same_str(e.protocol, again.protocol) &&
	    same_str(e.auth_user, again.auth_user) &&
	    e.body_8bitmime == again.body_8bitmime &&
	    e.smtputf8 == again.smtputf8 && e.nrcpts == again.nrcpts &&
	    e.dsn_ret == again.dsn_ret &&
	    same_str(e.dsn_envid, again.dsn_envid),
	    "round trip changed the envelope");
	for (size_t i = 0; i < e.nrcpts; i++)
		check(same_str(e.rcpts[i].address, again.rcpts[i].address) &&
		    same_str(e.rcpts[i].route, again.rcpts[i].route) &&
		    same_str(e.rcpts[i].action, again.rcpts[i].action) &&
		    same_str(e.rcpts[i].params, again.rcpts[i].params) &&
		    e.rcpts[i].dsn_notify == again.rcpts[i].dsn_notify &&
		    same_str(e.rcpts[i].dsn_orcpt, again.rcpts[i].dsn_orcpt),
		    "round trip changed a recipient");
	buf_free(&b);
	envelope_free(&e);
	envelope_free(&again);
	return 0;
}
