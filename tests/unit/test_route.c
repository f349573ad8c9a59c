/*
 * Unit tests of the route module: matching (recipient, sender, client
 * networks, authentication, TLS), captures and built-in variables, the
 * expansion into JSON parameters and its safety rules, continue, the
 * accept_domains shorthand, and every configuration error route.c and the
 * routes/upstreams rows of config.c report, with the exact FILE:LINE.
 * Configurations are loaded with config_load_string(), so the tests go
 * through the same path as mxgated.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/config.h"
#include "smtp/route.h"
#include "unit.h"
#include "common/util.h"

#define MAX_ERRS 16

static char errs[MAX_ERRS][2048];
static int nerrs;

static void
capture(const char *msg)
{
	if (nerrs < MAX_ERRS)
		snprintf(errs[nerrs], sizeof(errs[nerrs]), "%s", msg);
	nerrs++;
}

/* Line 1: the listener and host name; the routes start on line 2. */
#define HEAD "listen = ( { address = \"127.0.0.1\"; port = 2525; } ); " \
	"server = { hostname = \"mx.example.test\"; };\n"

static struct mxconf *
load(const char *text)
{
	char full[8192];
	struct mxconf *c;
	int i;

	snprintf(full, sizeof(full), HEAD "%s", text);
	nerrs = 0;
	c = config_load_string(full, "t.conf", capture);
	if (c == NULL)
		for (i = 0; i < nerrs && i < MAX_ERRS; i++)
			printf("#     error: %s\n", errs[i]);
	return c;
}

/* The load fails, and want is one of the problems reported. */
static bool
fails_with(const char *text, const char *want)
{
	char full[8192];
	struct mxconf *c;
	int i;

	snprintf(full, sizeof(full), HEAD "%s", text);
	nerrs = 0;
	c = config_load_string(full, "t.conf", capture);
	for (i = 0; c == NULL && i < nerrs && i < MAX_ERRS; i++)
		if (strcmp(errs[i], want) == 0)
			return true;
	printf("#   want: %s\n", want);
	if (c != NULL)
		printf("#   but it loaded\n");
	for (i = 0; i < nerrs && i < MAX_ERRS; i++)
		printf("#   got:  %s\n", errs[i]);
	config_free(c);
	return false;
}

struct input {
	const char *rcpt;       /* as in RCPT TO:<...> */
	const char *sender;
	const char *ip;
	const char *helo;
	const char *auth;
	bool        tls;
};

/* Parse the address as the SMTP engine does, then decide. */
static void
decide(const struct mxconf *c, struct input in, struct route_result *res)
{
	struct addr_parse_opts opts = { .postmaster_ok = true,
	    .utf8_ok = true };
	struct route_input ri;
	struct mailaddr a;
	const char *why;
	char path[600];
	size_t used;

	snprintf(path, sizeof(path), "<%s>", in.rcpt);
	if (addr_parse_path(path, &opts, &a, &used, &why) != 0) {
		printf("#   bad address %s: %s\n", path, why);
		memset(res, 0, sizeof(*res));
		res->verdict = ROUTE_REJECTED;
		res->code = 501;
		return;
	}
	ri.local = a.local;
	ri.domain = a.domain;
	ri.sender = in.sender != NULL ? in.sender : "alice@sender.example";
	ri.client_ip = in.ip != NULL ? in.ip : "192.0.2.7";
	ri.helo = in.helo != NULL ? in.helo : "client.example";
	ri.queue_id = "0123456789ABCDEF";
	ri.auth_user = in.auth;
	ri.tls = in.tls;
	route_decide(c->route_table, &ri, res);
}

static const char *
var(const struct route_match *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nvars; i++)
		if (strcmp(m->vars[i].name, name) == 0)
			return m->vars[i].value;
	return NULL;
}

/* Accepted by exactly these routes (comma-separated names). */
static bool
accepted_by(const struct route_result *res, const char *names)
{
	char got[512] = "";
	size_t i;

	for (i = 0; i < res->nmatches; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s",
		    i > 0 ? "," : "", res->matches[i].route);
	if (res->verdict == ROUTE_ACCEPTED && strcmp(got, names) == 0)
		return true;
	printf("#   want accepted by %s, got %s by %s (%d %s)\n", names,
	    res->verdict == ROUTE_ACCEPTED ? "accepted" : "rejected", got,
	    res->code, res->text);
	return false;
}

static bool
rejected(const struct route_result *res, int code, const char *text)
{
	if (res->verdict == ROUTE_REJECTED && res->code == code &&
	    strcmp(res->text, text) == 0)
		return true;
	printf("#   want %d %s\n#   got  %s %d %s\n", code, text,
	    res->verdict == ROUTE_ACCEPTED ? "accepted" : "rejected",
	    res->code, res->text);
	return false;
}

/* Accepted by exactly the routes names, or by any (NULL). */
static bool
accepted(const struct route_result *res, const char *names)
{
	if (names != NULL)
		return accepted_by(res, names);
	if (res->verdict == ROUTE_ACCEPTED)
		return true;
	printf("#   want accepted, got %d %s\n", res->code, res->text);
	return false;
}

/* Refused, with code unless it is 0. */
static bool
refused(const struct route_result *res, int code)
{
	if (res->verdict == ROUTE_REJECTED && (code == 0 || res->code == code))
		return true;
	printf("#   want refused %d, got %s %d %s\n", code,
	    res->verdict == ROUTE_ACCEPTED ? "accepted" : "rejected",
	    res->code, res->text);
	return false;
}

/* The decision on one input, given as the fields of struct input.
 * Macros, so that a failure names the test's line. */
#define ACCEPTED(c, names, ...) do { \
	struct route_result r_; \
	decide(c, (struct input){ __VA_ARGS__ }, &r_); \
	CHECK(accepted(&r_, names)); \
	route_result_free(&r_); \
} while (0)

#define REFUSED(c, code, ...) do { \
	struct route_result r_; \
	decide(c, (struct input){ __VA_ARGS__ }, &r_); \
	CHECK(refused(&r_, code)); \
	route_result_free(&r_); \
} while (0)

/* --- matching --- */

static void
test_first_match_wins(void)
{
	struct mxconf *c = load(
	    "routes = (\n"
	    " { name = \"one\"; rcpt = \"@example\\\\.test$\"; action = \"debug\"; },\n"
	    " { name = \"two\"; rcpt = \".*\"; action = \"discard\"; }\n"
	    ");\n");
	struct route_result res;

	REQUIRE(c != NULL);
	CHECK_INT(route_table_count(c->route_table), 2);
	decide(c, (struct input){ .rcpt = "bob@example.test" }, &res);
	CHECK(accepted_by(&res, "one"));
	CHECK_STR(res.matches[0].action_name, "debug");
	CHECK_STR(res.matches[0].params, "{\"vars\":{}}");
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "bob@other.example" }, &res);
	CHECK(accepted_by(&res, "two"));
	CHECK_INT(res.matches[0].action, ROUTE_DISCARD);
	route_result_free(&res);
	config_free(c);
}

static void
test_no_route(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"@example\\\\.test$\"; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "bob@evil.example" }, &res);
	CHECK(rejected(&res, 550,
	    "5.1.1 <bob@evil.example>: Recipient address rejected"));
	CHECK_STR(res.why, "no route");
	CHECK_INT(res.nmatches, 0);
	route_result_free(&res);
	/* a look-alike domain is not the domain */
	REFUSED(c, 550, .rcpt = "bob@example.test.evil.example");
	config_free(c);
}

/* Caseless on the whole address; the variables keep what was sent. */
static void
test_rcpt_caseless(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"^bob@example\\\\.test$\"; action = \"debug\"; },\n"
	    " { name = \"strict\"; rcpt = \"^(?-i)Carol@example\\\\.test$\"; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "BoB@EXAMPLE.Test" }, &res);
	CHECK(accepted_by(&res, "route1"));
	CHECK_STR(var(&res.matches[0], "local"), "BoB");
	CHECK_STR(var(&res.matches[0], "domain"), "example.test");
	CHECK_STR(var(&res.matches[0], "rcpt"), "BoB@example.test");
	route_result_free(&res);
	ACCEPTED(c, "strict", .rcpt = "Carol@example.test");
	REFUSED(c, 0, .rcpt = "carol@example.test");
	config_free(c);
}

static void
test_named_captures(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"tickets\";\n"
	    "  rcpt = \"^(?<queue>support|billing)\\\\+(?<ticket>[0-9]+)@help\\\\.example\\\\.com$\";\n"
	    "  action = \"pipe\"; format = \"json\";\n"
	    "  command = [ \"/usr/local/bin/ticket-add\", \"--queue\", \"${queue}\", \"${ticket}\" ]; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "Support+42@help.example.com" },
	    &res);
	CHECK(accepted_by(&res, "tickets"));
	CHECK_STR(var(&res.matches[0], "queue"), "Support");
	CHECK_STR(var(&res.matches[0], "ticket"), "42");
	CHECK_STR(res.matches[0].params, "{\"command\":["
	    "\"/usr/local/bin/ticket-add\",\"--queue\",\"Support\",\"42\"],"
	    "\"format\":\"json\",\"timeout\":60,"
	    "\"vars\":{\"queue\":\"Support\",\"ticket\":\"42\"}}");
	route_result_free(&res);
	REFUSED(c, 550, .rcpt = "support+x@help.example.com");
	config_free(c);
}

static void
test_builtin_variables(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \".\"; authenticated = true; action = \"pipe\";\n"
	    "  command = [ \"/bin/x\", \"${rcpt}|${local}|${domain}|${sender}|"
	    "${sender_domain}|${client_ip}|${helo}|${queue_id}|${auth_user}|$$\" ]; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "bob@example.test",
	    .sender = "alice@Sender.example", .ip = "2001:db8::7",
	    .helo = "client.example", .auth = "alice" }, &res);
	CHECK(accepted_by(&res, "route1"));
	CHECK_STR(res.matches[0].params, "{\"command\":[\"/bin/x\","
	    "\"bob@example.test|bob|example.test|alice@Sender.example|"
	    "Sender.example|2001:db8::7|client.example|0123456789ABCDEF|"
	    "alice|$\"],\"format\":\"raw\",\"timeout\":60,\"vars\":{}}");
	CHECK_INT(res.matches[0].nvars, 9);
	route_result_free(&res);
	/* the null sender: both are empty */
	decide(c, (struct input){ .rcpt = "bob@example.test", .sender = "",
	    .auth = "alice" }, &res);
	CHECK_STR(var(&res.matches[0], "sender"), "");
	CHECK_STR(var(&res.matches[0], "sender_domain"), "");
	route_result_free(&res);
	config_free(c);
}

static void
test_sender_matcher(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"partner\"; rcpt = \"@example\\\\.test$\";\n"
	    "  sender = \"^(?<who>[^@]+)@partner\\\\.example$\"; action = \"maildir\";\n"
	    "  path = \"/var/mail/partner/${who}/\"; },\n"
	    " { name = \"bounces\"; rcpt = \"@example\\\\.test$\"; sender = \"^$\"; action = \"discard\"; },\n"
	    " { name = \"rest\"; rcpt = \"@example\\\\.test$\"; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "bob@example.test",
	    .sender = "Jane@PARTNER.example" }, &res);
	CHECK(accepted_by(&res, "partner"));
	CHECK_STR(res.matches[0].params, "{\"path\":\"/var/mail/partner/Jane/\","
	    "\"vars\":{\"who\":\"Jane\"}}");
	route_result_free(&res);
	ACCEPTED(c, "bounces", .rcpt = "bob@example.test", .sender = "");
	ACCEPTED(c, "rest", .rcpt = "bob@example.test",
	    .sender = "jane@partner.example.evil");
	config_free(c);
}

static void
test_client_networks(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"inside\"; rcpt = \".\";\n"
	    "  client = [ \"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\", \"0.0.0.0/0\" ];\n"
	    "  action = \"debug\"; },\n"
	    " { name = \"outside\"; rcpt = \".\"; action = \"discard\"; } );\n");
	static const struct { const char *ip; const char *route; } cases[] = {
		{ "192.0.2.1", "inside" },
		{ "192.0.2.255", "inside" },
		{ "192.0.3.1", "inside" },          /* 0.0.0.0/0: all IPv4 */
		{ "::ffff:192.0.2.9", "inside" },   /* mapped counts as v4 */
		{ "2001:db8:1::5", "inside" },
		{ "2001:db9::5", "outside" },
		{ "::1", "outside" },
		{ "unknown", "outside" },
	};
	struct route_result res;
	size_t i;

	REQUIRE(c != NULL);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		decide(c, (struct input){ .rcpt = "a@b.example",
		    .ip = cases[i].ip }, &res);
		if (!accepted_by(&res, cases[i].route))
			printf("#   for client %s\n", cases[i].ip);
		CHECK(accepted_by(&res, cases[i].route));
		route_result_free(&res);
	}
	config_free(c);

	c = load("routes = ( { rcpt = \".\"; client = [ \"192.0.2.128/25\", "
	    "\"198.51.100.0/31\", \"2001:db8::8000/113\" ]; action = \"debug\"; } );\n");
	REQUIRE(c != NULL);
	ACCEPTED(c, NULL, .rcpt = "a@b.example", .ip = "192.0.2.200");
	REFUSED(c, 0, .rcpt = "a@b.example", .ip = "192.0.2.127");
	ACCEPTED(c, NULL, .rcpt = "a@b.example", .ip = "198.51.100.1");
	REFUSED(c, 0, .rcpt = "a@b.example", .ip = "198.51.100.2");
	ACCEPTED(c, NULL, .rcpt = "a@b.example", .ip = "2001:db8::ffff");
	REFUSED(c, 0, .rcpt = "a@b.example", .ip = "2001:db8::7fff");
	config_free(c);
}

static void
test_authenticated(void)
{
	struct mxconf *c = load(
	    "upstreams = ( { name = \"out\"; hosts = [ \"192.0.2.25\" ]; } );\n"
	    "routes = (\n"
	    " { name = \"admins\"; rcpt = \".\"; authenticated = \"^(?<admin>root|admin)$\";\n"
	    "   action = \"pipe\"; command = [ \"/bin/log\", \"${admin}\", \"${auth_user}\" ]; },\n"
	    " { name = \"users\"; rcpt = \".\"; authenticated = true; action = \"relay\"; upstream = \"out\"; },\n"
	    " { name = \"anonymous\"; rcpt = \"@example\\\\.test$\"; authenticated = false; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "x@far.example", .auth = "admin" },
	    &res);
	CHECK(accepted_by(&res, "admins"));
	CHECK_STR(res.matches[0].params, "{\"command\":[\"/bin/log\","
	    "\"admin\",\"admin\"],\"format\":\"raw\",\"timeout\":60,"
	    "\"vars\":{\"admin\":\"admin\"}}");
	route_result_free(&res);
	/* the user pattern is case-sensitive */
	decide(c, (struct input){ .rcpt = "x@far.example", .auth = "Admin" },
	    &res);
	CHECK(accepted_by(&res, "users"));
	CHECK_STR(res.matches[0].params,
	    "{\"upstream\":\"out\",\"vars\":{}}");
	route_result_free(&res);
	REFUSED(c, 550, .rcpt = "x@far.example");
	ACCEPTED(c, "anonymous", .rcpt = "x@example.test");
	ACCEPTED(c, "users", .rcpt = "x@example.test", .auth = "bob");
	config_free(c);
}

static void
test_tls_matcher(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"secure\"; rcpt = \".\"; tls = true; action = \"debug\"; },\n"
	    " { name = \"plain\"; rcpt = \".\"; tls = false; action = \"discard\"; } );\n");

	REQUIRE(c != NULL);
	ACCEPTED(c, "secure", .rcpt = "a@b.example", .tls = true);
	ACCEPTED(c, "plain", .rcpt = "a@b.example");
	config_free(c);
}

static void
test_continue(void)
{
	struct mxconf *c = load(
	    "routes = (\n"
	    " { name = \"archive\"; rcpt = \"@example\\\\.test$\"; continue = true; max_size = \"5M\";\n"
	    "   action = \"maildir\"; path = \"/srv/archive/\"; },\n"
	    " { name = \"skipped\"; rcpt = \"^nobody@\"; action = \"discard\"; },\n"
	    " { name = \"audit\"; rcpt = \"^ceo@\"; continue = true; action = \"debug\"; },\n"
	    " { name = \"blocked\"; rcpt = \"^blocked@\"; action = \"reject\"; code = 550; text = \"5.7.1 blocked\"; },\n"
	    " { name = \"deliver\"; rcpt = \"@example\\\\.test$\"; max_size = \"2M\"; action = \"maildir\";\n"
	    "   path = \"/var/mail/${local}/\"; },\n"
	    " { name = \"never\"; rcpt = \".\"; action = \"discard\"; },\n"
	    " { name = \"lonely\"; rcpt = \"@lonely\\\\.example$\"; continue = true; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "bob@example.test" }, &res);
	CHECK(accepted_by(&res, "archive,deliver"));
	CHECK_INT(res.max_size, 2 * 1024 * 1024);
	route_result_free(&res);
	ACCEPTED(c, "archive,audit,deliver", .rcpt = "ceo@example.test");
	/* a reject after a continue route rejects the recipient */
	decide(c, (struct input){ .rcpt = "blocked@example.test" }, &res);
	CHECK(rejected(&res, 550, "5.7.1 blocked"));
	CHECK_STR(res.why, "route=blocked");
	CHECK_INT(res.nmatches, 2);
	route_result_free(&res);
	/* only continue routes matched: they apply */
	ACCEPTED(c, "never", .rcpt = "x@lonely.example");
	config_free(c);
}

static void
test_reject_route(void)
{
	struct mxconf *c = load(
	    "routes = (\n"
	    " { name = \"gone\"; rcpt = \"^old@\"; action = \"reject\"; code = 551;\n"
	    "   text = \"5.1.6 <${rcpt}> has moved; helo was ${helo}\"; },\n"
	    " { name = \"later\"; rcpt = \"^busy@\"; action = \"reject\"; code = 450;\n"
	    "   text = \"4.2.1 try later\"; },\n"
	    " { name = \"default\"; rcpt = \".\"; action = \"reject\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "old@example.test",
	    .helo = "bad\x01helo" }, &res);
	CHECK(rejected(&res, 551,
	    "5.1.6 <old@example.test> has moved; helo was bad?helo"));
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "busy@example.test" }, &res);
	CHECK(rejected(&res, 450, "4.2.1 try later"));
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "x@example.test" }, &res);
	CHECK(rejected(&res, 550,
	    "5.7.1 <x@example.test>: Recipient address rejected"));
	CHECK_STR(res.why, "route=default");
	route_result_free(&res);
	config_free(c);
}

/* RFC 5321 4.5.1: <Postmaster> is matched at the server's name. */
static void
test_bare_postmaster(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"pm\"; rcpt = \"^postmaster@mx\\\\.example\\\\.test$\";\n"
	    "  action = \"maildir\"; path = \"/var/mail/${domain}/${local}/\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "Postmaster" }, &res);
	CHECK(accepted_by(&res, "pm"));
	CHECK_STR(res.matches[0].params, "{\"path\":"
	    "\"/var/mail/mx.example.test/Postmaster/\",\"vars\":{}}");
	route_result_free(&res);
	ACCEPTED(c, "pm", .rcpt = "postmaster@mx.example.test");
	config_free(c);
}

/* --- expansion and its safety --- */

static void
test_maildir_safety(void)
{
	struct mxconf *c = load(
	    "routes = (\n"
	    " { name = \"q\"; rcpt = \"^\\\"(?<box>[^\\\"]*)\\\"@q\\\\.example$\"; action = \"maildir\";\n"
	    "   path = \"/var/mail/${box}/\"; },\n"
	    " { name = \"opt\"; rcpt = \"^(?<a>x)?y@opt\\\\.example$\"; action = \"maildir\";\n"
	    "   path = \"/var/mail/${a}/\"; },\n"
	    " { name = \"m\"; rcpt = \".\"; action = \"maildir\"; path = \"/var/mail/${domain}/${local}/\"; } );\n");
	static const struct { const char *rcpt; const char *var; } unsafe[] = {
		{ "a/b@example.test", "local" },       /* "/" is atext */
		{ "\"..\"@q.example", "box" },
		{ "\".hidden\"@q.example", "box" },
		{ "\"a/../../etc\"@q.example", "box" },
		{ "\"\"@q.example", "box" },            /* empty */
		{ "y@opt.example", "a" },               /* unset group */
	};
	char want[256];
	struct route_result res;
	size_t i;

	REQUIRE(c != NULL);
	for (i = 0; i < ARRAY_LEN(unsafe); i++) {
		decide(c, (struct input){ .rcpt = unsafe[i].rcpt }, &res);
		snprintf(want, sizeof(want), "5.1.3 <%s>: Recipient address "
		    "not usable here (unsafe ${%s})", unsafe[i].rcpt,
		    unsafe[i].var);
		CHECK(rejected(&res, 553, want));
		route_result_free(&res);
	}
	decide(c, (struct input){ .rcpt = "\"bob smith\"@q.example" }, &res);
	CHECK(accepted_by(&res, "q"));
	CHECK_STR(res.matches[0].params, "{\"path\":\"/var/mail/bob smith/\","
	    "\"vars\":{\"box\":\"bob smith\"}}");
	route_result_free(&res);
	ACCEPTED(c, "opt", .rcpt = "xy@opt.example");
	decide(c, (struct input){ .rcpt = "bob.smith@Example.test" }, &res);
	CHECK(accepted_by(&res, "m"));
	CHECK_STR(res.matches[0].params, "{\"path\":"
	    "\"/var/mail/example.test/bob.smith/\",\"vars\":{}}");
	route_result_free(&res);
	config_free(c);
}

/* A relative path is made absolute against the current directory. */
static void
test_relative_paths(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"^a@\"; action = \"maildir\"; path = \"./var/mail/${local}/\"; },\n"
	    " { rcpt = \"^b@\"; action = \"pipe\"; command = [ \"./bin/handler\", \"x\" ]; },\n"
	    " { rcpt = \"^c@\"; action = \"lmtp\"; address = \"unix:run/lmtp\"; } );\n");
	char cwd[PATH_MAX], want[PATH_MAX + 200];
	struct route_result res;

	CHECK(c != NULL);
	if (c == NULL || getcwd(cwd, sizeof(cwd)) == NULL)
		return;
	decide(c, (struct input){ .rcpt = "a@b.example" }, &res);
	snprintf(want, sizeof(want),
	    "{\"path\":\"%s/var/mail/a/\",\"vars\":{}}", cwd);
	CHECK_STR(res.matches[0].params, want);
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "b@b.example" }, &res);
	snprintf(want, sizeof(want), "{\"command\":[\"%s/bin/handler\","
	    "\"x\"],\"format\":\"raw\",\"timeout\":60,\"vars\":{}}", cwd);
	CHECK_STR(res.matches[0].params, want);
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "c@b.example" }, &res);
	snprintf(want, sizeof(want),
	    "{\"address\":\"unix:%s/run/lmtp\",\"vars\":{}}", cwd);
	CHECK_STR(res.matches[0].params, want);
	route_result_free(&res);
	config_free(c);
}

/* Arguments are argv elements: no shell, and no option injection. */
static void
test_pipe_arguments(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \".\"; action = \"pipe\"; timeout = 5;\n"
	    "  command = [ \"/bin/h\", \"${local}\", \"--to=${local}\", \"-f${sender}\" ]; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "a|rm$x`y`&z@b.example" }, &res);
	CHECK(accepted_by(&res, "route1"));
	CHECK_STR(res.matches[0].params, "{\"command\":[\"/bin/h\","
	    "\"a|rm$x`y`&z\",\"--to=a|rm$x`y`&z\","
	    "\"-falice@sender.example\"],\"format\":\"raw\",\"timeout\":5,"
	    "\"vars\":{}}");
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "-oQ/tmp@b.example" }, &res);
	CHECK(rejected(&res, 553, "5.1.3 <-oQ/tmp@b.example>: Recipient "
	    "address not usable here (unsafe ${local})"));
	route_result_free(&res);
	config_free(c);
}

static void
test_json_escaping(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"^(?<l>.*)@\"; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "\"a\\\"b\\\\c\"@b.example" }, &res);
	CHECK(res.verdict == ROUTE_ACCEPTED);
	CHECK_STR(var(&res.matches[0], "l"), "\"a\\\"b\\\\c\"");
	CHECK_STR(res.matches[0].params,
	    "{\"vars\":{\"l\":\"\\\"a\\\\\\\"b\\\\\\\\c\\\"\"}}");
	route_result_free(&res);
	/* SMTPUTF8 local parts stay UTF-8 */
	decide(c, (struct input){ .rcpt = "j\xc3\xb6rg@b.example" }, &res);
	CHECK_STR(res.matches[0].params,
	    "{\"vars\":{\"l\":\"j\xc3\xb6rg\"}}");
	route_result_free(&res);
	config_free(c);
}

static void
test_webhook_url(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"^(?<who>.*)@\"; action = \"webhook\"; secret = \"s3cret\";\n"
	    "  url = \"https://app.example/in/${who}?d=${domain}\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "a/b?c&d=e#f@b.example" }, &res);
	CHECK(res.verdict == ROUTE_ACCEPTED);
	CHECK_STR(res.matches[0].params, "{\"url\":\"https://app.example/in/"
	    "a%2Fb%3Fc%26d%3De%23f?d=b.example\",\"format\":\"json\","
	    "\"timeout\":30,\"vars\":{\"who\":\"a/b?c&d=e#f\"}}");
	/* the secret never goes into the queue */
	CHECK(strstr(res.matches[0].params, "s3cret") == NULL);
	route_result_free(&res);
	config_free(c);
}

static void
test_lmtp_and_relay_params(void)
{
	struct mxconf *c = load(
	    "upstreams = ( { name = \"exchange\"; hosts = [ \"192.0.2.10:25\", \"[2001:db8::10]:2525\", \"smtp.corp.example\" ]; } );\n"
	    "routes = ( { rcpt = \"@corp\\\\.example$\"; action = \"relay\"; upstream = \"exchange\"; },\n"
	    " { rcpt = \"@far\\\\.example$\"; action = \"relay\"; upstream = \"mx\"; },\n"
	    " { rcpt = \"@lmtp\\\\.example$\"; action = \"lmtp\"; address = \"inet:127.0.0.1:24\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	CHECK_INT(c->nupstreams, 1);
	CHECK_INT(c->upstreams[0].port, 25);
	CHECK_INT(c->upstreams[0].nhosts, 3);
	decide(c, (struct input){ .rcpt = "bob@corp.example" }, &res);
	CHECK_STR(res.matches[0].params,
	    "{\"upstream\":\"exchange\",\"vars\":{}}");
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "bob@far.example" }, &res);
	CHECK_STR(res.matches[0].params, "{\"upstream\":\"mx\",\"vars\":{}}");
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "bob@lmtp.example" }, &res);
	CHECK_STR(res.matches[0].params,
	    "{\"address\":\"inet:127.0.0.1:24\",\"vars\":{}}");
	route_result_free(&res);
	config_free(c);
}

/* No open relay through address forms an upstream may route further. */
static void
test_relay_tricks(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"corp\"; rcpt = \"@corp\\\\.example$\"; action = \"relay\"; upstream = \"mx\"; },\n"
	    " { name = \"sloppy\"; rcpt = \"corp2\\\\.example\"; action = \"relay\"; upstream = \"mx\"; } );\n");
	static const char *const tricks[] = {
		"user%evil.example@corp.example",
		"evil.example!user@corp.example",
		"\"user@evil.example\"@corp.example",
		"\"user\"@corp.example",
		"\"x@corp2.example\"@evil.example",
	};
	char want[256];
	struct route_result res;
	size_t i;

	REQUIRE(c != NULL);
	for (i = 0; i < ARRAY_LEN(tricks); i++) {
		decide(c, (struct input){ .rcpt = tricks[i] }, &res);
		snprintf(want, sizeof(want), "5.7.1 <%s>: Relay access denied "
		    "for this address form", tricks[i]);
		CHECK(rejected(&res, 550, want));
		route_result_free(&res);
		/* an authenticated client may */
		decide(c, (struct input){ .rcpt = tricks[i], .auth = "u" },
		    &res);
		CHECK(res.verdict == ROUTE_ACCEPTED);
		route_result_free(&res);
	}
	/* a source route is gone before routing: the domain is evil's */
	decide(c, (struct input){ .rcpt = "@corp.example:user@evil.example" },
	    &res);
	CHECK(rejected(&res, 550, "5.1.1 <user@evil.example>: Recipient "
	    "address rejected"));
	route_result_free(&res);
	ACCEPTED(c, "corp", .rcpt = "user@corp.example");
	config_free(c);
}

/* A pattern that backtracks without end costs a 451, not a worker. */
static void
test_match_limit(void)
{
	struct mxconf *c = load(
	    "routes = ( { name = \"slow\"; rcpt = \"^(a|aa)+(a|aa)+(a|aa)+$\"; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt =
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "@b.example" }, &res);
	CHECK(rejected(&res, 451, "4.3.0 <aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaa@b.example>: Temporary routing "
	    "failure, try again later"));
	route_result_free(&res);
	config_free(c);
}

static void
test_sender_auth_flags(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \".\"; sender_auth = [ \"spf\", \"tls\" ]; action = \"debug\"; } );\n");
	struct route_result res;

	REQUIRE(c != NULL);
	decide(c, (struct input){ .rcpt = "a@b.example" }, &res);
	CHECK_INT(res.matches[0].sender_auth,
	    ROUTE_SENDER_AUTH_SPF | ROUTE_SENDER_AUTH_TLS);
	route_result_free(&res);
	config_free(c);
}

/* --- accept_domains without routes --- */

static void
test_accept_domains_shorthand(void)
{
	struct mxconf *c = load("accept_domains = [ \"Example.test\", \"b.example\" ];\n");
	struct route_result res;

	REQUIRE(c != NULL);
	CHECK_INT(c->nroutes, 4);
	CHECK_STR(c->routes[0].rcpt, "@example\\.test$");
	decide(c, (struct input){ .rcpt = "bob@EXAMPLE.test" }, &res);
	CHECK(accepted_by(&res, "accept_domains"));
	CHECK_STR(res.matches[0].action_name, "debug");
	route_result_free(&res);
	decide(c, (struct input){ .rcpt = "bob@bxexample" }, &res);
	CHECK(rejected(&res, 550,
	    "5.7.1 <bob@bxexample>: Relay access denied"));
	route_result_free(&res);
	ACCEPTED(c, "postmaster", .rcpt = "Postmaster");
	config_free(c);

	/* neither: only postmaster */
	c = load("");
	REQUIRE(c != NULL);
	REFUSED(c, 550, .rcpt = "bob@example.test");
	ACCEPTED(c, NULL, .rcpt = "postmaster");
	config_free(c);

	/* an empty routes list refuses everything */
	c = load("routes = ( );\n");
	REQUIRE(c != NULL);
	REFUSED(c, 550, .rcpt = "postmaster");
	config_free(c);
}

/* --- configuration errors --- */

static void
test_config_errors_matchers(void)
{
	CHECK(fails_with("routes = ( { rcpt = \"^(foo\"; action = \"debug\"; } );\n",
	    "t.conf:2: 'routes[0].rcpt' is not a valid regular expression: "
	    "missing closing parenthesis at offset 5"));
	CHECK(fails_with("routes = ( { rcpt = \".\";\n"
	    "  sender = \"[z-a]\"; action = \"debug\"; } );\n",
	    "t.conf:3: 'routes[0].sender' is not a valid regular expression: "
	    "range out of order in character class at offset 3"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  authenticated = \"(?<x\"; } );\n",
	    "t.conf:3: 'routes[0].authenticated' is not a valid regular "
	    "expression: syntax error in subpattern name (missing "
	    "terminator?) at offset 4"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  authenticated = 3; } );\n",
	    "t.conf:3: 'routes[0].authenticated' must be true, false or a "
	    "non-empty string"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  tls = \"yes\"; } );\n",
	    "t.conf:3: 'routes[0].tls' must be true or false"));
	CHECK(fails_with("routes = ( { action = \"debug\"; } );\n",
	    "t.conf:2: missing setting 'routes[0].rcpt'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  client = [ \"192.0.2.0/24\",\n \"192.0.2.1/24\" ]; } );\n",
	    "t.conf:4: 'routes[0].client[1]' has bits set after the prefix "
	    "length (a host address with a network's length) (got "
	    "\"192.0.2.1/24\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  client = [ \"192.0.2.0/33\" ]; } );\n",
	    "t.conf:3: 'routes[0].client[0]' has a bad prefix length (got "
	    "\"192.0.2.0/33\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  client = [ \"example.com\" ]; } );\n",
	    "t.conf:3: 'routes[0].client[0]' is not an address or network "
	    "such as \"192.0.2.0/24\" or \"2001:db8::/32\" (got "
	    "\"example.com\")"));
	CHECK(fails_with("routes = ( { rcpt = \"(?<domain>.*)\"; action = \"debug\"; } );\n",
	    "t.conf:2: 'routes[0].rcpt' names a group 'domain', which is a "
	    "built-in variable: choose another name"));
	CHECK(fails_with("routes = ( { rcpt = \"(?<x>.*)\";\n"
	    "  sender = \"(?<x>.*)\"; action = \"debug\"; } );\n",
	    "t.conf:3: 'routes[0].sender' names a group 'x', already named "
	    "in 'rcpt'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  sender_auth = [ \"spf\", \"dkim\" ]; } );\n",
	    "t.conf:3: 'routes[0].sender_auth[1]' must be \"spf\", \"auth\" "
	    "or \"tls\" (got \"dkim\")"));
}

static void
test_config_errors_actions(void)
{
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"forward\"; } );\n",
	    "t.conf:2: 'routes[0].action' must be \"reject\", \"relay\", "
	    "\"maildir\", \"pipe\", \"lmtp\", \"webhook\", \"discard\" or "
	    "\"debug\" (got \"forward\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; } );\n",
	    "t.conf:2: missing setting 'routes[0].action'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\"; } );\n",
	    "t.conf:2: 'routes[0]' has action \"maildir\", which needs "
	    "'path'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"relay\"; } );\n",
	    "t.conf:2: 'routes[0]' has action \"relay\", which needs "
	    "'upstream'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"pipe\"; } );\n",
	    "t.conf:2: 'routes[0]' has action \"pipe\", which needs "
	    "'command'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"lmtp\"; } );\n",
	    "t.conf:2: 'routes[0]' has action \"lmtp\", which needs "
	    "'address'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"webhook\"; } );\n",
	    "t.conf:2: 'routes[0]' has action \"webhook\", which needs "
	    "'url'"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  path = \"/tmp/x/\"; } );\n",
	    "t.conf:3: 'routes[0].path' is not a parameter of action "
	    "\"debug\""));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"discard\";\n"
	    "  user = \"nobody\"; } );\n",
	    "t.conf:3: 'routes[0].user' is not a parameter of action "
	    "\"discard\""));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"reject\";\n"
	    "  code = 250; } );\n",
	    "t.conf:3: 'routes[0].code' must be between 400 and 599 (got "
	    "250)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"reject\";\n"
	    "  code = 550; text = \"no such user\"; } );\n",
	    "t.conf:3: 'routes[0].text' must start with an enhanced status "
	    "code of the class of code 550, such as \"5.1.1 no such user "
	    "here\" (RFC 3463)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"reject\";\n"
	    "  code = 450; text = \"5.1.1 no\"; } );\n",
	    "t.conf:3: 'routes[0].text' must start with an enhanced status "
	    "code of the class of code 450, such as \"4.1.1 no such user "
	    "here\" (RFC 3463)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"reject\";\n"
	    "  continue = true; } );\n",
	    "t.conf:3: 'routes[0].continue' cannot be true on a reject route "
	    "(a reject ends the decision)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"relay\";\n"
	    "  upstream = \"exchange\"; } );\n",
	    "t.conf:3: 'routes[0].upstream' names no upstream: \"exchange\" "
	    "is not in 'upstreams' (\"mx\" means the recipient domain's MX "
	    "hosts)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"lmtp\";\n"
	    "  address = \"tcp:127.0.0.1:24\"; } );\n",
	    "t.conf:3: 'routes[0].address' must be \"unix:/path/to/socket\" "
	    "or \"inet:host:port\" (got \"tcp:127.0.0.1:24\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"lmtp\";\n"
	    "  address = \"inet:127.0.0.1:99999\"; } );\n",
	    "t.conf:3: 'routes[0].address' must be \"unix:/path/to/socket\" "
	    "or \"inet:host:port\" (got \"inet:127.0.0.1:99999\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"webhook\";\n"
	    "  url = \"ftp://x.example/\"; } );\n",
	    "t.conf:3: 'routes[0].url' must start with https:// or http:// "
	    "(got \"ftp://x.example/\")"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"pipe\";\n"
	    "  command = [ ]; } );\n",
	    "t.conf:3: 'routes[0].command' must name a program: [ "
	    "\"/path/to/program\", \"arg\", ... ]"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\";\n"
	    "  path = \"/m/\"; attachments_dir = \"/tmp/a\"; } );\n",
	    "t.conf:3: 'routes[0].attachments_dir' is not a parameter of "
	    "action \"maildir\""));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\";\n"
	    "  format = \"xml\"; } );\n",
	    "t.conf:3: 'routes[0].format' must be \"raw\" or \"json\" (got "
	    "\"xml\")"));
}

static void
test_config_errors_variables(void)
{
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\";\n"
	    "  path = \"/var/mail/${ticket}/\"; } );\n",
	    "t.conf:3: 'routes[0].path' uses ${ticket}, which no matcher of "
	    "this route provides (built-ins: rcpt, local, domain, sender, "
	    "sender_domain, client_ip, helo, queue_id; or a named group "
	    "(?<ticket>...) in its patterns)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"pipe\";\n"
	    "  command = [ \"/bin/x\",\n \"${auth_user}\" ]; } );\n",
	    "t.conf:4: 'routes[0].command[1]' uses ${auth_user}, which this "
	    "route provides only with 'authenticated = true' (or a user "
	    "pattern)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"pipe\";\n"
	    "  authenticated = false; command = [ \"/bin/x\", \"${auth_user}\" ]; } );\n",
	    "t.conf:3: 'routes[0].command[1]' uses ${auth_user}, which this "
	    "route provides only with 'authenticated = true' (or a user "
	    "pattern)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\";\n"
	    "  path = \"/var/mail/${local\"; } );\n",
	    "t.conf:3: 'routes[0].path' has a bad variable reference at "
	    "\"${local\": write ${name} (or $$ for a dollar sign)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\";\n"
	    "  path = \"${domain}/mail/\"; } );\n",
	    "t.conf:3: 'routes[0].path' must start with a fixed directory, "
	    "not a variable: the part before the first variable is the root "
	    "mail never leaves"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"maildir\";\n"
	    "  path = \"/var/mail/${domain}/../${local}/\"; } );\n",
	    "t.conf:3: 'routes[0].path' must not contain \".\" or \"..\" "
	    "components"));
	CHECK(fails_with("routes = ( { rcpt = \"^(?<p>.*)@\"; action = \"pipe\";\n"
	    "  command = [ \"/usr/bin/${p}\" ]; } );\n",
	    "t.conf:3: 'routes[0].command[0]' is the program to run: it "
	    "cannot use variables"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"relay\";\n"
	    "  upstream = \"${domain}\"; } );\n",
	    "t.conf:3: 'routes[0].upstream' cannot use variables"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"webhook\";\n"
	    "  url = \"https://a${domain}/\"; } );\n",
	    "t.conf:3: 'routes[0].url' can use variables only after the host "
	    "(in the path or the query)"));
	/* the right route is blamed, with its line */
	CHECK(fails_with("routes = ( { rcpt = \"(?<t>x)\"; action = \"debug\"; },\n"
	    " { rcpt = \".\"; action = \"maildir\";\n"
	    "   path = \"/m/${t}/\"; } );\n",
	    "t.conf:4: 'routes[1].path' uses ${t}, which no matcher of this "
	    "route provides (built-ins: rcpt, local, domain, sender, "
	    "sender_domain, client_ip, helo, queue_id; or a named group "
	    "(?<t>...) in its patterns)"));
}

static void
test_config_errors_names(void)
{
	CHECK(fails_with("routes = ( { name = \"a\"; rcpt = \".\"; action = \"debug\"; },\n"
	    " { name = \"a\"; rcpt = \".\"; action = \"debug\"; } );\n",
	    "t.conf:3: duplicate route name \"a\" (also at line 2)"));
	CHECK(fails_with("routes = ( { rcpt = \".\"; action = \"debug\"; },\n"
	    " { name = \"route1\"; rcpt = \".\"; action = \"debug\"; } );\n",
	    "t.conf:3: duplicate route name \"route1\" (also at line 2)"));
	CHECK(fails_with("routes = ( { name = \"a b\"; rcpt = \".\"; action = \"debug\"; } );\n",
	    "t.conf:2: 'routes[0].name' may hold only letters, digits, '_', "
	    "'-' and '.' (got \"a b\")"));
	CHECK(fails_with("accept_domains = [ \"example.test\" ];\n"
	    "routes = ( { rcpt = \".\"; action = \"debug\"; } );\n",
	    "t.conf:2: 'accept_domains' is a shorthand for routes and cannot "
	    "be used with 'routes': write a route for these domains "
	    "instead"));
	CHECK(fails_with("upstreams = ( { name = \"mx\"; hosts = [ \"a.example\" ]; } );\n",
	    "t.conf:2: 'upstreams[0].name' cannot be \"mx\": relay routes "
	    "use it for the recipient domain's MX hosts"));
	CHECK(fails_with("upstreams = ( { name = \"u\"; hosts = [ \"a.example\" ]; },\n"
	    " { name = \"u\"; hosts = [ \"b.example\" ]; } );\n",
	    "t.conf:3: duplicate upstream name \"u\" (also at line 2)"));
	CHECK(fails_with("upstreams = ( { name = \"u\";\n"
	    "  hosts = [ \"a.example:25\", \"2001:db8::1\" ]; } );\n",
	    "t.conf:3: 'upstreams[0].hosts[1]' must be \"host\", "
	    "\"host:port\" or \"[IPv6]:port\" (got \"2001:db8::1\")"));
	CHECK(fails_with("upstreams = ( { name = \"u\"; hosts = [ ]; } );\n",
	    "t.conf:2: 'upstreams[0].hosts' must name at least one host"));
	CHECK(fails_with("upstreams = ( { hosts = [ \"a.example\" ]; } );\n",
	    "t.conf:2: missing setting 'upstreams[0].name'"));
}

/* Every problem of a file at once. */
static void
test_config_all_errors(void)
{
	struct mxconf *c = load(
	    "routes = ( { rcpt = \"(\"; action = \"maildir\"; },\n"
	    " { rcpt = \".\"; action = \"relay\"; upstream = \"nope\"; } );\n");

	CHECK(c == NULL);
	CHECK_INT(nerrs, 3);
}

int
main(void)
{
	RUN(test_first_match_wins);
	RUN(test_no_route);
	RUN(test_rcpt_caseless);
	RUN(test_named_captures);
	RUN(test_builtin_variables);
	RUN(test_sender_matcher);
	RUN(test_client_networks);
	RUN(test_authenticated);
	RUN(test_tls_matcher);
	RUN(test_continue);
	RUN(test_reject_route);
	RUN(test_bare_postmaster);
	RUN(test_maildir_safety);
	RUN(test_relative_paths);
	RUN(test_pipe_arguments);
	RUN(test_json_escaping);
	RUN(test_webhook_url);
	RUN(test_lmtp_and_relay_params);
	RUN(test_relay_tricks);
	RUN(test_match_limit);
	RUN(test_sender_auth_flags);
	RUN(test_accept_domains_shorthand);
	RUN(test_config_errors_matchers);
	RUN(test_config_errors_actions);
	RUN(test_config_errors_variables);
	RUN(test_config_errors_names);
	RUN(test_config_all_errors);
	return unit_done();
}
