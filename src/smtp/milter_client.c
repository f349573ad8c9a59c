/*
 * milter_client — see milter_client.h.
 *
 * Each (session, milter) pair is a conversation (struct mconv) with its
 * own non-blocking socket in the pool's event loop.  A stage visits the
 * session's conversations in order; for each, next_command() says what
 * it must be told next -- what it missed (negotiation, CONNECT, HELO,
 * MAIL), then the stage's own commands -- and each command that has a
 * reply waits for it.  Replies and failures are collected by the pool's
 * loop and handed over at the end of milter_pool_dispatch() (or of a
 * tick), so that nothing is called back from inside milter_run() or in
 * the middle of reading a socket.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "common/event.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "smtp/milter.h"
#include "smtp/milter_client.h"

#define MAX_MILTERS 16

enum conn_state { MC_CLOSED, MC_CONNECTING, MC_OPEN, MC_FAILED };

/* Where a conversation is in the current stage. */
enum mphase {
	P_NONE,
	P_OPTNEG, P_CONNECT, P_HELO, P_MAIL, P_RCPT, P_DATA,
	P_HEADER, P_EOH, P_BODY, P_EOB,
};

struct mconv {
	struct milter_session *ms;
	const struct milter_conf *def;
	size_t      idx;            /* in conf->milters */
	struct mconv *all_next, *all_prev;   /* the pool's list */
	struct mconv *ready_next;
	bool        ready;

	/* the connection */
	int         fd;
	enum conn_state state;
	uint32_t    events;
	struct buf  out;
	size_t      out_off;
	struct buf  in;
	uint64_t    deadline_ms;    /* 0: not waiting */
	char        failure[160];   /* why it failed, once */
	bool        failed_seen;

	/* the conversation */
	struct milter_options opt;
	bool        negotiated;
	bool        connect_sent;
	unsigned    helo_gen;       /* ms->helo_gen told, 0 none */
	bool        mail_sent;
	bool        data_sent;
	bool        session_done;   /* accepted at CONNECT/HELO, or dead */
	bool        txn_done;       /* accepted: nothing more this message */
	bool        in_txn;         /* takes part in this message */
	bool        rcpt_told;      /* this RCPT was sent */
	unsigned    txn_rcpts;      /* accepted recipients it was told */
	bool        session_rejected;   /* its answer at CONNECT stands */
	struct policy_answer session_answer;
	bool        waiting;        /* for the reply to `phase` */
	enum mphase phase;
	bool        stage_over;     /* nothing more this stage */
	/* end of message */
	size_t      hdr_next;       /* header fields sent */
	size_t      body_off;       /* body bytes sent */
	bool        body_skip;
	struct milter_edits edits;
};

struct milter_session {
	const struct mxconf *conf;
	struct milter_client_info ci;
	char        client_ip[64], server_ip[64];
	char        client_port[8], server_port[8];
	struct mconv *conv;         /* those any session may need */
	size_t      nconv;
	unsigned    helo_gen;
	char        helo[256];

	/* the stage being run */
	bool        active;
	enum smtp_stage stage;
	struct milter_stage_input in;
	size_t      visit[MAX_MILTERS];
	size_t      nvisit, cursor;
	milter_done_fn done;
	void       *arg;
	/* end of message: the message as the milters so far left it */
	struct buf  msg;
	bool        msg_own;        /* msg holds it (else in.message) */
	size_t      hdr_count;
	struct hdr { char *name, *value; } *hdrs;
	size_t      body_start;
	struct milter_outcome outcome;
	char       *session_discard;    /* SMFIR_DISCARD at CONNECT/HELO */
};

static struct {
	const struct mxconf *conf;
	struct event_loop *loop;
	int         evfd;
	struct sockaddr_storage addr[MAX_MILTERS];
	socklen_t   addrlen[MAX_MILTERS];
	struct mconv *all;
	struct mconv *ready;
} pool = { .evfd = -1 };

static void conv_advance(struct mconv *c);
static void stage_continue(struct milter_session *ms);

/* ---- the pool ---- */

static void
wake(void)
{
	uint64_t one = 1;

	while (write(pool.evfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void
on_wake(void *arg, int fd, uint32_t events)
{
	uint64_t n;

	(void)arg;
	(void)events;
	while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
}

/* The conversation has something to hand over (a reply, a failure). */
static void
mark_ready(struct mconv *c)
{
	if (c->ready)
		return;
	c->ready = true;
	c->ready_next = pool.ready;
	pool.ready = c;
	wake();
}

int
milter_pool_init(const struct mxconf *conf)
{
	char why[256];

	pool.conf = conf;
	if (conf->nmilters == 0)
		return 0;
	for (size_t i = 0; i < conf->nmilters && i < MAX_MILTERS; i++) {
		/* Checked at load: cannot fail. */
		if (policy_address_parse(conf->milters[i].address, &pool.addr[i],
		    &pool.addrlen[i], why, sizeof(why)) < 0) {
			log_error("milter %s: %s: %s", conf->milters[i].name,
			    conf->milters[i].address, why);
			return -1;
		}
	}
	pool.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool.evfd < 0) {
		log_error("milters: eventfd: %s", strerror(errno));
		return -1;
	}
	pool.loop = event_loop_new(64);
	event_add(pool.loop, pool.evfd, EPOLLIN, on_wake, NULL);
	return 0;
}

void
milter_pool_free(void)
{
	if (pool.loop != NULL) {
		event_del(pool.loop, pool.evfd);
		event_loop_free(pool.loop);
	}
	if (pool.evfd >= 0)
		close(pool.evfd);
	memset(&pool, 0, sizeof(pool));
	pool.evfd = -1;
}

int
milter_pool_fd(void)
{
	return pool.loop != NULL ? event_loop_fd(pool.loop) : -1;
}

static void
deliver_ready(void)
{
	struct mconv *c;

	while ((c = pool.ready) != NULL) {
		pool.ready = c->ready_next;
		c->ready = false;
		conv_advance(c);
	}
}

void
milter_pool_dispatch(void)
{
	if (pool.loop == NULL)
		return;
	event_run(pool.loop, 0);
	deliver_ready();
}

static void conn_fail(struct mconv *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void
milter_pool_tick(uint64_t now_ms)
{
	for (struct mconv *c = pool.all; c != NULL; c = c->all_next) {
		if (c->deadline_ms != 0 && now_ms >= c->deadline_ms)
			conn_fail(c, "no answer in time");
	}
	/* Handed over by the next dispatch (conn_fail woke the loop). */
}

/* ---- a connection ---- */

static void
conn_watch(struct mconv *c, uint32_t events)
{
	if (c->fd < 0 || c->events == events)
		return;
	event_mod(pool.loop, c->fd, events);
	c->events = events;
}

static void
conn_close(struct mconv *c)
{
	if (c->fd >= 0) {
		event_del(pool.loop, c->fd);
		close(c->fd);
	}
	c->fd = -1;
	c->events = 0;
	c->deadline_ms = 0;
}

static void
conn_fail(struct mconv *c, const char *fmt, ...)
{
	va_list ap;

	if (c->state == MC_FAILED)
		return;
	va_start(ap, fmt);
	vsnprintf(c->failure, sizeof(c->failure), fmt, ap);
	va_end(ap);
	conn_close(c);
	c->state = MC_FAILED;
	mark_ready(c);
}

static void
conn_flush(struct mconv *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off,
		    c->out.len - c->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			conn_watch(c, EPOLLIN | EPOLLOUT);
			return;
		}
		if (n < 0) {
			conn_fail(c, "%s", strerror(errno));
			return;
		}
		c->out_off += (size_t)n;
	}
	buf_reset(&c->out);
	c->out_off = 0;
	conn_watch(c, EPOLLIN);
}

/*
 * A milter writes a reply packet per write(): the second waits (Nagle)
 * for our ACK of the first, which the kernel delays 40 ms when it has
 * nothing to send.  Acknowledge at once instead (quick ACK mode does
 * not stick: set it after each read).
 */
static void
quickack(struct mconv *c)
{
	int one = 1;

	if (pool.addr[c->idx].ss_family != AF_UNIX)
		(void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one,
		    sizeof(one));
}

static void
conn_read(struct mconv *c)
{
	char chunk[16384];

	for (;;) {
		ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_fail(c, "%s", n == 0 ? "connection closed" :
			    strerror(errno));
			return;
		}
		if (c->in.len + (size_t)n > MILTER_PACKET_MAX + 64) {
			conn_fail(c, "reply too long");
			return;
		}
		buf_append(&c->in, chunk, (size_t)n);
		quickack(c);
	}
	if (c->in.len > 0)
		mark_ready(c);
}

static void
on_conn(void *arg, int fd, uint32_t events)
{
	struct mconv *c = arg;
	int err = 0;
	socklen_t len = sizeof(err);

	(void)fd;
	if (c->state == MC_CONNECTING) {
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err != 0) {
			conn_fail(c, "connect: %s", strerror(err));
			return;
		}
		c->state = MC_OPEN;
	}
	if (events & EPOLLOUT)
		conn_flush(c);
	if (c->state == MC_OPEN && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		conn_read(c);
}

static void
conn_open(struct mconv *c)
{
	int fd = socket(pool.addr[c->idx].ss_family, SOCK_STREAM |
	    SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	c->state = MC_CONNECTING;
	if (fd < 0) {
		conn_fail(c, "socket: %s", strerror(errno));
		return;
	}
	c->fd = fd;
	if (pool.addr[c->idx].ss_family != AF_UNIX) {
		int one = 1;
		/* Each command is one write; none should wait for an ACK. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		quickack(c);
	}
	event_add(pool.loop, fd, EPOLLOUT, on_conn, c);
	c->events = EPOLLOUT;
	if (connect(fd, (struct sockaddr *)&pool.addr[c->idx],
	    pool.addrlen[c->idx]) == 0)
		c->state = MC_OPEN;
	else if (errno != EINPROGRESS && errno != EAGAIN)
		conn_fail(c, "connect: %s", strerror(errno));
	c->deadline_ms = monotonic_ms() +
	    (uint64_t)c->def->connect_timeout * 1000;
}

/* Queue bytes; they go out when the socket is connected and writable. */
static void
conn_send(struct mconv *c, bool reply, unsigned timeout_s)
{
	if (c->state == MC_OPEN)
		conn_flush(c);
	if (reply) {
		c->waiting = true;
		c->deadline_ms = monotonic_ms() + (uint64_t)timeout_s * 1000;
	}
}

/* ---- verdicts ---- */

static void
answer_set(struct policy_answer *a, const struct mconv *c, int code,
    const char *text, const char *why)
{
	policy_answer_set(a, code, text, code >= 500 ? "Command rejected" :
	    "Service unavailable - try again later");
	snprintf(a->why, sizeof(a->why), "milter=%.60s %s", c->def->name, why);
}

/* The milter's default action, as an answer (CONTINUE for accept). */
static void
default_answer(const struct mconv *c, struct policy_answer *a)
{
	memset(a, 0, sizeof(*a));
	a->is_default = true;
	if (strcmp(c->def->default_action, "accept") == 0) {
		a->verdict = POLICY_CONTINUE;
		snprintf(a->why, sizeof(a->why), "milter=%.40s unavailable "
		    "(%.80s), default accept", c->def->name, c->failure);
		return;
	}
	if (strcmp(c->def->default_action, "reject") == 0)
		answer_set(a, c, 550, "5.7.1 Command rejected", "default");
	else
		answer_set(a, c, 451, "4.7.1 Service unavailable - try again "
		    "later", "default");
	snprintf(a->why, sizeof(a->why), "milter=%.40s unavailable (%.80s), "
	    "default %s", c->def->name, c->failure, c->def->default_action);
}

/* The stage is decided by a: report it to the session. */
static void
stage_finish(struct milter_session *ms, const struct policy_answer *a)
{
	milter_done_fn done = ms->done;

	ms->active = false;
	ms->done = NULL;
	for (size_t i = 0; i < ms->nvisit; i++) {
		struct mconv *c = &ms->conv[ms->visit[i]];
		if (ms->stage == STAGE_RCPT && c->rcpt_told &&
		    (a->verdict == POLICY_CONTINUE || a->verdict ==
		    POLICY_ACCEPT))
			c->txn_rcpts++;
		c->rcpt_told = false;
	}
	done(ms->arg, a);
}

/* ---- commands ---- */

static void
macro_values(struct milter_session *ms, struct milter_macro_values *v,
    char *underscore, size_t usize, char *bits, size_t bsize, char *rcpt_host,
    size_t rhsize)
{
	const struct milter_stage_input *in = &ms->in;
	const char *at;

	memset(v, 0, sizeof(*v));
	v->j = ms->ci.hostname;
	v->daemon_name = "mxgate";
	v->daemon_addr = ms->server_ip;
	v->daemon_port = ms->server_port;
	v->client_addr = ms->client_ip;
	v->client_port = ms->client_port;
	v->client_name = "unknown";
	v->client_ptr = "unknown";
	snprintf(underscore, usize, "%s [%s]", ms->helo[0] ? ms->helo :
	    "unknown", ms->client_ip);
	v->underscore = underscore;
	v->i = in->queue_id;
	v->tls_version = in->tls_version;
	v->cipher = in->tls_cipher;
	if (in->tls_version != NULL) {
		snprintf(bits, bsize, "%d", in->tls_bits);
		v->cipher_bits = bits;
	}
	if (in->auth_user != NULL) {
		v->auth_type = "PLAIN";
		v->auth_authen = in->auth_user;
	}
	v->mail_addr = in->sender;
	v->mail_mailer = "smtp";
	v->rcpt_addr = in->rcpt;
	if (in->rcpt != NULL && (at = strrchr(in->rcpt, '@')) != NULL)
		snprintf(rcpt_host, rhsize, "%s", at + 1);
	else
		rcpt_host[0] = '\0';
	v->rcpt_host = rcpt_host;
	v->rcpt_mailer = in->rcpt_action;
}

static void
put_macros(struct mconv *c, enum milter_macro_stage st, char cmd)
{
	struct milter_macro_values v;
	char u[400], bits[16], rh[256];

	macro_values(c->ms, &v, u, sizeof(u), bits, sizeof(bits), rh,
	    sizeof(rh));
	milter_put_macros(&c->out, st, cmd, c->opt.macros[st], &v);
}

static bool
nr(const struct mconv *c, uint32_t flag)
{
	return (c->opt.protocol & flag) != 0;
}

static void
send_connect(struct mconv *c)
{
	struct milter_session *ms = c->ms;
	struct buf d;
	bool v6 = strchr(ms->client_ip, ':') != NULL;
	unsigned char port[2] = { ms->ci.client_port >> 8,
	    ms->ci.client_port & 0xff };

	put_macros(c, MILTER_M_CONNECT, SMFIC_CONNECT);
	buf_init(&d);
	buf_append(&d, "unknown", 8);
	buf_append(&d, v6 ? "6" : "4", 1);
	buf_append(&d, port, 2);
	buf_append(&d, ms->client_ip, strlen(ms->client_ip) + 1);
	milter_put(&c->out, SMFIC_CONNECT, d.data, d.len);
	buf_free(&d);
}

/* MAIL's arguments: <sender> and what we know of its parameters. */
static void
send_mail(struct mconv *c)
{
	const struct milter_stage_input *in = &c->ms->in;
	char from[400];
	const char *args[2] = { from, "BODY=8BITMIME" };

	snprintf(from, sizeof(from), "<%s>", in->sender ? in->sender : "");
	put_macros(c, MILTER_M_MAIL, SMFIC_MAIL);
	milter_put_strings(&c->out, SMFIC_MAIL, args, in->body_8bitmime ? 2 : 1);
}

static void
send_rcpt(struct mconv *c)
{
	char to[400];
	const char *args[1] = { to };

	snprintf(to, sizeof(to), "<%s>", c->ms->in.rcpt);
	put_macros(c, MILTER_M_RCPT, SMFIC_RCPT);
	milter_put_strings(&c->out, SMFIC_RCPT, args, 1);
}

static const char *
msg_data(const struct milter_session *ms, size_t *len)
{
	if (ms->msg_own) {
		*len = ms->msg.len;
		return ms->msg.data;
	}
	*len = ms->in.message_len;
	return ms->in.message;
}

/*
 * Send the next command c needs for the stage: P_NONE when the stage has
 * nothing more for it.  Sets c->phase and waits when a reply is due.
 */
static enum mphase
next_command(struct mconv *c)
{
	struct milter_session *ms = c->ms;
	enum smtp_stage st = ms->stage;
	const struct milter_conf *d = c->def;
	const char *empty[1] = { "" };

	if (!c->negotiated) {
		conn_open(c);
		milter_put_optneg(&c->out);
		c->phase = P_OPTNEG;
		conn_send(c, true, d->connect_timeout);
		return c->phase;
	}
	if (!c->connect_sent) {
		c->connect_sent = true;
		if (!nr(c, SMFIP_NOCONNECT)) {
			send_connect(c);
			c->phase = P_CONNECT;
			conn_send(c, !nr(c, SMFIP_NR_CONN), d->command_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (st == STAGE_CONNECT)
		return P_NONE;
	if (ms->helo_gen != 0 && c->helo_gen != ms->helo_gen) {
		const char *args[1] = { ms->helo };
		c->helo_gen = ms->helo_gen;
		if (!nr(c, SMFIP_NOHELO)) {
			put_macros(c, MILTER_M_HELO, SMFIC_HELO);
			milter_put_strings(&c->out, SMFIC_HELO, args, 1);
			c->phase = P_HELO;
			conn_send(c, !nr(c, SMFIP_NR_HELO), d->command_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (st == STAGE_HELO || c->session_done || c->txn_done)
		return P_NONE;
	if (!c->mail_sent) {
		c->mail_sent = true;
		c->in_txn = true;
		if (!nr(c, SMFIP_NOMAIL)) {
			send_mail(c);
			c->phase = P_MAIL;
			conn_send(c, !nr(c, SMFIP_NR_MAIL), d->command_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (st == STAGE_MAIL || c->txn_done)
		return P_NONE;
	if (st == STAGE_RCPT) {
		if (c->rcpt_told)
			return P_NONE;
		c->rcpt_told = true;
		if (nr(c, SMFIP_NORCPT))
			return P_NONE;
		send_rcpt(c);
		c->phase = P_RCPT;
		conn_send(c, !nr(c, SMFIP_NR_RCPT), d->command_timeout);
		return c->waiting ? c->phase : P_NONE;
	}
	if (!c->data_sent) {
		c->data_sent = true;
		if (!nr(c, SMFIP_NODATA)) {
			put_macros(c, MILTER_M_DATA, SMFIC_DATA);
			milter_put(&c->out, SMFIC_DATA, NULL, 0);
			c->phase = P_DATA;
			conn_send(c, !nr(c, SMFIP_NR_DATA), d->command_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (st == STAGE_DATA || c->txn_done)
		return P_NONE;
	/* End of message: the header fields, one by one, then the body. */
	while (c->hdr_next < ms->hdr_count && !nr(c, SMFIP_NOHDRS)) {
		const char *f[2] = { ms->hdrs[c->hdr_next].name,
		    ms->hdrs[c->hdr_next].value };
		c->hdr_next++;
		milter_put_strings(&c->out, SMFIC_HEADER, f, 2);
		c->phase = P_HEADER;
		conn_send(c, !nr(c, SMFIP_NR_HDR), d->content_timeout);
		if (c->waiting)
			return c->phase;
	}
	if (c->phase < P_EOH) {
		c->phase = P_EOH;
		if (!nr(c, SMFIP_NOEOH)) {
			put_macros(c, MILTER_M_EOH, SMFIC_EOH);
			milter_put(&c->out, SMFIC_EOH, NULL, 0);
			conn_send(c, !nr(c, SMFIP_NR_EOH), d->content_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (c->phase <= P_BODY && !c->body_skip && !nr(c, SMFIP_NOBODY)) {
		size_t len;
		const char *m = msg_data(ms, &len);
		size_t left = len - ms->body_start - c->body_off;

		while (left > 0) {
			size_t n = left < MILTER_CHUNK ? left : MILTER_CHUNK;
			milter_put(&c->out, SMFIC_BODY, m + ms->body_start +
			    c->body_off, n);
			c->body_off += n;
			left -= n;
			c->phase = P_BODY;
			conn_send(c, !nr(c, SMFIP_NR_BODY), d->content_timeout);
			if (c->waiting)
				return c->phase;
		}
	}
	if (c->phase < P_EOB) {
		put_macros(c, MILTER_M_EOM, SMFIC_BODYEOB);
		milter_put_strings(&c->out, SMFIC_BODYEOB, empty, 0);
		c->phase = P_EOB;
		conn_send(c, true, d->content_timeout);
		return c->phase;
	}
	return P_NONE;
}

/* ---- replies ---- */

static char *
strip_brackets(const char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '<' && s[n - 1] == '>')
		return xstrndup(s + 1, n - 2);
	return xstrdup(s);
}

static void
list_add(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = s;
}

/* The milter's edits so far, applied to the message the next sees. */
static void hdrs_load(struct milter_session *ms);

static void
edits_commit(struct mconv *c)
{
	struct milter_session *ms = c->ms;
	struct buf out;
	size_t len;
	const char *m;

	if (c->edits.n == 0 && !c->edits.body_replaced)
		return;
	m = msg_data(ms, &len);
	buf_init(&out);
	milter_edits_apply(m, len, &c->edits, &out);
	buf_free(&ms->msg);
	ms->msg = out;
	ms->msg_own = true;
	ms->outcome.changed = true;
	milter_edits_free(&c->edits);
	milter_edits_init(&c->edits);
	hdrs_load(ms);
}

/* A modification at end of message; -1 when it breaks the protocol. */
static int
modification(struct mconv *c, const struct milter_reply *r, char *why,
    size_t whylen)
{
	struct milter_outcome *o = &c->ms->outcome;
	static const uint32_t need[] = {
		[MR_ADDHEADER] = SMFIF_ADDHDRS, [MR_INSHEADER] = SMFIF_ADDHDRS,
		[MR_CHGHEADER] = SMFIF_CHGHDRS, [MR_ADDRCPT] = SMFIF_ADDRCPT |
		SMFIF_ADDRCPT_PAR, [MR_DELRCPT] = SMFIF_DELRCPT,
		[MR_REPLBODY] = SMFIF_CHGBODY, [MR_QUARANTINE] =
		SMFIF_QUARANTINE, [MR_CHGFROM] = SMFIF_CHGFROM,
	};

	if (c->phase != P_EOB) {
		snprintf(why, whylen, "modification before end of message");
		return -1;
	}
	if ((c->opt.actions & need[r->kind]) == 0) {
		snprintf(why, whylen, "modification it did not negotiate");
		return -1;
	}
	switch (r->kind) {
	case MR_ADDRCPT:
		list_add(&o->add_rcpts, &o->nadd_rcpts, strip_brackets(r->name));
		break;
	case MR_DELRCPT:
		list_add(&o->del_rcpts, &o->ndel_rcpts, strip_brackets(r->name));
		break;
	case MR_CHGFROM:
		free(o->new_sender);
		o->new_sender = strip_brackets(r->name);
		break;
	case MR_QUARANTINE: {
		char q[300];
		snprintf(q, sizeof(q), "milter=%s %s", c->def->name, r->name);
		free(o->quarantine);
		o->quarantine = xstrdup(q);
		break;
	}
	default:
		return milter_edits_add(&c->edits, r, why, whylen);
	}
	return 0;
}

/* After end of message (or an abort): the milter expects a new MAIL. */
static void
conv_txn_over(struct mconv *c)
{
	c->mail_sent = false;
	c->data_sent = false;
	c->in_txn = false;
	c->txn_done = false;
	c->rcpt_told = false;
	c->txn_rcpts = 0;
	c->hdr_next = 0;
	c->body_off = 0;
	c->body_skip = false;
	c->phase = P_NONE;
	milter_edits_free(&c->edits);
	milter_edits_init(&c->edits);
}

/*
 * A final reply to c's command: CONTINUE (nothing), or the verdict into a
 * (returns true: the stage is decided).
 */
static bool
verdict(struct mconv *c, const struct milter_reply *r, struct policy_answer *a)
{
	struct milter_session *ms = c->ms;
	bool connection = c->phase == P_CONNECT || c->phase == P_HELO;
	char text[480];
	int code;

	switch (r->kind) {
	case MR_ACCEPT:
		if (connection)
			c->session_done = true;
		else
			c->txn_done = true;
		c->stage_over = true;
		return false;
	case MR_DISCARD: {
		char d[200];

		/* At CONNECT or HELO it stands for the session: every
		 * message of it is accepted and discarded, and the milter
		 * has nothing more to see. */
		snprintf(d, sizeof(d), "milter=%s%s", c->def->name,
		    connection ? " (at the connection: every message of the "
		    "session)" : "");
		if (connection) {
			free(ms->session_discard);
			ms->session_discard = xstrdup(d);
			c->session_done = true;
		} else if (c->phase >= P_MAIL) {
			free(ms->outcome.discard);
			ms->outcome.discard = xstrdup(d);
		}
		c->txn_done = true;
		c->stage_over = true;
		return false;
	}
	case MR_REJECT:
		answer_set(a, c, 550, "5.7.1 Command rejected", "reject");
		break;
	case MR_TEMPFAIL:
		answer_set(a, c, 451, "4.7.1 Service unavailable - try again "
		    "later", "tempfail");
		break;
	case MR_REPLYCODE:
		milter_replycode_parse(r->name, &code, text, sizeof(text));
		answer_set(a, c, code, text, "reply");
		break;
	default:
		return false;
	}
	/* A refusal of the connection or of HELO stands for the
	 * session. */
	if (c->phase == P_CONNECT || c->phase == P_HELO) {
		c->session_rejected = true;
		c->session_answer = *a;
	}
	if (c->phase == P_EOB)
		c->txn_done = true;
	return true;
}

/* c failed: its default action for this stage and the session. */
static void
conv_failed(struct mconv *c, struct policy_answer *a)
{
	if (!c->failed_seen)
		log_warn("session=%016llx milter=%s %s: %s",
		    (unsigned long long)c->ms->ci.conn_id, c->def->name,
		    c->def->address, c->failure);
	c->failed_seen = true;
	c->waiting = false;
	c->session_done = true;
	default_answer(c, a);
}

/* Read c's replies; true when the stage got decided (into a). */
static bool
conv_replies(struct mconv *c, struct policy_answer *a)
{
	struct milter_packet p;
	struct milter_reply r;
	char why[160];
	long n;

	while (c->waiting && (n = milter_get(c->in.data, c->in.len, &p)) != 0) {
		if (n < 0) {
			conn_fail(c, "malformed packet");
			return false;
		}
		if (c->phase == P_OPTNEG) {
			if (p.cmd != SMFIC_OPTNEG || milter_optneg_parse(p.data,
			    p.len, &c->opt, why, sizeof(why)) < 0) {
				conn_fail(c, "negotiation: %s", p.cmd !=
				    SMFIC_OPTNEG ? "unexpected reply" : why);
				return false;
			}
			c->negotiated = true;
			c->waiting = false;
			c->deadline_ms = 0;
			buf_consume(&c->in, (size_t)n);
			return false;
		}
		if (milter_reply_parse(&p, &r, why, sizeof(why)) < 0) {
			conn_fail(c, "%s", why);
			return false;
		}
		if (r.kind >= MR_ADDHEADER && r.kind <= MR_CHGFROM) {
			if (modification(c, &r, why, sizeof(why)) < 0) {
				conn_fail(c, "%s", why);
				return false;
			}
			buf_consume(&c->in, (size_t)n);
			continue;
		}
		if (r.kind == MR_SHUTDOWN) {
			conn_fail(c, "shut down");
			return false;
		}
		if (r.kind == MR_PROGRESS) {
			c->deadline_ms = monotonic_ms() +
			    (uint64_t)c->def->content_timeout * 1000;
			buf_consume(&c->in, (size_t)n);
			continue;
		}
		buf_consume(&c->in, (size_t)n);
		c->waiting = false;
		c->deadline_ms = 0;
		if (r.kind == MR_SKIP) {
			if (c->phase == P_BODY)
				c->body_skip = true;
			continue;
		}
		if (verdict(c, &r, a))
			return true;
		if (c->phase == P_EOB) {
			edits_commit(c);
			c->stage_over = true;
		}
	}
	return false;
}

/*
 * A refusal (or a failure's default) for the stage: answered at once from
 * MAIL on; at CONNECT and HELO it is kept and given at MAIL and after,
 * as Postfix's smtpd_delay_reject does, so that a client refused, or a
 * milter down, still gets its 220 and a reply it can log.  true: the
 * stage is over.
 */
static bool
refuse(struct milter_session *ms, struct mconv *c,
    const struct policy_answer *a)
{
	if (a->verdict != POLICY_REJECT && a->verdict != POLICY_TEMPFAIL)
		return false;
	if (ms->stage <= STAGE_HELO) {
		if (!c->session_rejected) {
			c->session_answer = *a;
			c->session_rejected = true;
		}
		return false;
	}
	stage_finish(ms, a);
	return true;
}

/*
 * Move the current stage on: c (the conversation visited now) got
 * something, or the stage starts.
 */
static void
stage_continue(struct milter_session *ms)
{
	struct policy_answer a;

	while (ms->active && ms->cursor < ms->nvisit) {
		struct mconv *c = &ms->conv[ms->visit[ms->cursor]];

		memset(&a, 0, sizeof(a));
		a.verdict = POLICY_CONTINUE;
		if (c->state == MC_FAILED) {
			conv_failed(c, &a);
			if (refuse(ms, c, &a))
				return;
			ms->cursor++;
			continue;
		}
		if (c->session_rejected) {
			if (refuse(ms, c, &c->session_answer))
				return;
			ms->cursor++;
			continue;
		}
		if (c->waiting) {
			if (!conv_replies(c, &a)) {
				if (c->state == MC_FAILED || !c->waiting)
					continue;
				return;
			}
			if (refuse(ms, c, &a))
				return;
			ms->cursor++;
			continue;
		}
		if (c->stage_over || c->session_done ||
		    next_command(c) == P_NONE) {
			if (c->state != MC_FAILED)
				ms->cursor++;
			continue;
		}
		if (c->state == MC_FAILED)
			continue;
		return;         /* waits for its reply */
	}
	if (ms->active) {
		memset(&a, 0, sizeof(a));
		a.verdict = POLICY_CONTINUE;
		stage_finish(ms, &a);
	}
}

/* The pool handed over c's replies or failure. */
static void
conv_advance(struct mconv *c)
{
	struct milter_session *ms = c->ms;

	if (ms->active && ms->cursor < ms->nvisit &&
	    &ms->conv[ms->visit[ms->cursor]] == c) {
		stage_continue(ms);
		return;
	}
	/* Not asked anything now: a failure waits for its next stage;
	 * unasked-for data is a protocol error. */
	if (c->state == MC_OPEN && c->in.len > 0 && !c->waiting)
		conn_fail(c, "reply nobody asked for");
}

/* ---- the session ---- */

static void
hdr_cb(void *arg, const char *name, const char *value)
{
	struct milter_session *ms = arg;

	ms->hdrs = xrealloc(ms->hdrs, (ms->hdr_count + 1) * sizeof(*ms->hdrs));
	ms->hdrs[ms->hdr_count].name = xstrdup(name);
	ms->hdrs[ms->hdr_count].value = xstrdup(value);
	ms->hdr_count++;
}

static void
hdrs_free(struct milter_session *ms)
{
	for (size_t i = 0; i < ms->hdr_count; i++) {
		free(ms->hdrs[i].name);
		free(ms->hdrs[i].value);
	}
	free(ms->hdrs);
	ms->hdrs = NULL;
	ms->hdr_count = 0;
}

static void
hdrs_load(struct milter_session *ms)
{
	size_t len;
	const char *m = msg_data(ms, &len);

	hdrs_free(ms);
	ms->body_start = milter_headers_walk(m, len, hdr_cb, ms);
}

static bool
uses_milter(const struct mxconf *conf, size_t idx)
{
	for (size_t i = 0; i < conf->nsmtp_milters; i++)
		if (strcmp(conf->smtp_milters[i], conf->milters[idx].name) == 0)
			return true;
	for (size_t r = 0; r < conf->nroutes; r++)
		for (size_t i = 0; i < conf->routes[r].nmilters; i++)
			if (strcmp(conf->routes[r].milters[i],
			    conf->milters[idx].name) == 0)
				return true;
	return false;
}

static bool
is_global(const struct mxconf *conf, size_t idx)
{
	for (size_t i = 0; i < conf->nsmtp_milters; i++)
		if (strcmp(conf->smtp_milters[i], conf->milters[idx].name) == 0)
			return true;
	return false;
}

struct milter_session *
milter_session_new(const struct mxconf *conf,
    const struct milter_client_info *ci)
{
	struct milter_session *ms;

	if (pool.loop == NULL || conf->nmilters == 0)
		return NULL;
	ms = xcalloc(1, sizeof(*ms));
	ms->conv = xcalloc(conf->nmilters, sizeof(*ms->conv));
	ms->conf = conf;
	ms->ci = *ci;
	snprintf(ms->client_ip, sizeof(ms->client_ip), "%s", ci->client_ip);
	snprintf(ms->server_ip, sizeof(ms->server_ip), "%s", ci->server_ip);
	snprintf(ms->client_port, sizeof(ms->client_port), "%u",
	    ci->client_port);
	snprintf(ms->server_port, sizeof(ms->server_port), "%u",
	    ci->server_port);
	ms->ci.client_ip = ms->client_ip;
	ms->ci.server_ip = ms->server_ip;
	/* smtp_milters first, in their order; then the routes' ones. */
	for (size_t i = 0; i < conf->nsmtp_milters; i++)
		for (size_t k = 0; k < conf->nmilters && k < MAX_MILTERS; k++)
			if (strcmp(conf->smtp_milters[i],
			    conf->milters[k].name) == 0) {
				ms->conv[ms->nconv].idx = k;
				ms->nconv++;
			}
	for (size_t k = 0; k < conf->nmilters && k < MAX_MILTERS; k++)
		if (!is_global(conf, k) && uses_milter(conf, k)) {
			ms->conv[ms->nconv].idx = k;
			ms->nconv++;
		}
	for (size_t i = 0; i < ms->nconv; i++) {
		struct mconv *c = &ms->conv[i];
		c->ms = ms;
		c->def = &conf->milters[c->idx];
		c->fd = -1;
		buf_init(&c->out);
		buf_init(&c->in);
		milter_edits_init(&c->edits);
		c->all_next = pool.all;
		if (pool.all != NULL)
			pool.all->all_prev = c;
		pool.all = c;
	}
	buf_init(&ms->msg);
	buf_init(&ms->outcome.content);
	return ms;
}

static void
outcome_clear(struct milter_outcome *o)
{
	buf_free(&o->content);
	for (size_t i = 0; i < o->nadd_rcpts; i++)
		free(o->add_rcpts[i]);
	for (size_t i = 0; i < o->ndel_rcpts; i++)
		free(o->del_rcpts[i]);
	free(o->add_rcpts);
	free(o->del_rcpts);
	free(o->new_sender);
	free(o->quarantine);
	free(o->discard);
	memset(o, 0, sizeof(*o));
	buf_init(&o->content);
}

void
milter_session_free(struct milter_session *ms)
{
	if (ms == NULL)
		return;
	for (size_t i = 0; i < ms->nconv; i++) {
		struct mconv *c = &ms->conv[i];

		if (c->state == MC_OPEN && c->out.len == 0) {
			/* Best effort: a full socket just loses the QUIT. */
			milter_put(&c->out, SMFIC_QUIT, NULL, 0);
			(void)send(c->fd, c->out.data, c->out.len,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		conn_close(c);
		if (c->all_prev != NULL)
			c->all_prev->all_next = c->all_next;
		else
			pool.all = c->all_next;
		if (c->all_next != NULL)
			c->all_next->all_prev = c->all_prev;
		if (c->ready) {
			struct mconv **pp;
			for (pp = &pool.ready; *pp != NULL;
			    pp = &(*pp)->ready_next)
				if (*pp == c) {
					*pp = c->ready_next;
					break;
				}
		}
		buf_free(&c->out);
		buf_free(&c->in);
		milter_options_free(&c->opt);
		milter_edits_free(&c->edits);
	}
	hdrs_free(ms);
	buf_free(&ms->msg);
	outcome_clear(&ms->outcome);
	free(ms->session_discard);
	free(ms->conv);
	free(ms);
}

static bool
in_list(const size_t *v, size_t n, size_t idx)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == idx)
			return true;
	return false;
}

void
milter_run(struct milter_session *ms, enum smtp_stage stage,
    const struct milter_stage_input *in, milter_done_fn done, void *arg)
{
	ms->active = true;
	ms->stage = stage;
	ms->in = *in;
	ms->done = done;
	ms->arg = arg;
	ms->nvisit = 0;
	ms->cursor = 0;
	if (stage == STAGE_HELO && in->helo != NULL &&
	    strcmp(in->helo, ms->helo) != 0) {
		snprintf(ms->helo, sizeof(ms->helo), "%s", in->helo);
		ms->helo_gen++;
	} else if (stage == STAGE_HELO && ms->helo_gen == 0) {
		ms->helo_gen = 1;
	}
	if (stage == STAGE_END_OF_MESSAGE) {
		buf_reset(&ms->msg);
		ms->msg_own = false;
		hdrs_load(ms);
	}
	for (size_t i = 0; i < ms->nconv; i++) {
		struct mconv *c = &ms->conv[i];
		bool global = is_global(ms->conf, c->idx);

		c->stage_over = false;
		if (stage == STAGE_RCPT) {
			if (!global && !in_list(in->route_milters,
			    in->nroute_milters, c->idx))
				continue;
		} else if (stage >= STAGE_DATA) {
			if (!global && c->txn_rcpts == 0)
				continue;
		} else if (!global) {
			continue;
		}
		if (c->session_done && !c->session_rejected &&
		    c->state != MC_FAILED)
			continue;
		ms->visit[ms->nvisit++] = i;
	}
	stage_continue(ms);
}

void
milter_txn_reset(struct milter_session *ms)
{
	if (ms == NULL)
		return;
	for (size_t i = 0; i < ms->nconv; i++) {
		struct mconv *c = &ms->conv[i];

		/* Told MAIL and not the end of the message: abort it. */
		if (c->state == MC_OPEN && c->mail_sent && c->phase != P_EOB) {
			milter_put(&c->out, SMFIC_ABORT, NULL, 0);
			conn_flush(c);
		}
		if (c->waiting && c->state == MC_OPEN)
			conn_fail(c, "abandoned in the middle of a command");
		conv_txn_over(c);
	}
	outcome_clear(&ms->outcome);
	buf_reset(&ms->msg);
	ms->msg_own = false;
	hdrs_free(ms);
}

struct milter_outcome *
milter_outcome(struct milter_session *ms)
{
	if (ms->session_discard != NULL && ms->outcome.discard == NULL)
		ms->outcome.discard = xstrdup(ms->session_discard);
	if (ms->outcome.changed && ms->outcome.content.len == 0) {
		buf_free(&ms->outcome.content);
		ms->outcome.content = ms->msg;
		buf_init(&ms->msg);
		ms->msg_own = false;
	}
	return &ms->outcome;
}

void
milter_address_inside(const char *address, char *const *dirs, size_t ndirs,
    char *out, size_t size)
{
	const char *slash;

	snprintf(out, size, "%s", address);
	if (strncmp(address, "unix:", 5) != 0 ||
	    (slash = strrchr(address, '/')) == NULL)
		return;
	for (size_t i = 0; i < ndirs; i++) {
		size_t n = strlen(dirs[i]);
		if ((size_t)(slash - (address + 5)) == n &&
		    strncmp(address + 5, dirs[i], n) == 0) {
			snprintf(out, size, "unix:%s/%zu%s", SANDBOX_SOCKET_DIR,
			    i, slash);
			return;
		}
	}
}
