/*
 * milter — see milter.h.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/milter.h"

/* ---- packets ---- */

static void
put_u32(struct buf *b, uint32_t v)
{
	unsigned char x[4] = { v >> 24, v >> 16, v >> 8, v };

	buf_append(b, x, 4);
}

static uint32_t
get_u32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	    (uint32_t)u[2] << 8 | u[3];
}

void
milter_put(struct buf *b, char cmd, const void *data, size_t len)
{
	put_u32(b, (uint32_t)len + 1);
	buf_append(b, &cmd, 1);
	if (len > 0)
		buf_append(b, data, len);
}

void
milter_put_strings(struct buf *b, char cmd, const char *const *s, size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += strlen(s[i]) + 1;
	put_u32(b, (uint32_t)len + 1);
	buf_append(b, &cmd, 1);
	for (size_t i = 0; i < n; i++)
		buf_append(b, s[i], strlen(s[i]) + 1);
}

long
milter_get(const char *in, size_t len, struct milter_packet *p)
{
	uint32_t n;

	if (len < 4)
		return 0;
	n = get_u32(in);
	if (n == 0 || n > MILTER_PACKET_MAX)
		return -1;
	if (len - 4 < n)
		return 0;
	p->cmd = in[4];
	p->data = in + 5;
	p->len = n - 1;
	return (long)n + 4;
}

/* ---- negotiation ---- */

void
milter_put_optneg(struct buf *b)
{
	struct buf d;

	buf_init(&d);
	put_u32(&d, MILTER_VERSION);
	put_u32(&d, MILTER_OUR_ACTIONS);
	put_u32(&d, MILTER_OUR_PROTOCOL);
	milter_put(b, SMFIC_OPTNEG, d.data, d.len);
	buf_free(&d);
}

int
milter_optneg_parse(const char *data, size_t len, struct milter_options *o,
    char *why, size_t whylen)
{
	size_t off = 12;

	memset(o, 0, sizeof(*o));
	if (len < 12) {
		snprintf(why, whylen, "short negotiation reply");
		return -1;
	}
	o->version = get_u32(data);
	o->actions = get_u32(data + 4);
	o->protocol = get_u32(data + 8);
	if (o->version < 2 || o->version > MILTER_VERSION) {
		snprintf(why, whylen, "milter protocol version %u (we speak 2 "
		    "to %d)", o->version, MILTER_VERSION);
		return -1;
	}
	if ((o->actions & ~MILTER_OUR_ACTIONS) != 0) {
		snprintf(why, whylen, "asks for actions 0x%x we do not offer",
		    o->actions & ~MILTER_OUR_ACTIONS);
		return -1;
	}
	if ((o->protocol & ~MILTER_OUR_PROTOCOL) != 0) {
		snprintf(why, whylen, "asks for protocol steps 0x%x we do not "
		    "offer", o->protocol & ~MILTER_OUR_PROTOCOL);
		return -1;
	}
	/* SETSYMLIST: (stage, "macro names\0") pairs. */
	while (off + 4 < len) {
		uint32_t stage = get_u32(data + off);
		const char *s = data + off + 4;
		const char *nul = memchr(s, '\0', len - off - 4);

		if (nul == NULL || stage >= MILTER_M_COUNT) {
			milter_options_free(o);
			snprintf(why, whylen, "malformed macro list in the "
			    "negotiation reply");
			return -1;
		}
		free(o->macros[stage]);
		o->macros[stage] = xstrdup(s);
		off = (size_t)(nul - data) + 1;
	}
	return 0;
}

void
milter_options_free(struct milter_options *o)
{
	for (int i = 0; i < MILTER_M_COUNT; i++) {
		free(o->macros[i]);
		o->macros[i] = NULL;
	}
}

/* ---- macros ---- */

/* Postfix's defaults (milter_*_macros), plus {client_*} at connect. */
static const char *const default_macros[MILTER_M_COUNT] = {
	[MILTER_M_CONNECT] = "j {daemon_name} {daemon_addr} {daemon_port} v _ "
	    "{client_addr} {client_port} {client_name} {client_ptr}",
	[MILTER_M_HELO] = "{tls_version} {cipher} {cipher_bits}",
	[MILTER_M_MAIL] = "i {auth_type} {auth_authen} {mail_mailer} "
	    "{mail_addr}",
	[MILTER_M_RCPT] = "i {rcpt_mailer} {rcpt_host} {rcpt_addr}",
	[MILTER_M_DATA] = "i",
	[MILTER_M_EOM] = "i",
	[MILTER_M_EOH] = "i",
};

static const char *
macro_value(const char *name, const struct milter_macro_values *v)
{
	static const struct {
		const char *name;
		size_t off;
	} table[] = {
#define M(n, f) { n, offsetof(struct milter_macro_values, f) }
		M("j", j), M("{j}", j), M("{daemon_name}", daemon_name),
		M("{daemon_addr}", daemon_addr), M("{daemon_port}", daemon_port),
		M("{client_addr}", client_addr), M("{client_port}", client_port),
		M("{client_name}", client_name), M("{client_ptr}", client_ptr),
		M("_", underscore), M("i", i), M("{i}", i),
		M("{tls_version}", tls_version), M("{cipher}", cipher),
		M("{cipher_bits}", cipher_bits), M("{auth_type}", auth_type),
		M("{auth_authen}", auth_authen), M("{mail_addr}", mail_addr),
		M("{rcpt_addr}", rcpt_addr), M("{rcpt_host}", rcpt_host),
		M("{rcpt_mailer}", rcpt_mailer), M("{mail_mailer}", mail_mailer),
#undef M
	};

	if (strcmp(name, "v") == 0)
		return "mxgate";
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(name, table[i].name) == 0)
			return *(const char *const *)((const char *)v +
			    table[i].off);
	}
	return NULL;
}

void
milter_put_macros(struct buf *b, enum milter_macro_stage stage, char cmd,
    const char *wanted, const struct milter_macro_values *v)
{
	const char *list = wanted != NULL ? wanted : default_macros[stage];
	struct buf d;
	char name[64];

	buf_init(&d);
	buf_append(&d, &cmd, 1);
	for (const char *p = list; *p != '\0';) {
		size_t n = strcspn(p, " \t,");
		const char *val;

		if (n > 0 && n < sizeof(name)) {
			memcpy(name, p, n);
			name[n] = '\0';
			val = macro_value(name, v);
			if (val == NULL && name[0] != '{' && n == 1) {
				/* "{i}" and "i" are one macro. */
				char braced[8] = { '{', name[0], '}', 0 };
				val = macro_value(braced, v);
			}
			if (val != NULL && val[0] != '\0') {
				buf_append(&d, name, n + 1);
				buf_append(&d, val, strlen(val) + 1);
			}
		}
		p += n;
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
	}
	if (d.len > 1)
		milter_put(b, SMFIC_MACRO, d.data, d.len);
	buf_free(&d);
}

/* ---- replies ---- */

/* The n-th NUL-terminated string of data (from 0), or NULL. */
static const char *
nth_string(const char *data, size_t len, int n)
{
	size_t off = 0;

	for (int i = 0; ; i++) {
		const char *nul;

		if (off >= len)
			return NULL;
		nul = memchr(data + off, '\0', len - off);
		if (nul == NULL)
			return NULL;
		if (i == n)
			return data + off;
		off = (size_t)(nul - data) + 1;
	}
}

int
milter_reply_parse(const struct milter_packet *p, struct milter_reply *r,
    char *why, size_t whylen)
{
	const char *d = p->data;
	size_t n = p->len;

	memset(r, 0, sizeof(*r));
	switch (p->cmd) {
	case SMFIR_CONTINUE: r->kind = MR_CONTINUE; return 0;
	case SMFIR_ACCEPT:   r->kind = MR_ACCEPT; return 0;
	case SMFIR_REJECT:   r->kind = MR_REJECT; return 0;
	case SMFIR_TEMPFAIL: r->kind = MR_TEMPFAIL; return 0;
	case SMFIR_DISCARD:  r->kind = MR_DISCARD; return 0;
	case SMFIR_SKIP:     r->kind = MR_SKIP; return 0;
	case SMFIR_PROGRESS: r->kind = MR_PROGRESS; return 0;
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		r->kind = MR_SHUTDOWN;
		return 0;
	case SMFIR_REPLYCODE: {
		char text[8];
		r->kind = MR_REPLYCODE;
		if ((r->name = nth_string(d, n, 0)) == NULL ||
		    milter_replycode_parse(r->name, &r->code, text,
		    sizeof(text)) < 0)
			break;
		return 0;
	}
	case SMFIR_ADDHEADER:
		r->kind = MR_ADDHEADER;
		if ((r->name = nth_string(d, n, 0)) == NULL ||
		    (r->value = nth_string(d, n, 1)) == NULL)
			break;
		return 0;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		r->kind = p->cmd == SMFIR_INSHEADER ? MR_INSHEADER :
		    MR_CHGHEADER;
		if (n < 4)
			break;
		r->index = get_u32(d);
		if ((r->name = nth_string(d + 4, n - 4, 0)) == NULL ||
		    (r->value = nth_string(d + 4, n - 4, 1)) == NULL)
			break;
		return 0;
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_DELRCPT:
	case SMFIR_CHGFROM:
		r->kind = p->cmd == SMFIR_DELRCPT ? MR_DELRCPT :
		    p->cmd == SMFIR_CHGFROM ? MR_CHGFROM : MR_ADDRCPT;
		if ((r->name = nth_string(d, n, 0)) == NULL)
			break;
		r->value = nth_string(d, n, 1);
		return 0;
	case SMFIR_QUARANTINE:
		r->kind = MR_QUARANTINE;
		if ((r->name = nth_string(d, n, 0)) == NULL)
			break;
		return 0;
	case SMFIR_REPLBODY:
		r->kind = MR_REPLBODY;
		r->body = d;
		r->body_len = n;
		return 0;
	default:
		snprintf(why, whylen, "unknown reply '%c' (0x%02x)",
		    isprint((unsigned char)p->cmd) ? p->cmd : '?',
		    (unsigned char)p->cmd);
		return -1;
	}
	snprintf(why, whylen, "malformed reply '%c'", p->cmd);
	return -1;
}

int
milter_replycode_parse(const char *s, int *code, char *text, size_t size)
{
	size_t o = 0;

	if (!(s[0] == '4' || s[0] == '5') || !isdigit((unsigned char)s[1]) ||
	    !isdigit((unsigned char)s[2]) ||
	    !(s[3] == ' ' || s[3] == '-' || s[3] == '\0'))
		return -1;
	*code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	/* Lines after the first ("550-a\r\n550 b") become one line. */
	for (const char *p = s + 3; *p != '\0' && o + 1 < size; ) {
		if (*p == '\r' || *p == '\n') {
			while (*p == '\r' || *p == '\n')
				p++;
			if (strncmp(p, s, 3) == 0)
				p += 3;
			if (*p == ' ' || *p == '-')
				p++;
			if (o > 0 && *p != '\0')
				text[o++] = ' ';
			continue;
		}
		if (o == 0 && (*p == ' ' || *p == '-')) {
			p++;
			continue;
		}
		text[o++] = (unsigned char)*p < 32 ? ' ' : *p;
		p++;
	}
	text[o] = '\0';
	return 0;
}

/* ---- editing ---- */

void
milter_edits_init(struct milter_edits *e)
{
	memset(e, 0, sizeof(*e));
	buf_init(&e->body);
}

void
milter_edits_free(struct milter_edits *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->v[i].name);
		free(e->v[i].value);
	}
	free(e->v);
	buf_free(&e->body);
	memset(e, 0, sizeof(*e));
}

/* RFC 5322 2.2: printable ASCII but the colon. */
static bool
field_name_ok(const char *s)
{
	if (*s == '\0' || strlen(s) > 200)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127 ||
		    *s == ':')
			return false;
	return true;
}

/* A value may be folded ("\n" then white space) but never hold a bare
 * CR, NUL or other control characters. */
static bool
field_value_ok(const char *s)
{
	for (const char *p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '\r' && p[1] == '\n')
			continue;
		if (c == '\n') {
			if (p[1] != ' ' && p[1] != '\t')
				return false;
			continue;
		}
		if (c < 32 && c != '\t')
			return false;
	}
	return strlen(s) < 16 * 1024;
}

/* Body chunks: bare LF becomes CRLF, so the stored message stays CRLF. */
static void
body_append(struct buf *b, const char *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (d[i] == '\n' && (i == 0 ? (b->len == 0 ||
		    b->data[b->len - 1] != '\r') : d[i - 1] != '\r'))
			buf_append(b, "\r", 1);
		buf_append(b, &d[i], 1);
	}
}

int
milter_edits_add(struct milter_edits *e, const struct milter_reply *r,
    char *why, size_t whylen)
{
	struct milter_edit *m;

	if (r->kind == MR_REPLBODY) {
		if (!e->body_replaced)
			buf_reset(&e->body);
		e->body_replaced = true;
		body_append(&e->body, r->body, r->body_len);
		return 0;
	}
	if (!field_name_ok(r->name) || !field_value_ok(r->value)) {
		snprintf(why, whylen, "malformed header field \"%.60s\"",
		    r->name);
		return -1;
	}
	e->v = xrealloc(e->v, (e->n + 1) * sizeof(*e->v));
	m = &e->v[e->n++];
	m->kind = r->kind == MR_ADDHEADER ? ME_ADDHEADER :
	    r->kind == MR_INSHEADER ? ME_INSHEADER : ME_CHGHEADER;
	m->index = r->index;
	m->name = xstrdup(r->name);
	m->value = xstrdup(r->value);
	return 0;
}

/* One header field of a message: [start, end) including its CRLF. */
struct field {
	size_t start, end;
	char  *text;            /* replacement ("" deleted), or NULL */
};

/* The fields of the header section, and where the body starts. */
static size_t
split_fields(const char *msg, size_t len, struct field **out, size_t *nout)
{
	size_t off = 0, n = 0, cap = 0;
	struct field *v = NULL;

	while (off < len) {
		const char *nl = memchr(msg + off, '\n', len - off);
		size_t line_end = nl ? (size_t)(nl - msg) + 1 : len;

		/* The empty line ends the header section. */
		if (msg[off] == '\n' || (msg[off] == '\r' && off + 1 < len &&
		    msg[off + 1] == '\n'))
			break;
		if ((msg[off] == ' ' || msg[off] == '\t') && n > 0) {
			v[n - 1].end = line_end;
		} else {
			if (memchr(msg + off, ':', line_end - off) == NULL)
				break;      /* no field: the body starts here */
			if (n == cap) {
				cap = cap ? cap * 2 : 32;
				v = xrealloc(v, cap * sizeof(*v));
			}
			v[n].start = off;
			v[n].end = line_end;
			v[n].text = NULL;
			n++;
		}
		off = line_end;
	}
	*out = v;
	*nout = n;
	return off;
}

static bool
field_is(const char *msg, const struct field *f, const char *name)
{
	size_t nl = strlen(name);

	return f->end - f->start > nl && msg[f->start + nl] == ':' &&
	    strncasecmp(msg + f->start, name, nl) == 0;
}

/* "Name: value" with its folds as CRLF, ending in CRLF. */
static void
field_format(struct buf *b, const char *name, const char *value)
{
	buf_appendf(b, "%s:", name);
	if (value[0] != ' ' && value[0] != '\t')
		buf_append(b, " ", 1);
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\r')
			continue;
		if (*p == '\n')
			buf_append(b, "\r\n", 2);
		else
			buf_append(b, p, 1);
	}
	buf_append(b, "\r\n", 2);
}

/* Inserted fields: before field `at` (n: at the end). */
struct inserted {
	size_t at;
	char  *text;
};

void
milter_edits_apply(const char *msg, size_t len, const struct milter_edits *e,
    struct buf *out)
{
	struct field *f;
	size_t nf, body, nins = 0;
	struct inserted *ins = xcalloc(e->n + 1, sizeof(*ins));
	struct buf t;

	body = split_fields(msg, len, &f, &nf);
	buf_init(&t);
	for (size_t i = 0; i < e->n; i++) {
		const struct milter_edit *m = &e->v[i];
		size_t k, seen = 0;

		buf_reset(&t);
		if (m->kind != ME_CHGHEADER || m->value[0] != '\0')
			field_format(&t, m->name, m->value);
		if (m->kind == ME_CHGHEADER) {
			for (k = 0; k < nf; k++) {
				if (!field_is(msg, &f[k], m->name) ||
				    (f[k].text != NULL && f[k].text[0] == '\0'))
					continue;
				if (++seen == (m->index ? m->index : 1))
					break;
			}
			if (k < nf) {
				free(f[k].text);
				f[k].text = xstrndup(t.data ? t.data : "", t.len);
				continue;
			}
			if (m->value[0] == '\0')
				continue;   /* deleting what is not there */
		}
		ins[nins].at = m->kind == ME_INSHEADER && m->index < nf ?
		    m->index : nf;
		ins[nins].text = xstrndup(t.data, t.len);
		nins++;
	}
	for (size_t k = 0; k <= nf; k++) {
		for (size_t j = 0; j < nins; j++)
			if (ins[j].at == k && k < nf)
				buf_appends(out, ins[j].text);
		if (k == nf)
			break;
		if (f[k].text != NULL)
			buf_appends(out, f[k].text);
		else
			buf_append(out, msg + f[k].start, f[k].end - f[k].start);
	}
	for (size_t j = 0; j < nins; j++)
		if (ins[j].at == nf)
			buf_appends(out, ins[j].text);
	if (e->body_replaced) {
		buf_append(out, "\r\n", 2);
		buf_append(out, e->body.data, e->body.len);
	} else {
		buf_append(out, msg + body, len - body);
	}
	for (size_t k = 0; k < nf; k++)
		free(f[k].text);
	for (size_t j = 0; j < nins; j++)
		free(ins[j].text);
	free(ins);
	free(f);
	buf_free(&t);
}

size_t
milter_headers_walk(const char *msg, size_t len,
    void (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	struct field *f;
	size_t nf, body;
	struct buf name, value;

	body = split_fields(msg, len, &f, &nf);
	buf_init(&name);
	buf_init(&value);
	for (size_t k = 0; k < nf; k++) {
		const char *p = msg + f[k].start, *end = msg + f[k].end;
		const char *colon = memchr(p, ':', (size_t)(end - p));

		buf_reset(&name);
		buf_reset(&value);
		buf_append(&name, p, (size_t)(colon - p));
		buf_append(&name, "", 1);
		p = colon + 1;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		/* Drop the final line end; inner CRLFs become "\n". */
		while (end > p && (end[-1] == '\n' || end[-1] == '\r'))
			end--;
		for (; p < end; p++) {
			if (*p == '\r' && p + 1 < end && p[1] == '\n')
				continue;
			buf_append(&value, p, 1);
		}
		buf_append(&value, "", 1);
		fn(arg, name.data, value.data);
	}
	/* Past the empty line. */
	if (body < len && msg[body] == '\r')
		body++;
	if (body < len && msg[body] == '\n')
		body++;
	buf_free(&name);
	buf_free(&value);
	free(f);
	return body;
}
