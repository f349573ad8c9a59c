/*
 * delivery — the helpers of delivery.h shared by the relay client and the
 * local handlers.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "delivery/delivery.h"
#include "delivery/spawner.h"
#include "common/log.h"
#include "common/util.h"

/* What a reply without a code gets in front, by status. */
static const char *
default_code(enum delivery_status status)
{
	switch (status) {
	case DELIVERY_OK:
		return "250";
	case DELIVERY_FAIL:
		return "554";
	default:
		return "451";
	}
}

static const char *
default_enhanced(enum delivery_status status)
{
	switch (status) {
	case DELIVERY_OK:
		return "2.0.0";
	case DELIVERY_FAIL:
		return "5.0.0";
	default:
		return "4.0.0";
	}
}

/* "NNN " or "NNN-" or exactly "NNN" at the start of s. */
static bool
has_code(const char *s)
{
	return isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
	    isdigit((unsigned char)s[2]) &&
	    (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/* "D.D.D" (RFC 3463: class.subject.detail) at the start of s. */
static bool
has_enhanced(const char *s)
{
	size_t n;

	if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	n = strspn(s + 2, "0123456789");
	if (n < 1 || n > 3 || s[2 + n] != '.')
		return false;
	s += 3 + n;
	n = strspn(s, "0123456789");
	return n >= 1 && n <= 3 && (s[n] == ' ' || s[n] == '\0');
}

/* Replies come from remote servers and commands' stderr: one line of
 * printable text in the queue and the logs. */
static void
sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

static void
vset(struct delivery_rcpt *r, enum delivery_status status, const char *fmt,
    va_list ap)
{
	char text[DELIVERY_REPLY_MAX];
	size_t n = 0;

	vsnprintf(text, sizeof(text), fmt, ap);
	sanitize(text);
	r->reply[0] = '\0';
	if (!has_code(text)) {
		n = (size_t)snprintf(r->reply, sizeof(r->reply), "%s ",
		    default_code(status));
		if (!has_enhanced(text))
			n += (size_t)snprintf(r->reply + n, sizeof(r->reply) - n,
			    "%s ", default_enhanced(status));
	}
	strlcpy_mx(r->reply + n, text, sizeof(r->reply) - n);
	r->status = status;
	r->remote = false;
}

void
delivery_set(struct delivery_rcpt *r, enum delivery_status status,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(r, status, fmt, ap);
	va_end(ap);
}

void
delivery_set_pending(struct delivery_job *job, enum delivery_status status,
    const char *fmt, ...)
{
	va_list ap;
	size_t i;

	for (i = 0; i < job->nrcpts; i++) {
		if (job->rcpts[i].status != DELIVERY_PENDING)
			continue;
		va_start(ap, fmt);
		vset(&job->rcpts[i], status, fmt, ap);
		va_end(ap);
	}
}

/*
 * Contents up to this size are read into one buffer that the process
 * keeps from job to job; larger ones are mapped.  Reading costs a copy;
 * a mapping costs a page fault per page and, at munmap, a TLB flush on
 * every CPU the process ran on: measured on a 2-CPU VM, the munmap of
 * each 100 KB message was a third of the delivery process's CPU.
 */
#define DELIVERY_READ_MAX (1024 * 1024)

static struct {
	char  *data;
	size_t cap;
} readbuf;

static const char *
content_read(struct delivery_job *job)
{
	ssize_t n;

	if (readbuf.cap < job->content_len) {
		free(readbuf.data);
		readbuf.cap = job->content_len < 128 * 1024 ? 128 * 1024 :
		    DELIVERY_READ_MAX;
		readbuf.data = xmalloc(readbuf.cap);
	}
	n = fd_pread_full(job->content_fd, readbuf.data, job->content_len,
	    job->content_off);
	if (n != (ssize_t)job->content_len) {
		log_error("id=%s reading the message: %s", job->queue_id,
		    n < 0 ? strerror(errno) : "short read");
		return NULL;
	}
	return readbuf.data;
}

/* A mapping starts on a page: the content is delta bytes into it. */
static size_t
map_delta(const struct delivery_job *job)
{
	return (size_t)(job->content_off % (uint64_t)sysconf(_SC_PAGESIZE));
}

const char *
delivery_content(struct delivery_job *job)
{
	struct stat st;
	size_t delta;
	char *p;

	if (job->content_map != NULL)
		return (char *)job->content_map + map_delta(job);
	if (job->content_len == 0)
		return "";
	if (job->content_len <= DELIVERY_READ_MAX) {
		if (job->content_read == NULL)
			job->content_read = content_read(job);
		return job->content_read;
	}
	/* Past the end of the file, a mapping is a SIGBUS when read. */
	if (fstat(job->content_fd, &st) < 0 ||
	    (uint64_t)st.st_size < job->content_off ||
	    (uint64_t)st.st_size - job->content_off < job->content_len) {
		log_error("id=%s the message is not all there", job->queue_id);
		return NULL;
	}
	delta = map_delta(job);
	p = mmap(NULL, job->content_len + delta, PROT_READ, MAP_SHARED,
	    job->content_fd, (off_t)(job->content_off - delta));
	if (p == MAP_FAILED) {
		log_error("id=%s mapping the message: %s", job->queue_id,
		    strerror(errno));
		return NULL;
	}
	job->content_map = p;
	return p + delta;
}

void
delivery_content_release(struct delivery_job *job)
{
	if (job->content_map != NULL)
		munmap(job->content_map, job->content_len + map_delta(job));
	job->content_map = NULL;
	job->content_read = NULL;
}

const char *delivery_start_dir;

const char *
delivery_local_path(const char *path)
{
	size_t n;

	if (delivery_start_dir == NULL || strcmp(delivery_start_dir, "/") == 0)
		return path;
	n = strlen(delivery_start_dir);
	if (strncmp(path, delivery_start_dir, n) != 0 || path[n] != '/')
		return path;
	while (path[n] == '/')
		n++;
	return path[n] != '\0' ? path + n : ".";
}

/* The delivery process's report channel (spawner.c sets it). */
int delivery_note_fd = -1;

void
delivery_note_sts(const char *domain, const char *id, const char *mode,
    int64_t max_age, int64_t fetched_at, const char *mx)
{
	struct spawn_tls n;

	if (delivery_note_fd < 0)
		return;
	memset(&n, 0, sizeof(n));
	n.job = SPAWN_TLS_NOTE;
	n.kind = SPAWN_TLS_STS_POLICY;
	n.max_age = max_age;
	n.fetched_at = fetched_at;
	snprintf(n.domain, sizeof(n.domain), "%s", domain);
	snprintf(n.id, sizeof(n.id), "%s", id);
	snprintf(n.mode, sizeof(n.mode), "%s", mode);
	snprintf(n.text, sizeof(n.text), "%s", mx);
	if (send(delivery_note_fd, &n, sizeof(n), MSG_NOSIGNAL) < 0)
		_exit(1);
}

void
delivery_note_tls(const struct delivery_tls_result *r)
{
	struct spawn_tls n;

	if (delivery_note_fd < 0)
		return;
	memset(&n, 0, sizeof(n));
	n.job = SPAWN_TLS_NOTE;
	n.kind = SPAWN_TLS_RESULT;
	snprintf(n.domain, sizeof(n.domain), "%s", r->domain);
	snprintf(n.id, sizeof(n.id), "%s", r->policy_type);
	snprintf(n.text, sizeof(n.text), "%s", r->policy != NULL ?
	    r->policy : "");
	snprintf(n.mx_host, sizeof(n.mx_host), "%s", r->mx_host != NULL ?
	    r->mx_host : "");
	snprintf(n.result_type, sizeof(n.result_type), "%s",
	    r->result_type != NULL ? r->result_type : "");
	snprintf(n.sending_ip, sizeof(n.sending_ip), "%s",
	    r->sending_ip != NULL ? r->sending_ip : "");
	snprintf(n.receiving_ip, sizeof(n.receiving_ip), "%s",
	    r->receiving_ip != NULL ? r->receiving_ip : "");
	if (send(delivery_note_fd, &n, sizeof(n), MSG_NOSIGNAL) < 0)
		_exit(1);
}
