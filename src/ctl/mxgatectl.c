/*
 * mxgatectl — the operator's tool: inspect and manage the queue, test
 * routes, set AUTH passwords.
 *
 *   mxgatectl [-c CONFIG] [-q QUEUE] COMMAND ...
 *   mxgatectl --help | --version | help [COMMAND]
 *
 * The queue is QUEUE (-q: the queue directory, or its queue.db), or
 * queue.directory/queue.db from the configuration: CONFIG (-c), else
 * MXGATE_CONF ($(sysconfdir)/mxgate/mxgate.conf, the file mxgated and the
 * systemd unit use), else -- when that file does not exist -- the
 * embedded default that mxgated also uses without -c (./var/queue).  A
 * relative queue directory is taken relative to the current directory,
 * as mxgated does.
 *
 * Commands are rows of the table at the end of this file: a command says
 * what it needs (the queue read-only or read-write, the configuration) and
 * main() provides exactly that before calling it.  Every error says what
 * to do next (which option, which file), not only what SQLite said.
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
#include <limits.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "smtp/auth.h"
#include "queue/bounce.h"
#include "ctl/audit.h"
#include "common/config.h"
#include "common/log.h"
#include "queue/queue_db.h"
#include "ctl/route_test.h"
#include "common/util.h"

#ifndef MXGATE_CONF
#define MXGATE_CONF "/etc/mxgate/mxgate.conf"
#endif

#define EXIT_USAGE 2

enum cmd_needs {
	NEEDS_NOTHING,
	NEEDS_CONFIG,           /* ctl->conf */
	NEEDS_QUEUE_RO,         /* ctl->db, read-only */
	NEEDS_QUEUE_RW,         /* ctl->db, read-write (existing queue only) */
};

struct ctl {
	const char      *config_path;   /* -c, or MXGATE_CONF if it exists */
	const char      *queue_arg;     /* -q as given */
	const char      *db_path;       /* from -q, or derived from conf */
	char            *db_path_buf;
	struct mxconf   *conf;
	struct queue_db *db;
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

/* What `mxgatectl help COMMAND` adds to a command's one-line help. */
static const struct {
	const char *command;
	const char *text;
} details[] = {
	{ "queue list",
	  "One line per message: id, time received (UTC), size, sender,\n"
	  "number of recipients, the states of its recipients.\n"
	  "  --state S    only messages with a recipient in state S (queued,\n"
	  "               delivering, deferred, delivered, bounced, held)\n"
	  "  --rcpt RE    only messages with a recipient matching RE\n"
	  "  --sender RE  only messages whose sender matches RE\n" },
	{ "queue show",
	  "The envelope, each recipient with its state and last reply, the\n"
	  "message's history and its headers; --body adds the whole message.\n"
	  "ID is the id in the 250 reply, the logs and queue list.\n" },
	{ "queue retry",
	  "Make the queued and deferred recipients of message ID (or of every\n"
	  "message, --all) due now; the running queue process picks them up.\n" },
	{ "queue hold",
	  "Hold the pending recipients of message ID: never attempted until\n"
	  "released.\n" },
	{ "queue release",
	  "Release the held recipients of message ID; they are due now.\n" },
	{ "queue delete",
	  "Delete message ID and everything about it, without a bounce.\n" },
	{ "queue bounce",
	  "Fail the pending recipients of message ID and send the sender a\n"
	  "delivery status notification (delivery.bounce_upstream).\n" },
	{ "queue stats",
	  "Recipients per state, the oldest message, and per destination.\n" },
	{ "route test",
	  "Run the configuration's routes on a recipient, as an smtp worker\n"
	  "would at RCPT TO, and print the decision and the variables; with\n"
	  "--script FILE, check every case in FILE (etc/routes.test).\n" },
	{ "passwd",
	  "Set USER's password (read twice from a terminal, once from a pipe)\n"
	  "in auth.passwd_file of the configuration, or in --file FILE; a\n"
	  "yescrypt hash, or SHA-512 crypt with --sha512.\n" },
};

static void
command_name(const struct command *c, char *buf, size_t size)
{
	snprintf(buf, size, "%s%s%s", c->group, c->name != NULL ? " " : "",
	    c->name != NULL ? c->name : "");
}

static void
usage_to(FILE *f)
{
	char name[64];
	size_t i;

	fprintf(f, "usage: mxgatectl [-c config] [-q queue] command ...\n"
	    "       mxgatectl --help | --version | help [command]\n"
	    "  -c FILE   the configuration; default %s,\n"
	    "            else the embedded default (queue in ./var/queue)\n"
	    "  -q QUEUE  the queue directory (queue.directory) or its queue.db;\n"
	    "            default: from the configuration\n"
	    "commands:\n", MXGATE_CONF);
	for (i = 0; i < ARRAY_LEN(commands); i++) {
		command_name(&commands[i], name, sizeof(name));
		fprintf(f, "  %-14s %s\n", name, commands[i].help);
	}
	fprintf(f, "\"mxgatectl help COMMAND\" says more; see mxgatectl(8)\n");
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
	char name[64];

	command_name(c, name, sizeof(name));
	fprintf(stderr, "usage: mxgatectl %s %s\n"
	    "(\"mxgatectl help %s\" says more)\n", name, c->args, name);
	return EXIT_USAGE;
}

/* mxgatectl help [GROUP [NAME]]: every command that matches the words. */
static int
help(int argc, char **argv)
{
	char name[64];
	size_t i, j, shown = 0;

	if (argc == 0) {
		usage_to(stdout);
		return 0;
	}
	for (i = 0; i < ARRAY_LEN(commands); i++) {
		const struct command *c = &commands[i];

		if (strcmp(argv[0], c->group) != 0 || (argc > 1 &&
		    (c->name == NULL || strcmp(argv[1], c->name) != 0)))
			continue;
		command_name(c, name, sizeof(name));
		printf("%susage: mxgatectl %s %s\n  %s\n", shown > 0 ? "\n" : "",
		    name, c->args, c->help);
		for (j = 0; j < ARRAY_LEN(details); j++)
			if (strcmp(details[j].command, name) == 0)
				printf("%s", details[j].text);
		shown++;
	}
	if (shown == 0 || argc > 2) {
		fprintf(stderr, "mxgatectl: help: no command \"%s%s%s\"; the"
		    " commands are listed by mxgatectl --help\n", argv[0],
		    argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
		return EXIT_USAGE;
	}
	return 0;
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

/* The store's words, then what the operator can do about them. */
static int
query_failed(struct ctl *ctl, const char *what)
{
	fprintf(stderr, "mxgatectl: %s: the queue %s: %s; ", what,
	    ctl->db_path, queue_db_error(ctl->db));
	switch (queue_db_error_kind(ctl->db)) {
	case QDB_ERR_BUSY:
		fprintf(stderr, "mxgated holds it for now: run the command"
		    " again\n");
		break;
	case QDB_ERR_ACCESS:
		fprintf(stderr, "run mxgatectl as root or as the queue's owner"
		    " (server.queue_user)\n");
		break;
	default:
		fprintf(stderr, "if it happens again, check the database: sqlite3"
		    " %s 'PRAGMA integrity_check'\n", ctl->db_path);
		break;
	}
	return 1;
}

/* queue list */

/* The --rcpt (0) and --sender (1) patterns, matched for the store. */
struct list_patterns {
	pcre2_code *re[2];
	pcre2_match_data *md;
};

static int
list_match(void *arg, int which, const char *text, size_t len)
{
	struct list_patterns *lp = arg;

	if (lp->re[which] == NULL)
		return 0;
	return pcre2_match(lp->re[which], (PCRE2_SPTR)text, len, 0, 0, lp->md,
	    NULL) >= 0;
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
put_list_row(void *arg, const struct queue_list_row *row)
{
	long long *n = arg;

	printf("%-16s  %-19s  %9lld  <", row->id, row->received,
	    (long long)row->size);
	put_safe_n(stdout, row->sender, row->sender_len, SAFE_LINE);
	printf(">%*s  %5lld  ", (int)(row->sender_len < 30 ?
	    30 - row->sender_len : 0), "", (long long)row->nrcpts);
	put_safe(row->states);
	putchar('\n');
	(*n)++;
}

static int
run_list(struct ctl *ctl, const char *state, struct list_patterns *lp)
{
	struct queue_list_filter f = {
		.state = state,
		.rcpt = lp->re[0] != NULL,
		.sender = lp->re[1] != NULL,
		.match = list_match,
		.arg = lp,
	};
	long long n = 0;

	printf("%-16s  %-19s  %9s  %-32s  %5s  %s\n", "ID", "RECEIVED (UTC)",
	    "SIZE", "SENDER", "RCPTS", "STATE");
	if (queue_db_list(ctl->db, &f, put_list_row, &n) < 0)
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
	rc = run_list(ctl, state, &lp);
done:
	pcre2_code_free(lp.re[0]);
	pcre2_code_free(lp.re[1]);
	pcre2_match_data_free(lp.md);
	return rc;
}

/* queue show */

static void
put_message(void *arg, const struct queue_message_view *m)
{
	(void)arg;
	put_field("id:", m->id);
	printf("%-12s %s UTC (%lld)\n", "received:", m->received,
	    (long long)m->received_at);
	printf("%-12s <", "sender:");
	put_safe(m->sender);
	printf(">\n");
	put_field("client:", m->client_ip);
	put_field("helo:", m->helo);
	put_field("protocol:", m->protocol);
	put_field("auth user:", m->auth_user);
	printf("%-12s %lld bytes%s%s\n", "size:", (long long)m->size,
	    m->body_8bitmime ? ", 8BITMIME" : "",
	    m->smtputf8 ? ", SMTPUTF8" : "");
	put_field("message-id:", m->message_id);
	put_field("subject:", m->subject);
}

static int
show_message(struct ctl *ctl, const char *id)
{
	int r = queue_db_show_message(ctl->db, id, put_message, NULL);

	if (r == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
		return 1;
	}
	return r < 0 ? query_failed(ctl, "queue show") : 0;
}

static void
put_recipient(void *arg, const struct queue_rcpt_view *r)
{
	(void)arg;
	printf("  <");
	put_safe(r->address);
	printf(">\n    route=");
	put_safe(r->route);
	printf(" action=");
	put_safe(r->action);
	printf(" params=");
	put_safe(r->params);
	printf("\n    state=%s attempts=%lld", r->state,
	    (long long)r->attempts);
	if (r->next_attempt != NULL)
		printf(" next attempt=%s", r->next_attempt);
	if (r->last_attempt != NULL)
		printf(" last attempt=%s", r->last_attempt);
	putchar('\n');
	if (r->last_reply != NULL) {
		printf("    last reply: ");
		put_safe(r->last_reply);
		putchar('\n');
	}
	if (r->destination != NULL) {
		printf("    destination: ");
		put_safe(r->destination);
		putchar('\n');
	}
}

static int
show_recipients(struct ctl *ctl, const char *id)
{
	printf("\nrecipients:\n");
	if (queue_db_show_recipients(ctl->db, id, put_recipient, NULL) < 0)
		return query_failed(ctl, "recipients");
	return 0;
}

static void
put_event(void *arg, const struct queue_event_view *e)
{
	(void)arg;
	printf("  %s  %-9s", e->time, e->kind);
	if (e->recipient != NULL) {
		printf(" <");
		put_safe(e->recipient);
		printf(">");
	}
	if (e->detail != NULL) {
		putchar(' ');
		put_safe(e->detail);
	}
	putchar('\n');
}

static int
show_history(struct ctl *ctl, const char *id)
{
	printf("\nhistory:\n");
	if (queue_db_show_history(ctl->db, id, put_event, NULL) < 0)
		return query_failed(ctl, "history");
	return 0;
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

static void
put_content(void *arg, const char *p, size_t len)
{
	bool body = *(bool *)arg;

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
}

static int
show_content(struct ctl *ctl, const char *id, bool body)
{
	int r = queue_db_show_content(ctl->db, id, put_content, &body);

	if (r < 0)
		return query_failed(ctl, "content");
	/* delivery.keep_delivered keeps the rest, not this. */
	if (r == 0)
		printf("\n(content removed: every recipient is final)\n");
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
rollback_fail(struct ctl *ctl, const char *what)
{
	query_failed(ctl, what);
	queue_db_admin_rollback(ctl->db);
	return 1;
}

/* 1 when the message is in the queue, 0 (said) when not, -1 on error. */
static int
message_exists(struct ctl *ctl, const char *id)
{
	int r;

	if (!queue_id_valid(id)) {
		fprintf(stderr, "mxgatectl: no message ");
		put_safe_n(stderr, id, strnlen(id, 64), SAFE_LINE);
		fprintf(stderr, " in the queue (not a queue id)\n");
		return 0;
	}
	if ((r = queue_db_message_exists(ctl->db, id)) < 0)
		return query_failed(ctl, "queue"), -1;
	if (r == 0)
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
	return r;
}

/* An operator's action is logged where the daemon logs (audit.h), in
 * its log_format when the configuration was read. */
static void
audit(struct ctl *ctl, const char *action, const char *id, long long nrcpt,
    const char *detail)
{
	audit_init(ctl->conf != NULL ? ctl->conf->log_format : NULL);
	audit_log(action, id, nrcpt, detail);
}

/* Change the recipients of message id (NULL: of every message). */
static int
change_recipients(struct ctl *ctl, const char *id, enum queue_change change,
    const char *action, const char *what)
{
	long long n = 0;

	if (queue_db_change_recipients(ctl->db, id, change,
	    (int64_t)time(NULL), &n) < 0)
		return query_failed(ctl, what);
	audit(ctl, action, id, n, NULL);
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
	return change_recipients(ctl, id, QUEUE_CHANGE_RETRY, "retry",
	    "due now");
}

static int
cmd_queue_hold(struct ctl *ctl, int argc, char **argv)
{
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	return change_recipients(ctl, argv[0], QUEUE_CHANGE_HOLD, "hold",
	    "held");
}

static int
cmd_queue_release(struct ctl *ctl, int argc, char **argv)
{
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	return change_recipients(ctl, argv[0], QUEUE_CHANGE_RELEASE, "release",
	    "released, due now");
}

static int
cmd_queue_delete(struct ctl *ctl, int argc, char **argv)
{
	int rc = check_id(ctl, argv[0]);

	if (rc != 0)
		return rc;
	if (queue_db_delete(ctl->db, argv[0]) == -1)
		return query_failed(ctl, "queue delete");
	audit(ctl, "delete", argv[0], -1, NULL);
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

static void
bounce_add(void *arg, int64_t rcpt_id, const char *address,
    const char *last, int64_t last_attempt_at)
{
	struct bounce_rows *b = arg;

	b->ids = xrealloc(b->ids, (b->n + 1) * sizeof(*b->ids));
	b->rcpts = xrealloc(b->rcpts, (b->n + 1) * sizeof(*b->rcpts));
	b->replies = xrealloc(b->replies, (b->n + 1) * sizeof(*b->replies));
	memset(&b->rcpts[b->n], 0, sizeof(b->rcpts[b->n]));
	b->ids[b->n] = rcpt_id;
	b->rcpts[b->n].address = xstrdup(address);
	xasprintf(&b->replies[b->n], "554 5.0.0 returned to the sender"
	    " by the postmaster%s%s%s", last != NULL ? " (last error: " :
	    "", last != NULL ? last : "", last != NULL ? ")" : "");
	b->rcpts[b->n].reply = b->replies[b->n];
	b->rcpts[b->n].last_attempt_at = last_attempt_at;
	b->n++;
}

struct bounce_send {
	struct ctl         *ctl;
	const char         *id;
	struct bounce_rows *rows;
	long long           now;
	char               *dsn;
};

static int
bounce_write(void *arg, const char *sender, int64_t received_at,
    const char *content, size_t len)
{
	struct bounce_send *bs = arg;
	struct bounce_report r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.kind = BOUNCE_FAILED;
	r.queue_id = bs->id;
	r.sender = sender;
	r.received_at = received_at;
	r.reporting_mta = bs->ctl->conf->hostname;
	r.headers = content != NULL ? content : "";
	r.headers_len = content != NULL ? bounce_header_len(content, len) : 0;
	r.rcpts = bs->rows->rcpts;
	r.nrcpts = bs->rows->n;
	rc = bounce_queue(bs->ctl->db, &r, bs->ctl->conf->bounce_upstream,
	    bs->now, bs->dsn);
	if (rc == 1) {
		bs->dsn[0] = '\0';
		rc = 0;
	}
	return rc;
}

/* The DSN: 0 with its id ("" for none: null sender), -1 on failure. */
static int
bounce_send(struct ctl *ctl, const char *id, struct bounce_rows *b,
    long long now, char dsn[QUEUE_ID_LEN + 1])
{
	struct bounce_send bs = { ctl, id, b, now, dsn };

	dsn[0] = '\0';
	return queue_db_bounce_source(ctl->db, id, bounce_write, &bs) < 0 ?
	    -1 : 0;
}

static int
bounce_mark(struct ctl *ctl, struct bounce_rows *b, const char *dsn,
    long long now)
{
	char detail[128];

	snprintf(detail, sizeof(detail), "by mxgatectl dsn=%s",
	    dsn[0] != '\0' ? dsn : "none");
	for (size_t i = 0; i < b->n; i++)
		if (queue_db_mark_bounced(ctl->db, b->ids[i], b->replies[i],
		    detail, now) < 0)
			return -1;
	return 0;
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
	/* Retiring the message is the scheduler's statement. */
	if (queue_db_delivery_init(ctl->db) == -1)
		return 1;
	if (queue_db_admin_begin(ctl->db) == -1)
		return query_failed(ctl, "queue bounce");
	if (queue_db_pending_rcpts(ctl->db, id, bounce_add, &b) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce");
	}
	if (b.n == 0) {
		queue_db_admin_rollback(ctl->db);
		fprintf(stderr, "mxgatectl: %s: no recipient to bounce (done, or"
		    " in delivery right now)\n", id);
		return 1;
	}
	/* As the scheduler does once every recipient is final. */
	if (bounce_send(ctl, id, &b, now, dsn) == -1 ||
	    bounce_mark(ctl, &b, dsn, now) == -1 ||
	    queue_db_retire_if_final(ctl->db, id,
	    ctl->conf->keep_delivered != 0) == -1 ||
	    queue_db_admin_commit(ctl->db) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce");
	}
	{
		char detail[QUEUE_ID_LEN + 8];

		snprintf(detail, sizeof(detail), "dsn=%s",
		    dsn[0] != '\0' ? dsn : "none");
		audit(ctl, "bounce", id, (long long)b.n, detail);
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

static void
put_state(void *arg, const char *state, int64_t recipients, int64_t messages)
{
	(void)arg;
	printf("%-12s %10lld %10lld\n", state, (long long)recipients,
	    (long long)messages);
}

static void
put_oldest(void *arg, int64_t messages, const char *id, const char *received,
    int64_t received_at)
{
	(void)arg;
	printf("\nmessages: %lld\noldest pending: %s, received %s UTC"
	    " (%lld s ago)\n", (long long)messages, id, received,
	    (long long)time(NULL) - (long long)received_at);
}

static void
put_destination(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending)
{
	(void)arg;
	put_safe_n(stdout, dest, len, SAFE_LINE);
	printf("%*s %9lld %9lld %9lld %9lld\n", len < 40 ? 40 - (int)len : 0,
	    "", (long long)delivered, (long long)deferred, (long long)bounced,
	    (long long)pending);
}

static int
stats_all(struct ctl *ctl)
{
	int r;

	printf("%-12s %10s %10s\n", "STATE", "RECIPIENTS", "MESSAGES");
	if (queue_db_stats_states(ctl->db, put_state, NULL) < 0)
		return -1;
	if ((r = queue_db_stats_oldest(ctl->db, put_oldest, NULL)) < 0)
		return -1;
	if (r == 0)
		printf("\noldest pending: none\n");
	printf("\n%-40s %9s %9s %9s %9s\n", "DESTINATION", "DELIVERED",
	    "DEFERRED", "BOUNCED", "PENDING");
	return queue_db_stats_destinations(ctl->db, put_destination, NULL);
}

static int
cmd_queue_stats(struct ctl *ctl, int argc, char **argv)
{
	/* One read transaction: the three parts agree. */
	if (queue_db_read_begin(ctl->db) == -1)
		return query_failed(ctl, "queue stats");
	if (stats_all(ctl) == -1) {
		query_failed(ctl, "queue stats");
		queue_db_admin_rollback(ctl->db);
		return 1;
	}
	queue_db_admin_commit(ctl->db);
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

/* "the configuration FILE" or "the embedded default configuration". */
static const char *
config_words(const struct ctl *ctl, char *buf, size_t size)
{
	if (ctl->config_path != NULL)
		snprintf(buf, size, "the configuration %s", ctl->config_path);
	else
		snprintf(buf, size, "the embedded default configuration (%s"
		    " does not exist)", MXGATE_CONF);
	return buf;
}

static int
load_config(struct ctl *ctl)
{
	if (ctl->conf != NULL)
		return 0;
	if (ctl->config_path == NULL && access(MXGATE_CONF, F_OK) == 0)
		ctl->config_path = MXGATE_CONF;
	if (ctl->config_path != NULL && access(ctl->config_path, R_OK) < 0) {
		fprintf(stderr, "mxgatectl: cannot read the configuration %s:"
		    " %s; %s\n", ctl->config_path, strerror(errno),
		    errno == EACCES ? "run mxgatectl as root, or name the"
		    " queue with -q DIR" : "name another one with -c FILE");
		return -1;
	}
	ctl->conf = ctl->config_path != NULL ?
	    config_load(ctl->config_path, config_error) : config_default();
	return ctl->conf != NULL ? 0 : -1;
}

/* The queue database: -q names the directory or the file itself. */
static int
find_queue(struct ctl *ctl)
{
	char words[PATH_MAX + 64];
	struct stat st;

	if (ctl->queue_arg != NULL) {
		if (stat(ctl->queue_arg, &st) == 0 && S_ISDIR(st.st_mode))
			xasprintf(&ctl->db_path_buf, "%s/%s", ctl->queue_arg,
			    QUEUE_DB_NAME);
		else
			ctl->db_path_buf = xstrdup(ctl->queue_arg);
		ctl->db_path = ctl->db_path_buf;
		if (access(ctl->db_path, F_OK) == 0)
			return 0;
		fprintf(stderr, "mxgatectl: -q %s: no queue database at %s (%s);"
		    " -q takes the queue directory (queue.directory of the"
		    " configuration) or its %s file\n", ctl->queue_arg,
		    ctl->db_path, strerror(errno), QUEUE_DB_NAME);
		return -1;
	}
	if (load_config(ctl) == -1)
		return -1;
	xasprintf(&ctl->db_path_buf, "%s/%s", ctl->conf->queue_dir,
	    QUEUE_DB_NAME);
	ctl->db_path = ctl->db_path_buf;
	/* Never create a queue: a wrong path must not leave a new one. */
	if (access(ctl->db_path, F_OK) == 0)
		return 0;
	if (errno == EACCES) {
		fprintf(stderr, "mxgatectl: cannot reach the queue %s: %s; run"
		    " mxgatectl as root or as the queue's owner (server.queue_user)"
		    "\n", ctl->db_path, strerror(errno));
		return -1;
	}
	fprintf(stderr, "mxgatectl: no queue at %s (queue.directory of %s%s);"
	    " has mxgated run with this configuration?  Otherwise name the"
	    " configuration with -c FILE or the queue directory with -q DIR\n",
	    ctl->db_path, config_words(ctl, words, sizeof(words)),
	    ctl->conf->queue_dir[0] != '/' ? ", relative to the current"
	    " directory as for mxgated" : "");
	return -1;
}

static int
open_queue(struct ctl *ctl, bool readonly)
{
	if (ctl->db_path == NULL && find_queue(ctl) == -1)
		return -1;
	if (access(ctl->db_path, readonly ? R_OK : R_OK | W_OK) < 0) {
		fprintf(stderr, "mxgatectl: cannot %s the queue %s: %s; run"
		    " mxgatectl as root or as the queue's owner"
		    " (server.queue_user)\n", readonly ? "read" : "change",
		    ctl->db_path, strerror(errno));
		return -1;
	}
	ctl->db = queue_db_open(ctl->db_path, readonly);
	if (ctl->db == NULL) {
		/* queue_db_open said what SQLite said; now what to do. */
		fprintf(stderr, "mxgatectl: cannot use the queue %s: is it an"
		    " mxgate queue (-q), and can this user write in its"
		    " directory (the -wal and -shm files)?  Run mxgatectl as"
		    " root or as the queue's owner\n", ctl->db_path);
		return -1;
	}
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

	if (strcmp(argv[0], "help") == 0)
		return help(argc - 1, argv + 1);
	c = find_command(argc, argv, &consumed);
	if (c == NULL) {
		fprintf(stderr, "mxgatectl: unknown command \"%s%s%s\"; the"
		    " commands are listed by mxgatectl --help\n", argv[0],
		    argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
		return EXIT_USAGE;
	}
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

static const struct option options[] = {
	{ "config",  required_argument, NULL, 'c' },
	{ "queue",   required_argument, NULL, 'q' },
	{ "help",    no_argument,       NULL, 'h' },
	{ "version", no_argument,       NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

int
main(int argc, char **argv)
{
	struct ctl ctl;
	int ch, rc;

	memset(&ctl, 0, sizeof(ctl));
	log_init(true, LOG_LEVEL_WARN);
	log_set_role("mxgatectl");
	/* "+": options end at the command, whose own options follow it. */
	while ((ch = getopt_long(argc, argv, "+c:q:hV", options, NULL)) != -1) {
		switch (ch) {
		case 'c':
			ctl.config_path = optarg;
			break;
		case 'q':
			ctl.queue_arg = optarg;
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
	if (optind >= argc) {
		fprintf(stderr, "mxgatectl: no command given\n");
		return usage();
	}
	rc = run_command(&ctl, argc - optind, argv + optind);
	queue_db_close(ctl.db);
	if (ctl.conf != NULL)
		config_free(ctl.conf);
	free(ctl.db_path_buf);
	return rc;
}
