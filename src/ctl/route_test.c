/*
 * route_test — see route_test.h.
 *
 * The addresses go through addr_parse_path() and the decision through
 * route_decide(), exactly as in a session, so what this prints is what
 * the daemon would do with the same configuration.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/config.h"
#include "common/json.h"
#include "smtp/route.h"
#include "ctl/route_test.h"
#include "common/util.h"
#include "ctl/ctl.h"

#define MAX_WORDS       64
#define TEST_QUEUE_ID   "00000000000TEST0"

struct rt_input {
	const char *rcpt;
	const char *from;
	const char *ip;
	const char *helo;
	const char *auth;
	bool        tls;
};

/* One evaluated test: the addresses as parsed, and the decision. */
struct rt_eval {
	char        rcpt[ADDR_PATH_MAX + 1];
	char        sender[ADDR_PATH_MAX + 1];
	struct route_result res;
};

/* ---- input ---- */

static int
input_parse(int argc, char **argv, struct rt_input *in, char *err,
    size_t errsize)
{
	struct ctl_opt opts[] = {
		{ "--from", NULL, &in->from }, { "--ip", NULL, &in->ip },
		{ "--helo", NULL, &in->helo }, { "--auth", NULL, &in->auth },
		{ "--tls", &in->tls, NULL }, CTL_OPT_END
	};
	/* A recipient may start with '-': only "--" words are options. */
	struct ctl_args a = { .opts = opts, .words = &in->rcpt,
	    .maxwords = 1, .word = "recipient", .dash_words = true };

	memset(in, 0, sizeof(*in));
	in->from = "";
	in->ip = "192.0.2.1";
	in->helo = "client.example";
	if (ctl_args_parse(&a, argc, argv) < 0) {
		snprintf(err, errsize, "%s", a.err);
		return -1;
	}
	if (in->rcpt == NULL) {
		snprintf(err, errsize, "no recipient");
		return -1;
	}
	return 0;
}

/* "<a@b>" from "a@b" or "<a@b>". */
static void
bracketed(char *out, size_t size, const char *addr)
{
	snprintf(out, size, addr[0] == '<' ? "%s" : "<%s>", addr);
}

static int
sender_parse(const char *from, char *out, size_t size, char *err,
    size_t errsize)
{
	struct addr_parse_opts opts = { .null_ok = true, .utf8_ok = true };
	char path[ADDR_PATH_MAX + 8];
	struct mailaddr a;
	const char *why = NULL;
	size_t used;

	bracketed(path, sizeof(path), from);
	if (addr_parse_path(path, &opts, &a, &used, &why) == 0 &&
	    path[used] != '\0')
		why = "unexpected text after path";
	else if (used > 0)
		why = NULL;
	if (why != NULL) {
		snprintf(err, errsize, "bad sender %s: %s", path, why);
		return -1;
	}
	addr_format(&a, out, size);
	return 0;
}

static int
ip_valid(const char *ip)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, ip, buf) == 1 ||
	    inet_pton(AF_INET6, ip, buf) == 1;
}

/* Decide as a session would; -1 (err set) on a bad sender or address. */
static int
evaluate(const struct mxconf *conf, const struct rt_input *in,
    struct rt_eval *ev, char *err, size_t errsize)
{
	struct addr_parse_opts opts = { .postmaster_ok = true,
	    .utf8_ok = true };
	char path[ADDR_PATH_MAX + 8];
	struct route_input ri;
	struct mailaddr a;
	const char *why = NULL;
	size_t used;

	memset(ev, 0, sizeof(*ev));
	if (sender_parse(in->from, ev->sender, sizeof(ev->sender), err,
	    errsize) < 0)
		return -1;
	if (!ip_valid(in->ip)) {
		snprintf(err, errsize, "--ip %s is not an IPv4 or IPv6 "
		    "address", in->ip);
		return -1;
	}
	bracketed(path, sizeof(path), in->rcpt);
	if (addr_parse_path(path, &opts, &a, &used, &why) == 0 &&
	    path[used] != '\0')
		why = "unexpected text after path";
	else if (used > 0)
		why = NULL;
	if (why != NULL) {
		/* What the SMTP engine answers (smtp_proto.c). */
		ev->res.verdict = ROUTE_REJECTED;
		ev->res.code = 501;
		snprintf(ev->res.text, sizeof(ev->res.text), "5.1.3 Bad "
		    "recipient address syntax: %s", why);
		strlcpy_mx(ev->res.why, "syntax", sizeof(ev->res.why));
		strlcpy_mx(ev->rcpt, in->rcpt, sizeof(ev->rcpt));
		return 0;
	}
	addr_format(&a, ev->rcpt, sizeof(ev->rcpt));
	ri.local = a.local;
	ri.domain = a.domain;
	ri.sender = ev->sender;
	ri.client_ip = in->ip;
	ri.helo = in->helo;
	ri.queue_id = TEST_QUEUE_ID;
	ri.auth_user = in->auth;
	ri.tls = in->tls;
	route_decide(conf->route_table, &ri, &ev->res);
	return 0;
}

/* ---- one test, printed ---- */

static void
print_match(const struct mxconf *conf, const struct route_match *m)
{
	size_t i;

	printf("\nroute %s (routes[%zu])%s\n", m->route, m->index,
	    conf->routes[m->index].cont ? ", continue" : "");
	printf("  action      %s\n", m->action_name);
	if (m->params != NULL)
		printf("  params      %s\n", m->params);
	if (m->max_size != 0)
		printf("  max_size    %zu\n", m->max_size);
	for (i = 0; i < m->nvars; i++) {
		/* ${auth_user} exists only for routes with authenticated */
		if (strcmp(m->vars[i].name, "auth_user") == 0 &&
		    conf->routes[m->index].authenticated.flag != 1)
			continue;
		printf("  %-11s %s=%s\n", i == 0 ? "variables" : "",
		    m->vars[i].name, m->vars[i].value);
	}
}

static int
test_one(const struct mxconf *conf, int argc, char **argv)
{
	struct rt_input in;
	struct rt_eval ev;
	char err[512];
	size_t i;
	int rc;

	if (input_parse(argc, argv, &in, err, sizeof(err)) < 0 ||
	    evaluate(conf, &in, &ev, err, sizeof(err)) < 0) {
		fprintf(stderr, "mxgatectl: route test: %s\n", err);
		return EXIT_USAGE;
	}
	printf("recipient   <%s>\n", ev.rcpt);
	printf("sender      <%s>\n", ev.sender);
	printf("client      %s helo=%s auth=%s tls=%s\n", in.ip, in.helo,
	    in.auth != NULL ? in.auth : "-", in.tls ? "yes" : "no");
	for (i = 0; i < ev.res.nmatches; i++)
		print_match(conf, &ev.res.matches[i]);
	if (ev.res.verdict == ROUTE_REJECTED)
		printf("\nrejected: %d %s (%s)\n", ev.res.code, ev.res.text,
		    ev.res.why);
	else {
		printf("\naccepted by %zu route%s", ev.res.nmatches,
		    ev.res.nmatches == 1 ? "" : "s");
		if (ev.res.max_size != 0)
			printf("; max_size %zu", ev.res.max_size);
		printf("\n");
	}
	rc = ev.res.verdict == ROUTE_ACCEPTED ? 0 : 1;
	route_result_free(&ev.res);
	return rc;
}

/* ---- scripts ---- */

/* Split at blanks, in place; a "..." part keeps its blanks. */
static int
tokenize(char *line, char **words, int max)
{
	char *p = line;
	bool quoted;
	int n = 0;

	while (n < max) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		words[n++] = p;
		for (quoted = false; *p != '\0' &&
		    (quoted || (*p != ' ' && *p != '\t')); p++) {
			if (*p == '"')
				quoted = !quoted;
			else if (*p == '\\' && quoted && p[1] != '\0')
				p++;
		}
		if (*p != '\0')
			*p++ = '\0';
	}
	return *p == '\0' ? n : -1;
}

/* "route=a,b action=x,y" or "reject 550 5.1.1 text". */
static void
describe(const struct route_result *res, struct buf *b)
{
	size_t i;

	if (res->verdict == ROUTE_REJECTED) {
		buf_appendf(b, "reject %d %s", res->code, res->text);
		return;
	}
	buf_appends(b, "route=");
	for (i = 0; i < res->nmatches; i++)
		buf_appendf(b, "%s%s", i > 0 ? "," : "", res->matches[i].route);
	buf_appends(b, " action=");
	for (i = 0; i < res->nmatches; i++)
		buf_appendf(b, "%s%s", i > 0 ? "," : "",
		    res->matches[i].action_name);
}

/* A value written "..." loses its quotes, and \x becomes x. */
static const char *
unquoted(const char *v, char *out, size_t size)
{
	size_t len = strlen(v), i, n = 0;

	if (len < 2 || v[0] != '"' || v[len - 1] != '"' || size == 0)
		return v;
	for (i = 1; i < len - 1 && n + 1 < size; i++) {
		if (v[i] == '\\' && i + 1 < len - 1)
			i++;
		out[n++] = v[i];
	}
	out[n] = '\0';
	return out;
}

static bool
names_equal(const struct route_result *res, const char *want, bool actions)
{
	struct buf got;
	size_t i;
	bool eq;

	buf_init(&got);
	buf_append(&got, "", 0);
	for (i = 0; i < res->nmatches; i++)
		buf_appendf(&got, "%s%s", i > 0 ? "," : "", actions ?
		    res->matches[i].action_name : res->matches[i].route);
	eq = strcmp(got.data, want) == 0;
	buf_free(&got);
	return eq;
}

static bool
var_equal(const struct route_match *m, const char *name, const char *want)
{
	size_t i;

	for (i = 0; i < m->nvars; i++)
		if (strcmp(m->vars[i].name, name) == 0)
			return strcmp(m->vars[i].value, want) == 0;
	return false;
}

static bool
param_equal(const struct route_match *m, const char *name, const char *want)
{
	struct json_value *v;
	char err[128], num[32];
	const char *s;
	long long n;
	bool eq = false;

	if (m->params == NULL ||
	    (v = json_parse(m->params, strlen(m->params), err,
	    sizeof(err))) == NULL)
		return false;
	if ((s = json_get_string(v, name)) != NULL)
		eq = strcmp(s, want) == 0;
	else if (json_get_int(v, name, &n) == 0) {
		snprintf(num, sizeof(num), "%lld", n);
		eq = strcmp(num, want) == 0;
	}
	json_free(v);
	return eq;
}

/* 1 when term holds, 0 when not, -1 when it is not a term. */
static int
term_holds(const struct route_result *res, const char *term)
{
	const struct route_match *first = res->nmatches > 0 ?
	    &res->matches[0] : NULL;
	bool accepted = res->verdict == ROUTE_ACCEPTED;
	char name[128], value[512];
	const char *eq, *dot, *want;

	if (strcmp(term, "accept") == 0)
		return accepted;
	if (strncmp(term, "route=", 6) == 0)
		return accepted && names_equal(res, term + 6, false);
	if (strncmp(term, "action=", 7) == 0)
		return accepted && names_equal(res, term + 7, true);
	if ((strncmp(term, "var.", 4) != 0 && strncmp(term, "param.", 6) !=
	    0) || (eq = strchr(term, '=')) == NULL)
		return -1;
	dot = strchr(term, '.');
	snprintf(name, sizeof(name), "%.*s", (int)(eq - dot - 1), dot + 1);
	want = unquoted(eq + 1, value, sizeof(value));
	if (!accepted || first == NULL)
		return 0;
	if (term[0] == 'v')
		return var_equal(first, name, want);
	return param_equal(first, name, want);
}

/* "reject [CODE [X.Y.Z]]"; -1 when malformed. */
static int
reject_holds(const struct route_result *res, int n, char **words)
{
	size_t len;

	if (n > 3 || (n >= 2 && (strlen(words[1]) != 3 ||
	    !isdigit((unsigned char)words[1][0]) ||
	    !isdigit((unsigned char)words[1][1]) ||
	    !isdigit((unsigned char)words[1][2]))))
		return -1;
	if (res->verdict != ROUTE_REJECTED)
		return 0;
	if (n >= 2 && atoi(words[1]) != res->code)
		return 0;
	if (n == 3) {
		len = strlen(words[2]);
		return strncmp(res->text, words[2], len) == 0 &&
		    (res->text[len] == ' ' || res->text[len] == '\0');
	}
	return 1;
}

/* 1 all hold, 0 one does not, -1 malformed (bad set to the word). */
static int
expect_holds(const struct route_result *res, int n, char **words,
    const char **bad)
{
	int i, r, all = 1;

	if (n == 0) {
		*bad = "(nothing)";
		return -1;
	}
	if (strcmp(words[0], "reject") == 0) {
		if ((r = reject_holds(res, n, words)) < 0)
			*bad = words[n - 1];
		return r;
	}
	for (i = 0; i < n; i++) {
		if ((r = term_holds(res, words[i])) < 0) {
			*bad = words[i];
			return -1;
		}
		if (r == 0)
			all = 0;
	}
	return all;
}

static void
join_words(struct buf *b, int n, char **words)
{
	int i;

	for (i = 0; i < n; i++)
		buf_appendf(b, "%s%s", i > 0 ? " " : "", words[i]);
}

/* One line; returns 0 passed, 1 failed (reported). */
static int
script_line(const struct mxconf *conf, const char *path, unsigned lineno,
    char *line)
{
	char *words[MAX_WORDS], err[512];
	const char *bad = NULL;
	struct rt_input in;
	struct rt_eval ev;
	struct buf msg;
	int n, sep, r;

	if ((n = tokenize(line, words, MAX_WORDS)) < 0) {
		printf("%s:%u: too many words\n", path, lineno);
		return 1;
	}
	for (sep = 0; sep < n && strcmp(words[sep], "=>") != 0; sep++)
		;
	if (sep == n) {
		printf("%s:%u: no \" => \" followed by the expected outcome\n",
		    path, lineno);
		return 1;
	}
	if (input_parse(sep, words, &in, err, sizeof(err)) < 0 ||
	    evaluate(conf, &in, &ev, err, sizeof(err)) < 0) {
		printf("%s:%u: %s\n", path, lineno, err);
		return 1;
	}
	r = expect_holds(&ev.res, n - sep - 1, words + sep + 1, &bad);
	buf_init(&msg);
	if (r < 0)
		printf("%s:%u: cannot read the expected outcome at \"%s\"\n",
		    path, lineno, bad);
	else if (r == 0) {
		buf_appendf(&msg, "%s:%u: %s: expected ", path, lineno,
		    in.rcpt);
		join_words(&msg, n - sep - 1, words + sep + 1);
		buf_appends(&msg, ", got ");
		describe(&ev.res, &msg);
		printf("%s\n", msg.data);
	}
	buf_free(&msg);
	route_result_free(&ev.res);
	return r == 1 ? 0 : 1;
}

static int
test_script(const struct mxconf *conf, const char *path)
{
	unsigned lineno = 0, tests = 0, failed = 0;
	char *line = NULL, *p;
	size_t cap = 0;
	ssize_t len;
	FILE *fp;

	if ((fp = fopen(path, "r")) == NULL) {
		fprintf(stderr, "mxgatectl: %s: %s\n", path, strerror(errno));
		return 1;
	}
	while ((len = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' ||
		    line[len - 1] == '\r'))
			line[--len] = '\0';
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (*p == '\0' || *p == '#')
			continue;
		tests++;
		failed += (unsigned)script_line(conf, path, lineno, p);
	}
	free(line);
	fclose(fp);
	printf("%u test%s, %u failed\n", tests, tests == 1 ? "" : "s",
	    failed);
	return failed > 0 ? 1 : 0;
}

int
route_test_main(const struct mxconf *conf, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "--script") == 0) {
		if (argc != 2) {
			fprintf(stderr, "usage: mxgatectl route test "
			    "--script FILE\n");
			return EXIT_USAGE;
		}
		return test_script(conf, argv[1]);
	}
	return test_one(conf, argc, argv);
}
