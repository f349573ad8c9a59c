/*
 * log — see log.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "common/json.h"
#include "common/log.h"

enum log_sink { SINK_STDERR, SINK_JOURNAL, SINK_SYSLOG };

static enum log_sink log_sink = SINK_STDERR;
static enum log_level log_threshold = LOG_LEVEL_INFO;
static enum log_format log_format = LOG_FORMAT_TEXT;
static char log_role[16] = "mxgated";

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const format_names[] = { "text", "json" };

static void log_pid_forget(void);
static const int level_syslog[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/*
 * systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connected
 * to stdout and stderr (systemd.exec(5)); it only counts if stderr is
 * still that stream, not a file the service redirected it to.
 */
static bool
stderr_is_journal(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_set_level(enum log_level level)
{
	log_threshold = level;
}

void
log_init(bool foreground, enum log_level level)
{
	static bool atfork;

	if (!atfork) {
		pthread_atfork(NULL, NULL, log_pid_forget);
		atfork = true;
	}
	log_threshold = level;
	if (!foreground) {
		log_sink = SINK_SYSLOG;
		openlog("mxgated", LOG_PID | LOG_NDELAY, LOG_MAIL);
	} else if (stderr_is_journal()) {
		log_sink = SINK_JOURNAL;
	} else {
		log_sink = SINK_STDERR;
	}
}

void
log_set_role(const char *role)
{
	log_pid_forget();
	snprintf(log_role, sizeof(log_role), "%s", role);
}

int
log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

bool
log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

/*
 * The pid, asked once per process: a system call per line cost as much
 * as the rest of the line (fork() children forget it, log_pid_forget()).
 */
static pid_t log_pid;

static void
log_pid_forget(void)
{
	log_pid = 0;
}

static long
current_pid(void)
{
	if (log_pid == 0)
		log_pid = getpid();
	return (long)log_pid;
}

/*
 * A line is built in one pass into one buffer of its thread and written
 * with one write(2): stderr is unbuffered, and lines from several
 * processes must not interleave mid-line.  The buffers are kept from one
 * line to the next (no allocation per line); the second is a nested line
 * (logged while building one: an allocation failure's fatal()).
 */
static __thread struct buf line_bufs[2];
static __thread int line_depth;
static __thread bool line_registered;
static pthread_key_t line_key;
static pthread_once_t line_once = PTHREAD_ONCE_INIT;

/* A thread that ends gives its buffers back (threadpool threads). */
static void
line_bufs_free(void *unused)
{
	(void)unused;
	for (size_t i = 0; i < sizeof(line_bufs) / sizeof(line_bufs[0]); i++)
		buf_free(&line_bufs[i]);
}

static void
line_key_make(void)
{
	pthread_key_create(&line_key, line_bufs_free);
}

/* A line longer than this gives its memory back once written. */
#define LINE_KEEP (64 * 1024)

/*
 * The time stamp down to the second, formatted once per second per
 * thread: strftime() and the calendar conversion cost as much as the
 * rest of a line.  A second is a second in local time too (time zones
 * and DST change on whole seconds).
 */
struct stamp {
	time_t sec;
	size_t len;
	char   text[32];
};
static __thread struct stamp stamp_utc = { .sec = -1 };
static __thread struct stamp stamp_local = { .sec = -1 };

static void
append_stamp(struct buf *b, bool utc)
{
	struct stamp *st = utc ? &stamp_utc : &stamp_local;
	struct timeval tv;
	long ms;
	char frac[4];

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != st->sec) {
		struct tm tm;

		if (utc)
			gmtime_r(&tv.tv_sec, &tm);
		else
			localtime_r(&tv.tv_sec, &tm);
		st->len = strftime(st->text, sizeof(st->text),
		    utc ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
		st->sec = tv.tv_sec;
	}
	buf_append(b, st->text, st->len);
	ms = (long)(tv.tv_usec / 1000);
	frac[0] = '.';
	frac[1] = (char)('0' + ms / 100);
	frac[2] = (char)('0' + ms / 10 % 10);
	frac[3] = (char)('0' + ms % 10);
	buf_append(b, frac, 4);
}

/* Decimal digits without printf's format parsing. */
static void
append_num(struct buf *b, long long v)
{
	char tmp[24], *p = tmp + sizeof(tmp);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v :
	    (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		*--p = '-';
	buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* "role[pid]SEPlevel: ", the text prefix after any time stamp. */
static void
append_origin(struct buf *b, enum log_level level, const char *sep)
{
	buf_appends(b, log_role);
	buf_append(b, "[", 1);
	append_num(b, current_pid());
	buf_append(b, "]", 1);
	buf_appends(b, sep);
	buf_appends(b, level_names[level]);
	buf_append(b, ": ", 2);
}

/* The members every JSON line starts with, up to the pid. */
static void
json_head_named(struct buf *b, const char *level, const char *role)
{
	buf_append(b, "{\"time\":\"", 9);
	append_stamp(b, true);
	buf_append(b, "Z\",\"level\":\"", 12);
	buf_appends(b, level);
	buf_append(b, "\",\"role\":\"", 10);
	json_escape(b, role, strlen(role));
	buf_append(b, "\",\"pid\":", 8);
	append_num(b, current_pid());
}

/*
 * The start of a line for the sink: its prefix (text), or the JSON
 * object's first members; the caller appends the body, then line_end().
 * NULL when lines nest deeper than line_bufs (the line is dropped).
 */
static struct buf *
line_begin(enum log_level level, bool json)
{
	struct buf *b;

	if (line_depth >= (int)(sizeof(line_bufs) / sizeof(line_bufs[0])))
		return NULL;
	if (!line_registered) {
		pthread_once(&line_once, line_key_make);
		pthread_setspecific(line_key, &line_registered);
		line_registered = true;
	}
	b = &line_bufs[line_depth++];
	buf_reset(b);
	buf_reserve(b, 256);
	switch (log_sink) {
	case SINK_SYSLOG:
		if (!json) {
			buf_appends(b, log_role);
			buf_append(b, ": ", 2);
		}
		break;
	case SINK_JOURNAL:
		/* sd-daemon(3) prefixes: the journal takes the priority from
		 * "<N>" and adds its own time stamp. */
		buf_append(b, "<", 1);
		append_num(b, level_syslog[level]);
		buf_append(b, ">", 1);
		if (!json)
			append_origin(b, level, ": ");
		break;
	case SINK_STDERR:
		if (!json) {
			append_stamp(b, false);
			buf_append(b, " ", 1);
			append_origin(b, level, " ");
		}
		break;
	}
	if (json)
		json_head_named(b, level_names[level], log_role);
	return b;
}

/* Close the line begun by line_begin() and hand it to the sink, once. */
static void
line_end(struct buf *b, enum log_level level, bool json)
{
	size_t off = 0;

	if (json)
		buf_append(b, "}", 1);
	if (log_sink == SINK_SYSLOG) {
		syslog(level_syslog[level], "%s", b->data);
	} else {
		buf_append(b, "\n", 1);
		while (off < b->len) {
			ssize_t n = write(STDERR_FILENO, b->data + off,
			    b->len - off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
	}
	if (b->cap > LINE_KEEP)
		buf_free(b);
	line_depth--;
}

static void
log_vwrite(enum log_level level, const char *fmt, va_list ap, const char *suffix)
{
	char msg[2048];
	bool json = log_format == LOG_FORMAT_JSON;
	struct buf *b;
	int n;

	if (level > log_threshold)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (suffix != NULL && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", suffix);
	if ((b = line_begin(level, json)) == NULL)
		return;
	if (json) {
		buf_append(b, ",\"msg\":\"", 8);
		json_escape(b, msg, strlen(msg));
		buf_append(b, "\"", 1);
	} else
		buf_appends(b, msg);
	line_end(b, level, json);
}

void
log_set_format(enum log_format format)
{
	log_format = format;
}

enum log_format
log_get_format(void)
{
	return log_format;
}

int
log_format_parse(const char *name, enum log_format *out)
{
	for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]);
	    i++) {
		if (strcmp(name, format_names[i]) == 0) {
			*out = (enum log_format)i;
			return 0;
		}
	}
	return -1;
}

/* ---- records ---- */

static bool
needs_quotes(const char *s)
{
	if (*s == '\0')
		return true;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c == 127)
			return true;
	}
	return false;
}

static void
text_value(struct buf *b, const char *s)
{
	if (!needs_quotes(s)) {
		buf_appends(b, s);
		return;
	}
	buf_append(b, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			buf_appendf(b, "\\%c", c);
		else if (c == '\n')
			buf_appends(b, "\\n");
		else if (c == '\r')
			buf_appends(b, "\\r");
		else if (c == '\t')
			buf_appends(b, "\\t");
		else if (c < ' ' || c == 127)
			buf_appendf(b, "\\x%02x", c);
		else
			buf_append(b, s, 1);
	}
	buf_append(b, "\"", 1);
}

/* Records are on the path of every message: appends, no formatting. */
static void
rec_key(struct log_rec *r, const char *key)
{
	if (log_format == LOG_FORMAT_JSON) {
		buf_append(&r->b, ",\"", 2);
		buf_appends(&r->b, key);
		buf_append(&r->b, "\":", 2);
	} else {
		if (r->b.len > 0)
			buf_append(&r->b, " ", 1);
		buf_appends(&r->b, key);
		buf_append(&r->b, "=", 1);
	}
}

void
log_rec_begin(struct log_rec *r)
{
	buf_init(&r->b);
	buf_reserve(&r->b, 480);
}

void
log_rec_str(struct log_rec *r, const char *key, const char *val)
{
	rec_key(r, key);
	if (log_format == LOG_FORMAT_JSON) {
		if (val == NULL) {
			buf_appends(&r->b, "null");
			return;
		}
		buf_append(&r->b, "\"", 1);
		json_escape(&r->b, val, strlen(val));
		buf_append(&r->b, "\"", 1);
	} else
		text_value(&r->b, val != NULL ? val : "-");
}

void
log_rec_path(struct log_rec *r, const char *key, const char *addr)
{
	char *bracketed;

	if (addr == NULL)
		addr = "";
	if (log_format == LOG_FORMAT_JSON) {
		log_rec_str(r, key, addr);
		return;
	}
	rec_key(r, key);
	if (addr[0] == '\0' || !needs_quotes(addr)) {
		buf_append(&r->b, "<", 1);
		buf_appends(&r->b, addr);
		buf_append(&r->b, ">", 1);
		return;
	}
	xasprintf(&bracketed, "<%s>", addr);
	text_value(&r->b, bracketed);
	free(bracketed);
}

void
log_rec_num(struct log_rec *r, const char *key, long long v)
{
	rec_key(r, key);
	append_num(&r->b, v);
}

/* "%.3f" without printf: whole milliseconds, rounded. */
void
log_rec_secs(struct log_rec *r, const char *key, double secs)
{
	long long ms;
	char frac[4];

	rec_key(r, key);
	if (!(secs > 0))
		secs = 0;
	if (secs >= 1e15) {
		char num[48];
		int n = snprintf(num, sizeof(num), "%.3f", secs);

		buf_append(&r->b, num, (size_t)n);
		return;
	}
	ms = (long long)(secs * 1000.0 + 0.5);
	append_num(&r->b, ms / 1000);
	frac[0] = '.';
	frac[1] = (char)('0' + ms / 100 % 10);
	frac[2] = (char)('0' + ms / 10 % 10);
	frac[3] = (char)('0' + ms % 10);
	buf_append(&r->b, frac, 4);
}

/* "X.Y.Z" at s: a class digit, a dot, 1-3 digits, a dot, 1-3 digits
 * (RFC 3463 2); its length, or 0. */
static size_t
enhanced_code(const char *s)
{
	size_t i = 1, n;

	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	for (int part = 0; part < 2; part++) {
		if (s[i++] != '.')
			return 0;
		for (n = 0; n < 3 && s[i] >= '0' && s[i] <= '9'; n++)
			i++;
		if (n == 0)
			return 0;
	}
	return s[i] == ' ' || s[i] == '\0' ? i : 0;
}

void
log_rec_reply(struct log_rec *r, const char *reply)
{
	char dsn[16] = "";
	size_t n;

	if (reply == NULL)
		reply = "";
	if (reply[0] >= '2' && reply[0] <= '5' && strlen(reply) >= 4 &&
	    reply[3] == ' ' && (n = enhanced_code(reply + 4)) > 0 &&
	    n < sizeof(dsn)) {
		memcpy(dsn, reply + 4, n);
		dsn[n] = '\0';
	} else if (reply[0] >= '2' && reply[0] <= '5')
		snprintf(dsn, sizeof(dsn), "%c.0.0", reply[0]);
	log_rec_str(r, "dsn", dsn[0] != '\0' ? dsn : NULL);
	log_rec_str(r, "reply", reply);
}

void
log_rec_syslog(struct log_rec *r, const char *ident, int priority)
{
	openlog(ident, LOG_PID, priority & LOG_FACMASK);
	if (log_format == LOG_FORMAT_JSON) {
		struct buf line;

		buf_init(&line);
		json_head_named(&line, "notice", ident);
		buf_append(&line, r->b.data, r->b.len);
		buf_append(&line, "}", 1);
		syslog(priority, "%s", line.data);
		buf_free(&line);
	} else
		syslog(priority, "%s", r->b.len > 0 ? r->b.data : "");
	closelog();
	buf_free(&r->b);
}

void
log_fields_emit(enum log_level level, const char *fields, size_t len)
{
	bool json = log_format == LOG_FORMAT_JSON;
	struct buf *b;

	if (level > log_threshold || (b = line_begin(level, json)) == NULL)
		return;
	buf_append(b, fields, len);
	line_end(b, level, json);
}

void
log_rec_emit(struct log_rec *r, enum log_level level)
{
	log_fields_emit(level, r->b.data != NULL ? r->b.data : "", r->b.len);
	buf_free(&r->b);
}

void
log_rec_take(struct log_rec *r, struct buf *out)
{
	buf_append(out, r->b.data != NULL ? r->b.data : "", r->b.len);
	buf_free(&r->b);
}

#define LOG_FN(name, level) \
void name(const char *fmt, ...) \
{ \
	va_list ap; \
	va_start(ap, fmt); \
	log_vwrite(level, fmt, ap, NULL); \
	va_end(ap); \
}

LOG_FN(log_error, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug, LOG_LEVEL_DEBUG)

void
fatal(const char *fmt, ...)
{
	va_list ap;
	const char *reason = strerror(errno);

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap, reason);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
