/*
 * test_event — the event loop (event.h): callbacks for ready
 * descriptors, changing what is waited for, a descriptor removed by an
 * earlier callback of the same turn, and a turn that times out.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/event.h"
#include "common/log.h"
#include "unit.h"

struct seen {
	int      calls;
	int      fd;
	uint32_t events;
};

static void
note(void *arg, int fd, uint32_t events)
{
	struct seen *s = arg;

	s->calls++;
	s->fd = fd;
	s->events = events;
}

static void
test_ready_and_mod(void)
{
	struct event_loop *loop = event_loop_new(8);
	struct seen r = { 0 }, w = { 0 };
	int p[2];

	CHECK(pipe(p) == 0);
	event_add(loop, p[0], EPOLLIN, note, &r);
	event_add(loop, p[1], 0, note, &w);
	/* Nothing ready: the turn times out. */
	CHECK_INT(event_run(loop, 0), 0);
	CHECK_INT(r.calls + w.calls, 0);
	CHECK(write(p[1], "x", 1) == 1);
	CHECK_INT(event_run(loop, 1000), 1);
	CHECK_INT(r.calls, 1);
	CHECK_INT(r.fd, p[0]);
	CHECK(r.events & EPOLLIN);
	/* Level-triggered: still readable, called again. */
	CHECK_INT(event_run(loop, 0), 1);
	CHECK_INT(r.calls, 2);
	/* Now the write end too; then neither. */
	event_mod(loop, p[1], EPOLLOUT);
	CHECK_INT(event_run(loop, 0), 2);
	CHECK_INT(w.calls, 1);
	CHECK(w.events & EPOLLOUT);
	event_mod(loop, p[0], 0);
	event_mod(loop, p[1], 0);
	CHECK_INT(event_run(loop, 0), 0);
	event_del(loop, p[0]);
	event_del(loop, p[1]);
	event_del(loop, p[1]);          /* twice: nothing happens */
	close(p[0]);
	close(p[1]);
	/* A number used again after event_del() registers anew. */
	CHECK(pipe(p) == 0);
	event_add(loop, p[0], EPOLLIN, note, &r);
	event_del(loop, p[0]);
	close(p[0]);
	close(p[1]);
	event_loop_free(loop);
}

/* Both pipes are ready; whichever callback runs first removes the other
 * descriptor, which then gets no call in that turn. */
static struct event_loop *loop2;
static int fds2[2];
static int calls2[2];

static void
remove_other(void *arg, int fd, uint32_t events)
{
	int me = (int)(intptr_t)arg;

	calls2[me]++;
	event_del(loop2, fds2[1 - me]);
}

static void
test_removed_in_turn(void)
{
	int a[2], b[2];

	loop2 = event_loop_new(8);
	CHECK(pipe(a) == 0 && pipe(b) == 0);
	fds2[0] = a[0];
	fds2[1] = b[0];
	event_add(loop2, a[0], EPOLLIN, remove_other, (void *)(intptr_t)0);
	event_add(loop2, b[0], EPOLLIN, remove_other, (void *)(intptr_t)1);
	CHECK(write(a[1], "x", 1) == 1 && write(b[1], "x", 1) == 1);
	CHECK_INT(event_run(loop2, 1000), 2);
	CHECK_INT(calls2[0] + calls2[1], 1);
	event_del(loop2, a[0]);
	event_del(loop2, b[0]);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	event_loop_free(loop2);
}

int
main(void)
{
	log_init(true, LOG_LEVEL_ERROR);
	log_set_role("test");
	RUN(test_ready_and_mod);
	RUN(test_removed_in_turn);
	return unit_done();
}
