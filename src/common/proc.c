/*
 * proc — see proc.h.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>

#include "common/log.h"
#include "common/proc.h"
#include "common/util.h"

extern char **environ;

static char  *title_area;     /* the original argv[0] */
static size_t title_size;     /* bytes usable up to the end of argv/env */

/*
 * The kernel shows the memory that argv occupied as the command line.
 * argv and the environment are contiguous, so moving both elsewhere gives
 * the title all of that space.
 */
void
proc_title_init(int argc, char **argv)
{
	char *start, *end;
	char **newenv;
	int i, nenv;

	if (argc == 0 || argv[0] == NULL)
		return;
	start = argv[0];
	end = argv[0] + strlen(argv[0]) + 1;
	for (i = 1; i < argc; i++) {
		if (argv[i] == end)
			end = argv[i] + strlen(argv[i]) + 1;
	}
	for (nenv = 0; environ[nenv] != NULL; nenv++) {
		if (environ[nenv] == end)
			end = environ[nenv] + strlen(environ[nenv]) + 1;
	}
	newenv = xcalloc((size_t)nenv + 1, sizeof(char *));
	for (i = 0; i < nenv; i++)
		newenv[i] = xstrdup(environ[i]);
	environ = newenv;
	for (i = 0; i < argc; i++)
		argv[i] = xstrdup(argv[i]);

	title_area = start;
	title_size = (size_t)(end - start);
}

void
proc_title_set(const char *fmt, ...)
{
	char title[256];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(title, sizeof(title), fmt, ap);
	va_end(ap);

	/* comm is what top(1) and pkill(1) show: the role without prefix. */
	const char *colon = strchr(title, ':');
	prctl(PR_SET_NAME, colon ? colon + 2 : title, 0, 0, 0);

	if (title_area == NULL || title_size < 2)
		return;
	n = strlcpy_mx(title_area, title, title_size);
	if (n < title_size)
		memset(title_area + n, '\0', title_size - n);
}

int
proc_signalfd(const int *signals, int nsignals)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (int i = 0; i < nsignals; i++)
		sigaddset(&set, signals[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		fatal("sigprocmask");
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		fatal("signalfd");
	return fd;
}

int
proc_lookup_user(const char *user, const char *group, unsigned *uid,
    unsigned *gid)
{
	struct passwd *pw;
	struct group *gr;

	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		log_error("unknown user \"%s\"", user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (group != NULL) {
		gr = getgrnam(group);
		if (gr == NULL) {
			log_error("unknown group \"%s\"", group);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

int
proc_drop_privileges(const char *user, const char *group)
{
	unsigned uid, gid;

	if (geteuid() != 0 || user == NULL)
		return 0;
	if (proc_lookup_user(user, group, &uid, &gid) < 0)
		return -1;
	return proc_switch_user(user, uid, gid);
}

int
proc_switch_user(const char *user, unsigned uid, unsigned gid)
{
	gid_t gidv;

	if (uid == 0) {
		log_error("refusing to run as root: configure an unprivileged user");
		return -1;
	}
	gidv = (gid_t)gid;
	if (setgroups(1, &gidv) < 0 ||
	    setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0 ||
	    setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0) {
		log_error("dropping privileges to %s: %s", user, strerror(errno));
		return -1;
	}
	/* Irrevocable: a process that could become root again has not
	 * dropped anything. */
	if (setuid(0) == 0 || seteuid(0) == 0)
		fatalx("regained root after dropping privileges");
	/* No core dumps or ptrace by the unprivileged user, and no set-id
	 * program can give privileges back. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	return 0;
}
