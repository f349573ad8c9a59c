/*
 * mxgated — the mail gateway daemon: options, configuration, then the
 * master process (master.c), which forks everything else.
 *
 *   mxgated [-f] [-c FILE]   run (-f: stay in the foreground, log to stderr)
 *   mxgated -n [-v [-d]] [-c FILE]  check the configuration, and that every
 *                            process can reach its files (check.h): exit
 *                            0, or 1 with "FILE:LINE: problem" lines
 *   mxgated -V               print the version
 *   mxgated -h               usage, with the default configuration path
 *
 * Without -c, MXGATE_CONF ($(sysconfdir)/mxgate/mxgate.conf, the file
 * `make install` and the Debian package install) is used when it exists,
 * else the embedded default configuration (127.0.0.1:2525, queue in
 * ./var/queue), so that a build tree runs with no file at all.  The start
 * and -n say which one they run on.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/config.h"
#include "common/log.h"
#include "master/check.h"
#include "master/master.h"
#include "smtp/plugin.h"
#include "common/proc.h"
#include "common/sandbox.h"
#include "smtp/worker.h"
#include "queue/queue.h"
#include "queue/queue_db.h"
#include "common/tls.h"
#include "common/util.h"

#ifndef MXGATE_CONF
#define MXGATE_CONF "/etc/mxgate/mxgate.conf"
#endif

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: mxgated [-f] [-n [-v [-d]]] [-V] [-h] [-c config]\n"
	    "  -c FILE  the configuration; default %s when it exists,\n"
	    "           else the embedded default (127.0.0.1 port 2525,\n"
	    "           queue in ./var/queue)\n"
	    "  -f       stay in the foreground and log to stderr (with <N>\n"
	    "           priorities when stderr is the systemd journal);\n"
	    "           without -f: a daemon, logging to syslog (mail)\n"
	    "  -n       check the configuration and every file a process\n"
	    "           uses, as the user that uses it; exit 0 or 1\n"
	    "  -v       with -n: print the effective configuration first,\n"
	    "           every setting with its value, defaults included\n"
	    "  -d       with -n -v: only what differs from the defaults\n"
	    "  -V       print the version\n"
	    "see mxgated(8) and mxgate.conf(5)\n", MXGATE_CONF);
	exit(status);
}

/* How a line names the configuration in use. */
static const char *
config_name(const struct mxconf *conf, bool from_file, char *buf,
    size_t size)
{
	if (from_file)
		return conf->path;
	snprintf(buf, size, "embedded default configuration (%s does not"
	    " exist)", MXGATE_CONF);
	return buf;
}

/*
 * The pid file (server.pid_file): opened before daemon(), so that a wrong
 * path is reported where the operator sees it, written once the master
 * is the process that stays.  A stale one from a crash is overwritten
 * (the queue lock, not this file, keeps two daemons apart).
 */
static int
open_pid_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0644);

	if (fd < 0)
		log_error("server.pid_file %s: %s; fix: create its directory,"
		    " or correct server.pid_file", path, strerror(errno));
	return fd;
}

static int
write_pid_file(int fd, const char *path)
{
	char line[32];
	int n;

	n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (write(fd, line, (size_t)n) != n || close(fd) < 0) {
		log_error("server.pid_file %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static void
config_error(const char *msg)
{
	/* Bare "FILE:LINE: problem", the form editors and CI jump to. */
	fprintf(stderr, "%s\n", msg);
}

/* path, made absolute against the directory mxgated was started from
 * (relative paths in the configuration start there); NULL if getcwd
 * fails. */
static char *
absolute_path(const char *path)
{
	char cwd[PATH_MAX];
	char *abs;

	if (path[0] == '/')
		return xstrdup(path);
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		fprintf(stderr, "mxgated: getcwd: %s\n", strerror(errno));
		return NULL;
	}
	xasprintf(&abs, "%s/%s", cwd, path);
	return abs;
}

/* The queue directory is used after chdir and daemon(): make it absolute. */
static int
absolute_queue_dir(struct mxconf *conf)
{
	char *abs = absolute_path(conf->queue_dir);

	if (abs == NULL)
		return -1;
	free(conf->queue_dir);
	conf->queue_dir = abs;
	return 0;
}

/*
 * The queue directory, made (0700) and given to the queue's user while we
 * are root; then, as each other user, the proof that it cannot be opened.
 */
static int
prepare_queue_dir(const struct mxconf *conf)
{
	unsigned uid, gid;

	if (geteuid() != 0)
		return 0;
	if (mkdir(conf->queue_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "mxgated: mkdir %s: %s\n", conf->queue_dir,
		    strerror(errno));
		return -1;
	}
	if (proc_lookup_user(conf->queue_user, NULL, &uid, &gid) < 0)
		return -1;
	if (chown(conf->queue_dir, (uid_t)uid, (gid_t)gid) < 0 ||
	    chmod(conf->queue_dir, 0700) < 0) {
		fprintf(stderr, "mxgated: %s: giving it to server.queue_user"
		    " \"%s\": %s\n", conf->queue_dir, conf->queue_user,
		    strerror(errno));
		return -1;
	}
	return sandbox_check_queue_closed(conf);
}

/*
 * The plugins' init() runs in the workers, confined; a failing one stops
 * the start all the same: tried once here in a child confined as a
 * worker, which reports "FILE:LINE: ... init failed: ..." on stderr.
 */
static int
plugins_try_init(const struct mxconf *conf)
{
	pid_t pid;
	int status;

	if (plugins_count() == 0)
		return 0;
	fflush(stderr);
	if ((pid = fork()) < 0) {
		fprintf(stderr, "mxgated: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		worker_sandbox(conf);
		_exit(plugins_init(config_error) < 0 ? 1 : 0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		fprintf(stderr, "mxgated: the plugins' init() killed their"
		    " process (signal %d%s)\n", WTERMSIG(status),
		    WTERMSIG(status) == SIGSYS ? ": a system call the smtp"
		    " workers' seccomp filter forbids" : "");
	return -1;
}

/*
 * Another mxgated on the same queue directory is an error; a queue
 * process left by a master that died (it stops once its deliveries end)
 * is waited for.
 */
static int
queue_not_in_use(const struct mxconf *conf)
{
	char path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", conf->queue_dir,
	    QUEUE_LOCK_NAME) >= sizeof(path)) {
		log_error("%s: queue directory name too long", conf->queue_dir);
		return -1;
	}
	return queue_lock_wait(path, QUEUE_LOCK_WAIT(conf));
}

int
main(int argc, char **argv)
{
	const char *config_path = NULL;
	char namebuf[PATH_MAX + 64];
	bool foreground = false, check_only = false, from_file;
	bool verbose = false, changed_only = false;
	int pid_fd = -1, warnings;
	struct mxconf *conf;
	enum log_level level;
	enum log_format format;
	int ch;

	proc_title_init(argc, argv);
	while ((ch = getopt(argc, argv, "c:fnvdVh")) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'n':
			check_only = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'd':
			changed_only = true;
			break;
		case 'V':
			printf("mxgated %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout, 0);
			break;
		default:
			usage(stderr, 2);
		}
	}
	if (optind != argc || (verbose && !check_only) ||
	    (changed_only && !verbose))
		usage(stderr, 2);

	if (config_path == NULL && access(MXGATE_CONF, F_OK) == 0)
		config_path = MXGATE_CONF;
	from_file = config_path != NULL;
	conf = from_file ? config_load(config_path, config_error) :
	    config_default();
	if (conf == NULL)
		return 1;
	/* -n -v: printed as loaded (a relative queue.directory as written),
	 * before the checks, so that their verdict is a comment after it
	 * and the output can be read back. */
	if (verbose && config_write_effective(stdout, conf, changed_only) < 0) {
		config_free(conf);
		return 1;
	}
	/* Certificates and keys are read now, as root and before anything
	 * forks: the workers inherit them and never open a key file.  A bad
	 * one stops the start, and fails -n. */
	if (tls_init(conf, config_error) < 0) {
		config_free(conf);
		return 1;
	}
	/* Plugins too (plugin.h): loaded by the master, so the workers
	 * inherit them, and initialized in the workers once confined; -n
	 * only loads them and checks the ABI. */
	if (plugins_load(conf, false, config_error) < 0) {
		config_free(conf);
		return 1;
	}
	if (absolute_queue_dir(conf) < 0) {
		config_free(conf);
		return 1;
	}
	{
		char cwd[PATH_MAX];

		if (getcwd(cwd, sizeof(cwd)) != NULL)
			conf->start_dir = xstrdup(cwd);
	}
	if (check_only) {
		/* What the start refuses, -n refuses: users that do not
		 * exist, roles sharing the queue's user, a queue another
		 * role's user can open (sandbox.h), then every path. */
		int problems = 0;

		problems += sandbox_check_users(conf) < 0 ? 1 : 0;
		problems += check_access(conf, false, &warnings);

		if (problems > 0)
			fprintf(stderr, "%s: %d problem%s: mxgated would not"
			    " start as configured\n", config_name(conf,
			    from_file, namebuf, sizeof(namebuf)), problems,
			    problems == 1 ? "" : "s");
		else if (warnings > 0)
			printf("%s%s: configuration OK, with %d warning%s (on"
			    " stderr)\n", verbose ? "# " : "",
			    config_name(conf, from_file, namebuf,
			    sizeof(namebuf)), warnings, warnings == 1 ? "" : "s");
		else
			printf("%s%s: configuration OK\n", verbose ? "# " : "",
			    config_name(conf, from_file, namebuf,
			    sizeof(namebuf)));
		config_free(conf);
		return problems > 0 ? 1 : 0;
	}

	if (log_level_parse(conf->log_level, &level) < 0)
		level = LOG_LEVEL_INFO;
	if (log_format_parse(conf->log_format, &format) == 0)
		log_set_format(format);
	/* Logging starts now, on stderr or the journal until daemon() (the
	 * operator sees why a start fails), then syslog. */
	log_init(true, level);
	log_set_role("mxgated");
	log_info("mxgated %s starting with %s", PACKAGE_VERSION,
	    config_name(conf, from_file, namebuf, sizeof(namebuf)));
	if (check_access(conf, true, &warnings) > 0) {
		log_error("not started: fix the problems above (mxgated -n"
		    " checks again)");
		config_free(conf);
		return 1;
	}
	/* Started as root, each role gets its own user: they must exist,
	 * and none but the queue's may reach the queue (sandbox.h). */
	if (sandbox_check_users(conf) < 0 ||
	    check_make_parents(conf->queue_dir, false, 0, 0) < 0 ||
	    prepare_queue_dir(conf) < 0 ||
	    sandbox_chroot_prepare(conf->chroot_dir) < 0 ||
	    check_prepare_maildirs(conf) < 0 || plugins_try_init(conf) < 0 ||
	    queue_not_in_use(conf) < 0 ||
	    (conf->pid_file != NULL &&
	    (pid_fd = open_pid_file(conf->pid_file)) < 0)) {
		config_free(conf);
		return 1;
	}
	if (!foreground) {
		if (daemon(0, 0) < 0) {
			log_error("daemon: %s", strerror(errno));
			return 1;
		}
		log_init(false, level);
		log_info("mxgated %s started with %s", PACKAGE_VERSION,
		    config_name(conf, from_file, namebuf, sizeof(namebuf)));
	}
	if (pid_fd >= 0 && write_pid_file(pid_fd, conf->pid_file) < 0) {
		config_free(conf);
		return 1;
	}
	if (!sandbox_privileged()) {
		struct passwd *pw = getpwuid(geteuid());

		log_info("started as %s, not root: every process runs as %s,"
		    " without chroot or users of its own (no_new_privs and"
		    " the seccomp filters still apply)",
		    pw ? pw->pw_name : "this user", pw ? pw->pw_name : "it");
	}
	int status = master_main(conf);
	/* Only the master gets here (children exit): the file is ours. */
	if (conf->pid_file != NULL)
		unlink(conf->pid_file);
	config_free(conf);
	return status;
}
