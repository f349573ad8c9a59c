/*
 * dnsbl — DNS block and allow lists with weights, as Postfix postscreen's
 * dnsbl_sites: each site adds its weight to a client's score when it
 * lists the client, and a score at or over dnsbl.threshold refuses the
 * client; allow lists (DNSWL) carry negative weights.  Sender-domain lists
 * (RHSBL) are asked for the domain of MAIL FROM.
 *
 * A site is written "domain[=filter][*weight]":
 *   zen.example                   any A answer lists the client, weight 1
 *   zen.example=127.0.0.[2..11]*3 only answers in that set, weight 3
 *   wl.example=127.0.[0..255].[2;3]*-2   an allow list
 * A filter is four dot-separated octet patterns: a number, or "[...]"
 * holding numbers and "a..b" ranges separated by ';'.
 *
 * The pure part (parsing, query names, matching, scores) is here for the
 * unit tests; the lookups run in a thread pool of the worker (hooks.c),
 * never in its event loop.  A lookup that fails (timeout, SERVFAIL) lists
 * nobody: the check fails open, and says so in the log.
 */
#ifndef MXGATE_DNSBL_H
#define MXGATE_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dnsbl_site {
	char    *domain;
	int      weight;
	bool     filtered;
	uint8_t  octets[4][32];     /* filtered: a bitmap per octet */
};

/* 0, or -1 with a reason in err ("bad weight \"x\""). */
int  dnsbl_site_parse(const char *spec, struct dnsbl_site *out,
    char *err, size_t errlen);
void dnsbl_site_free(struct dnsbl_site *site);

/* An A answer lists the client (or domain) on this site. */
bool dnsbl_site_matches(const struct dnsbl_site *site, const uint8_t a[4]);

/*
 * The name to ask: the address's octets (IPv4) or nibbles (IPv6)
 * reversed, then the site's domain: "2.0.0.127.zen.example".  For a
 * sender domain (RHSBL), the domain then the site's.  0, or -1 when ip
 * is not an address or the name does not fit (a DNS name is at most 253
 * characters).
 */
int  dnsbl_client_name(const char *ip, const char *site, char *out,
    size_t size);
int  dnsbl_domain_name(const char *domain, const char *site, char *out,
    size_t size);

#endif
