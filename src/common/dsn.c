/*
 * dsn — see dsn.h.
 */
#include <string.h>
#include <strings.h>

#include "common/dsn.h"

static int
hex_upper(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
dsn_xtext_decode(const char *s, size_t len, char *out, size_t size)
{
	size_t i, n = 0;
	int hi, lo;
	char c;

	for (i = 0; i < len; i++) {
		c = s[i];
		if (c == '+') {
			/* RFC 3461 4: "+" and two upper case hex digits. */
			if (len - i < 3 || (hi = hex_upper(s[i + 1])) < 0 ||
			    (lo = hex_upper(s[i + 2])) < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return -1;
		}
		/* Printable US-ASCII only (RFC 3461 4.2, 4.4): what we
		 * decode goes into DSN header fields, where a control
		 * character would end or forge a field. */
		if (c < ' ' || c > '~')
			return -1;
		if (n + 1 >= size)
			return -1;
		out[n++] = c;
	}
	if (size == 0)
		return -1;
	out[n] = '\0';
	return (int)n;
}

void
dsn_xtext_put(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= '!' && c <= '~' && c != '+' && c != '=')
			buf_append(b, s, 1);
		else
			buf_appendf(b, "+%02X", c);
	}
}

static const struct {
	const char *name;
	unsigned    bit;
} notify_words[] = {
	{ "NEVER", DSN_NOTIFY_NEVER },
	{ "SUCCESS", DSN_NOTIFY_SUCCESS },
	{ "FAILURE", DSN_NOTIFY_FAILURE },
	{ "DELAY", DSN_NOTIFY_DELAY },
};

int
dsn_notify_parse(const char *s, size_t len)
{
	const char *end = s + len, *comma;
	unsigned bits = 0, bit;
	size_t i, n;

	if (len == 0)
		return -1;
	for (;;) {
		comma = memchr(s, ',', (size_t)(end - s));
		n = comma != NULL ? (size_t)(comma - s) : (size_t)(end - s);
		bit = 0;
		for (i = 0; i < ARRAY_LEN(notify_words); i++)
			if (strlen(notify_words[i].name) == n &&
			    strncasecmp(s, notify_words[i].name, n) == 0)
				bit = notify_words[i].bit;
		/* Unknown, empty or said twice. */
		if (bit == 0 || (bits & bit) != 0)
			return -1;
		bits |= bit;
		if (comma == NULL)
			break;
		s = comma + 1;
	}
	/* RFC 3461 4.1: NEVER is alone or not at all. */
	if ((bits & DSN_NOTIFY_NEVER) != 0 && bits != DSN_NOTIFY_NEVER)
		return -1;
	return (int)bits;
}

bool
dsn_notify_valid(unsigned notify)
{
	return (notify & ~DSN_NOTIFY_KNOWN) == 0 &&
	    ((notify & DSN_NOTIFY_NEVER) == 0 || notify == DSN_NOTIFY_NEVER);
}

const char *
dsn_notify_format(unsigned notify, char *out)
{
	size_t i, n = 0;

	out[0] = '\0';
	for (i = 0; i < ARRAY_LEN(notify_words); i++) {
		if ((notify & notify_words[i].bit) == 0)
			continue;
		if (n > 0)
			out[n++] = ',';
		strcpy(out + n, notify_words[i].name);
		n += strlen(notify_words[i].name);
	}
	return out;
}

bool
dsn_wants_failure(unsigned notify)
{
	return notify == 0 || (notify & DSN_NOTIFY_FAILURE) != 0;
}

bool
dsn_wants_delay(unsigned notify)
{
	return notify == 0 || (notify & DSN_NOTIFY_DELAY) != 0;
}

bool
dsn_wants_success(unsigned notify)
{
	return (notify & DSN_NOTIFY_SUCCESS) != 0;
}

const char *
dsn_ret_name(enum dsn_ret ret)
{
	switch (ret) {
	case DSN_RET_FULL:
		return "FULL";
	case DSN_RET_HDRS:
		return "HDRS";
	case DSN_RET_NONE:
		break;
	}
	return NULL;
}

int
dsn_ret_parse(const char *s)
{
	if (strcasecmp(s, "FULL") == 0)
		return DSN_RET_FULL;
	if (strcasecmp(s, "HDRS") == 0)
		return DSN_RET_HDRS;
	return -1;
}

void
dsn_mail_params(struct buf *out, enum dsn_ret ret, const char *envid)
{
	const char *name = dsn_ret_name(ret);

	if (name != NULL)
		buf_appendf(out, " RET=%s", name);
	if (envid != NULL) {
		buf_appends(out, " ENVID=");
		dsn_xtext_put(out, envid);
	}
}

static bool
all_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

void
dsn_rcpt_params(struct buf *out, unsigned notify, const char *orcpt,
    const char *address)
{
	char text[DSN_NOTIFY_TEXT_MAX];
	const char *semi;
	struct buf v;

	if (notify != 0)
		buf_appendf(out, " NOTIFY=%s", dsn_notify_format(notify, text));
	buf_init(&v);
	if (orcpt != NULL && (semi = strchr(orcpt, ';')) != NULL) {
		buf_append(&v, orcpt, (size_t)(semi - orcpt) + 1);
		dsn_xtext_put(&v, semi + 1);
	} else if (all_ascii(address)) {
		buf_appends(&v, "rfc822;");
		dsn_xtext_put(&v, address);
	}
	if (v.len > 0 && v.len <= DSN_ORCPT_MAX)
		buf_appendf(out, " ORCPT=%s", v.data);
	buf_free(&v);
}
