/*
 * Unit tests of the built-in checks: network lists, the HELO syntax
 * check, and the per-client rate counters (with a fake clock).
 */
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "smtp/checks.h"
#include "common/util.h"
#include "unit.h"

static void
test_netlist(void)
{
	char *nets[] = { "192.0.2.0/24", "2001:db8::/32", "198.51.100.7",
	    "10.0.0.0/8", "::1" };
	struct netlist *l;
	size_t bad;
	const char *why;

	l = netlist_new(nets, ARRAY_LEN(nets), &bad, &why);
	CHECK(l != NULL);
	CHECK(netlist_contains(l, "192.0.2.1"));
	CHECK(netlist_contains(l, "192.0.2.255"));
	CHECK(!netlist_contains(l, "192.0.3.1"));
	CHECK(netlist_contains(l, "::ffff:192.0.2.9"));
	CHECK(netlist_contains(l, "2001:db8:ffff::1"));
	CHECK(!netlist_contains(l, "2001:db9::1"));
	CHECK(netlist_contains(l, "198.51.100.7"));
	CHECK(!netlist_contains(l, "198.51.100.8"));
	CHECK(netlist_contains(l, "10.200.3.4"));
	CHECK(netlist_contains(l, "::1"));
	CHECK(!netlist_contains(l, "127.0.0.1"));
	CHECK(!netlist_contains(l, "garbage"));
	CHECK(!netlist_contains(NULL, "192.0.2.1"));
	netlist_free(l);

	char *zero[] = { "0.0.0.0/0" };
	l = netlist_new(zero, 1, &bad, &why);
	CHECK(netlist_contains(l, "203.0.113.1"));
	CHECK(!netlist_contains(l, "2001:db8::1"));
	netlist_free(l);

	char *odd[] = { "192.0.2.0/25", "192.0.2.128/26", "2001:db8::/127" };
	l = netlist_new(odd, 3, &bad, &why);
	CHECK(netlist_contains(l, "192.0.2.127"));
	CHECK(netlist_contains(l, "192.0.2.191"));
	CHECK(!netlist_contains(l, "192.0.2.192"));
	CHECK(netlist_contains(l, "2001:db8::1"));
	CHECK(!netlist_contains(l, "2001:db8::2"));
	netlist_free(l);

	static const char *const bads[] = { "192.0.2.1/24", "192.0.2.0/33",
	    "2001:db8::/129", "example.com", "", "192.0.2.0/", "192.0.2.0/x",
	    "10.0.0.0/-1" };
	for (size_t i = 0; i < ARRAY_LEN(bads); i++) {
		char *one[] = { "127.0.0.0/8", (char *)bads[i] };
		l = netlist_new(one, 2, &bad, &why);
		if (l != NULL)
			printf("#   accepted \"%s\"\n", bads[i]);
		CHECK(l == NULL);
		CHECK_INT(bad, 1);
		netlist_free(l);
	}
}

static void
test_helo(void)
{
	static const char *const good[] = { "mail.example.com", "localhost",
	    "a", "x-1.example", "[192.0.2.1]", "[IPv6:2001:db8::1]",
	    "[ipv6:::1]", "123.example", "EXAMPLE.COM" };
	static const char *const bad[] = { "", "mail.example.com.", ".example",
	    "a..b", "-a.example", "a-.example", "my_pc", "[192.0.2.1",
	    "[192.0.2.256]", "[IPv6:192.0.2.1]", "[2001:db8::1]", "ex ample",
	    "b\xc3\xa9.example", "[]", "foo@bar" };
	char longlabel[80], longname[300];

	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		if (!helo_valid(good[i]))
			printf("#   refused \"%s\"\n", good[i]);
		CHECK(helo_valid(good[i]));
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (helo_valid(bad[i]))
			printf("#   accepted \"%s\"\n", bad[i]);
		CHECK(!helo_valid(bad[i]));
	}
	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".example");
	CHECK(!helo_valid(longlabel));
	strcpy(longlabel + 63, ".example");     /* 63 octets: the most */
	CHECK(helo_valid(longlabel));
	for (size_t i = 0; i < 256; i++)
		longname[i] = i % 10 == 9 ? '.' : 'a';
	longname[256] = 'a';
	longname[257] = '\0';
	CHECK(!helo_valid(longname));
}

static void
test_rate(void)
{
	struct ratelimit *r = ratelimit_new(3);
	uint64_t t = 10 * 60000;    /* the start of a minute */

	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t), RATE_OK);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 1), RATE_OK);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 2), RATE_OK);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 3), RATE_OVER);
	/* Refused events do not count: still over, not further over. */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 4), RATE_OVER);
	/* Others are not affected. */
	CHECK_INT(ratelimit_hit(r, "192.0.2.2", t + 5), RATE_OK);
	/* Next minute, at its start: the previous one still weighs fully. */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 60000), RATE_OVER);
	/* Two thirds in: 3 * 1/3 = 1 from before, room for 2 more. */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 100000), RATE_OK);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 100001), RATE_OK);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 100002), RATE_OVER);
	/* A long pause forgets everything. */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 400000), RATE_OK);
	CHECK_INT(ratelimit_clients(r), 2);
	ratelimit_expire(r, t + 400000 + 60000);
	CHECK_INT(ratelimit_clients(r), 1);
	ratelimit_expire(r, t + 400000 + 120000);
	CHECK_INT(ratelimit_clients(r), 0);
	ratelimit_free(r);

	/* ratelimit_tick() expires at most once a minute. */
	r = ratelimit_new(3);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t), RATE_OK);
	ratelimit_tick(r, t + 100000);          /* idle 100 s: kept */
	CHECK_INT(ratelimit_clients(r), 1);
	ratelimit_tick(r, t + 150000);          /* idle 150 s, 50 s later */
	CHECK_INT(ratelimit_clients(r), 1);
	ratelimit_tick(r, t + 160000);          /* a minute later: expired */
	CHECK_INT(ratelimit_clients(r), 0);
	ratelimit_free(r);

	r = ratelimit_new(0);
	for (int i = 0; i < 1000; i++)
		CHECK_INT(ratelimit_hit(r, "192.0.2.1", t), RATE_OK);
	CHECK(!ratelimit_reached(r, "192.0.2.1", t));
	ratelimit_free(r);
}

/* ratelimit_reached() looks without counting. */
static void
test_rate_reached(void)
{
	struct ratelimit *r = ratelimit_new(2);
	uint64_t t = 10 * 60000;

	CHECK(!ratelimit_reached(r, "192.0.2.1", t));      /* unknown */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t), RATE_OK);
	CHECK(!ratelimit_reached(r, "192.0.2.1", t + 1));
	CHECK(!ratelimit_reached(r, "192.0.2.1", t + 2)); /* still one */
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 3), RATE_OK);
	CHECK(ratelimit_reached(r, "192.0.2.1", t + 4));
	CHECK(!ratelimit_reached(r, "192.0.2.2", t + 4));
	/* Half of the next minute: 2 * 1/2 = 1 left, room for one. */
	CHECK(!ratelimit_reached(r, "192.0.2.1", t + 90000));
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t + 90001), RATE_OK);
	CHECK(ratelimit_reached(r, "192.0.2.1", t + 90002));
	ratelimit_free(r);
}

static void
test_rate_bounded(void)
{
	struct ratelimit *r = ratelimit_new(1);
	char ip[64];
	uint64_t t = 60000;

	for (unsigned i = 0; i < RATE_MAX_CLIENTS; i++) {
		snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 255,
		    i & 255);
		ratelimit_hit(r, ip, t);
	}
	CHECK_INT(ratelimit_clients(r), RATE_MAX_CLIENTS);
	CHECK_INT(ratelimit_hit(r, "192.0.2.1", t), RATE_UNTRACKED);
	CHECK_INT(ratelimit_hit(r, "10.0.0.1", t), RATE_OVER);
	ratelimit_free(r);
}

/* A stress setting applies only where it is the lower. */
static void
test_stress_lower(void)
{
	struct mxconf c;

	memset(&c, 0, sizeof(c));
	c.greet_pause = 6;
	c.stress_greet_pause = 2;
	c.max_errors = 20;
	c.stress_max_errors = 1;
	CHECK_INT(stress_greet_pause(&c), 2);
	CHECK_INT(stress_max_errors(&c), 1);
	c.greet_pause = 0;
	c.max_errors = 1;
	c.stress_max_errors = 5;
	CHECK_INT(stress_greet_pause(&c), 0);
	CHECK_INT(stress_max_errors(&c), 1);
}

static void
test_stress_next(void)
{
	/* 80%: on at 800 of 1000, off below 700, not in between. */
	CHECK(!stress_next(false, 799, 1000, 80));
	CHECK(stress_next(false, 800, 1000, 80));
	CHECK(stress_next(true, 700, 1000, 80));
	CHECK(!stress_next(true, 699, 1000, 80));
	CHECK(!stress_next(false, 750, 1000, 80));
	/* Under 20%: off at half the threshold; nothing in use is off. */
	CHECK(stress_next(false, 2, 10, 20));
	CHECK(stress_next(true, 1, 10, 20));
	CHECK(!stress_next(true, 0, 10, 20));
	CHECK(stress_next(false, 1, 100, 1));
	CHECK(stress_next(true, 1, 100, 1));
	CHECK(!stress_next(true, 0, 100, 1));
	/* 0: never; 100: only when full. */
	CHECK(!stress_next(false, 1000, 1000, 0));
	CHECK(!stress_next(false, 999, 1000, 100));
	CHECK(stress_next(false, 1000, 1000, 100));
	/* No overflow at the largest settings. */
	CHECK(stress_next(false, 1000000, 1000000, 100));
}

static void
test_fair_share(void)
{
	/* An address holding none always gets a slot while one is free. */
	CHECK(!fair_share_reached(0, 999, 1000, 10));
	CHECK(!fair_share_reached(0, 999, 1000, 100));
	/* 10% of 200 free: 19 may take one more, 20 may not. */
	CHECK(!fair_share_reached(19, 800, 1000, 10));
	CHECK(fair_share_reached(20, 800, 1000, 10));
	CHECK(fair_share_reached(1, 1000, 1000, 10));
	CHECK(!fair_share_reached(50, 800, 1000, 0));
}

/*
 * The claim of the README and of limits.fair_share's doc: 20 addresses
 * taking every slot they can, one at a time in turn, from 800 of 1000
 * in use (stress at 80%) with a share of 10%, stop with about a third
 * of the slots still free, and a 21st address still gets one.
 */
static void
test_fair_share_twenty_addresses(void)
{
	unsigned holds[20], in_use = 0, i;
	bool more = true;

	for (i = 0; i < 20; i++)
		holds[i] = 40;
	in_use = 800;
	while (more) {
		more = false;
		for (i = 0; i < 20; i++) {
			if (in_use < 1000 && !fair_share_reached(holds[i],
			    in_use, 1000, 10)) {
				holds[i]++;
				in_use++;
				more = true;
			}
		}
	}
	CHECK_INT(in_use, 800);     /* 40 each: 4000 >= 10% of 200 */
	CHECK(!fair_share_reached(0, in_use, 1000, 10));
	/* From nothing, with the share from the start: a third left. */
	for (i = 0; i < 20; i++)
		holds[i] = 0;
	in_use = 0;
	for (more = true; more;) {
		more = false;
		for (i = 0; i < 20; i++) {
			if (!fair_share_reached(holds[i], in_use, 1000,
			    10)) {
				holds[i]++;
				in_use++;
				more = true;
			}
		}
	}
	CHECK_INT(in_use, 670);     /* 33 or 34 each, 330 free */
}

static void
test_client_key(void)
{
	char k[80];

	client_key("192.0.2.7", 64, k, sizeof(k));
	CHECK_STR(k, "192.0.2.7");
	client_key("::ffff:192.0.2.7", 64, k, sizeof(k));
	CHECK_STR(k, "::ffff:192.0.2.7");
	client_key("2001:db8:1:2:3:4:5:6", 64, k, sizeof(k));
	CHECK_STR(k, "2001:db8:1:2::/64");
	client_key("2001:db8:1:2:ffff:abcd:5:6", 84, k, sizeof(k));
	CHECK_STR(k, "2001:db8:1:2:ffff:a000::/84");
	client_key("2001:db8:1:2:3:4:5:6", 128, k, sizeof(k));
	CHECK_STR(k, "2001:db8:1:2:3:4:5:6");
	client_key("2001:db8::1", 1, k, sizeof(k));
	CHECK_STR(k, "::/1");
	client_key("not an address", 64, k, sizeof(k));
	CHECK_STR(k, "not an address");
}

int
main(void)
{
	RUN(test_netlist);
	RUN(test_helo);
	RUN(test_rate);
	RUN(test_rate_reached);
	RUN(test_rate_bounded);
	RUN(test_stress_next);
	RUN(test_stress_lower);
	RUN(test_fair_share);
	RUN(test_fair_share_twenty_addresses);
	RUN(test_client_key);
	return unit_done();
}
