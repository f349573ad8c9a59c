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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "queue_db.h"
#include "route_test.h"
#include "util.h"

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
static int cmd_route_test(struct ctl *, int, char **);
static int cmd_passwd(struct ctl *, int, char **);
static int load_config(struct ctl *);

/*
 * The commands.  Still to come: queue retry/hold/release/delete/bounce
 * (NEEDS_QUEUE_RW), queue stats.
 */
static const struct command commands[] = {
	{ "queue", "list", "", "list the messages in the queue",
	  0, 0, NEEDS_QUEUE_RO, cmd_queue_list },
	{ "queue", "show", "ID [--body]",
	  "envelope, recipients, history, headers (or all)",
	  1, 2, NEEDS_QUEUE_RO, cmd_queue_show },
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

static int
cmd_queue_list(struct ctl *ctl, int argc, char **argv)
{
	sqlite3_stmt *st;
	long long n = 0;
	int rc;

	if (prepare(ctl, "SELECT id, received, size, sender, recipients,"
	    " states FROM message_status ORDER BY received_at, id", &st) == -1)
		return 1;
	printf("%-16s  %-19s  %9s  %-32s  %5s  %s\n", "ID", "RECEIVED (UTC)",
	    "SIZE", "SENDER", "RCPTS", "STATE");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		printf("%-16s  %-19s  %9lld  <", col_text(st, 0),
		    col_text(st, 1), (long long)sqlite3_column_int64(st, 2));
		put_safe_n(stdout, col_text(st, 3),
		    (size_t)sqlite3_column_bytes(st, 3), SAFE_LINE);
		printf(">%*s  %5lld  ", (int)(sqlite3_column_bytes(st, 3) < 30 ?
		    30 - sqlite3_column_bytes(st, 3) : 0), "",
		    (long long)sqlite3_column_int64(st, 4));
		put_safe(col_text(st, 5));
		putchar('\n');
		n++;
	}
	if (rc != SQLITE_DONE) {
		sqlite3_finalize(st);
		return query_failed(ctl, "queue list");
	}
	sqlite3_finalize(st);
	printf("%lld message%s\n", n, n == 1 ? "" : "s");
	return 0;
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
	    " message_history WHERE message_id = ?1 ORDER BY at, event_id",
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
			fprintf(stderr, "mxgatectl: %s: no content\n", id);
			return 1;
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
	if (auth_passwd_set(file, user, hash, err, sizeof(err)) == -1) {
		fprintf(stderr, "mxgatectl: %s\n", err);
		return 1;
	}
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
