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

/* config_value_fn for dnsbl.sites and dnsbl.sender_sites. */
int  dnsbl_site_check(const char *spec, char *why, size_t size);

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

/*
 * The lookups: an A query per name, in a thread pool (threadpool.h) whose
 * threads each keep a resolver (res_ninit), and answers handed back to
 * the loop: dnsbl_pool_fd() becomes readable, dnsbl_pool_complete() calls
 * each lookup's done().  A lookup cancelled (its session went away) is
 * never answered.
 */
enum dnsbl_result {
	DNSBL_NOT_LISTED,       /* NXDOMAIN, NODATA, or no answer in the filter */
	DNSBL_LISTED,
	DNSBL_FAILED,           /* timeout, SERVFAIL: lists nobody (logged) */
};

typedef void (*dnsbl_done_fn)(void *ctx, enum dnsbl_result r,
    const char *answer);

/* A DNS reply (msg, len bytes) to a site's A query (dns_answer.h): LISTED
 * with the first A record the site's filter accepts in answer (dotted,
 * size >= INET_ADDRSTRLEN), NOT_LISTED, or FAILED when malformed. */
enum dnsbl_result dnsbl_read_answer(const struct dnsbl_site *site,
    const unsigned char *msg, int len, char *answer, size_t size);

struct dnsbl_pool;

/* NULL with errno set when the threads cannot start. */
struct dnsbl_pool *dnsbl_pool_new(unsigned nthreads, unsigned timeout_s);
void     dnsbl_pool_free(struct dnsbl_pool *p);
int      dnsbl_pool_fd(const struct dnsbl_pool *p);
void     dnsbl_pool_complete(struct dnsbl_pool *p);
/* site is kept by pointer: it must outlive the lookup. */
uint64_t dnsbl_lookup(struct dnsbl_pool *p, const char *name,
    const struct dnsbl_site *site, dnsbl_done_fn done, void *ctx);
void     dnsbl_cancel(struct dnsbl_pool *p, uint64_t id);

#endif
