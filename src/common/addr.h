/*
 * addr — RFC 5321 paths and addresses, parsed strictly.
 *
 * addr_parse_path() takes the text after "MAIL FROM:" or "RCPT TO:" up to
 * the first space outside the angle brackets, e.g. "<a@b.example>",
 * "<@relay.example:a@b.example>" (a source route, RFC 5321 4.1.1.3: accepted
 * and ignored), "<>" (the null path, allowed only when null_ok) or
 * "<Postmaster>" (no domain, allowed only when postmaster_ok, RFC 5321 4.5.1).
 *
 * The result holds the address with the source route removed, split into
 * local part and domain.  The local part is kept as the client sent it
 * (quotes included); the domain is lower-cased.  Address literals
 * ("[192.0.2.1]", "[IPv6:2001:db8::1]") are validated.  Non-ASCII is
 * accepted only when utf8_ok (SMTPUTF8, RFC 6531).
 *
 * Errors (return value < 0) come with a static reason suitable for a 501
 * reply text.
 */
#ifndef MXGATE_ADDR_H
#define MXGATE_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX   64    /* RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX  255   /* RFC 5321 4.5.3.1.2 */
#define ADDR_PATH_MAX    256   /* RFC 5321 4.5.3.1.3 */

struct mailaddr {
	char local[ADDR_LOCAL_MAX + 3];    /* may keep surrounding quotes */
	char domain[ADDR_DOMAIN_MAX + 1];  /* "" for <> and <postmaster> */
	bool is_null;                      /* <> */
};

struct addr_parse_opts {
	bool null_ok;        /* MAIL FROM:<> */
	bool postmaster_ok;  /* RCPT TO:<postmaster> */
	bool utf8_ok;        /* SMTPUTF8 given on MAIL */
};

/*
 * Parse a path.  *consumed is set to the number of bytes of text that made
 * up the path (so the caller can parse the ESMTP parameters after it).
 * Returns 0 on success, -1 with *reason set on a syntax error.
 */
int addr_parse_path(const char *text, const struct addr_parse_opts *opts,
    struct mailaddr *out, size_t *consumed, const char **reason);

/* "local@domain", "" for the null path, "Postmaster" without domain. */
void addr_format(const struct mailaddr *a, char *out, size_t size);

/* A host name (RFC 1035 letters-digits-hyphen labels, RFC 5321 Domain). */
bool addr_domain_valid(const char *domain);

/* An address literal with brackets, "[192.0.2.1]" or "[IPv6:...]". */
bool addr_literal_valid(const char *literal);

#endif
