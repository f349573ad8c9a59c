/*
 * hooks — see hooks.h.
 *
 * Each stage is a short list of steps run in order by pipeline(); a step
 * either goes on, decides (reject, tempfail, or accept, which only marks
 * the later optional steps to be skipped), or waits.  A step that waits
 * has started something asynchronous (an SPF job, a policy request) whose
 * callback runs the pipeline again from the same step, which then finds
 * its answer.  The done callback is the last thing pipeline() does, so
 * the session may start the next stage from inside it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/authres.h"
#include "smtp/checks.h"
#include "smtp/dnsbl.h"
#include "smtp/hooks.h"
#include "smtp/milter_client.h"
#include "common/log.h"
#include "common/metrics.h"
#include "smtp/plugin.h"
#include "smtp/spf.h"

#define SPF_CACHE  8
#define MAX_MASKS  32
#define DNSBL_MAX_SITES   16        /* asked per client or sender */
#define DNSBL_CACHE       1024      /* scores a worker remembers */

/* ---- the worker's services ---- */

static struct {
	const struct mxconf  *conf;
	struct spf_pool      *spf;
	struct policy_client *policy;
	struct policy_client **policies;    /* conf->policy_services */
	bool                  milters;      /* the milter pool runs */
	struct ratelimit     *messages;
	/* DNS lists: the parsed sites, the lookups, recent scores */
	struct dnsbl_pool    *dnsbl;
	struct dnsbl_site    *bl_sites, *bl_sender_sites;
	size_t                nbl_sites, nbl_sender_sites;
	struct bl_cached     *bl_cache;
} svc;

/* A score remembered: by client address, or "@domain" for a sender. */
struct bl_cached {
	char     key[256];
	int      score;
	char     hits[160];
	uint64_t expires_ms;
};

static struct dnsbl_site *
bl_sites_parse(char **specs, size_t n)
{
	struct dnsbl_site *sites = xcalloc(n ? n : 1, sizeof(*sites));
	char why[160];

	for (size_t i = 0; i < n; i++) {
		/* Checked at load (dnsbl_site_check): cannot fail here. */
		if (dnsbl_site_parse(specs[i], &sites[i], why, sizeof(why)) < 0)
			fatalx("dnsbl: %s: %s", specs[i], why);
	}
	return sites;
}

static void
bl_init(const struct mxconf *conf)
{
	if (conf->ndnsbl_sites == 0 && conf->ndnsbl_sender_sites == 0)
		return;
	svc.nbl_sites = conf->ndnsbl_sites < DNSBL_MAX_SITES ?
	    conf->ndnsbl_sites : DNSBL_MAX_SITES;
	svc.nbl_sender_sites = conf->ndnsbl_sender_sites < DNSBL_MAX_SITES ?
	    conf->ndnsbl_sender_sites : DNSBL_MAX_SITES;
	svc.bl_sites = bl_sites_parse(conf->dnsbl_sites, svc.nbl_sites);
	svc.bl_sender_sites = bl_sites_parse(conf->dnsbl_sender_sites,
	    svc.nbl_sender_sites);
	svc.bl_cache = xcalloc(DNSBL_CACHE, sizeof(*svc.bl_cache));
	/* One thread per site of the longer list: a client's lookups run
	 * side by side. */
	svc.dnsbl = dnsbl_pool_new((unsigned)(svc.nbl_sites >
	    svc.nbl_sender_sites ? svc.nbl_sites : svc.nbl_sender_sites),
	    conf->dnsbl_timeout);
	if (svc.dnsbl == NULL)
		log_error("dnsbl: cannot start the lookup threads: %s; no "
		    "client is looked up", strerror(errno));
}

static void
bl_free(void)
{
	dnsbl_pool_free(svc.dnsbl);
	for (size_t i = 0; i < svc.nbl_sites; i++)
		dnsbl_site_free(&svc.bl_sites[i]);
	for (size_t i = 0; i < svc.nbl_sender_sites; i++)
		dnsbl_site_free(&svc.bl_sender_sites[i]);
	free(svc.bl_sites);
	free(svc.bl_sender_sites);
	free(svc.bl_cache);
}

static struct bl_cached *
bl_cache_slot(const char *key)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = key; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return &svc.bl_cache[h % DNSBL_CACHE];
}

int
hooks_worker_init(const struct mxconf *conf)
{
	int r = 0;

	svc.conf = conf;
	svc.spf = spf_pool_new(conf->spf_threads, conf->spf_timeout * 1000,
	    conf->hostname, NULL, NULL);
	if (svc.spf == NULL) {
		/* Checks then answer temperror: safe, and visible. */
		log_error("SPF: cannot start the lookup threads: %s",
		    strerror(errno));
		r = -1;
	}
	if (conf->policy_service != NULL) {
		svc.policy = policy_client_new(conf->policy_service,
		    conf->policy_timeout * 1000, conf->policy_default);
		if (svc.policy == NULL) {
			log_error("policy service %s: cannot set up the client: "
			    "%s", conf->policy_service, strerror(errno));
			r = -1;
		}
	}
	if (conf->npolicy_services > 0)
		svc.policies = xcalloc(conf->npolicy_services,
		    sizeof(*svc.policies));
	for (size_t i = 0; i < conf->npolicy_services; i++) {
		const struct policy_service_conf *p = &conf->policy_services[i];

		svc.policies[i] = policy_client_new(p->service,
		    p->timeout * 1000, p->default_action);
		if (svc.policies[i] == NULL) {
			log_error("policy service %s (%s): cannot set up the "
			    "client: %s", p->name, p->service, strerror(errno));
			r = -1;
		}
	}
	if (conf->nmilters > 0) {
		if (milter_pool_init(conf) < 0)
			r = -1;
		else
			svc.milters = true;
	}
	if (conf->rate_messages > 0)
		svc.messages = ratelimit_new(conf->rate_messages);
	bl_init(conf);
	return r;
}

void
hooks_worker_free(void)
{
	spf_pool_free(svc.spf);
	policy_client_free(svc.policy);
	for (size_t i = 0; svc.policies != NULL &&
	    i < svc.conf->npolicy_services; i++)
		policy_client_free(svc.policies[i]);
	free(svc.policies);
	if (svc.milters)
		milter_pool_free();
	ratelimit_free(svc.messages);
	bl_free();
	memset(&svc, 0, sizeof(svc));
}

size_t
hooks_worker_fds(int *fds, size_t max)
{
	size_t n = 0;

	if (svc.spf != NULL && n < max)
		fds[n++] = spf_pool_fd(svc.spf);
	if (svc.policy != NULL && n < max)
		fds[n++] = policy_client_fd(svc.policy);
	if (svc.dnsbl != NULL && n < max)
		fds[n++] = dnsbl_pool_fd(svc.dnsbl);
	if (svc.milters && n < max)
		fds[n++] = milter_pool_fd();
	for (size_t i = 0; svc.policies != NULL &&
	    i < svc.conf->npolicy_services && n < max; i++)
		if (svc.policies[i] != NULL)
			fds[n++] = policy_client_fd(svc.policies[i]);
	return n;
}

void
hooks_worker_dispatch(int fd)
{
	if (svc.spf != NULL && fd == spf_pool_fd(svc.spf))
		spf_pool_complete(svc.spf);
	else if (svc.policy != NULL && fd == policy_client_fd(svc.policy))
		policy_client_dispatch(svc.policy);
	else if (svc.dnsbl != NULL && fd == dnsbl_pool_fd(svc.dnsbl))
		dnsbl_pool_complete(svc.dnsbl);
	else if (svc.milters && fd == milter_pool_fd())
		milter_pool_dispatch();
	else
		for (size_t i = 0; svc.policies != NULL &&
		    i < svc.conf->npolicy_services; i++)
			if (svc.policies[i] != NULL &&
			    fd == policy_client_fd(svc.policies[i]))
				policy_client_dispatch(svc.policies[i]);
}

void
hooks_worker_tick(uint64_t now_ms)
{
	if (svc.spf != NULL)
		spf_pool_expire(svc.spf, now_ms);
	if (svc.policy != NULL)
		policy_client_tick(svc.policy, now_ms);
	for (size_t i = 0; svc.policies != NULL &&
	    i < svc.conf->npolicy_services; i++)
		if (svc.policies[i] != NULL)
			policy_client_tick(svc.policies[i], now_ms);
	if (svc.milters)
		milter_pool_tick(now_ms);
	if (svc.messages != NULL)
		ratelimit_tick(svc.messages, now_ms);
}

/* ---- a session ---- */

enum step {
	ST_BUILTIN,       /* reject_networks, helo_checks, rate, SPF start */
	ST_DNSBL,         /* dnsbl.sites at connect, sender_sites at MAIL */
	ST_SPF_MAIL,      /* spf.mail_from_policy */
	ST_SENDER_AUTH,   /* the route's sender_auth */
	ST_PLUGINS,
	ST_POLICY,
	ST_MILTER,        /* milter_client.h */
	ST_SPF_READY,     /* the result, for Authentication-Results */
	ST_END,
};

static const enum step connect_steps[] = { ST_BUILTIN, ST_DNSBL,
    ST_PLUGINS, ST_POLICY, ST_MILTER, ST_END };
static const enum step mail_steps[] = { ST_BUILTIN, ST_DNSBL, ST_SPF_MAIL,
    ST_PLUGINS, ST_POLICY, ST_MILTER, ST_END };
static const enum step rcpt_steps[] = { ST_SENDER_AUTH, ST_PLUGINS,
    ST_POLICY, ST_MILTER, ST_END };
static const enum step data_steps[] = { ST_PLUGINS, ST_POLICY, ST_MILTER,
    ST_SPF_READY, ST_END };
static const enum step eom_steps[] = { ST_PLUGINS, ST_POLICY, ST_MILTER,
    ST_END };

static const char *const stage_names[] = {
	[STAGE_CONNECT] = "connect", [STAGE_HELO] = "helo",
	[STAGE_MAIL] = "mail", [STAGE_RCPT] = "rcpt", [STAGE_DATA] = "data",
	[STAGE_END_OF_MESSAGE] = "end_of_message",
};

struct spf_entry {
	struct hooks_session *h;
	bool        used;
	bool        done;
	uint64_t    job;
	uint64_t    stamp;          /* for replacing the least recent */
	char        helo[256];
	char        sender[320];
	struct spf_answer answer;
};

struct hooks_session {
	const struct mxconf *conf;
	hooks_done_fn done;
	void       *arg;
	uint64_t    conn_id;
	char        ip[64];
	unsigned    port;
	char        server_ip[64];
	unsigned    server_port;
	bool        trusted;
	struct plugin_session *plugins;

	/* allocated at the first check: trusted and idle sessions (most
	 * of thousands of connections) never need its 10 KB */
	struct spf_entry *spf;
	struct spf_entry *cur;      /* the transaction's check */
	uint64_t    stamp;

	/* DNS lists: the stage's check, allocated when one starts */
	struct bl_check *bl;

	/* The stage being checked. */
	bool        active;
	bool        waiting;
	enum smtp_stage stage;
	const enum step *steps;
	size_t      step;
	bool        accepted;       /* skip the optional steps left */
	struct hooks_view view;
	unsigned    masks[MAX_MASKS];   /* rcpt: sender_auth per route */
	size_t      nmasks;
	uint64_t    policy_id;
	struct policy_client *policy_client;  /* policy_id's */
	/* the service's answer, between its arrival and its step (NULL:
	 * none yet): answer_keep() */
	struct policy_answer *policy_answer;
	/* rcpt: the route's named policy service (NULL: the global one)
	 * and the milters of its routes */
	struct policy_client *route_policy;
	size_t      route_milters[MAX_MASKS];
	size_t      nroute_milters;
	const char *rcpt_action;
	/* milters (NULL: none configured) */
	struct milter_session *milters;
	bool        milter_running;
	/* as policy_answer: only between the milters' answer and its step */
	struct policy_answer *milter_answer;
	/* PREPEND answers: of the session (CONNECT, HELO), and of the
	 * transaction (MAIL, RCPT, DATA); empty until a service prepends. */
	struct buf  prepend_session;
	struct buf  prepend_txn;
	/* HOLD and DISCARD answers, "policy service NAME: text": of the
	 * session ([0]: CONNECT, HELO) and of the transaction ([1]) */
	char       *policy_hold[2];
	char       *policy_discard[2];
};

/* Bounds what a policy service can make a session hold. */
#define PREPEND_MAX (16 * 1024)

static void pipeline(struct hooks_session *h, bool later);

static const char *
str(const char *s)
{
	return s != NULL ? s : "";
}

/* ---- SPF ---- */

static void
spf_done(void *ctx, const struct spf_answer *a)
{
	struct spf_entry *e = ctx;
	struct hooks_session *h = e->h;

	static const enum metrics_counter by_result[SPF_RES_COUNT] = {
		[SPF_RES_NONE] = MC_SPF_NONE, [SPF_RES_NEUTRAL] = MC_SPF_NEUTRAL,
		[SPF_RES_PASS] = MC_SPF_PASS, [SPF_RES_FAIL] = MC_SPF_FAIL,
		[SPF_RES_SOFTFAIL] = MC_SPF_SOFTFAIL,
		[SPF_RES_TEMPERROR] = MC_SPF_TEMPERROR,
		[SPF_RES_PERMERROR] = MC_SPF_PERMERROR,
	};

	e->done = true;
	e->job = 0;
	e->answer = *a;
	if ((unsigned)a->result < SPF_RES_COUNT)
		metrics_inc(by_result[a->result]);
	log_info("session=%016llx spf=%s identity=%s address=<%s> client=%s "
	    "helo=%s (%s)", (unsigned long long)h->conn_id,
	    spf_result_name(a->result), a->identity, a->address, h->ip,
	    e->helo, a->text);
	if (h->active && h->waiting)
		pipeline(h, true);
}

static void
spf_unavailable(struct spf_entry *e)
{
	memset(&e->answer, 0, sizeof(e->answer));
	e->answer.result = SPF_RES_TEMPERROR;
	e->answer.identity = e->sender[0] != '\0' ? "mailfrom" : "helo";
	snprintf(e->answer.address, sizeof(e->answer.address), "%s",
	    e->sender[0] != '\0' ? e->sender : "postmaster");
	snprintf(e->answer.text, sizeof(e->answer.text), "SPF checks are "
	    "unavailable");
	e->done = true;
}

/* The check of (helo, sender): cached, or started now. */
static struct spf_entry *
spf_start(struct hooks_session *h, const char *helo, const char *sender)
{
	struct spf_entry *e, *victim = NULL;
	struct spf_query q;

	if (h->spf == NULL)
		h->spf = xcalloc(SPF_CACHE, sizeof(*h->spf));
	for (size_t i = 0; i < SPF_CACHE; i++) {
		e = &h->spf[i];
		if (e->used && strcmp(e->helo, helo) == 0 &&
		    strcmp(e->sender, sender) == 0) {
			e->stamp = ++h->stamp;
			return e;
		}
		if (victim == NULL || !e->used ||
		    (victim->used && e->stamp < victim->stamp))
			victim = e;
	}
	e = victim;
	if (e->used && !e->done && svc.spf != NULL)
		spf_pool_cancel(svc.spf, e->job);
	memset(e, 0, sizeof(*e));
	e->h = h;
	e->used = true;
	e->stamp = ++h->stamp;
	snprintf(e->helo, sizeof(e->helo), "%s", helo);
	snprintf(e->sender, sizeof(e->sender), "%s", sender);
	if (svc.spf == NULL) {
		spf_unavailable(e);
		return e;
	}
	memset(&q, 0, sizeof(q));
	snprintf(q.ip, sizeof(q.ip), "%s", h->ip);
	snprintf(q.helo, sizeof(q.helo), "%s", helo);
	snprintf(q.sender, sizeof(q.sender), "%s", sender);
	e->job = spf_pool_submit(svc.spf, &q, spf_done, e);
	return e;
}

static bool
spf_passes(const struct hooks_session *h, const struct spf_entry *e)
{
	return (h->conf->spf_pass_mask & (1u << e->answer.result)) != 0;
}

/* ---- the steps ---- */

static void
reject(struct policy_answer *a, int code, const char *why, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

static void
reject(struct policy_answer *a, int code, const char *why, const char *fmt,
    ...)
{
	char text[480];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	policy_answer_set(a, code, text, "Rejected");
	snprintf(a->why, sizeof(a->why), "%s", why);
}

enum step_outcome { GO_ON, WAIT };

static enum step_outcome
step_builtin(struct hooks_session *h, struct policy_answer *a)
{
	const struct hooks_view *v = &h->view;

	switch (h->stage) {
	case STAGE_CONNECT:
		if (netlist_contains(h->conf->reject_nets, h->ip))
			reject(a, 554, "reject_networks", "5.7.1 <%s>: Client "
			    "host rejected: Access denied", h->ip);
		break;
	case STAGE_HELO:
		if (h->conf->helo_checks && !helo_valid(str(v->helo)))
			reject(a, 501, "helo_checks", "5.5.2 <%s>: Helo command "
			    "rejected: not a host name or address literal",
			    str(v->helo));
		break;
	case STAGE_MAIL:
		if (!h->trusted && svc.messages != NULL) {
			enum rate_verdict r = ratelimit_hit(svc.messages, h->ip,
			    monotonic_ms());
			if (r == RATE_OVER) {
				reject(a, 450, "rate_limits.messages_per_minute",
				    "4.7.1 Too many messages from %s, slow down",
				    h->ip);
				break;
			}
			if (r == RATE_UNTRACKED)
				log_warn("session=%016llx client=%s message rate "
				    "not counted: too many clients",
				    (unsigned long long)h->conn_id, h->ip);
		}
		/* Started now, it is often ready by RCPT or DATA. */
		if (!h->trusted)
			h->cur = spf_start(h, str(v->helo), str(v->sender));
		break;
	default:
		break;
	}
	return GO_ON;
}

/* ---- DNS lists ---- */

/* One stage's lookups: the client's at CONNECT, the sender's at MAIL. */
struct bl_lookup {
	struct hooks_session *h;
	const struct dnsbl_site *site;
	uint64_t    id;             /* 0 once answered */
};

struct bl_check {
	enum smtp_stage stage;
	bool        cached;         /* the score is in the cache */
	unsigned    pending;
	int         score;
	char        key[256];
	char        hits[160];      /* "zen.example=127.0.0.2, ..." */
	struct bl_lookup lookups[DNSBL_MAX_SITES];
};

static void
bl_cancel(struct hooks_session *h)
{
	if (h->bl == NULL)
		return;
	for (size_t i = 0; i < DNSBL_MAX_SITES; i++)
		if (h->bl->lookups[i].id != 0 && svc.dnsbl != NULL)
			dnsbl_cancel(svc.dnsbl, h->bl->lookups[i].id);
	free(h->bl);
	h->bl = NULL;
}

static void
bl_hit(struct bl_check *c, const char *domain, const char *answer)
{
	size_t n = strlen(c->hits);

	snprintf(c->hits + n, sizeof(c->hits) - n, "%s%s=%s", n ? ", " : "",
	    domain, answer);
}

static void
bl_done(void *ctx, enum dnsbl_result r, const char *answer)
{
	struct bl_lookup *l = ctx;
	struct hooks_session *h = l->h;
	struct bl_check *c = h->bl;

	l->id = 0;
	if (r == DNSBL_LISTED) {
		c->score += l->site->weight;
		bl_hit(c, l->site->domain, answer);
	}
	if (--c->pending == 0 && h->active && h->waiting)
		pipeline(h, true);
}

/* Start this stage's lookups, unless the cache knows the score. */
static void
bl_start(struct hooks_session *h, const struct dnsbl_site *sites,
    size_t nsites, const char *key, const char *what)
{
	struct bl_check *c;
	struct bl_cached *e = bl_cache_slot(key);
	char name[300];

	bl_cancel(h);
	c = h->bl = xcalloc(1, sizeof(*c));
	c->stage = h->stage;
	strlcpy_mx(c->key, key, sizeof(c->key));
	if (svc.conf->dnsbl_cache_time > 0 && strcmp(e->key, key) == 0 &&
	    monotonic_ms() < e->expires_ms) {
		c->cached = true;
		c->score = e->score;
		strlcpy_mx(c->hits, e->hits, sizeof(c->hits));
		return;
	}
	for (size_t i = 0; i < nsites; i++) {
		struct bl_lookup *l = &c->lookups[i];
		int r = h->stage == STAGE_CONNECT ?
		    dnsbl_client_name(what, sites[i].domain, name, sizeof(name)) :
		    dnsbl_domain_name(what, sites[i].domain, name, sizeof(name));

		if (r < 0)
			continue;
		l->h = h;
		l->site = &sites[i];
		c->pending++;
		l->id = dnsbl_lookup(svc.dnsbl, name, &sites[i], bl_done, l);
	}
}

/*
 * dnsbl.sites for the client at CONNECT, dnsbl.sender_sites for the
 * sender's domain at MAIL: the weights of the lists that list it add
 * up, and a score at dnsbl.threshold refuses it.
 */
static enum step_outcome
step_dnsbl(struct hooks_session *h, struct policy_answer *a)
{
	const char *sender = str(h->view.sender), *domain;
	struct bl_check *c = h->bl;
	struct bl_cached *e;
	bool connect = h->stage == STAGE_CONNECT;
	char key[256];

	if (h->trusted || svc.dnsbl == NULL ||
	    (connect ? svc.nbl_sites : svc.nbl_sender_sites) == 0)
		return GO_ON;
	if (connect)
		strlcpy_mx(key, h->ip, sizeof(key));
	else {
		domain = strrchr(sender, '@');
		if (domain == NULL || domain[1] == '\0')
			return GO_ON;       /* the null sender */
		snprintf(key, sizeof(key), "@%s", domain + 1);
	}
	/* Once per stage and key: the pipeline comes back here when the
	 * answers are in, and a second MAIL may name another domain. */
	if (c == NULL || c->stage != h->stage || strcmp(c->key, key) != 0) {
		if (connect)
			bl_start(h, svc.bl_sites, svc.nbl_sites, key, h->ip);
		else
			bl_start(h, svc.bl_sender_sites, svc.nbl_sender_sites,
			    key, key + 1);
		c = h->bl;
	}
	if (c->pending > 0)
		return WAIT;
	e = bl_cache_slot(c->key);
	if (svc.conf->dnsbl_cache_time > 0 && !c->cached) {
		c->cached = true;
		strlcpy_mx(e->key, c->key, sizeof(e->key));
		e->score = c->score;
		strlcpy_mx(e->hits, c->hits, sizeof(e->hits));
		e->expires_ms = monotonic_ms() +
		    (uint64_t)svc.conf->dnsbl_cache_time * 1000;
	}
	if (c->hits[0] != '\0')
		log_info("session=%016llx client=%s dnsbl %s score=%d "
		    "threshold=%d listed by %s", (unsigned long long)h->conn_id,
		    h->ip, connect ? "client" : c->key + 1, c->score,
		    svc.conf->dnsbl_threshold, c->hits);
	if (c->score < svc.conf->dnsbl_threshold)
		return GO_ON;
	if (connect)
		reject(a, 554, "dnsbl.sites", "5.7.1 Service unavailable; "
		    "client [%s] blocked using %s", h->ip, c->hits);
	else
		reject(a, 554, "dnsbl.sender_sites", "5.7.1 <%s>: Sender "
		    "address rejected: %s blocked using %s", sender, c->key + 1,
		    c->hits);
	return GO_ON;
}

static enum step_outcome
step_spf_mail(struct hooks_session *h, struct policy_answer *a)
{
	if (h->trusted || h->cur == NULL ||
	    strcmp(h->conf->spf_mail_from_policy, "reject_fail") != 0)
		return GO_ON;
	if (!h->cur->done)
		return WAIT;
	if (h->cur->answer.result == SPF_RES_FAIL)
		reject(a, 550, "spf.mail_from_policy", "5.7.23 <%s>: SPF check "
		    "failed for %s: %s", h->cur->answer.address, h->ip,
		    h->cur->answer.text);
	return GO_ON;
}

/* Which method a failed requirement was missing, for the reply. */
static void
sender_auth_reply(struct hooks_session *h, unsigned mask,
    struct policy_answer *a)
{
	const char *rcpt = str(h->view.rcpt);
	const struct spf_answer *s = h->cur != NULL ? &h->cur->answer : NULL;

	if ((mask & ROUTE_SENDER_AUTH_SPF) && s != NULL) {
		if (s->result == SPF_RES_TEMPERROR)
			reject(a, 451, "sender_auth spf=temperror", "4.7.24 <%s>: "
			    "SPF check of <%s> failed temporarily: %s", rcpt,
			    s->address, s->text);
		else if (s->result == SPF_RES_PERMERROR)
			reject(a, 550, "sender_auth spf=permerror", "5.7.24 <%s>: "
			    "SPF record of <%s> is invalid: %s", rcpt,
			    s->address, s->text);
		else
			reject(a, 550, "sender_auth spf", "5.7.23 <%s>: SPF %s: "
			    "<%s> is not authorized to send from %s", rcpt,
			    spf_result_name(s->result), s->address, h->ip);
		snprintf(a->why, sizeof(a->why), "sender_auth spf=%s",
		    spf_result_name(s->result));
	} else if ((mask & ROUTE_SENDER_AUTH_AUTH) &&
	    (mask & ROUTE_SENDER_AUTH_TLS)) {
		reject(a, 530, "sender_auth", "5.7.0 <%s>: Authentication or "
		    "STARTTLS required", rcpt);
	} else if (mask & ROUTE_SENDER_AUTH_AUTH) {
		reject(a, 530, "sender_auth", "5.7.0 <%s>: Authentication "
		    "required", rcpt);
	} else {
		reject(a, 530, "sender_auth", "5.7.0 <%s>: Must issue a "
		    "STARTTLS command first", rcpt);
	}
}

/* Any listed method that passes admits the recipient, for each route. */
static enum step_outcome
step_sender_auth(struct hooks_session *h, struct policy_answer *a)
{
	const struct hooks_view *v = &h->view;

	for (size_t i = 0; i < h->nmasks; i++) {
		unsigned m = h->masks[i];

		if (m == 0 || ((m & ROUTE_SENDER_AUTH_AUTH) &&
		    v->auth_user != NULL) || ((m & ROUTE_SENDER_AUTH_TLS) &&
		    v->tls))
			continue;
		if (m & ROUTE_SENDER_AUTH_SPF) {
			if (h->trusted)
				continue;
			if (h->cur == NULL)
				h->cur = spf_start(h, str(v->helo), str(v->sender));
			if (!h->cur->done)
				return WAIT;
			if (spf_passes(h, h->cur))
				continue;
		}
		sender_auth_reply(h, m, a);
		return GO_ON;
	}
	return GO_ON;
}

static enum plugin_hook
stage_hook(enum smtp_stage stage)
{
	switch (stage) {
	case STAGE_CONNECT: return PLUGIN_CONNECT;
	case STAGE_HELO:    return PLUGIN_HELO;
	case STAGE_MAIL:    return PLUGIN_MAIL;
	case STAGE_RCPT:    return PLUGIN_RCPT;
	case STAGE_DATA:    return PLUGIN_DATA;
	default:            return PLUGIN_MESSAGE;
	}
}

static enum step_outcome
step_plugins(struct hooks_session *h, struct policy_answer *a)
{
	const struct hooks_view *v = &h->view;
	struct mxgate_session ms;

	if (h->plugins == NULL || h->accepted)
		return GO_ON;
	memset(&ms, 0, sizeof(ms));
	ms.size_of = sizeof(ms);
	ms.id = h->conn_id;
	ms.client_ip = h->ip;
	ms.client_port = h->port;
	ms.server_ip = h->server_ip;
	ms.server_port = h->server_port;
	ms.helo = str(v->helo);
	ms.esmtp = v->esmtp;
	ms.tls = v->tls;
	ms.auth_user = v->auth_user;
	ms.queue_id = str(v->queue_id);
	ms.sender = str(v->sender);
	ms.rcpt = str(v->rcpt);
	ms.rcpts = v->rcpts;
	ms.nrcpts = v->nrcpts;
	ms.headers = str(v->headers);
	ms.headers_len = v->headers_len;
	ms.headers_truncated = v->headers_truncated;
	ms.message_size = v->size;
	plugins_run(h->plugins, stage_hook(h->stage), &ms, a);
	metrics_inc(a->verdict == POLICY_ACCEPT ? MC_PLUGIN_ACCEPT :
	    a->verdict == POLICY_REJECT ? MC_PLUGIN_REJECT :
	    a->verdict == POLICY_TEMPFAIL ? MC_PLUGIN_DEFER : MC_PLUGIN_CONTINUE);
	return GO_ON;
}

/*
 * An answer of the policy service or the milters that came while its
 * step waited, kept until the step runs again: made then (1.7 KB that
 * idle sessions need not carry).  answer_take(): true with the answer
 * in a (and the slot emptied), false when none came.
 */
static void
answer_keep(struct policy_answer **slot, const struct policy_answer *a)
{
	if (*slot == NULL)
		*slot = xmalloc(sizeof(**slot));
	**slot = *a;
}

static void
answer_drop(struct policy_answer **slot)
{
	free(*slot);
	*slot = NULL;
}

static bool
answer_take(struct policy_answer **slot, struct policy_answer *a)
{
	if (*slot == NULL)
		return false;
	*a = **slot;
	answer_drop(slot);
	return true;
}

static void
policy_done(void *ctx, const struct policy_answer *a)
{
	struct hooks_session *h = ctx;

	h->policy_id = 0;
	answer_keep(&h->policy_answer, a);
	metrics_inc(a->verdict == POLICY_ACCEPT ? MC_POLICY_ACCEPT :
	    a->verdict == POLICY_REJECT ? MC_POLICY_REJECT :
	    a->verdict == POLICY_TEMPFAIL ? MC_POLICY_DEFER : MC_POLICY_CONTINUE);
	if (h->active && h->waiting)
		pipeline(h, true);
}

static const char *
protocol_state(const struct hooks_session *h)
{
	switch (h->stage) {
	case STAGE_CONNECT: return "CONNECT";
	case STAGE_HELO:    return h->view.esmtp ? "EHLO" : "HELO";
	case STAGE_MAIL:    return "MAIL";
	case STAGE_RCPT:    return "RCPT";
	case STAGE_DATA:    return "DATA";
	default:            return "END-OF-MESSAGE";
	}
}

/* A PREPEND answer: kept for the message, where one can still be added. */
static void
prepend(struct hooks_session *h, const char *field)
{
	struct buf *b;

	if (h->stage == STAGE_END_OF_MESSAGE) {
		log_warn("session=%016llx policy service: PREPEND at "
		    "END-OF-MESSAGE comes after the content; not added: %.80s",
		    (unsigned long long)h->conn_id, field);
		return;
	}
	b = h->stage <= STAGE_HELO ? &h->prepend_session : &h->prepend_txn;
	if (h->prepend_session.len + h->prepend_txn.len + strlen(field) + 2 >
	    PREPEND_MAX) {
		log_warn("session=%016llx policy service: more than %d bytes "
		    "of PREPEND; not added: %.80s",
		    (unsigned long long)h->conn_id, PREPEND_MAX, field);
		return;
	}
	buf_appendf(b, "%s\r\n", field);
}

/* What an answer asks besides its verdict (policy.h: WARN, INFO,
 * DEFER_IF_REJECT, HOLD, DISCARD). */
static void
policy_extra(struct hooks_session *h, const struct policy_answer *a)
{
	const char *svcname = policy_client_service(h->policy_client);
	unsigned long long id = (unsigned long long)h->conn_id;
	char **slot;

	switch (a->extra) {
	case POLICY_EXTRA_NONE:
		return;
	case POLICY_EXTRA_WARN:
		log_warn("session=%016llx policy service %s: stage=%s WARN %s",
		    id, svcname, protocol_state(h), a->text);
		return;
	case POLICY_EXTRA_INFO:
		log_info("session=%016llx policy service %s: stage=%s INFO %s",
		    id, svcname, protocol_state(h), a->text);
		return;
	case POLICY_EXTRA_DEFER_IF_REJECT:
		log_info("session=%016llx policy service %s: stage=%s "
		    "DEFER_IF_REJECT: no later check of the stage can reject; "
		    "continuing as DUNNO", id, svcname, protocol_state(h));
		return;
	case POLICY_EXTRA_HOLD:
	case POLICY_EXTRA_DISCARD:
		break;
	}
	slot = a->extra == POLICY_EXTRA_HOLD ? h->policy_hold :
	    h->policy_discard;
	slot += h->stage <= STAGE_HELO ? 0 : 1;
	log_info("session=%016llx policy service %s: stage=%s %s%s%s", id,
	    svcname, protocol_state(h),
	    a->extra == POLICY_EXTRA_HOLD ? "HOLD: the message will be held" :
	    "DISCARD: the message will be discarded",
	    a->text[0] != '\0' ? ": " : "", a->text);
	if (*slot != NULL)
		return;
	*slot = xmalloc(strlen(svcname) + strlen(a->text) + 40);
	sprintf(*slot, "policy service %s: %s", svcname,
	    a->text[0] != '\0' ? a->text :
	    a->extra == POLICY_EXTRA_HOLD ? "HOLD" : "DISCARD");
}

static enum step_outcome
step_policy(struct hooks_session *h, struct policy_answer *a)
{
	const struct hooks_view *v = &h->view;
	struct policy_request r;

	if (answer_take(&h->policy_answer, a)) {
		if (a->prepend[0] != '\0')
			prepend(h, a->prepend);
		policy_extra(h, a);
		return GO_ON;
	}
	if (h->policy_id != 0)
		return WAIT;
	if (h->accepted || h->trusted)
		return GO_ON;
	/* A route's named service is asked at RCPT instead of the global
	 * one, whatever policy.stages says. */
	if (h->route_policy != NULL)
		h->policy_client = h->route_policy;
	else if (svc.policy != NULL &&
	    (h->conf->policy_stages & (1u << h->stage)) != 0)
		h->policy_client = svc.policy;
	else
		return GO_ON;
	memset(&r, 0, sizeof(r));
	r.protocol_state = protocol_state(h);
	r.protocol_name = v->esmtp ? "ESMTP" : "SMTP";
	r.helo_name = v->helo;
	r.queue_id = v->queue_id;
	r.instance = v->queue_id;
	r.sender = v->sender;
	r.recipient = v->rcpt;
	r.recipient_count = v->nrcpts;
	r.client_address = h->ip;
	r.client_port = h->port;
	r.server_address = h->server_ip;
	r.server_port = h->server_port;
	r.sasl_username = v->auth_user;
	r.size = v->size;
	r.encryption_protocol = v->tls ? v->tls_version : NULL;
	r.encryption_cipher = v->tls ? v->tls_cipher : NULL;
	r.encryption_keysize = v->tls ? v->tls_bits : 0;
	h->policy_id = policy_query(h->policy_client, &r, policy_done, h);
	return WAIT;
}

static void
milter_done(void *arg, const struct policy_answer *a)
{
	struct hooks_session *h = arg;

	h->milter_running = false;
	answer_keep(&h->milter_answer, a);
	metrics_inc(a->verdict == POLICY_ACCEPT ? MC_MILTER_ACCEPT :
	    a->verdict == POLICY_REJECT ? MC_MILTER_REJECT :
	    a->verdict == POLICY_TEMPFAIL ? MC_MILTER_DEFER : MC_MILTER_CONTINUE);
	if (h->active && h->waiting)
		pipeline(h, true);
}

/* The milters (milter_client.h): for everyone, trusted or not -- they
 * sign mail as well as judge it. */
static enum step_outcome
step_milter(struct hooks_session *h, struct policy_answer *a)
{
	const struct hooks_view *v = &h->view;
	struct milter_stage_input in;

	if (answer_take(&h->milter_answer, a))
		return GO_ON;
	if (h->milter_running)
		return WAIT;
	if (h->milters == NULL)
		return GO_ON;
	memset(&in, 0, sizeof(in));
	in.helo = v->helo;
	in.esmtp = v->esmtp;
	in.tls_version = v->tls ? v->tls_version : NULL;
	in.tls_cipher = v->tls ? v->tls_cipher : NULL;
	in.tls_bits = v->tls ? v->tls_bits : 0;
	in.auth_user = v->auth_user;
	in.queue_id = v->queue_id;
	in.sender = v->sender;
	in.body_8bitmime = v->body_8bitmime;
	in.rcpt = v->rcpt;
	in.rcpt_action = h->rcpt_action;
	in.route_milters = h->route_milters;
	in.nroute_milters = h->nroute_milters;
	in.message = v->message;
	in.message_len = v->message_len;
	h->milter_running = true;
	milter_run(h->milters, h->stage, &in, milter_done, h);
	if (h->milter_answer != NULL)
		return step_milter(h, a);
	return WAIT;
}

static enum step_outcome
step_spf_ready(struct hooks_session *h, struct policy_answer *a)
{
	(void)a;
	if (h->trusted)
		return GO_ON;
	if (h->cur == NULL)
		h->cur = spf_start(h, str(h->view.helo), str(h->view.sender));
	return h->cur->done ? GO_ON : WAIT;
}

static enum step_outcome
step_run(struct hooks_session *h, enum step st, struct policy_answer *a)
{
	switch (st) {
	case ST_BUILTIN:     return step_builtin(h, a);
	case ST_DNSBL:       return step_dnsbl(h, a);
	case ST_SPF_MAIL:    return step_spf_mail(h, a);
	case ST_SENDER_AUTH: return step_sender_auth(h, a);
	case ST_PLUGINS:     return step_plugins(h, a);
	case ST_POLICY:      return step_policy(h, a);
	case ST_MILTER:      return step_milter(h, a);
	case ST_SPF_READY:   return step_spf_ready(h, a);
	case ST_END:         break;
	}
	return GO_ON;
}

/* A check refused: the record the session's other refusals also make
 * (README "Logs"). */
static void
log_refusal(const struct hooks_session *h, const struct policy_answer *a)
{
	struct log_rec r;
	char sid[20], reply[600];

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)h->conn_id);
	snprintf(reply, sizeof(reply), "%d %s", a->code, a->text);
	log_rec_begin(&r);
	log_rec_str(&r, "session", sid);
	log_rec_str(&r, "event", "reject");
	log_rec_str(&r, "stage", stage_names[h->stage]);
	log_rec_str(&r, "client", h->ip);
	if (h->stage >= STAGE_MAIL && h->view.sender != NULL) {
		log_rec_str(&r, "id", h->view.queue_id);
		log_rec_path(&r, "from", h->view.sender);
	}
	if (h->stage == STAGE_RCPT && h->view.rcpt != NULL)
		log_rec_path(&r, "to", h->view.rcpt);
	log_rec_reply(&r, reply);
	log_rec_str(&r, "reason", a->why);
	log_rec_emit(&r, LOG_LEVEL_INFO);
}

/* The stage is decided: tell the session (the last thing we do). */
static void
finish(struct hooks_session *h, const struct policy_answer *a, bool later)
{
	h->active = false;
	h->waiting = false;
	if (a->verdict == POLICY_REJECT || a->verdict == POLICY_TEMPFAIL)
		log_refusal(h, a);
	else if (a->is_default)
		log_info("session=%016llx stage=%s policy service: %s",
		    (unsigned long long)h->conn_id, stage_names[h->stage],
		    a->why);
	h->done(h->arg, h->stage, a, later);
}

static void
pipeline(struct hooks_session *h, bool later)
{
	struct policy_answer a, last;

	memset(&last, 0, sizeof(last));
	last.verdict = POLICY_CONTINUE;
	for (;;) {
		enum step st = h->steps[h->step];

		if (st == ST_END) {
			finish(h, &last, later);
			return;
		}
		memset(&a, 0, sizeof(a));
		a.verdict = POLICY_CONTINUE;
		if (step_run(h, st, &a) == WAIT) {
			h->waiting = true;
			return;
		}
		h->waiting = false;
		if (a.verdict == POLICY_REJECT || a.verdict == POLICY_TEMPFAIL) {
			finish(h, &a, later);
			return;
		}
		if (a.verdict == POLICY_ACCEPT) {
			h->accepted = true;
			last = a;
		} else if (a.is_default) {
			last = a;   /* logged: the service failed */
		}
		h->step++;
	}
}

/*
 * The services the recipient's routes name: the first named policy
 * service among them (a `continue` chain asks one service, as one
 * recipient gets one answer), and every milter of every route.
 */
static void
route_services(struct hooks_session *h, const struct route_result *res)
{
	const struct mxconf *conf = h->conf;

	if (res->nmatches > 0)
		h->rcpt_action = res->matches[0].action_name;
	for (size_t i = 0; i < res->nmatches; i++) {
		const struct route_conf *rc;

		if (res->matches[i].index >= conf->nroutes)
			continue;
		rc = &conf->routes[res->matches[i].index];
		if (rc->policy_service != NULL && h->route_policy == NULL)
			for (size_t k = 0; k < conf->npolicy_services; k++)
				if (strcmp(conf->policy_services[k].name,
				    rc->policy_service) == 0 &&
				    svc.policies != NULL)
					h->route_policy = svc.policies[k];
		for (size_t m = 0; m < rc->nmilters; m++)
			for (size_t k = 0; k < conf->nmilters; k++)
				if (strcmp(conf->milters[k].name,
				    rc->milters[m]) == 0 &&
				    h->nroute_milters < MAX_MASKS)
					h->route_milters[h->nroute_milters++] = k;
	}
}

void
hooks_run(struct hooks_session *h, enum smtp_stage stage,
    const struct hooks_view *v)
{
	static const enum step *const steps[] = {
		[STAGE_CONNECT] = connect_steps, [STAGE_HELO] = connect_steps,
		[STAGE_MAIL] = mail_steps, [STAGE_RCPT] = rcpt_steps,
		[STAGE_DATA] = data_steps, [STAGE_END_OF_MESSAGE] = eom_steps,
	};

	h->active = true;
	h->waiting = false;
	h->stage = stage;
	h->steps = steps[stage];
	h->step = 0;
	h->accepted = false;
	/* An answer left from the last stage is not this one's. */
	answer_drop(&h->policy_answer);
	answer_drop(&h->milter_answer);
	h->view = *v;
	h->view.route = NULL;
	h->nmasks = 0;
	h->route_policy = NULL;
	h->nroute_milters = 0;
	h->rcpt_action = NULL;
	if (stage == STAGE_RCPT && v->route != NULL) {
		for (size_t i = 0; i < v->route->nmatches && h->nmasks < MAX_MASKS;
		    i++)
			h->masks[h->nmasks++] = v->route->matches[i].sender_auth;
		route_services(h, v->route);
	}
	pipeline(h, false);
}

bool
hooks_busy(const struct hooks_session *h)
{
	return h->active && h->waiting;
}

bool
hooks_trusted(const struct hooks_session *h)
{
	return h->trusted;
}

void
hooks_txn_reset(struct hooks_session *h)
{
	/* The cache stays: the next MAIL may be the same check. */
	h->cur = NULL;
	buf_reset(&h->prepend_txn);
	free(h->policy_hold[1]);
	free(h->policy_discard[1]);
	h->policy_hold[1] = h->policy_discard[1] = NULL;
	milter_txn_reset(h->milters);
}

const char *
hooks_policy_hold(const struct hooks_session *h)
{
	return h->policy_hold[1] != NULL ? h->policy_hold[1] :
	    h->policy_hold[0];
}

const char *
hooks_policy_discard(const struct hooks_session *h)
{
	return h->policy_discard[1] != NULL ? h->policy_discard[1] :
	    h->policy_discard[0];
}

struct milter_outcome *
hooks_milter_outcome(struct hooks_session *h)
{
	return h->milters != NULL ? milter_outcome(h->milters) : NULL;
}

void
hooks_prepended(const struct hooks_session *h, struct buf *out)
{
	buf_append(out, h->prepend_session.data, h->prepend_session.len);
	buf_append(out, h->prepend_txn.data, h->prepend_txn.len);
}

void
hooks_authres(struct hooks_session *h, const struct hooks_view *v,
    struct buf *out)
{
	struct authres_info info;

	memset(&info, 0, sizeof(info));
	info.helo = str(v->helo);
	info.auth_user = v->auth_user;
	if (!h->trusted && h->cur != NULL && h->cur->done) {
		info.spf_checked = true;
		info.spf = h->cur->answer.result;
		info.spf_identity = h->cur->answer.identity;
		info.spf_address = h->cur->answer.address;
		info.spf_comment = h->cur->answer.text;
	}
	authres_header(out, h->conf->hostname, &info);
}

struct hooks_session *
hooks_session_new(const struct mxconf *conf, const struct hooks_client *c,
    hooks_done_fn done, void *arg)
{
	struct hooks_session *h = xcalloc(1, sizeof(*h));
	struct mxgate_session ms;

	h->conf = conf;
	h->done = done;
	h->arg = arg;
	h->conn_id = c->conn_id;
	snprintf(h->ip, sizeof(h->ip), "%s", str(c->ip));
	h->port = c->port;
	snprintf(h->server_ip, sizeof(h->server_ip), "%s", str(c->server_ip));
	h->server_port = c->server_port;
	h->trusted = netlist_contains(conf->trusted_nets, h->ip);
	memset(&ms, 0, sizeof(ms));
	ms.size_of = sizeof(ms);
	ms.id = h->conn_id;
	ms.client_ip = h->ip;
	ms.client_port = h->port;
	ms.server_ip = h->server_ip;
	ms.server_port = h->server_port;
	ms.helo = ms.queue_id = ms.sender = ms.rcpt = ms.headers = "";
	h->plugins = plugins_session_new(&ms);
	if (svc.milters) {
		struct milter_client_info ci = {
			.conn_id = h->conn_id, .hostname = conf->hostname,
			.client_ip = h->ip, .client_port = h->port,
			.server_ip = h->server_ip, .server_port = h->server_port,
		};
		h->milters = milter_session_new(conf, &ci);
	}
	return h;
}

void
hooks_session_free(struct hooks_session *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; h->spf != NULL && i < SPF_CACHE; i++) {
		if (h->spf[i].used && !h->spf[i].done && svc.spf != NULL)
			spf_pool_cancel(svc.spf, h->spf[i].job);
	}
	free(h->spf);
	bl_cancel(h);
	if (h->policy_id != 0 && h->policy_client != NULL)
		policy_cancel(h->policy_client, h->policy_id);
	milter_session_free(h->milters);
	plugins_session_end(h->plugins);
	buf_free(&h->prepend_session);
	buf_free(&h->prepend_txn);
	for (int i = 0; i < 2; i++) {
		free(h->policy_hold[i]);
		free(h->policy_discard[i]);
	}
	free(h->policy_answer);
	free(h->milter_answer);
	free(h);
}
