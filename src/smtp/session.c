/*
 * session — see session.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/mman.h>

#include "smtp/authres.h"
#include "common/envelope.h"
#include "smtp/hooks.h"
#include "smtp/milter_client.h"
#include "common/addr.h"
#include "common/log.h"
#include "common/metrics.h"
#include "smtp/route.h"
#include "smtp/checks.h"
#include "smtp/session.h"
#include "smtp/smtp_proto.h"
#include "common/tls.h"
#include "common/util.h"

#define SESSION_INBUF       4096
#define SESSION_OUT_HIGH    (64 * 1024)  /* stop reading above this */
#define CONTENT_FLUSH       IPC_INLINE_MAX  /* memfd write granularity */
#define RUN_ROUNDS          16           /* bound of one session_run() */

/* Where the session is with TLS. */
enum session_tls {
	STLS_OFF,           /* plaintext */
	STLS_STARTING,      /* STARTTLS accepted, its 220 being written */
	STLS_HANDSHAKE,     /* handshaking: no SMTP either way */
	STLS_ON,            /* encrypted */
};

struct session {
	const struct mxconf *conf;
	const struct session_ops *ops;
	int        fd;
	uint64_t   conn_id;
	int        listener;
	char       client_ip[64];
	struct proto *proto;

	/* SESSION_INBUF bytes while input waits to be fed (made at a read,
	 * freed once fed): an idle session carries no buffer (issue 15:
	 * 100,000 of them in a few hundred MB). */
	char      *in;
	size_t     inlen;
	bool       peer_eof;         /* the client closed its side */
	bool       write_failed;     /* the client is gone */
	bool       ended;
	bool       shutting_down;
	uint64_t   deadline_ms;
	uint64_t   request_start_ms;   /* the current request's deadline base */
	uint64_t   greet_at_ms;        /* greet_pause: the 220 waits till then */
	uint64_t   greet_from_ms;      /* when that wait began */
	uint64_t   data_grace_ms;      /* DATA: what min_data_rate added */
	bool       greet_passed;       /* in the master's pass cache */
	unsigned long requests_seen;   /* proto_requests() at the last look */

	char       helo[256];
	bool       helo_seen;        /* helo is the client's, not "unknown" */
	bool       esmtp;
	unsigned   nmessages;

	/* TLS */
	bool       implicit_tls;     /* submissions: handshake, then 220 */
	enum session_tls tls_phase;
	struct tls_conn *tls;
	enum tls_result tls_want;    /* what the handshake waits for */
	bool       tls_read_wants_write;
	bool       tls_write_wants_read;

	/* AUTH */
	char      *auth_user;        /* NULL until AUTH succeeds (routes) */
	unsigned   auth_failures;
	uint64_t   auth_request;     /* a credential check is running */
	uint64_t   auth_reply_ms;    /* when a failed AUTH gets its 535 */

	/* checks of each command (hooks.h); the RCPT being checked */
	struct hooks_session *hooks;
	struct route_result *rcpt_res;  /* while its checks run */
	bool       rcpt_pending;
	const char **rcpt_list;      /* for the checks: accepted addresses */

	/* the transaction */
	struct envelope env;
	unsigned long long size_param;  /* MAIL's SIZE=, 0 if none */
	size_t     max_size;         /* strictest route max_size, 0: none */
	bool       in_data;
	int        memfd;
	/* forged Authentication-Results out; only while in DATA, since it
	 * holds 8 KB that thousands of idle sessions need not carry */
	struct authres_filter *arf;
	struct buf content;          /* not in the memfd (all of a small one) */
	uint64_t   content_len;      /* bytes written to the memfd */
	bool       content_failed;   /* a memfd write failed: answer 451 */
	void      *map;              /* the memfd's content, for milters */
	size_t     map_len;
	uint64_t   request_id;       /* submitted, waiting for the queue */
	size_t     msg_size;         /* the message as stored, for the log */
	uint64_t   data_start_us;    /* DATA accepted, for the log */
};

static void session_run(struct session *s);

/* Stress mode (session_set_stress()): one worker, one state. */
static bool session_stress;

static void
rcpt_res_free(struct session *s)
{
	if (s->rcpt_pending) {
		route_result_free(s->rcpt_res);
		free(s->rcpt_res);
		s->rcpt_res = NULL;
		s->rcpt_pending = false;
	}
}

/* The input buffer, for a read. */
static char *
in_buf(struct session *s)
{
	if (s->in == NULL)
		s->in = xmalloc(SESSION_INBUF);
	return s->in;
}

static void
arf_free(struct session *s)
{
	if (s->arf != NULL) {
		authres_filter_free(s->arf);
		free(s->arf);
		s->arf = NULL;
	}
}

static void
unmap_content(struct session *s)
{
	if (s->map != NULL)
		munmap(s->map, s->map_len);
	s->map = NULL;
	s->map_len = 0;
}

static void
txn_reset(struct session *s)
{
	unmap_content(s);
	envelope_free(&s->env);
	envelope_init(&s->env);
	if (s->memfd >= 0) {
		close(s->memfd);
		s->memfd = -1;
	}
	buf_reset(&s->content);
	s->content_len = 0;
	s->content_failed = false;
	s->in_data = false;
	s->size_param = 0;
	s->max_size = 0;
	arf_free(s);
	if (s->hooks != NULL)
		hooks_txn_reset(s->hooks);
}

/* A message too large to be sent inline (ipc.h) goes to a memfd. */
static int
content_spill(struct session *s)
{
	if (s->memfd >= 0)
		return 0;
	s->memfd = memfd_create("mxgate-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (s->memfd < 0) {
		log_error("session=%016llx memfd_create: %s",
		    (unsigned long long)s->conn_id, strerror(errno));
		s->content_failed = true;
		return -1;
	}
	return 0;
}

static void
content_flush(struct session *s)
{
	size_t off = 0;

	if (!s->content_failed)
		content_spill(s);
	while (off < s->content.len && !s->content_failed) {
		ssize_t n = write(s->memfd, s->content.data + off, s->content.len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("session=%016llx writing message content: %s",
			    (unsigned long long)s->conn_id, strerror(errno));
			s->content_failed = true;
			break;
		}
		off += (size_t)n;
	}
	s->content_len += off;
	buf_reset(&s->content);
}

static void
data_sink(void *ctx, const char *data, size_t len)
{
	struct session *s = ctx;

	if (!s->in_data || s->content_failed)
		return;
	/* Only the header section is looked at; the body passes as is. */
	authres_filter_feed(s->arf, data, len, &s->content);
	if (s->content.len >= CONTENT_FLUSH)
		content_flush(s);
}

/* ---- the log ---- */

static bool encrypted(const struct session *s);

/* A refusal in the dialogue, keyed by the session (README "Logs").
 * rcpt: the recipient refused, or NULL; why: what decided. */
static void
log_reject(struct session *s, const char *stage, const char *rcpt,
    const char *reply, const char *why)
{
	struct log_rec r;
	char sid[20];

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)s->conn_id);
	log_rec_begin(&r);
	log_rec_str(&r, "session", sid);
	log_rec_str(&r, "event", "reject");
	log_rec_str(&r, "stage", stage);
	log_rec_str(&r, "client", s->client_ip);
	log_rec_str(&r, "helo", s->helo_seen ? s->helo : NULL);
	if (s->env.sender != NULL) {
		log_rec_str(&r, "id", s->env.queue_id);
		log_rec_path(&r, "from", s->env.sender);
	}
	if (rcpt != NULL)
		log_rec_path(&r, "to", rcpt);
	log_rec_reply(&r, reply);
	if (why != NULL)
		log_rec_str(&r, "reason", why);
	log_rec_emit(&r, LOG_LEVEL_INFO);
}

/* Recipients of the transaction, each once (continue routes store an
 * address once per route, one after the other). */
static size_t
distinct_rcpts(const struct session *s)
{
	size_t i, n = 0;

	for (i = 0; i < s->env.nrcpts; i++) {
		if (i > 0 && strcmp(s->env.rcpts[i - 1].address,
		    s->env.rcpts[i].address) == 0)
			continue;
		n++;
	}
	return n;
}

/* The message is committed: its reception line, keyed by the queue id. */
static void
log_queued(struct session *s, const char *queue_id)
{
	struct log_rec r;
	char sid[20], proto[16];

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)s->conn_id);
	snprintf(proto, sizeof(proto), "%s%s%s", s->esmtp ? "ESMTP" : "SMTP",
	    encrypted(s) ? "S" : "", s->auth_user != NULL ? "A" : "");
	log_rec_begin(&r);
	log_rec_str(&r, "id", queue_id);
	log_rec_str(&r, "event", "queued");
	log_rec_str(&r, "session", sid);
	log_rec_path(&r, "from", s->env.sender);
	log_rec_num(&r, "size", (long long)s->msg_size);
	log_rec_num(&r, "nrcpt", (long long)distinct_rcpts(s));
	log_rec_str(&r, "client", s->client_ip);
	log_rec_str(&r, "helo", s->helo);
	log_rec_str(&r, "protocol", proto);
	log_rec_str(&r, "tls", encrypted(s) ? tls_conn_version(s->tls) : NULL);
	log_rec_str(&r, "cipher", encrypted(s) ? tls_conn_cipher(s->tls) :
	    NULL);
	log_rec_str(&r, "auth", s->auth_user);
	log_rec_str(&r, "body", s->env.body_8bitmime ? "8BITMIME" : "7BIT");
	log_rec_secs(&r, "transfer", (double)(monotonic_us() -
	    s->data_start_us) / 1e6);
	log_rec_emit(&r, LOG_LEVEL_INFO);
}

/* ---- routes ---- */

/* The session is encrypted: the TLS handshake is done. */
static bool
session_tls_active(const struct session *s)
{
	return s->tls_phase == STLS_ON;
}

static void
rcpt_accept(struct session *s, const struct proto_event *ev,
    const struct route_result *res)
{
	const struct route_match *m;
	size_t i;

	metrics_inc(MC_RCPT_ACCEPTED);
	for (i = 0; i < res->nmatches; i++) {
		m = &res->matches[i];
		envelope_add_rcpt(&s->env, ev->addr_text, m->route,
		    m->action_name, m->params);
		envelope_rcpt_dsn(&s->env, ev->dsn_notify, ev->dsn_orcpt);
		log_info("session=%016llx id=%s rcpt=<%s> route=%s action=%s",
		    (unsigned long long)s->conn_id, s->env.queue_id,
		    ev->addr_text, m->route, m->action_name);
	}
	/* The strictest route decides for the whole message. */
	if (res->max_size != 0 && (s->max_size == 0 ||
	    res->max_size < s->max_size))
		s->max_size = res->max_size;
	proto_accept(s->proto);
}


/* What the checks see of the session now (hooks.h). */
static void
view_fill(struct session *s, struct hooks_view *v)
{
	size_t i, n = 0;

	memset(v, 0, sizeof(*v));
	v->helo = s->helo_seen ? s->helo : "";
	v->esmtp = s->esmtp;
	v->tls = encrypted(s);
	if (v->tls) {
		v->tls_version = tls_conn_version(s->tls);
		v->tls_cipher = tls_conn_cipher(s->tls);
		v->tls_bits = tls_conn_bits(s->tls, NULL);
	}
	v->auth_user = s->auth_user;
	v->queue_id = s->env.queue_id;
	v->sender = s->env.sender != NULL ? s->env.sender : "";
	v->body_8bitmime = s->env.body_8bitmime;
	v->size = s->size_param;
	/* One address per recipient, though `continue` routes store it once
	 * per route, one after the other. */
	s->rcpt_list = xrealloc(s->rcpt_list, (s->env.nrcpts + 1) *
	    sizeof(*s->rcpt_list));
	for (i = 0; i < s->env.nrcpts; i++) {
		if (n > 0 && strcmp(s->rcpt_list[n - 1],
		    s->env.rcpts[i].address) == 0)
			continue;
		s->rcpt_list[n++] = s->env.rcpts[i].address;
	}
	s->rcpt_list[n] = NULL;
	v->rcpts = s->rcpt_list;
	v->nrcpts = (unsigned)n;
}

/* The route accepted the recipient: the checks have their say (the
 * route's sender_auth, plugins, policy service); hooks_answer() ends. */
static void
rcpt_check(struct session *s, const struct proto_event *ev,
    struct route_result *res)
{
	struct hooks_view v;

	s->rcpt_res = xmalloc(sizeof(*s->rcpt_res));
	*s->rcpt_res = *res;
	s->rcpt_pending = true;
	view_fill(s, &v);
	v.rcpt = ev->addr_text;
	v.route = s->rcpt_res;
	hooks_run(s->hooks, STAGE_RCPT, &v);
}

static void
on_rcpt(struct session *s, const struct proto_event *ev)
{
	struct route_input in = {
		.local = ev->addr.local,
		.domain = ev->addr.domain,
		.sender = s->env.sender != NULL ? s->env.sender : "",
		.client_ip = s->client_ip,
		.helo = s->helo,
		.queue_id = s->env.queue_id,
		.auth_user = s->auth_user,
		.tls = session_tls_active(s),
	};
	struct route_result res;

	route_decide(s->conf->route_table, &in, &res);
	if (res.verdict == ROUTE_REJECTED) {
		char reply[600];

		snprintf(reply, sizeof(reply), "%d %s", res.code, res.text);
		log_reject(s, "rcpt", ev->addr_text, reply, res.why);
		metrics_inc(MC_RCPT_REJ_ROUTE);
		proto_reply(s->proto, res.code, "%s", res.text);
	} else if (res.max_size != 0 && s->size_param > res.max_size) {
		/* RFC 1870 6.1: the declared size is over this recipient's
		 * limit; the other recipients may still be fine. */
		char why[160];

		snprintf(why, sizeof(why), "SIZE=%llu over max_size %zu of "
		    "route %s", s->size_param, res.max_size,
		    res.matches[0].route);
		log_reject(s, "rcpt", ev->addr_text, "552 5.3.4 Message size "
		    "exceeds fixed limit", why);
		metrics_inc(MC_RCPT_REJ_SIZE);
		proto_reply(s->proto, 552, "5.3.4 Message size exceeds fixed "
		    "limit for <%s>", ev->addr_text);
	} else {
		rcpt_check(s, ev, &res);
		return;
	}
	route_result_free(&res);
}

/* ---- DATA ---- */

static bool
encrypted(const struct session *s)
{
	return session_tls_active(s);
}

/* RFC 3848: ESMTP, ESMTPS, ESMTPA, ESMTPSA (SMTP, SMTPS after HELO). */
static const char *
protocol_name(const struct session *s, char *buf, size_t size)
{
	snprintf(buf, size, "%s%s%s", s->esmtp ? "ESMTP" : "SMTP",
	    encrypted(s) ? "S" : "", s->auth_user != NULL ? "A" : "");
	return buf;
}

static void
write_received(struct session *s)
{
	char date[64], proto[16];

	rfc5322_date(date, sizeof(date), time(NULL));
	buf_appendf(&s->content, "Received: from %s ([%s])\r\n", s->helo,
	    s->client_ip);
	/* Worded as Postfix words it, which readers of headers know. */
	if (encrypted(s)) {
		int alg_bits = 0;
		int bits = tls_conn_bits(s->tls, &alg_bits);

		buf_appendf(&s->content, "\t(using %s with cipher %s"
		    " (%d/%d bits))\r\n", tls_conn_version(s->tls),
		    tls_conn_cipher(s->tls), bits, alg_bits);
	}
	buf_appendf(&s->content, "\tby %s (mxgate) with %s id %s",
	    s->conf->hostname, protocol_name(s, proto, sizeof(proto)),
	    s->env.queue_id);
	if (s->env.nrcpts == 1)
		buf_appendf(&s->content, "\r\n\tfor <%s>", s->env.rcpts[0].address);
	buf_appendf(&s->content, "; %s\r\n", date);
}

static void
data_begin(struct session *s)
{
	struct hooks_view v;

	s->env.received_at = (int64_t)time(NULL);
	buf_reset(&s->content);
	s->content_len = 0;
	write_received(s);
	/* RFC 8601: ours, right after our Received field; the client's
	 * own fields for our authserv-id are filtered out (data_sink). */
	view_fill(s, &v);
	hooks_authres(s->hooks, &v, &s->content);
	hooks_prepended(s->hooks, &s->content);
	arf_free(s);
	s->arf = xmalloc(sizeof(*s->arf));
	authres_filter_init(s->arf, s->conf->hostname);
	s->in_data = true;
	s->data_start_us = monotonic_us();
	proto_accept(s->proto);
}

static void
on_data(struct session *s)
{
	struct hooks_view v;

	view_fill(s, &v);
	hooks_run(s->hooks, STAGE_DATA, &v);
}

/*
 * The message and its envelope, ready for the queue: in s->content when
 * small enough to be sent inline, else written to the memfd and sealed.
 */
static int
seal_message(struct session *s, uint64_t *message_len, uint64_t *envelope_len)
{
	struct buf env;
	char proto[16];

	s->env.client_ip = xstrdup(s->client_ip);
	s->env.helo = xstrdup(s->helo);
	s->env.protocol = xstrdup(protocol_name(s, proto, sizeof(proto)));
	if (s->auth_user != NULL)
		s->env.auth_user = xstrdup(s->auth_user);
	buf_init(&env);
	envelope_serialize(&s->env, &env);
	*envelope_len = env.len;
	if (s->memfd < 0 && !s->content_failed &&
	    s->content.len + env.len <= IPC_INLINE_MAX) {
		*message_len = s->content.len;
		buf_append(&s->content, env.data, env.len);
		buf_free(&env);
		return 0;
	}
	content_flush(s);
	*message_len = s->content_len;
	buf_append(&s->content, env.data, env.len);
	buf_free(&env);
	content_flush(s);
	if (s->content_failed)
		return -1;
	/* The worker can no longer change what the queue commits. */
	if (fcntl(s->memfd, F_ADD_SEALS,
	    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		log_error("session=%016llx sealing message: %s",
		    (unsigned long long)s->conn_id, strerror(errno));
		return -1;
	}
	return 0;
}

/* The whole message in memory, for the milters: the buffer, or the
 * memfd mapped.  0, or -1 (logged). */
static int
whole_message(struct session *s, const char **msg, size_t *len)
{
	if (s->memfd < 0) {
		*msg = s->content.data != NULL ? s->content.data : "";
		*len = s->content.len;
		return s->content_failed ? -1 : 0;
	}
	content_flush(s);
	if (s->content_failed)
		return -1;
	s->map_len = (size_t)s->content_len;
	s->map = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, s->memfd, 0);
	if (s->map == MAP_FAILED) {
		log_error("session=%016llx id=%s mapping the message: %s",
		    (unsigned long long)s->conn_id, s->env.queue_id,
		    strerror(errno));
		s->map = NULL;
		return -1;
	}
	*msg = s->map;
	*len = s->map_len;
	return 0;
}

/* The content is complete: the end-of-message checks decide, then
 * message_submit() (from hooks_answer()). */
static void
on_message(struct session *s, const struct proto_event *ev)
{
	struct hooks_view v;

	s->in_data = false;
	authres_filter_finish(s->arf, &s->content);
	if (s->max_size != 0 && ev->message_size > s->max_size) {
		char why[120];

		snprintf(why, sizeof(why), "%zu bytes over a route's max_size"
		    " %zu", ev->message_size, s->max_size);
		log_reject(s, "data", NULL, "552 5.3.4 Message size exceeds "
		    "fixed limit", why);
		metrics_inc(MC_MSG_REJ_SIZE);
		proto_reply(s->proto, 552, "5.3.4 Message size exceeds fixed "
		    "limit");
		txn_reset(s);
		return;
	}
	view_fill(s, &v);
	v.size = ev->message_size;
	v.headers = s->arf->headers.data != NULL ? s->arf->headers.data : "";
	v.headers_len = s->arf->headers.len;
	v.headers_truncated = s->arf->headers_truncated;
	if (s->conf->nmilters > 0 && whole_message(s, &v.message,
	    &v.message_len) < 0) {
		proto_reply(s->proto, 451, "4.3.0 Local error, try again later");
		txn_reset(s);
		return;
	}
	hooks_run(s->hooks, STAGE_END_OF_MESSAGE, &v);
}

/* A recipient a milter added: routed as at RCPT; false when no route
 * takes it (logged). */
static bool
milter_add_rcpt(struct session *s, const char *address)
{
	struct addr_parse_opts opts = { .utf8_ok = s->env.smtputf8 };
	struct mailaddr a;
	struct route_result res;
	char path[ADDR_PATH_MAX + 3], text[ADDR_PATH_MAX + 1];
	const char *why = "";
	size_t used;

	snprintf(path, sizeof(path), "<%s>", address);
	if (addr_parse_path(path, &opts, &a, &used, &why) < 0 ||
	    path[used] != '\0' || a.is_null) {
		log_warn("session=%016llx id=%s milter added recipient <%.200s>:"
		    " not an address (%s); not added",
		    (unsigned long long)s->conn_id, s->env.queue_id, address,
		    why);
		return false;
	}
	addr_format(&a, text, sizeof(text));
	struct route_input in = {
		.local = a.local, .domain = a.domain,
		.sender = s->env.sender != NULL ? s->env.sender : "",
		.client_ip = s->client_ip, .helo = s->helo,
		.queue_id = s->env.queue_id, .auth_user = s->auth_user,
		.tls = session_tls_active(s),
	};
	route_decide(s->conf->route_table, &in, &res);
	if (res.verdict != ROUTE_ACCEPTED) {
		log_warn("session=%016llx id=%s milter added recipient <%s>: "
		    "no route takes it (%d %s); not added",
		    (unsigned long long)s->conn_id, s->env.queue_id, text,
		    res.code, res.text);
		route_result_free(&res);
		return false;
	}
	for (size_t i = 0; i < res.nmatches; i++) {
		envelope_add_rcpt(&s->env, text, res.matches[i].route,
		    res.matches[i].action_name, res.matches[i].params);
		log_info("session=%016llx id=%s milter added rcpt=<%s> route=%s "
		    "action=%s", (unsigned long long)s->conn_id,
		    s->env.queue_id, text, res.matches[i].route,
		    res.matches[i].action_name);
	}
	route_result_free(&res);
	return true;
}

static void
milter_del_rcpt(struct session *s, const char *address)
{
	size_t k = 0;

	for (size_t i = 0; i < s->env.nrcpts; i++) {
		struct envelope_rcpt *r = &s->env.rcpts[i];
		if (strcasecmp(r->address, address) == 0) {
			log_info("session=%016llx id=%s milter removed rcpt=<%s> "
			    "route=%s", (unsigned long long)s->conn_id,
			    s->env.queue_id, r->address, r->route);
			free(r->address);
			free(r->route);
			free(r->action);
			free(r->params);
			continue;
		}
		s->env.rcpts[k++] = *r;
	}
	s->env.nrcpts = k;
}

/* A sender a milter gave (SMFIR_CHGFROM): a path, or the null one. */
static bool
sender_valid(const struct session *s, const char *sender)
{
	struct addr_parse_opts opts = { .null_ok = true,
	    .utf8_ok = s->env.smtputf8 };
	struct mailaddr a;
	char path[ADDR_PATH_MAX + 3];
	const char *why;
	size_t used;

	snprintf(path, sizeof(path), "<%s>", sender);
	return strlen(sender) <= ADDR_PATH_MAX &&
	    addr_parse_path(path, &opts, &a, &used, &why) == 0 &&
	    path[used] == '\0';
}

/* The new content a milter made replaces what was received. */
static void
milter_content(struct session *s, const struct buf *msg)
{
	unmap_content(s);
	if (s->memfd >= 0) {
		close(s->memfd);
		s->memfd = -1;
	}
	buf_reset(&s->content);
	s->content_len = 0;
	buf_append(&s->content, msg->data, msg->len);
	if (s->content.len > CONTENT_FLUSH)
		content_flush(s);
}

/* A policy service's HOLD (hooks.h): queued held, as a quarantine. */
static void
policy_hold(struct session *s, const char *why)
{
	if (why == NULL)
		return;
	log_info("session=%016llx id=%s held by policy: %s",
	    (unsigned long long)s->conn_id, s->env.queue_id, why);
	s->env.hold_reason = xstrdup(why);
}

/*
 * What the milters (and the policy service's HOLD and DISCARD) decided
 * at end of message (milter_client.h), applied
 * to the envelope and the content.  false: the message is not to be
 * queued (answered here).
 */
static bool
milter_apply(struct session *s)
{
	struct milter_outcome *o = hooks_milter_outcome(s->hooks);
	const char *why = hooks_policy_discard(s->hooks);
	const char *hold = hooks_policy_hold(s->hooks);

	unmap_content(s);
	if (o == NULL && why == NULL) {
		policy_hold(s, hold);
		return true;
	}
	if (why == NULL && o->discard != NULL)
		why = o->discard;
	if (why == NULL) {
		/* o != NULL: why would be the policy's discard */
		for (size_t i = 0; i < o->ndel_rcpts; i++)
			milter_del_rcpt(s, o->del_rcpts[i]);
		for (size_t i = 0; i < o->nadd_rcpts; i++)
			milter_add_rcpt(s, o->add_rcpts[i]);
		if (s->env.nrcpts == 0)
			why = "milters removed every recipient";
	}
	if (why != NULL) {
		log_info("session=%016llx id=%s client=%s message discarded: %s",
		    (unsigned long long)s->conn_id, s->env.queue_id,
		    s->client_ip, why);
		s->nmessages++;
		proto_reply(s->proto, 250, "2.0.0 Ok: discarded");
		txn_reset(s);
		return false;
	}
	if (o->new_sender != NULL && !sender_valid(s, o->new_sender)) {
		log_warn("session=%016llx id=%s milter's new sender <%.200s> is "
		    "not an address; kept <%s>", (unsigned long long)s->conn_id,
		    s->env.queue_id, o->new_sender, s->env.sender);
	} else if (o->new_sender != NULL) {
		log_info("session=%016llx id=%s milter changed the sender from "
		    "<%s> to <%.200s>", (unsigned long long)s->conn_id,
		    s->env.queue_id, s->env.sender, o->new_sender);
		free(s->env.sender);
		s->env.sender = xstrdup(o->new_sender);
	}
	if (o->changed)
		milter_content(s, &o->content);
	if (o->quarantine != NULL) {
		log_info("session=%016llx id=%s quarantined (held): %s",
		    (unsigned long long)s->conn_id, s->env.queue_id,
		    o->quarantine);
		s->env.hold_reason = xstrdup(o->quarantine);
	} else {
		policy_hold(s, hold);
	}
	return true;
}

static void
message_submit(struct session *s)
{
	uint64_t message_len, envelope_len;

	if (!milter_apply(s))
		return;

	if (seal_message(s, &message_len, &envelope_len) < 0) {
		metrics_inc(MC_MSG_REJ_QUEUE);
		proto_reply(s->proto, 451, "4.3.0 Local error, try again later");
		txn_reset(s);
		return;
	}
	/* As stored, our header fields included: the queue's size. */
	s->msg_size = (size_t)message_len;
	if (s->ops->submit(s, s->memfd, s->memfd < 0 ? s->content.data : NULL,
	    message_len, envelope_len, &s->request_id) < 0) {
		log_warn("session=%016llx id=%s queue unavailable",
		    (unsigned long long)s->conn_id, s->env.queue_id);
		metrics_inc(MC_MSG_REJ_QUEUE);
		proto_reply(s->proto, 451,
		    "4.3.0 Queue temporarily unavailable, try again later");
		s->request_id = 0;
		txn_reset(s);
		return;
	}
	if (s->memfd >= 0) {
		close(s->memfd);
		s->memfd = -1;
	}
	buf_reset(&s->content);
	/* Many sessions sit idle between messages: they keep no
	 * buffer. */
	buf_free(&s->content);
	/* The event stays pending until session_submitted(). */
}

/* ---- STARTTLS and AUTH ---- */

/* A client's text for the log: control characters become '?'. */
static void
log_safe(char *out, size_t size, const char *in)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < size; i++)
		out[i] = (unsigned char)in[i] < 32 || in[i] == 127 ? '?' : in[i];
	out[i] = '\0';
}

static void
on_starttls(struct session *s)
{
	if ((s->tls = tls_conn_new(s->fd)) == NULL) {
		log_warn("session=%016llx client=%s STARTTLS: no TLS context",
		    (unsigned long long)s->conn_id, s->client_ip);
		proto_reply(s->proto, 454,
		    "4.7.0 TLS not available due to temporary reason");
		return;
	}
	proto_accept(s->proto);
	/* RFC 3207 5 (CVE-2011-0411): what the client pipelined after
	 * STARTTLS is not a command; the engine drops it too. */
	if (s->inlen > 0)
		log_info("session=%016llx client=%s discarded %zu bytes sent "
		    "after STARTTLS", (unsigned long long)s->conn_id,
		    s->client_ip, s->inlen);
	s->inlen = 0;
	s->tls_phase = STLS_STARTING;
}

static void
auth_fail_reply(struct session *s)
{
	s->auth_reply_ms = 0;
	if (s->auth_failures >= s->conf->auth_max_failures) {
		log_info("session=%016llx client=%s %u failed authentications: "
		    "closing", (unsigned long long)s->conn_id, s->client_ip,
		    s->auth_failures);
		proto_reply(s->proto, 421, "4.7.0 %s Error: too many failed "
		    "authentications, closing connection", s->conf->hostname);
	} else {
		proto_reply(s->proto, 535,
		    "5.7.8 Authentication credentials invalid");
	}
}

/* A wrong password costs the client time, not the worker (the timer
 * answers later; the loop goes on). */
static void
auth_failed(struct session *s)
{
	s->auth_failures++;
	if (s->ops->auth_failed != NULL)
		s->ops->auth_failed(s);
	if (s->conf->auth_failure_delay == 0)
		auth_fail_reply(s);
	else
		s->auth_reply_ms = monotonic_ms() +
		    (uint64_t)s->conf->auth_failure_delay * 1000;
}

static void
on_auth(struct session *s, const struct proto_event *ev)
{
	char user[128], authzid[128];

	/* PLAIN's authorization identity: nobody acts for another here. */
	if (ev->auth_authzid[0] != '\0' &&
	    strcmp(ev->auth_authzid, ev->auth_user) != 0) {
		log_safe(user, sizeof(user), ev->auth_user);
		log_safe(authzid, sizeof(authzid), ev->auth_authzid);
		log_info("session=%016llx client=%s auth=%s user=%s failed: "
		    "may not act as %s", (unsigned long long)s->conn_id,
		    s->client_ip, ev->auth_mech, user, authzid);
		auth_failed(s);
		return;
	}
	if (s->ops->auth_check == NULL || s->ops->auth_check(s,
	    ev->auth_user, ev->auth_pass, &s->auth_request) < 0) {
		s->auth_request = 0;
		log_warn("session=%016llx client=%s auth=%s: no credential "
		    "check available", (unsigned long long)s->conn_id,
		    s->client_ip, ev->auth_mech);
		proto_reply(s->proto, 454,
		    "4.7.0 Temporary authentication failure");
	}
	/* The event stays pending until session_auth_result(). */
}

/* ---- the greeting pause ---- */

static void session_end(struct session *s);
static void error_limit(struct session *s);
static void refresh_deadline(struct session *s);

/*
 * greet_pause (Postfix postscreen's pregreet test): the 220 is held back
 * for that long, and a client that talks before it has not waited for
 * the server, which no real MTA does.  Not for trusted clients, nor
 * under implicit TLS, whose greeting already follows a handshake, nor
 * for a client the master remembers passing (greet_pass_time).
 *
 * greet_multiline is postscreen's trap for spamware that waits for a
 * greeting but not for the end of one: the first line of a multi-line
 * 220 goes out at once, the last after the pause; talking in between
 * is talking before the greeting.
 */
static void
greet_hold(struct session *s)
{
	char first[300];
	unsigned pause = session_stress ? stress_greet_pause(s->conf) :
	    s->conf->greet_pause;
	int n;

	if (pause == 0 || s->implicit_tls || s->greet_passed ||
	    hooks_trusted(s->hooks))
		return;
	s->greet_from_ms = monotonic_ms();
	s->greet_at_ms = s->greet_from_ms + (uint64_t)pause * 1000;
	if (!s->conf->greet_multiline)
		return;
	/* The socket is fresh: its buffer takes the line whole. */
	n = snprintf(first, sizeof(first), "220-%s ESMTP mxgate\r\n",
	    s->conf->hostname);
	if (n > 0 && (size_t)n < sizeof(first) &&
	    send(s->fd, first, (size_t)n, MSG_NOSIGNAL) != n)
		s->write_failed = true;
}

/* When the held greeting is due: under stress, stress.greet_pause from
 * the same start, for the greetings held before stress began too. */
static uint64_t
greet_due(const struct session *s)
{
	uint64_t d;

	if (!session_stress)
		return s->greet_at_ms;
	d = s->greet_from_ms + (uint64_t)stress_greet_pause(s->conf) * 1000;
	return d < s->greet_at_ms ? d : s->greet_at_ms;
}

static void
greet_release(struct session *s)
{
	s->greet_at_ms = 0;
	refresh_deadline(s);
	if (s->ops->greet_passed != NULL)
		s->ops->greet_passed(s);
}

/* Input before the greeting: refused, and the session ends. */
static void
pregreet(struct session *s)
{
	static const char refusal[] =
	    "554 5.5.1 Error: talked before the greeting\r\n";
	size_t held;

	log_info("session=%016llx client=%s pregreet: %zu bytes before the "
	    "%s; refused", (unsigned long long)s->conn_id, s->client_ip,
	    s->inlen, s->conf->greet_multiline ?
	    "end of the multi-line greeting" : "greeting");
	proto_output(s->proto, &held);
	proto_output_drain(s->proto, held);
	if (send(s->fd, refusal, sizeof(refusal) - 1, MSG_NOSIGNAL) < 0)
		s->write_failed = true;
	session_end(s);
}

/* ---- the checks' answers ---- */

/*
 * The checks of a stage answered (hooks.h): go on with the command, or
 * reply what they said.  later: from the worker's loop, not from inside
 * handle_event(), so the session must run again.
 */
static void
hooks_answer(void *arg, enum smtp_stage stage, const struct policy_answer *a,
    bool later)
{
	struct session *s = arg;
	const struct proto_event *ev = proto_event(s->proto);
	bool ok = a->verdict == POLICY_CONTINUE || a->verdict == POLICY_ACCEPT;

	if (ev == NULL)
		return;
	if (!ok) {
		int code = a->code;

		error_limit(s);
		/* RFC 5321 3.1, 4.2.5: a greeting says 554 (then only QUIT
		 * is served) or 421 (and the connection closes), nothing
		 * else; a greylisting service's 450 becomes 421. */
		if (stage == STAGE_CONNECT)
			code = code >= 500 ? 554 : 421;
		proto_reply(s->proto, code, "%s", a->text);
		metrics_inc(stage == STAGE_MAIL ? MC_MAIL_REJ_CHECK :
		    stage == STAGE_RCPT ? MC_RCPT_REJ_CHECK :
		    stage == STAGE_DATA || stage == STAGE_END_OF_MESSAGE ?
		    MC_MSG_REJ_CHECK : stage == STAGE_HELO ? MC_HELO_REJ_CHECK :
		    MC_CONN_REFUSED_CHECK);
	}
	switch (stage) {
	case STAGE_CONNECT:
	case STAGE_DATA:
		if (ok && stage == STAGE_CONNECT) {
			greet_hold(s);
			proto_accept(s->proto);
		}
		else if (ok)
			data_begin(s);
		break;
	case STAGE_HELO:
		if (ok) {
			strlcpy_mx(s->helo, ev->helo, sizeof(s->helo));
			s->helo_seen = true;
			s->esmtp = ev->esmtp;
			txn_reset(s);
			proto_accept(s->proto);
		}
		break;
	case STAGE_MAIL:
		if (ok)
			proto_accept(s->proto);
		else
			txn_reset(s);
		break;
	case STAGE_RCPT:
		if (ok)
			rcpt_accept(s, ev, s->rcpt_res);
		rcpt_res_free(s);
		break;
	case STAGE_END_OF_MESSAGE:
		if (ok)
			message_submit(s);
		else
			txn_reset(s);
		break;
	}
	if (later)
		session_run(s);
}

/* ---- events ---- */

/*
 * Room in the queue for a message of the SIZE= given (0: unknown), with
 * Postfix's margin of one half: a client must not send 25 MB to hear at
 * the end that the disk was full.
 */
static bool
queue_has_room(struct session *s, unsigned long long size)
{
	uint64_t usable = s->ops->queue_space != NULL ?
	    s->ops->queue_space(s) : UINT64_MAX;

	if (usable == UINT64_MAX)
		return true;
	return usable > 0 && size + size / 2 <= usable;
}

static void
handle_event(struct session *s, const struct proto_event *ev)
{
	struct hooks_view v;

	switch (ev->type) {
	case PROTO_EV_CONNECT:
		view_fill(s, &v);
		hooks_run(s->hooks, STAGE_CONNECT, &v);
		break;
	case PROTO_EV_HELO:
		/* s->helo changes only once the checks accept the name. */
		view_fill(s, &v);
		v.helo = ev->helo;
		v.esmtp = ev->esmtp;
		hooks_run(s->hooks, STAGE_HELO, &v);
		break;
	case PROTO_EV_MAIL:
		txn_reset(s);
		if (!queue_has_room(s, ev->size_param)) {
			log_reject(s, "mail", NULL, "452 4.3.1 Insufficient "
			    "system storage", "the queue's file system is full");
			metrics_inc(MC_MAIL_REJ_SPACE);
			proto_reply(s->proto, 452, "4.3.1 Insufficient system "
			    "storage");
			break;
		}
		/* Known from MAIL on, so that routes can use ${queue_id}. */
		queue_id_new(s->env.queue_id);
		s->env.sender = xstrdup(ev->addr_text);
		s->size_param = ev->size_param;
		s->env.body_8bitmime = ev->body_8bitmime;
		s->env.smtputf8 = ev->smtputf8;
		s->env.dsn_ret = ev->dsn_ret;
		if (ev->dsn_envid != NULL)
			s->env.dsn_envid = xstrdup(ev->dsn_envid);
		view_fill(s, &v);
		hooks_run(s->hooks, STAGE_MAIL, &v);
		break;
	case PROTO_EV_RCPT:
		on_rcpt(s, ev);
		break;
	case PROTO_EV_DATA:
		on_data(s);
		break;
	case PROTO_EV_MESSAGE:
		on_message(s, ev);
		break;
	case PROTO_EV_MESSAGE_ABORT:
		{
			char reply[600];

			snprintf(reply, sizeof(reply), "%d %s", ev->abort_code,
			    ev->abort_text);
			log_reject(s, "data", NULL, reply, NULL);
			metrics_inc(ev->abort_code == 552 ? MC_MSG_REJ_SIZE :
			    MC_MSG_REJ_CONTENT);
		}
		txn_reset(s);
		proto_accept(s->proto);
		break;
	case PROTO_EV_RSET:
		txn_reset(s);
		proto_accept(s->proto);
		break;
	case PROTO_EV_QUIT:
		proto_accept(s->proto);
		break;
	case PROTO_EV_STARTTLS:
		on_starttls(s);
		break;
	case PROTO_EV_AUTH:
		on_auth(s, ev);
		break;
	}
}

/* ---- I/O ---- */

static void
session_end(struct session *s)
{
	if (s->ended)
		return;
	s->ended = true;
	log_info("session=%016llx client=%s disconnected messages=%u",
	    (unsigned long long)s->conn_id, s->client_ip, s->nmessages);
	s->ops->ended(s);
}

static size_t
output_pending(const struct session *s)
{
	size_t len;

	proto_output(s->proto, &len);
	return len;
}

/* A fatal TLS error while reading or writing: the client is lost. */
static void
tls_lost(struct session *s, const char *doing, enum tls_result r)
{
	if (r == TLS_ERROR)
		log_info("session=%016llx client=%s TLS error while %s: %s",
		    (unsigned long long)s->conn_id, s->client_ip, doing,
		    tls_conn_error(s->tls));
	s->peer_eof = true;
	s->write_failed = true;
}

/* TLS_OK: all written, or the socket is full (retry when writable). */
static void
flush_tls(struct session *s)
{
	enum tls_result r;
	size_t len, n;
	const char *out;

	s->tls_write_wants_read = false;
	while ((out = proto_output(s->proto, &len)), len > 0) {
		r = tls_write(s->tls, out, len, &n);
		if (r == TLS_OK) {
			proto_output_drain(s->proto, n);
		} else {
			if (r == TLS_WANT_READ)
				s->tls_write_wants_read = true;
			else if (r != TLS_WANT_WRITE)
				tls_lost(s, "writing", r);
			return;
		}
	}
}

static void
flush_output(struct session *s)
{
	/* Nothing goes out in the middle of a handshake, nor before the
	 * greeting pause is over. */
	if (s->tls_phase == STLS_HANDSHAKE || s->write_failed ||
	    s->greet_at_ms != 0)
		return;
	if (encrypted(s)) {
		flush_tls(s);
		return;
	}
	for (;;) {
		size_t len;
		const char *out = proto_output(s->proto, &len);
		ssize_t n;

		if (len == 0)
			return;
		n = send(s->fd, out, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				s->write_failed = true;
			return;
		}
		proto_output_drain(s->proto, (size_t)n);
	}
}

static void
read_tls(struct session *s)
{
	enum tls_result r;
	size_t n;

	s->tls_read_wants_write = false;
	while (s->inlen < SESSION_INBUF && !s->peer_eof) {
		r = tls_read(s->tls, in_buf(s) + s->inlen,
		    SESSION_INBUF - s->inlen, &n);
		if (r == TLS_OK) {
			s->inlen += n;
			continue;
		}
		if (r == TLS_WANT_WRITE)
			s->tls_read_wants_write = true;
		else if (r == TLS_EOF)
			s->peer_eof = true;
		else if (r == TLS_ERROR)
			tls_lost(s, "reading", r);
		return;
	}
}

static void
read_input(struct session *s)
{
	/* After STARTTLS the next bytes are the handshake's. */
	if (s->tls_phase == STLS_STARTING || s->tls_phase == STLS_HANDSHAKE)
		return;
	if (encrypted(s)) {
		read_tls(s);
		return;
	}
	while (s->inlen < SESSION_INBUF && !s->peer_eof) {
		size_t room = SESSION_INBUF - s->inlen;
		ssize_t n = recv(s->fd, in_buf(s) + s->inlen, room, 0);
		if (n > 0) {
			s->inlen += (size_t)n;
			/* A short read took all there was; epoll (level
			 * triggered) reports whatever comes next.  Asking
			 * again would only fetch EAGAIN, a system call per
			 * command for nothing. */
			if ((size_t)n < room)
				return;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			s->peer_eof = true;
		if (n < 0 && errno == EINTR)
			continue;
		return;
	}
}

static void
refresh_deadline(struct session *s)
{
	unsigned secs = proto_phase(s->proto) == PROTO_PHASE_DATA ?
	    s->conf->timeout_data : s->conf->timeout_command;

	s->request_start_ms = monotonic_ms();
	s->deadline_ms = s->request_start_ms + (uint64_t)secs * 1000;
	s->data_grace_ms = 0;
}

/*
 * The deadline in force: under stress (Postfix's stress mode) the
 * shorter stress timeouts, from the same start, for the sessions already
 * open too, so that idle and dripping clients give their slots back.
 */
static uint64_t
effective_deadline(const struct session *s)
{
	bool data = proto_phase(s->proto) == PROTO_PHASE_DATA;
	unsigned secs;
	uint64_t d;

	if (!session_stress)
		return s->deadline_ms;
	secs = data ? s->conf->stress_timeout_data :
	    s->conf->stress_timeout_command;
	d = s->request_start_ms + (uint64_t)secs * 1000 +
	    (data ? s->data_grace_ms : 0);
	return d < s->deadline_ms ? d : s->deadline_ms;
}

/* limits.errors in force: stress.errors under stress, for the open
 * sessions too, so that clients making errors give their slots back. */
static void
error_limit(struct session *s)
{
	proto_set_max_errors(s->proto, session_stress ?
	    stress_max_errors(s->conf) : s->conf->max_errors);
}

void
session_set_stress(bool on)
{
	session_stress = on;
}

/*
 * Deadlines run per request, not per read (Postfix's
 * smtpd_per_request_deadline): a command line must be complete within
 * timeouts.command of the last one, so one byte every few seconds no
 * longer holds a session for ever.  A message has timeouts.data plus one
 * second per limits.min_data_rate bytes received: a slow link that
 * sends keeps going, a drip does not.
 */
static void
update_deadline(struct session *s)
{
	unsigned long requests = proto_requests(s->proto);
	unsigned long long bytes, rate = s->conf->min_data_rate;
	uint64_t grace;

	if (requests != s->requests_seen) {
		s->requests_seen = requests;
		refresh_deadline(s);
		return;
	}
	if (proto_phase(s->proto) != PROTO_PHASE_DATA || rate == 0)
		return;
	bytes = proto_data_bytes(s->proto);
	grace = (uint64_t)(bytes / rate) * 1000 + (bytes % rate) * 1000 / rate;
	s->data_grace_ms = grace;
	if (s->request_start_ms + (uint64_t)s->conf->timeout_data * 1000 +
	    grace > s->deadline_ms)
		s->deadline_ms = s->request_start_ms +
		    (uint64_t)s->conf->timeout_data * 1000 + grace;
}

/* Waiting for the queue, a credential check, the AUTH failure delay, or
 * the checks of a command (SPF, the policy service). */
static bool
waiting(const struct session *s)
{
	return s->request_id != 0 || s->auth_request != 0 ||
	    s->auth_reply_ms != 0 || hooks_busy(s->hooks);
}

/* Feed input and answer events until nothing more can happen now. */
static void
process(struct session *s)
{
	if (s->tls_phase == STLS_STARTING || s->tls_phase == STLS_HANDSHAKE)
		return;
	for (;;) {
		const struct proto_event *ev = proto_event(s->proto);

		if (ev != NULL) {
			if (waiting(s))
				return;
			handle_event(s, ev);
			if (proto_event(s->proto) == ev && waiting(s))
				return;
			continue;
		}
		if (proto_closing(s->proto))
			return;
		if (s->shutting_down && !proto_in_transaction(s->proto)) {
			proto_shutdown(s->proto);
			return;
		}
		if (s->inlen == 0 || output_pending(s) > SESSION_OUT_HIGH)
			return;
		size_t n = proto_feed(s->proto, s->in, s->inlen);
		if (n == 0 && proto_event(s->proto) == NULL)
			return;
		memmove(s->in, s->in + n, s->inlen - n);
		s->inlen -= n;
	}
}

/* One step of the TLS handshake; when it is done, SMTP (re)starts. */
static void
handshake(struct session *s)
{
	enum tls_result r = tls_handshake(s->tls);
	const char *sni;
	char name[128], info[160];

	if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
		s->tls_want = r;
		return;
	}
	if (r != TLS_OK) {
		log_info("session=%016llx client=%s TLS handshake failed: %s",
		    (unsigned long long)s->conn_id, s->client_ip,
		    tls_conn_error(s->tls));
		metrics_inc(MC_TLS_FAILED);
		s->write_failed = true;
		return;
	}
	s->tls_phase = STLS_ON;
	{
		const char *v = tls_conn_version(s->tls);

		metrics_inc(strcmp(v, "TLSv1.3") == 0 ? MC_TLS_V13 :
		    strcmp(v, "TLSv1.2") == 0 ? MC_TLS_V12 : MC_TLS_OTHER);
	}
	snprintf(info, sizeof(info), "version=%s cipher=%s bits=%d",
	    tls_conn_version(s->tls), tls_conn_cipher(s->tls),
	    tls_conn_bits(s->tls, NULL));
	sni = tls_conn_sni(s->tls);
	log_safe(name, sizeof(name), sni != NULL ? sni : "-");
	log_info("session=%016llx client=%s TLS established %s sni=%s",
	    (unsigned long long)s->conn_id, s->client_ip, info, name);
	refresh_deadline(s);
	if (s->implicit_tls) {
		proto_start(s->proto);
		return;
	}
	/* RFC 3207 4.2: forget what the client said in the clear, its
	 * AUTH included, as the engine does. */
	proto_tls_started(s->proto);
	free(s->auth_user);
	s->auth_user = NULL;
	strlcpy_mx(s->helo, "unknown", sizeof(s->helo));
	s->esmtp = false;
	txn_reset(s);
}

/* Advance everything that can advance without waiting for the socket. */
static void
advance(struct session *s)
{
	int round;

	for (round = 0; round < RUN_ROUNDS && !s->write_failed; round++) {
		if (s->tls_phase == STLS_HANDSHAKE)
			handshake(s);
		process(s);
		flush_output(s);
		/* The 220 to STARTTLS is out: the handshake begins. */
		if (s->tls_phase == STLS_STARTING && output_pending(s) == 0) {
			s->tls_phase = STLS_HANDSHAKE;
			continue;
		}
		/* Decrypted input inside OpenSSL: no epoll event will tell. */
		if (encrypted(s) && !s->peer_eof &&
		    s->inlen < SESSION_INBUF && tls_pending(s->tls)) {
			read_input(s);
			continue;
		}
		break;
	}
}

static void
session_run(struct session *s)
{
	bool want_read, want_write;

	if (s->ended)
		return;
	error_limit(s);
	advance(s);
	/* Everything read has been fed: the buffer goes until the next
	 * read. */
	if (s->inlen == 0 && s->in != NULL) {
		free(s->in);
		s->in = NULL;
	}
	/* A client that closed right after its last command still gets the
	 * answer to a message already handed to the queue, if it reads. */
	if (s->write_failed || (s->peer_eof && s->request_id == 0) ||
	    (proto_closing(s->proto) && output_pending(s) == 0)) {
		session_end(s);
		return;
	}
	if (s->tls_phase == STLS_HANDSHAKE) {
		want_read = s->tls_want == TLS_WANT_READ;
		want_write = s->tls_want == TLS_WANT_WRITE;
	} else {
		/* TLS may need the other direction to make progress in
		 * this one (a read that writes, a write that reads). */
		want_read = (!proto_closing(s->proto) && !s->peer_eof &&
		    s->inlen < SESSION_INBUF &&
		    s->tls_phase != STLS_STARTING) || s->tls_write_wants_read;
		want_write = (output_pending(s) > 0 &&
		    !s->tls_write_wants_read && s->greet_at_ms == 0) ||
		    s->tls_read_wants_write;
	}
	s->ops->watch(s, s->fd, want_read, want_write);
}

void
session_io(struct session *s, bool readable, bool writable)
{
	if (s->ended)
		return;
	/* Under TLS either readiness may be what an operation waits for,
	 * whichever way its data goes: try both. */
	if (readable || s->tls != NULL)
		read_input(s);
	if (s->greet_at_ms != 0 && s->inlen > 0) {
		pregreet(s);
		return;
	}
	if (writable || s->tls != NULL)
		flush_output(s);
	session_run(s);
	update_deadline(s);
}

void
session_tick(struct session *s, uint64_t now_ms)
{
	if (s->ended)
		return;
	if (s->auth_reply_ms != 0 && now_ms >= s->auth_reply_ms) {
		auth_fail_reply(s);
		refresh_deadline(s);
		session_run(s);
		return;
	}
	if (s->greet_at_ms != 0) {
		if (now_ms >= greet_due(s)) {
			greet_release(s);
			session_run(s);
		}
		return;
	}
	if (waiting(s) || now_ms < effective_deadline(s))
		return;
	log_info("session=%016llx client=%s timeout%s%s",
	    (unsigned long long)s->conn_id, s->client_ip,
	    s->tls_phase == STLS_HANDSHAKE ? " in the TLS handshake" : "",
	    effective_deadline(s) < s->deadline_ms ? " (stress)" : "");
	/* No plaintext 421 into a handshake. */
	if (proto_event(s->proto) == NULL && s->tls_phase != STLS_HANDSHAKE &&
	    s->tls_phase != STLS_STARTING)
		proto_timeout(s->proto);
	flush_output(s);
	session_end(s);
}

void
session_submitted(struct session *s, const struct ipc_submit_result *r)
{
	s->request_id = 0;
	switch (r->status) {
	case SUBMIT_OK:
		s->nmessages++;
		log_queued(s, r->queue_id);
		metrics_inc(MC_MSG_ACCEPTED);
		metrics_add(MC_BYTES_RECEIVED, s->msg_size);
		proto_reply(s->proto, 250, "2.0.0 Ok: queued as %s", r->queue_id);
		break;
	case SUBMIT_TEMPFAIL:
		metrics_inc(MC_MSG_REJ_QUEUE);
		proto_reply(s->proto, 451, "4.3.0 %s", r->text);
		break;
	case SUBMIT_NOSPACE:
		metrics_inc(MC_MSG_REJ_QUEUE);
		proto_reply(s->proto, 452, "4.3.1 %s", r->text);
		break;
	default:
		metrics_inc(MC_MSG_REJ_QUEUE);
		proto_reply(s->proto, 554, "5.3.0 %s", r->text);
		break;
	}
	txn_reset(s);
	session_run(s);
}

void
session_queue_lost(struct session *s)
{
	if (s->request_id == 0)
		return;
	s->request_id = 0;
	metrics_inc(MC_MSG_REJ_QUEUE);
	proto_reply(s->proto, 451, "4.3.0 Queue temporarily unavailable, try again later");
	txn_reset(s);
	session_run(s);
}

void
session_auth_result(struct session *s, uint64_t request_id,
    enum auth_verdict verdict, const char *why)
{
	const struct proto_event *ev = proto_event(s->proto);
	char user[128];

	if (s->ended || request_id == 0 || request_id != s->auth_request ||
	    ev == NULL || ev->type != PROTO_EV_AUTH)
		return;
	s->auth_request = 0;
	log_safe(user, sizeof(user), ev->auth_user);
	switch (verdict) {
	case AUTH_OK:
		s->auth_user = xstrdup(ev->auth_user);
		log_info("session=%016llx client=%s auth=%s user=%s "
		    "authenticated", (unsigned long long)s->conn_id,
		    s->client_ip, ev->auth_mech, user);
		proto_accept(s->proto);
		break;
	case AUTH_FAIL:
		log_info("session=%016llx client=%s auth=%s user=%s failed: %s",
		    (unsigned long long)s->conn_id, s->client_ip,
		    ev->auth_mech, user, why);
		auth_failed(s);
		break;
	case AUTH_TEMPFAIL:
		log_warn("session=%016llx client=%s auth=%s user=%s cannot be "
		    "checked: %s", (unsigned long long)s->conn_id,
		    s->client_ip, ev->auth_mech, user, why);
		proto_reply(s->proto, 454,
		    "4.7.0 Temporary authentication failure");
		break;
	}
	session_run(s);
}

void
session_shutdown(struct session *s)
{
	s->shutting_down = true;
	/* A handshake has no SMTP to finish: the client can come back. */
	if (s->tls_phase == STLS_HANDSHAKE || s->tls_phase == STLS_STARTING) {
		session_end(s);
		return;
	}
	session_run(s);
}

static unsigned
sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)ss)->sin6_port);
	return 0;
}

static struct hooks_session *
hooks_start(struct session *s, const struct sockaddr_storage *peer,
    const struct sockaddr_storage *local)
{
	char server_ip[64];
	struct hooks_client c = {
		.conn_id = s->conn_id,
		.ip = s->client_ip,
		.port = sockaddr_port(peer),
		.server_ip = server_ip,
		.server_port = sockaddr_port(local),
	};

	sockaddr_ntop((const struct sockaddr *)local, server_ip,
	    sizeof(server_ip));
	return hooks_session_new(s->conf, &c, hooks_answer, s);
}

struct session *
session_new(const struct mxconf *conf, const struct session_ops *ops, int fd,
    uint64_t conn_id, const struct sockaddr_storage *peer,
    const struct sockaddr_storage *local, int listener, unsigned flags)
{
	struct session *s = xcalloc(1, sizeof(*s));
	const struct listener_conf *l = (size_t)listener < conf->nlisteners ?
	    &conf->listeners[listener] : NULL;
	struct proto_params params = {
		.hostname = conf->hostname,
		.greeting_text = "ESMTP mxgate",
		.max_line = conf->max_line,
		.max_size = conf->max_message_size,
		.max_rcpts = conf->max_recipients,
		.max_errors = conf->max_errors,
		.bare_newlines = strcmp(conf->bare_newlines, "normalize") == 0 ?
		    PROTO_BARE_NORMALIZE : PROTO_BARE_REJECT,
	};

	if (l == NULL)
		fatalx("session for unknown listener %d", listener);
	/* RFC 8314 (submissions): TLS from the first byte. */
	params.tls = l->role == ROLE_SUBMISSIONS;
	params.starttls = !params.tls && tls_enabled();
	params.auth = l->auth;
	params.auth_plaintext = l->allow_plaintext_auth;
	/* RFC 6409 4.3: submission is for users we know. */
	params.auth_required = l->role != ROLE_MX;

	s->conf = conf;
	s->ops = ops;
	s->fd = fd;
	s->conn_id = conn_id;
	s->listener = listener;
	s->greet_passed = (flags & CONN_F_GREET_PASSED) != 0;
	s->memfd = -1;
	sockaddr_ntop((const struct sockaddr *)peer, s->client_ip, sizeof(s->client_ip));
	strlcpy_mx(s->helo, "unknown", sizeof(s->helo));
	envelope_init(&s->env);
	buf_init(&s->content);
	s->proto = proto_new(&params, data_sink, s);
	s->hooks = hooks_start(s, peer, local);
	log_info("session=%016llx client=%s connected", (unsigned long long)conn_id,
	    s->client_ip);
	refresh_deadline(s);
	if (params.tls) {
		s->implicit_tls = true;
		s->tls_phase = STLS_HANDSHAKE;
		if ((s->tls = tls_conn_new(fd)) == NULL) {
			log_error("session=%016llx client=%s no TLS context",
			    (unsigned long long)conn_id, s->client_ip);
			s->write_failed = true;
		}
	} else {
		proto_start(s->proto);
	}
	session_run(s);
	return s;
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	txn_reset(s);
	envelope_free(&s->env);
	buf_free(&s->content);
	arf_free(s);
	hooks_session_free(s->hooks);
	rcpt_res_free(s);
	free(s->rcpt_list);
	free(s->in);
	proto_free(s->proto);
	tls_conn_free(s->tls);
	free(s->auth_user);
	close(s->fd);
	free(s);
}

uint64_t
session_conn_id(const struct session *s)
{
	return s->conn_id;
}

uint64_t
session_auth_request(const struct session *s)
{
	return s->auth_request;
}

uint64_t
session_request_id(const struct session *s)
{
	return s->request_id;
}

int
session_fd(const struct session *s)
{
	return s->fd;
}

const char *
session_auth_user(const struct session *s)
{
	return s->auth_user;
}

bool
session_tls(const struct session *s)
{
	return encrypted(s);
}
