/*
 * event — the event loop every long-lived process runs: one epoll set,
 * a callback per descriptor, and one turn at a time.
 *
 * Each process (master, smtp worker, queue) owns one loop.  It registers
 * a descriptor with event_add() and the function to call when it is
 * ready, changes what it waits for with event_mod(), and removes it with
 * event_del() before closing it.  event_run() waits once (up to a
 * timeout) and calls the callback of every ready descriptor; the caller
 * keeps its own "for (;;)" around it, so that what a process does between
 * turns (the master's timers, a worker's tick, the queue's group commit)
 * stays visible in its main function.
 *
 * The events are epoll's: EPOLLIN, EPOLLOUT, and in the callback also
 * EPOLLHUP and EPOLLERR.  Level-triggered.
 *
 * A callback may add, change and remove any descriptor, its own too.  A
 * descriptor removed during a turn gets no more callbacks in that turn;
 * one closed and registered again in the same turn may get a spurious
 * call (a non-blocking read then finds nothing), as with plain epoll.
 *
 * Errors: event_loop_new() and event_add() / event_mod() / event_del()
 * failing mean a broken invariant (an unknown or closed descriptor) or an
 * exhausted kernel, and are fatal (log.h); so is epoll_wait() failing for
 * anything but EINTR, which is a turn with no events.
 */
#ifndef MXGATE_EVENT_H
#define MXGATE_EVENT_H

#include <stdint.h>
#include <sys/epoll.h>

struct event_loop;

/* fd is ready for events (EPOLL* bits). */
typedef void event_fn(void *arg, int fd, uint32_t events);

/* max_events: how many ready descriptors one turn takes at most. */
struct event_loop *event_loop_new(int max_events);
/* Closes the epoll set; the registered descriptors stay open. */
void event_loop_free(struct event_loop *loop);
/* The epoll descriptor, for a child process that must close it. */
int  event_loop_fd(const struct event_loop *loop);

void event_add(struct event_loop *loop, int fd, uint32_t events,
    event_fn *fn, void *arg);
/* Wait for these events from now on; no system call if unchanged. */
void event_mod(struct event_loop *loop, int fd, uint32_t events);
/* Forget fd (not registered: nothing happens).  Call before close(). */
void event_del(struct event_loop *loop, int fd);

/*
 * One turn: wait up to timeout_ms (-1: no limit, 0: do not wait), then
 * call the callbacks of the ready descriptors.  Returns how many were
 * ready; 0 on timeout or when a signal interrupted the wait.
 */
int  event_run(struct event_loop *loop, int timeout_ms);

#endif
