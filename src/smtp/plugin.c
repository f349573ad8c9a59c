/*
 * plugin — see plugin.h and mxgate/plugin.h.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "smtp/plugin.h"
#include "common/util.h"

struct loaded {
	void                       *handle;
	const struct mxgate_plugin *api;
	void                       *state;
	bool                        initialized;
	char                       *name;      /* for logs */
	const struct plugin_conf   *conf;
};

static struct loaded *loaded;
static size_t nloaded;

struct plugin_session {
	size_t n;
	void  *ctx[];       /* one per loaded plugin */
};

static void
report(void (*errfn)(const char *), const struct plugin_conf *pc,
    const char *problem)
{
	char msg[1200];

	snprintf(msg, sizeof(msg), "%s: plugin %s: %s",
	    pc->where[0] ? pc->where : "plugins", pc->path, problem);
	if (errfn != NULL)
		errfn(msg);
	else
		log_error("%s", msg);
}

static int
init_one(struct loaded *l, void (*errfn)(const char *))
{
	const struct plugin_conf *pc = l->conf;
	char err[512] = "", problem[800];

	if (l->initialized || l->api->init == NULL)
		return 0;
	if (l->api->init(pc->args ? pc->args : "", &l->state, err,
	    sizeof(err)) != 0) {
		err[sizeof(err) - 1] = '\0';
		snprintf(problem, sizeof(problem), "init failed: %s",
		    err[0] ? err : "(no reason given)");
		report(errfn, pc, problem);
		return -1;
	}
	l->initialized = true;
	return 0;
}

static int
load_one(const struct plugin_conf *pc, bool init,
    void (*errfn)(const char *), struct loaded *l)
{
	mxgate_plugin_register_fn reg;
	char problem[800];
	void *sym;

	/* RTLD_LOCAL: plugins cannot see each other's symbols. */
	l->handle = dlopen(pc->path, RTLD_NOW | RTLD_LOCAL);
	if (l->handle == NULL) {
		snprintf(problem, sizeof(problem), "cannot load: %s", dlerror());
		report(errfn, pc, problem);
		return -1;
	}
	sym = dlsym(l->handle, MXGATE_PLUGIN_SYMBOL);
	if (sym == NULL) {
		report(errfn, pc, "not an mxgate plugin: no "
		    MXGATE_PLUGIN_SYMBOL "() in it");
		return -1;
	}
	/* POSIX guarantees function pointers survive the void * of dlsym. */
	memcpy(&reg, &sym, sizeof(reg));
	l->api = reg();
	if (l->api == NULL || l->api->abi != MXGATE_PLUGIN_ABI) {
		snprintf(problem, sizeof(problem), "built for plugin ABI %u, "
		    "this mxgated has ABI %u", l->api ? l->api->abi : 0,
		    MXGATE_PLUGIN_ABI);
		report(errfn, pc, problem);
		return -1;
	}
	l->name = xstrdup(l->api->name ? l->api->name : pc->path);
	l->conf = pc;
	if (!init)
		return 0;
	return init_one(l, errfn);
}

int
plugins_load(const struct mxconf *conf, bool init, void (*errfn)(const char *))
{
	int r = 0;

	plugins_unload();
	if (conf->nplugins == 0)
		return 0;
	loaded = xcalloc(conf->nplugins, sizeof(*loaded));
	for (size_t i = 0; i < conf->nplugins; i++) {
		if (load_one(&conf->plugins[i], init, errfn, &loaded[nloaded]) < 0) {
			r = -1;
			if (loaded[nloaded].handle != NULL)
				dlclose(loaded[nloaded].handle);
			free(loaded[nloaded].name);
			memset(&loaded[nloaded], 0, sizeof(loaded[nloaded]));
			continue;
		}
		nloaded++;
	}
	if (r < 0)
		plugins_unload();
	return r;
}

int
plugins_init(void (*errfn)(const char *))
{
	for (size_t i = 0; i < nloaded; i++) {
		if (init_one(&loaded[i], errfn) < 0)
			return -1;
	}
	return 0;
}

void
plugins_unload(void)
{
	for (size_t i = 0; i < nloaded; i++) {
		if (loaded[i].initialized && loaded[i].api->fini != NULL)
			loaded[i].api->fini(loaded[i].state);
		dlclose(loaded[i].handle);
		free(loaded[i].name);
	}
	free(loaded);
	loaded = NULL;
	nloaded = 0;
}

size_t
plugins_count(void)
{
	return nloaded;
}

struct plugin_session *
plugins_session_new(const struct mxgate_session *s)
{
	struct plugin_session *ps;

	if (nloaded == 0)
		return NULL;
	ps = xcalloc(1, sizeof(*ps) + nloaded * sizeof(void *));
	ps->n = nloaded;
	for (size_t i = 0; i < nloaded; i++) {
		if (loaded[i].api->session_new != NULL)
			ps->ctx[i] = loaded[i].api->session_new(loaded[i].state, s);
	}
	return ps;
}

void
plugins_session_end(struct plugin_session *ps)
{
	if (ps == NULL)
		return;
	for (size_t i = 0; i < ps->n && i < nloaded; i++) {
		if (loaded[i].api->session_end != NULL)
			loaded[i].api->session_end(loaded[i].state, ps->ctx[i]);
	}
	free(ps);
}

static mxgate_hook_fn
hook_of(const struct mxgate_plugin *api, enum plugin_hook hook)
{
	switch (hook) {
	case PLUGIN_CONNECT: return api->on_connect;
	case PLUGIN_HELO:    return api->on_helo;
	case PLUGIN_MAIL:    return api->on_mail;
	case PLUGIN_RCPT:    return api->on_rcpt;
	case PLUGIN_DATA:    return api->on_data;
	case PLUGIN_MESSAGE: return api->on_message;
	}
	return NULL;
}

/* A plugin's result as a checked verdict. */
static void
take_result(const struct loaded *l, struct mxgate_result *r,
    struct policy_answer *a)
{
	r->text[sizeof(r->text) - 1] = '\0';
	switch (r->verdict) {
	case MXGATE_ACCEPT:
		a->verdict = POLICY_ACCEPT;
		break;
	case MXGATE_REJECT:
		policy_answer_set(a, r->code >= 500 && r->code <= 599 ?
		    r->code : 550, r->text, "Rejected");
		break;
	case MXGATE_TEMPFAIL:
		policy_answer_set(a, r->code >= 400 && r->code <= 499 ?
		    r->code : 451, r->text, "Try again later");
		break;
	default:
		a->verdict = POLICY_CONTINUE;
		return;
	}
	snprintf(a->why, sizeof(a->why), "plugin=%s", l->name);
}

void
plugins_run(struct plugin_session *ps, enum plugin_hook hook,
    const struct mxgate_session *s, struct policy_answer *a)
{
	memset(a, 0, sizeof(*a));
	a->verdict = POLICY_CONTINUE;
	for (size_t i = 0; ps != NULL && i < ps->n && i < nloaded; i++) {
		mxgate_hook_fn fn = hook_of(loaded[i].api, hook);
		struct mxgate_result r;

		if (fn == NULL)
			continue;
		memset(&r, 0, sizeof(r));
		r.verdict = MXGATE_CONTINUE;
		fn(loaded[i].state, ps->ctx[i], s, &r);
		take_result(&loaded[i], &r, a);
		if (a->verdict != POLICY_CONTINUE)
			return;
	}
}
