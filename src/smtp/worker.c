/*
 * worker — see worker.h.
 *
 * Sessions are indexed by their socket descriptor, which the kernel keeps
 * unique while the session lives; a queue request id carries that index in
 * its low 32 bits (and a sequence number above), so the queue's answer
 * finds its session in O(1), and an answer for a session that has gone
 * meanwhile is recognised and dropped.  Credential checks (AUTH) go to
 * the lookup process (lookup.h), which alone can read the credentials,
 * and come back the same way; so do SPF checks and policy service
 * answers (hooks.h), whose descriptors are in the loop too.
 *
 * Submissions the queue channel cannot take now (its socket buffer is
 * full while the queue process commits a large batch) wait in a FIFO and
 * go out when the channel is writable again: a burst of messages is
 * delayed, never refused.
 *
 * On a PROXY protocol listener a connection is first a proxy wait: the
 * worker reads the header (proxy.h) exactly, never a byte past it (the
 * session's first bytes, a TLS ClientHello perhaps, stay in the socket),
 * within timeouts.proxy; reports the client it names to the master, which
 * applies the limits to that client and answers CONN_ADMIT; then the
 * session starts with that client as its peer.  The header is read here,
 * not in the master, which never parses a client's byte.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>

#include "smtp/auth.h"
#include "common/event.h"
#include "smtp/hooks.h"
#include "common/ipc.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "smtp/plugin.h"
#include "smtp/proxy.h"
#include "smtp/session.h"
#include "common/util.h"
#include "smtp/milter_client.h"
#include "smtp/worker.h"

#define TICK_MS 1000
#define WORKER_TRIM_THRESHOLD (2 * 1024 * 1024)   /* see worker_main() */
#define WORKER_MMAP_THRESHOLD (1024 * 1024)

/* A connection whose PROXY header is being read, or judged. */
struct proxy_wait {
	uint64_t   conn_id;
	int        listener;
	struct sockaddr_storage peer;    /* the balancer */
	struct sockaddr_storage local;
	struct sockaddr_storage client;  /* what the header says */
	struct sockaddr_storage dst;
	uint8_t   *buf;                  /* the header's bytes so far */
	size_t     len, cap;
	uint64_t   deadline_ms;
	bool       admitting;            /* read; the master decides */
	char       peer_ip[64];
};

/* The master's verdict should come at once; past this, something broke. */
#define PROXY_ADMIT_MS   10000

struct fd_slot {
	struct session *session;
	struct proxy_wait *proxy;
};

static struct {
	const struct mxconf *conf;
	int        slot;
	struct event_loop *loop;
	int        sigfd;
	int        master_fd;
	int        queue_fd;
	uint64_t   queue_space;         /* ipc_queue_space; UINT64_MAX unknown */
	struct fd_slot *fds;
	size_t     nfds;
	unsigned   nsessions;
	uint32_t   request_seq;
	int        lookup_fd;        /* the credentials lookup, -1: none */
	bool       chrooted;         /* into conf->chroot_dir */
	uint32_t   auth_seq;
	struct session **dead;
	size_t     ndead, dead_cap;
	struct ipc_outbox held;      /* submissions the channel could not take */
	bool       stopping;
	uint64_t   stop_deadline_ms;
	bool       retiring;         /* replaced by a reload: draining */
	uint64_t   retire_deadline_ms;
} w;

/* The loop's callbacks (event.h). */
static event_fn on_master, on_queue, on_signal, on_lookup, on_hooks,
    on_session;

/* ---- what sessions call ---- */

static void
op_watch(struct session *s, int fd, bool want_read, bool want_write)
{
	event_mod(w.loop, fd,
	    (want_read ? EPOLLIN : 0) | (want_write ? EPOLLOUT : 0));
}

static void
watch_queue(bool want_write)
{
	if (w.queue_fd >= 0)
		event_mod(w.loop, w.queue_fd,
		    EPOLLIN | (want_write ? EPOLLOUT : 0));
}

/* The channel is writable: send what waits, in order.  A channel that
 * broke is noticed by read_queue() (EOF), which answers the sessions. */
static void
flush_held(void)
{
	if (w.queue_fd < 0)
		return;
	(void)ipc_outbox_flush(&w.held, w.queue_fd);
	if (!ipc_outbox_waiting(&w.held))
		watch_queue(false);
}

static int
op_submit(struct session *s, int memfd, const void *data,
    uint64_t message_len, uint64_t envelope_len, uint64_t *request_id)
{
	struct ipc_submit msg;
	bool waiting;
	int rc;

	if (w.queue_fd < 0)
		return -1;
	msg.request_id = ((uint64_t)++w.request_seq << 32) | (uint32_t)session_fd(s);
	msg.message_len = message_len;
	msg.envelope_len = envelope_len;
	waiting = ipc_outbox_waiting(&w.held);
	/* Behind others that wait, or when the channel is full: in turn. */
	if (memfd >= 0)
		rc = ipc_outbox_send(&w.held, w.queue_fd, IPC_SUBMIT, &msg,
		    sizeof(msg), NULL, 0, memfd);
	else
		rc = ipc_outbox_send(&w.held, w.queue_fd, IPC_SUBMIT_INLINE,
		    &msg, sizeof(msg), data,
		    (size_t)(message_len + envelope_len), -1);
	if (rc < 0) {
		log_warn("submitting to the queue: %s", strerror(errno));
		return -1;
	}
	if (!waiting && ipc_outbox_waiting(&w.held)) {
		log_debug("queue channel full: submissions wait for it");
		watch_queue(true);
	}
	*request_id = msg.request_id;
	return 0;
}

static void
op_auth_failed(struct session *s)
{
	struct ipc_conn_closed msg = { .conn_id = session_conn_id(s) };

	/* Best effort: a full channel only loses one count. */
	if (ipc_send(w.master_fd, IPC_AUTH_FAILED, &msg, sizeof(msg), -1) < 0 &&
	    errno != EAGAIN)
		log_warn("telling the master of a failed AUTH: %s",
		    strerror(errno));
}

static void
op_ended(struct session *s)
{
	struct ipc_conn_closed msg = { .conn_id = session_conn_id(s) };
	int fd = session_fd(s);

	event_del(w.loop, fd);
	w.fds[fd].session = NULL;
	w.nsessions--;
	if (ipc_send(w.master_fd, IPC_CONN_CLOSED, &msg, sizeof(msg), -1) < 0)
		log_warn("telling the master about a closed session: %s",
		    strerror(errno));
	/* Freed at the end of the loop iteration: the session may still be
	 * on the call stack. */
	if (w.ndead == w.dead_cap) {
		w.dead_cap = w.dead_cap ? w.dead_cap * 2 : 64;
		w.dead = xrealloc(w.dead, w.dead_cap * sizeof(*w.dead));
	}
	w.dead[w.ndead++] = s;
}

static int
op_auth_check(struct session *s, const char *user, const char *pass,
    uint64_t *request_id)
{
	struct ipc_auth_check c;
	int rc;

	if (w.lookup_fd < 0)
		return -1;
	memset(&c, 0, sizeof(c));
	c.request_id = ((uint64_t)++w.auth_seq << 32) | (uint32_t)session_fd(s);
	/* Too long for any entry: an empty user, which the lookup
	 * answers "no such user" at the cost of a real hash. */
	if (strlcpy_mx(c.user, user, sizeof(c.user)) >= sizeof(c.user) ||
	    strlcpy_mx(c.pass, pass, sizeof(c.pass)) >= sizeof(c.pass))
		c.user[0] = '\0';
	rc = ipc_send(w.lookup_fd, IPC_AUTH_CHECK, &c, sizeof(c), -1);
	explicit_bzero(&c.pass, sizeof(c.pass));
	if (rc < 0) {
		log_warn("sending a credential check: %s", strerror(errno));
		return -1;
	}
	*request_id = c.request_id;
	return 0;
}

static uint64_t
op_queue_space(struct session *s)
{
	(void)s;
	return w.queue_space;
}

static void
op_greet_passed(struct session *s)
{
	struct ipc_conn_closed msg = { .conn_id = session_conn_id(s) };

	/* Best effort: a full channel only costs the client a pause. */
	if (ipc_send(w.master_fd, IPC_GREET_PASSED, &msg, sizeof(msg), -1) < 0 &&
	    errno != EAGAIN)
		log_warn("telling the master of a passed greeting: %s",
		    strerror(errno));
}

static const struct session_ops worker_session_ops = {
	.watch = op_watch,
	.submit = op_submit,
	.ended = op_ended,
	.auth_failed = op_auth_failed,
	.auth_check = op_auth_check,
	.queue_space = op_queue_space,
	.greet_passed = op_greet_passed,
};

static void
free_dead_sessions(void)
{
	for (size_t i = 0; i < w.ndead; i++)
		session_free(w.dead[i]);
	w.ndead = 0;
}

/* ---- sessions ---- */

static void
start_session(int fd, uint64_t conn_id, const struct sockaddr_storage *peer,
    const struct sockaddr_storage *local, int listener, unsigned flags)
{
	w.fds[fd].session = session_new(w.conf, &worker_session_ops, fd,
	    conn_id, peer, local, listener, flags);
	/* session_new() may already have ended it (write error). */
	for (size_t i = 0; i < w.ndead; i++) {
		if (w.dead[i] == w.fds[fd].session)
			w.fds[fd].session = NULL;
	}
	if (w.stopping && w.fds[fd].session != NULL)
		session_shutdown(w.fds[fd].session);
}

/* ---- PROXY protocol headers ---- */

static void
conn_closed(uint64_t conn_id)
{
	struct ipc_conn_closed msg = { .conn_id = conn_id };

	if (ipc_send(w.master_fd, IPC_CONN_CLOSED, &msg, sizeof(msg), -1) < 0)
		log_warn("telling the master about a closed session: %s",
		    strerror(errno));
}

/* The wait ends without a session: reply (if any), close, tell. */
static void
proxy_end(int fd, const char *reply)
{
	struct proxy_wait *pw = w.fds[fd].proxy;

	if (reply != NULL && send(fd, reply, strlen(reply), MSG_NOSIGNAL) < 0)
		log_debug("writing a refusal: %s", strerror(errno));
	event_del(w.loop, fd);
	close(fd);
	w.fds[fd].proxy = NULL;
	w.nsessions--;
	conn_closed(pw->conn_id);
	free(pw->buf);
	free(pw);
}

static void
proxy_refuse(int fd, const char *why)
{
	struct proxy_wait *pw = w.fds[fd].proxy;

	metrics_inc(MC_CONN_REFUSED_PROXY_HEADER);
	log_warn("session=%016llx client=%s proxy: %s; closed",
	    (unsigned long long)pw->conn_id, pw->peer_ip, why);
	proxy_end(fd, "421 4.7.0 PROXY protocol header expected\r\n");
}

/* What the balancer says of the client's TLS (PP2_TYPE_SSL), as
 * " tls=TLSv1.3 client_cert=verified cn=\"...\"", or "". */
static const char *
proxy_tls_text(const struct proxy_header *h, char *out, size_t size)
{
	static const char *const cert[] = {
		[PROXY_CERT_NONE] = "none",
		[PROXY_CERT_VERIFIED] = "verified",
		[PROXY_CERT_UNVERIFIED] = "unverified",
	};

	if (!h->ssl)
		return "";
	snprintf(out, size, " tls=%s client_cert=%s%s%s%s",
	    h->ssl_version[0] != '\0' ? h->ssl_version : "unknown",
	    cert[h->ssl_cert], h->ssl_cn[0] != '\0' ? " cn=\"" : "",
	    h->ssl_cn, h->ssl_cn[0] != '\0' ? "\"" : "");
	return out;
}

/* The header is read: the master judges the client it names. */
static void
proxy_read_done(int fd, const struct proxy_header *h)
{
	struct proxy_wait *pw = w.fds[fd].proxy;
	struct ipc_conn_proxied msg;
	char client[64], tls[160];

	pw->client = h->local ? pw->peer : h->src;
	pw->dst = h->local ? pw->local : h->dst;
	free(pw->buf);
	pw->buf = NULL;
	pw->admitting = true;
	pw->deadline_ms = monotonic_ms() + PROXY_ADMIT_MS;
	/* Nothing more is read until the verdict. */
	event_mod(w.loop, fd, 0);
	sockaddr_ntop((const struct sockaddr *)&pw->client, client,
	    sizeof(client));
	log_info("session=%016llx proxy v%d: client=%s via %s%s%s",
	    (unsigned long long)pw->conn_id, h->version, client, pw->peer_ip,
	    proxy_tls_text(h, tls, sizeof(tls)),
	    h->local ? " (the balancer's own: no client carried)" : "");
	memset(&msg, 0, sizeof(msg));
	msg.conn_id = pw->conn_id;
	msg.wfd = (uint32_t)fd;
	msg.client = pw->client;
	if (ipc_send(w.master_fd, IPC_CONN_PROXIED, &msg, sizeof(msg), -1) < 0) {
		log_warn("session=%016llx telling the master of a proxied "
		    "client: %s", (unsigned long long)pw->conn_id,
		    strerror(errno));
		proxy_end(fd, "421 4.3.2 Service not available, try again "
		    "later\r\n");
	}
}

/*
 * Peek at what came, and consume it for real only as far as the header
 * goes: an incomplete header owns every byte seen (proxy.h), a complete
 * one exactly h.len.
 */
static void
proxy_read(int fd)
{
	struct proxy_wait *pw = w.fds[fd].proxy;
	struct proxy_header h;
	char why[128];

	for (;;) {
		if (pw->len == pw->cap) {
			pw->cap = pw->cap == 0 ? 256 : pw->cap * 4;
			if (pw->cap > PROXY_MAX_LEN)
				pw->cap = PROXY_MAX_LEN;
			pw->buf = xrealloc(pw->buf, pw->cap);
		}
		ssize_t n = recv(fd, pw->buf + pw->len, pw->cap - pw->len,
		    MSG_PEEK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			log_info("session=%016llx client=%s proxy: closed "
			    "before the header", (unsigned long long)pw->conn_id,
			    pw->peer_ip);
			proxy_end(fd, NULL);
			return;
		}
		enum proxy_status r = proxy_parse(pw->buf, pw->len + (size_t)n,
		    &h, why, sizeof(why));
		size_t take = r == PROXY_DONE ? h.len - pw->len : (size_t)n;

		if (r == PROXY_BAD) {
			proxy_refuse(fd, why);
			return;
		}
		/* Peeked, so there, unless a reset threw it away. */
		if (recv(fd, pw->buf + pw->len, take, 0) != (ssize_t)take) {
			log_info("session=%016llx client=%s proxy: connection "
			    "lost in the header", (unsigned long long)pw->conn_id,
			    pw->peer_ip);
			proxy_end(fd, NULL);
			return;
		}
		pw->len += take;
		if (r == PROXY_DONE) {
			proxy_read_done(fd, &h);
			return;
		}
	}
}

/* The master's verdict on the client a header named. */
static void
proxy_admitted(const struct ipc_conn_admit *a)
{
	size_t fd = a->wfd;
	struct proxy_wait *pw = fd < w.nfds ? w.fds[fd].proxy : NULL;
	char refusal[sizeof(a->refusal)];

	/* Closed meanwhile (its deadline), perhaps its socket reused. */
	if (pw == NULL || pw->conn_id != a->conn_id || !pw->admitting)
		return;
	if (a->refusal[0] != '\0') {
		strlcpy_mx(refusal, a->refusal, sizeof(refusal));
		proxy_end((int)fd, refusal);
		return;
	}
	w.fds[fd].proxy = NULL;
	event_mod(w.loop, (int)fd, EPOLLIN);
	start_session((int)fd, pw->conn_id, &pw->client, &pw->dst,
	    pw->listener, a->flags);
	free(pw);
}

static void
proxy_tick(int fd, uint64_t now)
{
	struct proxy_wait *pw = w.fds[fd].proxy;

	if (now < pw->deadline_ms)
		return;
	if (pw->admitting) {
		log_warn("session=%016llx no verdict from the master; closed",
		    (unsigned long long)pw->conn_id);
		proxy_end(fd, "421 4.3.2 Service not available, try again "
		    "later\r\n");
	} else {
		proxy_refuse(fd, "no header in time (timeouts.proxy)");
	}
}

/* ---- messages from the master ---- */

static void
new_session(const struct ipc_conn_new *msg, int fd)
{
	if (fd < 0)
		fatalx("CONN_NEW without a socket");
	if ((size_t)fd >= w.nfds) {
		size_t old = w.nfds, n = old ? old : 256;
		while (n <= (size_t)fd)
			n *= 2;
		w.fds = xrealloc(w.fds, n * sizeof(*w.fds));
		memset(w.fds + old, 0, (n - old) * sizeof(*w.fds));
		w.nfds = n;
	}
	event_add(w.loop, fd, EPOLLIN, on_session, NULL);
	w.nsessions++;
	if (msg->flags & CONN_F_PROXY) {
		struct proxy_wait *pw = xcalloc(1, sizeof(*pw));

		pw->conn_id = msg->conn_id;
		pw->listener = (int)msg->listener;
		pw->peer = msg->peer;
		pw->local = msg->local;
		pw->deadline_ms = monotonic_ms() +
		    (uint64_t)w.conf->timeout_proxy * 1000;
		sockaddr_ntop((const struct sockaddr *)&msg->peer, pw->peer_ip,
		    sizeof(pw->peer_ip));
		w.fds[fd].proxy = pw;
		if (w.stopping)
			proxy_end(fd, "421 4.3.2 Service shutting down, try "
			    "again later\r\n");
		return;
	}
	start_session(fd, msg->conn_id, &msg->peer, &msg->local,
	    (int)msg->listener, msg->flags);
}

static void
set_queue_channel(int fd)
{
	if (w.queue_fd >= 0) {
		event_del(w.loop, w.queue_fd);
		close(w.queue_fd);
		w.queue_fd = -1;
		/* Whatever was submitted, sent or waiting, went with the
		 * channel: no answer will come for it. */
		ipc_outbox_clear(&w.held);
		for (size_t i = 0; i < w.nfds; i++) {
			if (w.fds[i].session != NULL)
				session_queue_lost(w.fds[i].session);
		}
	}
	w.queue_fd = fd;
	if (fd >= 0)
		event_add(w.loop, fd, EPOLLIN, on_queue, NULL);
}

/* Sessions waiting for a check the lost lookup process will not
 * answer: a temporary failure. */
static void
set_lookup_channel(int fd)
{
	if (w.lookup_fd >= 0) {
		event_del(w.loop, w.lookup_fd);
		close(w.lookup_fd);
		w.lookup_fd = -1;
		for (size_t i = 0; i < w.nfds; i++) {
			struct session *s = w.fds[i].session;

			if (s != NULL && session_auth_request(s) != 0)
				session_auth_result(s, session_auth_request(s),
				    AUTH_TEMPFAIL, "credentials lookup process"
				    " gone");
		}
	}
	w.lookup_fd = fd;
	if (fd >= 0)
		event_add(w.loop, fd, EPOLLIN, on_lookup, NULL);
}

static void
read_master(void)
{
	union {
		struct ipc_conn_new conn;
		struct ipc_conn_admit admit;
		struct ipc_stress stress;
		char raw[1024];
	} u;
	enum ipc_type type;
	int fd, r = -1;

	while ((r = ipc_recv(w.master_fd, &type, &u, sizeof(u), &fd)) > 0) {
		switch (type) {
		case IPC_CONN_NEW:
			new_session(&u.conn, fd);
			break;
		case IPC_CONN_ADMIT:
			proxy_admitted(&u.admit);
			break;
		case IPC_STRESS:
			/* The master logs it. */
			session_set_stress(u.stress.on != 0);
			break;
		case IPC_QUEUE_CHANNEL:
			if (fd < 0)
				fatalx("QUEUE_CHANNEL without a descriptor");
			log_debug("new queue channel");
			set_queue_channel(fd);
			break;
		case IPC_LOOKUP_CHANNEL:
			if (fd < 0)
				fatalx("LOOKUP_CHANNEL without a descriptor");
			log_debug("new lookup channel");
			set_lookup_channel(fd);
			break;
		default:
			fatalx("unexpected message %d from the master", type);
		}
	}
	if (r == 0)
		fatalx("master went away");
}

/* ---- messages from the queue ---- */

static void
queue_lost(void)
{
	log_warn("queue channel closed; waiting for a new queue process");
	set_queue_channel(-1);
}

static void
read_queue(void)
{
	union {
		struct ipc_submit_result res;
		struct ipc_queue_space space;
	} m;
	struct ipc_submit_result res;
	enum ipc_type type;
	int fd, r = -1;

	while (w.queue_fd >= 0 &&
	    (r = ipc_recv(w.queue_fd, &type, &m, sizeof(m), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		if (type == IPC_QUEUE_SPACE) {
			w.queue_space = m.space.usable;
			continue;
		}
		if (type != IPC_SUBMIT_RESULT)
			fatalx("unexpected message %d from the queue", type);
		res = m.res;
		res.queue_id[sizeof(res.queue_id) - 1] = '\0';
		res.text[sizeof(res.text) - 1] = '\0';
		size_t sfd = (size_t)(res.request_id & 0xffffffffu);
		struct session *s = sfd < w.nfds ? w.fds[sfd].session : NULL;
		if (s == NULL || session_request_id(s) != res.request_id) {
			log_info("id=%s committed for a client that has gone",
			    res.queue_id);
			continue;
		}
		session_submitted(s, &res);
	}
	if (w.queue_fd >= 0 && r == 0)
		queue_lost();
}

/* ---- credential checks ---- */

static void
read_lookup(void)
{
	struct ipc_auth_result res;
	enum ipc_type type;
	int fd, r = -1;

	while (w.lookup_fd >= 0 &&
	    (r = ipc_recv(w.lookup_fd, &type, &res, sizeof(res), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		if (type != IPC_AUTH_RESULT)
			fatalx("unexpected message %d from the lookup process",
			    type);
		res.why[sizeof(res.why) - 1] = '\0';
		size_t sfd = (size_t)(res.request_id & 0xffffffffu);
		struct session *s = sfd < w.nfds ? w.fds[sfd].session : NULL;

		/* A session that has gone, or a later one on its socket,
		 * does not match the id and ignores it. */
		if (s != NULL && res.verdict <= AUTH_TEMPFAIL)
			session_auth_result(s, res.request_id,
			    (enum auth_verdict)res.verdict, res.why);
	}
	if (w.lookup_fd >= 0 && r == 0) {
		log_warn("lookup channel closed; waiting for a new lookup"
		    " process");
		set_lookup_channel(-1);
	}
}

/*
 * The directories of the unix sockets of milters and named policy
 * services, each once, in the order of the configuration: mounted in
 * the worker's root (sandbox.h), and the addresses rewritten to match.
 */
static size_t
socket_dirs(const struct mxconf *conf, char **dirs, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < conf->nmilters + conf->npolicy_services; i++) {
		const char *a = i < conf->nmilters ? conf->milters[i].address :
		    conf->policy_services[i - conf->nmilters].service;
		const char *slash;
		bool seen = false;

		if (strncmp(a, "unix:", 5) != 0 ||
		    (slash = strrchr(a, '/')) == NULL)
			continue;
		for (size_t k = 0; k < n; k++)
			if (strlen(dirs[k]) == (size_t)(slash - a - 5) &&
			    strncmp(dirs[k], a + 5, (size_t)(slash - a - 5)) == 0)
				seen = true;
		if (!seen && n < max)
			dirs[n++] = xstrndup(a + 5, (size_t)(slash - a - 5));
	}
	return n;
}

/* conf's milters and named policy services, as the worker reaches
 * them in its root. */
static void
inside_sockets(struct mxconf *inside)
{
	char *dirs[SANDBOX_MAX_SOCKET_DIRS], where[400];
	size_t nd = socket_dirs(inside, dirs, SANDBOX_MAX_SOCKET_DIRS);
	struct milter_conf *m = xcalloc(inside->nmilters + 1, sizeof(*m));
	struct policy_service_conf *p = xcalloc(inside->npolicy_services + 1,
	    sizeof(*p));

	for (size_t i = 0; i < inside->nmilters; i++) {
		m[i] = inside->milters[i];
		milter_address_inside(m[i].address, dirs, nd, where,
		    sizeof(where));
		m[i].address = xstrdup(where);
	}
	for (size_t i = 0; i < inside->npolicy_services; i++) {
		p[i] = inside->policy_services[i];
		milter_address_inside(p[i].service, dirs, nd, where,
		    sizeof(where));
		p[i].service = xstrdup(where);
	}
	inside->milters = m;
	inside->policy_services = p;
	for (size_t i = 0; i < nd; i++)
		free(dirs[i]);
}

/* SPF lookups, the policy services and the milters (hooks.h). */
static void
start_hooks(void)
{
	static struct mxconf inside;
	static char service[sizeof(SANDBOX_POLICY_DIR) + 300];
	const char *sock;
	int fds[64];
	size_t n;

	/* Chrooted, a unix policy service's directory is mounted at
	 * SANDBOX_POLICY_DIR (worker_sandbox()). */
	inside = *w.conf;
	if (w.chrooted && w.conf->policy_service != NULL &&
	    strncmp(w.conf->policy_service, "unix:", 5) == 0 &&
	    (sock = strrchr(w.conf->policy_service, '/')) != NULL) {
		snprintf(service, sizeof(service), "unix:%s%s",
		    SANDBOX_POLICY_DIR, sock);
		inside.policy_service = service;
	}
	if (w.chrooted)
		inside_sockets(&inside);
	/* A service that cannot start answers temperror / its default:
	 * logged there, and no reason to stop taking mail. */
	hooks_worker_init(&inside);
	n = hooks_worker_fds(fds, ARRAY_LEN(fds));
	for (size_t i = 0; i < n; i++)
		event_add(w.loop, fds[i], EPOLLIN, on_hooks, NULL);
}

/* ---- loop ---- */

static void
tick(uint64_t now)
{
	hooks_worker_tick(now);
	for (size_t fd = 0; fd < w.nfds; fd++) {
		if (w.fds[fd].session != NULL)
			session_tick(w.fds[fd].session, now);
		else if (w.fds[fd].proxy != NULL)
			proxy_tick((int)fd, now);
	}
}

static void
begin_stop(void)
{
	if (w.stopping)
		return;
	w.stopping = true;
	w.stop_deadline_ms = monotonic_ms() + (uint64_t)w.conf->shutdown_grace * 1000;
	log_info("stopping: %u sessions, grace %u s", w.nsessions,
	    w.conf->shutdown_grace);
	for (size_t fd = 0; fd < w.nfds; fd++) {
		if (w.fds[fd].session != NULL)
			session_shutdown(w.fds[fd].session);
		else if (w.fds[fd].proxy != NULL)
			proxy_end((int)fd, "421 4.3.2 Service shutting down, "
			    "try again later\r\n");
	}
}

/*
 * SIGUSR1: a reload has started the next generation of workers, which
 * gets every new connection.  Our sessions go on undisturbed, on the
 * configuration they started with (a client between two messages is
 * not told 421), and the process ends with the last of them; after
 * shutdown_grace, what is left is stopped as at a shutdown.
 */
static void
begin_retire(void)
{
	if (w.retiring || w.stopping)
		return;
	w.retiring = true;
	w.retire_deadline_ms = monotonic_ms() +
	    (uint64_t)w.conf->shutdown_grace * 1000;
	log_info("replaced by a reload: %u sessions finish, at most %u s",
	    w.nsessions, w.conf->shutdown_grace);
}

static void
read_signals(void)
{
	struct signalfd_siginfo si;

	while (read(w.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			begin_stop();
		else if (si.ssi_signo == SIGUSR1)
			begin_retire();
	}
}

static void
setup_signals(void)
{
	static const int handled[] = { SIGTERM, SIGINT, SIGUSR1 };

	w.sigfd = proc_signalfd(handled, (int)ARRAY_LEN(handled));
}

static void
on_master(void *arg, int fd, uint32_t events)
{
	read_master();
}

static void
on_queue(void *arg, int fd, uint32_t events)
{
	if (events & EPOLLOUT)
		flush_held();
	read_queue();
}

static void
on_signal(void *arg, int fd, uint32_t events)
{
	read_signals();
}

static void
on_lookup(void *arg, int fd, uint32_t events)
{
	read_lookup();
}

static void
on_hooks(void *arg, int fd, uint32_t events)
{
	hooks_worker_dispatch(fd);
}

static void
on_session(void *arg, int fd, uint32_t events)
{
	if ((size_t)fd < w.nfds && w.fds[fd].session != NULL)
		session_io(w.fds[fd].session,
		    (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0,
		    (events & EPOLLOUT) != 0);
	else if ((size_t)fd < w.nfds && w.fds[fd].proxy != NULL &&
	    !w.fds[fd].proxy->admitting)
		proxy_read(fd);
}

void
worker_sandbox(const struct mxconf *conf)
{
	static char policy_dir[300];
	static char *dirs[SANDBOX_MAX_SOCKET_DIRS];
	struct sandbox sb = {
		.title = "smtp",
		.user = conf->user,
		.group = conf->group,
		.root = conf->chroot_dir,
		.resolver = true,
		.filter = SANDBOX_FILTER_SMTP,
	};
	const char *slash;

	if (conf->policy_service != NULL &&
	    strncmp(conf->policy_service, "unix:", 5) == 0 &&
	    (slash = strrchr(conf->policy_service, '/')) != NULL) {
		size_t len = (size_t)(slash - (conf->policy_service + 5));

		if (len == 0)
			len = 1;         /* a socket in / */
		if (len < sizeof(policy_dir)) {
			memcpy(policy_dir, conf->policy_service + 5, len);
			policy_dir[len] = '\0';
			sb.bind_dir = policy_dir;
		}
	}
	sb.nsocket_dirs = socket_dirs(conf, dirs, SANDBOX_MAX_SOCKET_DIRS);
	sb.socket_dirs = dirs;
	sandbox_enter(&sb);
}

int
worker_main(const struct mxconf *conf, int slot, int master_fd, int queue_fd,
    int lookup_fd)
{
	uint64_t last_tick = monotonic_ms();

	memset(&w, 0, sizeof(w));
	w.conf = conf;
	w.slot = slot;
	w.master_fd = master_fd;
	w.queue_fd = -1;
	w.queue_space = UINT64_MAX;
	w.lookup_fd = -1;
	/* A session's message buffer (100 KB for a 100 KB message) is freed
	 * at the end of each transaction; with glibc's default threshold
	 * (128 KB) the heap was trimmed after most of them and the next
	 * message faulted every page in again, and each trim flushed the
	 * TLB of every CPU: the worker's CPU per 100 KB message was 0.66 ms,
	 * 0.48 ms with a 1 MB threshold.  An idle worker keeps at most that
	 * much free heap.  Setting it fixes glibc's mmap threshold at
	 * 128 KB, which would map and unmap (another TLB flush) every
	 * buffer over it: 1 MB. */
	mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD);
	mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD);
	w.loop = event_loop_new(256);
	setup_signals();
	event_add(w.loop, w.sigfd, EPOLLIN, on_signal, NULL);
	event_add(w.loop, master_fd, EPOLLIN, on_master, NULL);
	set_queue_channel(queue_fd);
	set_lookup_channel(lookup_fd);
	/* Everything the worker needs from the system is open or loaded:
	 * from here on the kernel holds it to what it needs. */
	w.chrooted = sandbox_privileged();
	worker_sandbox(conf);
	if (plugins_init(NULL) < 0)
		exit(1);
	/* After the signal mask is set: the threads inherit it. */
	start_hooks();

	for (;;) {
		uint64_t now;

		if ((w.stopping || w.retiring) && w.nsessions == 0)
			break;
		event_run(w.loop, TICK_MS);
		free_dead_sessions();
		now = monotonic_ms();
		if (now - last_tick >= TICK_MS) {
			tick(now);
			free_dead_sessions();
			last_tick = now;
		}
		if (w.retiring && !w.stopping && now >= w.retire_deadline_ms)
			begin_stop();
		if (w.stopping && now >= w.stop_deadline_ms) {
			log_warn("grace period over: closing %u sessions", w.nsessions);
			break;
		}
	}
	/* Not hooks_worker_free(): it would wait for DNS lookups in
	 * progress, and the process ends anyway. */
	log_info("stopped");
	return 0;
}
