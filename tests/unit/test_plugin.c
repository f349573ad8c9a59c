/*
 * Unit tests of the plugin loader with contrib/plugins/example.c, built
 * by make as plugins/example.so in the build tree ($MXGATE_EXAMPLE_PLUGIN
 * overrides the path): loading, ABI and init errors with their
 * configuration line, and each kind of verdict.
 */
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "smtp/plugin.h"
#include "common/util.h"
#include "unit.h"

static const char *example_path;
static const char *minimal_path;
static char errors[4096];

static void
collect(const char *msg)
{
	size_t len = strlen(errors);

	snprintf(errors + len, sizeof(errors) - len, "%s\n", msg);
}

static int
load(const char *path, const char *args, bool init)
{
	struct plugin_conf pc;
	struct mxconf conf;

	memset(&pc, 0, sizeof(pc));
	memset(&conf, 0, sizeof(conf));
	pc.path = (char *)path;
	pc.args = (char *)args;
	snprintf(pc.where, sizeof(pc.where), "test.conf:7: 'plugins[0]'");
	conf.plugins = &pc;
	conf.nplugins = 1;
	errors[0] = '\0';
	return plugins_load(&conf, init, collect);
}

static struct mxgate_session
session(const char *helo, const char *rcpt)
{
	struct mxgate_session s;

	memset(&s, 0, sizeof(s));
	s.size_of = sizeof(s);
	s.id = 42;
	s.client_ip = "192.0.2.1";
	s.helo = helo;
	s.queue_id = "";
	s.sender = "";
	s.rcpt = rcpt;
	s.headers = "Subject: hello\r\n\r\n";
	s.headers_len = strlen(s.headers);
	s.message_size = 100;
	return s;
}

static void
test_verdicts(void)
{
	struct plugin_session *ps;
	struct mxgate_session s;
	struct policy_answer a;

	CHECK_INT(load(example_path, "prefix=no- max_messages=1 "
	    "trust_helo=trusted.example", true), 0);
	CHECK_STR(errors, "");
	CHECK_INT(plugins_count(), 1);
	s = session("client.example", "");
	ps = plugins_session_new(&s);
	CHECK(ps != NULL);

	plugins_run(ps, PLUGIN_HELO, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	s = session("Trusted.Example", "");
	plugins_run(ps, PLUGIN_HELO, &s, &a);
	CHECK_INT(a.verdict, POLICY_ACCEPT);
	CHECK_STR(a.why, "plugin=example");

	s = session("client.example", "no-one@example.test");
	plugins_run(ps, PLUGIN_RCPT, &s, &a);
	CHECK_INT(a.verdict, POLICY_REJECT);
	CHECK_INT(a.code, 550);
	CHECK_STR(a.text, "5.7.1 <no-one@example.test>: recipient blocked by "
	    "the example plugin");
	s = session("client.example", "someone@example.test");
	plugins_run(ps, PLUGIN_RCPT, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);

	/* Hooks whose trigger is not configured: continue. */
	plugins_run(ps, PLUGIN_CONNECT, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_run(ps, PLUGIN_MAIL, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_run(ps, PLUGIN_DATA, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);

	/* Per-session counting: the second message is one too many. */
	plugins_run(ps, PLUGIN_MESSAGE, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_run(ps, PLUGIN_MESSAGE, &s, &a);
	CHECK_INT(a.verdict, POLICY_TEMPFAIL);
	CHECK_INT(a.code, 451);
	CHECK(strstr(a.text, "4.7.1 example plugin: more than 1") == a.text);
	plugins_session_end(ps);

	/* A new session starts counting again. */
	ps = plugins_session_new(&s);
	plugins_run(ps, PLUGIN_MESSAGE, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_session_end(ps);
	plugins_unload();
	CHECK_INT(plugins_count(), 0);
	CHECK(plugins_session_new(&s) == NULL);
}

/* on_connect, on_mail and on_data, each on its own trigger. */
static void
test_envelope_hooks(void)
{
	struct plugin_session *ps;
	struct mxgate_session s;
	struct policy_answer a;

	CHECK_INT(load(example_path, "refuse_client=192.0.2.1 "
	    "refuse_sender=<> defer_sender=Bulk@Example.org", true), 0);
	CHECK_STR(errors, "");
	s = session("", "");
	ps = plugins_session_new(&s);

	plugins_run(ps, PLUGIN_CONNECT, &s, &a);
	CHECK_INT(a.verdict, POLICY_REJECT);
	CHECK_INT(a.code, 554);
	CHECK_STR(a.text, "5.7.1 <192.0.2.1>: client refused by the example "
	    "plugin");
	s.client_ip = "192.0.2.10";
	plugins_run(ps, PLUGIN_CONNECT, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);

	/* "<>" is the null sender, and no other. */
	plugins_run(ps, PLUGIN_MAIL, &s, &a);
	CHECK_INT(a.verdict, POLICY_REJECT);
	CHECK_INT(a.code, 550);
	CHECK_STR(a.text, "5.7.1 <>: sender refused by the example plugin");
	s.sender = "bulk@example.org";
	plugins_run(ps, PLUGIN_MAIL, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);

	s.nrcpts = 2;
	plugins_run(ps, PLUGIN_DATA, &s, &a);
	CHECK_INT(a.verdict, POLICY_TEMPFAIL);
	CHECK_INT(a.code, 451);
	CHECK_STR(a.text, "4.7.1 <bulk@example.org>: message for 2 "
	    "recipient(s) deferred by the example plugin");
	s.sender = "someone@example.org";
	plugins_run(ps, PLUGIN_DATA, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_session_end(ps);
	plugins_unload();
}

static void
test_load_errors(void)
{
	CHECK_INT(load(example_path, "colour=blue", true), -1);
	CHECK(strstr(errors, "test.conf:7: 'plugins[0]': plugin ") == errors);
	CHECK(strstr(errors, "unknown argument \"colour\"") != NULL);
	CHECK_INT(plugins_count(), 0);

	/* mxgated -n: loaded and checked, init not called. */
	CHECK_INT(load(example_path, "colour=blue", false), 0);
	plugins_unload();

	CHECK_INT(load("/nonexistent/plugin.so", NULL, true), -1);
	CHECK(strstr(errors, "test.conf:7: 'plugins[0]': plugin "
	    "/nonexistent/plugin.so: cannot load") == errors);

	CHECK_INT(load("libm.so.6", NULL, true), -1);
	CHECK(strstr(errors, "not an mxgate plugin") != NULL);
}

/*
 * tests/unit/data/minimal_plugin.c sets no init, fini, session functions
 * nor any hook but on_rcpt: each of those is nothing to do.
 */
static void
test_unset_hooks(void)
{
	static const enum plugin_hook others[] = { PLUGIN_CONNECT,
	    PLUGIN_HELO, PLUGIN_MAIL, PLUGIN_DATA, PLUGIN_MESSAGE };
	struct plugin_session *ps;
	struct mxgate_session s;
	struct policy_answer a;

	CHECK_INT(load(minimal_path, "", true), 0);
	CHECK_STR(errors, "");
	CHECK_INT(plugins_count(), 1);
	s = session("client.example", "refused@example.test");
	ps = plugins_session_new(&s);
	CHECK(ps != NULL);
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		plugins_run(ps, others[i], &s, &a);
		CHECK_INT(a.verdict, POLICY_CONTINUE);
	}
	plugins_run(ps, PLUGIN_RCPT, &s, &a);
	CHECK_INT(a.verdict, POLICY_REJECT);
	CHECK_INT(a.code, 550);
	CHECK_STR(a.text, "5.7.1 minimal says no");
	s = session("client.example", "welcome@example.test");
	plugins_run(ps, PLUGIN_RCPT, &s, &a);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	plugins_session_end(ps);
	plugins_unload();
	CHECK_INT(plugins_count(), 0);
}

int
main(void)
{
	example_path = getenv("MXGATE_EXAMPLE_PLUGIN");
	if (example_path == NULL)
		example_path = "plugins/example.so";
	minimal_path = "plugins/minimal.so";
	RUN(test_verdicts);
	RUN(test_unset_hooks);
	RUN(test_envelope_hooks);
	RUN(test_load_errors);
	return unit_done();
}
