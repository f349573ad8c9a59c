/*
 * handler_maildir — delivery into a maildir (https://cr.yp.to/proto/maildir.html).
 *
 * Each recipient gets its own file (with its own Delivered-To:), written
 * in tmp/ under a unique name, fsynced, renamed into new/, and new/ is
 * fsynced: once we report DELIVERY_OK the message survives a crash, and
 * a reader never sees a partial file.  Missing folders (the maildir and
 * its parents, cur/ new/ tmp/) are created with mode 0700 and their
 * parents fsynced.
 *
 * Errors.  A path that can never be a maildir (ENOTDIR, ELOOP,
 * ENAMETOOLONG, EISDIR) bounces.  Permission problems (EACCES, EPERM)
 * defer: they are the operator's to fix (an owner, a mode), and mail
 * accepted with a 250 must not be lost to a chmod; it waits, and bounces
 * only when it expires.  Everything else (ENOSPC, EDQUOT, EIO, EROFS, ...)
 * is deferred too: the disk fills, the quota grows, the file system comes
 * back.  A timeout (MAILDIR_TIMEOUT, a hung network file system) defers.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/log.h"
#include "common/util.h"

static volatile sig_atomic_t maildir_timed_out;

static void
on_alarm(int sig)
{
	maildir_timed_out = 1;
}

int
maildir_name(char *out, size_t size, const struct timespec *now, pid_t pid,
    unsigned long counter, const char *hostname)
{
	struct buf host;
	int n;

	/* The spec's escapes keep '/' out of the name and ':' free for the
	 * info suffix that readers add in cur/. */
	buf_init(&host);
	buf_append(&host, "", 0);
	for (const char *p = hostname; *p != '\0'; p++) {
		if (*p == '/')
			buf_appends(&host, "\\057");
		else if (*p == ':')
			buf_appends(&host, "\\072");
		else
			buf_append(&host, p, 1);
	}
	n = snprintf(out, size, "%lld.M%ldP%ldQ%lu.%s", (long long)now->tv_sec,
	    now->tv_nsec / 1000, (long)pid, counter, host.data);
	buf_free(&host);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

void
crlf_to_lf(struct buf *out, const char *content, size_t len)
{
	const char *p = content, *end = content + len;

	buf_reserve(out, len);
	while (p < end) {
		const char *cr = memchr(p, '\r', (size_t)(end - p));

		if (cr == NULL) {
			buf_append(out, p, (size_t)(end - p));
			break;
		}
		buf_append(out, p, (size_t)(cr - p));
		if (cr + 1 < end && cr[1] == '\n')
			p = cr + 1;          /* keep the LF only */
		else {
			buf_append(out, "\r", 1);
			p = cr + 1;
		}
	}
}

void
maildir_header(struct buf *out, const char *sender, const char *rcpt)
{
	buf_appendf(out, "Return-Path: <%s>\nDelivered-To: %s\n", sender, rcpt);
}

static bool
errno_is_permanent(int e)
{
	return e == ENOTDIR || e == ELOOP || e == ENAMETOOLONG || e == EISDIR;
}

/* Record a failed step for one recipient, deferred or bounced by errno. */
static void
maildir_error(struct delivery_rcpt *r, const char *what, const char *path,
    int e)
{
	if (maildir_timed_out)
		delivery_set(r, DELIVERY_DEFER, "4.4.7 maildir %s: timed out after "
		    "%d seconds", path, MAILDIR_TIMEOUT);
	else if (errno_is_permanent(e))
		delivery_set(r, DELIVERY_FAIL, "550 5.2.0 cannot %s %s: %s", what,
		    path, strerror(e));
	else if (e == EACCES || e == EPERM)
		delivery_set(r, DELIVERY_DEFER, "451 4.3.0 cannot %s %s: %s", what,
		    path, strerror(e));
	else if (e == EDQUOT)
		delivery_set(r, DELIVERY_DEFER, "452 4.2.2 cannot %s %s: %s", what,
		    path, strerror(e));
	else if (e == ENOSPC)
		delivery_set(r, DELIVERY_DEFER, "452 4.3.1 cannot %s %s: %s", what,
		    path, strerror(e));
	else
		delivery_set(r, DELIVERY_DEFER, "451 4.2.0 cannot %s %s: %s", what,
		    path, strerror(e));
}

static int
fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc, saved;

	if (fd == -1)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* mkdir -p with mode 0700, fsyncing the parent of each directory made
 * so that the new entry is durable too.  -1 with errno and the failing
 * path in failed. */
static int
make_dirs(const char *path, char *failed, size_t failedsize)
{
	char tmp[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		strlcpy_mx(failed, path, failedsize);
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; ; p++) {
		char saved = *p;

		if (saved != '/' && saved != '\0')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) == 0) {
			char *slash = strrchr(tmp, '/');
			int rc;

			*slash = '\0';
			rc = fsync_dir(slash == tmp ? "/" : tmp);
			*slash = '/';
			if (rc == -1)
				goto fail;
		} else if (errno != EEXIST)
			goto fail;
		*p = saved;
		if (saved == '\0' || p[1] == '\0')
			break;
	}
	return 0;
fail:
	strlcpy_mx(failed, tmp, failedsize);
	return -1;
}

/* The maildir and its three folders. */
static int
prepare_maildir(const char *root, struct delivery_rcpt *r)
{
	static const char *const sub[] = { "tmp", "new", "cur" };
	char path[4096], failed[4096];

	for (size_t i = 0; i < ARRAY_LEN(sub); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", root, sub[i]) >=
		    (int)sizeof(path)) {
			maildir_error(r, "create", root, ENAMETOOLONG);
			return -1;
		}
		if (make_dirs(path, failed, sizeof(failed)) == -1) {
			maildir_error(r, "create", failed, errno);
			return -1;
		}
	}
	return 0;
}

/* Not fd_write_all(): a write interrupted by the timeout's SIGALRM must
 * give up, not retry. */
static int
write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR && !maildir_timed_out)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* tmp/NAME written and fsynced, then renamed to new/NAME, new/ fsynced. */
static void
deliver_one(struct delivery_job *job, const char *root, const char *host,
    const char *body, size_t bodylen, struct delivery_rcpt *r)
{
	static unsigned long counter;
	char name[512], tmpf[8192], newf[8192], newdir[8192];
	struct timespec now;
	struct buf head;
	int fd;

	clock_gettime(CLOCK_REALTIME, &now);
	if (maildir_name(name, sizeof(name), &now, getpid(), ++counter,
	    host) == -1) {
		maildir_error(r, "name a file in", root, ENAMETOOLONG);
		return;
	}
	/* root < 4096 and name < 512: these fit */
	if (snprintf(tmpf, sizeof(tmpf), "%s/tmp/%s", root, name) < 0 ||
	    snprintf(newf, sizeof(newf), "%s/new/%s", root, name) < 0 ||
	    snprintf(newdir, sizeof(newdir), "%s/new", root) < 0) {
		maildir_error(r, "name a file in", root, ENAMETOOLONG);
		return;
	}
	fd = open(tmpf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1) {
		maildir_error(r, "create", tmpf, errno);
		return;
	}
	buf_init(&head);
	maildir_header(&head, job->sender, r->address);
	if (write_all(fd, head.data, head.len) == -1 ||
	    write_all(fd, body, bodylen) == -1 || fsync(fd) == -1) {
		int e = errno;

		close(fd);
		unlink(tmpf);
		maildir_error(r, "write", tmpf, e);
	} else if (close(fd) == -1) {
		/* NFS reports write errors at close */
		maildir_error(r, "write", tmpf, errno);
		unlink(tmpf);
	} else if (rename(tmpf, newf) == -1) {
		maildir_error(r, "move to new/", tmpf, errno);
		unlink(tmpf);
	} else if (fsync_dir(newdir) == -1)
		maildir_error(r, "sync", newdir, errno);
	else
		delivery_set(r, DELIVERY_OK, "250 2.0.0 delivered to %s", newf);
	buf_free(&head);
}

int
handler_maildir(struct delivery_job *job, const struct json_value *params)
{
	const char *path = json_get_string(params, "path"), *content;
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	char root[4096], host[256];
	struct buf body;
	size_t len;

	if (path == NULL || path[0] != '/') {
		log_error("id=%s maildir: no absolute \"path\" in the parameters",
		    job->queue_id);
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.5 maildir without a path");
		return -1;
	}
	/* "/var/mail/bob/" and "/var/mail/bob" are the same maildir; one
	 * under the start directory is reached from it (delivery.h). */
	len = strlcpy_mx(root, delivery_local_path(path), sizeof(root));
	while (len > 1 && root[len - 1] == '/')
		root[--len] = '\0';
	strlcpy_mx(job->destination, path, sizeof(job->destination));
	if ((content = delivery_content(job)) == NULL)
		return -1;
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		strlcpy_mx(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';

	/* No SA_RESTART: a blocked write returns EINTR when time is up. */
	maildir_timed_out = 0;
	sigaction(SIGALRM, &sa, &old);
	alarm(MAILDIR_TIMEOUT);

	buf_init(&body);
	crlf_to_lf(&body, content, job->content_len);
	for (size_t i = 0; i < job->nrcpts; i++) {
		struct delivery_rcpt *r = &job->rcpts[i];

		if (r->status != DELIVERY_PENDING)
			continue;
		if (prepare_maildir(root, r) == 0)
			deliver_one(job, root, host, body.data != NULL ? body.data :
			    "", body.len, r);
	}
	buf_free(&body);
	alarm(0);
	sigaction(SIGALRM, &old, NULL);
	return 0;
}
