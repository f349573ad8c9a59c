/*
 * config — the configuration file (libconfig syntax), loaded and checked
 * completely before anything uses it.
 *
 * Every setting is declared once in a table in config.c with its type,
 * default and checker; the same table drives parsing, validation and the
 * defaults.  An unknown setting, a wrong type or a bad value is an error
 * "FILE:LINE: problem" and the whole load fails: nothing is ever ignored.
 *
 * config_load() returns NULL after printing every problem it found (to the
 * error callback, stderr by default); config_default() is the embedded
 * configuration used by tests and by `mxgated` without -c.
 */
#ifndef MXGATE_CONFIG_H
#define MXGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

enum listener_role { ROLE_MX, ROLE_SUBMISSION, ROLE_SUBMISSIONS };

struct listener_conf {
	char    *address;       /* "127.0.0.1", "::1", "0.0.0.0", "::" */
	int      port;
	enum listener_role role;
	struct sockaddr_storage ss;   /* resolved address */
	socklen_t ss_len;
};

/* A setting that is true, false or a string ("authenticated"). */
struct conf_boolstr {
	int      flag;          /* -1 absent, 0 false, 1 true or a string */
	char    *string;        /* the string, NULL for true and false */
};

/*
 * One element of `routes`, as written (route.c compiles and checks it;
 * see route.h).  Action parameters are kept whatever the action; route.c
 * reports those that do not belong to it.  Absent: NULL strings and
 * lists, 0 numbers, -1 tristates.
 */
struct route_conf {
	char    *name;          /* default "route<N>", filled in at load */
	char    *rcpt;          /* PCRE2 on "local@domain"; required */
	char    *sender;        /* PCRE2 on the envelope sender */
	char   **client;        /* CIDR networks */
	size_t   nclient;
	struct conf_boolstr authenticated;  /* string: PCRE2 on the user */
	int      tls;           /* -1 any, 0 plaintext only, 1 TLS only */
	char   **sender_auth;   /* "spf", "auth", "tls" */
	size_t   nsender_auth;
	bool     cont;          /* continue */
	size_t   max_size;      /* 0: limits.message_size only */
	char    *action;
	int      code;          /* reject */
	char    *text;          /* reject */
	char    *upstream;      /* relay */
	char    *path;          /* maildir */
	char   **command;       /* pipe */
	size_t   ncommand;
	char    *format;        /* pipe, webhook: "raw" | "json" */
	int      timeout;       /* pipe, webhook: seconds */
	char    *address;       /* lmtp */
	char    *url;           /* webhook */
	char    *secret;        /* webhook (never stored in the queue) */
};

/* One element of `upstreams`: where action "relay" sends mail.  The
 * delivery work adds its settings (TLS, AUTH, HELO) here. */
struct upstream_conf {
	char    *name;          /* required, unique, not "mx" */
	char   **hosts;         /* "host", "host:port", "[v6addr]:port" */
	size_t   nhosts;
	int      port;          /* when a host has none; default 25 */
};

struct route_table;

struct mxconf {
	char    *path;               /* file it came from, "(default)" */

	/* server */
	char    *hostname;           /* default: gethostname() */
	char    *user;               /* workers run as this user when root */
	char    *group;              /* default: user's primary group */
	char    *queue_user;         /* queue process user; default: user */
	int      workers;            /* 0 = one per CPU */
	char    *log_level;          /* "error" "warn" "info" "debug" */

	/* listeners */
	struct listener_conf *listeners;
	size_t   nlisteners;

	/* queue */
	char    *queue_dir;          /* holds queue.db */

	/* limits */
	size_t   max_line;
	size_t   max_message_size;
	unsigned max_recipients;
	unsigned max_errors;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	char    *bare_newlines;      /* "reject" | "normalize" */

	/* timeouts, seconds */
	unsigned timeout_command;
	unsigned timeout_data;
	unsigned shutdown_grace;

	/* acceptance: domains we are MX for; without `routes`, a shorthand
	 * for routes (etc/mxgate.conf says which) */
	char   **accept_domains;
	size_t   naccept_domains;

	/* routing (route.h): the routes as written (those made from
	 * accept_domains when `routes` is absent), and compiled */
	struct route_conf *routes;
	size_t   nroutes;
	struct upstream_conf *upstreams;
	size_t   nupstreams;
	struct route_table *route_table;    /* never NULL after a load */
};

typedef void (*config_error_fn)(const char *msg);

/* Load and check; NULL on any problem (each reported through errfn, or
 * stderr when errfn is NULL). */
struct mxconf *config_load(const char *path, config_error_fn errfn);
/* Same, from a string (tests); name is used in messages. */
struct mxconf *config_load_string(const char *text, const char *name,
    config_error_fn errfn);
/* The embedded default: 127.0.0.1:2525, queue in ./var/queue. */
struct mxconf *config_default(void);
void config_free(struct mxconf *c);

/* Path of the queue database inside queue_dir. */
#define QUEUE_DB_NAME "queue.db"

#endif
