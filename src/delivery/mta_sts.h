/*
 * mta_sts — MTA-STS (RFC 8461) for the relay client: does a recipient
 * domain publish a policy, what it says, and which MX hosts it allows.
 *
 * sts_discover(): the policy for a domain delivered to its MX hosts at
 * level mta-sts, in the delivery process:
 *   - the TXT record _mta-sts.DOMAIN ("v=STSv1; id=..."; none, or more
 *     than one, is no record);
 *   - the cached policy (the queue database's mta_sts_policies row the
 *     queue process handed the job, sts_policy_scan()) is used while it
 *     has not expired (fetched_at + max_age) and the record's id is its
 *     id, or there is no record (RFC 8461 5.1: a policy outlives its TXT
 *     record until it expires);
 *   - otherwise https://mta-sts.DOMAIN/.well-known/mta-sts.txt is fetched
 *     (libcurl: the certificate must verify, with delivery.tls_ca or the
 *     system's CAs, and name mta-sts.DOMAIN; no redirects; 200 and
 *     text/plain; at most STS_POLICY_MAX bytes), parsed, and *fresh set:
 *     the caller hands it to the queue process to cache.  A fetch that
 *     fails keeps a cached policy that has not expired; without one the
 *     domain has no policy (RFC 8461 5), and *failure names the TLS-RPT
 *     result type (sts-policy-fetch-error, sts-webpki-invalid,
 *     sts-policy-invalid).
 * Returns STS_FOUND (policy in out; mode none counts as no policy for the
 * caller to decide) or STS_ABSENT.
 *
 * The functions after it are the pure parts, for the tests.
 */
#ifndef MXGATE_MTA_STS_H
#define MXGATE_MTA_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/util.h"

#define STS_MAX_MX       16
#define STS_POLICY_MAX   65536          /* bytes of a policy file */
#define STS_MAX_AGE_MAX  31557600       /* RFC 8461 3.2: about a year */
#define STS_FETCH_TIMEOUT 30            /* seconds for the HTTPS fetch */

enum sts_mode { STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE };

struct sts_policy {
	char     id[33];                /* the TXT record's id, 1-32 chars */
	int      mode;                  /* enum sts_mode */
	int64_t  max_age;               /* seconds */
	int64_t  fetched_at;            /* unix seconds */
	char     mx[STS_MAX_MX][256];   /* "mx.example.com", "*.example.com" */
	size_t   nmx;
};

enum sts_result { STS_ABSENT, STS_FOUND };

enum sts_result sts_discover(const struct mxconf *conf, const char *domain,
    const char *cached, struct sts_policy *out, bool *fresh,
    const char **failure, char *why, size_t whysize);

/* "v=STSv1; id=20240101T000000;" -> id; -1 when not a valid record. */
int sts_parse_txt(const char *txt, char *id, size_t idsize);

/* A policy file into p (id and fetched_at untouched); -1 with why. */
int sts_parse_policy(const char *text, size_t len, struct sts_policy *p,
    char *why, size_t whysize);

/* Is host (an MX host name) one the policy allows (RFC 8461 4.1)? */
bool sts_mx_match(const struct sts_policy *p, const char *host);

/* The one-line form the queue keeps and hands back:
 * "ID MODE MAX_AGE FETCHED_AT MX...", MODE none/testing/enforce. */
void sts_policy_format(const struct sts_policy *p, struct buf *out);
int sts_policy_scan(const char *line, struct sts_policy *p);

/* The policy's lines as its file says them (TLS-RPT policy-string). */
void sts_policy_lines(const struct sts_policy *p, struct buf *out);

extern const char *const sts_mode_names[];

#endif
