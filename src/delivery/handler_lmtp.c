/*
 * handler_lmtp — an RFC 2033 LMTP client: the job's recipients handed to
 * a local delivery agent (Dovecot, Cyrus) over a unix socket or TCP.
 *
 *   greeting, LHLO, MAIL FROM, RCPT TO per recipient, DATA, the message
 *   (dot-stuffed), then one reply per accepted recipient, QUIT.
 *
 * A server that offers DSN (RFC 3461) is given the message's RET and
 * ENVID and each recipient's NOTIFY and ORCPT as the relay client gives
 * them (dsn.h); a recipient it delivers is then marked dsn_passed: its
 * success notice is the server's to send, not the queue's.
 *
 * Each recipient gets the reply that decided it, verbatim: its RCPT reply
 * when refused, else its own reply after the final dot (RFC 2033 4.2:
 * "one reply for each successful RCPT command", in order) -- 2xx
 * delivered, 4xx deferred, 5xx bounced.  A failure before any recipient
 * is decided (connection refused, a greeting or LHLO other than 2xx, a
 * timeout) defers every recipient; a 5xx to MAIL bounces them all.  A
 * connection lost after the dot defers the recipients whose reply did not
 * arrive (they may have been delivered: at least once).  Every read and
 * write has the job's timeout (params "timeout", default LMTP_TIMEOUT).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/dsn.h"
#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/log.h"
#include "common/util.h"

#define LMTP_LINE_MAX     1000        /* RFC 5321 4.5.3.1.5, with CRLF */
#define LMTP_CONNECT_MAX  30          /* seconds, at most, for connect */

struct lmtp {
	int      fd;
	unsigned timeout;
	char     in[4096];
	size_t   inlen;
	bool     broken;       /* the connection cannot be used any more */
	char     why[128];     /* what broke it */
};

int
lmtp_parse_address(const char *address, struct sockaddr_storage *ss,
    socklen_t *sslen, char *err, size_t errsize)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM }, *res;
	char host[256];
	const char *hp, *colon;
	size_t hlen;
	int rc;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(address, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;

		if (address[5] != '/' || strlen(address + 5) >= sizeof(sun->sun_path)) {
			snprintf(err, errsize, "bad unix socket path");
			return -1;
		}
		sun->sun_family = AF_UNIX;
		strlcpy_mx(sun->sun_path, address + 5, sizeof(sun->sun_path));
		*sslen = sizeof(*sun);
		return 0;
	}
	if (strncmp(address, "inet:", 5) != 0) {
		snprintf(err, errsize, "address is neither unix: nor inet:");
		return -1;
	}
	hp = address + 5;
	if ((colon = strrchr(hp, ':')) == NULL || colon[1] == '\0' ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
		snprintf(err, errsize, "no port in the address");
		return -1;
	}
	hlen = (size_t)(colon - hp);
	if (hlen >= 2 && hp[0] == '[' && hp[hlen - 1] == ']') {
		hp++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		snprintf(err, errsize, "bad host in the address");
		return -1;
	}
	memcpy(host, hp, hlen);
	host[hlen] = '\0';
	if ((rc = getaddrinfo(host, colon + 1, &hints, &res)) != 0) {
		snprintf(err, errsize, "cannot resolve %s: %s", host,
		    gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void
lmtp_break(struct lmtp *c, const char *why)
{
	if (!c->broken)
		strlcpy_mx(c->why, why, sizeof(c->why));
	c->broken = true;
}

/* Wait until fd is ready for events, at most timeout seconds. */
static bool
wait_fd(int fd, short events, unsigned timeout)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t deadline = monotonic_ms() + (uint64_t)timeout * 1000;
	int n;

	do {
		uint64_t now = monotonic_ms();

		if (now >= deadline)
			return false;
		n = poll(&pfd, 1, (int)(deadline - now));
	} while (n == -1 && errno == EINTR);
	return n > 0;
}

static int
lmtp_connect(struct lmtp *c, const struct sockaddr_storage *ss,
    socklen_t sslen)
{
	unsigned limit = c->timeout < LMTP_CONNECT_MAX ? c->timeout :
	    LMTP_CONNECT_MAX;
	int err = 0;
	socklen_t errlen = sizeof(err);

	c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (c->fd == -1)
		return -1;
	if (connect(c->fd, (const struct sockaddr *)ss, sslen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN)
		return -1;
	if (!wait_fd(c->fd, POLLOUT, limit)) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) == -1)
		return -1;
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

static void
lmtp_write(struct lmtp *c, const char *p, size_t len)
{
	while (len > 0 && !c->broken) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n == -1 && errno == EINTR)
			continue;
		else if (n == -1 && errno == EAGAIN) {
			if (!wait_fd(c->fd, POLLOUT, c->timeout))
				lmtp_break(c, "timed out sending");
		} else
			lmtp_break(c, "connection lost while sending");
	}
}

static void __attribute__((format(printf, 2, 3)))
lmtp_cmd(struct lmtp *c, const char *fmt, ...)
{
	char line[LMTP_LINE_MAX + 512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2) {
		lmtp_break(c, "command too long");
		return;
	}
	memcpy(line + n, "\r\n", 2);
	lmtp_write(c, line, (size_t)n + 2);
}

/* One line into out (CRLF removed); false when the connection broke. */
static bool
lmtp_line(struct lmtp *c, char *out, size_t size)
{
	for (;;) {
		char *nl = memchr(c->in, '\n', c->inlen);
		ssize_t n;

		if (nl != NULL) {
			size_t len = (size_t)(nl - c->in);
			size_t keep = len > 0 && c->in[len - 1] == '\r' ? len - 1 : len;

			if (keep >= size)
				keep = size - 1;
			memcpy(out, c->in, keep);
			out[keep] = '\0';
			c->inlen -= len + 1;
			memmove(c->in, nl + 1, c->inlen);
			return true;
		}
		if (c->inlen == sizeof(c->in)) {
			lmtp_break(c, "reply line too long");
			return false;
		}
		if (!wait_fd(c->fd, POLLIN, c->timeout)) {
			lmtp_break(c, "timed out waiting for a reply");
			return false;
		}
		n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
		if (n > 0)
			c->inlen += (size_t)n;
		else if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		else {
			lmtp_break(c, "connection lost");
			return false;
		}
	}
}

/*
 * One reply, its lines joined with " / " into reply; returns the code, or
 * -1 when the connection broke or the reply is malformed.  caps (may be
 * NULL) gets the text of every line, space-separated, for LHLO.
 */
static int
lmtp_reply(struct lmtp *c, char *reply, size_t size, struct buf *caps)
{
	char line[LMTP_LINE_MAX + 1];
	size_t len = 0;
	int code = -1;

	reply[0] = '\0';
	for (int lines = 0; !c->broken && lines < 100; lines++) {
		if (!lmtp_line(c, line, sizeof(line)))
			return -1;
		if (strlen(line) < 3 || strspn(line, "0123456789") < 3 ||
		    (line[3] != '\0' && line[3] != ' ' && line[3] != '-') ||
		    (code != -1 && atoi(line) != code)) {
			lmtp_break(c, "malformed reply");
			return -1;
		}
		code = atoi(line);
		if (caps != NULL && line[3] != '\0')
			buf_appendf(caps, " %s ", line + 4);
		if (len < size)
			len += (size_t)snprintf(reply + len, size - len, "%s%s",
			    len > 0 ? " / " : "", len > 0 ? line + 4 : line);
		if (line[3] != '-')
			return code;
	}
	lmtp_break(c, "reply too long");
	return -1;
}

/* A recipient's outcome from a reply: by its class; anything but 2xx,
 * 4xx and 5xx where a final reply is due is deferred. */
static void
set_from_reply(struct delivery_rcpt *r, int code, const char *reply,
    const char *what)
{
	if (code >= 200 && code < 300)
		delivery_set(r, DELIVERY_OK, "%s", reply);
	else if (code >= 400 && code < 500)
		delivery_set(r, DELIVERY_DEFER, "%s", reply);
	else if (code >= 500 && code < 600)
		delivery_set(r, DELIVERY_FAIL, "%s", reply);
	else {
		delivery_set(r, DELIVERY_DEFER, "451 4.5.0 unexpected reply to %s: "
		    "%s", what, reply);
		return;
	}
	/* The LMTP server's own words: "smtp;" in a DSN (RFC 3464 2.3.6). */
	r->remote = true;
}

/* The message, dot-stuffed (RFC 5321 4.5.2), ending in CRLF . CRLF. */
static void
send_content(struct lmtp *c, const char *content, size_t len)
{
	struct buf out;
	const char *p = content, *end = content + len;

	buf_init(&out);
	buf_reserve(&out, len + len / 64 + 8);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl != NULL ? nl + 1 : end;

		if (*p == '.')
			buf_append(&out, ".", 1);
		buf_append(&out, p, (size_t)(stop - p));
		p = stop;
	}
	if (out.len > 0 && (out.len < 2 || out.data[out.len - 2] != '\r' ||
	    out.data[out.len - 1] != '\n'))
		buf_appends(&out, "\r\n");
	buf_appends(&out, ".\r\n");
	lmtp_write(c, out.data, out.len);
	buf_free(&out);
}

/* Greeting and LHLO; false (recipients deferred) when refused. */
static bool
lmtp_hello(struct delivery_job *job, struct lmtp *c, struct buf *caps)
{
	char reply[DELIVERY_REPLY_MAX];
	int code;

	if ((code = lmtp_reply(c, reply, sizeof(reply), NULL)) != 220) {
		if (code != -1)
			delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.0 LMTP "
			    "server greeted with: %s", reply);
		return false;
	}
	lmtp_cmd(c, "LHLO %s", job->conf != NULL && job->conf->hostname != NULL ?
	    job->conf->hostname : "localhost");
	if ((code = lmtp_reply(c, reply, sizeof(reply), caps)) / 100 != 2) {
		if (code != -1)
			delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.0 LMTP "
			    "server refused LHLO: %s", reply);
		return false;
	}
	return true;
}

static bool
has_cap(const struct buf *caps, const char *name)
{
	char pat[64];

	snprintf(pat, sizeof(pat), " %s ", name);
	return caps->data != NULL && strcasestr(caps->data, pat) != NULL;
}

/* The transaction on an open connection. */
static void
lmtp_transaction(struct delivery_job *job, struct lmtp *c,
    const char *content)
{
	char reply[DELIVERY_REPLY_MAX];
	struct delivery_rcpt **accepted;
	size_t naccepted = 0;
	struct buf caps, params;
	bool dsn;
	int code;

	buf_init(&caps);
	if (!lmtp_hello(job, c, &caps)) {
		buf_free(&caps);
		return;
	}
	dsn = has_cap(&caps, "DSN");
	buf_init(&params);
	if (dsn)
		dsn_mail_params(&params, job->dsn_ret, job->dsn_envid);
	lmtp_cmd(c, "MAIL FROM:<%s>%s%s%s", job->sender,
	    job->body_8bitmime && has_cap(&caps, "8BITMIME") ? " BODY=8BITMIME" : "",
	    job->smtputf8 && has_cap(&caps, "SMTPUTF8") ? " SMTPUTF8" : "",
	    params.len > 0 ? params.data : "");
	buf_free(&caps);
	if ((code = lmtp_reply(c, reply, sizeof(reply), NULL)) / 100 != 2) {
		buf_free(&params);
		for (size_t i = 0; code != -1 && i < job->nrcpts; i++)
			if (job->rcpts[i].status == DELIVERY_PENDING)
				set_from_reply(&job->rcpts[i], code, reply,
				    "MAIL");
		return;
	}
	accepted = xcalloc(job->nrcpts + 1, sizeof(*accepted));
	for (size_t i = 0; i < job->nrcpts && !c->broken; i++) {
		struct delivery_rcpt *r = &job->rcpts[i];

		if (r->status != DELIVERY_PENDING)
			continue;
		buf_reset(&params);
		if (dsn)
			dsn_rcpt_params(&params, r->dsn_notify, r->dsn_orcpt,
			    r->address);
		lmtp_cmd(c, "RCPT TO:<%s>%s", r->address,
		    params.len > 0 ? params.data : "");
		if ((code = lmtp_reply(c, reply, sizeof(reply), NULL)) == -1)
			break;
		if (code / 100 == 2)
			accepted[naccepted++] = r;
		else
			set_from_reply(r, code, reply, "RCPT");
	}
	if (naccepted > 0 && !c->broken) {
		lmtp_cmd(c, "DATA");
		code = lmtp_reply(c, reply, sizeof(reply), NULL);
		if (code == 354) {
			send_content(c, content, job->content_len);
			for (size_t i = 0; i < naccepted && !c->broken; i++)
				if ((code = lmtp_reply(c, reply, sizeof(reply),
				    NULL)) != -1) {
					set_from_reply(accepted[i], code, reply,
					    "the message");
					/* It took NOTIFY: a success
					 * notice is its to send. */
					accepted[i]->dsn_passed = dsn &&
					    code / 100 == 2;
				}
		} else if (code != -1) {
			for (size_t i = 0; i < naccepted; i++)
				set_from_reply(accepted[i], code / 100 == 2 ? 0 : code,
				    reply, "DATA");
		}
	}
	free(accepted);
	buf_free(&params);
	if (!c->broken) {
		lmtp_cmd(c, "QUIT");
		lmtp_reply(c, reply, sizeof(reply), NULL);
	}
}

int
handler_lmtp(struct delivery_job *job, const struct json_value *params)
{
	const char *address = json_get_string(params, "address"), *content;
	struct lmtp c = { .fd = -1, .timeout = LMTP_TIMEOUT };
	struct sockaddr_storage ss;
	socklen_t sslen;
	long long timeout;
	char err[256];

	if (address == NULL) {
		log_error("id=%s lmtp: no \"address\" in the parameters",
		    job->queue_id);
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.5 lmtp without an address");
		return -1;
	}
	strlcpy_mx(job->destination, address, sizeof(job->destination));
	if (json_get_int(params, "timeout", &timeout) == 0 && timeout > 0 &&
	    timeout < DELIVERY_JOB_TIMEOUT / 4)
		c.timeout = (unsigned)timeout;
	if (lmtp_parse_address(address, &ss, &sslen, err, sizeof(err)) == -1) {
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.3 LMTP "
		    "address %s: %s", address, err);
		return 0;
	}
	if ((content = delivery_content(job)) == NULL)
		return -1;
	if (lmtp_connect(&c, &ss, sslen) == -1) {
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.1 cannot "
		    "connect to %s: %s", address, strerror(errno));
		if (c.fd != -1)
			close(c.fd);
		return 0;
	}
	lmtp_transaction(job, &c, content);
	if (c.broken)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.2 LMTP %s: %s",
		    address, c.why);
	close(c.fd);
	return 0;
}
