/*
 * plugin — the daemon's side of the C plugin interface (mxgate/plugin.h,
 * where the contract with plugin authors is documented): loading the
 * configured plugins, and running their hooks for a session.
 *
 * plugins_load() runs in mxgated's master after the configuration is
 * read and before anything forks, so the workers inherit the loaded code
 * (the files may be readable by root alone); plugins_init() runs in each
 * worker once it is confined (sandbox.h), so a plugin's init() never
 * runs as root.  The loaded plugins are process-wide state
 * of this module (one configuration per process; reload is not
 * supported).
 *
 * For each SMTP stage, plugins_run() calls the stage's hook of every
 * plugin in configuration order until one decides (accept, reject,
 * tempfail); its answer uses the checks' common verdict (policy.h).
 */
#ifndef MXGATE_PLUGIN_INTERNAL_H
#define MXGATE_PLUGIN_INTERNAL_H

#include <stdbool.h>

#include "common/config.h"
#include "smtp/policy.h"
#include "mxgate/plugin.h"

enum plugin_hook {
	PLUGIN_CONNECT, PLUGIN_HELO, PLUGIN_MAIL, PLUGIN_RCPT, PLUGIN_DATA,
	PLUGIN_MESSAGE,
};

/*
 * dlopen every conf->plugins[i], check its register function and ABI,
 * and, when init is true, call its init() with its args.  0, or -1 after
 * reporting each problem through errfn as "FILE:LINE: problem".  Calling
 * it again first unloads what was loaded.
 */
int plugins_load(const struct mxconf *conf, bool init,
    void (*errfn)(const char *msg));
/* init() every plugin loaded and not initialized yet, in order; 0, or -1
 * after reporting the first failure through errfn (NULL: the log). */
int plugins_init(void (*errfn)(const char *msg));
/* fini() and dlclose() everything loaded. */
void plugins_unload(void);
size_t plugins_count(void);

/* Per-session contexts of every plugin; NULL when no plugin is loaded. */
struct plugin_session;
struct plugin_session *plugins_session_new(const struct mxgate_session *s);
void plugins_session_end(struct plugin_session *ps);

/*
 * Run hook for the session; a->verdict is POLICY_CONTINUE when no plugin
 * decided, else the first decision, code and text checked (see
 * mxgate/plugin.h) and a->why naming the plugin.
 */
void plugins_run(struct plugin_session *ps, enum plugin_hook hook,
    const struct mxgate_session *s, struct policy_answer *a);

#endif
