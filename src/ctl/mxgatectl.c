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
#include <signal.h>
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
#include "common/dsn.h"
#include "common/log.h"
#include "queue/queue_db.h"
#include "ctl/queue_reroute.h"
#include "ctl/queue_select.h"
#include "ctl/route_test.h"
#include "ctl/tls_report.h"
#include "common/json.h"
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
static int cmd_tls_report(struct ctl *, int, char **);
static int cmd_queue_trace(struct ctl *, int, char **);
static int cmd_queue_shape(struct ctl *, int, char **);
static int cmd_queue_reroute(struct ctl *, int, char **);
static int cmd_route_test(struct ctl *, int, char **);
static int cmd_config(struct ctl *, int, char **);
static int cmd_passwd(struct ctl *, int, char **);
static int cmd_reload(struct ctl *, int, char **);
static int load_config(struct ctl *);

/* The commands. */
static const struct command commands[] = {
	{ "queue", "list", "[ID... | -] [FILTERS] [--json | --ids]",
	  "list the messages in the queue, with why they wait",
	  0, 64, NEEDS_QUEUE_RO, cmd_queue_list },
	{ "queue", "show", "ID [--body | --json]",
	  "envelope, recipients, history, headers (or all)",
	  1, 2, NEEDS_QUEUE_RO, cmd_queue_show },
	{ "queue", "trace", "ID [--json]",
	  "a message's whole story, also after delivery or deletion",
	  1, 2, NEEDS_QUEUE_RO, cmd_queue_trace },
	{ "queue", "shape", "[FILTERS] [--buckets LIST] [--json]",
	  "pending recipients per destination, by age",
	  0, 16, NEEDS_QUEUE_RO, cmd_queue_shape },
	{ "queue", "retry", "ID... | - | --all [FILTERS]",
	  "make queued and deferred recipients due now",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_retry },
	{ "queue", "hold", "ID... | - | --all [FILTERS]",
	  "hold pending recipients",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_hold },
	{ "queue", "release", "ID... | - | --all [FILTERS]",
	  "release held recipients, due now",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_release },
	{ "queue", "delete", "ID... | - | --all [FILTERS]",
	  "delete messages (no bounce; their history stays)",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_delete },
	{ "queue", "bounce", "ID... | - | --all [FILTERS]",
	  "bounce messages' pending recipients to the sender",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_bounce },
	{ "queue", "reroute",
	  "ID... | - | --all [FILTERS] [--dry-run] [--bounce-refused]",
	  "decide pending recipients' routes again (configuration changed)",
	  1, 64, NEEDS_QUEUE_RW, cmd_queue_reroute },
	{ "queue", "stats", "[--json]",
	  "recipients per state, oldest message, per destination",
	  0, 1, NEEDS_QUEUE_RO, cmd_queue_stats },
	{ "tls-report", NULL, "[--date YYYY-MM-DD] [DOMAIN]",
	  "the day's TLS report (RFC 8460 JSON) of the relay's sessions",
	  0, 3, NEEDS_QUEUE_RO, cmd_tls_report },
	{ "config", NULL, "[-d]",
	  "the effective configuration, defaults included (-d: changes)",
	  0, 1, NEEDS_CONFIG, cmd_config },
	{ "route", "test", "RCPT [--from S] [--ip A] [--helo H] [--auth U] "
	  "[--tls] | --script FILE",
	  "what the routes do with a recipient (route_test.h)",
	  1, 10, NEEDS_CONFIG, cmd_route_test },
	{ "passwd", NULL, "USER [--file FILE] [--sha512]",
	  "set USER's AUTH password (read from stdin) in the passwd file",
	  1, 4, NEEDS_NOTHING, cmd_passwd },
	{ "reload", NULL, "",
	  "check the configuration, have mxgated load it, say how it went",
	  0, 0, NEEDS_CONFIG, cmd_reload },
};

/* Escaping of untrusted text for a terminal. */
enum safe_mode {
	SAFE_LINE,              /* one line: tabs and newlines become spaces */
	SAFE_BLOCK,             /* text block: keep tabs and newlines, drop CR */
};

#define FILTERS_HELP \
	"Filters, which must all hold for one recipient of a message:\n" \
	"  --state S        its state (queued, delivering, deferred,\n" \
	"                   delivered, bounced, held)\n" \
	"  --rcpt RE        its address matches RE\n" \
	"  --sender RE      the message's sender matches RE\n" \
	"  --dest RE        its destination (host, path or command last tried)\n" \
	"                   or its domain matches RE\n" \
	"  --older-than D   the message was received more than D ago\n" \
	"                   (90s, 30m, 4h, 2d, 1w)\n" \
	"RE: a PCRE2 pattern, caseless.\n"
#define ACTION_HELP \
	"Which messages: IDs, \"-\" for IDs on stdin (one a line, as queue\n" \
	"list --ids prints them), or --all; filters narrow them, and alone\n" \
	"are refused.  Prints how many recipients and messages it touched;\n" \
	"the history of each names the operator (uid).\n" FILTERS_HELP

/* What `mxgatectl help COMMAND` adds to a command's one-line help. */
static const struct {
	const char *command;
	const char *text;
} details[] = {
	{ "queue list",
	  "One line per message: id, time received (UTC), size, sender,\n"
	  "number of recipients, the states of its recipients; under it, each\n"
	  "deferred recipient with its attempts, next attempt and last reply.\n"
	  "--json: an array of messages, each with its recipients; --ids: the\n"
	  "ids alone, one a line (for the actions' \"-\").\n"
	  FILTERS_HELP },
	{ "queue show",
	  "The envelope, each recipient with its state and last reply, the\n"
	  "message's history and its headers; --body adds the whole message;\n"
	  "--json: all but the content as one JSON object.\n"
	  "ID is the id in the 250 reply, the logs and queue list.\n" },
	{ "queue trace",
	  "What happened to message ID, from its reception on: envelope,\n"
	  "recipients and every step (attempts, replies, operator actions),\n"
	  "also after it left the queue (delivered, bounced or deleted) for\n"
	  "queue.keep_history.\n" },
	{ "queue shape",
	  "Pending recipients (queued, deferred, delivering, held) per\n"
	  "destination domain, counted in buckets of the age of their message\n"
	  "(as Postfix's qshape): --buckets 5m,10m,20m,40m,80m,160m,320m,640m\n"
	  "by default; a bucket holds those younger than its bound and not\n"
	  "younger than the previous one; the last, the rest.\n"
	  FILTERS_HELP },
	{ "queue retry",
	  "Make the selected queued and deferred recipients due now; the\n"
	  "running queue process picks them up within a second.\n"
	  ACTION_HELP },
	{ "queue hold",
	  "Hold the selected pending recipients: never attempted until\n"
	  "released.\n" ACTION_HELP },
	{ "queue release",
	  "Release the selected held recipients; they are due now.\n"
	  ACTION_HELP },
	{ "queue delete",
	  "Delete the selected messages (any of whose recipients is selected),\n"
	  "without a bounce; their envelope, recipients and history stay for\n"
	  "queue.keep_history (queue trace).\n" ACTION_HELP },
	{ "queue bounce",
	  "Fail the pending recipients of the selected messages and send each\n"
	  "sender a delivery status notification (delivery.bounce_upstream).\n"
	  ACTION_HELP },
	{ "queue reroute",
	  "Run the routes of the configuration (-c) again on the selected\n"
	  "recipients still to be delivered (queued, deferred, held), as at\n"
	  "RCPT TO with the message's sender, client, HELO, user and TLS;\n"
	  "store each new decision (due now; held ones stay held) with a\n"
	  "history row, and print OLD -> NEW.  A recipient the routes would\n"
	  "now refuse (or several would match) is left as it was, and said;\n"
	  "with --bounce-refused, one it refuses is bounced with the route's\n"
	  "reply (a DSN per message).  --dry-run: print, change nothing.  Run it where mxgated runs:\n"
	  "relative maildir paths and commands are made absolute against the\n"
	  "current directory.\n" ACTION_HELP },
	{ "queue stats",
	  "Recipients per state, the oldest message, and per destination;\n"
	  "--json: the same as one JSON object.\n" },
	{ "tls-report",
	  "The relay's TLS sessions to the MX hosts of DOMAIN (or of every\n"
	  "domain, one report a line) on a UTC day (--date; default\n"
	  "yesterday), as the JSON report of RFC 8460 (TLS-RPT): per policy\n"
	  "applied (sts: MTA-STS, tlsa: DANE, no-policy-found) the sessions\n"
	  "that succeeded and the failures by result type, MX host and\n"
	  "address.  Exit status 1 when there is none.\n" },
	{ "config",
	  "Every setting of the configuration (-c) with the value mxgated\n"
	  "would use, defaults included, in the file's syntax: mxgated reads\n"
	  "it back as the same configuration.  -d: only what differs from\n"
	  "the defaults (as mxgated -n -v -d).\n" },
	{ "route test",
	  "Run the configuration's routes on a recipient, as an smtp worker\n"
	  "would at RCPT TO, and print the decision and the variables; with\n"
	  "--script FILE, check every case in FILE (etc/routes.test).\n" },
	{ "reload",
	  "Check the configuration (FILE:LINE: problem, and nothing is sent\n"
	  "when it is bad), send SIGHUP to the mxgated in server.pid_file and\n"
	  "wait until it has loaded the file (exit 0) or refused it (exit 1:\n"
	  "its log says why; what it checks more: the users, the files each\n"
	  "process reads, the certificates, the new listeners).\n" },
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

/* The rows of one message, gathered from queue_db_list()'s calls. */
struct list_out {
	struct ctl_select  *sel;
	struct json_writer  w;
	struct buf          json;
	char                last_id[QUEUE_ID_LEN + 1];
	long long           n;
};

static void
list_text_row(struct list_out *lo, const struct queue_list_row *row, bool first)
{
	if (first) {
		printf("%-16s  %-19s  %9lld  <", row->id, row->received,
		    (long long)row->size);
		put_safe_n(stdout, row->sender, row->sender_len, SAFE_LINE);
		printf(">%*s  %5lld  ", (int)(row->sender_len < 30 ?
		    30 - row->sender_len : 0), "", (long long)row->nrcpts);
		put_safe(row->states);
		putchar('\n');
	}
	(void)lo;
	/* Why a message waits: each deferred recipient's last reply. */
	if (strcmp(row->state, "deferred") != 0)
		return;
	printf("    <");
	put_safe(row->address);
	printf("> deferred, %lld attempt%s, next %s UTC: ",
	    (long long)row->attempts, row->attempts == 1 ? "" : "s",
	    row->next_attempt != NULL ? row->next_attempt : "-");
	put_safe(row->last_reply);
	putchar('\n');
}

static void
list_json_row(struct list_out *lo, const struct queue_list_row *row, bool first)
{
	struct json_writer *w = &lo->w;

	if (first) {
		if (lo->n > 1) {
			json_end_array(w);
			json_end_object(w);
		}
		json_begin_object(w);
		json_key(w, "id");
		json_string(w, row->id);
		json_key(w, "received");
		json_string(w, row->received);
		json_key(w, "received_at");
		json_int(w, row->received_at);
		json_key(w, "sender");
		json_stringn(w, row->sender, row->sender_len);
		json_key(w, "size");
		json_int(w, row->size);
		json_key(w, "states");
		json_string(w, row->states);
		json_key(w, "recipients");
		json_begin_array(w);
	}
	json_begin_object(w);
	json_key(w, "address");
	json_string(w, row->address);
	json_key(w, "state");
	json_string(w, row->state);
	json_key(w, "route");
	json_string(w, row->route);
	json_key(w, "attempts");
	json_int(w, row->attempts);
	json_key(w, "next_attempt");
	json_string(w, row->next_attempt);
	json_key(w, "last_reply");
	json_string(w, row->last_reply);
	json_key(w, "destination");
	json_string(w, row->destination);
	json_end_object(w);
}

static void
put_list_row(void *arg, const struct queue_list_row *row)
{
	struct list_out *lo = arg;
	bool first = strcmp(lo->last_id, row->id) != 0;

	if (first) {
		snprintf(lo->last_id, sizeof(lo->last_id), "%s", row->id);
		lo->n++;
	}
	if (lo->sel->json)
		list_json_row(lo, row, first);
	else if (lo->sel->ids_only) {
		if (first)
			printf("%s\n", row->id);
	} else
		list_text_row(lo, row, first);
}

/* Write a JSON document built in b to stdout, with a newline. */
static void
put_json(struct buf *b)
{
	fwrite(b->data, 1, b->len, stdout);
	putchar('\n');
}

static int
cmd_queue_list(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_select sel;
	struct list_out lo;
	int rc = 0;

	if ((rc = ctl_select_parse(&sel, argc, argv, SEL_IDS | SEL_ALL |
	    SEL_FILTERS | SEL_JSON | SEL_IDS_ONLY)) < 0 || sel.nrest > 0) {
		ctl_select_free(&sel);
		return rc == -2 ? 1 : cmd_usage(ctl->cmd);
	}
	memset(&lo, 0, sizeof(lo));
	lo.sel = &sel;
	buf_init(&lo.json);
	json_writer_init(&lo.w, &lo.json);
	if (sel.json)
		json_begin_array(&lo.w);
	else if (!sel.ids_only)
		printf("%-16s  %-19s  %9s  %-32s  %5s  %s\n", "ID",
		    "RECEIVED (UTC)", "SIZE", "SENDER", "RCPTS", "STATE");
	if (ctl_select_load(&sel, ctl->db) < 0 ||
	    queue_db_list(ctl->db, &sel.q, put_list_row, &lo) < 0) {
		rc = query_failed(ctl, "queue list");
	} else if (sel.json) {
		if (lo.n > 0) {
			json_end_array(&lo.w);
			json_end_object(&lo.w);
		}
		json_end_array(&lo.w);
		put_json(&lo.json);
	} else if (!sel.ids_only) {
		printf("%lld message%s\n", lo.n, lo.n == 1 ? "" : "s");
	}
	buf_free(&lo.json);
	ctl_select_free(&sel);
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
	/* DSN (RFC 3461), as the client asked, decoded. */
	if (m->dsn_ret != NULL || m->dsn_envid != NULL) {
		printf("%-12s", "dsn:");
		if (m->dsn_ret != NULL)
			printf(" RET=%s", m->dsn_ret);
		if (m->dsn_envid != NULL) {
			printf(" ENVID=");
			put_safe(m->dsn_envid);
		}
		putchar('\n');
	}
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
	if (r->dsn_notify != NULL || r->dsn_orcpt != NULL) {
		printf("    dsn:");
		if (r->dsn_notify != NULL) {
			printf(" NOTIFY=");
			put_safe(r->dsn_notify);
		}
		if (r->dsn_orcpt != NULL) {
			printf(" ORCPT=");
			put_safe(r->dsn_orcpt);
		}
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

/* queue show --json, queue trace --json: one object. */

static void
json_message(void *arg, const struct queue_message_view *m)
{
	struct json_writer *w = arg;

	json_key(w, "id");
	json_string(w, m->id);
	json_key(w, "received");
	json_string(w, m->received);
	json_key(w, "received_at");
	json_int(w, m->received_at);
	json_key(w, "sender");
	json_string(w, m->sender);
	json_key(w, "client_ip");
	json_string(w, m->client_ip);
	json_key(w, "helo");
	json_string(w, m->helo);
	json_key(w, "protocol");
	json_string(w, m->protocol);
	json_key(w, "auth_user");
	json_string(w, m->auth_user);
	json_key(w, "size");
	json_int(w, m->size);
	json_key(w, "body_8bitmime");
	json_bool(w, m->body_8bitmime);
	json_key(w, "smtputf8");
	json_bool(w, m->smtputf8);
	json_key(w, "message_id");
	json_string(w, m->message_id);
	json_key(w, "subject");
	json_string(w, m->subject);
	json_key(w, "dsn_ret");
	json_string(w, m->dsn_ret);
	json_key(w, "dsn_envid");
	json_string(w, m->dsn_envid);
}

static void
json_recipient(void *arg, const struct queue_rcpt_view *r)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_key(w, "address");
	json_string(w, r->address);
	json_key(w, "route");
	json_string(w, r->route);
	json_key(w, "action");
	json_string(w, r->action);
	json_key(w, "params");
	json_string(w, r->params);
	json_key(w, "state");
	json_string(w, r->state);
	json_key(w, "attempts");
	json_int(w, r->attempts);
	json_key(w, "next_attempt");
	json_string(w, r->next_attempt);
	json_key(w, "last_attempt");
	json_string(w, r->last_attempt);
	json_key(w, "last_reply");
	json_string(w, r->last_reply);
	json_key(w, "destination");
	json_string(w, r->destination);
	json_key(w, "dsn_notify");
	json_string(w, r->dsn_notify);
	json_key(w, "dsn_orcpt");
	json_string(w, r->dsn_orcpt);
	json_end_object(w);
}

static void
json_event(void *arg, const struct queue_event_view *e)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_key(w, "time");
	json_string(w, e->time);
	json_key(w, "kind");
	json_string(w, e->kind);
	json_key(w, "recipient");
	json_string(w, e->recipient);
	json_key(w, "detail");
	json_string(w, e->detail);
	json_end_object(w);
}

/* The message, its recipients and history as one JSON object;
 * in_queue: "in_queue" (trace: false when only its history is left). */
static int
show_json(struct ctl *ctl, const char *id, int in_queue)
{
	struct json_writer w;
	struct buf b;
	int r, rc = 0;

	buf_init(&b);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	if (in_queue >= 0) {
		json_key(&w, "in_queue");
		json_bool(&w, in_queue != 0);
	}
	r = queue_db_show_message(ctl->db, id, json_message, &w);
	if (r == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue\n", id);
		rc = 1;
	} else if (r < 0) {
		rc = query_failed(ctl, "queue show");
	} else {
		json_key(&w, "recipients");
		json_begin_array(&w);
		if (queue_db_show_recipients(ctl->db, id, json_recipient,
		    &w) < 0)
			rc = query_failed(ctl, "recipients");
		json_end_array(&w);
		json_key(&w, "history");
		json_begin_array(&w);
		if (rc == 0 && queue_db_show_history(ctl->db, id, json_event,
		    &w) < 0)
			rc = query_failed(ctl, "history");
		json_end_array(&w);
		json_end_object(&w);
		if (rc == 0)
			put_json(&b);
	}
	buf_free(&b);
	return rc;
}

/* A queue id argument, or 1 (said). */
static int
id_argument(const char *id)
{
	if (queue_id_valid(id))
		return 0;
	fprintf(stderr, "mxgatectl: no message ");
	put_safe_n(stderr, id, strnlen(id, 64), SAFE_LINE);
	fprintf(stderr, " in the queue (not a queue id)\n");
	return 1;
}

static int
cmd_queue_show(struct ctl *ctl, int argc, char **argv)
{
	const char *id = NULL;
	bool body = false, json = false;
	int i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--body") == 0 && !json)
			body = true;
		else if (strcmp(argv[i], "--json") == 0 && !body)
			json = true;
		else if (argv[i][0] == '-' || id != NULL)
			return cmd_usage(ctl->cmd);
		else
			id = argv[i];
	}
	if (id == NULL)
		return cmd_usage(ctl->cmd);
	if (id_argument(id) != 0)
		return 1;
	if (json)
		return show_json(ctl, id, -1);
	if (show_message(ctl, id) != 0 || show_recipients(ctl, id) != 0 ||
	    show_history(ctl, id) != 0 || show_content(ctl, id, body) != 0)
		return 1;
	return 0;
}

/* queue trace */

static int
cmd_queue_trace(struct ctl *ctl, int argc, char **argv)
{
	const char *id = NULL;
	bool json = false;
	int i, where;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] == '-' || id != NULL)
			return cmd_usage(ctl->cmd);
		else
			id = argv[i];
	}
	if (id == NULL)
		return cmd_usage(ctl->cmd);
	if (id_argument(id) != 0)
		return 1;
	if ((where = queue_db_message_where(ctl->db, id)) < 0)
		return query_failed(ctl, "queue trace");
	if (where == 0) {
		fprintf(stderr, "mxgatectl: no message %s in the queue nor in"
		    " its history (queue.keep_history)\n", id);
		return 1;
	}
	queue_db_use_history(ctl->db, where == 2);
	if (json)
		return show_json(ctl, id, where == 1);
	printf("%s\n\n", where == 1 ? "in the queue" : "no longer in the"
	    " queue: its history");
	if (show_message(ctl, id) != 0 || show_recipients(ctl, id) != 0 ||
	    show_history(ctl, id) != 0)
		return 1;
	return 0;
}

/* Queue management.  Each command is one short write transaction; the
 * daemon's scheduler reads the due recipients again every second, so a
 * change takes effect without telling it anything.  Each names the
 * operator in the history rows it writes. */

static int
rollback_fail(struct ctl *ctl, const char *what)
{
	query_failed(ctl, what);
	queue_db_admin_rollback(ctl->db);
	return 1;
}

/* "by mxgatectl uid=0 user=root": who did it, for the history. */
static const char *
operator_words(void)
{
	static char words[128];
	struct passwd *pw;
	uid_t uid = getuid();

	if (words[0] == '\0') {
		pw = getpwuid(uid);
		snprintf(words, sizeof(words), "by mxgatectl uid=%u%s%s",
		    (unsigned)uid, pw != NULL ? " user=" : "",
		    pw != NULL ? pw->pw_name : "");
	}
	return words;
}

/*
 * An operator's action is logged where the daemon logs (audit.h), in
 * its log_format when the configuration was read: the one message
 * named, or what the command's arguments selected.
 */
static void
audit(struct ctl *ctl, const char *action, const struct ctl_select *sel,
    int argc, char **argv, long long nmsgs, long long nrcpts,
    const char *detail)
{
	struct buf args;
	bool one = sel != NULL && sel->nids == 1 && !sel->all &&
	    !sel->any_filter;

	buf_init(&args);
	for (int i = 0; !one && i < argc; i++)
		buf_appendf(&args, "%s%s", i > 0 ? " " : "", argv[i]);
	audit_init(ctl->conf != NULL ? ctl->conf->log_format : NULL);
	audit_log(action, one ? sel->ids[0] : NULL, nmsgs, nrcpts,
	    one ? NULL : args.data != NULL ? args.data : "", detail);
	buf_free(&args);
}

/* The selection of an action command: 0, or the exit status. */
static int
action_select(struct ctl *ctl, struct ctl_select *sel, int argc, char **argv)
{
	size_t i, missing = 0;
	int r;

	if ((r = ctl_select_parse(sel, argc, argv, SEL_IDS | SEL_ALL)) < 0 ||
	    sel->nrest > 0) {
		ctl_select_free(sel);
		return r == -2 ? 1 : cmd_usage(ctl->cmd);
	}
	/* IDs named must all be there: a typo acts on nothing. */
	for (i = 0; i < sel->nids; i++) {
		if ((r = queue_db_message_exists(ctl->db, sel->ids[i])) < 0) {
			ctl_select_free(sel);
			return query_failed(ctl, "queue");
		}
		if (r == 0 && missing++ < 10)
			fprintf(stderr, "mxgatectl: no message %s in the queue\n",
			    sel->ids[i]);
	}
	if (missing > 0) {
		fprintf(stderr, "mxgatectl: %zu of the messages named %s not"
		    " in the queue: nothing done\n", missing, missing == 1 ?
		    "is" : "are");
		ctl_select_free(sel);
		return 1;
	}
	if (ctl_select_load(sel, ctl->db) < 0) {
		ctl_select_free(sel);
		return query_failed(ctl, "queue");
	}
	return 0;
}

/* Change the selected recipients; say how many. */
static int
change_selected(struct ctl *ctl, int argc, char **argv,
    enum queue_change change, const char *action, const char *what)
{
	struct ctl_select sel;
	long long nrcpts = 0, nmsgs = 0;
	int rc;

	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	if (queue_db_change_selected(ctl->db, &sel.q, change,
	    (int64_t)time(NULL), operator_words(), &nrcpts, &nmsgs) < 0)
		rc = query_failed(ctl, what);
	else {
		audit(ctl, action, &sel, argc, argv, nmsgs, nrcpts, NULL);
		printf("%s: %lld recipient%s of %lld message%s\n", what, nrcpts,
		    nrcpts == 1 ? "" : "s", nmsgs, nmsgs == 1 ? "" : "s");
	}
	ctl_select_free(&sel);
	return rc;
}

static int
cmd_queue_retry(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_RETRY, "retry",
	    "due now");
}

static int
cmd_queue_hold(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_HOLD, "hold",
	    "held");
}

static int
cmd_queue_release(struct ctl *ctl, int argc, char **argv)
{
	return change_selected(ctl, argc, argv, QUEUE_CHANGE_RELEASE,
	    "release", "released, due now");
}

static int
cmd_queue_delete(struct ctl *ctl, int argc, char **argv)
{
	struct ctl_select sel;
	long long n = 0;
	int rc;

	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	if (queue_db_delete_selected(ctl->db, &sel.q, (int64_t)time(NULL),
	    operator_words(), &n) < 0)
		rc = query_failed(ctl, "queue delete");
	else {
		audit(ctl, "delete", &sel, argc, argv, n, -1, NULL);
		printf("deleted: %lld message%s\n", n, n == 1 ? "" : "s");
	}
	ctl_select_free(&sel);
	return rc;
}

/* queue bounce */

struct bounce_rows {
	int64_t *ids;
	struct bounce_rcpt *rcpts;
	char   **replies;
	unsigned *notify;
	size_t   n;
};

static void
bounce_rows_free(struct bounce_rows *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free((char *)b->rcpts[i].address);
		free((char *)b->rcpts[i].orcpt);
		free(b->replies[i]);
	}
	free(b->ids);
	free(b->rcpts);
	free(b->replies);
	free(b->notify);
}

/* One recipient to bounce, with its reply (taken). */
static void
bounce_push(struct bounce_rows *b, const struct queue_pending_rcpt *p,
    char *reply)
{
	b->ids = xrealloc(b->ids, (b->n + 1) * sizeof(*b->ids));
	b->rcpts = xrealloc(b->rcpts, (b->n + 1) * sizeof(*b->rcpts));
	b->replies = xrealloc(b->replies, (b->n + 1) * sizeof(*b->replies));
	b->notify = xrealloc(b->notify, (b->n + 1) * sizeof(*b->notify));
	memset(&b->rcpts[b->n], 0, sizeof(b->rcpts[b->n]));
	b->ids[b->n] = p->id;
	b->rcpts[b->n].address = xstrdup(p->address);
	b->rcpts[b->n].orcpt = p->dsn_orcpt != NULL ?
	    xstrdup(p->dsn_orcpt) : NULL;
	b->replies[b->n] = reply;
	b->rcpts[b->n].reply = b->replies[b->n];
	b->rcpts[b->n].last_attempt_at = p->last_attempt_at;
	b->notify[b->n] = p->dsn_notify;
	b->n++;
}

static void
bounce_add(void *arg, const struct queue_pending_rcpt *p)
{
	const char *last = p->last_reply;
	char *reply;

	xasprintf(&reply, "554 5.0.0 returned to the sender"
	    " by the postmaster%s%s%s", last != NULL ? " (last error: " :
	    "", last != NULL ? last : "", last != NULL ? ")" : "");
	bounce_push(arg, p, reply);
}

struct bounce_send {
	struct ctl         *ctl;
	const char         *id;
	struct bounce_rows *rows;
	long long           now;
	char               *dsn;
	const char         *why;        /* when there is no DSN */
};

/* The DSN lists the recipients whose NOTIFY asks for failures (RFC
 * 3461 4.1; none given: they do), as the scheduler's do. */
static int
bounce_write(void *arg, const struct queue_bounce_source *src)
{
	struct bounce_send *bs = arg;
	struct bounce_report r;
	struct bounce_rcpt *wanted;
	size_t n = 0;
	int rc;

	wanted = xcalloc(bs->rows->n + 1, sizeof(*wanted));
	for (size_t i = 0; i < bs->rows->n; i++)
		if (dsn_wants_failure(bs->rows->notify[i]))
			wanted[n++] = bs->rows->rcpts[i];
	bs->dsn[0] = '\0';
	if (n == 0) {
		bs->why = "NOTIFY=NEVER";
		free(wanted);
		return 0;
	}
	memset(&r, 0, sizeof(r));
	r.kind = BOUNCE_FAILED;
	r.queue_id = bs->id;
	r.sender = src->sender;
	r.received_at = src->received_at;
	r.reporting_mta = bs->ctl->conf->hostname;
	r.headers = src->content != NULL ? src->content : "";
	r.headers_len = src->content != NULL ?
	    bounce_header_len(src->content, src->len) : 0;
	if (src->dsn_ret == DSN_RET_FULL && src->content != NULL) {
		r.content = src->content;
		r.content_len = src->len;
	}
	r.envid = src->dsn_envid;
	r.rcpts = wanted;
	r.nrcpts = n;
	rc = bounce_queue(bs->ctl->db, &r, bs->ctl->conf->bounce_upstream,
	    bs->now, bs->dsn);
	if (rc == 1) {
		bs->dsn[0] = '\0';
		rc = 0;
	}
	free(wanted);
	return rc;
}

/* The DSN: 0 with its id ("" for none: *why says why), -1 on failure. */
static int
bounce_send(struct ctl *ctl, const char *id, struct bounce_rows *b,
    long long now, char dsn[QUEUE_ID_LEN + 1], const char **why)
{
	struct bounce_send bs = { ctl, id, b, now, dsn, "null sender" };
	int rc;

	dsn[0] = '\0';
	rc = queue_db_bounce_source(ctl->db, id, bounce_write, &bs) < 0 ?
	    -1 : 0;
	*why = bs.why;
	return rc;
}

static int
bounce_mark(struct ctl *ctl, struct bounce_rows *b, const char *dsn,
    long long now)
{
	char detail[256];

	for (size_t i = 0; i < b->n; i++) {
		/* As the scheduler writes it: who is not in the DSN, why. */
		bool in_dsn = dsn[0] != '\0' &&
		    dsn_wants_failure(b->notify[i]);

		snprintf(detail, sizeof(detail), "%s dsn=%s%s",
		    operator_words(), in_dsn ? dsn : "none",
		    dsn_wants_failure(b->notify[i]) ? "" : " notify=NEVER");
		if (queue_db_mark_bounced(ctl->db, b->ids[i], b->replies[i],
		    detail, now) < 0)
			return -1;
	}
	return 0;
}

/* Bounce the pending recipients of one message, in a transaction of
 * its own: 1 bounced, 0 nothing to bounce, -1 failed (said). */
static int
bounce_one(struct ctl *ctl, const char *id, long long now, size_t *nrcpts,
    size_t *ndsn)
{
	struct bounce_rows b;
	char dsn[QUEUE_ID_LEN + 1];
	const char *why = NULL;

	memset(&b, 0, sizeof(b));
	if (queue_db_admin_begin(ctl->db) == -1)
		return query_failed(ctl, "queue bounce"), -1;
	if (queue_db_pending_rcpts(ctl->db, id, bounce_add, &b) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce"), -1;
	}
	if (b.n == 0) {
		queue_db_admin_rollback(ctl->db);
		return 0;
	}
	/* As the scheduler does once every recipient is final. */
	if (bounce_send(ctl, id, &b, now, dsn, &why) == -1 ||
	    bounce_mark(ctl, &b, dsn, now) == -1 ||
	    queue_db_retire_if_final(ctl->db, id,
	    ctl->conf->keep_delivered != 0) == -1 ||
	    queue_db_admin_commit(ctl->db) == -1) {
		bounce_rows_free(&b);
		return rollback_fail(ctl, "queue bounce"), -1;
	}
	{
		/* One record per message: each queued its own DSN. */
		char detail[QUEUE_ID_LEN + 8];

		snprintf(detail, sizeof(detail), "dsn=%s",
		    dsn[0] != '\0' ? dsn : "none");
		audit_init(ctl->conf != NULL ? ctl->conf->log_format : NULL);
		audit_log("bounce", id, 1, (long long)b.n, NULL, detail);
	}
	*nrcpts += b.n;
	if (dsn[0] != '\0')
		(*ndsn)++;
	printf("%s: bounced %zu recipient%s, ", id, b.n, b.n == 1 ? "" : "s");
	if (dsn[0] != '\0')
		printf("DSN %s queued\n", dsn);
	else
		printf("no DSN (%s)\n", why);
	bounce_rows_free(&b);
	return 1;
}

struct id_list {
	char  **ids;
	size_t  n;
};

static void
id_add(void *arg, const char *id)
{
	struct id_list *l = arg;

	l->ids = xrealloc(l->ids, (l->n + 1) * sizeof(*l->ids));
	l->ids[l->n++] = xstrdup(id);
}

static void
id_list_free(struct id_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->ids[i]);
	free(l->ids);
}

static int
cmd_queue_bounce(struct ctl *ctl, int argc, char **argv)
{
	long long now = (long long)time(NULL);
	struct ctl_select sel;
	struct id_list l = { NULL, 0 };
	size_t i, nmsgs = 0, nrcpts = 0, ndsn = 0;
	int rc, r = 0;

	if (load_config(ctl) == -1)
		return 1;
	if ((rc = action_select(ctl, &sel, argc, argv)) != 0)
		return rc;
	/* Retiring the message is the scheduler's statement. */
	if (queue_db_delivery_init(ctl->db) == -1) {
		ctl_select_free(&sel);
		return 1;
	}
	if (queue_db_selected_messages(ctl->db, &sel.q, id_add, &l) < 0)
		rc = query_failed(ctl, "queue bounce");
	for (i = 0; rc == 0 && i < l.n && r >= 0; i++)
		if ((r = bounce_one(ctl, l.ids[i], now, &nrcpts, &ndsn)) > 0)
			nmsgs++;
	if (r < 0)
		rc = 1;
	if (rc == 0)
		printf("bounced: %zu recipient%s of %zu message%s, %zu DSN%s"
		    " queued\n", nrcpts, nrcpts == 1 ? "" : "s", nmsgs,
		    nmsgs == 1 ? "" : "s", ndsn, ndsn == 1 ? "" : "s");
	id_list_free(&l);
	ctl_select_free(&sel);
	return rc;
}

/* queue reroute: queue_reroute.h.  With --bounce-refused, the
 * recipients the routes refuse now are bounced here, a DSN per message,
 * inside the reroute's transaction. */

struct refused {
	struct ctl         *ctl;
	char                msgid[QUEUE_ID_LEN + 1];
	int64_t            *ids;            /* of msgid, refused now */
	char              **replies;
	size_t              n;
	struct bounce_rows  rows;
	long long           now;
};

static void
refused_clear(struct refused *rf)
{
	for (size_t i = 0; i < rf->n; i++)
		free(rf->replies[i]);
	free(rf->ids);
	free(rf->replies);
	rf->ids = NULL;
	rf->replies = NULL;
	rf->n = 0;
	bounce_rows_free(&rf->rows);
	memset(&rf->rows, 0, sizeof(rf->rows));
}

/* The message's pending recipients that are refused now, with their
 * DSN parameters (NOTIFY, ORCPT) as queue bounce takes them. */
static void
refused_pick(void *arg, const struct queue_pending_rcpt *p)
{
	struct refused *rf = arg;

	for (size_t i = 0; i < rf->n; i++)
		if (rf->ids[i] == p->id)
			bounce_push(&rf->rows, p, xstrdup(rf->replies[i]));
}

/* Bounce what was gathered for one message: 0 or -1. */
static int
refused_flush(void *arg)
{
	struct refused *rf = arg;
	char dsn[QUEUE_ID_LEN + 1];
	const char *why = NULL;
	int rc = 0;

	if (rf->n == 0)
		return 0;
	if (queue_db_pending_rcpts(rf->ctl->db, rf->msgid, refused_pick,
	    rf) == -1)
		rc = -1;
	else if (rf->rows.n > 0 &&
	    (bounce_send(rf->ctl, rf->msgid, &rf->rows, rf->now, dsn,
	    &why) == -1 ||
	    bounce_mark(rf->ctl, &rf->rows, dsn, rf->now) == -1 ||
	    queue_db_retire_if_final(rf->ctl->db, rf->msgid,
	    rf->ctl->conf->keep_delivered != 0) == -1))
		rc = -1;
	else if (rf->rows.n > 0 && dsn[0] != '\0')
		printf("%s: bounced %zu recipient%s, DSN %s queued\n",
		    rf->msgid, rf->rows.n, rf->rows.n == 1 ? "" : "s", dsn);
	else if (rf->rows.n > 0)
		printf("%s: bounced %zu recipient%s, no DSN (%s)\n",
		    rf->msgid, rf->rows.n, rf->rows.n == 1 ? "" : "s",
		    why != NULL ? why : "none");
	refused_clear(rf);
	return rc;
}

static int
refused_add(void *arg, const char *msgid, int64_t rcpt_id,
    const char *address, int code, const char *text)
{
	struct refused *rf = arg;

	(void)address;
	if (strcmp(rf->msgid, msgid) != 0 && refused_flush(rf) == -1)
		return -1;
	snprintf(rf->msgid, sizeof(rf->msgid), "%s", msgid);
	rf->ids = xrealloc(rf->ids, (rf->n + 1) * sizeof(*rf->ids));
	rf->replies = xrealloc(rf->replies, (rf->n + 1) *
	    sizeof(*rf->replies));
	rf->ids[rf->n] = rcpt_id;
	xasprintf(&rf->replies[rf->n], "%d %s", code, text);
	rf->n++;
	return 0;
}

static int
cmd_queue_reroute(struct ctl *ctl, int argc, char **argv)
{
	struct refused rf;
	struct reroute_bounce rb = { refused_add, refused_flush, &rf };
	struct reroute_done done;
	int rc;

	if (load_config(ctl) == -1)
		return 1;
	memset(&rf, 0, sizeof(rf));
	rf.ctl = ctl;
	rf.now = (long long)time(NULL);
	/* Retiring a message is the scheduler's statement. */
	if (queue_db_delivery_init(ctl->db) == -1)
		return 1;
	rc = queue_reroute_main(ctl->conf, ctl->db, operator_words(), &rb,
	    argc, argv, &done);
	refused_clear(&rf);
	if (rc == 0 && (done.recipients > 0 || done.bounced > 0)) {
		char detail[64];

		snprintf(detail, sizeof(detail), "bounced=%lld", done.bounced);
		audit(ctl, "reroute", NULL, argc, argv, done.messages,
		    done.recipients, done.bounced > 0 ? detail : NULL);
	}
	return rc;
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

static void
json_state(void *arg, const char *state, int64_t recipients, int64_t messages)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_key(w, "state");
	json_string(w, state);
	json_key(w, "recipients");
	json_int(w, recipients);
	json_key(w, "messages");
	json_int(w, messages);
	json_end_object(w);
}

static void
json_oldest(void *arg, int64_t messages, const char *id, const char *received,
    int64_t received_at)
{
	struct json_writer *w = arg;

	json_key(w, "messages");
	json_int(w, messages);
	json_key(w, "oldest_pending");
	json_begin_object(w);
	json_key(w, "id");
	json_string(w, id);
	json_key(w, "received");
	json_string(w, received);
	json_key(w, "age");
	json_int(w, (long long)time(NULL) - (long long)received_at);
	json_end_object(w);
}

static void
json_destination(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_key(w, "destination");
	json_stringn(w, dest, len);
	json_key(w, "delivered");
	json_int(w, delivered);
	json_key(w, "deferred");
	json_int(w, deferred);
	json_key(w, "bounced");
	json_int(w, bounced);
	json_key(w, "pending");
	json_int(w, pending);
	json_end_object(w);
}

static int
stats_json(struct ctl *ctl)
{
	struct json_writer w;
	struct buf b;
	int r, rc = -1;

	buf_init(&b);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	json_key(&w, "states");
	json_begin_array(&w);
	if (queue_db_stats_states(ctl->db, json_state, &w) < 0)
		goto done;
	json_end_array(&w);
	if ((r = queue_db_stats_oldest(ctl->db, json_oldest, &w)) < 0)
		goto done;
	if (r == 0) {
		json_key(&w, "messages");
		json_int(&w, 0);
		json_key(&w, "oldest_pending");
		json_null(&w);
	}
	json_key(&w, "destinations");
	json_begin_array(&w);
	if (queue_db_stats_destinations(ctl->db, json_destination, &w) < 0)
		goto done;
	json_end_array(&w);
	json_end_object(&w);
	put_json(&b);
	rc = 0;
done:
	buf_free(&b);
	return rc;
}

static int
cmd_queue_stats(struct ctl *ctl, int argc, char **argv)
{
	bool json = argc == 1 && strcmp(argv[0], "--json") == 0;

	if (argc > 0 && !json)
		return cmd_usage(ctl->cmd);
	/* One read transaction: the three parts agree. */
	if (queue_db_read_begin(ctl->db) == -1)
		return query_failed(ctl, "queue stats");
	if ((json ? stats_json(ctl) : stats_all(ctl)) == -1) {
		query_failed(ctl, "queue stats");
		queue_db_admin_rollback(ctl->db);
		return 1;
	}
	queue_db_admin_commit(ctl->db);
	return 0;
}

/* tls-report: RFC 8460's daily report, from tls_results. */
static int
cmd_tls_report(struct ctl *ctl, int argc, char **argv)
{
	char day[16], host[256];
	const char *domain = NULL;
	time_t t = time(NULL) - 86400;
	struct tm tm;
	int i, n;

	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--date") == 0 && i + 1 < argc) {
			memset(&tm, 0, sizeof(tm));
			if (strlen(argv[i + 1]) != 10 || strptime(argv[i + 1],
			    "%Y-%m-%d", &tm) == NULL) {
				fprintf(stderr, "mxgatectl: tls-report: --date"
				    " wants YYYY-MM-DD (got \"%s\")\n",
				    argv[i + 1]);
				return EXIT_USAGE;
			}
			snprintf(day, sizeof(day), "%s", argv[++i]);
		} else if (argv[i][0] != '-' && domain == NULL) {
			domain = argv[i];
		} else {
			return cmd_usage(ctl->cmd);
		}
	}
	if (ctl->conf != NULL && ctl->conf->hostname != NULL)
		snprintf(host, sizeof(host), "%s", ctl->conf->hostname);
	else if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if ((n = tls_report_print(ctl->db, day, domain, host, stdout)) < 0)
		return query_failed(ctl, "tls-report");
	if (n == 0) {
		fprintf(stderr, "mxgatectl: tls-report: no TLS sessions"
		    " recorded on %s%s%s\n", day, domain != NULL ? " for " : "",
		    domain != NULL ? domain : "");
		return 1;
	}
	return 0;
}

/* queue shape: Postfix's qshape, from the queue database. */

#define SHAPE_BUCKETS_MAX 16

struct shape {
	struct json_writer w;
	struct buf         b;
	bool               json;
	size_t             nbounds;
	int64_t            total[SHAPE_BUCKETS_MAX + 2];   /* as counts */
};

/* "5m" for 300: the bucket's bound as given. */
static void
fmt_age(char *out, size_t size, int64_t v)
{
	if (v % 86400 == 0)
		snprintf(out, size, "%lldd", (long long)(v / 86400));
	else if (v % 3600 == 0)
		snprintf(out, size, "%lldh", (long long)(v / 3600));
	else if (v % 60 == 0)
		snprintf(out, size, "%lldm", (long long)(v / 60));
	else
		snprintf(out, size, "%llds", (long long)v);
}

static void
shape_row(void *arg, const char *dest, size_t len, const int64_t *counts)
{
	struct shape *sh = arg;
	size_t i;

	sh->total[0] += counts[0];
	for (i = 0; i <= sh->nbounds; i++)
		sh->total[i + 1] += counts[i + 1];
	if (sh->json) {
		json_begin_object(&sh->w);
		json_key(&sh->w, "destination");
		json_stringn(&sh->w, dest, len);
		json_key(&sh->w, "total");
		json_int(&sh->w, counts[0]);
		json_key(&sh->w, "buckets");
		json_begin_array(&sh->w);
		for (i = 0; i <= sh->nbounds; i++)
			json_int(&sh->w, counts[i + 1]);
		json_end_array(&sh->w);
		json_end_object(&sh->w);
		return;
	}
	put_safe_n(stdout, dest, len, SAFE_LINE);
	printf("%*s %6lld", len < 32 ? 32 - (int)len : 0, "",
	    (long long)counts[0]);
	for (i = 0; i <= sh->nbounds; i++)
		printf(" %6lld", (long long)counts[i + 1]);
	putchar('\n');
}

/* "5m,10m,..." into bounds (increasing); their number, or -1 (said). */
static int
parse_buckets(const char *list, int64_t *bounds)
{
	char *copy = xstrdup(list), *tok, *save = NULL;
	long long v;
	int n = 0;

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (n == SHAPE_BUCKETS_MAX || (v = ctl_parse_duration(tok)) <= 0 ||
		    (n > 0 && v <= bounds[n - 1])) {
			fprintf(stderr, "mxgatectl: --buckets: up to %d"
			    " increasing durations, comma-separated (5m,1h,1d)\n",
			    SHAPE_BUCKETS_MAX);
			free(copy);
			return -1;
		}
		bounds[n++] = v;
	}
	free(copy);
	return n;
}

static void
shape_header(struct shape *sh, const int64_t *bounds)
{
	char age[24];

	if (sh->json) {
		json_begin_object(&sh->w);
		json_key(&sh->w, "buckets");
		json_begin_array(&sh->w);
		for (size_t i = 0; i < sh->nbounds; i++) {
			fmt_age(age, sizeof(age), bounds[i]);
			json_string(&sh->w, age);
		}
		json_string(&sh->w, "older");
		json_end_array(&sh->w);
		json_key(&sh->w, "destinations");
		json_begin_array(&sh->w);
		return;
	}
	printf("%-32s %6s", "DESTINATION", "TOTAL");
	for (size_t i = 0; i < sh->nbounds; i++) {
		fmt_age(age, sizeof(age), bounds[i]);
		printf(" %6s", age);
	}
	fmt_age(age, sizeof(age), bounds[sh->nbounds - 1]);
	printf(" %5s+\n", age);
}

static void
shape_footer(struct shape *sh)
{
	size_t i;

	if (sh->json) {
		json_end_array(&sh->w);
		json_key(&sh->w, "total");
		json_int(&sh->w, sh->total[0]);
		json_end_object(&sh->w);
		put_json(&sh->b);
		return;
	}
	printf("%-32s %6lld", "TOTAL", (long long)sh->total[0]);
	for (i = 0; i <= sh->nbounds; i++)
		printf(" %6lld", (long long)sh->total[i + 1]);
	putchar('\n');
}

static int
cmd_queue_shape(struct ctl *ctl, int argc, char **argv)
{
	int64_t bounds[SHAPE_BUCKETS_MAX];
	struct ctl_select sel;
	struct shape sh;
	int n = -1, rc = 0;

	if ((rc = ctl_select_parse(&sel, argc, argv, SEL_FILTERS |
	    SEL_JSON)) < 0) {
		ctl_select_free(&sel);
		return rc == -2 ? 1 : cmd_usage(ctl->cmd);
	}
	if (sel.nrest == 0)
		n = parse_buckets("5m,10m,20m,40m,80m,160m,320m,640m", bounds);
	else if (sel.nrest == 2 && strcmp(sel.rest[0], "--buckets") == 0)
		n = parse_buckets(sel.rest[1], bounds);
	if (n <= 0) {
		ctl_select_free(&sel);
		return n < 0 ? EXIT_USAGE : cmd_usage(ctl->cmd);
	}
	memset(&sh, 0, sizeof(sh));
	sh.json = sel.json;
	sh.nbounds = (size_t)n;
	buf_init(&sh.b);
	json_writer_init(&sh.w, &sh.b);
	shape_header(&sh, bounds);
	if (queue_db_shape(ctl->db, &sel.q, (int64_t)time(NULL), bounds,
	    sh.nbounds, shape_row, &sh) < 0)
		rc = query_failed(ctl, "queue shape");
	else
		shape_footer(&sh);
	buf_free(&sh.b);
	ctl_select_free(&sel);
	return rc;
}

/* config: config.h, config_write_effective(). */
static int
cmd_config(struct ctl *ctl, int argc, char **argv)
{
	bool changed_only = argc == 1 && strcmp(argv[0], "-d") == 0;

	if (argc > 0 && !changed_only)
		return cmd_usage(ctl->cmd);
	return config_write_effective(stdout, ctl->conf, changed_only) < 0 ?
	    1 : 0;
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

/* The master's reload counter and outcome, from its title ("mxgated:
 * master (reload N loaded|refused)", master.c): -1 when pid is not an
 * mxgated master. */
static int
master_reloads(pid_t pid, bool *loaded)
{
	char path[64], title[256];
	unsigned n = 0;
	size_t len;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	len = fread(title, 1, sizeof(title) - 1, fp);
	fclose(fp);
	title[len] = '\0';
	if (strncmp(title, "mxgated: master", 15) != 0)
		return -1;
	*loaded = strstr(title, " loaded)") != NULL;
	if (sscanf(title, "mxgated: master (reload %u", &n) != 1)
		n = 0;
	return (int)n;
}

static int
cmd_reload(struct ctl *ctl, int argc, char **argv)
{
	char line[32];
	long pid = 0;
	bool loaded = false;
	int before, now = -1;
	FILE *fp;

	(void)argc;
	(void)argv;
	if (ctl->conf->pid_file == NULL) {
		fprintf(stderr, "mxgatectl: %s has no server.pid_file: send"
		    " SIGHUP to the mxgated master process yourself\n",
		    ctl->conf->path);
		return 1;
	}
	if ((fp = fopen(ctl->conf->pid_file, "r")) == NULL ||
	    fgets(line, sizeof(line), fp) == NULL ||
	    (pid = strtol(line, NULL, 10)) <= 1) {
		fprintf(stderr, "mxgatectl: server.pid_file %s: %s; is mxgated"
		    " running?\n", ctl->conf->pid_file, fp == NULL ?
		    strerror(errno) : "no process id in it");
		if (fp != NULL)
			fclose(fp);
		return 1;
	}
	fclose(fp);
	if ((before = master_reloads((pid_t)pid, &loaded)) < 0) {
		fprintf(stderr, "mxgatectl: process %ld (server.pid_file %s) is"
		    " not an mxgated master: is mxgated running?\n", pid,
		    ctl->conf->pid_file);
		return 1;
	}
	if (kill((pid_t)pid, SIGHUP) < 0) {
		fprintf(stderr, "mxgatectl: kill -HUP %ld: %s\n", pid,
		    strerror(errno));
		return 1;
	}
	/* The checks fork a process per role, certificates load: seconds
	 * at most. */
	for (int i = 0; i < 600; i++) {
		if ((now = master_reloads((pid_t)pid, &loaded)) != before)
			break;
		usleep(50 * 1000);
	}
	if (now == before) {
		fprintf(stderr, "mxgatectl: mxgated %ld has not answered the"
		    " reload within 30 s: see its log\n", pid);
		return 1;
	}
	if (now < 0) {
		fprintf(stderr, "mxgatectl: mxgated %ld has gone\n", pid);
		return 1;
	}
	if (!loaded) {
		fprintf(stderr, "mxgatectl: mxgated %ld refused %s: nothing"
		    " changed; its log says why\n", pid, ctl->conf->path);
		return 1;
	}
	printf("mxgated %ld: %s loaded; new sessions use it\n", pid,
	    ctl->conf->path);
	return 0;
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
