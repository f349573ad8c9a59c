/*
 * fuzz_proto — libFuzzer harness for the SMTP engine.
 *
 * Input: 4 control bytes, then what the client sends.
 *   [0] flags: 1 normalize bare newlines, 2 STARTTLS, 4 AUTH,
 *       8 max_line 1000 instead of 512, 0x30 max_size (0, 100, 1000, 64k),
 *       0x40 shut down at the 3rd event, 0x80 time out at the 5th event
 *   [1] seed for the feed sizes (and a refused greeting if & 0x81)
 *   [2] max_rcpts (& 7), 0x08 implicit TLS, 0x10 AUTH without TLS,
 *       0x20 AUTH required
 *   [3] max_errors (& 31)
 *
 * After an accepted STARTTLS, the bytes up to the next NUL stand for what
 * the client pipelined before the handshake: they are fed (and must be
 * swallowed without a reply), dropped, and the handshake "succeeds".
 *
 * The engine is driven twice as session.c drives it — once in pieces of
 * varying size, once all at once — with the same answers (chosen by the
 * input byte where each event was raised, which is the same in both
 * runs).  Besides the sanitizers, it checks the engine's promises: replies
 * are well-formed CRLF lines, the sink only ever sees CRLF line endings,
 * message_size is what the sink got and stays within max_size, nothing is
 * consumed while an event waits or after closing, and how the input is
 * split changes nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_proto.h"
#include "common/util.h"

struct run {
	struct buf out;
	struct buf content;
	size_t     msg_start;   /* content.len when DATA was accepted */
	char       last;        /* last byte the sink got */
	size_t     consumed;
	unsigned   events;
	uint8_t    seed;
};

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_proto: broken promise: %s\n", what);
		abort();
	}
}

static void
sink(void *ctx, const char *data, size_t len)
{
	struct run *r = ctx;
	size_t i;

	check(len > 0, "empty sink call");
	for (i = 0; i < len; i++) {
		char prev = i > 0 ? data[i - 1] : r->last;
		if (data[i] == '\n')
			check(prev == '\r', "bare LF passed to the sink");
		if (prev == '\r')
			check(data[i] == '\n', "bare CR passed to the sink");
	}
	r->last = data[len - 1];
	buf_append(&r->content, data, len);
}

/* Every reply line: three digits, ' ' or '-', text without CR/LF, CRLF. */
static void
check_output(const char *o, size_t len)
{
	size_t i = 0, j;

	while (i < len) {
		check(len - i >= 5, "short reply line");
		check(o[i] >= '2' && o[i] <= '5' && o[i + 1] >= '0' &&
		    o[i + 1] <= '9' && o[i + 2] >= '0' && o[i + 2] <= '9',
		    "reply code");
		check(o[i + 3] == ' ' || o[i + 3] == '-' || o[i + 3] == '\r',
		    "reply separator");
		for (j = i + 3; j < len && o[j] != '\r' && o[j] != '\n'; j++)
			;
		check(j + 1 < len && o[j] == '\r' && o[j + 1] == '\n',
		    "reply line not ended by CRLF");
		check(j - i <= 512, "reply line too long");
		i = j + 2;
	}
}

static void
collect(struct proto *p, struct run *r)
{
	size_t len;
	const char *o = proto_output(p, &len);

	buf_append(&r->out, o, len);
	/* Drain in two steps to exercise partial drains. */
	proto_output_drain(p, len / 2);
	o = proto_output(p, &len);
	proto_output_drain(p, len);
}

static void
answer(struct proto *p, struct run *r, const uint8_t *in, uint8_t flags,
    const struct proto_params *pp)
{
	const struct proto_event *ev = proto_event(p);
	enum proto_event_type type = ev->type;
	uint8_t pick;

	/* Events come at line ends, so look at the byte before CRLF (the
	 * fuzzer controls it, e.g. with trailing spaces); the greeting is
	 * decided by the seed. */
	if (ev->type == PROTO_EV_CONNECT)
		pick = (r->seed & 0x81) == 0x81 ? 0 : 3;
	else
		pick = r->consumed >= 3 ? in[r->consumed - 3] : 3;
	/* "DATA" always ends in 'A' (a 451): let the seed decide, or
	 * message content would never be read. */
	if (ev->type == PROTO_EV_DATA)
		pick ^= r->seed & 0x06;

	r->events++;
	switch (ev->type) {
	case PROTO_EV_HELO:
		check(ev->helo != NULL && ev->helo[0] != '\0', "empty HELO");
		break;
	case PROTO_EV_MAIL:
	case PROTO_EV_RCPT:
		check(ev->addr_text != NULL, "no addr_text");
		check(strlen(ev->addr.local) <= ADDR_LOCAL_MAX + 2, "local");
		check(strlen(ev->addr.domain) <= ADDR_DOMAIN_MAX, "domain");
		check(ev->type == PROTO_EV_MAIL || !ev->addr.is_null,
		    "null RCPT");
		check(pp->max_size == 0 || ev->size_param <= pp->max_size,
		    "SIZE over the limit accepted");
		break;
	case PROTO_EV_MESSAGE:
		check(ev->message_size == r->content.len - r->msg_start,
		    "message_size is not what the sink got");
		check(pp->max_size == 0 || ev->message_size <= pp->max_size,
		    "message over max_size");
		break;
	case PROTO_EV_AUTH:
		check(ev->auth_mech != NULL && ev->auth_authzid != NULL &&
		    ev->auth_user != NULL && ev->auth_pass != NULL,
		    "AUTH without credentials");
		check(ev->auth_user[0] != '\0' && ev->auth_pass[0] != '\0',
		    "empty AUTH credentials");
		break;
	case PROTO_EV_MESSAGE_ABORT:
		check(ev->abort_code == 552 || ev->abort_code == 550,
		    "abort code");
		check(ev->abort_code != 550 ||
		    pp->bare_newlines == PROTO_BARE_REJECT, "bare abort");
		/* A session throws the partial content away. */
		r->content.len = r->msg_start;
		break;
	default:
		break;
	}
	if ((flags & 0x40) && r->events == 3)
		proto_shutdown(p);
	if ((flags & 0x80) && r->events == 5) {
		proto_timeout(p);
		check(proto_event(p) == NULL && proto_closing(p), "timeout");
		return;
	}
	switch (pick % 8) {
	case 0:
		proto_reply(p, 550, "5.7.1 No\n5.7.1 really not <%s>",
		    ev->addr_text ? ev->addr_text : "");
		break;
	case 1:
		proto_reply(p, 451, "4.3.0 Later");
		break;
	case 2:
		if (pick == 2)
			proto_reply(p, 421, "4.3.0 Bye");
		else
			proto_reply(p, 250, "2.0.0 Fine\r\n");
		break;
	default:
		proto_accept(p);
		break;
	}
	/* An accepted "BDAT 0 LAST" raises its MESSAGE at once. */
	check(proto_event(p) == NULL || (type == PROTO_EV_DATA &&
	    proto_event(p)->type == PROTO_EV_MESSAGE),
	    "event still pending after answer");
	if (proto_phase(p) == PROTO_PHASE_DATA ||
	    (type == PROTO_EV_DATA && proto_event(p) != NULL)) {
		r->msg_start = r->content.len;
		r->last = '\n';
	}
}

/*
 * The TLS handshake after an accepted STARTTLS.  What was pipelined behind
 * STARTTLS (here: up to the next NUL) must vanish without an answer.
 */
static void
handshake(struct proto *p, struct run *r, const uint8_t *in, size_t len,
    int whole)
{
	const uint8_t *nul = memchr(in + r->consumed, 0, len - r->consumed);
	size_t end = nul ? (size_t)(nul - in) + 1 : len, step, olen;

	while (r->consumed < end) {
		step = whole ? end - r->consumed : 1 + r->consumed % 5;
		if (step > end - r->consumed)
			step = end - r->consumed;
		check(proto_feed(p, (const char *)in + r->consumed, step) == step,
		    "input before the TLS handshake not swallowed");
		r->consumed += step;
	}
	proto_output(p, &olen);
	check(olen == 0 && proto_event(p) == NULL,
	    "input before the TLS handshake answered");
	proto_tls_started(p);
	check(!proto_tls_waiting(p) && !proto_authenticated(p) &&
	    !proto_in_transaction(p), "TLS start kept session state");
}

static void
drive(const struct proto_params *pp, const uint8_t *in, size_t len,
    uint8_t flags, uint8_t seed, int whole, struct run *r)
{
	struct proto *p = proto_new(pp, sink, r);
	unsigned state = seed;
	size_t step, n;

	r->last = '\n';
	r->seed = seed;
	proto_start(p);
	for (;;) {
		if (proto_event(p) != NULL)
			answer(p, r, in, flags, pp);
		collect(p, r);
		if (proto_tls_waiting(p) && !proto_closing(p))
			handshake(p, r, in, len, whole);
		if (proto_closing(p)) {
			check(proto_feed(p, (const char *)in, len) == 0 || len == 0,
			    "consumed after closing");
			break;
		}
		if (r->consumed == len)
			break;
		state = state * 1103515245u + 12345u;
		step = whole ? len - r->consumed : 1 + (state >> 16) % 17;
		if (step > len - r->consumed)
			step = len - r->consumed;
		n = proto_feed(p, (const char *)in + r->consumed, step);
		check(n <= step, "consumed more than given");
		r->consumed += n;
		if (n < step)
			check(proto_event(p) != NULL || proto_closing(p),
			    "stopped without reason");
		if (proto_event(p) != NULL && r->consumed < len)
			check(proto_feed(p, (const char *)in + r->consumed,
			    len - r->consumed) == 0, "consumed past an event");
	}
	/* A message the input ended in the middle of is dropped by the
	 * session, as is one whose content was refused: what reached the
	 * sink of it depends on the pieces and promises nothing. */
	if (proto_phase(p) == PROTO_PHASE_DATA)
		r->content.len = r->msg_start;
	proto_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[] = { 0, 100, 1000, 65536 };
	struct proto_params pp = { 0 };
	struct run a, b;
	uint8_t flags, seed;

	if (size < 4)
		return 0;
	flags = data[0];
	seed = data[1];
	pp.hostname = "mx.fuzz.example";
	pp.greeting_text = "ESMTP fuzz";
	pp.bare_newlines = (flags & 1) ? PROTO_BARE_NORMALIZE :
	    PROTO_BARE_REJECT;
	pp.starttls = (flags & 2) != 0;
	pp.auth = (flags & 4) != 0;
	pp.max_line = (flags & 8) ? 1000 : 512;
	pp.max_size = sizes[(flags >> 4) & 3];
	pp.max_rcpts = data[2] % 8;
	pp.tls = (data[2] & 0x08) != 0;
	pp.auth_plaintext = (data[2] & 0x10) != 0;
	pp.auth_required = (data[2] & 0x20) != 0;
	pp.max_errors = data[3] % 32;
	data += 4;
	size -= 4;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	buf_init(&a.out);
	buf_init(&a.content);
	buf_init(&b.out);
	buf_init(&b.content);
	drive(&pp, data, size, flags, seed, 0, &a);
	drive(&pp, data, size, flags, seed, 1, &b);

	check_output(a.out.data ? a.out.data : "", a.out.len);
	check(a.out.len == b.out.len && (a.out.len == 0 ||
	    memcmp(a.out.data, b.out.data, a.out.len) == 0),
	    "replies depend on how the input was split");
	check(a.content.len == b.content.len && (a.content.len == 0 ||
	    memcmp(a.content.data, b.content.data, a.content.len) == 0),
	    "content depends on how the input was split");
	check(a.consumed == b.consumed && a.events == b.events,
	    "consumption depends on how the input was split");

	buf_free(&a.out);
	buf_free(&a.content);
	buf_free(&b.out);
	buf_free(&b.content);
	return 0;
}
