/*
 * test_dnsbl — site syntax, query names and answer filters of the DNS
 * block and allow lists.
 */
#include <string.h>

#include "smtp/dnsbl.h"
#include "unit.h"

static struct dnsbl_site site;
static char err[160];

static int
parse(const char *spec)
{
	dnsbl_site_free(&site);
	return dnsbl_site_parse(spec, &site, err, sizeof(err));
}

static bool
lists(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	const uint8_t addr[4] = { a, b, c, d };

	return dnsbl_site_matches(&site, addr);
}

static void
test_site_syntax(void)
{
	CHECK_INT(parse("Zen.Example"), 0);
	CHECK_STR(site.domain, "zen.example");
	CHECK_INT(site.weight, 1);
	CHECK(!site.filtered);
	CHECK(lists(127, 0, 0, 2) && lists(127, 255, 255, 254));

	CHECK_INT(parse("zen.example=127.0.0.[2..11]*3"), 0);
	CHECK_INT(site.weight, 3);
	CHECK(lists(127, 0, 0, 2) && lists(127, 0, 0, 11));
	CHECK(!lists(127, 0, 0, 1) && !lists(127, 0, 0, 12));
	CHECK(!lists(127, 255, 255, 2) && !lists(128, 0, 0, 2));

	CHECK_INT(parse("list.dnswl.example=127.0.[0..255].[2;3;10..12]*-2"),
	    0);
	CHECK_INT(site.weight, -2);
	CHECK(lists(127, 0, 7, 3) && lists(127, 0, 200, 11));
	CHECK(!lists(127, 0, 7, 4) && !lists(127, 1, 7, 3));

	CHECK_INT(parse("bl.example*-1000"), 0);
	CHECK_INT(site.weight, -1000);

	/* Each error says what is wrong. */
	CHECK_INT(parse(""), -1);
	CHECK_INT(parse("bad..example"), -1);
	CHECK(strstr(err, "not a DNS domain") != NULL);
	CHECK_INT(parse("bl example"), -1);
	CHECK_INT(parse("bl.example*"), -1);
	CHECK_INT(parse("bl.example*x"), -1);
	CHECK(strstr(err, "bad weight") != NULL);
	CHECK_INT(parse("bl.example*1001"), -1);
	CHECK_INT(parse("bl.example="), -1);
	CHECK_INT(parse("bl.example=127.0.0"), -1);
	CHECK(strstr(err, "bad filter") != NULL);
	CHECK_INT(parse("bl.example=127.0.0.256"), -1);
	CHECK_INT(parse("bl.example=127.0.0.[5..2]"), -1);
	CHECK_INT(parse("bl.example=127.0.0.[2..]"), -1);
	CHECK_INT(parse("bl.example=127.0.0.[2"), -1);
	CHECK_INT(parse("bl.example=127.0.0.2.5"), -1);
	CHECK_INT(parse("bl.example=127.0.0.2x"), -1);
	dnsbl_site_free(&site);
}

static void
test_query_names(void)
{
	char name[300];

	CHECK_INT(dnsbl_client_name("192.0.2.99", "zen.example", name,
	    sizeof(name)), 0);
	CHECK_STR(name, "99.2.0.192.zen.example");
	/* RFC 5782 2.4: IPv6 by nibbles, least significant first. */
	CHECK_INT(dnsbl_client_name("2001:db8:1:2::ab", "bl.example", name,
	    sizeof(name)), 0);
	CHECK_STR(name, "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0."
	    "8.b.d.0.1.0.0.2.bl.example");
	CHECK_INT(dnsbl_client_name("not an ip", "bl.example", name,
	    sizeof(name)), -1);
	CHECK_INT(dnsbl_client_name("192.0.2.1", "bl.example", name, 10), -1);

	CHECK_INT(dnsbl_domain_name("spam.example", "dbl.example", name,
	    sizeof(name)), 0);
	CHECK_STR(name, "spam.example.dbl.example");
	CHECK_INT(dnsbl_domain_name("[192.0.2.1]", "dbl.example", name,
	    sizeof(name)), -1);
	CHECK_INT(dnsbl_domain_name("", "dbl.example", name, sizeof(name)), -1);
	CHECK_INT(dnsbl_domain_name("a b.example", "dbl.example", name,
	    sizeof(name)), -1);
}

int
main(void)
{
	RUN(test_site_syntax);
	RUN(test_query_names);
	return unit_done();
}
