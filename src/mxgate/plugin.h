/*
 * mxgate/plugin.h — the C plugin interface of mxgate.
 *
 * A plugin is a shared object that mxgated loads with dlopen(3) when it
 * reads its configuration:
 *
 *     plugins = ( { path = "/usr/lib/mxgate/example.so"; args = "..."; } );
 *
 * It exports one function, mxgate_plugin_register(), returning a struct
 * mxgate_plugin that names its hooks.  Build it with
 *
 *     cc -shared -fPIC -o example.so example.c
 *
 * and `#include <mxgate/plugin.h>` (installed with mxgate).
 *
 * Lifetime and processes.  mxgated loads every plugin in the master
 * process, before it forks the SMTP workers; each worker calls init(),
 * once, with the configured args, after it has dropped its privileges:
 * as the workers' unprivileged user, chrooted into an empty directory,
 * under a seccomp filter that allows network I/O but no fork, no exec
 * and no file but read-only ones inside that directory (README,
 * "Processes and what the kernel enforces").  A plugin therefore reads
 * no file after the start: give it what it needs in args.  An init()
 * that fails stops that worker, which the master starts again after a
 * delay.  The hooks run in the workers, each worker with its own copy of
 * any plugin state (a counter incremented in one worker is not seen by
 * another).
 * `mxgated -n` loads the plugin and checks its ABI but calls nothing.
 * fini() may be called when a process stops; do not rely on it.
 *
 * Sessions.  session_new() is called when an SMTP session starts, and its
 * result is the ctx handed to every hook of that session (a plugin
 * without per-session state may leave session_new NULL: ctx is then
 * NULL); session_end() is called when it ends.
 *
 * Hooks.  Each hook is optional (NULL: continue).  It receives the
 * session's view (struct mxgate_session, valid during the call only) and
 * a result set to MXGATE_CONTINUE, and sets one of:
 *
 *   MXGATE_CONTINUE  no opinion: the next check runs.
 *   MXGATE_ACCEPT    accept this command now: the checks after this one
 *                    (later plugins, the policy service) are skipped.
 *                    Never a route decision: at RCPT the recipient must
 *                    still match a route and satisfy its sender_auth; a
 *                    plugin cannot make mxgate an open relay.
 *   MXGATE_REJECT    refuse with code (5xx; 550 when 0 or invalid) and
 *                    text; a text without an RFC 3463 enhanced status code
 *                    gets "5.7.1" in front; empty text: "5.7.1 Rejected".
 *   MXGATE_TEMPFAIL  the same with a 4xx code (451 when 0 or invalid;
 *                    "4.7.1"); 421 closes the session after the reply.
 *
 * Order of the checks for each SMTP command: mxgate's built-in checks,
 * then the plugins in configuration order, then the policy service.  A
 * reject or tempfail from any of them is the reply; at RCPT the plugins
 * run after the recipient matched a route and passed its sender_auth.
 * The hooks:
 *
 *   on_connect   a client connected (client_ip, client_port known)
 *   on_helo      HELO or EHLO (helo, esmtp)
 *   on_mail      MAIL FROM (sender; "" for the null sender; queue_id)
 *   on_rcpt      RCPT TO (rcpt; nrcpts counts those accepted so far)
 *   on_data      the DATA command, before the content
 *   on_message   the end of the content, before the message is queued:
 *                headers (the header section as the client sent it, up
 *                to 64 KiB, forged Authentication-Results removed) and
 *                size (content bytes); the reply to a reject here is the
 *                reply to the message, which is then not queued
 *
 * Hooks must not block: they run inside the worker's event loop, which
 * serves many sessions.  They must not keep pointers into the struct
 * mxgate_session after returning (copy what you need into ctx).
 *
 * Compatibility.  abi must be MXGATE_PLUGIN_ABI; mxgated refuses a plugin
 * built for another ABI.  struct mxgate_session only ever grows at its
 * end, and its size field tells a plugin which fields exist.
 */
#ifndef MXGATE_PLUGIN_H
#define MXGATE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>

#define MXGATE_PLUGIN_ABI 1

/* The name of the function a plugin exports. */
#define MXGATE_PLUGIN_SYMBOL "mxgate_plugin_register"

enum mxgate_verdict {
	MXGATE_CONTINUE = 0,
	MXGATE_ACCEPT,
	MXGATE_REJECT,
	MXGATE_TEMPFAIL,
};

struct mxgate_result {
	enum mxgate_verdict verdict;
	int   code;             /* REJECT: 5xx, TEMPFAIL: 4xx; 0: default */
	char  text[256];        /* "5.7.1 go away"; "" for a default */
};

/* What a hook knows of the session.  Strings are never NULL except
 * auth_user and the fields a stage does not have yet (then ""). */
struct mxgate_session {
	size_t      size_of;        /* sizeof(struct mxgate_session) of the
	                               daemon: fields past it do not exist */
	unsigned long long id;      /* the session, as in mxgate's logs */
	const char *client_ip;      /* "192.0.2.1", "2001:db8::1" */
	unsigned    client_port;
	const char *server_ip;
	unsigned    server_port;
	const char *helo;           /* "" before HELO/EHLO */
	bool        esmtp;          /* EHLO rather than HELO */
	bool        tls;            /* the session is encrypted */
	const char *auth_user;      /* NULL when not authenticated */
	const char *queue_id;       /* from MAIL on */
	const char *sender;         /* from MAIL on; "" for <> */
	const char *rcpt;           /* on_rcpt: the recipient */
	const char *const *rcpts;   /* recipients accepted so far */
	unsigned    nrcpts;
	const char *headers;        /* on_message: the header section */
	size_t      headers_len;
	bool        headers_truncated;
	unsigned long long message_size;   /* on_message */
};

typedef void (*mxgate_hook_fn)(void *state, void *ctx,
    const struct mxgate_session *s, struct mxgate_result *r);

struct mxgate_plugin {
	unsigned    abi;            /* MXGATE_PLUGIN_ABI */
	const char *name;           /* for logs */

	/* Once in each worker, confined: args is the configured string
	 * ("" if none).
	 * Return 0 and set *state, or -1 with a message in err. */
	int   (*init)(const char *args, void **state, char *err, size_t errlen);
	void  (*fini)(void *state);

	void *(*session_new)(void *state, const struct mxgate_session *s);
	void  (*session_end)(void *state, void *ctx);

	mxgate_hook_fn on_connect;
	mxgate_hook_fn on_helo;
	mxgate_hook_fn on_mail;
	mxgate_hook_fn on_rcpt;
	mxgate_hook_fn on_data;
	mxgate_hook_fn on_message;
};

/* What the plugin exports (with C linkage). */
typedef const struct mxgate_plugin *(*mxgate_plugin_register_fn)(void);
const struct mxgate_plugin *mxgate_plugin_register(void);

#endif
