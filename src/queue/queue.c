/*
 * queue — see queue.h.
 *
 * Group commit: each turn of the loop reads every submission that is
 * waiting on every worker channel (bounded by QUEUE_BATCH_MAX), inserts
 * them all in one transaction and commits it, and only then answers the
 * workers.  The connection runs with synchronous=FULL: COMMIT returns
 * once the WAL is on disk (one fdatasync), and the queue VFS hands the
 * transaction's frames to the kernel in one write (queue_vfs.h).  What
 * arrives during the commit waits in the channels and is the next batch:
 * the batch grows with the load and fsyncs per message shrink.  If a
 * commit fails nobody hears "ok".
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/timerfd.h>

#include "common/envelope.h"
#include "common/event.h"
#include "common/ipc.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proc.h"
#include "queue/queue.h"
#include "queue/queue_db.h"
#include "queue/scheduler.h"
#include "common/util.h"

#define QUEUE_BATCH_MAX  2048
#define QUEUE_ARENA_MAX  (8 * 1024 * 1024)   /* inline bytes in one batch */
#define REQUIRED_SEALS   (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

struct channel {
	int   fd;
	struct ipc_outbox backlog;    /* answers the socket could not take */
};

struct submission {
	int       worker;
	int       memfd;            /* -1: inline, at inline_off in the arena */
	size_t    inline_off;
	struct ipc_submit msg;
	struct ipc_submit_result result;
	bool      inserted;
	char      logline[320];     /* written once the commit succeeded */
};

static struct {
	const struct mxconf *conf;
	struct mxconf *reloaded;        /* conf, once a reload replaced it */
	struct queue_db *db;
	struct event_loop *loop;
	int        sigfd;
	int        master_fd;
	int        lock_fd;             /* held for life (queue_db.h) */
	struct channel *chans;
	int        nchans;
	struct submission batch[QUEUE_BATCH_MAX];
	size_t     nbatch;
	struct buf arena;               /* the batch's inline messages */
	bool       stopping;
	int        space_timer;         /* timerfd: the free space, each second */
	uint64_t   usable;              /* ipc_queue_space: what workers know */
	unsigned long long committed;    /* statistics, logged at stop */
	unsigned long long batches;
	uint64_t   commit_us;
	uint64_t   depth_due_us;        /* the next queue gauges (metrics) */
} q;

/* The loop's callbacks (event.h); a worker channel's arg is its slot. */
static event_fn on_master, on_signal, on_worker;

static void
channel_close(int slot)
{
	struct channel *c = &q.chans[slot];

	if (c->fd >= 0) {
		event_del(q.loop, c->fd);
		close(c->fd);
		c->fd = -1;
	}
	ipc_outbox_clear(&c->backlog);
}

static void space_tell(int slot);
static void depth_refresh(void);
static event_fn on_space_timer;

static void
channel_set(int slot, int fd)
{
	if (slot < 0 || slot >= IPC_WORKER_SLOTS_MAX)
		fatalx("worker channel for unknown slot %d", slot);
	if (slot >= q.nchans) {
		/* A reload's new generation of workers (master.c). */
		q.chans = xrealloc(q.chans, (size_t)(slot + 1) *
		    sizeof(*q.chans));
		memset(q.chans + q.nchans, 0, (size_t)(slot + 1 - q.nchans) *
		    sizeof(*q.chans));
		for (int i = q.nchans; i <= slot; i++)
			q.chans[i].fd = -1;
		q.nchans = slot + 1;
	}
	channel_close(slot);
	q.chans[slot].fd = fd;
	if (fd >= 0) {
		event_add(q.loop, fd, EPOLLIN, on_worker, (void *)(intptr_t)slot);
		space_tell(slot);
	}
}

/* ---- answering ---- */

static void
channel_watch(int slot)
{
	struct channel *c = &q.chans[slot];

	event_mod(q.loop, c->fd,
	    EPOLLIN | (ipc_outbox_waiting(&c->backlog) ? EPOLLOUT : 0));
}

static void
channel_flush(int slot)
{
	struct channel *c = &q.chans[slot];

	if (c->fd < 0 || !ipc_outbox_waiting(&c->backlog))
		return;
	/* A failure: the worker died, its sessions with it. */
	if (ipc_outbox_flush(&c->backlog, c->fd) < 0)
		channel_close(slot);
	else if (!ipc_outbox_waiting(&c->backlog))
		channel_watch(slot);
}

static void
send_worker(int slot, enum ipc_type type, const void *payload, size_t len)
{
	struct channel *c = &q.chans[slot];
	bool waiting = ipc_outbox_waiting(&c->backlog);

	if (c->fd < 0)
		return;
	if (ipc_outbox_send(&c->backlog, c->fd, type, payload, len, NULL, 0,
	    -1) < 0)
		channel_close(slot);
	else if (!waiting && ipc_outbox_waiting(&c->backlog))
		channel_watch(slot);
}

static void
answer(int slot, const struct ipc_submit_result *r)
{
	send_worker(slot, IPC_SUBMIT_RESULT, r, sizeof(*r));
}

/* ---- free space ---- */

static void
space_tell(int slot)
{
	struct ipc_queue_space sp = { .usable = q.usable };

	send_worker(slot, IPC_QUEUE_SPACE, &sp, sizeof(sp));
}

/*
 * Measure the queue's file system and tell the workers when what they
 * know is off by more than 1 MB or crosses zero: they refuse MAIL with
 * 452 4.3.1 while nothing is usable, and a SIZE= that does not fit.
 * full: a commit just failed for want of space, whatever statvfs says.
 */
static void
space_check(bool full)
{
	struct statvfs st;
	uint64_t avail, usable, diff;

	if (statvfs(".", &st) < 0) {
		log_warn("statvfs of the queue directory: %s", strerror(errno));
		return;
	}
	avail = (uint64_t)st.f_bavail * st.f_frsize;
	queue_db_wal_budget(q.db, avail);
	usable = avail > q.conf->queue_min_free && !full ?
	    avail - q.conf->queue_min_free : 0;
	diff = usable > q.usable ? usable - q.usable : q.usable - usable;
	if (diff < 1024 * 1024 && (usable == 0) == (q.usable == 0))
		return;
	if (usable == 0 && q.usable != 0)
		log_warn("queue file system: %llu KB free, queue.min_free_space "
		    "is %zu KB: new mail is refused (452 4.3.1), deliveries go on",
		    (unsigned long long)(avail / 1024),
		    q.conf->queue_min_free / 1024);
	else if (usable != 0 && q.usable == 0)
		log_info("queue file system: %llu KB free again: accepting mail",
		    (unsigned long long)(avail / 1024));
	q.usable = usable;
	for (int i = 0; i < q.nchans; i++)
		space_tell(i);
}

static void
space_timer_start(void)
{
	struct itimerspec its = {
		.it_interval = { .tv_sec = 1 }, .it_value = { .tv_sec = 1 },
	};

	q.space_timer = timerfd_create(CLOCK_MONOTONIC,
	    TFD_NONBLOCK | TFD_CLOEXEC);
	if (q.space_timer < 0 || timerfd_settime(q.space_timer, 0, &its,
	    NULL) < 0)
		fatal("timerfd for the free space check");
	event_add(q.loop, q.space_timer, EPOLLIN, on_space_timer, NULL);
}

/* ---- the metrics' queue gauges ---- */

/* Scraped within this long: keep the gauges fresh. */
#define DEPTH_SCRAPED_RECENTLY 120
#define DEPTH_INTERVAL_US      5000000

static void
depth_row(void *arg, const char *state, const char *dest, int64_t n,
    int64_t oldest)
{
	int64_t *min = arg;
	int st = metrics_state_index(state);

	if (st < 0)
		return;
	metrics_depth_row((enum metrics_state)st, dest, (uint64_t)n);
	if (oldest > 0 && (*min == 0 || oldest < *min))
		*min = oldest;
}

/*
 * The queue's gauges (metrics.h), every DEPTH_INTERVAL_US while someone
 * scrapes them, and never more than 0.2 % of this process's time: a
 * query that took t waits 500 t before the next.  (Each second cost 6 %
 * of the CPU per message of a paused queue filling at 300 messages a
 * second on a loaded machine; Prometheus scrapes every 15 s or more.)
 */
static void
depth_refresh(void)
{
	int64_t now = (int64_t)time(NULL), oldest = 0;
	uint64_t started = monotonic_us(), took;

	if (!metrics_enabled() || started < q.depth_due_us ||
	    now - metrics_last_scrape() > DEPTH_SCRAPED_RECENTLY)
		return;
	metrics_depth_begin();
	if (queue_db_depth(q.db, depth_row, &oldest) < 0)
		log_warn("queue gauges for the metrics: %s",
		    queue_db_error(q.db));
	metrics_depth_end(oldest, now);
	took = monotonic_us() - started;
	/* A little early: the timer that calls us ticks each second. */
	q.depth_due_us = started + (took * 500 > DEPTH_INTERVAL_US ?
	    took * 500 : DEPTH_INTERVAL_US) - 100000;
}

static void
on_space_timer(void *arg, int fd, uint32_t events)
{
	uint64_t ticks;

	(void)arg;
	(void)fd;
	(void)events;
	while (read(q.space_timer, &ticks, sizeof(ticks)) > 0)
		;
	space_check(false);
	depth_refresh();
}

/* ---- one submission ---- */

static void
fail(struct submission *sub, enum submit_status status, const char *text)
{
	sub->result.status = status;
	strlcpy_mx(sub->result.text, text, sizeof(sub->result.text));
}

static int
check_memfd(struct submission *sub, size_t *total)
{
	struct stat st;
	int seals;

	if (sub->msg.message_len == 0 || sub->msg.envelope_len == 0 ||
	    sub->msg.message_len > (1ULL << 40) ||
	    sub->msg.envelope_len > (1ULL << 30) ||
	    fstat(sub->memfd, &st) < 0 ||
	    (uint64_t)st.st_size != sub->msg.message_len + sub->msg.envelope_len)
		return -1;
	/* Unsealed, the worker could still change what we are committing. */
	seals = fcntl(sub->memfd, F_GET_SEALS);
	if (seals < 0 || (seals & REQUIRED_SEALS) != REQUIRED_SEALS)
		return -1;
	*total = (size_t)st.st_size;
	return 0;
}

/*
 * The message as one readable block.  Small messages are copied into a
 * reused buffer: for the usual few kilobytes one pread costs less than
 * mapping, faulting and unmapping (and the TLB shootdown that comes
 * with munmap).  Large ones are mapped.
 */
#define QUEUE_COPY_MAX (256 * 1024)

static const char *
message_view(struct submission *sub, size_t total, bool *mapped)
{
	static struct buf copy;
	char *map;

	*mapped = false;
	if (total <= QUEUE_COPY_MAX) {
		ssize_t n;

		buf_reset(&copy);
		buf_reserve(&copy, total);
		n = fd_pread_full(sub->memfd, copy.data, total, 0);
		if (n != (ssize_t)total) {
			log_error("reading message: %s",
			    n < 0 ? strerror(errno) : "short read");
			return NULL;
		}
		copy.len = total;
		return copy.data;
	}
	map = mmap(NULL, total, PROT_READ, MAP_SHARED, sub->memfd, 0);
	if (map == MAP_FAILED) {
		log_error("mmap message: %s", strerror(errno));
		return NULL;
	}
	*mapped = true;
	return map;
}

/*
 * Insert one submission into the open transaction.  A submission that
 * cannot be read is failed on its own (0); -1 means the database refused
 * it and the transaction holds part of it: the batch must be redone.
 */
static int
insert_submission(struct submission *sub)
{
	struct envelope env;
	const char *content;
	size_t total;
	bool mapped;
	int r = 0;

	if (sub->memfd < 0) {
		/* Inline: its length was checked when it was read. */
		total = (size_t)(sub->msg.message_len + sub->msg.envelope_len);
		content = q.arena.data + sub->inline_off;
		mapped = false;
	} else if (check_memfd(sub, &total) < 0) {
		log_error("worker %d sent a malformed message (request %llx)",
		    sub->worker, (unsigned long long)sub->msg.request_id);
		fail(sub, SUBMIT_TEMPFAIL, "Local error in message handoff");
		return 0;
	} else
		content = message_view(sub, total, &mapped);
	if (content == NULL) {
		fail(sub, SUBMIT_TEMPFAIL, "Local error, try again later");
		return 0;
	}
	if (envelope_parse(content + sub->msg.message_len,
	    (size_t)sub->msg.envelope_len, &env) < 0) {
		log_error("worker %d sent a malformed envelope", sub->worker);
		fail(sub, SUBMIT_TEMPFAIL, "Local error in message handoff");
	} else if (queue_db_insert(q.db, &env, content,
	    (size_t)sub->msg.message_len) < 0) {
		fail(sub, SUBMIT_TEMPFAIL, "Queue write error, try again later");
		r = -1;
	} else {
		sub->inserted = true;
		strlcpy_mx(sub->result.queue_id, env.queue_id,
		    sizeof(sub->result.queue_id));
		if (log_enabled(LOG_LEVEL_DEBUG))
			snprintf(sub->logline, sizeof(sub->logline),
			    "id=%s from=<%s> size=%llu nrcpt=%zu client=%s%s",
			    env.queue_id, env.sender,
			    (unsigned long long)sub->msg.message_len, env.nrcpts,
			    env.client_ip ? env.client_ip : "unknown",
			    env.hold_reason != NULL ? " held (quarantine)" : "");
	}
	envelope_free(&env);
	if (mapped)
		munmap((void *)(uintptr_t)content, total);
	return r;
}

/* ---- the batch ---- */

/*
 * Insert the batch in one transaction.  A message the database refuses
 * (it should not happen: ids are unique, envelopes checked) spoils the
 * transaction; it is failed alone and the batch redone without it.
 */
static int
insert_batch(void)
{
	for (;;) {
		bool redo = false;

		if (queue_db_begin(q.db) < 0)
			return -1;
		for (size_t i = 0; i < q.nbatch && !redo; i++) {
			if (q.batch[i].result.status == SUBMIT_OK &&
			    insert_submission(&q.batch[i]) < 0)
				redo = true;
		}
		if (!redo)
			return queue_db_commit(q.db);
		queue_db_rollback(q.db);
		/* A full disk refuses every message alike: no redo. */
		if (queue_db_out_of_space(q.db))
			return -1;
		for (size_t i = 0; i < q.nbatch; i++)
			q.batch[i].inserted = false;
	}
}

/* Answer the whole batch with a failure and let it go: nothing of it was
 * committed. */
static void
batch_refuse(enum submit_status status, const char *text)
{
	for (size_t i = 0; i < q.nbatch; i++) {
		struct submission *sub = &q.batch[i];

		fail(sub, status, text);
		answer(sub->worker, &sub->result);
		if (sub->memfd >= 0)
			close(sub->memfd);
	}
	q.nbatch = 0;
	buf_reset(&q.arena);
}

static void
commit_batch(void)
{
	size_t i, ok = 0;
	uint64_t started;

	if (q.nbatch == 0)
		return;
	started = monotonic_us();
	if (insert_batch() < 0) {
		queue_db_rollback(q.db);
		if (queue_db_out_of_space(q.db)) {
			/* Nobody hears "queued"; the connection is sound,
			 * and the deliveries that free space go on.  The
			 * workers refuse MAIL until there is room again. */
			log_error("queue file system full: %zu messages refused "
			    "(452 4.3.1)", q.nbatch);
			batch_refuse(SUBMIT_NOSPACE,
			    "Insufficient system storage");
			space_check(true);
			return;
		}
		/* Not durable: nobody may hear "queued".  Stop; the master
		 * restarts us on a fresh connection. */
		for (i = 0; i < q.nbatch; i++) {
			fail(&q.batch[i], SUBMIT_TEMPFAIL,
			    "Queue write error, try again later");
			answer(q.batch[i].worker, &q.batch[i].result);
		}
		fatalx("commit of %zu messages failed; exiting", q.nbatch);
	}
	q.batches++;
	q.commit_us += monotonic_us() - started;
	metrics_observe(MH_COMMIT, monotonic_us() - started);
	metrics_observe(MH_BATCH, q.nbatch);
	/* Counted before anyone hears "queued": a scrape after the 250
	 * sees it. */
	for (i = 0; i < q.nbatch; i++)
		ok += q.batch[i].inserted;
	metrics_add(MC_QUEUE_COMMITTED, ok);
	ok = 0;
	for (i = 0; i < q.nbatch; i++) {
		struct submission *sub = &q.batch[i];

		if (sub->inserted) {
			ok++;
			/* The smtp process logs the reception with all
			 * it knows of the session (README "Logs"). */
			if (sub->logline[0] != '\0')
				log_debug("%s committed", sub->logline);
		} else if (sub->result.status == SUBMIT_OK)
			fail(sub, SUBMIT_TEMPFAIL, "Local error, try again later");
		answer(sub->worker, &sub->result);
		if (sub->memfd >= 0)
			close(sub->memfd);
	}
	q.committed += ok;
	log_debug("committed batch of %zu (%zu ok)", q.nbatch, ok);
	q.nbatch = 0;
	buf_reset(&q.arena);
}

/* Read every submission waiting on a worker channel into the batch. */
static void
read_worker(int slot)
{
	struct channel *c = &q.chans[slot];

	while (c->fd >= 0) {
		struct submission *sub;
		struct ipc_submit msg;
		enum ipc_type type;
		size_t len;
		char *at;
		int fd, r;

		if (q.nbatch == QUEUE_BATCH_MAX || q.arena.len >= QUEUE_ARENA_MAX)
			commit_batch();
		/* Straight into the arena: an inline message is not copied
		 * again before its insert. */
		buf_reserve(&q.arena, IPC_PAYLOAD_MAX);
		at = q.arena.data + q.arena.len;
		r = ipc_recv_len(c->fd, &type, at, IPC_PAYLOAD_MAX, &len, &fd);
		if (r < 0) {
			if (errno != EAGAIN)
				channel_close(slot);
			return;
		}
		if (r == 0) {
			channel_close(slot);
			return;
		}
		if (type != IPC_SUBMIT && type != IPC_SUBMIT_INLINE)
			fatalx("worker %d sent unexpected message %d", slot, type);
		memcpy(&msg, at, sizeof(msg));
		if (type == IPC_SUBMIT_INLINE) {
			if (fd >= 0)
				close(fd);
			fd = -1;
			if (msg.message_len == 0 || msg.envelope_len == 0 ||
			    msg.message_len + msg.envelope_len !=
			    len - sizeof(msg))
				fatalx("worker %d sent a malformed inline message",
				    slot);
		} else if (fd < 0)
			fatalx("worker %d sent a message without its memfd", slot);
		sub = &q.batch[q.nbatch++];
		memset(sub, 0, sizeof(*sub));
		sub->worker = slot;
		sub->memfd = fd;
		if (fd < 0) {
			sub->inline_off = q.arena.len + sizeof(msg);
			q.arena.len += len;
		}
		sub->msg = msg;
		sub->result.request_id = msg.request_id;
		sub->result.status = SUBMIT_OK;
	}
}

static void
reload_error(const char *msg)
{
	log_error("reload: %s", msg);
}

/*
 * A reload: the master checked this text (config_load_checked); the
 * delivery settings and the free space wanted apply from now on, and the
 * spawner gets the text too.  What we cannot read leaves the old ones,
 * said once in the log.
 */
static void
reconfigure(int fd)
{
	struct mxconf *c = NULL;
	char *text = ipc_text_read(fd);
	enum log_level level;

	if (text == NULL)
		log_error("reload: reading the configuration: %s",
		    strerror(errno));
	else
		c = config_load_checked(text, q.conf->path, q.conf->start_dir,
		    reload_error);
	free(text);
	if (c == NULL) {
		log_error("reload: the queue process keeps its delivery"
		    " settings");
		return;
	}
	/* Fixed until a restart (reload.h); and where we are. */
	free(c->queue_dir);
	c->queue_dir = xstrdup(q.conf->queue_dir);
	if (q.conf->start_dir != NULL)
		c->start_dir = xstrdup(q.conf->start_dir);
	if (log_level_parse(c->log_level, &level) == 0)
		log_set_level(level);
	scheduler_reconfigure(c, fd);
	/* The master's copy (from the fork) is never freed: nothing here
	 * owns it. */
	if (q.reloaded != NULL)
		config_free(q.reloaded);
	q.conf = q.reloaded = c;
	space_check(false);
	log_info("reload: delivery settings of %s in effect", c->path);
}

static void
read_master(void)
{
	struct ipc_worker_channel wc;
	enum ipc_type type;
	int fd, r = -1;

	while ((r = ipc_recv(q.master_fd, &type, &wc, sizeof(wc), &fd)) > 0) {
		if (type == IPC_CONFIG && fd >= 0) {
			reconfigure(fd);
			close(fd);
			continue;
		}
		if (type != IPC_WORKER_CHANNEL || fd < 0)
			fatalx("unexpected message %d from the master", type);
		channel_set((int)wc.worker_slot, fd);
	}
	if (r == 0) {
		log_warn("master went away; stopping");
		q.stopping = true;
	}
}

static void
read_signals(void)
{
	struct signalfd_siginfo si;

	while (read(q.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			q.stopping = true;
	}
}

static void
setup_signals(void)
{
	static const int handled[] = { SIGTERM, SIGINT };

	q.sigfd = proc_signalfd(handled, (int)ARRAY_LEN(handled));
}

static void
on_master(void *arg, int fd, uint32_t events)
{
	read_master();
}

static void
on_signal(void *arg, int fd, uint32_t events)
{
	read_signals();
}

static void
on_worker(void *arg, int fd, uint32_t events)
{
	int slot = (int)(intptr_t)arg;

	if (events & EPOLLOUT)
		channel_flush(slot);
	read_worker(slot);
}

int
queue_main(const struct mxconf *conf, int master_fd, const int *worker_fds,
    int nworkers, int spawner_fd)
{
	memset(&q, 0, sizeof(q));
	q.conf = conf;
	/* The batch allocates and frees the same sizes over and over:
	 * giving memory back to the kernel after every batch only to ask
	 * for it again was a measurable share of the queue's time. */
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
	q.master_fd = master_fd;
	q.lock_fd = queue_lock(QUEUE_LOCK_NAME, QUEUE_LOCK_WAIT(conf));
	if (q.lock_fd < 0)
		return 1;
	q.db = queue_db_open(QUEUE_DB_NAME, false);
	if (q.db == NULL)
		fatalx("cannot open the queue %s/%s", conf->queue_dir, QUEUE_DB_NAME);
	q.loop = event_loop_new(64);
	setup_signals();
	event_add(q.loop, q.sigfd, EPOLLIN, on_signal, NULL);
	event_add(q.loop, master_fd, EPOLLIN, on_master, NULL);
	/* Measured before any worker is told (channel_set tells it). */
	q.usable = UINT64_MAX;
	space_check(false);
	q.nchans = nworkers;
	q.chans = xcalloc((size_t)nworkers, sizeof(*q.chans));
	for (int i = 0; i < nworkers; i++) {
		q.chans[i].fd = -1;
		channel_set(i, worker_fds[i]);
	}
	log_info("queue open: %s/%s", conf->queue_dir, QUEUE_DB_NAME);
	space_timer_start();
	scheduler_init(conf, q.db, q.loop, spawner_fd);

	while (!q.stopping) {
		event_run(q.loop, -1);
		unsigned long long before = q.committed;
		commit_batch();
		/* Not once the master is gone: a new master's queue process
		 * waits for our lock, and every delivery started now only
		 * delays it. */
		if (!q.stopping)
			scheduler_run(q.committed != before);
	}
	/* Whatever is still in the sockets was sent by workers that have
	 * stopped: take it, so an answered client is never lost. */
	for (int i = 0; i < q.nchans; i++)
		read_worker(i);
	commit_batch();
	for (int i = 0; i < q.nchans; i++)
		channel_flush(i);
	scheduler_stop(q.conf->shutdown_grace / 2);
	queue_db_close(q.db);
	buf_free(&q.arena);
	log_info("stopped: %llu messages in %llu batches, %.1f us per commit"
	    " (sync included)", q.committed, q.batches,
	    q.batches ? (double)q.commit_us / (double)q.batches : 0.0);
	config_free(q.reloaded);
	return 0;
}
