/*
 * scheduler — see scheduler.h.
 *
 * A job's life: dispatch() reads the due recipients, groups them into
 * jobs and jobs into children, and marks them "delivering" in a
 * transaction; after its commit, start_child() copies each job's message
 * into a sealed memfd, writes the jobs into another (spawner.h), and asks
 * the delivery spawner to start a delivery process for them, as the
 * delivery user, which cannot open the queue.  That process delivers and
 * sends one report per recipient over a SOCK_SEQPACKET pair whose other
 * end stays here.  The queue process collects the reports (read_reports); a job
 * whose recipients all have an outcome is "completed", and the next
 * scheduler transaction records it (record_job): state, history,
 * bounce, retention.  A child that dies leaves its unreported recipients
 * deferred.
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
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <syslog.h>

#include "queue/bounce.h"
#include "common/ipc.h"
#include "common/json.h"
#include "delivery/delivery.h"
#include "delivery/spawner.h"
#include "common/log.h"
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
#define SCHED_SMALL_CONTENT  (256 * 1024)

/* Child -> queue process (spawner.h). */
#define report spawn_report

struct srcpt {
	int64_t  id;
	char    *address;
	unsigned attempts;              /* this one included */
	int64_t  prev_attempt_at;       /* the one before; 0 for none */
	int      status;                /* enum delivery_status */
	bool     remote;                /* see struct delivery_rcpt */
	char     reply[DELIVERY_REPLY_MAX];
};

/* The message of a job, read by the queue process before the fork. */
struct message_row {
	char    *sender, *client_ip, *helo, *protocol, *auth_user;
	int64_t  received_at;
	bool     body_8bitmime, smtputf8;
};

struct sjob {
	char    *queue_id, *sender, *route, *action, *params, *job_key;
	int64_t  received_at;
	struct srcpt *rcpts;
	size_t   nrcpts, nreported;
	char     destination[DELIVERY_DEST_MAX];
	struct message_row msg;
	int      memfd;                 /* the content; -1 when not loaded */
	size_t   content_len;
};

struct child {
	pid_t    pid;                   /* 0 while not started; -1 asked
	                                 * for, the spawner has not said */
	uint64_t request;               /* the spawn request */
	int      fd;                    /* our end of the report channel */
	char    *dest_key;
	char    *user;                  /* a route's user=, NULL: default */
	struct sjob **jobs;             /* NULL once moved to completed */
	size_t   njobs;
	uint64_t deadline_ms;
	bool     used;
};

enum stmt_id {
	ST_DUE_QUEUED,
	ST_DUE_DEFERRED,
	ST_MARK,
	ST_EVENT,
	ST_FINAL,
	ST_DEFER,
	ST_PENDING_COUNT,
	ST_DELETE_MESSAGE,
	ST_DELETE_CONTENT,
	ST_HEADERS,
	ST_PURGE,
	ST_LOAD,
	ST_COUNT
};

#define DUE_SQL(state) \
	"SELECT r.id, r.message_id, r.address, r.route, r.action," \
	" r.action_params, r.attempts, coalesce(r.last_attempt_at, 0)," \
	" m.received_at, m.sender" \
	" FROM recipients r JOIN messages m ON m.id = r.message_id" \
	" WHERE r.state = '" state "' AND r.next_attempt_at <= ?1" \
	" ORDER BY r.next_attempt_at LIMIT ?2 OFFSET ?3"

static const char *const stmt_sql[ST_COUNT] = {
	/* One state at a time: the (state, next_attempt_at) index gives
	 * the rows in order, with no sort of the whole backlog. */
	[ST_DUE_QUEUED] = DUE_SQL("queued"),
	[ST_DUE_DEFERRED] = DUE_SQL("deferred"),
	[ST_MARK] =
	    "UPDATE recipients SET state = 'delivering',"
	    " attempts = attempts + 1, last_attempt_at = ?2, updated_at = ?2"
	    " WHERE id = ?1 AND state IN ('queued', 'deferred')",
	[ST_EVENT] =
	    "INSERT INTO events (message_id, recipient_id, at, kind, detail)"
	    " VALUES (?1, ?2, ?3, ?4, ?5)",
	/* "held" while delivering: the operator's hold does not undo an
	 * outcome that is final anyway. */
	[ST_FINAL] =
	    "UPDATE recipients SET state = ?2, last_reply = ?3,"
	    " destination = ?4, next_attempt_at = NULL, updated_at = ?5"
	    " WHERE id = ?1 AND state IN ('delivering', 'held')",
	[ST_DEFER] =
	    "UPDATE recipients SET state = CASE state WHEN 'held' THEN 'held'"
	    " ELSE 'deferred' END, last_reply = ?2, destination = ?3,"
	    " next_attempt_at = ?4, updated_at = ?5"
	    " WHERE id = ?1 AND state IN ('delivering', 'held')",
	[ST_PENDING_COUNT] =
	    "SELECT count(*) FROM recipients WHERE message_id = ?1"
	    " AND state NOT IN ('delivered', 'bounced')",
	[ST_DELETE_MESSAGE] = "DELETE FROM messages WHERE id = ?1",
	[ST_DELETE_CONTENT] =
	    "DELETE FROM message_contents WHERE message_id = ?1",
	[ST_HEADERS] =
	    "SELECT substr(content, 1, ?2) FROM message_contents"
	    " WHERE message_id = ?1",
	[ST_PURGE] =
	    "DELETE FROM messages WHERE id IN (SELECT message_id FROM"
	    " recipients GROUP BY message_id HAVING"
	    " sum(state NOT IN ('delivered', 'bounced')) = 0"
	    " AND max(updated_at) < ?1)",
	/* A small content comes with the row; a large one is read a piece
	 * at a time (copy_blob). */
	[ST_LOAD] =
	    "SELECT m.sender, m.client_ip, m.helo, m.protocol, m.auth_user,"
	    " m.received_at, m.body_8bitmime, m.smtputf8, c.rowid,"
	    " length(c.content), CASE WHEN length(c.content) <= ?2"
	    " THEN c.content END"
	    " FROM messages m JOIN message_contents c ON c.message_id = m.id"
	    " WHERE m.id = ?1",
};

static struct {
	const struct mxconf *conf;
	struct queue_db *db;
	sqlite3  *h;
	int       epfd;
	uint32_t  ev_kind;
	int       timerfd;
	uint64_t  timer_at_ms;              /* when it is armed for; 0 none */
	struct child *children;         /* conf->concurrency slots */
	size_t    nslots, nrunning;
	struct sjob **completed;        /* outcomes to record */
	size_t    ncompleted, completed_cap;
	sqlite3_stmt *st[ST_COUNT];
	struct retry_policy policy;
	uint64_t  next_tick_ms, last_txn_ms, next_purge_ms;
	bool      kick;                 /* look for due work soon */
	bool      stopping;
	bool      lower_sync;           /* see sync_is_full() */
	struct buf detail;
	int       spawner_fd;           /* the delivery spawner (spawner.h) */
	uint64_t  spawn_seq;
} s;

/* ---- small helpers ---- */

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static void
sql_fail(const char *what)
{
	log_error("scheduler: %s: %s", what, sqlite3_errmsg(s.h));
}

static sqlite3_stmt *
stmt(enum stmt_id id)
{
	sqlite3_reset(s.st[id]);
	sqlite3_clear_bindings(s.st[id]);
	return s.st[id];
}

static void
bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v != NULL)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

/* Run a statement that returns no rows; -1 (logged) on failure. */
static int
step_done(sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		sql_fail(what);
		return -1;
	}
	return 0;
}

static int
exec(const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(s.h, sql, NULL, NULL, &err) != SQLITE_OK) {
		log_error("scheduler: %s: %s", sql, err != NULL ? err :
		    sqlite3_errmsg(s.h));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

static void
add_event(const char *msgid, int64_t rcpt_id, int64_t at, const char *kind,
    const char *detail)
{
	sqlite3_stmt *st = stmt(ST_EVENT);

	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	if (rcpt_id > 0)
		sqlite3_bind_int64(st, 2, rcpt_id);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int64(st, 3, at);
	sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
	bind_text(st, 5, detail);
	step_done(st, "history");
}

static void
message_row_free(struct message_row *m)
{
	free(m->sender);
	free(m->client_ip);
	free(m->helo);
	free(m->protocol);
	free(m->auth_user);
	memset(m, 0, sizeof(*m));
}

static void
job_free(struct sjob *j)
{
	size_t i;

	if (j == NULL)
		return;
	for (i = 0; i < j->nrcpts; i++)
		free(j->rcpts[i].address);
	free(j->rcpts);
	free(j->queue_id);
	free(j->sender);
	free(j->route);
	free(j->action);
	free(j->params);
	free(j->job_key);
	if (j->memfd >= 0)
		close(j->memfd);
	message_row_free(&j->msg);
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

static char *
col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? xstrdup((const char *)t) : NULL;
}

/* A large content, a piece at a time (no second copy in memory). */
static int
copy_blob(int fd, sqlite3_int64 rowid, size_t len)
{
	sqlite3_blob *blob;
	char chunk[65536];
	size_t off = 0, n;

	if (sqlite3_blob_open(s.h, "main", "message_contents", "content",
	    rowid, 0, &blob) != SQLITE_OK)
		return -1;
	while (off < len) {
		n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
		if (sqlite3_blob_read(blob, chunk, (int)n, (int)off) !=
		    SQLITE_OK || fd_write_all(fd, chunk, n) < 0)
			break;
		off += n;
	}
	sqlite3_blob_close(blob);
	return off == len ? 0 : -1;
}

/* The job's message into j->msg and a sealed memfd; -1 when it is gone
 * (deleted by the operator) or unreadable. */
static int
load_message(struct sjob *j)
{
	sqlite3_stmt *st = stmt(ST_LOAD);
	sqlite3_int64 rowid = 0;
	const void *small = NULL;
	int rc, fd = -1, ok = -1;

	sqlite3_bind_text(st, 1, j->queue_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, SCHED_SMALL_CONTENT);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		if (rc != SQLITE_DONE)
			sql_fail("reading a message");
		sqlite3_reset(st);
		return -1;
	}
	j->msg.sender = col_dup(st, 0);
	j->msg.client_ip = col_dup(st, 1);
	j->msg.helo = col_dup(st, 2);
	j->msg.protocol = col_dup(st, 3);
	j->msg.auth_user = col_dup(st, 4);
	j->msg.received_at = sqlite3_column_int64(st, 5);
	j->msg.body_8bitmime = sqlite3_column_int(st, 6) != 0;
	j->msg.smtputf8 = sqlite3_column_int(st, 7) != 0;
	rowid = sqlite3_column_int64(st, 8);
	j->content_len = (size_t)sqlite3_column_int64(st, 9);
	errno = 0;
	fd = memfd_create("mxgate-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0) {
		small = sqlite3_column_blob(st, 10);
		if (j->content_len == 0)
			ok = 0;
		else if (small != NULL)
			ok = fd_write_all(fd, small, j->content_len);
		else
			ok = copy_blob(fd, rowid, j->content_len);
	}
	sqlite3_reset(st);
	/* Sealed: what the handler reads is what we committed. */
	if (ok == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		ok = -1;
	if (ok < 0) {
		log_error("id=%s cannot copy the message for delivery: %s",
		    j->queue_id, errno != 0 ? strerror(errno) :
		    sqlite3_errmsg(s.h));
		if (fd >= 0)
			close(fd);
		message_row_free(&j->msg);
		return -1;
	}
	j->memfd = fd;
	return 0;
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

	if (c->fd >= 0) {
		epoll_ctl(s.epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	for (i = 0; i < c->njobs; i++)
		job_free(c->jobs[i]);
	free(c->jobs);
	free(c->dest_key);
	free(c->user);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
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
		    (long)c->pid);
		return;
	}
	for (i = 0; i < j->nrcpts; i++) {
		struct srcpt *rc = &j->rcpts[i];

		if (rc->id != r->recipient_id || rc->status != DELIVERY_PENDING)
			continue;
		rc->status = r->status == DELIVERY_OK ||
		    r->status == DELIVERY_FAIL ? r->status : DELIVERY_DEFER;
		rc->remote = r->remote != 0;
		memcpy(rc->reply, r->reply, sizeof(rc->reply));
		rc->reply[sizeof(rc->reply) - 1] = '\0';
		memcpy(j->destination, r->destination, sizeof(j->destination));
		j->destination[sizeof(j->destination) - 1] = '\0';
		j->nreported++;
		break;
	}
	job_maybe_complete(c, r->job);
}

/* The child is gone: whatever it did not report is deferred. */
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

/* The report channel ended: the delivery process has exited (the
 * spawner logs how). */
static void
reap(struct child *c)
{
	child_finished(c, "delivery process ended without reporting");
}

static void
read_reports(struct child *c)
{
	struct report r;
	ssize_t n;

	for (;;) {
		n = recv(c->fd, &r, sizeof(r), MSG_DONTWAIT);
		if (n == (ssize_t)sizeof(r)) {
			apply_report(c, &r);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n > 0)
			fatalx("delivery process %ld sent %zd bytes",
			    (long)c->pid, n);
		/* EOF (or an error): the child has exited or is exiting. */
		reap(c);
		return;
	}
}

/* Load every job's message; a job whose message is gone has its
 * outcome at once.  false when no job is left to run. */
static bool
load_jobs(struct child *c)
{
	size_t i, k, left = 0;

	for (i = 0; i < c->njobs; i++) {
		struct sjob *j = c->jobs[i];

		if (load_message(j) == 0) {
			left++;
			continue;
		}
		for (k = 0; k < j->nrcpts; k++) {
			j->rcpts[k].status = DELIVERY_DEFER;
			snprintf(j->rcpts[k].reply, sizeof(j->rcpts[k].reply),
			    "451 4.3.0 message not readable from the queue");
		}
		j->nreported = j->nrcpts;
		job_maybe_complete(c, i);
	}
	return left > 0;
}

static void
close_memfds(struct child *c)
{
	for (size_t i = 0; i < c->njobs; i++) {
		if (c->jobs[i] != NULL && c->jobs[i]->memfd >= 0) {
			close(c->jobs[i]->memfd);
			c->jobs[i]->memfd = -1;
		}
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

/* The jobs of c, in the format of spawner.h, in a sealed memfd. */
static int
jobs_memfd(const struct child *c)
{
	struct buf b;
	uint32_t n = 0, content = 1;
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
		spawn_put_u32(&b, content++);
		spawn_put_u64(&b, (uint64_t)j->content_len);
		spawn_put_u64(&b, (uint64_t)j->msg.received_at);
		spawn_put_u32(&b, (j->msg.body_8bitmime ? SPAWN_8BITMIME : 0) |
		    (j->msg.smtputf8 ? SPAWN_SMTPUTF8 : 0));
		spawn_put_str(&b, j->queue_id);
		spawn_put_str(&b, j->msg.sender != NULL ? j->msg.sender : "");
		spawn_put_str(&b, j->route);
		spawn_put_str(&b, j->action);
		spawn_put_str(&b, j->params);
		spawn_put_str(&b, j->msg.client_ip);
		spawn_put_str(&b, j->msg.helo);
		spawn_put_str(&b, j->msg.protocol);
		spawn_put_str(&b, j->msg.auth_user);
		spawn_put_u32(&b, (uint32_t)j->nrcpts);
		for (size_t k = 0; k < j->nrcpts; k++) {
			spawn_put_u64(&b, (uint64_t)j->rcpts[k].id);
			spawn_put_str(&b, j->rcpts[k].address);
		}
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

/* Ask the spawner for a delivery process: the jobs, each job's content,
 * then the request with our report channel's other end. */
static int
spawn_request(struct child *c, int report)
{
	struct ipc_spawn req;
	uint32_t nfds = 1;
	int jobs;

	if (s.spawner_fd < 0 || (jobs = jobs_memfd(c)) < 0)
		return -1;
	if (spawner_send(IPC_SPAWN_FD, NULL, 0, jobs) < 0) {
		close(jobs);
		return -1;
	}
	close(jobs);
	for (size_t i = 0; i < c->njobs; i++) {
		if (c->jobs[i] == NULL)
			continue;
		if (spawner_send(IPC_SPAWN_FD, NULL, 0, c->jobs[i]->memfd) < 0)
			return -1;
		nfds++;
	}
	memset(&req, 0, sizeof(req));
	req.request = c->request = ++s.spawn_seq;
	req.nfds = nfds;
	snprintf(req.title, sizeof(req.title), "delivery %s", c->dest_key);
	if (c->user != NULL &&
	    strlcpy_mx(req.user, c->user, sizeof(req.user)) >= sizeof(req.user))
		return -1;
	return spawner_send(IPC_SPAWN, &req, sizeof(req), report);
}

static void
start_child(struct child *c)
{
	int sv[2];

	if (!load_jobs(c)) {
		child_release(c);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("socketpair: %s", strerror(errno));
		child_finished(c, "cannot start a delivery process");
		return;
	}
	if (spawn_request(c, sv[1]) < 0) {
		/* A request cut short leaves the spawner with descriptors
		 * that do not add up: it refuses it, and we never hear of
		 * this child again but by its channel's end. */
		log_error("asking for a delivery process: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		child_finished(c, "cannot start a delivery process");
		return;
	}
	close(sv[1]);
	/* The delivery process has them; the content stays in the queue. */
	close_memfds(c);
	c->pid = -1;
	c->fd = sv[0];
	fd_set_nonblock(c->fd);
	c->deadline_ms = monotonic_ms() +
	    (uint64_t)DELIVERY_JOB_TIMEOUT * 1000 * c->njobs;
	{
		struct epoll_event ev = { .events = EPOLLIN,
		    .data.u64 = ((uint64_t)s.ev_kind << 32) |
		    (uint32_t)(c - s.children + 1) };

		if (epoll_ctl(s.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
			fatal("epoll_ctl");
	}
	log_debug("delivery requested: %zu job%s for %s", c->njobs,
	    c->njobs == 1 ? "" : "s", c->dest_key);
}

static void
kill_child(struct child *c)
{
	struct ipc_spawned k = { .pid = (int32_t)c->pid };

	if (c->pid > 0 && spawner_send(IPC_SPAWN_KILL, &k, sizeof(k), -1) < 0)
		log_warn("asking the spawner to kill %ld: %s", (long)c->pid,
		    strerror(errno));
}

/* The spawner answered a request: the pid, or a failure (whose report
 * channel has ended too: the recipients are deferred then). */
static void
read_spawner(void)
{
	struct ipc_spawned res;
	enum ipc_type type;
	int fd, r;

	while ((r = ipc_recv(s.spawner_fd, &type, &res, sizeof(res), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		if (type != IPC_SPAWNED)
			fatalx("unexpected message %d from the spawner", type);
		for (size_t i = 0; i < s.nslots; i++) {
			struct child *c = &s.children[i];

			if (!c->used || c->request != res.request)
				continue;
			if (res.pid > 0) {
				c->pid = (pid_t)res.pid;
				log_debug("delivery process %ld: %zu job%s for"
				    " %s", (long)c->pid, c->njobs,
				    c->njobs == 1 ? "" : "s", c->dest_key);
				if (monotonic_ms() > c->deadline_ms)
					kill_child(c);
			}
			break;
		}
	}
	if (r == 0) {
		/* The master stops us when the spawner dies. */
		log_warn("the delivery spawner has gone");
		epoll_ctl(s.epfd, EPOLL_CTL_DEL, s.spawner_fd, NULL);
		close(s.spawner_fd);
		s.spawner_fd = -1;
	}
}

static void
kill_overdue(uint64_t now)
{
	size_t i;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (c->used && c->pid > 0 && now > c->deadline_ms) {
			log_warn("delivery process %ld (%s) ran too long;"
			    " killing it", (long)c->pid, c->dest_key);
			kill_child(c);
		}
	}
}

/* ---- dispatch: due rows -> jobs -> children ---- */

struct due_row {
	int64_t     id;
	const char *msgid, *address, *route, *action, *params, *sender;
	unsigned    attempts;
	int64_t     last_attempt_at, received_at;
};

static bool
is_relay(const char *action)
{
	return strcmp(action, "relay") == 0;
}

/* A job of this pass for the same message and key, in a child that is
 * not started yet. */
static struct sjob *
find_job(const struct due_row *row, const char *job_key)
{
	size_t i, k;

	for (i = 0; i < s.nslots; i++) {
		struct child *c = &s.children[i];

		if (!c->used || c->pid != 0)
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

		if (c->used && c->pid == 0 && c->njobs < SCHED_JOBS_PER_CHILD &&
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
new_job(const struct due_row *row, const char *job_key)
{
	struct sjob *j = xcalloc(1, sizeof(*j));

	j->queue_id = xstrdup(row->msgid);
	j->sender = xstrdup(row->sender != NULL ? row->sender : "");
	j->route = xstrdup(row->route != NULL ? row->route : "");
	j->action = xstrdup(row->action);
	j->params = xstrdup(row->params != NULL ? row->params : "{}");
	j->job_key = xstrdup(job_key);
	j->received_at = row->received_at;
	j->memfd = -1;
	return j;
}

static void
job_add_rcpt(struct sjob *j, const struct due_row *row)
{
	struct srcpt *rc;

	j->rcpts = xrealloc(j->rcpts, (j->nrcpts + 1) * sizeof(*j->rcpts));
	rc = &j->rcpts[j->nrcpts++];
	memset(rc, 0, sizeof(*rc));
	rc->id = row->id;
	rc->address = xstrdup(row->address);
	rc->attempts = row->attempts + 1;
	rc->prev_attempt_at = row->last_attempt_at;
}

/* Claim the row (queued/deferred -> delivering) in the open transaction;
 * false when somebody (mxgatectl) changed it since we read it. */
static bool
claim(const struct due_row *row, const char *dest_key, int64_t now)
{
	sqlite3_stmt *st = stmt(ST_MARK);

	sqlite3_bind_int64(st, 1, row->id);
	sqlite3_bind_int64(st, 2, now);
	if (step_done(st, "marking a recipient") < 0 ||
	    sqlite3_changes(s.h) != 1)
		return false;
	buf_reset(&s.detail);
	buf_appendf(&s.detail, "attempt=%u dest=%s", row->attempts + 1,
	    dest_key);
	add_event(row->msgid, row->id, now, "attempt", s.detail.data);
	return true;
}

/* Place one due row: false when no child may take it now. */
static bool
place(const struct due_row *row, int64_t now)
{
	char job_key[RETRY_KEY_MAX], dest_key[RETRY_KEY_MAX];
	struct child *c;
	struct sjob *j;
	char *user;

	retry_keys(row->action, row->params, row->address, job_key, dest_key);
	if ((j = find_job(row, job_key)) != NULL) {
		if (!claim(row, dest_key, now))
			return true;
		job_add_rcpt(j, row);
		return true;
	}
	user = is_relay(row->action) ? NULL : params_user(row->params);
	c = find_child(dest_key, user);
	if (c == NULL) {
		if (s.nrunning >= s.nslots ||
		    dest_running(dest_key) >=
		    s.conf->concurrency_per_destination ||
		    (c = child_slot()) == NULL || !claim(row, dest_key, now)) {
			free(user);
			return c == NULL ? false : true;
		}
		c->used = true;
		c->fd = -1;
		c->dest_key = xstrdup(dest_key);
		c->user = user;
		s.nrunning++;
	} else {
		free(user);
		if (!claim(row, dest_key, now))
			return true;
	}
	j = new_job(row, job_key);
	job_add_rcpt(j, row);
	c->jobs = xrealloc(c->jobs, (c->njobs + 1) * sizeof(*c->jobs));
	c->jobs[c->njobs++] = j;
	return true;
}

static const char *
col_copy(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? xstrdup((const char *)t) : NULL;
}

static void
read_row(sqlite3_stmt *st, struct due_row *row)
{
	row->id = sqlite3_column_int64(st, 0);
	row->msgid = col_copy(st, 1);
	row->address = col_copy(st, 2);
	row->route = col_copy(st, 3);
	row->action = col_copy(st, 4);
	row->params = col_copy(st, 5);
	row->attempts = (unsigned)sqlite3_column_int(st, 6);
	row->last_attempt_at = sqlite3_column_int64(st, 7);
	row->received_at = sqlite3_column_int64(st, 8);
	row->sender = col_copy(st, 9);
}

static void
row_free(struct due_row *row)
{
	free((char *)row->msgid);
	free((char *)row->address);
	free((char *)row->route);
	free((char *)row->action);
	free((char *)row->params);
	free((char *)row->sender);
}

static bool
any_pending_child(void)
{
	size_t i;

	for (i = 0; i < s.nslots; i++)
		if (s.children[i].used && s.children[i].pid == 0)
			return true;
	return false;
}

/* One page of due rows of one state, copied: the statement is done
 * before any of them is claimed (updated). */
static int
read_page(enum stmt_id which, int64_t now, int64_t offset,
    struct due_row *rows, int *nrows)
{
	sqlite3_stmt *st = stmt(which);
	int rc;

	*nrows = 0;
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int(st, 2, SCHED_PAGE);
	sqlite3_bind_int64(st, 3, offset);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && *nrows < SCHED_PAGE)
		read_row(st, &rows[(*nrows)++]);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		sql_fail("reading due recipients");
		return -1;
	}
	return 0;
}

/*
 * Read due rows of one state a page at a time and place them, while
 * slots are free.  A claimed row leaves the state being read, so the
 * OFFSET of the next page counts only the rows left behind.
 */
static void
dispatch_state(enum stmt_id which, int64_t now)
{
	static struct due_row rows[SCHED_PAGE];
	int64_t skipped = 0;
	int page, i, nrows;

	for (page = 0; page < SCHED_MAX_PAGES; page++) {
		if (s.nrunning >= s.nslots && !any_pending_child())
			return;
		if (read_page(which, now, skipped, rows, &nrows) < 0)
			return;
		for (i = 0; i < nrows; i++) {
			if (rows[i].msgid != NULL && rows[i].address != NULL &&
			    rows[i].action != NULL && !place(&rows[i], now))
				skipped++;
			row_free(&rows[i]);
		}
		if (nrows < SCHED_PAGE)
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

		if (c->used && c->pid == 0 && c->njobs == 0)
			child_release(c);
	}
}

static void
dispatch(int64_t now)
{
	dispatch_state(ST_DUE_QUEUED, now);
	dispatch_state(ST_DUE_DEFERRED, now);
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
 * Remote-MTA. */
static void
remote_host(const char *dest, char *out, size_t size)
{
	size_t n = strcspn(dest, "[");

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
	sqlite3_stmt *st = stmt(ST_FINAL);

	sqlite3_bind_int64(st, 1, rc->id);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, rc->reply, -1, SQLITE_STATIC);
	bind_text(st, 4, dest[0] != '\0' ? dest : NULL);
	sqlite3_bind_int64(st, 5, now);
	if (step_done(st, "recording an outcome") < 0)
		return -1;
	return sqlite3_changes(s.h) == 1 ? 0 : -1;
}

static int
update_defer(struct srcpt *rc, const char *dest, int64_t next_at,
    int64_t now)
{
	sqlite3_stmt *st = stmt(ST_DEFER);

	sqlite3_bind_int64(st, 1, rc->id);
	sqlite3_bind_text(st, 2, rc->reply, -1, SQLITE_STATIC);
	bind_text(st, 3, dest[0] != '\0' ? dest : NULL);
	sqlite3_bind_int64(st, 4, next_at);
	sqlite3_bind_int64(st, 5, now);
	if (step_done(st, "recording a deferral") < 0)
		return -1;
	return sqlite3_changes(s.h) == 1 ? 0 : -1;
}

/* The original's header block, for a DSN. */
static char *
original_headers(const char *msgid, size_t *len)
{
	sqlite3_stmt *st = stmt(ST_HEADERS);
	const char *p;
	char *out = NULL;
	size_t n;

	*len = 0;
	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, SCHED_HEADERS_MAX);
	if (sqlite3_step(st) == SQLITE_ROW) {
		p = sqlite3_column_blob(st, 0);
		n = (size_t)sqlite3_column_bytes(st, 0);
		if (p != NULL) {
			*len = bounce_header_len(p, n);
			out = xmalloc(*len + 1);
			memcpy(out, p, *len);
			out[*len] = '\0';
		}
	}
	sqlite3_reset(st);
	return out != NULL ? out : xstrdup("");
}

/*
 * Queue one DSN for the outcomes of a job that match kind (failed or
 * delayed).  new_id empty when none was queued.
 */
static void
queue_dsn(const struct sjob *j, struct outcome *o, size_t n,
    enum bounce_kind kind, int64_t now, char new_id[QUEUE_ID_LEN + 1])
{
	struct bounce_rcpt *br;
	struct bounce_report r;
	char remote[DELIVERY_DEST_MAX];
	size_t i, nb = 0;
	char *headers;
	int rc;

	new_id[0] = '\0';
	br = xcalloc(n, sizeof(*br));
	remote_host(j->destination, remote, sizeof(remote));
	for (i = 0; i < n; i++) {
		bool want = kind == BOUNCE_DELAYED ? o[i].warn :
		    strcmp(o[i].kind, "bounced") == 0 ||
		    strcmp(o[i].kind, "expired") == 0;

		if (!want)
			continue;
		br[nb].address = o[i].rc->address;
		br[nb].reply = o[i].rc->reply[0] != '\0' ? o[i].rc->reply : NULL;
		br[nb].remote_mta = o[i].rc->remote && remote[0] != '\0' ?
		    remote : NULL;
		br[nb].last_attempt_at = now;
		br[nb].expired = o[i].expired;
		nb++;
	}
	if (nb == 0) {
		free(br);
		return;
	}
	if (j->sender[0] == '\0') {
		log_info("id=%s no %s DSN: the sender is <> (a bounce is never"
		    " bounced)", j->queue_id, kind == BOUNCE_DELAYED ?
		    "delay" : "failure");
		free(br);
		return;
	}
	memset(&r, 0, sizeof(r));
	headers = original_headers(j->queue_id, &r.headers_len);
	r.kind = kind;
	r.queue_id = j->queue_id;
	r.sender = j->sender;
	r.received_at = j->received_at;
	r.reporting_mta = s.conf->hostname;
	r.headers = headers;
	r.retry_until = j->received_at + s.policy.max_queue_time;
	r.rcpts = br;
	r.nrcpts = nb;
	rc = bounce_queue(s.db, &r, s.conf->bounce_upstream, now, new_id);
	if (rc != 0)
		new_id[0] = '\0';
	if (rc < 0)
		log_error("id=%s could not queue a DSN", j->queue_id);
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
	    rc->prev_attempt_at, now, &o->next_at, &o->warn);
	if (o->expired)
		o->kind = update_final(rc, "bounced", dest, now) == 0 ?
		    "expired" : NULL;
	else
		o->kind = update_defer(rc, dest, o->next_at, now) == 0 ?
		    "deferred" : NULL;
	if (o->kind == NULL)
		o->warn = false;
}

static void
write_history(const struct sjob *j, const struct outcome *o,
    const char *dsn, const char *warning, int64_t now)
{
	char when[32];

	buf_reset(&s.detail);
	buf_appendf(&s.detail, "attempt=%u", o->rc->attempts);
	if (j->destination[0] != '\0')
		buf_appendf(&s.detail, " dest=%s", j->destination);
	buf_appendf(&s.detail, " reply=%s", o->rc->reply);
	if (strcmp(o->kind, "deferred") == 0) {
		fmt_utc(when, sizeof(when), o->next_at);
		buf_appendf(&s.detail, " next=%s", when);
		if (o->warn && warning[0] != '\0')
			buf_appendf(&s.detail, " delay_warning=%s", warning);
	} else if (strcmp(o->kind, "bounced") == 0 ||
	    strcmp(o->kind, "expired") == 0) {
		buf_appendf(&s.detail, " dsn=%s", dsn[0] != '\0' ? dsn :
		    "none");
	}
	add_event(j->queue_id, o->rc->id, now, o->kind, s.detail.data);
	log_info("id=%s to=<%s> action=%s dest=%s status=%s attempts=%u"
	    " reply=%s", j->queue_id, o->rc->address, j->action,
	    j->destination[0] != '\0' ? j->destination : "-", o->kind,
	    o->rc->attempts, o->rc->reply);
}

/* Every recipient final: the message (or its content) goes. */
static void
retire_if_final(const char *msgid)
{
	sqlite3_stmt *st = stmt(ST_PENDING_COUNT);
	int64_t pending = -1;

	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		pending = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (pending != 0)
		return;
	st = stmt(s.conf->keep_delivered == 0 ? ST_DELETE_MESSAGE :
	    ST_DELETE_CONTENT);
	sqlite3_bind_text(st, 1, msgid, -1, SQLITE_STATIC);
	if (step_done(st, "retiring a message") == 0)
		log_debug("id=%s done: %s", msgid, s.conf->keep_delivered == 0 ?
		    "removed" : "content removed");
}

static void
record_job(struct sjob *j, int64_t now)
{
	char dsn[QUEUE_ID_LEN + 1], warning[QUEUE_ID_LEN + 1];
	struct outcome *o;
	size_t i;

	o = xcalloc(j->nrcpts, sizeof(*o));
	for (i = 0; i < j->nrcpts; i++) {
		o[i].rc = &j->rcpts[i];
		decide(j, &o[i], now);
	}
	queue_dsn(j, o, j->nrcpts, BOUNCE_FAILED, now, dsn);
	queue_dsn(j, o, j->nrcpts, BOUNCE_DELAYED, now, warning);
	for (i = 0; i < j->nrcpts; i++)
		if (o[i].kind != NULL)
			write_history(j, &o[i], dsn, warning, now);
	retire_if_final(j->queue_id);
	free(o);
}

static void
record_completed(int64_t now)
{
	size_t i;

	for (i = 0; i < s.ncompleted; i++) {
		record_job(s.completed[i], now);
		job_free(s.completed[i]);
	}
	s.ncompleted = 0;
}

static void
purge(int64_t now)
{
	sqlite3_stmt *st;

	if (s.conf->keep_delivered == 0)
		return;
	st = stmt(ST_PURGE);
	sqlite3_bind_int64(st, 1, now - (int64_t)s.conf->keep_delivered);
	if (step_done(st, "purging old messages") == 0 &&
	    sqlite3_changes(s.h) > 0)
		log_info("purged %d messages older than keep_delivered",
		    sqlite3_changes(s.h));
}

/* ---- transactions ---- */

static int
txn_begin(void)
{
	if (s.lower_sync && exec("PRAGMA synchronous = NORMAL") < 0)
		return -1;
	if (exec("BEGIN IMMEDIATE") < 0) {
		if (s.lower_sync)
			exec("PRAGMA synchronous = FULL");
		return -1;
	}
	return 0;
}

static void
txn_commit(void)
{
	if (exec("COMMIT") < 0) {
		exec("ROLLBACK");
		/* Outcomes we cannot record: stop, the master restarts us,
		 * and what was "delivering" is retried. */
		fatalx("scheduler: commit failed; exiting");
	}
	if (s.lower_sync && exec("PRAGMA synchronous = FULL") < 0)
		fatalx("scheduler: cannot restore synchronous = FULL");
}

/* Is the connection syncing every commit (FULL or EXTRA)?  Then ours
 * run with NORMAL and the next synced commit covers them. */
static bool
sync_is_full(void)
{
	sqlite3_stmt *st;
	bool full = false;

	if (sqlite3_prepare_v2(s.h, "PRAGMA synchronous", -1, &st, NULL) ==
	    SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		full = sqlite3_column_int(st, 0) >= 2;
	sqlite3_finalize(st);
	return full;
}

/* ---- the interface ---- */

static void
requeue_interrupted(void)
{
	int64_t now = now_s();
	char sql[512];

	if (exec("BEGIN IMMEDIATE") < 0)
		fatalx("scheduler: cannot requeue interrupted deliveries");
	snprintf(sql, sizeof(sql), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT message_id, id, %" PRId64
	    ", 'deferred', 'reply=451 4.3.0 delivery interrupted (mxgated"
	    " stopped); retried now' FROM recipients WHERE state ="
	    " 'delivering'", now);
	if (exec(sql) < 0)
		fatalx("scheduler: cannot requeue interrupted deliveries");
	snprintf(sql, sizeof(sql), "UPDATE recipients SET state = 'deferred',"
	    " next_attempt_at = %" PRId64 ", updated_at = %" PRId64 ","
	    " last_reply = '451 4.3.0 delivery interrupted (mxgated"
	    " stopped)' WHERE state = 'delivering'", now, now);
	if (exec(sql) < 0 || exec("COMMIT") < 0)
		fatalx("scheduler: cannot requeue interrupted deliveries");
	if (sqlite3_changes(s.h) > 0)
		log_info("%d interrupted deliveries are due again",
		    sqlite3_changes(s.h));
}

void
scheduler_init(const struct mxconf *conf, struct queue_db *db, int epfd,
    uint32_t ev_kind, int spawner_fd)
{
	struct epoll_event ev = { .events = EPOLLIN,
	    .data.u64 = (uint64_t)ev_kind << 32 };
	int i;

	memset(&s, 0, sizeof(s));
	s.conf = conf;
	s.db = db;
	s.h = queue_db_handle(db);
	s.epfd = epfd;
	s.ev_kind = ev_kind;
	s.policy.schedule = conf->retry_schedule;
	s.policy.nschedule = conf->nretry_schedule;
	s.policy.max_queue_time = conf->max_queue_time;
	s.policy.delay_warning = conf->delay_warning;
	s.nslots = conf->concurrency;
	s.spawner_fd = spawner_fd;
	s.children = xcalloc(s.nslots, sizeof(*s.children));
	for (size_t k = 0; k < s.nslots; k++)
		s.children[k].fd = -1;
	buf_init(&s.detail);
	for (i = 0; i < ST_COUNT; i++)
		if (sqlite3_prepare_v3(s.h, stmt_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &s.st[i], NULL) != SQLITE_OK)
			fatalx("scheduler: preparing statements: %s",
			    sqlite3_errmsg(s.h));
	requeue_interrupted();
	s.lower_sync = sync_is_full();
	s.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK |
	    TFD_CLOEXEC);
	if (s.timerfd < 0)
		fatal("timerfd_create");
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, s.timerfd, &ev) < 0)
		fatal("epoll_ctl");
	if (s.spawner_fd >= 0) {
		struct epoll_event sev = { .events = EPOLLIN,
		    .data.u64 = ((uint64_t)ev_kind << 32) |
		    (uint32_t)(s.nslots + 1) };

		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s.spawner_fd, &sev) < 0)
			fatal("epoll_ctl");
	}
	s.kick = true;
	s.next_tick_ms = monotonic_ms();
	s.next_purge_ms = s.next_tick_ms;
	timer_arm(s.next_tick_ms);
}

void
scheduler_event(uint32_t index, uint32_t events)
{
	uint64_t expirations;

	if (index == 0) {
		while (read(s.timerfd, &expirations, sizeof(expirations)) > 0)
			;
		s.timer_at_ms = 0;
		return;
	}
	if (index == s.nslots + 1) {
		read_spawner();
		return;
	}
	if (index - 1 < s.nslots && s.children[index - 1].used &&
	    s.children[index - 1].fd >= 0)
		read_reports(&s.children[index - 1]);
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
	want_dispatch = !s.conf->delivery_paused && s.nrunning < s.nslots &&
	    (s.kick || tick);
	if (s.ncompleted == 0 && !want_dispatch && !tick) {
		timer_arm(s.next_tick_ms);
		return;
	}
	/* Bound the scheduler's share of the database. */
	if (now_ms < s.last_txn_ms + SCHEDULER_MIN_INTERVAL_MS) {
		timer_arm(s.last_txn_ms + SCHEDULER_MIN_INTERVAL_MS);
		return;
	}
	now = now_s();
	if (txn_begin() < 0) {
		/* Busy (mxgatectl holds the lock): next time. */
		s.last_txn_ms = now_ms;
		timer_arm(now_ms + SCHED_TICK_MS / 4);
		return;
	}
	record_completed(now);
	if (now_ms >= s.next_purge_ms) {
		purge(now);
		s.next_purge_ms = now_ms + SCHED_PURGE_MS;
	}
	if (want_dispatch) {
		s.kick = false;
		dispatch(now);
	}
	txn_commit();
	for (size_t i = 0; i < s.nslots; i++)
		if (s.children[i].used && s.children[i].pid == 0)
			start_child(&s.children[i]);
	s.last_txn_ms = now_ms;
	if (tick) {
		s.next_tick_ms = now_ms + SCHED_TICK_MS;
		kill_overdue(now_ms);
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
		if (s.children[i].used && s.children[i].pid != 0)
			n++;
	return n;
}

/* Wait for the children's reports, until deadline_ms or they are all
 * gone. */
static void
drain(uint64_t deadline_ms)
{
	struct pollfd pfd[256];
	struct child *who[256];
	uint64_t now;
	size_t i;
	int n, r;

	while (running_children() > 0 && (now = monotonic_ms()) < deadline_ms) {
		n = 0;
		for (i = 0; i < s.nslots && n < (int)ARRAY_LEN(pfd); i++) {
			if (!s.children[i].used || s.children[i].fd < 0)
				continue;
			pfd[n].fd = s.children[i].fd;
			pfd[n].events = POLLIN;
			who[n++] = &s.children[i];
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
		if (s.children[i].used && s.children[i].pid != 0) {
			/* A pid the spawner has not told yet: wait for it. */
			if (s.children[i].pid < 0 && s.spawner_fd >= 0)
				read_spawner();
			kill_child(&s.children[i]);
		}
	drain(monotonic_ms() + 5000);
	if (s.ncompleted > 0 && txn_begin() == 0) {
		record_completed(now_s());
		txn_commit();
	}
	/* What is still "delivering" is retried at the next start. */
	for (i = 0; i < s.ncompleted; i++)
		job_free(s.completed[i]);
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s.st[i]);
	free(s.completed);
	free(s.children);
	buf_free(&s.detail);
	close(s.timerfd);
}
