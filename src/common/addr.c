/*
 * addr — RFC 5321 paths and addresses, parsed strictly.
 *
 * A hand-written recursive-descent parser over the RFC 5321 4.1.2 grammar
 * (Path, A-d-l, Mailbox, Local-part, Domain, address-literal) with the
 * RFC 6531 3.3 extensions (UTF8-non-ascii in atext and qtext, U-labels in
 * sub-domains) when SMTPUTF8 was given.  No allocation; every copy is
 * bounded by the RFC 5321 4.5.3.1 limits, which are checked before
 * copying, so an overlong part can never be truncated silently.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "common/addr.h"

#define LABEL_MAX  63   /* RFC 1035 2.3.4 */

/* Reasons, phrased to follow "Bad ... address syntax: " in a reply. */
static const char R_NO_LT[]     = "path must start with '<'";
static const char R_NO_GT[]     = "missing '>' at end of path";
static const char R_NULL[]      = "null path not allowed here";
static const char R_ROUTE[]     = "bad source route";
static const char R_LOCAL[]     = "bad local part";
static const char R_LOCAL_LEN[] = "local part too long";
static const char R_NO_DOMAIN[] = "missing domain";
static const char R_DOMAIN[]    = "bad domain";
static const char R_DOM_LEN[]   = "domain too long";
static const char R_LITERAL[]   = "bad address literal";
static const char R_PATH_LEN[]  = "path too long";
static const char R_UTF8[]      = "non-ASCII address without SMTPUTF8";
static const char R_TRAILING[]  = "unexpected text after path";

static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static char
lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* RFC 5322 3.2.3 atext. */
static bool
is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != '\0' &&
	    strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Length of the well-formed UTF-8 multi-byte sequence at s (RFC 3629 4:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or 0.  The
 * text is NUL-terminated and NUL is never a continuation byte, so reading
 * ahead stops at the end of the string by itself.
 */
static size_t
utf8_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * One non-ASCII character at s: its length if allowed, else 0 with
 * *reason telling why (not UTF-8 at all, or UTF-8 without SMTPUTF8).
 */
static size_t
nonascii(const char *s, bool utf8_ok, const char *bad, const char **reason)
{
	size_t n;

	if (!utf8_ok) {
		*reason = R_UTF8;
		return 0;
	}
	if ((n = utf8_len((const unsigned char *)s)) == 0)
		*reason = bad;
	return n;
}

/*
 * A Domain (RFC 5321 4.1.2: sub-domain *("." sub-domain), sub-domain =
 * Let-dig [Ldh-str]), plus U-labels when utf8_ok.  Returns its length,
 * 0 with *reason on error.  Stops at the first byte that cannot continue
 * a domain; the caller decides whether that byte may follow.
 */
static size_t
domain_span(const char *s, bool utf8_ok, const char **reason)
{
	size_t i = 0, label = 0, n;
	unsigned char c, prev = '.';

	for (;;) {
		c = (unsigned char)s[i];
		if (is_alpha(c) || is_digit(c))
			n = 1;
		else if (c == '-' && prev != '.')
			n = 1;
		else if (c >= 0x80) {
			if ((n = nonascii(s + i, utf8_ok, R_DOMAIN, reason)) == 0)
				return 0;
		} else if (c == '.' && prev != '.' && prev != '-') {
			label = 0;
			prev = c;
			i++;
			continue;
		} else
			break;
		label += n;
		if (label > LABEL_MAX) {
			*reason = R_DOMAIN;
			return 0;
		}
		prev = c;
		i += n;
	}
	/* Empty, or ending in "." or "-". */
	if (prev == '.' || prev == '-') {
		*reason = R_DOMAIN;
		return 0;
	}
	if (i > ADDR_DOMAIN_MAX) {
		*reason = R_DOM_LEN;
		return 0;
	}
	return i;
}

/* Snum "." Snum "." Snum "." Snum, each 0-255 in 1 to 3 digits. */
static bool
ipv4_valid(const char *s, size_t len)
{
	size_t i = 0, digits;
	unsigned value;
	int part;

	for (part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
		value = 0;
		for (digits = 0; i < len && is_digit((unsigned char)s[i]);
		    digits++, i++) {
			if (digits == 3)
				return false;
			value = value * 10 + (unsigned)(s[i] - '0');
		}
		if (digits == 0 || value > 255)
			return false;
	}
	return i == len;
}

/* IPv6-addr of RFC 5321 4.1.3, which is RFC 4291's text form. */
static bool
ipv6_valid(const char *s, size_t len)
{
	char tmp[64];
	unsigned char bin[16];
	size_t i;

	if (len == 0 || len >= sizeof(tmp))
		return false;
	/* inet_pton() would reject the rest too; this keeps zone ids and
	 * anything locale-dependent out explicitly. */
	for (i = 0; i < len; i++)
		if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
			return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return inet_pton(AF_INET6, tmp, bin) == 1;
}

/* The inside of "[...]": IPv4 or "IPv6:" form.  General-address-literal
 * tags are not accepted: none is registered that we could route. */
static bool
literal_inside_valid(const char *s, size_t len)
{
	if (len > 5 && strncasecmp(s, "IPv6:", 5) == 0)
		return ipv6_valid(s + 5, len - 5);
	return ipv4_valid(s, len);
}

/* "[...]" at s: its length including brackets, 0 on error. */
static size_t
literal_span(const char *s)
{
	size_t i;

	if (s[0] != '[')
		return 0;
	/* dcontent (RFC 5321 4.1.2): printable ASCII except "[", "\", "]". */
	for (i = 1; s[i] != ']'; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 33 || c > 126 || c == '[' || c == '\\')
			return 0;
		if (i + 1 >= ADDR_DOMAIN_MAX)
			return 0;
	}
	if (!literal_inside_valid(s + 1, i - 1))
		return 0;
	return i + 1;
}

/* A-d-l ":" — the obsolete source route, RFC 5321 4.1.1.3 and C.6. */
static size_t
route_span(const char *s, bool utf8_ok, const char **reason)
{
	size_t i = 0, n;

	for (;;) {
		if (s[i] != '@') {
			*reason = R_ROUTE;
			return 0;
		}
		i++;
		if ((n = domain_span(s + i, utf8_ok, reason)) == 0) {
			if (*reason == R_DOMAIN || *reason == R_DOM_LEN)
				*reason = R_ROUTE;
			return 0;
		}
		i += n;
		if (s[i] == ':')
			return i + 1;
		if (s[i] != ',') {
			*reason = R_ROUTE;
			return 0;
		}
		i++;
	}
}

/* Dot-string: Atom *("." Atom). */
static size_t
dot_string_span(const char *s, bool utf8_ok, const char **reason)
{
	size_t i = 0, n;
	bool after_dot = true;

	for (;;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.' && !after_dot) {
			after_dot = true;
			i++;
			continue;
		}
		if (is_atext(c))
			n = 1;
		else if (c >= 0x80) {
			if ((n = nonascii(s + i, utf8_ok, R_LOCAL, reason)) == 0)
				return 0;
		} else
			break;
		after_dot = false;
		i += n;
		if (i > ADDR_LOCAL_MAX) {
			*reason = R_LOCAL_LEN;
			return 0;
		}
	}
	if (after_dot) {
		*reason = R_LOCAL;
		return 0;
	}
	return i;
}

/* Quoted-string with qtextSMTP and quoted-pairSMTP, quotes included. */
static size_t
quoted_span(const char *s, bool utf8_ok, const char **reason)
{
	size_t i = 1, n;

	for (;;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"')
			break;
		if (c == '\\') {
			c = (unsigned char)s[i + 1];
			if (c < 32 || c > 126) {
				*reason = R_LOCAL;
				return 0;
			}
			n = 2;
		} else if (c >= 32 && c <= 126)
			n = 1;
		else if (c >= 0x80) {
			if ((n = nonascii(s + i, utf8_ok, R_LOCAL, reason)) == 0)
				return 0;
		} else {
			*reason = R_LOCAL;
			return 0;
		}
		i += n;
		/* The limit counts what is between the quotes. */
		if (i - 1 > ADDR_LOCAL_MAX) {
			*reason = R_LOCAL_LEN;
			return 0;
		}
	}
	return i + 1;
}

static void
copy_lower(char *dst, const char *src, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		dst[i] = lower(src[i]);
	dst[len] = '\0';
}

/* The Mailbox (or bare Postmaster) after "<" and any source route. */
static size_t
mailbox_span(const char *s, const struct addr_parse_opts *opts,
    bool routed, struct mailaddr *out, const char **reason)
{
	size_t local, dom;

	if (s[0] == '"')
		local = quoted_span(s, opts->utf8_ok, reason);
	else
		local = dot_string_span(s, opts->utf8_ok, reason);
	if (local == 0)
		return 0;
	memcpy(out->local, s, local);
	out->local[local] = '\0';

	if (s[local] != '@') {
		/* RFC 5321 4.5.1: "<Postmaster>" without a domain. */
		if (s[local] == '>' && local == 10 && !routed &&
		    opts->postmaster_ok && strncasecmp(s, "postmaster", 10) == 0)
			return local;
		if (s[local] == '>')
			*reason = R_NO_DOMAIN;
		else
			*reason = s[local] == '\0' ? R_NO_GT : R_LOCAL;
		return 0;
	}
	s += local + 1;
	if (s[0] == '[') {
		if ((dom = literal_span(s)) == 0) {
			*reason = R_LITERAL;
			return 0;
		}
	} else if (s[0] == '>' || s[0] == '\0') {
		*reason = R_NO_DOMAIN;
		return 0;
	} else if ((dom = domain_span(s, opts->utf8_ok, reason)) == 0)
		return 0;
	copy_lower(out->domain, s, dom);
	return local + 1 + dom;
}

int
addr_parse_path(const char *text, const struct addr_parse_opts *opts,
    struct mailaddr *out, size_t *consumed, const char **reason)
{
	size_t i = 1, n;
	bool routed = false;

	memset(out, 0, sizeof(*out));
	*consumed = 0;
	if (text[0] != '<') {
		*reason = R_NO_LT;
		return -1;
	}
	if (text[1] == '>') {
		if (!opts->null_ok) {
			*reason = R_NULL;
			return -1;
		}
		out->is_null = true;
		i = 2;
		goto end;
	}
	if (text[i] == '@') {
		if ((n = route_span(text + i, opts->utf8_ok, reason)) == 0)
			return -1;
		i += n;
		routed = true;
	}
	if ((n = mailbox_span(text + i, opts, routed, out, reason)) == 0) {
		memset(out, 0, sizeof(*out));
		return -1;
	}
	i += n;
	if (text[i] != '>') {
		memset(out, 0, sizeof(*out));
		/* "<a@b@c>" is a bad domain; "<a@b" or "<a@b c>" lacks '>'. */
		*reason = text[i] == '\0' || text[i] == ' ' ? R_NO_GT : R_DOMAIN;
		return -1;
	}
	i++;
	if (i > ADDR_PATH_MAX) {
		memset(out, 0, sizeof(*out));
		*reason = R_PATH_LEN;
		return -1;
	}
end:
	/* A path ends the command or is followed by its parameters. */
	if (text[i] != '\0' && text[i] != ' ') {
		memset(out, 0, sizeof(*out));
		*reason = R_TRAILING;
		return -1;
	}
	*consumed = i;
	return 0;
}

void
addr_format(const struct mailaddr *a, char *out, size_t size)
{
	size_t len, dlen;

	if (size == 0)
		return;
	out[0] = '\0';
	if (a->is_null)
		return;
	len = strlen(a->local);
	if (len >= size)
		len = size - 1;
	memcpy(out, a->local, len);
	out[len] = '\0';
	if (a->domain[0] == '\0' || len + 1 >= size)
		return;
	out[len++] = '@';
	dlen = strlen(a->domain);
	if (len + dlen >= size)
		dlen = size - 1 - len;
	memcpy(out + len, a->domain, dlen);
	out[len + dlen] = '\0';
}

bool
addr_domain_valid(const char *domain)
{
	const char *reason;
	size_t n;

	n = domain_span(domain, false, &reason);
	return n > 0 && domain[n] == '\0';
}

bool
addr_literal_valid(const char *literal)
{
	size_t n = literal_span(literal);

	return n > 0 && literal[n] == '\0';
}
