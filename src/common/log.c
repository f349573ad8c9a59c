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

/* The whole line in one write(2): stderr is unbuffered, and lines from
 * several processes must not interleave mid-line. */
static void
write_stderr(const struct buf *b)
{
	size_t off = 0;

	while (off < b->len) {
		ssize_t n = write(STDERR_FILENO, b->data + off, b->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* One line to the sink.  json: msg is a whole JSON object. */
static void
write_line(enum log_level level, const char *msg, bool json)
{
	struct buf line;

	if (log_sink == SINK_SYSLOG) {
		if (json)
			syslog(level_syslog[level], "%s", msg);
		else
			syslog(level_syslog[level], "%s: %s", log_role, msg);
		return;
	}
	buf_init(&line);
	if (log_sink == SINK_JOURNAL) {
		/* sd-daemon(3) prefixes: the journal takes the priority from
		 * "<N>" and adds its own time stamp. */
		if (json)
			buf_appendf(&line, "<%d>", level_syslog[level]);
		else
			buf_appendf(&line, "<%d>%s[%ld]: %s: ",
			    level_syslog[level], log_role, current_pid(),
			    level_names[level]);
	} else if (!json) {
		struct timeval tv;
		struct tm tm;
		char stamp[32];

		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		buf_appendf(&line, "%s.%03ld %s[%ld] %s: ", stamp,
		    (long)(tv.tv_usec / 1000), log_role, current_pid(),
		    level_names[level]);
	}
	buf_appends(&line, msg);
	buf_append(&line, "\n", 1);
	write_stderr(&line);
	buf_free(&line);
}

/* The members every JSON line starts with. */
static void
json_head_named(struct buf *b, const char *level, const char *role)
{
	struct timeval tv;
	struct tm tm;
	char stamp[40];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	buf_appendf(b, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\","
	    "\"role\":\"", stamp, (long)(tv.tv_usec / 1000), level);
	json_escape(b, role, strlen(role));
	buf_appendf(b, "\",\"pid\":%ld", current_pid());
}

static void
json_head(struct buf *b, enum log_level level)
{
	json_head_named(b, level_names[level], log_role);
}

static void
log_vwrite(enum log_level level, const char *fmt, va_list ap, const char *suffix)
{
	char msg[2048];
	int n;

	if (level > log_threshold)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (suffix != NULL && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", suffix);
	if (log_format == LOG_FORMAT_JSON) {
		struct buf b;

		buf_init(&b);
		json_head(&b, level);
		buf_appends(&b, ",\"msg\":\"");
		json_escape(&b, msg, strlen(msg));
		buf_appends(&b, "\"}");
		write_line(level, b.data, true);
		buf_free(&b);
		return;
	}
	write_line(level, msg, false);
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
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", v);

	rec_key(r, key);
	buf_append(&r->b, num, (size_t)n);
}

void
log_rec_secs(struct log_rec *r, const char *key, double secs)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%.3f", secs < 0 ? 0.0 : secs);

	rec_key(r, key);
	buf_append(&r->b, num, (size_t)n);
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
	struct buf line;

	if (level > log_threshold)
		return;
	buf_init(&line);
	if (log_format == LOG_FORMAT_JSON) {
		json_head(&line, level);
		buf_append(&line, fields, len);
		buf_append(&line, "}", 1);
	} else
		buf_append(&line, fields, len);
	write_line(level, line.data != NULL ? line.data : "",
	    log_format == LOG_FORMAT_JSON);
	buf_free(&line);
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
