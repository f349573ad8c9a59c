/*
 * threadpool — a few threads that run blocking jobs (password hashes,
 * DNS lookups) for an event loop, and hand them back through an eventfd
 * (the Redis bio.c pattern).
 *
 * The caller embeds a struct threadpool_job as the first member of its
 * own job and submits it; a thread takes jobs in order of submission and
 * calls ops->run() on it; then the job is queued back and the pool's
 * descriptor (threadpool_fd(), an eventfd for the loop, event.h) becomes
 * readable; the loop takes the finished jobs with threadpool_done() until
 * it returns NULL, which also resets the descriptor.
 *
 * Ownership and ordering: from threadpool_submit() until threadpool_done()
 * returns it, a job belongs to the pool, and only ops->run() (in one
 * thread) touches it; every job submitted comes back exactly once, unless
 * the pool is freed first.  threadpool_cancel() asks that a job that has
 * not started be skipped: it still comes back, without having run.
 * Threads never call the loop's code.
 *
 * Each thread may keep state of its own (a resolver, a database handle):
 * ops->thread_init(arg) makes it when the thread starts, ops->run() gets
 * it, ops->thread_fini() frees it when the thread ends.  The threads block
 * every signal: signals belong to the loop's thread (signalfd).
 *
 * Errors: threadpool_new() returns NULL with errno set (EINVAL for zero
 * threads, else from eventfd() or pthread_create()); threadpool_submit()
 * fails (-1) only once the pool is being freed.
 */
#ifndef MXGATE_THREADPOOL_H
#define MXGATE_THREADPOOL_H

#include <stdbool.h>

struct threadpool_job {
	struct threadpool_job *next;    /* the pool's */
	bool cancelled;                 /* the pool's, under its lock */
};

struct threadpool_ops {
	void *(*thread_init)(void *arg);        /* optional */
	void  (*thread_fini)(void *state);      /* optional */
	void  (*run)(struct threadpool_job *job, void *state);
};

struct threadpool;

struct threadpool *threadpool_new(unsigned nthreads,
    const struct threadpool_ops *ops, void *arg);
/*
 * Stop: jobs not started are not run; waits for the running ones.  Then
 * drop() (if not NULL) gets every job still in the pool, started or
 * finished, for the caller to free.
 */
void threadpool_free(struct threadpool *pool,
    void (*drop)(struct threadpool_job *job));
int  threadpool_fd(const struct threadpool *pool);
/* 0, or -1 when the pool is stopping (the job stays the caller's). */
int  threadpool_submit(struct threadpool *pool, struct threadpool_job *job);
void threadpool_cancel(struct threadpool *pool, struct threadpool_job *job);
/* A finished job, oldest first; NULL when there is none. */
struct threadpool_job *threadpool_done(struct threadpool *pool);

#endif
