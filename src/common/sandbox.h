/*
 * sandbox — what the kernel enforces for each process role: its user, its
 * root directory, its capabilities (none), no_new_privs, and a seccomp
 * allow-list of system calls.  The mechanics live here, one place for all
 * roles (as OpenBSD's proc.c); the roles' code only says which sandbox
 * it enters, after it has loaded and opened everything it needs.
 *
 * Started as root, each role runs as its own user (README, "Processes and
 * what the kernel enforces"):
 *   smtp workers   server.user, chrooted into server.chroot_dir, the smtp
 *                  seccomp filter
 *   queue          server.queue_user, chrooted into the queue directory,
 *                  the queue's filter
 *   lookup         server.lookup_user (credentials for AUTH), the
 *                  lookup seccomp filter
 *   metrics        server.user, chrooted into server.chroot_dir, the
 *                  exporter's filter (metrics.listen)
 *   delivery       server.delivery_user or a route's user=, started by
 *                  the spawner (spawner.h), the delivery deny-list
 * Started as an ordinary user nothing can switch users or chroot: every
 * process keeps that user, and only no_new_privs and the filters apply.
 *
 * Start-up checks (master, before anything forks), each 0 or -1 after
 * printing one line that names the process, the user, the path and the
 * fix to stderr:
 *   sandbox_check_users()        every configured user (routes' user=
 *                                too) exists and is not root; no other
 *                                role shares the queue's
 *   sandbox_check_queue_closed() as each of the other users, in a child,
 *                                try to open the queue directory and
 *                                queue.db: any success refuses the start
 *   sandbox_chroot_prepare()     the workers' root: created root-owned
 *                                0755 when missing, refused when someone
 *                                other than root could write it
 *
 * sandbox_enter() confines the calling process; every failure is fatal
 * (a process that could not drop what it should must not run).  The
 * seccomp filter is installed on every thread of the process (TSYNC), so
 * thread pools started before it are confined too.  A forbidden system
 * call kills the whole process (SIGSYS); the master replaces it.
 */
#ifndef MXGATE_SANDBOX_H
#define MXGATE_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

enum sandbox_filter {
	SANDBOX_FILTER_NONE,
	SANDBOX_FILTER_SMTP,    /* network I/O, memory, threads; no exec,
	                         * no fork, no file but read-only opens */
	SANDBOX_FILTER_QUEUE,   /* files (in its root, the queue
	                         * directory), its channels, memfds; no
	                         * fork, no exec, no socket but syslog's */
	SANDBOX_FILTER_DELIVERY,/* a deny-list (EPERM): the commands it
	                         * runs inherit it; no ptrace, mounts,
	                         * namespaces, modules, keys, eBPF, io_uring */
	SANDBOX_FILTER_METRICS, /* the exporter: accepts on its listener,
	                         * I/O on its connections; no file, no
	                         * socket but syslog's */
	SANDBOX_FILTER_LOOKUP,  /* reads files (the credential sources,
	                         * SQLite's locks); no socket but syslog's,
	                         * no fork, no exec */
};

/* Where, inside the workers' root, a unix policy service's directory is
 * mounted (policy.service = "unix:/dir/sock" is reached as
 * SANDBOX_POLICY_DIR "/sock"). */
#define SANDBOX_POLICY_DIR "/run/policy"
/* Where the directories of unix-socket milters and named policy services
 * are mounted: the N-th of socket_dirs at SANDBOX_SOCKET_DIR "/N". */
#define SANDBOX_SOCKET_DIR "/run/sockets"
#define SANDBOX_MAX_SOCKET_DIRS 32

struct sandbox {
	const char *title;      /* "smtp", for messages */
	const char *user;       /* NULL: keep the current user */
	const char *group;      /* NULL: the user's primary group */
	const char *root;       /* chroot into it (as root only); NULL: none */
	bool        resolver;   /* keep the resolver's files in root's etc/
	                         * (sandbox_chroot_refresh()) */
	const char *bind_dir;   /* mounted at SANDBOX_POLICY_DIR in root */
	char *const *socket_dirs;   /* mounted at SANDBOX_SOCKET_DIR/N */
	size_t      nsocket_dirs;
	enum sandbox_filter filter;
};

int  sandbox_check_users(const struct mxconf *conf);
int  sandbox_check_queue_closed(const struct mxconf *conf);
int  sandbox_chroot_prepare(const char *dir);
/* Copy the files glibc's resolver and NSS read (resolv.conf, hosts,
 * nsswitch.conf, host.conf, gai.conf) into root's etc/, when changed;
 * root only.  0, or -1 after logging. */
int  sandbox_chroot_refresh(const char *root);

/* The delivery spawner (spawner.h) stays root to start processes as
 * other users: it keeps CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL
 * alone (bounding set too), and no_new_privs.  Fatal on failure. */
void sandbox_spawner(void);

/* Confine the calling process.  Fatal on any failure. */
void sandbox_enter(const struct sandbox *sb);

/* Started as root: users can be switched, roots changed, capabilities
 * dropped.  Otherwise every process keeps the user it was started as. */
bool sandbox_privileged(void);

#endif
