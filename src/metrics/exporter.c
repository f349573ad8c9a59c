/*
 * exporter — see exporter.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "common/event.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/sandbox.h"
#include "common/util.h"
#include "metrics/exporter.h"

struct hconn {
	int       fd;               /* -1: free */
	uint64_t  deadline_ms;
	size_t    inlen;
	char      in[EXPORTER_REQUEST_MAX];
	struct buf out;
	size_t    sent;
	bool      answering;
};

static struct {
	struct event_loop *loop;
	int       listen_fd;
	struct hconn conns[EXPORTER_CONNS];
} x;

static event_fn on_listen, on_conn;

static void
conn_close(struct hconn *c)
{
	event_del(x.loop, c->fd);
	close(c->fd);
	c->fd = -1;
	buf_free(&c->out);
}

static void
answer(struct hconn *c, const char *status, const char *type,
    const struct buf *body)
{
	buf_init(&c->out);
	buf_appendf(&c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, type,
	    body->len);
	buf_append(&c->out, body->data, body->len);
	c->answering = true;
	c->sent = 0;
	event_mod(x.loop, c->fd, EPOLLOUT);
}

static void
answer_text(struct hconn *c, const char *status, const char *text)
{
	struct buf b;

	buf_init(&b);
	buf_appends(&b, text);
	answer(c, status, "text/plain; charset=utf-8", &b);
	buf_free(&b);
}

static void
serve(struct hconn *c, enum exporter_request r)
{
	struct buf body;
	int64_t now = (int64_t)time(NULL);

	switch (r) {
	case EXPORTER_METRICS:
		buf_init(&body);
		metrics_scraped(now);
		metrics_render(&body, now);
		answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
		    &body);
		buf_free(&body);
		return;
	case EXPORTER_NOT_FOUND:
		answer_text(c, "404 Not Found", "Not found: the metrics are at "
		    "/metrics\n");
		return;
	case EXPORTER_BAD_METHOD:
		answer_text(c, "405 Method Not Allowed", "Only GET /metrics\n");
		return;
	case EXPORTER_TOO_LARGE:
		answer_text(c, "431 Request Header Fields Too Large",
		    "Request too large\n");
		return;
	case EXPORTER_BAD_REQUEST:
	case EXPORTER_INCOMPLETE:
		answer_text(c, "400 Bad Request", "Bad request\n");
		return;
	}
}

static void
conn_read(struct hconn *c)
{
	ssize_t n = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
	enum exporter_request r;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->inlen += (size_t)n;
	r = exporter_parse(c->in, c->inlen);
	if (r != EXPORTER_INCOMPLETE)
		serve(c, r);
}

static void
conn_write(struct hconn *c)
{
	ssize_t n = send(c->fd, c->out.data + c->sent, c->out.len - c->sent,
	    MSG_NOSIGNAL);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		conn_close(c);
		return;
	}
	c->sent += (size_t)n;
	if (c->sent == c->out.len) {
		shutdown(c->fd, SHUT_WR);
		conn_close(c);
	}
}

static void
on_conn(void *arg, int fd, uint32_t events)
{
	struct hconn *c = arg;

	if (c->fd != fd)
		return;
	if (c->answering)
		conn_write(c);
	else
		conn_read(c);
}

static void
on_listen(void *arg, int fd, uint32_t events)
{
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct hconn *c = NULL;

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("metrics: accept: %s", strerror(errno));
			return;
		}
		for (size_t i = 0; i < EXPORTER_CONNS; i++) {
			if (x.conns[i].fd < 0) {
				c = &x.conns[i];
				break;
			}
		}
		if (c == NULL) {
			/* A scraper needs one connection; more is a flood. */
			close(cfd);
			continue;
		}
		c->fd = cfd;
		c->inlen = 0;
		c->answering = false;
		c->deadline_ms = monotonic_ms() + EXPORTER_TIMEOUT_MS;
		buf_init(&c->out);
		event_add(x.loop, cfd, EPOLLIN, on_conn, c);
	}
}

static void
expire(uint64_t now)
{
	for (size_t i = 0; i < EXPORTER_CONNS; i++) {
		if (x.conns[i].fd >= 0 && x.conns[i].deadline_ms <= now)
			conn_close(&x.conns[i]);
	}
}

/* A stop holds nothing to finish: SIGTERM ends the process at once,
 * with status 0 for the master's log. */
static void
on_term(int signo)
{
	(void)signo;
	_exit(0);
}

int
exporter_main(const struct mxconf *conf, int listen_fd)
{
	signal(SIGTERM, on_term);
	sandbox_enter(&(struct sandbox){ .title = "metrics",
	    .user = conf->user, .group = conf->group, .root = conf->chroot_dir,
	    .filter = SANDBOX_FILTER_METRICS });
	x.loop = event_loop_new(EXPORTER_CONNS + 1);
	x.listen_fd = listen_fd;
	for (size_t i = 0; i < EXPORTER_CONNS; i++)
		x.conns[i].fd = -1;
	fd_set_nonblock(listen_fd);
	event_add(x.loop, listen_fd, EPOLLIN, on_listen, NULL);
	for (;;) {
		event_run(x.loop, 1000);
		expire(monotonic_ms());
	}
	return 0;
}
