/*
 * envelope — serialization of what travels with a message from the smtp
 * worker to the queue process.
 *
 * The format is versioned and length-prefixed, all integers big-endian:
 *
 *     "MXEV"  magic, 4 bytes
 *     u32     format version (ENVELOPE_VERSION)
 *     str     queue id (exactly QUEUE_ID_LEN bytes, queue_id_valid)
 *     u64     received_at (int64, two's complement)
 *     u32     flags: bit 0 8BITMIME, bit 1 SMTPUTF8, bit 2 RET=FULL,
 *             bit 3 RET=HDRS (not both), bit 4 HELD, others must be 0
 *     str     sender ("" for the null sender; never absent)
 *     str     client_ip, helo, protocol, auth_user (each may be absent)
 *     str     DSN ENVID, decoded (may be absent)
 *     str     hold_reason, only with HELD (non-empty): why the message
 *             is committed held (a milter's quarantine)
 *     u32     number of recipients (1 to ENVELOPE_MAX_RCPTS: a message
 *             without recipients is a worker bug, never something to queue)
 *     then per recipient:
 *     str     address (non-empty), route (may be absent),
 *             action (non-empty), params (may be absent)
 *     u32     DSN NOTIFY bits (dsn.h; 0 none, NEVER alone)
 *     str     DSN ORCPT "type;address", decoded (may be absent)
 *
 * where str is a u32 length followed by that many bytes (no terminator),
 * and the length STR_ABSENT encodes a NULL pointer.  The record must end
 * exactly after the last recipient.
 *
 * The writer is the smtp worker, which parses hostile input and is less
 * trusted than the queue: envelope_parse() checks every length against what
 * is left, refuses embedded NULs (they would silently truncate a C string
 * between here and the database), bounds the recipient count before
 * allocating, and frees everything it built when it fails.
 */
#include <stdlib.h>
#include <string.h>

#include "common/dsn.h"
#include "common/envelope.h"
#include "common/util.h"

#define ENVELOPE_MAGIC      "MXEV"
#define ENVELOPE_VERSION    2
#define ENVELOPE_MAX_RCPTS  100000
#define STR_ABSENT          UINT32_MAX

#define FLAG_8BITMIME       0x1u
#define FLAG_SMTPUTF8       0x2u
#define FLAG_RET_FULL       0x4u
#define FLAG_RET_HDRS       0x8u
#define FLAG_HELD           0x10u
#define FLAGS_KNOWN         (FLAG_8BITMIME | FLAG_SMTPUTF8 | FLAG_RET_FULL | \
                             FLAG_RET_HDRS | FLAG_HELD)

/* The smallest recipient record: four empty-or-absent strings, the
 * NOTIFY bits and an absent ORCPT. */
#define RCPT_MIN_BYTES      (6 * 4)

/* What a field may be on the wire. */
enum str_rule {
	STR_OPTIONAL,           /* absent, empty or not */
	STR_REQUIRED,           /* present, possibly empty */
	STR_NONEMPTY,           /* present and not empty */
};

struct reader {
	const unsigned char *p;
	size_t left;
};

/*
 * Recipient array capacity for n entries: powers of two from 4, so that
 * envelope_add_rcpt() can tell from nrcpts alone when the array is full
 * and envelope_parse() can allocate an array that add_rcpt can extend.
 */
static size_t
rcpt_capacity(size_t n)
{
	size_t cap = 4;

	if (n == 0)
		return 0;
	while (cap < n)
		cap *= 2;
	return cap;
}

static void
put_u32(struct buf *b, uint32_t v)
{
	unsigned char x[4];

	x[0] = v >> 24;
	x[1] = v >> 16;
	x[2] = v >> 8;
	x[3] = v;
	buf_append(b, x, sizeof(x));
}

static void
put_u64(struct buf *b, uint64_t v)
{
	put_u32(b, (uint32_t)(v >> 32));
	put_u32(b, (uint32_t)v);
}

static void
put_str(struct buf *b, const char *s)
{
	size_t len;

	if (s == NULL) {
		put_u32(b, STR_ABSENT);
		return;
	}
	len = strlen(s);
	/* A string this long cannot come out of an SMTP session. */
	if (len >= STR_ABSENT)
		len = STR_ABSENT - 1;
	put_u32(b, (uint32_t)len);
	buf_append(b, s, len);
}

static int
get_u32(struct reader *r, uint32_t *v)
{
	if (r->left < 4)
		return -1;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 |
	    (uint32_t)r->p[2] << 8 | (uint32_t)r->p[3];
	r->p += 4;
	r->left -= 4;
	return 0;
}

static int
get_u64(struct reader *r, uint64_t *v)
{
	uint32_t hi, lo;

	if (get_u32(r, &hi) == -1 || get_u32(r, &lo) == -1)
		return -1;
	*v = (uint64_t)hi << 32 | lo;
	return 0;
}

/* Read a string into a fresh allocation (*out NULL when absent). */
static int
get_str(struct reader *r, enum str_rule rule, char **out)
{
	uint32_t len;

	*out = NULL;
	if (get_u32(r, &len) == -1)
		return -1;
	if (len == STR_ABSENT)
		return rule == STR_OPTIONAL ? 0 : -1;
	if (len > r->left)
		return -1;
	if (len == 0 && rule == STR_NONEMPTY)
		return -1;
	if (memchr(r->p, '\0', len) != NULL)
		return -1;
	*out = xstrndup((const char *)r->p, len);
	r->p += len;
	r->left -= len;
	return 0;
}

static int
get_queue_id(struct reader *r, struct envelope *e)
{
	char *id;
	int rc = -1;

	if (get_str(r, STR_NONEMPTY, &id) == -1)
		return -1;
	if (strlen(id) == QUEUE_ID_LEN && queue_id_valid(id)) {
		memcpy(e->queue_id, id, QUEUE_ID_LEN + 1);
		rc = 0;
	}
	free(id);
	return rc;
}

static int
get_rcpt(struct reader *r, struct envelope_rcpt *rc)
{
	uint32_t notify;

	if (get_str(r, STR_NONEMPTY, &rc->address) == -1 ||
	    get_str(r, STR_OPTIONAL, &rc->route) == -1 ||
	    get_str(r, STR_NONEMPTY, &rc->action) == -1 ||
	    get_str(r, STR_OPTIONAL, &rc->params) == -1)
		return -1;
	if (get_u32(r, &notify) == -1 || !dsn_notify_valid(notify))
		return -1;
	rc->dsn_notify = notify;
	/* What the engine let through: "type;address", not empty. */
	if (get_str(r, STR_OPTIONAL, &rc->dsn_orcpt) == -1 ||
	    (rc->dsn_orcpt != NULL && strchr(rc->dsn_orcpt, ';') == NULL))
		return -1;
	return 0;
}

static int
get_rcpts(struct reader *r, struct envelope *e)
{
	uint32_t count;

	if (get_u32(r, &count) == -1 || count == 0 ||
	    count > ENVELOPE_MAX_RCPTS)
		return -1;
	/* Refuse a count the remaining bytes cannot hold before allocating
	 * for it: a lying writer must not make us reserve memory. */
	if ((size_t)count * RCPT_MIN_BYTES > r->left)
		return -1;
	e->rcpts = xcalloc(rcpt_capacity(count), sizeof(*e->rcpts));
	while (e->nrcpts < count) {
		/* Count the entry first so envelope_free() sees its
		 * partially read strings if it fails. */
		e->nrcpts++;
		if (get_rcpt(r, &e->rcpts[e->nrcpts - 1]) == -1)
			return -1;
	}
	return 0;
}

static int
parse_fields(struct reader *r, struct envelope *e)
{
	uint32_t version, flags;
	uint64_t when;

	if (r->left < 4 || memcmp(r->p, ENVELOPE_MAGIC, 4) != 0)
		return -1;
	r->p += 4;
	r->left -= 4;
	if (get_u32(r, &version) == -1 || version != ENVELOPE_VERSION)
		return -1;
	if (get_queue_id(r, e) == -1)
		return -1;
	if (get_u64(r, &when) == -1)
		return -1;
	e->received_at = (int64_t)when;
	if (get_u32(r, &flags) == -1 || (flags & ~FLAGS_KNOWN) != 0 ||
	    (flags & (FLAG_RET_FULL | FLAG_RET_HDRS)) ==
	    (FLAG_RET_FULL | FLAG_RET_HDRS))
		return -1;
	e->body_8bitmime = (flags & FLAG_8BITMIME) != 0;
	e->smtputf8 = (flags & FLAG_SMTPUTF8) != 0;
	e->dsn_ret = (flags & FLAG_RET_FULL) != 0 ? DSN_RET_FULL :
	    (flags & FLAG_RET_HDRS) != 0 ? DSN_RET_HDRS : DSN_RET_NONE;
	if (get_str(r, STR_REQUIRED, &e->sender) == -1 ||
	    get_str(r, STR_OPTIONAL, &e->client_ip) == -1 ||
	    get_str(r, STR_OPTIONAL, &e->helo) == -1 ||
	    get_str(r, STR_OPTIONAL, &e->protocol) == -1 ||
	    get_str(r, STR_OPTIONAL, &e->auth_user) == -1 ||
	    get_str(r, STR_OPTIONAL, &e->dsn_envid) == -1)
		return -1;
	if ((flags & FLAG_HELD) != 0 &&
	    get_str(r, STR_NONEMPTY, &e->hold_reason) == -1)
		return -1;
	if (get_rcpts(r, e) == -1)
		return -1;
	return r->left == 0 ? 0 : -1;
}

void
envelope_init(struct envelope *e)
{
	memset(e, 0, sizeof(*e));
}

void
envelope_free(struct envelope *e)
{
	size_t i;

	for (i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].address);
		free(e->rcpts[i].route);
		free(e->rcpts[i].action);
		free(e->rcpts[i].params);
		free(e->rcpts[i].dsn_orcpt);
	}
	free(e->rcpts);
	free(e->sender);
	free(e->client_ip);
	free(e->helo);
	free(e->protocol);
	free(e->auth_user);
	free(e->hold_reason);
	free(e->dsn_envid);
	envelope_init(e);
}

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

void
envelope_add_rcpt(struct envelope *e, const char *address, const char *route,
    const char *action, const char *params)
{
	struct envelope_rcpt *rc;

	if (e->nrcpts == rcpt_capacity(e->nrcpts))
		e->rcpts = xrealloc(e->rcpts,
		    rcpt_capacity(e->nrcpts + 1) * sizeof(*e->rcpts));
	rc = &e->rcpts[e->nrcpts++];
	rc->address = dup_or_null(address);
	rc->route = dup_or_null(route);
	rc->action = dup_or_null(action);
	rc->params = dup_or_null(params);
	rc->dsn_notify = 0;
	rc->dsn_orcpt = NULL;
}

void
envelope_rcpt_dsn(struct envelope *e, unsigned notify, const char *orcpt)
{
	struct envelope_rcpt *rc = &e->rcpts[e->nrcpts - 1];

	rc->dsn_notify = notify;
	free(rc->dsn_orcpt);
	rc->dsn_orcpt = dup_or_null(orcpt);
}

void
envelope_serialize(const struct envelope *e, struct buf *b)
{
	uint32_t flags = 0;
	size_t i;

	if (e->body_8bitmime)
		flags |= FLAG_8BITMIME;
	if (e->smtputf8)
		flags |= FLAG_SMTPUTF8;
	if (e->dsn_ret == DSN_RET_FULL)
		flags |= FLAG_RET_FULL;
	else if (e->dsn_ret == DSN_RET_HDRS)
		flags |= FLAG_RET_HDRS;
	if (e->hold_reason != NULL && e->hold_reason[0] != '\0')
		flags |= FLAG_HELD;

	buf_append(b, ENVELOPE_MAGIC, 4);
	put_u32(b, ENVELOPE_VERSION);
	put_str(b, e->queue_id);
	put_u64(b, (uint64_t)e->received_at);
	put_u32(b, flags);
	put_str(b, e->sender);
	put_str(b, e->client_ip);
	put_str(b, e->helo);
	put_str(b, e->protocol);
	put_str(b, e->auth_user);
	put_str(b, e->dsn_envid);
	if (flags & FLAG_HELD)
		put_str(b, e->hold_reason);
	put_u32(b, (uint32_t)e->nrcpts);
	for (i = 0; i < e->nrcpts; i++) {
		put_str(b, e->rcpts[i].address);
		put_str(b, e->rcpts[i].route);
		put_str(b, e->rcpts[i].action);
		put_str(b, e->rcpts[i].params);
		put_u32(b, e->rcpts[i].dsn_notify);
		put_str(b, e->rcpts[i].dsn_orcpt);
	}
}

int
envelope_parse(const char *data, size_t len, struct envelope *out)
{
	struct reader r = { (const unsigned char *)data, len };

	envelope_init(out);
	if (data == NULL || parse_fields(&r, out) == -1) {
		envelope_free(out);
		return -1;
	}
	return 0;
}
