/*
 * reload — see reload.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "common/util.h"
#include "master/check.h"
#include "master/reload.h"

static void
reload_error(const char *msg)
{
	/* The FILE:LINE form of the start, after what was going on. */
	log_error("reload: %s", msg);
}

static bool
same_string(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool
same_plugins(const struct mxconf *a, const struct mxconf *b)
{
	if (a->nplugins != b->nplugins)
		return false;
	for (size_t i = 0; i < a->nplugins; i++) {
		if (!same_string(a->plugins[i].path, b->plugins[i].path) ||
		    !same_string(a->plugins[i].args, b->plugins[i].args))
			return false;
	}
	return true;
}

const char *
reload_fixed_change(const struct mxconf *a, const struct mxconf *b)
{
	if (!same_string(a->user, b->user))
		return "server.user";
	if (!same_string(a->group, b->group))
		return "server.group";
	if (!same_string(a->queue_user, b->queue_user))
		return "server.queue_user";
	if (!same_string(a->chroot_dir, b->chroot_dir))
		return "server.chroot_dir";
	if (!same_string(a->pid_file, b->pid_file))
		return "server.pid_file";
	if (!same_string(a->queue_dir, b->queue_dir))
		return "queue.directory";
	if (!same_plugins(a, b))
		return "plugins";
	/* The exporter's listener and the counter store are made once,
	 * before anything forks; every process took its log format then. */
	if (!same_string(a->metrics_listen, b->metrics_listen))
		return "metrics.listen";
	if (!same_string(a->log_format, b->log_format))
		return "server.log_format";
	return NULL;
}

/* The file, read from where mxgated started: relative paths in it (and
 * its own name) start there, wherever the master is now (daemon() took
 * it to /). */
static struct mxconf *
load_from_start_dir(const struct mxconf *old)
{
	struct mxconf *c = NULL;
	int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char *abs;

	if (here < 0) {
		log_error("reload: open .: %s", strerror(errno));
		return NULL;
	}
	if (old->start_dir != NULL && chdir(old->start_dir) < 0)
		log_error("reload: %s: %s", old->start_dir, strerror(errno));
	else if ((c = config_load(old->path, reload_error)) != NULL) {
		if (c->queue_dir[0] != '/' && old->start_dir != NULL) {
			xasprintf(&abs, "%s/%s", old->start_dir, c->queue_dir);
			free(c->queue_dir);
			c->queue_dir = abs;
		}
		if (old->start_dir != NULL)
			c->start_dir = xstrdup(old->start_dir);
	}
	if (fchdir(here) < 0)
		fatal("reload: fchdir");
	close(here);
	return c;
}

struct mxconf *
reload_load(const struct mxconf *old)
{
	struct mxconf *c;
	const char *fixed;
	int warnings;

	if ((c = load_from_start_dir(old)) == NULL)
		goto refused;
	if ((fixed = reload_fixed_change(old, c)) != NULL) {
		log_error("reload: %s: %s changed: it takes effect only at a"
		    " restart (mxgated stopped and started)", c->path, fixed);
		goto refused;
	}
	/* What the start refuses, the reload refuses (mxgated.c).  The
	 * users' check writes on stderr, which a daemon has closed: the
	 * log names it. */
	if (sandbox_check_users(c) < 0) {
		log_error("reload: %s: a user it names does not exist, is root"
		    " or shares the queue's user (mxgated -n -c %s says which)",
		    c->path, c->path);
		goto refused;
	}
	if (check_access(c, true, &warnings) > 0 || check_prepare_maildirs(c) < 0)
		goto refused;
	return c;
refused:
	config_free(c);
	log_error("reload: %s refused: nothing changed, the running"
	    " configuration stays", old->path);
	return NULL;
}
