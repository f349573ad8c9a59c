/*
 * master — see master.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "smtp/checks.h"
#include "common/event.h"
#include "common/ipc.h"
#include "common/log.h"
#include "master/master.h"
#include "master/reload.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "queue/queue.h"
#include "common/tls.h"
#include "common/util.h"
#include "delivery/spawner.h"
#include "lookup/lookup.h"
#include "smtp/worker.h"
#include "common/metrics.h"
#include "metrics/exporter.h"

#define RESPAWN_MAX_DELAY_MS   60000
#define RESPAWN_STABLE_MS      10000   /* lived this long: restart at once */
#define STOP_EXTRA_MS          10000   /* after the grace, SIGKILL */

enum child_role { CHILD_WORKER, CHILD_QUEUE, CHILD_LOOKUP, CHILD_SPAWNER,
	CHILD_METRICS };

struct child {
	enum child_role role;
	int       slot;
	pid_t     pid;            /* 0 when not running */
	int       fd;             /* master's end of the channel, -1 */
	uint64_t  started_ms;
	uint64_t  respawn_at_ms;  /* 0: no respawn scheduled */
	unsigned  quick_deaths;   /* consecutive deaths before RESPAWN_STABLE_MS */
	unsigned  nconns;         /* workers: sessions handed to it */
	bool      active;         /* workers: gets connections, respawned */
	bool      retiring;       /* workers: replaced by a reload, draining */
	/* workers: sockets waiting for room in the channel (a burst of
	 * connections can outrun a busy worker's reading) */
	struct ipc_outbox backlog;
};

/* Past this many sockets waiting for one worker, the master stops
 * accepting and lets the kernel's listen queue hold the rest. */
#define HANDOFF_BACKLOG_PAUSE 256

/* One accepted connection, until its worker reports it closed. */
struct conn {
	uint64_t  id;             /* 0 when the slot is free */
	int       worker;
	unsigned  ip_hash;
	bool      counted;        /* in its address's ip_count */
	bool      proxy_pending;  /* waiting for the client a PROXY header
	                           * names; ip is the balancer's till then */
	char      ip[64];
	char      key[80];        /* what it counts under (client_key()) */
};

/*
 * greet_pause's pass cache (Postfix postscreen's cache): a client address
 * that waited for the whole greeting, until when it skips the pause.  In
 * the master, which sees every connection, so a client that passed on
 * one worker is not made to wait on another.
 */
struct greet_pass {
	struct greet_pass *next;
	uint64_t  until_ms;
	char      ip[64];
};

#define GREET_PASS_MAX   100000        /* addresses remembered at most */
#define GREET_PRUNE_MS   60000         /* expired ones go this often */

struct ip_count {
	struct ip_count *next;
	unsigned  count;
	char      ip[64];
};

#define IP_BUCKETS 4096

static struct {
	struct ratelimit *conn_rate;     /* rate_limits.connections_per_minute */
	struct ratelimit *auth_rate;     /* rate_limits.auth_failures_per_minute */
	struct mxconf *conf;            /* the running one (a reload's) */
	struct mxconf *first_conf;      /* mxgated's, freed by it */
	struct event_loop *loop;
	int        sigfd;
	int       *listen_fds;
	struct child *workers;          /* nslots: active ones and their */
	int        nworkers;            /* replacements after a reload */
	int        nslots;
	struct child queue;
	struct child lookup;            /* when a listener offers AUTH */
	struct child spawner;           /* the queue's delivery spawner */
	struct child exporter;          /* metrics.listen: the exporter */
	int        metrics_fd;          /* its listener, -1 when off */
	int        metrics_slots;       /* smtp blocks in the store */
	bool       lookup_on;
	struct conn *conns;
	size_t     nconn_slots;
	size_t     conn_free_hint;
	unsigned   nconns;
	uint32_t   conn_generation;
	struct ip_count *ip_buckets[IP_BUCKETS];
	struct greet_pass *pass_buckets[IP_BUCKETS];
	size_t     npass;
	uint64_t   pass_prune_ms;
	bool       stress;              /* stress mode (stress.threshold) */
	bool       accept_paused;
	bool       stopping;
	uint64_t   stop_deadline_ms;
	bool       killed;
	unsigned   reloads;             /* SIGHUPs acted on, for the title */
} m;

/* The loop's callbacks (event.h); arg: the listener's or the worker's
 * index. */
static event_fn on_listener, on_signal, on_worker, on_queue, on_lookup;
#define INDEX_ARG(i) ((void *)(intptr_t)(i))

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	/* Every session is a descriptor in a worker; a deployment that
	 * expects thousands of connections needs the hard limit. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("raising the descriptor limit: %s", strerror(errno));
	}
}

static int
bind_listener(const struct listener_conf *l)
{
	int fd, on = 1;

	fd = socket(l->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (l->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	/* Accepted sockets inherit it.  A session writes whatever replies
	 * it has at once; with Nagle, the reply that ends a pipelined BDAT
	 * group (after the commit) waited for the ACK of the ones before
	 * it, which a client that has nothing to send delays 40 ms. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&l->ss, l->ss_len) < 0 ||
	    listen(fd, 4096) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* ---- per-IP connection counts ---- */

static unsigned
ip_hash(const char *ip)
{
	return hash_string(ip) % IP_BUCKETS;
}

static struct ip_count *
ip_lookup(const char *ip, unsigned h, bool create)
{
	struct ip_count *c;

	for (c = m.ip_buckets[h]; c != NULL; c = c->next) {
		if (strcmp(c->ip, ip) == 0)
			return c;
	}
	if (!create)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	strlcpy_mx(c->ip, ip, sizeof(c->ip));
	c->next = m.ip_buckets[h];
	m.ip_buckets[h] = c;
	return c;
}

static void
ip_release(const char *ip, unsigned h)
{
	struct ip_count **pp, *c;

	for (pp = &m.ip_buckets[h]; (c = *pp) != NULL; pp = &c->next) {
		if (strcmp(c->ip, ip) != 0)
			continue;
		if (--c->count == 0) {
			*pp = c->next;
			free(c);
		}
		return;
	}
}

/* ---- the greeting pause's pass cache ---- */

static bool
greet_passed(const char *ip)
{
	struct greet_pass **pp, *p;
	uint64_t now = monotonic_ms();

	for (pp = &m.pass_buckets[ip_hash(ip)]; (p = *pp) != NULL;
	    pp = &p->next) {
		if (strcmp(p->ip, ip) != 0)
			continue;
		if (p->until_ms > now)
			return true;
		*pp = p->next;
		free(p);
		m.npass--;
		return false;
	}
	return false;
}

static void
greet_pass_record(const char *ip)
{
	unsigned h = ip_hash(ip);
	struct greet_pass *p;
	uint64_t until = monotonic_ms() +
	    (uint64_t)m.conf->greet_pass_time * 1000;

	if (m.conf->greet_pass_time == 0)
		return;
	for (p = m.pass_buckets[h]; p != NULL; p = p->next) {
		if (strcmp(p->ip, ip) == 0) {
			p->until_ms = until;
			return;
		}
	}
	/* Full: this one waits again next time, which costs it seconds,
	 * while an unbounded cache could cost the master its memory. */
	if (m.npass >= GREET_PASS_MAX)
		return;
	p = xcalloc(1, sizeof(*p));
	strlcpy_mx(p->ip, ip, sizeof(p->ip));
	p->until_ms = until;
	p->next = m.pass_buckets[h];
	m.pass_buckets[h] = p;
	m.npass++;
}

static void
greet_pass_prune(uint64_t now)
{
	if (now < m.pass_prune_ms)
		return;
	m.pass_prune_ms = now + GREET_PRUNE_MS;
	for (size_t h = 0; h < IP_BUCKETS; h++) {
		struct greet_pass **pp = &m.pass_buckets[h], *p;

		while ((p = *pp) != NULL) {
			if (p->until_ms <= now) {
				*pp = p->next;
				free(p);
				m.npass--;
			} else
				pp = &p->next;
		}
	}
}

/* ---- stress mode ---- */

static void send_to_worker(struct child *w, enum ipc_type type,
    const void *msg, size_t len);

/*
 * Postfix's stress mode: past stress.threshold percent of the slots,
 * every worker applies the shorter stress timeouts and handoff() the
 * fair share (stress_next(), checks.h, says when it begins and ends).
 */
static void
stress_update(void)
{
	unsigned th = m.conf->stress_threshold;
	bool on = stress_next(m.stress, m.nconns, m.conf->max_connections, th);

	if (on == m.stress)
		return;
	m.stress = on;
	/* The workers first: whoever reads the log line may count on
	 * them knowing. */
	struct ipc_stress msg = { .on = on };
	for (int i = 0; i < m.nslots; i++)
		send_to_worker(&m.workers[i], IPC_STRESS, &msg, sizeof(msg));
	if (on)
		log_warn("stress mode entered: %u of %u connections in use "
		    "(stress.threshold %u%%): timeouts command=%us data=%us, "
		    "greet_pause=%us, errors=%u, fair share %u%% of the free "
		    "slots per address",
		    m.nconns, m.conf->max_connections, th,
		    m.conf->stress_timeout_command,
		    m.conf->stress_timeout_data,
		    stress_greet_pause(m.conf),
		    stress_max_errors(m.conf),
		    m.conf->fair_share);
	else
		log_info("stress mode left: %u of %u connections in use",
		    m.nconns, m.conf->max_connections);
}

/* ---- connection table ---- */

/* conn ids carry their slot in the low 32 bits and a generation above,
 * so that a late CONN_CLOSED for a reused slot is recognised. */
static struct conn *
conn_alloc(void)
{
	size_t i;

	for (i = 0; i < m.nconn_slots; i++) {
		size_t s = (m.conn_free_hint + i) % m.nconn_slots;
		if (m.conns[s].id == 0) {
			m.conn_free_hint = s + 1;
			m.conns[s].id = ((uint64_t)++m.conn_generation << 32) | s;
			return &m.conns[s];
		}
	}
	size_t old = m.nconn_slots;
	m.nconn_slots = old ? old * 2 : 1024;
	m.conns = xrealloc(m.conns, m.nconn_slots * sizeof(*m.conns));
	memset(m.conns + old, 0, (m.nconn_slots - old) * sizeof(*m.conns));
	m.conns[old].id = ((uint64_t)++m.conn_generation << 32) | old;
	m.conn_free_hint = old + 1;
	return &m.conns[old];
}

static void
conn_release(struct conn *c)
{
	if (c->counted)
		ip_release(c->key, c->ip_hash);
	if (c->worker >= 0 && c->worker < m.nslots && m.workers[c->worker].nconns > 0)
		m.workers[c->worker].nconns--;
	m.nconns--;
	metrics_set(MC_SESSIONS, m.nconns);
	c->id = 0;
	c->counted = c->proxy_pending = false;
	stress_update();
}

static struct conn *
conn_find(uint64_t id)
{
	size_t slot = (size_t)(id & 0xffffffffu);

	return slot < m.nconn_slots && m.conns[slot].id == id ?
	    &m.conns[slot] : NULL;
}

static void
conn_closed(uint64_t id)
{
	struct conn *c = conn_find(id);

	if (c != NULL)
		conn_release(c);
}

/* A worker that died took its sessions with it. */
static void
conns_release_worker(int worker)
{
	for (size_t i = 0; i < m.nconn_slots; i++) {
		if (m.conns[i].id != 0 && m.conns[i].worker == worker)
			conn_release(&m.conns[i]);
	}
}

/* ---- children ---- */

/*
 * Make fds[i] become descriptor 3+i and close every other descriptor
 * above 2, so a child holds exactly what its role needs.
 */
static void
child_keep_fds(int *fds, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		int high = fcntl(fds[i], F_DUPFD_CLOEXEC, 1000);
		if (high < 0)
			fatal("dup");
		fds[i] = high;
	}
	for (i = 0; i < n; i++) {
		if (fds[i] < 0) {
			/* An absent one leaves no inherited descriptor (a
			 * listener, say) at its place. */
			close(3 + i);
			continue;
		}
		if (dup2(fds[i], 3 + i) < 0)
			fatal("dup2");
		fds[i] = 3 + i;
	}
	close_range((unsigned)(3 + n), ~0U, 0);
}

static void
child_prepare(const char *title)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);
	proc_title_set("mxgated: %s", title);
}

static const char *
child_name(const struct child *c)
{
	return c->role == CHILD_QUEUE ? "queue" :
	    c->role == CHILD_LOOKUP ? "lookup" :
	    c->role == CHILD_SPAWNER ? "spawner" :
	    c->role == CHILD_METRICS ? "metrics" : "smtp";
}

static void
child_died_logged(struct child *c, int status)
{
	const char *name = child_name(c);

	if (c->retiring && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_info("%s process %ld retired", name, (long)c->pid);
	else if (m.stopping && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_info("%s process %ld stopped", name, (long)c->pid);
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		log_warn("%s process %ld killed by signal %d (SIGSYS: a system"
		    " call its seccomp filter forbids)", name, (long)c->pid,
		    WTERMSIG(status));
	else if (WIFSIGNALED(status))
		log_warn("%s process %ld killed by signal %d", name, (long)c->pid,
		    WTERMSIG(status));
	else
		log_warn("%s process %ld exited with status %d", name,
		    (long)c->pid, WEXITSTATUS(status));
}

static void
schedule_respawn(struct child *c)
{
	uint64_t now = monotonic_ms(), delay;

	if (now - c->started_ms >= RESPAWN_STABLE_MS)
		c->quick_deaths = 0;
	if (c->quick_deaths == 0)
		delay = 0;
	else {
		delay = 1000ULL << (c->quick_deaths < 7 ? c->quick_deaths - 1 : 6);
		if (delay > RESPAWN_MAX_DELAY_MS)
			delay = RESPAWN_MAX_DELAY_MS;
	}
	c->quick_deaths++;
	c->respawn_at_ms = now + delay;
	if (delay > 0)
		log_warn("%s process respawns in %llu ms", child_name(c),
		    (unsigned long long)delay);
}

static void spawn_queue(void);
static void spawn_lookup(void);
static void spawn_worker(int slot);

static void
close_child_channel(struct child *c)
{
	/* Their connection slots go with conns_release_worker(). */
	ipc_outbox_clear(&c->backlog);
	if (c->fd >= 0) {
		event_del(m.loop, c->fd);
		close(c->fd);
		c->fd = -1;
	}
}

/*
 * The delivery spawner (spawner.h), which stays root to start delivery
 * processes as the delivery user: one per queue process, started with
 * it; its deliveries die with it.  fd is its end of the channel to the
 * queue process.
 */
static void
spawn_spawner(int fd)
{
	pid_t pid;

	if (m.spawner.pid != 0)
		kill(m.spawner.pid, SIGKILL);   /* the last queue's */
	pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		int keep[1] = { fd };

		child_keep_fds(keep, 1);
		child_prepare("spawner");
		log_set_role("spawner");
		if (chdir("/") < 0)
			fatal("chdir /");
		tls_cleanup();
		exit(spawner_main(m.conf, keep[0]));
	}
	m.spawner.pid = pid;
	m.spawner.fd = -1;
	m.spawner.started_ms = monotonic_ms();
	log_info("spawner process %ld started", (long)pid);
}

/*
 * Fork the queue process with one fresh channel per running worker; each
 * worker gets its end through IPC_QUEUE_CHANNEL.  Its delivery spawner
 * is started first.
 */
static void
spawn_queue(void)
{
	int chan[2], spawn[2], i;
	int *qends, *wends;
	pid_t pid;

	if (ipc_socketpair(chan) < 0 || ipc_socketpair(spawn) < 0)
		fatal("socketpair");
	spawn_spawner(spawn[1]);
	close(spawn[1]);
	/* Allocated after the spawner's fork: it would inherit them with no
	 * pointer left to free them (LeakSanitizer says so at its exit). */
	qends = xcalloc((size_t)m.nslots, sizeof(int));
	wends = xcalloc((size_t)m.nslots, sizeof(int));
	for (i = 0; i < m.nslots; i++) {
		int pair[2];
		qends[i] = wends[i] = -1;
		if (m.workers[i].pid == 0 || m.workers[i].fd < 0)
			continue;
		if (ipc_socketpair(pair) < 0)
			fatal("socketpair");
		qends[i] = pair[0];
		wends[i] = pair[1];
	}

	pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		int n = 2 + m.nslots, *keep = xcalloc((size_t)n, sizeof(int));
		unsigned uid, gid;

		keep[0] = chan[1];
		for (i = 0; i < m.nslots; i++)
			keep[1 + i] = qends[i];
		keep[n - 1] = spawn[0];
		child_keep_fds(keep, n);
		child_prepare("queue");
		log_set_role("queue");
		metrics_bind(METRICS_BLOCK_QUEUE);
		metrics_inc(MC_QUEUE_STARTS);
		if (mkdir(m.conf->queue_dir, 0700) < 0 && errno != EEXIST)
			fatal("%s: mkdir", m.conf->queue_dir);
		if (geteuid() == 0 && m.conf->queue_user != NULL) {
			if (proc_lookup_user(m.conf->queue_user, NULL, &uid,
			    &gid) < 0)
				exit(1);
			if (chown(m.conf->queue_dir, uid, gid) < 0 ||
			    chmod(m.conf->queue_dir, 0700) < 0)
				fatal("%s: chown", m.conf->queue_dir);
		}
		/* Relative to the queue directory from now on, entered while
		 * still root: the unprivileged process needs no search
		 * permission on its parents (a queue inside /root), and
		 * SQLite keeps the name relative (queue_vfs.h).  Started as
		 * root, it is the process's root too: the deliveries are
		 * started by the spawner, outside. */
		if (chdir(m.conf->queue_dir) < 0)
			fatal("%s: chdir", m.conf->queue_dir);
		/* The queue serves no TLS: no reason to keep the keys. */
		tls_cleanup();
		sandbox_enter(&(struct sandbox){ .title = "queue",
		    .user = m.conf->queue_user, .root = m.conf->queue_dir,
		    .filter = SANDBOX_FILTER_QUEUE });
		free(qends);
		free(wends);
		int status = queue_main(m.conf, keep[0], keep + 1, m.nslots,
		    keep[n - 1]);
		free(keep);
		exit(status);
	}

	close(chan[1]);
	close(spawn[0]);
	m.queue.pid = pid;
	m.queue.fd = chan[0];
	m.queue.started_ms = monotonic_ms();
	m.queue.respawn_at_ms = 0;
	event_add(m.loop, m.queue.fd, EPOLLIN, on_queue, NULL);
	for (i = 0; i < m.nslots; i++) {
		if (qends[i] < 0)
			continue;
		close(qends[i]);
		if (ipc_send(m.workers[i].fd, IPC_QUEUE_CHANNEL, NULL, 0, wends[i]) < 0)
			log_warn("worker %d: cannot pass the queue channel: %s", i,
			    strerror(errno));
		close(wends[i]);
	}
	free(qends);
	free(wends);
	log_info("queue process %ld started", (long)pid);
}

/*
 * Fork the credentials lookup process (lookup.h) with one fresh channel
 * per running worker; each worker gets its end through
 * IPC_LOOKUP_CHANNEL.
 */
static void
spawn_lookup(void)
{
	int chan[2], i;
	int *lends = xcalloc((size_t)m.nslots, sizeof(int));
	int *wends = xcalloc((size_t)m.nslots, sizeof(int));
	pid_t pid;

	if (ipc_socketpair(chan) < 0)
		fatal("socketpair");
	for (i = 0; i < m.nslots; i++) {
		int pair[2];
		lends[i] = wends[i] = -1;
		if (m.workers[i].pid == 0 || m.workers[i].fd < 0)
			continue;
		if (ipc_socketpair(pair) < 0)
			fatal("socketpair");
		lends[i] = pair[0];
		wends[i] = pair[1];
	}

	pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		int n = 1 + m.nslots, *keep = xcalloc((size_t)n, sizeof(int));

		keep[0] = chan[1];
		for (i = 0; i < m.nslots; i++)
			keep[1 + i] = lends[i];
		child_keep_fds(keep, n);
		child_prepare("lookup");
		log_set_role("lookup");
		if (chdir("/") < 0)
			fatal("chdir /");
		/* It serves no TLS: no reason to keep the keys. */
		tls_cleanup();
		exit(lookup_main(m.conf, keep[0], keep + 1, m.nslots));
	}

	close(chan[1]);
	m.lookup.pid = pid;
	m.lookup.fd = chan[0];
	m.lookup.started_ms = monotonic_ms();
	m.lookup.respawn_at_ms = 0;
	event_add(m.loop, m.lookup.fd, EPOLLIN, on_lookup, NULL);
	for (i = 0; i < m.nslots; i++) {
		if (lends[i] < 0)
			continue;
		close(lends[i]);
		if (ipc_send(m.workers[i].fd, IPC_LOOKUP_CHANNEL, NULL, 0,
		    wends[i]) < 0)
			log_warn("worker %d: cannot pass the lookup channel: %s",
			    i, strerror(errno));
		close(wends[i]);
	}
	free(lends);
	free(wends);
	log_info("lookup process %ld started", (long)pid);
}

static void
spawn_worker(int slot)
{
	struct child *w = &m.workers[slot];
	int chan[2], qpair[2] = { -1, -1 }, lpair[2] = { -1, -1 };
	pid_t pid;

	if (ipc_socketpair(chan) < 0)
		fatal("socketpair");
	if (m.queue.pid != 0 && m.queue.fd >= 0) {
		if (ipc_socketpair(qpair) < 0)
			fatal("socketpair");
	}
	if (m.lookup.pid != 0 && m.lookup.fd >= 0) {
		if (ipc_socketpair(lpair) < 0)
			fatal("socketpair");
	}

	pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		int keep[3] = { chan[1], qpair[1], lpair[1] };

		child_keep_fds(keep, 3);
		child_prepare("smtp");
		/* A reload's "retire" (worker.c) must not kill a worker
		 * that has not set up its signals yet. */
		sigset_t usr1;
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr1, NULL);
		log_set_role("smtp");
		/* Slots past the first ones (reload.h: generations that
		 * overlap) share blocks: workers only add to counters. */
		metrics_bind(METRICS_BLOCK_SMTP + slot % m.metrics_slots);
		metrics_inc(MC_WORKER_STARTS);
		/* worker_main() confines itself (worker_sandbox()). */
		exit(worker_main(m.conf, slot, keep[0], keep[1], keep[2]));
	}

	close(chan[1]);
	w->pid = pid;
	w->fd = chan[0];
	w->started_ms = monotonic_ms();
	w->respawn_at_ms = 0;
	w->nconns = 0;
	event_add(m.loop, w->fd, EPOLLIN, on_worker, INDEX_ARG(slot));
	if (qpair[0] >= 0) {
		struct ipc_worker_channel wc = { .worker_slot = (uint32_t)slot };

		close(qpair[1]);
		if (ipc_send(m.queue.fd, IPC_WORKER_CHANNEL, &wc, sizeof(wc), qpair[0]) < 0)
			log_warn("cannot pass worker %d's channel to the queue: %s",
			    slot, strerror(errno));
		close(qpair[0]);
	}
	if (lpair[0] >= 0) {
		struct ipc_worker_channel wc = { .worker_slot = (uint32_t)slot };

		close(lpair[1]);
		if (ipc_send(m.lookup.fd, IPC_WORKER_CHANNEL, &wc, sizeof(wc),
		    lpair[0]) < 0)
			log_warn("cannot pass worker %d's channel to the lookup"
			    " process: %s", slot, strerror(errno));
		close(lpair[0]);
	}
	if (m.stress) {
		struct ipc_stress msg = { .on = 1 };
		send_to_worker(w, IPC_STRESS, &msg, sizeof(msg));
	}
	log_info("smtp process %ld started (slot %d)", (long)pid, slot);
}

/*
 * Fork the exporter (exporter.h) with the metrics listener alone; it
 * confines itself before it reads a byte.
 */
static void
spawn_exporter(void)
{
	pid_t pid = fork();

	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		int keep[1] = { m.metrics_fd };

		child_keep_fds(keep, 1);
		child_prepare("metrics");
		log_set_role("metrics");
		tls_cleanup();
		exit(exporter_main(m.conf, keep[0]));
	}
	m.exporter.pid = pid;
	m.exporter.started_ms = monotonic_ms();
	m.exporter.respawn_at_ms = 0;
	log_info("metrics process %ld started", (long)pid);
}

/* metrics.listen: the counter store and the exporter's listener, made
 * before anything forks so that every process inherits the store. */
static int
metrics_start(void)
{
	struct sockaddr_storage ss;
	const char *why;
	unsigned len;
	int on = 1;

	m.metrics_fd = -1;
	m.metrics_slots = m.nslots;
	if (m.conf->metrics_listen == NULL)
		return 0;
	if (metrics_listen_parse(m.conf->metrics_listen, &ss, &len, &why) < 0) {
		log_error("metrics.listen: %s", why);
		return -1;
	}
	if (metrics_init(m.nslots) < 0)
		return -1;
	metrics_bind(METRICS_BLOCK_MASTER);
	m.metrics_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (m.metrics_fd < 0)
		return -1;
	setsockopt(m.metrics_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ss.ss_family == AF_INET6)
		setsockopt(m.metrics_fd, IPPROTO_IPV6, IPV6_V6ONLY, &on,
		    sizeof(on));
	if (bind(m.metrics_fd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(m.metrics_fd, 64) < 0) {
		log_error("metrics.listen: %s: %s", m.conf->metrics_listen,
		    strerror(errno));
		return -1;
	}
	log_info("metrics on http://%s/metrics", m.conf->metrics_listen);
	return 0;
}

static struct child *
child_by_pid(pid_t pid)
{
	if (m.queue.pid == pid)
		return &m.queue;
	if (m.lookup.pid == pid)
		return &m.lookup;
	if (m.spawner.pid == pid)
		return &m.spawner;
	if (m.exporter.pid == pid && pid != 0)
		return &m.exporter;
	for (int i = 0; i < m.nslots; i++) {
		if (m.workers[i].pid == pid)
			return &m.workers[i];
	}
	return NULL;
}

static void
reap_children(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = child_by_pid(pid);

		if (c == NULL)
			continue;
		child_died_logged(c, status);
		close_child_channel(c);
		c->pid = 0;
		c->retiring = false;
		if (c->role == CHILD_WORKER)
			conns_release_worker(c->slot);
		/* The queue process goes with its spawner, and both are
		 * started again together. */
		if (c->role == CHILD_SPAWNER) {
			if (m.queue.pid != 0 && !m.stopping)
				kill(m.queue.pid, SIGTERM);
			continue;
		}
		if (!m.stopping && (c->role != CHILD_WORKER || c->active))
			schedule_respawn(c);
	}
}

static void
respawn_due(uint64_t now)
{
	if (m.stopping)
		return;
	if (m.queue.pid == 0 && m.queue.respawn_at_ms != 0 &&
	    m.queue.respawn_at_ms <= now)
		spawn_queue();
	if (m.lookup_on && m.lookup.pid == 0 && m.lookup.respawn_at_ms != 0 &&
	    m.lookup.respawn_at_ms <= now)
		spawn_lookup();
	if (m.metrics_fd >= 0 && m.exporter.pid == 0 &&
	    m.exporter.respawn_at_ms != 0 && m.exporter.respawn_at_ms <= now)
		spawn_exporter();
	for (int i = 0; i < m.nslots; i++) {
		struct child *w = &m.workers[i];
		if (w->active && w->pid == 0 && w->respawn_at_ms != 0 &&
		    w->respawn_at_ms <= now)
			spawn_worker(i);
	}
}

static int
next_timeout_ms(uint64_t now)
{
	uint64_t next = UINT64_MAX;

	if (m.queue.pid == 0 && m.queue.respawn_at_ms != 0)
		next = m.queue.respawn_at_ms;
	if (m.lookup_on && m.lookup.pid == 0 && m.lookup.respawn_at_ms != 0 &&
	    m.lookup.respawn_at_ms < next)
		next = m.lookup.respawn_at_ms;
	if (m.metrics_fd >= 0 && m.exporter.pid == 0 &&
	    m.exporter.respawn_at_ms != 0 && m.exporter.respawn_at_ms < next)
		next = m.exporter.respawn_at_ms;
	for (int i = 0; i < m.nslots; i++) {
		if (m.workers[i].active && m.workers[i].pid == 0 &&
		    m.workers[i].respawn_at_ms != 0 &&
		    m.workers[i].respawn_at_ms < next)
			next = m.workers[i].respawn_at_ms;
	}
	if (m.stopping && m.stop_deadline_ms < next)
		next = m.stop_deadline_ms;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now);
}

/* ---- accepting ---- */

static void
refuse(int fd, const char *reply)
{
	/* Best effort: the socket is fresh, the reply fits its buffer. */
	if (write(fd, reply, strlen(reply)) < 0)
		log_debug("writing refusal: %s", strerror(errno));
	close(fd);
}

static int
least_loaded_worker(void)
{
	int best = -1;

	for (int i = 0; i < m.nslots; i++) {
		if (!m.workers[i].active || m.workers[i].pid == 0 ||
		    m.workers[i].fd < 0)
			continue;
		if (best < 0 || m.workers[i].nconns < m.workers[best].nconns)
			best = i;
	}
	return best;
}

/*
 * rate_limits.connections_per_minute is counted here, where every
 * connection arrives, so one client has one count whichever worker gets
 * it.  Trusted clients are not counted.
 */
static bool
rate_exceeded(const char *ip, const char *key)
{
	uint64_t now;

	if (m.conn_rate == NULL || netlist_contains(m.conf->trusted_nets, ip))
		return false;
	now = monotonic_ms();
	ratelimit_tick(m.conn_rate, now);
	return ratelimit_hit(m.conn_rate, key, now) == RATE_OVER;
}

/*
 * rate_limits.auth_failures_per_minute: the workers report each failed
 * AUTH; a client that has reached the limit, on whatever worker, gets no
 * new connection until its rate falls.  Trusted clients are not counted.
 */
static void
auth_failure(uint64_t conn_id)
{
	size_t slot = (size_t)(conn_id & 0xffffffffu);
	const char *ip;
	uint64_t now;

	if (m.auth_rate == NULL || slot >= m.nconn_slots ||
	    m.conns[slot].id != conn_id)
		return;
	ip = m.conns[slot].ip;
	if (netlist_contains(m.conf->trusted_nets, ip))
		return;
	now = monotonic_ms();
	ratelimit_tick(m.auth_rate, now);
	if (ratelimit_hit(m.auth_rate, m.conns[slot].key, now) == RATE_OK &&
	    ratelimit_reached(m.auth_rate, m.conns[slot].key, now))
		log_warn("client=%s reached %u failed authentications per"
		    " minute: new connections refused", ip,
		    m.conf->rate_auth_failures);
}

static bool
auth_failures_exceeded(const char *key)
{
	return m.auth_rate != NULL &&
	    ratelimit_reached(m.auth_rate, key, monotonic_ms());
}

static void
set_accepting(bool on)
{
	if (m.accept_paused == !on)
		return;
	m.accept_paused = !on;
	for (size_t i = 0; i < m.conf->nlisteners; i++) {
		if (m.listen_fds[i] >= 0)
			event_mod(m.loop, m.listen_fds[i], on ? EPOLLIN : 0);
	}
}

static void
update_accepting(void)
{
	size_t most = 0;

	for (int i = 0; i < m.nslots; i++) {
		if (m.workers[i].backlog.n > most)
			most = m.workers[i].backlog.n;
	}
	if (most >= HANDOFF_BACKLOG_PAUSE)
		set_accepting(false);
	else if (most < HANDOFF_BACKLOG_PAUSE / 2)
		set_accepting(true);
}

static void
worker_channel_events(struct child *w)
{
	if (w->fd >= 0)
		event_mod(m.loop, w->fd, EPOLLIN |
		    (ipc_outbox_waiting(&w->backlog) ? EPOLLOUT : 0));
}

/* The worker's channel has room again: hand over what waited, in order. */
static void
backlog_flush(struct child *w)
{
	if (w->fd >= 0 && ipc_outbox_flush(&w->backlog, w->fd) < 0)
		log_warn("handing connections to worker %d failed: %s",
		    w->slot, strerror(errno));
	if (!ipc_outbox_waiting(&w->backlog))
		worker_channel_events(w);
	update_accepting();
}

/* A message for a worker, in order behind the sockets waiting for it. */
static void
send_to_worker(struct child *w, enum ipc_type type, const void *msg,
    size_t len)
{
	bool waiting;

	if (w->pid == 0 || w->fd < 0)
		return;
	waiting = ipc_outbox_waiting(&w->backlog);
	if (ipc_outbox_send(&w->backlog, w->fd, type, msg, len, NULL, 0,
	    -1) < 0) {
		log_warn("worker %d: sending message %d failed: %s", w->slot,
		    type, strerror(errno));
		return;
	}
	if (!waiting && ipc_outbox_waiting(&w->backlog)) {
		worker_channel_events(w);
		update_accepting();
	}
}

/*
 * limits.fair_share under stress: an address gets one more slot only
 * while it holds fewer than that share of the free ones.  An address
 * holding none always gets one while any is free, so however many
 * connections a few addresses open, another address is still served;
 * the share shrinks as the slots fill, so the holders stop well before
 * the end (20 addresses at 10% stop with about a third still free).
 */
static bool
over_fair_share(const char *ip, unsigned holds, unsigned others)
{
	return m.stress && fair_share_reached(holds, others,
	    m.conf->max_connections, m.conf->fair_share) &&
	    !netlist_contains(m.conf->trusted_nets, ip);
}

/*
 * The limits on a client address, where every connection arrives (so
 * one count holds whichever worker serves it): per address, the fair
 * share, failed AUTHs, the rate, each counted under its key (an IPv6
 * client's network, limits.ipv6_prefix).  NULL: admitted; else the reply
 * that refuses it, logged.  others: connections in use besides this one.
 */
static const char *
admit_refusal(const char *ip, const char *key, struct ip_count *ipc,
    unsigned others)
{
	unsigned holds = ipc != NULL ? ipc->count : 0;

	if (strcmp(ip, key) != 0)
		log_debug("client=%s counted as %s", ip, key);
	if (m.conf->max_connections_per_ip > 0 &&
	    holds >= m.conf->max_connections_per_ip) {
		log_warn("client=%s refused: %u connections from it (limit)", ip,
		    holds);
		metrics_inc(MC_CONN_REFUSED_PER_IP);
		return "421 4.7.0 Too many connections from your address\r\n";
	}
	if (over_fair_share(ip, holds, others)) {
		log_warn("client=%s refused: %u connections from it, its fair "
		    "share under stress (%u of %u in use)", ip, holds, others,
		    m.conf->max_connections);
		metrics_inc(MC_CONN_REFUSED_FAIR_SHARE);
		return "421 4.7.0 Too many connections from your address, try"
		    " again later\r\n";
	}
	if (auth_failures_exceeded(key)) {
		log_warn("client=%s refused: over %u failed authentications per"
		    " minute (rate_limits)", ip, m.conf->rate_auth_failures);
		metrics_inc(MC_CONN_REFUSED_AUTH);
		return "421 4.7.0 Too many failed authentications from your"
		    " address, try again later\r\n";
	}
	if (rate_exceeded(ip, key)) {
		log_warn("client=%s refused: over %u connections per minute "
		    "(rate_limits)", ip, m.conf->rate_connections);
		metrics_inc(MC_CONN_REFUSED_RATE);
		return "421 4.7.0 Too many connections from your address, "
		    "try again later\r\n";
	}
	return NULL;
}

static uint32_t
greet_flags(const char *ip)
{
	return m.conf->greet_pause > 0 && greet_passed(ip) ?
	    CONN_F_GREET_PASSED : 0;
}

/*
 * A PROXY protocol listener takes connections from its balancers alone;
 * the limits on the client wait until the worker has read the header
 * (proxy_admit()).  The master reads no client byte itself: the header
 * is input from the internet's side like any other, parsed where such
 * input is parsed, in the confined worker, which only reports the
 * address it carried.
 */
static bool
proxy_allowed(const struct listener_conf *l, const char *ip)
{
	return netlist_contains(l->proxy_nets, ip);
}

static void
handoff(int fd, int listener, const struct sockaddr_storage *peer)
{
	struct ipc_conn_new msg;
	struct ip_count *ipc;
	struct conn *c;
	socklen_t len = sizeof(msg.local);
	const char *why;
	char ip[64], key[80];
	unsigned h;
	bool waiting, proxy = m.conf->listeners[listener].proxy_protocol;
	int w;

	sockaddr_ntop((const struct sockaddr *)peer, ip, sizeof(ip));
	if (m.nconns >= m.conf->max_connections) {
		log_warn("client=%s refused: %u connections (limit)", ip, m.nconns);
		metrics_inc(MC_CONN_REFUSED_LIMIT);
		refuse(fd, "421 4.7.0 Too many connections, try again later\r\n");
		return;
	}
	client_key(ip, m.conf->ipv6_prefix, key, sizeof(key));
	h = ip_hash(key);
	ipc = ip_lookup(key, h, false);
	if (proxy) {
		if (!proxy_allowed(&m.conf->listeners[listener], ip)) {
			log_warn("client=%s refused: not a load balancer of "
			    "this listener (proxy_from)", ip);
			metrics_inc(MC_CONN_REFUSED_PROXY);
			refuse(fd, "421 4.7.0 This port takes connections from "
			    "its load balancers only\r\n");
			return;
		}
	} else if ((why = admit_refusal(ip, key, ipc, m.nconns)) != NULL) {
		refuse(fd, why);
		return;
	}
	w = least_loaded_worker();
	if (w < 0) {
		log_warn("client=%s refused: no smtp process running", ip);
		metrics_inc(MC_CONN_REFUSED_NO_WORKER);
		refuse(fd, "421 4.3.2 Service not available, try again later\r\n");
		return;
	}

	memset(&msg, 0, sizeof(msg));
	c = conn_alloc();
	c->worker = w;
	c->ip_hash = h;
	strlcpy_mx(c->ip, ip, sizeof(c->ip));
	strlcpy_mx(c->key, key, sizeof(c->key));
	if (proxy) {
		c->proxy_pending = true;
		msg.flags = CONN_F_PROXY;
	} else {
		if (ipc == NULL)
			ipc = ip_lookup(key, h, true);
		ipc->count++;
		c->counted = true;
		msg.flags = greet_flags(ip);
	}
	m.nconns++;
	m.workers[w].nconns++;
	metrics_set(MC_SESSIONS, m.nconns);
	stress_update();

	msg.conn_id = c->id;
	msg.listener = (uint32_t)listener;
	memcpy(&msg.peer, peer, sizeof(msg.peer));
	getsockname(fd, (struct sockaddr *)&msg.local, &len);
	waiting = ipc_outbox_waiting(&m.workers[w].backlog);
	if (ipc_outbox_send(&m.workers[w].backlog, m.workers[w].fd,
	    IPC_CONN_NEW, &msg, sizeof(msg), NULL, 0, fd) < 0) {
		log_warn("client=%s: handing to worker %d failed: %s", ip, w,
		    strerror(errno));
		conn_release(c);
		metrics_inc(MC_CONN_REFUSED_NO_WORKER);
		refuse(fd, "421 4.3.2 Service not available, try again later\r\n");
		return;
	}
	/* Sent, or a copy waits in the backlog. */
	close(fd);
	metrics_inc(MC_CONN_ACCEPTED);
	if (ipc_outbox_waiting(&m.workers[w].backlog)) {
		if (!waiting)
			worker_channel_events(&m.workers[w]);
		update_accepting();
	}
}

static void
accept_connections(int listener)
{
	/* Bounded, so one busy listener cannot starve signals and workers. */
	for (int i = 0; i < 256 && !m.accept_paused; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		/* Non-blocking from the start: the flag belongs to the
		 * socket, so the worker that gets it need not set it. */
		int fd = accept4(m.listen_fds[listener], (struct sockaddr *)&peer,
		    &len, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_warn("accept: %s", strerror(errno));
			else if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		handoff(fd, listener, &peer);
	}
}

/* ---- messages from children ---- */

/*
 * The client a PROXY header named (or, for a balancer's health check,
 * the balancer itself): the limits apply to it now, and it is counted
 * as its connection from here on.
 */
static void
proxy_admit(const struct ipc_conn_proxied *p)
{
	struct conn *c = conn_find(p->conn_id);
	struct ipc_conn_admit admit;
	struct ip_count *ipc;
	const char *why;
	char ip[64];

	if (c == NULL)
		return;             /* closed meanwhile */
	if (!c->proxy_pending)
		fatalx("worker %d: CONN_PROXIED for a connection that has a "
		    "client already", c->worker);
	c->proxy_pending = false;
	sockaddr_ntop((const struct sockaddr *)&p->client, ip, sizeof(ip));
	memset(&admit, 0, sizeof(admit));
	admit.conn_id = c->id;
	admit.wfd = p->wfd;
	strlcpy_mx(c->ip, ip, sizeof(c->ip));
	client_key(ip, m.conf->ipv6_prefix, c->key, sizeof(c->key));
	c->ip_hash = ip_hash(c->key);
	ipc = ip_lookup(c->key, c->ip_hash, false);
	why = admit_refusal(ip, c->key, ipc, m.nconns - 1);
	if (why != NULL) {
		strlcpy_mx(admit.refusal, why, sizeof(admit.refusal));
	} else {
		if (ipc == NULL)
			ipc = ip_lookup(c->key, c->ip_hash, true);
		ipc->count++;
		c->counted = true;
		admit.flags = greet_flags(ip);
	}
	send_to_worker(&m.workers[c->worker], IPC_CONN_ADMIT, &admit,
	    sizeof(admit));
}

static void
greet_pass(uint64_t conn_id)
{
	struct conn *c = conn_find(conn_id);

	if (c != NULL && c->counted)
		greet_pass_record(c->ip);
}

static void
read_worker(int slot)
{
	struct child *w = &m.workers[slot];
	union {
		struct ipc_conn_closed closed;
		struct ipc_conn_proxied proxied;
		char raw[512];
	} u;
	enum ipc_type type;
	int fd, r = -1;

	while (w->fd >= 0 && (r = ipc_recv(w->fd, &type, &u, sizeof(u), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		if (type == IPC_CONN_CLOSED)
			conn_closed(u.closed.conn_id);
		else if (type == IPC_AUTH_FAILED)
			auth_failure(u.closed.conn_id);
		else if (type == IPC_CONN_PROXIED)
			proxy_admit(&u.proxied);
		else if (type == IPC_GREET_PASSED)
			greet_pass(u.closed.conn_id);
		else
			fatalx("worker %d sent unexpected message %d", slot, type);
	}
	if (w->fd >= 0 && r == 0)
		close_child_channel(w);   /* exiting; SIGCHLD follows */
}

static void
read_lookup(void)
{
	char buf[512];
	enum ipc_type type;
	int fd, r = -1;

	while (m.lookup.fd >= 0 &&
	    (r = ipc_recv(m.lookup.fd, &type, buf, sizeof(buf), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		fatalx("lookup process sent unexpected message %d", type);
	}
	if (m.lookup.fd >= 0 && r == 0)
		close_child_channel(&m.lookup);
}

static void
read_queue(void)
{
	char buf[512];
	enum ipc_type type;
	int fd, r = -1;

	while (m.queue.fd >= 0 &&
	    (r = ipc_recv(m.queue.fd, &type, buf, sizeof(buf), &fd)) > 0) {
		if (fd >= 0)
			close(fd);
		fatalx("queue process sent unexpected message %d", type);
	}
	if (m.queue.fd >= 0 && r == 0)
		close_child_channel(&m.queue);
}

/* ---- stopping ---- */

static void
begin_stop(int signo)
{
	if (m.stopping)
		return;
	log_info("received signal %d: stopping (grace %u s)", signo,
	    m.conf->shutdown_grace);
	m.stopping = true;
	m.stop_deadline_ms = monotonic_ms() +
	    (uint64_t)m.conf->shutdown_grace * 1000 + STOP_EXTRA_MS;
	for (size_t i = 0; i < m.conf->nlisteners; i++) {
		if (m.listen_fds[i] >= 0) {
			event_del(m.loop, m.listen_fds[i]);
			close(m.listen_fds[i]);
			m.listen_fds[i] = -1;
		}
	}
	for (int i = 0; i < m.nslots; i++) {
		if (m.workers[i].pid != 0)
			kill(m.workers[i].pid, SIGTERM);
	}
	/* The exporter holds nothing: it goes first. */
	if (m.exporter.pid != 0)
		kill(m.exporter.pid, SIGTERM);
}

static bool
workers_running(void)
{
	for (int i = 0; i < m.nslots; i++) {
		if (m.workers[i].pid != 0)
			return true;
	}
	return false;
}

/* Workers first (their sessions may still submit), then the queue. */
static bool
stop_progress(uint64_t now)
{
	if (!m.stopping)
		return false;
	if (!m.killed && now >= m.stop_deadline_ms) {
		log_warn("children did not stop in time: killing them");
		for (int i = 0; i < m.nslots; i++) {
			if (m.workers[i].pid != 0)
				kill(m.workers[i].pid, SIGKILL);
		}
		if (m.queue.pid != 0)
			kill(m.queue.pid, SIGKILL);
		if (m.lookup.pid != 0)
			kill(m.lookup.pid, SIGKILL);
		if (m.spawner.pid != 0)
			kill(m.spawner.pid, SIGKILL);
		if (m.exporter.pid != 0)
			kill(m.exporter.pid, SIGKILL);
		m.killed = true;
	}
	if (workers_running())
		return false;
	if (m.lookup.pid != 0) {
		static bool lookup_told;
		if (!lookup_told) {
			kill(m.lookup.pid, SIGTERM);
			lookup_told = true;
		}
	}
	if (m.queue.pid != 0) {
		static bool queue_told;
		if (!queue_told) {
			kill(m.queue.pid, SIGTERM);
			queue_told = true;
		}
		return false;
	}
	/* The spawner ends when the queue process has. */
	return m.lookup.pid == 0 && m.spawner.pid == 0 && m.exporter.pid == 0;
}

/* ---- reload ---- */

static int worker_count(const struct mxconf *conf);
static void resolve_max_connections(struct mxconf *conf, int nworkers);

static void
reload_error(const char *msg)
{
	log_error("reload: %s", msg);
}

static bool
same_address(const struct listener_conf *a, const struct listener_conf *b)
{
	return a->ss_len == b->ss_len && memcmp(&a->ss, &b->ss, a->ss_len) == 0;
}

/*
 * The new configuration's listening sockets: those of the running one
 * at the same address are kept (the same socket: its listen queue goes
 * on filling, nobody is refused), the others bound now.  NULL, having
 * closed what it bound, when one cannot be bound: the reload is then
 * refused.  kept[i] tells whether new listener i is an old socket.
 */
static int *
listeners_prepare(const struct mxconf *nc, bool **kept)
{
	int *fds = xcalloc(nc->nlisteners, sizeof(int));
	bool *taken = xcalloc(m.conf->nlisteners, sizeof(bool));

	*kept = xcalloc(nc->nlisteners, sizeof(bool));
	for (size_t j = 0; j < nc->nlisteners; j++) {
		fds[j] = -1;
		for (size_t i = 0; i < m.conf->nlisteners; i++) {
			if (!taken[i] && m.listen_fds[i] >= 0 &&
			    same_address(&m.conf->listeners[i],
			    &nc->listeners[j])) {
				taken[i] = true;
				(*kept)[j] = true;
				fds[j] = m.listen_fds[i];
				break;
			}
		}
		if (fds[j] >= 0)
			continue;
		if ((fds[j] = bind_listener(&nc->listeners[j])) < 0) {
			log_error("reload: %s: listen on %s port %d: %s",
			    nc->path, nc->listeners[j].address,
			    nc->listeners[j].port, strerror(errno));
			for (size_t k = 0; k < j; k++) {
				if (!(*kept)[k])
					close(fds[k]);
			}
			free(fds);
			free(*kept);
			free(taken);
			return NULL;
		}
	}
	free(taken);
	return fds;
}

/* Switch the master to the new sockets: the kept ones under their new
 * index, the new ones watched, the ones no longer configured closed. */
static void
listeners_switch(const struct mxconf *nc, int *fds, const bool *kept)
{
	for (size_t i = 0; i < m.conf->nlisteners; i++) {
		bool still = false;

		if (m.listen_fds[i] < 0)
			continue;
		event_del(m.loop, m.listen_fds[i]);
		for (size_t j = 0; j < nc->nlisteners; j++)
			still |= fds[j] == m.listen_fds[i];
		if (!still) {
			log_info("reload: no longer listening on %s port %d",
			    m.conf->listeners[i].address,
			    m.conf->listeners[i].port);
			close(m.listen_fds[i]);
		}
	}
	for (size_t j = 0; j < nc->nlisteners; j++) {
		event_add(m.loop, fds[j], m.accept_paused ? 0 : EPOLLIN,
		    on_listener, INDEX_ARG(j));
		if (!kept[j])
			log_info("reload: listening on %s port %d",
			    nc->listeners[j].address, nc->listeners[j].port);
	}
	free(m.listen_fds);
	m.listen_fds = fds;
}

/* The index in nc of the old configuration's listener i, or -1. */
static int
listener_renumbered(const struct mxconf *nc, uint32_t i)
{
	if (i >= m.conf->nlisteners)
		return -1;
	for (size_t j = 0; j < nc->nlisteners; j++) {
		if (same_address(&m.conf->listeners[i], &nc->listeners[j]))
			return (int)j;
	}
	return -1;
}

/*
 * Sockets that waited for a retiring worker go to a worker of the new
 * generation, under their listener's new index; one whose listener is
 * gone gets the 421 of a stopping server.  What else waited (a verdict
 * on a connection it already has) stays for it: it still reads.
 */
static void
backlog_move(const struct mxconf *nc, struct child *from)
{
	size_t kept = 0;

	for (size_t i = 0; i < from->backlog.n; i++) {
		struct ipc_outmsg *out = &from->backlog.msgs[i];
		struct ipc_conn_new msg;
		struct child *to;
		size_t slot;
		int l, w;

		if (out->type != IPC_CONN_NEW) {
			from->backlog.msgs[kept++] = *out;
			continue;
		}
		memcpy(&msg, out->payload, sizeof(msg));
		slot = (size_t)(msg.conn_id & 0xffffffffu);
		l = listener_renumbered(nc, msg.listener);
		w = least_loaded_worker();
		if (slot < m.nconn_slots && m.conns[slot].id == msg.conn_id) {
			if (l < 0 || w < 0)
				conn_release(&m.conns[slot]);
			else {
				m.conns[slot].worker = w;
				if (from->nconns > 0)
					from->nconns--;
				m.workers[w].nconns++;
			}
		}
		if (l < 0 || w < 0) {
			refuse(out->fd, "421 4.3.2 Service not available,"
			    " try again later\r\n");
			free(out->payload);
			continue;
		}
		to = &m.workers[w];
		msg.listener = (uint32_t)l;
		if (ipc_outbox_send(&to->backlog, to->fd, IPC_CONN_NEW, &msg,
		    sizeof(msg), NULL, 0, out->fd) < 0)
			log_warn("handing connections to worker %d failed: %s",
			    to->slot, strerror(errno));
		if (out->fd >= 0)
			close(out->fd);
		free(out->payload);
		worker_channel_events(to);
	}
	from->backlog.n = kept;
	worker_channel_events(from);
}

static bool
slot_free(const struct child *w)
{
	return w->pid == 0 && !w->active && w->fd < 0;
}

/* Room for n more smtp processes within what the queue and lookup
 * processes take (IPC_WORKER_SLOTS_MAX). */
static bool
worker_slots_left(int n)
{
	int free = 0;

	for (int i = 0; i < m.nslots; i++)
		free += slot_free(&m.workers[i]);
	return n <= free || m.nslots + (n - free) <= IPC_WORKER_SLOTS_MAX;
}

/* n worker slots that are free (no process, not active), the array
 * grown when there are not enough: a reload's new generation. */
static int *
free_worker_slots(int n)
{
	int *slots = xcalloc((size_t)n, sizeof(int)), found = 0;

	for (int i = 0; i < m.nslots && found < n; i++) {
		if (slot_free(&m.workers[i]))
			slots[found++] = i;
	}
	if (found < n) {
		int old = m.nslots;

		m.nslots += n - found;
		m.workers = xrealloc(m.workers, (size_t)m.nslots *
		    sizeof(*m.workers));
		memset(m.workers + old, 0, (size_t)(m.nslots - old) *
		    sizeof(*m.workers));
		for (int i = old; i < m.nslots; i++) {
			m.workers[i].role = CHILD_WORKER;
			m.workers[i].slot = i;
			m.workers[i].fd = -1;
			slots[found++] = i;
		}
	}
	return slots;
}

/*
 * A new generation of smtp processes, forked with the new configuration
 * (privileges dropped, chroot and seccomp as at start); the old ones get
 * no more connections and finish their sessions on the configuration
 * they started with (SIGUSR1, worker.c): they end with their last
 * session, or after shutdown_grace stop as at a shutdown.
 */
static int
workers_replace(const struct mxconf *nc, int count)
{
	int *slots = free_worker_slots(count), retired = 0;
	bool *old = xcalloc((size_t)m.nslots, sizeof(bool));

	for (int i = 0; i < m.nslots; i++) {
		struct child *w = &m.workers[i];

		if (!w->active)
			continue;
		old[i] = true;
		w->active = false;
		w->respawn_at_ms = 0;
	}
	for (int k = 0; k < count; k++) {
		struct child *w = &m.workers[slots[k]];

		w->active = true;
		w->quick_deaths = 0;
		spawn_worker(w->slot);
	}
	m.nworkers = count;
	for (int i = 0; i < m.nslots; i++) {
		if (!old[i] || m.workers[i].pid == 0)
			continue;
		m.workers[i].retiring = true;
		backlog_move(nc, &m.workers[i]);
		kill(m.workers[i].pid, SIGUSR1);
		retired++;
	}
	update_accepting();
	free(old);
	free(slots);
	return retired;
}

/* The queue process gets the new text (and passes it on to its
 * spawner): delivery settings apply from its next delivery. */
static void
queue_reconfigure(const struct mxconf *nc)
{
	int fd;

	if (m.queue.pid == 0 || m.queue.fd < 0)
		return;         /* it starts with m.conf, the new one */
	if ((fd = ipc_text_fd(nc->text)) < 0 ||
	    ipc_send(m.queue.fd, IPC_CONFIG, NULL, 0, fd) < 0)
		log_error("reload: cannot pass the configuration to the queue"
		    " process: %s; its delivery settings are the old ones",
		    strerror(errno));
	if (fd >= 0)
		close(fd);
}

static bool
lookup_changed(const struct mxconf *a, const struct mxconf *b)
{
	const char *sa[] = { a->auth_passwd_file, a->auth_sqlite,
	    a->lookup_user };
	const char *sb[] = { b->auth_passwd_file, b->auth_sqlite,
	    b->lookup_user };

	if (lookup_wanted(a) != lookup_wanted(b))
		return true;
	for (size_t i = 0; i < ARRAY_LEN(sa); i++) {
		if ((sa[i] == NULL) != (sb[i] == NULL) ||
		    (sa[i] != NULL && strcmp(sa[i], sb[i]) != 0))
			return true;
	}
	return false;
}

/* The lookup process reads its sources at each use: only a change of
 * the sources, its user or whether any listener offers AUTH starts a
 * new one (every worker gets a channel to it). */
static void
lookup_reconfigure(void)
{
	if (m.lookup.pid != 0) {
		pid_t old = m.lookup.pid;

		close_child_channel(&m.lookup);
		m.lookup.pid = 0;       /* its death is not a respawn */
		kill(old, SIGTERM);
	}
	m.lookup.respawn_at_ms = 0;
	m.lookup.quick_deaths = 0;
	if ((m.lookup_on = lookup_wanted(m.conf)))
		spawn_lookup();
}

static void
rates_reconfigure(const struct mxconf *old)
{
	if (old->rate_connections != m.conf->rate_connections) {
		ratelimit_free(m.conn_rate);
		m.conn_rate = m.conf->rate_connections > 0 ?
		    ratelimit_new(m.conf->rate_connections) : NULL;
	}
	if (old->rate_auth_failures != m.conf->rate_auth_failures) {
		ratelimit_free(m.auth_rate);
		m.auth_rate = m.conf->rate_auth_failures > 0 ?
		    ratelimit_new(m.conf->rate_auth_failures) : NULL;
	}
}

/*
 * SIGHUP (README "Reload"): the whole configuration again.  The file is
 * read and checked as at start (reload.h), the new listeners bound and
 * the certificates loaded; if any of that fails, the log says why
 * (FILE:LINE: problem) and nothing changes.  Then: new smtp processes
 * with the new configuration take every new connection, the old ones
 * finish their sessions; listeners kept, added and closed; the queue
 * process and its spawner switch their delivery settings; the lookup
 * process restarts if its sources changed.
 */
static bool
reload_apply(void)
{
	struct mxconf *nc, *old = m.conf;
	enum log_level level;
	bool *kept;
	int *fds, retired;

	if (strcmp(old->path, "(default)") == 0) {
		log_warn("SIGHUP: running on the embedded default"
		    " configuration: no file to read again");
		return false;
	}
	log_info("SIGHUP: reading %s again", old->path);
	if ((nc = reload_load(old)) == NULL)
		return false;
	resolve_max_connections(nc, worker_count(nc));
	if (!worker_slots_left(worker_count(nc))) {
		log_error("reload: %s refused: the smtp processes of earlier"
		    " reloads are still finishing their sessions; try again"
		    " after timeouts.shutdown_grace", old->path);
		config_free(nc);
		return false;
	}
	if ((fds = listeners_prepare(nc, &kept)) == NULL) {
		log_error("reload: %s refused: nothing changed", old->path);
		config_free(nc);
		return false;
	}
	if (tls_init(nc, reload_error) < 0) {
		for (size_t j = 0; j < nc->nlisteners; j++) {
			if (!kept[j])
				close(fds[j]);
		}
		free(fds);
		free(kept);
		log_error("reload: %s refused: nothing changed", old->path);
		config_free(nc);
		return false;
	}
	/* From here on nothing can fail: switch. */
	listeners_switch(nc, fds, kept);
	free(kept);
	m.conf = nc;
	if (log_level_parse(nc->log_level, &level) == 0)
		log_set_level(level);
	rates_reconfigure(old);
	retired = workers_replace(nc, worker_count(nc));
	if (lookup_changed(old, nc))
		lookup_reconfigure();
	queue_reconfigure(nc);
	log_info("SIGHUP: %s loaded: %d smtp processes started, %d old ones"
	    " finish their sessions", nc->path, m.nworkers, retired);
	/* The first one is mxgated's (the plugins point into it). */
	if (old != m.first_conf)
		config_free(old);
	return true;
}

/* The outcome goes in the title too (ps, mxgatectl reload): "mxgated:
 * master (reload N loaded|refused)". */
static void
reload(void)
{
	bool ok;

	if (m.stopping)
		return;
	ok = reload_apply();
	m.reloads++;
	proc_title_set("mxgated: master (reload %u %s)", m.reloads,
	    ok ? "loaded" : "refused");
}

static void
read_signals(void)
{
	struct signalfd_siginfo si;

	while (read(m.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap_children();
			break;
		case SIGTERM:
		case SIGINT:
			begin_stop((int)si.ssi_signo);
			break;
		case SIGHUP:
			reload();
			break;
		default:
			log_info("received signal %d (%s): ignored",
			    (int)si.ssi_signo, strsignal((int)si.ssi_signo));
			break;
		}
	}
}

/*
 * Every signal whose default action would end the master is read here:
 * TERM, INT and HUP act, the others are logged and ignored, so that a
 * stray "kill -USR1" (logrotate scripts written for other daemons) never
 * takes the whole gateway down.  Children get the default dispositions
 * back (child_prepare).
 */
static void
setup_signals(void)
{
	static const int handled[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP,
	    SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGQUIT, SIGIO,
	    SIGPWR, SIGSTKFLT };

	m.sigfd = proc_signalfd(handled, (int)ARRAY_LEN(handled));
	signal(SIGPIPE, SIG_IGN);
}

/*
 * limits.connections = 0: what the memory allows.  An idle session costs
 * about 10 KB in a worker (5000 idle connections: 77 MB in all, README's
 * benchmarks) and some in the kernel; 16 KB each in an eighth of the
 * physical memory leaves the rest to sessions that receive messages,
 * the queue and the system.  No more than the workers' descriptors
 * hold, and between 100 and 100000.
 */
static void
resolve_max_connections(struct mxconf *conf, int nworkers)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t mem = pages > 0 && psize > 0 ?
	    (uint64_t)pages * (uint64_t)psize : 0;
	uint64_t n = mem / 8 / (16 * 1024), fds = UINT64_MAX;
	struct rlimit rl;

	if (conf->max_connections != 0)
		return;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur > 64) {
		fds = (uint64_t)(rl.rlim_cur - 64) * (uint64_t)nworkers;
		if (n > fds)
			n = fds;
	}
	if (n < 100)
		n = 100;
	if (n > 100000)
		n = 100000;
	conf->max_connections = (unsigned)n;
	log_info("limits.connections = %u (computed: %llu MB of memory / 8 / "
	    "16 KB a session, at most %llu descriptors in %d workers)",
	    conf->max_connections, (unsigned long long)(mem >> 20),
	    (unsigned long long)(fds == UINT64_MAX ? 0 : fds), nworkers);
}

static int
worker_count(const struct mxconf *conf)
{
	long n;

	if (conf->workers > 0)
		return conf->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

static void
on_listener(void *arg, int fd, uint32_t events)
{
	int index = (int)(intptr_t)arg;

	if (!m.stopping && !m.accept_paused && m.listen_fds[index] >= 0)
		accept_connections(index);
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
		backlog_flush(&m.workers[slot]);
	read_worker(slot);
}

static void
on_queue(void *arg, int fd, uint32_t events)
{
	read_queue();
}

static void
on_lookup(void *arg, int fd, uint32_t events)
{
	read_lookup();
}

int
master_main(struct mxconf *conf)
{
	memset(&m, 0, sizeof(m));
	m.conf = m.first_conf = conf;
	if (conf->rate_connections > 0)
		m.conn_rate = ratelimit_new(conf->rate_connections);
	if (conf->rate_auth_failures > 0)
		m.auth_rate = ratelimit_new(conf->rate_auth_failures);
	raise_fd_limit();
	proc_title_set("mxgated: master");
	log_set_role("master");

	m.loop = event_loop_new(64);
	setup_signals();
	event_add(m.loop, m.sigfd, EPOLLIN, on_signal, NULL);

	m.listen_fds = xcalloc(conf->nlisteners, sizeof(int));
	for (size_t i = 0; i < conf->nlisteners; i++) {
		m.listen_fds[i] = bind_listener(&conf->listeners[i]);
		if (m.listen_fds[i] < 0) {
			log_error("listen on %s port %d: %s", conf->listeners[i].address,
			    conf->listeners[i].port, strerror(errno));
			return 1;
		}
		event_add(m.loop, m.listen_fds[i], EPOLLIN, on_listener,
		    INDEX_ARG(i));
		log_info("listening on %s port %d", conf->listeners[i].address,
		    conf->listeners[i].port);
	}

	m.nworkers = worker_count(conf);
	resolve_max_connections(conf, m.nworkers);
	m.nslots = 2 * m.nworkers;
	m.workers = xcalloc((size_t)m.nslots, sizeof(*m.workers));
	for (int i = 0; i < m.nslots; i++) {
		m.workers[i].role = CHILD_WORKER;
		m.workers[i].slot = i;
		m.workers[i].fd = -1;
		m.workers[i].active = i < m.nworkers;
	}
	m.queue.role = CHILD_QUEUE;
	m.queue.fd = -1;
	m.lookup.role = CHILD_LOOKUP;
	m.lookup.fd = -1;
	m.spawner.role = CHILD_SPAWNER;
	m.spawner.fd = -1;
	m.exporter.role = CHILD_METRICS;
	m.exporter.fd = -1;
	if (metrics_start() < 0)
		return 1;
	spawn_queue();
	if ((m.lookup_on = lookup_wanted(conf)))
		spawn_lookup();
	for (int i = 0; i < m.nworkers; i++)
		spawn_worker(i);
	if (m.metrics_fd >= 0)
		spawn_exporter();

	for (;;) {
		uint64_t now = monotonic_ms();
		int timeout;

		respawn_due(now);
		greet_pass_prune(now);
		if (stop_progress(now))
			break;
		timeout = next_timeout_ms(now);
		if (m.stopping && (timeout < 0 || timeout > 200))
			timeout = 200;
		event_run(m.loop, timeout);
	}
	log_info("stopped");
	if (m.conf != m.first_conf)
		config_free(m.conf);
	return 0;
}
