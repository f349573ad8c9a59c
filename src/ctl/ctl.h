/*
 * ctl — what every mxgatectl command shares: its context (the
 * configuration and the queue, provided before it runs), its arguments'
 * parser, and the output of untrusted text.
 *
 * A command is a row of the table in mxgatectl.c; its code lives with
 * its family (ctl_show.h, ctl_action.h, ctl_report.h, ctl_admin.h) and
 * has the signature of struct command's run: 0 success, 1 failure (said
 * on stderr, with what to do next), EXIT_USAGE bad usage.
 *
 *   ctl_provide(ctl, needs)  load the configuration or open the queue, as
 *                            the command's row says; -1 (said) on failure
 *   ctl_load_config(ctl)     the configuration, once (-c, MXGATE_CONF or
 *                            the embedded default); -1 (said)
 *   ctl_args_parse(a, ...)   a command's options and other words, with
 *                            the problem in a->err (-1)
 *   ctl_select_args(...)     a queue selection (queue_select.h) for the
 *                            running command: 0, or its exit status
 *   ctl_usage(ctl)           the running command's usage: EXIT_USAGE
 *   ctl_query_failed(ctl, what)  the store's error and what to do: 1
 *   ctl_put_safe*()          untrusted text (senders, subjects, replies)
 *                            with control characters escaped, so that
 *                            it cannot drive the operator's terminal
 *   ctl_operator()           "by mxgatectl uid=0 user=root", for history
 *   ctl_audit(...)           an operator's action, to the log (audit.h)
 */
#ifndef MXGATE_CTL_H
#define MXGATE_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/config.h"
#include "common/util.h"
#include "ctl/queue_select.h"
#include "queue/queue_db.h"

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

int  ctl_provide(struct ctl *ctl, enum cmd_needs needs);
int  ctl_load_config(struct ctl *ctl);

/* "queue list" into buf. */
void ctl_command_name(const struct command *c, char *buf, size_t size);
int  ctl_usage(const struct ctl *ctl);

/*
 * A command's arguments: each option of opts anywhere (a flag, or one
 * that takes the next word as its value), the other words in words[]
 * (at most maxwords).  A word that starts with '-' and is no option is
 * an unknown option -- with dash_words, only one that starts with "--"
 * (a recipient may start with '-').  -1 with err set: "unknown option
 * --x", "--from needs a value", "one WORD only (got A and B)" (word
 * names what the words are; NULL: "too many arguments").
 */
struct ctl_opt {
	const char  *name;              /* "--json" */
	bool        *flag;              /* a flag: set */
	const char **value;             /* or: the next word */
};
#define CTL_OPT_END { NULL, NULL, NULL }

struct ctl_args {
	const struct ctl_opt *opts;     /* ends with a NULL name */
	const char **words;
	int          maxwords;
	int          nwords;
	const char  *word;              /* "recipient", for errors */
	bool         dash_words;
	char         err[160];
};

int  ctl_args_parse(struct ctl_args *a, int argc, char **argv);
/* Nothing but the one flag name (e.g. --json): 0, or the usage said. */
int  ctl_flag_args(struct ctl *ctl, int argc, char **argv, const char *name,
    bool *flag);

/* ctl_select_parse() for the running command, and no word left over
 * unless rest_ok: 0, or the exit status (said; sel freed). */
int  ctl_select_args(struct ctl *ctl, struct ctl_select *sel, int argc,
    char **argv, unsigned allow, bool rest_ok);

int  ctl_query_failed(struct ctl *ctl, const char *what);

enum safe_mode {
	SAFE_LINE,              /* one line: tabs and newlines become spaces */
	SAFE_BLOCK,             /* text block: keep tabs and newlines, drop CR */
};

void ctl_put_safe_n(FILE *f, const char *s, size_t len, enum safe_mode mode);
/* One line on stdout; "-" for NULL. */
void ctl_put_safe(const char *s);
/* "label:       value\n", the value escaped; "-" for NULL. */
void ctl_put_field(const char *label, const char *value);
/* A JSON document built in b, to stdout, with a newline. */
void ctl_put_json(const struct buf *b);

const char *ctl_operator(void);
/* The one message named (sel), else the command's arguments, with what
 * changed (-1: unknown) and detail (NULL or short). */
void ctl_audit(struct ctl *ctl, const char *action,
    const struct ctl_select *sel, int argc, char **argv, long long nmsgs,
    long long nrcpts, const char *detail);

#endif
