/*
 * threadpool — see threadpool.h.
 *
 * One mutex guards both lists (queued, done) and the cancelled flags; a
 * condition variable wakes idle threads.  A thread appends a finished
 * job to the done list, then writes the eventfd; the loop empties the
 * done list and, when it finds it empty, reads (resets) the eventfd and
 * looks once more: a job finished in between has written it anew, so no
 * wake-up is lost and none is left behind.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "common/log.h"
#include "common/threadpool.h"
#include "common/util.h"

struct job_list {
	struct threadpool_job *head, **tail;
};

struct threadpool {
	pthread_mutex_t lock;
	pthread_cond_t  wake;
	struct job_list queued, done;
	struct threadpool_job *running;         /* a list too, for free */
	bool            stopping;
	int             efd;
	pthread_t      *threads;
	unsigned        nthreads;
	const struct threadpool_ops *ops;
	void           *arg;
};

static void
list_init(struct job_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void
list_push(struct job_list *l, struct threadpool_job *j)
{
	j->next = NULL;
	*l->tail = j;
	l->tail = &j->next;
}

static struct threadpool_job *
list_pop(struct job_list *l)
{
	struct threadpool_job *j = l->head;

	if (j != NULL && (l->head = j->next) == NULL)
		l->tail = &l->head;
	return j;
}

static void
running_remove(struct threadpool *p, struct threadpool_job *j)
{
	struct threadpool_job **pp;

	for (pp = &p->running; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == j) {
			*pp = j->next;
			return;
		}
	}
}

static void
signal_loop(struct threadpool *p)
{
	uint64_t one = 1;

	/* Fails only when the counter would overflow: a wake-up is pending
	 * then anyway. */
	while (write(p->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void *
pool_thread(void *arg)
{
	struct threadpool *p = arg;
	void *state = p->ops->thread_init ? p->ops->thread_init(p->arg) : NULL;
	struct threadpool_job *j;
	bool skip;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->queued.head == NULL && !p->stopping)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stopping)
			break;
		j = list_pop(&p->queued);
		skip = j->cancelled;
		j->next = p->running;
		p->running = j;
		pthread_mutex_unlock(&p->lock);
		if (!skip)
			p->ops->run(j, state);
		pthread_mutex_lock(&p->lock);
		running_remove(p, j);
		list_push(&p->done, j);
		signal_loop(p);
	}
	pthread_mutex_unlock(&p->lock);
	if (p->ops->thread_fini != NULL)
		p->ops->thread_fini(state);
	return NULL;
}

struct threadpool *
threadpool_new(unsigned nthreads, const struct threadpool_ops *ops, void *arg)
{
	struct threadpool *p;
	sigset_t all, old;
	int err = 0;

	if (nthreads == 0) {
		errno = EINVAL;
		return NULL;
	}
	p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	list_init(&p->queued);
	list_init(&p->done);
	p->ops = ops;
	p->arg = arg;
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		err = errno;
		goto fail;
	}
	p->threads = xcalloc(nthreads, sizeof(*p->threads));
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; p->nthreads < nthreads; p->nthreads++) {
		if ((err = pthread_create(&p->threads[p->nthreads], NULL,
		    pool_thread, p)) != 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0)
		return p;
fail:
	threadpool_free(p, NULL);
	errno = err;
	return NULL;
}

static void
drop_list(struct threadpool_job *j, void (*drop)(struct threadpool_job *))
{
	struct threadpool_job *next;

	for (; j != NULL; j = next) {
		next = j->next;
		if (drop != NULL)
			drop(j);
	}
}

void
threadpool_free(struct threadpool *p, void (*drop)(struct threadpool_job *))
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	drop_list(p->queued.head, drop);
	drop_list(p->running, drop);
	drop_list(p->done.head, drop);
	if (p->efd >= 0)
		close(p->efd);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

int
threadpool_fd(const struct threadpool *p)
{
	return p->efd;
}

int
threadpool_submit(struct threadpool *p, struct threadpool_job *j)
{
	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		return -1;
	}
	j->cancelled = false;
	list_push(&p->queued, j);
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void
threadpool_cancel(struct threadpool *p, struct threadpool_job *j)
{
	pthread_mutex_lock(&p->lock);
	j->cancelled = true;
	pthread_mutex_unlock(&p->lock);
}

static struct threadpool_job *
take_done(struct threadpool *p)
{
	struct threadpool_job *j;

	pthread_mutex_lock(&p->lock);
	j = list_pop(&p->done);
	pthread_mutex_unlock(&p->lock);
	return j;
}

struct threadpool_job *
threadpool_done(struct threadpool *p)
{
	struct threadpool_job *j;
	uint64_t count;

	if ((j = take_done(p)) != NULL)
		return j;
	if (read(p->efd, &count, sizeof(count)) < 0 && errno != EAGAIN &&
	    errno != EINTR)
		log_warn("thread pool: eventfd: %s", strerror(errno));
	return take_done(p);
}
