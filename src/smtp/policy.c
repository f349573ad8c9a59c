/*
 * policy — see policy.h.
 *
 * Requests wait in a FIFO until a connection is free; each connection
 * carries one request at a time (the protocol has no pipelining).  A
 * finished request -- answered, failed or timed out -- goes to the ready
 * list and is delivered at the end of policy_client_dispatch(), so that
 * callbacks never run inside policy_query() or in the middle of a
 * connection's state change.  The connections are in an event loop of
 * our own (event.h), whose descriptor is in the worker's loop; an eventfd
 * in ours wakes the worker's loop when something became ready outside
 * dispatch (a connect that failed at once, a timeout).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/event.h"
#include "common/log.h"
#include "smtp/policy.h"

#define IDLE_MAX_MS   60000      /* close connections idle this long */

/* ---- the request ---- */

static void
attr(struct buf *out, const char *name, const char *value)
{
	buf_appends(out, name);
	buf_appends(out, "=");
	for (const char *p = value ? value : ""; *p != '\0'; p++) {
		/* A newline would end the attribute, or the request. */
		char c = *p == '\n' || *p == '\r' ? ' ' : *p;
		buf_append(out, &c, 1);
	}
	buf_appends(out, "\n");
}

static void
attr_num(struct buf *out, const char *name, unsigned long long v)
{
	buf_appendf(out, "%s=%llu\n", name, v);
}

void
policy_request_format(const struct policy_request *r, struct buf *out)
{
	attr(out, "request", "smtpd_access_policy");
	attr(out, "protocol_state", r->protocol_state);
	attr(out, "protocol_name", r->protocol_name);
	attr(out, "helo_name", r->helo_name);
	attr(out, "queue_id", r->queue_id);
	attr(out, "sender", r->sender);
	attr(out, "recipient", r->recipient);
	attr_num(out, "recipient_count", r->recipient_count);
	attr(out, "client_address", r->client_address);
	attr(out, "client_name", "unknown");
	attr(out, "reverse_client_name", "unknown");
	attr(out, "instance", r->instance);
	attr(out, "sasl_method", r->sasl_method);
	attr(out, "sasl_username", r->sasl_username);
	attr(out, "sasl_sender", "");
	attr_num(out, "size", r->size);
	attr(out, "ccert_subject", "");
	attr(out, "ccert_issuer", "");
	attr(out, "ccert_fingerprint", "");
	attr(out, "ccert_pubkey_fingerprint", "");
	attr(out, "encryption_protocol", r->encryption_protocol);
	attr(out, "encryption_cipher", r->encryption_cipher);
	attr_num(out, "encryption_keysize",
	    r->encryption_keysize > 0 ? (unsigned long long)r->encryption_keysize : 0);
	attr(out, "etrn_domain", "");
	attr(out, "stress", "");
	if (r->client_port > 0)
		attr_num(out, "client_port", r->client_port);
	else
		attr(out, "client_port", "");
	attr(out, "policy_context", "");
	attr(out, "server_address", r->server_address);
	if (r->server_port > 0)
		attr_num(out, "server_port", r->server_port);
	else
		attr(out, "server_port", "");
	buf_appends(out, "\n");
}

/* ---- the answer ---- */

/* "D.D.D" of class c (RFC 3463) at the start of text, followed by a space
 * or the end. */
static bool
has_enhanced(const char *text, char c)
{
	const char *p = text;

	if (*p++ != c || *p++ != '.')
		return false;
	for (int part = 0; part < 2; part++) {
		int n = 0;
		while (isdigit((unsigned char)*p) && n < 3) {
			p++;
			n++;
		}
		if (n == 0 || (part == 0 && *p++ != '.'))
			return false;
	}
	return *p == ' ' || *p == '\0';
}

void
policy_answer_set(struct policy_answer *a, int code, const char *text,
    const char *fallback)
{
	char cls = (char)('0' + code / 100);

	if (text[0] == '\0')
		text = fallback;
	a->verdict = code >= 500 ? POLICY_REJECT : POLICY_TEMPFAIL;
	a->code = code;
	if (has_enhanced(text, cls))
		snprintf(a->text, sizeof(a->text), "%s", text);
	else
		snprintf(a->text, sizeof(a->text), "%c.7.1 %s", cls, text);
}

/* "name: value" on one line: RFC 5322 2.2 field name, printable value. */
static bool
header_field_valid(const char *f)
{
	const unsigned char *p = (const unsigned char *)f;

	if (*p == ':')
		return false;
	while (*p >= 33 && *p <= 126 && *p != ':')
		p++;
	if (*p++ != ':')
		return false;
	for (; *p != '\0'; p++) {
		if (*p < 32 && *p != '\t')
			return false;
		if (*p == 127)
			return false;
	}
	return true;
}

/* The access(5) actions that leave the stage undecided (policy.h). */
static enum policy_extra
extra_action(const char *word)
{
	static const struct {
		const char *word;
		enum policy_extra extra;
	} extras[] = {
		{ "WARN", POLICY_EXTRA_WARN },
		{ "INFO", POLICY_EXTRA_INFO },
		{ "DEFER_IF_REJECT", POLICY_EXTRA_DEFER_IF_REJECT },
		{ "HOLD", POLICY_EXTRA_HOLD },
		{ "DISCARD", POLICY_EXTRA_DISCARD },
	};

	for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
		if (strcasecmp(word, extras[i].word) == 0)
			return extras[i].extra;
	}
	return POLICY_EXTRA_NONE;
}

int
policy_action_parse(const char *action, struct policy_answer *a)
{
	char word[32];
	const char *p = action, *rest;
	size_t n = 0, end;
	char text[480];

	while (*p == ' ' || *p == '\t')
		p++;
	while (p[n] != '\0' && p[n] != ' ' && p[n] != '\t')
		n++;
	rest = p + n;
	while (*rest == ' ' || *rest == '\t')
		rest++;
	end = strlen(rest);
	while (end > 0 && isspace((unsigned char)rest[end - 1]))
		end--;
	snprintf(text, sizeof(text), "%.*s", (int)end, rest);
	if (n == 0 || n >= sizeof(word)) {
		snprintf(a->why, sizeof(a->why), "empty or overlong action");
		return -1;
	}
	memcpy(word, p, n);
	word[n] = '\0';
	a->code = 0;
	a->text[0] = '\0';
	a->prepend[0] = '\0';
	a->extra = POLICY_EXTRA_NONE;
	if (strcasecmp(word, "PREPEND") == 0) {
		/* text was cut at 480 bytes: take the field from the action. */
		if (end == 0 || end > POLICY_HEADER_MAX) {
			snprintf(a->why, sizeof(a->why), "malformed PREPEND "
			    "header field");
			return -1;
		}
		memcpy(a->prepend, rest, end);
		a->prepend[end] = '\0';
		if (!header_field_valid(a->prepend)) {
			a->prepend[0] = '\0';
			snprintf(a->why, sizeof(a->why), "malformed PREPEND "
			    "header field");
			return -1;
		}
		a->verdict = POLICY_CONTINUE;
	} else if (strcasecmp(word, "DUNNO") == 0) {
		a->verdict = POLICY_CONTINUE;
	} else if ((a->extra = extra_action(word)) != POLICY_EXTRA_NONE) {
		a->verdict = POLICY_CONTINUE;
		snprintf(a->text, sizeof(a->text), "%s", text);
	} else if (strcasecmp(word, "OK") == 0) {
		a->verdict = POLICY_ACCEPT;
	} else if (strcasecmp(word, "REJECT") == 0) {
		policy_answer_set(a, 554, text, "Access denied");
	} else if (strcasecmp(word, "DEFER") == 0 ||
	    strcasecmp(word, "DEFER_IF_PERMIT") == 0) {
		policy_answer_set(a, 450, text, "Try again later");
	} else if (n == 3 && (word[0] == '4' || word[0] == '5') &&
	    isdigit((unsigned char)word[1]) && isdigit((unsigned char)word[2])) {
		policy_answer_set(a, atoi(word), text, word[0] == '4' ?
		    "Try again later" : "Access denied");
	} else {
		snprintf(a->why, sizeof(a->why), "action \"%.60s\" is not "
		    "supported by mxgate (see mxgate.conf(5))", word);
		return -1;
	}
	snprintf(a->why, sizeof(a->why), "action=%.140s", p);
	return 0;
}

int
policy_default_check(const char *action, char *why, size_t size)
{
	struct policy_answer a;

	if (policy_action_parse(action, &a) == 0)
		return 0;
	snprintf(why, size, "%s; use DUNNO, OK, REJECT [text], DEFER [text], "
	    "\"4NN/5NN text\", WARN, INFO, HOLD or DISCARD", a.why);
	return -1;
}

long
policy_answer_end(const char *data, size_t len)
{
	size_t limit = len < POLICY_ANSWER_MAX ? len : POLICY_ANSWER_MAX;

	if (memchr(data, '\0', limit) != NULL)
		return -1;
	if (limit > 0 && data[0] == '\n')
		return 1;
	for (size_t i = 1; i < limit; i++) {
		if (data[i] == '\n' && data[i - 1] == '\n')
			return (long)i + 1;
	}
	return len >= POLICY_ANSWER_MAX ? -1 : 0;
}

int
policy_answer_action(const char *answer, size_t len, char *out, size_t size)
{
	const char *line = answer, *end = answer + len;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n >= 7 && strncmp(line, "action=", 7) == 0) {
			snprintf(out, size, "%.*s", (int)(n - 7), line + 7);
			return 0;
		}
		if (nl == NULL)
			break;
		line = nl + 1;
	}
	return -1;
}

/* ---- addresses ---- */

int
policy_address_parse(const char *service, struct sockaddr_storage *ss,
    socklen_t *sslen, char *why, size_t whylen)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(service, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		const char *path = service + 5;
		if (path[0] != '/' || strlen(path) >= sizeof(sun->sun_path)) {
			snprintf(why, whylen, "unix: needs an absolute path shorter "
			    "than %zu bytes", sizeof(sun->sun_path));
			return -1;
		}
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		*sslen = sizeof(*sun);
		return 0;
	}
	if (strncmp(service, "inet:", 5) == 0) {
		const char *host = service + 5, *colon;
		char h[INET6_ADDRSTRLEN + 2];
		size_t hl;
		char *end;
		long port;

		if (host[0] == '[') {
			colon = strstr(host, "]:");
			host++;
			hl = colon ? (size_t)(colon - host) : 0;
			if (colon)
				colon++;
		} else {
			colon = strrchr(host, ':');
			hl = colon ? (size_t)(colon - host) : 0;
		}
		if (colon == NULL || hl == 0 || hl >= sizeof(h))
			goto bad_inet;
		memcpy(h, host, hl);
		h[hl] = '\0';
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 ||
		    port > 65535)
			goto bad_inet;
		if (strcmp(h, "localhost") == 0)
			strcpy(h, "127.0.0.1");
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET, h, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)port);
			*sslen = sizeof(*sin);
			return 0;
		}
		if (inet_pton(AF_INET6, h, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)port);
			*sslen = sizeof(*sin6);
			return 0;
		}
bad_inet:
		snprintf(why, whylen, "inet: needs an IP address and a port, "
		    "\"inet:127.0.0.1:10023\" or \"inet:[::1]:10023\" (no host "
		    "names: the workers do no DNS for this)");
		return -1;
	}
	snprintf(why, whylen, "must be \"unix:/path\" or \"inet:address:port\"");
	return -1;
}

int
policy_address_check(const char *service, char *why, size_t whylen)
{
	struct sockaddr_storage ss;
	socklen_t len;

	return policy_address_parse(service, &ss, &len, why, whylen);
}

/* ---- the client ---- */

struct preq {
	struct preq   *next;        /* queue or ready list */
	struct preq   *all_next, *all_prev;
	uint64_t       id;
	uint64_t       deadline_ms;
	struct buf     text;
	policy_done_fn done;
	void          *ctx;
	bool           cancelled;
	bool           queued;      /* in the queue */
	bool           finished;    /* in the ready list */
	unsigned       retries;
	struct pconn  *conn;
	struct policy_answer answer;
};

enum pconn_state { PC_FREE, PC_CONNECTING, PC_WRITING, PC_READING, PC_IDLE };

struct pconn {
	int            fd;
	enum pconn_state state;
	struct preq   *req;
	size_t         woff;
	char           in[POLICY_ANSWER_MAX];
	size_t         inlen;
	bool           reused;      /* answered a request before */
	uint64_t       idle_since;
	uint32_t       events;
};

struct policy_client {
	struct event_loop *loop;
	int            evfd;
	char          *service;
	struct sockaddr_storage addr;
	socklen_t      addrlen;
	unsigned       timeout_ms;
	char          *default_action;
	struct pconn   conns[POLICY_MAX_CONNS];
	struct preq   *queue, **queue_tail;
	struct preq   *ready, **ready_tail;
	struct preq   *all;
	uint64_t       next_id;
	unsigned       pending;
};

static void pump(struct policy_client *c);

static void
wake(struct policy_client *c)
{
	uint64_t one = 1;

	while (write(c->evfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void
conn_watch(struct policy_client *c, struct pconn *pc, uint32_t events)
{
	if (pc->events == events)
		return;
	event_mod(c->loop, pc->fd, events);
	pc->events = events;
}

static void
conn_close(struct policy_client *c, struct pconn *pc)
{
	if (pc->fd >= 0) {
		event_del(c->loop, pc->fd);
		close(pc->fd);
	}
	pc->fd = -1;
	pc->state = PC_FREE;
	pc->req = NULL;
	pc->events = 0;
	pc->reused = false;
}

/* The request is over: to the ready list (delivered by dispatch). */
static void
finish(struct policy_client *c, struct preq *r)
{
	if (r->conn != NULL) {
		r->conn->req = NULL;
		r->conn = NULL;
	}
	r->finished = true;
	r->next = NULL;
	*c->ready_tail = r;
	c->ready_tail = &r->next;
	wake(c);
}

const char *
policy_client_service(const struct policy_client *c)
{
	return c->service;
}

static void
finish_default(struct policy_client *c, struct preq *r, const char *why)
{
	policy_action_parse(c->default_action, &r->answer);
	r->answer.is_default = true;
	snprintf(r->answer.why, sizeof(r->answer.why), "%s, default %.60s", why,
	    c->default_action);
	finish(c, r);
}

static void
queue_push(struct policy_client *c, struct preq *r, bool front)
{
	r->queued = true;
	if (front) {
		r->next = c->queue;
		c->queue = r;
		if (c->queue_tail == &c->queue)
			c->queue_tail = &r->next;
	} else {
		r->next = NULL;
		*c->queue_tail = r;
		c->queue_tail = &r->next;
	}
}

static void
queue_remove(struct policy_client *c, struct preq *r)
{
	struct preq **pp;

	for (pp = &c->queue; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			if (c->queue_tail == &r->next)
				c->queue_tail = pp;
			r->queued = false;
			return;
		}
	}
}

/*
 * The connection broke.  A request sent on a reused connection that the
 * service had closed meanwhile (nothing read yet) is tried once more.
 */
static void
conn_fail(struct policy_client *c, struct pconn *pc, const char *why)
{
	struct preq *r = pc->req;
	bool retry = r != NULL && pc->reused && pc->inlen == 0 &&
	    r->retries == 0;

	conn_close(c, pc);
	if (r == NULL)
		return;
	r->conn = NULL;
	if (retry) {
		r->retries++;
		queue_push(c, r, true);
		return;
	}
	log_warn("policy service %s: %s", c->service, why);
	finish_default(c, r, why);
}

static void
conn_write(struct policy_client *c, struct pconn *pc)
{
	struct preq *r = pc->req;

	while (pc->woff < r->text.len) {
		ssize_t n = send(pc->fd, r->text.data + pc->woff,
		    r->text.len - pc->woff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				conn_watch(c, pc, EPOLLOUT);
				return;
			}
			conn_fail(c, pc, strerror(errno));
			return;
		}
		pc->woff += (size_t)n;
	}
	pc->state = PC_READING;
	pc->inlen = 0;
	conn_watch(c, pc, EPOLLIN);
}

static void
conn_answer(struct policy_client *c, struct pconn *pc, size_t len)
{
	struct preq *r = pc->req;
	char action[512];

	if (policy_answer_action(pc->in, len, action, sizeof(action)) < 0) {
		log_warn("policy service %s: answer without action=",
		    c->service);
		finish_default(c, r, "no action in the answer");
	} else if (policy_action_parse(action, &r->answer) < 0) {
		log_warn("policy service %s: %s; applying the default \"%s\"",
		    c->service, r->answer.why, c->default_action);
		finish_default(c, r, r->answer.why);
	} else {
		finish(c, r);
	}
	/* Anything after the answer is a protocol error. */
	if (pc->inlen > len) {
		conn_close(c, pc);
		return;
	}
	pc->state = PC_IDLE;
	pc->reused = true;
	pc->inlen = 0;
	pc->idle_since = monotonic_ms();
	conn_watch(c, pc, EPOLLIN);
}

static void
conn_read(struct policy_client *c, struct pconn *pc)
{
	for (;;) {
		ssize_t n = recv(pc->fd, pc->in + pc->inlen,
		    sizeof(pc->in) - pc->inlen, 0);
		long end;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			if (pc->state == PC_IDLE)
				conn_close(c, pc);    /* the service hung up */
			else
				conn_fail(c, pc, n == 0 ? "connection closed" :
				    strerror(errno));
			return;
		}
		if (pc->state != PC_READING) {
			conn_close(c, pc);            /* unasked-for data */
			return;
		}
		pc->inlen += (size_t)n;
		end = policy_answer_end(pc->in, pc->inlen);
		if (end < 0) {
			conn_fail(c, pc, "malformed or overlong answer");
			return;
		}
		if (end > 0) {
			conn_answer(c, pc, (size_t)end);
			return;
		}
	}
}

static void
conn_connected(struct policy_client *c, struct pconn *pc)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(pc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		conn_fail(c, pc, strerror(err));
		return;
	}
	pc->state = PC_WRITING;
	conn_write(c, pc);
}

/* Our loop's callbacks (event.h). */
static void
on_wake(void *arg, int fd, uint32_t events)
{
	uint64_t count;

	(void)arg;
	(void)events;
	while (read(fd, &count, sizeof(count)) < 0 && errno == EINTR)
		;
}

static void
on_conn(void *arg, int fd, uint32_t events)
{
	struct policy_client *c = arg;
	struct pconn *pc = NULL;

	(void)events;
	for (int i = 0; i < POLICY_MAX_CONNS; i++)
		if (c->conns[i].fd == fd)
			pc = &c->conns[i];
	if (pc == NULL)
		return;
	switch (pc->state) {
	case PC_CONNECTING:
		conn_connected(c, pc);
		break;
	case PC_WRITING:
		conn_write(c, pc);
		break;
	case PC_READING:
	case PC_IDLE:
		conn_read(c, pc);
		break;
	case PC_FREE:
		break;
	}
}

/* Open a connection for r in the free slot pc. */
static void
conn_open(struct policy_client *c, struct pconn *pc, struct preq *r)
{
	pc->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	pc->req = r;
	r->conn = pc;
	pc->woff = 0;
	pc->inlen = 0;
	pc->reused = false;
	if (pc->fd < 0) {
		conn_fail(c, pc, strerror(errno));
		return;
	}
	event_add(c->loop, pc->fd, EPOLLOUT, on_conn, c);
	pc->events = EPOLLOUT;
	if (connect(pc->fd, (struct sockaddr *)&c->addr, c->addrlen) == 0) {
		pc->state = PC_WRITING;
		conn_write(c, pc);
	} else if (errno == EINPROGRESS || errno == EAGAIN) {
		pc->state = PC_CONNECTING;
	} else {
		conn_fail(c, pc, strerror(errno));
	}
}

/* Hand waiting requests to idle or new connections. */
static void
pump(struct policy_client *c)
{
	while (c->queue != NULL) {
		struct pconn *idle = NULL, *free_slot = NULL;
		struct preq *r;

		for (int i = 0; i < POLICY_MAX_CONNS; i++) {
			if (c->conns[i].state == PC_IDLE && idle == NULL)
				idle = &c->conns[i];
			if (c->conns[i].state == PC_FREE && free_slot == NULL)
				free_slot = &c->conns[i];
		}
		if (idle == NULL && free_slot == NULL)
			return;
		r = c->queue;
		queue_remove(c, r);
		if (idle != NULL) {
			idle->req = r;
			r->conn = idle;
			idle->woff = 0;
			idle->inlen = 0;
			idle->state = PC_WRITING;
			conn_write(c, idle);
		} else {
			conn_open(c, free_slot, r);
		}
	}
}

struct policy_client *
policy_client_new(const char *service, unsigned timeout_ms,
    const char *default_action)
{
	struct policy_client *c = xcalloc(1, sizeof(*c));
	struct policy_answer probe;
	char why[256];

	if (policy_address_parse(service, &c->addr, &c->addrlen, why, sizeof(why)) < 0 ||
	    policy_action_parse(default_action, &probe) < 0) {
		free(c);
		errno = EINVAL;
		return NULL;
	}
	c->service = xstrdup(service);
	c->default_action = xstrdup(default_action);
	c->timeout_ms = timeout_ms;
	c->queue_tail = &c->queue;
	c->ready_tail = &c->ready;
	c->next_id = 1;
	for (int i = 0; i < POLICY_MAX_CONNS; i++)
		c->conns[i].fd = -1;
	c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->evfd < 0) {
		int err = errno;
		policy_client_free(c);
		errno = err;
		return NULL;
	}
	c->loop = event_loop_new(POLICY_MAX_CONNS + 1);
	event_add(c->loop, c->evfd, EPOLLIN, on_wake, c);
	return c;
}

static void
req_free(struct policy_client *c, struct preq *r)
{
	if (r->all_prev != NULL)
		r->all_prev->all_next = r->all_next;
	else
		c->all = r->all_next;
	if (r->all_next != NULL)
		r->all_next->all_prev = r->all_prev;
	buf_free(&r->text);
	free(r);
}

void
policy_client_free(struct policy_client *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < POLICY_MAX_CONNS; i++)
		conn_close(c, &c->conns[i]);
	while (c->all != NULL)
		req_free(c, c->all);
	if (c->loop != NULL && c->evfd >= 0)
		event_del(c->loop, c->evfd);
	event_loop_free(c->loop);
	if (c->evfd >= 0)
		close(c->evfd);
	free(c->service);
	free(c->default_action);
	free(c);
}

int
policy_client_fd(const struct policy_client *c)
{
	return event_loop_fd(c->loop);
}

/* Deliver the finished requests. */
static void
deliver(struct policy_client *c)
{
	struct preq *r;

	while ((r = c->ready) != NULL) {
		c->ready = r->next;
		if (c->ready == NULL)
			c->ready_tail = &c->ready;
		if (!r->cancelled) {
			c->pending--;
			r->done(r->ctx, &r->answer);
		}
		req_free(c, r);
	}
}

void
policy_client_dispatch(struct policy_client *c)
{
	event_run(c->loop, 0);
	pump(c);
	deliver(c);
}

void
policy_client_tick(struct policy_client *c, uint64_t now_ms)
{
	for (struct preq *r = c->all; r != NULL; r = r->all_next) {
		if (r->finished || now_ms < r->deadline_ms)
			continue;
		if (r->queued)
			queue_remove(c, r);
		if (r->conn != NULL)
			conn_close(c, r->conn);   /* its answer is moot now */
		r->conn = NULL;
		log_warn("policy service %s: no answer in %u ms", c->service,
		    c->timeout_ms);
		finish_default(c, r, "timeout");
	}
	for (int i = 0; i < POLICY_MAX_CONNS; i++) {
		if (c->conns[i].state == PC_IDLE &&
		    now_ms - c->conns[i].idle_since >= IDLE_MAX_MS)
			conn_close(c, &c->conns[i]);
	}
	pump(c);
}

uint64_t
policy_query(struct policy_client *c, const struct policy_request *req,
    policy_done_fn done, void *ctx)
{
	struct preq *r = xcalloc(1, sizeof(*r));

	r->id = c->next_id++;
	r->done = done;
	r->ctx = ctx;
	r->deadline_ms = monotonic_ms() + c->timeout_ms;
	buf_init(&r->text);
	policy_request_format(req, &r->text);
	r->all_next = c->all;
	if (c->all != NULL)
		c->all->all_prev = r;
	c->all = r;
	c->pending++;
	queue_push(c, r, false);
	pump(c);
	return r->id;
}

void
policy_cancel(struct policy_client *c, uint64_t id)
{
	struct preq *r;

	for (r = c->all; r != NULL && r->id != id; r = r->all_next)
		;
	if (r == NULL || r->cancelled)
		return;
	r->cancelled = true;
	c->pending--;
	if (r->queued) {
		queue_remove(c, r);
		req_free(c, r);
	}
	/* On a connection: the answer is read and dropped, the connection
	 * kept.  In the ready list: dropped by deliver(). */
}

unsigned
policy_pending(const struct policy_client *c)
{
	return c->pending;
}
