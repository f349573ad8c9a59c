/*
 * dsn — the values of the SMTP DSN extension (RFC 3461) as they travel
 * from the smtp worker through the queue to the delivery processes and
 * the DSNs the queue writes: NOTIFY and ORCPT per recipient, RET and
 * ENVID per message.
 *
 * Representation everywhere inside mxgate (envelope, queue columns,
 * delivery jobs): xtext decoded.  ENVID is the decoded text; ORCPT is
 * "addr-type;decoded-address" (the type as the client spelled it);
 * NOTIFY a set of DSN_NOTIFY_* bits, 0 when the client gave none; RET a
 * DSN_RET_* value.  The relay and LMTP clients encode them again
 * (dsn_mail_params(), dsn_rcpt_params()) for a server that offers DSN;
 * the DSNs show the decoded values (RFC 3464 Original-Envelope-Id,
 * Original-Recipient).
 *
 *   dsn_xtext_decode()  strict RFC 3461 4 xtext: xchar is '!'..'~' but
 *                       '+' and '='; hexchar is '+' and two UPPER case
 *                       hex digits; the decoded text must be printable
 *                       US-ASCII (RFC 3461 4.2, 4.4: space to '~').
 *                       -1 on any violation or when it does not fit.
 *   dsn_notify_parse()  "NEVER" or a comma list of SUCCESS, FAILURE,
 *                       DELAY (any case, each once; NEVER alone): the
 *                       bits, or -1.
 *   dsn_notify_format() the canonical text ("NEVER",
 *                       "SUCCESS,FAILURE,DELAY" in that order), "" for 0.
 */
#ifndef MXGATE_DSN_H
#define MXGATE_DSN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

#define DSN_NOTIFY_NEVER    0x1u
#define DSN_NOTIFY_SUCCESS  0x2u
#define DSN_NOTIFY_FAILURE  0x4u
#define DSN_NOTIFY_DELAY    0x8u
#define DSN_NOTIFY_KNOWN    0xfu

enum dsn_ret { DSN_RET_NONE = 0, DSN_RET_FULL, DSN_RET_HDRS };

/* RFC 3461 4.4 and 4.2: the parameter values' limits (as sent, in
 * xtext), and room for the decoded text with its NUL. */
#define DSN_ENVID_MAX       100
#define DSN_ORCPT_MAX       500
#define DSN_NOTIFY_TEXT_MAX sizeof("SUCCESS,FAILURE,DELAY")

/* Decode len bytes of xtext into out (size bytes, NUL-terminated):
 * the decoded length, or -1. */
int dsn_xtext_decode(const char *s, size_t len, char *out, size_t size);
/* Append s as xtext. */
void dsn_xtext_put(struct buf *b, const char *s);

int dsn_notify_parse(const char *s, size_t len);
/* out needs DSN_NOTIFY_TEXT_MAX bytes. */
const char *dsn_notify_format(unsigned notify, char *out);
/* A set dsn_notify_parse() can give (0 included: absent). */
bool dsn_notify_valid(unsigned notify);

/* What a recipient's NOTIFY asks for.  Absent NOTIFY: failures and
 * delays, as RFC 3461 4.1 leaves to the MTA and mxgate always did. */
bool dsn_wants_failure(unsigned notify);
bool dsn_wants_delay(unsigned notify);
bool dsn_wants_success(unsigned notify);

/*
 * For a server that offers DSN: append MAIL's parameters (" RET=..."
 * when given, " ENVID=xtext" when given), and RCPT's (" NOTIFY=..."
 * when given, " ORCPT=type;xtext": the client's, else "rfc822;" and the
 * address, as RFC 3461 4.2 lets a relay add it and Postfix does; none
 * for a non-ASCII address without the client's, nor for one whose
 * encoded value would pass RFC 3461's 500 characters).  orcpt and envid
 * may be NULL.
 */
void dsn_mail_params(struct buf *out, enum dsn_ret ret, const char *envid);
void dsn_rcpt_params(struct buf *out, unsigned notify, const char *orcpt,
    const char *address);

/* "FULL", "HDRS", or NULL for DSN_RET_NONE; and back (-1: neither). */
const char *dsn_ret_name(enum dsn_ret ret);
int dsn_ret_parse(const char *s);

#endif
