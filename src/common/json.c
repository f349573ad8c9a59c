/*
 * json — see json.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"

/*
 * Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or 0 when s does not start one.
 */
static size_t
utf8_valid_len(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t n;
	unsigned int cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

/*
 * Appends whole runs of bytes that go in as they are (printable ASCII but
 * '"' and '\\', and valid UTF-8 sequences), one copy per run: most
 * values are one run, and the logs' JSON records escape every value.
 */
void
json_escape(struct buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	buf_reserve(b, len + 2);
	while (i < len) {
		size_t start = i, n;
		unsigned char c;

		while (i < len) {
			c = u[i];
			if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
				i++;
			else if (c >= 0x80 && (n = utf8_valid_len(&u[i], len - i)) > 0)
				i += n;
			else
				break;
		}
		if (i > start)
			buf_append(b, &u[start], i - start);
		if (i == len)
			break;
		c = u[i++];
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };

			buf_append(b, esc, 2);
		} else if (c == '\n') {
			buf_append(b, "\\n", 2);
		} else if (c == '\r') {
			buf_append(b, "\\r", 2);
		} else if (c == '\t') {
			buf_append(b, "\\t", 2);
		} else if (c < 0x20 || c == 0x7f) {
			char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

			buf_append(b, esc, 6);
		} else {
			/* Not UTF-8 (a stray Latin-1 byte, a cut sequence). */
			buf_append(b, "\xef\xbf\xbd", 3);
		}
	}
}

/* ---- writer ---- */

void
json_writer_init(struct json_writer *w, struct buf *b)
{
	memset(w, 0, sizeof(*w));
	w->b = b;
}

/* Before any value or key: the comma that separates it from the last. */
static void
value_prefix(struct json_writer *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->need_comma[w->depth])
		buf_append(w->b, ",", 1);
	w->need_comma[w->depth] = true;
}

static void
open_container(struct json_writer *w, char c)
{
	value_prefix(w);
	if (w->depth >= JSON_MAX_DEPTH)
		fatalx("json: writer nested deeper than %d", JSON_MAX_DEPTH);
	buf_append(w->b, &c, 1);
	w->need_comma[++w->depth] = false;
}

static void
close_container(struct json_writer *w, char c)
{
	if (w->depth == 0 || w->after_key)
		fatalx("json: writer closes %c out of place", c);
	w->depth--;
	buf_append(w->b, &c, 1);
}

void json_begin_object(struct json_writer *w) { open_container(w, '{'); }
void json_end_object(struct json_writer *w) { close_container(w, '}'); }
void json_begin_array(struct json_writer *w) { open_container(w, '['); }
void json_end_array(struct json_writer *w) { close_container(w, ']'); }

void
json_key(struct json_writer *w, const char *key)
{
	value_prefix(w);
	buf_append(w->b, "\"", 1);
	json_escape(w->b, key, strlen(key));
	buf_append(w->b, "\":", 2);
	w->after_key = true;
}

void
json_stringn(struct json_writer *w, const char *s, size_t len)
{
	value_prefix(w);
	buf_append(w->b, "\"", 1);
	json_escape(w->b, s, len);
	buf_append(w->b, "\"", 1);
}

void
json_string(struct json_writer *w, const char *s)
{
	if (s == NULL)
		json_null(w);
	else
		json_stringn(w, s, strlen(s));
}

void
json_raw(struct json_writer *w, const char *json, size_t len)
{
	value_prefix(w);
	buf_append(w->b, json, len);
}

void
json_string_begin(struct json_writer *w)
{
	value_prefix(w);
	buf_append(w->b, "\"", 1);
}

void
json_string_end(struct json_writer *w)
{
	buf_append(w->b, "\"", 1);
}

void
json_int(struct json_writer *w, long long v)
{
	value_prefix(w);
	buf_appendf(w->b, "%lld", v);
}

void
json_bool(struct json_writer *w, bool v)
{
	value_prefix(w);
	buf_appends(w->b, v ? "true" : "false");
}

void
json_null(struct json_writer *w)
{
	value_prefix(w);
	buf_appends(w->b, "null");
}

void
json_member_string(struct json_writer *w, const char *key, const char *s)
{
	json_key(w, key);
	json_string(w, s);
}

void
json_member_int(struct json_writer *w, const char *key, long long v)
{
	json_key(w, key);
	json_int(w, v);
}

void
json_member_bool(struct json_writer *w, const char *key, bool v)
{
	json_key(w, key);
	json_bool(w, v);
}

/* ---- reader ---- */

struct parser {
	const char *start, *p, *end;
	int   depth;
	char *err;
	size_t errsize;
	bool  failed;
};

static void __attribute__((format(printf, 2, 3)))
parse_error(struct parser *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->failed)
		return;
	ps->failed = true;
	if (ps->err == NULL || ps->errsize == 0)
		return;
	n = snprintf(ps->err, ps->errsize, "offset %zu: ",
	    (size_t)(ps->p - ps->start));
	if (n < 0 || (size_t)n >= ps->errsize)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errsize - (size_t)n, fmt, ap);
	va_end(ap);
}

static void
skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
	    *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static struct json_value *
new_value(enum json_type type)
{
	struct json_value *v = xcalloc(1, sizeof(*v));

	v->type = type;
	return v;
}

static int
hex4(struct parser *ps, unsigned int *out)
{
	unsigned int v = 0;

	if (ps->end - ps->p < 4) {
		parse_error(ps, "truncated \\u escape");
		return -1;
	}
	for (int i = 0; i < 4; i++) {
		char c = *ps->p++;

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else {
			parse_error(ps, "bad \\u escape");
			return -1;
		}
	}
	*out = v;
	return 0;
}

static void
append_utf8(struct buf *b, unsigned int cp)
{
	unsigned char o[4];
	size_t n;

	if (cp < 0x80) {
		o[0] = (unsigned char)cp; n = 1;
	} else if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3f)); n = 2;
	} else if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f)); n = 3;
	} else {
		o[0] = (unsigned char)(0xf0 | (cp >> 18));
		o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (unsigned char)(0x80 | (cp & 0x3f)); n = 4;
	}
	buf_append(b, o, n);
}

/* A \uXXXX escape (the "\u" consumed), joining surrogate pairs. */
static int
parse_unicode_escape(struct parser *ps, struct buf *out)
{
	unsigned int cp, lo;

	if (hex4(ps, &cp) == -1)
		return -1;
	if (cp >= 0xdc00 && cp <= 0xdfff) {
		parse_error(ps, "lone low surrogate");
		return -1;
	}
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
			parse_error(ps, "lone high surrogate");
			return -1;
		}
		ps->p += 2;
		if (hex4(ps, &lo) == -1)
			return -1;
		if (lo < 0xdc00 || lo > 0xdfff) {
			parse_error(ps, "bad surrogate pair");
			return -1;
		}
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (cp == 0) {
		parse_error(ps, "\\u0000 not allowed");
		return -1;
	}
	append_utf8(out, cp);
	return 0;
}

static int
parse_escape(struct parser *ps, struct buf *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *hit;
	char c;

	if (ps->p >= ps->end) {
		parse_error(ps, "truncated escape");
		return -1;
	}
	c = *ps->p++;
	if (c == 'u')
		return parse_unicode_escape(ps, out);
	if (c == '\0' || (hit = strchr(from, c)) == NULL) {
		ps->p--;
		parse_error(ps, "bad escape");
		return -1;
	}
	buf_append(out, &to[hit - from], 1);
	return 0;
}

/* A string (the opening quote consumed) into a new NUL-terminated copy. */
static char *
parse_string_raw(struct parser *ps)
{
	struct buf out;

	buf_init(&out);
	for (;;) {
		const unsigned char *u = (const unsigned char *)ps->p;
		size_t n;

		if (ps->p >= ps->end) {
			parse_error(ps, "unterminated string");
			break;
		}
		if (*u == '"') {
			ps->p++;
			buf_append(&out, "", 0);   /* allocates and terminates */
			return out.data;
		}
		if (*u == '\\') {
			ps->p++;
			if (parse_escape(ps, &out) == -1)
				break;
			continue;
		}
		if (*u < 0x20) {
			parse_error(ps, "control character in string");
			break;
		}
		if ((n = utf8_valid_len(u, (size_t)(ps->end - ps->p))) == 0) {
			parse_error(ps, "invalid UTF-8");
			break;
		}
		buf_append(&out, ps->p, n);
		ps->p += n;
	}
	buf_free(&out);
	return NULL;
}

/* RFC 8259 section 6 grammar, checked before strtod sees it. */
static struct json_value *
parse_number(struct parser *ps)
{
	const char *s = ps->p, *q = ps->p;
	struct json_value *v;
	char tmp[64];

	if (q < ps->end && *q == '-')
		q++;
	if (q < ps->end && *q == '0')
		q++;
	else if (q < ps->end && *q >= '1' && *q <= '9')
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	else
		goto bad;
	if (q < ps->end && *q == '.') {
		if (++q >= ps->end || *q < '0' || *q > '9')
			goto bad;
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < ps->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < ps->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= ps->end || *q < '0' || *q > '9')
			goto bad;
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	if ((size_t)(q - s) >= sizeof(tmp)) {
		parse_error(ps, "number too long");
		return NULL;
	}
	memcpy(tmp, s, (size_t)(q - s));
	tmp[q - s] = '\0';
	v = new_value(JSON_NUMBER);
	v->number = strtod(tmp, NULL);
	ps->p = q;
	return v;
bad:
	parse_error(ps, "bad number");
	return NULL;
}

static bool
literal(struct parser *ps, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

static struct json_value *parse_value(struct parser *ps);

static void
push_item(struct json_value *c, char *key, struct json_value *item)
{
	c->items = xrealloc(c->items, (c->count + 1) * sizeof(*c->items));
	c->items[c->count] = item;
	if (c->type == JSON_OBJECT) {
		c->keys = xrealloc(c->keys, (c->count + 1) * sizeof(*c->keys));
		c->keys[c->count] = key;
	}
	c->count++;
}

/* One object member: "key" : value, appended to obj. */
static int
parse_member(struct parser *ps, struct json_value *obj)
{
	struct json_value *item;
	char *key;

	skip_ws(ps);
	if (ps->p >= ps->end || *ps->p != '"') {
		parse_error(ps, "expected a member name");
		return -1;
	}
	ps->p++;
	if ((key = parse_string_raw(ps)) == NULL)
		return -1;
	if (json_get(obj, key) != NULL) {
		parse_error(ps, "duplicate member \"%s\"", key);
		free(key);
		return -1;
	}
	skip_ws(ps);
	if (ps->p >= ps->end || *ps->p != ':') {
		parse_error(ps, "expected ':'");
		free(key);
		return -1;
	}
	ps->p++;
	if ((item = parse_value(ps)) == NULL) {
		free(key);
		return -1;
	}
	push_item(obj, key, item);
	return 0;
}

/* An array or object, the opening bracket consumed. */
static struct json_value *
parse_container(struct parser *ps, enum json_type type)
{
	char close = type == JSON_OBJECT ? '}' : ']';
	struct json_value *c = new_value(type), *item;

	if (++ps->depth > JSON_MAX_DEPTH) {
		parse_error(ps, "nested deeper than %d", JSON_MAX_DEPTH);
		goto fail;
	}
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		ps->depth--;
		return c;
	}
	for (;;) {
		if (type == JSON_OBJECT) {
			if (parse_member(ps, c) == -1)
				goto fail;
		} else {
			if ((item = parse_value(ps)) == NULL)
				goto fail;
			push_item(c, NULL, item);
		}
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			ps->depth--;
			return c;
		}
		parse_error(ps, "expected ',' or '%c'", close);
		goto fail;
	}
fail:
	json_free(c);
	return NULL;
}

static struct json_value *
parse_value(struct parser *ps)
{
	struct json_value *v;
	char *s;

	skip_ws(ps);
	if (ps->p >= ps->end) {
		parse_error(ps, "unexpected end");
		return NULL;
	}
	switch (*ps->p) {
	case '{':
		ps->p++;
		return parse_container(ps, JSON_OBJECT);
	case '[':
		ps->p++;
		return parse_container(ps, JSON_ARRAY);
	case '"':
		ps->p++;
		if ((s = parse_string_raw(ps)) == NULL)
			return NULL;
		v = new_value(JSON_STRING);
		v->string = s;
		return v;
	default:
		break;
	}
	if (literal(ps, "null"))
		return new_value(JSON_NULL);
	if (literal(ps, "true"))
		return new_value(JSON_TRUE);
	if (literal(ps, "false"))
		return new_value(JSON_FALSE);
	return parse_number(ps);
}

struct json_value *
json_parse(const char *text, size_t len, char *err, size_t errsize)
{
	struct parser ps = { .start = text, .p = text, .end = text + len,
	    .err = err, .errsize = errsize };
	struct json_value *v;

	if (err != NULL && errsize > 0)
		err[0] = '\0';
	if ((v = parse_value(&ps)) == NULL)
		return NULL;
	skip_ws(&ps);
	if (ps.p != ps.end) {
		parse_error(&ps, "trailing data");
		json_free(v);
		return NULL;
	}
	return v;
}

void
json_free(struct json_value *v)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < v->count; i++) {
		json_free(v->items[i]);
		if (v->keys != NULL)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->string);
	free(v);
}

const struct json_value *
json_get(const struct json_value *v, const char *key)
{
	if (v == NULL || v->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < v->count; i++)
		if (strcmp(v->keys[i], key) == 0)
			return v->items[i];
	return NULL;
}

const char *
json_get_string(const struct json_value *v, const char *key)
{
	const struct json_value *m = json_get(v, key);

	return m != NULL && m->type == JSON_STRING ? m->string : NULL;
}

int
json_get_int(const struct json_value *v, const char *key, long long *out)
{
	const struct json_value *m = json_get(v, key);

	if (m == NULL || m->type != JSON_NUMBER || m->number < -9.0e18 ||
	    m->number > 9.0e18 || m->number != (double)(long long)m->number)
		return -1;
	*out = (long long)m->number;
	return 0;
}
