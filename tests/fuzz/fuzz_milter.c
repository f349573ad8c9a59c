/*
 * fuzz_milter — libFuzzer harness for the milter codec (milter.h): what
 * a milter sends back is read by the smtp worker, and a milter is not
 * to be trusted with the worker's memory.
 *
 * Input: a stream of reply packets.  Each is decoded; an 'O' packet as a
 * negotiation reply, modifications are recorded and finally applied to
 * the input itself taken as a message, whose header fields are walked
 * as the milters are told them.  Besides the sanitizers it checks that
 * a packet never claims more than the input holds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/milter.h"
#include "common/util.h"

static void
field(void *arg, const char *name, const char *value)
{
	size_t *n = arg;

	*n += strlen(name) + strlen(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct milter_edits e;
	struct milter_packet p;
	struct milter_reply r;
	struct milter_options o;
	struct buf out;
	char why[160], text[512];
	size_t off = 0, walked = 0;
	int code;
	long n;

	milter_edits_init(&e);
	while ((n = milter_get(in + off, size - off, &p)) > 0) {
		if ((size_t)n > size - off)
			abort();
		if (p.cmd == SMFIC_OPTNEG &&
		    milter_optneg_parse(p.data, p.len, &o, why, sizeof(why)) == 0)
			milter_options_free(&o);
		else if (milter_reply_parse(&p, &r, why, sizeof(why)) == 0) {
			if (r.kind == MR_REPLYCODE)
				milter_replycode_parse(r.name, &code, text,
				    sizeof(text));
			if (r.kind == MR_ADDHEADER || r.kind == MR_INSHEADER ||
			    r.kind == MR_CHGHEADER || r.kind == MR_REPLBODY)
				milter_edits_add(&e, &r, why, sizeof(why));
		}
		off += (size_t)n;
	}
	buf_init(&out);
	milter_edits_apply(in, size, &e, &out);
	milter_headers_walk(out.data != NULL ? out.data : "", out.len, field,
	    &walked);
	buf_free(&out);
	milter_edits_free(&e);
	return 0;
}
