/*
 * ctl — the context, arguments and output every mxgatectl command shares
 * (ctl.h).
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ctl/audit.h"
#include "ctl/ctl.h"

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
void
ctl_put_safe_n(FILE *f, const char *s, size_t len, enum safe_mode mode)
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

void
ctl_put_safe(const char *s)
{
	ctl_put_safe_n(stdout, s != NULL ? s : "-", s != NULL ? strlen(s) : 1,
	    SAFE_LINE);
}

void
ctl_put_field(const char *label, const char *value)
{
	printf("%-12s ", label);
	ctl_put_safe(value);
	putchar('\n');
}

/* The store's words, then what the operator can do about them. */
int
ctl_query_failed(struct ctl *ctl, const char *what)
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

void
ctl_put_json(const struct buf *b)
{
	fwrite(b->data, 1, b->len, stdout);
	putchar('\n');
}


void
ctl_command_name(const struct command *c, char *buf, size_t size)
{
	snprintf(buf, size, "%s%s%s", c->group, c->name != NULL ? " " : "",
	    c->name != NULL ? c->name : "");
}

int
ctl_usage(const struct ctl *ctl)
{
	char name[64];

	ctl_command_name(ctl->cmd, name, sizeof(name));
	fprintf(stderr, "usage: mxgatectl %s %s\n"
	    "(\"mxgatectl help %s\" says more)\n", name, ctl->cmd->args, name);
	return EXIT_USAGE;
}

static const struct ctl_opt *
opt_find(const struct ctl_opt *opts, const char *word)
{
	for (; opts != NULL && opts->name != NULL; opts++)
		if (strcmp(opts->name, word) == 0)
			return opts;
	return NULL;
}

static bool
looks_like_option(const struct ctl_args *a, const char *word)
{
	if (a->dash_words)
		return word[0] == '-' && word[1] == '-';
	return word[0] == '-';
}

int
ctl_args_parse(struct ctl_args *a, int argc, char **argv)
{
	const struct ctl_opt *o;

	a->nwords = 0;
	a->err[0] = '\0';
	for (int i = 0; i < argc; i++) {
		if ((o = opt_find(a->opts, argv[i])) != NULL && o->flag != NULL) {
			*o->flag = true;
		} else if (o != NULL) {
			if (++i == argc) {
				snprintf(a->err, sizeof(a->err), "%s needs a"
				    " value", argv[i - 1]);
				return -1;
			}
			*o->value = argv[i];
		} else if (looks_like_option(a, argv[i])) {
			snprintf(a->err, sizeof(a->err), "unknown option %s",
			    argv[i]);
			return -1;
		} else if (a->nwords == a->maxwords) {
			if (a->word != NULL && a->maxwords == 1)
				snprintf(a->err, sizeof(a->err), "one %s only"
				    " (got %s and %s)", a->word, a->words[0],
				    argv[i]);
			else
				snprintf(a->err, sizeof(a->err), "too many"
				    " arguments (%s)", argv[i]);
			return -1;
		} else {
			a->words[a->nwords++] = argv[i];
		}
	}
	return 0;
}

int
ctl_flag_args(struct ctl *ctl, int argc, char **argv, const char *name,
    bool *flag)
{
	struct ctl_opt opts[] = { { name, flag, NULL }, CTL_OPT_END };
	struct ctl_args a = { .opts = opts };

	return ctl_args_parse(&a, argc, argv) < 0 ? ctl_usage(ctl) : 0;
}

int
ctl_select_args(struct ctl *ctl, struct ctl_select *sel, int argc,
    char **argv, unsigned allow, bool rest_ok)
{
	int r = ctl_select_parse(sel, argc, argv, allow);

	if (r == 0 && (rest_ok || sel->nrest == 0))
		return 0;
	ctl_select_free(sel);
	return r == -2 ? 1 : ctl_usage(ctl);
}

/* "by mxgatectl uid=0 user=root": who did it, for the history. */
const char *
ctl_operator(void)
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
void
ctl_audit(struct ctl *ctl, const char *action, const struct ctl_select *sel,
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

int
ctl_load_config(struct ctl *ctl)
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
	if (ctl_load_config(ctl) == -1)
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

int
ctl_provide(struct ctl *ctl, enum cmd_needs needs)
{
	switch (needs) {
	case NEEDS_NOTHING:
		return 0;
	case NEEDS_CONFIG:
		return ctl_load_config(ctl);
	case NEEDS_QUEUE_RO:
		return open_queue(ctl, true);
	case NEEDS_QUEUE_RW:
		return open_queue(ctl, false);
	}
	return -1;
}
