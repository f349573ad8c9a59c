/*
 * route — what happens to each recipient: the configuration's `routes`,
 * compiled once at load, and the decision taken at RCPT TO.
 *
 * Building.  config.c calls route_table_build() at the end of a load with
 * the routes as written (struct route_conf, config.h).  Every pattern is
 * compiled with PCRE2 and JIT-compiled, every template parsed, every
 * reference checked; each problem goes to the report callback with the
 * route's index and the setting to blame, and config.c turns it into
 * "FILE:LINE: problem".  The table is immutable afterwards and is shared
 * by the processes forked after the load.
 *
 * Matching.  Routes are tried in order; a route matches when every
 * matcher it has matches:
 *   rcpt           PCRE2 on "local@domain": the local part as the client
 *                  sent it (quotes included), the domain in lower case
 *                  (the address parser lowers it).  The pattern is
 *                  compiled caseless, so "@Example\.COM$" and "^Bob@"
 *                  match whatever case the client used; "(?-i)" in the
 *                  pattern makes the rest of it case-sensitive.  The
 *                  variables keep the text as sent.  RFC 5321's
 *                  <Postmaster> (no domain) is matched as
 *                  "Postmaster@<server.hostname>".
 *   sender         PCRE2 (caseless) on the envelope sender, "" for <>.
 *   client         the client address is in one of the CIDR networks
 *                  (an IPv4-mapped IPv6 client counts as IPv4).
 *   authenticated  true: the client authenticated; false: it did not; a
 *                  string: PCRE2 (case-sensitive) on the user name.
 *   tls            true: the session is encrypted; false: it is not.
 * The first matching route decides, unless it says `continue`: then the
 * later matching routes apply too, up to and including the first one
 * without `continue` (e.g. archive, then deliver).  A `reject` route
 * reached that way rejects the recipient, whatever matched before.
 *
 * Variables.  The action's parameters may contain ${name}: the named
 * capture groups of the route's patterns, and the built-ins ${rcpt}
 * ${local} ${domain} ${sender} ${sender_domain} ${client_ip} ${helo}
 * ${queue_id}, and ${auth_user} when the route has `authenticated`.  "$$"
 * is a literal "$".  A group that did not take part in the match is "".
 * Referring to a variable the route's matchers cannot provide, a capture
 * name used twice or shadowing a built-in, is a configuration error.
 *
 * Safety of the expansion, by action (the client chooses the values):
 *   maildir   the path's root, everything before the first variable, is
 *             fixed; each value must be non-empty, contain no "/" and no
 *             control character, and not start with "." -- so the path
 *             never leaves its root.  The template itself may not start
 *             with a variable nor hold "." or ".." components.
 *   pipe      the command is an argv array, run without a shell; its
 *             program (command[0]) has no variables, and an argument that
 *             starts with a variable must not expand to something that
 *             starts with "-" (no option injection).
 *   webhook   variables only after the URL's host, percent-encoded.
 *   reject    control characters in the reply text become "?".
 * A recipient whose values break these rules is refused at RCPT with
 * "553 5.1.3" (route_decide() says which variable).
 *
 * No open relay.  Unless the client authenticated, a `relay` route never
 * takes a recipient whose local part holds "%", "!" or "@" or is quoted
 * (the %-hack, bang paths, "a@b"@c): it is refused "550 5.7.1".  Source
 * routes were removed by the address parser already; "a@b@c" never parses.
 *
 * Decisions are JSON objects as the architecture notes define them, with
 * the parameters expanded and "vars" holding the named captures.
 */
#ifndef MXGATE_ROUTE_H
#define MXGATE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

/* The actions, in the order of route_action_names. */
enum route_action {
	ROUTE_REJECT, ROUTE_RELAY, ROUTE_MAILDIR, ROUTE_PIPE, ROUTE_LMTP,
	ROUTE_WEBHOOK, ROUTE_DISCARD, ROUTE_DEBUG,
};
extern const char *const route_action_names[];     /* NULL-terminated */

/* sender_auth methods of a route (enforcing them is the session's job:
 * any one that passes admits the recipient). */
#define ROUTE_SENDER_AUTH_SPF   0x01
#define ROUTE_SENDER_AUTH_AUTH  0x02
#define ROUTE_SENDER_AUTH_TLS   0x04

/* The upstream name that means "the recipient domain's MX hosts". */
#define ROUTE_UPSTREAM_MX "mx"

struct route_table;

/*
 * A problem with routes[route] (its setting, or the whole route when
 * setting is NULL; elem >= 0 names an element of a list setting).  msg is
 * complete, e.g. "'routes[2].rcpt' is not a valid regular expression:
 * missing closing parenthesis at offset 7".
 */
typedef void (*route_report_fn)(void *arg, size_t route, const char *setting,
    int elem, const char *msg);

/*
 * Compile conf->routes (conf->upstreams and conf->hostname are used for
 * checks).  Relative maildir paths, commands and LMTP sockets are made
 * absolute against the current directory (mxgated loads its
 * configuration before daemon() moves it to "/").  NULL after reporting
 * every problem.
 */
struct route_table *route_table_build(const struct mxconf *conf,
    route_report_fn report, void *arg);
void route_table_free(struct route_table *t);
size_t route_table_count(const struct route_table *t);

/* What is known at RCPT.  Strings may be "" but not NULL, except
 * auth_user. */
struct route_input {
	const char *local;      /* as sent, quotes included */
	const char *domain;     /* lower case; "" for <Postmaster> */
	const char *sender;     /* "local@domain", "" for <> */
	const char *client_ip;  /* "192.0.2.1", "2001:db8::1" */
	const char *helo;
	const char *queue_id;
	const char *auth_user;  /* NULL when not authenticated */
	bool        tls;        /* the session is encrypted */
};

struct route_var {
	const char *name;
	char       *value;
};

/* One route that applies to the recipient. */
struct route_match {
	const char *route;          /* its name */
	size_t      index;          /* in conf->routes */
	enum route_action action;
	const char *action_name;    /* "maildir" */
	char       *params;         /* JSON object text; NULL for reject */
	size_t      max_size;       /* 0: none of its own */
	unsigned    sender_auth;    /* ROUTE_SENDER_AUTH_*, 0: none */
	struct route_var *vars;     /* built-ins, then the captures */
	size_t      nvars;
};

enum route_verdict {
	ROUTE_ACCEPTED,         /* store matches[0..nmatches-1] */
	ROUTE_REJECTED,         /* answer code and text */
};

struct route_result {
	enum route_verdict verdict;
	int         code;           /* ROUTE_REJECTED: 550, 451, ... */
	char        text[512];      /* ROUTE_REJECTED: "5.1.1 <a@b>: ..." */
	char        why[256];       /* for the log: "no route", "route=x",
	                               "unsafe ${local}", ... */
	/* The routes that matched, in order.  On ROUTE_REJECTED they are only
	 * for display (route test): the last one may be the reject route. */
	struct route_match *matches;
	size_t      nmatches;
	size_t      max_size;       /* strictest max_size of the matches, 0:
	                               none */
};

/*
 * Decide for one recipient.  Always fills res (free it with
 * route_result_free()): ROUTE_ACCEPTED with at least one match, or
 * ROUTE_REJECTED with the reply -- the reject route's, "550 5.1.1" when no
 * route matches, "553 5.1.3" for an unsafe expansion, "550 5.7.1" for an
 * address form that must not be relayed, "451 4.3.0" when a pattern hits
 * PCRE2's match limit.
 */
void route_decide(const struct route_table *t, const struct route_input *in,
    struct route_result *res);
void route_result_free(struct route_result *res);

#endif
