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
#include <stdio.h>
#include <netinet/in.h>
#include <sys/socket.h>

enum listener_role { ROLE_MX, ROLE_SUBMISSION, ROLE_SUBMISSIONS };

struct listener_conf {
	char    *address;       /* "127.0.0.1", "::1", "0.0.0.0", "::" */
	int      port;
	enum listener_role role;
	struct sockaddr_storage ss;   /* resolved address */
	socklen_t ss_len;
	/* AUTH (auth.h): offered on this listener?  Default: not on mx, on
	 * the others.  Without TLS too?  Default: auth.allow_plaintext.
	 * -1 while absent, 0 or 1 after the load. */
	int      auth;
	int      allow_plaintext_auth;
	/* The PROXY protocol (proxy.h): a header from one of proxy_from
	 * (addresses or CIDR networks) comes first and names the client. */
	bool     proxy_protocol;
	char   **proxy_from;
	size_t   nproxy_from;
	struct netlist *proxy_nets;   /* proxy_from compiled; NULL: none */
};

/* One element of tls.certificates: a certificate chain and its key. */
struct tls_cert_conf {
	char    *cert;          /* PEM, the leaf first, then intermediates */
	char    *key;           /* PEM private key, RSA or ECDSA */
	char     where[320];    /* "FILE:LINE" of the element, for tls.c */
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
	bool     tls_verify;    /* webhook: check the certificate; default true */
	char    *tls_ca;        /* webhook: CA file (PEM); default the system's */
	char    *user;             /* pipe, maildir: runs as this user */
	char    *attachments_dir;  /* pipe, webhook (json): save attachments
	                         * there instead of inlining them in base64 */
	char   **milters;       /* names in mxconf.milters (milter_client.h) */
	size_t   nmilters;
	char    *policy_service;   /* a name in mxconf.policy_services;
	                         * NULL: the global policy service */
};

/* One element of `upstreams`: where action "relay" sends mail.  The
 * delivery work adds its settings (TLS, AUTH, HELO) here. */
struct upstream_conf {
	char    *name;          /* required, unique, not "mx" */
	char   **hosts;         /* "host", "host:port", "[v6addr]:port" */
	size_t   nhosts;
	int      port;          /* when a host has none; default 25 */
	/* the relay client (relay.h) */
	int      tls;           /* enum upstream_tls */
	bool     tls_verify;    /* check the certificate and the name */
	char    *tls_ca;        /* CA file (PEM); default: the system's */
	char    *auth_user;     /* AUTH PLAIN/LOGIN to the upstream */
	char    *auth_password;
	char    *helo;          /* name in EHLO; default server.hostname */
	bool     chunking;      /* BDAT when offered (relay.c) */
};

/* In the order of the words of upstreams[].tls: the first three are
 * the older words (opportunistic = may; required = verify, or encrypt
 * with tls_verify = false), the others the TLS levels (enum tls_level). */
enum upstream_tls { UPSTREAM_TLS_NONE, UPSTREAM_TLS_OPPORTUNISTIC,
	UPSTREAM_TLS_REQUIRED, UPSTREAM_TLS_MAY, UPSTREAM_TLS_ENCRYPT,
	UPSTREAM_TLS_VERIFY, UPSTREAM_TLS_DANE };

/*
 * The relay client's TLS levels (relay.h), as Postfix names them, in the
 * order of their words: none (no TLS), may (STARTTLS when offered),
 * encrypt (TLS or nothing, any certificate), verify (TLS with a
 * certificate that verifies and names the host), dane (RFC 7672: TLSA
 * records from a validating resolver bind the certificate; else may),
 * mta-sts (MX hosts only: DANE when it applies, else the domain's
 * MTA-STS policy, RFC 8461, else may).
 */
enum tls_level { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT,
	TLS_LEVEL_VERIFY, TLS_LEVEL_DANE, TLS_LEVEL_MTA_STS };

/* One element of delivery.tls_policy: the level for a recipient domain
 * delivered to its MX hosts. */
struct tls_policy_conf {
	char    *domain;        /* "example.com", or ".example.com" for
	                         * its subdomains */
	int      level;         /* enum tls_level */
};

struct route_table;
struct netlist;

/* One element of `plugins` (plugin.h loads it). */
struct plugin_conf {
	char    *path;          /* the shared object, absolute after load */
	char    *args;          /* handed to its init(); NULL: none */
	char     where[300];    /* "FILE:LINE: 'plugins[N]'" for load errors */
};

/* One element of `milters` (milter_client.h); timeouts in seconds. */
struct milter_conf {
	char    *name;
	char    *address;       /* "unix:/path", "inet:addr:port" */
	unsigned connect_timeout;   /* connection and negotiation */
	unsigned command_timeout;   /* each SMTP command's reply */
	unsigned content_timeout;   /* header, body, end of message */
	char    *default_action;    /* "tempfail" "accept" "reject" */
};

/* One element of `policy_services`: a named policy service that routes
 * refer to (policy.h); the global `policy` block is the default. */
struct policy_service_conf {
	char    *name;
	char    *service;       /* "unix:/path", "inet:addr:port" */
	unsigned timeout;
	char    *default_action;
};

/* SMTP stages, as policy.stages names them ("connect", "helo", "mail",
 * "rcpt", "data", "end_of_message"); policy_stages has bit 1 << stage. */
enum smtp_stage {
	STAGE_CONNECT, STAGE_HELO, STAGE_MAIL, STAGE_RCPT, STAGE_DATA,
	STAGE_END_OF_MESSAGE,
};

struct mxconf {
	char    *path;               /* file it came from, "(default)" */
	char    *start_dir;          /* where mxgated started (relative paths
	                              * start there); set by mxgated, not read */
	char    *text;               /* the whole file, @includes in place, as
	                              * config_load_checked() reads it */

	/* server */
	char    *hostname;           /* default: gethostname() */
	char    *user;               /* workers run as this user when root */
	char    *group;              /* default: user's primary group */
	char    *queue_user;         /* queue process user, owns the queue */
	char    *delivery_user;      /* delivery children */
	char    *lookup_user;        /* the credentials lookup process */
	char    *chroot_dir;         /* the workers' root when root */
	int      workers;            /* 0 = one per CPU */
	char    *log_level;          /* "error" "warn" "info" "debug" */
	char    *log_format;         /* "text" (key=value) or "json" */
	char    *metrics_listen;     /* "ADDR:PORT" of the exporter; NULL: off */
	char    *pid_file;           /* the master's pid; NULL: none */

	/* listeners */
	struct listener_conf *listeners;
	size_t   nlisteners;

	/* queue */
	char    *queue_dir;          /* holds queue.db */
	size_t   queue_min_free;     /* below this, MAIL is 452 4.3.1 */
	unsigned keep_history;       /* history of messages gone; seconds */
	unsigned keep_tls_results;   /* tls_results rows (TLS-RPT); seconds */

	/* limits */
	size_t   max_line;
	size_t   max_message_size;
	unsigned min_data_rate;      /* bytes/s a message must keep up */
	unsigned max_recipients;
	unsigned max_errors;
	unsigned max_connections;    /* 0 in the file: computed at start
	                              * (master.c, from the memory) */
	unsigned max_connections_per_ip;
	unsigned fair_share;         /* percent of the free slots one
	                              * address may hold under stress; 0 off */
	unsigned ipv6_prefix;        /* IPv6 clients are counted by their
	                              * network of this many bits */
	char    *bare_newlines;      /* "reject" | "normalize" */

	/* timeouts, seconds */
	unsigned timeout_command;
	unsigned timeout_data;
	unsigned timeout_proxy;      /* the PROXY header */
	unsigned shutdown_grace;

	/* stress mode (Postfix's): over stress_threshold percent of
	 * max_connections, these timeouts apply and fair_share holds */
	unsigned stress_threshold;   /* 0: never */
	unsigned stress_timeout_command;
	unsigned stress_timeout_data;
	unsigned stress_greet_pause; /* seconds, when below greet_pause */
	unsigned stress_max_errors;  /* when below max_errors */

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

	/* delivery (scheduler.h, relay.h); durations in seconds */
	unsigned *retry_schedule;    /* waits after the 1st, 2nd... failure */
	size_t   nretry_schedule;
	unsigned max_queue_time;     /* then bounce (expiry DSN) */
	unsigned delay_warning;      /* warn the sender once; 0 = never */
	bool     delivery_paused;    /* queue only, deliver nothing */
	unsigned concurrency;        /* delivery processes in all */
	unsigned concurrency_per_destination;
	unsigned keep_delivered;     /* keep final messages' rows; 0 = no */
	char    *bounce_upstream;    /* where DSNs go: "mx" or an upstream */
	unsigned relay_connect_timeout;
	unsigned relay_command_timeout;  /* each reply, and DATA's blocks */
	unsigned relay_data_timeout;     /* the reply to the final dot */
	unsigned relay_cache_time;       /* an unused connection kept */
	/* the relay client's TLS (relay.h) */
	bool     dnssec;             /* trust the resolver's AD bit */
	char    *mx_tls_level_word;  /* delivery.tls_level as written */
	int      mx_tls_level;       /* enum tls_level, from it */
	char    *relay_tls_ca;       /* CA file for MX hosts; NULL: system */
	bool     relay_chunking;     /* BDAT to MX hosts that offer it */
	struct tls_policy_conf *tls_policies;
	size_t   ntls_policies;

	/* TLS for the listeners (tls.h): STARTTLS is offered when there is
	 * a certificate */
	struct tls_cert_conf *tls_certs;
	size_t   ntls_certs;
	char    *tls_min_version;    /* "TLSv1" ... "TLSv1.3" */
	char    *tls_ciphers;        /* TLS 1.2 and older, OpenSSL syntax */
	char    *tls_ciphersuites;   /* TLS 1.3 */

	/* AUTH (auth.h); paths are absolute after the load */
	char    *auth_passwd_file;
	char    *auth_sqlite;
	unsigned auth_max_failures;  /* failed AUTHs before 421 and close */
	unsigned auth_failure_delay; /* seconds before a 535 goes out */
	bool     auth_allow_plaintext;

	/* sender authentication (spf.h): pass_results as a mask of
	 * 1 << enum spf_result; timeouts in seconds */
	char    *spf_mail_from_policy;   /* "none" | "reject_fail" */
	char   **spf_pass_results;       /* default [ "pass" ] */
	size_t   nspf_pass_results;
	unsigned spf_pass_mask;
	unsigned spf_timeout;
	unsigned spf_threads;            /* per worker */

	/* the policy delegation service (policy.h); NULL service: none */
	char    *policy_service;         /* "unix:/path", "inet:addr:port" */
	char   **policy_stages_list;     /* default [ "rcpt" ] */
	size_t   npolicy_stages_list;
	unsigned policy_stages;          /* 1 << enum smtp_stage */
	unsigned policy_timeout;
	char    *policy_default;         /* action when the service fails */

	/* named policy services that routes refer to (policy_service) */
	struct policy_service_conf *policy_services;
	size_t   npolicy_services;

	/* milters (milter_client.h): defined by name; smtp_milters for
	 * every session, routes[].milters for their recipients */
	struct milter_conf *milters;
	size_t   nmilters;
	char   **smtp_milters;
	size_t   nsmtp_milters;

	/* plugins (plugin.h, mxgate/plugin.h) */
	struct plugin_conf *plugins;
	size_t   nplugins;

	/* built-in checks (checks.h) */
	bool     helo_checks;
	unsigned greet_pause;        /* seconds; 0 = greet at once */
	bool     greet_multiline;    /* "220-" first: the pregreet trap */
	unsigned greet_pass_time;    /* seconds a client that waited skips
	                              * the pause; 0: not remembered */
	char   **reject_networks;
	size_t   nreject_networks;
	/* dnsbl (dnsbl.h): "domain[=filter][*weight]" */
	char   **dnsbl_sites;
	size_t   ndnsbl_sites;
	char   **dnsbl_sender_sites;
	size_t   ndnsbl_sender_sites;
	int      dnsbl_threshold;
	unsigned dnsbl_timeout;
	unsigned dnsbl_cache_time;
	char   **trusted_networks;
	size_t   ntrusted_networks;
	struct netlist *reject_nets;     /* compiled; never NULL after load */
	struct netlist *trusted_nets;
	unsigned rate_connections;       /* per minute per client, 0: off */
	unsigned rate_messages;
	unsigned rate_auth_failures;     /* per minute per client, 0: off */
};

typedef void (*config_error_fn)(const char *msg);

/*
 * The parser a module owns for the values of one of its settings
 * (spf.h, policy.h, checks.h): the table in config.c names it, and
 * config.c reports what it says.  Called with the string, or each string
 * of a list; 0, or -1 with why set to a phrase that follows the setting's
 * name: "'NAME': WHY" for a string, "'NAME[i]' WHY (got \"VALUE\")" for
 * an element of a list.
 */
typedef int (*config_value_fn)(const char *value, char *why, size_t size);

/* Load and check; NULL on any problem (each reported through errfn, or
 * stderr when errfn is NULL). */
struct mxconf *config_load(const char *path, config_error_fn errfn);
/* Same, from a string (tests); name is used in messages. */
struct mxconf *config_load_string(const char *text, const char *name,
    config_error_fn errfn);
/* A reload (README "Reload"): the text of a configuration the master has
 * loaded and checked (mxconf.text), parsed again by a process that may
 * not reach its files (the queue process in its root, the spawner):
 * files are not tried, relative paths start at base_dir. */
struct mxconf *config_load_checked(const char *text, const char *name,
    const char *base_dir, config_error_fn errfn);
/* The embedded default: 127.0.0.1:2525, queue in ./var/queue. */
struct mxconf *config_default(void);
void config_free(struct mxconf *c);

/*
 * The settings as the table in config.c declares them, for the manual page
 * and for the tests that hold etc/mxgate.conf to the table.
 * config_describe() calls fn once per setting in the table's order, the
 * settings of the groups of a list (the address of each listener) right
 * after the list.
 */
struct config_doc {
	const char *path;       /* "limits.recipients"; in a list, "port" */
	const char *list;       /* the list it is in ("listen"), or NULL */
	const char *type;       /* "integer", "size", "duration", "string"... */
	char        def[256];   /* the default as written in the file; "" */
	char        range[64];  /* "1 to 10000", "1K to 2G", "1s to 1w"; "" */
	char        words[256]; /* the strings allowed, "\"a\" or \"b\""; "" */
	bool        required;
	const char *doc;        /* what it does: a paragraph */
};

void config_describe(void (*fn)(const struct config_doc *d, void *arg),
    void *arg);
/* mxgate.conf(5), in roff: the table's settings between a hand-written
 * head and tail (config_manual.h).  doc/mxgate.conf.5 is its output. */
void config_write_manual(FILE *fp);

/*
 * The effective configuration c in the file's syntax, every setting of
 * the table with its value (defaults included; "# NAME: not set" for
 * one that has none), groups as { ... }, the lists of groups (listen,
 * routes, upstreams, ...) as written; only_changed: only what differs
 * from the defaults.  mxgated reads it back as the same configuration
 * (mxgated -n -v, mxgatectl config).  0, or -1 (said on stderr) when
 * the file cannot be read again.
 */
int config_write_effective(FILE *fp, const struct mxconf *c,
    bool only_changed);

/* Path of the queue database inside queue_dir. */
#define QUEUE_DB_NAME "queue.db"

#endif
