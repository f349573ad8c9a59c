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

#include "common/util.h"

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/*
 * server.log_format.  "text": "key=value" fields after the usual prefix;
 * a value with a space, a quote, a backslash, an '=' or a control
 * character, or an empty one, is in double quotes with C escapes.
 * "json": each line is one JSON object: "time" (UTC, RFC 3339, ms),
 * "level", "role", "pid", then the record's fields in order, or "msg"
 * for a line that is not a record.  Both carry the same fields.
 */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_init(bool foreground, enum log_level level);
/* A reload's server.log_level: from the next line on. */
void log_set_level(enum log_level level);
void log_set_role(const char *role);
int  log_level_parse(const char *name, enum log_level *out);

void log_set_format(enum log_format format);
int  log_format_parse(const char *name, enum log_format *out);
enum log_format log_get_format(void);

/*
 * A structured line (a record): fields appended in order, each written
 * for the current format, then log_rec_emit() writes it once.  The
 * conventions every record follows (README "Logs"): the first field is
 * "id" (queue id) or "session" (session id), the second "event".
 *   log_rec_str    a string; NULL: "-" in text, null in JSON
 *   log_rec_path   an address: "<a@b>" in text, "a@b" in JSON
 *   log_rec_num    an integer; log_rec_secs seconds with ms, a number
 *   log_rec_word   a string known to need no quoting (text as is)
 */
struct log_rec {
	struct buf b;
};

void log_rec_begin(struct log_rec *r);
void log_rec_str(struct log_rec *r, const char *key, const char *val);
void log_rec_path(struct log_rec *r, const char *key, const char *addr);
void log_rec_num(struct log_rec *r, const char *key, long long v);
void log_rec_secs(struct log_rec *r, const char *key, double secs);
/* An SMTP reply line "550 5.1.1 text": dsn= (its RFC 3463 code, or
 * X.0.0 from the reply code when it has none) and reply= (the line). */
void log_rec_reply(struct log_rec *r, const char *reply);
void log_rec_emit(struct log_rec *r, enum log_level level);
/* A record kept to be logged later (the scheduler's outcome lines wait
 * for their transaction's commit): log_rec_take() appends its fields to
 * out (one line, no newline in it) and frees r; log_fields_emit() logs
 * such fields as log_rec_emit() would have. */
void log_rec_take(struct log_rec *r, struct buf *out);
void log_fields_emit(enum log_level level, const char *fields, size_t len);
/* To syslog as ident, whatever the sink (mxgatectl's audit.h); the
 * JSON form carries "time", "level" notice, "role" ident, "pid". */
void log_rec_syslog(struct log_rec *r, const char *ident, int priority);

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
