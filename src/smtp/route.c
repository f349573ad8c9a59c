/*
 * route — see route.h.
 *
 * A route compiles into matchers (PCRE2 codes, CIDR networks, flags) and
 * templates: an action parameter such as "/var/mail/${domain}/${local}/"
 * becomes a list of literal parts and variable indexes, resolved once at
 * load, so that a reference to an unknown variable is a configuration
 * error and expansion at RCPT is a walk over the parts.
 *
 * Variables are numbered per route: the built-ins first (enum builtin),
 * then the route's named captures in pattern order.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/addr.h"
#include "common/json.h"
#include "common/log.h"
#include "smtp/route.h"
#include "common/util.h"

/*
 * Hostile addresses meet operators' patterns: bound the backtracking so
 * that a catastrophic pattern costs a 451, not a stuck worker.
 */
#define ROUTE_MATCH_LIMIT  200000
#define ROUTE_DEPTH_LIMIT  10000

const char *const route_action_names[] = {
	"reject", "relay", "maildir", "pipe", "lmtp", "webhook", "discard",
	"debug", NULL
};

enum builtin {
	V_RCPT, V_LOCAL, V_DOMAIN, V_SENDER, V_SENDER_DOMAIN, V_CLIENT_IP,
	V_HELO, V_QUEUE_ID, V_AUTH_USER, V_NBUILTIN
};

static const char *const builtin_names[V_NBUILTIN] = {
	"rcpt", "local", "domain", "sender", "sender_domain", "client_ip",
	"helo", "queue_id", "auth_user"
};

/* The patterns of a route, by what they match. */
enum pattern { P_RCPT, P_SENDER, P_AUTH, P_N };

static const char *const pattern_settings[P_N] = {
	"rcpt", "sender", "authenticated"
};

struct capture {
	char    *name;
	int      pattern;           /* enum pattern */
	int      group;             /* its number in that pattern */
};

/* A template part: literal text, or a variable when var >= 0. */
struct tpart {
	char    *lit;
	int      var;
};

struct tmpl {
	struct tpart *parts;
	size_t   nparts;
	bool     set;
};

struct cidr {
	int      family;            /* AF_INET, AF_INET6 */
	unsigned char addr[16];
	unsigned bits;
};

struct route {
	char    *name;
	size_t   index;
	pcre2_code *re[P_N];
	struct cidr *clients;
	size_t   nclients;
	int      authenticated;     /* -1 any, 0 not, 1 yes (re[P_AUTH]) */
	int      tls;               /* -1 any, 0 plaintext, 1 encrypted */
	unsigned sender_auth;
	bool     cont;
	size_t   max_size;
	enum route_action action;
	struct capture *caps;
	size_t   ncaps;

	/* parameters */
	int      code;
	struct tmpl text;
	char    *upstream;
	struct tmpl path;
	struct tmpl *command;
	size_t   ncommand;
	char    *format;
	int      timeout;
	char    *address;
	struct tmpl url;
	char    *user;              /* maildir, pipe: runs as; NULL default */
};

struct route_table {
	struct route *routes;
	size_t   nroutes;
	char    *hostname;          /* for <Postmaster> */
	uint32_t max_pairs;         /* largest ovector needed */
	pcre2_match_context *mctx;
};

/* ---- building: reporting ---- */

struct build {
	const struct mxconf *conf;
	route_report_fn report;
	void    *arg;
	size_t   index;             /* route being built */
	unsigned nerrors;
	char     cwd[PATH_MAX];
};

static void build_report(struct build *b, const char *setting, int elem,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "'routes[N].setting[elem]' " + the problem. */
static void
build_report(struct build *b, const char *setting, int elem,
    const char *fmt, ...)
{
	char problem[768], msg[1024], elemtxt[24] = "";
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
	if (elem >= 0)
		snprintf(elemtxt, sizeof(elemtxt), "[%d]", elem);
	if (setting != NULL)
		snprintf(msg, sizeof(msg), "'routes[%zu].%s%s' %s", b->index,
		    setting, elemtxt, problem);
	else
		snprintf(msg, sizeof(msg), "'routes[%zu]' %s", b->index,
		    problem);
	b->report(b->arg, b->index, setting, elem, msg);
	b->nerrors++;
}

/* ---- building: patterns and captures ---- */

static pcre2_code *
pattern_compile(struct build *b, const char *setting, const char *text,
    bool caseless)
{
	uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	pcre2_code *re;
	int err;

	if (caseless)
		opts |= PCRE2_CASELESS;
	re = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, opts,
	    &err, &off, NULL);
	if (re == NULL) {
		pcre2_get_error_message(err, msg, sizeof(msg));
		build_report(b, setting, -1, "is not a valid regular "
		    "expression: %s at offset %zu", (char *)msg, (size_t)off);
		return NULL;
	}
	/* Without JIT (not built in, no executable memory) PCRE2's
	 * interpreter does the same matching, only slower. */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

static int
var_index(const struct route *r, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < V_NBUILTIN; i++)
		if (strlen(builtin_names[i]) == len &&
		    memcmp(builtin_names[i], name, len) == 0)
			return (int)i;
	for (i = 0; i < r->ncaps; i++)
		if (strlen(r->caps[i].name) == len &&
		    memcmp(r->caps[i].name, name, len) == 0)
			return (int)(V_NBUILTIN + i);
	return -1;
}

/* Add the named groups of pattern p to the route's variables. */
static void
captures_collect(struct build *b, struct route *r, enum pattern p)
{
	uint32_t count, size, i;
	PCRE2_SPTR table;
	const char *name;
	int group, other;

	if (pcre2_pattern_info(r->re[p], PCRE2_INFO_NAMECOUNT, &count) != 0 ||
	    pcre2_pattern_info(r->re[p], PCRE2_INFO_NAMEENTRYSIZE, &size) != 0 ||
	    pcre2_pattern_info(r->re[p], PCRE2_INFO_NAMETABLE, &table) != 0)
		return;
	for (i = 0; i < count; i++, table += size) {
		group = (table[0] << 8) | table[1];
		name = (const char *)table + 2;
		other = var_index(r, name, strlen(name));
		if (other >= 0 && other < V_NBUILTIN) {
			build_report(b, pattern_settings[p], -1, "names a "
			    "group '%s', which is a built-in variable: "
			    "choose another name", name);
			continue;
		}
		if (other >= 0) {
			build_report(b, pattern_settings[p], -1, "names a "
			    "group '%s', already named in '%s'", name,
			    pattern_settings[r->caps[other - V_NBUILTIN].pattern]);
			continue;
		}
		r->caps = xrealloc(r->caps, (r->ncaps + 1) * sizeof(*r->caps));
		r->caps[r->ncaps].name = xstrdup(name);
		r->caps[r->ncaps].pattern = (int)p;
		r->caps[r->ncaps].group = group;
		r->ncaps++;
	}
}

/* ---- building: CIDR networks ---- */

static bool
host_bits_zero(const struct cidr *c)
{
	unsigned len = c->family == AF_INET ? 4 : 16, i;

	for (i = 0; i < len; i++) {
		unsigned keep = c->bits >= (i + 1) * 8 ? 8 :
		    c->bits > i * 8 ? c->bits - i * 8 : 0;
		unsigned char mask = (unsigned char)(0xff >> keep);

		if ((c->addr[i] & mask) != 0)
			return false;
	}
	return true;
}

/* "192.0.2.0/24", "2001:db8::/32", or one address. */
static int
cidr_parse(const char *text, struct cidr *c, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - text) : strlen(text);
	unsigned maxbits;
	char *end;
	long bits;

	memset(c, 0, sizeof(*c));
	*why = "is not an address or network such as \"192.0.2.0/24\" or "
	    "\"2001:db8::/32\"";
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		maxbits = 128;
	} else
		return -1;
	c->bits = maxbits;
	if (slash != NULL) {
		if (!isdigit((unsigned char)slash[1]))
			return -1;
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (*end != '\0' || errno != 0 || bits < 0 ||
		    bits > (long)maxbits) {
			*why = "has a bad prefix length";
			return -1;
		}
		c->bits = (unsigned)bits;
	}
	if (!host_bits_zero(c)) {
		*why = "has bits set after the prefix length (a host "
		    "address with a network's length)";
		return -1;
	}
	return 0;
}

static bool
cidr_contains(const struct cidr *c, int family, const unsigned char *addr)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (c->family != family)
		return false;
	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((c->addr[full] ^ addr[full]) & (0xff << (8 - rest)) & 0xff)
	    == 0;
}

/* The client's address; an IPv4-mapped IPv6 address counts as IPv4. */
static int
client_parse(const char *ip, unsigned char addr[16])
{
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};

	if (inet_pton(AF_INET, ip, addr) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, ip, addr) != 1)
		return -1;
	if (memcmp(addr, mapped, sizeof(mapped)) == 0) {
		memmove(addr, addr + 12, 4);
		return AF_INET;
	}
	return AF_INET6;
}

/* ---- building: templates ---- */

static bool
var_name_char(int c, bool first)
{
	return c == '_' || isalpha(c) || (!first && isdigit(c));
}

static void
tpart_add(struct tmpl *t, const char *lit, size_t len, int var)
{
	t->parts = xrealloc(t->parts, (t->nparts + 1) * sizeof(*t->parts));
	t->parts[t->nparts].lit = var < 0 ? xstrndup(lit, len) : NULL;
	t->parts[t->nparts].var = var;
	t->nparts++;
}

static void
unknown_var(struct build *b, const char *setting, int elem,
    const struct route *r, const char *name, size_t len)
{
	if (len == strlen("auth_user") && memcmp(name, "auth_user", len) == 0)
		build_report(b, setting, elem, "uses ${auth_user}, which "
		    "this route provides only with 'authenticated = true' "
		    "(or a user pattern)");
	else
		build_report(b, setting, elem, "uses ${%.*s}, which no "
		    "matcher of this route provides (built-ins: rcpt, "
		    "local, domain, sender, sender_domain, client_ip, helo, "
		    "queue_id%s; or a named group (?<%.*s>...) in its "
		    "patterns)", (int)len, name,
		    r->authenticated == 1 ? ", auth_user" : "",
		    (int)len, name);
}

/*
 * Parse "text ${var} text"; "$$" is a "$".  Returns -1 (reported) on a
 * malformed reference or a variable the route does not provide.
 */
static int
tmpl_parse(struct build *b, const char *setting, int elem,
    const struct route *r, const char *text, struct tmpl *t)
{
	struct buf lit;
	const char *p, *name;
	size_t len;
	int var, rc = 0;

	buf_init(&lit);
	t->set = true;
	for (p = text; *p != '\0'; p++) {
		if (p[0] != '$' || (p[1] != '$' && p[1] != '{')) {
			buf_append(&lit, p, 1);
			continue;
		}
		if (p[1] == '$') {
			buf_append(&lit, "$", 1);
			p++;
			continue;
		}
		name = p + 2;
		for (len = 0; var_name_char((unsigned char)name[len], len == 0);
		    len++)
			;
		if (len == 0 || name[len] != '}') {
			build_report(b, setting, elem, "has a bad variable "
			    "reference at \"%.20s\": write ${name} (or $$ for "
			    "a dollar sign)", p);
			rc = -1;
			break;
		}
		var = var_index(r, name, len);
		if (var == V_AUTH_USER && r->authenticated != 1)
			var = -1;
		if (var < 0) {
			unknown_var(b, setting, elem, r, name, len);
			rc = -1;
		}
		if (lit.len > 0)
			tpart_add(t, lit.data, lit.len, -1);
		buf_reset(&lit);
		tpart_add(t, NULL, 0, var < 0 ? 0 : var);
		p = name + len;
	}
	if (lit.len > 0)
		tpart_add(t, lit.data, lit.len, -1);
	buf_free(&lit);
	return rc;
}

static bool
tmpl_has_vars(const struct tmpl *t)
{
	size_t i;

	for (i = 0; i < t->nparts; i++)
		if (t->parts[i].var >= 0)
			return true;
	return false;
}

static void
tmpl_free(struct tmpl *t)
{
	size_t i;

	for (i = 0; i < t->nparts; i++)
		free(t->parts[i].lit);
	free(t->parts);
	memset(t, 0, sizeof(*t));
}

/* Make a relative first literal ("var/mail/", "./var/mail/") absolute
 * against the current directory. */
static void
tmpl_absolute(struct build *b, struct tmpl *t)
{
	const char *rel;
	char *abs;

	if (t->nparts == 0 || t->parts[0].var >= 0 ||
	    t->parts[0].lit[0] == '/')
		return;
	rel = t->parts[0].lit;
	while (rel[0] == '.' && rel[1] == '/') {
		for (rel += 2; *rel == '/'; rel++)
			;
	}
	xasprintf(&abs, "%s/%s", b->cwd, rel);
	free(t->parts[0].lit);
	t->parts[0].lit = abs;
}

/* "/a/./b" or "/a/../b" in the literal text of a path template. */
static bool
tmpl_dot_component(const struct tmpl *t)
{
	struct buf flat;
	const char *c, *end;
	bool bad = false;
	size_t i;

	buf_init(&flat);
	for (i = 0; i < t->nparts; i++) {
		if (t->parts[i].var >= 0)
			buf_appends(&flat, "\x01");
		else
			buf_appends(&flat, t->parts[i].lit);
	}
	for (c = flat.data; c != NULL && *c != '\0' && !bad; c = end) {
		end = strchr(c, '/');
		size_t len = end != NULL ? (size_t)(end - c) : strlen(c);
		bad = (len == 1 && c[0] == '.') ||
		    (len == 2 && c[0] == '.' && c[1] == '.');
		if (end != NULL)
			end++;
	}
	buf_free(&flat);
	return bad;
}

/* ---- building: parameters ---- */

/* Which action takes which parameter, and which must have it. */
struct param_rule {
	const char *setting;
	unsigned    actions;        /* bits of enum route_action */
	unsigned    required;
};

#define A(x) (1u << (x))

static const struct param_rule param_rules[] = {
	{ "code",     A(ROUTE_REJECT), 0 },
	{ "text",     A(ROUTE_REJECT), 0 },
	{ "upstream", A(ROUTE_RELAY), A(ROUTE_RELAY) },
	{ "path",     A(ROUTE_MAILDIR), A(ROUTE_MAILDIR) },
	{ "command",  A(ROUTE_PIPE), A(ROUTE_PIPE) },
	{ "format",   A(ROUTE_PIPE) | A(ROUTE_WEBHOOK), 0 },
	{ "timeout",  A(ROUTE_PIPE) | A(ROUTE_WEBHOOK), 0 },
	{ "address",  A(ROUTE_LMTP), A(ROUTE_LMTP) },
	{ "url",      A(ROUTE_WEBHOOK), A(ROUTE_WEBHOOK) },
	{ "secret",   A(ROUTE_WEBHOOK), 0 },
	{ "tls_ca",   A(ROUTE_WEBHOOK), 0 },
	{ "attachments_dir", A(ROUTE_PIPE) | A(ROUTE_WEBHOOK), 0 },
	{ "user",     A(ROUTE_PIPE) | A(ROUTE_MAILDIR), 0 },
};

static bool
param_present(const struct route_conf *rc, const char *setting)
{
	if (strcmp(setting, "code") == 0)
		return rc->code != 0;
	if (strcmp(setting, "text") == 0)
		return rc->text != NULL;
	if (strcmp(setting, "upstream") == 0)
		return rc->upstream != NULL;
	if (strcmp(setting, "path") == 0)
		return rc->path != NULL;
	if (strcmp(setting, "command") == 0)
		return rc->command != NULL;
	if (strcmp(setting, "format") == 0)
		return rc->format != NULL;
	if (strcmp(setting, "timeout") == 0)
		return rc->timeout != 0;
	if (strcmp(setting, "address") == 0)
		return rc->address != NULL;
	if (strcmp(setting, "url") == 0)
		return rc->url != NULL;
	if (strcmp(setting, "tls_ca") == 0)
		return rc->tls_ca != NULL;
	if (strcmp(setting, "attachments_dir") == 0)
		return rc->attachments_dir != NULL;
	if (strcmp(setting, "user") == 0)
		return rc->user != NULL;
	return rc->secret != NULL;
}

static void
params_check_presence(struct build *b, const struct route_conf *rc,
    const struct route *r)
{
	const struct param_rule *pr;
	const char *an = route_action_names[r->action];

	for (pr = param_rules; pr < param_rules + ARRAY_LEN(param_rules);
	    pr++) {
		bool present = param_present(rc, pr->setting);

		if (present && !(pr->actions & A(r->action)))
			build_report(b, pr->setting, -1, "is not a parameter "
			    "of action \"%s\"", an);
		else if (!present && (pr->required & A(r->action)))
			build_report(b, NULL, -1, "has action \"%s\", which "
			    "needs '%s'", an, pr->setting);
	}
	if (r->action == ROUTE_REJECT && rc->cont)
		build_report(b, "continue", -1, "cannot be true on a reject "
		    "route (a reject ends the decision)");
	if (r->action == ROUTE_REJECT && rc->max_size != 0)
		build_report(b, "max_size", -1, "means nothing on a reject "
		    "route");
	if (r->action == ROUTE_REJECT && rc->nsender_auth != 0)
		build_report(b, "sender_auth", -1, "means nothing on a reject "
		    "route");
}

/* Strings that are names or addresses, never templates. */
static void
no_variables(struct build *b, const char *setting, const char *v)
{
	if (v != NULL && strstr(v, "${") != NULL)
		build_report(b, setting, -1, "cannot use variables");
}

/* "4.7.1 text" or "5.1.1" of the class of code (RFC 3463). */
static bool
enhanced_code_ok(int code, const char *text)
{
	const char *p = text;
	int n;

	if (p[0] != '0' + code / 100 || p[1] != '.')
		return false;
	p += 2;
	for (n = 0; n < 2; n++) {
		size_t digits = 0;
		while (isdigit((unsigned char)p[digits]))
			digits++;
		if (digits == 0 || digits > 3)
			return false;
		p += digits;
		if (n == 0 && *p++ != '.')
			return false;
	}
	return *p == '\0' || *p == ' ';
}

static void
build_reject(struct build *b, const struct route_conf *rc, struct route *r)
{
	char deftext[64];

	r->code = rc->code != 0 ? rc->code : 550;
	if (r->code / 100 != 4 && r->code / 100 != 5) {
		build_report(b, "code", -1, "must be a 4xx or 5xx reply code "
		    "(got %d)", r->code);
		return;
	}
	if (rc->text == NULL) {
		snprintf(deftext, sizeof(deftext), "%d.7.1 <${rcpt}>: "
		    "Recipient address rejected", r->code / 100);
		tmpl_parse(b, "text", -1, r, deftext, &r->text);
		return;
	}
	if (!enhanced_code_ok(r->code, rc->text))
		build_report(b, "text", -1, "must start with an enhanced "
		    "status code of the class of code %d, such as \"%d.1.1 "
		    "no such user here\" (RFC 3463)", r->code, r->code / 100);
	tmpl_parse(b, "text", -1, r, rc->text, &r->text);
}

static bool
upstream_exists(const struct mxconf *conf, const char *name)
{
	size_t i;

	if (strcmp(name, ROUTE_UPSTREAM_MX) == 0)
		return true;
	for (i = 0; i < conf->nupstreams; i++)
		if (conf->upstreams[i].name != NULL &&
		    strcmp(conf->upstreams[i].name, name) == 0)
			return true;
	return false;
}

static void
build_relay(struct build *b, const struct route_conf *rc, struct route *r)
{
	no_variables(b, "upstream", rc->upstream);
	if (!upstream_exists(b->conf, rc->upstream))
		build_report(b, "upstream", -1, "names no upstream: \"%s\" is "
		    "not in 'upstreams' (\"%s\" means the recipient "
		    "domain's MX hosts)", rc->upstream, ROUTE_UPSTREAM_MX);
	r->upstream = xstrdup(rc->upstream);
}

static void
build_maildir(struct build *b, const struct route_conf *rc, struct route *r)
{
	if (tmpl_parse(b, "path", -1, r, rc->path, &r->path) < 0)
		return;
	if (r->path.parts[0].var >= 0) {
		build_report(b, "path", -1, "must start with a fixed "
		    "directory, not a variable: the part before the first "
		    "variable is the root mail never leaves");
		return;
	}
	tmpl_absolute(b, &r->path);
	if (tmpl_dot_component(&r->path))
		build_report(b, "path", -1, "must not contain \".\" or "
		    "\"..\" components");
	no_variables(b, "user", rc->user);
	r->user = rc->user != NULL ? xstrdup(rc->user) : NULL;
}

static void
build_pipe(struct build *b, const struct route_conf *rc, struct route *r)
{
	size_t i;

	if (rc->ncommand == 0) {
		build_report(b, "command", -1, "must name a program: "
		    "[ \"/path/to/program\", \"arg\", ... ]");
		return;
	}
	r->command = xcalloc(rc->ncommand, sizeof(*r->command));
	r->ncommand = rc->ncommand;
	for (i = 0; i < rc->ncommand; i++)
		tmpl_parse(b, "command", (int)i, r, rc->command[i],
		    &r->command[i]);
	if (tmpl_has_vars(&r->command[0]))
		build_report(b, "command", 0, "is the program to run: it "
		    "cannot use variables");
	else
		tmpl_absolute(b, &r->command[0]);
	r->format = xstrdup(rc->format != NULL ? rc->format : "raw");
	r->timeout = rc->timeout != 0 ? rc->timeout : 60;
	no_variables(b, "user", rc->user);
	r->user = rc->user != NULL ? xstrdup(rc->user) : NULL;
}

/* "unix:/path" (a relative path is made absolute) or "inet:host:port". */
static void
build_lmtp(struct build *b, const struct route_conf *rc, struct route *r)
{
	const char *a = rc->address, *host, *colon;
	char hostbuf[ADDR_DOMAIN_MAX + 1];
	size_t hlen;
	char *end;
	long port;

	no_variables(b, "address", a);
	if (strncmp(a, "unix:", 5) == 0 && a[5] != '\0') {
		if (a[5] == '/')
			r->address = xstrdup(a);
		else
			xasprintf(&r->address, "unix:%s/%s", b->cwd, a + 5);
		return;
	}
	r->address = xstrdup(a);
	if (strncmp(a, "inet:", 5) != 0)
		goto bad;
	host = a + 5;
	if (host[0] == '[') {
		colon = strstr(host, "]:");
		if (colon == NULL)
			goto bad;
		hlen = (size_t)(colon - host - 1);
		host++;
		colon++;
	} else {
		colon = strrchr(host, ':');
		if (colon == NULL)
			goto bad;
		hlen = (size_t)(colon - host);
	}
	if (hlen == 0 || hlen >= sizeof(hostbuf))
		goto bad;
	memcpy(hostbuf, host, hlen);
	hostbuf[hlen] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end != '\0' || port < 1 ||
	    port > 65535)
		goto bad;
	if (!addr_domain_valid(hostbuf)) {
		unsigned char tmp[16];
		if (inet_pton(AF_INET, hostbuf, tmp) != 1 &&
		    inet_pton(AF_INET6, hostbuf, tmp) != 1)
			goto bad;
	}
	return;
bad:
	build_report(b, "address", -1, "must be \"unix:/path/to/socket\" or "
	    "\"inet:host:port\" (got \"%s\")", a);
}

/* Variables only after the host, where percent-encoding keeps them
 * inside one path or query component (no choosing the host). */
static void
build_webhook(struct build *b, const struct route_conf *rc, struct route *r)
{
	const char *u = rc->url, *host, *lit;

	no_variables(b, "secret", rc->secret);
	if (strncmp(u, "https://", 8) == 0)
		host = u + 8;
	else if (strncmp(u, "http://", 7) == 0)
		host = u + 7;
	else {
		build_report(b, "url", -1, "must start with https:// or "
		    "http:// (got \"%s\")", u);
		return;
	}
	if (*host == '\0' || *host == '/' || *host == '$') {
		build_report(b, "url", -1, "has no host");
		return;
	}
	if (tmpl_parse(b, "url", -1, r, u, &r->url) < 0)
		return;
	lit = r->url.parts[0].lit;
	if (tmpl_has_vars(&r->url) && strchr(lit + (host - u), '/') == NULL &&
	    strchr(lit + (host - u), '?') == NULL)
		build_report(b, "url", -1, "can use variables only after the "
		    "host (in the path or the query)");
	r->format = xstrdup(rc->format != NULL ? rc->format : "json");
	r->timeout = rc->timeout != 0 ? rc->timeout : 30;
}

/* ---- building: a route ---- */

static void
build_matchers(struct build *b, const struct route_conf *rc, struct route *r)
{
	const char *why;
	size_t i;
	int p;

	r->re[P_RCPT] = pattern_compile(b, "rcpt", rc->rcpt, true);
	if (rc->sender != NULL)
		r->re[P_SENDER] = pattern_compile(b, "sender", rc->sender,
		    true);
	r->authenticated = rc->authenticated.flag;
	if (rc->authenticated.string != NULL)
		r->re[P_AUTH] = pattern_compile(b, "authenticated",
		    rc->authenticated.string, false);
	for (p = 0; p < P_N; p++)
		if (r->re[p] != NULL)
			captures_collect(b, r, (enum pattern)p);

	r->clients = xcalloc(rc->nclient + 1, sizeof(*r->clients));
	for (i = 0; i < rc->nclient; i++) {
		if (cidr_parse(rc->client[i], &r->clients[r->nclients],
		    &why) == 0)
			r->nclients++;
		else
			build_report(b, "client", (int)i, "%s (got \"%s\")",
			    why, rc->client[i]);
	}
	r->tls = rc->tls;
}

static void
build_sender_auth(struct build *b, const struct route_conf *rc,
    struct route *r)
{
	static const char *const methods[] = { "spf", "auth", "tls" };
	size_t i, m;

	for (i = 0; i < rc->nsender_auth; i++) {
		for (m = 0; m < ARRAY_LEN(methods); m++)
			if (strcmp(rc->sender_auth[i], methods[m]) == 0)
				break;
		if (m == ARRAY_LEN(methods))
			build_report(b, "sender_auth", (int)i, "must be "
			    "\"spf\", \"auth\" or \"tls\" (got \"%s\")",
			    rc->sender_auth[i]);
		else
			r->sender_auth |= 1u << m;
	}
}

static void
build_route(struct build *b, const struct route_conf *rc, struct route *r)
{
	int a = -1, i;

	if (rc->name != NULL)
		r->name = xstrdup(rc->name);
	else
		xasprintf(&r->name, "route%zu", b->index + 1);
	r->index = b->index;
	r->cont = rc->cont;
	r->max_size = rc->max_size;
	for (i = 0; rc->action != NULL && route_action_names[i] != NULL; i++)
		if (strcmp(route_action_names[i], rc->action) == 0)
			a = i;
	if (rc->rcpt == NULL || a < 0)
		return;         /* reported by config.c already */
	r->action = (enum route_action)a;
	build_matchers(b, rc, r);
	build_sender_auth(b, rc, r);
	params_check_presence(b, rc, r);
	switch (r->action) {
	case ROUTE_REJECT:
		build_reject(b, rc, r);
		break;
	case ROUTE_RELAY:
		if (rc->upstream != NULL)
			build_relay(b, rc, r);
		break;
	case ROUTE_MAILDIR:
		if (rc->path != NULL)
			build_maildir(b, rc, r);
		break;
	case ROUTE_PIPE:
		if (rc->command != NULL)
			build_pipe(b, rc, r);
		break;
	case ROUTE_LMTP:
		if (rc->address != NULL)
			build_lmtp(b, rc, r);
		break;
	case ROUTE_WEBHOOK:
		if (rc->url != NULL)
			build_webhook(b, rc, r);
		break;
	case ROUTE_DISCARD:
	case ROUTE_DEBUG:
		break;
	}
}

static void
route_free(struct route *r)
{
	size_t i;
	int p;

	free(r->name);
	for (p = 0; p < P_N; p++)
		pcre2_code_free(r->re[p]);
	free(r->clients);
	for (i = 0; i < r->ncaps; i++)
		free(r->caps[i].name);
	free(r->caps);
	tmpl_free(&r->text);
	free(r->upstream);
	tmpl_free(&r->path);
	for (i = 0; i < r->ncommand; i++)
		tmpl_free(&r->command[i]);
	free(r->command);
	free(r->format);
	free(r->user);
	free(r->address);
	tmpl_free(&r->url);
}

static uint32_t
route_max_pairs(const struct route *r)
{
	uint32_t n, max = 1;
	int p;

	for (p = 0; p < P_N; p++)
		if (r->re[p] != NULL &&
		    pcre2_pattern_info(r->re[p], PCRE2_INFO_CAPTURECOUNT,
		    &n) == 0 && n + 1 > max)
			max = n + 1;
	return max;
}

struct route_table *
route_table_build(const struct mxconf *conf, route_report_fn report,
    void *arg)
{
	struct route_table *t = xcalloc(1, sizeof(*t));
	struct build b = { .conf = conf, .report = report, .arg = arg };
	uint32_t pairs;
	size_t i;

	if (getcwd(b.cwd, sizeof(b.cwd)) == NULL)
		strlcpy_mx(b.cwd, "/", sizeof(b.cwd));
	t->hostname = xstrdup(conf->hostname != NULL ? conf->hostname :
	    "localhost");
	t->routes = xcalloc(conf->nroutes + 1, sizeof(*t->routes));
	t->max_pairs = 1;
	for (i = 0; i < conf->nroutes; i++) {
		b.index = i;
		build_route(&b, &conf->routes[i], &t->routes[i]);
		t->nroutes++;
		pairs = route_max_pairs(&t->routes[i]);
		if (pairs > t->max_pairs)
			t->max_pairs = pairs;
	}
	t->mctx = pcre2_match_context_create(NULL);
	if (t->mctx == NULL)
		fatalx("route: out of memory");
	pcre2_set_match_limit(t->mctx, ROUTE_MATCH_LIMIT);
	pcre2_set_depth_limit(t->mctx, ROUTE_DEPTH_LIMIT);
	if (b.nerrors > 0) {
		route_table_free(t);
		return NULL;
	}
	return t;
}

void
route_table_free(struct route_table *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nroutes; i++)
		route_free(&t->routes[i]);
	free(t->routes);
	free(t->hostname);
	pcre2_match_context_free(t->mctx);
	free(t);
}

size_t
route_table_count(const struct route_table *t)
{
	return t->nroutes;
}

/* ---- deciding ---- */

struct decide {
	const struct route_table *t;
	const struct route_input *in;
	char     rcpt[ADDR_LOCAL_MAX + ADDR_DOMAIN_MAX + 8];
	const char *domain;
	const char *builtin[V_NBUILTIN];
	pcre2_match_data *md[P_N];
};

/* 1 match, 0 no match, -1 PCRE2 gave up (match limit). */
static int
pattern_match(struct decide *d, const struct route *r, enum pattern p,
    const char *subject)
{
	int rc;

	rc = pcre2_match(r->re[p], (PCRE2_SPTR)subject, strlen(subject), 0, 0,
	    d->md[p], d->t->mctx);
	if (rc >= 0)
		return 1;
	return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

static bool
client_matches(const struct route *r, const char *ip)
{
	unsigned char addr[16];
	int family = client_parse(ip, addr);
	size_t i;

	for (i = 0; family > 0 && i < r->nclients; i++)
		if (cidr_contains(&r->clients[i], family, addr))
			return true;
	return false;
}

/* 1 when every matcher of r matches, 0 when one does not, -1 on error. */
static int
route_matches(struct decide *d, const struct route *r)
{
	const struct route_input *in = d->in;
	int m;

	if (r->re[P_RCPT] == NULL)
		return 0;
	if (r->tls >= 0 && r->tls != (in->tls ? 1 : 0))
		return 0;
	if (r->authenticated == 0 && in->auth_user != NULL)
		return 0;
	if (r->authenticated == 1 && in->auth_user == NULL)
		return 0;
	if (r->nclients > 0 && !client_matches(r, in->client_ip))
		return 0;
	if ((m = pattern_match(d, r, P_RCPT, d->rcpt)) != 1)
		return m;
	if (r->re[P_SENDER] != NULL &&
	    (m = pattern_match(d, r, P_SENDER, in->sender)) != 1)
		return m;
	if (r->re[P_AUTH] != NULL &&
	    (m = pattern_match(d, r, P_AUTH, in->auth_user)) != 1)
		return m;
	return 1;
}

/* The built-ins, then each capture ("" when its group did not match). */
static void
vars_collect(struct decide *d, const struct route *r, struct route_match *m)
{
	PCRE2_SIZE *ov;
	size_t i, g;

	m->nvars = V_NBUILTIN + r->ncaps;
	m->vars = xcalloc(m->nvars, sizeof(*m->vars));
	for (i = 0; i < V_NBUILTIN; i++) {
		m->vars[i].name = builtin_names[i];
		m->vars[i].value = xstrdup(d->builtin[i]);
	}
	for (i = 0; i < r->ncaps; i++) {
		const struct capture *c = &r->caps[i];
		const char *subject = c->pattern == P_RCPT ? d->rcpt :
		    c->pattern == P_SENDER ? d->in->sender : d->in->auth_user;

		ov = pcre2_get_ovector_pointer(d->md[c->pattern]);
		g = (size_t)c->group;
		m->vars[V_NBUILTIN + i].name = c->name;
		if (ov[2 * g] == PCRE2_UNSET)
			m->vars[V_NBUILTIN + i].value = xstrdup("");
		else
			m->vars[V_NBUILTIN + i].value = xstrndup(subject +
			    ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
	}
}

/* Where a value goes decides what it may hold (route.h). */
enum xctx { X_TEXT, X_PATH, X_ARG, X_URL };

static bool
path_value_ok(const char *v)
{
	const unsigned char *p;

	if (v[0] == '\0' || v[0] == '.')
		return false;
	for (p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

static void
append_value(struct buf *out, const char *v, enum xctx x)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *)v; *p != '\0'; p++) {
		if (x == X_TEXT && (*p < 0x20 || *p == 0x7f)) {
			buf_append(out, "?", 1);
		} else if (x == X_URL && !isalnum(*p) && *p != '-' &&
		    *p != '.' && *p != '_' && *p != '~') {
			char pct[3] = { '%', hex[*p >> 4], hex[*p & 15] };
			buf_append(out, pct, 3);
		} else {
			buf_append(out, p, 1);
		}
	}
}

/* Expand t into out; -1 with *bad set to the variable that is unsafe. */
static int
expand(const struct tmpl *t, const struct route_var *vars, enum xctx x,
    struct buf *out, int *bad)
{
	int first_var = -1;
	size_t i;

	buf_reset(out);
	buf_append(out, "", 0);
	for (i = 0; i < t->nparts; i++) {
		const struct tpart *tp = &t->parts[i];

		if (tp->var < 0) {
			buf_appends(out, tp->lit);
			continue;
		}
		if (first_var < 0)
			first_var = tp->var;
		if (x == X_PATH && !path_value_ok(vars[tp->var].value)) {
			*bad = tp->var;
			return -1;
		}
		append_value(out, vars[tp->var].value, x);
	}
	/* An argument the template did not start with "-" must not become
	 * an option of the program. */
	if (x == X_ARG && out->data[0] == '-' && first_var >= 0 &&
	    (t->parts[0].var >= 0 || t->parts[0].lit[0] != '-')) {
		*bad = first_var;
		return -1;
	}
	return 0;
}

static int
json_expanded(struct json_writer *w, const char *key, const struct tmpl *t,
    const struct route_var *vars, enum xctx x, int *bad)
{
	struct buf v;
	int rc;

	buf_init(&v);
	rc = expand(t, vars, x, &v, bad);
	if (rc == 0) {
		if (key != NULL)
			json_key(w, key);
		json_string(w, v.data);
	}
	buf_free(&v);
	return rc;
}

/* The action's parameters as the architecture notes define them. */
static int
params_json(const struct route *r, const struct route_match *m,
    struct buf *json, int *bad)
{
	struct json_writer w;
	size_t i;

	json_writer_init(&w, json);
	json_begin_object(&w);
	switch (r->action) {
	case ROUTE_RELAY:
		json_key(&w, "upstream");
		json_string(&w, r->upstream);
		break;
	case ROUTE_MAILDIR:
		if (json_expanded(&w, "path", &r->path, m->vars, X_PATH,
		    bad) < 0)
			return -1;
		if (r->user != NULL) {
			json_key(&w, "user");
			json_string(&w, r->user);
		}
		break;
	case ROUTE_PIPE:
		json_key(&w, "command");
		json_begin_array(&w);
		for (i = 0; i < r->ncommand; i++)
			if (json_expanded(&w, NULL, &r->command[i], m->vars,
			    X_ARG, bad) < 0)
				return -1;
		json_end_array(&w);
		json_key(&w, "format");
		json_string(&w, r->format);
		json_key(&w, "timeout");
		json_int(&w, r->timeout);
		if (r->user != NULL) {
			json_key(&w, "user");
			json_string(&w, r->user);
		}
		break;
	case ROUTE_LMTP:
		json_key(&w, "address");
		json_string(&w, r->address);
		break;
	case ROUTE_WEBHOOK:
		if (json_expanded(&w, "url", &r->url, m->vars, X_URL,
		    bad) < 0)
			return -1;
		json_key(&w, "format");
		json_string(&w, r->format);
		json_key(&w, "timeout");
		json_int(&w, r->timeout);
		break;
	case ROUTE_REJECT:
	case ROUTE_DISCARD:
	case ROUTE_DEBUG:
		break;
	}
	json_key(&w, "vars");
	json_begin_object(&w);
	for (i = V_NBUILTIN; i < m->nvars; i++) {
		json_key(&w, m->vars[i].name);
		json_string(&w, m->vars[i].value);
	}
	json_end_object(&w);
	json_end_object(&w);
	return 0;
}

static void reject(struct route_result *res, int code, const char *why,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
reject(struct route_result *res, int code, const char *why,
    const char *fmt, ...)
{
	va_list ap;

	res->verdict = ROUTE_REJECTED;
	res->code = code;
	va_start(ap, fmt);
	vsnprintf(res->text, sizeof(res->text), fmt, ap);
	va_end(ap);
	strlcpy_mx(res->why, why, sizeof(res->why));
}

/* The %-hack, bang paths and quoted local parts ("a@b"@c): forms that
 * an upstream might route further (RFC 5321 3.6.1, 4.1.1.3). */
static bool
local_part_tricky(const char *local)
{
	return local[0] == '"' || strpbrk(local, "%!@") != NULL;
}

static struct route_match *
match_add(struct route_result *res, const struct route *r)
{
	struct route_match *m;

	res->matches = xrealloc(res->matches,
	    (res->nmatches + 1) * sizeof(*res->matches));
	m = &res->matches[res->nmatches++];
	memset(m, 0, sizeof(*m));
	m->route = r->name;
	m->index = r->index;
	m->action = r->action;
	m->action_name = route_action_names[r->action];
	m->max_size = r->max_size;
	m->sender_auth = r->sender_auth;
	return m;
}

/*
 * Apply route r, which matched.  Returns true when the decision is
 * complete (a reject), false to go on with later routes when r
 * continues.
 */
static bool
route_apply(struct decide *d, const struct route *r,
    struct route_result *res, const char *shown)
{
	struct route_match *m = match_add(res, r);
	char why[sizeof(res->why)];
	struct buf out;
	int bad = -1;

	vars_collect(d, r, m);
	buf_init(&out);
	if (r->action == ROUTE_REJECT) {
		expand(&r->text, m->vars, X_TEXT, &out, &bad);
		snprintf(why, sizeof(why), "route=%s", r->name);
		reject(res, r->code, why, "%s", out.data);
	} else if (r->action == ROUTE_RELAY && d->in->auth_user == NULL &&
	    local_part_tricky(d->in->local)) {
		snprintf(why, sizeof(why), "route=%s: relay refused for a "
		    "local part with %%, !, @ or quotes", r->name);
		reject(res, 550, why, "5.7.1 <%s>: Relay access denied for "
		    "this address form", shown);
	} else if (params_json(r, m, &out, &bad) < 0) {
		snprintf(why, sizeof(why), "route=%s: unsafe value of ${%s}",
		    r->name, m->vars[bad].name);
		reject(res, 553, why, "5.1.3 <%s>: Recipient address not "
		    "usable here (unsafe ${%s})", shown, m->vars[bad].name);
	} else {
		m->params = xstrdup(out.data);
		buf_free(&out);
		return !r->cont;
	}
	buf_free(&out);
	return true;
}

static void
decide_init(struct decide *d, const struct route_table *t,
    const struct route_input *in)
{
	const char *at = strrchr(in->sender, '@');
	int p;

	memset(d, 0, sizeof(*d));
	d->t = t;
	d->in = in;
	/* RFC 5321 4.5.1: <Postmaster> is ours, at our own name. */
	d->domain = in->domain[0] != '\0' ? in->domain : t->hostname;
	snprintf(d->rcpt, sizeof(d->rcpt), "%s@%s", in->local, d->domain);
	d->builtin[V_RCPT] = d->rcpt;
	d->builtin[V_LOCAL] = in->local;
	d->builtin[V_DOMAIN] = d->domain;
	d->builtin[V_SENDER] = in->sender;
	d->builtin[V_SENDER_DOMAIN] = at != NULL ? at + 1 : "";
	d->builtin[V_CLIENT_IP] = in->client_ip;
	d->builtin[V_HELO] = in->helo;
	d->builtin[V_QUEUE_ID] = in->queue_id;
	d->builtin[V_AUTH_USER] = in->auth_user != NULL ? in->auth_user : "";
	for (p = 0; p < P_N; p++)
		if ((d->md[p] = pcre2_match_data_create(t->max_pairs,
		    NULL)) == NULL)
			fatalx("route: out of memory");
}

void
route_decide(const struct route_table *t, const struct route_input *in,
    struct route_result *res)
{
	char shown[sizeof(((struct decide *)0)->rcpt)], why[256];
	struct decide d;
	bool done = false;
	size_t i;
	int m, p;

	memset(res, 0, sizeof(*res));
	decide_init(&d, t, in);
	snprintf(shown, sizeof(shown), "%s%s%s", in->local,
	    in->domain[0] != '\0' ? "@" : "", in->domain);
	for (i = 0; i < t->nroutes && !done; i++) {
		const struct route *r = &t->routes[i];

		if ((m = route_matches(&d, r)) == 0)
			continue;
		if (m < 0) {
			snprintf(why, sizeof(why), "route=%s: a pattern hit "
			    "the PCRE2 match limit", r->name);
			reject(res, 451, why, "4.3.0 <%s>: Temporary routing "
			    "failure, try again later", shown);
			done = true;
			break;
		}
		done = route_apply(&d, r, res, shown);
	}
	if (res->verdict != ROUTE_REJECTED && res->nmatches == 0)
		reject(res, 550, "no route", "5.1.1 <%s>: Recipient address "
		    "rejected", shown);
	for (i = 0; res->verdict == ROUTE_ACCEPTED && i < res->nmatches; i++)
		if (res->matches[i].max_size != 0 && (res->max_size == 0 ||
		    res->matches[i].max_size < res->max_size))
			res->max_size = res->matches[i].max_size;
	for (p = 0; p < P_N; p++)
		pcre2_match_data_free(d.md[p]);
}

void
route_result_free(struct route_result *res)
{
	size_t i, v;

	for (i = 0; i < res->nmatches; i++) {
		for (v = 0; v < res->matches[i].nvars; v++)
			free(res->matches[i].vars[v].value);
		free(res->matches[i].vars);
		free(res->matches[i].params);
	}
	free(res->matches);
	memset(res, 0, sizeof(*res));
}
