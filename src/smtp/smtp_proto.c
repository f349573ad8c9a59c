/*
 * smtp_proto — the sans-I/O SMTP server engine; see smtp_proto.h.
 *
 * Two input modes.  In command mode bytes are collected into one line
 * buffer of params.max_line bytes (allocated once) and each complete line
 * is checked (length, line ending, NUL, CR, non-ASCII) and dispatched
 * through a command table.  In data mode a small state machine over the
 * bytes finds CRLF "." CRLF, removes dot-stuffing and handles bare CR and
 * LF; its state survives between calls, so how the input is split into
 * feeds never changes the result.
 *
 * Decisions that belong to the caller are events.  While one is pending
 * nothing more is consumed, so replies leave in command order whatever
 * the caller does between feeds.  All transaction state changes happen in
 * one place, settle(), when the event is answered.
 *
 * A SASL exchange (AUTH) is a third way of reading lines: while p->sasl is
 * set, a complete line is a base64 response, not a command.  Decoded
 * credentials live in two buffers of the line's size, allocated with the
 * engine and wiped as soon as the AUTH event is answered.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/addr.h"
#include "common/dsn.h"
#include "smtp/smtp_proto.h"
#include "common/util.h"
#include "common/metrics.h"

#define DSN_LINE_EXTRA DSN_ORCPT_MAX

#define LINE_MIN        512    /* RFC 5321 4.5.3.1.4 */
#define REPLY_TEXT_MAX  506    /* 512 per reply line, RFC 5321 4.5.3.1.5 */
#define SINK_CHUNK      8192
#define ADDR_TEXT_MAX   (ADDR_LOCAL_MAX + 3 + ADDR_DOMAIN_MAX + 2)

#define TEXT_BARE_NL    "5.6.11 Bare CR or LF received in message, use CRLF"
#define TEXT_TOO_BIG    "5.3.4 Message size exceeds fixed limit"
#define TEXT_BAD_B64    "5.5.2 Cannot decode response"
#define TEXT_BAD_SASL   "5.5.2 Malformed authentication response"

/* The LOGIN mechanism's challenges, base64 of "Username:", "Password:". */
#define LOGIN_USER_B64  "VXNlcm5hbWU6"
#define LOGIN_PASS_B64  "UGFzc3dvcmQ6"

/* Where the content state machine is (see data_byte()). */
enum data_state {
	DS_BOL,     /* at the start of a line (after CRLF) */
	DS_DOT,     /* "." at the start of a line */
	DS_DOTCR,   /* "." CR at the start of a line */
	DS_TEXT,    /* inside a line */
	DS_CR,      /* CR inside a line, LF not seen yet */
};

/* The SASL exchange in progress: which response the next line is. */
enum sasl_state {
	SASL_NONE,
	SASL_PLAIN,         /* PLAIN's response */
	SASL_LOGIN_USER,    /* LOGIN's user name */
	SASL_LOGIN_PASS,    /* LOGIN's password */
};

struct proto {
	struct proto_params params;
	char           *hostname;
	char           *greeting;
	proto_data_fn   sink;
	void           *sink_ctx;

	/* The command line being collected, without its LF. */
	char           *line;
	size_t          line_len;
	size_t          line_max;      /* max_line - 1: room for the CR */
	size_t          line_cap;      /* line_max + DSN_LINE_EXTRA: RCPT's */
	bool            line_overlong;
	bool            line_bare_lf;  /* a LF without CR inside the line */
	unsigned long   requests;      /* complete lines and messages */
	unsigned long long data_bytes; /* read in this DATA phase */
	char            line_last;     /* the line's last byte so far */

	/* Session. */
	bool            started;
	bool            refused;       /* greeting was an error, RFC 5321 3.1 */
	bool            helo_seen;
	bool            esmtp;
	bool            closing;
	bool            shutdown_wanted;
	unsigned        nerrors;

	/* TLS and AUTH. */
	bool            tls;           /* encrypted (implicit TLS or STARTTLS) */
	bool            tls_wait;      /* STARTTLS accepted, no handshake yet */
	bool            authenticated;
	enum sasl_state sasl;
	char           *sasl_user;     /* LOGIN's user name, decoded */
	char           *sasl_buf;      /* the decoded response */

	/* Transaction. */
	bool            in_mail;
	bool            txn_utf8;
	unsigned        nrcpts;

	/* Message content. */
	bool            in_data;
	/* BDAT (RFC 3030): the transaction's content comes in chunks of
	 * exactly counted bytes; no dot-stuffing, line ends checked as in
	 * DATA.  Once a chunk is refused, every later one of the
	 * transaction gets the same reply and is read and thrown away. */
	bool            bdat_txn;      /* this transaction uses BDAT */
	bool            bdat_chunk;    /* reading a chunk (in_data) */
	bool            bdat_last;     /* ... the LAST one */
	bool            bdat_discard;  /* ... to throw it away */
	bool            bdat_cr;       /* the content so far ends in a CR */
	bool            bdat_bol;      /* ... at a line start (or empty) */
	unsigned long long bdat_left;  /* bytes of the chunk still to read */
	int             bdat_fail_code;    /* 0, or the refusal of the txn */
	char            bdat_fail_text[REPLY_TEXT_MAX + 1];
	enum data_state dstate;
	size_t          msg_size;
	int             abort_code;    /* 0 while the content is acceptable */
	const char     *abort_text;
	char           *chunk;      /* SINK_CHUNK bytes, made for each
	                               message: idle sessions need none */
	size_t          chunk_len;

	/* The pending event. */
	bool            ev_pending;
	struct proto_event ev;
	char           *helo_buf;
	char            addr_buf[ADDR_TEXT_MAX];
	char            envid_buf[DSN_ENVID_MAX + 1];
	char            orcpt_buf[DSN_ORCPT_MAX + 1];

	struct buf      out;
};

struct proto_cmd {
	const char *verb;
	void      (*fn)(struct proto *, const char *arg);
	bool        utf8_arg;    /* may carry an SMTPUTF8 address */
	enum metrics_counter metric;
};

/* ---- replies ---------------------------------------------------------- */

/*
 * Append one reply, "code-line" CRLF for each '\n'-separated line but the
 * last.  Control characters in the text become '?' so that nothing a
 * caller echoes can end a reply early or inject another one.  counted is
 * false for the few 4xx replies that are not the client's fault.
 */
static void
reply_text(struct proto *p, int code, const char *text, bool counted)
{
	const char *line = text, *nl;
	size_t len, i;

	/* Only a programming error gets here with a code SMTP does not have;
	 * a temporary failure is the answer that loses nothing. */
	if (code < 200 || code > 599)
		code = 451;
	metrics_inc(code < 300 ? MC_REPLY_2XX : code < 400 ? MC_REPLY_3XX :
	    code < 500 ? MC_REPLY_4XX : MC_REPLY_5XX);
	do {
		nl = strchr(line, '\n');
		len = nl ? (size_t)(nl - line) : strlen(line);
		if (len > REPLY_TEXT_MAX)
			len = REPLY_TEXT_MAX;
		/* A trailing '\n' does not open another, empty line. */
		if (nl != NULL && nl[1] == '\0')
			nl = NULL;
		buf_appendf(&p->out, "%d%c", code, nl ? '-' : ' ');
		for (i = 0; i < len; i++) {
			char c = line[i];
			if ((unsigned char)c < 32 || c == 127)
				c = '?';
			buf_append(&p->out, &c, 1);
		}
		if (len == 0 && nl == NULL)     /* "250 " → "250" */
			p->out.len--;
		buf_append(&p->out, "\r\n", 2);
		line = nl ? nl + 1 : NULL;
	} while (line != NULL);

	if (code == 421)
		p->closing = true;
	if (code >= 400 && counted && !p->closing && p->params.max_errors > 0 &&
	    ++p->nerrors >= p->params.max_errors) {
		buf_appends(&p->out,
		    "421 4.7.0 Too many errors, closing connection\r\n");
		p->closing = true;
	}
}

static void
reply(struct proto *p, int code, const char *text)
{
	reply_text(p, code, text, true);
}

static void
replyf(struct proto *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
replyf(struct proto *p, int code, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply(p, code, text);
}

static bool
starttls_offered(const struct proto *p)
{
	return p->params.starttls && !p->tls;
}

/* RFC 4954 4: mechanisms that send the password in the clear are offered
 * only on an encrypted connection, unless configured otherwise. */
static bool
auth_offered(const struct proto *p)
{
	return p->params.auth && (p->tls || p->params.auth_plaintext);
}

static void
ehlo_reply(struct proto *p)
{
	replyf(p, 250, "%s\nPIPELINING\nSIZE %zu\n8BITMIME\n"
	    "ENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING\nDSN%s%s", p->hostname,
	    p->params.max_size, starttls_offered(p) ? "\nSTARTTLS" : "",
	    auth_offered(p) ? "\nAUTH PLAIN LOGIN" : "");
}

/* "334 " challenge: RFC 4954 4 wants the space even when it is empty. */
static void
challenge(struct proto *p, const char *b64)
{
	buf_appendf(&p->out, "334 %s\r\n", b64);
}

/* A 421 that the engine sends on its own: "421 4.4.2 host Error: ...". */
static void
close_with(struct proto *p, const char *status, const char *text)
{
	char line[512];

	snprintf(line, sizeof(line), "%s %s %s", status, p->hostname, text);
	reply_text(p, 421, line, false);
}

/* ---- events and state ------------------------------------------------- */

static void
txn_reset(struct proto *p)
{
	p->in_mail = false;
	p->txn_utf8 = false;
	p->nrcpts = 0;
	p->bdat_txn = false;
	p->bdat_fail_code = 0;
}

static struct proto_event *
event_new(struct proto *p, enum proto_event_type type)
{
	memset(&p->ev, 0, sizeof(p->ev));
	p->ev.type = type;
	p->ev.helo = "";
	p->ev.addr_text = "";
	p->ev.abort_text = "";
	p->ev.auth_mech = "";
	p->ev.auth_authzid = "";
	p->ev.auth_user = "";
	p->ev.auth_pass = "";
	return &p->ev;
}

/* End a SASL exchange and forget every credential it carried. */
static void
sasl_end(struct proto *p)
{
	p->sasl = SASL_NONE;
	if (p->sasl_buf != NULL) {
		explicit_bzero(p->sasl_user, p->line_cap + 1);
		explicit_bzero(p->sasl_buf, p->line_cap + 1);
	}
}

/* The exchange's buffers, made at its first response and kept (wiped)
 * until the session ends: a session that never authenticates (most)
 * carries none. */
static void
sasl_bufs(struct proto *p)
{
	if (p->sasl_buf == NULL) {
		p->sasl_user = xcalloc(1, p->line_cap + 1);
		p->sasl_buf = xcalloc(1, p->line_cap + 1);
	}
}

static void
raise_event(struct proto *p)
{
	p->ev_pending = true;
}

static void
maybe_shutdown(struct proto *p)
{
	/* Not between STARTTLS and the handshake: the goodbye would go out
	 * in the clear where the client expects a TLS record. */
	if (p->shutdown_wanted && !p->closing && !p->ev_pending &&
	    !p->in_data && !p->tls_wait)
		close_with(p, "4.3.2", "Service shutting down");
}

static void
start_data(struct proto *p)
{
	p->in_data = true;
	/* The DATA line's CRLF counts as the CRLF before a lone ".". */
	p->dstate = DS_BOL;
	p->msg_size = 0;
	p->data_bytes = 0;
	p->abort_code = 0;
	p->abort_text = NULL;
	p->chunk_len = 0;
}

static void bdat_settle(struct proto *p, bool ok);
static void bdat_chunk_end(struct proto *p);
static void emit(struct proto *p, const char *s, size_t n);
static void chunk_flush(struct proto *p);
static void bare_newline(struct proto *p);
static void data_end(struct proto *p);

/*
 * The one place where an answered event changes the session: 2xx (and
 * 3xx for DATA) moves forward, anything else leaves the state as it was.
 */
static void
settle(struct proto *p, int code)
{
	bool ok = code >= 200 && code < 400;

	p->ev_pending = false;
	switch (p->ev.type) {
	case PROTO_EV_CONNECT:
		if (!ok)
			p->refused = true;
		break;
	case PROTO_EV_HELO:
		/* RFC 5321 4.1.4: an accepted EHLO/HELO acts as RSET. */
		if (ok) {
			txn_reset(p);
			p->helo_seen = true;
			p->esmtp = p->ev.esmtp;
		}
		break;
	case PROTO_EV_MAIL:
		if (ok) {
			p->in_mail = true;
			p->nrcpts = 0;
			p->txn_utf8 = p->ev.smtputf8;
		}
		break;
	case PROTO_EV_RCPT:
		if (ok)
			p->nrcpts++;
		break;
	case PROTO_EV_DATA:
		if (p->ev.bdat)
			bdat_settle(p, ok);
		else if (ok && !p->closing)
			start_data(p);
		break;
	case PROTO_EV_MESSAGE:
	case PROTO_EV_MESSAGE_ABORT:
		txn_reset(p);
		break;
	case PROTO_EV_RSET:
		if (ok)
			txn_reset(p);
		break;
	case PROTO_EV_QUIT:
		p->closing = true;
		break;
	case PROTO_EV_STARTTLS:
		/* From here on nothing is a command until the handshake. */
		if (ok && !p->closing) {
			p->tls_wait = true;
			p->line_len = 0;
			p->line_overlong = false;
			p->line_bare_lf = false;
			p->line_last = '\0';
		}
		break;
	case PROTO_EV_AUTH:
		if (ok)
			p->authenticated = true;
		sasl_end(p);
		break;
	}
	maybe_shutdown(p);
}

/* ---- commands --------------------------------------------------------- */

static bool
has_nonascii(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

static void
cmd_helo_common(struct proto *p, const char *arg, bool esmtp)
{
	struct proto_event *ev;

	if (arg[0] == '\0') {
		reply(p, 501, esmtp ? "5.5.4 Syntax: EHLO hostname" :
		    "5.5.4 Syntax: HELO hostname");
		return;
	}
	/* Its own size: kept for the session (an earlier one's event has
	 * been answered before this line was read). */
	free(p->helo_buf);
	p->helo_buf = xstrdup(arg);
	ev = event_new(p, PROTO_EV_HELO);
	ev->helo = p->helo_buf;
	ev->esmtp = esmtp;
	raise_event(p);
}

static void
cmd_helo(struct proto *p, const char *arg)
{
	cmd_helo_common(p, arg, false);
}

static void
cmd_ehlo(struct proto *p, const char *arg)
{
	cmd_helo_common(p, arg, true);
}

/* One esmtp-param (RFC 5321 4.1.2), located in place. */
struct esmtp_param {
	const char *kw;
	size_t      kwlen;
	const char *val;      /* NULL without "=" */
	size_t      vallen;
};

static bool
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

/* esmtp-keyword ["=" esmtp-value]; *s moves past it. */
static int
param_next(const char **s, struct esmtp_param *ep)
{
	const char *q = *s;

	ep->kw = q;
	if (!is_alnum(*q))
		return -1;
	while (is_alnum(*q) || *q == '-')
		q++;
	ep->kwlen = (size_t)(q - ep->kw);
	ep->val = NULL;
	ep->vallen = 0;
	if (*q == '=') {
		ep->val = ++q;
		/* esmtp-value: %d33-60 / %d62-126 */
		while (*q >= 33 && *q <= 126 && *q != '=')
			q++;
		ep->vallen = (size_t)(q - ep->val);
		if (ep->vallen == 0)
			return -1;
	}
	if (*q != ' ' && *q != '\0')
		return -1;
	*s = q;
	return 0;
}

static bool
token_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

/* RFC 1870 size-value, refusing what does not fit 64 bits. */
static int
size_value(const char *s, size_t len, unsigned long long *out)
{
	unsigned long long v = 0;
	unsigned d;
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (~0ULL - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return len > 0 ? 0 : -1;
}

/* RET=FULL|HDRS (RFC 3461 4.3). */
static int
dsn_ret_param(struct proto *p, const struct esmtp_param *ep,
    struct proto_event *ev)
{
	if (ev->dsn_ret != DSN_RET_NONE) {
		reply(p, 501, "5.5.4 Duplicate RET parameter");
		return -1;
	}
	if (ep->val != NULL && token_is(ep->val, ep->vallen, "FULL"))
		ev->dsn_ret = DSN_RET_FULL;
	else if (ep->val != NULL && token_is(ep->val, ep->vallen, "HDRS"))
		ev->dsn_ret = DSN_RET_HDRS;
	else {
		reply(p, 501, "5.5.4 Bad RET parameter syntax");
		return -1;
	}
	return 0;
}

/* ENVID=xtext (RFC 3461 4.4): at most 100 characters, printable. */
static int
dsn_envid_param(struct proto *p, const struct esmtp_param *ep,
    struct proto_event *ev)
{
	if (ev->dsn_envid != NULL) {
		reply(p, 501, "5.5.4 Duplicate ENVID parameter");
		return -1;
	}
	if (ep->val == NULL || ep->vallen > DSN_ENVID_MAX ||
	    dsn_xtext_decode(ep->val, ep->vallen, p->envid_buf,
	    sizeof(p->envid_buf)) < 0) {
		reply(p, 501, "5.5.4 Bad ENVID parameter syntax");
		return -1;
	}
	ev->dsn_envid = p->envid_buf;
	return 0;
}

/*
 * The MAIL parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
 * (RFC 6531), RET and ENVID (RFC 3461).  Replies and returns -1 on the
 * first problem.
 */
static int
mail_params(struct proto *p, const char *s, struct proto_event *ev)
{
	struct esmtp_param ep;
	bool seen_size = false, seen_body = false, seen_utf8 = false;
	bool seen_auth = false;

	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			break;
		/* RFC 5321 4.1.1.11: parameters are an extension, and HELO
		 * negotiated none. */
		if (!p->esmtp) {
			reply(p, 555, "5.5.4 Parameters not allowed after HELO");
			return -1;
		}
		if (param_next(&s, &ep) < 0) {
			reply(p, 501, "5.5.4 Syntax error in MAIL parameters");
			return -1;
		}
		if (token_is(ep.kw, ep.kwlen, "SIZE")) {
			if (seen_size || ep.val == NULL ||
			    size_value(ep.val, ep.vallen, &ev->size_param) < 0) {
				reply(p, 501, "5.5.4 Bad SIZE parameter");
				return -1;
			}
			seen_size = true;
		} else if (token_is(ep.kw, ep.kwlen, "BODY")) {
			if (seen_body || ep.val == NULL) {
				reply(p, 501, "5.5.4 Bad BODY parameter");
				return -1;
			}
			if (token_is(ep.val, ep.vallen, "8BITMIME"))
				ev->body_8bitmime = true;
			else if (!token_is(ep.val, ep.vallen, "7BIT")) {
				reply(p, 501, "5.5.4 Unsupported BODY type");
				return -1;
			}
			seen_body = true;
		} else if (token_is(ep.kw, ep.kwlen, "SMTPUTF8")) {
			if (seen_utf8 || ep.val != NULL) {
				reply(p, 501, "5.5.4 Bad SMTPUTF8 parameter");
				return -1;
			}
			ev->smtputf8 = true;
			seen_utf8 = true;
		} else if (token_is(ep.kw, ep.kwlen, "AUTH") &&
		    auth_offered(p)) {
			/* RFC 4954 5: accepted where AUTH is offered, and
			 * ignored: we do not relay on behalf of other
			 * trusted servers. */
			if (seen_auth || ep.val == NULL) {
				reply(p, 501, "5.5.4 Bad AUTH parameter");
				return -1;
			}
			seen_auth = true;
		} else if (token_is(ep.kw, ep.kwlen, "RET")) {
			if (dsn_ret_param(p, &ep, ev) < 0)
				return -1;
		} else if (token_is(ep.kw, ep.kwlen, "ENVID")) {
			if (dsn_envid_param(p, &ep, ev) < 0)
				return -1;
		} else {
			reply(p, 555, "5.5.4 Unsupported parameter");
			return -1;
		}
	}
	if (p->params.max_size > 0 && ev->size_param > p->params.max_size) {
		reply(p, 552, TEXT_TOO_BIG);
		return -1;
	}
	return 0;
}

/* "FROM:" or "TO:", then the path; a space before the path is tolerated
 * because many clients send one. */
static const char *
path_start(const char *arg, const char *keyword)
{
	size_t n = strlen(keyword);

	if (strncasecmp(arg, keyword, n) != 0)
		return NULL;
	arg += n;
	while (*arg == ' ')
		arg++;
	return *arg == '\0' ? NULL : arg;
}

static void
cmd_mail(struct proto *p, const char *arg)
{
	struct addr_parse_opts opts = { .null_ok = true, .utf8_ok = true };
	struct proto_event *ev;
	const char *path, *why;
	size_t used;

	if (!p->helo_seen) {
		reply(p, 503, "5.5.1 Error: send HELO/EHLO first");
		return;
	}
	/* RFC 4954 6, RFC 6409 4.3: a submission server takes mail only
	 * from users it knows. */
	if (p->params.auth_required && !p->authenticated) {
		reply(p, 530, "5.7.0 Authentication required");
		return;
	}
	if (p->in_mail) {
		reply(p, 503, "5.5.1 Error: nested MAIL command");
		return;
	}
	if ((path = path_start(arg, "FROM:")) == NULL) {
		reply(p, 501, "5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	ev = event_new(p, PROTO_EV_MAIL);
	/* SMTPUTF8 comes after the path, so parse leniently first and check
	 * the address against the parameters afterwards. */
	if (addr_parse_path(path, &opts, &ev->addr, &used, &why) < 0) {
		replyf(p, 501, "5.1.7 Bad sender address syntax: %s", why);
		return;
	}
	if (mail_params(p, path + used, ev) < 0)
		return;
	/* RFC 6531 3.4: non-ASCII addresses only in SMTPUTF8 transactions. */
	if (!ev->smtputf8 && has_nonascii(path, used)) {
		reply(p, 553, "5.6.7 Non-ASCII address requires SMTPUTF8");
		return;
	}
	addr_format(&ev->addr, p->addr_buf, sizeof(p->addr_buf));
	ev->addr_text = p->addr_buf;
	raise_event(p);
}

/* NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1). */
static int
dsn_notify_param(struct proto *p, const struct esmtp_param *ep,
    struct proto_event *ev)
{
	int bits;

	if (ev->dsn_notify != 0) {
		reply(p, 501, "5.5.4 Duplicate NOTIFY parameter");
		return -1;
	}
	if (ep->val == NULL ||
	    (bits = dsn_notify_parse(ep->val, ep->vallen)) <= 0) {
		reply(p, 501, "5.5.4 Bad NOTIFY parameter syntax");
		return -1;
	}
	ev->dsn_notify = (unsigned)bits;
	return 0;
}

/* addr-type (an atom, RFC 3461 4.2): letters, digits and atext's
 * symbols; "rfc822" and RFC 6533's "utf-8" in practice. */
static bool
addr_type_char(char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*-/?^_`{|}~", c));
}

/* ORCPT=addr-type;xtext (RFC 3461 4.2): at most 500 characters. */
static int
dsn_orcpt_param(struct proto *p, const struct esmtp_param *ep,
    struct proto_event *ev)
{
	size_t tlen = 0;

	if (ev->dsn_orcpt != NULL) {
		reply(p, 501, "5.5.4 Duplicate ORCPT parameter");
		return -1;
	}
	if (ep->val != NULL)
		while (tlen < ep->vallen && addr_type_char(ep->val[tlen]))
			tlen++;
	/* The type, ";", and an address that is not empty. */
	if (ep->val == NULL || ep->vallen > DSN_ORCPT_MAX || tlen == 0 ||
	    tlen + 1 >= ep->vallen || ep->val[tlen] != ';' ||
	    dsn_xtext_decode(ep->val + tlen + 1, ep->vallen - tlen - 1,
	    p->orcpt_buf + tlen + 1, sizeof(p->orcpt_buf) - tlen - 1) <= 0) {
		reply(p, 501, "5.5.4 Bad ORCPT parameter syntax");
		return -1;
	}
	memcpy(p->orcpt_buf, ep->val, tlen + 1);
	ev->dsn_orcpt = p->orcpt_buf;
	return 0;
}

/* The RCPT parameters: NOTIFY and ORCPT (RFC 3461). */
static int
rcpt_params(struct proto *p, const char *s, struct proto_event *ev)
{
	struct esmtp_param ep;

	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			return 0;
		if (!p->esmtp) {
			reply(p, 555, "5.5.4 Parameters not allowed after HELO");
			return -1;
		}
		if (param_next(&s, &ep) < 0) {
			reply(p, 501, "5.5.4 Syntax error in RCPT parameters");
			return -1;
		}
		if (token_is(ep.kw, ep.kwlen, "NOTIFY")) {
			if (dsn_notify_param(p, &ep, ev) < 0)
				return -1;
		} else if (token_is(ep.kw, ep.kwlen, "ORCPT")) {
			if (dsn_orcpt_param(p, &ep, ev) < 0)
				return -1;
		} else {
			reply(p, 555, "5.5.4 Unsupported parameter");
			return -1;
		}
	}
}

static void
cmd_rcpt(struct proto *p, const char *arg)
{
	struct addr_parse_opts opts = { .postmaster_ok = true };
	struct proto_event *ev;
	const char *path, *why;
	size_t used;

	if (!p->in_mail) {
		reply(p, 503, "5.5.1 Error: need MAIL command");
		return;
	}
	if ((path = path_start(arg, "TO:")) == NULL) {
		reply(p, 501, "5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	opts.utf8_ok = p->txn_utf8;
	ev = event_new(p, PROTO_EV_RCPT);
	if (addr_parse_path(path, &opts, &ev->addr, &used, &why) < 0) {
		if (!p->txn_utf8 && has_nonascii(path, strlen(path)))
			reply(p, 553, "5.6.7 Non-ASCII address requires "
			    "SMTPUTF8");
		else
			replyf(p, 501, "5.1.3 Bad recipient address syntax: %s",
			    why);
		return;
	}
	if (rcpt_params(p, path + used, ev) < 0)
		return;
	/*
	 * RFC 5321 4.5.3.1.10 demands 452 here and the client is expected to
	 * send the rest later; that is not a client error, so it does not
	 * count towards max_errors: a legitimate mailing to many recipients
	 * must not be cut off with 421 and lose the recipients already given.
	 */
	if (p->params.max_rcpts > 0 && p->nrcpts >= p->params.max_rcpts) {
		reply_text(p, 452, "4.5.3 Too many recipients", false);
		return;
	}
	addr_format(&ev->addr, p->addr_buf, sizeof(p->addr_buf));
	ev->addr_text = p->addr_buf;
	raise_event(p);
}

static void
cmd_data(struct proto *p, const char *arg)
{
	if (arg[0] != '\0') {
		reply(p, 501, "5.5.4 Syntax: DATA");
		return;
	}
	if (!p->in_mail) {
		reply(p, 503, "5.5.1 Error: need MAIL command");
		return;
	}
	if (p->nrcpts == 0) {
		reply(p, 503, "5.5.1 Error: no valid recipients");
		return;
	}
	/* RFC 3030 3: DATA and BDAT do not mix in one transaction. */
	if (p->bdat_txn) {
		reply(p, 503, "5.5.1 Error: BDAT in progress, DATA not allowed");
		return;
	}
	event_new(p, PROTO_EV_DATA);
	raise_event(p);
}

/* "BDAT" SP chunk-size [SP "LAST"] (RFC 3030 2). */
static int
bdat_parse(const char *arg, unsigned long long *size, bool *last)
{
	unsigned long long n = 0;
	const char *q = arg;

	if (*q < '0' || *q > '9')
		return -1;
	for (; *q >= '0' && *q <= '9'; q++) {
		if (n > (ULLONG_MAX - 9) / 10)
			return -1;
		n = n * 10 + (unsigned long long)(*q - '0');
	}
	*last = false;
	if (*q == ' ') {
		while (*q == ' ')
			q++;
		if (strcasecmp(q, "LAST") != 0)
			return -1;
		*last = true;
	} else if (*q != '\0')
		return -1;
	*size = n;
	return 0;
}

/* Start reading a chunk: kept, or thrown away after its refusal. */
static void
bdat_start_chunk(struct proto *p, bool discard)
{
	p->in_data = true;
	p->bdat_chunk = true;
	p->bdat_discard = discard;
	p->data_bytes = 0;
	/* A zero-length chunk ends at once (proto_feed is not called
	 * without bytes). */
	if (p->bdat_left == 0)
		bdat_chunk_end(p);
}

/* The first chunk's DATA-stage checks answered. */
static void
bdat_settle(struct proto *p, bool ok)
{
	if (p->closing)
		return;
	if (!ok) {
		bdat_start_chunk(p, true);
		return;
	}
	p->bdat_txn = true;
	p->msg_size = 0;
	p->abort_code = 0;
	p->chunk_len = 0;
	p->bdat_cr = false;
	p->bdat_bol = true;
	bdat_start_chunk(p, false);
}

static void
cmd_bdat(struct proto *p, const char *arg)
{
	unsigned long long size;
	bool last;

	/* Without a size there is no telling where the chunk ends, and its
	 * bytes must never be read as commands: close. */
	if (bdat_parse(arg, &size, &last) < 0) {
		reply(p, 501, "5.5.4 Syntax: BDAT chunk-size [LAST]");
		close_with(p, "4.5.4", "Error: cannot find the end of the "
		    "BDAT chunk, closing");
		return;
	}
	p->bdat_left = size;
	p->bdat_last = last;
	/* RFC 3030 2: a refused BDAT's chunk is still read, and thrown
	 * away. */
	if (!p->in_mail || p->nrcpts == 0) {
		reply(p, 503, !p->in_mail ? "5.5.1 Error: need MAIL command" :
		    "5.5.1 Error: no valid recipients");
		bdat_start_chunk(p, true);
		return;
	}
	if (p->bdat_fail_code != 0) {
		reply(p, p->bdat_fail_code, p->bdat_fail_text);
		bdat_start_chunk(p, true);
		return;
	}
	if (p->params.max_size > 0 && (size > p->params.max_size ||
	    p->msg_size > p->params.max_size - size)) {
		p->bdat_fail_code = 552;
		strlcpy_mx(p->bdat_fail_text, TEXT_TOO_BIG,
		    sizeof(p->bdat_fail_text));
		reply(p, 552, TEXT_TOO_BIG);
		bdat_start_chunk(p, true);
		return;
	}
	if (p->bdat_txn) {
		bdat_start_chunk(p, false);
		return;
	}
	/* The first chunk goes through the DATA stage's checks. */
	event_new(p, PROTO_EV_DATA)->bdat = true;
	raise_event(p);
}

static void
cmd_rset(struct proto *p, const char *arg)
{
	if (arg[0] != '\0') {
		reply(p, 501, "5.5.4 Syntax: RSET");
		return;
	}
	event_new(p, PROTO_EV_RSET);
	raise_event(p);
}

static void
cmd_quit(struct proto *p, const char *arg)
{
	if (arg[0] != '\0') {
		reply(p, 501, "5.5.4 Syntax: QUIT");
		return;
	}
	event_new(p, PROTO_EV_QUIT);
	raise_event(p);
}

static void
cmd_noop(struct proto *p, const char *arg)
{
	/* RFC 5321 4.1.1.9: a parameter is allowed and ignored. */
	reply(p, 250, "2.0.0 Ok");
}

static void
cmd_vrfy(struct proto *p, const char *arg)
{
	if (arg[0] == '\0') {
		reply(p, 501, "5.5.4 Syntax: VRFY address");
		return;
	}
	/* RFC 5321 3.5.3: 252 without looking anything up, so that VRFY
	 * never tells a harvester which users exist. */
	reply(p, 252, "2.5.2 Cannot VRFY user, but will accept message and "
	    "attempt delivery");
}

static void
cmd_expn(struct proto *p, const char *arg)
{
	/* Lists are not expanded for strangers (RFC 5321 7.3). */
	reply(p, 502, "5.5.1 Command not implemented");
}

static void
cmd_help(struct proto *p, const char *arg)
{
	reply(p, 214, "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP "
	    "QUIT VRFY HELP; see RFC 5321");
}

static void
cmd_starttls(struct proto *p, const char *arg)
{
	if (p->tls) {
		reply(p, 503, "5.5.1 Error: TLS already active");
		return;
	}
	if (!p->params.starttls) {
		reply(p, 502, "5.5.1 Command not implemented");
		return;
	}
	if (arg[0] != '\0') {
		reply(p, 501, "5.5.4 Syntax: STARTTLS");
		return;
	}
	if (!p->helo_seen) {
		reply(p, 503, "5.5.1 Error: send EHLO first");
		return;
	}
	/* The handshake would throw the transaction away (RFC 3207 4.2):
	 * better to say so than to lose it silently. */
	if (p->in_mail) {
		reply(p, 503, "5.5.1 Error: MAIL transaction in progress");
		return;
	}
	event_new(p, PROTO_EV_STARTTLS);
	raise_event(p);
}

/* ---- SASL ------------------------------------------------------------ */

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict base64 (RFC 4648 4): whole quanta, padding only at the end, no
 * whitespace, and unused bits zero, so that one response has exactly one
 * encoding.  out has room for len / 4 * 3 bytes.  The decoded length, or
 * -1.
 */
static long
base64_decode(const char *in, size_t len, char *out)
{
	size_t i, o = 0;
	int v[4], k, pad;

	if (len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4) {
		pad = 0;
		for (k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[k] = b64_value(c)) < 0)
				return -1;
		}
		if ((pad == 2 && (v[1] & 0x0f) != 0) ||
		    (pad == 1 && (v[2] & 0x03) != 0))
			return -1;
		out[o++] = (char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (char)((v[1] & 0x0f) << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (char)((v[2] & 0x03) << 6 | v[3]);
	}
	return (long)o;
}

static void
sasl_fail(struct proto *p, int code, const char *text)
{
	sasl_end(p);
	reply(p, code, text);
}

static void
auth_event(struct proto *p, const char *mech, const char *authzid,
    const char *user, const char *pass)
{
	struct proto_event *ev = event_new(p, PROTO_EV_AUTH);

	p->sasl = SASL_NONE;
	ev->auth_mech = mech;
	ev->auth_authzid = authzid;
	ev->auth_user = user;
	ev->auth_pass = pass;
	raise_event(p);
}

/*
 * RFC 4616 2: [authzid] NUL authcid NUL passwd, in p->sasl_buf; the
 * identity and the password must not be empty.
 */
static void
plain_response(struct proto *p, size_t len)
{
	char *authzid = p->sasl_buf, *user, *pass, *nul;

	p->sasl_buf[len] = '\0';
	if ((nul = memchr(authzid, '\0', len)) == NULL)
		goto bad;
	user = nul + 1;
	if ((nul = memchr(user, '\0', len - (size_t)(user - authzid))) == NULL)
		goto bad;
	pass = nul + 1;
	if (memchr(pass, '\0', len - (size_t)(pass - authzid)) != NULL ||
	    user[0] == '\0' || pass[0] == '\0')
		goto bad;
	auth_event(p, "PLAIN", authzid, user, pass);
	return;
bad:
	sasl_fail(p, 501, TEXT_BAD_SASL);
}

/* One LOGIN response in p->sasl_buf: the user name, then the password. */
static void
login_response(struct proto *p, size_t len)
{
	p->sasl_buf[len] = '\0';
	if (len == 0 || memchr(p->sasl_buf, '\0', len) != NULL) {
		sasl_fail(p, 501, TEXT_BAD_SASL);
		return;
	}
	if (p->sasl != SASL_LOGIN_PASS) {
		memcpy(p->sasl_user, p->sasl_buf, len + 1);
		explicit_bzero(p->sasl_buf, len);
		p->sasl = SASL_LOGIN_PASS;
		challenge(p, LOGIN_PASS_B64);
		return;
	}
	auth_event(p, "LOGIN", "", p->sasl_user, p->sasl_buf);
}

/* A response of the exchange in state p->sasl, base64 text of len. */
static void
sasl_response(struct proto *p, const char *b64, size_t len)
{
	long n;

	sasl_bufs(p);
	if ((n = base64_decode(b64, len, p->sasl_buf)) < 0) {
		sasl_fail(p, 501, TEXT_BAD_B64);
		return;
	}
	if (p->sasl == SASL_PLAIN)
		plain_response(p, (size_t)n);
	else
		login_response(p, (size_t)n);
}

/* A line while a SASL exchange waits for the client. */
static void
sasl_line(struct proto *p, char *line, size_t len)
{
	/* RFC 4954 4: "*" cancels the exchange. */
	if (len == 1 && line[0] == '*')
		sasl_fail(p, 501, "5.0.0 Authentication cancelled");
	else
		sasl_response(p, line, len);
}

static void
cmd_auth(struct proto *p, const char *arg)
{
	const char *sp, *ir = NULL;
	size_t mechlen;

	if (!p->params.auth) {
		reply(p, 502, "5.5.1 Command not implemented");
		return;
	}
	if (!p->helo_seen || !p->esmtp) {
		reply(p, 503, "5.5.1 Error: send EHLO first");
		return;
	}
	if (!auth_offered(p)) {
		reply(p, 538, "5.7.11 Encryption required for requested "
		    "authentication mechanism");
		return;
	}
	if (p->authenticated) {
		reply(p, 503, "5.5.1 Error: already authenticated");
		return;
	}
	if (p->in_mail) {
		reply(p, 503, "5.5.1 Error: MAIL transaction in progress");
		return;
	}
	sp = strchr(arg, ' ');
	mechlen = sp != NULL ? (size_t)(sp - arg) : strlen(arg);
	if (sp != NULL) {
		for (ir = sp; *ir == ' '; ir++)
			;
		if (strchr(ir, ' ') != NULL)
			ir = "";        /* a second argument: a syntax error */
	}
	if (mechlen == 0 || (ir != NULL && ir[0] == '\0')) {
		reply(p, 501,
		    "5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (token_is(arg, mechlen, "PLAIN"))
		p->sasl = SASL_PLAIN;
	else if (token_is(arg, mechlen, "LOGIN"))
		p->sasl = SASL_LOGIN_USER;
	else {
		reply(p, 504, "5.5.4 Unrecognized authentication type");
		return;
	}
	/* RFC 4954 4: "=" is an initial response of zero length. */
	if (ir != NULL && strcmp(ir, "=") == 0)
		sasl_response(p, "", 0);
	else if (ir != NULL)
		sasl_response(p, ir, strlen(ir));
	else
		challenge(p, p->sasl == SASL_PLAIN ? "" : LOGIN_USER_B64);
}

static const struct proto_cmd proto_cmds[] = {
	{ "HELO",     cmd_helo,     false, MC_CMD_HELO },
	{ "EHLO",     cmd_ehlo,     false, MC_CMD_EHLO },
	{ "MAIL",     cmd_mail,     true,  MC_CMD_MAIL },
	{ "RCPT",     cmd_rcpt,     true,  MC_CMD_RCPT },
	{ "DATA",     cmd_data,     false, MC_CMD_DATA },
	{ "BDAT",     cmd_bdat,     false, MC_CMD_BDAT },
	{ "RSET",     cmd_rset,     false, MC_CMD_RSET },
	{ "NOOP",     cmd_noop,     false, MC_CMD_NOOP },
	{ "QUIT",     cmd_quit,     false, MC_CMD_QUIT },
	{ "VRFY",     cmd_vrfy,     false, MC_CMD_OTHER },
	{ "EXPN",     cmd_expn,     false, MC_CMD_OTHER },
	{ "HELP",     cmd_help,     false, MC_CMD_OTHER },
	{ "STARTTLS", cmd_starttls, false, MC_CMD_STARTTLS },
	{ "AUTH",     cmd_auth,     false, MC_CMD_AUTH },
};

static const struct proto_cmd *
cmd_lookup(const char *verb, size_t len)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(proto_cmds); i++)
		if (strlen(proto_cmds[i].verb) == len &&
		    strncasecmp(proto_cmds[i].verb, verb, len) == 0)
			return &proto_cmds[i];
	return NULL;
}

/* A complete command line, CRLF removed, NUL-terminated at len. */
static void
command(struct proto *p, char *line, size_t len)
{
	const struct proto_cmd *cmd;
	const char *arg;
	size_t verb;

	if (memchr(line, '\0', len) != NULL) {
		reply(p, 500, "5.5.2 Error: NUL character in command");
		return;
	}
	/* A CR that is not part of the final CRLF: no smuggling a second
	 * command (or a bare-CR line end) through a lenient peer. */
	if (memchr(line, '\r', len) != NULL) {
		reply(p, 500, "5.5.2 Bare CR received, use CRLF");
		return;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		line[--len] = '\0';
	if (len == 0) {
		reply(p, 500, "5.5.2 Error: bad syntax");
		return;
	}
	for (verb = 0; verb < len && line[verb] != ' '; verb++)
		;
	if ((cmd = cmd_lookup(line, verb)) == NULL) {
		metrics_inc(MC_CMD_OTHER);
		reply(p, 500, "5.5.2 Error: command not recognized");
		return;
	}
	metrics_inc(cmd->metric);
	if (!cmd->utf8_arg && has_nonascii(line, len)) {
		reply(p, 500, "5.5.2 Error: non-ASCII character in command");
		return;
	}
	/* RFC 5321 3.1: after a refusing greeting only QUIT is served. */
	if (p->refused && cmd->fn != cmd_quit) {
		reply(p, 503, "5.5.1 Error: no SMTP service here");
		return;
	}
	for (arg = line + verb; *arg == ' '; arg++)
		;
	cmd->fn(p, arg);
}

static void
line_drop(struct proto *p, size_t len)
{
	if (p->line != NULL) {
		explicit_bzero(p->line, len);
		free(p->line);
		p->line = NULL;
	}
}

/*
 * RFC 3461 4: DSN makes MAIL lines up to 100 characters longer (ENVID
 * and RET) and RCPT lines up to 500 (ORCPT and NOTIFY); every other
 * line keeps the configured limit.
 */
static size_t
line_limit(const struct proto *p, const char *line, size_t len)
{
	if (p->sasl == SASL_NONE && len >= 5 && line[4] == ' ') {
		if (strncasecmp(line, "RCPT", 4) == 0)
			return p->line_max + DSN_LINE_EXTRA;
		if (strncasecmp(line, "MAIL", 4) == 0)
			return p->line_max + DSN_ENVID_MAX;
	}
	return p->line_max;
}

/* The CRLF of a command line arrived; the CR is still in the line. */
static void
line_done(struct proto *p)
{
	size_t len = p->line_len;

	p->requests++;
	bool overlong = p->line_overlong ||
	    len > line_limit(p, p->line, len);
	bool bare_lf = p->line_bare_lf;

	p->line_len = 0;
	p->line_overlong = false;
	p->line_bare_lf = false;
	p->line_last = '\0';
	if (overlong) {
		if (p->sasl != SASL_NONE)
			sasl_fail(p, 500, "5.5.6 Authentication Exchange line "
			    "is too long");
		else
			reply(p, 500, "5.5.2 Line too long");
		line_drop(p, p->line_cap + 1);
		return;
	}
	if (bare_lf) {
		if (p->sasl != SASL_NONE)
			sasl_fail(p, 500, "5.5.2 Bare LF received, use CRLF");
		else
			reply(p, 500, "5.5.2 Bare LF received, use CRLF");
		line_drop(p, len);
		return;
	}
	p->line[--len] = '\0';
	if (p->sasl != SASL_NONE)
		sasl_line(p, p->line, len);
	else
		command(p, p->line, len);
	/* An AUTH line may carry a password (the initial response); no
	 * event points into the line, so it can go, and its buffer with
	 * it: an idle session holds none. */
	line_drop(p, len);
}

/*
 * RFC 5321 2.3.8: only CRLF ends a line.  A bare LF is part of the line,
 * and the whole line is refused when its CRLF arrives: "NOOP\nRCPT TO:<x>"
 * is one bad line, never a NOOP followed by a smuggled RCPT.
 */
static size_t
line_feed(struct proto *p, const char *data, size_t len)
{
	const char *nl = memchr(data, '\n', len);
	size_t take = nl ? (size_t)(nl - data) : len;

	/* An overlong line is consumed to its end but never stored, so that
	 * a client cannot make the engine hold more than max_line bytes. */
	if (p->line == NULL)
		p->line = xmalloc(p->line_cap + 1);
	if (!p->line_overlong) {
		if (take > p->line_cap - p->line_len) {
			p->line_overlong = true;
			p->line_len = 0;
		} else {
			memcpy(p->line + p->line_len, data, take);
			p->line_len += take;
		}
	}
	if (take > 0)
		p->line_last = data[take - 1];
	if (nl == NULL)
		return len;
	if (p->line_last != '\r') {
		p->line_bare_lf = true;
		p->line_last = '\n';
		/* The LF counts toward the line's length like any byte. */
		if (!p->line_overlong && p->line_len >= p->line_cap) {
			p->line_overlong = true;
			p->line_len = 0;
		} else if (!p->line_overlong) {
			p->line[p->line_len++] = '\n';
		}
		return take + 1;
	}
	line_done(p);
	return take + 1;
}

/* ---- message content -------------------------------------------------- */

static void
chunk_flush(struct proto *p)
{
	if (p->chunk_len > 0 && p->abort_code == 0)
		p->sink(p->sink_ctx, p->chunk, p->chunk_len);
	p->chunk_len = 0;
}

static void
content_abort(struct proto *p, int code, const char *text)
{
	/* The first reason is the one reported. */
	if (p->abort_code != 0)
		return;
	p->abort_code = code;
	p->abort_text = text;
	p->chunk_len = 0;
}

static void
emit(struct proto *p, const char *s, size_t n)
{
	size_t room;

	if (p->abort_code != 0)
		return;
	if (p->params.max_size > 0 && n > p->params.max_size - p->msg_size) {
		content_abort(p, 552, TEXT_TOO_BIG);
		return;
	}
	p->msg_size += n;
	if (p->chunk == NULL)
		p->chunk = xmalloc(SINK_CHUNK);
	while (n > 0) {
		room = SINK_CHUNK - p->chunk_len;
		if (room == 0) {
			chunk_flush(p);
			room = SINK_CHUNK;
		}
		if (room > n)
			room = n;
		memcpy(p->chunk + p->chunk_len, s, room);
		p->chunk_len += room;
		s += room;
		n -= room;
	}
}

/* A CR or LF that is not part of a CRLF.  It never ends a line for the
 * purpose of finding the end of data (CVE-2023-51766). */
static void
bare_newline(struct proto *p)
{
	if (p->params.bare_newlines == PROTO_BARE_NORMALIZE)
		emit(p, "\r\n", 2);
	else
		content_abort(p, 550, TEXT_BARE_NL);
}

static void
text_byte(struct proto *p, char c)
{
	if (c == '\r') {
		p->dstate = DS_CR;
		return;
	}
	p->dstate = DS_TEXT;
	if (c == '\n')
		bare_newline(p);
	else
		emit(p, &c, 1);
}

/*
 * One content byte; true when it completed CRLF "." CRLF.  DS_BOL is
 * entered only through a real CRLF (or the DATA line's), which is what
 * makes a lone "." after a bare LF or CR ordinary content.
 */
static bool
data_byte(struct proto *p, char c)
{
	switch (p->dstate) {
	case DS_BOL:
		if (c == '.') {
			p->dstate = DS_DOT;
			return false;
		}
		text_byte(p, c);
		return false;
	case DS_DOT:
		if (c == '\r') {
			p->dstate = DS_DOTCR;
			return false;
		}
		if (c == '\n') {
			/* "." then bare LF: the dot is content, not stuffing. */
			emit(p, ".", 1);
			bare_newline(p);
			p->dstate = DS_TEXT;
			return false;
		}
		/* RFC 5321 4.5.2: drop the dot the client's stuffing added. */
		text_byte(p, c);
		return false;
	case DS_DOTCR:
		if (c == '\n')
			return true;
		emit(p, ".", 1);
		bare_newline(p);
		text_byte(p, c);
		return false;
	case DS_CR:
		if (c == '\n') {
			emit(p, "\r\n", 2);
			p->dstate = DS_BOL;
			return false;
		}
		bare_newline(p);
		text_byte(p, c);
		return false;
	case DS_TEXT:
		text_byte(p, c);
		return false;
	}
	return false;
}

static void
data_end(struct proto *p)
{
	struct proto_event *ev;

	chunk_flush(p);
	/* The message is in: its staging buffer goes (data in flight
	 * only). */
	free(p->chunk);
	p->chunk = NULL;
	p->in_data = false;
	if (p->abort_code != 0) {
		ev = event_new(p, PROTO_EV_MESSAGE_ABORT);
		ev->abort_code = p->abort_code;
		ev->abort_text = p->abort_text;
	} else {
		ev = event_new(p, PROTO_EV_MESSAGE);
		ev->message_size = p->msg_size;
	}
	raise_event(p);
}

/*
 * A chunk's bytes: binary as far as the framing goes (no dot-stuffing,
 * no end marker), but a message is still text with CRLF line ends, as
 * DATA's: a bare CR or LF is refused or made CRLF (limits.bare_newlines)
 * exactly as there, so content received with BDAT can be relayed with
 * DATA without a line-ending game (CVE-2023-51766).  A CR at the end of
 * one chunk pairs with a LF at the start of the next.
 */
static void
bdat_bytes(struct proto *p, const char *data, size_t len)
{
	size_t i = 0, run;

	while (i < len) {
		if (p->bdat_cr) {
			p->bdat_cr = false;
			if (data[i] == '\n') {
				emit(p, "\r\n", 2);
				p->bdat_bol = true;
				i++;
				continue;
			}
			bare_newline(p);
			p->bdat_bol = true;
		}
		for (run = 0; i + run < len && data[i + run] != '\r' &&
		    data[i + run] != '\n'; run++)
			;
		if (run > 0) {
			emit(p, data + i, run);
			p->bdat_bol = false;
			i += run;
			continue;
		}
		if (data[i++] == '\r')
			p->bdat_cr = true;
		else {
			bare_newline(p);
			p->bdat_bol = true;
		}
	}
}

/* The chunk's last byte was read. */
static void
bdat_chunk_end(struct proto *p)
{
	p->in_data = false;
	p->bdat_chunk = false;
	if (p->bdat_discard) {
		/* Its reply went out with the command; LAST ends the
		 * refused transaction. */
		if (p->bdat_last)
			txn_reset(p);
		return;
	}
	if (p->bdat_last) {
		if (p->bdat_cr)
			bare_newline(p);
		/* Relayed later with DATA, the content must end in CRLF
		 * before the final dot. */
		else if (!p->bdat_bol)
			emit(p, "\r\n", 2);
		p->bdat_cr = false;
		data_end(p);
		return;
	}
	if (p->abort_code != 0) {
		/* Refused content ends the transaction now (RFC 3030 4.2:
		 * the client stops at the first refusal), as at the end of
		 * DATA: the caller drops what it has; chunks pipelined
		 * behind are read and refused (no transaction). */
		data_end(p);
		return;
	}
	chunk_flush(p);
	replyf(p, 250, "2.0.0 %llu octets received",
	    (unsigned long long)p->data_bytes);
}

static size_t
bdat_feed(struct proto *p, const char *data, size_t len)
{
	size_t take = len < p->bdat_left ? len : (size_t)p->bdat_left;

	if (!p->bdat_discard && p->bdat_fail_code == 0)
		bdat_bytes(p, data, take);
	p->bdat_left -= take;
	if (p->bdat_left == 0) {
		/* Counted before the reply, for the 250's octets. */
		p->data_bytes += take;
		bdat_chunk_end(p);
		p->data_bytes -= take;
	} else if (!p->bdat_discard)
		chunk_flush(p);
	return take;
}

static size_t
data_feed(struct proto *p, const char *data, size_t len)
{
	size_t i = 0, run;

	if (p->bdat_chunk)
		return bdat_feed(p, data, len);
	while (i < len) {
		/* The common case, runs of ordinary text, in one copy. */
		if (p->dstate == DS_TEXT) {
			for (run = 0; i + run < len && data[i + run] != '\r' &&
			    data[i + run] != '\n'; run++)
				;
			emit(p, data + i, run);
			i += run;
			if (i == len)
				break;
		}
		if (data_byte(p, data[i++])) {
			data_end(p);
			return i;
		}
	}
	chunk_flush(p);
	return i;
}

/* ---- public interface ------------------------------------------------- */

struct proto *
proto_new(const struct proto_params *params, proto_data_fn sink,
    void *sink_ctx)
{
	struct proto *p = xcalloc(1, sizeof(*p));

	p->params = *params;
	if (p->params.max_line < LINE_MIN)
		p->params.max_line = LINE_MIN;
	p->hostname = xstrdup(params->hostname ? params->hostname :
	    "localhost");
	p->greeting = xstrdup(params->greeting_text ? params->greeting_text :
	    "");
	p->params.hostname = p->hostname;
	p->params.greeting_text = p->greeting;
	p->sink = sink;
	p->sink_ctx = sink_ctx;
	p->line_max = p->params.max_line - 1;
	p->line_cap = p->line_max + DSN_LINE_EXTRA;
	/* The line, HELO and SASL buffers are made when needed: thousands
	 * of idle sessions carry none. */
	p->tls = params->tls;
	buf_init(&p->out);
	return p;
}

void
proto_free(struct proto *p)
{
	if (p == NULL)
		return;
	sasl_end(p);
	free(p->sasl_user);
	free(p->sasl_buf);
	line_drop(p, p->line_cap + 1);
	free(p->hostname);
	free(p->greeting);
	free(p->helo_buf);
	free(p->chunk);
	buf_free(&p->out);
	free(p);
}

void
proto_start(struct proto *p)
{
	if (p->started)
		return;
	p->started = true;
	event_new(p, PROTO_EV_CONNECT);
	raise_event(p);
}

size_t
proto_feed(struct proto *p, const char *data, size_t len)
{
	size_t off = 0;

	/* RFC 3207 5: whatever came before the handshake is not a command. */
	if (p->tls_wait && !p->closing && !p->ev_pending)
		return len;
	while (off < len && p->started && !p->ev_pending && !p->closing) {
		if (p->in_data) {
			size_t n = data_feed(p, data + off, len - off);

			p->data_bytes += n;
			off += n;
			if (!p->in_data)
				p->requests++;
		} else
			off += line_feed(p, data + off, len - off);
	}
	return off;
}

const struct proto_event *
proto_event(const struct proto *p)
{
	return p->ev_pending ? &p->ev : NULL;
}

void
proto_accept(struct proto *p)
{
	int code = 250;

	if (!p->ev_pending)
		return;
	switch (p->ev.type) {
	case PROTO_EV_CONNECT:
		code = 220;
		if (p->greeting[0] != '\0')
			replyf(p, code, "%s %s", p->hostname, p->greeting);
		else
			reply(p, code, p->hostname);
		break;
	case PROTO_EV_HELO:
		code = 250;
		if (p->ev.esmtp)
			ehlo_reply(p);
		else
			reply(p, code, p->hostname);
		break;
	case PROTO_EV_MAIL:
		reply(p, code = 250, "2.1.0 Ok");
		break;
	case PROTO_EV_RCPT:
		reply(p, code = 250, "2.1.5 Ok");
		break;
	case PROTO_EV_DATA:
		/* BDAT: the chunk's 250 comes once it has been read. */
		if (p->ev.bdat)
			code = 250;
		else
			reply(p, code = 354, "End data with <CR><LF>.<CR><LF>");
		break;
	case PROTO_EV_MESSAGE:
	case PROTO_EV_RSET:
		reply(p, code = 250, "2.0.0 Ok");
		break;
	case PROTO_EV_MESSAGE_ABORT:
		reply(p, code = p->ev.abort_code, p->ev.abort_text);
		break;
	case PROTO_EV_QUIT:
		reply(p, code = 221, "2.0.0 Bye");
		break;
	case PROTO_EV_STARTTLS:
		reply(p, code = 220, "2.0.0 Ready to start TLS");
		break;
	case PROTO_EV_AUTH:
		reply(p, code = 235, "2.7.0 Authentication successful");
		break;
	}
	settle(p, code);
}

void
proto_reply(struct proto *p, int code, const char *fmt, ...)
{
	char text[4096];
	va_list ap;

	if (!p->ev_pending)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply(p, code, text);
	if (p->ev.type == PROTO_EV_DATA && p->ev.bdat &&
	    (code < 200 || code >= 400)) {
		p->bdat_fail_code = code;
		strlcpy_mx(p->bdat_fail_text, text, sizeof(p->bdat_fail_text));
	}
	settle(p, code);
}

const char *
proto_output(const struct proto *p, size_t *len)
{
	*len = p->out.len;
	return p->out.len > 0 ? p->out.data : "";
}

void
proto_output_drain(struct proto *p, size_t n)
{
	buf_consume(&p->out, n);
	/* Written: an idle session keeps no output buffer. */
	if (p->out.len == 0)
		buf_free(&p->out);
}

bool
proto_closing(const struct proto *p)
{
	return p->closing;
}

enum proto_phase
proto_phase(const struct proto *p)
{
	return p->in_data ? PROTO_PHASE_DATA : PROTO_PHASE_COMMAND;
}

void
proto_set_max_errors(struct proto *p, unsigned max_errors)
{
	p->params.max_errors = max_errors;
}

void
proto_timeout(struct proto *p)
{
	if (p->closing)
		return;
	/* Whatever was pending is moot: the connection ends now. */
	p->ev_pending = false;
	p->in_data = false;
	sasl_end(p);
	close_with(p, "4.4.2", "Error: timeout exceeded");
}

void
proto_shutdown(struct proto *p)
{
	if (p->closing)
		return;
	/* Finish the exchange in progress first (an answer the caller owes,
	 * or a message being received), then say goodbye. */
	p->shutdown_wanted = true;
	maybe_shutdown(p);
}

bool
proto_in_transaction(const struct proto *p)
{
	return p->in_mail;
}

void
proto_tls_started(struct proto *p)
{
	if (!p->tls_wait)
		return;
	/* RFC 3207 4.2: discard all knowledge obtained from the client. */
	p->tls_wait = false;
	p->tls = true;
	p->helo_seen = false;
	p->esmtp = false;
	p->authenticated = false;
	sasl_end(p);
	txn_reset(p);
	p->line_len = 0;
	p->line_overlong = false;
	p->line_bare_lf = false;
	p->line_last = '\0';
	maybe_shutdown(p);
}

unsigned long
proto_requests(const struct proto *p)
{
	return p->requests;
}

unsigned long long
proto_data_bytes(const struct proto *p)
{
	return p->in_data ? p->data_bytes : 0;
}

bool
proto_tls_waiting(const struct proto *p)
{
	return p->tls_wait;
}

bool
proto_authenticated(const struct proto *p)
{
	return p->authenticated;
}
