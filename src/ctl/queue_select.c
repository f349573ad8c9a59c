/*
 * queue_select — see queue_select.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/util.h"
#include "ctl/queue_select.h"

static const char *const filter_names[3] = { "--rcpt", "--sender", "--dest" };

static int
sel_match(void *arg, int which, const char *text, size_t len)
{
	struct ctl_select *cs = arg;

	if (which < 0 || which > 2 || cs->re[which] == NULL)
		return 0;
	return pcre2_match(cs->re[which], (PCRE2_SPTR)text, len, 0, 0,
	    cs->md, NULL) >= 0;
}

static int
compile(const char *opt, const char *pattern, void **out)
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

long long
ctl_parse_duration(const char *s)
{
	static const struct { char unit; long long seconds; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
		{ 'w', 7 * 86400 },
	};
	char *end;
	long long v;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	v = strtoll(s, &end, 10);
	if (v < 0 || v > 100LL * 365 * 86400)
		return -1;
	if (*end == '\0')
		return v;
	for (size_t i = 0; i < ARRAY_LEN(units); i++)
		if (end[0] == units[i].unit && end[1] == '\0')
			return v * units[i].seconds;
	return -1;
}

static void
add_id(struct ctl_select *cs, const char *id)
{
	cs->ids = xrealloc(cs->ids, (cs->nids + 1) * sizeof(*cs->ids));
	cs->ids[cs->nids++] = xstrdup(id);
}

/* IDs from stdin, one a line; -1 (said) on a line that is no queue id. */
static int
read_ids(struct ctl_select *cs)
{
	char line[256];
	unsigned n = 0;

	while (fgets(line, sizeof(line), stdin) != NULL) {
		n++;
		line[strcspn(line, "\r\n")] = '\0';
		char *p = line + strspn(line, " \t");

		p[strcspn(p, " \t")] = '\0';
		if (p[0] == '\0' || p[0] == '#')
			continue;
		if (!queue_id_valid(p)) {
			fprintf(stderr, "mxgatectl: stdin line %u: not a queue"
			    " id\n", n);
			return -2;
		}
		add_id(cs, p);
	}
	return 0;
}

/* One option with its value at argv[*i]; 1 taken, 0 not ours, -1. */
static int
parse_filter(struct ctl_select *cs, int argc, char **argv, int *i)
{
	const char *opt = argv[*i];
	long long age;
	int which;

	for (which = 0; which < 3; which++)
		if (strcmp(opt, filter_names[which]) == 0)
			break;
	if (which == 3 && strcmp(opt, "--state") != 0 &&
	    strcmp(opt, "--older-than") != 0)
		return 0;
	if (*i + 1 >= argc) {
		fprintf(stderr, "mxgatectl: %s needs a value\n", opt);
		return -1;
	}
	const char *v = argv[++*i];

	cs->any_filter = true;
	if (which < 3) {
		if (cs->re[which] != NULL) {
			fprintf(stderr, "mxgatectl: %s given twice\n", opt);
			return -1;
		}
		return compile(opt, v, &cs->re[which]) == 0 ? 1 : -2;
	}
	if (strcmp(opt, "--state") == 0) {
		if (!state_valid(v) || cs->q.state != NULL) {
			fprintf(stderr, "mxgatectl: --state: once, one of queued,"
			    " delivering, deferred, delivered, bounced, held\n");
			return -1;
		}
		cs->q.state = v;
		return 1;
	}
	if ((age = ctl_parse_duration(v)) < 0 || cs->q.received_before != 0) {
		fprintf(stderr, "mxgatectl: --older-than: once, a duration"
		    " such as 90s, 30m, 4h, 2d or 1w\n");
		return -1;
	}
	cs->q.received_before = (long long)time(NULL) - age;
	if (cs->q.received_before == 0)
		cs->q.received_before = -1;
	return 1;
}

static int
parse_word(struct ctl_select *cs, const char *a, unsigned allow)
{
	if (strcmp(a, "--all") == 0 && (allow & SEL_ALL))
		cs->all = true;
	else if (strcmp(a, "--json") == 0 && (allow & SEL_JSON))
		cs->json = true;
	else if (strcmp(a, "--ids") == 0 && (allow & SEL_IDS_ONLY))
		cs->ids_only = true;
	else if (strcmp(a, "-") == 0 && (allow & SEL_IDS))
		return read_ids(cs);
	else if (a[0] != '-' && (allow & SEL_IDS)) {
		if (!queue_id_valid(a)) {
			fprintf(stderr, "mxgatectl: no message %.64s in the"
			    " queue (not a queue id)\n", a);
			return -2;
		}
		add_id(cs, a);
	} else {
		cs->rest = xrealloc(cs->rest, (size_t)(cs->nrest + 1) *
		    sizeof(*cs->rest));
		cs->rest[cs->nrest++] = (char *)a;
	}
	return 0;
}

int
ctl_select_parse(struct ctl_select *cs, int argc, char **argv, unsigned allow)
{
	bool stdin_ids = false;
	int i, r;

	memset(cs, 0, sizeof(*cs));
	for (i = 0; i < argc; i++) {
		if ((r = parse_filter(cs, argc, argv, &i)) < 0)
			return r;
		if (r == 1)
			continue;
		if (strcmp(argv[i], "-") == 0) {
			if (stdin_ids) {
				fprintf(stderr, "mxgatectl: \"-\" given twice\n");
				return -1;
			}
			stdin_ids = true;
		}
		if ((r = parse_word(cs, argv[i], allow)) < 0)
			return r;
	}
	if ((allow & SEL_ALL) && !(allow & SEL_FILTERS) && !cs->all &&
	    cs->nids == 0 && !stdin_ids) {
		fprintf(stderr, "mxgatectl: which messages?  Give IDs, \"-\" to"
		    " read them from stdin, or --all%s\n", cs->any_filter ?
		    " (the filters narrow --all or the IDs)" : "");
		return -1;
	}
	if (cs->all && (cs->nids > 0 || stdin_ids)) {
		fprintf(stderr, "mxgatectl: --all or IDs, not both\n");
		return -1;
	}
	cs->q.rcpt = cs->re[0] != NULL;
	cs->q.sender = cs->re[1] != NULL;
	cs->q.dest = cs->re[2] != NULL;
	cs->q.ids = cs->nids > 0 || stdin_ids;
	cs->q.match = sel_match;
	cs->q.arg = cs;
	cs->md = pcre2_match_data_create(8, NULL);
	return 0;
}

int
ctl_select_load(struct ctl_select *cs, struct queue_db *db)
{
	if (!cs->q.ids)
		return 0;
	return queue_db_select_ids(db, cs->ids, cs->nids);
}

void
ctl_select_free(struct ctl_select *cs)
{
	for (size_t i = 0; i < cs->nids; i++)
		free(cs->ids[i]);
	free(cs->ids);
	free(cs->rest);
	for (int i = 0; i < 3; i++)
		pcre2_code_free(cs->re[i]);
	pcre2_match_data_free(cs->md);
	memset(cs, 0, sizeof(*cs));
}
