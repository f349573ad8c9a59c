/*
 * config — the configuration file, loaded and checked completely before
 * anything uses it (see config.h).
 *
 * As in nginx, every setting is declared once, in a table (mxconf_specs
 * and listener_specs below): its path, type, default, range or allowed
 * words, an optional checker, the parser of the module that owns it (spf,
 * policy, checks: config_value_fn), and its documentation.  One walker
 * drives parsing, checking, defaults and freeing from those tables, so a
 * new setting is one table line plus its struct field.  A group is implied
 * by the dotted paths ("limits.recipients" makes "limits" a group); a list
 * of groups ("listen") has its own table, applied to each element.
 *
 * The same table is the documentation: config_write_manual() makes
 * mxgate.conf(5) from it (doc/mxgate.conf.5, `make manual`), and
 * test_config holds etc/mxgate.conf to it.  A row's doc says what the
 * manual should: units, what 0 means, an example.
 *
 * Every problem is reported as "FILE:LINE: problem" and the walk goes on,
 * so that the operator sees all problems of a file at once; the load fails
 * if there was any.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <errno.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/addr.h"
#include "smtp/checks.h"
#include "smtp/dnsbl.h"
#include "common/config.h"
#include "common/config_default.h"
#include "common/config_manual.h"
#include "common/log.h"
#include "common/metrics.h"
#include "smtp/policy.h"
#include "smtp/route.h"
#include "smtp/spf.h"
#include "common/util.h"

#define KB 1024LL
#define MB (1024LL * KB)
#define GB (1024LL * MB)

/*
 * An integer literal of the configuration.  libconfig 1.5 stores a decimal
 * literal that does not fit in 32 bits into an int (truncated, silently),
 * and even recent versions do so for hexadecimal literals; the
 * literals are scanned separately so that such a value is an error rather
 * than, say, "recipients = 4294967396" read as 100.  The @include'd files
 * are scanned too: libconfig cuts their literals the same way.
 */
struct int_literal {
	size_t     file;        /* index in conf_ctx.files */
	unsigned   line;
	long long  value;
	bool       wide;        /* does not fit in an int */
};

/*
 * A text scanned for literals: files[0] is the main text (both names
 * NULL, as libconfig names none for a string it read), the others are
 * @include'd files, which libconfig 1.5 names as written in the directive
 * and later versions with the include directory in front.
 */
struct scanned_file {
	char *written;
	char *path;
};

struct conf_ctx {
	const char         *name;        /* file being loaded */
	const char         *include_dir; /* where its @include files are */
	config_error_fn     errfn;
	unsigned            nerrors;
	struct int_literal *literals;
	size_t              nliterals;
	bool                any_wide;
	struct scanned_file *files;
	size_t              nfiles;
	/* config_load_checked(): a text the master has checked, parsed in a
	 * process that may not see the files (queue, spawner) */
	bool                checked;
	const char         *base_dir;    /* relative paths start here */
};

enum conf_type {
	CT_INT,         /* integer within min..max */
	CT_SIZE,        /* integer or "25M", within min..max */
	CT_STRING,      /* non-empty string, one of words if words is set */
	CT_ENUM,        /* one of words, stored as its index (an enum) */
	CT_STRLIST,     /* [ "a", "b" ]: char ** (NULL-terminated) + count */
	CT_LIST,        /* ( { ... }, ... ): array of sub->elem_size + count */
	CT_BOOL,        /* true or false: a bool, or an int that is -1 when
	                   the setting is absent and has no default */
	CT_BOOLSTR,     /* true, false or a non-empty string:
	                   struct conf_boolstr */
	CT_DURATION,    /* seconds: an integer or "90s" "5m" "4h" "5d" "1w" */
	CT_DURLIST,     /* [ durations ]: unsigned * + count, at least one */
};

#define CF_REQUIRED 0x01
#define CF_NONEMPTY 0x02        /* CT_STRLIST: [ ] is an error */

struct conf_spec;

/* Extra check of a value once stored in base; reports and returns -1. */
typedef int (*conf_check_fn)(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base);

struct conf_table {
	const struct conf_spec *specs;      /* ends with a NULL path */
	size_t elem_size;                   /* for a list of these groups */
	/* After a group of this table was walked: derive fields. */
	void (*finish)(struct conf_ctx *ctx, config_setting_t *group,
	    const char *name, void *base);
};

struct conf_spec {
	const char      *path;      /* relative to the table's group */
	enum conf_type   type;
	size_t           off;       /* field in the struct being filled */
	size_t           width;     /* its size, for integers */
	size_t           count_off; /* CT_STRLIST, CT_LIST: the size_t count */
	const char      *def;       /* default, written as in the file */
	long long        min, max;
	const char *const *words;
	conf_check_fn    check;
	config_value_fn  value;     /* the owning module's parser */
	const struct conf_table *sub;   /* CT_LIST */
	unsigned         flags;
	const char      *doc;
};

#define FIELD(type, member) \
	.off = offsetof(type, member), .width = sizeof(((type *)0)->member)
#define COUNT(type, member) .count_off = offsetof(type, member)

static int check_hostname(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_domains(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_ip_address(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_chroot_dir(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_user(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_group(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_listeners_unique(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static void listener_finish(struct conf_ctx *, config_setting_t *,
    const char *, void *);
static int check_routes(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_upstream_hosts(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_upstreams(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_tls_policy_domain(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_abs_path(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_metrics_listen(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static void tls_cert_finish(struct conf_ctx *, config_setting_t *,
    const char *, void *);
static int check_policy_stages(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static int check_plugin_path(struct conf_ctx *, const struct conf_spec *,
    config_setting_t *, const char *, void *);
static void plugin_finish(struct conf_ctx *, config_setting_t *,
    const char *, void *);

/* In the order of enum listener_role. */
static const char *const listener_roles[] = {
	"mx", "submission", "submissions", NULL
};
static const char *const log_levels[] = {
	"error", "warn", "info", "debug", NULL
};
static const char *const log_formats[] = {
	"text", "json", NULL
};
static const char *const bare_newline_modes[] = {
	"reject", "normalize", NULL
};

static const struct conf_spec listener_specs[] = {
	{ .path = "address", .type = CT_STRING,
	  FIELD(struct listener_conf, address), .flags = CF_REQUIRED,
	  .check = check_ip_address,
	  .doc = "IPv4 or IPv6 address to listen on; \"0.0.0.0\" and "
	      "\"::\" listen on all the host's addresses" },
	{ .path = "port", .type = CT_INT,
	  FIELD(struct listener_conf, port), .flags = CF_REQUIRED,
	  .min = 1, .max = 65535,
	  .doc = "TCP port: 25 for mx, 587 for submission, 465 for "
	      "submissions" },
	{ .path = "role", .type = CT_ENUM,
	  FIELD(struct listener_conf, role), .def = "mx",
	  .words = listener_roles,
	  .doc = "what the listener is for: \"mx\" takes mail from the "
	      "internet for the routes' domains (port 25); "
	      "\"submission\" (587, STARTTLS) and \"submissions\" "
	      "(465, TLS from the first byte) take mail from users, "
	      "only after AUTH" },
	{ .path = "auth", .type = CT_BOOL, FIELD(struct listener_conf, auth),
	  .doc = "offer AUTH (see auth); default false on mx "
	      "listeners, true on the others, which then need "
	      "auth.passwd_file or auth.sqlite" },
	{ .path = "allow_plaintext_auth", .type = CT_BOOL,
	  FIELD(struct listener_conf, allow_plaintext_auth),
	  .doc = "offer AUTH before STARTTLS too, the password then "
	      "crossing the network in the clear; default "
	      "auth.allow_plaintext" },
	{ .path = "proxy_protocol", .type = CT_BOOL,
	  FIELD(struct listener_conf, proxy_protocol), .def = "false",
	  .doc = "expect a PROXY protocol header (HAProxy's, version 1 "
	      "or 2, told apart by their first bytes) before anything "
	      "else, from the load balancers in proxy_from (required "
	      "then): the client it names is the client for the limits, "
	      "the checks, the logs and the Received header.  Anything "
	      "else on such a listener is refused" },
	{ .path = "proxy_from", .type = CT_STRLIST,
	  FIELD(struct listener_conf, proxy_from),
	  COUNT(struct listener_conf, nproxy_from),
	  .value = netlist_entry_check,
	  .doc = "with proxy_protocol: the load balancers' addresses or "
	      "CIDR networks; a connection from anywhere else is refused "
	      "with 421 4.7.0" },
	{ .path = NULL }
};

static const struct conf_table listener_table = {
	listener_specs, sizeof(struct listener_conf), listener_finish
};

static const char *const route_formats[] = { "raw", "json", NULL };

/* What each action takes is route.c's to check (route_table_build). */
static const struct conf_spec route_specs[] = {
	{ .path = "name", .type = CT_STRING, FIELD(struct route_conf, name),
	  .doc = "the route's name in logs, the queue and mxgatectl "
	      "route test: letters, digits, '_', '-' and '.', unique; "
	      "default \"route<N>\", N counting from 1" },
	{ .path = "rcpt", .type = CT_STRING, FIELD(struct route_conf, rcpt),
	  .flags = CF_REQUIRED,
	  .doc = "PCRE2 pattern on the recipient, \"local@domain\" "
	      "with the domain in lower case; caseless (\"(?-i)\" "
	      "makes the rest case-sensitive).  Named groups, "
	      "(?<name>...), become ${name} in the action's "
	      "parameters.  Example: \"@example\\\\.com$\"" },
	{ .path = "sender", .type = CT_STRING,
	  FIELD(struct route_conf, sender),
	  .doc = "PCRE2 pattern on the envelope sender, caseless; \"\" "
	      "matches the null sender <>" },
	{ .path = "client", .type = CT_STRLIST,
	  FIELD(struct route_conf, client), COUNT(struct route_conf, nclient),
	  .doc = "client networks the route applies to, addresses or "
	      "CIDR: [ \"192.0.2.0/24\", \"2001:db8::/32\" ]" },
	{ .path = "authenticated", .type = CT_BOOLSTR,
	  FIELD(struct route_conf, authenticated),
	  .doc = "true: only clients that authenticated (AUTH); false: "
	      "only those that did not; a string: a PCRE2 pattern on "
	      "the authenticated user's name (case-sensitive)" },
	{ .path = "tls", .type = CT_BOOL, FIELD(struct route_conf, tls),
	  .doc = "true: only encrypted sessions; false: only plaintext "
	      "ones; default either" },
	{ .path = "sender_auth", .type = CT_STRLIST,
	  FIELD(struct route_conf, sender_auth),
	  COUNT(struct route_conf, nsender_auth),
	  .doc = "sender authentication the route requires, any one of "
	      "which must pass, else the recipient is refused: \"spf\" "
	      "(a result among spf.pass_results), \"auth\" (SMTP AUTH) "
	      "and \"tls\"" },
	{ .path = "continue", .type = CT_BOOL, FIELD(struct route_conf, cont),
	  .def = "false",
	  .doc = "true: the later matching routes apply too, up to the "
	      "first one without continue (archive, then deliver)" },
	{ .path = "max_size", .type = CT_SIZE,
	  FIELD(struct route_conf, max_size), .min = 1 * KB, .max = 2 * GB,
	  .doc = "largest message for this route's recipients; a "
	      "message gets the smallest limit of its routes and "
	      "limits.message_size (552 5.3.4)" },
	{ .path = "action", .type = CT_STRING,
	  FIELD(struct route_conf, action), .flags = CF_REQUIRED,
	  .words = route_action_names,
	  .doc = "what happens to the recipient: reject it in the SMTP "
	      "dialogue, relay it to an upstream, deliver it to a "
	      "maildir, a pipe command, an LMTP server or a webhook, "
	      "discard it, or print it to the log (debug)" },
	{ .path = "code", .type = CT_INT, FIELD(struct route_conf, code),
	  .min = 400, .max = 599,
	  .doc = "with action reject: the reply code, 4xx (try again "
	      "later) or 5xx (refused); default 550" },
	{ .path = "text", .type = CT_STRING, FIELD(struct route_conf, text),
	  .doc = "with action reject: the reply text, from its "
	      "enhanced status code on, of the same class as code; "
	      "default \"5.7.1 <${rcpt}>: Recipient address rejected\"" },
	{ .path = "upstream", .type = CT_STRING,
	  FIELD(struct route_conf, upstream),
	  .doc = "with action relay: the name of one of upstreams, or "
	      "\"mx\" for the recipient domain's MX hosts" },
	{ .path = "path", .type = CT_STRING, FIELD(struct route_conf, path),
	  .doc = "with action maildir: the Maildir directory, created "
	      "if missing; variables only after its fixed root, e.g. "
	      "\"/var/mail/${domain}/${local}/\"" },
	{ .path = "command", .type = CT_STRLIST,
	  FIELD(struct route_conf, command),
	  COUNT(struct route_conf, ncommand),
	  .doc = "with action pipe: the program and its arguments, run "
	      "without a shell, with the message on its standard input "
	      "and the envelope in environment variables; exit status "
	      "75 means try again later" },
	{ .path = "format", .type = CT_STRING,
	  FIELD(struct route_conf, format), .words = route_formats,
	  .doc = "with action pipe or webhook: \"raw\" (the message as "
	      "received) or \"json\" (parsed: envelope, headers, text, "
	      "attachments); default \"raw\" for pipe, \"json\" for "
	      "webhook" },
	{ .path = "timeout", .type = CT_INT,
	  FIELD(struct route_conf, timeout), .min = 1, .max = 86400,
	  .doc = "with action pipe or webhook: seconds the command or "
	      "the HTTP request may take; default 60 for pipe, 30 for "
	      "webhook" },
	{ .path = "address", .type = CT_STRING,
	  FIELD(struct route_conf, address),
	  .doc = "with action lmtp: the LMTP server, "
	      "\"unix:/path/to/socket\" or \"inet:host:port\"" },
	{ .path = "url", .type = CT_STRING, FIELD(struct route_conf, url),
	  .doc = "with action webhook: the https:// URL the message is "
	      "POSTed to; variables only after the host, "
	      "percent-encoded" },
	{ .path = "secret", .type = CT_STRING,
	  FIELD(struct route_conf, secret),
	  .doc = "with action webhook: the HMAC-SHA256 key that signs "
	      "each POST (X-Mxgate-Signature); never stored in the "
	      "queue" },
	{ .path = "tls_verify", .type = CT_BOOL,
	  FIELD(struct route_conf, tls_verify), .def = "true",
	  .doc = "with action webhook: verify the server's certificate "
	      "(false: for tests only)" },
	{ .path = "tls_ca", .type = CT_STRING,
	  FIELD(struct route_conf, tls_ca), .check = check_abs_path,
	  .doc = "with action webhook: the CA certificates (PEM) to "
	      "verify it with; default the system's" },
	{ .path = "attachments_dir", .type = CT_STRING,
	  FIELD(struct route_conf, attachments_dir), .check = check_abs_path,
	  .doc = "with action pipe or webhook and format json: save "
	      "the attachments in this directory and give their paths "
	      "instead of their content in base64" },
	{ .path = "user", .type = CT_STRING, FIELD(struct route_conf, user),
	  .check = check_user,
	  .doc = "with action pipe or maildir: the user the delivery runs "
	      "as (when started as root); default server.delivery_user, "
	      "never the queue's" },
	{ .path = "milters", .type = CT_STRLIST,
	  FIELD(struct route_conf, milters), COUNT(struct route_conf, nmilters),
	  .doc = "names of milters (see milters) asked about the "
	      "recipients of this route, after smtp_milters; a message "
	      "meets the milters of all its recipients' routes, once "
	      "each, and their changes apply to the whole message" },
	{ .path = "policy_service", .type = CT_STRING,
	  FIELD(struct route_conf, policy_service),
	  .doc = "the name of one of policy_services asked at RCPT "
	      "about this route's recipients, instead of the global "
	      "policy.service; default the global one" },
	{ .path = NULL }
};

static const struct conf_table route_table = {
	route_specs, sizeof(struct route_conf), NULL
};

/* In the order of enum upstream_tls. */
static const char *const upstream_tls_modes[] = {
	"none", "opportunistic", "required", "may", "encrypt", "verify",
	"dane", NULL
};

/* In the order of enum tls_level. */
static const char *const tls_level_words[] = {
	"none", "may", "encrypt", "verify", "dane", "mta-sts", NULL
};

static const struct conf_spec tls_policy_specs[] = {
	{ .path = "domain", .type = CT_STRING,
	  FIELD(struct tls_policy_conf, domain), .flags = CF_REQUIRED,
	  .check = check_tls_policy_domain,
	  .doc = "the recipient domain, or \".example.com\" for every "
	      "domain under it" },
	{ .path = "level", .type = CT_ENUM,
	  FIELD(struct tls_policy_conf, level), .flags = CF_REQUIRED,
	  .words = tls_level_words,
	  .doc = "the TLS level for its MX hosts (see delivery.tls_level)" },
	{ .path = NULL }
};

static const struct conf_table tls_policy_table = {
	tls_policy_specs, sizeof(struct tls_policy_conf), NULL
};

static const struct conf_spec upstream_specs[] = {
	{ .path = "name", .type = CT_STRING,
	  FIELD(struct upstream_conf, name), .flags = CF_REQUIRED,
	  .doc = "what relay routes call it (upstream = \"NAME\"); "
	      "unique, and not \"mx\"" },
	{ .path = "hosts", .type = CT_STRLIST,
	  FIELD(struct upstream_conf, hosts),
	  COUNT(struct upstream_conf, nhosts), .flags = CF_REQUIRED,
	  .check = check_upstream_hosts,
	  .doc = "the hosts, tried in order until one answers: "
	      "\"host\", \"host:port\", \"192.0.2.1:25\" or "
	      "\"[2001:db8::1]:25\"" },
	{ .path = "port", .type = CT_INT, FIELD(struct upstream_conf, port),
	  .def = "25", .min = 1, .max = 65535,
	  .doc = "port of the hosts that name none" },
	{ .path = "tls", .type = CT_ENUM, FIELD(struct upstream_conf, tls),
	  .def = "opportunistic", .words = upstream_tls_modes,
	  .doc = "the TLS level to the upstream (see delivery.tls_level): "
	      "\"none\", \"may\", \"encrypt\", \"verify\" or \"dane\" "
	      "(the TLSA records of _PORT._tcp.HOST); the older words: "
	      "\"opportunistic\" is may, \"required\" is verify (encrypt "
	      "with tls_verify = false)" },
	{ .path = "tls_verify", .type = CT_BOOL,
	  FIELD(struct upstream_conf, tls_verify), .def = "true",
	  .doc = "with tls \"required\": check the certificate chain and "
	      "the host name; with \"opportunistic\": log when they do "
	      "not verify" },
	{ .path = "tls_ca", .type = CT_STRING,
	  FIELD(struct upstream_conf, tls_ca), .check = check_abs_path,
	  .doc = "CA certificates (PEM) to verify with; default the system's" },
	{ .path = "auth_user", .type = CT_STRING,
	  FIELD(struct upstream_conf, auth_user),
	  .doc = "AUTH PLAIN/LOGIN to the upstream as this user (over TLS)" },
	{ .path = "auth_password", .type = CT_STRING,
	  FIELD(struct upstream_conf, auth_password),
	  .doc = "the password of auth_user" },
	{ .path = "helo", .type = CT_STRING,
	  FIELD(struct upstream_conf, helo),
	  .doc = "name in EHLO/HELO; default server.hostname" },
	{ .path = "chunking", .type = CT_BOOL,
	  FIELD(struct upstream_conf, chunking), .def = "true",
	  .doc = "BDAT (RFC 3030) when the upstream offers CHUNKING and "
	      "PIPELINING (see delivery.chunking); false: always DATA" },
	{ .path = NULL }
};

static const struct conf_table upstream_table = {
	upstream_specs, sizeof(struct upstream_conf), NULL
};

static const char *const tls_versions[] = {
	"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", NULL
};

static const struct conf_spec tls_cert_specs[] = {
	{ .path = "cert", .type = CT_STRING,
	  FIELD(struct tls_cert_conf, cert), .flags = CF_REQUIRED,
	  .check = check_abs_path,
	  .doc = "the certificate chain (PEM), the server's own "
	      "certificate first, then the intermediates" },
	{ .path = "key", .type = CT_STRING,
	  FIELD(struct tls_cert_conf, key), .flags = CF_REQUIRED,
	  .check = check_abs_path,
	  .doc = "its private key (PEM, RSA or ECDSA); read by the "
	      "master at start, as root, so it may be readable by root "
	      "alone" },
	{ .path = NULL }
};

static const struct conf_table tls_cert_table = {
	tls_cert_specs, sizeof(struct tls_cert_conf), tls_cert_finish
};

static const char *const spf_policies[] = { "none", "reject_fail", NULL };
/* In the order of enum smtp_stage. */
static const char *const smtp_stages[] = {
	"connect", "helo", "mail", "rcpt", "data", "end_of_message", NULL
};

static const struct conf_spec plugin_specs[] = {
	{ .path = "path", .type = CT_STRING, FIELD(struct plugin_conf, path),
	  .flags = CF_REQUIRED, .check = check_plugin_path,
	  .doc = "the plugin, a shared object built against "
	      "<mxgate/plugin.h>" },
	{ .path = "args", .type = CT_STRING, FIELD(struct plugin_conf, args),
	  .doc = "a string handed to the plugin's init(); default none" },
	{ .path = NULL }
};

static const struct conf_table plugin_table = {
	plugin_specs, sizeof(struct plugin_conf), plugin_finish
};

static const char *const milter_defaults[] = {
	"tempfail", "accept", "reject", NULL
};

static const struct conf_spec milter_specs[] = {
	{ .path = "name", .type = CT_STRING, FIELD(struct milter_conf, name),
	  .flags = CF_REQUIRED,
	  .doc = "what smtp_milters and routes' milters call it; unique" },
	{ .path = "address", .type = CT_STRING,
	  FIELD(struct milter_conf, address), .flags = CF_REQUIRED,
	  .value = policy_address_check,
	  .doc = "the milter's socket: \"unix:/path/to/socket\" or "
	      "\"inet:127.0.0.1:11332\" (an address, not a host name)" },
	{ .path = "connect_timeout", .type = CT_DURATION,
	  FIELD(struct milter_conf, connect_timeout), .def = "10",
	  .min = 1, .max = 300,
	  .doc = "seconds to connect and negotiate; then default_action" },
	{ .path = "command_timeout", .type = CT_DURATION,
	  FIELD(struct milter_conf, command_timeout), .def = "30",
	  .min = 1, .max = 3600,
	  .doc = "seconds to wait for the answer to each SMTP command "
	      "(CONNECT, HELO, MAIL, RCPT, DATA)" },
	{ .path = "content_timeout", .type = CT_DURATION,
	  FIELD(struct milter_conf, content_timeout), .def = "300",
	  .min = 1, .max = 3600,
	  .doc = "seconds to wait for the answer to each header, body "
	      "chunk and to the end of the message (where a scanner "
	      "works)" },
	{ .path = "default_action", .type = CT_STRING,
	  FIELD(struct milter_conf, default_action), .def = "tempfail",
	  .words = milter_defaults,
	  .doc = "what happens when the milter is down, too slow or "
	      "breaks the protocol, for the rest of the session: "
	      "\"tempfail\" (451 4.7.1), \"accept\" (as if it were "
	      "not configured) or \"reject\" (550 5.7.1)" },
	{ .path = NULL }
};

static const struct conf_table milter_table = {
	milter_specs, sizeof(struct milter_conf), NULL
};

static const struct conf_spec policy_service_specs[] = {
	{ .path = "name", .type = CT_STRING,
	  FIELD(struct policy_service_conf, name), .flags = CF_REQUIRED,
	  .doc = "what routes' policy_service calls it; unique" },
	{ .path = "service", .type = CT_STRING,
	  FIELD(struct policy_service_conf, service), .flags = CF_REQUIRED,
	  .value = policy_address_check,
	  .doc = "the service's address, as policy.service" },
	{ .path = "timeout", .type = CT_INT,
	  FIELD(struct policy_service_conf, timeout), .def = "5",
	  .min = 1, .max = 300,
	  .doc = "seconds to wait for its answer; then default" },
	{ .path = "default", .type = CT_STRING,
	  FIELD(struct policy_service_conf, default_action),
	  .def = "451 4.3.5 Server configuration problem",
	  .value = policy_default_check,
	  .doc = "the action when it is down, too slow or answers "
	      "nonsense, as policy.default" },
	{ .path = NULL }
};

static const struct conf_table policy_service_table = {
	policy_service_specs, sizeof(struct policy_service_conf), NULL
};

static const struct conf_spec mxconf_specs[] = {
	{ .path = "server.hostname", .type = CT_STRING,
	  FIELD(struct mxconf, hostname), .check = check_hostname,
	  .doc = "name in the greeting and EHLO; default gethostname()" },
	{ .path = "server.user", .type = CT_STRING,
	  FIELD(struct mxconf, user), .def = "mxgate-smtp", .check = check_user,
	  .doc = "user of the SMTP workers when started as root; must not be"
	  " able to open the queue"
	  " (changes only at a restart: a reload that changes it is refused)" },
	{ .path = "server.group", .type = CT_STRING,
	  FIELD(struct mxconf, group), .check = check_group,
	  .doc = "group of the workers; default the user's primary group"
	  " (changes only at a restart: a reload that changes it is refused)" },
	{ .path = "server.queue_user", .type = CT_STRING,
	  FIELD(struct mxconf, queue_user), .def = "mxgate", .check = check_user,
	  .doc = "owner of the queue directory and user of the queue process"
	  " (changes only at a restart: a reload that changes it is refused)" },
	{ .path = "server.delivery_user", .type = CT_STRING,
	  FIELD(struct mxconf, delivery_user), .def = "mxgate-deliver",
	  .check = check_user,
	  .doc = "user of the delivery processes; never the queue's" },
	{ .path = "server.lookup_user", .type = CT_STRING,
	  FIELD(struct mxconf, lookup_user), .def = "mxgate-auth",
	  .check = check_user,
	  .doc = "user of the credentials lookup process (auth.passwd_file,"
	  " auth.sqlite)" },
	{ .path = "server.chroot_dir", .type = CT_STRING,
	  FIELD(struct mxconf, chroot_dir), .def = "/var/lib/mxgate/empty",
	  .check = check_chroot_dir,
	  .doc = "root directory of the SMTP workers when started as root:"
	  " root's, writable by root alone"
	  " (changes only at a restart: a reload that changes it is refused)" },
	{ .path = "server.workers", .type = CT_INT,
	  FIELD(struct mxconf, workers), .def = "0", .min = 0, .max = 256,
	  .doc = "number of SMTP workers, 0 = one per CPU" },
	{ .path = "server.log_level", .type = CT_STRING,
	  FIELD(struct mxconf, log_level), .def = "info", .words = log_levels,
	  .doc = "least important level logged" },
	{ .path = "server.log_format", .type = CT_STRING,
	  FIELD(struct mxconf, log_format), .def = "text", .words = log_formats,
	  .doc = "\"text\": lines of key=value fields; \"json\": one JSON"
	  " object per line, with the same fields" },
	{ .path = "server.pid_file", .type = CT_STRING,
	  FIELD(struct mxconf, pid_file), .check = check_abs_path,
	  .doc = "the master writes its pid there; default none"
	  " (changes only at a restart: a reload that changes it is refused)" },

	{ .path = "listen", .type = CT_LIST,
	  FIELD(struct mxconf, listeners), COUNT(struct mxconf, nlisteners),
	  .sub = &listener_table, .check = check_listeners_unique,
	  .doc = "where to accept connections: a list of listeners; at "
	      "least one is required" },

	{ .path = "metrics.listen", .type = CT_STRING,
	  FIELD(struct mxconf, metrics_listen), .check = check_metrics_listen,
	  .doc = "address and port of the Prometheus endpoint (GET /metrics),"
	  " e.g. \"127.0.0.1:9187\" or \"[::1]:9187\"; default none (off)" },

	{ .path = "queue.directory", .type = CT_STRING,
	  FIELD(struct mxconf, queue_dir), .def = "./var/queue",
	  .doc = "directory of the queue database, queue.db, created "
	      "if missing; an installed system uses an absolute path "
	      "such as \"/var/lib/mxgate/queue\""
	  " (changes only at a restart: a reload that changes it is refused)" },
	/* Postfix's queue_minfree: room left for deliveries, bounces and
	 * the WAL's checkpoints, which need space to free space. */
	{ .path = "queue.min_free_space", .type = CT_SIZE,
	  FIELD(struct mxconf, queue_min_free), .def = "100M",
	  .min = 0, .max = 1024 * GB,
	  .doc = "free space the queue's file system keeps: below it, "
	      "MAIL is answered 452 4.3.1 (as is a MAIL whose SIZE= "
	      "would not fit with half again as margin) while "
	      "deliveries, which free space, go on" },
	{ .path = "queue.keep_history", .type = CT_DURATION,
	  FIELD(struct mxconf, keep_history), .def = "1d",
	  .min = 0, .max = 3650 * 86400,
	  .doc = "how long a message's envelope, recipients and history "
	      "(mxgatectl queue trace) are kept once it has left the "
	      "queue: delivered or bounced (and delivery.keep_delivered "
	      "passed) or deleted. 0: forgotten within a minute" },
	/* RFC 8460 reports cover a UTC day and go out the next. */
	{ .path = "queue.keep_tls_results", .type = CT_DURATION,
	  FIELD(struct mxconf, keep_tls_results), .def = "30d",
	  .min = 86400, .max = 3650 * 86400,
	  .doc = "how long the outbound TLS outcomes counted per day "
	      "for TLS-RPT (mxgatectl tls-report) are kept: the days "
	      "before the one this long ago are purged; at least 1d" },

	/* RFC 5321 4.5.3.1.4: a command line may be 512 octets. */
	{ .path = "limits.line_length", .type = CT_INT,
	  FIELD(struct mxconf, max_line), .def = "512",
	  .min = 512, .max = 65536,
	  .doc = "longest command line accepted, in bytes, CRLF "
	      "included (RFC 5321 4.5.3.1.4: at least 512)" },
	{ .path = "limits.message_size", .type = CT_SIZE,
	  FIELD(struct mxconf, max_message_size), .def = "25M",
	  .min = 1 * KB, .max = 2 * GB,
	  .doc = "largest message accepted, announced in EHLO (SIZE); "
	      "a bigger one is refused with 552 5.3.4" },
	/* RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted. */
	{ .path = "limits.recipients", .type = CT_INT,
	  FIELD(struct mxconf, max_recipients), .def = "100",
	  .min = 1, .max = 10000,
	  .doc = "recipients per message; more are answered 452 4.5.3 "
	      "(RFC 5321 4.5.3.1.8: at least 100 must be accepted)" },
	{ .path = "limits.errors", .type = CT_INT,
	  FIELD(struct mxconf, max_errors), .def = "10",
	  .min = 1, .max = 1000,
	  .doc = "errors a client may make (commands refused) before "
	      "the session is closed" },
	{ .path = "limits.connections", .type = CT_INT,
	  FIELD(struct mxconf, max_connections), .def = "0",
	  .min = 0, .max = 1000000,
	  .doc = "simultaneous connections, in total; over it, 421 4.7.0.  "
	      "0 = what the memory allows, computed at start and logged: "
	      "an eighth of the physical memory at 16 KB a session (an "
	      "idle one costs about 10 KB in a worker and a few in the "
	      "kernel), at least 100, at most 100000, and no more than "
	      "the workers' descriptor limit allows" },
	{ .path = "limits.connections_per_ip", .type = CT_INT,
	  FIELD(struct mxconf, max_connections_per_ip), .def = "50",
	  .min = 0, .max = 1000000,
	  .doc = "simultaneous connections from one client address; 0 "
	      "= no limit" },
	{ .path = "limits.fair_share", .type = CT_INT,
	  FIELD(struct mxconf, fair_share), .def = "10",
	  .min = 0, .max = 100,
	  .doc = "under stress (stress.threshold), a client address gets "
	      "another connection only while it holds fewer than this "
	      "percent of the connections still free, so a few "
	      "addresses cannot take every slot and a new one always "
	      "finds one (421 4.7.0 otherwise); 0 = off" },
	/* Postfix's smtpd_client_ipv6_prefix_length (3.8), its default. */
	{ .path = "limits.ipv6_prefix", .type = CT_INT,
	  FIELD(struct mxconf, ipv6_prefix), .def = "84",
	  .min = 1, .max = 128,
	  .doc = "an IPv6 client is counted as its network of this many "
	      "bits for connections_per_ip, fair_share and the "
	      "rate_limits, since whoever has one address of a network "
	      "usually has them all (a /64 is 2^64 addresses); 128 = "
	      "each address apart.  IPv4 clients count by address" },
	/* Postfix's smtpd_min_data_rate. */
	{ .path = "limits.min_data_rate", .type = CT_INT,
	  FIELD(struct mxconf, min_data_rate), .def = "500",
	  .min = 0, .max = 100000000,
	  .doc = "bytes per second a message must keep up: each such "
	      "amount received extends the DATA deadline "
	      "(timeouts.data) by one second; 0 = the whole message "
	      "within timeouts.data" },
	{ .path = "limits.bare_newlines", .type = CT_STRING,
	  FIELD(struct mxconf, bare_newlines), .def = "reject",
	  .words = bare_newline_modes,
	  .doc = "a line ending in a bare LF or a bare CR inside DATA: "
	      "\"reject\" the message (554; prevents SMTP smuggling) "
	      "or \"normalize\" the line ending to CRLF" },

	/* RFC 5321 4.5.3.2.7 and 4.5.3.2.5. */
	{ .path = "timeouts.command", .type = CT_INT,
	  FIELD(struct mxconf, timeout_command), .def = "300",
	  .min = 1, .max = 86400,
	  .doc = "seconds a whole command line may take, from the end "
	      "of the previous one; a client sending a byte at a time "
	      "does not extend it (RFC 5321 4.5.3.2.7: at least 5 "
	      "minutes)" },
	{ .path = "timeouts.data", .type = CT_INT,
	  FIELD(struct mxconf, timeout_data), .def = "180",
	  .min = 1, .max = 86400,
	  .doc = "seconds a message may take, plus one second per "
	      "limits.min_data_rate bytes received (RFC 5321 "
	      "4.5.3.2.5: 3 minutes)" },
	{ .path = "timeouts.proxy", .type = CT_INT,
	  FIELD(struct mxconf, timeout_proxy), .def = "10",
	  .min = 1, .max = 300,
	  .doc = "seconds the PROXY protocol header may take on a "
	      "listener with proxy_protocol; then the connection is "
	      "closed" },
	{ .path = "timeouts.shutdown_grace", .type = CT_INT,
	  FIELD(struct mxconf, shutdown_grace), .def = "30",
	  .min = 1, .max = 86400,
	  .doc = "seconds the sessions in progress may take to finish "
	      "when mxgated stops; then they are closed.  At a reload, "
	      "the replaced smtp processes keep their sessions this long, "
	      "then stop the same way" },
	/* Postfix's stress-dependent defaults (STRESS_README). */
	{ .path = "stress.threshold", .type = CT_INT,
	  FIELD(struct mxconf, stress_threshold), .def = "80",
	  .min = 0, .max = 100,
	  .doc = "percent of limits.connections in use at which stress "
	      "mode begins (and limits.fair_share applies); it ends when "
	      "use falls 10 points below; both are logged.  0 = never" },
	{ .path = "stress.command", .type = CT_INT,
	  FIELD(struct mxconf, stress_timeout_command), .def = "10",
	  .min = 1, .max = 86400,
	  .doc = "timeouts.command under stress, for every session, those "
	      "already open too (Postfix: 10 seconds)" },
	{ .path = "stress.data", .type = CT_INT,
	  FIELD(struct mxconf, stress_timeout_data), .def = "60",
	  .min = 1, .max = 86400,
	  .doc = "timeouts.data under stress (plus one second per "
	      "limits.min_data_rate bytes received, as always)" },
	/* postscreen_greet_wait ${stress?{2}:{6}}s,
	 * smtpd_hard_error_limit ${stress?{1}:{20}}. */
	{ .path = "stress.greet_pause", .type = CT_INT,
	  FIELD(struct mxconf, stress_greet_pause), .def = "2",
	  .min = 0, .max = 60,
	  .doc = "greet_pause under stress, when shorter, for the "
	      "greetings already held back too; 0 = no pause under "
	      "stress (Postfix's postscreen: 2 seconds)" },
	{ .path = "stress.errors", .type = CT_INT,
	  FIELD(struct mxconf, stress_max_errors), .def = "1",
	  .min = 1, .max = 1000,
	  .doc = "limits.errors under stress, when lower, for the "
	      "sessions already open too (Postfix's hard error limit: "
	      "1)" },

	{ .path = "accept_domains", .type = CT_STRLIST,
	  FIELD(struct mxconf, accept_domains),
	  COUNT(struct mxconf, naccept_domains), .check = check_domains,
	  .doc = "the domains mxgate is MX for, when there are no "
	      "routes: a shorthand for a debug route per domain, one "
	      "for postmaster@server.hostname, and a refusal of every "
	      "other recipient (550 5.7.1 relay access denied); not "
	      "with routes" },

	{ .path = "routes", .type = CT_LIST,
	  FIELD(struct mxconf, routes), COUNT(struct mxconf, nroutes),
	  .sub = &route_table, .check = check_routes,
	  .doc = "what happens to each recipient: routes tried in "
	      "order at RCPT TO, the first that matches deciding" },
	/* Postfix's defaults, give or take: queue lifetime 5 days, RFC
	 * 5321 4.5.4.1 "at least 4-5 days". */
	{ .path = "delivery.retry_schedule", .type = CT_DURLIST,
	  FIELD(struct mxconf, retry_schedule),
	  COUNT(struct mxconf, nretry_schedule),
	  .def = "60 300 900 3600 14400", .min = 1, .max = 7 * 86400,
	  .doc = "waits after the 1st, 2nd... failed attempt of a "
	      "recipient (a 4xx reply, no answer); the last one "
	      "repeats until delivery.max_queue_time" },
	{ .path = "delivery.max_queue_time", .type = CT_DURATION,
	  FIELD(struct mxconf, max_queue_time), .def = "5d",
	  .min = 0, .max = 365 * 86400,
	  .doc = "how long a recipient may stay in the queue; then it "
	      "bounces and the sender gets an expiry notice (DSN).  0: "
	      "it bounces at its first temporary failure" },
	{ .path = "delivery.delay_warning", .type = CT_DURATION,
	  FIELD(struct mxconf, delay_warning), .def = "0",
	  .min = 0, .max = 365 * 86400,
	  .doc = "warn the sender once (a \"delayed\" DSN) when a "
	      "recipient is still undelivered after this long, e.g. "
	      "\"4h\"; 0 = never.  Only for recipients whose RCPT had no "
	      "NOTIFY or a NOTIFY with DELAY (RFC 3461)" },
	{ .path = "delivery.paused", .type = CT_BOOL,
	  FIELD(struct mxconf, delivery_paused), .def = "false",
	  .doc = "true: accept and queue mail but start no delivery; "
	      "messages wait until it is false again (a reload is "
	      "enough)" },
	{ .path = "delivery.concurrency", .type = CT_INT,
	  FIELD(struct mxconf, concurrency), .def = "20", .min = 1, .max = 1000,
	  .doc = "delivery processes running at once, in all" },
	{ .path = "delivery.concurrency_per_destination", .type = CT_INT,
	  FIELD(struct mxconf, concurrency_per_destination), .def = "5",
	  .min = 1, .max = 1000,
	  .doc = "delivery processes at once to one destination: an "
	      "upstream, an MX domain, a maildir, a command, an LMTP "
	      "server or a webhook" },
	{ .path = "delivery.keep_delivered", .type = CT_DURATION,
	  FIELD(struct mxconf, keep_delivered), .def = "0",
	  .min = 0, .max = 3650 * 86400,
	  .doc = "once every recipient of a message is delivered or "
	      "bounced, its content is deleted; its envelope, "
	      "recipients and history are kept this long for auditing. "
	      "0: deleted at once" },
	{ .path = "delivery.bounce_upstream", .type = CT_STRING,
	  FIELD(struct mxconf, bounce_upstream), .def = "mx",
	  .doc = "where bounces (DSNs, from <>) are relayed: \"mx\" "
	      "for the sender domain's MX hosts, or the name of one of "
	      "upstreams" },
	{ .path = "delivery.connect_timeout", .type = CT_DURATION,
	  FIELD(struct mxconf, relay_connect_timeout), .def = "30",
	  .min = 1, .max = 3600,
	  .doc = "relay: seconds to wait for a TCP connection, per "
	      "address tried" },
	/* RFC 5321 4.5.3.2: 5 minutes for replies, 10 for the final dot. */
	{ .path = "delivery.command_timeout", .type = CT_DURATION,
	  FIELD(struct mxconf, relay_command_timeout), .def = "300",
	  .min = 1, .max = 3600,
	  .doc = "relay: seconds to wait for each reply, and to send "
	      "each block of DATA (RFC 5321 4.5.3.2: 5 minutes)" },
	{ .path = "delivery.data_timeout", .type = CT_DURATION,
	  FIELD(struct mxconf, relay_data_timeout), .def = "600",
	  .min = 1, .max = 3600,
	  .doc = "relay: seconds to wait for the reply to the end of "
	      "DATA (RFC 5321 4.5.3.2.6: 10 minutes)" },
	/* Postfix: smtp_connection_cache_time_limit, 2 seconds. */
	{ .path = "delivery.connection_cache_time", .type = CT_DURATION,
	  FIELD(struct mxconf, relay_cache_time), .def = "2",
	  .min = 0, .max = 300,
	  .doc = "relay: seconds a delivery process keeps an unused "
	      "connection to an upstream open for its next message "
	      "(then QUIT); 0 = closed after each batch" },
	{ .path = "delivery.chunking", .type = CT_BOOL,
	  FIELD(struct mxconf, relay_chunking), .def = "true",
	  .doc = "relay to MX hosts: send the message with BDAT (RFC 3030) "
	      "to a server that offers CHUNKING and PIPELINING: envelope "
	      "and message in one write, one round trip, no dot-stuffing; "
	      "false: always DATA.  Upstreams have their own chunking" },
	{ .path = "delivery.dnssec", .type = CT_BOOL,
	  FIELD(struct mxconf, dnssec), .def = "false",
	  .doc = "the nameservers of /etc/resolv.conf validate DNSSEC "
	      "(a local unbound, say): trust the AD bit of their answers, "
	      "as Postfix's smtp_dns_support_level = dnssec.  Needed for "
	      "DANE" },
	{ .path = "delivery.tls_level", .type = CT_STRING,
	  FIELD(struct mxconf, mx_tls_level_word), .words = tls_level_words,
	  .def = "mta-sts",
	  .doc = "TLS to the MX hosts of recipient domains: \"none\"; "
	      "\"may\" (STARTTLS when offered, any certificate); "
	      "\"encrypt\" (TLS or deferred, any certificate); \"verify\" "
	      "(TLS with a certificate that verifies and names the MX "
	      "host); \"dane\" (RFC 7672: an MX host with DNSSEC-signed "
	      "TLSA records gets TLS whose certificate matches them, or "
	      "nothing; other hosts may; needs delivery.dnssec); "
	      "\"mta-sts\" (DANE where it applies, with delivery.dnssec; "
	      "else the domain's MTA-STS policy, RFC 8461, fetched over "
	      "HTTPS and cached in the queue: in enforce mode only the MX "
	      "hosts it names, with a certificate that verifies, in testing "
	      "mode failures only reported; else may)" },
	{ .path = "delivery.tls_ca", .type = CT_STRING,
	  FIELD(struct mxconf, relay_tls_ca), .check = check_abs_path,
	  .doc = "CA certificates (PEM) to verify MX hosts (levels "
	      "verify, mta-sts) and MTA-STS policy servers with; default "
	      "the system's" },
	{ .path = "delivery.tls_policy", .type = CT_LIST,
	  FIELD(struct mxconf, tls_policies),
	  COUNT(struct mxconf, ntls_policies), .sub = &tls_policy_table,
	  .doc = "TLS levels for some recipient domains, in place of "
	      "delivery.tls_level: ( { domain = \"example.com\"; level = "
	      "\"verify\"; } ); the first that matches wins" },

	{ .path = "upstreams", .type = CT_LIST,
	  FIELD(struct mxconf, upstreams), COUNT(struct mxconf, nupstreams),
	  .sub = &upstream_table, .check = check_upstreams,
	  .doc = "the hosts that routes with action \"relay\" deliver "
	      "to, by name" },

	{ .path = "tls.certificates", .type = CT_LIST,
	  FIELD(struct mxconf, tls_certs), COUNT(struct mxconf, ntls_certs),
	  .sub = &tls_cert_table,
	  .doc = "certificate chains and their keys, RSA or ECDSA.  "
	      "The client's SNI picks the pair with its name "
	      "(\"*.example.com\" covers one label); the first pair "
	      "serves everyone else.  Without any, STARTTLS is not "
	      "offered" },
	{ .path = "tls.min_version", .type = CT_STRING,
	  FIELD(struct mxconf, tls_min_version), .def = "TLSv1.2",
	  .words = tls_versions,
	  .doc = "the oldest TLS version accepted; with OpenSSL 3, TLS "
	      "1.0 and 1.1 also need \"@SECLEVEL=0\" in tls.ciphers" },
	{ .path = "tls.ciphers", .type = CT_STRING,
	  FIELD(struct mxconf, tls_ciphers),
	  .def = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:"
	      "!aNULL:!DSS",
	  .doc = "ciphers of TLS 1.2 and older (OpenSSL syntax; the "
	      "server's order wins): forward secrecy and AEAD only by "
	      "default" },
	{ .path = "tls.ciphersuites", .type = CT_STRING,
	  FIELD(struct mxconf, tls_ciphersuites),
	  .def = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
	      "TLS_AES_128_GCM_SHA256",
	  .doc = "TLS 1.3 cipher suites (OpenSSL syntax)" },

	{ .path = "auth.passwd_file", .type = CT_STRING,
	  FIELD(struct mxconf, auth_passwd_file), .check = check_abs_path,
	  .doc = "a file of \"user:hash\" lines with crypt(3) hashes, "
	      "yescrypt (\"$y$...\") or SHA-512-crypt (\"$6$...\"); "
	      "\"*\" or \"!...\" locks a user.  Read at each check: "
	      "changes apply at once.  Set a password with mxgatectl "
	      "passwd USER" },
	{ .path = "auth.sqlite", .type = CT_STRING,
	  FIELD(struct mxconf, auth_sqlite), .check = check_abs_path,
	  .doc = "an SQLite database, opened read-only, with a table "
	      "users(name TEXT PRIMARY KEY, password_hash TEXT NOT "
	      "NULL), asked about the users passwd_file does not have" },
	{ .path = "auth.max_failures", .type = CT_INT,
	  FIELD(struct mxconf, auth_max_failures), .def = "3",
	  .min = 1, .max = 100,
	  .doc = "failed AUTH attempts in a session before it is "
	      "closed (421 4.7.0)" },
	{ .path = "auth.failure_delay", .type = CT_INT,
	  FIELD(struct mxconf, auth_failure_delay), .def = "1",
	  .min = 0, .max = 30,
	  .doc = "seconds before a failed AUTH is answered (535 "
	      "5.7.8), to slow password guessing; 0 = at once" },
	{ .path = "auth.allow_plaintext", .type = CT_BOOL,
	  FIELD(struct mxconf, auth_allow_plaintext), .def = "false",
	  .doc = "offer AUTH on unencrypted connections too, the "
	      "password then crossing the network in the clear; "
	      "listeners may say otherwise" },

	{ .path = "spf.mail_from_policy", .type = CT_STRING,
	  FIELD(struct mxconf, spf_mail_from_policy), .def = "none",
	  .words = spf_policies,
	  .doc = "an SPF check at MAIL FROM for every route: \"none\" "
	      "(only routes with sender_auth check), or "
	      "\"reject_fail\" (550 5.7.23 when the result is fail)" },
	{ .path = "spf.pass_results", .type = CT_STRLIST,
	  FIELD(struct mxconf, spf_pass_results),
	  COUNT(struct mxconf, nspf_pass_results),
	  .value = spf_pass_result_check, .flags = CF_NONEMPTY,
	  .doc = "the SPF results that satisfy sender_auth \"spf\", "
	      "among \"pass\", \"neutral\", \"softfail\", \"none\", "
	      "\"fail\" and \"permerror\"; default [ \"pass\" ]" },
	{ .path = "spf.timeout", .type = CT_INT,
	  FIELD(struct mxconf, spf_timeout), .def = "10", .min = 1, .max = 300,
	  .doc = "seconds an SPF check may take, DNS included; then "
	      "its result is temperror (451 4.7.24 where it is "
	      "required)" },
	{ .path = "spf.threads", .type = CT_INT,
	  FIELD(struct mxconf, spf_threads), .def = "4", .min = 1, .max = 64,
	  .doc = "SPF lookup threads in each SMTP worker, so that slow "
	      "DNS never stalls other sessions" },

	{ .path = "policy.service", .type = CT_STRING,
	  FIELD(struct mxconf, policy_service), .value = policy_address_check,
	  .doc = "the service's address: \"unix:/path/to/socket\", "
	      "\"inet:127.0.0.1:10023\" or \"inet:[::1]:10023\"; "
	      "default none, no service asked" },
	{ .path = "policy.stages", .type = CT_STRLIST,
	  FIELD(struct mxconf, policy_stages_list),
	  COUNT(struct mxconf, npolicy_stages_list),
	  .check = check_policy_stages,
	  .doc = "the SMTP stages the service is asked at, among "
	      "\"connect\", \"helo\", \"mail\", \"rcpt\", \"data\" and "
	      "\"end_of_message\"; default [ \"rcpt\" ]" },
	{ .path = "policy.timeout", .type = CT_INT,
	  FIELD(struct mxconf, policy_timeout), .def = "5", .min = 1, .max = 300,
	  .doc = "seconds to wait for the service's answer; then "
	      "policy.default applies" },
	{ .path = "policy.default", .type = CT_STRING,
	  FIELD(struct mxconf, policy_default),
	  .def = "451 4.3.5 Server configuration problem",
	  .value = policy_default_check,
	  .doc = "the action when the service is down, too slow or "
	      "answers nonsense (or an action mxgate does not support, "
	      "such as FILTER or REDIRECT): DUNNO, OK, REJECT [text], "
	      "DEFER [text], \"4NN text\" / \"5NN text\", WARN, INFO, "
	      "HOLD or DISCARD; Postfix's "
	      "451 4.3.5 by default, so that a greylisting service "
	      "that is down never turns greylisting off" },

	{ .path = "policy_services", .type = CT_LIST,
	  FIELD(struct mxconf, policy_services),
	  COUNT(struct mxconf, npolicy_services),
	  .sub = &policy_service_table,
	  .doc = "named Postfix policy services, asked at RCPT about the "
	      "recipients of the routes that name them (routes[]."
	      "policy_service) instead of policy.service; policy.stages "
	      "does not apply to them" },

	{ .path = "milters", .type = CT_LIST,
	  FIELD(struct mxconf, milters), COUNT(struct mxconf, nmilters),
	  .sub = &milter_table,
	  .doc = "milters (Sendmail milter protocol 6: rspamd, OpenDKIM, "
	      "OpenDMARC, virus scanners) by name; at most 16.  Used "
	      "by smtp_milters and routes' milters" },
	{ .path = "smtp_milters", .type = CT_STRLIST,
	  FIELD(struct mxconf, smtp_milters),
	  COUNT(struct mxconf, nsmtp_milters),
	  .doc = "names of milters asked about every session, from its "
	      "connection on, in this order (Postfix's smtpd_milters)" },

	{ .path = "plugins", .type = CT_LIST,
	  FIELD(struct mxconf, plugins), COUNT(struct mxconf, nplugins),
	  .sub = &plugin_table,
	  .doc = "C plugins loaded at start and asked in this order"
	  " (changes only at a restart: a reload that changes them is"
	  " refused)" },

	/* Postfix postscreen's pregreet test, Sendmail's greet_pause. */
	{ .path = "greet_pause", .type = CT_INT,
	  FIELD(struct mxconf, greet_pause), .def = "0",
	  .min = 0, .max = 60,
	  .doc = "seconds the greeting waits after a client connects; a "
	      "client that talks first (spamware does not wait for the "
	      "server) is answered 554 5.5.1 and disconnected; clients "
	      "in trusted_networks and implicit-TLS listeners are not "
	      "made to wait; 0 = off" },
	{ .path = "greet_multiline", .type = CT_BOOL,
	  FIELD(struct mxconf, greet_multiline), .def = "true",
	  .doc = "with greet_pause: send the first line of a multi-line "
	      "greeting (\"220-\") at once and the rest after the "
	      "pause; a client that talks after that first line did not "
	      "wait for the end of the reply (postscreen's trap)" },
	{ .path = "greet_pass_time", .type = CT_DURATION,
	  FIELD(struct mxconf, greet_pass_time), .def = "1d",
	  .min = 0, .max = 30 * 86400,
	  .doc = "how long a client address that waited for the whole "
	      "greeting is remembered (by the master, for every worker) "
	      "and greeted without the pause; 0 = not remembered" },
	{ .path = "helo_checks", .type = CT_BOOL,
	  FIELD(struct mxconf, helo_checks), .def = "false",
	  .doc = "refuse (501 5.5.2) a HELO/EHLO name that is neither "
	      "a host name nor an address literal (\"[192.0.2.1]\", "
	      "\"[IPv6:2001:db8::1]\")" },
	/* Postfix postscreen's dnsbl_sites, weights and threshold. */
	{ .path = "dnsbl.sites", .type = CT_STRLIST,
	  FIELD(struct mxconf, dnsbl_sites),
	  COUNT(struct mxconf, ndnsbl_sites),
	  .value = dnsbl_site_check,
	  .doc = "DNS lists asked for the client's address at connect, "
	      "each \"domain[=filter][*weight]\" (\"zen.example="
	      "127.0.0.[2..11]*3\"; a negative weight for an allow "
	      "list); a client whose weights add up to dnsbl.threshold "
	      "is greeted 554 5.7.1" },
	{ .path = "dnsbl.sender_sites", .type = CT_STRLIST,
	  FIELD(struct mxconf, dnsbl_sender_sites),
	  COUNT(struct mxconf, ndnsbl_sender_sites),
	  .value = dnsbl_site_check,
	  .doc = "domain lists (RHSBL) asked for the domain of MAIL FROM, "
	      "same syntax; a sender domain whose weights add up to "
	      "dnsbl.threshold is refused at MAIL with 554 5.7.1" },
	{ .path = "dnsbl.threshold", .type = CT_INT,
	  FIELD(struct mxconf, dnsbl_threshold), .def = "1",
	  .min = -1000, .max = 1000,
	  .doc = "the score at which a client or sender domain is refused" },
	{ .path = "dnsbl.timeout", .type = CT_INT,
	  FIELD(struct mxconf, dnsbl_timeout), .def = "5",
	  .min = 1, .max = 60,
	  .doc = "seconds a list may take to answer; one that does not "
	      "lists nobody (the check fails open, and the log says so)" },
	{ .path = "dnsbl.cache_time", .type = CT_INT,
	  FIELD(struct mxconf, dnsbl_cache_time), .def = "600",
	  .min = 0, .max = 86400,
	  .doc = "seconds a worker keeps a score, so that a client that "
	      "comes back is not looked up again; 0 = no cache" },
	{ .path = "reject_networks", .type = CT_STRLIST,
	  FIELD(struct mxconf, reject_networks),
	  COUNT(struct mxconf, nreject_networks),
	  .value = netlist_entry_check,
	  .doc = "clients refused at connect with 554 5.7.1: addresses "
	      "or CIDR networks" },
	{ .path = "trusted_networks", .type = CT_STRLIST,
	  FIELD(struct mxconf, trusted_networks),
	  COUNT(struct mxconf, ntrusted_networks),
	  .value = netlist_entry_check,
	  .doc = "clients exempt from SPF (their messages say none), "
	      "the policy service and the rate limits: addresses or "
	      "CIDR networks, such as your own submission hosts" },
	{ .path = "rate_limits.connections_per_minute", .type = CT_INT,
	  FIELD(struct mxconf, rate_connections), .def = "0",
	  .min = 0, .max = 1000000,
	  .doc = "new connections per client address per minute, "
	      "counted by the master for all workers; over it, 421 "
	      "4.7.0 and the connection is closed.  0 = no limit" },
	{ .path = "rate_limits.messages_per_minute", .type = CT_INT,
	  FIELD(struct mxconf, rate_messages), .def = "0",
	  .min = 0, .max = 1000000,
	  .doc = "messages (MAIL FROM) per client address per minute, "
	      "counted in each SMTP worker, so that a client spread "
	      "over N workers gets up to N times this; over it, 450 "
	      "4.7.1.  0 = no limit" },
	{ .path = "rate_limits.auth_failures_per_minute", .type = CT_INT,
	  FIELD(struct mxconf, rate_auth_failures), .def = "0",
	  .min = 0, .max = 1000000,
	  .doc = "failed AUTH attempts per client address per minute, "
	      "counted by the master for all workers; once a client "
	      "reaches it, its new connections get 421 4.7.0 until its "
	      "rate falls.  0 = no limit" },
	{ .path = NULL }
};

static const struct conf_table mxconf_table = {
	mxconf_specs, sizeof(struct mxconf), NULL
};

/* --- reporting --- */

static void
conf_emit(const struct conf_ctx *ctx, const char *msg)
{
	if (ctx->errfn != NULL)
		ctx->errfn(msg);
	else
		fprintf(stderr, "%s\n", msg);
}

/*
 * The file a problem is in: the loaded one when file is NULL (libconfig
 * reads our copy of the text and knows no name for it), or an @include'd
 * one, which libconfig 1.5 names as written in the directive and later
 * versions prefix with the include directory themselves.
 */
static void
source_name(const struct conf_ctx *ctx, const char *file, char *out,
    size_t size)
{
	const char *dir = ctx->include_dir;
	size_t dirlen = dir != NULL ? strlen(dir) : 0;

	if (file == NULL)
		snprintf(out, size, "%s", ctx->name);
	else if (dir == NULL || file[0] == '/' ||
	    (strncmp(file, dir, dirlen) == 0 && file[dirlen] == '/'))
		snprintf(out, size, "%s", file);
	else
		snprintf(out, size, "%s/%s", dir, file);
}

static void
conf_vreport(struct conf_ctx *ctx, const char *file, unsigned line,
    const char *fmt, va_list ap)
{
	char where[1024], problem[1024], msg[2100];

	source_name(ctx, file, where, sizeof(where));
	vsnprintf(problem, sizeof(problem), fmt, ap);
	if (line > 0)
		snprintf(msg, sizeof(msg), "%s:%u: %s", where, line, problem);
	else
		snprintf(msg, sizeof(msg), "%s: %s", where, problem);
	conf_emit(ctx, msg);
	ctx->nerrors++;
}

static void conf_report_at(struct conf_ctx *ctx, const char *file,
    unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conf_report(struct conf_ctx *ctx, const config_setting_t *s,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "FILE:LINE: problem", or "FILE: problem" when line is 0. */
static void
conf_report_at(struct conf_ctx *ctx, const char *file, unsigned line,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_vreport(ctx, file, line, fmt, ap);
	va_end(ap);
}

/*
 * A problem with setting s, or with the file as a whole when s is NULL.
 * A setting from an @include'd file names that file.
 */
static void
conf_report(struct conf_ctx *ctx, const config_setting_t *s,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (s != NULL)
		conf_vreport(ctx, config_setting_source_file(s),
		    config_setting_source_line(s), fmt, ap);
	else
		conf_vreport(ctx, NULL, 0, fmt, ap);
	va_end(ap);
}

/*
 * The name of a setting as shown to the operator, "limits.recipients" or
 * "listen[1].port".  An absurdly long name is cut: it can only be an
 * unknown one, and the line number still points at it.
 */
#define CONF_NAME_LEN 512

static void conf_name(char out[CONF_NAME_LEN], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
conf_name(char out[CONF_NAME_LEN], const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, CONF_NAME_LEN, fmt, ap);
	va_end(ap);
}

/* --- integer literals that libconfig may have truncated --- */

/* Append the file at path to b: 0, or an errno value, *op saying what
 * failed ("open" or "read"). */
static int
file_slurp(const char *path, struct buf *b, const char **op)
{
	char chunk[8192];
	size_t n;
	FILE *fp;
	int err;

	*op = "open";
	if ((fp = fopen(path, "r")) == NULL)
		return errno;
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		buf_append(b, chunk, n);
	err = ferror(fp) ? errno : 0;
	fclose(fp);
	*op = "read";
	return err;
}

static bool
is_name_char(int c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '*';
}

static void
literal_add(struct conf_ctx *ctx, size_t file, unsigned line, long long v,
    bool wide)
{
	ctx->literals = xrealloc(ctx->literals,
	    (ctx->nliterals + 1) * sizeof(*ctx->literals));
	ctx->literals[ctx->nliterals].file = file;
	ctx->literals[ctx->nliterals].line = line;
	ctx->literals[ctx->nliterals].value = v;
	ctx->literals[ctx->nliterals].wide = wide;
	ctx->nliterals++;
	if (wide)
		ctx->any_wide = true;
}

/* The rest of a float such as "1.5", ".5e3": not ours to check. */
static const char *
skip_float(const char *q)
{
	while (isdigit((unsigned char)*q) || *q == '.' || *q == 'e' ||
	    *q == 'E' || *q == '-' || *q == '+')
		q++;
	return q;
}

/*
 * Read one number at p (libconfig's integer, integer64, hex, hex64 or
 * float token); record integers without an L suffix.  Returns the end.
 */
static const char *
scan_number(struct conf_ctx *ctx, const char *p, size_t file, unsigned line)
{
	unsigned long long u;
	const char *q;
	char *end;
	long long v;
	bool wide;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		errno = 0;
		u = strtoull(p, &end, 16);
		wide = errno == ERANGE || u > INT_MAX;
		v = u > LLONG_MAX ? LLONG_MAX : (long long)u;
		q = end;
	} else {
		q = p;
		if (*q == '-' || *q == '+')
			q++;
		while (isdigit((unsigned char)*q))
			q++;
		if (*q == '.' || *q == 'e' || *q == 'E')
			return skip_float(q);
		errno = 0;
		v = strtoll(p, NULL, 10);
		wide = errno == ERANGE || v > INT_MAX || v < INT_MIN;
	}
	if (*q == 'L') {
		/* An integer64: libconfig reads it whole. */
		while (*q == 'L')
			q++;
		return q;
	}
	literal_add(ctx, file, line, v, wide);
	return q;
}

/* Past the end of the block comment at p. */
static const char *
skip_block_comment(const char *p, unsigned *line)
{
	for (p += 2; *p != '\0' && !(p[0] == '*' && p[1] == '/'); p++)
		if (*p == '\n')
			(*line)++;
	return *p != '\0' ? p + 2 : p;
}

/* Past the end of the string at p. */
static const char *
skip_string(const char *p, unsigned *line)
{
	for (p++; *p != '\0' && *p != '"'; p++) {
		if (*p == '\\' && p[1] != '\0')
			p++;
		if (*p == '\n')
			(*line)++;
	}
	return *p != '\0' ? p + 1 : p;
}

static bool
starts_number(const char *p)
{
	if (*p == '-' || *p == '+' || *p == '.')
		p++;
	return isdigit((unsigned char)*p);
}

static void scan_int_literals(struct conf_ctx *ctx, const char *text,
    size_t file, unsigned depth);

/* As libconfig's scanner: more than this is an error it reports itself. */
#define INCLUDE_DEPTH_MAX 10

/*
 * The @include directive at p: scan the file it names (relative to the
 * include directory, as libconfig reads it; libconfig 1.5 resolves nested
 * includes there too).  A file that cannot be read is libconfig's to
 * report.  Returns the end of the directive.
 */
static const char *
scan_include(struct conf_ctx *ctx, const char *p, unsigned depth)
{
	const char *name, *end, *op;
	struct scanned_file *f;
	struct buf b;
	size_t idx;

	p += strlen("@include");
	p += strspn(p, " \t");
	if (*p != '"' || (end = strchr(p + 1, '"')) == NULL ||
	    memchr(p + 1, '\n', (size_t)(end - p - 1)) != NULL)
		return p;
	name = p + 1;
	if (depth >= INCLUDE_DEPTH_MAX)
		return end + 1;
	ctx->files = xrealloc(ctx->files, (ctx->nfiles + 1) *
	    sizeof(*ctx->files));
	idx = ctx->nfiles++;
	f = &ctx->files[idx];
	f->written = xstrndup(name, (size_t)(end - name));
	if (ctx->include_dir != NULL && name[0] != '/')
		xasprintf(&f->path, "%s/%s", ctx->include_dir, f->written);
	else
		f->path = xstrdup(f->written);
	buf_init(&b);
	buf_append(&b, "", 0);
	if (file_slurp(ctx->files[idx].path, &b, &op) == 0)
		scan_int_literals(ctx, b.data, idx, depth + 1);
	buf_free(&b);
	return end + 1;
}

/* Find the integer literals of text, skipping comments, strings, names. */
static void
scan_int_literals(struct conf_ctx *ctx, const char *text, size_t file,
    unsigned depth)
{
	const char *p = text;
	unsigned line = 1;

	while (*p != '\0') {
		if (*p == '\n') {
			line++;
			p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			p = skip_block_comment(p, &line);
		} else if (*p == '"') {
			p = skip_string(p, &line);
		} else if (strncmp(p, "@include", 8) == 0) {
			p = scan_include(ctx, p, depth);
		} else if (isalpha((unsigned char)*p) || *p == '*') {
			while (is_name_char((unsigned char)*p))
				p++;
		} else if (starts_number(p)) {
			p = *p == '.' ? skip_float(p) :
			    scan_number(ctx, p, file, line);
		} else {
			p++;
		}
	}
}

/* Which scanned text setting s comes from; nfiles when none. */
static size_t
literal_file(const struct conf_ctx *ctx, const config_setting_t *s)
{
	const char *src = config_setting_source_file(s);
	size_t i;

	if (src == NULL)
		return 0;
	for (i = 1; i < ctx->nfiles; i++)
		if (strcmp(src, ctx->files[i].written) == 0 ||
		    strcmp(src, ctx->files[i].path) == 0)
			return i;
	return ctx->nfiles;
}

/*
 * Did libconfig truncate the integer of s?  A value that equals a literal
 * on its line was read whole (later libconfig versions promote wide
 * decimal literals to 64 bits); one that equals none, on a line holding a
 * wide literal, was cut.  When the value is not on the setting's line
 * ("name =" ending it), it is the next literal of the file.
 */
static bool
int_truncated(const struct conf_ctx *ctx, config_setting_t *s, long long v)
{
	unsigned line = config_setting_source_line(s);
	const struct int_literal *next = NULL, *l;
	bool wide_here = false, any_here = false;
	size_t i, file;

	if (!ctx->any_wide)
		return false;
	file = literal_file(ctx, s);
	for (i = 0; i < ctx->nliterals; i++) {
		l = &ctx->literals[i];
		if (l->file != file || l->line < line)
			continue;
		if (l->line > line) {
			if (next == NULL)
				next = l;
			continue;
		}
		any_here = true;
		if (l->value == v)
			return false;
		if (l->wide)
			wide_here = true;
	}
	if (!any_here && next != NULL)
		return next->wide && next->value != v;
	return wide_here;
}

/* --- setters, one per type --- */

static void
fmt_number(char *out, size_t size, const struct conf_spec *sp, long long v)
{
	if (sp->type == CT_SIZE && v != 0 && v % GB == 0)
		snprintf(out, size, "%lldG", v / GB);
	else if (sp->type == CT_SIZE && v != 0 && v % MB == 0)
		snprintf(out, size, "%lldM", v / MB);
	else if (sp->type == CT_SIZE && v != 0 && v % KB == 0)
		snprintf(out, size, "%lldK", v / KB);
	else
		snprintf(out, size, "%lld", v);
}

/* "\"a\", \"b\" or \"c\"" */
static void
fmt_words(char *out, size_t size, const char *const *words)
{
	size_t i, len = 0;

	out[0] = '\0';
	for (i = 0; words[i] != NULL && len < size; i++) {
		const char *sep = i == 0 ? "" : words[i + 1] == NULL ? " or " :
		    ", ";
		len += snprintf(out + len, size - len, "%s\"%s\"", sep,
		    words[i]);
	}
}

static int
word_index(const char *const *words, const char *w)
{
	int i;

	for (i = 0; words[i] != NULL; i++)
		if (strcmp(words[i], w) == 0)
			return i;
	return -1;
}

static void
store_int(const struct conf_spec *sp, void *base, long long v)
{
	char *field = (char *)base + sp->off;

	if (sp->width == sizeof(int)) {
		int i = (int)v;
		memcpy(field, &i, sizeof(i));
	} else if (sp->width == sizeof(long long)) {
		memcpy(field, &v, sizeof(v));
	} else {
		fatalx("config: %s: no integer of width %zu", sp->path,
		    sp->width);
	}
}

static void
store_string(const struct conf_spec *sp, void *base, const char *v)
{
	char **field = (char **)((char *)base + sp->off);

	free(*field);
	*field = xstrdup(v);
}

static int
set_number(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base, long long v)
{
	char lo[32], hi[32], got[32];

	if (v < sp->min || v > sp->max) {
		fmt_number(lo, sizeof(lo), sp, sp->min);
		fmt_number(hi, sizeof(hi), sp, sp->max);
		fmt_number(got, sizeof(got), sp, v);
		conf_report(ctx, s, "'%s' must be between %s and %s (got %s)",
		    name, lo, hi, got);
		return -1;
	}
	store_int(sp, base, v);
	return 0;
}

static int
get_integer(struct conf_ctx *ctx, config_setting_t *s, const char *name,
    long long *v)
{
	*v = config_setting_get_int64(s);
	if (int_truncated(ctx, s, *v)) {
		conf_report(ctx, s, "'%s': this integer does not fit in 32 "
		    "bits and libconfig cuts it; write it with an L suffix "
		    "(3000000000L)", name);
		return -1;
	}
	return 0;
}

static bool
is_integer(config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_INT ||
	    config_setting_type(s) == CONFIG_TYPE_INT64;
}

static int
set_int(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	long long v;

	if (!is_integer(s)) {
		conf_report(ctx, s, "'%s' must be an integer", name);
		return -1;
	}
	if (get_integer(ctx, s, name, &v) == -1)
		return -1;
	return set_number(ctx, sp, s, name, base, v);
}

static int
set_size(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *text;
	long long v;

	if (is_integer(s)) {
		if (get_integer(ctx, s, name, &v) == -1)
			return -1;
	} else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		text = config_setting_get_string(s);
		if ((v = parse_size(text)) < 0) {
			conf_report(ctx, s, "'%s' must be a size such as "
			    "\"25M\", \"512K\" or \"1G\" (got \"%s\")", name,
			    text);
			return -1;
		}
	} else {
		conf_report(ctx, s, "'%s' must be a size: an integer or a "
		    "string such as \"25M\"", name);
		return -1;
	}
	return set_number(ctx, sp, s, name, base, v);
}

static int
set_string(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	char words[256];
	const char *v;
	int idx = -1;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		conf_report(ctx, s, "'%s' must be a string", name);
		return -1;
	}
	v = config_setting_get_string(s);
	if (v[0] == '\0') {
		conf_report(ctx, s, "'%s' must not be empty", name);
		return -1;
	}
	if (sp->words != NULL && (idx = word_index(sp->words, v)) < 0) {
		fmt_words(words, sizeof(words), sp->words);
		conf_report(ctx, s, "'%s' must be %s (got \"%s\")", name, words,
		    v);
		return -1;
	}
	if (sp->type == CT_ENUM)
		store_int(sp, base, idx);
	else
		store_string(sp, base, v);
	return 0;
}

static void
store_bool(const struct conf_spec *sp, void *base, int v)
{
	char *field = (char *)base + sp->off;
	bool b = v > 0;

	if (sp->width == sizeof(bool))
		memcpy(field, &b, sizeof(b));
	else
		store_int(sp, base, v);
}

static int
set_bool(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		conf_report(ctx, s, "'%s' must be true or false", name);
		return -1;
	}
	store_bool(sp, base, config_setting_get_bool(s));
	return 0;
}

static int
set_boolstr(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct conf_boolstr *field =
	    (struct conf_boolstr *)(void *)((char *)base + sp->off);
	const char *v;

	free(field->string);
	field->string = NULL;
	field->flag = -1;
	if (config_setting_type(s) == CONFIG_TYPE_BOOL) {
		field->flag = config_setting_get_bool(s);
		return 0;
	}
	if (config_setting_type(s) != CONFIG_TYPE_STRING ||
	    (v = config_setting_get_string(s))[0] == '\0') {
		conf_report(ctx, s, "'%s' must be true, false or a non-empty "
		    "string", name);
		return -1;
	}
	field->flag = 1;
	field->string = xstrdup(v);
	return 0;
}

static void
free_strlist(char **list)
{
	char **p;

	if (list == NULL)
		return;
	for (p = list; *p != NULL; p++)
		free(*p);
	free(list);
}

static int
set_strlist(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	char ***field = (char ***)((char *)base + sp->off);
	size_t *count = (size_t *)((char *)base + sp->count_off);
	config_setting_t *e;
	char **list;
	size_t i, n;
	int ok = 0;

	if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
		conf_report(ctx, s, "'%s' must be a list of strings "
		    "[ \"a\", \"b\" ]", name);
		return -1;
	}
	n = (size_t)config_setting_length(s);
	list = xcalloc(n + 1, sizeof(*list));
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING ||
		    config_setting_get_string(e)[0] == '\0') {
			conf_report(ctx, e, "'%s[%zu]' must be a non-empty "
			    "string", name, i);
			ok = -1;
			list[i] = xstrdup("");
		} else {
			list[i] = xstrdup(config_setting_get_string(e));
		}
	}
	free_strlist(*field);
	*field = list;
	*count = n;
	if (ok == 0 && n == 0 && (sp->flags & CF_NONEMPTY)) {
		conf_report(ctx, s, "'%s' must not be empty", name);
		ok = -1;
	}
	return ok;
}

/* "300", "90s", "5m", "4h", "5d", "1w" into seconds; -1 on error. */
static long long
parse_duration(const char *text)
{
	static const struct { char unit; long long seconds; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
		{ 'w', 7 * 86400 },
	};
	unsigned long long v;
	char *end;
	size_t i;

	if (!isdigit((unsigned char)text[0]))
		return -1;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno != 0 || v > (1ULL << 40))
		return -1;
	if (*end == '\0')
		return (long long)v;
	for (i = 0; i < ARRAY_LEN(units); i++)
		if (end[0] == units[i].unit && end[1] == '\0')
			return (long long)v * units[i].seconds;
	return -1;
}

/* A duration from setting s (an integer is seconds); -1 reported. */
static int
get_duration(struct conf_ctx *ctx, config_setting_t *s, const char *name,
    long long *v)
{
	if (is_integer(s))
		return get_integer(ctx, s, name, v);
	if (config_setting_type(s) == CONFIG_TYPE_STRING &&
	    (*v = parse_duration(config_setting_get_string(s))) >= 0)
		return 0;
	conf_report(ctx, s, "'%s' must be a duration: seconds, or a string "
	    "such as \"90s\", \"5m\", \"4h\", \"5d\" or \"1w\"", name);
	return -1;
}

static int
set_duration(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	long long v;

	if (get_duration(ctx, s, name, &v) == -1)
		return -1;
	return set_number(ctx, sp, s, name, base, v);
}

static int
set_durlist(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	unsigned **field = (unsigned **)(void *)((char *)base + sp->off);
	size_t *count = (size_t *)((char *)base + sp->count_off);
	char ename[CONF_NAME_LEN];
	unsigned *list;
	long long v;
	size_t i, n;
	int ok = 0;

	if ((!config_setting_is_array(s) && !config_setting_is_list(s)) ||
	    config_setting_length(s) == 0) {
		conf_report(ctx, s, "'%s' must be a list of at least one "
		    "duration [ 60, \"5m\", ... ]", name);
		return -1;
	}
	n = (size_t)config_setting_length(s);
	list = xcalloc(n, sizeof(*list));
	for (i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

		conf_name(ename, "%s[%zu]", name, i);
		if (get_duration(ctx, e, ename, &v) == -1) {
			ok = -1;
		} else if (v < sp->min || v > sp->max) {
			conf_report(ctx, e, "'%s' must be between %lld and "
			    "%lld seconds (got %lld)", ename, sp->min, sp->max,
			    v);
			ok = -1;
		} else {
			list[i] = (unsigned)v;
		}
	}
	free(*field);
	*field = list;
	*count = n;
	return ok;
}

/* The default of a CT_DURLIST: durations separated by spaces. */
static void
default_durlist(const struct conf_spec *sp, void *base)
{
	unsigned **field = (unsigned **)(void *)((char *)base + sp->off);
	size_t *count = (size_t *)((char *)base + sp->count_off);
	char *copy = xstrdup(sp->def), *word, *save = NULL;
	long long v;

	free(*field);
	*field = NULL;
	*count = 0;
	for (word = strtok_r(copy, " ", &save); word != NULL;
	    word = strtok_r(NULL, " ", &save)) {
		if ((v = parse_duration(word)) < sp->min || v > sp->max)
			fatalx("config: bad default for %s", sp->path);
		*field = xrealloc(*field, (*count + 1) * sizeof(**field));
		(*field)[(*count)++] = (unsigned)v;
	}
	free(copy);
	if (*count == 0)
		fatalx("config: bad default for %s", sp->path);
}

static void conf_defaults(const struct conf_table *t, void *base);
static void conf_walk(struct conf_ctx *ctx, const struct conf_table *t,
    config_setting_t *group, const char *rel, const char *where, void *base);
static void conf_required(struct conf_ctx *ctx, const struct conf_table *t,
    config_setting_t *group, const char *where);
static void conf_release(const struct conf_table *t, void *base);

static void
release_list(const struct conf_spec *sp, void *base)
{
	char **field = (char **)((char *)base + sp->off);
	size_t *count = (size_t *)((char *)base + sp->count_off);
	size_t i;

	for (i = 0; *field != NULL && i < *count; i++)
		conf_release(sp->sub, *field + i * sp->sub->elem_size);
	free(*field);
	*field = NULL;
	*count = 0;
}

static int
set_list(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	char **field = (char **)((char *)base + sp->off);
	size_t *count = (size_t *)((char *)base + sp->count_off);
	const struct conf_table *t = sp->sub;
	char where[CONF_NAME_LEN];
	config_setting_t *e;
	size_t i, n;
	void *elem;

	if (!config_setting_is_list(s)) {
		conf_report(ctx, s, "'%s' must be a list of groups "
		    "( { ... }, { ... } )", name);
		return -1;
	}
	release_list(sp, base);
	n = (size_t)config_setting_length(s);
	*field = n > 0 ? xcalloc(n, t->elem_size) : NULL;
	*count = n;
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		elem = *field + i * t->elem_size;
		conf_name(where, "%s[%zu]", name, i);
		conf_defaults(t, elem);
		if (!config_setting_is_group(e)) {
			conf_report(ctx, e, "'%s' must be a group { ... }",
			    where);
			continue;
		}
		conf_walk(ctx, t, e, NULL, where, elem);
		conf_required(ctx, t, e, where);
		if (t->finish != NULL)
			t->finish(ctx, e, where, elem);
	}
	return 0;
}

/* --- the table walker --- */

static const struct conf_spec *
spec_find(const struct conf_table *t, const char *path)
{
	const struct conf_spec *sp;

	for (sp = t->specs; sp->path != NULL; sp++)
		if (strcmp(sp->path, path) == 0)
			return sp;
	return NULL;
}

/* Is path a group of the table, i.e. a prefix of some "path.setting"? */
static bool
spec_is_group(const struct conf_table *t, const char *path)
{
	const struct conf_spec *sp;
	size_t len = strlen(path);

	for (sp = t->specs; sp->path != NULL; sp++)
		if (strncmp(sp->path, path, len) == 0 && sp->path[len] == '.')
			return true;
	return false;
}

static void
path_join(char out[CONF_NAME_LEN], const char *a, const char *b)
{
	if (a == NULL || a[0] == '\0')
		conf_name(out, "%s", b);
	else
		conf_name(out, "%s.%s", a, b);
}

/*
 * The owning module's parser (config_value_fn) on the string, or on each
 * string of the list; every bad one is reported.
 */
static int
check_values(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	char why[256], **list;
	size_t i, n;
	int r = 0;

	if (sp->type == CT_STRING) {
		if (sp->value(*(char **)(void *)((char *)base + sp->off), why,
		    sizeof(why)) == 0)
			return 0;
		conf_report(ctx, s, "'%s': %s", name, why);
		return -1;
	}
	if (sp->type != CT_STRLIST)
		fatalx("config: %s: a value parser takes strings", sp->path);
	list = *(char ***)(void *)((char *)base + sp->off);
	n = *(size_t *)(void *)((char *)base + sp->count_off);
	for (i = 0; i < n; i++) {
		if (sp->value(list[i], why, sizeof(why)) == 0)
			continue;
		conf_report(ctx, config_setting_get_elem(s, (unsigned)i),
		    "'%s[%zu]' %s (got \"%s\")", name, i, why, list[i]);
		r = -1;
	}
	return r;
}

static void
conf_apply(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	int r = -1;

	switch (sp->type) {
	case CT_INT:
		r = set_int(ctx, sp, s, name, base);
		break;
	case CT_SIZE:
		r = set_size(ctx, sp, s, name, base);
		break;
	case CT_STRING:
	case CT_ENUM:
		r = set_string(ctx, sp, s, name, base);
		break;
	case CT_STRLIST:
		r = set_strlist(ctx, sp, s, name, base);
		break;
	case CT_LIST:
		r = set_list(ctx, sp, s, name, base);
		break;
	case CT_BOOL:
		r = set_bool(ctx, sp, s, name, base);
		break;
	case CT_BOOLSTR:
		r = set_boolstr(ctx, sp, s, name, base);
		break;
	case CT_DURATION:
		r = set_duration(ctx, sp, s, name, base);
		break;
	case CT_DURLIST:
		r = set_durlist(ctx, sp, s, name, base);
		break;
	}
	if (r == 0 && sp->value != NULL)
		r = check_values(ctx, sp, s, name, base);
	if (r == 0 && sp->check != NULL)
		sp->check(ctx, sp, s, name, base);
}

/*
 * Apply every setting of group (at path rel inside the table t, shown to
 * the operator prefixed by where) to base.
 */
static void
conf_walk(struct conf_ctx *ctx, const struct conf_table *t,
    config_setting_t *group, const char *rel, const char *where, void *base)
{
	char path[CONF_NAME_LEN], name[CONF_NAME_LEN];
	const struct conf_spec *sp;
	config_setting_t *s;
	int i, n;

	n = config_setting_length(group);
	for (i = 0; i < n; i++) {
		s = config_setting_get_elem(group, (unsigned)i);
		path_join(path, rel, config_setting_name(s));
		path_join(name, where, path);
		if ((sp = spec_find(t, path)) != NULL)
			conf_apply(ctx, sp, s, name, base);
		else if (!spec_is_group(t, path))
			conf_report(ctx, s, "unknown setting '%s'", name);
		else if (!config_setting_is_group(s))
			conf_report(ctx, s, "'%s' must be a group { ... }",
			    name);
		else
			conf_walk(ctx, t, s, path, where, base);
	}
}

static void
conf_required(struct conf_ctx *ctx, const struct conf_table *t,
    config_setting_t *group, const char *where)
{
	const struct conf_spec *sp;
	char name[CONF_NAME_LEN];

	for (sp = t->specs; sp->path != NULL; sp++) {
		if (!(sp->flags & CF_REQUIRED) ||
		    config_setting_lookup(group, sp->path) != NULL)
			continue;
		path_join(name, where, sp->path);
		conf_report(ctx, group, "missing setting '%s'", name);
	}
}

/* Fill base with the defaults of the table; a bad one is a bug here. */
static void
conf_defaults(const struct conf_table *t, void *base)
{
	const struct conf_spec *sp;
	long long v;
	int idx;

	for (sp = t->specs; sp->path != NULL; sp++) {
		if (sp->type == CT_BOOLSTR)
			((struct conf_boolstr *)(void *)((char *)base +
			    sp->off))->flag = -1;
		if (sp->type == CT_BOOL && sp->def == NULL)
			store_bool(sp, base, -1);
		if (sp->def == NULL)
			continue;
		switch (sp->type) {
		case CT_INT:
		case CT_SIZE:
			if ((v = parse_size(sp->def)) < 0 ||
			    v < sp->min || v > sp->max)
				fatalx("config: bad default for %s", sp->path);
			store_int(sp, base, v);
			break;
		case CT_STRING:
			store_string(sp, base, sp->def);
			break;
		case CT_ENUM:
			if ((idx = word_index(sp->words, sp->def)) < 0)
				fatalx("config: bad default for %s", sp->path);
			store_int(sp, base, idx);
			break;
		case CT_BOOL:
			if (strcmp(sp->def, "true") != 0 &&
			    strcmp(sp->def, "false") != 0)
				fatalx("config: bad default for %s", sp->path);
			store_bool(sp, base, strcmp(sp->def, "true") == 0);
			break;
		case CT_DURATION:
			if ((v = parse_duration(sp->def)) < 0 ||
			    v < sp->min || v > sp->max)
				fatalx("config: bad default for %s", sp->path);
			store_int(sp, base, v);
			break;
		case CT_DURLIST:
			default_durlist(sp, base);
			break;
		case CT_STRLIST:
		case CT_LIST:
		case CT_BOOLSTR:
			fatalx("config: %s: no default for this type",
			    sp->path);
		}
	}
}

static void
conf_release(const struct conf_table *t, void *base)
{
	const struct conf_spec *sp;
	char **str;

	for (sp = t->specs; sp->path != NULL; sp++) {
		switch (sp->type) {
		case CT_STRING:
			str = (char **)((char *)base + sp->off);
			free(*str);
			*str = NULL;
			break;
		case CT_STRLIST:
			free_strlist(*(char ***)((char *)base + sp->off));
			*(char ***)((char *)base + sp->off) = NULL;
			break;
		case CT_LIST:
			release_list(sp, base);
			break;
		case CT_BOOLSTR:
			str = &((struct conf_boolstr *)(void *)((char *)base +
			    sp->off))->string;
			free(*str);
			*str = NULL;
			break;
		case CT_DURLIST:
			free(*(unsigned **)(void *)((char *)base + sp->off));
			*(unsigned **)(void *)((char *)base + sp->off) = NULL;
			break;
		case CT_INT:
		case CT_SIZE:
		case CT_ENUM:
		case CT_BOOL:
		case CT_DURATION:
			break;
		}
	}
}

/* --- checkers --- */

static int
check_hostname(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *host = ((struct mxconf *)base)->hostname;

	if (!addr_domain_valid(host)) {
		conf_report(ctx, s, "'%s' must be a host name such as "
		    "\"mx.example.com\" (got \"%s\")", name, host);
		return -1;
	}
	return 0;
}

/* The accounts must exist now, not when a child first needs them. */
static int
check_user(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *user = *(char **)(void *)((char *)base + sp->off);

	/* A checked text is parsed where /etc/passwd may be out of reach
	 * (the queue process's root): the master looked already. */
	if (user != NULL && !ctx->checked && getpwnam(user) == NULL) {
		conf_report(ctx, s, "'%s': no such user \"%s\"", name, user);
		return -1;
	}
	return 0;
}

/* An absolute path other than "/": the workers' root. */
static int
check_chroot_dir(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *dir = *(char **)(void *)((char *)base + sp->off);

	if (dir != NULL && (dir[0] != '/' || dir[strspn(dir, "/")] == '\0')) {
		conf_report(ctx, s, "'%s': an absolute path other than /, not"
		    " \"%s\"", name, dir);
		return -1;
	}
	return 0;
}

static int
check_group(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *group = *(char **)(void *)((char *)base + sp->off);

	if (group != NULL && !ctx->checked && getgrnam(group) == NULL) {
		conf_report(ctx, s, "'%s': no such group \"%s\"", name, group);
		return -1;
	}
	return 0;
}

/* Domains are compared in lower case everywhere (RFC 5321 2.4). */
static int
check_domains(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct mxconf *c = base;
	size_t i;
	char *p;
	int r = 0;

	for (i = 0; i < c->naccept_domains; i++) {
		for (p = c->accept_domains[i]; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!addr_domain_valid(c->accept_domains[i])) {
			conf_report(ctx, config_setting_get_elem(s,
			    (unsigned)i), "'%s[%zu]' is not a domain name "
			    "(got \"%s\")", name, i,
			    config_setting_get_string_elem(s, (int)i));
			r = -1;
		}
	}
	return r;
}

static int
check_ip_address(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *a = ((struct listener_conf *)base)->address;
	struct in6_addr in6;
	struct in_addr in;

	if (inet_pton(AF_INET, a, &in) == 1 ||
	    inet_pton(AF_INET6, a, &in6) == 1)
		return 0;
	conf_report(ctx, s, "'%s' must be an IPv4 or IPv6 address such as "
	    "\"127.0.0.1\" or \"::1\" (got \"%s\")", name, a);
	return -1;
}

/* Resolve address and port into ss; problems were reported already. */
static void
listener_finish(struct conf_ctx *ctx, config_setting_t *group,
    const char *name, void *base)
{
	struct listener_conf *l = base;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(&l->ss, 0, sizeof(l->ss));
	l->ss_len = 0;
	if (l->address == NULL || l->port == 0)
		return;
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, l->address, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)l->port);
		memcpy(&l->ss, &sin, sizeof(sin));
		l->ss_len = sizeof(sin);
	} else if (inet_pton(AF_INET6, l->address, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)l->port);
		memcpy(&l->ss, &sin6, sizeof(sin6));
		l->ss_len = sizeof(sin6);
	}
}

static bool
listener_same(const struct listener_conf *a, const struct listener_conf *b)
{
	return a->ss_len != 0 && a->ss_len == b->ss_len &&
	    memcmp(&a->ss, &b->ss, a->ss_len) == 0;
}

/* Two listeners on one address and port: the second bind would fail. */
static int
check_listeners_unique(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct mxconf *c = base;
	const struct listener_conf *l = c->listeners;
	config_setting_t *first, *again;
	size_t i, j;
	int r = 0;

	for (j = 1; j < c->nlisteners; j++) {
		for (i = 0; i < j && !listener_same(&l[i], &l[j]); i++)
			;
		if (i == j)
			continue;
		first = config_setting_get_elem(s, (unsigned)i);
		again = config_setting_get_elem(s, (unsigned)j);
		conf_report(ctx, again, "duplicate listener %s port %d "
		    "(also at line %u)", l[j].address, l[j].port,
		    config_setting_source_line(first));
		r = -1;
	}
	return r;
}

/* A relative path is relative to the directory mxgated starts in; the
 * processes that use it run elsewhere. */
static int
check_abs_path(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	char **field = (char **)(void *)((char *)base + sp->off);
	char cwd[PATH_MAX], *abs;

	if (*field == NULL || (*field)[0] == '/')
		return 0;
	if (ctx->base_dir != NULL)
		strlcpy_mx(cwd, ctx->base_dir, sizeof(cwd));
	else if (getcwd(cwd, sizeof(cwd)) == NULL) {
		conf_report(ctx, s, "'%s': relative path, and the current "
		    "directory is unknown: %s", name, strerror(errno));
		return -1;
	}
	xasprintf(&abs, "%s/%s", cwd, *field);
	free(*field);
	*field = abs;
	return 0;
}

static int
check_metrics_listen(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	const char *text = ((struct mxconf *)base)->metrics_listen;
	struct sockaddr_storage ss;
	const char *why;
	unsigned len;

	if (text != NULL && metrics_listen_parse(text, &ss, &len, &why) < 0) {
		conf_report(ctx, s, "'%s': \"%s\": %s", name, text, why);
		return -1;
	}
	return 0;
}

/* tls.c reports problems with the files at the element's line. */
static void
tls_cert_finish(struct conf_ctx *ctx, config_setting_t *group,
    const char *name, void *base)
{
	struct tls_cert_conf *tc = base;
	char file[256];

	source_name(ctx, config_setting_source_file(group), file, sizeof(file));
	snprintf(tc->where, sizeof(tc->where), "%s:%u: '%s'", file,
	    config_setting_source_line(group), name);
}

/* ---- sender authentication, policy service, plugins, checks ---- */

static int
check_policy_stages(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct mxconf *c = base;
	char words[256];
	int ok = 0, idx;

	fmt_words(words, sizeof(words), smtp_stages);
	for (size_t i = 0; i < c->npolicy_stages_list; i++) {
		if ((idx = word_index(smtp_stages, c->policy_stages_list[i])) >= 0)
			continue;
		conf_report(ctx, config_setting_get_elem(s, (unsigned)i),
		    "'%s[%zu]' must be %s (got \"%s\")", name, i, words,
		    c->policy_stages_list[i]);
		ok = -1;
	}
	return ok;
}

static int
check_plugin_path(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct plugin_conf *pc = base;

	if (check_abs_path(ctx, sp, s, name, base) < 0)
		return -1;
	if (ctx->checked || access(pc->path, R_OK) == 0)
		return 0;
	conf_report(ctx, s, "'%s': %s: %s", name, pc->path, strerror(errno));
	return -1;
}

/* Loading happens later (plugin.h): keep where to blame it. */
static void
plugin_finish(struct conf_ctx *ctx, config_setting_t *group,
    const char *name, void *base)
{
	struct plugin_conf *pc = base;
	config_setting_t *path = config_setting_lookup(group, "path");
	char file[256];

	source_name(ctx, config_setting_source_file(group), file, sizeof(file));
	snprintf(pc->where, sizeof(pc->where), "%s:%u: '%s'", file,
	    config_setting_source_line(path != NULL ? path : group), name);
}

/* Defaults of the lists, and the forms the workers use. */
static void
config_checks(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	enum spf_result r;
	size_t bad;
	const char *why;

	if (c->nspf_pass_results == 0) {
		free_strlist(c->spf_pass_results);      /* [ ], reported */
		c->spf_pass_results = xcalloc(2, sizeof(char *));
		c->spf_pass_results[0] = xstrdup("pass");
		c->nspf_pass_results = 1;
	}
	c->spf_pass_mask = 0;
	for (size_t i = 0; i < c->nspf_pass_results; i++) {
		if (spf_result_parse(c->spf_pass_results[i], &r) == 0)
			c->spf_pass_mask |= 1u << r;
	}
	if (c->npolicy_stages_list == 0 &&
	    config_lookup(cf, "policy.stages") == NULL) {
		c->policy_stages_list = xcalloc(2, sizeof(char *));
		c->policy_stages_list[0] = xstrdup("rcpt");
		c->npolicy_stages_list = 1;
	}
	c->policy_stages = 0;
	for (size_t i = 0; i < c->npolicy_stages_list; i++) {
		int idx = word_index(smtp_stages, c->policy_stages_list[i]);
		if (idx >= 0)
			c->policy_stages |= 1u << idx;
	}
	/* Bad entries were reported; these cannot fail then. */
	c->reject_nets = netlist_new(c->reject_networks, c->nreject_networks,
	    &bad, &why);
	c->trusted_nets = netlist_new(c->trusted_networks,
	    c->ntrusted_networks, &bad, &why);
	if (c->reject_nets == NULL)
		c->reject_nets = netlist_new(NULL, 0, &bad, &why);
	if (c->trusted_nets == NULL)
		c->trusted_nets = netlist_new(NULL, 0, &bad, &why);
	(void)ctx;
}

/*
 * AUTH and TLS by listener: the defaults that depend on the role, and the
 * combinations that could never work (a submission listener that cannot
 * authenticate anyone takes no mail at all).
 */
static void
listener_auth_check(struct conf_ctx *ctx, config_setting_t *e,
    struct mxconf *c, struct listener_conf *l, size_t i)
{
	bool sources = c->auth_passwd_file != NULL || c->auth_sqlite != NULL;

	if (l->auth < 0)
		l->auth = l->role != ROLE_MX;
	if (l->allow_plaintext_auth < 0)
		l->allow_plaintext_auth = c->auth_allow_plaintext;
	if (l->role != ROLE_MX && !l->auth)
		conf_report(ctx, e, "'listen[%zu]': a %s listener takes mail "
		    "only after AUTH: 'auth' cannot be false", i,
		    listener_roles[l->role]);
	else if (l->auth && !sources)
		conf_report(ctx, e, "'listen[%zu]': AUTH needs "
		    "auth.passwd_file or auth.sqlite", i);
	if (l->role == ROLE_SUBMISSIONS && c->ntls_certs == 0)
		conf_report(ctx, e, "'listen[%zu]': role \"submissions\" is "
		    "TLS from the first byte and needs tls.certificates", i);
	else if (l->auth && !l->allow_plaintext_auth && c->ntls_certs == 0)
		conf_report(ctx, e, "'listen[%zu]': AUTH is offered only "
		    "under TLS: set tls.certificates (or "
		    "allow_plaintext_auth = true)", i);
}

/*
 * The PROXY protocol: a listener that expects it must say whom from (a
 * header is a claim about the client, believed from the balancers
 * alone), and balancers named for a listener that does not expect it
 * would be ignored.
 */
static void
listener_proxy_check(struct conf_ctx *ctx, config_setting_t *e,
    struct listener_conf *l, size_t i)
{
	size_t bad;
	const char *why;

	if (l->proxy_protocol && l->nproxy_from == 0)
		conf_report(ctx, e, "'listen[%zu]': proxy_protocol needs "
		    "proxy_from, the load balancers' addresses", i);
	else if (!l->proxy_protocol && l->nproxy_from > 0)
		conf_report(ctx, e, "'listen[%zu]': proxy_from without "
		    "proxy_protocol = true", i);
	else if (l->proxy_protocol)
		/* Bad entries were reported already: NULL then. */
		l->proxy_nets = netlist_new(l->proxy_from, l->nproxy_from,
		    &bad, &why);
}

static void
config_listeners_auth(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	config_setting_t *listen = config_lookup(cf, "listen");
	size_t i;

	for (i = 0; i < c->nlisteners; i++) {
		config_setting_t *e = listen != NULL ?
		    config_setting_get_elem(listen, (unsigned)i) : NULL;

		listener_auth_check(ctx, e, c, &c->listeners[i], i);
		listener_proxy_check(ctx, e, &c->listeners[i], i);
	}
}

/* Route names go to logs, the queue and `route test`: keep them words. */
static bool
route_name_valid(const char *n)
{
	for (; *n != '\0'; n++)
		if (!isalnum((unsigned char)*n) && *n != '_' && *n != '-' &&
		    *n != '.')
			return false;
	return true;
}

/* Name the unnamed routes "route<N>"; names must be unique (delivery
 * finds a webhook's secret by its route's name). */
static int
check_routes(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct mxconf *c = base;
	config_setting_t *e;
	size_t i, j;
	int r = 0;

	for (i = 0; i < c->nroutes; i++)
		if (c->routes[i].name == NULL)
			xasprintf(&c->routes[i].name, "route%zu", i + 1);
	for (i = 0; i < c->nroutes; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (!route_name_valid(c->routes[i].name)) {
			conf_report(ctx, e, "'%s[%zu].name' may hold only "
			    "letters, digits, '_', '-' and '.' (got \"%s\")",
			    name, i, c->routes[i].name);
			r = -1;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(c->routes[i].name, c->routes[j].name) != 0)
				continue;
			conf_report(ctx, e, "duplicate route name \"%s\" (also "
			    "at line %u)", c->routes[i].name,
			    config_setting_source_line(
			    config_setting_get_elem(s, (unsigned)j)));
			r = -1;
			break;
		}
	}
	return r;
}

/* "host", "host:port", "192.0.2.1:25", "[2001:db8::1]" or
 * "[2001:db8::1]:25". */
static bool
upstream_host_valid(const char *h)
{
	char host[ADDR_DOMAIN_MAX + 1];
	unsigned char addr[16];
	const char *end, *port = NULL;
	bool bracket = h[0] == '[';
	size_t len;
	long p;
	char *pend;

	if (bracket) {
		if ((end = strchr(h, ']')) == NULL)
			return false;
		len = (size_t)(end - h - 1);
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			return false;
		h++;
	} else {
		end = strchr(h, ':');
		len = end != NULL ? (size_t)(end - h) : strlen(h);
		if (end != NULL)
			port = end + 1;
	}
	if (len == 0 || len >= sizeof(host))
		return false;
	memcpy(host, h, len);
	host[len] = '\0';
	if (port != NULL) {
		errno = 0;
		p = strtol(port, &pend, 10);
		if (!isdigit((unsigned char)port[0]) || *pend != '\0' ||
		    p < 1 || p > 65535)
			return false;
	}
	if (bracket)
		return inet_pton(AF_INET6, host, addr) == 1;
	return inet_pton(AF_INET, host, addr) == 1 ||
	    addr_domain_valid(host);
}

static int
check_upstream_hosts(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct upstream_conf *u = base;
	size_t i;
	int r = 0;

	if (u->nhosts == 0) {
		conf_report(ctx, s, "'%s' must name at least one host", name);
		return -1;
	}
	for (i = 0; i < u->nhosts; i++) {
		if (upstream_host_valid(u->hosts[i]))
			continue;
		conf_report(ctx, config_setting_get_elem(s, (unsigned)i),
		    "'%s[%zu]' must be \"host\", \"host:port\" or "
		    "\"[IPv6]:port\" (got \"%s\")", name, i, u->hosts[i]);
		r = -1;
	}
	return r;
}

static int
check_upstreams(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct mxconf *c = base;
	config_setting_t *e;
	size_t i, j;
	int r = 0;

	for (i = 0; i < c->nupstreams; i++) {
		const char *n = c->upstreams[i].name;

		if (n == NULL)
			continue;
		e = config_setting_get_elem(s, (unsigned)i);
		if (strcmp(n, ROUTE_UPSTREAM_MX) == 0) {
			conf_report(ctx, e, "'%s[%zu].name' cannot be \"%s\": "
			    "relay routes use it for the recipient domain's "
			    "MX hosts", name, i, ROUTE_UPSTREAM_MX);
			r = -1;
		}
		for (j = 0; j < i; j++) {
			if (c->upstreams[j].name == NULL ||
			    strcmp(n, c->upstreams[j].name) != 0)
				continue;
			conf_report(ctx, e, "duplicate upstream name \"%s\" "
			    "(also at line %u)", n, config_setting_source_line(
			    config_setting_get_elem(s, (unsigned)j)));
			r = -1;
			break;
		}
	}
	return r;
}

/* "example.com" or ".example.com", made lower case. */
static int
check_tls_policy_domain(struct conf_ctx *ctx, const struct conf_spec *sp,
    config_setting_t *s, const char *name, void *base)
{
	struct tls_policy_conf *tp = base;
	char *p;

	for (p = tp->domain; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	p = tp->domain[0] == '.' ? tp->domain + 1 : tp->domain;
	if (addr_domain_valid(p))
		return 0;
	conf_report(ctx, s, "'%s' must be a domain name, or one with a"
	    " leading \".\" for its subdomains (got \"%s\")", name, tp->domain);
	return -1;
}

/*
 * The MX hosts' level, and DANE only with a resolver whose AD bit is
 * trusted: without it no TLSA record is ever usable (RFC 7672 2.1), and
 * a level that cannot work is refused at start (mta-sts only skips its
 * DANE part then).
 */
static void
config_tls_levels(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	static const char why[] = "DANE needs TLSA records from a validating"
	    " resolver: set delivery.dnssec = true (with a validating"
	    " resolver in /etc/resolv.conf)";
	config_setting_t *list;
	size_t i;

	c->mx_tls_level = word_index(tls_level_words, c->mx_tls_level_word);
	if (c->dnssec)
		return;
	if (c->mx_tls_level == TLS_LEVEL_DANE)
		conf_report(ctx, config_lookup(cf, "delivery.tls_level"),
		    "'delivery.tls_level' is \"dane\": %s", why);
	list = config_lookup(cf, "delivery.tls_policy");
	for (i = 0; i < c->ntls_policies; i++)
		if (c->tls_policies[i].level == TLS_LEVEL_DANE)
			conf_report(ctx, list != NULL ?
			    config_setting_get_elem(list, (unsigned)i) : NULL,
			    "'delivery.tls_policy[%zu].level' is \"dane\": %s",
			    i, why);
	list = config_lookup(cf, "upstreams");
	for (i = 0; i < c->nupstreams; i++)
		if (c->upstreams[i].tls == UPSTREAM_TLS_DANE)
			conf_report(ctx, list != NULL ?
			    config_setting_get_elem(list, (unsigned)i) : NULL,
			    "'upstreams[%zu].tls' is \"dane\": %s", i, why);
}

/* --- routes: the accept_domains shorthand, compiling --- */

/* "@example\\.com$": the domain is letters, digits, '-' and '.'. */
static char *
domain_pattern(const char *prefix, const char *domain)
{
	struct buf b;
	const char *p;

	buf_init(&b);
	buf_appends(&b, prefix);
	for (p = domain; *p != '\0'; p++) {
		if (*p == '.')
			buf_append(&b, "\\", 1);
		buf_append(&b, p, 1);
	}
	buf_appends(&b, "$");
	return b.data;
}

static void
implicit_route(struct mxconf *c, const char *name, char *rcpt,
    const char *action)
{
	struct route_conf *r;

	c->routes = xrealloc(c->routes, (c->nroutes + 1) * sizeof(*r));
	r = &c->routes[c->nroutes++];
	memset(r, 0, sizeof(*r));
	r->name = xstrdup(name);
	r->rcpt = rcpt;
	r->action = xstrdup(action);
	r->authenticated.flag = -1;
	r->tls = -1;
}

/*
 * Without `routes`, accept_domains says it (etc/mxgate.conf): each domain
 * is a "debug" route, so is <postmaster> at our host name (RFC 5321
 * 4.5.1), and anything else is relaying, refused 550 5.7.1.
 */
static void
routes_from_accept_domains(struct mxconf *c)
{
	size_t i;

	for (i = 0; i < c->naccept_domains; i++)
		implicit_route(c, "accept_domains",
		    domain_pattern("@", c->accept_domains[i]), "debug");
	implicit_route(c, "postmaster",
	    domain_pattern("^postmaster@", c->hostname), "debug");
	implicit_route(c, "relay_denied", xstrdup("^"), "reject");
	c->routes[c->nroutes - 1].code = 550;
	c->routes[c->nroutes - 1].text =
	    xstrdup("5.7.1 <${rcpt}>: Relay access denied");
}

struct route_report_ctx {
	struct conf_ctx  *ctx;
	config_setting_t *routes;       /* NULL: routes from accept_domains */
	config_setting_t *fallback;
};

/* Blame the setting of the route, else the route, else the list. */
static void
route_problem(void *arg, size_t route, const char *setting, int elem,
    const char *msg)
{
	struct route_report_ctx *r = arg;
	config_setting_t *s = r->fallback, *g, *x;

	if (r->routes != NULL &&
	    (g = config_setting_get_elem(r->routes, (unsigned)route)) != NULL) {
		s = g;
		if (setting != NULL &&
		    (x = config_setting_lookup(g, setting)) != NULL) {
			s = x;
			if (elem >= 0 && (g = config_setting_get_elem(x,
			    (unsigned)elem)) != NULL)
				s = g;
		}
	}
	conf_report(r->ctx, s, "%s", msg);
}

static void
config_routes(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	struct route_report_ctx r = { .ctx = ctx };
	config_setting_t *domains = config_lookup(cf, "accept_domains");

	r.routes = config_lookup(cf, "routes");
	r.fallback = r.routes != NULL ? r.routes : domains;
	if (r.routes != NULL && domains != NULL) {
		conf_report(ctx, domains, "'accept_domains' is a shorthand "
		    "for routes and cannot be used with 'routes': write a "
		    "route for these domains instead");
		return;
	}
	if (r.routes == NULL)
		routes_from_accept_domains(c);
	else if (!config_setting_is_list(r.routes))
		return;                 /* reported already */
	c->route_table = route_table_build(c, route_problem, &r);
}

/* --- loading --- */

static char *
default_hostname(void)
{
	char host[256];

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		return xstrdup("localhost");
	host[sizeof(host) - 1] = '\0';
	return xstrdup(host);
}

/* What the table cannot say: defaults derived from other settings. */
/* DSNs go to "mx" or to an upstream that exists. */
static void
config_bounce_upstream(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	size_t i;

	if (c->bounce_upstream == NULL ||
	    strcmp(c->bounce_upstream, "mx") == 0)
		return;
	for (i = 0; i < c->nupstreams; i++)
		if (c->upstreams[i].name != NULL &&
		    strcmp(c->upstreams[i].name, c->bounce_upstream) == 0)
			return;
	conf_report(ctx, config_lookup(cf, "delivery.bounce_upstream"),
	    "'delivery.bounce_upstream': no upstream named \"%s\" (say \"mx\""
	    " or the name of one of upstreams)", c->bounce_upstream);
}

/* Names are unique; what smtp_milters and routes name exists. */
static bool
name_defined(const char *name, const void *v, size_t n, size_t elem)
{
	for (size_t i = 0; i < n; i++) {
		const char *d = *(char *const *)((const char *)v + i * elem);
		if (d != NULL && strcmp(d, name) == 0)
			return true;
	}
	return false;
}

static void
unique_names(struct conf_ctx *ctx, config_t *cf, const char *list,
    const void *v, size_t n, size_t elem)
{
	for (size_t i = 1; i < n; i++) {
		const char *d = *(char *const *)((const char *)v + i * elem);
		if (d != NULL && name_defined(d, v, i, elem))
			conf_report(ctx, config_setting_get_elem(
			    config_lookup(cf, list), (unsigned)i),
			    "duplicate %s name \"%s\"", list, d);
	}
}

static void
config_milter_refs(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	config_setting_t *routes = config_lookup(cf, "routes");

	unique_names(ctx, cf, "milters", c->milters, c->nmilters,
	    sizeof(*c->milters));
	unique_names(ctx, cf, "policy_services", c->policy_services,
	    c->npolicy_services, sizeof(*c->policy_services));
	if (c->nmilters > 16)
		conf_report(ctx, config_lookup(cf, "milters"), "'milters': at "
		    "most 16 (got %zu)", c->nmilters);
	for (size_t i = 0; i < c->nsmtp_milters; i++)
		if (!name_defined(c->smtp_milters[i], c->milters, c->nmilters,
		    sizeof(*c->milters)))
			conf_report(ctx, config_setting_get_elem(config_lookup(
			    cf, "smtp_milters"), (unsigned)i), "'smtp_milters"
			    "[%zu]': no milter named \"%s\" in milters", i,
			    c->smtp_milters[i]);
	for (size_t r = 0; routes != NULL && r < c->nroutes; r++) {
		const struct route_conf *rc = &c->routes[r];
		config_setting_t *e = config_setting_get_elem(routes,
		    (unsigned)r);

		for (size_t i = 0; i < rc->nmilters; i++)
			if (!name_defined(rc->milters[i], c->milters,
			    c->nmilters, sizeof(*c->milters)))
				conf_report(ctx, config_setting_get_member(e,
				    "milters"), "'routes[%zu].milters[%zu]': no "
				    "milter named \"%s\" in milters", r, i,
				    rc->milters[i]);
		if (rc->policy_service != NULL && !name_defined(
		    rc->policy_service, c->policy_services,
		    c->npolicy_services, sizeof(*c->policy_services)))
			conf_report(ctx, config_setting_get_member(e,
			    "policy_service"), "'routes[%zu].policy_service': "
			    "no service named \"%s\" in policy_services", r,
			    rc->policy_service);
	}
}

static void
config_finish(struct conf_ctx *ctx, config_t *cf, struct mxconf *c)
{
	config_setting_t *listen = config_lookup(cf, "listen");

	/* A listen of the wrong type was reported already. */
	if (c->nlisteners == 0 && (listen == NULL ||
	    config_setting_is_list(listen)))
		conf_report(ctx, listen,
		    "no listener configured: say where to listen with "
		    "listen = ( { address = \"...\"; port = ...; } );");
	if (c->hostname == NULL)
		c->hostname = default_hostname();
	config_routes(ctx, cf, c);
	config_bounce_upstream(ctx, cf, c);
	config_milter_refs(ctx, cf, c);
	config_tls_levels(ctx, cf, c);
	config_listeners_auth(ctx, cf, c);
	config_checks(ctx, cf, c);
}

/*
 * The configuration as one text, the @include'd files in place
 * (libconfig writes back what it read): what the master hands to the
 * processes that cannot read the files themselves at a reload.
 */
static char *
config_flatten(const config_t *cf)
{
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	if (fp == NULL)
		fatal("open_memstream");
	config_write(cf, fp);
	if (fclose(fp) != 0)
		fatal("writing the configuration out");
	return text;
}

static struct mxconf *
config_parse(struct conf_ctx *ctx, const char *text, const char *include_dir)
{
	struct mxconf *c = NULL;
	config_t cf;

	config_init(&cf);
	ctx->include_dir = include_dir;
	if (include_dir != NULL)
		config_set_include_dir(&cf, include_dir);
	if (config_read_string(&cf, text) != CONFIG_TRUE) {
		conf_report_at(ctx, config_error_file(&cf),
		    (unsigned)config_error_line(&cf), "%s",
		    config_error_text(&cf));
		goto done;
	}
	/* files[0]: the main text */
	ctx->files = xcalloc(1, sizeof(*ctx->files));
	ctx->nfiles = 1;
	scan_int_literals(ctx, text, 0, 0);
	c = xcalloc(1, sizeof(*c));
	c->path = xstrdup(ctx->name);
	conf_defaults(&mxconf_table, c);
	conf_walk(ctx, &mxconf_table, config_root_setting(&cf), NULL, NULL, c);
	config_finish(ctx, &cf, c);
	if (ctx->nerrors > 0) {
		config_free(c);
		c = NULL;
	} else
		c->text = config_flatten(&cf);
done:
	free(ctx->literals);
	for (size_t i = 0; i < ctx->nfiles; i++) {
		free(ctx->files[i].written);
		free(ctx->files[i].path);
	}
	free(ctx->files);
	config_destroy(&cf);
	return c;
}

static int
read_file(struct conf_ctx *ctx, const char *path, struct buf *b)
{
	const char *op;
	int err;

	if ((err = file_slurp(path, b, &op)) != 0) {
		conf_report_at(ctx, path, 0, "cannot %s: %s", op,
		    strerror(err));
		return -1;
	}
	/* libconfig would stop at a NUL and ignore the rest. */
	if (memchr(b->data, '\0', b->len) != NULL) {
		conf_report_at(ctx, path, 0, "contains a NUL byte");
		return -1;
	}
	return 0;
}

struct mxconf *
config_load(const char *path, config_error_fn errfn)
{
	struct conf_ctx ctx = { .name = path, .errfn = errfn };
	struct mxconf *c = NULL;
	struct buf b;
	char *dir;

	buf_init(&b);
	buf_append(&b, "", 0);
	if (read_file(&ctx, path, &b) == 0) {
		/* @include "x" is relative to the including file. */
		dir = xstrdup(path);
		c = config_parse(&ctx, b.data, dirname(dir));
		free(dir);
	}
	buf_free(&b);
	return c;
}

struct mxconf *
config_load_string(const char *text, const char *name, config_error_fn errfn)
{
	struct conf_ctx ctx = { .name = name, .errfn = errfn };

	return config_parse(&ctx, text, NULL);
}

struct mxconf *
config_load_checked(const char *text, const char *name, const char *base_dir,
    config_error_fn errfn)
{
	struct conf_ctx ctx = { .name = name, .errfn = errfn, .checked = true,
	    .base_dir = base_dir };

	return config_parse(&ctx, text, NULL);
}

struct mxconf *
config_default(void)
{
	struct mxconf *c;

	if ((c = config_load_string(CONFIG_DEFAULT_TEXT, "(default)",
	    NULL)) == NULL)
		fatalx("config: the embedded default configuration is broken");
	return c;
}

void
config_free(struct mxconf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nlisteners; i++)
		netlist_free(c->listeners[i].proxy_nets);
	conf_release(&mxconf_table, c);
	route_table_free(c->route_table);
	netlist_free(c->reject_nets);
	netlist_free(c->trusted_nets);
	free(c->path);
	free(c->start_dir);
	free(c->text);
	free(c);
}

/* --- documentation: the table described, and the manual page --- */

static const char *
conf_type_name(enum conf_type t)
{
	switch (t) {
	case CT_INT:
		return "integer";
	case CT_SIZE:
		return "size";
	case CT_STRING:
	case CT_ENUM:
		return "string";
	case CT_STRLIST:
		return "list of strings";
	case CT_LIST:
		return "list of groups";
	case CT_BOOL:
		return "boolean";
	case CT_BOOLSTR:
		return "boolean or string";
	case CT_DURATION:
		return "duration";
	case CT_DURLIST:
		return "list of durations";
	}
	return "?";
}

/* 604800 as "1w", 90 as "90s": the largest unit that divides it. */
static void
fmt_duration(char *out, size_t size, long long v)
{
	static const struct { char unit; long long seconds; } units[] = {
		{ 'w', 7 * 86400 }, { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 },
	};
	size_t i;

	for (i = 0; v != 0 && i < ARRAY_LEN(units); i++) {
		if (v % units[i].seconds == 0) {
			snprintf(out, size, "%lld%c", v / units[i].seconds,
			    units[i].unit);
			return;
		}
	}
	snprintf(out, size, v == 0 ? "0" : "%llds", v);
}

/* A number or a word as written in the file: 300, or "5m" in quotes. */
static void
fmt_literal(struct buf *b, const char *word, size_t len)
{
	size_t i;

	for (i = 0; i < len && isdigit((unsigned char)word[i]); i++)
		;
	if (len > 0 && i == len)
		buf_append(b, word, len);
	else
		buf_appendf(b, "\"%.*s\"", (int)len, word);
}

/* The default of sp as it would be written in the file; "" for none. */
static void
fmt_default(char *out, size_t size, const struct conf_spec *sp)
{
	const char *p, *sep;
	struct buf b;
	size_t len;

	buf_init(&b);
	buf_append(&b, "", 0);
	if (sp->def == NULL) {
		/* none */
	} else if (sp->type == CT_STRING || sp->type == CT_ENUM) {
		buf_appendf(&b, "\"%s\"", sp->def);
	} else if (sp->type == CT_SIZE || sp->type == CT_DURATION) {
		fmt_literal(&b, sp->def, strlen(sp->def));
	} else if (sp->type == CT_DURLIST) {
		sep = "[ ";
		for (p = sp->def; *(p += strspn(p, " ")) != '\0'; p += len) {
			len = strcspn(p, " ");
			buf_appends(&b, sep);
			sep = ", ";
			fmt_literal(&b, p, len);
		}
		buf_appends(&b, " ]");
	} else {
		buf_appends(&b, sp->def);
	}
	snprintf(out, size, "%s", b.data);
	buf_free(&b);
}

/* "1 to 10000", "1K to 2G", "1s to 1w"; "" when the type has no range. */
static void
fmt_range(char *out, size_t size, const struct conf_spec *sp)
{
	char lo[24], hi[24];

	switch (sp->type) {
	case CT_INT:
	case CT_SIZE:
		fmt_number(lo, sizeof(lo), sp, sp->min);
		fmt_number(hi, sizeof(hi), sp, sp->max);
		break;
	case CT_DURATION:
	case CT_DURLIST:
		fmt_duration(lo, sizeof(lo), sp->min);
		fmt_duration(hi, sizeof(hi), sp->max);
		break;
	default:
		out[0] = '\0';
		return;
	}
	snprintf(out, size, "%s to %s", lo, hi);
}

static void
describe_table(const struct conf_table *t, const char *list,
    void (*fn)(const struct config_doc *, void *), void *arg)
{
	const struct conf_spec *sp;
	struct config_doc d;

	for (sp = t->specs; sp->path != NULL; sp++) {
		memset(&d, 0, sizeof(d));
		d.path = sp->path;
		d.list = list;
		d.type = conf_type_name(sp->type);
		fmt_default(d.def, sizeof(d.def), sp);
		fmt_range(d.range, sizeof(d.range), sp);
		if (sp->words != NULL)
			fmt_words(d.words, sizeof(d.words), sp->words);
		d.required = (sp->flags & CF_REQUIRED) != 0;
		d.doc = sp->doc;
		fn(&d, arg);
		if (sp->type == CT_LIST)
			describe_table(sp->sub, sp->path, fn, arg);
	}
}

void
config_describe(void (*fn)(const struct config_doc *, void *), void *arg)
{
	describe_table(&mxconf_table, NULL, fn, arg);
}

/*
 * The sections of the manual, in this order: each takes the settings
 * whose paths start with one of its names.  A setting that none names
 * still appears, in a section of its own after these.
 */
static const struct man_section {
	const char *title;
	const char *names;      /* first components of paths, by spaces */
	const char *intro;
} man_sections[] = {
	{ "server", "server",
	  "The daemon's processes: who they run as, how many, what they log." },
	{ "listen", "listen",
	  "The addresses and ports mxgated accepts connections on, and what "
	  "each listener is for: mail from the internet (mx) or from users "
	  "(submission, submissions)." },
	{ "queue", "queue",
	  "Where accepted messages are kept: an SQLite database, queue.db, "
	  "committed before the client hears 250." },
	{ "limits", "limits",
	  "Sizes and counts a client may not exceed; each is refused with an "
	  "SMTP reply, never by dropping the connection silently." },
	{ "timeouts", "timeouts",
	  "How long the server waits on a client, in seconds." },
	{ "stress", "stress",
	  "Stress mode, as in Postfix: when most connection slots are taken, "
	  "shorter timeouts, a shorter greeting pause and a lower error limit "
	  "apply to every session and no client address may "
	  "take more than its fair share (limits.fair_share) of what is left, "
	  "so that a new client still finds a slot." },
	{ "tls", "tls",
	  "TLS for the listeners: STARTTLS (RFC 3207) on mx and submission "
	  "listeners, TLS from the first byte (RFC 8314) on submissions ones. "
	  "The master reads the certificates and keys at start, as root." },
	{ "auth", "auth",
	  "SMTP AUTH (RFC 4954) with PLAIN and LOGIN, on the listeners that "
	  "offer it, and only under TLS unless plaintext is allowed." },
	{ "spf", "spf",
	  "Sender authentication with SPF (RFC 7208), for routes that ask for "
	  "it with sender_auth and for the MAIL FROM policy." },
	{ "policy", "policy",
	  "A Postfix SMTP access policy delegation service (postgrey, "
	  "policyd-spf, ...), asked at the SMTP stages listed." },
	{ "checks", "greet_pause greet_multiline greet_pass_time helo_checks"
	  " reject_networks trusted_networks rate_limits",
	  "Built-in checks of the client, run before the plugins and the "
	  "policy service." },
	{ "routes", "accept_domains routes",
	  "What happens to each recipient: routes are tried in order at RCPT "
	  "TO, the first that matches decides (unless it says continue), and "
	  "a recipient no route matches is refused with 550 5.1.1.  Try them "
	  "without a daemon: mxgatectl route test ADDRESS." },
	{ "upstreams", "upstreams",
	  "The hosts that routes with action relay deliver to." },
	{ "delivery", "delivery",
	  "Delivery from the queue: retries, expiry, bounces, concurrency and "
	  "the relay client's timeouts." },
	{ "plugins", "plugins",
	  "C plugins (see <mxgate/plugin.h>) loaded at start and asked in "
	  "order, after the built-in checks and before the policy service." },
};

/* Roff text: backslashes escaped, no line taken for a request; with
 * literal set, '-' is a minus (copied as typed), and a long cipher list
 * may break after its colons. */
static void
man_puts(FILE *fp, const char *s, bool literal)
{
	bool bol = true;

	for (; *s != '\0'; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", fp);
		bol = *s == '\n';
		if (*s == '\\')
			fputs("\\e", fp);
		else if (*s == '-' && literal)
			fputs("\\-", fp);
		else if (*s == ':' && literal)
			fputs(":\\:", fp);
		else
			fputc(*s, fp);
	}
}

/* A doc string as a sentence of its own: a capital, a full stop. */
static void
man_sentence(FILE *fp, const char *doc)
{
	char first[2] = { doc[0], '\0' };

	fputs(".br\n", fp);
	if (islower((unsigned char)first[0]))
		first[0] = (char)toupper((unsigned char)first[0]);
	man_puts(fp, first, false);
	man_puts(fp, doc + 1, false);
	fputs(doc[strlen(doc) - 1] == '.' ? "\n" : ".\n", fp);
}

static void man_table(FILE *fp, const struct conf_table *t,
    const struct man_section *sec);

static void
man_entry(FILE *fp, const struct conf_spec *sp)
{
	char def[256], range[64], words[256];

	fmt_default(def, sizeof(def), sp);
	fmt_range(range, sizeof(range), sp);
	fputs(".TP\n.B ", fp);
	man_puts(fp, sp->path, true);
	fprintf(fp, "\n\\fI%s\\fP", conf_type_name(sp->type));
	if (range[0] != '\0') {
		fputs(", ", fp);
		man_puts(fp, range, true);
	}
	if (sp->words != NULL) {
		fmt_words(words, sizeof(words), sp->words);
		fputs(", one of ", fp);
		man_puts(fp, words, true);
	}
	if (sp->flags & CF_NONEMPTY)
		fputs(", not empty", fp);
	if (sp->flags & CF_REQUIRED)
		fputs("; required", fp);
	if (def[0] != '\0') {
		fputs("; default \\fB", fp);
		man_puts(fp, def, true);
		fputs("\\fP", fp);
	}
	fputs(".\n", fp);
	if (sp->doc != NULL && sp->doc[0] != '\0')
		man_sentence(fp, sp->doc);
	if (sp->type == CT_LIST) {
		fputs(".RS\n.PP\nEach group of the list holds:\n", fp);
		man_table(fp, sp->sub, NULL);
		fputs(".RE\n", fp);
	}
}

static bool
man_section_has(const struct man_section *sec, const char *path)
{
	size_t len = strcspn(path, "."), n;
	const char *p;

	for (p = sec->names; *(p += strspn(p, " ")) != '\0'; p += n) {
		n = strcspn(p, " ");
		if (n == len && strncmp(p, path, len) == 0)
			return true;
	}
	return false;
}

static const struct man_section *
man_section_of(const char *path)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(man_sections); i++)
		if (man_section_has(&man_sections[i], path))
			return &man_sections[i];
	return NULL;
}

/* The settings of t in section sec (all of them when sec is NULL). */
static void
man_table(FILE *fp, const struct conf_table *t, const struct man_section *sec)
{
	const struct conf_spec *sp;

	for (sp = t->specs; sp->path != NULL; sp++)
		if (sec == NULL || man_section_has(sec, sp->path))
			man_entry(fp, sp);
}

/* Settings no section names, grouped by their first component. */
static void
man_other_sections(FILE *fp)
{
	const struct conf_spec *sp, *prev;
	size_t len;
	bool seen;

	for (sp = mxconf_specs; sp->path != NULL; sp++) {
		if (man_section_of(sp->path) != NULL)
			continue;
		len = strcspn(sp->path, ".");
		seen = false;
		for (prev = mxconf_specs; prev != sp && !seen; prev++)
			seen = strncmp(prev->path, sp->path, len) == 0 &&
			    strcspn(prev->path, ".") == len;
		if (seen)
			continue;
		fprintf(fp, ".SS %.*s\n", (int)len, sp->path);
		for (prev = sp; prev->path != NULL; prev++)
			if (strncmp(prev->path, sp->path, len) == 0 &&
			    strcspn(prev->path, ".") == len)
				man_entry(fp, prev);
	}
}

void
config_write_manual(FILE *fp)
{
	size_t i;

	fputs(CONFIG_MANUAL_HEAD, fp);
	for (i = 0; i < ARRAY_LEN(man_sections); i++) {
		fprintf(fp, ".SS %s\n", man_sections[i].title);
		man_puts(fp, man_sections[i].intro, false);
		fputc('\n', fp);
		man_table(fp, &mxconf_table, &man_sections[i]);
	}
	man_other_sections(fp);
	fputs(CONFIG_MANUAL_TAIL, fp);
}

/* --- the effective configuration (mxgated -n -v, mxgatectl config) --- */

/* A string in libconfig's syntax: quotes, and escapes for what needs one. */
static void
eff_string(struct buf *b, const char *s)
{
	buf_appends(b, "\"");
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			buf_appendf(b, "\\%c", ch);
		else if (ch == '\n')
			buf_appends(b, "\\n");
		else if (ch == '\t')
			buf_appends(b, "\\t");
		else if (ch < 0x20 || ch == 0x7f)
			buf_appendf(b, "\\x%02x", ch);
		else
			buf_append(b, s, 1);
	}
	buf_appends(b, "\"");
}

static long long
load_int(const struct conf_spec *sp, const void *base)
{
	const char *field = (const char *)base + sp->off;
	long long v = 0;
	int i;

	if (sp->width == sizeof(int)) {
		memcpy(&i, field, sizeof(i));
		v = sp->min >= 0 ? (long long)(unsigned)i : i;
	} else {
		memcpy(&v, field, sizeof(v));
	}
	return v;
}

static int
load_bool(const struct conf_spec *sp, const void *base)
{
	const char *field = (const char *)base + sp->off;
	bool b;
	int i;

	if (sp->width == sizeof(bool)) {
		memcpy(&b, field, sizeof(b));
		return b;
	}
	memcpy(&i, field, sizeof(i));
	return i;
}

/* A number or a unit word: 300 as is, "5m" in quotes. */
static void
eff_word(struct buf *b, const char *w)
{
	fmt_literal(b, w, strlen(w));
}

/* The value of a setting that is not a list of groups, from the loaded
 * configuration, as the file would say it; false when it has none. */
static bool
eff_value(struct buf *b, const struct conf_spec *sp, const void *base)
{
	const char *field = (const char *)base + sp->off;
	char word[64];
	size_t i, n;

	switch (sp->type) {
	case CT_INT:
	case CT_SIZE:
		fmt_number(word, sizeof(word), sp, load_int(sp, base));
		eff_word(b, word);
		return true;
	case CT_DURATION:
		fmt_duration(word, sizeof(word), load_int(sp, base));
		eff_word(b, word);
		return true;
	case CT_ENUM:
		eff_string(b, sp->words[load_int(sp, base)]);
		return true;
	case CT_STRING: {
		const char *v = *(char *const *)(const void *)field;

		if (v == NULL)
			return false;
		eff_string(b, v);
		return true;
	}
	case CT_BOOL:
		if (load_bool(sp, base) < 0)
			return false;
		buf_appends(b, load_bool(sp, base) > 0 ? "true" : "false");
		return true;
	case CT_STRLIST: {
		char *const *list = *(char **const *)(const void *)field;

		n = *(const size_t *)(const void *)((const char *)base +
		    sp->count_off);
		/* [ ] is refused where a list must not be empty. */
		if (n == 0 && (sp->flags & CF_NONEMPTY))
			return false;
		buf_appends(b, "[");
		for (i = 0; i < n; i++) {
			buf_appends(b, i == 0 ? " " : ", ");
			eff_string(b, list[i]);
		}
		buf_appends(b, " ]");
		return true;
	}
	case CT_DURLIST: {
		const unsigned *list = *(unsigned *const *)(const void *)field;

		n = *(const size_t *)(const void *)((const char *)base +
		    sp->count_off);
		buf_appends(b, "[");
		for (i = 0; i < n; i++) {
			buf_appends(b, i == 0 ? " " : ", ");
			fmt_duration(word, sizeof(word), list[i]);
			eff_word(b, word);
		}
		buf_appends(b, " ]");
		return true;
	}
	case CT_BOOLSTR:
	case CT_LIST:
		break;
	}
	return false;
}

/* eff_value(), but an empty list that the file does not name stays
 * unnamed: some exclude others (accept_domains and routes). */
static bool
eff_named(struct buf *b, const struct conf_spec *sp, const void *base,
    bool named)
{
	if (sp->type == CT_STRLIST && !named && *(const size_t *)(const void *)
	    ((const char *)base + sp->count_off) == 0)
		return false;
	return eff_value(b, sp, base);
}

/* A libconfig setting as written (the lists of groups: listeners,
 * routes, upstreams, certificates, plugins), one line. */
static void
eff_setting(struct buf *b, const config_setting_t *s)
{
	unsigned i, n;
	char num[64];

	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
		buf_appendf(b, "%d", config_setting_get_int(s));
		return;
	case CONFIG_TYPE_INT64:
		buf_appendf(b, "%lldL", (long long)config_setting_get_int64(s));
		return;
	case CONFIG_TYPE_FLOAT:
		snprintf(num, sizeof(num), "%.17g", config_setting_get_float(s));
		buf_appends(b, num);
		if (strpbrk(num, ".eEn") == NULL)
			buf_appends(b, ".0");
		return;
	case CONFIG_TYPE_BOOL:
		buf_appends(b, config_setting_get_bool(s) ? "true" : "false");
		return;
	case CONFIG_TYPE_STRING:
		eff_string(b, config_setting_get_string(s));
		return;
	default:
		break;
	}
	n = (unsigned)config_setting_length(s);
	buf_appends(b, config_setting_is_group(s) ? "{" :
	    config_setting_is_array(s) ? "[" : "(");
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);

		if (config_setting_is_group(s)) {
			buf_appendf(b, " %s = ", config_setting_name(e));
			eff_setting(b, e);
			buf_appends(b, ";");
		} else {
			buf_appends(b, i == 0 ? " " : ", ");
			eff_setting(b, e);
		}
	}
	buf_appends(b, config_setting_is_group(s) ? " }" :
	    config_setting_is_array(s) ? " ]" : " )");
}

/* The part of a path after its group ("limits.recipients": "recipients"),
 * and the group's length (0 for a top-level setting). */
static const char *
eff_leaf(const char *path, size_t *group_len)
{
	const char *dot = strchr(path, '.');

	*group_len = dot != NULL ? (size_t)(dot - path) : 0;
	return dot != NULL ? dot + 1 : path;
}

struct eff_ctx {
	FILE          *fp;
	config_t      *cf;
	const void    *base, *dflt;
	bool           only_changed;
	unsigned       printed;
};

/* One setting: "name = value;", or a comment when it has no value. */
static void
eff_spec(struct eff_ctx *e, const struct conf_spec *sp, const char *indent)
{
	const config_setting_t *s = config_lookup(e->cf, sp->path);
	struct buf v, d;
	bool has, changed;
	size_t glen;
	const char *leaf = eff_leaf(sp->path, &glen);

	buf_init(&v);
	buf_init(&d);
	buf_append(&v, "", 0);
	buf_append(&d, "", 0);
	if (sp->type == CT_LIST) {
		has = s != NULL;
		if (has)
			eff_setting(&v, s);
		changed = has;
	} else {
		/* Compared as values: an empty list named or not is the
		 * same list. */
		changed = eff_value(&v, sp, e->base) !=
		    eff_value(&d, sp, e->dflt) || strcmp(v.data, d.data) != 0;
		buf_reset(&v);
		buf_append(&v, "", 0);
		has = eff_named(&v, sp, e->base, s != NULL);
	}
	if (!e->only_changed || changed) {
		if (has)
			fprintf(e->fp, "%s%s = %s;\n", indent, leaf, v.data);
		else
			fprintf(e->fp, "%s# %s: not set\n", indent, leaf);
		e->printed++;
	}
	buf_free(&v);
	buf_free(&d);
}

static bool
eff_group_wanted(struct eff_ctx *e, const struct conf_spec *first,
    size_t glen)
{
	const struct conf_spec *sp;
	unsigned before = e->printed;
	FILE *saved = e->fp;
	FILE *null;

	if (!e->only_changed)
		return true;
	/* Whether any of the group would print: try it on /dev/null. */
	if ((null = fopen("/dev/null", "w")) == NULL)
		return true;
	e->fp = null;
	for (sp = first; sp->path != NULL; sp++)
		if (strncmp(sp->path, first->path, glen) == 0 &&
		    sp->path[glen] == '.')
			eff_spec(e, sp, "");
	fclose(null);
	e->fp = saved;
	bool any = e->printed > before;
	e->printed = before;
	return any;
}

/* Each group once, where its first setting is in the table. */
static void
eff_table(struct eff_ctx *e)
{
	const struct conf_spec *sp, *q;
	size_t glen;

	for (sp = mxconf_table.specs; sp->path != NULL; sp++) {
		eff_leaf(sp->path, &glen);
		if (glen == 0) {
			eff_spec(e, sp, "");
			continue;
		}
		for (q = mxconf_table.specs; q < sp; q++)
			if (strncmp(q->path, sp->path, glen + 1) == 0)
				break;
		if (q < sp || !eff_group_wanted(e, sp, glen))
			continue;
		fprintf(e->fp, "%.*s = {\n", (int)glen, sp->path);
		for (q = sp; q->path != NULL; q++)
			if (strncmp(q->path, sp->path, glen + 1) == 0)
				eff_spec(e, q, "  ");
		fprintf(e->fp, "};\n");
	}
}

int
config_write_effective(FILE *fp, const struct mxconf *c, bool only_changed)
{
	struct eff_ctx e = { .fp = fp, .base = c, .only_changed = only_changed };
	struct mxconf *dflt;
	struct buf text;
	config_t cf;
	char *dir = NULL;
	const char *op;
	int err, rc = -1;

	buf_init(&text);
	buf_append(&text, "", 0);
	if (strcmp(c->path, "(default)") == 0) {
		buf_appends(&text, CONFIG_DEFAULT_TEXT);
	} else if ((err = file_slurp(c->path, &text, &op)) != 0) {
		fprintf(stderr, "%s: cannot %s: %s\n", c->path, op,
		    strerror(err));
		buf_free(&text);
		return -1;
	} else {
		dir = xstrdup(c->path);
	}
	config_init(&cf);
	if (dir != NULL)
		config_set_include_dir(&cf, dirname(dir));
	if (config_read_string(&cf, text.data) != CONFIG_TRUE) {
		fprintf(stderr, "%s:%d: %s\n", c->path, config_error_line(&cf),
		    config_error_text(&cf));
		goto done;
	}
	/* The defaults: what a configuration that sets nothing but the
	 * one required setting has (derived values included). */
	dflt = config_load_string("listen = ( { address = \"127.0.0.1\";"
	    " port = 25; } );", "(defaults)", NULL);
	if (dflt == NULL)
		fatalx("config: a configuration of defaults does not load");
	e.cf = &cf;
	e.dflt = dflt;
	fprintf(fp, "# the effective configuration of %s%s\n", c->path,
	    only_changed ? ": what differs from the defaults" :
	    ", defaults included");
	eff_table(&e);
	config_free(dflt);
	rc = 0;
done:
	config_destroy(&cf);
	free(dir);
	buf_free(&text);
	return rc;
}
