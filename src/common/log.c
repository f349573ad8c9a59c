/*
 * log — see log.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "common/log.h"

enum log_sink { SINK_STDERR, SINK_JOURNAL, SINK_SYSLOG };

static enum log_sink log_sink = SINK_STDERR;
static enum log_level log_threshold = LOG_LEVEL_INFO;
static char log_role[16] = "mxgated";

static const char *const level_names[] = { "error", "warn", "info", "debug" };
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

	if (log_sink == SINK_JOURNAL) {
		/* sd-daemon(3) prefixes: the journal takes the priority from
		 * "<N>" and adds its own time stamp. */
		fprintf(stderr, "<%d>%s[%ld]: %s: %s\n", level_syslog[level],
		    log_role, (long)getpid(), level_names[level], msg);
	} else if (log_sink == SINK_STDERR) {
		struct timeval tv;
		struct tm tm;
		char stamp[32];

		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		/* One fprintf per line: stderr is unbuffered, so lines from
		 * several processes do not interleave mid-line. */
		fprintf(stderr, "%s.%03ld %s[%ld] %s: %s\n", stamp,
		    (long)(tv.tv_usec / 1000), log_role, (long)getpid(),
		    level_names[level], msg);
	} else {
		syslog(level_syslog[level], "%s: %s", log_role, msg);
	}
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
