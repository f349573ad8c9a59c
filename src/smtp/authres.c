/*
 * authres — see authres.h.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "smtp/authres.h"

#define AR_NAME       "Authentication-Results"
#define COMMENT_MAX   200

/* ---- building our field ---- */

static bool
is_atext(unsigned char c)
{
	return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* dot-atom (RFC 5322 3.2.3), optionally "@" and more dot-atom. */
static bool
is_plain_address(const char *s)
{
	bool at = false, prev_dot = true;

	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (*s == '.' || *s == '@') {
			if (prev_dot || (*s == '@' && at))
				return false;
			at = at || *s == '@';
			prev_dot = true;
		} else if ((unsigned char)*s < 0x80 && is_atext((unsigned char)*s)) {
			prev_dot = false;
		} else {
			return false;
		}
	}
	return !prev_dot;
}

/* A property value (RFC 8601 2.2 pvalue): as is when it is a plain
 * address or domain, else a quoted-string. */
static void
append_pvalue(struct buf *out, const char *v)
{
	if (is_plain_address(v)) {
		buf_appends(out, v);
		return;
	}
	buf_appends(out, "\"");
	for (; *v != '\0'; v++) {
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			continue;
		if (*v == '"' || *v == '\\')
			buf_appends(out, "\\");
		buf_append(out, v, 1);
	}
	buf_appends(out, "\"");
}

/* A comment's text: printable ASCII, parentheses and backslashes quoted. */
static void
append_comment(struct buf *out, const char *text)
{
	size_t n = 0;

	buf_appends(out, "(");
	for (; *text != '\0' && n < COMMENT_MAX; text++, n++) {
		char c = *text;
		if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e)
			c = '?';
		if (c == '(' || c == ')' || c == '\\')
			buf_appends(out, "\\");
		buf_append(out, &c, 1);
	}
	buf_appends(out, ")");
}

void
authres_header(struct buf *out, const char *authserv_id,
    const struct authres_info *info)
{
	buf_appendf(out, "Authentication-Results: %s", authserv_id);
	if (!info->spf_checked && info->auth_user == NULL) {
		/* RFC 8601 2.2: no method was applied. */
		buf_appends(out, "; none\r\n");
		return;
	}
	if (info->spf_checked) {
		bool helo = info->spf_identity != NULL &&
		    strcmp(info->spf_identity, "helo") == 0;
		buf_appendf(out, ";\r\n\tspf=%s", spf_result_name(info->spf));
		if (info->spf_comment != NULL && info->spf_comment[0] != '\0') {
			buf_appends(out, "\r\n\t");
			append_comment(out, info->spf_comment);
		}
		buf_appends(out, helo ? "\r\n\tsmtp.helo=" : "\r\n\tsmtp.mailfrom=");
		append_pvalue(out, helo ? info->helo : info->spf_address);
	}
	if (info->auth_user != NULL) {
		buf_appends(out, ";\r\n\tauth=pass smtp.auth=");
		append_pvalue(out, info->auth_user);
	}
	buf_appends(out, "\r\n");
}

/* ---- recognising a field for our authserv-id ---- */

/* RFC 2045 token characters. */
static bool
is_token(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* Skip CFWS from *i; false if the data ended inside a comment. */
static bool
skip_cfws(const char *s, size_t len, size_t *i)
{
	int depth = 0;

	while (*i < len) {
		char c = s[*i];
		if (depth > 0 && c == '\\') {
			*i += 2;
			continue;
		}
		if (c == '(')
			depth++;
		else if (c == ')' && depth > 0)
			depth--;
		else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' &&
		    c != '\n')
			return true;
		(*i)++;
	}
	return false;
}

static bool
id_equal(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);

	if (alen > 0 && a[alen - 1] == '.')
		alen--;
	if (blen > 0 && b[blen - 1] == '.')
		blen--;
	return alen == blen && alen > 0 && strncasecmp(a, b, alen) == 0;
}

/*
 * 1: an Authentication-Results field claiming id; 0: not; -1: the data
 * ends before the authserv-id does and more may follow (!complete).
 */
static int
field_claims(const char *s, size_t len, const char *id, bool complete)
{
	size_t n = sizeof(AR_NAME) - 1, i = n, start;
	char value[256];
	size_t vlen = 0;

	if (len < n || strncasecmp(s, AR_NAME, n) != 0)
		return 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i >= len)
		return -1;
	if (s[i++] != ':')
		return 0;
	if (!skip_cfws(s, len, &i))
		return -1;
	if (s[i] == '"') {
		for (i++; i < len && s[i] != '"'; i++) {
			if (s[i] == '\\' && i + 1 < len)
				i++;
			if (s[i] != '\r' && s[i] != '\n' && vlen < sizeof(value))
				value[vlen++] = s[i];
		}
		if (i >= len)
			return -1;
		return vlen < sizeof(value) && id_equal(value, vlen, id);
	}
	for (start = i; i < len && is_token((unsigned char)s[i]); i++)
		;
	if (i == len && !complete)
		return -1;   /* the token may go on */
	return id_equal(s + start, i - start, id);
}

bool
authres_is_ours(const char *field, size_t len, const char *authserv_id)
{
	return field_claims(field, len, authserv_id, true) == 1;
}

/* ---- the filter ---- */

void
authres_filter_init(struct authres_filter *f, const char *authserv_id)
{
	memset(f, 0, sizeof(*f));
	f->authserv_id = authserv_id;
	f->state = AF_LINE_START;
	buf_init(&f->headers);
}

void
authres_filter_free(struct authres_filter *f)
{
	buf_free(&f->headers);
}

static void
emit(struct authres_filter *f, struct buf *out, const char *p, size_t n)
{
	size_t room;

	buf_append(out, p, n);
	if (f->state == AF_BODY || f->headers_truncated)
		return;
	room = AUTHRES_HEADERS_MAX - f->headers.len;
	if (n > room) {
		n = room;
		f->headers_truncated = true;
	}
	buf_append(&f->headers, p, n);
}

/* The current field is complete: a held one is decided now. */
static void
field_end(struct authres_filter *f, struct buf *out)
{
	if (f->in_field && f->field == AF_HOLD) {
		if (field_claims(f->held, f->held_len, f->authserv_id, true) == 1)
			f->removed++;
		else
			emit(f, out, f->held, f->held_len);
	}
	f->held_len = 0;
	f->in_field = false;
}

/* The held field outgrew the buffer: decide on what is held. */
static void
hold_overflow(struct authres_filter *f, struct buf *out)
{
	if (field_claims(f->held, f->held_len, f->authserv_id, false) == 0) {
		emit(f, out, f->held, f->held_len);
		f->field = AF_PASS;
	} else {
		f->removed++;
		f->field = AF_DROP;
	}
	f->held_len = 0;
	f->state = f->field;
}

/* A line that is not a header field: the body starts here. */
static void
body_starts(struct authres_filter *f, struct buf *out, const char *line,
    size_t n)
{
	char partial[sizeof(f->held)];
	size_t plen = 0;

	if (f->state == AF_NAME) {
		/* held has this line's beginning, not a field. */
		plen = f->held_len;
		memcpy(partial, f->held, plen);
		f->held_len = 0;
		f->in_field = false;
	} else {
		field_end(f, out);
	}
	emit(f, out, partial, plen);
	f->state = AF_BODY;
	buf_append(out, line, n);
}

static void
hold_append(struct authres_filter *f, struct buf *out, const char *p,
    size_t n)
{
	while (n > 0) {
		size_t room = sizeof(f->held) - f->held_len;
		size_t take = n < room ? n : room;
		memcpy(f->held + f->held_len, p, take);
		f->held_len += take;
		p += take;
		n -= take;
		if (f->held_len == sizeof(f->held)) {
			hold_overflow(f, out);
			if (n > 0 && f->state == AF_PASS)
				emit(f, out, p, n);
			return;
		}
	}
}

/* The name is complete (c == ':' ended it). */
static void
name_done(struct authres_filter *f, struct buf *out)
{
	size_t n = f->held_len - 1;

	while (n > 0 && (f->held[n - 1] == ' ' || f->held[n - 1] == '\t'))
		n--;
	if (n == sizeof(AR_NAME) - 1 &&
	    strncasecmp(f->held, AR_NAME, n) == 0) {
		f->field = AF_HOLD;
	} else {
		f->field = AF_PASS;
		emit(f, out, f->held, f->held_len);
		f->held_len = 0;
	}
	f->state = f->field;
}

/* One byte of a field name (or of what turns out not to be one). */
static void
name_byte(struct authres_filter *f, struct buf *out, char c)
{
	bool wsp_seen = f->held_len > 0 &&
	    (f->held[f->held_len - 1] == ' ' || f->held[f->held_len - 1] == '\t');

	if (c == ':') {
		if (f->held_len == 0) {
			body_starts(f, out, &c, 1);     /* no name */
			return;
		}
		f->held[f->held_len++] = c;
		name_done(f, out);
	} else if (c == ' ' || c == '\t') {
		f->held[f->held_len++] = c;      /* obs-hdr: WSP before ':' */
	} else if (c > 0x20 && c < 0x7f && !wsp_seen &&
	    f->held_len < sizeof(f->held) - 2) {
		f->held[f->held_len++] = c;
	} else {
		body_starts(f, out, &c, 1);
	}
	if (f->state == AF_NAME && f->held_len >= sizeof(f->held) - 2)
		body_starts(f, out, "", 0);
}

static void
line_start_byte(struct authres_filter *f, struct buf *out, char c)
{
	if (c == ' ' || c == '\t') {
		if (!f->in_field) {
			body_starts(f, out, &c, 1);
			return;
		}
		f->state = f->field;
		if (f->field == AF_HOLD)
			hold_append(f, out, &c, 1);
		else if (f->field == AF_PASS)
			emit(f, out, &c, 1);
		return;
	}
	if (c == '\r') {
		f->state = AF_EMPTY_CR;
		return;
	}
	if (c == '\n') {
		field_end(f, out);
		emit(f, out, "\n", 1);
		f->state = AF_BODY;
		return;
	}
	field_end(f, out);
	f->in_field = true;
	f->state = AF_NAME;
	name_byte(f, out, c);
}

/* Through the end of the line in the current field's state; returns the
 * bytes used. */
static size_t
field_bytes(struct authres_filter *f, struct buf *out, const char *p,
    size_t n)
{
	const char *nl = memchr(p, '\n', n);
	size_t take = nl != NULL ? (size_t)(nl - p) + 1 : n;

	if (f->state == AF_PASS)
		emit(f, out, p, take);
	else if (f->state == AF_HOLD)
		hold_append(f, out, p, take);
	/* A hold that overflowed into AF_PASS emitted the rest itself. */
	if (nl != NULL)
		f->state = AF_LINE_START;
	return take;
}

void
authres_filter_feed(struct authres_filter *f, const char *data, size_t len,
    struct buf *out)
{
	size_t i = 0;

	while (i < len) {
		switch (f->state) {
		case AF_BODY:
			buf_append(out, data + i, len - i);
			return;
		case AF_PASS:
		case AF_DROP:
		case AF_HOLD:
			i += field_bytes(f, out, data + i, len - i);
			break;
		case AF_LINE_START:
			line_start_byte(f, out, data[i++]);
			break;
		case AF_EMPTY_CR:
			if (data[i] == '\n') {
				field_end(f, out);
				emit(f, out, "\r\n", 2);
				f->state = AF_BODY;
				i++;
			} else {
				body_starts(f, out, "\r", 1);
			}
			break;
		case AF_NAME:
			name_byte(f, out, data[i++]);
			break;
		}
	}
}

void
authres_filter_finish(struct authres_filter *f, struct buf *out)
{
	switch (f->state) {
	case AF_NAME:
		body_starts(f, out, "", 0);
		break;
	case AF_EMPTY_CR:
		body_starts(f, out, "\r", 1);
		break;
	case AF_BODY:
		break;
	default:
		field_end(f, out);
		break;
	}
	f->state = AF_BODY;
}
