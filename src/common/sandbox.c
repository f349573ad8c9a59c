/*
 * sandbox — see sandbox.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <seccomp.h>

#include "common/log.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "common/util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZERS 1
#endif
#endif

bool
sandbox_privileged(void)
{
	return geteuid() == 0;
}

/* ---- start-up checks ---- */

struct role_user {
	const char *setting;
	const char *user;
	const char *process;
	char       *owned;          /* setting, when made here */
};

/* The four roles, then each route's user= (pipe, maildir deliveries). */
#define ROLE_USERS_MAX(conf) (4 + (conf)->nroutes)

static size_t
role_users(const struct mxconf *conf, struct role_user *out)
{
	size_t n = 0;

	out[n++] = (struct role_user){ "server.user", conf->user,
	    "smtp workers", NULL };
	out[n++] = (struct role_user){ "server.queue_user", conf->queue_user,
	    "queue process", NULL };
	out[n++] = (struct role_user){ "server.delivery_user",
	    conf->delivery_user, "delivery processes", NULL };
	out[n++] = (struct role_user){ "server.lookup_user", conf->lookup_user,
	    "credentials lookup process", NULL };
	for (size_t i = 0; i < conf->nroutes; i++) {
		char *setting;

		if (conf->routes[i].user == NULL)
			continue;
		xasprintf(&setting, "routes[%zu].user", i);
		out[n++] = (struct role_user){ setting, conf->routes[i].user,
		    "deliveries of that route", setting };
	}
	return n;
}

static void
role_users_free(struct role_user *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(r[i].owned);
	free(r);
}

/* One line on stderr for r, 0 when it may run; quid: the queue's uid. */
static int
check_user_of(const struct role_user *r, const struct mxconf *conf,
    bool check_queue, uid_t quid, size_t i)
{
	struct passwd *pw;

	if ((pw = getpwnam(r->user)) == NULL) {
		fprintf(stderr, "mxgated: %s: the user \"%s\" of the %s does"
		    " not exist: create the service users with"
		    " contrib/create-users.sh (or systemd-sysusers"
		    " contrib/sysusers.d/mxgate.conf), or name another user in"
		    " %s\n", r->setting, r->user, r->process, r->setting);
		return -1;
	}
	if (pw->pw_uid == 0) {
		fprintf(stderr, "mxgated: %s: the %s must not run as root"
		    " (\"%s\"): name an unprivileged user\n", r->setting,
		    r->process, r->user);
		return -1;
	}
	if (check_queue && r->user != conf->queue_user && pw->pw_uid == quid) {
		fprintf(stderr, "mxgated: %s \"%s\" is the queue's user"
		    " (server.queue_user \"%s\"): the %s could open the queue"
		    " database %s/queue.db; give them a user of their own"
		    " (default \"%s\")\n", r->setting, r->user,
		    conf->queue_user, r->process, conf->queue_dir,
		    i == 0 ? "mxgate-smtp" : i == 3 ? "mxgate-auth" :
		    "mxgate-deliver");
		return -1;
	}
	return 0;
}

int
sandbox_check_users(const struct mxconf *conf)
{
	struct role_user *r;
	struct passwd *queue;
	bool check_queue;
	uid_t quid = 0;
	size_t n;
	int rc = 0;

	if (!sandbox_privileged())
		return 0;
	r = xcalloc(ROLE_USERS_MAX(conf), sizeof(*r));
	n = role_users(conf, r);
	check_queue = conf->queue_user != NULL &&
	    (queue = getpwnam(conf->queue_user)) != NULL;
	if (check_queue)
		quid = queue->pw_uid;
	/* The queue's own line first: its absence is the first thing to
	 * say. */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (r[i].user != NULL &&
		    check_user_of(&r[i], conf, check_queue, quid, i) < 0)
			rc = -1;
	}
	role_users_free(r, n);
	return rc;
}

/*
 * As user (and group, NULL: the user's), in a child: can the queue
 * directory be listed or written, or queue.db be opened?  1 yes, 0 no,
 * -1 the probe failed.
 */
static int
probe_queue(const char *user, const char *group, const char *dir)
{
	unsigned uid, gid;
	pid_t pid;
	int status;

	if (proc_lookup_user(user, group, &uid, &gid) < 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		char db[PATH_MAX];
		gid_t g = (gid_t)gid;
		int fd;

		if (setgroups(1, &g) < 0 || setresgid(g, g, g) < 0 ||
		    setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
			_exit(2);
		snprintf(db, sizeof(db), "%s/queue.db", dir);
		if ((fd = open(db, O_RDONLY | O_CLOEXEC)) >= 0 ||
		    (fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0 ||
		    access(dir, W_OK | X_OK) == 0)
			_exit(1);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) > 1)
		return -1;
	return WEXITSTATUS(status);
}

int
sandbox_check_queue_closed(const struct mxconf *conf)
{
	struct role_user *r;
	size_t n;
	int rc = 0;

	if (!sandbox_privileged())
		return 0;
	r = xcalloc(ROLE_USERS_MAX(conf), sizeof(*r));
	n = role_users(conf, r);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		int open;

		if (r[i].user == NULL || r[i].user == conf->queue_user)
			continue;
		open = probe_queue(r[i].user, i == 0 ? conf->group : NULL,
		    conf->queue_dir);
		if (open == 0)
			continue;
		rc = -1;
		if (open < 0)
			fprintf(stderr, "mxgated: cannot check whether the %s"
			    " (%s \"%s\") can open the queue %s\n",
			    r[i].process, r[i].setting, r[i].user,
			    conf->queue_dir);
		else
			fprintf(stderr, "mxgated: the %s (%s \"%s\") can open"
			    " the queue %s: it must belong to server.queue_user"
			    " \"%s\" alone (mode 0700, no ACL, no group"
			    " access)\n", r[i].process, r[i].setting,
			    r[i].user, conf->queue_dir, conf->queue_user);
	}
	role_users_free(r, n);
	return rc;
}

/* dir exists (made root's, 0755, when missing) and only root can write
 * it. */
static int
root_only_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "mxgated: server.chroot_dir: mkdir %s: %s\n",
		    dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		fprintf(stderr, "mxgated: server.chroot_dir: %s: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		fprintf(stderr, "mxgated: server.chroot_dir: %s must be a"
		    " directory of root's that root alone can write (owner"
		    " uid %ld, mode %04o): chown root:root %s; chmod 0755 %s\n",
		    dir, (long)st.st_uid, (unsigned)(st.st_mode & 07777), dir,
		    dir);
		return -1;
	}
	return 0;
}

int
sandbox_chroot_prepare(const char *dir)
{
	char path[PATH_MAX];

	if (!sandbox_privileged())
		return 0;
	/* Parents as mkdir -p would make them (root's, 0755). */
	strlcpy_mx(path, dir, sizeof(path));
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			fprintf(stderr, "mxgated: server.chroot_dir: mkdir %s:"
			    " %s\n", path, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	if (root_only_dir(dir) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/etc", dir);
	if (root_only_dir(path) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/run", dir);
	if (root_only_dir(path) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s%s", dir, SANDBOX_POLICY_DIR);
	if (root_only_dir(path) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s%s", dir, SANDBOX_SOCKET_DIR);
	if (root_only_dir(path) < 0)
		return -1;
	return sandbox_chroot_refresh(dir);
}

/* The whole of a small file; NULL when missing (errno ENOENT). */
static char *
read_small(const char *path, size_t *len)
{
	struct buf b;
	char chunk[4096];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return NULL;
	buf_init(&b);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0 && b.len < 1 << 20)
		buf_append(&b, chunk, (size_t)n);
	close(fd);
	if (n < 0) {
		buf_free(&b);
		return NULL;
	}
	buf_append(&b, "", 1);
	*len = b.len - 1;
	return b.data;
}

/*
 * glibc's resolver reads /etc/resolv.conf when a thread first resolves
 * (libspf2 calls res_ninit() in each of its threads, lazily) and again
 * whenever the file changed or vanished; NSS reads nsswitch.conf and
 * hosts.  Initialising them before the chroot is not enough for that
 * reason, so, as Postfix does, a copy of each lives in the root's etc/,
 * brought up to date whenever a worker starts.  Nothing else is there.
 */
int
sandbox_chroot_refresh(const char *root)
{
	static const char *const files[] = {
		"resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf",
	};

	if (!sandbox_privileged())
		return 0;
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		char src[PATH_MAX], dst[PATH_MAX], tmp[PATH_MAX];
		size_t len = 0, oldlen = 0;
		char *data, *old;
		int fd;

		snprintf(src, sizeof(src), "/etc/%s", files[i]);
		snprintf(dst, sizeof(dst), "%s/etc/%s", root, files[i]);
		data = read_small(src, &len);
		if (data == NULL) {
			if (unlink(dst) < 0 && errno != ENOENT)
				log_warn("%s: %s", dst, strerror(errno));
			continue;
		}
		old = read_small(dst, &oldlen);
		if (old != NULL && oldlen == len && memcmp(old, data, len) == 0) {
			free(old);
			free(data);
			continue;
		}
		free(old);
		snprintf(tmp, sizeof(tmp), "%s/etc/.%s.%ld", root, files[i],
		    (long)getpid());
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
		    O_NOFOLLOW, 0644);
		if (fd < 0 || fchmod(fd, 0644) < 0 ||
		    fd_write_all(fd, data, len) < 0 || close(fd) < 0 ||
		    rename(tmp, dst) < 0) {
			log_error("%s: %s", dst, strerror(errno));
			if (fd >= 0)
				unlink(tmp);
			free(data);
			return -1;
		}
		free(data);
	}
	return 0;
}

/* ---- confinement ---- */

/* No capability can come back through an exec: the bounding set.  Needs
 * CAP_SETPCAP, so as root, before the switch of user. */
static void
drop_bounding_set(void)
{
	for (int cap = 0; cap <= 63; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
			break;
	}
}

/* No capability left in any set.  Switching from root to another user
 * has emptied the permitted and effective sets; the inheritable and
 * ambient ones are emptied here. */
static void
drop_capabilities(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];

	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		fatal("capset");
}

/* Our own mount namespace, once: nobody outside this process sees the
 * service directories mounted inside the root. */
static void
private_mounts(const struct sandbox *sb, bool *done)
{
	if (*done)
		return;
	if (unshare(CLONE_NEWNS) < 0)
		fatal("%s: unshare(CLONE_NEWNS)", sb->title);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fatal("%s: making mounts private", sb->title);
	*done = true;
}

/* dir at mnt, read-only; false (logged) when dir is not there. */
static bool
bind_ro(const struct sandbox *sb, const char *dir, const char *mnt,
    bool *ns)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		/* The service is down as far as this process is concerned
		 * (its checks take their default), until it restarts. */
		log_warn("%s: service directory %s: %s: unreachable from "
		    "this process", sb->title, dir, strerror(errno));
		return false;
	}
	private_mounts(sb, ns);
	if (mount(dir, mnt, NULL, MS_BIND, NULL) < 0)
		fatal("%s: mounting %s on %s", sb->title, dir, mnt);
	if (mount(NULL, mnt, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY |
	    MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		fatal("%s: remounting %s read-only", sb->title, mnt);
	return true;
}

/* The milters' and named policy services' directories: a small tmpfs
 * at SANDBOX_SOCKET_DIR holds a mount point per directory, N for the
 * N-th, then becomes read-only. */
static void
bind_socket_dirs(const struct sandbox *sb, bool *ns)
{
	char top[PATH_MAX], mnt[PATH_MAX];

	if (sb->nsocket_dirs == 0)
		return;
	snprintf(top, sizeof(top), "%s%s", sb->root, SANDBOX_SOCKET_DIR);
	private_mounts(sb, ns);
	if (mount("mxgate-sockets", top, "tmpfs", MS_NOSUID | MS_NODEV |
	    MS_NOEXEC, "size=16k,mode=0755") < 0)
		fatal("%s: mounting a tmpfs on %s", sb->title, top);
	for (size_t i = 0; i < sb->nsocket_dirs; i++) {
		if (snprintf(mnt, sizeof(mnt), "%s/%zu", top, i) >=
		    (int)sizeof(mnt))
			fatalx("%s: %s: path too long", sb->title, top);
		if (mkdir(mnt, 0755) < 0)
			fatal("%s: mkdir %s", sb->title, mnt);
		bind_ro(sb, sb->socket_dirs[i], mnt, ns);
	}
	if (mount(NULL, top, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID |
	    MS_NODEV | MS_NOEXEC, "size=16k,mode=0755") < 0)
		fatal("%s: remounting %s read-only", sb->title, top);
}

static void
enter_root(const struct sandbox *sb)
{
	char mnt[PATH_MAX];
	bool ns = false;

	if (sb->resolver && sandbox_chroot_refresh(sb->root) < 0)
		fatalx("%s: cannot prepare %s", sb->title, sb->root);
	if (sb->bind_dir != NULL) {
		snprintf(mnt, sizeof(mnt), "%s%s", sb->root, SANDBOX_POLICY_DIR);
		bind_ro(sb, sb->bind_dir, mnt, &ns);
	}
	bind_socket_dirs(sb, &ns);
	if (chroot(sb->root) < 0)
		fatal("%s: chroot %s", sb->title, sb->root);
	if (chdir("/") < 0)
		fatal("%s: chdir / in %s", sb->title, sb->root);
}

void
sandbox_spawner(void)
{
	/* kill: its children run as other users; setuid, setgid: their
	 * switch; setpcap: their empty bounding set. */
	static const int keep[] = { CAP_KILL, CAP_SETGID, CAP_SETUID,
	    CAP_SETPCAP };
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	uint32_t mask = 0;

	if (!sandbox_privileged())
		goto nnp;
	for (size_t i = 0; i < ARRAY_LEN(keep); i++)
		mask |= 1u << keep[i];
	for (int cap = 0; cap <= 63; cap++) {
		if (cap < 32 && (mask & (1u << cap)) != 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
			break;
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = mask;
	if (syscall(SYS_capset, &hdr, data) < 0)
		fatal("spawner: capset");
nnp:
	/* Set-id programs the deliveries run give nothing. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal("spawner: no_new_privs");
}

/* ---- seccomp ---- */

#define ALLOW(ctx, name) allow_name(ctx, #name)

static void
allow_name(scmp_filter_ctx ctx, const char *name)
{
	int nr = seccomp_syscall_resolve_name(name);

	/* A name this architecture does not have is not needed here. */
	if (nr == __NR_SCMP_ERROR)
		return;
	if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) < 0)
		fatalx("seccomp: allowing %s", name);
}

static void
rule(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n,
    const struct scmp_arg_cmp *args)
{
	if (seccomp_rule_add_array(ctx, action, nr, n, args) < 0)
		fatalx("seccomp: a rule for system call %d", nr);
}

/* What every confined process needs: memory, threads, time, signals
 * for its own death, I/O on descriptors it has. */
static void
allow_common(scmp_filter_ctx ctx)
{
	static const char *const names[] = {
		"read", "write", "readv", "writev", "pread64", "pwrite64",
		"lseek", "close", "dup", "dup2", "dup3", "fcntl",
		"fstat", "newfstatat", "statx", "stat", "lstat",
		"mmap", "munmap", "mprotect", "mremap", "brk", "madvise",
		"futex", "set_robust_list", "get_robust_list", "rseq",
		"exit", "exit_group", "sched_yield", "sched_getaffinity",
		"getpid", "gettid", "getppid", "tgkill", "tkill",
		"rt_sigprocmask", "rt_sigaction", "rt_sigreturn",
		"sigaltstack", "restart_syscall",
		"nanosleep", "clock_nanosleep", "clock_gettime",
		"clock_getres", "gettimeofday", "time", "getrandom",
		"uname", "sysinfo", "getrlimit", "prlimit64",
		"getuid", "geteuid", "getgid", "getegid", "getgroups",
		"epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl",
		"epoll_create1", "eventfd2", "pipe2", "poll", "ppoll",
		"select", "pselect6",
		"sendmsg", "recvmsg", "sendto", "recvfrom", "sendmmsg",
		"recvmmsg", "getsockname", "getpeername", "setsockopt",
		"getsockopt", "shutdown", "socketpair",
		"memfd_create", "ftruncate",
	};

	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		allow_name(ctx, names[i]);
	/* Threads, not processes: clone() only with CLONE_THREAD.
	 * clone3() hides its flags in memory a filter cannot read:
	 * ENOSYS makes glibc fall back to clone(). */
	struct scmp_arg_cmp thread = SCMP_A0(SCMP_CMP_MASKED_EQ,
	    CLONE_THREAD, CLONE_THREAD);
	rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, &thread);
	rule(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL);
	/* ioctl: asking how much can be read, or whether it is a terminal. */
	static const unsigned long ioctls[] = { FIONREAD, FIONBIO, TCGETS };
	for (size_t i = 0; i < ARRAY_LEN(ioctls); i++) {
		struct scmp_arg_cmp a = SCMP_A1(SCMP_CMP_EQ, ioctls[i]);
		rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, &a);
	}
#ifdef SANDBOX_SANITIZERS
	/* ASan and UBSan read /proc, map shadow memory and print reports. */
	static const char *const sanitizer[] = {
		"open", "openat", "readlink", "readlinkat", "getdents64",
		"prctl", "mincore", "msync", "setrlimit", "access",
		"faccessat", "getcwd", "pipe", "sched_getparam",
		"sched_getscheduler",
	};
	for (size_t i = 0; i < ARRAY_LEN(sanitizer); i++)
		allow_name(ctx, sanitizer[i]);
#endif
}

static void
allow_smtp(scmp_filter_ctx ctx)
{
	/* Clients of the resolver (UDP, TCP), the policy service (inet,
	 * unix) and nothing else: netlink (getaddrinfo's address probe)
	 * is told the family is not there. */
	static const int families[] = { AF_UNIX, AF_INET, AF_INET6 };
	for (size_t i = 0; i < ARRAY_LEN(families); i++) {
		struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_EQ,
		    (scmp_datum_t)families[i]);
		rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, &a);
	}
	for (int f = 0; f < AF_MAX; f++) {
		if (f == AF_UNIX || f == AF_INET || f == AF_INET6)
			continue;
		struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)f);
		rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, &a);
	}
	ALLOW(ctx, connect);
	/* Files: read-only, and the root holds only etc/ copies. */
#ifndef SANDBOX_SANITIZERS
	struct scmp_arg_cmp ro2 = SCMP_A2(SCMP_CMP_MASKED_EQ,
	    O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY);
	struct scmp_arg_cmp ro1 = SCMP_A1(SCMP_CMP_MASKED_EQ,
	    O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY);
	rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1, &ro2);
	rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(open), 1, &ro1);
#endif
}

/*
 * syslog(3) connects again to /dev/log when its socket was closed or
 * never connected (no syslog daemon yet): a unix datagram socket.  In a
 * chroot the connect fails and the line is lost, never the process.
 */
static void
allow_syslog(scmp_filter_ctx ctx)
{
	struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);

	rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, &unix_only);
	ALLOW(ctx, connect);
}

static void
allow_lookup(scmp_filter_ctx ctx)
{
	/* SQLite opens the database (and, for a WAL one, its -shm file)
	 * and resolves its name; nothing is written but its locks. */
	static const char *const names[] = {
		"open", "openat", "getcwd", "readlink", "readlinkat", "access",
		"faccessat", "faccessat2", "fsync", "fdatasync",
	};
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		allow_name(ctx, names[i]);
}

/*
 * The queue process: SQLite on the files of its root (the database, its
 * WAL and shared memory, the journal, temporary files), the lock, the
 * channels to the workers and the spawner, the memfds it hands over.
 */
static void
allow_queue(scmp_filter_ctx ctx)
{
	static const char *const names[] = {
		"open", "openat", "unlink", "unlinkat", "access", "faccessat",
		"faccessat2", "fsync", "fdatasync", "fallocate", "flock",
		"fchmod", "fchown", "getcwd", "readlink", "timerfd_create",
		"timerfd_settime", "timerfd_gettime", "fadvise64", "msync",
		"signalfd", "signalfd4",
		/* the free space of the queue's file system (queue.c) */
		"statfs", "fstatfs",
	};

	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		allow_name(ctx, names[i]);
}

/*
 * The delivery processes run what the operator configured (pipe
 * commands, curl, GMime): an allow-list would have to allow nearly
 * everything.  Refused instead (EPERM, so a command sees an ordinary
 * error) are the calls no part of delivery needs and that an attacker
 * wants: other processes' memory, new namespaces and mounts, kernel
 * modules and keys, eBPF, io_uring (which bypasses this filter), the
 * clock and the machine.
 */
static void
deny_delivery(scmp_filter_ctx ctx)
{
	static const char *const names[] = {
		"ptrace", "process_vm_readv", "process_vm_writev",
		"process_madvise", "pidfd_getfd", "kcmp",
		"mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
		"move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
		"fspick", "mount_setattr", "name_to_handle_at",
		"open_by_handle_at",
		"init_module", "finit_module", "delete_module", "kexec_load",
		"kexec_file_load", "bpf", "perf_event_open", "userfaultfd",
		"keyctl", "add_key", "request_key",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"swapon", "swapoff", "reboot", "acct", "quotactl",
		"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
		"sethostname", "setdomainname", "syslog", "iopl", "ioperm",
		"vhangup", "lookup_dcookie", "fanotify_init",
	};

	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		int nr = seccomp_syscall_resolve_name(names[i]);

		if (nr != __NR_SCMP_ERROR &&
		    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0) < 0)
			fatalx("seccomp: refusing %s", names[i]);
	}
}

static void
load_filter(const struct sandbox *sb)
{
	bool deny_list = sb->filter == SANDBOX_FILTER_DELIVERY;
	scmp_filter_ctx ctx;

	/* Anything not allowed kills the whole process, every thread;
	 * the delivery processes' is a list of what is refused. */
	if ((ctx = seccomp_init(deny_list ? SCMP_ACT_ALLOW :
	    SCMP_ACT_KILL_PROCESS)) == NULL)
		fatalx("%s: seccomp_init", sb->title);
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) < 0)
		fatalx("%s: seccomp: cannot filter every thread", sb->title);
	if (!deny_list)
		allow_common(ctx);
	switch (sb->filter) {
	case SANDBOX_FILTER_SMTP:
		allow_smtp(ctx);
		break;
	case SANDBOX_FILTER_LOOKUP:
		allow_lookup(ctx);
		allow_syslog(ctx);
		break;
	case SANDBOX_FILTER_METRICS:
		/* Scrapers' connections; the rest is allow_common(). */
		allow_name(ctx, "accept4");
		allow_name(ctx, "accept");
		allow_syslog(ctx);
		break;
	case SANDBOX_FILTER_QUEUE:
		allow_queue(ctx);
		allow_syslog(ctx);
		break;
	case SANDBOX_FILTER_DELIVERY:
		deny_delivery(ctx);
		break;
	case SANDBOX_FILTER_NONE:
		break;
	}
	if (seccomp_load(ctx) < 0)
		fatalx("%s: loading the seccomp filter failed", sb->title);
	seccomp_release(ctx);
}

void
sandbox_enter(const struct sandbox *sb)
{
	bool root = sandbox_privileged();
	unsigned uid = 0, gid = 0;

	/* What the process reads once and keeps, while it still can. */
	tzset();
	if (root && sb->user != NULL &&
	    proc_lookup_user(sb->user, sb->group, &uid, &gid) < 0)
		exit(1);
	if (root && sb->root != NULL)
		enter_root(sb);
	if (root) {
		drop_bounding_set();
		if (sb->user != NULL &&
		    proc_switch_user(sb->user, uid, gid) < 0)
			exit(1);
	}
	drop_capabilities();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal("%s: no_new_privs", sb->title);
	if (sb->filter != SANDBOX_FILTER_NONE)
		load_filter(sb);
}
