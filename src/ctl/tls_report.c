/*
 * tls_report — see tls_report.h.
 */
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"
#include "ctl/tls_report.h"

/* One row of tls_results, copied. */
struct row {
	char     *domain, *policy_type, *policy, *mx_host, *result_type;
	char     *sending_ip, *receiving_ip;
	long long sessions;
};

struct rows {
	struct row *v;
	size_t      n;
};

static int
keep_row(const struct queue_tls_result *r, void *arg)
{
	struct rows *rs = arg;
	struct row *w;

	rs->v = xrealloc(rs->v, (rs->n + 1) * sizeof(*rs->v));
	w = &rs->v[rs->n++];
	w->domain = xstrdup(r->domain);
	w->policy_type = xstrdup(r->policy_type);
	w->policy = xstrdup(r->policy);
	w->mx_host = xstrdup(r->mx_host);
	w->result_type = xstrdup(r->result_type);
	w->sending_ip = xstrdup(r->sending_ip);
	w->receiving_ip = xstrdup(r->receiving_ip);
	w->sessions = r->sessions;
	return 0;
}

static bool
same_policy(const struct row *a, const struct row *b)
{
	return strcmp(a->domain, b->domain) == 0 &&
	    strcmp(a->policy_type, b->policy_type) == 0 &&
	    strcmp(a->policy, b->policy) == 0;
}

/* policy-string: the lines; mx-host: an STS policy's "mx:" patterns. */
static void
policy_object(struct json_writer *w, const struct row *r)
{
	const char *p, *nl;
	size_t n;

	json_key(w, "policy");
	json_begin_object(w);
	json_member_string(w, "policy-type", r->policy_type);
	json_key(w, "policy-string");
	json_begin_array(w);
	for (p = r->policy; *p != '\0'; p = *nl != '\0' ? nl + 1 : nl) {
		nl = p + strcspn(p, "\n");
		json_stringn(w, p, (size_t)(nl - p));
	}
	json_end_array(w);
	json_member_string(w, "policy-domain", r->domain);
	if (strcmp(r->policy_type, "sts") == 0) {
		json_key(w, "mx-host");
		json_begin_array(w);
		for (p = r->policy; *p != '\0'; p = *nl != '\0' ? nl + 1 : nl) {
			nl = p + strcspn(p, "\n");
			n = (size_t)(nl - p);
			if (n > 4 && strncmp(p, "mx: ", 4) == 0)
				json_stringn(w, p + 4, n - 4);
		}
		json_end_array(w);
	}
	json_end_object(w);
}

/* One policy's rows [from, to): its object in "policies". */
static void
policy_entry(struct json_writer *w, const struct row *v, size_t from,
    size_t to)
{
	long long ok = 0, failed = 0;
	size_t i;

	for (i = from; i < to; i++) {
		if (v[i].result_type[0] == '\0')
			ok += v[i].sessions;
		else
			failed += v[i].sessions;
	}
	json_begin_object(w);
	policy_object(w, &v[from]);
	json_key(w, "summary");
	json_begin_object(w);
	json_member_int(w, "total-successful-session-count", ok);
	json_member_int(w, "total-failure-session-count", failed);
	json_end_object(w);
	if (failed > 0) {
		json_key(w, "failure-details");
		json_begin_array(w);
		for (i = from; i < to; i++) {
			if (v[i].result_type[0] == '\0')
				continue;
			json_begin_object(w);
			json_member_string(w, "result-type", v[i].result_type);
			if (v[i].sending_ip[0] != '\0') {
				json_member_string(w, "sending-mta-ip",
				    v[i].sending_ip);
			}
			if (v[i].mx_host[0] != '\0') {
				json_member_string(w, "receiving-mx-hostname",
				    v[i].mx_host);
			}
			if (v[i].receiving_ip[0] != '\0') {
				json_member_string(w, "receiving-ip",
				    v[i].receiving_ip);
			}
			json_member_int(w, "failed-session-count",
			    v[i].sessions);
			json_end_object(w);
		}
		json_end_array(w);
	}
	json_end_object(w);
}

/* The report of one domain, rows [from, to). */
static void
domain_report(FILE *out, const char *day, const char *hostname,
    const struct row *v, size_t from, size_t to)
{
	struct json_writer w;
	struct buf b, t;
	size_t i, start;

	buf_init(&b);
	buf_init(&t);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	json_member_string(&w, "organization-name", hostname);
	json_key(&w, "date-range");
	json_begin_object(&w);
	buf_appendf(&t, "%sT00:00:00Z", day);
	json_member_string(&w, "start-datetime", t.data);
	buf_reset(&t);
	buf_appendf(&t, "%sT23:59:59Z", day);
	json_member_string(&w, "end-datetime", t.data);
	json_end_object(&w);
	buf_reset(&t);
	buf_appendf(&t, "postmaster@%s", hostname);
	json_member_string(&w, "contact-info", t.data);
	buf_reset(&t);
	buf_appendf(&t, "%s_%s@%s", day, v[from].domain, hostname);
	json_member_string(&w, "report-id", t.data);
	json_key(&w, "policies");
	json_begin_array(&w);
	for (start = from, i = from + 1; i <= to; i++) {
		if (i < to && same_policy(&v[start], &v[i]))
			continue;
		policy_entry(&w, v, start, i);
		start = i;
	}
	json_end_array(&w);
	json_end_object(&w);
	fprintf(out, "%s\n", b.data);
	buf_free(&b);
	buf_free(&t);
}

int
tls_report_print(struct queue_db *db, const char *day, const char *domain,
    const char *hostname, FILE *out)
{
	struct rows rs = { NULL, 0 };
	size_t i, start;
	int reports = 0;

	if (queue_db_tls_results(db, day, domain, keep_row, &rs) < 0)
		reports = -1;
	for (start = 0, i = 1; reports >= 0 && i <= rs.n; i++) {
		if (i < rs.n && strcmp(rs.v[i].domain, rs.v[start].domain) == 0)
			continue;
		domain_report(out, day, hostname, rs.v, start, i);
		reports++;
		start = i;
	}
	for (i = 0; i < rs.n; i++) {
		free(rs.v[i].domain);
		free(rs.v[i].policy_type);
		free(rs.v[i].policy);
		free(rs.v[i].mx_host);
		free(rs.v[i].result_type);
		free(rs.v[i].sending_ip);
		free(rs.v[i].receiving_ip);
	}
	free(rs.v);
	return reports;
}
