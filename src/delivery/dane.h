/*
 * dane — DANE for the relay client (RFC 7672 on RFC 6698): the TLSA
 * records of a server, taken only from answers a validating resolver
 * vouched for, and what they make of its TLS session.
 *
 * The resolver: with delivery.dnssec, dane_resolver_init() asks glibc to
 * keep the AD bit of the answers (RES_TRUSTAD, as resolv.conf's
 * "options trust-ad"); without it the bit is always clear, so no answer
 * is ever secure and DANE never applies (the configuration refuses the
 * dane level then).  The resolver itself must validate and be trusted
 * on the way to it: a local unbound.
 *
 * dane_lookup(): the TLSA records of _PORT._tcp.HOST:
 *   DANE_NONE      no records, or records that are not DNSSEC-secure:
 *                  DANE does not apply (RFC 7672 2.2);
 *   DANE_USABLE    secure records, some usable: the certificate must
 *                  match one of them (DANE-TA(2) or DANE-EE(3), selector
 *                  0 or 1, matching type 0, 1 or 2);
 *   DANE_UNUSABLE  secure records, none usable (PKIX-TA(0), PKIX-EE(1),
 *                  unknown parameters): TLS stays mandatory, without
 *                  authentication (RFC 7672 3.1.3, as Postfix's encrypt);
 *   DANE_FAILED    the lookup failed (SERVFAIL: a bogus signature, an
 *                  unreachable server, a timeout): the host cannot be
 *                  used, its mail waits (RFC 7672 2.2: never a downgrade
 *                  to cleartext on a failure an attacker can cause).
 *
 * The functions below dane_lookup() are the pure parts, for the tests.
 */
#ifndef MXGATE_DANE_H
#define MXGATE_DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

#define DANE_MAX_TLSA   16
#define DANE_DATA_MAX   512     /* a SHA-512 digest, or a whole key */

struct dane_tlsa {
	uint8_t  usage, selector, mtype;
	size_t   len;
	unsigned char data[DANE_DATA_MAX];
};

enum dane_result { DANE_NONE, DANE_USABLE, DANE_UNUSABLE, DANE_FAILED };

struct dane_records {
	struct dane_tlsa tlsa[DANE_MAX_TLSA];   /* the usable ones */
	size_t   n;
	size_t   nunusable;     /* secure but not usable */
};

/* Keep the AD bit of the resolver's answers (conf->dnssec). */
void dane_resolver_init(const struct mxconf *conf);

/* The TLSA records of _port._tcp.host; why says what failed. */
enum dane_result dane_lookup(const char *host, int port,
    struct dane_records *out, char *why, size_t whysize);

/* Is the DNS answer's AD bit set (and the resolver trusted)? */
bool dane_answer_secure(const unsigned char *answer, int len);

/* The TLSA records of a DNS answer into out (usable ones) and
 * out->nunusable; -1 when the answer is malformed. */
int dane_parse_tlsa(const unsigned char *answer, int len,
    struct dane_records *out);

/* Can OpenSSL's DANE use this record the way RFC 7672 allows? */
bool dane_tlsa_usable(const struct dane_tlsa *t);

#endif
