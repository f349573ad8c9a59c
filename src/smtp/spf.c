/*
 * spf — see spf.h.
 *
 * Order of the file: result names; the RFC 7208 grammar check and the
 * record rewrite (pure string work); our libspf2 DNS layer; the checker;
 * the thread pool.
 *
 * The pool is a threadpool (threadpool.h) whose threads each keep an
 * spf_checker.  A job is owned by the pool from submission until the loop
 * has both delivered it (or cancelled it) and seen the thread finish with
 * it; only then is it freed, by the loop.  Threads never call back into
 * the loop's code.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <netinet/in.h>

#include <spf2/spf.h>
#include <spf2/spf_dns_resolv.h>

#include "common/log.h"
#include "smtp/spf.h"
#include "common/threadpool.h"
#include "common/util.h"

#define SPF_VERSION_TAG  "v=spf1"

/* ---- result names ---- */

static const char *const result_names[SPF_RES_COUNT] = {
	[SPF_RES_NONE] = "none",
	[SPF_RES_NEUTRAL] = "neutral",
	[SPF_RES_PASS] = "pass",
	[SPF_RES_FAIL] = "fail",
	[SPF_RES_SOFTFAIL] = "softfail",
	[SPF_RES_TEMPERROR] = "temperror",
	[SPF_RES_PERMERROR] = "permerror",
};

const char *
spf_result_name(enum spf_result r)
{
	return (unsigned)r < SPF_RES_COUNT ? result_names[r] : "permerror";
}

int
spf_result_parse(const char *name, enum spf_result *out)
{
	for (unsigned i = 0; i < SPF_RES_COUNT; i++) {
		if (strcasecmp(name, result_names[i]) == 0) {
			*out = (enum spf_result)i;
			return 0;
		}
	}
	return -1;
}

/* A temperror is never a pass: the same message could fail once DNS
 * answers (RFC 7208 2.6.6). */
int
spf_pass_result_check(const char *name, char *why, size_t size)
{
	enum spf_result r;

	if (spf_result_parse(name, &r) == 0 && r != SPF_RES_TEMPERROR)
		return 0;
	snprintf(why, size, "must be \"pass\", \"neutral\", \"softfail\", "
	    "\"none\", \"fail\" or \"permerror\"");
	return -1;
}

/* ---- the RFC 7208 section 12 grammar ---- */

struct term {
	const char *s;
	size_t      len;
};

/* The next SP-separated term of a record after *pos, or false at the end. */
static bool
next_term(const char *rec, size_t *pos, struct term *t)
{
	size_t i = *pos;

	while (rec[i] == ' ')
		i++;
	if (rec[i] == '\0') {
		*pos = i;
		return false;
	}
	t->s = rec + i;
	while (rec[i] != ' ' && rec[i] != '\0')
		i++;
	t->len = (size_t)(rec + i - t->s);
	*pos = i;
	return true;
}

/* Does the text start with the version "v=spf1" ended by SP or its end? */
static bool
is_spf_record(const char *txt)
{
	size_t n = sizeof(SPF_VERSION_TAG) - 1;

	return strncasecmp(txt, SPF_VERSION_TAG, n) == 0 &&
	    (txt[n] == ' ' || txt[n] == '\0');
}

static bool
is_alnum(char c)
{
	return isascii((unsigned char)c) && isalnum((unsigned char)c);
}

static bool
is_alpha(char c)
{
	return isascii((unsigned char)c) && isalpha((unsigned char)c);
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
fail(char *why, size_t whylen, const char *what, const struct term *t)
{
	snprintf(why, whylen, "%s: \"%.*s\"", what, (int)t->len, t->s);
	return -1;
}

/*
 * macro-expand at s (which starts with '%'): its length, or 0 if it is
 * not one.  exp_text allows the "c", "r" and "t" letters (RFC 7208 7.2:
 * only in explanations).
 */
static size_t
macro_expand_len(const char *s, size_t len, bool exp_text)
{
	size_t i = 2;
	unsigned long digits = 0;
	bool any_digit = false;
	char letter;

	if (len >= 2 && (s[1] == '%' || s[1] == '_' || s[1] == '-'))
		return 2;
	if (len < 4 || s[1] != '{')
		return 0;
	letter = (char)tolower((unsigned char)s[i++]);
	if (strchr("slodiphv", letter) == NULL &&
	    !(exp_text && strchr("crt", letter) != NULL))
		return 0;
	while (i < len && is_digit(s[i])) {
		any_digit = true;
		if (digits < 1000)
			digits = digits * 10 + (unsigned long)(s[i] - '0');
		i++;
	}
	/* RFC 7208 7.3: a DIGIT transformer must not be zero. */
	if (any_digit && digits == 0)
		return 0;
	if (i < len && (s[i] == 'r' || s[i] == 'R'))
		i++;
	while (i < len && strchr(".-+,/_=", s[i]) != NULL)
		i++;
	if (i >= len || s[i] != '}')
		return 0;
	return i + 1;
}

/*
 * macro-string: macro-expands and macro-literals (visible ASCII but '%').
 * *ends_expand tells whether it ends with a macro-expand.
 */
static bool
macro_string_ok(const char *s, size_t len, bool exp_text, bool *ends_expand)
{
	size_t i = 0, n;

	*ends_expand = false;
	while (i < len) {
		if (s[i] == '%') {
			if ((n = macro_expand_len(s + i, len - i, exp_text)) == 0)
				return false;
			i += n;
			*ends_expand = true;
			continue;
		}
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
		i++;
		*ends_expand = false;
	}
	return true;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool
toplabel_ok(const char *s, size_t len)
{
	bool alpha = false, hyphen = false;

	if (len == 0 || !is_alnum(s[0]) || !is_alnum(s[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '-')
			hyphen = true;
		else if (!is_alnum(s[i]))
			return false;
		else if (is_alpha(s[i]))
			alpha = true;
	}
	return alpha || hyphen;
}

/* domain-spec = macro-string domain-end;
 * domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static bool
domain_spec_ok(const char *s, size_t len)
{
	bool ends_expand;
	size_t end = len, dot;

	if (len == 0 || !macro_string_ok(s, len, false, &ends_expand))
		return false;
	if (ends_expand)
		return true;
	if (s[end - 1] == '.')
		end--;
	for (dot = end; dot > 0 && s[dot - 1] != '.'; dot--)
		;
	if (dot == 0)
		return false;           /* one label: no "." toplabel */
	return toplabel_ok(s + dot, end - dot);
}

/* "/" ("0" / %x31-39 0*N DIGIT) with a value up to max; the text after
 * the slash.  -1 if malformed. */
static int
cidr_value(const char *s, size_t len, int max)
{
	int v = 0;

	if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* Position of a trailing "/digits" (not "//digits") in s[0..len), or len. */
static size_t
trailing_cidr(const char *s, size_t len, bool dual)
{
	size_t i = len;

	while (i > 0 && is_digit(s[i - 1]))
		i--;
	if (i == len || i == 0 || s[i - 1] != '/')
		return len;
	i--;
	if (dual != (i > 0 && s[i - 1] == '/'))
		return len;
	return dual ? i - 1 : i;
}

/* The parts of an "a" or "mx" mechanism after its name. */
struct dual_cidr {
	const char *spec;       /* domain-spec, or NULL */
	size_t      spec_len;
	int         c4, c6;     /* -1 when absent */
};

static bool
parse_dual(const char *s, size_t len, struct dual_cidr *d)
{
	size_t at;

	d->c4 = d->c6 = -1;
	at = trailing_cidr(s, len, true);
	if (at != len) {
		if ((d->c6 = cidr_value(s + at + 2, len - at - 2, 128)) < 0)
			return false;
		len = at;
	}
	at = trailing_cidr(s, len, false);
	if (at != len) {
		if ((d->c4 = cidr_value(s + at + 1, len - at - 1, 32)) < 0)
			return false;
		len = at;
	}
	d->spec = NULL;
	d->spec_len = 0;
	if (len == 0)
		return true;
	if (s[0] != ':')
		return false;
	d->spec = s + 1;
	d->spec_len = len - 1;
	return domain_spec_ok(d->spec, d->spec_len);
}

/* qnum "." qnum "." qnum "." qnum, with no leading zeros. */
static bool
ip4_network_ok(const char *s, size_t len)
{
	int parts = 0;
	size_t i = 0;

	while (i < len && parts < 4) {
		size_t start = i;
		int v = 0;
		while (i < len && is_digit(s[i]) && i - start < 3)
			v = v * 10 + (s[i++] - '0');
		if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
			return false;
		parts++;
		if (parts < 4) {
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
	}
	return parts == 4 && i == len;
}

static bool
ip6_network_ok(const char *s, size_t len)
{
	char tmp[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return inet_pton(AF_INET6, tmp, &a) == 1;
}

/* ip4:/ip6: network [cidr]; s is after the name. */
static bool
ip_mech_ok(const char *s, size_t len, bool v6)
{
	size_t at;

	if (len < 2 || s[0] != ':')
		return false;
	s++;
	len--;
	at = trailing_cidr(s, len, false);
	if (at != len && cidr_value(s + at + 1, len - at - 1, v6 ? 128 : 32) < 0)
		return false;
	return v6 ? ip6_network_ok(s, at) : ip4_network_ok(s, at);
}

/* Length of a modifier name at the start of t, if '=' follows it; else 0. */
static size_t
modifier_name_len(const struct term *t)
{
	size_t i = 0;

	if (t->len == 0 || !is_alpha(t->s[0]))
		return 0;
	while (i < t->len && (is_alnum(t->s[i]) || t->s[i] == '-' ||
	    t->s[i] == '_' || t->s[i] == '.'))
		i++;
	return i < t->len && t->s[i] == '=' ? i : 0;
}

static bool
word_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static int
check_modifier(const struct term *t, size_t nlen, bool *seen_redirect,
    bool *seen_exp, char *why, size_t whylen)
{
	const char *v = t->s + nlen + 1;
	size_t vlen = t->len - nlen - 1;
	bool ends;

	if (word_is(t->s, nlen, "redirect") || word_is(t->s, nlen, "exp")) {
		bool *seen = t->s[0] == 'r' || t->s[0] == 'R' ?
		    seen_redirect : seen_exp;
		/* RFC 7208 6: each at most once. */
		if (*seen)
			return fail(why, whylen, "modifier given twice", t);
		*seen = true;
		if (!domain_spec_ok(v, vlen))
			return fail(why, whylen, "bad domain-spec", t);
		return 0;
	}
	if (!macro_string_ok(v, vlen, true, &ends))
		return fail(why, whylen, "bad macro-string", t);
	return 0;
}

static int
check_directive(const struct term *t, char *why, size_t whylen)
{
	const char *s = t->s;
	size_t len = t->len, n = 0;
	struct dual_cidr d;

	if (len > 0 && strchr("+-?~", s[0]) != NULL) {
		s++;
		len--;
	}
	while (n < len && s[n] != ':' && s[n] != '/')
		n++;
	if (word_is(s, n, "all")) {
		if (n != len)
			return fail(why, whylen, "\"all\" takes no argument", t);
	} else if (word_is(s, n, "include") || word_is(s, n, "exists")) {
		if (n == len || s[n] != ':' || !domain_spec_ok(s + n + 1, len - n - 1))
			return fail(why, whylen, "bad domain-spec", t);
	} else if (word_is(s, n, "a") || word_is(s, n, "mx")) {
		if (!parse_dual(s + n, len - n, &d))
			return fail(why, whylen, "bad domain-spec or CIDR length", t);
	} else if (word_is(s, n, "ptr")) {
		if (n != len && (s[n] != ':' ||
		    !domain_spec_ok(s + n + 1, len - n - 1)))
			return fail(why, whylen, "bad domain-spec", t);
	} else if (word_is(s, n, "ip4") || word_is(s, n, "ip6")) {
		if (!ip_mech_ok(s + n, len - n, s[2] == '6'))
			return fail(why, whylen, "bad network", t);
	} else {
		return fail(why, whylen, "unknown mechanism", t);
	}
	return 0;
}

int
spf_record_check(const char *record, char *why, size_t whylen)
{
	bool seen_redirect = false, seen_exp = false;
	size_t pos = sizeof(SPF_VERSION_TAG) - 1, nlen;
	struct term t;

	if (!is_spf_record(record)) {
		snprintf(why, whylen, "not an SPF record");
		return -1;
	}
	while (next_term(record, &pos, &t)) {
		nlen = modifier_name_len(&t);
		if (nlen > 0 ? check_modifier(&t, nlen, &seen_redirect,
		    &seen_exp, why, whylen) < 0 :
		    check_directive(&t, why, whylen) < 0)
			return -1;
	}
	return 0;
}

/* ---- the rewrite for libspf2 ---- */

/* Append the rewritten form of directive t to out; true if it changed. */
static bool
rewrite_directive(const struct term *t, int family, struct buf *out)
{
	const char *s = t->s, *q = "";
	size_t len = t->len, n = 0;
	struct dual_cidr d;
	int relevant;

	if (len > 0 && strchr("+-?~", s[0]) != NULL) {
		q = s[0] == '+' ? "+" : s[0] == '-' ? "-" : s[0] == '?' ? "?" : "~";
		s++;
		len--;
	}
	while (n < len && s[n] != ':' && s[n] != '/')
		n++;
	if ((word_is(s, n, "ip4") || word_is(s, n, "ip6")) && n < len) {
		size_t at = trailing_cidr(s + n + 1, len - n - 1, false) + n + 1;
		if (at == len || cidr_value(s + at + 1, len - at - 1, 128) != 0)
			return false;
		/* All addresses: the two halves, which libspf2 accepts. */
		if (s[2] == '4')
			buf_appendf(out, "%sip4:0.0.0.0/1 %sip4:128.0.0.0/1", q, q);
		else
			buf_appendf(out, "%sip6:::/1 %sip6:8000::/1", q, q);
		return true;
	}
	if (!(word_is(s, n, "a") || word_is(s, n, "mx")) ||
	    !parse_dual(s + n, len - n, &d) || (d.c4 != 0 && d.c6 != 0))
		return false;
	relevant = family == AF_INET6 ? d.c6 : d.c4;
	buf_appendf(out, "%s%.*s", q, (int)n, s);
	if (relevant == 0) {
		size_t sl = d.spec_len;
		if (d.spec != NULL && sl > 0 && d.spec[sl - 1] == '.')
			sl--;
		if (d.spec != NULL)
			buf_appendf(out, ":%.*s.%s", (int)sl, d.spec,
			    SPF_CIDR0_SUFFIX);
		else
			buf_appendf(out, ":%%{d}.%s", SPF_CIDR0_SUFFIX);
		return true;
	}
	if (d.spec != NULL)
		buf_appendf(out, ":%.*s", (int)d.spec_len, d.spec);
	if (d.c4 > 0)
		buf_appendf(out, "/%d", d.c4);
	if (d.c6 > 0)
		buf_appendf(out, "//%d", d.c6);
	return true;
}

char *
spf_record_rewrite(const char *record, int family)
{
	size_t pos = sizeof(SPF_VERSION_TAG) - 1;
	bool changed = false;
	struct buf out;
	struct term t;

	if (!is_spf_record(record))
		return NULL;
	buf_init(&out);
	buf_appends(&out, SPF_VERSION_TAG);
	if (record[pos] == '\0') {
		/* libspf2 wants the version followed by a space. */
		buf_appends(&out, " ");
		return out.data;
	}
	while (next_term(record, &pos, &t)) {
		buf_appends(&out, " ");
		if (modifier_name_len(&t) == 0 &&
		    rewrite_directive(&t, family, &out)) {
			changed = true;
			continue;
		}
		buf_append(&out, t.s, t.len);
	}
	if (!changed) {
		buf_free(&out);
		return NULL;
	}
	return out.data;
}

/* ---- our DNS layer, above the resolver ---- */

struct spf_checker {
	SPF_server_t     *server;
	SPF_dns_server_t  layer;       /* ours: the server's resolver */
	SPF_dns_server_t *below;
	/* The evaluation in progress. */
	int               family;
	struct in_addr    ip4;
	struct in6_addr   ip6;
	bool              rfc_error;
	char              why[160];
};

static void
rr_set_txt(SPF_dns_rr_t *rr, int i, const char *text)
{
	if (SPF_dns_rr_buf_realloc(rr, i, strlen(text) + 1) != SPF_E_SUCCESS)
		fatalx("spf: out of memory");
	strcpy(rr->rr[i]->txt, text);
}

/*
 * A TXT string that is not an SPF record can only matter as an
 * explanation (exp=).  RFC 7208 6.2 allows spaces in it; libspf2 turns
 * each into '%' and stops expanding macros after it.  "%_" is the macro
 * for a space (RFC 7208 7.2), which libspf2 expands correctly.
 */
static void
explanation_spaces(SPF_dns_rr_t *rr, int i)
{
	struct buf b;

	if (strchr(rr->rr[i]->txt, ' ') == NULL)
		return;
	buf_init(&b);
	for (const char *p = rr->rr[i]->txt; *p != '\0'; p++) {
		if (*p == ' ')
			buf_appends(&b, "%_");
		else
			buf_append(&b, p, 1);
	}
	rr_set_txt(rr, i, b.data);
	buf_free(&b);
}

/*
 * A TXT answer: check the SPF record in it, and hand libspf2 the form it
 * evaluates as RFC 7208 says.
 */
static void
fix_txt(struct spf_checker *c, SPF_dns_rr_t *rr)
{
	int nspf = 0, at = -1;
	char why[128];
	char *fixed;

	for (int i = 0; i < rr->num_rr; i++) {
		/* txt is declared char[1] and allocated to its length. */
		const char *txt = rr->rr[i]->txt;
		if (!is_spf_record(txt)) {
			explanation_spaces(rr, i);
			continue;
		}
		nspf++;
		at = i;
		if (txt[sizeof(SPF_VERSION_TAG) - 1] == '\0')
			rr_set_txt(rr, i, SPF_VERSION_TAG " ");
	}
	/* Several records are a permerror that libspf2 reports itself. */
	if (nspf != 1)
		return;
	if (spf_record_check(rr->rr[at]->txt, why, sizeof(why)) < 0) {
		if (!c->rfc_error) {
			c->rfc_error = true;
			snprintf(c->why, sizeof(c->why), "%s: %s",
			    rr->domain ? rr->domain : "?", why);
		}
		return;
	}
	if ((fixed = spf_record_rewrite(rr->rr[at]->txt, c->family)) != NULL) {
		rr_set_txt(rr, at, fixed);
		free(fixed);
	}
}

/* "name.SUFFIX" or "name.SUFFIX.": the length of name, or 0. */
static size_t
cidr0_base(const char *domain)
{
	size_t len = strlen(domain), sl = sizeof(SPF_CIDR0_SUFFIX) - 1;

	if (len > 0 && domain[len - 1] == '.')
		len--;
	if (len <= sl + 1 || domain[len - sl - 1] != '.' ||
	    strncasecmp(domain + len - sl, SPF_CIDR0_SUFFIX, sl) != 0)
		return 0;
	return len - sl - 1;
}

/*
 * A name made by spf_record_rewrite() for a /0 "a" or "mx": any address
 * of the client's family under the real name matches, so answer with the
 * client's own; MX hosts carry the suffix on to their address lookups.
 */
static SPF_dns_rr_t *
cidr0_lookup(struct spf_checker *c, const char *domain, size_t base_len,
    ns_type type, int should_cache)
{
	char *base = xstrndup(domain, base_len);
	SPF_dns_rr_t *rr = SPF_dns_lookup(c->below, base, type, should_cache);
	bool want_a = c->family == AF_INET;

	free(base);
	if (rr->herrno != NETDB_SUCCESS || rr->num_rr == 0)
		return rr;
	if (type == ns_t_mx) {
		for (int i = 0; i < rr->num_rr; i++) {
			char *host;
			size_t hl = strlen(rr->rr[i]->mx);
			if (hl > 0 && rr->rr[i]->mx[hl - 1] == '.')
				hl--;
			xasprintf(&host, "%.*s.%s", (int)hl, rr->rr[i]->mx,
			    SPF_CIDR0_SUFFIX);
			if (SPF_dns_rr_buf_realloc(rr, i, strlen(host) + 1) !=
			    SPF_E_SUCCESS)
				fatalx("spf: out of memory");
			strcpy(rr->rr[i]->mx, host);
			free(host);
		}
		return rr;
	}
	if ((type == ns_t_a && want_a) || (type == ns_t_aaaa && !want_a)) {
		if (want_a)
			rr->rr[0]->a = c->ip4;
		else
			rr->rr[0]->aaaa = c->ip6;
		rr->num_rr = 1;
	}
	return rr;
}

static SPF_dns_rr_t *
layer_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
    int should_cache)
{
	struct spf_checker *c = layer->hook;
	SPF_dns_rr_t *rr;
	size_t base;

	/* RFC 7208 3.1 and 14.1: only TXT.  libspf2 asks for type SPF first,
	 * and a server failing that query would make the result temperror. */
	if (type == ns_t_spf)
		return SPF_dns_rr_new_init(layer, domain, type, 0, NO_DATA);
	if ((base = cidr0_base(domain)) > 0)
		return cidr0_lookup(c, domain, base, type, should_cache);
	rr = SPF_dns_lookup(c->below, domain, type, should_cache);
	if (type == ns_t_txt && rr->herrno == NETDB_SUCCESS)
		fix_txt(c, rr);
	return rr;
}

/* ---- the checker ---- */

static void
spf_log_quiet(const char *file, int line, const char *msg)
{
	(void)file;
	(void)line;
	(void)msg;
}

static void
spf_log_error(const char *file, int line, const char *msg)
    __attribute__((noreturn));

/* libspf2 calls this for broken invariants only (out of memory). */
static void
spf_log_error(const char *file, int line, const char *msg)
{
	fatalx("libspf2: %s:%d: %s", file, line, msg);
}

static pthread_once_t spf_handlers_once = PTHREAD_ONCE_INIT;

static void
spf_handlers_set(void)
{
	/* libspf2 prints warnings to stderr by default, from any thread. */
	SPF_error_handler = spf_log_error;
	SPF_warning_handler = spf_log_quiet;
	SPF_info_handler = spf_log_quiet;
	SPF_debug_handler = spf_log_quiet;
}

struct spf_checker *
spf_checker_new(const char *hostname, struct SPF_dns_server_struct *below)
{
	struct spf_checker *c;
	SPF_response_t *resp = NULL;

	pthread_once(&spf_handlers_once, spf_handlers_set);
	if (below == NULL && (below = SPF_dns_resolv_new(NULL, "resolv", 0)) == NULL)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->below = below;
	c->layer.lookup = layer_lookup;
	c->layer.layer_below = below;
	c->layer.name = "mxgate";
	c->layer.hook = c;
	/* No destroy: SPF_server_free() leaves the layers to us. */
	if ((c->server = SPF_server_new_dns(&c->layer, 0)) == NULL) {
		SPF_dns_free(below);
		free(c);
		return NULL;
	}
	SPF_server_set_rec_dom(c->server, hostname);
	/* No made-up explanation: only a domain's own exp= is quoted. */
	SPF_server_set_explanation(c->server, "", &resp);
	if (resp != NULL)
		SPF_response_free(resp);
	return c;
}

void
spf_checker_free(struct spf_checker *c)
{
	if (c == NULL)
		return;
	SPF_server_free(c->server);
	SPF_dns_free(c->below);
	free(c);
}

/* RFC 7208 4.3: a malformed or single-label domain gives "none". */
static bool
domain_checkable(const char *d)
{
	size_t len = strlen(d), label = 0;
	bool dot = false;

	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (d[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
			dot = true;
		} else if (!is_alnum(d[i]) && d[i] != '-' && d[i] != '_') {
			return false;       /* literals, UTF-8 (no A-labels) */
		} else if (++label > 63) {
			return false;
		}
	}
	return dot && label > 0;
}

static void
set_text(struct spf_answer *a, const char *text)
{
	size_t j = 0;

	/* The text may come from DNS: keep it printable for replies. */
	for (size_t i = 0; text[i] != '\0' && j + 1 < sizeof(a->text); i++)
		a->text[j++] = (unsigned char)text[i] >= 0x20 &&
		    (unsigned char)text[i] < 0x7f ? text[i] : '?';
	a->text[j] = '\0';
}

/* Set the client; false if ip is not an address. */
static bool
set_client(struct spf_checker *c, SPF_request_t *req, const char *ip)
{
	if (inet_pton(AF_INET, ip, &c->ip4) == 1) {
		c->family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, &c->ip6) == 1) {
		c->family = AF_INET6;
		/* RFC 7208 5: an IPv4-mapped address is checked as IPv4. */
		if (IN6_IS_ADDR_V4MAPPED(&c->ip6)) {
			memcpy(&c->ip4, c->ip6.s6_addr + 12, 4);
			c->family = AF_INET;
		}
	} else {
		return false;
	}
	if (c->family == AF_INET)
		SPF_request_set_ipv4(req, c->ip4);
	else
		SPF_request_set_ipv6(req, c->ip6);
	return true;
}

/*
 * SPF_request_query_mailfrom() without its "localhost gets a free ride"
 * (a pass for every loopback client, which RFC 7208 does not have): the
 * same two public steps, record then interpretation.
 */
static SPF_errcode_t
query_mailfrom(struct spf_checker *c, SPF_request_t *req,
    SPF_response_t **resp)
{
	SPF_record_t *rec = NULL;
	SPF_errcode_t err;

	if ((*resp = SPF_response_new(req)) == NULL)
		fatalx("spf: out of memory");
	req->cur_dom = req->env_from_dp;
	err = SPF_server_get_record(c->server, req, *resp, &rec);
	if (err != SPF_E_SUCCESS) {
		if (rec != NULL)
			SPF_record_free(rec);
		return err;
	}
	(*resp)->spf_record_exp = rec;
	err = SPF_record_interpret(rec, req, *resp, 0);
	(*resp)->spf_record_exp = NULL;
	SPF_record_free(rec);
	return err;
}

/* libspf2's answer as an RFC 7208 result (see spf.h). */
static enum spf_result
map_result(const struct spf_checker *c, SPF_response_t *resp,
    SPF_errcode_t err)
{
	if (c->rfc_error)
		return SPF_RES_PERMERROR;
	switch (SPF_response_result(resp)) {
	case SPF_RESULT_NEUTRAL:   return SPF_RES_NEUTRAL;
	case SPF_RESULT_PASS:      return SPF_RES_PASS;
	case SPF_RESULT_FAIL:      return SPF_RES_FAIL;
	case SPF_RESULT_SOFTFAIL:  return SPF_RES_SOFTFAIL;
	case SPF_RESULT_NONE:      return SPF_RES_NONE;
	case SPF_RESULT_TEMPERROR: return SPF_RES_TEMPERROR;
	case SPF_RESULT_PERMERROR: return SPF_RES_PERMERROR;
	case SPF_RESULT_INVALID:
	default:
		/* The record did not compile, or DNS failed (RFC 7208 2.6). */
		return err == SPF_E_DNS_ERROR ? SPF_RES_TEMPERROR :
		    SPF_RES_PERMERROR;
	}
}

static void
answer_text(const struct spf_checker *c, SPF_response_t *resp,
    SPF_errcode_t err, const char *ip, struct spf_answer *a)
{
	const char *exp, *domain = strrchr(a->address, '@') + 1;
	char text[sizeof(a->text)];

	if (c->rfc_error) {
		snprintf(text, sizeof(text), "invalid SPF record: %s", c->why);
	} else if (a->result == SPF_RES_FAIL &&
	    (exp = SPF_response_get_explanation(resp)) != NULL &&
	    exp[0] != '\0') {
		snprintf(text, sizeof(text), "%s", exp);
	} else if (err != SPF_E_SUCCESS && a->result != SPF_RES_NONE) {
		snprintf(text, sizeof(text), "%s: %s", domain, SPF_strerror(err));
	} else {
		snprintf(text, sizeof(text), "%s: %s for %s", domain,
		    spf_result_name(a->result), ip);
	}
	set_text(a, text);
}

enum spf_result
spf_check(struct spf_checker *c, const struct spf_query *q,
    struct spf_answer *a)
{
	SPF_response_t *resp = NULL;
	SPF_request_t *req;
	SPF_errcode_t err;
	const char *domain;

	memset(a, 0, sizeof(*a));
	a->result = SPF_RES_NONE;
	/* RFC 7208 2.4: for the null sender, check postmaster@helo. */
	if (q->sender[0] == '\0') {
		a->identity = "helo";
		snprintf(a->address, sizeof(a->address), "postmaster@%s", q->helo);
	} else {
		a->identity = "mailfrom";
		snprintf(a->address, sizeof(a->address), "%s", q->sender);
	}
	domain = strrchr(a->address, '@') + 1;
	if (!domain_checkable(domain)) {
		snprintf(a->text, sizeof(a->text), "no SPF for \"%.200s\": not "
		    "a domain name", domain);
		return a->result;
	}
	if ((req = SPF_request_new(c->server)) == NULL)
		fatalx("spf: out of memory");
	if (!set_client(c, req, q->ip)) {
		snprintf(a->text, sizeof(a->text), "no client address");
		SPF_request_free(req);
		return a->result;
	}
	if (q->helo[0] != '\0')
		SPF_request_set_helo_dom(req, q->helo);
	SPF_request_set_env_from(req, a->address);
	c->rfc_error = false;
	c->why[0] = '\0';
	err = query_mailfrom(c, req, &resp);
	a->result = map_result(c, resp, err);
	answer_text(c, resp, err, q->ip, a);
	SPF_response_free(resp);
	SPF_request_free(req);
	return a->result;
}

/* ---- the thread pool ---- */

struct spf_job {
	struct threadpool_job tp;       /* first: the pool's part */
	struct spf_job *all_next, *all_prev;   /* the loop's list */
	uint64_t        id;
	uint64_t        deadline_ms;
	bool            answered;       /* delivered or cancelled (loop) */
	struct spf_query q;
	struct spf_answer a;
	spf_done_fn     done;
	void           *ctx;
};

struct spf_pool {
	struct threadpool *threads;
	unsigned         timeout_ms;
	char            *hostname;
	spf_dns_factory  factory;
	void            *factory_arg;
	/* Loop side only. */
	struct spf_job  *all;           /* every job not yet freed */
	uint64_t         next_id;
	unsigned         pending;
};

static void *
thread_init(void *arg)
{
	struct spf_pool *p = arg;

	return spf_checker_new(p->hostname,
	    p->factory ? p->factory(p->factory_arg) : NULL);
}

static void
thread_fini(void *state)
{
	spf_checker_free(state);
}

static void
job_run(struct threadpool_job *tp, void *state)
{
	struct spf_job *j = (struct spf_job *)tp;
	struct spf_checker *checker = state;

	if (checker == NULL) {
		memset(&j->a, 0, sizeof(j->a));
		j->a.result = SPF_RES_TEMPERROR;
		j->a.identity = "mailfrom";
		snprintf(j->a.text, sizeof(j->a.text),
		    "SPF checker unavailable");
	} else {
		spf_check(checker, &j->q, &j->a);
	}
}

static const struct threadpool_ops spf_pool_ops = {
	.thread_init = thread_init,
	.thread_fini = thread_fini,
	.run = job_run,
};

struct spf_pool *
spf_pool_new(unsigned nthreads, unsigned timeout_ms, const char *hostname,
    spf_dns_factory factory, void *factory_arg)
{
	struct spf_pool *p;
	int err;

	if (nthreads == 0 || nthreads > 64) {
		errno = EINVAL;
		return NULL;
	}
	p = xcalloc(1, sizeof(*p));
	p->timeout_ms = timeout_ms;
	p->hostname = xstrdup(hostname);
	p->factory = factory;
	p->factory_arg = factory_arg;
	p->next_id = 1;
	if ((p->threads = threadpool_new(nthreads, &spf_pool_ops, p)) == NULL) {
		err = errno;
		spf_pool_free(p);
		errno = err;
		return NULL;
	}
	return p;
}

static void
job_unlink(struct spf_pool *p, struct spf_job *j)
{
	if (j->all_prev != NULL)
		j->all_prev->all_next = j->all_next;
	else
		p->all = j->all_next;
	if (j->all_next != NULL)
		j->all_next->all_prev = j->all_prev;
	free(j);
}

void
spf_pool_free(struct spf_pool *p)
{
	struct spf_job *j, *next;

	if (p == NULL)
		return;
	/* Every job is on the loop's list too: freed from there. */
	threadpool_free(p->threads, NULL);
	for (j = p->all; j != NULL; j = next) {
		next = j->all_next;
		free(j);
	}
	free(p->hostname);
	free(p);
}

int
spf_pool_fd(const struct spf_pool *p)
{
	return threadpool_fd(p->threads);
}

uint64_t
spf_pool_submit(struct spf_pool *p, const struct spf_query *q,
    spf_done_fn done, void *ctx)
{
	struct spf_job *j = xcalloc(1, sizeof(*j));

	j->id = p->next_id++;
	j->q = *q;
	j->done = done;
	j->ctx = ctx;
	j->deadline_ms = monotonic_ms() + p->timeout_ms;
	j->all_next = p->all;
	if (p->all != NULL)
		p->all->all_prev = j;
	p->all = j;
	p->pending++;
	/* Fails only while the pool is being freed, from this thread. */
	if (threadpool_submit(p->threads, &j->tp) < 0)
		fatalx("spf: submit to a stopped pool");
	return j->id;
}

static struct spf_job *
job_find(struct spf_pool *p, uint64_t id)
{
	for (struct spf_job *j = p->all; j != NULL; j = j->all_next) {
		if (j->id == id)
			return j;
	}
	return NULL;
}

/* Mark answered, and tell the pool, so that a thread skips a queued job. */
static void
job_answered(struct spf_pool *p, struct spf_job *j)
{
	j->answered = true;
	threadpool_cancel(p->threads, &j->tp);
	p->pending--;
}

void
spf_pool_cancel(struct spf_pool *p, uint64_t id)
{
	struct spf_job *j = job_find(p, id);

	if (j != NULL && !j->answered)
		job_answered(p, j);
}

void
spf_pool_complete(struct spf_pool *p)
{
	struct threadpool_job *tp;

	while ((tp = threadpool_done(p->threads)) != NULL) {
		struct spf_job *j = (struct spf_job *)tp;

		if (!j->answered) {
			job_answered(p, j);
			j->done(j->ctx, &j->a);
		}
		job_unlink(p, j);
	}
}

void
spf_pool_expire(struct spf_pool *p, uint64_t now_ms)
{
	struct spf_job *j;
	struct spf_answer a;

	for (j = p->all; j != NULL; j = j->all_next) {
		if (j->answered || now_ms < j->deadline_ms)
			continue;
		memset(&a, 0, sizeof(a));
		a.result = SPF_RES_TEMPERROR;
		a.identity = j->q.sender[0] == '\0' ? "helo" : "mailfrom";
		if (j->q.sender[0] == '\0')
			snprintf(a.address, sizeof(a.address), "postmaster@%s",
			    j->q.helo);
		else
			snprintf(a.address, sizeof(a.address), "%s", j->q.sender);
		snprintf(a.text, sizeof(a.text), "DNS timeout after %u ms",
		    p->timeout_ms);
		job_answered(p, j);
		/* The callback may submit or cancel jobs: both only touch the
		 * list's head or mark jobs, so going on from j is safe. */
		j->done(j->ctx, &a);
	}
}

unsigned
spf_pool_pending(const struct spf_pool *p)
{
	return p->pending;
}
