/*
 * Unit tests of the SPF module with libspf2's zone DNS layer (no network):
 * every result, include and redirect, the cases where RFC 7208 and
 * libspf2 disagree (the RFC wins), the grammar check and the rewrite, and
 * the thread pool (completion through the eventfd, timeout, cancel).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <spf2/spf.h>
#include <spf2/spf_dns_zone.h>

#include "smtp/spf.h"
#include "common/util.h"
#include "unit.h"

/* name, type, herrno, data */
struct zone_rr {
	const char *name;
	ns_type     type;
	int         herrno;
	const char *data;
};

static const struct zone_rr zone[] = {
	{ "pass.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:192.0.2.1 -all" },
	{ "soft.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:192.0.2.1 ~all" },
	{ "neutral.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ?all" },
	{ "empty.example", ns_t_txt, NETDB_SUCCESS, "v=spf1" },
	{ "notspf.example", ns_t_txt, NETDB_SUCCESS, "hello world" },
	{ "incl.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 include:pass.example -all" },
	{ "redir.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 redirect=pass.example" },
	{ "inclfail.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 include:servfail.example -all" },
	{ "servfail.example", ns_t_any, TRY_AGAIN, NULL },
	{ "nx.example", ns_t_any, HOST_NOT_FOUND, NULL },
	{ "syntax.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 foo:bar -all" },
	{ "cidr33.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:192.0.2.0/33 -all" },
	{ "lookups.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 a a a a a a a a a a a -all" },
	{ "two.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all" },
	{ "two.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 +all" },
	/* RFC 7208 vs libspf2 */
	{ "zero4.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:0.0.0.0/0 -all" },
	{ "zero4neg.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 -ip4:10.0.0.0/0 +all" },
	{ "zero6.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip6:::/0 -all" },
	{ "a0.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 a:host.example/0 -all" },
	{ "a0none.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 a:nohost.example/0 -all" },
	{ "a0self.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 a/0 -all" },
	{ "a0self.example", ns_t_a, NETDB_SUCCESS, "203.0.113.7" },
	{ "mx0.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 mx/0//0 -all" },
	{ "mx0.example", ns_t_mx, NETDB_SUCCESS, "10 host.example" },
	{ "dual0.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 a:host6.example/0//64 -all" },
	{ "host.example", ns_t_a, NETDB_SUCCESS, "203.0.113.5" },
	{ "host6.example", ns_t_aaaa, NETDB_SUCCESS, "2001:db8:1:2::5" },
	{ "nohost.example", ns_t_any, HOST_NOT_FOUND, NULL },
	{ "numtop.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 a:192.0.2.1 -all" },
	{ "onelabel.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 a:localhost ?all" },
	{ "exp2.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 -all exp=e.example exp=e.example" },
	{ "rtmacro.example", ns_t_txt, NETDB_SUCCESS,
	  "v=spf1 exists:%{t}.example.org ?all" },
	{ "type99.example", ns_t_spf, NETDB_SUCCESS, "v=spf1 +all" },
	{ "type99.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all" },
	{ "loop.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all" },
	{ "helo.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:198.51.100.4 -all" },
	{ "exp.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all exp=why.exp.example" },
	{ "why.exp.example", ns_t_txt, NETDB_SUCCESS, "%{i} may not send for %{d}" },
	{ "v6.example", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip6:2001:db8::/32 -all" },
};

static SPF_dns_server_t *
make_zone(void *arg)
{
	SPF_dns_server_t *z = SPF_dns_zone_new(NULL, "test", 0);

	(void)arg;
	for (size_t i = 0; i < ARRAY_LEN(zone); i++)
		SPF_dns_zone_add_str(z, zone[i].name, zone[i].type,
		    zone[i].herrno, zone[i].data);
	return z;
}

static struct spf_checker *checker;

static enum spf_result
check_full(const char *ip, const char *helo, const char *sender,
    struct spf_answer *a)
{
	struct spf_query q;

	memset(&q, 0, sizeof(q));
	snprintf(q.ip, sizeof(q.ip), "%s", ip);
	snprintf(q.helo, sizeof(q.helo), "%s", helo);
	snprintf(q.sender, sizeof(q.sender), "%s", sender);
	return spf_check(checker, &q, a);
}

static const char *
check(const char *ip, const char *domain)
{
	static struct spf_answer a;
	char sender[300];

	snprintf(sender, sizeof(sender), "user@%s", domain);
	return spf_result_name(check_full(ip, "client.example", sender, &a));
}

static void
test_results(void)
{
	CHECK_STR(check("192.0.2.1", "pass.example"), "pass");
	CHECK_STR(check("192.0.2.2", "pass.example"), "fail");
	CHECK_STR(check("192.0.2.2", "soft.example"), "softfail");
	CHECK_STR(check("192.0.2.2", "neutral.example"), "neutral");
	CHECK_STR(check("192.0.2.2", "notspf.example"), "none");
	CHECK_STR(check("192.0.2.2", "nx.example"), "none");
	CHECK_STR(check("2001:db8::25", "v6.example"), "pass");
	CHECK_STR(check("2001:db9::25", "v6.example"), "fail");
}

static void
test_include_redirect(void)
{
	CHECK_STR(check("192.0.2.1", "incl.example"), "pass");
	CHECK_STR(check("192.0.2.9", "incl.example"), "fail");
	CHECK_STR(check("192.0.2.1", "redir.example"), "pass");
	CHECK_STR(check("192.0.2.9", "redir.example"), "fail");
}

/* libspf2 answers these with an error code and an "invalid" result. */
static void
test_errors_mapped(void)
{
	struct spf_answer a;

	CHECK_STR(check("192.0.2.1", "servfail.example"), "temperror");
	CHECK_STR(check("192.0.2.1", "inclfail.example"), "temperror");
	CHECK_STR(check("192.0.2.1", "syntax.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "cidr33.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "lookups.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "two.example"), "permerror");
	check_full("192.0.2.1", "h.example", "u@syntax.example", &a);
	CHECK(strstr(a.text, "foo:bar") != NULL);
}

/* RFC 7208 5.6: ip4-cidr-length 0 is valid; libspf2 refuses it. */
static void
test_rfc_cidr_zero(void)
{
	CHECK_STR(check("192.0.2.77", "zero4.example"), "pass");
	CHECK_STR(check("2001:db8::1", "zero4.example"), "fail");
	CHECK_STR(check("192.0.2.77", "zero4neg.example"), "fail");
	CHECK_STR(check("2001:db8::1", "zero6.example"), "pass");
	CHECK_STR(check("192.0.2.1", "zero6.example"), "fail");
	/* a/0: any A record of the name matches every IPv4 client. */
	CHECK_STR(check("198.51.100.9", "a0.example"), "pass");
	CHECK_STR(check("198.51.100.9", "a0none.example"), "fail");
	CHECK_STR(check("198.51.100.9", "a0self.example"), "pass");
	CHECK_STR(check("198.51.100.9", "mx0.example"), "pass");
	/* a/0//64: the /0 is for IPv4 only; IPv6 clients use /64. */
	CHECK_STR(check("198.51.100.9", "dual0.example"), "fail");
	CHECK_STR(check("2001:db8:1:2::99", "dual0.example"), "pass");
	CHECK_STR(check("2001:db8:1:3::99", "dual0.example"), "fail");
}

/* RFC 7208 4.6, 6, 7.1, 7.2: syntax errors that libspf2 lets through. */
static void
test_rfc_syntax(void)
{
	CHECK_STR(check("192.0.2.1", "numtop.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "onelabel.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "exp2.example"), "permerror");
	CHECK_STR(check("192.0.2.1", "rtmacro.example"), "permerror");
}

static void
test_rfc_other(void)
{
	struct spf_answer a;

	/* RFC 7208 4.5: "v=spf1" alone is a record, evaluating to neutral. */
	CHECK_STR(check("192.0.2.1", "empty.example"), "neutral");
	/* RFC 7208 3.1, 14.1: the SPF RR type is not consulted. */
	CHECK_STR(check("192.0.2.1", "type99.example"), "fail");
	/* No "localhost free ride": RFC 7208 has no such rule. */
	CHECK_STR(check("127.0.0.1", "loop.example"), "fail");
	CHECK_STR(check("::1", "loop.example"), "fail");
	/* RFC 7208 5: IPv4-mapped IPv6 is checked as IPv4. */
	CHECK_STR(check("::ffff:192.0.2.1", "pass.example"), "pass");
	/* RFC 7208 4.3: no domain to check. */
	check_full("192.0.2.1", "h.example", "user@[192.0.2.1]", &a);
	CHECK_STR(spf_result_name(a.result), "none");
	check_full("192.0.2.1", "h.example", "user@localhost", &a);
	CHECK_STR(spf_result_name(a.result), "none");
}

static void
test_null_sender(void)
{
	struct spf_answer a;

	CHECK_STR(spf_result_name(check_full("198.51.100.4", "helo.example", "",
	    &a)), "pass");
	CHECK_STR(a.identity, "helo");
	CHECK_STR(a.address, "postmaster@helo.example");
	CHECK_STR(spf_result_name(check_full("198.51.100.5", "helo.example", "",
	    &a)), "fail");
	check_full("198.51.100.4", "[198.51.100.4]", "", &a);
	CHECK_STR(spf_result_name(a.result), "none");
}

/* RFC 7208 6.2: the explanation may hold spaces (libspf2 mangles them). */
static void
test_explanation(void)
{
	struct spf_answer a;

	check_full("192.0.2.3", "h.example", "u@exp.example", &a);
	CHECK_STR(spf_result_name(a.result), "fail");
	CHECK_STR(a.text, "192.0.2.3 may not send for exp.example");
	CHECK_STR(a.identity, "mailfrom");
	CHECK_STR(a.address, "u@exp.example");
}

static void
test_record_check(void)
{
	static const char *const good[] = {
		"v=spf1",
		"v=spf1 -all",
		"V=SPF1 +ALL",
		"v=spf1 include:_spf.google.com ~all",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 mx a:mail.%{d} -all",
		"v=spf1 exists:%{i}.%{l1r+-}._spf.%{d} -all",
		"v=spf1 redirect=_spf.example.com",
		"v=spf1 ptr ?all",
		"v=spf1 a/24 mx/24//64 mx:mx.example.com//0 -all",
		"v=spf1 ip4:0.0.0.0/0 -all  ",
		"v=spf1 -all exp=explain._spf.%{d}",
		"v=spf1 foo=%{c}bar -all",
		"v=spf1 a:example.com. -all",
		"v=spf1 a:x.1-2 -all",
		"v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all",
		"v=spf1 -include:a.example ~exists:b.example",
	};
	static const char *const bad[] = {
		"v=spf10 -all",
		"v=spf1 foo -all",
		"v=spf1 all:x",
		"v=spf1 include",
		"v=spf1 include:",
		"v=spf1 include:example",
		"v=spf1 a:192.0.2.1",
		"v=spf1 a:host.example/33",
		"v=spf1 a:host.example//129",
		"v=spf1 a/024",
		"v=spf1 ip4:192.0.2.1/33",
		"v=spf1 ip4:192.0.2.01",
		"v=spf1 ip4:192.0.2",
		"v=spf1 ip6:2001:db8::/129",
		"v=spf1 ip6:zz::1",
		"v=spf1 exp=",
		"v=spf1 redirect=a.example redirect=b.example",
		"v=spf1 exists:%{t}.example.org",
		"v=spf1 exists:%{d0}.example.org",
		"v=spf1 exists:%{x}.example.org",
		"v=spf1 exists:%{d}.example.%",
		"v=spf1 a:exa\x01mple.com",
		"v=spf1 =x",
		"v=spf1 a:ex.-com",
	};
	char why[128];

	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		if (spf_record_check(good[i], why, sizeof(why)) != 0) {
			printf("#   should be valid: %s (%s)\n", good[i], why);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (spf_record_check(bad[i], why, sizeof(why)) == 0) {
			printf("#   should be invalid: %s\n", bad[i]);
			CHECK(0);
		}
	}
}

static void
rewrite_is(const char *rec, int family, const char *want)
{
	char *got = spf_record_rewrite(rec, family);

	if (want == NULL) {
		if (got != NULL)
			printf("#   %s: got \"%s\", want no change\n", rec, got);
		CHECK(got == NULL);
	} else {
		CHECK_STR(got, want);
	}
	free(got);
}

static void
test_record_rewrite(void)
{
	rewrite_is("v=spf1 -all", AF_INET, NULL);
	rewrite_is("v=spf1", AF_INET, "v=spf1 ");
	rewrite_is("v=spf1 ip4:1.2.3.4/0 -all", AF_INET,
	    "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all");
	rewrite_is("v=spf1 -ip6:2001:db8::/0 +all", AF_INET6,
	    "v=spf1 -ip6:::/1 -ip6:8000::/1 +all");
	rewrite_is("v=spf1 ~a/0 -all", AF_INET,
	    "v=spf1 ~a:%{d}." SPF_CIDR0_SUFFIX " -all");
	rewrite_is("v=spf1 mx:m.example./0//64 -all", AF_INET,
	    "v=spf1 mx:m.example." SPF_CIDR0_SUFFIX " -all");
	rewrite_is("v=spf1 mx:m.example/0//64 -all", AF_INET6,
	    "v=spf1 mx:m.example//64 -all");
	rewrite_is("v=spf1 a/24//0 -all", AF_INET, "v=spf1 a/24 -all");
	rewrite_is("v=spf1 a/24//64 -all", AF_INET, NULL);
}

/* ---- the pool ---- */

/* A layer that takes 1.5 s to answer anything about slow.example. */
static SPF_dns_rr_t *
slow_lookup(SPF_dns_server_t *s, const char *domain, ns_type type, int cache)
{
	if (strstr(domain, "slow.example") != NULL)
		usleep(1500 * 1000);
	return SPF_dns_lookup(s->layer_below, domain, type, cache);
}

static void
slow_destroy(SPF_dns_server_t *s)
{
	free(s);
}

static SPF_dns_server_t *
make_slow_zone(void *arg)
{
	SPF_dns_server_t *s = calloc(1, sizeof(*s));

	s->destroy = slow_destroy;
	s->lookup = slow_lookup;
	s->layer_below = make_zone(arg);
	s->name = "slow";
	return s;
}

struct got {
	int  calls;
	enum spf_result result;
	char text[256];
};

static void
on_done(void *ctx, const struct spf_answer *a)
{
	struct got *g = ctx;

	g->calls++;
	g->result = a->result;
	snprintf(g->text, sizeof(g->text), "%s", a->text);
}

static void
query(struct spf_query *q, const char *ip, const char *sender)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->ip, sizeof(q->ip), "%s", ip);
	snprintf(q->helo, sizeof(q->helo), "client.example");
	snprintf(q->sender, sizeof(q->sender), "%s", sender);
}

/* Run the loop side until nothing is pending or ms passed. */
static void
drive(struct spf_pool *p, int ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)ms;

	while (spf_pool_pending(p) > 0 && monotonic_ms() < end) {
		struct pollfd pfd = { .fd = spf_pool_fd(p), .events = POLLIN };
		if (poll(&pfd, 1, 50) > 0)
			spf_pool_complete(p);
		spf_pool_expire(p, monotonic_ms());
	}
}

static void
test_pool(void)
{
	struct spf_pool *p = spf_pool_new(3, 5000, "mx.test", make_zone, NULL);
	struct got g[6];
	struct spf_query q;

	CHECK(p != NULL);
	if (p == NULL)
		return;
	memset(g, 0, sizeof(g));
	query(&q, "192.0.2.1", "a@pass.example");
	spf_pool_submit(p, &q, on_done, &g[0]);
	query(&q, "192.0.2.2", "a@pass.example");
	spf_pool_submit(p, &q, on_done, &g[1]);
	query(&q, "192.0.2.1", "a@servfail.example");
	spf_pool_submit(p, &q, on_done, &g[2]);
	query(&q, "192.0.2.1", "a@syntax.example");
	spf_pool_submit(p, &q, on_done, &g[3]);
	query(&q, "192.0.2.1", "a@incl.example");
	uint64_t id = spf_pool_submit(p, &q, on_done, &g[4]);
	spf_pool_cancel(p, id);
	CHECK_INT(spf_pool_pending(p), 4);
	drive(p, 5000);
	CHECK_INT(spf_pool_pending(p), 0);
	CHECK_INT(g[0].calls, 1);
	CHECK_STR(spf_result_name(g[0].result), "pass");
	CHECK_STR(spf_result_name(g[1].result), "fail");
	CHECK_STR(spf_result_name(g[2].result), "temperror");
	CHECK_STR(spf_result_name(g[3].result), "permerror");
	CHECK_INT(g[4].calls, 0);
	spf_pool_free(p);
}

static void
test_pool_timeout(void)
{
	struct spf_pool *p = spf_pool_new(1, 300, "mx.test", make_slow_zone,
	    NULL);
	struct got slow, fast;
	struct spf_query q;
	uint64_t t0 = monotonic_ms();

	CHECK(p != NULL);
	if (p == NULL)
		return;
	memset(&slow, 0, sizeof(slow));
	memset(&fast, 0, sizeof(fast));
	query(&q, "192.0.2.1", "a@slow.example");
	spf_pool_submit(p, &q, on_done, &slow);
	/* Queued behind the slow one on the only thread: it times out too,
	 * and the thread then skips it. */
	query(&q, "192.0.2.1", "a@pass.example");
	spf_pool_submit(p, &q, on_done, &fast);
	drive(p, 3000);
	CHECK(monotonic_ms() - t0 < 1200);
	CHECK_INT(slow.calls, 1);
	CHECK_STR(spf_result_name(slow.result), "temperror");
	CHECK(strstr(slow.text, "timeout") != NULL);
	CHECK_INT(fast.calls, 1);
	CHECK_STR(spf_result_name(fast.result), "temperror");
	/* The thread's late answer is not delivered a second time. */
	usleep(1600 * 1000);
	spf_pool_complete(p);
	CHECK_INT(slow.calls, 1);
	spf_pool_free(p);
}

static void
test_result_names(void)
{
	enum spf_result r;

	CHECK_INT(spf_result_parse("SoftFail", &r), 0);
	CHECK_INT(r, SPF_RES_SOFTFAIL);
	CHECK_INT(spf_result_parse("bogus", &r), -1);
	CHECK_STR(spf_result_name(SPF_RES_TEMPERROR), "temperror");
}

int
main(void)
{
	checker = spf_checker_new("mx.test", make_zone(NULL));
	if (checker == NULL) {
		printf("Bail out! no SPF checker\n");
		return 1;
	}
	RUN(test_results);
	RUN(test_include_redirect);
	RUN(test_errors_mapped);
	RUN(test_rfc_cidr_zero);
	RUN(test_rfc_syntax);
	RUN(test_rfc_other);
	RUN(test_null_sender);
	RUN(test_explanation);
	RUN(test_record_check);
	RUN(test_record_rewrite);
	RUN(test_pool);
	RUN(test_pool_timeout);
	RUN(test_result_names);
	spf_checker_free(checker);
	return unit_done();
}
