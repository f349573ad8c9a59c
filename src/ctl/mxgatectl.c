/*
 * mxgatectl — the operator's tool: inspect (and later manage) the queue.
 *
 *   mxgatectl [-c CONFIG] [-q QUEUE_DB] COMMAND ...
 *   mxgatectl -V | -h
 *
 * The queue database is QUEUE_DB (-q), or queue.directory/queue.db from
 * the configuration: CONFIG (-c), else SYSCONFDIR/mxgate.conf, else --
 * when that file does not exist -- the embedded default that mxgated also
 * uses without -c (./var/queue).  A relative queue directory is taken
 * relative to the current directory, as mxgated does.
 *
 * Commands are rows of the table at the end of this file: a command says
 * what it needs (the queue read-only or read-write, the configuration) and
 * main() provides exactly that before calling it.
 *
 * Everything printed from the queue comes from the network (senders,
 * subjects, replies): control characters are escaped before they reach the
 * operator's terminal.
 *
 * Exit status: 0 success, 1 failure (no such message, unreadable queue),
 * 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "smtp/auth.h"
#include "queue/bounce.h"
#include "common/config.h"
#include "common/log.h"
#include "queue/queue_db.h"
#include "ctl/route_test.h"
#include "common/util.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

#define EXIT_USAGE 2

enum cmd_needs {
	NEEDS_NOTHING,
	NEEDS_CONFIG,           /* ctl->conf */
	NEEDS_QUEUE_RO,         /* ctl->db, read-only */
	NEEDS_QUEUE_RW,         /* ctl->db, read-write (existing queue only) */
};

struct ctl {
	const char      *config_path;   /* -c */
	const char      *db_path;       /* -q, or derived from conf */
	char            *db_path_buf;
	struct mxconf   *conf;
	struct queue_db *db;
	sqlite3         *h;
	const struct command *cmd;      /* the one running, for usage */
};

struct command {
	const char     *group;          /* "queue" */
	const char     *name;           /* "list"; NULL: a one-word command */
	const char     *args;           /* argument synopsis */
	const char     *help;
	int             min_args;
	int             max_args;
	enum cmd_needs  needs;
	int           (*run)(struct ctl *, int, char **);
};

static int cmd_queue_list(struct ctl *, int, char **);
static int cmd_queue_show(struct ctl *, int, char **);
static int cmd_queue_retry(struct ctl *, int, char **);
static int cmd_queue_hold(struct ctl *, int, char **);
static int cmd_queue_release(struct ctl *, int, char **);
static int cmd_queue_delete(struct ctl *, int, char **);
static int cmd_queue_bounce(struct ctl *, int, char **);
static int cmd_queue_stats(struct ctl *, int, char **);
static int cmd_route_test(struct ctl *, int, char **);
static int cmd_passwd(struct ctl *, int, char **);
static int load_config(struct ctl *);

/*
 * The commands.  Still to come: queue retry/hold/release/delete/bounce
 * (NEEDS_QUEUE_RW), queue stats.
 */
static const struct command commands[] = {
	{ "queue", "list", "[--state S] [--rcpt RE] [--sender RE]",
	  "list the messages in the queue (RE: PCRE2, caseless)",
	  0, 6, NEEDS_QUEUE_RO, cmd_queue_list },
	{ "queue", "show", "ID [--body]",
	  "envelope, recipients, history, headers (or all)",
	  1, 2, NEEDS_QUEUE_RO, cmd_queue_show },
	{ "queue", "retry", "ID | --all",
	  "make queued and deferred recipients due now",
	  1, 1, NEEDS_QUEUE_RW, cmd_queue_retry },
	{ "queue", "hold", "ID", "hold a message's pending recipients",
	  1, 1, NEEDS_QUEUE_RW, cmd_queue_hold },
	{ "queue", "release", "ID", "release held recipients, due now",
	  1, 1, NEEDS_QUEUE_RW, cmd_queue_release },
	{ "queue", "delete", "ID", "delete a message (no bounce)",
	  1, 1, NEEDS_QUEUE_RW, cmd_queue_delete },
	{ "queue", "bounce", "ID",
	  "bounce a message's pending recipients to the sender",
	  1, 1, NEEDS_QUEUE_RW, cmd_queue_bounce },
	{ "queue", "stats", "",
	  "recipients per state, oldest message, per destination",
	  0, 0, NEEDS_QUEUE_RO, cmd_queue_stats },
	{ "route", "test", "RCPT [--from S] [--ip A] [--helo H] [--auth U] "
	  "[--tls] | --script FILE",
	  "what the routes do with a recipient (route_test.h)",
	  1, 10, NEEDS_CONFIG, cmd_route_test },
	{ "passwd", NULL, "USER [--file FILE] [--sha512]",
	  "set USER's AUTH password (read from stdin) in the passwd file",
	  1, 4, NEEDS_NOTHING, cmd_passwd },
};

/* Escaping of untrusted text for a terminal. */
enum safe_mode {
	SAFE_LINE,              /* one line: tabs and newlines become spaces */
	SAFE_BLOCK,             /* text block: keep tabs and newlines, drop CR */
};

static void
usage_to(FILE *f)
{
	size_t i;

	fprintf(f, "usage: mxgatectl [-c config] [-q queue.db] command ...\n"
	    "       mxgatectl -V\n"
	    "commands:\n");
	for (i = 0; i < ARRAY_LEN(commands); i++)
		fprintf(f, "  %s%s%s %-16s %s\n", commands[i].group,
		    commands[i].name != NULL ? " " : "",
		    commands[i].name != NULL ? commands[i].name : "",
		    commands[i].args, commands[i].help);
}

static int
usage(void)
{
	usage_to(stderr);
	return EXIT_USAGE;
}

static int
cmd_usage(const struct command *c)
{
	fprintf(stderr, "usage: mxgatectl %s%s%s %s\n", c->group,
	    c->name != NULL ? " " : "", c->name != NULL ? c->name : "",
	    c->args);
	return EXIT_USAGE;
}

static void
config_error(const char *msg)
{
	fprintf(stderr, "mxgatectl: %s\n", msg);
}

/*
 * Write untrusted text so that it cannot drive the terminal: C0 controls,
 * DEL and the UTF-8 encoded C1 controls (U+0080..U+009F, which some
 * terminals obey like ESC) come out as \xNN.
 */
static void
put_safe_n(FILE *f, const char *s, size_t len, enum safe_mode mode)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (c == '\t' || c == '\n') {
			putc(mode == SAFE_BLOCK ? c : ' ', f);
		} else if (c == '\r' && mode == SAFE_BLOCK) {
			continue;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\x%02x", c);
		} else if (c == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 &&
		    p[i + 1] <= 0x9f) {
			fprintf(f, "\\x%02x\\x%02x", c, p[i + 1]);
			i++;
		} else {
			putc(c, f);
		}
	}
}

static void
put_safe(const char *s)
{
	put_safe_n(stdout, s != NULL ? s : "-", s != NULL ? strlen(s) : 1,
	    SAFE_LINE);
}

/* "label:       value\n", the value escaped; "-" for NULL. */
static void
put_field(const char *label, const char *value)
{
	printf("%-12s ", label);
	put_safe(value);
	putchar('\n');
}

static const char *
col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

static int
query_failed(struct ctl *ctl, const char *what)
{
	fprintf(stderr, "mxgatectl: %s: %s\n", what, sqlite3_errmsg(ctl->h));
	return 1;
}

static int
prepare(struct ctl *ctl, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(ctl->h, sql, -1, st, NULL) != SQLITE_OK) {
		query_failed(ctl, "query");
		return -1;
	}
	return 0;
}

/* queue list */

/* Patterns for mx_match(N, text) in the listing's query. */
struct list_patterns {
	pcre2_code *re[2];
	pcre2_match_data *md;
};

static void
sql_mx_match(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
	struct list_patterns *lp = sqlite3_user_data(cx);
	int i = sqlite3_value_int(argv[0]);
	const unsigned char *text = sqlite3_value_text(argv[1]);

	if (i < 0 || i > 1 || lp->re[i] == NULL || text == NULL) {
		sqlite3_result_int(cx, 0);
		return;
	}
	sqlite3_result_int(cx, pcre2_match(lp->re[i], text,
	    (size_t)sqlite3_value_bytes(argv[1]), 0, 0, lp->md, NULL) >= 0);
}

static int
compile_pattern(const char *opt, const char *pattern, pcre2_code **out)
{
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	int err;

	*out = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
	    PCRE2_CASELESS | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off,
	    NULL);
	if (*out != NULL)
		return 0;
	pcre2_get_error_message(err, msg, sizeof(msg));
	fprintf(stderr, "mxgatectl: %s: bad pattern at offset %zu: %s\n", opt,
	    (size_t)off, (const char *)msg);
	return -1;
}

static bool
state_valid(const char *state)
{
	static const char *const states[] = { "queued", "delivering",
	    "deferred", "delivered", "bounced", "held" };

	for (size_t i = 0; i < ARRAY_LEN(states); i++)
		if (strcmp(state, states[i]) == 0)
			return true;
	return false;
}

static void
put_list_row(sqlite3_stmt *st)
{
	printf("%-16s  %-19s  %9lld  <", col_text(st, 0), col_text(st, 1),
	    (long long)sqlite3_column_int64(st, 2));
	put_safe_n(stdout, col_text(st, 3), (size_t)sqlite3_column_bytes(st, 3),
	    SAFE_LINE);
	printf(">%*s  %5lld  ", (int)(sqlite3_column_bytes(st, 3) < 30 ?
	    30 - sqlite3_column_bytes(st, 3) : 0), "",
	    (long long)sqlite3_column_int64(st, 4));
	put_safe(col_text(st, 5));
	putchar('\n');
}

static int
run_list(struct ctl *ctl, const char *state, struct list_patterns *lp)
{
	sqlite3_stmt *st;
	long long n = 0;
	int rc;

	/* One recipient must match both --state and --rcpt. */
	if (prepare(ctl, "SELECT m.id, m.received, m.size, m.sender,"
	    " m.recipients, m.states FROM message_status m"
	    " WHERE (?1 IS NULL AND ?2 IS NULL OR EXISTS (SELECT 1 FROM"
	    "  recipients r WHERE r.message_id = m.id"
	    "  AND (?1 IS NULL OR r.state = ?1)"
	    "  AND (?2 IS NULL OR mx_match(0, r.address))))"
	    " AND (?3 IS NULL OR mx_match(1, m.sender))"
	    " ORDER BY m.received_at, m.id", &st) == -1)
		return 1;
	if (state != NULL)
		sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	if (lp->re[0] != NULL)
		sqlite3_bind_int(st, 2, 1);
	if (lp->re[1] != NULL)
		sqlite3_bind_int(st, 3, 1);
	printf("%-16s  %-19s  %9s  %-32s  %5s  %s\n", "ID", "RECEIVED (UTC)",
	    "SIZE", "SENDER", "RCPTS", "STATE");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		put_list_row(st);
		n++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return query_failed(ctl, "queue list");
	printf("%lld message%s\n", n, n == 1 ? "" : "s");
	return 0;
}

static int
cmd_queue_list(struct ctl *ctl, int argc, char **argv)
{
	struct list_patterns lp;
	const char *state = NULL;
	int i, rc = 1;

	memset(&lp, 0, sizeof(lp));
	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc)
			return cmd_usage(ctl->cmd);
		if (strcmp(argv[i], "--state") == 0 && state == NULL) {
			state = argv[++i];
			if (!state_valid(state)) {
				fprintf(stderr, "mxgatectl: --state: one of queued,"
				    " delivering, deferred, delivered, bounced,"
				    " held\n");
				return EXIT_USAGE;
			}
		} else if (strcmp(argv[i], "--rcpt") == 0 && lp.re[0] == NULL) {
			if (compile_pattern("--rcpt", argv[++i], &lp.re[0]) < 0)
				goto done;
		} else if (strcmp(argv[i], "--sender") == 0 &&
		    lp.re[1] == NULL) {
			if (compile_pattern("--sender", argv[++i], &lp.re[1]) < 0)
				goto done;
		} else {
			rc = cmd_usage(ctl->cmd);
			goto done;
		}
	}
	lp.md = pcre2_match_data_create(8, NULL);
	if (sqlite3_create_function(ctl->h, "mx_match", 2, SQLITE_UTF8 |
	    SQLITE_DETERMINISTIC, &lp, sql_mx_match, NULL, NULL) != SQLITE_OK) {
		rc = query_failed(ctl, "queue list");
		goto done;
	}
	rc = run_list(ctl, state, &lp);
done:
	pcre2_code_free(lp.re[0]);
	pcre2_code_free(lp.re[1]);
	pcre2_match_data_free(lp.md);
	return rc;
}

/* queue show */

static int
show_message(struct ctl *ctl, const char *id)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT id, datetime(received_at, 'unixepoch'),"
	    " received_at, sender, client_ip, helo, protocol, auth_user,"
	    " size, body_8bitmime, smtputf8, message_id_header, subject"
	    " FROM messages WHERE id = ?1", &st) == -1)
		return 1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_finalize(st);
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
		return 1;
	}
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(st);
		return query_failed(ctl, "queue show");
	}
	put_field("id:", col_text(st, 0));
	printf("%-12s %s UTC (%lld)\n", "received:", col_text(st, 1),
	    (long long)sqlite3_column_int64(st, 2));
	printf("%-12s <", "sender:");
	put_safe(col_text(st, 3));
	printf(">\n");
	put_field("client:", col_text(st, 4));
	put_field("helo:", col_text(st, 5));
	put_field("protocol:", col_text(st, 6));
	put_field("auth user:", col_text(st, 7));
	printf("%-12s %lld bytes%s%s\n", "size:",
	    (long long)sqlite3_column_int64(st, 8),
	    sqlite3_column_int(st, 9) ? ", 8BITMIME" : "",
	    sqlite3_column_int(st, 10) ? ", SMTPUTF8" : "");
	put_field("message-id:", col_text(st, 11));
	put_field("subject:", col_text(st, 12));
	sqlite3_finalize(st);
	return 0;
}

static int
show_recipients(struct ctl *ctl, const char *id)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT address, route, action, action_params,"
	    " state, attempts, next_attempt, last_attempt, last_reply,"
	    " destination FROM recipient_status WHERE message_id = ?1"
	    " ORDER BY recipient_id", &st) == -1)
		return 1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	printf("\nrecipients:\n");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		printf("  <");
		put_safe(col_text(st, 0));
		printf(">\n    route=");
		put_safe(col_text(st, 1));
		printf(" action=");
		put_safe(col_text(st, 2));
		printf(" params=");
		put_safe(col_text(st, 3));
		printf("\n    state=%s attempts=%lld", col_text(st, 4),
		    (long long)sqlite3_column_int64(st, 5));
		if (col_text(st, 6) != NULL)
			printf(" next attempt=%s", col_text(st, 6));
		if (col_text(st, 7) != NULL)
			printf(" last attempt=%s", col_text(st, 7));
		putchar('\n');
		if (col_text(st, 8) != NULL) {
			printf("    last reply: ");
			put_safe(col_text(st, 8));
			putchar('\n');
		}
		if (col_text(st, 9) != NULL) {
			printf("    destination: ");
			put_safe(col_text(st, 9));
			putchar('\n');
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : query_failed(ctl, "recipients");
}

static int
show_history(struct ctl *ctl, const char *id)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT time, kind, recipient, detail FROM"
	    " message_history WHERE message_id = ?1 ORDER BY at,"
	    " event_id IS NOT NULL, ifnull(event_id, recipient_id)",
	    &st) == -1)
		return 1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	printf("\nhistory:\n");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		printf("  %s  %-9s", col_text(st, 0), col_text(st, 1));
		if (col_text(st, 2) != NULL) {
			printf(" <");
			put_safe(col_text(st, 2));
			printf(">");
		}
		if (col_text(st, 3) != NULL) {
			putchar(' ');
			put_safe(col_text(st, 3));
		}
		putchar('\n');
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : query_failed(ctl, "history");
}

/* Length of the header block, up to and including its empty line. */
static size_t
header_block_len(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < len && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return len;
}

static int
show_content(struct ctl *ctl, const char *id, bool body)
{
	sqlite3_stmt *st;
	const char *p;
	size_t len;
	int rc;

	if (prepare(ctl, "SELECT content FROM message_contents"
	    " WHERE message_id = ?1", &st) == -1)
		return 1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(st);
		if (rc == SQLITE_DONE) {
			/* delivery.keep_delivered keeps the rest, not this. */
			printf("\n(content removed: every recipient is final)\n");
			return 0;
		}
		return query_failed(ctl, "content");
	}
	p = sqlite3_column_blob(st, 0);
	len = (size_t)sqlite3_column_bytes(st, 0);
	if (p == NULL)
		len = 0;
	printf("\n%s:\n", body ? "message" : "headers");
	fflush(stdout);
	if (!body)
		len = header_block_len(p, len);
	/* Exact bytes when they go to a file or a pipe; a terminal gets
	 * them escaped. */
	if (body && !isatty(STDOUT_FILENO))
		fwrite(p, 1, len, stdout);
	else
		put_safe_n(stdout, p, len, SAFE_BLOCK);
	sqlite3_finalize(st);
	return 0;
}

static int
cmd_queue_show(struct ctl *ctl, int argc, char **argv)
{
	const char *id = NULL;
	bool body = false;
	int i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--body") == 0)
			body = true;
		else if (argv[i][0] == '-' || id != NULL)
			return cmd_usage(ctl->cmd);
		else
			id = argv[i];
	}
	if (id == NULL)
		return cmd_usage(ctl->cmd);
	if (!queue_id_valid(id)) {
		fprintf(stderr, "mxgatectl: no message ");
		put_safe_n(stderr, id, strnlen(id, 64), SAFE_LINE);
		fprintf(stderr, " in the queue (not a queue id)\n");
		return 1;
	}
	if (show_message(ctl, id) != 0 || show_recipients(ctl, id) != 0 ||
	    show_history(ctl, id) != 0 || show_content(ctl, id, body) != 0)
		return 1;
	return 0;
}

/* Queue management.  Each command is one short write transaction; the
 * daemon's scheduler reads the due recipients again every second, so a
 * change takes effect without telling it anything. */

static int
exec_ctl(struct ctl *ctl, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(ctl->h, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "mxgatectl: %s\n", err != NULL ? err :
		    sqlite3_errmsg(ctl->h));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

static int
rollback_fail(struct ctl *ctl, const char *what)
{
	query_failed(ctl, what);
	exec_ctl(ctl, "ROLLBACK");
	return 1;
}

/* 1 when the message is in the queue, 0 (said) when not, -1 on error. */
static int
message_exists(struct ctl *ctl, const char *id)
{
	sqlite3_stmt *st;
	int rc;

	if (!queue_id_valid(id)) {
		fprintf(stderr, "mxgatectl: no message ");
		put_safe_n(stderr, id, strnlen(id, 64), SAFE_LINE);
		fprintf(stderr, " in the queue (not a queue id)\n");
		return 0;
	}
	if (prepare(ctl, "SELECT 1 FROM messages WHERE id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc != SQLITE_DONE)
		return query_failed(ctl, "queue"), -1;
	fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
	return 0;
}

/* Run sql with ?1 = id (or NULL), ?2 = now, ?3 = detail. */
static int
run_change(struct ctl *ctl, const char *sql, const char *id, long long now,
    const char *detail, long long *changed)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, sql, &st) == -1)
		return -1;
	if (id != NULL)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, now);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_text(st, 3, detail, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (changed != NULL)
		*changed = sqlite3_changes(ctl->h);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Change the recipients of message id (NULL: of every message) that
 * match `where`: one history row of `kind` each, then `set`, in one
 * transaction.
 */
static int
change_recipients(struct ctl *ctl, const char *id, const char *where,
    const char *set, const char *kind, const char *what)
{
	char events[512], update[512];
	long long now = (long long)time(NULL), n = 0;

	snprintf(events, sizeof(events), "INSERT INTO events (message_id,"
	    " recipient_id, at, kind, detail) SELECT message_id, id, ?2, '%s',"
	    " ?3 FROM recipients WHERE (?1 IS NULL OR message_id = ?1)"
	    " AND %s", kind, where);
	snprintf(update, sizeof(update), "UPDATE recipients SET %s,"
	    " updated_at = ?2 WHERE (?1 IS NULL OR message_id = ?1) AND %s",
	    set, where);
	if (exec_ctl(ctl, "BEGIN IMMEDIATE") == -1)
		return 1;
	if (run_change(ctl, events, id, now, "by mxgatectl", NULL) == -1 ||
	    run_change(ctl, update, id, now, NULL, &n) == -1)
		return rollback_fail(ctl, what);
	if (exec_ctl(ctl, "COMMIT") == -1)
		return rollback_fail(ctl, what);
	printf("%s: %lld recipient%s\n", what, n, n == 1 ? "" : "s");
	return 0;
}

/* The ID argument of a management command: 0 when it names a message. */
static int
check_id(struct ctl *ctl, const char *id)
{
	int r;

	if (id[0] == '-')
		return cmd_usage(ctl->cmd);
	r = message_exists(ctl, id);
	return r == 1 ? 0 : 1;
}

static int
cmd_queue_retry(struct ctl *ctl, int argc, char **argv)
{
	const char *id = argv[0];

	if (strcmp(id, "--all") == 0)
		id = NULL;
	else if (check_id(ctl, id) != 0)
		return id[0] == '-' ? EXIT_USAGE : 1;
	return change_recipients(ctl, id, "state IN ('queued', 'deferred')",
	    "next_attempt_at = ?2", "retry", "due now");
}

static int
cmd_queue_hold(struct ctl *ctl, int argc, char **argv)
{
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	/* A recipient in delivery now is held too: if that attempt fails
	 * it stays held rather than being retried. */
	return change_recipients(ctl, argv[0],
	    "state IN ('queued', 'deferred', 'delivering')",
	    "state = 'held'", "held", "held");
}

static int
cmd_queue_release(struct ctl *ctl, int argc, char **argv)
{
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	return change_recipients(ctl, argv[0], "state = 'held'",
	    "state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,"
	    " next_attempt_at = ?2", "released", "released, due now");
}

static int
cmd_queue_delete(struct ctl *ctl, int argc, char **argv)
{
	long long n = 0;
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	/* The content, recipients and history go with it (ON DELETE
	 * CASCADE); a delivery running now finds nothing to record. */
	if (run_change(ctl, "DELETE FROM messages WHERE id = ?1", argv[0], 0,
	    NULL, &n) == -1)
		return query_failed(ctl, "queue delete");
	printf("deleted %s\n", argv[0]);
	return 0;
}

/* queue bounce */

struct bounce_rows {
	int64_t *ids;
	struct bounce_rcpt *rcpts;
	char   **replies;
	size_t   n;
};

static void
bounce_rows_free(struct bounce_rows *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free((char *)b->rcpts[i].address);
		free(b->replies[i]);
	}
	free(b->ids);
	free(b->rcpts);
	free(b->replies);
}

/* The recipients still pending (not in delivery right now). */
static int
bounce_collect(struct ctl *ctl, const char *id, struct bounce_rows *b)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT id, address, last_reply,"
	    " coalesce(last_attempt_at, 0) FROM recipients WHERE message_id ="
	    " ?1 AND state IN ('queued', 'deferred', 'held') ORDER BY id",
	    &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *last = col_text(st, 2);

		b->ids = xrealloc(b->ids, (b->n + 1) * sizeof(*b->ids));
		b->rcpts = xrealloc(b->rcpts, (b->n + 1) * sizeof(*b->rcpts));
		b->replies = xrealloc(b->replies,
		    (b->n + 1) * sizeof(*b->replies));
		memset(&b->rcpts[b->n], 0, sizeof(b->rcpts[b->n]));
		b->ids[b->n] = sqlite3_column_int64(st, 0);
		b->rcpts[b->n].address = xstrdup(col_text(st, 1));
		xasprintf(&b->replies[b->n], "554 5.0.0 returned to the sender"
		    " by the postmaster%s%s%s", last != NULL ? " (last error: " :
		    "", last != NULL ? last : "", last != NULL ? ")" : "");
		b->rcpts[b->n].reply = b->replies[b->n];
		b->rcpts[b->n].last_attempt_at = sqlite3_column_int64(st, 3);
		b->n++;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The DSN: 0 with its id ("" for none: null sender), -1 on failure. */
static int
bounce_send(struct ctl *ctl, const char *id, struct bounce_rows *b,
    long long now, char dsn[QUEUE_ID_LEN + 1])
{
	struct bounce_report r;
	sqlite3_stmt *st;
	const char *content;
	int rc = -1;

	dsn[0] = '\0';
	if (prepare(ctl, "SELECT m.sender, m.received_at, c.content FROM"
	    " messages m LEFT JOIN message_contents c ON c.message_id = m.id"
	    " WHERE m.id = ?1", &st) == -1)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		memset(&r, 0, sizeof(r));
		r.kind = BOUNCE_FAILED;
		r.queue_id = id;
		r.sender = col_text(st, 0);
		r.received_at = sqlite3_column_int64(st, 1);
		r.reporting_mta = ctl->conf->hostname;
		content = sqlite3_column_blob(st, 2);
		r.headers = content != NULL ? content : "";
		r.headers_len = content != NULL ? bounce_header_len(content,
		    (size_t)sqlite3_column_bytes(st, 2)) : 0;
		r.rcpts = b->rcpts;
		r.nrcpts = b->n;
		rc = bounce_queue(ctl->db, &r, ctl->conf->bounce_upstream, now,
		    dsn);
		if (rc == 1) {
			dsn[0] = '\0';
			rc = 0;
		}
	}
	sqlite3_finalize(st);
	return rc;
}

static int
bounce_mark(struct ctl *ctl, struct bounce_rows *b, const char *dsn,
    long long now)
{
	sqlite3_stmt *up, *ev;
	char detail[128];
	size_t i;
	int rc = 0;

	snprintf(detail, sizeof(detail), "by mxgatectl dsn=%s",
	    dsn[0] != '\0' ? dsn : "none");
	if (prepare(ctl, "UPDATE recipients SET state = 'bounced',"
	    " last_reply = ?2, next_attempt_at = NULL, updated_at = ?3"
	    " WHERE id = ?1", &up) == -1)
		return -1;
	if (prepare(ctl, "INSERT INTO events (message_id, recipient_id, at,"
	    " kind, detail) SELECT message_id, id, ?2, 'bounced', ?3 FROM"
	    " recipients WHERE id = ?1", &ev) == -1) {
		sqlite3_finalize(up);
		return -1;
	}
	for (i = 0; i < b->n && rc == 0; i++) {
		sqlite3_bind_int64(up, 1, b->ids[i]);
		sqlite3_bind_text(up, 2, b->replies[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(up, 3, now);
		sqlite3_bind_int64(ev, 1, b->ids[i]);
		sqlite3_bind_int64(ev, 2, now);
		sqlite3_bind_text(ev, 3, detail, -1, SQLITE_STATIC);
		if (sqlite3_step(up) != SQLITE_DONE ||
		    sqlite3_step(ev) != SQLITE_DONE)
			rc = -1;
		sqlite3_reset(up);
		sqlite3_reset(ev);
	}
	sqlite3_finalize(up);
	sqlite3_finalize(ev);
	return rc;
}

/* As the scheduler does once every recipient is final. */
static int
bounce_retire(struct ctl *ctl, const char *id)
{
	return run_change(ctl, ctl->conf->keep_delivered == 0 ?
	    "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM"
	    " recipients WHERE message_id = ?1 AND state NOT IN ('delivered',"
	    " 'bounced'))" :
	    "DELETE FROM message_contents WHERE message_id = ?1 AND NOT EXISTS"
	    " (SELECT 1 FROM recipients WHERE message_id = ?1 AND state NOT IN"
	    " ('delivered', 'bounced'))", id, 0, NULL, NULL);
}

static int
cmd_queue_bounce(struct ctl *ctl, int argc, char **argv)
{
	long long now = (long long)time(NULL);
	struct bounce_rows b;
	char dsn[QUEUE_ID_LEN + 1];
	const char *id = argv[0];
	int rc = check_id(ctl, id);

	if (rc != 0 || load_config(ctl) == -1)
		return rc != 0 ? rc : 1;
	memset(&b, 0, sizeof(b));
	if (exec_ctl(ctl, "BEGIN IMMEDIATE") == -1)
		return 1;
	if (bounce_collect(ctl, id, &b) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce");
	}
	if (b.n == 0) {
		exec_ctl(ctl, "ROLLBACK");
		fprintf(stderr, "mxgatectl: %s: no recipient to bounce (done, or"
		    " in delivery right now)\n", id);
		return 1;
	}
	if (bounce_send(ctl, id, &b, now, dsn) == -1 ||
	    bounce_mark(ctl, &b, dsn, now) == -1 || bounce_retire(ctl, id) == -1 ||
	    exec_ctl(ctl, "COMMIT") == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce");
	}
	printf("bounced: %zu recipient%s, ", b.n, b.n == 1 ? "" : "s");
	if (dsn[0] != '\0')
		printf("DSN %s queued\n", dsn);
	else
		printf("no DSN (null sender)\n");
	bounce_rows_free(&b);
	return 0;
}

/* queue stats */

static int
stats_states(struct ctl *ctl)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT state, recipients, messages FROM"
	    " queue_summary ORDER BY state", &st) == -1)
		return -1;
	printf("%-12s %10s %10s\n", "STATE", "RECIPIENTS", "MESSAGES");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		printf("%-12s %10lld %10lld\n", col_text(st, 0),
		    (long long)sqlite3_column_int64(st, 1),
		    (long long)sqlite3_column_int64(st, 2));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int
stats_oldest(struct ctl *ctl)
{
	sqlite3_stmt *st;
	long long age;
	int rc;

	if (prepare(ctl, "SELECT (SELECT count(*) FROM messages),"
	    " m.id, datetime(m.received_at, 'unixepoch'), m.received_at"
	    " FROM messages m WHERE EXISTS (SELECT 1 FROM recipients r"
	    " WHERE r.message_id = m.id AND r.state NOT IN ('delivered',"
	    " 'bounced')) ORDER BY m.received_at, m.id LIMIT 1", &st) == -1)
		return -1;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		age = (long long)time(NULL) - sqlite3_column_int64(st, 3);
		printf("\nmessages: %lld\noldest pending: %s, received %s UTC"
		    " (%lld s ago)\n", (long long)sqlite3_column_int64(st, 0),
		    col_text(st, 1), col_text(st, 2), age);
	} else if (rc == SQLITE_DONE) {
		printf("\noldest pending: none\n");
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

static int
stats_destinations(struct ctl *ctl)
{
	sqlite3_stmt *st;
	int rc;

	if (prepare(ctl, "SELECT coalesce(destination, '(none yet)'),"
	    " sum(state = 'delivered'), sum(state = 'deferred'),"
	    " sum(state = 'bounced'), sum(state IN ('queued', 'delivering',"
	    " 'held')) FROM recipients GROUP BY 1 ORDER BY 2 DESC, 1",
	    &st) == -1)
		return -1;
	printf("\n%-40s %9s %9s %9s %9s\n", "DESTINATION", "DELIVERED",
	    "DEFERRED", "BOUNCED", "PENDING");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(st, 0);

		put_safe_n(stdout, col_text(st, 0), (size_t)len, SAFE_LINE);
		printf("%*s %9lld %9lld %9lld %9lld\n", len < 40 ? 40 - len : 0,
		    "", (long long)sqlite3_column_int64(st, 1),
		    (long long)sqlite3_column_int64(st, 2),
		    (long long)sqlite3_column_int64(st, 3),
		    (long long)sqlite3_column_int64(st, 4));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int
cmd_queue_stats(struct ctl *ctl, int argc, char **argv)
{
	/* One read transaction: the three parts agree. */
	if (exec_ctl(ctl, "BEGIN") == -1)
		return 1;
	if (stats_states(ctl) == -1 || stats_oldest(ctl) == -1 ||
	    stats_destinations(ctl) == -1) {
		query_failed(ctl, "queue stats");
		exec_ctl(ctl, "ROLLBACK");
		return 1;
	}
	exec_ctl(ctl, "COMMIT");
	return 0;
}

/* route test: see route_test.h. */
static int
cmd_route_test(struct ctl *ctl, int argc, char **argv)
{
	return route_test_main(ctl->conf, argc, argv);
}

/* passwd */

/* One line from f, without its line end; -1 at end of file or error. */
static int
read_line(FILE *f, char *out, size_t size)
{
	size_t len;

	if (fgets(out, (int)size, f) == NULL)
		return -1;
	len = strlen(out);
	if (len > 0 && out[len - 1] != '\n' && !feof(f)) {
		explicit_bzero(out, size);
		errno = EMSGSIZE;
		return -1;
	}
	out[strcspn(out, "\r\n")] = '\0';
	return 0;
}

/* Prompt on the terminal with echo off. */
static int
prompt_password(const char *prompt, char *out, size_t size)
{
	struct termios old, quiet;
	int r;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(STDIN_FILENO, &old) < 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	r = read_line(stdin, out, size);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return r;
}

/* From the terminal (twice), or the first line of stdin (scripts). */
static int
read_password(char *pass, size_t size)
{
	char again[1024];
	int r;

	if (!isatty(STDIN_FILENO))
		r = read_line(stdin, pass, size);
	else if ((r = prompt_password("Password: ", pass, size)) == 0 &&
	    (r = prompt_password("Again: ", again, sizeof(again))) == 0 &&
	    strcmp(pass, again) != 0) {
		fprintf(stderr, "mxgatectl: the passwords differ\n");
		explicit_bzero(again, sizeof(again));
		return -1;
	}
	explicit_bzero(again, sizeof(again));
	if (r < 0) {
		fprintf(stderr, "mxgatectl: no password read%s%s\n",
		    errno == EMSGSIZE ? ": " : "",
		    errno == EMSGSIZE ? "too long" : "");
		return -1;
	}
	if (pass[0] == '\0') {
		fprintf(stderr, "mxgatectl: empty password\n");
		return -1;
	}
	return 0;
}

static int
cmd_passwd(struct ctl *ctl, int argc, char **argv)
{
	const char *user = NULL, *file = NULL, *scheme = "yescrypt";
	char pass[1024], hash[512], err[512];
	struct passwd *pw;
	struct stat st;
	bool existed;
	int i, r;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--file") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--sha512") == 0)
			scheme = "sha512";
		else if (argv[i][0] == '-' || user != NULL)
			return cmd_usage(ctl->cmd);
		else
			user = argv[i];
	}
	if (user == NULL)
		return cmd_usage(ctl->cmd);
	if (!auth_user_valid(user)) {
		fprintf(stderr, "mxgatectl: invalid user name (1 to 255 bytes, "
		    "no ':', space or control character)\n");
		return 1;
	}
	if (file == NULL) {
		if (load_config(ctl) == -1)
			return 1;
		if ((file = ctl->conf->auth_passwd_file) == NULL) {
			fprintf(stderr, "mxgatectl: the configuration has no "
			    "auth.passwd_file: name one with --file\n");
			return 1;
		}
	}
	if (read_password(pass, sizeof(pass)) == -1)
		return 1;
	r = auth_hash(scheme, pass, hash, sizeof(hash));
	explicit_bzero(pass, sizeof(pass));
	if (r == -1) {
		fprintf(stderr, "mxgatectl: hashing: %s\n", strerror(errno));
		return 1;
	}
	existed = stat(file, &st) == 0;
	if (auth_passwd_set(file, user, hash, err, sizeof(err)) == -1) {
		fprintf(stderr, "mxgatectl: %s\n", err);
		return 1;
	}
	/* A new file (mode 0640) for the lookup process, which alone reads
	 * it: root's, its user's group. */
	if (!existed && geteuid() == 0 && (pw = getpwnam(ctl->conf != NULL &&
	    ctl->conf->lookup_user != NULL ? ctl->conf->lookup_user :
	    "mxgate-auth")) != NULL && chown(file, 0, pw->pw_gid) < 0)
		fprintf(stderr, "mxgatectl: %s: chown: %s\n", file,
		    strerror(errno));
	printf("%s: password of %s set\n", file, user);
	return 0;
}

/* Setting up what a command needs. */

static int
load_config(struct ctl *ctl)
{
	const char *path = ctl->config_path;

	if (ctl->conf != NULL)
		return 0;
	if (path == NULL && access(SYSCONFDIR "/mxgate.conf", F_OK) == 0)
		path = SYSCONFDIR "/mxgate.conf";
	ctl->conf = path != NULL ? config_load(path, config_error) :
	    config_default();
	return ctl->conf != NULL ? 0 : -1;
}

static int
open_queue(struct ctl *ctl, bool readonly)
{
	if (ctl->db_path == NULL) {
		if (load_config(ctl) == -1)
			return -1;
		xasprintf(&ctl->db_path_buf, "%s/%s", ctl->conf->queue_dir,
		    QUEUE_DB_NAME);
		ctl->db_path = ctl->db_path_buf;
	}
	/* Never create a queue: a typo in -q must not leave a new one. */
	if (access(ctl->db_path, F_OK) == -1) {
		fprintf(stderr, "mxgatectl: queue database %s: %s\n",
		    ctl->db_path, strerror(errno));
		return -1;
	}
	ctl->db = queue_db_open(ctl->db_path, readonly);
	if (ctl->db == NULL)
		return -1;
	ctl->h = queue_db_handle(ctl->db);
	return 0;
}

static int
provide(struct ctl *ctl, enum cmd_needs needs)
{
	switch (needs) {
	case NEEDS_NOTHING:
		return 0;
	case NEEDS_CONFIG:
		return load_config(ctl);
	case NEEDS_QUEUE_RO:
		return open_queue(ctl, true);
	case NEEDS_QUEUE_RW:
		return open_queue(ctl, false);
	}
	return -1;
}

static const struct command *
find_command(int argc, char **argv, int *consumed)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(commands); i++) {
		const struct command *c = &commands[i];

		if (strcmp(argv[0], c->group) != 0)
			continue;
		if (c->name == NULL) {
			*consumed = 1;
			return c;
		}
		if (argc >= 2 && strcmp(argv[1], c->name) == 0) {
			*consumed = 2;
			return c;
		}
	}
	return NULL;
}

static int
run_command(struct ctl *ctl, int argc, char **argv)
{
	const struct command *c;
	int consumed, nargs, rc;

	c = find_command(argc, argv, &consumed);
	if (c == NULL)
		return usage();
	nargs = argc - consumed;
	if (nargs < c->min_args || nargs > c->max_args)
		return cmd_usage(c);
	ctl->cmd = c;
	if (provide(ctl, c->needs) == -1)
		return 1;
	rc = c->run(ctl, nargs, argv + consumed);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "mxgatectl: stdout: %s\n", strerror(errno));
		rc = 1;
	}
	return rc;
}

int
main(int argc, char **argv)
{
	struct ctl ctl;
	int ch, rc;

	memset(&ctl, 0, sizeof(ctl));
	log_init(true, LOG_LEVEL_WARN);
	log_set_role("mxgatectl");
	/* "+": options end at the command, whose own options follow it. */
	while ((ch = getopt(argc, argv, "+c:q:hV")) != -1) {
		switch (ch) {
		case 'c':
			ctl.config_path = optarg;
			break;
		case 'q':
			ctl.db_path = optarg;
			break;
		case 'h':
			usage_to(stdout);
			return 0;
		case 'V':
			printf("mxgatectl %s\n", PACKAGE_VERSION);
			return 0;
		default:
			return usage();
		}
	}
	if (optind >= argc)
		return usage();
	rc = run_command(&ctl, argc - optind, argv + optind);
	queue_db_close(ctl.db);
	if (ctl.conf != NULL)
		config_free(ctl.conf);
	free(ctl.db_path_buf);
	return rc;
}
