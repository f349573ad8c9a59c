/*
 * test_addr — RFC 5321 path parsing: what is accepted, what is refused,
 * and what the parsed address looks like.
 */
#include <stdbool.h>
#include <string.h>

#include "common/addr.h"
#include "unit.h"

static const struct addr_parse_opts plain = { false, false, false };
static const struct addr_parse_opts mail_opts = { true, false, false };
static const struct addr_parse_opts rcpt_opts = { false, true, false };
static const struct addr_parse_opts utf8_opts = { true, true, true };

static struct mailaddr a;
static size_t used;
static const char *why;

static int
parse(const char *text, const struct addr_parse_opts *o)
{
	why = NULL;
	return addr_parse_path(text, o, &a, &used, &why);
}

/* Accepted, with this local part and domain, consuming the whole text. */
static bool
ok(const char *text, const struct addr_parse_opts *o, const char *local,
    const char *domain)
{
	if (parse(text, o) != 0) {
		printf("#   %s refused: %s\n", text, why ? why : "(no reason)");
		return false;
	}
	if (strcmp(a.local, local) != 0 || strcmp(a.domain, domain) != 0) {
		printf("#   %s parsed as [%s] [%s]\n", text, a.local, a.domain);
		return false;
	}
	return used == strlen(text);
}

/* Refused, with a reason. */
static bool
bad(const char *text, const struct addr_parse_opts *o)
{
	if (parse(text, o) == 0) {
		printf("#   %s accepted as [%s] [%s]\n", text, a.local, a.domain);
		return false;
	}
	return why != NULL && why[0] != '\0' && used == 0;
}

static char *
repeat(char *buf, char c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

static void
test_simple(void)
{
	CHECK(ok("<user@example.com>", &plain, "user", "example.com"));
	CHECK(ok("<first.last+tag@sub.example.org>", &plain, "first.last+tag",
	    "sub.example.org"));
	CHECK(ok("<a@b>", &plain, "a", "b"));
	CHECK(ok("<x@1.example>", &plain, "x", "1.example"));
	CHECK(ok("<!#$&'*+-/=?^_`{|}~@a-b.example>", &plain,
	    "!#$&'*+-/=?^_`{|}~", "a-b.example"));
	CHECK(!a.is_null);
}

static void
test_domain_lowercased_local_kept(void)
{
	CHECK(ok("<John.Doe@Example.COM>", &plain, "John.Doe", "example.com"));
}

static void
test_bad_syntax(void)
{
	CHECK(bad("user@example.com", &plain));
	CHECK(bad("", &plain));
	CHECK(bad("<", &plain));
	CHECK(bad("<user@example.com", &plain));
	CHECK(bad("<user@example.com extra>", &plain));
	CHECK(bad("<user>", &plain));
	CHECK(bad("<user@>", &plain));
	CHECK(bad("<@example.com>", &plain));
	CHECK(bad("<.user@example.com>", &plain));
	CHECK(bad("<user.@example.com>", &plain));
	CHECK(bad("<us..er@example.com>", &plain));
	CHECK(bad("<us er@example.com>", &plain));
	CHECK(bad("<us(er)@example.com>", &plain));
	CHECK(bad("<user@-example.com>", &plain));
	CHECK(bad("<user@example-.com>", &plain));
	CHECK(bad("<user@example..com>", &plain));
	CHECK(bad("<user@example.com.>", &plain));
	CHECK(bad("<user@.example.com>", &plain));
	CHECK(bad("<user@exa_mple.com>", &plain));
	CHECK(bad("<user@example.com>>", &plain));
	CHECK(bad("<<user@example.com>", &plain));
	CHECK(bad(" <user@example.com>", &plain));
	CHECK(bad("<user@example.com\r>", &plain));
	CHECK(bad("<user\"@example.com>", &plain));
}

static void
test_several_at(void)
{
	CHECK(bad("<a@b@example.com>", &plain));
	CHECK(bad("<a@@example.com>", &plain));
	/* Quoted, '@' is just a character of the local part. */
	CHECK(ok("<\"a@b\"@example.com>", &plain, "\"a@b\"", "example.com"));
}

static void
test_percent_kept(void)
{
	/* The "percent hack" is not interpreted here: route matching sees
	 * the local part as sent and decides. */
	CHECK(ok("<user%other.example@example.com>", &plain,
	    "user%other.example", "example.com"));
}

static void
test_trailing_and_consumed(void)
{
	CHECK(parse("<a@b.example> SIZE=100 BODY=8BITMIME", &mail_opts) == 0);
	CHECK_INT(used, strlen("<a@b.example>"));
	CHECK(parse("<> SIZE=100", &mail_opts) == 0);
	CHECK_INT(used, 2);
	CHECK(a.is_null);
	CHECK(bad("<a@b.example>SIZE=100", &mail_opts));
	CHECK(bad("<a@b.example>x", &mail_opts));
	CHECK(bad("<>x", &mail_opts));
	CHECK(bad("<a@b.example>\t", &mail_opts));
}

static void
test_null_path(void)
{
	CHECK(ok("<>", &mail_opts, "", ""));
	CHECK(a.is_null);
	CHECK(bad("<>", &plain));
	CHECK(bad("<>", &rcpt_opts));
	CHECK(bad("< >", &mail_opts));
}

static void
test_postmaster(void)
{
	CHECK(ok("<postmaster>", &rcpt_opts, "postmaster", ""));
	CHECK(!a.is_null);
	CHECK(ok("<Postmaster>", &rcpt_opts, "Postmaster", ""));
	CHECK(ok("<POSTMASTER>", &rcpt_opts, "POSTMASTER", ""));
	CHECK(bad("<postmaster>", &mail_opts));
	CHECK(bad("<postmistress>", &rcpt_opts));
	CHECK(bad("<\"postmaster\">", &rcpt_opts));
	CHECK(bad("<@relay.example:postmaster>", &rcpt_opts));
	/* With a domain it is an ordinary address. */
	CHECK(ok("<postmaster@example.com>", &plain, "postmaster",
	    "example.com"));
}

static void
test_source_route(void)
{
	CHECK(ok("<@relay.example:user@example.com>", &plain, "user",
	    "example.com"));
	CHECK(ok("<@r1.example,@r2.example:user@example.com>", &plain, "user",
	    "example.com"));
	CHECK(bad("<@relay.example user@example.com>", &plain));
	CHECK(bad("<@:user@example.com>", &plain));
	CHECK(bad("<@relay.example,user@example.com>", &plain));
	CHECK(bad("<@relay.example,:user@example.com>", &plain));
	CHECK(bad("<@[192.0.2.1]:user@example.com>", &plain));
	CHECK(bad("<@relay.example:>", &plain));
}

static void
test_quoted_local(void)
{
	CHECK(ok("<\"john doe\"@example.com>", &plain, "\"john doe\"",
	    "example.com"));
	CHECK(ok("<\"a\\\"b\"@example.com>", &plain, "\"a\\\"b\"",
	    "example.com"));
	CHECK(ok("<\"a\\\\b\"@example.com>", &plain, "\"a\\\\b\"",
	    "example.com"));
	CHECK(ok("<\"<x>\"@example.com>", &plain, "\"<x>\"", "example.com"));
	CHECK(ok("<\"\"@example.com>", &plain, "\"\"", "example.com"));
	CHECK(bad("<\"unterminated@example.com>", &plain));
	CHECK(bad("<\"a\"b@example.com>", &plain));
	CHECK(bad("<\"tab\there\"@example.com>", &plain));
	CHECK(bad("<\"a\\\x01\"@example.com>", &plain));
	CHECK(bad("<\"a\\", &plain));
}

static void
test_local_length(void)
{
	char local[100], text[400];

	repeat(local, 'x', ADDR_LOCAL_MAX);
	snprintf(text, sizeof(text), "<%s@example.com>", local);
	CHECK(parse(text, &plain) == 0);
	CHECK_INT(strlen(a.local), ADDR_LOCAL_MAX);
	repeat(local, 'x', ADDR_LOCAL_MAX + 1);
	snprintf(text, sizeof(text), "<%s@example.com>", local);
	CHECK(bad(text, &plain));

	/* Quoted: the limit counts what is between the quotes. */
	repeat(local, 'y', ADDR_LOCAL_MAX);
	snprintf(text, sizeof(text), "<\"%s\"@example.com>", local);
	CHECK(parse(text, &plain) == 0);
	CHECK_INT(strlen(a.local), ADDR_LOCAL_MAX + 2);
	repeat(local, 'y', ADDR_LOCAL_MAX + 1);
	snprintf(text, sizeof(text), "<\"%s\"@example.com>", local);
	CHECK(bad(text, &plain));
}

static void
test_domain_length(void)
{
	char label[100], text[600], domain[420];

	/* A label of 63 is fine, 64 is not. */
	repeat(label, 'a', 63);
	snprintf(text, sizeof(text), "<u@%s.example>", label);
	CHECK(parse(text, &plain) == 0);
	repeat(label, 'a', 64);
	snprintf(text, sizeof(text), "<u@%s.example>", label);
	CHECK(bad(text, &plain));

	/* 4 labels of 63 + 3 dots = 255: the longest domain. */
	repeat(label, 'b', 63);
	snprintf(domain, sizeof(domain), "%s.%s.%s.%s", label, label, label,
	    label);
	CHECK_INT(strlen(domain), 255);
	CHECK(addr_domain_valid(domain));
	/* But the path "<u@" + 255 + ">" is 259 > 256. */
	snprintf(text, sizeof(text), "<u@%s>", domain);
	CHECK(bad(text, &plain));

	/* 256 is too long even for a domain alone. */
	snprintf(domain, sizeof(domain), "%s.%s.%s.%s.b", label, label, label,
	    label);
	CHECK(!addr_domain_valid(domain));
}

static void
test_path_length(void)
{
	char local[100], label[100], text[600];

	/* "<" + 64 + "@" + 63.63.61 (189) + ">" = 256: just fits. */
	repeat(local, 'l', 64);
	repeat(label, 'd', 63);
	snprintf(text, sizeof(text), "<%s@%s.%s.%.61s>", local, label, label,
	    label);
	CHECK_INT(strlen(text), 256);
	CHECK(parse(text, &plain) == 0);
	snprintf(text, sizeof(text), "<%s@%s.%s.%.62s>", local, label, label,
	    label);
	CHECK_INT(strlen(text), 257);
	CHECK(bad(text, &plain));
}

static void
test_address_literals(void)
{
	CHECK(ok("<u@[192.0.2.1]>", &plain, "u", "[192.0.2.1]"));
	CHECK(ok("<u@[0.0.0.0]>", &plain, "u", "[0.0.0.0]"));
	CHECK(ok("<u@[255.255.255.255]>", &plain, "u", "[255.255.255.255]"));
	CHECK(ok("<u@[IPv6:2001:db8::1]>", &plain, "u", "[ipv6:2001:db8::1]"));
	CHECK(ok("<u@[ipv6:::1]>", &plain, "u", "[ipv6:::1]"));
	CHECK(ok("<u@[IPv6:2001:DB8:0:0:0:0:0:1]>", &plain, "u",
	    "[ipv6:2001:db8:0:0:0:0:0:1]"));
	CHECK(ok("<u@[IPv6:::ffff:192.0.2.1]>", &plain, "u",
	    "[ipv6:::ffff:192.0.2.1]"));
	CHECK(ok("<u@[IPv6:1:2:3:4:5:6:192.0.2.1]>", &plain, "u",
	    "[ipv6:1:2:3:4:5:6:192.0.2.1]"));

	CHECK(bad("<u@[256.0.0.1]>", &plain));
	CHECK(bad("<u@[192.0.2]>", &plain));
	CHECK(bad("<u@[192.0.2.1.5]>", &plain));
	CHECK(bad("<u@[1922.0.2.1]>", &plain));
	CHECK(bad("<u@[192.0.2.]>", &plain));
	CHECK(bad("<u@[192.0.2.1>", &plain));
	CHECK(bad("<u@[]>", &plain));
	CHECK(bad("<u@[2001:db8::1]>", &plain));
	CHECK(bad("<u@[IPv6:2001:db8:::1]>", &plain));
	CHECK(bad("<u@[IPv6:1:2:3:4:5:6:7:8:9]>", &plain));
	CHECK(bad("<u@[IPv6:fe80::1%eth0]>", &plain));
	CHECK(bad("<u@[IPv6:]>", &plain));
	CHECK(bad("<u@[IPv6:12345::1]>", &plain));
	CHECK(bad("<u@[x-tag:something]>", &plain));
	CHECK(bad("<u@[192.0.2.1]x>", &plain));
	CHECK(bad("<u@[192.0.2.1].example>", &plain));

	CHECK(addr_literal_valid("[192.0.2.1]"));
	CHECK(addr_literal_valid("[IPv6:::1]"));
	CHECK(!addr_literal_valid("192.0.2.1"));
	CHECK(!addr_literal_valid("[192.0.2.1]x"));
	CHECK(!addr_literal_valid("[ 192.0.2.1]"));
}

static void
test_domain_valid(void)
{
	CHECK(addr_domain_valid("example.com"));
	CHECK(addr_domain_valid("a"));
	CHECK(addr_domain_valid("xn--bcher-kva.example"));
	CHECK(addr_domain_valid("1-2.3"));
	CHECK(!addr_domain_valid(""));
	CHECK(!addr_domain_valid("-a.example"));
	CHECK(!addr_domain_valid("a-.example"));
	CHECK(!addr_domain_valid("a..example"));
	CHECK(!addr_domain_valid("example.com."));
	CHECK(!addr_domain_valid("exa mple.com"));
	CHECK(!addr_domain_valid("b\xc3\xbc" "cher.example"));
	CHECK(!addr_domain_valid("[192.0.2.1]"));
}

static void
test_utf8(void)
{
	/* "pelé@exämple.com", "用户@例子.广告" */
	const char *pele = "<pel\xc3\xa9@ex\xc3\xa4mple.com>";
	const char *cjk = "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90."
	    "\xe5\xb9\xbf\xe5\x91\x8a>";

	CHECK(bad(pele, &plain));
	CHECK(bad(cjk, &rcpt_opts));
	CHECK(ok(pele, &utf8_opts, "pel\xc3\xa9", "ex\xc3\xa4mple.com"));
	CHECK(ok(cjk, &utf8_opts, "\xe7\x94\xa8\xe6\x88\xb7",
	    "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a"));
	CHECK(ok("<\"j\xc3\xb6 d\"@example.com>", &utf8_opts,
	    "\"j\xc3\xb6 d\"", "example.com"));
	/* Upper-case ASCII in a U-label domain still folds. */
	CHECK(ok("<a@\xc3\xa4X.EXAMPLE>", &utf8_opts, "a",
	    "\xc3\xa4x.example"));

	/* Not UTF-8: lone continuation, overlong, surrogate, truncated,
	 * above U+10FFFF, Latin-1. */
	CHECK(bad("<\x80@example.com>", &utf8_opts));
	CHECK(bad("<\xc0\xaf@example.com>", &utf8_opts));
	CHECK(bad("<\xe0\x80\xaf@example.com>", &utf8_opts));
	CHECK(bad("<\xed\xa0\x80@example.com>", &utf8_opts));
	CHECK(bad("<\xe4\xbe@example.com>", &utf8_opts));
	CHECK(bad("<\xf4\x90\x80\x80@example.com>", &utf8_opts));
	CHECK(bad("<pel\xe9@example.com>", &utf8_opts));
	CHECK(bad("<a@ex\xe4mple.com>", &utf8_opts));
	CHECK(bad("<a@ex\xc3", &utf8_opts));
}

static void
test_format(void)
{
	char out[ADDR_LOCAL_MAX + ADDR_DOMAIN_MAX + 8];

	CHECK(parse("<User@Example.com>", &plain) == 0);
	addr_format(&a, out, sizeof(out));
	CHECK_STR(out, "User@example.com");
	CHECK(parse("<>", &mail_opts) == 0);
	addr_format(&a, out, sizeof(out));
	CHECK_STR(out, "");
	CHECK(parse("<Postmaster>", &rcpt_opts) == 0);
	addr_format(&a, out, sizeof(out));
	CHECK_STR(out, "Postmaster");
	CHECK(parse("<\"a b\"@[192.0.2.1]>", &plain) == 0);
	addr_format(&a, out, sizeof(out));
	CHECK_STR(out, "\"a b\"@[192.0.2.1]");

	/* Truncation always terminates. */
	CHECK(parse("<abcdef@example.com>", &plain) == 0);
	addr_format(&a, out, 4);
	CHECK_STR(out, "abc");
	addr_format(&a, out, 7);
	CHECK_STR(out, "abcdef");
	addr_format(&a, out, 9);
	CHECK_STR(out, "abcdef@e");
}

static void
test_failure_clears_output(void)
{
	CHECK(parse("<good@example.com>", &plain) == 0);
	CHECK(bad("<bad@example.com", &plain));
	CHECK_STR(a.local, "");
	CHECK_STR(a.domain, "");
}

int
main(void)
{
	RUN(test_simple);
	RUN(test_domain_lowercased_local_kept);
	RUN(test_bad_syntax);
	RUN(test_several_at);
	RUN(test_percent_kept);
	RUN(test_trailing_and_consumed);
	RUN(test_null_path);
	RUN(test_postmaster);
	RUN(test_source_route);
	RUN(test_quoted_local);
	RUN(test_local_length);
	RUN(test_domain_length);
	RUN(test_path_length);
	RUN(test_address_literals);
	RUN(test_domain_valid);
	RUN(test_utf8);
	RUN(test_format);
	RUN(test_failure_clears_output);
	return unit_done();
}
