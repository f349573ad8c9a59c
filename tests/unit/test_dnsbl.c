/*
 * test_dnsbl — site syntax, query names and answer filters of the DNS
 * block and allow lists.
 */
#include <string.h>

#include "common/dns_answer.h"
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

/* A reply to "2.0.0.127.zen.test A": the header, the question, and an
 * answer record per (type, rdata) of rrs, its name a pointer to the
 * question's.  Returns the length. */
struct rr_spec {
	unsigned             type;
	unsigned             rdlen;
	const unsigned char *rdata;
};

static int
reply(unsigned char *out, const struct rr_spec *rrs, unsigned n)
{
	static const unsigned char head[] = {
		0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0,
		1, '2', 1, '0', 1, '0', 3, '1', '2', '7', 3, 'z', 'e', 'n',
		4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	};
	int len = (int)sizeof(head);

	memcpy(out, head, sizeof(head));
	out[7] = (unsigned char)n;
	for (unsigned i = 0; i < n; i++) {
		unsigned char rr[] = { 0xc0, 0x0c, 0, (unsigned char)rrs[i].type,
		    0, 1, 0, 0, 0x0e, 0x10, 0, (unsigned char)rrs[i].rdlen };

		memcpy(out + len, rr, sizeof(rr));
		len += (int)sizeof(rr);
		memcpy(out + len, rrs[i].rdata, rrs[i].rdlen);
		len += (int)rrs[i].rdlen;
	}
	return len;
}

static void
test_answers(void)
{
	static const unsigned char a2[] = { 127, 0, 0, 2 };
	static const unsigned char a10[] = { 127, 0, 0, 10 };
	static const unsigned char a99[] = { 127, 0, 0, 99 };
	static const unsigned char cname[] = { 1, 'x', 0 };
	unsigned char msg[512];
	char answer[16];
	int len;

	CHECK_INT(parse("zen.test=127.0.0.[2..11]"), 0);
	/* The first A record in the filter, past a CNAME and one outside. */
	len = reply(msg, (const struct rr_spec[]){ { 5, 3, cname },
	    { 1, 4, a99 }, { 1, 4, a10 }, { 1, 4, a2 } }, 4);
	CHECK_INT(dnsbl_read_answer(&site, msg, len, answer, sizeof(answer)),
	    DNSBL_LISTED);
	CHECK_STR(answer, "127.0.0.10");
	/* Only answers outside the filter, or none: not listed. */
	len = reply(msg, (const struct rr_spec[]){ { 1, 4, a99 } }, 1);
	CHECK_INT(dnsbl_read_answer(&site, msg, len, answer, sizeof(answer)),
	    DNSBL_NOT_LISTED);
	len = reply(msg, NULL, 0);
	CHECK_INT(dnsbl_read_answer(&site, msg, len, answer, sizeof(answer)),
	    DNSBL_NOT_LISTED);
	/* An A record of another length is no address. */
	len = reply(msg, (const struct rr_spec[]){ { 1, 3, a2 } }, 1);
	CHECK_INT(dnsbl_read_answer(&site, msg, len, answer, sizeof(answer)),
	    DNSBL_NOT_LISTED);
	/* Malformed: cut inside the record, more records announced than
	 * there are, shorter than a header. */
	len = reply(msg, (const struct rr_spec[]){ { 1, 4, a2 } }, 1);
	CHECK_INT(dnsbl_read_answer(&site, msg, len - 1, answer,
	    sizeof(answer)), DNSBL_FAILED);
	len = reply(msg, (const struct rr_spec[]){ { 1, 4, a99 } }, 1);
	msg[7] = 2;
	CHECK_INT(dnsbl_read_answer(&site, msg, len, answer, sizeof(answer)),
	    DNSBL_FAILED);
	CHECK_INT(dnsbl_read_answer(&site, msg, 11, answer, sizeof(answer)),
	    DNSBL_FAILED);
}

/* res_query(3) reports a truncated answer's whole length: the parsers
 * must be given only what the buffer holds. */
static void
test_answer_len(void)
{
	CHECK_INT(dns_answer_len(-1, 512), -1);
	CHECK_INT(dns_answer_len(0, 512), 0);
	CHECK_INT(dns_answer_len(300, 512), 300);
	CHECK_INT(dns_answer_len(512, 512), 512);
	CHECK_INT(dns_answer_len(4000, 512), 512);
}

int
main(void)
{
	RUN(test_site_syntax);
	RUN(test_query_names);
	RUN(test_answers);
	RUN(test_answer_len);
	return unit_done();
}
