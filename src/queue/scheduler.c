/*
 * scheduler — see scheduler.h.
 *
 * A job's life: dispatch() reads the due recipients, groups them into
 * jobs and jobs into batches ("children": the slots), and marks them
 * "delivering" in a transaction; after its commit, start_child() copies
 * the batch's messages into one sealed memfd (one per batch, not one
 * per job: a memfd costs four system calls here, and a descriptor to
 * pass and close there), writes the jobs into another
 * (spawner.h), and sends them to an idle delivery process of the pool
 * (struct dproc) over its channel, or asks the delivery spawner to start
 * a new one, as the delivery user, which cannot open the queue.  That
 * process delivers and sends one report per recipient, then
 * SPAWN_BATCH_DONE, over a SOCK_SEQPACKET pair whose other end stays
 * here.  The queue process collects the reports (read_reports); a job
 * whose recipients all have an outcome is "completed", and the next
 * scheduler transaction records it (record_job): state, history,
 * bounce, retention.  A process that dies leaves its batch's unreported
 * recipients deferred.
 *
 * The scheduler's transactions never wait for the disk: in WAL mode a
 * commit with synchronous=NORMAL is written at once (a crashed process
 * loses nothing) and made durable by the next sync of the WAL, the group
 * commit's; what a power failure could cost is a delivery done again,
 * which the at-least-once contract allows, never an acknowledged
 * message.  (When the connection runs with FULL, ours switch to NORMAL
 * for their duration: each would otherwise add an fsync that the
 * acceptance path waits behind.)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <syslog.h>

#include "queue/bounce.h"
#include "common/dsn.h"
#include "common/ipc.h"
#include "common/json.h"
#include "delivery/delivery.h"
#include "common/event.h"
#include "delivery/spawner.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proc.h"
#include "queue/retry.h"
#include "queue/scheduler.h"
#include "common/util.h"

#define SCHED_TICK_MS        1000
#define SCHED_PAGE           500      /* due rows read at a time */
#define SCHED_MAX_PAGES      4
#define SCHED_JOBS_PER_CHILD 20       /* jobs one child runs in turn (relay:
					 messages per connection) */
#define SCHED_PURGE_MS       60000
#define SCHED_HEADERS_MAX    65536    /* original headers read for a DSN */
#define SCHED_PROC_IDLE_MS   60000    /* an idle delivery process retires */
#define SCHED_PROC_BATCHES   500      /* batches a process runs, at most */
#define SCHED_FULL_RETRY_MS  200      /* writing again after a full disk */

/* Child -> queue process (spawner.h). */
#define report spawn_report

/* A delivery outcome for the metrics, counted once its transaction
 * committed. */
struct pending_count {
	char     dest[METRICS_DEST_LEN];
	enum metrics_outcome outcome;
	uint64_t latency_us;
};

struct srcpt {
	int64_t  id;
	char    *address;
	unsigned attempts;              /* this one included */
	int64_t  attempt_at;            /* when this attempt began */
	int64_t  prev_attempt_at;       /* the one before; 0 for none */
	int      status;                /* enum delivery_status */
	bool     remote;                /* see struct delivery_rcpt */
	uint32_t connect_ms, transfer_ms;       /* for the log */
	bool     dsn_passed;            /* the server took DSN (relay, LMTP) */
	unsigned dsn_notify;            /* DSN NOTIFY bits, 0: none given */
	char    *dsn_orcpt;             /* "type;address", NULL: none */
	char     reply[DELIVERY_REPLY_MAX];
};

struct sjob {
	char    *queue_id, *sender, *route, *action, *params, *job_key;
	int64_t  received_at;
	struct srcpt *rcpts;
	size_t   nrcpts, nreported;
	char     destination[DELIVERY_DEST_MAX];
	struct queue_message msg;       /* read before the fork */
	uint64_t content_off;           /* in its batch's contents memfd */
	size_t   content_len;
};

/* A batch: the jobs one delivery process runs in turn (a "child" slot:
 * delivery.concurrency of them). */
struct child {
	struct dproc *proc;             /* running it; NULL before */
	bool     started;               /* handed to a process */
	char    *dest_key;
	char    *user;                  /* a route's user=, NULL: default */
	struct sjob **jobs;             /* NULL once moved to completed */
	size_t   njobs;
	int      contents;              /* the jobs' messages, a memfd */
	bool     contents_open;         /* contents is ours to close */
	uint64_t deadline_ms;
	bool     used;
};

/* A long-lived delivery process (spawner.h): at most one batch at a
 * time; idle ones wait for the next batch of their user. */
struct dproc {
	pid_t    pid;                   /* -1: asked for, the spawner has not
	                                 * said */
	uint64_t request;               /* the spawn request */
	int      fd;                    /* the channel: reports in, batches
	                                 * out */
	char    *user;                  /* a route's user=, NULL: default */
	char    *last_dest;             /* its last batch's destination (its
	                                 * cached connection's) */
	struct child *batch;            /* NULL: idle */
	unsigned batches;
	uint64_t idle_since_ms;
	unsigned conf_generation;       /* s.conf_generation when asked for */
	bool     used;
};

/* The loop's callbacks (event.h): the timer, a delivery process's
 * reports (arg: its struct dproc). */
static event_fn on_timer, on_proc, on_spawner;

static struct {
	const struct mxconf *conf;
	struct queue_db *db;
	struct event_loop *loop;
	int       timerfd;
	uint64_t  timer_at_ms;              /* when it is armed for; 0 none */
	struct child *children;         /* nslots: the most concurrency
	                                 * has been since the start */
	size_t    nslots, nrunning;
	size_t    limit;                /* delivery.concurrency now */
	struct dproc *procs;            /* as many: the process pool */
	unsigned  conf_generation;      /* reloads (scheduler_reconfigure) */
	struct sjob **completed;        /* outcomes to record */
	size_t    ncompleted, completed_cap;
	struct retry_policy policy;
	uint64_t  next_tick_ms, last_txn_ms, next_purge_ms;
	bool      kick;                 /* look for due work soon */
	bool      stopping;
	struct buf detail;
	int       spawner_fd;           /* the delivery spawner (spawner.h) */
	uint64_t  spawn_seq;
	uint64_t  full_since_ms;        /* writes fail for want of space */
	uint64_t  full_retry_ms;        /* when to try writing again */
	struct buf outcome_log;         /* lines for the log, once committed */
	struct buf outcome_counts;      /* struct pending_count, the same */
	bool      requeue_pending;      /* requeue_interrupted() to redo */
} s;

/* ---- small helpers ---- */

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static void
add_event(const char *msgid, int64_t rcpt_id, int64_t at, const char *kind,
    const char *detail)
{
	(void)queue_db_event(s.db, msgid, rcpt_id, at, kind, detail);
}

static void
job_free(struct sjob *j)
{
	size_t i;

	if (j == NULL)
		return;
	for (i = 0; i < j->nrcpts; i++) {
		free(j->rcpts[i].address);
		free(j->rcpts[i].dsn_orcpt);
	}
	free(j->rcpts);
	free(j->queue_id);
	free(j->sender);
	free(j->route);
	free(j->action);
	free(j->params);
	free(j->job_key);
	queue_db_message_free(&j->msg);
	free(j);
}

static void
completed_add(struct sjob *j)
{
	if (s.ncompleted == s.completed_cap) {
		s.completed_cap = s.completed_cap ? s.completed_cap * 2 : 64;
		s.completed = xrealloc(s.completed,
		    s.completed_cap * sizeof(*s.completed));
	}
	s.completed[s.ncompleted++] = j;
}

/* ---- the timer ---- */

/* The queue's loop asks after every batch: re-arming only when the time
 * changes saves a system call per batch. */
static void
timer_arm(uint64_t at_ms)
{
	struct itimerspec its;
	uint64_t now = monotonic_ms();
	uint64_t delay = at_ms > now ? at_ms - now : 1;

	if (at_ms == s.timer_at_ms && at_ms > now)
		return;
	s.timer_at_ms = at_ms;
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = (time_t)(delay / 1000);
	its.it_value.tv_nsec = (long)(delay % 1000) * 1000000L;
	if (timerfd_settime(s.timerfd, 0, &its, NULL) < 0)
		fatal("timerfd_settime");
}

/* ---- the messages, read before the fork ---- */

/* The job's message into j->msg, appended to the batch's contents (fd,
 * *used bytes so far): 0; -1 when it is gone (deleted by the operator)
 * or unreadable, and then the contents are as they were; -2 when they
 * cannot be put back so (errno). */
static int
load_message(struct sjob *j, int fd, size_t *used)
{
	if (queue_db_message_copy(s.db, j->queue_id, &j->msg, fd) > 0) {
		j->content_off = *used;
		j->content_len = j->msg.content_len;
		*used += j->content_len;
		return 0;
	}
	/* A copy cut short: what it wrote goes. */
	if (ftruncate(fd, (off_t)*used) < 0 ||
	    lseek(fd, (off_t)*used, SEEK_SET) < 0)
		return -2;
	return -1;
}

/* ---- children, seen from the queue process ---- */

static struct child *
child_slot(void)
{
	size_t i;

	for (i = 0; i < s.nslots; i++)
		if (!s.children[i].used)
			return &s.children[i];
	return NULL;
}

static size_t
dest_running(const char *dest_key)
{
	size_t i, n = 0;

	for (i = 0; i < s.nslots; i++)
		if (s.children[i].used &&
		    strcmp(s.children[i].dest_key, dest_key) == 0)
			n++;
	return n;
}

static void
child_release(struct child *c)
{
	size_t i;

	if (c->proc != NULL)
		c->proc->batch = NULL;
	for (i = 0; i < c->njobs; i++)
		job_free(c->jobs[i]);
	free(c->jobs);
	free(c->dest_key);
	free(c->user);
	if (c->contents_open)
		close(c->contents);
	memset(c, 0, sizeof(*c));
	if (s.nrunning > 0)
		s.nrunning--;
	s.kick = true;
}

/* A job whose recipients all have an outcome goes to be recorded. */
static void
job_maybe_complete(struct child *c, size_t index)
{
	struct sjob *j = c->jobs[index];

	if (j != NULL && j->nreported == j->nrcpts) {
		completed_add(j);
		c->jobs[index] = NULL;
	}
}

static void
apply_report(struct child *c, const struct report *r)
{
	struct sjob *j;
	size_t i;

	if (r->job >= c->njobs || (j = c->jobs[r->job]) == NULL) {
		log_warn("delivery process %ld sent a report for no job",
		    (long)c->proc->pid);
		return;
	}
	for (i = 0; i < j->nrcpts; i++) {
		struct srcpt *rc = &j->rcpts[i];

		if (rc->id != r->recipient_id || rc->status != DELIVERY_PENDING)
			continue;
		rc->status = r->status == DELIVERY_OK ||
		    r->status == DELIVERY_FAIL ? r->status : DELIVERY_DEFER;
		rc->remote = r->remote != 0;
		rc->connect_ms = r->connect_ms;
		rc->transfer_ms = r->transfer_ms;
		rc->dsn_passed = r->dsn_passed != 0;
		memcpy(rc->reply, r->reply, sizeof(rc->reply));
		rc->reply[sizeof(rc->reply) - 1] = '\0';
		memcpy(j->destination, r->destination, sizeof(j->destination));
		j->destination[sizeof(j->destination) - 1] = '\0';
		j->nreported++;
		break;
	}
	job_maybe_complete(c, r->job);
}

/* The batch is over (or its process gone): whatever was not reported
 * is deferred. */
static void
child_finished(struct child *c, const char *why)
{
	size_t i, k;

	for (i = 0; i < c->njobs; i++) {
		struct sjob *j = c->jobs[i];

		if (j == NULL)
			continue;
		for (k = 0; k < j->nrcpts; k++) {
			if (j->rcpts[k].status != DELIVERY_PENDING)
				continue;
			j->rcpts[k].status = DELIVERY_DEFER;
			snprintf(j->rcpts[k].reply, sizeof(j->rcpts[k].reply),
			    "451 4.3.0 %s", why);
			j->nreported++;
		}
		job_maybe_complete(c, i);
	}
	child_release(c);
}

/* Forget a process: its channel closed, so that it ends (an idle one
 * exits at once; the spawner reaps it). */
static void
proc_release(struct dproc *p)
{
	if (p->fd >= 0) {
		event_del(s.loop, p->fd);
		close(p->fd);
	}
	free(p->user);
	free(p->last_dest);
	memset(p, 0, sizeof(*p));
	p->fd = -1;
}

/* The channel ended: the delivery process has exited (the spawner logs
 * how); what it did not report of its batch is deferred. */
static void
proc_gone(struct dproc *p)
{
	if (p->batch != NULL)
		child_finished(p->batch, "delivery process ended without"
		    " reporting");
	proc_release(p);
}

/* The process says its batch is over: the batch's slot is free, the
 * process waits for the next (or retires after SCHED_PROC_BATCHES). */
static void
batch_done(struct dproc *p)
{
	if (p->batch == NULL) {
		log_warn("delivery process %ld ended a batch it did not have",
		    (long)p->pid);
		return;
	}
	child_finished(p->batch, "the delivery process gave no outcome");
	p->idle_since_ms = monotonic_ms();
	/* One started before a reload has the old routes and upstreams. */
	if (++p->batches >= SCHED_PROC_BATCHES ||
	    p->conf_generation != s.conf_generation)
		proc_release(p);
}

static void apply_tls_note(const struct spawn_tls *n);
static void write_tls_note(const struct spawn_tls *n);

static void
read_reports(struct dproc *p)
{
	union {
		struct report    r;
		struct spawn_tls t;
	} u;
	struct report r;
	ssize_t n;

	while (p->used) {
		n = recv(p->fd, &u, sizeof(u), MSG_DONTWAIT);
		if (n == (ssize_t)sizeof(u.t) && u.t.job == SPAWN_TLS_NOTE) {
			apply_tls_note(&u.t);
			continue;
		}
		if (n == (ssize_t)sizeof(r)) {
			memcpy(&r, &u.r, sizeof(r));
			if (r.job == SPAWN_BATCH_DONE)
				batch_done(p);
			else if (p->batch != NULL)
				apply_report(p->batch, &r);
			else
				log_warn("delivery process %ld reported"
				    " outside a batch", (long)p->pid);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n > 0)
			fatalx("delivery process %ld sent %zd bytes",
			    (long)p->pid, n);
		/* EOF (or an error): the process has exited or is exiting. */
		proc_gone(p);
		return;
	}
}

/* The job has its outcome: deferred, its message unreadable. */
static void
job_unreadable(struct child *c, size_t i)
{
	struct sjob *j = c->jobs[i];

	for (size_t k = 0; k < j->nrcpts; k++) {
		j->rcpts[k].status = DELIVERY_DEFER;
		snprintf(j->rcpts[k].reply, sizeof(j->rcpts[k].reply),
		    "451 4.3.0 message not readable from the queue");
	}
	j->nreported = j->nrcpts;
	job_maybe_complete(c, i);
}

/* Load every job's message into one sealed memfd; a job whose message
 * is gone has its outcome at once.  false when no job is left to run. */
static bool
load_jobs(struct child *c)
{
	size_t i, left = 0, used = 0;
	bool read;
	int fd, rc;

	fd = memfd_create("mxgate-messages", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	/* One read transaction for the batch: SQLite's locks once, not
	 * for each message (measured: 3 fcntl calls per message). */
	read = queue_db_read_begin(s.db) == 0;
	for (i = 0; i < c->njobs && fd >= 0; i++) {
		rc = load_message(c->jobs[i], fd, &used);
		if (rc == 0)
			left++;
		else if (rc == -1)
			job_unreadable(c, i);
		else {
			close(fd);
			fd = -1;
		}
	}
	if (read)
		queue_db_read_end(s.db);
	/* Sealed: what the handler reads is what we committed. */
	if (fd >= 0 && left > 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK |
	    F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) {
		c->contents = fd;
		c->contents_open = true;
		return true;
	}
	if (fd < 0 || left > 0)
		log_error("cannot copy messages for delivery: %s",
		    strerror(errno));
	if (fd >= 0)
		close(fd);
	for (i = 0; i < c->njobs; i++)
		if (c->jobs[i] != NULL)
			job_unreadable(c, i);
	return false;
}

static void
close_contents(struct child *c)
{
	if (c->contents_open) {
		close(c->contents);
		c->contents_open = false;
	}
}

/* To the spawner, waiting for room: it reads at once, and a request
 * must go whole, in order. */
static int
spawner_send(enum ipc_type type, const void *payload, size_t len, int fd)
{
	for (int tries = 0; tries < 50; tries++) {
		struct pollfd pfd = { .fd = s.spawner_fd, .events = POLLOUT };

		if (ipc_send(s.spawner_fd, type, payload, len, fd) == 0)
			return 0;
		if (errno != EAGAIN)
			return -1;
		(void)poll(&pfd, 1, 100);
	}
	errno = EAGAIN;
	return -1;
}

/* A relay job to "mx" carries its domain's cached MTA-STS policy
 * (mta_sts.h): the delivery process cannot read the queue. */
static void
put_sts_cached(struct buf *b, const struct sjob *j)
{
	static const char prefix[] = "relay:mx:";
	char *line = NULL;

	if (strncmp(j->job_key, prefix, sizeof(prefix) - 1) == 0)
		queue_db_sts_get(s.db, j->job_key + sizeof(prefix) - 1,
		    (int64_t)time(NULL), &line);
	spawn_put_str(b, line);
	free(line);
}

/* What a delivery process learnt about TLS, into the queue database:
 * a policy to cache, a session for TLS-RPT.  In a short transaction of
 * the delivery side (synchronous=NORMAL: no fsync of its own that
 * acceptance would wait behind); when the queue is busy the note is
 * dropped: a policy is fetched again, a session goes uncounted, the
 * mail is not concerned.  A failure is logged by the store. */
static void
apply_tls_note(const struct spawn_tls *n)
{
	if (queue_db_txn_begin(s.db) < 0) {
		log_debug("scheduler: queue busy, TLS note for %s dropped",
		    n->domain);
		return;
	}
	write_tls_note(n);
	if (queue_db_txn_commit(s.db) < 0)
		log_debug("scheduler: TLS note for %s not written", n->domain);
}

static void
write_tls_note(const struct spawn_tls *n)
{
	struct queue_tls_result r;
	char day[16];
	struct tm tm;
	time_t now = time(NULL);

	if (n->kind == SPAWN_TLS_STS_POLICY) {
		queue_db_sts_put(s.db, n->domain, n->id, n->mode, n->max_age,
		    n->fetched_at, n->text);
		return;
	}
	gmtime_r(&now, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	r.day = day;
	r.domain = n->domain;
	r.policy_type = n->id;
	r.policy = n->text;
	r.mx_host = n->mx_host;
	r.result_type = n->result_type;
	r.sending_ip = n->sending_ip;
	r.receiving_ip = n->receiving_ip;
	r.sessions = 1;
	queue_db_tls_result(s.db, &r);
}

/* The jobs of c, in the format of spawner.h, in a sealed memfd. */
static int
jobs_memfd(const struct child *c)
{
	struct buf b;
	uint32_t n = 0;
	int fd;

	buf_init(&b);
	for (size_t i = 0; i < c->njobs; i++)
		n += c->jobs[i] != NULL;
	spawn_put_u32(&b, SPAWN_MAGIC);
	spawn_put_u32(&b, n);
	for (size_t i = 0; i < c->njobs; i++) {
		const struct sjob *j = c->jobs[i];

		if (j == NULL)
			continue;
		spawn_put_u32(&b, (uint32_t)i);
		spawn_put_u32(&b, 1);
		spawn_put_u64(&b, (uint64_t)j->content_len);
		spawn_put_u64(&b, j->content_off);
		spawn_put_u64(&b, (uint64_t)j->msg.received_at);
		spawn_put_u32(&b, (j->msg.body_8bitmime ? SPAWN_8BITMIME : 0) |
		    (j->msg.smtputf8 ? SPAWN_SMTPUTF8 : 0) |
		    (j->msg.dsn_ret == DSN_RET_FULL ? SPAWN_RET_FULL : 0) |
		    (j->msg.dsn_ret == DSN_RET_HDRS ? SPAWN_RET_HDRS : 0));
		spawn_put_str(&b, j->queue_id);
		spawn_put_str(&b, j->msg.sender != NULL ? j->msg.sender : "");
		spawn_put_str(&b, j->route);
		spawn_put_str(&b, j->action);
		spawn_put_str(&b, j->params);
		spawn_put_str(&b, j->msg.client_ip);
		spawn_put_str(&b, j->msg.helo);
		spawn_put_str(&b, j->msg.protocol);
		spawn_put_str(&b, j->msg.auth_user);
		spawn_put_str(&b, j->msg.dsn_envid);
		spawn_put_u32(&b, (uint32_t)j->nrcpts);
		for (size_t k = 0; k < j->nrcpts; k++) {
			spawn_put_u64(&b, (uint64_t)j->rcpts[k].id);
			spawn_put_str(&b, j->rcpts[k].address);
			spawn_put_u32(&b, j->rcpts[k].dsn_notify);
			spawn_put_str(&b, j->rcpts[k].dsn_orcpt);
		}
		put_sts_cached(&b, j);
	}
	fd = memfd_create("mxgate-jobs", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0 && (fd_write_all(fd, b.data, b.len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_WRITE | F_SEAL_SEAL) < 0)) {
		close(fd);
		fd = -1;
	}
	buf_free(&b);
	return fd;
}

/* The batch's descriptors, in the order of spawner.h: the jobs (a new
 * memfd, the caller closes it), then the jobs' contents.  -1 on
 * failure. */
static int
batch_fds(const struct child *c, int *fds)
{
	if ((fds[0] = jobs_memfd(c)) < 0)
		return -1;
	fds[1] = c->contents;
	return 2;
}

/* Ask the spawner for a new delivery process: the jobs, each job's
 * content, then the request with our channel's other end. */
static int
spawn_request(struct child *c, struct dproc *p, const int *fds, int nfds,
    int report)
{
	struct ipc_spawn req;

	if (s.spawner_fd < 0)
		return -1;
	for (int i = 0; i < nfds; i++)
		if (spawner_send(IPC_SPAWN_FD, NULL, 0, fds[i]) < 0)
			return -1;
	memset(&req, 0, sizeof(req));
	req.request = p->request = ++s.spawn_seq;
	req.nfds = (uint32_t)nfds;
	snprintf(req.title, sizeof(req.title), "delivery %s", c->dest_key);
	if (c->user != NULL &&
	    strlcpy_mx(req.user, c->user, sizeof(req.user)) >= sizeof(req.user))
		return -1;
	return spawner_send(IPC_SPAWN, &req, sizeof(req), report);
}

static bool
same_user(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/*
 * An idle process of the batch's user, preferably the one whose last
 * batch went to the same destination (its connection may still be
 * open); NULL when there is none.
 */
static struct dproc *
proc_idle(const struct child *c)
{
	struct dproc *any = NULL;

	for (size_t i = 0; i < s.nslots; i++) {
		struct dproc *p = &s.procs[i];

		if (!p->used || p->batch != NULL || p->pid <= 0 ||
		    !same_user(p->user, c->user) ||
		    p->conf_generation != s.conf_generation)
			continue;
		if (p->last_dest != NULL && strcmp(p->last_dest, c->dest_key) == 0)
			return p;
		if (any == NULL)
			any = p;
	}
	return any;
}

/* A free entry for a new process; when the pool is full, the process
 * idle the longest (of another user) is retired for it.  Never NULL:
 * there are as many entries as batches, and this batch has none. */
static struct dproc *
proc_entry(void)
{
	struct dproc *oldest = NULL;

	for (size_t i = 0; i < s.nslots; i++) {
		struct dproc *p = &s.procs[i];

		if (!p->used)
			return p;
		if (p->batch == NULL && (oldest == NULL ||
		    p->idle_since_ms < oldest->idle_since_ms))
			oldest = p;
	}
	if (oldest == NULL)
		fatalx("scheduler: no room for a delivery process");
	proc_release(oldest);
	return oldest;
}

static void
attach(struct child *c, struct dproc *p)
{
	c->proc = p;
	c->started = true;
	p->batch = c;
	free(p->last_dest);
	p->last_dest = xstrdup(c->dest_key);
	c->deadline_ms = monotonic_ms() +
	    (uint64_t)DELIVERY_JOB_TIMEOUT * 1000 * c->njobs;
}

/* A new process for the batch, through the spawner. */
static int
start_proc(struct child *c, const int *fds, int nfds)
{
	struct dproc *p;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("socketpair: %s", strerror(errno));
		return -1;
	}
	p = proc_entry();
	if (spawn_request(c, p, fds, nfds, sv[1]) < 0) {
		/* A request cut short leaves the spawner with descriptors
		 * that do not add up: it refuses it, and we never hear of
		 * this process again but by its channel's end. */
		log_error("asking for a delivery process: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	close(sv[1]);
	p->used = true;
	p->pid = -1;
	p->fd = sv[0];
	p->conf_generation = s.conf_generation;
	p->user = c->user != NULL ? xstrdup(c->user) : NULL;
	fd_set_nonblock(p->fd);
	event_add(s.loop, p->fd, EPOLLIN, on_proc, p);
	attach(c, p);
	log_debug("delivery process requested: %zu job%s for %s", c->njobs,
	    c->njobs == 1 ? "" : "s", c->dest_key);
	return 0;
}

/* The batch to an idle process of its user, else to a new one. */
static void
start_child(struct child *c)
{
	int fds[SPAWN_MAX_FDS], nfds;
	char title[sizeof(((struct spawn_batch *)0)->title)];
	struct dproc *p;

	if (!load_jobs(c)) {
		child_release(c);
		return;
	}
	if ((nfds = batch_fds(c, fds)) < 0) {
		log_error("writing the jobs for a delivery process: %s",
		    strerror(errno));
		child_finished(c, "cannot start a delivery process");
		return;
	}
	snprintf(title, sizeof(title), "delivery %s", c->dest_key);
	while ((p = proc_idle(c)) != NULL) {
		if (spawn_send_batch(p->fd, title, fds, nfds) == 0) {
			attach(c, p);
			break;
		}
		/* It is exiting (or stuck): a new one instead. */
		log_warn("delivery process %ld takes no batch: %s",
		    (long)p->pid, strerror(errno));
		proc_release(p);
	}
	if (p == NULL && start_proc(c, fds, nfds) < 0) {
		close(fds[0]);
		child_finished(c, "cannot start a delivery process");
		return;
	}
	close(fds[0]);
	/* The delivery process has them; the content stays in the queue. */
	close_contents(c);
}

static void
kill_child(struct child *c)
{
	struct ipc_spawned k;

	if (c->proc == NULL || c->proc->pid <= 0)
		return;
	k = (struct ipc_spawned){ .pid = (int32_t)c->proc->pid };
	if (spawner_send(IPC_SPAWN_KILL, &k, sizeof(k), -1) < 0)
		log_warn("asking the spawner to kill %ld: %s",
		    (long)c->proc->pid, strerror(errno));
}

/* The spawner answered a request: the pid, or a failure (whose channel
 * has ended too: the recipients are deferred then). */
static void
on_spawner(void *arg, int fd, uint32_t events)
{
	struct ipc_spawned res;
	enum ipc_type type;
	int pfd, r;

	(void)arg;
	(void)fd;
	(void)events;
	while ((r = ipc_recv(s.spawner_fd, &type, &res, sizeof(res), &pfd)) > 0) {
		if (pfd >= 0)
			close(pfd);
		if (type != IPC_SPAWNED)
			fatalx("unexpected message %d from the spawner", type);
		for (size_t i = 0; i < s.nslots; i++) {
			struct dproc *p = &s.procs[i];

			if (!p->used || p->request != res.request)
				continue;
			if (res.pid > 0) {
				p->pid = (pid_t)res.pid;
				log_debug("delivery process %ld for %s",
				    (long)p->pid, p->last_dest);
				if (p->batch != NULL &&
				    monotonic_ms() > p->batch->deadline_ms)
					kill_child(p->batch);
			}
			break;
		}
	}
	if (r == 0) {
		/* The master stops us when the spawner dies. */
		log_warn("the delivery spawner has gone");
		event_del(s.loop, s.spawner_fd);
		close(s.spawner_fd);
		s.spawner_fd = -1;
	}
}

/* Idle processes retire after SCHED_PROC_IDLE_MS. */
static void
retire_idle(uint64_t now)
{
	for (size_t i = 0; i < s.nslots; i++) {
		struct dproc *p = &s.procs[i];

		if (p->used && p->batch == NULL &&
		    now - p->idle_since_ms >= SCHED_PROC_IDLE_MS)
			proc_release(p);
	}
}

static void
kill_overdue(uint64_t now)
{
	size_t i;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (c->used && c->started && c->proc != NULL &&
		    c->proc->pid > 0 && now > c->deadline_ms) {
			log_warn("delivery process %ld (%s) ran too long;"
			    " killing it", (long)c->proc->pid, c->dest_key);
			kill_child(c);
		}
	}
}

/* ---- dispatch: due rows -> jobs -> children ---- */

static bool
is_relay(const char *action)
{
	return strcmp(action, "relay") == 0;
}

/* A job of this pass for the same message and key, in a child that is
 * not started yet. */
static struct sjob *
find_job(const struct queue_due *row, const char *job_key)
{
	size_t i, k;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (!c->used || c->started)
			continue;
		for (k = 0; k < c->njobs; k++) {
			struct sjob *j = c->jobs[k];

			if (strcmp(j->queue_id, row->msgid) == 0 &&
			    strcmp(j->job_key, job_key) == 0 &&
			    strcmp(j->action, row->action) == 0 &&
			    (is_relay(row->action) ||
			    (strcmp(j->params, row->params) == 0 &&
			    /* settings kept out of the queue (a webhook's
			     * secret) are the route's: never mix routes */
			    strcmp(j->route, row->route != NULL ?
			    row->route : "") == 0)))
				return j;
		}
	}
	return NULL;
}

/*
 * A child of this pass that can take one more job for dest_key.  Relay
 * jobs share its connection; local jobs share the fork, which costs more
 * than a discard or a maildir delivery (measured: one fork per message
 * held acceptance to a quarter of its rate).
 */
static struct child *
find_child(const char *dest_key, const char *user)
{
	size_t i;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (c->used && !c->started && c->njobs < SCHED_JOBS_PER_CHILD &&
		    strcmp(c->dest_key, dest_key) == 0 &&
		    (c->user == NULL ? user == NULL :
		    user != NULL && strcmp(c->user, user) == 0))
			return c;
	}
	return NULL;
}

/* The user a route's parameters name (pipe, maildir: user=), or NULL. */
static char *
params_user(const char *params)
{
	struct json_value *v;
	const char *u;
	char err[64], *user = NULL;

	if (params == NULL || strstr(params, "\"user\"") == NULL ||
	    (v = json_parse(params, strlen(params), err, sizeof(err))) == NULL)
		return NULL;
	if (v->type == JSON_OBJECT && (u = json_get_string(v, "user")) != NULL)
		user = xstrdup(u);
	json_free(v);
	return user;
}

static struct sjob *
new_job(const struct queue_due *row, const char *job_key)
{
	struct sjob *j = xcalloc(1, sizeof(*j));

	j->queue_id = xstrdup(row->msgid);
	j->sender = xstrdup(row->sender != NULL ? row->sender : "");
	j->route = xstrdup(row->route != NULL ? row->route : "");
	j->action = xstrdup(row->action);
	j->params = xstrdup(row->params != NULL ? row->params : "{}");
	j->job_key = xstrdup(job_key);
	j->received_at = row->received_at;
	return j;
}

/* now: the claim's time, the attempt's beginning (last_attempt_at). */
static void
job_add_rcpt(struct sjob *j, const struct queue_due *row, int64_t now)
{
	struct srcpt *rc;

	j->rcpts = xrealloc(j->rcpts, (j->nrcpts + 1) * sizeof(*j->rcpts));
	rc = &j->rcpts[j->nrcpts++];
	memset(rc, 0, sizeof(*rc));
	rc->id = row->id;
	rc->address = xstrdup(row->address);
	rc->attempts = row->attempts + 1;
	rc->attempt_at = now;
	rc->prev_attempt_at = row->last_attempt_at;
	rc->dsn_notify = row->dsn_notify;
	rc->dsn_orcpt = row->dsn_orcpt != NULL ? xstrdup(row->dsn_orcpt) :
	    NULL;
}

/* Claim the row (queued/deferred -> delivering) in the open transaction;
 * false when somebody (mxgatectl) changed it since we read it. */
static bool
claim(const struct queue_due *row, const char *dest_key, int64_t now)
{
	if (queue_db_claim(s.db, row->id, now) != 1)
		return false;
	buf_reset(&s.detail);
	buf_appendf(&s.detail, "attempt=%u dest=%s", row->attempts + 1,
	    dest_key);
	add_event(row->msgid, row->id, now, "attempt", s.detail.data);
	return true;
}

/* Place one due row: false when no child may take it now. */
static bool
place(const struct queue_due *row, int64_t now)
{
	char job_key[RETRY_KEY_MAX], dest_key[RETRY_KEY_MAX];
	struct child *c;
	struct sjob *j;
	char *user;

	retry_keys(row->action, row->params, row->address, job_key, dest_key);
	if ((j = find_job(row, job_key)) != NULL) {
		if (!claim(row, dest_key, now))
			return true;
		job_add_rcpt(j, row, now);
		return true;
	}
	user = is_relay(row->action) ? NULL : params_user(row->params);
	c = find_child(dest_key, user);
	if (c == NULL) {
		if (s.nrunning >= s.limit ||
		    dest_running(dest_key) >=
		    s.conf->concurrency_per_destination ||
		    (c = child_slot()) == NULL || !claim(row, dest_key, now)) {
			free(user);
			return c == NULL ? false : true;
		}
		c->used = true;
		c->dest_key = xstrdup(dest_key);
		c->user = user;
		s.nrunning++;
	} else {
		free(user);
		if (!claim(row, dest_key, now))
			return true;
	}
	j = new_job(row, job_key);
	job_add_rcpt(j, row, now);
	c->jobs = xrealloc(c->jobs, (c->njobs + 1) * sizeof(*c->jobs));
	c->jobs[c->njobs++] = j;
	return true;
}

static bool
any_pending_child(void)
{
	size_t i;

	for (i = 0; i < s.nslots; i++)
		if (s.children[i].used && !s.children[i].started)
			return true;
	return false;
}

/*
 * Read due rows of one state a page at a time and place them, while
 * slots are free.  A claimed row leaves the state being read, so the
 * OFFSET of the next page counts only the rows left behind.
 */
static void
dispatch_state(enum queue_due_state which, int64_t now)
{
	static struct queue_due rows[SCHED_PAGE];
	int64_t skipped = 0;
	int page, i, nrows;

	for (page = 0; page < SCHED_MAX_PAGES; page++) {
		if (s.nrunning >= s.limit && !any_pending_child())
			return;
		/* Copies: the statement is done before any row is claimed
		 * (updated). */
		if ((nrows = queue_db_due(s.db, which, now, skipped, rows,
		    SCHED_PAGE)) < 0)
			return;
		for (i = 0; i < nrows; i++) {
			/* A claim failed for want of space: the transaction
			 * will roll back, claim no more. */
			if (queue_db_txn_broken(s.db)) {
				queue_db_due_free(&rows[i]);
				continue;
			}
			if (rows[i].msgid != NULL && rows[i].address != NULL &&
			    rows[i].action != NULL && !place(&rows[i], now))
				skipped++;
			queue_db_due_free(&rows[i]);
		}
		if (nrows < SCHED_PAGE || queue_db_txn_broken(s.db))
			return;
	}
}

/* Children placed but holding no job (every claim lost) are dropped. */
static void
drop_empty_children(void)
{
	size_t i;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (c->used && !c->started && c->njobs == 0)
			child_release(c);
	}
}

static void
dispatch(int64_t now)
{
	dispatch_state(QUEUE_DUE_QUEUED, now);
	dispatch_state(QUEUE_DUE_DEFERRED, now);
	drop_empty_children();
}

/* ---- recording outcomes ---- */

struct outcome {
	struct srcpt *rc;
	const char   *kind;             /* event kind */
	int64_t       next_at;          /* deferred */
	bool          expired, warn, dsn_failed;
};

static void
fmt_utc(char *out, size_t size, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* "host" of "host[addr]:port" (or "addr" of "[addr]:port"), for
 * Remote-MTA; an LMTP destination "inet:host:port" gives "host" and
 * "unix:/path" nothing (no DNS name to report). */
static void
remote_host(const char *dest, char *out, size_t size)
{
	size_t n;

	if (strncmp(dest, "unix:", 5) == 0) {
		out[0] = '\0';
		return;
	}
	if (strncmp(dest, "inet:", 5) == 0) {
		dest += 5;
		n = dest[0] == '[' ? strcspn(++dest, "]") : strcspn(dest, ":");
		snprintf(out, size, "%.*s", (int)n, dest);
		return;
	}
	n = strcspn(dest, "[");

	if (n == 0 && dest[0] == '[') {
		dest++;
		n = strcspn(dest, "]");
	}
	snprintf(out, size, "%.*s", (int)n, dest);
}

static int
update_final(struct srcpt *rc, const char *state, const char *dest,
    int64_t now)
{
	return queue_db_set_final(s.db, rc->id, state, rc->reply,
	    dest[0] != '\0' ? dest : NULL, now);
}

static int
update_defer(struct srcpt *rc, const char *dest, int64_t next_at,
    int64_t now)
{
	return queue_db_set_deferred(s.db, rc->id, rc->reply,
	    dest[0] != '\0' ? dest : NULL, next_at, now);
}

/* The original's header block, for a DSN. */
static char *
original_headers(const char *msgid, size_t *len)
{
	size_t n;
	char *p = queue_db_content_head(s.db, msgid, SCHED_HEADERS_MAX, &n);

	*len = 0;
	if (p == NULL)
		return xstrdup("");
	*len = bounce_header_len(p, n);
	p[*len] = '\0';
	return p;
}

/* Does this outcome call for a DSN of this kind, by its NOTIFY
 * (RFC 3461 4.1)?  A success is ours to report only when the upstream did
 * not take the request along (relay to a server without DSN: "relayed")
 * or the message ended here (a local handler, or an LMTP server without
 * DSN: "delivered"); a relay or LMTP server that offered DSN was passed
 * NOTIFY and reports success itself (RFC 3461 4.1). */
static bool
dsn_wanted(const struct sjob *j, const struct outcome *o,
    enum bounce_kind kind)
{
	const struct srcpt *rc = o->rc;

	if (o->kind == NULL)
		return false;
	switch (kind) {
	case BOUNCE_DELAYED:
		return o->warn && dsn_wants_delay(rc->dsn_notify);
	case BOUNCE_SUCCESS:
		return strcmp(o->kind, "delivered") == 0 &&
		    dsn_wants_success(rc->dsn_notify) &&
		    !rc->dsn_passed;
	case BOUNCE_FAILED:
		break;
	}
	return (strcmp(o->kind, "bounced") == 0 ||
	    strcmp(o->kind, "expired") == 0) &&
	    dsn_wants_failure(rc->dsn_notify);
}

/* The original for a DSN: its header block, and with RET=FULL, for a
 * failure, the whole of it (*content, else NULL). */
static char *
original_for_dsn(const struct sjob *j, enum bounce_kind kind,
    size_t *headers_len, char **content, size_t *content_len)
{
	*content = NULL;
	*content_len = 0;
	if (kind == BOUNCE_FAILED && j->msg.dsn_ret == DSN_RET_FULL)
		*content = queue_db_content_head(s.db, j->queue_id,
		    j->msg.content_len, content_len);
	return original_headers(j->queue_id, headers_len);
}

/*
 * Queue one DSN for the outcomes of a job that match kind (failed,
 * delayed, success) and whose NOTIFY asks for it.  new_id empty when
 * none was queued.
 */
static void
queue_dsn(const struct sjob *j, struct outcome *o, size_t n,
    enum bounce_kind kind, int64_t now, char new_id[QUEUE_ID_LEN + 1])
{
	struct bounce_rcpt *br;
	struct bounce_report r;
	char remote[DELIVERY_DEST_MAX];
	size_t i, nb = 0;
	char *headers, *content;
	int rc;

	new_id[0] = '\0';
	br = xcalloc(n, sizeof(*br));
	remote_host(j->destination, remote, sizeof(remote));
	for (i = 0; i < n; i++) {
		if (!dsn_wanted(j, &o[i], kind))
			continue;
		br[nb].address = o[i].rc->address;
		br[nb].reply = o[i].rc->reply[0] != '\0' ? o[i].rc->reply : NULL;
		br[nb].remote_mta = o[i].rc->remote && remote[0] != '\0' ?
		    remote : NULL;
		br[nb].smtp_reply = o[i].rc->remote;
		br[nb].last_attempt_at = now;
		br[nb].expired = o[i].expired;
		br[nb].relayed = is_relay(j->action);
		br[nb].orcpt = o[i].rc->dsn_orcpt;
		nb++;
	}
	if (nb == 0) {
		free(br);
		return;
	}
	if (j->sender[0] == '\0') {
		log_info("id=%s no %s DSN: the sender is <> (a bounce is never"
		    " bounced)", j->queue_id, kind == BOUNCE_DELAYED ?
		    "delay" : kind == BOUNCE_SUCCESS ? "success" : "failure");
		free(br);
		return;
	}
	memset(&r, 0, sizeof(r));
	headers = original_for_dsn(j, kind, &r.headers_len, &content,
	    &r.content_len);
	r.kind = kind;
	r.queue_id = j->queue_id;
	r.sender = j->sender;
	r.received_at = j->received_at;
	r.reporting_mta = s.conf->hostname;
	r.headers = headers;
	r.content = content;
	r.envid = j->msg.dsn_envid;
	r.retry_until = j->received_at + s.policy.max_queue_time;
	r.rcpts = br;
	r.nrcpts = nb;
	rc = bounce_queue(s.db, &r, s.conf->bounce_upstream, now, new_id);
	if (rc != 0)
		new_id[0] = '\0';
	if (rc < 0)
		log_error("id=%s could not queue a DSN", j->queue_id);
	free(content);
	free(headers);
	free(br);
}

static void
decide(const struct sjob *j, struct outcome *o, int64_t now)
{
	struct srcpt *rc = o->rc;
	const char *dest = j->destination;

	switch (rc->status) {
	case DELIVERY_OK:
		o->kind = update_final(rc, "delivered", dest, now) == 0 ?
		    "delivered" : NULL;
		return;
	case DELIVERY_FAIL:
		o->kind = update_final(rc, "bounced", dest, now) == 0 ?
		    "bounced" : NULL;
		return;
	}
	o->expired = retry_plan(&s.policy, j->received_at, rc->attempts,
	    rc->prev_attempt_at, rc->attempt_at, now, &o->next_at, &o->warn);
	if (o->expired)
		o->kind = update_final(rc, "bounced", dest, now) == 0 ?
		    "expired" : NULL;
	else
		o->kind = update_defer(rc, dest, o->next_at, now) == 0 ?
		    "deferred" : NULL;
	if (o->kind == NULL)
		o->warn = false;
}

/* Seconds since the message's transaction began (MAIL, as Postfix's
 * delay): the queue id holds that time to the microsecond; received_at,
 * the commit's, only to the second. */
static double
since_received(const struct sjob *j)
{
	struct timespec ts;
	uint64_t began = queue_id_time_us(j->queue_id, j->received_at);

	clock_gettime(CLOCK_REALTIME, &ts);
	if (began != 0)
		return ((double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3 -
		    (double)began) / 1e6;
	return (double)(ts.tv_sec - j->received_at) +
	    (double)ts.tv_nsec / 1e9;
}

/*
 * One line per recipient outcome, keyed by the queue id (README
 * "Logs"): delay is the whole time since reception, delays its parts:
 * waiting in the queue (attempts before this one included), connecting,
 * and this attempt's transaction.
 */
static void
log_outcome(const struct sjob *j, const struct outcome *o, const char *dsn)
{
	double delay = since_received(j);
	double conn = o->rc->connect_ms / 1000.0, xfer = o->rc->transfer_ms /
	    1000.0, waited = delay - conn - xfer;
	struct log_rec r;
	char delays[64];

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	snprintf(delays, sizeof(delays), "%.3f/%.3f/%.3f",
	    waited > 0 ? waited : 0.0, conn, xfer);
	log_rec_begin(&r);
	log_rec_str(&r, "id", j->queue_id);
	log_rec_str(&r, "event", "delivery");
	log_rec_path(&r, "to", o->rc->address);
	log_rec_str(&r, "status", o->kind);
	log_rec_str(&r, "action", j->action);
	log_rec_str(&r, "route", j->route);
	log_rec_str(&r, "relay", j->destination[0] != '\0' ?
	    j->destination : NULL);
	log_rec_secs(&r, "delay", delay);
	log_rec_str(&r, "delays", delays);
	log_rec_num(&r, "attempts", o->rc->attempts);
	log_rec_reply(&r, o->rc->reply);
	if ((strcmp(o->kind, "bounced") == 0 ||
	    strcmp(o->kind, "expired") == 0) && dsn[0] != '\0')
		log_rec_str(&r, "bounce", dsn);
	/* Logged once committed (txn_commit()): a transaction that fails
	 * is redone, and logs its outcomes then. */
	log_rec_take(&r, &s.outcome_log);
	buf_append(&s.outcome_log, "\n", 1);
}

static void
count_outcome(const struct sjob *j, const struct outcome *o)
{
	enum metrics_outcome mo = strcmp(o->kind, "delivered") == 0 ?
	    MO_DELIVERED : strcmp(o->kind, "deferred") == 0 ? MO_DEFERRED :
	    strcmp(o->kind, "expired") == 0 ? MO_EXPIRED : MO_BOUNCED;

	struct pending_count pc;

	if (!metrics_enabled())
		return;
	/* Counted once committed, as the lines are logged. */
	memset(&pc, 0, sizeof(pc));
	strlcpy_mx(pc.dest, j->destination, sizeof(pc.dest));
	pc.outcome = mo;
	if (mo == MO_DELIVERED)
		pc.latency_us = (uint64_t)(since_received(j) * 1e6);
	buf_append(&s.outcome_counts, &pc, sizeof(pc));
}

static void
write_history(const struct sjob *j, const struct outcome *o,
    const char *dsn, const char *warning, const char *success, int64_t now)
{
	char when[32], notify[DSN_NOTIFY_TEXT_MAX];

	buf_reset(&s.detail);
	buf_appendf(&s.detail, "attempt=%u", o->rc->attempts);
	if (j->destination[0] != '\0')
		buf_appendf(&s.detail, " dest=%s", j->destination);
	buf_appendf(&s.detail, " reply=%s", o->rc->reply);
	if (strcmp(o->kind, "deferred") == 0) {
		fmt_utc(when, sizeof(when), o->next_at);
		buf_appendf(&s.detail, " next=%s", when);
		if (o->warn && warning[0] != '\0' &&
		    dsn_wanted(j, o, BOUNCE_DELAYED))
			buf_appendf(&s.detail, " delay_warning=%s", warning);
	} else if (strcmp(o->kind, "bounced") == 0 ||
	    strcmp(o->kind, "expired") == 0) {
		buf_appendf(&s.detail, " dsn=%s",
		    dsn[0] != '\0' && dsn_wanted(j, o, BOUNCE_FAILED) ? dsn :
		    "none");
	} else if (success[0] != '\0' && dsn_wanted(j, o, BOUNCE_SUCCESS)) {
		buf_appendf(&s.detail, " dsn=%s", success);
	}
	if (o->rc->dsn_notify != 0)
		buf_appendf(&s.detail, " notify=%s",
		    dsn_notify_format(o->rc->dsn_notify, notify));
	add_event(j->queue_id, o->rc->id, now, o->kind, s.detail.data);
	log_outcome(j, o, dsn);
	count_outcome(j, o);
}

/* The outcome lines and counts of the transaction that just committed. */
static void
outcome_log_flush(void)
{
	char *p = s.outcome_log.data, *nl;
	struct pending_count *pc = (struct pending_count *)(void *)
	    s.outcome_counts.data;
	size_t i, n = s.outcome_counts.len / sizeof(*pc);

	for (; p != NULL && *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			break;
		log_fields_emit(LOG_LEVEL_INFO, p, (size_t)(nl - p));
	}
	buf_reset(&s.outcome_log);
	for (i = 0; i < n; i++) {
		metrics_delivery(pc[i].dest, pc[i].outcome);
		if (pc[i].outcome == MO_DELIVERED)
			metrics_observe(MH_DELIVERY, pc[i].latency_us);
	}
	buf_reset(&s.outcome_counts);
}

/* Every recipient final: the message (or its content) goes. */
static void
retire_if_final(const char *msgid)
{
	if (queue_db_retire_if_final(s.db, msgid,
	    s.conf->keep_delivered != 0) == 1)
		log_debug("id=%s done: %s", msgid, s.conf->keep_delivered == 0 ?
		    "removed" : "content removed");
}

static void
record_job(struct sjob *j, int64_t now)
{
	char dsn[QUEUE_ID_LEN + 1], warning[QUEUE_ID_LEN + 1];
	char success[QUEUE_ID_LEN + 1];
	struct outcome *o;
	size_t i;

	o = xcalloc(j->nrcpts, sizeof(*o));
	for (i = 0; i < j->nrcpts; i++) {
		o[i].rc = &j->rcpts[i];
		decide(j, &o[i], now);
	}
	queue_dsn(j, o, j->nrcpts, BOUNCE_FAILED, now, dsn);
	queue_dsn(j, o, j->nrcpts, BOUNCE_DELAYED, now, warning);
	queue_dsn(j, o, j->nrcpts, BOUNCE_SUCCESS, now, success);
	for (i = 0; i < j->nrcpts; i++)
		if (o[i].kind != NULL)
			write_history(j, &o[i], dsn, warning, success, now);
	retire_if_final(j->queue_id);
	free(o);
}

/* The outcomes are freed only once their transaction has committed
 * (completed_done()): a transaction that fails (a full disk) is redone
 * from them at the next turn. */
static void
record_completed(int64_t now)
{
	size_t i;

	for (i = 0; i < s.ncompleted && !queue_db_txn_broken(s.db); i++)
		record_job(s.completed[i], now);
}

static void
completed_done(void)
{
	size_t i;

	for (i = 0; i < s.ncompleted; i++)
		job_free(s.completed[i]);
	s.ncompleted = 0;
}

static void
purge(int64_t now)
{
	int n;

	if (s.conf->keep_delivered != 0) {
		n = queue_db_purge(s.db, now - (int64_t)s.conf->keep_delivered);
		if (n > 0)
			log_info("purged %d messages older than keep_delivered",
			    n);
	}
	/* What left the queue is history (schema version 3), kept for
	 * queue.keep_history. */
	n = queue_db_purge_history(s.db, now - (int64_t)s.conf->keep_history);
	if (n > 0)
		log_debug("forgot the history of %d messages older than"
		    " keep_history", n);
	/* TLS-RPT counts, for mxgatectl tls-report: the days reports may
	 * still be made of. */
	n = queue_db_tls_purge(s.db, now - (int64_t)s.conf->keep_tls_results);
	if (n > 0)
		log_info("purged %d TLS result rows of days before"
		    " keep_tls_results", n);
	n = queue_db_sts_purge(s.db, now);
	if (n > 0)
		log_info("purged %d expired MTA-STS policies", n);
}

/* ---- transactions ---- */

static int
txn_begin(void)
{
	return queue_db_txn_begin(s.db);
}

/* Children placed in this transaction but not started: their claims are
 * rolled back with it, so they go; the rows are due again as they were. */
static void
unplace_children(void)
{
	for (size_t i = 0; i < s.nslots; i++)
		if (s.children[i].used && !s.children[i].started)
			child_release(&s.children[i]);
}

/*
 * Commit the scheduler's transaction: 0, or -1 when it could not be
 * written for want of space (or an I/O error: the queue file system is
 * in trouble either way).  Then nothing of it is in the queue: the
 * outcomes stay in memory and are recorded again at the next turn, the
 * claims are undone; deliveries that run go on (they free space), and
 * acceptance is the group commit's business.  At worst an outcome is
 * recorded late, never lost: delivery stays at least once.
 */
static int
txn_commit(void)
{
	if (queue_db_txn_commit(s.db) == 0) {
		outcome_log_flush();
		completed_done();
		if (s.full_since_ms != 0) {
			log_info("scheduler: the queue takes writes again:"
			    " outcomes recorded");
			s.full_since_ms = 0;
		}
		return 0;
	}
	unplace_children();
	buf_reset(&s.outcome_log);
	buf_reset(&s.outcome_counts);
	/* Anything but a full disk: stop, the master restarts us, and what
	 * was "delivering" is retried. */
	if (!queue_db_out_of_space(s.db))
		fatalx("scheduler: commit failed; exiting");
	if (s.full_since_ms == 0) {
		s.full_since_ms = monotonic_ms();
		log_error("scheduler: cannot write to the queue (file system"
		    " full?): %zu outcomes kept and recorded once there is"
		    " room; deliveries go on", s.ncompleted);
	}
	return -1;
}

/* What a stopped queue process left "delivering" is due again; on a
 * full disk, tried again at each turn until it is written. */
static void
requeue_interrupted(void)
{
	int n = queue_db_requeue_interrupted(s.db, now_s());

	if (n < 0 && !queue_db_out_of_space(s.db))
		fatalx("scheduler: cannot requeue interrupted deliveries");
	s.requeue_pending = n < 0;
	if (n > 0)
		log_info("%d interrupted deliveries are due again", n);
}

/* ---- the interface ---- */

void
scheduler_init(const struct mxconf *conf, struct queue_db *db,
    struct event_loop *loop, int spawner_fd)
{
	memset(&s, 0, sizeof(s));
	s.conf = conf;
	s.db = db;
	s.loop = loop;
	s.policy.schedule = conf->retry_schedule;
	s.policy.nschedule = conf->nretry_schedule;
	s.policy.max_queue_time = conf->max_queue_time;
	s.policy.delay_warning = conf->delay_warning;
	s.nslots = s.limit = conf->concurrency;
	s.spawner_fd = spawner_fd;
	s.children = xcalloc(s.nslots, sizeof(*s.children));
	s.procs = xcalloc(s.nslots, sizeof(*s.procs));
	for (size_t k = 0; k < s.nslots; k++)
		s.procs[k].fd = -1;
	buf_init(&s.detail);
	buf_init(&s.outcome_log);
	buf_init(&s.outcome_counts);
	if (queue_db_delivery_init(db) < 0)
		fatalx("scheduler: cannot prepare its statements");
	requeue_interrupted();
	s.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK |
	    TFD_CLOEXEC);
	if (s.timerfd < 0)
		fatal("timerfd_create");
	event_add(loop, s.timerfd, EPOLLIN, on_timer, NULL);
	if (s.spawner_fd >= 0)
		event_add(loop, s.spawner_fd, EPOLLIN, on_spawner, NULL);
	s.kick = true;
	s.next_tick_ms = monotonic_ms();
	s.next_purge_ms = s.next_tick_ms;
	timer_arm(s.next_tick_ms);
}

/*
 * More batches at once than ever before: both arrays grow.  A batch and
 * its process point at each other, and a process's channel is watched
 * with its address: all three are set again at the new places.
 */
static void
slots_grow(size_t n)
{
	size_t old = s.nslots;
	size_t *batch_of = xcalloc(old, sizeof(size_t));
	size_t *proc_of = xcalloc(old, sizeof(size_t));

	for (size_t i = 0; i < old; i++) {
		struct dproc *p = &s.procs[i];

		if (p->batch != NULL)
			batch_of[i] = (size_t)(p->batch - s.children) + 1;
		if (s.children[i].proc != NULL)
			proc_of[i] = (size_t)(s.children[i].proc - s.procs) + 1;
		if (p->used && p->fd >= 0)
			event_del(s.loop, p->fd);
	}
	s.children = xrealloc(s.children, n * sizeof(*s.children));
	s.procs = xrealloc(s.procs, n * sizeof(*s.procs));
	memset(s.children + old, 0, (n - old) * sizeof(*s.children));
	memset(s.procs + old, 0, (n - old) * sizeof(*s.procs));
	for (size_t k = old; k < n; k++)
		s.procs[k].fd = -1;
	for (size_t i = 0; i < old; i++) {
		struct dproc *p = &s.procs[i];

		p->batch = batch_of[i] ? &s.children[batch_of[i] - 1] : NULL;
		s.children[i].proc = proc_of[i] ? &s.procs[proc_of[i] - 1] :
		    NULL;
		if (p->used && p->fd >= 0)
			event_add(s.loop, p->fd, EPOLLIN, on_proc, p);
	}
	s.nslots = n;
	free(batch_of);
	free(proc_of);
}

void
scheduler_reconfigure(const struct mxconf *conf, int config_fd)
{
	s.conf = conf;
	s.policy.schedule = conf->retry_schedule;
	s.policy.nschedule = conf->nretry_schedule;
	s.policy.max_queue_time = conf->max_queue_time;
	s.policy.delay_warning = conf->delay_warning;
	if (conf->concurrency > s.nslots)
		slots_grow(conf->concurrency);
	/* Fewer: the running batches end as they would, no new one starts
	 * until they are under the limit. */
	s.limit = conf->concurrency;
	/* Between two requests (each goes whole): the spawner's next
	 * delivery process has the new routes, upstreams and timeouts. */
	if (s.spawner_fd >= 0 && config_fd >= 0 &&
	    spawner_send(IPC_CONFIG, NULL, 0, config_fd) < 0)
		log_error("reload: cannot pass the configuration to the"
		    " spawner: %s", strerror(errno));
	/* The pool's processes have the old one: the idle ones go now,
	 * the busy ones after their batch (batch_done). */
	s.conf_generation++;
	for (size_t i = 0; i < s.nslots; i++) {
		struct dproc *p = &s.procs[i];

		if (p->used && p->batch == NULL)
			proc_release(p);
	}
	s.kick = true;
}

static void
on_timer(void *arg, int fd, uint32_t events)
{
	uint64_t expirations;

	while (read(s.timerfd, &expirations, sizeof(expirations)) > 0)
		;
	s.timer_at_ms = 0;
}

static void
on_proc(void *arg, int fd, uint32_t events)
{
	struct dproc *p = arg;

	if (p->used && p->fd >= 0)
		read_reports(p);
}

void
scheduler_run(bool new_messages)
{
	uint64_t now_ms = monotonic_ms();
	bool tick, want_dispatch;
	int64_t now;

	if (s.stopping)
		return;
	if (new_messages)
		s.kick = true;
	tick = now_ms >= s.next_tick_ms;
	want_dispatch = !s.conf->delivery_paused && s.nrunning < s.limit &&
	    (s.kick || tick);
	if (s.ncompleted == 0 && !want_dispatch && !tick) {
		timer_arm(s.next_tick_ms);
		return;
	}
	/* Bound the scheduler's share of the database; while the disk is
	 * full, try a few times a second. */
	if (now_ms < s.last_txn_ms + SCHEDULER_MIN_INTERVAL_MS ||
	    now_ms < s.full_retry_ms) {
		timer_arm(s.full_retry_ms > s.last_txn_ms +
		    SCHEDULER_MIN_INTERVAL_MS ? s.full_retry_ms :
		    s.last_txn_ms + SCHEDULER_MIN_INTERVAL_MS);
		return;
	}
	now = now_s();
	if (s.requeue_pending)
		requeue_interrupted();
	if (txn_begin() < 0) {
		/* Busy (mxgatectl holds the lock): next time. */
		s.last_txn_ms = now_ms;
		timer_arm(now_ms + SCHED_TICK_MS / 4);
		return;
	}
	record_completed(now);
	if (now_ms >= s.next_purge_ms && !queue_db_txn_broken(s.db)) {
		purge(now);
		s.next_purge_ms = now_ms + SCHED_PURGE_MS;
	}
	if (want_dispatch && !queue_db_txn_broken(s.db)) {
		s.kick = false;
		dispatch(now);
	}
	if (txn_commit() < 0) {
		/* Full: again soon, so that outcomes are written (and mail
		 * is dispatched) within a second of space coming back. */
		s.last_txn_ms = now_ms;
		s.kick = true;
		s.full_retry_ms = now_ms + SCHED_FULL_RETRY_MS;
		timer_arm(s.full_retry_ms);
		return;
	}
	for (size_t i = 0; i < s.nslots; i++)
		if (s.children[i].used && !s.children[i].started)
			start_child(&s.children[i]);
	s.last_txn_ms = now_ms;
	if (tick) {
		s.next_tick_ms = now_ms + SCHED_TICK_MS;
		kill_overdue(now_ms);
		retire_idle(now_ms);
	}
	/* Work left over (a finished child, new messages) comes back soon;
	 * otherwise the next tick. */
	timer_arm(s.kick || s.ncompleted > 0 ?
	    now_ms + SCHEDULER_MIN_INTERVAL_MS : s.next_tick_ms);
}

static size_t
running_children(void)
{
	size_t i, n = 0;

	for (i = 0; i < s.nslots; i++)
		if (s.children[i].used && s.children[i].started)
			n++;
	return n;
}

/* Wait for the children's reports, until deadline_ms or they are all
 * gone. */
static void
drain(uint64_t deadline_ms)
{
	struct pollfd pfd[256];
	struct dproc *who[256];
	uint64_t now;
	size_t i;
	int n, r;

	while (running_children() > 0 && (now = monotonic_ms()) < deadline_ms) {
		n = 0;
		for (i = 0; i < s.nslots && n < (int)ARRAY_LEN(pfd); i++) {
			if (!s.procs[i].used || s.procs[i].batch == NULL)
				continue;
			pfd[n].fd = s.procs[i].fd;
			pfd[n].events = POLLIN;
			who[n++] = &s.procs[i];
		}
		r = poll(pfd, (nfds_t)n, (int)(deadline_ms - now));
		if (r < 0 && errno != EINTR)
			break;
		for (i = 0; r > 0 && i < (size_t)n; i++)
			if (pfd[i].revents != 0)
				read_reports(who[i]);
	}
}

void
scheduler_stop(unsigned grace_seconds)
{
	size_t i;

	s.stopping = true;
	drain(monotonic_ms() + (uint64_t)grace_seconds * 1000);
	for (i = 0; i < s.nslots; i++)
		if (s.children[i].used && s.children[i].started) {
			/* A pid the spawner has not told yet: wait for it. */
			if (s.children[i].proc->pid < 0 && s.spawner_fd >= 0)
				on_spawner(NULL, s.spawner_fd, EPOLLIN);
			kill_child(&s.children[i]);
		}
	drain(monotonic_ms() + 5000);
	/* The idle ones end with their channel (QUIT to their upstreams). */
	for (i = 0; i < s.nslots; i++)
		if (s.procs[i].used)
			proc_release(&s.procs[i]);
	if (s.ncompleted > 0 && txn_begin() == 0) {
		record_completed(now_s());
		(void)txn_commit();
	}
	/* What is still "delivering" (or recorded nowhere: a full disk) is
	 * retried at the next start. */
	for (i = 0; i < s.ncompleted; i++)
		job_free(s.completed[i]);
	free(s.completed);
	free(s.children);
	free(s.procs);
	buf_free(&s.detail);
	buf_free(&s.outcome_log);
	buf_free(&s.outcome_counts);
	event_del(s.loop, s.timerfd);
	close(s.timerfd);
}
