/*
 * mime7bit — 8-bit message content made 7-bit for a server that does not
 * offer 8BITMIME (RFC 6152 3: convert, or bounce).
 *
 * Each MIME leaf part whose content holds 8-bit bytes gets a 7-bit
 * encoding: quoted-printable for text, for other types the one GMime
 * finds best (base64 for binary data), its Content-Transfer-Encoding
 * field changed to say so (and MIME-Version added where missing); parts inside message/rfc822 parts are converted too; everything
 * else is written back as it was read, with CRLF line ends.  A message
 * whose header fields hold 8-bit bytes cannot be converted (that takes
 * SMTPUTF8, RFC 6532): -1, as for content GMime cannot parse.
 */
#ifndef MXGATE_MIME7BIT_H
#define MXGATE_MIME7BIT_H

#include <stddef.h>

#include "common/util.h"

/* 0 with the converted message in out (all 7-bit), or -1 and out empty. */
int mime_to_7bit(const char *content, size_t len, struct buf *out);

#endif
