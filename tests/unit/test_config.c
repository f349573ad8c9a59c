/*
 * Unit tests of the configuration module: the embedded default and
 * etc/mxgate.conf, defaults, and one test per kind of problem, each checked
 * for its exact "FILE:LINE: problem" message.
 *
 * etc/mxgate.conf is found as argv[1], else under $MXGATE_SRCDIR, else
 * under $srcdir (exported by `make check`), else under ".".
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <libconfig.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * By path: under automake, -I for the build directory comes first, where
 * autoconf's own config.h lives.
 */
#include "common/config.h"
#include "smtp/checks.h"
#include "common/config_default.h"
#include "unit.h"
#include "common/util.h"

#define MAX_ERRS 32

static char errs[MAX_ERRS][2048];
static int nerrs;
static const char *sample_path;
static char manual_path[4096];

#define SAMPLE_IN_TREE "/etc/mxgate.conf"

static void
capture(const char *msg)
{
	if (nerrs < MAX_ERRS)
		snprintf(errs[nerrs], sizeof(errs[nerrs]), "%s", msg);
	nerrs++;
}

static struct mxconf *
load(const char *text)
{
	nerrs = 0;
	return config_load_string(text, "t.conf", capture);
}

static void
show_errors(void)
{
	int i;

	for (i = 0; i < nerrs && i < MAX_ERRS; i++)
		printf("#     error: %s\n", errs[i]);
}

/* The load of text fails with exactly this one message. */
static bool
fails_with(const char *text, const char *want)
{
	struct mxconf *c = load(text);

	if (c == NULL && nerrs == 1 && strcmp(errs[0], want) == 0)
		return true;
	printf("#   want: %s\n", want);
	if (c != NULL)
		printf("#   but it loaded\n");
	show_errors();
	config_free(c);
	return false;
}

static bool
has_error(const char *want)
{
	int i;

	for (i = 0; i < nerrs && i < MAX_ERRS; i++)
		if (strcmp(errs[i], want) == 0)
			return true;
	printf("#   missing error: %s\n", want);
	show_errors();
	return false;
}

/* A listener, on line 1, so that what follows starts on line 2. */
#define LISTEN "listen = ( { address = \"127.0.0.1\"; port = 2525; } );\n"

static char *
read_text(const char *path)
{
	char *text = NULL;
	long len;
	FILE *fp;

	if ((fp = fopen(path, "r")) == NULL)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0 &&
	    fseek(fp, 0, SEEK_SET) == 0) {
		text = calloc(1, (size_t)len + 1);
		if (text != NULL &&
		    fread(text, 1, (size_t)len, fp) != (size_t)len) {
			free(text);
			text = NULL;
		}
	}
	fclose(fp);
	return text;
}

static char tmpdir[64];

static const char *
write_tmp(const char *name, const char *text)
{
	static char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	if ((fp = fopen(path, "w")) == NULL)
		return NULL;
	fputs(text, fp);
	fclose(fp);
	return path;
}

static void
check_same(const struct mxconf *a, const struct mxconf *b)
{
	size_t i;

	CHECK_STR(a->hostname, b->hostname);
	CHECK_STR(a->user, b->user);
	CHECK(a->group == NULL && b->group == NULL);
	CHECK_STR(a->queue_user, b->queue_user);
	CHECK_INT(a->workers, b->workers);
	CHECK_STR(a->log_level, b->log_level);
	CHECK_INT(a->nlisteners, b->nlisteners);
	for (i = 0; i < a->nlisteners && i < b->nlisteners; i++) {
		CHECK_STR(a->listeners[i].address, b->listeners[i].address);
		CHECK_INT(a->listeners[i].port, b->listeners[i].port);
		CHECK_INT(a->listeners[i].role, b->listeners[i].role);
		CHECK_INT(a->listeners[i].ss_len, b->listeners[i].ss_len);
		CHECK(memcmp(&a->listeners[i].ss, &b->listeners[i].ss,
		    a->listeners[i].ss_len) == 0);
	}
	CHECK_STR(a->queue_dir, b->queue_dir);
	CHECK_INT(a->max_line, b->max_line);
	CHECK_INT(a->max_message_size, b->max_message_size);
	CHECK_INT(a->max_recipients, b->max_recipients);
	CHECK_INT(a->max_errors, b->max_errors);
	CHECK_INT(a->max_connections, b->max_connections);
	CHECK_INT(a->max_connections_per_ip, b->max_connections_per_ip);
	CHECK_STR(a->bare_newlines, b->bare_newlines);
	CHECK_INT(a->timeout_command, b->timeout_command);
	CHECK_INT(a->timeout_data, b->timeout_data);
	CHECK_INT(a->shutdown_grace, b->shutdown_grace);
	CHECK_INT(a->naccept_domains, b->naccept_domains);
	for (i = 0; i < a->naccept_domains && i < b->naccept_domains; i++)
		CHECK_STR(a->accept_domains[i], b->accept_domains[i]);
}

static void
check_defaults(const struct mxconf *c)
{
	char host[256];

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	CHECK_STR(c->hostname, host);
	CHECK_STR(c->user, "mxgate-smtp");
	CHECK(c->group == NULL);
	CHECK_STR(c->queue_user, "mxgate");
	CHECK_STR(c->delivery_user, "mxgate-deliver");
	CHECK_STR(c->lookup_user, "mxgate-auth");
	CHECK_STR(c->chroot_dir, "/var/lib/mxgate/empty");
	CHECK_INT(c->workers, 0);
	CHECK_STR(c->log_level, "info");
	CHECK_STR(c->queue_dir, "./var/queue");
	CHECK_INT(c->max_line, 512);
	CHECK_INT(c->max_message_size, 25 * 1024 * 1024);
	CHECK_INT(c->max_recipients, 100);
	CHECK_INT(c->max_errors, 10);
	CHECK_INT(c->max_connections, 0);
	CHECK_INT(c->max_connections_per_ip, 50);
	CHECK_INT(c->fair_share, 10);
	CHECK_INT(c->ipv6_prefix, 84);
	CHECK_STR(c->bare_newlines, "reject");
	CHECK_INT(c->timeout_command, 300);
	CHECK_INT(c->timeout_data, 180);
	CHECK_INT(c->timeout_proxy, 10);
	CHECK_INT(c->stress_threshold, 80);
	CHECK_INT(c->stress_timeout_command, 10);
	CHECK_INT(c->stress_timeout_data, 60);
	CHECK(c->greet_multiline);
	CHECK_INT(c->greet_pass_time, 86400);
	CHECK(!c->listeners[0].proxy_protocol);
	CHECK(c->listeners[0].proxy_nets == NULL);
	CHECK_INT(c->shutdown_grace, 30);
}

/* --- the default and the sample --- */

static void
test_default_loads(void)
{
	struct mxconf *c = config_default();
	const struct sockaddr_in *sin;

	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK_STR(c->path, "(default)");
	check_defaults(c);
	CHECK_INT(c->nlisteners, 1);
	CHECK_STR(c->listeners[0].address, "127.0.0.1");
	CHECK_INT(c->listeners[0].port, 2525);
	CHECK_INT(c->listeners[0].role, ROLE_MX);
	sin = (const struct sockaddr_in *)&c->listeners[0].ss;
	CHECK_INT(c->listeners[0].ss_len, sizeof(struct sockaddr_in));
	CHECK_INT(sin->sin_family, AF_INET);
	CHECK_INT(ntohs(sin->sin_port), 2525);
	CHECK_INT(ntohl(sin->sin_addr.s_addr), 0x7f000001);
	CHECK_INT(c->naccept_domains, 0);
	CHECK_INT(c->nroutes, 4);
	CHECK(c->route_table != NULL);
	if (c->nroutes == 4) {
		CHECK_STR(c->routes[0].name, "postmaster");
		CHECK_STR(c->routes[1].name, "local");
		CHECK_STR(c->routes[1].action, "maildir");
		CHECK_STR(c->routes[1].path, "./var/mail/${domain}/${local}/");
		/* the default for submission: authenticated users relay */
		CHECK_STR(c->routes[2].name, "submission");
		CHECK_STR(c->routes[2].action, "relay");
		CHECK_STR(c->routes[2].upstream, "mx");
		CHECK_STR(c->routes[3].name, "catchall");
		CHECK_INT(c->routes[3].code, 550);
	}
	config_free(c);
}

static void
test_sample_matches_default(void)
{
	struct mxconf *sample, *def;
	char *text;

	nerrs = 0;
	sample = config_load(sample_path, capture);
	show_errors();
	def = config_default();
	CHECK(sample != NULL);
	if (sample != NULL && def != NULL) {
		CHECK_STR(sample->path, sample_path);
		check_same(sample, def);
	}
	config_free(sample);
	config_free(def);

	/* Not only the same values: the same text, comments included. */
	text = read_text(sample_path);
	CHECK(text != NULL);
	if (text != NULL && strcmp(text, CONFIG_DEFAULT_TEXT) != 0)
		printf("#   %s and src/common/config_default.h differ\n", sample_path);
	CHECK(text != NULL && strcmp(text, CONFIG_DEFAULT_TEXT) == 0);
	free(text);
}

static void
test_defaults_filled_in(void)
{
	struct mxconf *c = load(LISTEN);

	CHECK(c != NULL);
	if (c == NULL) {
		show_errors();
		return;
	}
	CHECK_STR(c->path, "t.conf");
	check_defaults(c);
	CHECK_INT(c->listeners[0].role, ROLE_MX);
	CHECK_INT(c->naccept_domains, 0);
	CHECK(c->accept_domains == NULL);
	config_free(c);
}

static void
test_all_settings(void)
{
	struct mxconf *c = load(
	    "server = { hostname = \"MX.Example.test\"; user = \"mail\";\n"
	    "  group = \"mail\"; queue_user = \"daemon\"; workers = 4;"
	    " delivery_user = \"nobody\";\n"
	    "  log_level = \"debug\"; lookup_user = \"bin\";"
	    " chroot_dir = \"/var/empty\"; };\n"
	    "listen = ( { address = \"0.0.0.0\"; port = 25; role = \"mx\"; },\n"
	    "  { address = \"::\"; port = 587; role = \"submission\"; },\n"
	    "  { address = \"::1\"; port = 465; role = \"submissions\"; } );\n"
	    "queue = { directory = \"/var/spool/mxgate\"; };\n"
	    "limits = { line_length = 1000; message_size = 1048576;\n"
	    "  recipients = 1000; errors = 3; connections = 10;\n"
	    "  connections_per_ip = 0; bare_newlines = \"normalize\"; };\n"
	    "timeouts = { command = 60; data = 120; shutdown_grace = 5; };\n"
	    "accept_domains = [ \"Example.COM\", \"b.example\" ];\n"
	    "tls = { certificates = ( { cert = \"/etc/mx/rsa.pem\";\n"
	    "  key = \"/etc/mx/rsa.key\"; } ); min_version = \"TLSv1.3\";\n"
	    "  ciphers = \"ECDHE+AESGCM\"; ciphersuites = \"TLS_AES_128_GCM_SHA256\"; };\n"
	    "auth = { passwd_file = \"/etc/mx/passwd\"; sqlite = \"/etc/mx/u.db\";\n"
	    "  max_failures = 5; failure_delay = 0; allow_plaintext = true; };\n");

	CHECK(c != NULL);
	if (c == NULL) {
		show_errors();
		return;
	}
	CHECK_STR(c->hostname, "MX.Example.test");
	CHECK_STR(c->user, "mail");
	CHECK_STR(c->group, "mail");
	CHECK_STR(c->queue_user, "daemon");
	CHECK_STR(c->delivery_user, "nobody");
	CHECK_STR(c->lookup_user, "bin");
	CHECK_STR(c->chroot_dir, "/var/empty");
	CHECK_INT(c->workers, 4);
	CHECK_STR(c->log_level, "debug");
	CHECK_INT(c->nlisteners, 3);
	CHECK_INT(c->listeners[0].port, 25);
	CHECK_INT(c->listeners[1].role, ROLE_SUBMISSION);
	CHECK_INT(c->listeners[2].role, ROLE_SUBMISSIONS);
	CHECK_INT(c->listeners[1].ss.ss_family, AF_INET6);
	CHECK_STR(c->queue_dir, "/var/spool/mxgate");
	CHECK_INT(c->max_line, 1000);
	CHECK_INT(c->max_message_size, 1048576);
	CHECK_INT(c->max_recipients, 1000);
	CHECK_INT(c->max_errors, 3);
	CHECK_INT(c->max_connections, 10);
	CHECK_INT(c->max_connections_per_ip, 0);
	CHECK_STR(c->bare_newlines, "normalize");
	CHECK_INT(c->timeout_command, 60);
	CHECK_INT(c->timeout_data, 120);
	CHECK_INT(c->shutdown_grace, 5);
	CHECK_INT(c->naccept_domains, 2);
	/* Domains are lower-cased; the host name is kept as written. */
	CHECK_STR(c->accept_domains[0], "example.com");
	CHECK_STR(c->accept_domains[1], "b.example");
	CHECK_INT(c->ntls_certs, 1);
	CHECK_STR(c->tls_certs[0].cert, "/etc/mx/rsa.pem");
	CHECK_STR(c->tls_certs[0].key, "/etc/mx/rsa.key");
	CHECK_STR(c->tls_certs[0].where, "t.conf:13: 'tls.certificates[0]'");
	CHECK_STR(c->tls_min_version, "TLSv1.3");
	CHECK_STR(c->tls_ciphers, "ECDHE+AESGCM");
	CHECK_STR(c->tls_ciphersuites, "TLS_AES_128_GCM_SHA256");
	CHECK_STR(c->auth_passwd_file, "/etc/mx/passwd");
	CHECK_STR(c->auth_sqlite, "/etc/mx/u.db");
	CHECK_INT(c->auth_max_failures, 5);
	CHECK_INT(c->auth_failure_delay, 0);
	CHECK(c->auth_allow_plaintext);
	/* AUTH by role; plaintext AUTH from the global default. */
	CHECK_INT(c->listeners[0].auth, 0);
	CHECK_INT(c->listeners[1].auth, 1);
	CHECK_INT(c->listeners[2].auth, 1);
	CHECK_INT(c->listeners[1].allow_plaintext_auth, 1);
	config_free(c);
}

/* PROXY protocol listeners: from whom, compiled; nothing half-set. */
static void
test_listener_proxy(void)
{
	struct mxconf *c;

	c = load("listen = ( { address = \"127.0.0.1\"; port = 2525;\n"
	    "  proxy_protocol = true;\n"
	    "  proxy_from = [ \"192.0.2.5\", \"10.1.0.0/24\" ]; },\n"
	    "  { address = \"127.0.0.1\"; port = 2526; } );\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(c->listeners[0].proxy_protocol);
		CHECK_INT(c->listeners[0].nproxy_from, 2);
		CHECK(netlist_contains(c->listeners[0].proxy_nets, "10.1.0.77"));
		CHECK(netlist_contains(c->listeners[0].proxy_nets, "192.0.2.5"));
		CHECK(!netlist_contains(c->listeners[0].proxy_nets,
		    "192.0.2.6"));
		CHECK(!c->listeners[1].proxy_protocol);
		CHECK(c->listeners[1].proxy_nets == NULL);
	}
	config_free(c);
	CHECK(fails_with("listen = ( { address = \"::1\"; port = 25;\n"
	    "  proxy_protocol = true; } );\n",
	    "t.conf:1: 'listen[0]': proxy_protocol needs proxy_from, the "
	    "load balancers' addresses"));
	CHECK(fails_with("listen = ( { address = \"::1\"; port = 25;\n"
	    "  proxy_from = [ \"::1\" ]; } );\n",
	    "t.conf:1: 'listen[0]': proxy_from without proxy_protocol = "
	    "true"));
	CHECK(load("listen = ( { address = \"::1\"; port = 25;\n"
	    "  proxy_protocol = true; proxy_from = [ \"10.0.0.0/33\" ]; } "
	    ");\n") == NULL);
}

/* Listeners whose AUTH or TLS could never work are refused at load. */
static void
test_listener_auth_tls(void)
{
	struct mxconf *c;
	char *cwd;

	CHECK(fails_with("listen = ( { address = \"::1\"; port = 587;\n"
	    "  role = \"submission\"; } );\n"
	    "tls = { certificates = ( { cert = \"c\"; key = \"k\"; } ); };\n",
	    "t.conf:1: 'listen[0]': AUTH needs auth.passwd_file or "
	    "auth.sqlite"));
	CHECK(fails_with("auth = { passwd_file = \"/p\"; };\n"
	    "listen = ( { address = \"::1\"; port = 587;\n"
	    "  role = \"submission\"; } );\n",
	    "t.conf:2: 'listen[0]': AUTH is offered only under TLS: set "
	    "tls.certificates (or allow_plaintext_auth = true)"));
	CHECK(fails_with("auth = { passwd_file = \"/p\"; };\n"
	    "listen = ( { address = \"::1\"; port = 465;\n"
	    "  role = \"submissions\"; } );\n",
	    "t.conf:2: 'listen[0]': role \"submissions\" is TLS from the "
	    "first byte and needs tls.certificates"));
	CHECK(fails_with("auth = { passwd_file = \"/p\"; };\n"
	    "tls = { certificates = ( { cert = \"c\"; key = \"k\"; } ); };\n"
	    "listen = ( { address = \"::1\"; port = 587; auth = false;\n"
	    "  role = \"submission\"; } );\n",
	    "t.conf:3: 'listen[0]': a submission listener takes mail only "
	    "after AUTH: 'auth' cannot be false"));
	CHECK(fails_with(LISTEN "tls = { certificates = ( { cert = \"c\"; } ); };\n",
	    "t.conf:2: missing setting 'tls.certificates[0].key'"));
	CHECK(fails_with(LISTEN "tls = { min_version = \"SSLv3\"; };\n",
	    "t.conf:2: 'tls.min_version' must be \"TLSv1\", \"TLSv1.1\", "
	    "\"TLSv1.2\" or \"TLSv1.3\" (got \"SSLv3\")"));

	/* Plaintext AUTH on one mx listener; relative paths made absolute. */
	c = load("auth = { passwd_file = \"passwd\"; };\n"
	    "listen = ( { address = \"::1\"; port = 25; auth = true;\n"
	    "  allow_plaintext_auth = true; } );\n");
	CHECK(c != NULL);
	if (c == NULL) {
		show_errors();
		return;
	}
	CHECK_INT(c->listeners[0].auth, 1);
	CHECK_INT(c->listeners[0].allow_plaintext_auth, 1);
	CHECK_INT(c->ntls_certs, 0);
	CHECK_STR(c->tls_min_version, "TLSv1.2");
	CHECK_INT(c->auth_max_failures, 3);
	CHECK_INT(c->auth_failure_delay, 1);
	CHECK(!c->auth_allow_plaintext);
	cwd = getcwd(NULL, 0);
	if (cwd != NULL && c->auth_passwd_file != NULL) {
		CHECK(strncmp(c->auth_passwd_file, cwd, strlen(cwd)) == 0);
		CHECK_STR(c->auth_passwd_file + strlen(cwd), "/passwd");
	}
	free(cwd);
	config_free(c);
}

static void
test_sizes(void)
{
	static const struct {
		const char *value;
		long long bytes;
	} cases[] = {
		{ "\"25M\"", 25LL * 1024 * 1024 },
		{ "\"512K\"", 512LL * 1024 },
		{ "\"512k\"", 512LL * 1024 },
		{ "\"1G\"", 1024LL * 1024 * 1024 },
		{ "\"2G\"", 2048LL * 1024 * 1024 },
		{ "\"1K\"", 1024 },
		{ "\"4096\"", 4096 },
		{ "1024", 1024 },
		{ "2147483648L", 2048LL * 1024 * 1024 },
	};
	char text[256];
	struct mxconf *c;
	size_t i;

	for (i = 0; i < ARRAY_LEN(cases); i++) {
		snprintf(text, sizeof(text), LISTEN
		    "limits = { message_size = %s; };\n", cases[i].value);
		c = load(text);
		CHECK(c != NULL);
		if (c == NULL) {
			printf("#   message_size = %s\n", cases[i].value);
			show_errors();
			continue;
		}
		CHECK_INT(c->max_message_size, cases[i].bytes);
		config_free(c);
	}
}

static void
test_ipv6_listener(void)
{
	struct mxconf *c = load(
	    "listen = ( { address = \"::1\"; port = 2526; role = \"mx\"; },\n"
	    "  { address = \"127.0.0.1\"; port = 2526; } );\n");
	const struct sockaddr_in6 *sin6;
	struct in6_addr loop = IN6ADDR_LOOPBACK_INIT;

	CHECK(c != NULL);
	if (c == NULL) {
		show_errors();
		return;
	}
	CHECK_INT(c->nlisteners, 2);
	sin6 = (const struct sockaddr_in6 *)&c->listeners[0].ss;
	CHECK_INT(c->listeners[0].ss_len, sizeof(struct sockaddr_in6));
	CHECK_INT(sin6->sin6_family, AF_INET6);
	CHECK_INT(ntohs(sin6->sin6_port), 2526);
	CHECK(memcmp(&sin6->sin6_addr, &loop, sizeof(loop)) == 0);
	/* Same port on another family is no duplicate. */
	CHECK_INT(c->listeners[1].ss.ss_family, AF_INET);
	config_free(c);
}

/* --- problems, each with its FILE:LINE --- */

static void
test_unknown_keys(void)
{
	CHECK(fails_with(LISTEN "colour = \"blue\";\n",
	    "t.conf:2: unknown setting 'colour'"));
	CHECK(fails_with(LISTEN "limits = {\n  recipients = 5;\n"
	    "  mesage_size = \"10M\";\n};\n",
	    "t.conf:4: unknown setting 'limits.mesage_size'"));
	CHECK(fails_with(LISTEN "server = { hostname = \"a.example\"; "
	    "extra = { x = 1; }; };\n",
	    "t.conf:2: unknown setting 'server.extra'"));
	CHECK(fails_with("listen = (\n"
	    "  { address = \"127.0.0.1\"; port = 25; },\n"
	    "  { adress = \"::1\"; address = \"::1\"; port = 25; }\n);\n",
	    "t.conf:3: unknown setting 'listen[1].adress'"));
	/* A whole unknown group is one problem, not one per setting. */
	CHECK(fails_with(LISTEN
	    "dkim = {\n  cert = \"x\";\n  key = \"y\";\n};\n",
	    "t.conf:2: unknown setting 'dkim'"));
}

static void
test_wrong_types(void)
{
	CHECK(fails_with(LISTEN "limits = { recipients = \"100\"; };\n",
	    "t.conf:2: 'limits.recipients' must be an integer"));
	CHECK(fails_with(LISTEN "limits = { recipients = 1.5; };\n",
	    "t.conf:2: 'limits.recipients' must be an integer"));
	CHECK(fails_with(LISTEN "server = { hostname = 42; };\n",
	    "t.conf:2: 'server.hostname' must be a string"));
	CHECK(fails_with(LISTEN "limits = 5;\n",
	    "t.conf:2: 'limits' must be a group { ... }"));
	CHECK(fails_with(LISTEN "limits = { message_size = true; };\n",
	    "t.conf:2: 'limits.message_size' must be a size: an integer or "
	    "a string such as \"25M\""));
	CHECK(fails_with(LISTEN "accept_domains = \"example.test\";\n",
	    "t.conf:2: 'accept_domains' must be a list of strings "
	    "[ \"a\", \"b\" ]"));
	CHECK(fails_with(LISTEN "accept_domains = ( \"a.example\",\n  5 );\n",
	    "t.conf:3: 'accept_domains[1]' must be a non-empty string"));
	CHECK(fails_with("listen = { address = \"127.0.0.1\"; port = 25; };\n",
	    "t.conf:1: 'listen' must be a list of groups "
	    "( { ... }, { ... } )"));
	/* libconfig gives the last element of a list the line of the ")". */
	CHECK(fails_with("listen = (\n  \"127.0.0.1\" );\n",
	    "t.conf:2: 'listen[0]' must be a group { ... }"));
	CHECK(fails_with("listen = ( { address = \"127.0.0.1\"; "
	    "port = \"25\"; } );\n",
	    "t.conf:1: 'listen[0].port' must be an integer"));
}

static void
test_bad_values(void)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "server = { workers = -1; };",
		  "'server.workers' must be between 0 and 256 (got -1)" },
		{ "server = { workers = 257; };",
		  "'server.workers' must be between 0 and 256 (got 257)" },
		{ "server = { log_level = \"verbose\"; };",
		  "'server.log_level' must be \"error\", \"warn\", \"info\" or "
		  "\"debug\" (got \"verbose\")" },
		{ "server = { hostname = \"bad_host\"; };",
		  "'server.hostname' must be a host name such as "
		  "\"mx.example.com\" (got \"bad_host\")" },
		{ "server = { user = \"\"; };",
		  "'server.user' must not be empty" },
		{ "server = { user = \"no-such-user-mx\"; };",
		  "'server.user': no such user \"no-such-user-mx\"" },
		{ "server = { delivery_user = \"no-such-user-mx\"; };",
		  "'server.delivery_user': no such user \"no-such-user-mx\"" },
		{ "server = { chroot_dir = \"var/empty\"; };",
		  "'server.chroot_dir': an absolute path other than /, not"
		  " \"var/empty\"" },
		{ "server = { chroot_dir = \"//\"; };",
		  "'server.chroot_dir': an absolute path other than /, not"
		  " \"//\"" },
		{ "server = { group = \"no-such-group-mx\"; };",
		  "'server.group': no such group \"no-such-group-mx\"" },
		{ "queue = { directory = \"\"; };",
		  "'queue.directory' must not be empty" },
		{ "limits = { line_length = 511; };",
		  "'limits.line_length' must be between 512 and 65536 "
		  "(got 511)" },
		{ "limits = { line_length = 65537; };",
		  "'limits.line_length' must be between 512 and 65536 "
		  "(got 65537)" },
		{ "limits = { message_size = 1023; };",
		  "'limits.message_size' must be between 1K and 2G "
		  "(got 1023)" },
		{ "limits = { message_size = \"3G\"; };",
		  "'limits.message_size' must be between 1K and 2G (got 3G)" },
		{ "limits = { message_size = \"25X\"; };",
		  "'limits.message_size' must be a size such as \"25M\", "
		  "\"512K\" or \"1G\" (got \"25X\")" },
		{ "limits = { message_size = \"\"; };",
		  "'limits.message_size' must be a size such as \"25M\", "
		  "\"512K\" or \"1G\" (got \"\")" },
		{ "limits = { recipients = 0; };",
		  "'limits.recipients' must be between 1 and 10000 (got 0)" },
		{ "limits = { recipients = 10001; };",
		  "'limits.recipients' must be between 1 and 10000 "
		  "(got 10001)" },
		{ "limits = { errors = 0; };",
		  "'limits.errors' must be between 1 and 1000 (got 0)" },
		{ "limits = { errors = 1001; };",
		  "'limits.errors' must be between 1 and 1000 (got 1001)" },
		{ "limits = { connections = -1; };",
		  "'limits.connections' must be between 0 and 1000000 "
		  "(got -1)" },
		{ "limits = { ipv6_prefix = 0; };",
		  "'limits.ipv6_prefix' must be between 1 and 128 (got 0)" },
		{ "limits = { fair_share = 101; };",
		  "'limits.fair_share' must be between 0 and 100 (got 101)" },
		{ "stress = { threshold = 101; };",
		  "'stress.threshold' must be between 0 and 100 (got 101)" },
		{ "stress = { command = 0; };",
		  "'stress.command' must be between 1 and 86400 (got 0)" },
		{ "timeouts = { proxy = 0; };",
		  "'timeouts.proxy' must be between 1 and 300 (got 0)" },
		{ "greet_pass_time = \"31d\";",
		  "'greet_pass_time' must be between 0 and 2592000 "
		  "(got 2678400)" },
		{ "limits = { connections_per_ip = -1; };",
		  "'limits.connections_per_ip' must be between 0 and 1000000 "
		  "(got -1)" },
		{ "limits = { bare_newlines = \"allow\"; };",
		  "'limits.bare_newlines' must be \"reject\" or \"normalize\" "
		  "(got \"allow\")" },
		{ "timeouts = { command = 0; };",
		  "'timeouts.command' must be between 1 and 86400 (got 0)" },
		{ "timeouts = { data = -5; };",
		  "'timeouts.data' must be between 1 and 86400 (got -5)" },
		{ "timeouts = { shutdown_grace = 0; };",
		  "'timeouts.shutdown_grace' must be between 1 and 86400 "
		  "(got 0)" },
		{ "accept_domains = [ \"ok.example\", \"bad domain\" ];",
		  "'accept_domains[1]' is not a domain name "
		  "(got \"bad domain\")" },
		{ "accept_domains = [ \"\" ];",
		  "'accept_domains[0]' must be a non-empty string" },
	};
	char text[512], want[512];
	size_t i;

	for (i = 0; i < ARRAY_LEN(cases); i++) {
		snprintf(text, sizeof(text), LISTEN "%s\n", cases[i].text);
		snprintf(want, sizeof(want), "t.conf:2: %s", cases[i].want);
		CHECK(fails_with(text, want));
	}
}

static void
test_bad_listeners(void)
{
	static const struct {
		const char *entry, *want;
	} cases[] = {
		{ "address = \"127.0.0.1\"; port = 0;",
		  "'listen[0].port' must be between 1 and 65535 (got 0)" },
		{ "address = \"127.0.0.1\"; port = 65536;",
		  "'listen[0].port' must be between 1 and 65535 (got 65536)" },
		{ "address = \"localhost\"; port = 25;",
		  "'listen[0].address' must be an IPv4 or IPv6 address such as "
		  "\"127.0.0.1\" or \"::1\" (got \"localhost\")" },
		{ "address = \"256.1.1.1\"; port = 25;",
		  "'listen[0].address' must be an IPv4 or IPv6 address such as "
		  "\"127.0.0.1\" or \"::1\" (got \"256.1.1.1\")" },
		{ "address = \"[::1]\"; port = 25;",
		  "'listen[0].address' must be an IPv4 or IPv6 address such as "
		  "\"127.0.0.1\" or \"::1\" (got \"[::1]\")" },
		{ "address = \"::1\"; port = 25; role = \"relay\";",
		  "'listen[0].role' must be \"mx\", \"submission\" or "
		  "\"submissions\" (got \"relay\")" },
		{ "port = 25;",
		  "missing setting 'listen[0].address'" },
		{ "address = \"::1\";",
		  "missing setting 'listen[0].port'" },
	};
	char text[512], want[512];
	size_t i;

	for (i = 0; i < ARRAY_LEN(cases); i++) {
		snprintf(text, sizeof(text), "\nlisten = ( { %s } );\n",
		    cases[i].entry);
		snprintf(want, sizeof(want), "t.conf:2: %s", cases[i].want);
		CHECK(fails_with(text, want));
	}
}

static void
test_duplicate_listener(void)
{
	CHECK(fails_with("listen = (\n"
	    "  { address = \"127.0.0.1\"; port = 25; },\n"
	    "  { address = \"::1\"; port = 25; },\n"
	    "  { address = \"127.0.0.1\"; port = 25; role = \"mx\"; }\n"
	    ");\n",
	    "t.conf:4: duplicate listener 127.0.0.1 port 25 (also at line 2)"));
	/* The same address written another way is the same address. */
	CHECK(fails_with("listen = (\n"
	    "  { address = \"::1\"; port = 25; },\n"
	    "  { address = \"0:0::1\"; port = 25; }\n"
	    ");\n",
	    "t.conf:3: duplicate listener 0:0::1 port 25 (also at line 2)"));
}

static void
test_no_listener(void)
{
	const char *want = "no listener configured: say where to listen with "
	    "listen = ( { address = \"...\"; port = ...; } );";
	char full[512];

	snprintf(full, sizeof(full), "t.conf: %s", want);
	CHECK(fails_with("queue = { directory = \"/tmp/q\"; };\n", full));
	CHECK(fails_with("", full));
	snprintf(full, sizeof(full), "t.conf:2: %s", want);
	CHECK(fails_with("\nlisten = ( );\n", full));
}

static void
test_syntax_errors(void)
{
	CHECK(fails_with(LISTEN "limits = {\n  recipients = = 5;\n};\n",
	    "t.conf:3: syntax error"));
	CHECK(fails_with(LISTEN "limits = {\n  recipients = 5;\n\n",
	    "t.conf:5: syntax error"));
	CHECK(fails_with(LISTEN "server = { workers = 1; };\n"
	    "server = { workers = 2; };\n",
	    "t.conf:3: duplicate setting name"));
}

static void
test_several_errors(void)
{
	struct mxconf *c = load(
	    "listen = ( { address = \"nowhere\"; port = 99999; } );\n"
	    "limits = {\n"
	    "  recipients = 0;\n"
	    "  colour = 3;\n"
	    "};\n"
	    "typo = 1;\n"
	    "timeouts = { data = \"long\"; };\n");

	CHECK(c == NULL);
	CHECK_INT(nerrs, 6);
	CHECK(has_error("t.conf:1: 'listen[0].address' must be an IPv4 or IPv6 "
	    "address such as \"127.0.0.1\" or \"::1\" (got \"nowhere\")"));
	CHECK(has_error("t.conf:1: 'listen[0].port' must be between 1 and "
	    "65535 (got 99999)"));
	CHECK(has_error("t.conf:3: 'limits.recipients' must be between 1 and "
	    "10000 (got 0)"));
	CHECK(has_error("t.conf:4: unknown setting 'limits.colour'"));
	CHECK(has_error("t.conf:6: unknown setting 'typo'"));
	CHECK(has_error("t.conf:7: 'timeouts.data' must be an integer"));
	config_free(c);
}

/*
 * libconfig cuts integer literals to 32 bits (decimal ones up to 1.5, hex
 * ones always): such a value must never be taken for a smaller one.
 */
static void
test_wide_integers(void)
{
	struct mxconf *c;

	/* 0x100000064 would read as 100. */
	c = load(LISTEN "limits = { recipients = 0x100000064; };\n");
	CHECK(c == NULL);
	CHECK_INT(nerrs, 1);
	CHECK(strncmp(errs[0], "t.conf:2: 'limits.recipients'", 29) == 0);
	config_free(c);

	/* 4294967396 would read as 100 with libconfig 1.5. */
	c = load(LISTEN "limits = { recipients = 4294967396; };\n");
	CHECK(c == NULL);
	CHECK_INT(nerrs, 1);
	CHECK(strncmp(errs[0], "t.conf:2: 'limits.recipients'", 29) == 0);
	config_free(c);

	/* 2G exactly: read whole, or refused with advice, never cut. */
	c = load(LISTEN "limits = { message_size = 2147483648; };\n");
	if (c != NULL)
		CHECK_INT(c->max_message_size, 2048LL * 1024 * 1024);
	else
		CHECK(nerrs == 1 && strstr(errs[0], "L suffix") != NULL);
	config_free(c);

	/* Wide numbers in comments, strings and floats are not integers. */
	c = load(LISTEN "# recipients = 4294967396\n"
	    "server = { hostname = \"h4294967396.example\"; };"
	    " /* 0x1ffffffff */\n"
	    "limits = { recipients = 7; }; // 99999999999\n");
	CHECK(c != NULL);
	if (c != NULL)
		CHECK_INT(c->max_recipients, 7);
	show_errors();
	config_free(c);
}

static void
test_files(void)
{
	struct mxconf *c;
	const char *path;
	char want[512];

	nerrs = 0;
	c = config_load("/nonexistent/mxgate.conf", capture);
	CHECK(c == NULL);
	CHECK_INT(nerrs, 1);
	CHECK_STR(errs[0], "/nonexistent/mxgate.conf: cannot open: "
	    "No such file or directory");

	/* Messages name the file as given. */
	path = write_tmp("bad.conf",
	    LISTEN "\nlimits = { recipients = 0; };\n");
	CHECK(path != NULL);
	nerrs = 0;
	c = config_load(path, capture);
	CHECK(c == NULL);
	snprintf(want, sizeof(want), "%s:3: 'limits.recipients' must be "
	    "between 1 and 10000 (got 0)", path);
	CHECK_INT(nerrs, 1);
	CHECK_STR(errs[0], want);

	path = write_tmp("syntax.conf",
	    LISTEN "limits = { recipients = ; };\n");
	nerrs = 0;
	c = config_load(path, capture);
	CHECK(c == NULL);
	snprintf(want, sizeof(want), "%s:2: syntax error", path);
	CHECK_INT(nerrs, 1);
	CHECK_STR(errs[0], want);

	/* @include is relative to the including file, and named in errors. */
	write_tmp("limits.inc", "limits = {\n  recipients = 0;\n};\n");
	path = write_tmp("main.conf", LISTEN "@include \"limits.inc\"\n");
	nerrs = 0;
	c = config_load(path, capture);
	CHECK(c == NULL);
	snprintf(want, sizeof(want), "%s/limits.inc:2: 'limits.recipients' "
	    "must be between 1 and 10000 (got 0)", tmpdir);
	CHECK_INT(nerrs, 1);
	CHECK_STR(errs[0], want);
}

/*
 * Settings in an @include'd file are checked like any other, and each
 * problem names the included file and its line.  The include is nested
 * once, as operators split files (libconfig reads every @include relative
 * to the main file's directory).
 */
static bool
include_fails_with(const char *inc_text, unsigned line, const char *problem)
{
	struct mxconf *c;
	const char *path;
	char want[1024];

	write_tmp("problem.inc", inc_text);
	write_tmp("outer.inc", "# settings of this host\n"
	    "@include \"problem.inc\"\n");
	path = write_tmp("incmain.conf", LISTEN "@include \"outer.inc\"\n");
	snprintf(want, sizeof(want), "%s/problem.inc:%u: %s", tmpdir, line,
	    problem);
	nerrs = 0;
	c = config_load(path, capture);
	if (c == NULL && nerrs == 1 && strcmp(errs[0], want) == 0)
		return true;
	printf("#   want: %s\n", want);
	if (c != NULL)
		printf("#   but it loaded\n");
	show_errors();
	config_free(c);
	return false;
}

/*
 * A reload (config.h): the text the master hands to the queue process
 * and the spawner gives the same values, the @include'd settings in
 * place, relative paths from the start directory.
 */
static void
test_reload_text(void)
{
	struct mxconf *c, *again;
	const char *path;

	nerrs = 0;
	c = config_load(sample_path, capture);
	CHECK(c != NULL && c->text != NULL);
	if (c != NULL && c->text != NULL) {
		again = config_load_checked(c->text, c->path, "/start", capture);
		CHECK(again != NULL);
		if (again != NULL)
			check_same(c, again);
		config_free(again);
	}
	config_free(c);

	write_tmp("reload.inc", "limits = {\n  recipients = 7;\n};\n");
	path = write_tmp("reload.conf", LISTEN "@include \"reload.inc\"\n"
	    "auth = { passwd_file = \"etc/passwd\"; };\n");
	c = config_load(path, capture);
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(strstr(c->text, "@include") == NULL);
		again = config_load_checked(c->text, c->path, "/start", capture);
		CHECK(again != NULL);
		if (again != NULL) {
			CHECK_INT(again->max_recipients, 7);
			CHECK_STR(again->auth_passwd_file, "/start/etc/passwd");
		}
		config_free(again);
	}
	config_free(c);

	/* Where it is parsed again, the users may be out of reach (the
	 * queue process's root): the master checked them. */
	again = config_load_checked(LISTEN "server = { delivery_user ="
	    " \"no-such-user-here\"; group = \"no-such-group-here\"; };\n",
	    "t.conf", "/start", capture);
	CHECK(again != NULL);
	config_free(again);
	show_errors();
	CHECK_INT(nerrs, 0);
}

static void
test_include_problems(void)
{
	struct mxconf *c;
	const char *path;

	CHECK(include_fails_with("\nlimits = {\n  errors = 1001;\n};\n", 3,
	    "'limits.errors' must be between 1 and 1000 (got 1001)"));
	/* 2^32 + 100: libconfig 1.5 reads 100, the default. */
	CHECK(include_fails_with("limits = {\n  recipients = 4294967396;\n};\n",
	    2, "'limits.recipients': this integer does not fit in 32 bits "
	    "and libconfig cuts it; write it with an L suffix (3000000000L)"));
	/* A value on the line after its name: libconfig blames the name's. */
	CHECK(include_fails_with("limits = { recipients =\n  0x100000064; };\n",
	    1, "'limits.recipients': this integer does not fit in 32 bits "
	    "and libconfig cuts it; write it with an L suffix (3000000000L)"));
	CHECK(include_fails_with("timeouts = {\n\n  data = \"soon\";\n};\n", 3,
	    "'timeouts.data' must be an integer"));
	CHECK(include_fails_with("limits = {\n  recipients = 10;\n"
	    "  colour = \"blue\";\n};\n", 3, "unknown setting 'limits.colour'"));

	/* A good value in an included file is read as written. */
	write_tmp("problem.inc", "limits = {\n  recipients = 7;\n};\n");
	path = write_tmp("incmain.conf", LISTEN "@include \"outer.inc\"\n");
	nerrs = 0;
	c = config_load(path, capture);
	CHECK(c != NULL);
	if (c != NULL)
		CHECK_INT(c->max_recipients, 7);
	show_errors();
	config_free(c);
}

/* spf, policy, plugins, helo_checks, networks, rate_limits */
static void
test_checks_settings(void)
{
	struct mxconf *c = load(LISTEN);

	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_STR(c->spf_mail_from_policy, "none");
		CHECK_INT(c->spf_pass_mask, 1 << 2);      /* SPF_RES_PASS */
		CHECK_INT(c->spf_timeout, 10);
		CHECK(c->policy_service == NULL);
		CHECK_INT(c->policy_stages, 1 << STAGE_RCPT);
		/* Postfix's answer when its policy service is down. */
		CHECK_STR(c->policy_default,
		    "451 4.3.5 Server configuration problem");
		CHECK_INT(c->nplugins, 0);
		CHECK(!c->helo_checks);
		CHECK(c->reject_nets != NULL && c->trusted_nets != NULL);
		CHECK_INT(c->rate_connections, 0);
		CHECK_INT(c->rate_messages, 0);
	}
	config_free(c);

	c = load(LISTEN
	    "spf = { mail_from_policy = \"reject_fail\"; pass_results = "
	    "[ \"pass\", \"neutral\", \"none\" ]; timeout = 3; threads = 2; };\n"
	    "policy = { service = \"inet:127.0.0.1:10023\"; stages = [ "
	    "\"connect\", \"rcpt\", \"end_of_message\" ]; timeout = 2; "
	    "default = \"DEFER try later\"; };\n"
	    "helo_checks = true;\n"
	    "reject_networks = [ \"198.51.100.0/24\", \"2001:db8:bad::/48\" ];\n"
	    "trusted_networks = [ \"127.0.0.0/8\" ];\n"
	    "rate_limits = { connections_per_minute = 30; "
	    "messages_per_minute = 100; };\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_STR(c->spf_mail_from_policy, "reject_fail");
		CHECK_INT(c->spf_pass_mask, (1 << 2) | (1 << 1) | (1 << 0));
		CHECK_INT(c->spf_threads, 2);
		CHECK_STR(c->policy_service, "inet:127.0.0.1:10023");
		CHECK_INT(c->policy_stages, (1 << STAGE_CONNECT) |
		    (1 << STAGE_RCPT) | (1 << STAGE_END_OF_MESSAGE));
		CHECK_STR(c->policy_default, "DEFER try later");
		CHECK(c->helo_checks);
		CHECK_INT(c->rate_connections, 30);
		CHECK_INT(c->rate_messages, 100);
	}
	config_free(c);

	CHECK(fails_with(LISTEN "spf = { mail_from_policy = \"strict\"; };\n",
	    "t.conf:2: 'spf.mail_from_policy' must be \"none\" or "
	    "\"reject_fail\" (got \"strict\")"));
	CHECK(fails_with(LISTEN "spf = {\n pass_results = [ \"pass\",\n"
	    " \"temperror\" ]; };\n",
	    "t.conf:4: 'spf.pass_results[1]' must be \"pass\", \"neutral\", "
	    "\"softfail\", \"none\", \"fail\" or \"permerror\" (got "
	    "\"temperror\")"));
	CHECK(fails_with(LISTEN "policy = { service = \"inet:policy.example:1\"; };\n",
	    "t.conf:2: 'policy.service': inet: needs an IP address and a port, "
	    "\"inet:127.0.0.1:10023\" or \"inet:[::1]:10023\" (no host names: "
	    "the workers do no DNS for this)"));
	CHECK(fails_with(LISTEN "policy = { stages = [ \"rcpt\", \"quit\" ]; };\n",
	    "t.conf:2: 'policy.stages[1]' must be \"connect\", \"helo\", "
	    "\"mail\", \"rcpt\", \"data\" or \"end_of_message\" (got \"quit\")"));
	CHECK(fails_with(LISTEN "policy = { default = \"FILTER x:y\"; };\n",
	    "t.conf:2: 'policy.default': action \"FILTER\" is not supported by "
	    "mxgate (see mxgate.conf(5)); use DUNNO, OK, REJECT [text], "
	    "DEFER [text], \"4NN/5NN text\", WARN, INFO, HOLD or DISCARD"));
	CHECK(fails_with(LISTEN "reject_networks = [\n \"192.0.2.0/24\",\n"
	    " \"192.0.2.1/24\" ];\n",
	    "t.conf:4: 'reject_networks[1]' has bits set past its prefix length "
	    "(a host address with a network's length?) (got \"192.0.2.1/24\")"));
	CHECK(fails_with(LISTEN "trusted_networks = [ \"localhost\" ];\n",
	    "t.conf:2: 'trusted_networks[0]' is not an address or network such "
	    "as \"192.0.2.0/24\" or \"2001:db8::/32\" (got \"localhost\")"));
	CHECK(fails_with(LISTEN "spf = { pass_results = [ ]; };\n",
	    "t.conf:2: 'spf.pass_results' must not be empty"));
	/* Every bad entry of a list is reported, not only the first. */
	c = load(LISTEN "trusted_networks = [ \"a\",\n \"::1\", \"b\" ];\n");
	CHECK(c == NULL);
	CHECK_INT(nerrs, 2);
	CHECK(has_error("t.conf:2: 'trusted_networks[0]' is not an address or "
	    "network such as \"192.0.2.0/24\" or \"2001:db8::/32\" (got \"a\")"));
	CHECK(has_error("t.conf:3: 'trusted_networks[2]' is not an address or "
	    "network such as \"192.0.2.0/24\" or \"2001:db8::/32\" (got \"b\")"));
	config_free(c);
	CHECK(fails_with(LISTEN "plugins = (\n { path = \"/nonexistent/x.so\"; } );\n",
	    "t.conf:3: 'plugins[0].path': /nonexistent/x.so: No such file or "
	    "directory"));
	CHECK(fails_with(LISTEN "plugins = ( { args = \"x\"; } );\n",
	    "t.conf:2: missing setting 'plugins[0].path'"));
	CHECK(fails_with(LISTEN "rate_limits = { messages_per_minute = -1; };\n",
	    "t.conf:2: 'rate_limits.messages_per_minute' must be between 0 and "
	    "1000000 (got -1)"));
}

static void
test_free_null(void)
{
	config_free(NULL);
	CHECK(1);
}

static void
remove_tmp(void)
{
	static const char *const names[] = {
		"bad.conf", "syntax.conf", "limits.inc", "main.conf",
		"problem.inc", "outer.inc", "incmain.conf",
	};
	char path[256];
	size_t i;

	for (i = 0; i < ARRAY_LEN(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
		unlink(path);
	}
	rmdir(tmpdir);
}

/* delivery: durations, the retry list, upstreams' relay settings. */
static void
test_delivery_settings(void)
{
	struct mxconf *c = load(LISTEN);

	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_INT(c->nretry_schedule, 5);
		CHECK_INT(c->retry_schedule[0], 60);
		CHECK_INT(c->retry_schedule[4], 14400);
		CHECK_INT(c->max_queue_time, 5 * 86400);
		CHECK_INT(c->delay_warning, 0);
		CHECK_INT(c->concurrency, 20);
		CHECK_INT(c->concurrency_per_destination, 5);
		CHECK_INT(c->keep_delivered, 0);
		CHECK_STR(c->bounce_upstream, "mx");
		CHECK_INT(c->relay_data_timeout, 600);
	}
	config_free(c);

	c = load(LISTEN
	    "delivery = { retry_schedule = [ \"90s\", \"5m\", \"2h\" ];"
	    " max_queue_time = \"1w\"; delay_warning = \"4h\";"
	    " keep_delivered = \"2d\"; bounce_upstream = \"ex\"; };\n"
	    "upstreams = ( { name = \"ex\"; hosts = [ \"192.0.2.1\" ];"
	    " tls = \"required\"; tls_verify = false; auth_user = \"u\";"
	    " auth_password = \"p\"; helo = \"out.example\"; } );\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_INT(c->nretry_schedule, 3);
		CHECK_INT(c->retry_schedule[0], 90);
		CHECK_INT(c->retry_schedule[1], 300);
		CHECK_INT(c->retry_schedule[2], 7200);
		CHECK_INT(c->max_queue_time, 7 * 86400);
		CHECK_INT(c->delay_warning, 4 * 3600);
		CHECK_INT(c->keep_delivered, 2 * 86400);
		CHECK_INT(c->upstreams[0].tls, UPSTREAM_TLS_REQUIRED);
		CHECK(!c->upstreams[0].tls_verify);
		CHECK_STR(c->upstreams[0].auth_user, "u");
		CHECK_STR(c->upstreams[0].helo, "out.example");
	}
	config_free(c);
	c = load(LISTEN "upstreams = ( { name = \"ex\"; hosts = [ \"h\" ]; } );\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_INT(c->upstreams[0].tls, UPSTREAM_TLS_OPPORTUNISTIC);
		CHECK(c->upstreams[0].tls_verify);
	}
	config_free(c);

	CHECK(fails_with(LISTEN "delivery = { max_queue_time = \"5x\"; };\n",
	    "t.conf:2: 'delivery.max_queue_time' must be a duration: seconds,"
	    " or a string such as \"90s\", \"5m\", \"4h\", \"5d\" or \"1w\""));
	CHECK(fails_with(LISTEN "delivery = { retry_schedule = [ ]; };\n",
	    "t.conf:2: 'delivery.retry_schedule' must be a list of at least"
	    " one duration [ 60, \"5m\", ... ]"));
	CHECK(fails_with(LISTEN "delivery = { retry_schedule = [ 60, 0 ]; };\n",
	    "t.conf:2: 'delivery.retry_schedule[1]' must be between 1 and"
	    " 604800 seconds (got 0)"));
	CHECK(fails_with(LISTEN "delivery = { bounce_upstream = \"nope\"; };\n",
	    "t.conf:2: 'delivery.bounce_upstream': no upstream named \"nope\""
	    " (say \"mx\" or the name of one of upstreams)"));
	CHECK(fails_with(LISTEN "upstreams = ( { name = \"a\"; hosts = [ \"h\" ];"
	    " tls = \"maybe\"; } );\n",
	    "t.conf:2: 'upstreams[0].tls' must be \"none\", \"opportunistic\""
	    ", \"required\", \"may\", \"encrypt\", \"verify\" or \"dane\""
	    " (got \"maybe\")"));
}

/* The relay's TLS levels: the default follows delivery.dnssec, and DANE
 * without a trusted resolver is refused where it is asked for. */
static void
test_tls_levels(void)
{
	struct mxconf *c = load(LISTEN);

	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(!c->dnssec);
		CHECK_INT(c->mx_tls_level, TLS_LEVEL_MTA_STS);
		CHECK_INT(c->ntls_policies, 0);
	}
	config_free(c);
	c = load(LISTEN "delivery = { dnssec = true; tls_policy = ("
	    " { domain = \"Partner.Example\"; level = \"verify\"; },"
	    " { domain = \".sub.example\"; level = \"none\"; } ); };\n"
	    "upstreams = ( { name = \"ex\"; hosts = [ \"h\" ];"
	    " tls = \"dane\"; } );\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK_INT(c->mx_tls_level, TLS_LEVEL_MTA_STS);
		CHECK_INT(c->ntls_policies, 2);
		CHECK_STR(c->tls_policies[0].domain, "partner.example");
		CHECK_INT(c->tls_policies[0].level, TLS_LEVEL_VERIFY);
		CHECK_INT(c->tls_policies[1].level, TLS_LEVEL_NONE);
		CHECK_INT(c->upstreams[0].tls, UPSTREAM_TLS_DANE);
	}
	config_free(c);
	c = load(LISTEN "delivery = { dnssec = true; tls_level = \"encrypt\"; };\n");
	CHECK(c != NULL);
	if (c != NULL)
		CHECK_INT(c->mx_tls_level, TLS_LEVEL_ENCRYPT);
	config_free(c);
	CHECK(fails_with(LISTEN "delivery = { tls_level = \"dane\"; };\n",
	    "t.conf:2: 'delivery.tls_level' is \"dane\": DANE needs TLSA"
	    " records from a validating resolver: set delivery.dnssec = true"
	    " (with a validating resolver in /etc/resolv.conf)"));
	CHECK(fails_with(LISTEN "delivery = {\n tls_policy = (\n"
	    " { domain = \"a.example\"; level = \"dane\"; } ); };\n",
	    "t.conf:4: 'delivery.tls_policy[0].level' is \"dane\": DANE needs"
	    " TLSA records from a validating resolver: set delivery.dnssec ="
	    " true (with a validating resolver in /etc/resolv.conf)"));
	CHECK(fails_with(LISTEN "delivery = { tls_level = \"secure\"; };\n",
	    "t.conf:2: 'delivery.tls_level' must be \"none\", \"may\","
	    " \"encrypt\", \"verify\", \"dane\" or \"mta-sts\" (got"
	    " \"secure\")"));
	CHECK(fails_with(LISTEN "delivery = { tls_policy = ( { domain ="
	    " \"a..b\"; level = \"may\"; } ); };\n",
	    "t.conf:2: 'delivery.tls_policy[0].domain' must be a domain name, or"
	    " one with a leading \".\" for its subdomains (got \"a..b\")"));
}

/*
 * --- etc/mxgate.conf held to the table ---
 *
 * The sample shows every setting, set or commented out ("# name = ...;"
 * at the indentation of its group), under a comment that documents it and
 * says "default: VALUE" with the table's default written as in the file
 * (or "default: as below" over a line that sets it to that).  The settings
 * of a list's groups are documented in the comment above the list, each
 * on a line of its own, "#   name  what it is", continued on lines indented
 * deeper.
 */

struct sample {
	char   **lines;             /* the sample, commented-out settings set */
	size_t   nlines;
	config_t cf;
	int      problems;
};

static bool
is_comment(const char *line)
{
	return line[strspn(line, " \t")] == '#';
}

/* "  # name = value;" is a commented-out setting: "  name = value;". */
static bool
commented_setting(const char *line, size_t *indent)
{
	const char *p;

	*indent = strspn(line, " ");
	p = line + *indent;
	if (p[0] != '#' || p[1] != ' ' || !islower((unsigned char)p[2]))
		return false;
	p += 2 + strspn(p + 2, "abcdefghijklmnopqrstuvwxyz_0123456789");
	return strncmp(p, " = ", 3) == 0;
}

/* Set what the sample comments out, so that libconfig finds it too; a
 * commented-out list "# name = (" goes on to its "# );". */
static char *
uncomment_settings(const char *text, struct sample *smp)
{
	char *copy = strdup(text), *rest = copy, *line, *out;
	size_t indent, len, total = 0;
	bool in_list = false;
	size_t list_indent = 0;

	smp->lines = NULL;
	smp->nlines = 0;
	/* Line by line, empty ones too: line numbers are the sample's. */
	while ((line = strsep(&rest, "\n")) != NULL) {
		char *l;

		if (rest == NULL && line[0] == '\0')
			break;          /* after the last newline */
		l = strdup(line);

		len = strlen(l);
		if (in_list && strncmp(l + list_indent, "# ", 2) == 0 &&
		    strspn(l, " ") == list_indent) {
			memmove(l + list_indent, l + list_indent + 2,
			    len - list_indent - 1);
			if (strcmp(l + list_indent, ");") == 0)
				in_list = false;
		} else if (commented_setting(l, &indent)) {
			memmove(l + indent, l + indent + 2, len - indent - 1);
			in_list = l[strlen(l) - 1] == '(';
			list_indent = indent;
		}
		smp->lines = realloc(smp->lines,
		    (smp->nlines + 1) * sizeof(*smp->lines));
		smp->lines[smp->nlines++] = l;
		total += strlen(l) + 1;
	}
	free(copy);
	out = calloc(1, total + 1);
	for (size_t i = 0; i < smp->nlines; i++) {
		strcat(out, smp->lines[i]);
		strcat(out, "\n");
	}
	return out;
}

/* The comment right above line (1-based): its first line, 0 if none. */
static size_t
comment_above(const struct sample *smp, size_t line)
{
	size_t first = line;

	while (first > 1 && is_comment(smp->lines[first - 2]))
		first--;
	return first < line ? first : 0;
}

/* Lines from..to (1-based) without their '#', joined by spaces. */
static char *
comment_text(const struct sample *smp, size_t from, size_t to)
{
	size_t total = 1, i;
	char *out, *p;

	for (i = from; i <= to; i++)
		total += strlen(smp->lines[i - 1]) + 1;
	out = calloc(1, total);
	for (i = from; i <= to; i++) {
		p = smp->lines[i - 1];
		p += strspn(p, " \t");
		if (*p == '#')
			p++;
		p += strspn(p, " \t");
		if (*p == '\0')
			continue;
		if (out[0] != '\0')
			strcat(out, " ");
		strcat(out, p);
	}
	return out;
}

static void
sample_problem(struct sample *smp, const struct config_doc *d,
    unsigned line, const char *what)
{
	char where[32] = "";

	if (line > 0)
		snprintf(where, sizeof(where), ":%u", line);
	printf("#   %s%s: '%s%s%s' %s\n", sample_path, where,
	    d->list != NULL ? d->list : "", d->list != NULL ? "[]." : "",
	    d->path, what);
	smp->problems++;
}

/* The text documents the default, or says "as below" over it. */
static bool
default_documented(const char *text, const struct config_doc *d,
    const char *setting_line)
{
	char want[300], set[600];
	const char *name = strrchr(d->path, '.');

	snprintf(want, sizeof(want), "default: %s", d->def);
	if (strstr(text, want) != NULL)
		return true;
	name = name != NULL ? name + 1 : d->path;
	snprintf(set, sizeof(set), "%s = %s;", name, d->def);
	return setting_line != NULL && strstr(text, "default: as below") &&
	    strcmp(setting_line + strspn(setting_line, " "), set) == 0;
}

/* A setting of the main table: set or shown, under its comment. */
static void
sample_check_setting(struct sample *smp, const struct config_doc *d)
{
	config_setting_t *s = config_lookup(&smp->cf, d->path);
	size_t line, first;
	char *text;

	if (s == NULL) {
		sample_problem(smp, d, 0, "is neither set nor shown in a "
		    "comment (\"# name = value;\")");
		return;
	}
	line = config_setting_source_line(s);
	if ((first = comment_above(smp, line)) == 0) {
		sample_problem(smp, d, (unsigned)line, "has no comment "
		    "right above it to document it");
		return;
	}
	text = comment_text(smp, first, line - 1);
	if (d->def[0] != '\0' &&
	    !default_documented(text, d, smp->lines[line - 1]))
		sample_problem(smp, d, (unsigned)line, "has no \"default: "
		    "...\" with the table's default in its comment");
	free(text);
}

/* A setting of a list's groups: an entry in the comment over the list. */
static void
sample_check_entry(struct sample *smp, const struct config_doc *d)
{
	config_setting_t *list = config_lookup(&smp->cf, d->list);
	size_t line, first, i, end, indent = 0, n;
	const char *p;
	char *text;

	if (list == NULL)
		return;         /* the list itself was reported */
	line = config_setting_source_line(list);
	if ((first = comment_above(smp, line)) == 0)
		return;
	n = strlen(d->path);
	for (i = first; i < line; i++) {
		p = smp->lines[i - 1];
		p += strspn(p, " ");
		indent = strspn(p + 1, " ");
		p += 1 + indent;
		if (indent > 0 && strncmp(p, d->path, n) == 0 &&
		    (p[n] == '\0' || strncmp(p + n, "  ", 2) == 0))
			break;
	}
	if (i == line) {
		sample_problem(smp, d, (unsigned)line, "has no line \"#   "
		    "name  what it is\" in the comment above the list");
		return;
	}
	for (end = i + 1; end < line; end++) {
		p = smp->lines[end - 1];
		p += strspn(p, " ") + 1;
		if (strspn(p, " ") <= indent)
			break;
	}
	text = comment_text(smp, i, end - 1);
	if (d->def[0] != '\0' && !default_documented(text, d, NULL))
		sample_problem(smp, d, (unsigned)i, "has no \"default: ...\" "
		    "with the table's default in its entry");
	free(text);
}

static void
sample_check(const struct config_doc *d, void *arg)
{
	if (d->list == NULL)
		sample_check_setting(arg, d);
	else
		sample_check_entry(arg, d);
}

static void
test_sample_documents_table(void)
{
	char *text = read_text(sample_path), *set;
	struct sample smp = { .problems = 0 };
	struct mxconf *c;
	int i, unknown = 0;

	CHECK(text != NULL);
	if (text == NULL)
		return;
	set = uncomment_settings(text, &smp);

	/* What the comments show is known to the table too. */
	nerrs = 0;
	c = config_load_string(set, sample_path, capture);
	for (i = 0; i < nerrs && i < MAX_ERRS; i++) {
		if (strstr(errs[i], ": unknown setting '") == NULL)
			continue;
		printf("#   shown in a comment: %s\n", errs[i]);
		unknown++;
	}
	CHECK_INT(unknown, 0);
	config_free(c);

	config_init(&smp.cf);
	CHECK(config_read_string(&smp.cf, set) == CONFIG_TRUE);
	config_describe(sample_check, &smp);
	CHECK_INT(smp.problems, 0);
	config_destroy(&smp.cf);
	for (size_t j = 0; j < smp.nlines; j++)
		free(smp.lines[j]);
	free(smp.lines);
	free(set);
	free(text);
}

/* --- the manual page, made from the table --- */

static char *
manual_text(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	if (fp == NULL)
		return NULL;
	config_write_manual(fp);
	fclose(fp);
	return text;
}

/* Where a and b first differ: line number, and the two lines. */
static void
show_first_difference(const char *a, const char *b)
{
	unsigned line = 1;
	size_t i = 0, start = 0;

	for (; a[i] != '\0' && a[i] == b[i]; i++)
		if (a[i] == '\n') {
			line++;
			start = i + 1;
		}
	printf("#   first difference at line %u:\n", line);
	printf("#   committed: %.*s\n", (int)strcspn(a + start, "\n"),
	    a + start);
	printf("#   the table: %.*s\n", (int)strcspn(b + start, "\n"),
	    b + start);
}

/*
 * doc/mxgate.conf.5 is what the table makes: a row changed without the
 * page regenerated fails here.
 */
static void
test_manual_up_to_date(void)
{
	char *page = read_text(manual_path), *made = manual_text();

	CHECK(page != NULL);
	CHECK(made != NULL);
	if (page != NULL && made != NULL && strcmp(page, made) != 0) {
		printf("#   %s is not what the configuration table makes:\n"
		    "#   regenerate it with `make -C build manual` "
		    "(tests/run.sh builds in build/) and commit it\n",
		    manual_path);
		show_first_difference(page, made);
		CHECK(strcmp(page, made) == 0);
	}
	free(page);
	free(made);
}

struct manual_check {
	const char *page;
	int missing;
};

static void
manual_has_setting(const struct config_doc *d, void *arg)
{
	struct manual_check *m = arg;
	char want[512];

	snprintf(want, sizeof(want), "\n.B %s\n", d->path);
	if (strstr(m->page, want) != NULL)
		return;
	printf("#   setting %s%s%s is not in the manual\n",
	    d->list != NULL ? d->list : "", d->list != NULL ? "." : "",
	    d->path);
	m->missing++;
}

/*
 * What the generator makes, whatever the rows: every setting has its
 * entry, and every line that groff reads as a request is one of the man
 * macros the page uses (an unescaped '.' or '\'' from a doc string would
 * start a line with something else).
 */
static void
test_manual_generated(void)
{
	static const char *const macros[] = {
		"\\\"", "TH", "SH", "SS", "TP", "B", "I", "BR", "IR", "RI",
		"BI", "IB", "RB", "PP", "IP", "RS", "RE", "EX", "EE", "br",
		"nh", "ad", "nr", NULL
	};
	struct manual_check m = { NULL, 0 };
	char *made = manual_text(), *line, *save = NULL;
	size_t i, len;
	int bad = 0;

	CHECK(made != NULL);
	if (made == NULL)
		return;
	m.page = made;
	config_describe(manual_has_setting, &m);
	CHECK_INT(m.missing, 0);
	CHECK(strstr(made, "\n.SS routes\n") != NULL);
	CHECK(strstr(made, "\n.B limits.recipients\n\\fIinteger\\fP, 1 to "
	    "10000; default \\fB100\\fP.\n") != NULL);
	for (line = strtok_r(made, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '\'') {
			printf("#   line starts with a quote: %s\n", line);
			bad++;
		}
		if (line[0] != '.')
			continue;
		len = strcspn(line + 1, " ");
		for (i = 0; macros[i] != NULL; i++)
			if (strlen(macros[i]) == len &&
			    strncmp(line + 1, macros[i], len) == 0)
				break;
		if (macros[i] == NULL) {
			printf("#   unexpected request: %s\n", line);
			bad++;
		}
	}
	CHECK_INT(bad, 0);
	free(made);
}

int
main(int argc, char **argv)
{
	static char path[4096];
	const char *dir;
	size_t len;

	if (argc > 1) {
		sample_path = argv[1];
	} else {
		if ((dir = getenv("MXGATE_SRCDIR")) == NULL &&
		    (dir = getenv("srcdir")) == NULL)
			dir = ".";
		snprintf(path, sizeof(path), "%s/etc/mxgate.conf", dir);
		sample_path = path;
	}
	/* The manual beside the sample: SRCDIR/doc/mxgate.conf.5. */
	len = strlen(sample_path);
	dir = sample_path;
	if (len >= strlen(SAMPLE_IN_TREE) && strcmp(sample_path + len -
	    strlen(SAMPLE_IN_TREE), SAMPLE_IN_TREE) == 0) {
		len -= strlen(SAMPLE_IN_TREE);
	} else {
		dir = ".";
		len = 1;
	}
	snprintf(manual_path, sizeof(manual_path), "%.*s/doc/mxgate.conf.5",
	    (int)len, dir);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}

	RUN(test_default_loads);
	RUN(test_sample_matches_default);
	RUN(test_sample_documents_table);
	RUN(test_defaults_filled_in);
	RUN(test_all_settings);
	RUN(test_sizes);
	RUN(test_ipv6_listener);
	RUN(test_unknown_keys);
	RUN(test_wrong_types);
	RUN(test_bad_values);
	RUN(test_bad_listeners);
	RUN(test_duplicate_listener);
	RUN(test_no_listener);
	RUN(test_syntax_errors);
	RUN(test_several_errors);
	RUN(test_wide_integers);
	RUN(test_files);
	RUN(test_include_problems);
	RUN(test_reload_text);
	RUN(test_free_null);
	RUN(test_checks_settings);
	RUN(test_listener_proxy);
	RUN(test_listener_auth_tls);
	RUN(test_delivery_settings);
	RUN(test_tls_levels);
	RUN(test_manual_up_to_date);
	RUN(test_manual_generated);
	remove_tmp();
	return unit_done();
}
