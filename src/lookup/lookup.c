/*
 * lookup — see lookup.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include "common/ipc.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "common/util.h"
#include "lookup/lookup.h"
#include "smtp/auth.h"

#define AUTH_THREADS 2      /* hashes at once; more only queue up */

enum { EV_MASTER = 1, EV_SIGNAL, EV_WORKER, EV_POOL };
#define EV_DATA(kind, index) (((uint64_t)(kind) << 32) | (uint32_t)(index))

struct channel {
	int      fd;            /* -1: none */
	unsigned generation;    /* bumped when the slot gets a new channel */
};

/* A check in the pool, and where its verdict goes. */
struct pending {
	uint64_t id;            /* the pool's */
	uint64_t request_id;    /* the worker's */
	int      slot;
	unsigned generation;
};

static struct {
	const struct mxconf *conf;
	int        epfd;
	int        sigfd;
	int        master_fd;
	struct channel *chans;
	int        nchans;
	struct auth_pool *pool;
	struct pending *pending;
	size_t     npending, cap;
	uint64_t   seq;
	bool       stopping;
} l;

bool
lookup_wanted(const struct mxconf *conf)
{
	for (size_t i = 0; i < conf->nlisteners; i++) {
		if (conf->listeners[i].auth)
			return true;
	}
	return false;
}

static void
epoll_set(int fd, int op, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };

	if (epoll_ctl(l.epfd, op, fd, &ev) < 0)
		fatal("epoll_ctl fd %d", fd);
}

static void
channel_close(int slot)
{
	if (l.chans[slot].fd < 0)
		return;
	epoll_ctl(l.epfd, EPOLL_CTL_DEL, l.chans[slot].fd, NULL);
	close(l.chans[slot].fd);
	l.chans[slot].fd = -1;
}

static void
channel_set(int slot, int fd)
{
	if (slot < 0 || slot >= IPC_WORKER_SLOTS_MAX)
		fatalx("channel for worker slot %d of %d", slot, l.nchans);
	if (slot >= l.nchans) {
		/* A reload's new generation of workers (master.c). */
		l.chans = xrealloc(l.chans, (size_t)(slot + 1) *
		    sizeof(*l.chans));
		memset(l.chans + l.nchans, 0, (size_t)(slot + 1 - l.nchans) *
		    sizeof(*l.chans));
		for (int i = l.nchans; i <= slot; i++)
			l.chans[i].fd = -1;
		l.nchans = slot + 1;
	}
	channel_close(slot);
	l.chans[slot].generation++;
	l.chans[slot].fd = fd;
	if (fd >= 0)
		epoll_set(fd, EPOLL_CTL_ADD, EV_DATA(EV_WORKER, slot));
}

static void
check_submit(int slot, struct ipc_auth_check *c)
{
	struct pending *p;

	c->user[sizeof(c->user) - 1] = '\0';
	c->pass[sizeof(c->pass) - 1] = '\0';
	if (l.npending == l.cap) {
		l.cap = l.cap ? l.cap * 2 : 16;
		l.pending = xrealloc(l.pending, l.cap * sizeof(*l.pending));
	}
	p = &l.pending[l.npending];
	p->id = ++l.seq;
	p->request_id = c->request_id;
	p->slot = slot;
	p->generation = l.chans[slot].generation;
	if (auth_pool_submit(l.pool, p->id, c->user, c->pass) == 0)
		l.npending++;
	explicit_bzero(c->pass, sizeof(c->pass));
}

static void
read_worker(int slot)
{
	struct ipc_auth_check c;
	enum ipc_type type;
	int fd, r = -1;

	while (l.chans[slot].fd >= 0 &&
	    (r = ipc_recv(l.chans[slot].fd, &type, &c, sizeof(c), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		if (type != IPC_AUTH_CHECK)
			fatalx("worker %d sent unexpected message %d", slot,
			    type);
		check_submit(slot, &c);
	}
	explicit_bzero(&c, sizeof(c));
	if (r == 0)
		channel_close(slot);     /* that worker has gone */
}

static void
read_pool(void)
{
	struct ipc_auth_result res;
	enum auth_verdict verdict;
	uint64_t id;

	while (auth_pool_result(l.pool, &id, &verdict, res.why,
	    sizeof(res.why))) {
		size_t i;

		for (i = 0; i < l.npending && l.pending[i].id != id; i++)
			;
		if (i == l.npending)
			continue;
		struct pending p = l.pending[i];
		l.pending[i] = l.pending[--l.npending];
		if (l.chans[p.slot].fd < 0 ||
		    l.chans[p.slot].generation != p.generation)
			continue;
		res.request_id = p.request_id;
		res.verdict = (uint32_t)verdict;
		if (ipc_send(l.chans[p.slot].fd, IPC_AUTH_RESULT, &res,
		    sizeof(res), -1) < 0)
			log_warn("worker %d: sending a verdict: %s", p.slot,
			    strerror(errno));
	}
}

static void
read_master(void)
{
	struct ipc_worker_channel wc;
	enum ipc_type type;
	int fd, r = -1;

	while ((r = ipc_recv(l.master_fd, &type, &wc, sizeof(wc), &fd)) > 0) {
		if (type != IPC_WORKER_CHANNEL || fd < 0)
			fatalx("unexpected message %d from the master", type);
		channel_set((int)wc.worker_slot, fd);
	}
	if (r == 0)
		l.stopping = true;
}

static void
read_signals(void)
{
	struct signalfd_siginfo si;

	while (read(l.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			l.stopping = true;
	}
}

int
lookup_main(const struct mxconf *conf, int master_fd, const int *worker_fds,
    int nworkers)
{
	static const int handled[] = { SIGTERM, SIGINT };
	struct epoll_event events[64];
	struct auth_sources src = {
		.passwd_file = conf->auth_passwd_file,
		.sqlite = conf->auth_sqlite,
	};
	struct sandbox sb = {
		.title = "lookup",
		.user = conf->lookup_user,
		.filter = SANDBOX_FILTER_LOOKUP,
	};

	memset(&l, 0, sizeof(l));
	l.conf = conf;
	l.master_fd = master_fd;
	if ((l.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		fatal("epoll_create1");
	l.sigfd = proc_signalfd(handled, (int)ARRAY_LEN(handled));
	epoll_set(l.sigfd, EPOLL_CTL_ADD, EV_DATA(EV_SIGNAL, 0));
	epoll_set(master_fd, EPOLL_CTL_ADD, EV_DATA(EV_MASTER, 0));
	l.nchans = nworkers;
	l.chans = xcalloc((size_t)nworkers, sizeof(*l.chans));
	for (int i = 0; i < nworkers; i++) {
		l.chans[i].fd = -1;
		channel_set(i, worker_fds[i]);
	}
	/* The credential files are opened at each check, as this user:
	 * they must be readable by server.lookup_user. */
	sandbox_enter(&sb);
	/* After the signal mask is set: the threads inherit it. */
	if ((l.pool = auth_pool_new(&src, AUTH_THREADS)) == NULL)
		fatalx("cannot start the credential checks");
	epoll_set(auth_pool_fd(l.pool), EPOLL_CTL_ADD, EV_DATA(EV_POOL, 0));
	log_info("started");

	while (!l.stopping) {
		int n = epoll_wait(l.epfd, events, (int)ARRAY_LEN(events), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			uint32_t kind = (uint32_t)(events[i].data.u64 >> 32);
			uint32_t index = (uint32_t)events[i].data.u64;

			switch (kind) {
			case EV_MASTER:
				read_master();
				break;
			case EV_SIGNAL:
				read_signals();
				break;
			case EV_WORKER:
				read_worker((int)index);
				break;
			case EV_POOL:
				read_pool();
				break;
			}
		}
	}
	/* Checks still running answer nobody: the workers have stopped. */
	log_info("stopped");
	_exit(0);
}
