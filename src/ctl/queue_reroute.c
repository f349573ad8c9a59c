/*
 * queue_reroute — see queue_reroute.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/addr.h"
#include "common/util.h"
#include "ctl/ctl.h"
#include "ctl/queue_reroute.h"
#include "ctl/queue_select.h"
#include "smtp/route.h"

/* A pending recipient, copied out of the statement. */
struct rr_row {
	int64_t rcpt_id;
	char   *msgid, *address, *route, *action, *params;
	char   *sender, *client_ip, *helo, *protocol, *auth_user;
};

struct rr_rows {
	struct rr_row *v;
	size_t         n;
};

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
rr_add(void *arg, const struct queue_reroute_row *r)
{
	struct rr_rows *rows = arg;
	struct rr_row *x;

	rows->v = xrealloc(rows->v, (rows->n + 1) * sizeof(*rows->v));
	x = &rows->v[rows->n++];
	x->rcpt_id = r->rcpt_id;
	x->msgid = dup_or_null(r->msgid);
	x->address = dup_or_null(r->address);
	x->route = dup_or_null(r->route);
	x->action = dup_or_null(r->action);
	x->params = dup_or_null(r->params);
	x->sender = dup_or_null(r->sender);
	x->client_ip = dup_or_null(r->client_ip);
	x->helo = dup_or_null(r->helo);
	x->protocol = dup_or_null(r->protocol);
	x->auth_user = dup_or_null(r->auth_user);
}

static void
rr_free(struct rr_rows *rows)
{
	for (size_t i = 0; i < rows->n; i++) {
		struct rr_row *x = &rows->v[i];

		free(x->msgid);
		free(x->address);
		free(x->route);
		free(x->action);
		free(x->params);
		free(x->sender);
		free(x->client_ip);
		free(x->helo);
		free(x->protocol);
		free(x->auth_user);
	}
	free(rows->v);
}

/* Text from the network, one line: controls escaped. */
static void
put_text(const char *s)
{
	if (s == NULL) {
		fputs("-", stdout);
		return;
	}
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static void
put_decision(const char *route, const char *action, const char *params)
{
	fputs("route=", stdout);
	put_text(route);
	fputs(" action=", stdout);
	put_text(action);
	fputs(" params=", stdout);
	put_text(params);
}

static bool
same(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* The routes' decision for x, as its session would have had it at RCPT:
 * 0, or -1 when its address no longer parses (said). */
static int
decide(const struct mxconf *conf, const struct rr_row *x,
    struct route_result *res)
{
	struct addr_parse_opts opts = { .postmaster_ok = true,
	    .utf8_ok = true };
	char path[ADDR_PATH_MAX + 8];
	const char *why = NULL;
	struct route_input ri;
	struct mailaddr a;
	size_t used;

	snprintf(path, sizeof(path), "<%s>", x->address);
	if (addr_parse_path(path, &opts, &a, &used, &why) != 0 ||
	    path[used] != '\0') {
		printf("%s <", x->msgid);
		put_text(x->address);
		printf(">: not an address the routes take (%s): left as it"
		    " was\n", why != NULL ? why : "trailing text");
		return -1;
	}
	memset(&ri, 0, sizeof(ri));
	ri.local = a.local;
	ri.domain = a.domain;
	ri.sender = x->sender != NULL ? x->sender : "";
	ri.client_ip = x->client_ip != NULL ? x->client_ip : "";
	ri.helo = x->helo != NULL ? x->helo : "";
	ri.queue_id = x->msgid;
	ri.auth_user = x->auth_user;
	/* ESMTPS, ESMTPSA (RFC 3848): the session was encrypted. */
	ri.tls = x->protocol != NULL && strstr(x->protocol, "SMTPS") != NULL;
	route_decide(conf->route_table, &ri, res);
	return 0;
}

struct rr_counts {
	size_t changed, unchanged, refused, bounced, messages;
};

struct rr_opts {
	const char *who;
	bool        dry_run;
	const struct reroute_bounce *bounce;    /* NULL: leave them */
};

/* One recipient: 1 changed, 0 not, -1 failure (the store's). */
/* A recipient the routes refuse now: bounced with their reply, or left.
 * 0, or -1 when the bounce could not be written. */
static int
refused_now(const struct rr_opts *o, const struct rr_row *x,
    const struct route_result *res, struct rr_counts *n)
{
	printf("%s <", x->msgid);
	put_text(x->address);
	printf(">: the routes refuse it now (%d %s): ", res->code, res->text);
	if (o->bounce == NULL) {
		printf("left as it was; bounce or delete it if it must go"
		    " (--bounce-refused)\n");
		n->refused++;
		return 0;
	}
	printf("bounced\n");
	n->bounced++;
	if (o->dry_run)
		return 0;
	return o->bounce->add(o->bounce->arg, x->msgid, x->rcpt_id,
	    x->address, res->code, res->text);
}

static int
reroute_one(const struct mxconf *conf, struct queue_db *db,
    const struct rr_opts *o, const struct rr_row *x, struct rr_counts *n)
{
	const char *who = o->who;
	bool dry_run = o->dry_run;
	struct route_result res;
	const struct route_match *m;
	struct buf detail;
	int r = 0;

	memset(&res, 0, sizeof(res));
	if (decide(conf, x, &res) < 0) {
		n->refused++;
		return 0;
	}
	if (res.verdict != ROUTE_ACCEPTED) {
		r = refused_now(o, x, &res, n);
		route_result_free(&res);
		return r;
	}
	if (res.nmatches != 1) {
		printf("%s <", x->msgid);
		put_text(x->address);
		printf(">: %zu routes match it now (continue): left as it"
		    " was\n", res.nmatches);
		n->refused++;
		route_result_free(&res);
		return 0;
	}
	m = &res.matches[0];
	if (same(x->route, m->route) && same(x->action, m->action_name) &&
	    same(x->params, m->params)) {
		n->unchanged++;
		route_result_free(&res);
		return 0;
	}
	printf("%s <", x->msgid);
	put_text(x->address);
	printf(">: ");
	put_decision(x->route, x->action, x->params);
	printf(" -> ");
	put_decision(m->route, m->action_name, m->params);
	putchar('\n');
	buf_init(&detail);
	buf_appendf(&detail, "route=%s action=%s params=%s (was route=%s"
	    " action=%s params=%s) rerouted %s", m->route, m->action_name,
	    m->params != NULL ? m->params : "", x->route != NULL ? x->route :
	    "", x->action, x->params != NULL ? x->params : "", who);
	if (!dry_run)
		r = queue_db_reroute(db, x->rcpt_id, m->route, m->action_name,
		    m->params, (int64_t)time(NULL), detail.data);
	else
		r = 1;
	buf_free(&detail);
	route_result_free(&res);
	if (r > 0)
		n->changed++;
	return r;
}

static int
store_failed(struct queue_db *db)
{
	fprintf(stderr, "mxgatectl: queue reroute: %s\n", queue_db_error(db));
	queue_db_admin_rollback(db);
	return 1;
}

static int
reroute_all(const struct mxconf *conf, struct queue_db *db,
    const struct rr_opts *o, struct ctl_select *sel, struct reroute_done *done)
{
	bool dry_run = o->dry_run;
	struct rr_rows rows = { NULL, 0 };
	struct rr_counts n = { 0, 0, 0, 0, 0 };
	const char *last = "";
	size_t i;

	if (queue_db_admin_begin(db) < 0)
		return store_failed(db);
	if (ctl_select_load(sel, db) < 0 ||
	    queue_db_reroute_rows(db, &sel->q, rr_add, &rows) < 0) {
		rr_free(&rows);
		return store_failed(db);
	}
	for (i = 0; i < rows.n; i++) {
		size_t before = n.changed;

		if (reroute_one(conf, db, o, &rows.v[i], &n) < 0) {
			rr_free(&rows);
			return store_failed(db);
		}
		if (n.changed > before && strcmp(last, rows.v[i].msgid) != 0) {
			n.messages++;
			last = rows.v[i].msgid;
		}
	}
	if (!dry_run && o->bounce != NULL && o->bounce->flush(o->bounce->arg)
	    < 0) {
		rr_free(&rows);
		return store_failed(db);
	}
	if (dry_run)
		queue_db_admin_rollback(db);
	else if (queue_db_admin_commit(db) < 0) {
		rr_free(&rows);
		return store_failed(db);
	}
	printf("%s: %zu recipient%s of %zu message%s; %zu unchanged, %zu left"
	    " as they were", dry_run ? "would reroute" : "rerouted",
	    n.changed, n.changed == 1 ? "" : "s", n.messages,
	    n.messages == 1 ? "" : "s", n.unchanged, n.refused);
	if (o->bounce != NULL)
		printf(", %zu %sbounced", n.bounced, dry_run ? "would be " : "");
	putchar('\n');
	if (!dry_run) {
		done->messages = (long long)n.messages;
		done->recipients = (long long)n.changed;
		done->bounced = (long long)n.bounced;
	}
	rr_free(&rows);
	return 0;
}

int
queue_reroute_main(const struct mxconf *conf, struct queue_db *db,
    const char *who, const struct reroute_bounce *rb, int argc, char **argv,
    struct reroute_done *done)
{
	struct rr_opts o = { who, false, NULL };
	bool bounce = false;
	struct ctl_opt opts[] = { { "--dry-run", &o.dry_run, NULL },
	    { "--bounce-refused", &bounce, NULL }, CTL_OPT_END };
	struct ctl_args a = { .opts = opts };
	struct ctl_select sel;
	int r;

	if ((r = ctl_select_parse(&sel, argc, argv, SEL_IDS | SEL_ALL)) < 0) {
		ctl_select_free(&sel);
		return r == -2 ? 1 : 2;
	}
	if (ctl_args_parse(&a, sel.nrest, sel.rest) < 0) {
		fprintf(stderr, "mxgatectl: queue reroute: %s\n", a.err);
		ctl_select_free(&sel);
		return 2;
	}
	o.bounce = bounce ? rb : NULL;
	memset(done, 0, sizeof(*done));
	r = reroute_all(conf, db, &o, &sel, done);
	ctl_select_free(&sel);
	return r;
}
