/*
 * test_threadpool — the thread pool (threadpool.h): every job submitted
 * comes back once, through the descriptor; per-thread state; a cancelled
 * job comes back without having run; freeing hands back what is left.
 */
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/threadpool.h"
#include "common/util.h"
#include "unit.h"

#define NJOBS 200

struct job {
	struct threadpool_job tp;       /* first */
	int   n;
	int   result;
	void *state;
	bool  ran;
};

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open = true;
static int inits, finis;

static void *
t_init(void *arg)
{
	__atomic_add_fetch(&inits, 1, __ATOMIC_SEQ_CST);
	return arg;
}

static void
t_fini(void *state)
{
	(void)state;
	__atomic_add_fetch(&finis, 1, __ATOMIC_SEQ_CST);
}

static void
t_run(struct threadpool_job *tp, void *state)
{
	struct job *j = (struct job *)tp;

	pthread_mutex_lock(&gate_lock);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	j->result = j->n * j->n;
	j->state = state;
	j->ran = true;
}

static const struct threadpool_ops ops = {
	.thread_init = t_init,
	.thread_fini = t_fini,
	.run = t_run,
};

static void
set_gate(bool open)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = open;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_lock);
}

/* Wait for the descriptor, then take what is done; how many. */
static int
collect(struct threadpool *p, int *seen, struct job **jobs)
{
	struct pollfd pfd = { .fd = threadpool_fd(p), .events = POLLIN };
	struct threadpool_job *tp;
	int n = 0;

	if (poll(&pfd, 1, 5000) != 1)
		return 0;
	while ((tp = threadpool_done(p)) != NULL) {
		struct job *j = (struct job *)tp;

		seen[j->n]++;
		jobs[j->n] = j;
		n++;
	}
	return n;
}

static void
test_every_job_once(void)
{
	static int marker;
	static int seen[NJOBS];
	static struct job *back[NJOBS];
	struct threadpool *p;
	int got = 0, i;

	inits = finis = 0;
	p = threadpool_new(3, &ops, &marker);
	CHECK(p != NULL);
	if (p == NULL)
		return;
	for (i = 0; i < NJOBS; i++) {
		struct job *j = xcalloc(1, sizeof(*j));

		j->n = i;
		CHECK_INT(threadpool_submit(p, &j->tp), 0);
	}
	for (int tries = 0; got < NJOBS && tries < 1000; tries++)
		got += collect(p, seen, back);
	CHECK_INT(got, NJOBS);
	for (i = 0; i < NJOBS; i++) {
		CHECK_INT(seen[i], 1);
		if (back[i] != NULL) {
			CHECK(back[i]->ran && back[i]->result == i * i);
			CHECK(back[i]->state == &marker);
			free(back[i]);
		}
	}
	/* Nothing left: the descriptor was reset. */
	CHECK(threadpool_done(p) == NULL);
	threadpool_free(p, NULL);
	CHECK_INT(inits, 3);
	CHECK_INT(finis, 3);
	CHECK(threadpool_new(0, &ops, NULL) == NULL);
}

static int dropped;

static void
drop(struct threadpool_job *tp)
{
	dropped++;
	free(tp);
}

static void
test_cancel_and_free(void)
{
	static int seen[NJOBS];
	static struct job *back[NJOBS];
	struct threadpool *p = threadpool_new(1, &ops, NULL);
	struct job *j[3];
	int got = 0;

	CHECK(p != NULL);
	if (p == NULL)
		return;
	/* The only thread holds job 0 at the gate: 1 and 2 wait. */
	set_gate(false);
	for (int i = 0; i < 3; i++) {
		j[i] = xcalloc(1, sizeof(*j[i]));
		j[i]->n = i;
		CHECK_INT(threadpool_submit(p, &j[i]->tp), 0);
	}
	threadpool_cancel(p, &j[1]->tp);
	set_gate(true);
	for (int tries = 0; got < 3 && tries < 100; tries++)
		got += collect(p, seen, back);
	CHECK_INT(got, 3);
	CHECK(j[0]->ran && !j[1]->ran && j[2]->ran);
	for (int i = 0; i < 3; i++)
		free(j[i]);

	/* Freed with jobs queued behind a blocked one: all handed back. */
	set_gate(false);
	for (int i = 0; i < 3; i++) {
		j[i] = xcalloc(1, sizeof(*j[i]));
		CHECK_INT(threadpool_submit(p, &j[i]->tp), 0);
	}
	dropped = 0;
	/* Let the running job finish while the pool stops. */
	set_gate(true);
	threadpool_free(p, drop);
	CHECK_INT(dropped, 3);
}

int
main(void)
{
	log_init(true, LOG_LEVEL_ERROR);
	log_set_role("test");
	RUN(test_every_job_once);
	RUN(test_cancel_and_free);
	return unit_done();
}
