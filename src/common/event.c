/*
 * event — see event.h.
 *
 * The registrations live in an array indexed by descriptor (the kernel
 * hands out the lowest free number, so it stays dense); epoll's user data
 * is the descriptor itself.  A registration removed during a turn is
 * cleared at once, so the turn's later events for it find no callback
 * and are skipped.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/event.h"
#include "common/log.h"
#include "common/util.h"

struct registration {
	event_fn *fn;           /* NULL: not registered */
	void     *arg;
	uint32_t  events;
};

struct event_loop {
	int    epfd;
	struct registration *regs;
	size_t nregs;
	struct epoll_event *ready;
	int    max_events;
};

struct event_loop *
event_loop_new(int max_events)
{
	struct event_loop *loop = xcalloc(1, sizeof(*loop));

	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		fatal("epoll_create1");
	loop->max_events = max_events > 0 ? max_events : 64;
	loop->ready = xcalloc((size_t)loop->max_events, sizeof(*loop->ready));
	return loop;
}

void
event_loop_free(struct event_loop *loop)
{
	if (loop == NULL)
		return;
	close(loop->epfd);
	free(loop->regs);
	free(loop->ready);
	free(loop);
}

int
event_loop_fd(const struct event_loop *loop)
{
	return loop->epfd;
}

static struct registration *
registration(struct event_loop *loop, int fd)
{
	if (fd < 0)
		fatalx("event: descriptor %d", fd);
	if ((size_t)fd >= loop->nregs) {
		size_t old = loop->nregs, n = old ? old : 64;

		while (n <= (size_t)fd)
			n *= 2;
		loop->regs = xrealloc(loop->regs, n * sizeof(*loop->regs));
		memset(loop->regs + old, 0, (n - old) * sizeof(*loop->regs));
		loop->nregs = n;
	}
	return &loop->regs[fd];
}

static void
ctl(struct event_loop *loop, int op, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
		fatal("epoll_ctl fd %d", fd);
}

void
event_add(struct event_loop *loop, int fd, uint32_t events, event_fn *fn,
    void *arg)
{
	struct registration *r = registration(loop, fd);

	if (r->fn != NULL)
		fatalx("event: descriptor %d registered twice", fd);
	ctl(loop, EPOLL_CTL_ADD, fd, events);
	r->fn = fn;
	r->arg = arg;
	r->events = events;
}

void
event_mod(struct event_loop *loop, int fd, uint32_t events)
{
	struct registration *r = registration(loop, fd);

	if (r->fn == NULL)
		fatalx("event: descriptor %d is not registered", fd);
	if (r->events == events)
		return;
	ctl(loop, EPOLL_CTL_MOD, fd, events);
	r->events = events;
}

void
event_del(struct event_loop *loop, int fd)
{
	if (fd < 0 || (size_t)fd >= loop->nregs || loop->regs[fd].fn == NULL)
		return;
	/* Failure only if fd was closed first: epoll has forgotten it then. */
	(void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	memset(&loop->regs[fd], 0, sizeof(loop->regs[fd]));
}

int
event_run(struct event_loop *loop, int timeout_ms)
{
	int n = epoll_wait(loop->epfd, loop->ready, loop->max_events,
	    timeout_ms);

	if (n < 0) {
		if (errno == EINTR)
			return 0;
		fatal("epoll_wait");
	}
	for (int i = 0; i < n; i++) {
		int fd = loop->ready[i].data.fd;
		struct registration *r;

		if ((size_t)fd >= loop->nregs || loop->regs[fd].fn == NULL)
			continue;       /* removed earlier in this turn */
		r = &loop->regs[fd];
		r->fn(r->arg, fd, loop->ready[i].events);
	}
	return n;
}
