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
 * Commands are rows of the table below: a command says what it needs
 * (the queue read-only or read-write, the configuration) and main()
 * provides exactly that (ctl.h) before calling it.  Their code lives by
 * family: ctl_show.c (list, show, trace), ctl_action.c (retry, hold,
 * release, delete, bounce, reroute), ctl_report.c (stats, shape,
 * tls-report), ctl_admin.c (config, route test, passwd, reload).  Every
 * error says what to do next (which option, which file), not only what
 * SQLite said.
 *
 * Everything printed from the queue comes from the network (senders,
 * subjects, replies): control characters are escaped before they reach the
 * operator's terminal.
 *
 * Exit status: 0 success, 1 failure (no such message, unreadable queue),
 * 2 bad usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "common/log.h"
#include "ctl/ctl.h"
#include "ctl/ctl_action.h"
#include "ctl/ctl_admin.h"
#include "ctl/ctl_report.h"
#include "ctl/ctl_show.h"
#include "queue/queue_db.h"

/* The commands. */
static const struct command commands[] = {
	{ "queue", "list", "[ID... | -] [FILTERS] [--json | --ids]",
	  "list the messages in the queue, with why they wait",
	  0, 64, NEEDS_QUEUE_RO, ctl_queue_list },
	{ "queue", "show", "ID [--body | --json]",
	  "envelope, recipients, history, headers (or all)",
	  1, 2, NEEDS_QUEUE_RO, ctl_queue_show },
	{ "queue", "trace", "ID [--json]",
	  "a message's whole story, also after delivery or deletion",
	  1, 2, NEEDS_QUEUE_RO, ctl_queue_trace },
	{ "queue", "shape", "[FILTERS] [--buckets LIST] [--json]",
	  "pending recipients per destination, by age",
	  0, 16, NEEDS_QUEUE_RO, ctl_queue_shape },
	{ "queue", "retry", "ID... | - | --all [FILTERS]",
	  "make queued and deferred recipients due now",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_retry },
	{ "queue", "hold", "ID... | - | --all [FILTERS]",
	  "hold pending recipients",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_hold },
	{ "queue", "release", "ID... | - | --all [FILTERS]",
	  "release held recipients, due now",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_release },
	{ "queue", "delete", "ID... | - | --all [FILTERS]",
	  "delete messages (no bounce; their history stays)",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_delete },
	{ "queue", "bounce", "ID... | - | --all [FILTERS]",
	  "bounce messages' pending recipients to the sender",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_bounce },
	{ "queue", "reroute",
	  "ID... | - | --all [FILTERS] [--dry-run] [--bounce-refused]",
	  "decide pending recipients' routes again (configuration changed)",
	  1, 64, NEEDS_QUEUE_RW, ctl_queue_reroute },
	{ "queue", "stats", "[--json]",
	  "recipients per state, oldest message, per destination",
	  0, 1, NEEDS_QUEUE_RO, ctl_queue_stats },
	{ "tls-report", NULL, "[--date YYYY-MM-DD] [DOMAIN]",
	  "the day's TLS report (RFC 8460 JSON) of the relay's sessions",
	  0, 3, NEEDS_QUEUE_RO, ctl_tls_report },
	{ "config", NULL, "[-d]",
	  "the effective configuration, defaults included (-d: changes)",
	  0, 1, NEEDS_CONFIG, ctl_config },
	{ "route", "test", "RCPT [--from S] [--ip A] [--helo H] [--auth U] "
	  "[--tls] | --script FILE",
	  "what the routes do with a recipient (route_test.h)",
	  1, 10, NEEDS_CONFIG, ctl_route_test },
	{ "passwd", NULL, "USER [--file FILE] [--sha512]",
	  "set USER's AUTH password (read from stdin) in the passwd file",
	  1, 4, NEEDS_NOTHING, ctl_passwd },
	{ "reload", NULL, "",
	  "check the configuration, have mxgated load it, say how it went",
	  0, 0, NEEDS_CONFIG, ctl_reload },
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
		ctl_command_name(&commands[i], name, sizeof(name));
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
		ctl_command_name(c, name, sizeof(name));
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
	ctl->cmd = c;
	if (nargs < c->min_args || nargs > c->max_args)
		return ctl_usage(ctl);
	if (ctl_provide(ctl, c->needs) == -1)
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
