/*
 * example.c — an mxgate plugin, as an example of <mxgate/plugin.h>.
 *
 *   cc -shared -fPIC -I/usr/include -o example.so example.c
 *
 *   plugins = ( { path = "/usr/lib/mxgate/example.so";
 *                 args = "prefix=blocked- max_messages=100"; } );
 *
 * What it does, one hook per stage of the dialogue, each on a trigger
 * set by args (all optional; with none, only the default prefix acts):
 *   - on_connect: refuses the client whose address is "refuse_client="
 *     (as mxgate writes it: "192.0.2.66", "2001:db8::1"): 554 5.7.1 as
 *     the greeting, after which mxgate serves only QUIT;
 *   - on_helo: accepts at once HELO names equal to "trust_helo=" (skipping
 *     the later checks of that stage, e.g. the policy service);
 *   - on_mail: refuses MAIL FROM the address "refuse_sender="
 *     (case-insensitive; "<>" names the null sender): 550 5.7.1;
 *   - on_rcpt: refuses recipients whose local part starts with the prefix
 *     ("prefix=", default "blocked-"): 550 5.7.1 at RCPT;
 *   - on_data: answers 451 4.7.1 to DATA when the sender is
 *     "defer_sender=" (the envelope is complete there: a place for
 *     greylisting);
 *   - on_message: counts the messages of each session (its per-session
 *     context) and answers 451 4.7.1 to the end of a message once the
 *     session sent "max_messages=" (default 0: no limit); writes a line
 *     to stderr for each message it sees (with mxgated -f, that is the
 *     log).
 * Unknown args make init() fail, so that mxgated refuses to start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mxgate/plugin.h>

struct example {
	char          prefix[64];
	char          trust_helo[256];
	char          refuse_client[64];
	char          refuse_sender[320];  /* "<>": the null sender */
	char          defer_sender[320];
	unsigned long max_messages;
	unsigned long messages;        /* in this worker, all sessions */
};

struct example_session {
	unsigned long messages;
};

static int
set_arg(struct example *ex, const char *word, char *err, size_t errlen)
{
	const char *eq = strchr(word, '=');
	char *end;

	if (eq == NULL) {
		snprintf(err, errlen, "expected name=value, got \"%s\"", word);
		return -1;
	}
	if (strncmp(word, "prefix=", 7) == 0) {
		snprintf(ex->prefix, sizeof(ex->prefix), "%s", eq + 1);
	} else if (strncmp(word, "trust_helo=", 11) == 0) {
		snprintf(ex->trust_helo, sizeof(ex->trust_helo), "%s", eq + 1);
	} else if (strncmp(word, "refuse_client=", 14) == 0) {
		snprintf(ex->refuse_client, sizeof(ex->refuse_client), "%s",
		    eq + 1);
	} else if (strncmp(word, "refuse_sender=", 14) == 0) {
		snprintf(ex->refuse_sender, sizeof(ex->refuse_sender), "%s",
		    eq + 1);
	} else if (strncmp(word, "defer_sender=", 13) == 0) {
		snprintf(ex->defer_sender, sizeof(ex->defer_sender), "%s",
		    eq + 1);
	} else if (strncmp(word, "max_messages=", 13) == 0) {
		ex->max_messages = strtoul(eq + 1, &end, 10);
		if (eq[1] == '\0' || *end != '\0') {
			snprintf(err, errlen, "max_messages must be a number");
			return -1;
		}
	} else {
		snprintf(err, errlen, "unknown argument \"%.*s\"",
		    (int)(eq - word), word);
		return -1;
	}
	return 0;
}

static int
example_init(const char *args, void **state, char *err, size_t errlen)
{
	struct example *ex = calloc(1, sizeof(*ex));
	char *copy, *word, *save = NULL;
	int r = 0;

	if (ex == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(ex->prefix, sizeof(ex->prefix), "blocked-");
	copy = strdup(args);
	for (word = strtok_r(copy, " \t", &save); word != NULL && r == 0;
	    word = strtok_r(NULL, " \t", &save))
		r = set_arg(ex, word, err, errlen);
	free(copy);
	if (r < 0) {
		free(ex);
		return -1;
	}
	*state = ex;
	return 0;
}

static void
example_fini(void *state)
{
	free(state);
}

static void *
example_session_new(void *state, const struct mxgate_session *s)
{
	(void)state;
	(void)s;
	return calloc(1, sizeof(struct example_session));
}

static void
example_session_end(void *state, void *ctx)
{
	(void)state;
	free(ctx);
}

/* A configured address equal to addr; "<>" stands for the null sender. */
static int
same_address(const char *configured, const char *addr)
{
	if (configured[0] == '\0')
		return 0;
	if (strcmp(configured, "<>") == 0)
		return addr[0] == '\0';
	return strcasecmp(configured, addr) == 0;
}

static void
example_connect(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;

	(void)ctx;
	if (ex->refuse_client[0] != '\0' &&
	    strcmp(s->client_ip, ex->refuse_client) == 0) {
		r->verdict = MXGATE_REJECT;
		r->code = 554;
		snprintf(r->text, sizeof(r->text),
		    "5.7.1 <%s>: client refused by the example plugin",
		    s->client_ip);
	}
}

static void
example_helo(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;

	(void)ctx;
	if (ex->trust_helo[0] != '\0' && strcasecmp(s->helo, ex->trust_helo) == 0)
		r->verdict = MXGATE_ACCEPT;
}

static void
example_mail(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;

	(void)ctx;
	if (same_address(ex->refuse_sender, s->sender)) {
		r->verdict = MXGATE_REJECT;
		r->code = 550;
		snprintf(r->text, sizeof(r->text),
		    "5.7.1 <%s>: sender refused by the example plugin",
		    s->sender);
	}
}

static void
example_rcpt(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;
	size_t n = strlen(ex->prefix);

	(void)ctx;
	if (n > 0 && strncasecmp(s->rcpt, ex->prefix, n) == 0) {
		r->verdict = MXGATE_REJECT;
		r->code = 550;
		snprintf(r->text, sizeof(r->text),
		    "5.7.1 <%s>: recipient blocked by the example plugin", s->rcpt);
	}
}

static void
example_data(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;

	(void)ctx;
	/* The whole envelope is known here: sender and every recipient. */
	if (same_address(ex->defer_sender, s->sender)) {
		r->verdict = MXGATE_TEMPFAIL;
		r->code = 451;
		snprintf(r->text, sizeof(r->text), "4.7.1 <%s>: message for "
		    "%u recipient(s) deferred by the example plugin",
		    s->sender, s->nrcpts);
	}
}

static void
example_message(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	struct example *ex = state;
	struct example_session *es = ctx;
	const char *subject = NULL;

	ex->messages++;
	if (es != NULL)
		es->messages++;
	/* The headers are raw text: find the Subject line, for the log. */
	for (const char *p = s->headers; p != NULL && p < s->headers + s->headers_len;
	    p = memchr(p, '\n', (size_t)(s->headers + s->headers_len - p))) {
		if (*p == '\n')
			p++;
		if (strncasecmp(p, "Subject:", 8) == 0) {
			subject = p + 8;
			break;
		}
	}
	fprintf(stderr, "example plugin: session %llu message %lu (worker "
	    "total %lu) size %llu subject%.*s\n", s->id,
	    es ? es->messages : 0, ex->messages, s->message_size,
	    subject ? (int)strcspn(subject, "\r\n") : 6,
	    subject ? subject : " (none)");
	if (es != NULL && ex->max_messages > 0 &&
	    es->messages > ex->max_messages) {
		r->verdict = MXGATE_TEMPFAIL;
		r->code = 451;
		snprintf(r->text, sizeof(r->text), "4.7.1 example plugin: more "
		    "than %lu messages in one session", ex->max_messages);
	}
}

static const struct mxgate_plugin example_plugin = {
	.abi = MXGATE_PLUGIN_ABI,
	.name = "example",
	.init = example_init,
	.fini = example_fini,
	.session_new = example_session_new,
	.session_end = example_session_end,
	.on_connect = example_connect,
	.on_helo = example_helo,
	.on_mail = example_mail,
	.on_rcpt = example_rcpt,
	.on_data = example_data,
	.on_message = example_message,
};

const struct mxgate_plugin *
mxgate_plugin_register(void)
{
	return &example_plugin;
}
