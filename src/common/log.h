/*
 * log — one log line per event, "id key=value ..." style.
 *
 * log_init() chooses the sink: syslog(3) facility mail (daemon), or
 * stderr (foreground): with "<N>" priority prefixes when stderr is the
 * systemd journal (JOURNAL_STREAM, see sd-daemon(3)), so that
 * `journalctl -p err` works, else with a time stamp.  Every line starts with the process
 * role ("master", "smtp", "queue") so that interleaved output from several
 * processes stays readable.
 *
 * fatal() and fatalx() are for broken invariants only: they log and exit
 * the process, and the master respawns it.  Anything a client or an
 * operator can cause is reported, never fatal.
 */
#ifndef MXGATE_LOG_H
#define MXGATE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_init(bool foreground, enum log_level level);
/* A reload's server.log_level: from the next line on. */
void log_set_level(enum log_level level);
void log_set_role(const char *role);
int  log_level_parse(const char *name, enum log_level *out);

/* Whether a line at this level would be written (to skip costly
 * formatting on hot paths). */
bool log_enabled(enum log_level level);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log with strerror(errno) appended, then exit(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Log, then exit(1). */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
