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

	/* acceptance (until routes exist): domains we are MX for */
	char   **accept_domains;
	size_t   naccept_domains;
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
