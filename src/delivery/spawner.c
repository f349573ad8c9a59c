/*
 * spawner — see spawner.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/dsn.h"
#include "common/ipc.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "delivery/spawner.h"

/* ---- the jobs' format ---- */

void
spawn_put_u32(struct buf *b, uint32_t v)
{
	buf_append(b, &v, sizeof(v));
}

void
spawn_put_u64(struct buf *b, uint64_t v)
{
	buf_append(b, &v, sizeof(v));
}

void
spawn_put_str(struct buf *b, const char *s)
{
	if (s == NULL) {
		spawn_put_u32(b, SPAWN_NULL);
		return;
	}
	spawn_put_u32(b, (uint32_t)strlen(s));
	buf_append(b, s, strlen(s));
}

struct reader {
	const char *p;
	size_t      left;
	bool        bad;
};

static bool
get(struct reader *r, void *out, size_t n)
{
	if (r->bad || r->left < n) {
		r->bad = true;
		memset(out, 0, n);
		return false;
	}
	memcpy(out, r->p, n);
	r->p += n;
	r->left -= n;
	return true;
}

static uint32_t
get_u32(struct reader *r)
{
	uint32_t v;

	get(r, &v, sizeof(v));
	return v;
}

static uint64_t
get_u64(struct reader *r)
{
	uint64_t v;

	get(r, &v, sizeof(v));
	return v;
}

/* A copy, NUL-terminated; NULL for SPAWN_NULL (or when malformed). */
static char *
get_str(struct reader *r)
{
	uint32_t len = get_u32(r);
	char *s;

	if (r->bad || len == SPAWN_NULL)
		return NULL;
	if (len > r->left) {
		r->bad = true;
		return NULL;
	}
	s = xmalloc((size_t)len + 1);
	memcpy(s, r->p, len);
	s[len] = '\0';
	r->p += len;
	r->left -= len;
	return s;
}

/* ---- a delivery process ---- */

static int report_fd = -1;

static void
report_job(uint32_t index, const struct delivery_job *job, uint64_t started,
    uint64_t ended)
{
	uint64_t ready = job->connected_us != 0 && job->connected_us >= started ?
	    job->connected_us : started;

	/* A relay that never got a connection spent it all connecting. */
	if (job->connected_us == 0 && strcmp(job->action, "relay") == 0)
		ready = ended;
	struct spawn_report r;

	for (size_t i = 0; i < job->nrcpts; i++) {
		memset(&r, 0, sizeof(r));
		r.job = index;
		r.status = job->rcpts[i].status;
		r.remote = job->rcpts[i].remote;
		r.dsn_passed = job->rcpts[i].dsn_passed;
		r.recipient_id = job->rcpts[i].recipient_id;
		r.connect_ms = (uint32_t)((ready - started) / 1000);
		r.transfer_ms = (uint32_t)((ended - ready) / 1000);
		snprintf(r.destination, sizeof(r.destination), "%s",
		    job->destination);
		snprintf(r.reply, sizeof(r.reply), "%s", job->rcpts[i].reply);
		/* The queue process is gone if this fails: nothing else to
		 * do. */
		if (send(report_fd, &r, sizeof(r), MSG_NOSIGNAL) < 0)
			_exit(1);
	}
}

static void
job_free(struct delivery_job *job, char **addrs)
{
	for (size_t i = 0; addrs != NULL && i < job->nrcpts; i++)
		free(addrs[i]);
	free(addrs);
	for (size_t i = 0; job->rcpts != NULL && i < job->nrcpts; i++)
		free((char *)job->rcpts[i].dsn_orcpt);
	free(job->rcpts);
	free((char *)job->dsn_envid);
	free((char *)job->queue_id);
	free((char *)job->sender);
	free((char *)job->route);
	free((char *)job->action);
	free((char *)job->params_json);
	free((char *)job->client_ip);
	free((char *)job->helo);
	free((char *)job->protocol);
	free((char *)job->auth_user);
	free((char *)job->sts_cached);
}

/* Read one job and deliver it; false when the jobs are malformed. */
static bool
run_one(struct reader *rd, const struct mxconf *conf, const int *fds,
    int nfds)
{
	struct delivery_job job;
	uint32_t index, content, flags, n;
	uint64_t started;
	char **addrs = NULL;
	bool ok = false;
	int rc;

	memset(&job, 0, sizeof(job));
	index = get_u32(rd);
	content = get_u32(rd);
	job.content_len = (size_t)get_u64(rd);
	job.content_off = get_u64(rd);
	job.received_at = (int64_t)get_u64(rd);
	flags = get_u32(rd);
	job.queue_id = get_str(rd);
	job.sender = get_str(rd);
	job.route = get_str(rd);
	job.action = get_str(rd);
	job.params_json = get_str(rd);
	job.client_ip = get_str(rd);
	job.helo = get_str(rd);
	job.protocol = get_str(rd);
	job.auth_user = get_str(rd);
	job.dsn_envid = get_str(rd);
	n = get_u32(rd);
	if (rd->bad || n == 0 || n > rd->left || content == 0 ||
	    (int)content >= nfds || job.queue_id == NULL ||
	    job.action == NULL || job.params_json == NULL)
		goto out;
	job.body_8bitmime = (flags & SPAWN_8BITMIME) != 0;
	job.smtputf8 = (flags & SPAWN_SMTPUTF8) != 0;
	job.dsn_ret = (flags & SPAWN_RET_FULL) != 0 ? DSN_RET_FULL :
	    (flags & SPAWN_RET_HDRS) != 0 ? DSN_RET_HDRS : DSN_RET_NONE;
	if (job.sender == NULL)
		job.sender = xstrdup("");
	job.conf = conf;
	job.content_fd = fds[content];
	job.nrcpts = n;
	job.rcpts = xcalloc(n, sizeof(*job.rcpts));
	addrs = xcalloc(n, sizeof(*addrs));
	for (uint32_t i = 0; i < n; i++) {
		job.rcpts[i].recipient_id = (int64_t)get_u64(rd);
		addrs[i] = get_str(rd);
		job.rcpts[i].address = addrs[i] != NULL ? addrs[i] : "";
		job.rcpts[i].dsn_notify = get_u32(rd) & DSN_NOTIFY_KNOWN;
		job.rcpts[i].dsn_orcpt = get_str(rd);
	}
	job.sts_cached = get_str(rd);
	if (rd->bad)
		goto out;
	started = monotonic_us();
	if (strcmp(job.action, "relay") == 0)
		rc = relay_deliver(&job);
	else
		rc = handler_deliver(&job);
	delivery_set_pending(&job, DELIVERY_DEFER, rc < 0 ?
	    "4.3.0 delivery failed (see the log)" :
	    "4.3.0 the handler gave no outcome");
	report_job(index, &job, started, monotonic_us());
	delivery_content_release(&job);
	ok = true;
out:
	job_free(&job, addrs);
	return ok;
}

/* Deliver the jobs of one batch (fds[0]: the jobs, then the contents),
 * close its descriptors, and say it is over. */
static void
run_batch(const struct mxconf *conf, int *fds, int nfds)
{
	struct spawn_report done;
	struct reader rd;
	struct stat st;
	static struct buf jobs;

	/* Read, not mapped: a munmap per batch is a TLB flush on every CPU
	 * (delivery.c). */
	if (fstat(fds[0], &st) < 0 || st.st_size <= 0 ||
	    (uint64_t)st.st_size > SIZE_MAX / 2)
		fatal("the jobs");
	buf_reset(&jobs);
	buf_reserve(&jobs, (size_t)st.st_size);
	if (fd_pread_full(fds[0], jobs.data, (size_t)st.st_size, 0) !=
	    (ssize_t)st.st_size)
		fatal("reading the jobs");
	rd.p = jobs.data;
	rd.left = (size_t)st.st_size;
	rd.bad = false;
	if (get_u32(&rd) != SPAWN_MAGIC)
		fatalx("jobs of another format");
	for (uint32_t n = get_u32(&rd); n > 0; n--) {
		if (!run_one(&rd, conf, fds, nfds))
			fatalx("malformed jobs");
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	/* Addresses that failed in this batch may answer the next one. */
	relay_batch_end();
	memset(&done, 0, sizeof(done));
	done.job = SPAWN_BATCH_DONE;
	if (send(report_fd, &done, sizeof(done), MSG_NOSIGNAL) < 0)
		_exit(1);
}

/*
 * Wait for the next batch on the channel.  A connection kept for reuse
 * is closed (QUIT) once it has waited delivery.connection_cache_time:
 * an upstream should not hold a session for a process with nothing to
 * send.
 * Returns the number of descriptors received, 0 when the queue process
 * closed the channel (the process ends).
 */
static int
next_batch(const struct mxconf *conf, int *fds, char *title,
    size_t titlesize)
{
	struct spawn_batch b;
	union {
		char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = &b, .iov_len = sizeof(b) };
	struct msghdr msg;
	struct cmsghdr *cm;
	struct pollfd pfd = { .fd = report_fd, .events = POLLIN };
	int timeout = (int)conf->relay_cache_time * 1000, nfds = 0, r;
	ssize_t n;

	while ((r = poll(&pfd, 1, timeout)) <= 0) {
		if (r < 0 && errno != EINTR)
			fatal("poll");
		if (r == 0) {
			relay_finish();
			timeout = -1;
		}
	}
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = u.buf;
	msg.msg_controllen = sizeof(u.buf);
	do
		n = recvmsg(report_fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n == 0 || (n < 0 && errno == ECONNRESET))
		return 0;
	if (n != (ssize_t)sizeof(b) || b.magic != SPAWN_MAGIC ||
	    (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0)
		fatalx("a malformed batch from the queue process");
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		memcpy(fds, CMSG_DATA(cm), (size_t)nfds * sizeof(int));
	}
	if (nfds < 2 || (uint32_t)nfds != b.nfds)
		fatalx("a batch with %d of %u descriptors", nfds, b.nfds);
	b.title[sizeof(b.title) - 1] = '\0';
	snprintf(title, titlesize, "%s", b.title);
	return nfds;
}

int
spawn_send_batch(int sock, const char *title, const int *fds, int nfds)
{
	struct spawn_batch b;
	union {
		char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = &b, .iov_len = sizeof(b) };
	struct msghdr msg;
	struct cmsghdr *cm;
	ssize_t n;

	if (nfds < 1 || nfds > SPAWN_MAX_FDS) {
		errno = EINVAL;
		return -1;
	}
	memset(&b, 0, sizeof(b));
	b.magic = SPAWN_MAGIC;
	b.nfds = (uint32_t)nfds;
	snprintf(b.title, sizeof(b.title), "%s", title);
	memset(&msg, 0, sizeof(msg));
	memset(&u, 0, sizeof(u));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = u.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(b) ? 0 : -1;
}

static int
int_cmp(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Close every descriptor from 3 up but those in keep (sorted here). */
static void
close_all_but(int *keep, size_t n)
{
	unsigned lo = 3;

	qsort(keep, n, sizeof(*keep), int_cmp);
	for (size_t i = 0; i < n; i++) {
		if (keep[i] < (int)lo)
			continue;
		if ((unsigned)keep[i] > lo)
			close_range(lo, (unsigned)keep[i] - 1, 0);
		lo = (unsigned)keep[i] + 1;
	}
	close_range(lo, ~0U, 0);
}

/* Become the process delivery.h describes, then deliver batch after
 * batch until the queue process closes the channel. */
static void __attribute__((noreturn))
delivery_child(const struct mxconf *conf, pid_t spawner, const char *title,
    const char *user, int report, int *fds, int nfds)
{
	struct sandbox sb = {
		.title = "delivery",
		.user = user,
		.filter = SANDBOX_FILTER_DELIVERY,
	};
	int keep[SPAWN_MAX_FDS + 1], batch[SPAWN_MAX_FDS], null;
	char name[sizeof(((struct spawn_batch *)0)->title)];
	sigset_t none;

	/* Die with the spawner, which dies with the queue process: an
	 * orphan could deliver what a restarted queue delivers again. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != spawner)
		_exit(1);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	closelog();
	for (int i = 0; i < nfds; i++)
		keep[i] = batch[i] = fds[i];
	keep[nfds] = report;
	close_all_but(keep, (size_t)nfds + 1);
	report_fd = report;
	delivery_note_fd = report;
	if ((null = open("/dev/null", O_RDONLY)) >= 0 && null != STDIN_FILENO) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	log_set_role("delivery");
	proc_title_set("mxgated: %s", title);
	/* Entered as root, the directory mxgated started from stays
	 * reachable below it after the switch of user, whatever is above
	 * (delivery.h); else "/". */
	if (conf->start_dir != NULL && chdir(conf->start_dir) == 0)
		delivery_start_dir = conf->start_dir;
	else if (chdir("/") < 0)
		fatal("chdir /");
	/* The delivery user: it cannot open the queue; the delivery
	 * deny-list, inherited by the commands it runs. */
	sandbox_enter(&sb);

	do {
		run_batch(conf, batch, nfds);
		proc_title_set("mxgated: delivery (idle)");
		if ((nfds = next_batch(conf, batch, name, sizeof(name))) > 0)
			proc_title_set("mxgated: %s", name);
	} while (nfds > 0);
	relay_finish();
	/* No atexit handlers, no sanitizer leak report on the spawner's
	 * copied heap. */
	_exit(0);
}

/* ---- the spawner ---- */

static struct {
	const struct mxconf *conf;
	struct mxconf *reloaded;        /* conf, once a reload replaced it */
	int    queue_fd;
	int    fds[SPAWN_MAX_FDS];
	int    nfds;
	pid_t *pids;
	size_t npids, cap;
} sp;

static void
drop_fds(void)
{
	for (int i = 0; i < sp.nfds; i++)
		close(sp.fds[i]);
	sp.nfds = 0;
}

static bool
ours(pid_t pid)
{
	for (size_t i = 0; i < sp.npids; i++) {
		if (sp.pids[i] == pid)
			return true;
	}
	return false;
}

/*
 * The user a request may name: the configured delivery user, or one a
 * route names (user=), which mxgated checked at start.  Anything else is
 * a queue process that is not itself.
 */
static const char *
allowed_user(const char *requested)
{
	if (requested[0] == '\0')
		return sp.conf->delivery_user;
	for (size_t i = 0; i < sp.conf->nroutes; i++) {
		const char *u = sp.conf->routes[i].user;

		if (u != NULL && strcmp(u, requested) == 0)
			return u;
	}
	return NULL;
}

static void
spawn(const struct ipc_spawn *req, int report)
{
	struct ipc_spawned res = { .request = req->request, .pid = -1 };
	char title[sizeof(req->title)], want[sizeof(req->user)];
	const char *user;
	pid_t pid = -1;

	memcpy(title, req->title, sizeof(title));
	title[sizeof(title) - 1] = '\0';
	memcpy(want, req->user, sizeof(want));
	want[sizeof(want) - 1] = '\0';
	if (report < 0 || req->nfds != (uint32_t)sp.nfds || sp.nfds < 2)
		log_error("spawn request %llu with %d of %u descriptors",
		    (unsigned long long)req->request, sp.nfds, req->nfds);
	else if ((user = allowed_user(want)) == NULL)
		log_error("spawn request %llu for user \"%s\", which no route"
		    " names: refused", (unsigned long long)req->request, want);
	else if ((pid = fork()) < 0)
		log_error("fork: %s", strerror(errno));
	else if (pid == 0)
		delivery_child(sp.conf, getppid(), title, user, report, sp.fds,
		    sp.nfds);
	if (pid > 0) {
		if (sp.npids == sp.cap) {
			sp.cap = sp.cap ? sp.cap * 2 : 16;
			sp.pids = xrealloc(sp.pids, sp.cap * sizeof(*sp.pids));
		}
		sp.pids[sp.npids++] = pid;
		res.pid = (int32_t)pid;
	}
	if (report >= 0)
		close(report);
	drop_fds();
	if (ipc_send(sp.queue_fd, IPC_SPAWNED, &res, sizeof(res), -1) < 0)
		log_warn("answering the queue process: %s", strerror(errno));
}

static void
reload_error(const char *msg)
{
	log_error("reload: %s", msg);
}

/* A reload, passed on by the queue process: the next delivery processes
 * get the new routes, upstreams and timeouts (config.h). */
static void
reconfigure(int fd)
{
	struct mxconf *c = NULL;
	char *text = ipc_text_read(fd);
	enum log_level level;

	if (text != NULL)
		c = config_load_checked(text, sp.conf->path,
		    sp.conf->start_dir, reload_error);
	else
		log_error("reload: reading the configuration: %s",
		    strerror(errno));
	free(text);
	if (c == NULL) {
		log_error("reload: deliveries keep the old configuration");
		return;
	}
	free(c->queue_dir);
	c->queue_dir = xstrdup(sp.conf->queue_dir);
	if (sp.conf->start_dir != NULL)
		c->start_dir = xstrdup(sp.conf->start_dir);
	if (log_level_parse(c->log_level, &level) == 0)
		log_set_level(level);
	if (sp.reloaded != NULL)
		config_free(sp.reloaded);
	sp.conf = sp.reloaded = c;
}

/* false once the queue process has gone. */
static bool
read_queue(void)
{
	union {
		struct ipc_spawn spawn;
		struct ipc_spawned kill;
	} u;
	enum ipc_type type;
	int fd, r;

	while ((r = ipc_recv(sp.queue_fd, &type, &u, sizeof(u), &fd)) > 0) {
		switch (type) {
		case IPC_SPAWN_FD:
			if (fd < 0 || sp.nfds == SPAWN_MAX_FDS)
				fatalx("SPAWN_FD without a descriptor or too many");
			sp.fds[sp.nfds++] = fd;
			break;
		case IPC_SPAWN:
			spawn(&u.spawn, fd);
			break;
		case IPC_CONFIG:
			if (fd < 0)
				fatalx("CONFIG without a descriptor");
			reconfigure(fd);
			close(fd);
			break;
		case IPC_SPAWN_KILL:
			if (fd >= 0)
				close(fd);
			if (u.kill.pid > 0 && ours((pid_t)u.kill.pid))
				kill((pid_t)u.kill.pid, SIGKILL);
			break;
		default:
			fatalx("unexpected message %d from the queue process",
			    type);
		}
	}
	return r != 0;
}

static void
reap(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < sp.npids; i++) {
			if (sp.pids[i] == pid) {
				sp.pids[i] = sp.pids[--sp.npids];
				break;
			}
		}
		if (WIFSIGNALED(status))
			log_warn("delivery pid %ld killed by signal %d",
			    (long)pid, WTERMSIG(status));
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			log_warn("delivery pid %ld exited with status %d",
			    (long)pid, WEXITSTATUS(status));
	}
}

int
spawner_main(const struct mxconf *conf, int queue_fd)
{
	static const int handled[] = { SIGCHLD, SIGTERM, SIGINT };
	struct pollfd pfd[2];
	bool queue_there = true;
	int sigfd;

	memset(&sp, 0, sizeof(sp));
	sp.conf = conf;
	sp.queue_fd = queue_fd;
	sigfd = proc_signalfd(handled, (int)ARRAY_LEN(handled));
	/* Nothing else: no file, no network; only fork on request, with
	 * the capabilities that takes. */
	sandbox_spawner();
	while (queue_there) {
		struct signalfd_siginfo si;

		pfd[0] = (struct pollfd){ .fd = queue_fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll");
		}
		while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGCHLD)
				reap();
			else
				queue_there = false;
		}
		if (pfd[0].revents != 0 && !read_queue())
			queue_there = false;
	}
	/* The queue process has gone (or we are told to stop): what it
	 * started must not deliver behind the next one. */
	for (size_t i = 0; i < sp.npids; i++)
		kill(sp.pids[i], SIGKILL);
	while (sp.npids > 0 && waitpid(-1, NULL, 0) > 0)
		sp.npids--;
	config_free(sp.reloaded);
	log_info("stopped");
	return 0;
}
