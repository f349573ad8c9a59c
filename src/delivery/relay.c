/*
 * relay — see relay.h.
 *
 * Blocking in spirit, bounded in fact: the socket is non-blocking and
 * every read and write waits in poll() until the phase's deadline, so a
 * silent server costs a timeout, never a hung process.  OpenSSL runs
 * over the same socket (WANT_READ / WANT_WRITE wait in the same poll).
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/dsn.h"
#include "common/json.h"
#include "common/log.h"
#include "delivery/dane.h"
#include "common/dns_answer.h"
#include "delivery/mime7bit.h"
#include "delivery/mta_sts.h"
#include "delivery/relay.h"

#define RELAY_LINE_MAX   4096   /* longer reply lines are an error */
#define RELAY_MAX_ADDRS  16     /* addresses tried per host name */
#define RELAY_MAX_MX     32
#define RELAY_DOWN_MAX   64     /* refused addresses remembered */
#define RELAY_CHUNK      65536
/* With BDAT, a message up to this size goes out in the same write as
 * its envelope (one round trip); a larger one waits for the replies to
 * MAIL and RCPT, so that a refused envelope costs no body. */
#define RELAY_BDAT_EAGER (256 * 1024)
/* A connection carries at most this many transactions, for at most this
 * long (Postfix: smtp_connection_reuse_count_limit, _time_limit): a
 * long-lived delivery process must not pin one upstream server forever
 * (DNS changes, load balancing behind the name). */
#define RELAY_REUSE_MAX  1000
#define RELAY_REUSE_MS   300000

/* ---- pure parts ---- */

void
relay_reply_init(struct relay_reply *r)
{
	memset(r, 0, sizeof(*r));
}

int
relay_reply_line(struct relay_reply *r, const char *line)
{
	size_t len = strlen(r->text);
	int code;

	if (!isdigit((unsigned char)line[0]) ||
	    !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) ||
	    (line[3] != '\0' && line[3] != ' ' && line[3] != '-'))
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code < 200 || code > 599 || (r->nlines > 0 && code != r->code))
		return -1;
	if (r->nlines == 0)
		len = (size_t)snprintf(r->text, sizeof(r->text), "%.3s", line);
	if (line[3] != '\0' && line[4] != '\0' && len < sizeof(r->text) - 1)
		snprintf(r->text + len, sizeof(r->text) - len, "%s%s",
		    r->nlines == 0 ? " " : " / ", line + 4);
	r->code = code;
	r->nlines++;
	return line[3] == '-' ? 0 : 1;
}

/* "KEYWORD" at the start of s, as a whole word. */
static bool
keyword(const char *s, const char *kw, const char **rest)
{
	size_t n = strlen(kw);

	if (strncasecmp(s, kw, n) != 0 || (s[n] != '\0' && s[n] != ' ' &&
	    s[n] != '='))
		return false;
	*rest = s + n;
	return true;
}

void
relay_ehlo_parse(struct relay_ext *x, const char *const *lines,
    size_t nlines)
{
	const char *rest;
	char word[64];
	size_t i;
	int n;

	memset(x, 0, sizeof(*x));
	for (i = 0; i < nlines; i++) {
		const char *l = lines[i];

		if (keyword(l, "PIPELINING", &rest))
			x->pipelining = true;
		else if (keyword(l, "8BITMIME", &rest))
			x->eightbitmime = true;
		else if (keyword(l, "SMTPUTF8", &rest))
			x->smtputf8 = true;
		else if (keyword(l, "STARTTLS", &rest))
			x->starttls = true;
		else if (keyword(l, "DSN", &rest))
			x->dsn = true;
		else if (keyword(l, "CHUNKING", &rest))
			x->chunking = true;
		else if (keyword(l, "SIZE", &rest)) {
			x->size = true;
			x->size_max = strtoull(rest, NULL, 10);
		}
		else if (keyword(l, "AUTH", &rest)) {
			/* "AUTH PLAIN LOGIN"; old servers said "AUTH=". */
			while (*rest == ' ' || *rest == '=')
				rest++;
			while (sscanf(rest, "%63s%n", word, &n) == 1) {
				if (strcasecmp(word, "PLAIN") == 0)
					x->auth_plain = true;
				else if (strcasecmp(word, "LOGIN") == 0)
					x->auth_login = true;
				rest += n;
			}
		}
	}
}

void
relay_dot_stuff(struct relay_stuff *st, const char *p, size_t len,
    struct buf *out)
{
	size_t i = 0, run;

	buf_reserve(out, len + len / 32 + 8);
	while (i < len) {
		if (st->cr) {
			st->cr = false;
			buf_append(out, "\r\n", 2);
			st->mid_line = false;
			if (p[i] == '\n') {
				i++;
				continue;
			}
		}
		if (p[i] == '\r') {
			st->cr = true;
			i++;
			continue;
		}
		if (p[i] == '\n') {
			buf_append(out, "\r\n", 2);
			st->mid_line = false;
			i++;
			continue;
		}
		/* RFC 5321 4.5.2: a line that starts with a dot gets one
		 * more. */
		if (!st->mid_line && p[i] == '.' && !st->raw)
			buf_append(out, ".", 1);
		/* The rest of the line in one piece: a 100 KB body costs a
		 * copy, not a call per byte. */
		for (run = i + 1; run < len && p[run] != '\r' && p[run] != '\n';
		    run++)
			;
		buf_append(out, p + i, run - i);
		st->mid_line = true;
		i = run;
	}
}

void
relay_dot_end(struct relay_stuff *st, struct buf *out)
{
	if (st->cr) {
		st->cr = false;
		buf_append(out, "\r\n", 2);
		st->mid_line = false;
	}
	if (st->mid_line)
		buf_append(out, "\r\n", 2);
	if (!st->raw)
		buf_append(out, ".\r\n", 3);
	st->mid_line = false;
}

bool
relay_crlf_clean(const char *p, size_t len)
{
	const char *end = p + len, *nl;

	if (len < 2 || p[len - 2] != '\r' || p[len - 1] != '\n')
		return false;
	/* A line at a time: memchr for the LF, memchr for a CR before it. */
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL || nl == p || nl[-1] != '\r' ||
		    memchr(p, '\r', (size_t)(nl - 1 - p)) != NULL)
			return false;
		p = nl + 1;
	}
	return true;
}

int
relay_parse_host(const char *entry, int default_port, char *host,
    size_t hostsize, int *port)
{
	const char *end, *colon;
	char *stop;
	long p;
	size_t n;

	*port = default_port;
	if (entry[0] == '[') {
		end = strchr(entry, ']');
		if (end == NULL || end == entry + 1)
			return -1;
		n = (size_t)(end - entry - 1);
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] != '\0' && colon == NULL)
			return -1;
		entry++;
	} else {
		colon = strrchr(entry, ':');
		/* A bare IPv6 address has several colons: no port there. */
		if (colon != NULL && strchr(entry, ':') != colon)
			colon = NULL;
		n = colon != NULL ? (size_t)(colon - entry) : strlen(entry);
	}
	if (n == 0 || n >= hostsize)
		return -1;
	memcpy(host, entry, n);
	host[n] = '\0';
	if (colon != NULL) {
		errno = 0;
		p = strtol(colon + 1, &stop, 10);
		if (errno != 0 || *stop != '\0' || stop == colon + 1 || p < 1 ||
		    p > 65535)
			return -1;
		*port = (int)p;
	}
	return 0;
}

static int
mx_cmp(const void *a, const void *b)
{
	const struct relay_mx *x = a, *y = b;

	return x->pref - y->pref;
}

/* Equal preferences in random order (RFC 5321 5.1), spreading load. */
static void
mx_shuffle_equal(struct relay_mx *mx, size_t n)
{
	size_t i, j, start;
	struct relay_mx tmp;

	for (start = 0; start < n; start = i) {
		for (i = start + 1; i < n && mx[i].pref == mx[start].pref; i++)
			;
		for (j = i - 1; j > start; j--) {
			/* Seeded by the kernel: every delivery process
			 * draws its own order (rand() was never seeded,
			 * so all of them tried the same host first). */
			size_t k = start +
			    (size_t)arc4random_uniform((uint32_t)(j - start + 1));

			tmp = mx[j];
			mx[j] = mx[k];
			mx[k] = tmp;
		}
	}
}

int
relay_parse_mx(const unsigned char *answer, int len, struct relay_mx *out,
    size_t max)
{
	char name[NS_MAXDNAME];
	struct dns_answer a;
	struct dns_rr rr;
	int rc;
	size_t count = 0;

	if (dns_answer_open(&a, answer, len) == -1)
		return -1;
	while ((rc = dns_answer_next(&a, &rr)) == 1) {
		if (rr.type != ns_t_mx || rr.rdlen < 3 || count >= max)
			continue;
		if (dn_expand(answer, answer + len, rr.rdata + 2, name,
		    sizeof(name)) < 0)
			return -1;
		out[count].pref = rr.rdata[0] << 8 | rr.rdata[1];
		/* The root, ".", is a null MX. */
		strlcpy_mx(out[count].host, strcmp(name, ".") == 0 ?
		    "" : name, sizeof(out[count].host));
		count++;
	}
	if (rc == -1)
		return -1;
	qsort(out, count, sizeof(*out), mx_cmp);
	mx_shuffle_equal(out, count);
	return (int)count;
}

bool
relay_has_8bit(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)p[i] >= 0x80)
			return true;
	return false;
}

/* ---- where to: the upstream's settings, or MX's ---- */

struct target {
	const char *name;               /* upstream name or "mx" */
	int         level;              /* enum tls_level */
	bool        log_unverified;     /* "opportunistic" with tls_verify */
	const char *tls_ca;
	bool        mx_secure;          /* mx: the MX answer was DNSSEC-
	                                 * secure, so DANE may apply */
	const char *domain;             /* mx: the recipient domain */
	const struct sts_policy *sts;   /* mx: its MTA-STS policy, or NULL */
	const char *auth_user, *auth_password;
	const char *helo;
	int         port;
	bool        chunking;           /* BDAT where offered */
};

/* One host to try, resolved lazily. */
struct host {
	char        name[256];
	int         port;
};

/* What TLS one host gets: the target's level made concrete by its
 * TLSA records (a dane level becomes dane, encrypt or may). */
struct host_tls {
	int         level;              /* enum tls_level */
	const struct dane_records *dane;        /* level dane: the records */
	bool        report_only;        /* MTA-STS testing: failures are
	                                 * recorded, not enforced */
	const char *policy_type;        /* TLS-RPT: "tlsa", "sts",
	                                 * "no-policy-found" */
};

/* ---- the connection ---- */

/* The reason a server was given up on, in reply form (cut to fit). */
static void why_set(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
why_set(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}


struct conn {
	int         fd;
	SSL        *ssl;
	bool        tls;
	char        key[512];           /* what it may be reused for */
	char        host[256];          /* the name we know it by */
	char        dest[DELIVERY_DEST_MAX];   /* "host[addr]:port" */
	char        err[256];           /* the last I/O problem */
	bool        broken;             /* a read or write failed: no QUIT */
	const char *rpt_fail;           /* TLS-RPT result type of a TLS
	                                 * failure (RFC 8460 4.3) */
	unsigned    uses;               /* transactions begun on it */
	bool        bdat;               /* messages go out with BDAT */
	uint64_t    opened_ms;
	struct relay_ext ext;
	char        in[RELAY_LINE_MAX + 2];
	size_t      inlen;
	const struct mxconf *conf;
};

/* The connection kept for the next job of this process. */
static struct conn *cached;

/* Addresses that refused us or timed out, and why: not tried again. */
static struct {
	char addr[96];
	char why[DELIVERY_REPLY_MAX];
} down[RELAY_DOWN_MAX];
static size_t ndown;

/* TLS client contexts, by CA file (NULL: the system's). */
static struct {
	char    *ca;
	SSL_CTX *ctx;
} tls_ctxs[4];

static uint64_t
deadline_in(unsigned seconds)
{
	return monotonic_ms() + (uint64_t)seconds * 1000;
}

static const char *
ssl_error_text(void)
{
	static char text[160];
	unsigned long e = ERR_get_error();

	if (e == 0)
		return errno != 0 ? strerror(errno) : "connection closed";
	ERR_error_string_n(e, text, sizeof(text));
	ERR_clear_error();
	return text;
}

/* Wait until fd is ready for events or the deadline passes. */
static int
wait_fd(int fd, short events, uint64_t deadline_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t now;
	int r;

	for (;;) {
		now = monotonic_ms();
		if (now >= deadline_ms) {
			errno = ETIMEDOUT;
			return -1;
		}
		r = poll(&pfd, 1, (int)(deadline_ms - now));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* Wait as OpenSSL asks after a call that returned r. */
static int
ssl_wait(struct conn *c, int r, uint64_t deadline_ms)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(c->fd, POLLIN, deadline_ms);
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(c->fd, POLLOUT, deadline_ms);
	default:
		return -1;
	}
}

static ssize_t
conn_read(struct conn *c, char *buf, size_t n, uint64_t deadline_ms)
{
	ssize_t r;
	int sr;

	for (;;) {
		errno = 0;
		if (c->ssl != NULL) {
			ERR_clear_error();
			sr = SSL_read(c->ssl, buf, (int)n);
			if (sr > 0)
				return sr;
			if (SSL_get_error(c->ssl, sr) == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (ssl_wait(c, sr, deadline_ms) < 0) {
				snprintf(c->err, sizeof(c->err), "%s",
				    errno == ETIMEDOUT ? "timeout" :
				    ssl_error_text());
				return -1;
			}
			continue;
		}
		r = recv(c->fd, buf, n, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || wait_fd(c->fd, POLLIN, deadline_ms) < 0) {
			snprintf(c->err, sizeof(c->err), "%s",
			    errno == ETIMEDOUT ? "timeout" : strerror(errno));
			return -1;
		}
	}
}

static int
conn_write(struct conn *c, const char *p, size_t n, unsigned timeout)
{
	uint64_t deadline_ms = deadline_in(timeout);
	ssize_t r;
	int sr;

	while (n > 0) {
		errno = 0;
		if (c->ssl != NULL) {
			ERR_clear_error();
			sr = SSL_write(c->ssl, p, (int)(n > INT32_MAX ?
			    INT32_MAX : n));
			if (sr > 0) {
				p += sr;
				n -= (size_t)sr;
				continue;
			}
			if (ssl_wait(c, sr, deadline_ms) < 0) {
				snprintf(c->err, sizeof(c->err), "%s",
				    errno == ETIMEDOUT ? "timeout writing" :
				    ssl_error_text());
				c->broken = true;
				return -1;
			}
			continue;
		}
		r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if ((r < 0 && errno != EAGAIN) ||
		    wait_fd(c->fd, POLLOUT, deadline_ms) < 0) {
			snprintf(c->err, sizeof(c->err), "%s",
			    errno == ETIMEDOUT ? "timeout writing" :
			    strerror(errno));
			c->broken = true;
			return -1;
		}
	}
	return 0;
}

static int
conn_cmd(struct conn *c, const char *text)
{
	char line[2048];         /* RCPT with DSN: 500 more (RFC 3461) */
	int n = snprintf(line, sizeof(line), "%s\r\n", text);

	if (n < 0 || (size_t)n >= sizeof(line)) {
		snprintf(c->err, sizeof(c->err), "command too long");
		return -1;
	}
	return conn_write(c, line, (size_t)n, c->conf->relay_command_timeout);
}

/* One line, CRLF removed, into line (RELAY_LINE_MAX + 1 bytes). */
static int
conn_line(struct conn *c, char *line, uint64_t deadline_ms)
{
	char *nl;
	size_t n;
	ssize_t r;

	while ((nl = memchr(c->in, '\n', c->inlen)) == NULL) {
		if (c->inlen >= RELAY_LINE_MAX) {
			snprintf(c->err, sizeof(c->err), "reply line too long");
			return -1;
		}
		r = conn_read(c, c->in + c->inlen, RELAY_LINE_MAX - c->inlen,
		    deadline_ms);
		if (r <= 0) {
			if (r == 0)
				snprintf(c->err, sizeof(c->err),
				    "connection closed");
			c->broken = true;
			return -1;
		}
		c->inlen += (size_t)r;
	}
	n = (size_t)(nl - c->in);
	memcpy(line, c->in, n);
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	c->inlen -= (size_t)(nl - c->in) + 1;
	memmove(c->in, nl + 1, c->inlen);
	/* A NUL would cut the reply short where it is stored. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\0')
			line[i] = ' ';
	return 0;
}

/*
 * Read one reply.  lines/nlines (may be NULL): the text of each line
 * after the code, for EHLO; free with free_lines().
 */
static int
read_reply(struct conn *c, struct relay_reply *r, unsigned timeout,
    char ***lines, size_t *nlines)
{
	uint64_t deadline_ms = deadline_in(timeout);
	char line[RELAY_LINE_MAX + 1];
	int done;

	relay_reply_init(r);
	if (lines != NULL) {
		*lines = NULL;
		*nlines = 0;
	}
	do {
		if (conn_line(c, line, deadline_ms) < 0)
			return -1;
		if ((done = relay_reply_line(r, line)) < 0) {
			snprintf(c->err, sizeof(c->err), "malformed reply: %.80s",
			    line);
			return -1;
		}
		if (lines != NULL && *nlines < 256) {
			*lines = xrealloc(*lines, (*nlines + 1) * sizeof(**lines));
			(*lines)[(*nlines)++] = xstrdup(line[3] != '\0' ?
			    line + 4 : "");
		}
	} while (!done);
	return 0;
}

static void
free_lines(char **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

static void
conn_close(struct conn *c, bool quit)
{
	struct relay_reply r;

	if (c == NULL)
		return;
	/* A server that timed out or went away gets no QUIT: waiting for
	 * its reply would hold the delivery 5 s past the phase's timeout. */
	if (quit && !c->broken && conn_cmd(c, "QUIT") == 0)
		read_reply(c, &r, 5, NULL, NULL);
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* ---- connecting and the session ---- */

static bool
is_down(const char *addr, char *why, size_t whysize)
{
	for (size_t i = 0; i < ndown; i++) {
		if (strcmp(down[i].addr, addr) == 0) {
			why_set(why, whysize, "%s", down[i].why);
			return true;
		}
	}
	return false;
}

static void
mark_down(const char *addr, const char *why)
{
	if (ndown == RELAY_DOWN_MAX)
		return;
	snprintf(down[ndown].addr, sizeof(down[ndown].addr), "%s", addr);
	snprintf(down[ndown].why, sizeof(down[ndown].why), "%s", why);
	ndown++;
}

/* "host[addr]:port", or "[addr]:port" when the host is the address. */
static void
fmt_dest(char *out, size_t size, const char *host, const char *addr,
    int port)
{
	if (strcmp(host, addr) == 0)
		why_set(out, size, "[%s]:%d", addr, port);
	else
		why_set(out, size, "%s[%s]:%d", host, addr, port);
}

static struct conn *
conn_open(const struct addrinfo *ai, const char *host, const char *addr,
    int port, const struct mxconf *conf, char *why, size_t whysize)
{
	struct conn *c;
	int err = 0, one = 1;
	socklen_t len = sizeof(err);

	c = xcalloc(1, sizeof(*c));
	c->conf = conf;
	c->opened_ms = monotonic_ms();
	strlcpy_mx(c->host, host, sizeof(c->host));
	fmt_dest(c->dest, sizeof(c->dest), host, addr, port);
	c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (c->fd < 0) {
		err = errno;
		goto fail;
	}
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			err = errno;
			goto fail;
		}
		if (wait_fd(c->fd, POLLOUT,
		    deadline_in(conf->relay_connect_timeout)) < 0) {
			err = errno;
			goto fail;
		}
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err != 0)
			goto fail;
	}
	/* Commands and the data go out as soon as written: each write is a
	 * whole pipelined group or a reply-awaiting command. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
fail:
	why_set(why, whysize, "451 4.4.1 connect to %s: %s", c->dest,
	    err == ETIMEDOUT ? "timed out" : strerror(err));
	conn_close(c, false);
	return NULL;
}

/* A failure in the session: why in reply form for the deferral. */
static int
session_fail(struct conn *c, char *why, size_t whysize, const char *status,
    const char *what, const struct relay_reply *r)
{
	struct buf b;

	buf_init(&b);
	if (r != NULL && r->code != 0)
		buf_appendf(&b, "451 %s %s %s: %s", status, c->dest, what,
		    r->text);
	else
		buf_appendf(&b, "451 %s %s: %s", status, what, c->err);
	strlcpy_mx(why, b.data, whysize);
	buf_free(&b);
	return -1;
}

static int
ehlo(struct conn *c, const struct target *t, char *why, size_t whysize)
{
	struct relay_reply r;
	char cmd[300], **lines = NULL;
	size_t nlines = 0;

	snprintf(cmd, sizeof(cmd), "EHLO %s", t->helo);
	if (conn_cmd(c, cmd) < 0 || read_reply(c, &r,
	    c->conf->relay_command_timeout, &lines, &nlines) < 0)
		return session_fail(c, why, whysize, "4.4.2", c->dest, NULL);
	if (r.code == 250) {
		if (nlines > 1)
			relay_ehlo_parse(&c->ext,
			    (const char *const *)lines + 1, nlines - 1);
		else
			memset(&c->ext, 0, sizeof(c->ext));
		free_lines(lines, nlines);
		return 0;
	}
	free_lines(lines, nlines);
	/* RFC 5321 3.2: an old server refuses EHLO; HELO is the way. */
	if (r.code / 100 != 5)
		return session_fail(c, why, whysize, "4.4.2", "EHLO refused",
		    &r);
	snprintf(cmd, sizeof(cmd), "HELO %s", t->helo);
	if (conn_cmd(c, cmd) < 0 || read_reply(c, &r,
	    c->conf->relay_command_timeout, NULL, NULL) < 0)
		return session_fail(c, why, whysize, "4.4.2", c->dest, NULL);
	if (r.code != 250)
		return session_fail(c, why, whysize, "4.4.2", "HELO refused",
		    &r);
	memset(&c->ext, 0, sizeof(c->ext));
	return 0;
}

static SSL_CTX *
tls_ctx(const char *ca)
{
	size_t i;
	SSL_CTX *ctx;

	for (i = 0; i < ARRAY_LEN(tls_ctxs) && tls_ctxs[i].ctx != NULL; i++) {
		if ((ca == NULL && tls_ctxs[i].ca == NULL) ||
		    (ca != NULL && tls_ctxs[i].ca != NULL &&
		    strcmp(ca, tls_ctxs[i].ca) == 0))
			return tls_ctxs[i].ctx;
	}
	if (i == ARRAY_LEN(tls_ctxs))
		return NULL;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return NULL;
	/* Verification is ours to judge after the handshake (opportunistic
	 * TLS goes on with an untrusted certificate, required does not). */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	/* DANE is per session (SSL_dane_enable); the context only allows
	 * it. */
	if (SSL_CTX_dane_enable(ctx) <= 0)
		log_warn("relay: OpenSSL DANE unavailable: %s",
		    ssl_error_text());
	if ((ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL) :
	    SSL_CTX_set_default_verify_paths(ctx)) != 1)
		log_warn("relay: cannot load CA certificates %s: %s",
		    ca != NULL ? ca : "(system)", ssl_error_text());
	tls_ctxs[i].ca = ca != NULL ? xstrdup(ca) : NULL;
	tls_ctxs[i].ctx = ctx;
	return ctx;
}

static bool
is_ip_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 ||
	    inet_pton(AF_INET6, host, &a6) == 1;
}

static const char *const level_names[] = {
	"none", "may", "encrypt", "verify", "dane", "mta-sts"
};

/* RFC 8460 4.3's words for a certificate that does not verify. */
static const char *
rpt_cert_failure(long vr)
{
	switch (vr) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return "certificate-host-mismatch";
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate-expired";
	default:
		return "certificate-not-trusted";
	}
}

/* The session's DANE: its TLSA records, names for DANE-TA (RFC 7672
 * 3.2.2: the host name), none for DANE-EE (3.1.1). */
static int
dane_session(struct conn *c, const struct dane_records *d)
{
	size_t i;
	int usable = 0;

	if (SSL_dane_enable(c->ssl, c->host) <= 0)
		return -1;
	SSL_dane_set_flags(c->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (i = 0; i < d->n; i++)
		if (SSL_dane_tlsa_add(c->ssl, d->tlsa[i].usage,
		    d->tlsa[i].selector, d->tlsa[i].mtype, d->tlsa[i].data,
		    d->tlsa[i].len) > 0)
			usable++;
	return usable > 0 ? 0 : -1;
}

/* After the handshake: does the certificate satisfy the level? */
static int
tls_judge(struct conn *c, const struct target *t, const struct host_tls *ht,
    char *why, size_t whysize)
{
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	long vr = cert != NULL ? SSL_get_verify_result(c->ssl) :
	    X509_V_ERR_APPLICATION_VERIFICATION;
	const char *verr = cert != NULL ? X509_verify_cert_error_string(vr) :
	    "no certificate presented";
	bool dane_ok;

	X509_free(cert);
	switch (ht->level) {
	case TLS_LEVEL_DANE:
		dane_ok = vr == X509_V_OK &&
		    SSL_get0_dane_authority(c->ssl, NULL, NULL) >= 0;
		if (dane_ok) {
			log_info("relay: %s: TLS %s, certificate matches its"
			    " DANE TLSA records", c->dest,
			    SSL_get_version(c->ssl));
			return 0;
		}
		c->rpt_fail = "validation-failure";
		why_set(why, whysize, "451 4.7.5 certificate of %s does not"
		    " match its DANE TLSA records: %s", c->dest, verr);
		return -1;
	case TLS_LEVEL_VERIFY:
		if (vr == X509_V_OK) {
			log_info("relay: %s: TLS %s, certificate verified",
			    c->dest, SSL_get_version(c->ssl));
			return 0;
		}
		c->rpt_fail = rpt_cert_failure(vr);
		if (ht->report_only) {
			log_info("relay: %s: certificate not trusted (%s),"
			    " going on: the MTA-STS policy of %s is in"
			    " testing mode", c->dest, verr, t->domain);
			return 0;
		}
		why_set(why, whysize, "451 4.7.5 certificate of %s not"
		    " trusted: %s", c->dest, verr);
		return -1;
	default:
		if (t->log_unverified && vr != X509_V_OK)
			log_info("relay: %s: unverified certificate (%s),"
			    " going on: opportunistic TLS", c->dest, verr);
		else
			log_info("relay: %s: TLS %s, level %s, certificate"
			    " not checked", c->dest, SSL_get_version(c->ssl),
			    level_names[ht->level]);
		return 0;
	}
}

static int
tls_handshake(struct conn *c, const struct target *t,
    const struct host_tls *ht, char *why, size_t whysize)
{
	uint64_t deadline_ms = deadline_in(c->conf->relay_command_timeout);
	SSL_CTX *ctx = tls_ctx(t->tls_ca);
	int r;

	if (ctx == NULL || (c->ssl = SSL_new(ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1) {
		why_set(why, whysize, "451 4.7.5 TLS setup failed: %s",
		    ssl_error_text());
		return -1;
	}
	if (!is_ip_literal(c->host))
		SSL_set_tlsext_host_name(c->ssl, c->host);
	if (ht->level == TLS_LEVEL_DANE) {
		if (dane_session(c, ht->dane) < 0) {
			why_set(why, whysize, "451 4.7.5 DANE setup for %s"
			    " failed: %s", c->dest, ssl_error_text());
			return -1;
		}
	} else if (ht->level == TLS_LEVEL_VERIFY || t->log_unverified) {
		if (is_ip_literal(c->host))
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
			    c->host);
		else
			SSL_set1_host(c->ssl, c->host);
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		if ((r = SSL_connect(c->ssl)) == 1)
			break;
		if (ssl_wait(c, r, deadline_ms) < 0) {
			c->rpt_fail = "validation-failure";
			why_set(why, whysize, "451 4.7.5 TLS handshake with %s"
			    " failed: %s", c->dest, errno == ETIMEDOUT ?
			    "timeout" : ssl_error_text());
			return -1;
		}
	}
	c->tls = true;
	return tls_judge(c, t, ht, why, whysize);
}

static int
starttls(struct conn *c, const struct target *t, const struct host_tls *ht,
    char *why, size_t whysize)
{
	struct relay_reply r;
	bool must = ht->level >= TLS_LEVEL_ENCRYPT && !ht->report_only;

	if (ht->level == TLS_LEVEL_NONE)
		return 0;
	if (!c->ext.starttls) {
		if (ht->level >= TLS_LEVEL_ENCRYPT)
			c->rpt_fail = "starttls-not-supported";
		if (!must)
			return 0;
		/* A server without STARTTLS where TLS is due is what a
		 * downgrade looks like (RFC 7672 2.2, RFC 3207 6). */
		why_set(why, whysize, ht->level == TLS_LEVEL_DANE ?
		    "451 4.7.4 %s has DANE TLSA records and does not offer"
		    " STARTTLS" : "451 4.7.4 TLS is required (level %s) and"
		    " %s does not offer STARTTLS", ht->level == TLS_LEVEL_DANE ?
		    c->dest : level_names[ht->level], c->dest);
		return -1;
	}
	if (conn_cmd(c, "STARTTLS") < 0 || read_reply(c, &r,
	    c->conf->relay_command_timeout, NULL, NULL) < 0)
		return session_fail(c, why, whysize, "4.4.2", c->dest, NULL);
	if (r.code != 220) {
		if (ht->level >= TLS_LEVEL_ENCRYPT)
			c->rpt_fail = "starttls-not-supported";
		if (!must)
			return 0;
		return session_fail(c, why, whysize, "4.7.4",
		    "STARTTLS refused", &r);
	}
	/* Bytes that came with the 220 were sent in the clear before TLS:
	 * an injection (RFC 3207 6), never read as replies. */
	if (c->inlen > 0) {
		why_set(why, whysize, "451 4.7.5 %s sent data after its"
		    " STARTTLS reply", c->dest);
		return -1;
	}
	if (tls_handshake(c, t, ht, why, whysize) < 0)
		return -1;
	return ehlo(c, t, why, whysize);
}

static void
b64(const char *in, size_t len, char *out, size_t size)
{
	if (4 * ((len + 2) / 3) + 1 > size) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in,
	    (int)len);
}

static int
auth_step(struct conn *c, const char *line, int want, struct relay_reply *r)
{
	if (conn_cmd(c, line) < 0 || read_reply(c, r,
	    c->conf->relay_command_timeout, NULL, NULL) < 0)
		return -1;
	return r->code == want ? 0 : 1;
}

static int
authenticate(struct conn *c, const struct target *t,
    const struct host_tls *ht, char *why, size_t whysize)
{
	char plain[600], enc[820], cmd[900];
	struct relay_reply r;
	size_t ul, pl;
	int rc;

	if (t->auth_user == NULL)
		return 0;
	if (!c->tls && ht->level != TLS_LEVEL_NONE) {
		why_set(why, whysize, "451 4.7.0 no TLS with %s: the"
		    " password is not sent in the clear", c->dest);
		return -1;
	}
	ul = strlen(t->auth_user);
	pl = t->auth_password != NULL ? strlen(t->auth_password) : 0;
	if (ul + pl + 2 > sizeof(plain)) {
		why_set(why, whysize, "451 4.7.0 AUTH credentials too long");
		return -1;
	}
	if (c->ext.auth_plain) {
		/* RFC 4616: authzid NUL authcid NUL passwd. */
		plain[0] = '\0';
		memcpy(plain + 1, t->auth_user, ul);
		plain[1 + ul] = '\0';
		memcpy(plain + 2 + ul, t->auth_password != NULL ?
		    t->auth_password : "", pl);
		b64(plain, ul + pl + 2, enc, sizeof(enc));
		snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s", enc);
		rc = auth_step(c, cmd, 235, &r);
	} else if (c->ext.auth_login) {
		rc = auth_step(c, "AUTH LOGIN", 334, &r);
		if (rc == 0) {
			b64(t->auth_user, ul, enc, sizeof(enc));
			rc = auth_step(c, enc, 334, &r);
		}
		if (rc == 0) {
			b64(t->auth_password != NULL ? t->auth_password : "",
			    pl, enc, sizeof(enc));
			rc = auth_step(c, enc, 235, &r);
		}
	} else {
		why_set(why, whysize, "451 4.7.0 %s offers no AUTH PLAIN or"
		    " LOGIN", c->dest);
		return -1;
	}
	explicit_bzero(plain, sizeof(plain));
	explicit_bzero(enc, sizeof(enc));
	explicit_bzero(cmd, sizeof(cmd));
	if (rc < 0)
		return session_fail(c, why, whysize, "4.4.2", c->dest, NULL);
	if (rc > 0)
		return session_fail(c, why, whysize, "4.7.8",
		    "authentication failed", &r);
	return 0;
}

/* Greeting, EHLO, STARTTLS, AUTH: a connection ready for MAIL. */
static int
session_start(struct conn *c, const struct target *t,
    const struct host_tls *ht, char *why, size_t whysize)
{
	struct relay_reply r;

	if (read_reply(c, &r, c->conf->relay_command_timeout, NULL, NULL) < 0)
		return session_fail(c, why, whysize, "4.4.2",
		    "no greeting from server", NULL);
	if (r.code != 220)
		return session_fail(c, why, whysize, "4.4.2", "greeting", &r);
	if (ehlo(c, t, why, whysize) < 0 ||
	    starttls(c, t, ht, why, whysize) < 0 ||
	    authenticate(c, t, ht, why, whysize) < 0)
		return -1;
	return 0;
}

/* ---- the transaction ---- */

enum txn_result {
	TXN_DONE,       /* every recipient it took on has an outcome */
	TXN_NEXT,       /* try another server for what is still pending */
	TXN_REFUSED,    /* this server cannot take the message (8BITMIME,
	                   SMTPUTF8, SIZE): another may */
	/* internal to transaction(), reported as TXN_DONE: */
	TXN_SENDER_REFUSED,     /* MAIL got 5xx: RSET before reuse */
	TXN_LOST_AFTER_DOT,     /* deferred, the connection is gone */
};

/* The header block: up to the empty line that ends it. */
static size_t
header_block_len(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i++)
		if (p[i] == '\n' && (p[i + 1] == '\n' || (p[i + 1] == '\r' &&
		    i + 2 < len && p[i + 2] == '\n')))
			return i + 1;
	return len;
}

static bool
str_ascii(const char *s)
{
	return !relay_has_8bit(s, strlen(s));
}

/* The checks before MAIL: can this server take this message? */
static enum txn_result
capabilities(struct conn *c, const struct delivery_job *job,
    const char *content, bool *body8, bool *utf8, bool *convert, char *why,
    size_t whysize)
{
	bool eight = relay_has_8bit(content, job->content_len);
	bool utf8_addr = !str_ascii(job->sender), utf8_headers;
	size_t i;

	for (i = 0; i < job->nrcpts; i++)
		if (!str_ascii(job->rcpts[i].address))
			utf8_addr = true;
	if (c->ext.size_max > 0 && job->content_len > c->ext.size_max) {
		why_set(why, whysize, "552 5.3.4 message of %zu bytes is"
		    " larger than %s accepts (%llu)", job->content_len,
		    c->dest, c->ext.size_max);
		return TXN_REFUSED;
	}
	/* RFC 6531 3.4: without SMTPUTF8 there is no way to send a UTF-8
	 * address; UTF-8 header fields need it as well (RFC 6532), an 8-bit
	 * body only 8BITMIME. */
	utf8_headers = eight && relay_has_8bit(content,
	    header_block_len(content, job->content_len));
	*utf8 = job->smtputf8 && (utf8_addr || utf8_headers);
	if (*utf8 && !c->ext.smtputf8) {
		why_set(why, whysize, utf8_addr ? "553 5.6.7 %s does not"
		    " support SMTPUTF8, needed for a UTF-8 address" :
		    "554 5.6.9 %s does not support SMTPUTF8, needed for"
		    " UTF-8 header fields", c->dest);
		return TXN_REFUSED;
	}
	if (utf8_addr && !job->smtputf8) {
		why_set(why, whysize, "553 5.6.7 UTF-8 address in a message"
		    " received without SMTPUTF8");
		return TXN_REFUSED;
	}
	/* RFC 6152 3: 8-bit content only to a server that says 8BITMIME,
	 * else converted to 7-bit MIME (the body; 8-bit header fields
	 * cannot be); a message declared 8BITMIME that is all 7-bit goes
	 * as it is. */
	*convert = eight && !c->ext.eightbitmime;
	if (*convert && utf8_headers) {
		why_set(why, whysize, "554 5.6.3 message has 8-bit header"
		    " fields and %s does not support 8BITMIME: they cannot be"
		    " converted to 7 bits", c->dest);
		return TXN_REFUSED;
	}
	*body8 = c->ext.eightbitmime && (eight || job->body_8bitmime);
	return TXN_DONE;
}

static int
send_content(struct conn *c, const char *content, size_t len)
{
	struct relay_stuff st = { 0 };
	struct buf out;
	size_t off = 0, n;
	int rc = 0;

	buf_init(&out);
	do {
		n = len - off < RELAY_CHUNK ? len - off : RELAY_CHUNK;
		buf_reset(&out);
		relay_dot_stuff(&st, content + off, n, &out);
		off += n;
		/* The final dot with the last piece: a write of its own
		 * would wait for the server's delayed ACK. */
		if (off == len)
			relay_dot_end(&st, &out);
		rc = conn_write(c, out.data, out.len,
		    c->conf->relay_command_timeout);
	} while (off < len && rc == 0);
	buf_free(&out);
	return rc;
}

static void
set_from_reply(struct delivery_rcpt *rc, const struct relay_reply *r)
{
	int status = r->code / 100 == 2 ? DELIVERY_OK :
	    r->code / 100 == 5 ? DELIVERY_FAIL : DELIVERY_DEFER;

	delivery_set(rc, status, "%s", r->text);
	rc->remote = true;
}

/* The RCPT, MAIL and DATA commands, for one write or one at a time. */
static void
mail_command(struct conn *c, struct buf *out, const struct delivery_job *job,
    bool body8, bool utf8)
{
	/* Parameters only for the extensions the server offered; DSN's
	 * are dropped for a server without it, and its success is then
	 * ours to report ("relayed", scheduler.c). */
	buf_appendf(out, "MAIL FROM:<%s>", job->sender);
	if (c->ext.size)
		buf_appendf(out, " SIZE=%zu", job->content_len);
	if (body8)
		buf_appends(out, " BODY=8BITMIME");
	if (utf8)
		buf_appends(out, " SMTPUTF8");
	if (c->ext.dsn)
		dsn_mail_params(out, job->dsn_ret, job->dsn_envid);
}

static void
rcpt_command(struct conn *c, struct buf *out, const struct delivery_rcpt *rc)
{
	buf_appendf(out, "RCPT TO:<%s>", rc->address);
	if (c->ext.dsn)
		dsn_rcpt_params(out, rc->dsn_notify, rc->dsn_orcpt,
		    rc->address);
}

struct txn {
	struct conn *c;
	struct delivery_job *job;
	size_t  *idx;           /* the pending recipients */
	size_t   n;
	bool    *accepted;
	size_t   naccepted;
	char    *why;
	size_t   whysize;
};

static enum txn_result
txn_lost(struct txn *t)
{
	why_set(t->why, t->whysize, "451 4.4.2 connection with %s lost: %s",
	    t->c->dest, t->c->err);
	return TXN_NEXT;
}

/* MAIL's reply: TXN_DONE to go on. */
static enum txn_result
mail_reply(struct txn *t, const struct relay_reply *r)
{
	size_t i;

	if (r->code / 100 == 2)
		return TXN_DONE;
	if (r->code / 100 == 5 && r->code != 521) {
		/* The sender is refused: so is every recipient. */
		for (i = 0; i < t->n; i++)
			set_from_reply(&t->job->rcpts[t->idx[i]], r);
		return TXN_SENDER_REFUSED;
	}
	why_set(t->why, t->whysize, "451 4.4.2 %s: MAIL refused: %s",
	    t->c->dest, r->text);
	return TXN_NEXT;
}

static void
rcpt_reply(struct txn *t, size_t i, const struct relay_reply *r)
{
	if (r->code / 100 == 2) {
		t->accepted[i] = true;
		t->naccepted++;
	} else {
		set_from_reply(&t->job->rcpts[t->idx[i]], r);
	}
}

/* After DATA's 354 (or its refusal): the outcome of the accepted. */
static enum txn_result
data_phase(struct txn *t, const struct relay_reply *r, const char *content)
{
	struct relay_reply fin;
	size_t i;

	if (r->code != 354) {
		for (i = 0; i < t->n; i++)
			if (t->accepted[i])
				set_from_reply(&t->job->rcpts[t->idx[i]], r);
		return TXN_DONE;
	}
	if (send_content(t->c, content, t->job->content_len) < 0)
		return txn_lost(t);
	if (read_reply(t->c, &fin, t->c->conf->relay_data_timeout, NULL,
	    NULL) < 0) {
		/* It may have the message: defer, never try elsewhere now. */
		for (i = 0; i < t->n; i++)
			if (t->accepted[i])
				delivery_set(&t->job->rcpts[t->idx[i]],
				    DELIVERY_DEFER, "4.4.2 connection with %s"
				    " lost after the end of data: %s",
				    t->c->dest, t->c->err);
		return TXN_LOST_AFTER_DOT;
	}
	for (i = 0; i < t->n; i++)
		if (t->accepted[i])
			set_from_reply(&t->job->rcpts[t->idx[i]], &fin);
	return TXN_DONE;
}

static enum txn_result
txn_pipelined(struct txn *t, const char *mail, const char *content)
{
	struct relay_reply r, mr;
	struct buf cmds;
	enum txn_result res;
	size_t i;
	int rc;

	buf_init(&cmds);
	buf_appendf(&cmds, "%s\r\n", mail);
	for (i = 0; i < t->n; i++) {
		rcpt_command(t->c, &cmds, &t->job->rcpts[t->idx[i]]);
		buf_appends(&cmds, "\r\n");
	}
	buf_appends(&cmds, "DATA\r\n");
	rc = conn_write(t->c, cmds.data, cmds.len,
	    t->c->conf->relay_command_timeout);
	buf_free(&cmds);
	if (rc != 0 || read_reply(t->c, &mr, t->c->conf->relay_command_timeout,
	    NULL, NULL) < 0)
		return txn_lost(t);
	/* Every reply is read, whatever MAIL said: the stream stays in
	 * step. */
	for (i = 0; i < t->n; i++) {
		if (read_reply(t->c, &r, t->c->conf->relay_command_timeout,
		    NULL, NULL) < 0)
			return txn_lost(t);
		if (mr.code / 100 == 2)
			rcpt_reply(t, i, &r);
	}
	if (read_reply(t->c, &r, t->c->conf->relay_command_timeout, NULL,
	    NULL) < 0)
		return txn_lost(t);
	res = mail_reply(t, &mr);
	if (res != TXN_DONE)
		return res;
	if (t->naccepted == 0 || r.code != 354) {
		/* A 354 with nobody to send to: an empty message ends it. */
		if (r.code == 354 && conn_write(t->c, ".\r\n", 3,
		    t->c->conf->relay_command_timeout) == 0)
			read_reply(t->c, &mr, t->c->conf->relay_data_timeout,
			    NULL, NULL);
		if (t->naccepted == 0)
			return TXN_DONE;
	}
	return data_phase(t, &r, content);
}

/*
 * The replies to a pipelined envelope and, when eager, to the BDAT that
 * followed it; what the transaction comes to so far.  *lost: a reply
 * could not be read.
 */
static enum txn_result
chunked_replies(struct txn *t, bool eager, struct relay_reply *last,
    bool *lost)
{
	struct relay_reply mr, r;
	unsigned timeout = t->c->conf->relay_command_timeout;

	*lost = true;
	if (read_reply(t->c, &mr, timeout, NULL, NULL) < 0)
		return TXN_NEXT;
	for (size_t i = 0; i < t->n; i++) {
		if (read_reply(t->c, &r, timeout, NULL, NULL) < 0)
			return TXN_NEXT;
		if (mr.code / 100 == 2)
			rcpt_reply(t, i, &r);
	}
	/* Refused or not, the chunk was read by the server (RFC 3030 2):
	 * its reply keeps the stream in step. */
	if (eager && read_reply(t->c, last, t->c->conf->relay_data_timeout,
	    NULL, NULL) < 0)
		return TXN_NEXT;
	*lost = false;
	return mail_reply(t, &mr);
}

/* Whatever could not be told after the message was sent: the server
 * may have it.  Deferred, and not tried elsewhere now. */
static enum txn_result
lost_after_data(struct txn *t)
{
	for (size_t i = 0; i < t->n; i++) {
		struct delivery_rcpt *rc = &t->job->rcpts[t->idx[i]];

		if (rc->status == DELIVERY_PENDING)
			delivery_set(rc, DELIVERY_DEFER, "4.4.2 connection with"
			    " %s lost after the message was sent: %s",
			    t->c->dest, t->c->err);
	}
	return TXN_LOST_AFTER_DOT;
}

/* What cmds holds, then "BDAT len LAST" and the message: 0 or -1. */
static int
write_chunk(struct conn *c, struct buf *cmds, const char *content,
    size_t len)
{
	unsigned timeout = c->conf->relay_command_timeout;

	buf_appendf(cmds, "BDAT %zu LAST\r\n", len);
	if (conn_write(c, cmds->data, cmds->len, timeout) < 0 ||
	    conn_write(c, content, len, timeout) < 0)
		return -1;
	return 0;
}

/*
 * CHUNKING (RFC 3030) with PIPELINING: MAIL, RCPT and "BDAT n LAST"
 * with the message as stored, in one write, then every reply: one round
 * trip, and no dot-stuffing.  A large message waits for the envelope's
 * replies (RELAY_BDAT_EAGER).
 */
static enum txn_result
txn_chunked(struct txn *t, const char *mail, const char *content)
{
	struct relay_reply r;
	struct relay_stuff st = { .raw = true };
	struct buf cmds, clean;
	size_t len = t->job->content_len;
	enum txn_result res;
	bool eager, lost;
	int rc;

	buf_init(&cmds);
	buf_init(&clean);
	if (!relay_crlf_clean(content, len)) {
		relay_dot_stuff(&st, content, len, &clean);
		relay_dot_end(&st, &clean);
		content = clean.data;
		len = clean.len;
	}
	eager = len <= RELAY_BDAT_EAGER;
	buf_appendf(&cmds, "%s\r\n", mail);
	for (size_t i = 0; i < t->n; i++) {
		rcpt_command(t->c, &cmds, &t->job->rcpts[t->idx[i]]);
		buf_appends(&cmds, "\r\n");
	}
	rc = eager ? write_chunk(t->c, &cmds, content, len) :
	    conn_write(t->c, cmds.data, cmds.len,
	    t->c->conf->relay_command_timeout);
	if (rc < 0) {
		res = txn_lost(t);
		goto out;
	}
	res = chunked_replies(t, eager, &r, &lost);
	if (lost) {
		res = eager ? lost_after_data(t) : txn_lost(t);
		goto out;
	}
	if (res != TXN_DONE || t->naccepted == 0)
		goto out;
	if (!eager) {
		buf_reset(&cmds);
		if (write_chunk(t->c, &cmds, content, len) < 0) {
			res = txn_lost(t);
			goto out;
		}
		if (read_reply(t->c, &r, t->c->conf->relay_data_timeout, NULL,
		    NULL) < 0) {
			res = lost_after_data(t);
			goto out;
		}
	}
	for (size_t i = 0; i < t->n; i++)
		if (t->accepted[i])
			set_from_reply(&t->job->rcpts[t->idx[i]], &r);
out:
	buf_free(&cmds);
	buf_free(&clean);
	return res;
}

static enum txn_result
txn_stepwise(struct txn *t, const char *mail, const char *content)
{
	struct relay_reply r;
	enum txn_result res;
	struct buf cmd;
	size_t i;
	int rc;

	if (conn_cmd(t->c, mail) < 0 || read_reply(t->c, &r,
	    t->c->conf->relay_command_timeout, NULL, NULL) < 0)
		return txn_lost(t);
	if ((res = mail_reply(t, &r)) != TXN_DONE)
		return res;
	buf_init(&cmd);
	for (i = 0; i < t->n; i++) {
		buf_reset(&cmd);
		rcpt_command(t->c, &cmd, &t->job->rcpts[t->idx[i]]);
		rc = conn_cmd(t->c, cmd.data);
		if (rc < 0 || read_reply(t->c, &r,
		    t->c->conf->relay_command_timeout, NULL, NULL) < 0) {
			buf_free(&cmd);
			return txn_lost(t);
		}
		rcpt_reply(t, i, &r);
	}
	buf_free(&cmd);
	if (t->naccepted == 0)
		return TXN_DONE;
	if (conn_cmd(t->c, "DATA") < 0 || read_reply(t->c, &r,
	    t->c->conf->relay_command_timeout, NULL, NULL) < 0)
		return txn_lost(t);
	return data_phase(t, &r, content);
}

/* RSET after a transaction that did not end with a message: the
 * connection is then fit for the next one. */
static bool
reset(struct conn *c)
{
	struct relay_reply r;

	return conn_cmd(c, "RSET") == 0 && read_reply(c, &r,
	    c->conf->relay_command_timeout, NULL, NULL) == 0 && r.code == 250;
}

/*
 * One transaction for the job's pending recipients on c.  *reusable
 * says whether c may carry the next one.
 */
static enum txn_result
transaction(struct conn *c, struct delivery_job *job, const char *content,
    char *why, size_t whysize, bool *reusable)
{
	struct buf mail;
	struct txn t;
	enum txn_result res;
	bool body8, utf8, convert;
	struct buf converted;
	size_t i, stored_len = job->content_len;

	*reusable = false;
	c->uses++;
	/* The connection is ready: what came before was connecting. */
	if (job->connected_us == 0)
		job->connected_us = monotonic_us();
	snprintf(job->destination, sizeof(job->destination), "%s", c->dest);
	res = capabilities(c, job, content, &body8, &utf8, &convert, why,
	    whysize);
	if (res != TXN_DONE) {
		*reusable = true;
		return res;
	}
	buf_init(&converted);
	if (convert) {
		if (mime_to_7bit(content, job->content_len, &converted) < 0) {
			why_set(why, whysize, "554 5.6.3 message has 8-bit"
			    " content, %s does not support 8BITMIME, and it"
			    " could not be converted to 7 bits", c->dest);
			*reusable = true;
			return TXN_REFUSED;
		}
		log_info("id=%s converted to 7-bit MIME for %s (no 8BITMIME):"
		    " %zu bytes, %zu before", job->queue_id, c->dest,
		    converted.len, job->content_len);
		/* What this transaction sends, SIZE= included. */
		content = converted.data;
		job->content_len = converted.len;
	}
	memset(&t, 0, sizeof(t));
	t.c = c;
	t.job = job;
	t.why = why;
	t.whysize = whysize;
	t.idx = xcalloc(job->nrcpts, sizeof(*t.idx));
	t.accepted = xcalloc(job->nrcpts, sizeof(*t.accepted));
	for (i = 0; i < job->nrcpts; i++)
		if (job->rcpts[i].status == DELIVERY_PENDING)
			t.idx[t.n++] = i;
	buf_init(&mail);
	mail_command(c, &mail, job, body8, utf8);
	res = c->bdat ? txn_chunked(&t, mail.data, content) :
	    c->ext.pipelining ? txn_pipelined(&t, mail.data, content) :
	    txn_stepwise(&t, mail.data, content);
	buf_free(&mail);
	/* Delivered to a server that took the DSN request: any success
	 * notice is its to send. */
	for (i = 0; i < t.n; i++)
		if (job->rcpts[t.idx[i]].status == DELIVERY_OK)
			job->rcpts[t.idx[i]].dsn_passed = c->ext.dsn;
	if (res == TXN_DONE)
		*reusable = t.naccepted > 0 || reset(c);
	else if (res == TXN_SENDER_REFUSED)
		*reusable = reset(c);
	if (res == TXN_SENDER_REFUSED || res == TXN_LOST_AFTER_DOT)
		res = TXN_DONE;
	free(t.idx);
	free(t.accepted);
	job->content_len = stored_len;
	buf_free(&converted);
	return res;
}

/* ---- where: hosts and addresses ---- */

static const char *
domain_of(const char *address)
{
	const char *at = strrchr(address, '@');

	return at != NULL ? at + 1 : "";
}

/* delivery.tls_policy's level for the domain, else delivery.tls_level. */
static int
mx_level(const struct mxconf *conf, const char *domain)
{
	size_t i, dl = strlen(domain), pl;

	for (i = 0; i < conf->ntls_policies; i++) {
		const char *p = conf->tls_policies[i].domain;

		pl = strlen(p);
		if (p[0] == '.' ? dl > pl &&
		    strcasecmp(domain + dl - pl, p) == 0 :
		    strcasecmp(domain, p) == 0)
			return conf->tls_policies[i].level;
	}
	return conf->mx_tls_level;
}

/* The upstream's tls as a level; the older words keep their meaning. */
static void
upstream_level(const struct upstream_conf *u, struct target *t)
{
	switch (u->tls) {
	case UPSTREAM_TLS_NONE:
		t->level = TLS_LEVEL_NONE;
		break;
	case UPSTREAM_TLS_OPPORTUNISTIC:
		t->level = TLS_LEVEL_MAY;
		t->log_unverified = u->tls_verify;
		break;
	case UPSTREAM_TLS_REQUIRED:
		t->level = u->tls_verify ? TLS_LEVEL_VERIFY : TLS_LEVEL_ENCRYPT;
		break;
	case UPSTREAM_TLS_MAY:
		t->level = TLS_LEVEL_MAY;
		break;
	case UPSTREAM_TLS_ENCRYPT:
		t->level = TLS_LEVEL_ENCRYPT;
		break;
	case UPSTREAM_TLS_VERIFY:
		t->level = TLS_LEVEL_VERIFY;
		break;
	default:
		t->level = TLS_LEVEL_DANE;
		break;
	}
}

static int
find_target(const struct delivery_job *job, struct target *t, char *why,
    size_t whysize)
{
	const struct mxconf *conf = job->conf;
	struct json_value *params;
	const char *name;
	char err[128];
	size_t i;

	memset(t, 0, sizeof(*t));
	params = json_parse(job->params_json, strlen(job->params_json), err,
	    sizeof(err));
	name = params != NULL ? json_get_string(params, "upstream") : NULL;
	if (name == NULL) {
		why_set(why, whysize, "4.3.5 relay parameters without an"
		    " upstream: %s", params != NULL ? job->params_json : err);
		json_free(params);
		return -1;
	}
	t->helo = conf->hostname;
	if (strcmp(name, "mx") == 0) {
		t->name = "mx";
		t->domain = job->nrcpts > 0 ?
		    domain_of(job->rcpts[0].address) : "";
		t->level = mx_level(conf, t->domain);
		t->tls_ca = conf->relay_tls_ca;
		t->chunking = conf->relay_chunking;
		t->port = 25;
		json_free(params);
		return 0;
	}
	for (i = 0; i < conf->nupstreams; i++) {
		const struct upstream_conf *u = &conf->upstreams[i];

		if (u->name == NULL || strcmp(u->name, name) != 0)
			continue;
		t->name = u->name;
		upstream_level(u, t);
		t->tls_ca = u->tls_ca;
		t->auth_user = u->auth_user;
		t->auth_password = u->auth_password;
		if (u->helo != NULL)
			t->helo = u->helo;
		t->port = u->port;
		t->chunking = u->chunking;
		json_free(params);
		return 0;
	}
	/* The configuration lost it since the message was queued: a fixed
	 * configuration can still deliver it. */
	why_set(why, whysize, "4.3.5 no upstream named \"%s\" in the"
	    " configuration", name);
	json_free(params);
	return -1;
}

/* The hosts of the recipient domain: MX, else the domain itself.
 * Returns how many; -1 with why (status of a bounce when *perm). */
static int
mx_hosts(const char *domain, struct host *hosts, size_t max, char *why,
    size_t whysize, bool *perm, bool *secure)
{
	unsigned char answer[8192];
	struct relay_mx mx[RELAY_MAX_MX];
	int len, n, i, count = 0;

	*perm = false;
	*secure = false;
	/* An address literal, "[192.0.2.1]" or "[IPv6:2001:db8::1]". */
	if (domain[0] == '[') {
		const char *a = domain + 1;
		size_t alen = strcspn(a, "]");

		if (strncasecmp(a, "IPv6:", 5) == 0) {
			a += 5;
			alen -= 5;
		}
		snprintf(hosts[0].name, sizeof(hosts[0].name), "%.*s",
		    (int)alen, a);
		hosts[0].port = 25;
		return 1;
	}
	memset(answer, 0, NS_HFIXEDSZ);
	len = dns_answer_len(res_query(domain, ns_c_in, ns_t_mx, answer,
	    sizeof(answer)), sizeof(answer));
	/* RFC 7672 2.2.1: DANE only for MX hosts from a secure answer (a
	 * NODATA answer, the domain as its own host, counts too). */
	*secure = dane_answer_secure(answer, len >= 0 ? len :
	    h_errno == NO_DATA ? NS_HFIXEDSZ : 0);
	if (len < 0) {
		if (h_errno == HOST_NOT_FOUND) {
			*perm = true;
			why_set(why, whysize, "550 5.1.2 domain %s does not"
			    " exist", domain);
			return -1;
		}
		if (h_errno != NO_DATA) {
			why_set(why, whysize, "451 4.4.3 MX lookup for %s"
			    " failed: %s", domain, hstrerror(h_errno));
			return -1;
		}
		n = 0;
	} else if ((n = relay_parse_mx(answer, len, mx, RELAY_MAX_MX)) < 0) {
		why_set(why, whysize, "451 4.4.3 malformed DNS answer for MX"
		    " of %s", domain);
		return -1;
	}
	if (n == 0) {
		/* RFC 5321 5.1: no MX, the domain is its own host. */
		snprintf(hosts[0].name, sizeof(hosts[0].name), "%s", domain);
		hosts[0].port = 25;
		return 1;
	}
	for (i = 0; i < n && (size_t)count < max; i++) {
		if (mx[i].host[0] == '\0')
			continue;
		snprintf(hosts[count].name, sizeof(hosts[count].name), "%s",
		    mx[i].host);
		hosts[count++].port = 25;
	}
	if (count == 0) {
		/* RFC 7505: a null MX says the domain takes no mail. */
		*perm = true;
		why_set(why, whysize, "556 5.1.10 domain %s accepts no mail"
		    " (null MX)", domain);
		return -1;
	}
	return count;
}

static int
upstream_hosts(const struct delivery_job *job, const struct target *t,
    struct host *hosts, size_t max)
{
	const struct upstream_conf *u = NULL;
	size_t i, n = 0;

	for (i = 0; i < job->conf->nupstreams; i++)
		if (strcmp(job->conf->upstreams[i].name, t->name) == 0)
			u = &job->conf->upstreams[i];
	for (i = 0; u != NULL && i < u->nhosts && n < max; i++) {
		if (relay_parse_host(u->hosts[i], t->port, hosts[n].name,
		    sizeof(hosts[n].name), &hosts[n].port) == 0)
			n++;
		else
			log_warn("relay: upstream %s: bad host \"%s\"", t->name,
			    u->hosts[i]);
	}
	return (int)n;
}

/* The DANE part of a level (dane, mta-sts): 1 when the host's TLSA
 * records decided its level, 0 when it has none, -1 when the lookup
 * failed (RFC 7672 2.2: the host is not used). */
static int
host_dane(const struct target *t, const struct host *h,
    struct dane_records *d, struct host_tls *ht, char *why, size_t whysize)
{
	char err[300];

	if ((strcmp(t->name, "mx") == 0 && !t->mx_secure) ||
	    is_ip_literal(h->name))
		return 0;
	switch (dane_lookup(h->name, h->port, d, err, sizeof(err))) {
	case DANE_USABLE:
		ht->level = TLS_LEVEL_DANE;
		ht->dane = d;
		ht->policy_type = "tlsa";
		return 1;
	case DANE_UNUSABLE:
		ht->level = TLS_LEVEL_ENCRYPT;
		ht->policy_type = "tlsa";
		return 1;
	case DANE_NONE:
		return 0;
	default:
		why_set(why, whysize, "451 4.7.5 %s: not used: %s", h->name,
		    err);
		return -1;
	}
}

/*
 * The level the host gets.  dane: its TLSA records decide (RFC 7672
 * 2.2): usable ones, DANE; only unusable ones, encrypt; none, or an
 * insecure answer, or an MX from an insecure answer, may.  mta-sts: DANE
 * first (RFC 8461 2), then the domain's MTA-STS policy: a host it names
 * gets verify (in testing mode only reported), one it does not is not
 * used (in testing mode: may, reported).  -1 with why (and *fail, the
 * TLS-RPT result type) when the host is not to be used.
 */
static int
host_level(const struct target *t, const struct host *h,
    struct dane_records *d, struct host_tls *ht, const char **fail,
    char *why, size_t whysize)
{
	bool testing;
	int r;

	memset(ht, 0, sizeof(*ht));
	ht->level = t->level;
	ht->policy_type = "no-policy-found";
	*fail = NULL;
	if (t->level != TLS_LEVEL_DANE && t->level != TLS_LEVEL_MTA_STS)
		return 0;
	ht->level = TLS_LEVEL_MAY;
	if ((r = host_dane(t, h, d, ht, why, whysize)) != 0) {
		if (r < 0) {
			ht->policy_type = "tlsa";
			*fail = "dnssec-invalid";
		}
		return r < 0 ? -1 : 0;
	}
	if (t->level != TLS_LEVEL_MTA_STS || t->sts == NULL)
		return 0;
	ht->policy_type = "sts";
	testing = t->sts->mode == STS_MODE_TESTING;
	if (!sts_mx_match(t->sts, h->name)) {
		*fail = "validation-failure";
		if (testing) {
			log_info("relay: %s is not an MX host of the MTA-STS"
			    " policy of %s, going on: testing mode", h->name,
			    t->domain);
			return 0;
		}
		why_set(why, whysize, "451 4.7.5 %s is not an MX host of the"
		    " MTA-STS policy of %s", h->name, t->domain);
		return -1;
	}
	ht->level = TLS_LEVEL_VERIFY;
	ht->report_only = testing;
	return 0;
}

/* The policy a session was held to, in TLS-RPT's words. */
static void
policy_lines(const struct target *t, const struct host_tls *ht,
    struct buf *out)
{
	static const char hex[] = "0123456789abcdef";
	const struct dane_tlsa *a;

	if (strcmp(ht->policy_type, "sts") == 0 && t->sts != NULL) {
		sts_policy_lines(t->sts, out);
		return;
	}
	for (size_t i = 0; ht->dane != NULL && i < ht->dane->n; i++) {
		a = &ht->dane->tlsa[i];
		buf_appendf(out, "%s%u %u %u ", i > 0 ? "\n" : "", a->usage,
		    a->selector, a->mtype);
		for (size_t k = 0; k < a->len; k++)
			buf_appendf(out, "%c%c", hex[a->data[k] >> 4],
			    hex[a->data[k] & 15]);
	}
}

/* One TLS session (or a host refused before one) for TLS-RPT: MX
 * delivery only, the reports being the recipient domain's. */
static void
note_session(const struct target *t, const struct host_tls *ht,
    const char *mx_host, const struct conn *c, const char *addr,
    const char *fail)
{
	struct delivery_tls_result r;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char local[64] = "";
	struct buf pol;

	if (t->domain == NULL)
		return;
	/* A session in the clear under no policy is no TLS session. */
	if (fail == NULL && (c == NULL || !c->tls))
		return;
	if (c != NULL && getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0)
		sockaddr_ntop((struct sockaddr *)&ss, local, sizeof(local));
	buf_init(&pol);
	policy_lines(t, ht, &pol);
	r.domain = t->domain;
	r.policy_type = ht->policy_type;
	r.policy = pol.data != NULL ? pol.data : "";
	r.mx_host = mx_host;
	r.result_type = fail != NULL ? fail : "";
	r.sending_ip = local;
	r.receiving_ip = addr != NULL ? addr : "";
	delivery_note_tls(&r);
	buf_free(&pol);
}

/* Try every address of one host until the job is done. */
static bool
try_host(struct delivery_job *job, const struct target *t,
    const struct host *h, const char *content, const char *key, char *why,
    size_t whysize, bool *perm)
{
	static struct dane_records dane;
	struct host_tls ht;
	const char *fail;
	struct addrinfo hints, *res = NULL, *ai;
	char port[16], addr[64], addrkey[96];
	struct conn *c;
	bool reusable, done = false;
	int rc, tried = 0;
	enum txn_result r;

	if (host_level(t, h, &dane, &ht, &fail, why, whysize) < 0) {
		*perm = false;
		log_info("id=%s relay: %s", job->queue_id, why);
		note_session(t, &ht, h->name, NULL, NULL, fail);
		return false;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", h->port);
	if ((rc = getaddrinfo(h->name, port, &hints, &res)) != 0) {
		why_set(why, whysize, "451 4.4.4 cannot resolve %s: %s",
		    h->name, gai_strerror(rc));
		*perm = false;
		return false;
	}
	for (ai = res; ai != NULL && !done && tried < RELAY_MAX_ADDRS;
	    ai = ai->ai_next, tried++) {
		sockaddr_ntop(ai->ai_addr, addr, sizeof(addr));
		snprintf(addrkey, sizeof(addrkey), "[%s]:%d", addr, h->port);
		fmt_dest(job->destination, sizeof(job->destination), h->name,
		    addr, h->port);
		if (is_down(addrkey, why, whysize))
			continue;
		*perm = false;
		c = conn_open(ai, h->name, addr, h->port, job->conf, why,
		    whysize);
		if (c == NULL) {
			mark_down(addrkey, why);
			log_info("id=%s relay: %s", job->queue_id, why);
			continue;
		}
		snprintf(c->key, sizeof(c->key), "%s", key);
		rc = session_start(c, t, &ht, why, whysize);
		/* BDAT only pipelined: step by step it would cost DATA's
		 * round trips all the same. */
		c->bdat = t->chunking && c->ext.chunking && c->ext.pipelining;
		note_session(t, &ht, h->name, c, addr, fail != NULL ? fail :
		    c->rpt_fail);
		if (rc < 0) {
			log_info("id=%s relay: %s", job->queue_id, why);
			conn_close(c, false);
			continue;
		}
		r = transaction(c, job, content, why, whysize, &reusable);
		if (r == TXN_DONE) {
			done = true;
			if (reusable) {
				cached = c;
				c = NULL;
			}
		} else {
			*perm = r == TXN_REFUSED;
			log_info("id=%s relay: %s", job->queue_id, why);
		}
		conn_close(c, true);
	}
	freeaddrinfo(res);
	return done;
}

static void
job_key(const struct delivery_job *job, const struct target *t, char *out,
    size_t size)
{
	size_t i, n;

	n = (size_t)snprintf(out, size, "relay:%s", t->name);
	if (strcmp(t->name, "mx") == 0 && job->nrcpts > 0 && n < size) {
		snprintf(out + n, size - n, ":%s", domain_of(job->rcpts[0].address));
		for (i = n; out[i] != '\0'; i++)
			out[i] = (char)tolower((unsigned char)out[i]);
	}
}

/*
 * May a connection that just ended a transaction well carry another?
 * Not past the reuse limits, and not when the server has said anything
 * unasked (a 421 before it closes, or the close itself): a reply out of
 * turn would be taken for the next command's.
 */
static bool
keep_for_reuse(struct conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->uses >= RELAY_REUSE_MAX ||
	    monotonic_ms() - c->opened_ms >= RELAY_REUSE_MS)
		return false;
	return c->inlen == 0 && poll(&pfd, 1, 0) == 0 &&
	    (c->ssl == NULL || SSL_pending(c->ssl) == 0);
}

/* The connection of the last job, when it goes to the same place and is
 * still fit (the server may have closed it while it waited). */
static bool
try_cached(struct delivery_job *job, const char *key, const char *content,
    char *why, size_t whysize, bool *perm)
{
	struct conn *c = cached;
	bool reusable;
	enum txn_result r;

	if (c == NULL)
		return false;
	cached = NULL;
	if (strcmp(c->key, key) != 0 || !keep_for_reuse(c)) {
		conn_close(c, true);
		return false;
	}
	r = transaction(c, job, content, why, whysize, &reusable);
	if (r == TXN_DONE && reusable)
		cached = c;
	else
		conn_close(c, r == TXN_DONE);
	if (r == TXN_REFUSED)
		*perm = true;
	return r == TXN_DONE;
}

/*
 * The domain's MTA-STS policy (mta_sts.h), for level mta-sts.  A fresh
 * one goes to the queue to be cached; the process keeps the last one
 * too, for the next jobs of its batch, whose cache the queue read
 * before.  A failed fetch is a TLS-RPT result of its own.
 */
static const struct sts_policy *
sts_for(const struct delivery_job *job, const char *domain)
{
	static struct sts_policy memo;
	static char memo_domain[256];
	static bool have_memo;
	const char *fail;
	char why[400];
	struct delivery_tls_result r;
	struct buf mx;
	bool fresh;

	if (!have_memo || strcasecmp(memo_domain, domain) != 0 ||
	    memo.fetched_at + memo.max_age <= (int64_t)time(NULL)) {
		have_memo = false;
		if (sts_discover(job->conf, domain, job->sts_cached, &memo,
		    &fresh, &fail, why, sizeof(why)) == STS_FOUND) {
			have_memo = true;
			snprintf(memo_domain, sizeof(memo_domain), "%s",
			    domain);
		}
		if (fail != NULL) {
			log_info("id=%s relay: MTA-STS policy of %s: %s%s",
			    job->queue_id, domain, why, have_memo ?
			    "; the cached one is used" : "");
			memset(&r, 0, sizeof(r));
			r.domain = domain;
			r.policy_type = "sts";
			r.result_type = fail;
			delivery_note_tls(&r);
		}
		if (have_memo && fresh) {
			buf_init(&mx);
			for (size_t i = 0; i < memo.nmx; i++)
				buf_appendf(&mx, "%s%s", i > 0 ? " " : "",
				    memo.mx[i]);
			log_info("id=%s relay: MTA-STS policy of %s: id %s,"
			    " mode %s, max_age %lld", job->queue_id, domain,
			    memo.id, sts_mode_names[memo.mode],
			    (long long)memo.max_age);
			delivery_note_sts(domain, memo.id,
			    sts_mode_names[memo.mode], memo.max_age,
			    memo.fetched_at, mx.data != NULL ? mx.data : "");
			buf_free(&mx);
		}
	}
	return have_memo && memo.mode != STS_MODE_NONE ? &memo : NULL;
}

int
relay_deliver(struct delivery_job *job)
{
	char why[DELIVERY_REPLY_MAX], key[512];
	struct host hosts[RELAY_MAX_MX];
	const char *content;
	struct target t;
	bool perm = false;
	int n, i;

	dane_resolver_init(job->conf);
	if (find_target(job, &t, why, sizeof(why)) < 0) {
		log_warn("id=%s relay: %s", job->queue_id, why);
		delivery_set_pending(job, DELIVERY_DEFER, "%s", why);
		return 0;
	}
	if ((content = delivery_content(job)) == NULL) {
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.0 cannot read the message");
		return -1;
	}
	job_key(job, &t, key, sizeof(key));
	if (try_cached(job, key, content, why, sizeof(why), &perm))
		return 0;
	if (strcmp(t.name, "mx") == 0)
		n = job->nrcpts > 0 ? mx_hosts(domain_of(job->rcpts[0].address),
		    hosts, ARRAY_LEN(hosts), why, sizeof(why), &perm,
		    &t.mx_secure) : 0;
	else
		n = upstream_hosts(job, &t, hosts, ARRAY_LEN(hosts));
	if (n == 0)
		snprintf(why, sizeof(why), "451 4.3.5 upstream %s has no"
		    " usable host", t.name);
	if (n > 0 && t.level == TLS_LEVEL_MTA_STS)
		t.sts = sts_for(job, t.domain);
	for (i = 0; i < n; i++) {
		if (try_host(job, &t, &hosts[i], content, key, why, sizeof(why),
		    &perm))
			return 0;
	}
	/* Nobody took it: refused by every server for what it is, or a
	 * domain that takes no mail, bounces; anything else waits. */
	delivery_set_pending(job, perm ? DELIVERY_FAIL : DELIVERY_DEFER,
	    "%s", why);
	return 0;
}

void
relay_finish(void)
{
	conn_close(cached, true);
	cached = NULL;
}

void
relay_batch_end(void)
{
	ndown = 0;
}
