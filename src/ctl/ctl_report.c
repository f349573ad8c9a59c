/*
 * ctl_report — queue stats, queue shape, tls-report (ctl_report.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "common/util.h"
#include "ctl/ctl_report.h"
#include "ctl/tls_report.h"
#include "queue/queue_db.h"

/* queue stats */

static void
put_state(void *arg, const char *state, int64_t recipients, int64_t messages)
{
	(void)arg;
	printf("%-12s %10lld %10lld\n", state, (long long)recipients,
	    (long long)messages);
}

static void
put_oldest(void *arg, int64_t messages, const char *id, const char *received,
    int64_t received_at)
{
	(void)arg;
	printf("\nmessages: %lld\noldest pending: %s, received %s UTC"
	    " (%lld s ago)\n", (long long)messages, id, received,
	    (long long)time(NULL) - (long long)received_at);
}

static void
put_destination(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending)
{
	(void)arg;
	ctl_put_safe_n(stdout, dest, len, SAFE_LINE);
	printf("%*s %9lld %9lld %9lld %9lld\n", len < 40 ? 40 - (int)len : 0,
	    "", (long long)delivered, (long long)deferred, (long long)bounced,
	    (long long)pending);
}

static int
stats_all(struct ctl *ctl)
{
	int r;

	printf("%-12s %10s %10s\n", "STATE", "RECIPIENTS", "MESSAGES");
	if (queue_db_stats_states(ctl->db, put_state, NULL) < 0)
		return -1;
	if ((r = queue_db_stats_oldest(ctl->db, put_oldest, NULL)) < 0)
		return -1;
	if (r == 0)
		printf("\noldest pending: none\n");
	printf("\n%-40s %9s %9s %9s %9s\n", "DESTINATION", "DELIVERED",
	    "DEFERRED", "BOUNCED", "PENDING");
	return queue_db_stats_destinations(ctl->db, put_destination, NULL);
}

static void
json_state(void *arg, const char *state, int64_t recipients, int64_t messages)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_member_string(w, "state", state);
	json_member_int(w, "recipients", recipients);
	json_member_int(w, "messages", messages);
	json_end_object(w);
}

static void
json_oldest(void *arg, int64_t messages, const char *id, const char *received,
    int64_t received_at)
{
	struct json_writer *w = arg;

	json_member_int(w, "messages", messages);
	json_key(w, "oldest_pending");
	json_begin_object(w);
	json_member_string(w, "id", id);
	json_member_string(w, "received", received);
	json_member_int(w, "age",
	    (long long)time(NULL) - (long long)received_at);
	json_end_object(w);
}

static void
json_destination(void *arg, const char *dest, size_t len, int64_t delivered,
    int64_t deferred, int64_t bounced, int64_t pending)
{
	struct json_writer *w = arg;

	json_begin_object(w);
	json_key(w, "destination");
	json_stringn(w, dest, len);
	json_member_int(w, "delivered", delivered);
	json_member_int(w, "deferred", deferred);
	json_member_int(w, "bounced", bounced);
	json_member_int(w, "pending", pending);
	json_end_object(w);
}

static int
stats_json(struct ctl *ctl)
{
	struct json_writer w;
	struct buf b;
	int r, rc = -1;

	buf_init(&b);
	json_writer_init(&w, &b);
	json_begin_object(&w);
	json_key(&w, "states");
	json_begin_array(&w);
	if (queue_db_stats_states(ctl->db, json_state, &w) < 0)
		goto done;
	json_end_array(&w);
	if ((r = queue_db_stats_oldest(ctl->db, json_oldest, &w)) < 0)
		goto done;
	if (r == 0) {
		json_member_int(&w, "messages", 0);
		json_key(&w, "oldest_pending");
		json_null(&w);
	}
	json_key(&w, "destinations");
	json_begin_array(&w);
	if (queue_db_stats_destinations(ctl->db, json_destination, &w) < 0)
		goto done;
	json_end_array(&w);
	json_end_object(&w);
	ctl_put_json(&b);
	rc = 0;
done:
	buf_free(&b);
	return rc;
}

int
ctl_queue_stats(struct ctl *ctl, int argc, char **argv)
{
	bool json = false;

	if (ctl_flag_args(ctl, argc, argv, "--json", &json) != 0)
		return EXIT_USAGE;
	/* One read transaction: the three parts agree. */
	if (queue_db_read_begin(ctl->db) == -1)
		return ctl_query_failed(ctl, "queue stats");
	if ((json ? stats_json(ctl) : stats_all(ctl)) == -1) {
		ctl_query_failed(ctl, "queue stats");
		queue_db_admin_rollback(ctl->db);
		return 1;
	}
	queue_db_admin_commit(ctl->db);
	return 0;
}

/* tls-report: RFC 8460's daily report, from tls_results. */
int
ctl_tls_report(struct ctl *ctl, int argc, char **argv)
{
	char day[16], host[256];
	const char *domain = NULL, *date = NULL;
	struct ctl_opt opts[] = { { "--date", NULL, &date }, CTL_OPT_END };
	struct ctl_args a = { .opts = opts, .words = &domain, .maxwords = 1 };
	time_t t = time(NULL) - 86400;
	struct tm tm;
	int n;

	if (ctl_args_parse(&a, argc, argv) < 0)
		return ctl_usage(ctl);
	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	if (date != NULL) {
		memset(&tm, 0, sizeof(tm));
		if (strlen(date) != 10 || strptime(date, "%Y-%m-%d",
		    &tm) == NULL) {
			fprintf(stderr, "mxgatectl: tls-report: --date wants"
			    " YYYY-MM-DD (got \"%s\")\n", date);
			return EXIT_USAGE;
		}
		snprintf(day, sizeof(day), "%s", date);
	}
	if (ctl->conf != NULL && ctl->conf->hostname != NULL)
		snprintf(host, sizeof(host), "%s", ctl->conf->hostname);
	else if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if ((n = tls_report_print(ctl->db, day, domain, host, stdout)) < 0)
		return ctl_query_failed(ctl, "tls-report");
	if (n == 0) {
		fprintf(stderr, "mxgatectl: tls-report: no TLS sessions"
		    " recorded on %s%s%s\n", day, domain != NULL ? " for " : "",
		    domain != NULL ? domain : "");
		return 1;
	}
	return 0;
}

/* queue shape: Postfix's qshape, from the queue database. */

#define SHAPE_BUCKETS_MAX 16

struct shape {
	struct json_writer w;
	struct buf         b;
	bool               json;
	size_t             nbounds;
	int64_t            total[SHAPE_BUCKETS_MAX + 2];   /* as counts */
};

/* "5m" for 300: the bucket's bound as given. */
static void
fmt_age(char *out, size_t size, int64_t v)
{
	if (v % 86400 == 0)
		snprintf(out, size, "%lldd", (long long)(v / 86400));
	else if (v % 3600 == 0)
		snprintf(out, size, "%lldh", (long long)(v / 3600));
	else if (v % 60 == 0)
		snprintf(out, size, "%lldm", (long long)(v / 60));
	else
		snprintf(out, size, "%llds", (long long)v);
}

static void
shape_row(void *arg, const char *dest, size_t len, const int64_t *counts)
{
	struct shape *sh = arg;
	size_t i;

	sh->total[0] += counts[0];
	for (i = 0; i <= sh->nbounds; i++)
		sh->total[i + 1] += counts[i + 1];
	if (sh->json) {
		json_begin_object(&sh->w);
		json_key(&sh->w, "destination");
		json_stringn(&sh->w, dest, len);
		json_member_int(&sh->w, "total", counts[0]);
		json_key(&sh->w, "buckets");
		json_begin_array(&sh->w);
		for (i = 0; i <= sh->nbounds; i++)
			json_int(&sh->w, counts[i + 1]);
		json_end_array(&sh->w);
		json_end_object(&sh->w);
		return;
	}
	ctl_put_safe_n(stdout, dest, len, SAFE_LINE);
	printf("%*s %6lld", len < 32 ? 32 - (int)len : 0, "",
	    (long long)counts[0]);
	for (i = 0; i <= sh->nbounds; i++)
		printf(" %6lld", (long long)counts[i + 1]);
	putchar('\n');
}

/* "5m,10m,..." into bounds (increasing); their number, or -1 (said). */
static int
parse_buckets(const char *list, int64_t *bounds)
{
	char *copy = xstrdup(list), *tok, *save = NULL;
	long long v;
	int n = 0;

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (n == SHAPE_BUCKETS_MAX || (v = ctl_parse_duration(tok)) <= 0 ||
		    (n > 0 && v <= bounds[n - 1])) {
			fprintf(stderr, "mxgatectl: --buckets: up to %d"
			    " increasing durations, comma-separated (5m,1h,1d)\n",
			    SHAPE_BUCKETS_MAX);
			free(copy);
			return -1;
		}
		bounds[n++] = v;
	}
	free(copy);
	return n;
}

static void
shape_header(struct shape *sh, const int64_t *bounds)
{
	char age[24];

	if (sh->json) {
		json_begin_object(&sh->w);
		json_key(&sh->w, "buckets");
		json_begin_array(&sh->w);
		for (size_t i = 0; i < sh->nbounds; i++) {
			fmt_age(age, sizeof(age), bounds[i]);
			json_string(&sh->w, age);
		}
		json_string(&sh->w, "older");
		json_end_array(&sh->w);
		json_key(&sh->w, "destinations");
		json_begin_array(&sh->w);
		return;
	}
	printf("%-32s %6s", "DESTINATION", "TOTAL");
	for (size_t i = 0; i < sh->nbounds; i++) {
		fmt_age(age, sizeof(age), bounds[i]);
		printf(" %6s", age);
	}
	fmt_age(age, sizeof(age), bounds[sh->nbounds - 1]);
	printf(" %5s+\n", age);
}

static void
shape_footer(struct shape *sh)
{
	size_t i;

	if (sh->json) {
		json_end_array(&sh->w);
		json_member_int(&sh->w, "total", sh->total[0]);
		json_end_object(&sh->w);
		ctl_put_json(&sh->b);
		return;
	}
	printf("%-32s %6lld", "TOTAL", (long long)sh->total[0]);
	for (i = 0; i <= sh->nbounds; i++)
		printf(" %6lld", (long long)sh->total[i + 1]);
	putchar('\n');
}

int
ctl_queue_shape(struct ctl *ctl, int argc, char **argv)
{
	int64_t bounds[SHAPE_BUCKETS_MAX];
	const char *buckets = "5m,10m,20m,40m,80m,160m,320m,640m";
	struct ctl_opt opts[] = { { "--buckets", NULL, &buckets },
	    CTL_OPT_END };
	struct ctl_args a = { .opts = opts };
	struct ctl_select sel;
	struct shape sh;
	int n, rc = 0;

	if ((rc = ctl_select_args(ctl, &sel, argc, argv, SEL_FILTERS |
	    SEL_JSON, true)) != 0)
		return rc;
	if (ctl_args_parse(&a, sel.nrest, sel.rest) < 0) {
		ctl_select_free(&sel);
		return ctl_usage(ctl);
	}
	if ((n = parse_buckets(buckets, bounds)) <= 0) {
		ctl_select_free(&sel);
		return n < 0 ? EXIT_USAGE : ctl_usage(ctl);
	}
	memset(&sh, 0, sizeof(sh));
	sh.json = sel.json;
	sh.nbounds = (size_t)n;
	buf_init(&sh.b);
	json_writer_init(&sh.w, &sh.b);
	shape_header(&sh, bounds);
	if (queue_db_shape(ctl->db, &sel.q, (int64_t)time(NULL), bounds,
	    sh.nbounds, shape_row, &sh) < 0)
		rc = ctl_query_failed(ctl, "queue shape");
	else
		shape_footer(&sh);
	buf_free(&sh.b);
	ctl_select_free(&sel);
	return rc;
}
