/*
 * checks — the pure parts of mxgate's built-in checks: lists of client
 * networks (reject_networks, trusted_networks), the HELO syntax check
 * (helo_checks) and per-client rate counters (rate_limits).  No I/O and
 * no clock of their own: the callers pass the time.
 *
 * Network lists take addresses and CIDR networks, IPv4 and IPv6
 * ("192.0.2.0/24", "2001:db8::/32", "198.51.100.7"); an IPv4-mapped IPv6
 * client ("::ffff:192.0.2.1") matches the IPv4 entries.  A network with
 * bits set past its prefix length ("192.0.2.1/24") is refused, as in
 * routes: it is almost always a typo.
 *
 * Rate counters count events per client address over a sliding minute
 * (the previous fixed minute weighted by how much of it is still inside
 * the window, plus the current one, as nginx's limit_req and many
 * others approximate it).  Memory is bounded: addresses idle for two
 * minutes are forgotten, and beyond RATE_MAX_CLIENTS addresses new ones
 * are let through uncounted (fail open, logged by the caller) rather
 * than grow without bound under a flood of spoofed-looking sources.
 *
 * Connection slots under pressure (the master's arithmetic, stress.* and
 * limits.fair_share): when stress mode begins and ends, and whether an
 * address already holds its fair share of the free slots.
 */
#ifndef MXGATE_CHECKS_H
#define MXGATE_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- network lists ---- */

struct netlist;

/* Parse entries[0..n-1]; NULL with *bad set to the index of the first
 * bad entry and *why to the reason. */
struct netlist *netlist_new(char *const *entries, size_t n, size_t *bad,
    const char **why);
void netlist_free(struct netlist *l);
/* The parser of reject_networks and trusted_networks (config.h,
 * config_value_fn): one address or CIDR network; 0, or -1 with why. */
int netlist_entry_check(const char *entry, char *why, size_t size);
/* Is ip (text, as the session has it) in the list?  false for NULL. */
bool netlist_contains(const struct netlist *l, const char *ip);

/* ---- HELO ---- */

/*
 * Is helo a syntactically valid host name (RFC 5321 4.1.2 Domain: labels
 * of letters, digits and inner hyphens, 1..63 octets each, 255 in all; a
 * single label is allowed) or an address literal ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]")?  Underscores, trailing dots and other general
 * address literals are refused.
 */
bool helo_valid(const char *helo);

/* ---- rate counters ---- */

#define RATE_MAX_CLIENTS 100000

struct ratelimit;

/* limit events per minute per address; 0 makes every call allow. */
struct ratelimit *ratelimit_new(unsigned limit);
void ratelimit_free(struct ratelimit *r);

enum rate_verdict { RATE_OK, RATE_OVER, RATE_UNTRACKED };

/* Count one event from ip at now_ms; RATE_OVER when it goes past the
 * limit (an event over the limit is not counted). */
enum rate_verdict ratelimit_hit(struct ratelimit *r, const char *ip,
    uint64_t now_ms);
/* Would one more event from ip be over the limit?  Counts nothing. */
bool ratelimit_reached(struct ratelimit *r, const char *ip, uint64_t now_ms);
/* Forget addresses idle for two minutes. */
void ratelimit_expire(struct ratelimit *r, uint64_t now_ms);
/* ratelimit_expire() at most once a minute: call it as often as is
 * convenient (with each event, from a timer). */
void ratelimit_tick(struct ratelimit *r, uint64_t now_ms);
size_t ratelimit_clients(const struct ratelimit *r);

/* ---- connection slots under pressure ---- */

/*
 * The name a client address is counted under (limits.ipv6_prefix, as
 * Postfix's smtpd_client_ipv6_prefix_length): an IPv4 address (or an
 * IPv4-mapped IPv6 one) as it is, an IPv6 address as its network of
 * v6_prefix bits, "2001:db8:1:2::/64", since whoever holds one address
 * of a network usually holds them all.  Text that is no address is
 * copied as it is.
 */
void client_key(const char *ip, unsigned v6_prefix, char *key, size_t size);

/*
 * Stress mode after a change of the slots in use: it begins at threshold
 * percent of max and ends 10 points lower (half the threshold for one
 * under 20), or when nothing is in use, so that it does not flap at the
 * boundary.  threshold 0: never.
 */
bool stress_next(bool stressed, unsigned in_use, unsigned max,
    unsigned threshold);

/* Under stress: greet_pause (seconds) and limits.errors, each the
 * stress setting where it is lower than the usual one (a stress
 * setting never lengthens a pause or allows more errors). */
struct mxconf;
unsigned stress_greet_pause(const struct mxconf *conf);
unsigned stress_max_errors(const struct mxconf *conf);

/*
 * Does an address holding holds of the in_use slots taken (its own
 * included) of max already have its share of the free ones (share
 * percent)?  An address holding none never does while one is free.
 * share 0: never.
 */
bool fair_share_reached(unsigned holds, unsigned in_use, unsigned max,
    unsigned share);

#endif
