/*
 * authres — the Authentication-Results header field (RFC 8601): the one
 * mxgate adds to every accepted message, and the filter that removes
 * forged ones from what the client sends.
 *
 * authres_header() builds our field: the authserv-id is the server's host
 * name, then the SPF result for the MAIL FROM identity (or the HELO
 * identity for the null sender, RFC 7208 2.4) and, when the client
 * authenticated, "auth=pass smtp.auth=USER" (RFC 8601 2.7.4):
 *
 *     Authentication-Results: mx.example.com;
 *             spf=pass (192.0.2.1 is allowed) smtp.mailfrom=a@example.org;
 *             auth=pass smtp.auth=alice
 *
 * A session whose client is trusted (trusted_networks) runs no SPF check:
 * its field says "none" for the whole field (RFC 8601 2.2) unless the
 * client authenticated.
 *
 * The filter (RFC 8601 5: a border MTA must remove fields that claim its
 * own authserv-id, since downstream readers trust them) runs on the
 * message content as it streams in, before it reaches the memfd.  It
 * looks only at the header section: fields other than
 * Authentication-Results pass through as they arrive; an
 * Authentication-Results field is held (up to AUTHRES_FIELD_MAX bytes)
 * until its authserv-id is known, then passed or dropped with its folded
 * continuation lines.  An authserv-id that is ours (case-insensitive, a
 * trailing dot ignored, as a token or a quoted-string, after any
 * comments) is dropped; so is a field whose authserv-id cannot be found
 * within AUTHRES_FIELD_MAX bytes, since it may hide ours behind comments.
 * The header section ends at the first empty line or the first line that
 * is not a header field; everything after it passes untouched, so the
 * cost on the body is one state check per piece of data.
 *
 * The filter also keeps a copy of the header section it let through (up
 * to AUTHRES_HEADERS_MAX bytes), for the plugins' end-of-message hook.
 */
#ifndef MXGATE_AUTHRES_H
#define MXGATE_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp/spf.h"
#include "common/util.h"

/* What our field reports. */
struct authres_info {
	bool        spf_checked;     /* false: trusted client, no SPF */
	enum spf_result spf;
	const char *spf_identity;    /* "mailfrom" or "helo" */
	const char *spf_address;     /* "a@example.org", "postmaster@helo" */
	const char *spf_comment;     /* printable text, or NULL */
	const char *helo;            /* for smtp.helo */
	const char *auth_user;       /* NULL: not authenticated */
};

/* Append the whole field, "Authentication-Results: ...\r\n", to out. */
void authres_header(struct buf *out, const char *authserv_id,
    const struct authres_info *info);

/* Is field (a whole header field, "Name: value", folded lines included)
 * an Authentication-Results field claiming authserv_id?  For tests and
 * the filter. */
bool authres_is_ours(const char *field, size_t len, const char *authserv_id);

#define AUTHRES_FIELD_MAX   8192
#define AUTHRES_HEADERS_MAX (64 * 1024)

enum authres_filter_state {
	AF_LINE_START,   /* at the start of a header line */
	AF_EMPTY_CR,     /* a CR at the start of a line */
	AF_NAME,         /* reading a field name */
	AF_PASS,         /* the current field goes through */
	AF_DROP,         /* the current field is removed */
	AF_HOLD,         /* an Authentication-Results field, undecided */
	AF_BODY,         /* past the header section */
};

struct authres_filter {
	const char *authserv_id;
	enum authres_filter_state state;
	enum authres_filter_state field;  /* AF_PASS, AF_DROP or AF_HOLD */
	bool        in_field;             /* a field was started */
	char        held[AUTHRES_FIELD_MAX];
	size_t      held_len;
	unsigned    removed;              /* fields dropped */
	struct buf  headers;              /* copy of the header section */
	bool        headers_truncated;
};

void authres_filter_init(struct authres_filter *f, const char *authserv_id);
void authres_filter_free(struct authres_filter *f);
/* Filter data into out. */
void authres_filter_feed(struct authres_filter *f, const char *data,
    size_t len, struct buf *out);
/* End of the content: flush what is held. */
void authres_filter_finish(struct authres_filter *f, struct buf *out);

#endif
