/*
 * checks — see checks.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>

#include "common/config.h"
#include "smtp/checks.h"
#include "common/util.h"

/* ---- network lists ---- */

struct net {
	int           family;
	unsigned      bits;
	unsigned char addr[16];
};

struct netlist {
	struct net *nets;
	size_t      n;
};

static bool
host_bits_clear(const struct net *net)
{
	unsigned len = net->family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < len; i++) {
		unsigned keep = net->bits >= (i + 1) * 8 ? 8 :
		    net->bits > i * 8 ? net->bits - i * 8 : 0;
		if ((net->addr[i] & (0xff >> keep)) != 0)
			return false;
	}
	return true;
}

static int
net_parse(const char *text, struct net *net, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned max;
	char *end;
	long bits;

	memset(net, 0, sizeof(*net));
	*why = "is not an address or network such as \"192.0.2.0/24\" or "
	    "\"2001:db8::/32\"";
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, net->addr) == 1)
		net->family = AF_INET;
	else if (inet_pton(AF_INET6, host, net->addr) == 1)
		net->family = AF_INET6;
	else
		return -1;
	max = net->family == AF_INET ? 32 : 128;
	net->bits = max;
	if (slash != NULL) {
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (!isdigit((unsigned char)slash[1]) || *end != '\0' ||
		    errno != 0 || bits < 0 || bits > (long)max) {
			*why = "has a bad prefix length";
			return -1;
		}
		net->bits = (unsigned)bits;
	}
	if (!host_bits_clear(net)) {
		*why = "has bits set past its prefix length (a host address "
		    "with a network's length?)";
		return -1;
	}
	return 0;
}

struct netlist *
netlist_new(char *const *entries, size_t n, size_t *bad, const char **why)
{
	struct netlist *l = xcalloc(1, sizeof(*l));

	l->nets = n > 0 ? xcalloc(n, sizeof(*l->nets)) : NULL;
	for (l->n = 0; l->n < n; l->n++) {
		if (net_parse(entries[l->n], &l->nets[l->n], why) < 0) {
			*bad = l->n;
			netlist_free(l);
			return NULL;
		}
	}
	return l;
}

int
netlist_entry_check(const char *entry, char *why, size_t size)
{
	const char *reason;
	struct net net;

	if (net_parse(entry, &net, &reason) == 0)
		return 0;
	snprintf(why, size, "%s", reason);
	return -1;
}

void
netlist_free(struct netlist *l)
{
	if (l == NULL)
		return;
	free(l->nets);
	free(l);
}

static bool
net_contains(const struct net *net, int family, const unsigned char *a)
{
	unsigned full = net->bits / 8, rest = net->bits % 8;

	if (net->family != family || memcmp(net->addr, a, full) != 0)
		return false;
	return rest == 0 ||
	    ((net->addr[full] ^ a[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

bool
netlist_contains(const struct netlist *l, const char *ip)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };
	unsigned char a[16];
	int family;

	if (l == NULL || l->n == 0)
		return false;
	if (inet_pton(AF_INET, ip, a) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, a) == 1) {
		family = AF_INET6;
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			memmove(a, a + 12, 4);
			family = AF_INET;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < l->n; i++) {
		if (net_contains(&l->nets[i], family, a))
			return true;
	}
	return false;
}

/* ---- HELO ---- */

static bool
hostname_valid(const char *s)
{
	size_t total = 0, label = 0;
	char prev = '.';

	for (; *s != '\0'; s++, total++) {
		unsigned char c = (unsigned char)*s;
		if (c == '.') {
			if (label == 0 || prev == '-')
				return false;
			label = 0;
		} else if (c < 0x80 && (isalnum(c) || c == '-')) {
			if (label == 0 && c == '-')
				return false;
			if (++label > 63)
				return false;
		} else {
			return false;
		}
		prev = (char)c;
	}
	return total > 0 && total <= 255 && label > 0 && prev != '-';
}

bool
helo_valid(const char *helo)
{
	char addr[INET6_ADDRSTRLEN + 8];
	unsigned char buf[16];
	size_t len = strlen(helo);

	if (len < 2 || helo[0] != '[')
		return hostname_valid(helo);
	/* RFC 5321 4.1.3 address literals. */
	if (helo[len - 1] != ']' || len - 2 >= sizeof(addr))
		return false;
	memcpy(addr, helo + 1, len - 2);
	addr[len - 2] = '\0';
	if (strncasecmp(addr, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, addr + 5, buf) == 1;
	return inet_pton(AF_INET, addr, buf) == 1;
}

/* ---- rate counters ---- */

#define RATE_WINDOW_MS 60000
#define RATE_BUCKETS   4096

struct rate_client {
	struct rate_client *next;
	uint64_t  window;           /* index of the current minute */
	unsigned  cur, prev;        /* events in it and in the one before */
	uint64_t  last_ms;
	char      ip[64];
};

struct ratelimit {
	unsigned limit;
	size_t   nclients;
	uint64_t expired_ms;        /* the last ratelimit_expire() */
	struct rate_client *buckets[RATE_BUCKETS];
};

struct ratelimit *
ratelimit_new(unsigned limit)
{
	struct ratelimit *r = xcalloc(1, sizeof(*r));

	r->limit = limit;
	return r;
}

void
ratelimit_free(struct ratelimit *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < RATE_BUCKETS; i++) {
		struct rate_client *c, *next;
		for (c = r->buckets[i]; c != NULL; c = next) {
			next = c->next;
			free(c);
		}
	}
	free(r);
}

static unsigned
ip_bucket(const char *ip)
{
	return hash_string(ip) % RATE_BUCKETS;
}

/* Move c's windows forward to the minute of now. */
static void
rate_roll(struct rate_client *c, uint64_t window)
{
	if (window == c->window)
		return;
	c->prev = window == c->window + 1 ? c->cur : 0;
	c->cur = 0;
	c->window = window;
}

enum rate_verdict
ratelimit_hit(struct ratelimit *r, const char *ip, uint64_t now_ms)
{
	unsigned b = ip_bucket(ip);
	uint64_t window = now_ms / RATE_WINDOW_MS;
	uint64_t into = now_ms % RATE_WINDOW_MS;
	struct rate_client *c;
	double estimate;

	if (r->limit == 0)
		return RATE_OK;
	for (c = r->buckets[b]; c != NULL && strcmp(c->ip, ip) != 0; c = c->next)
		;
	if (c == NULL) {
		if (r->nclients >= RATE_MAX_CLIENTS)
			return RATE_UNTRACKED;
		c = xcalloc(1, sizeof(*c));
		strlcpy_mx(c->ip, ip, sizeof(c->ip));
		c->window = window;
		c->next = r->buckets[b];
		r->buckets[b] = c;
		r->nclients++;
	}
	rate_roll(c, window);
	c->last_ms = now_ms;
	estimate = c->prev * (double)(RATE_WINDOW_MS - into) / RATE_WINDOW_MS +
	    c->cur;
	if (estimate + 1 > r->limit)
		return RATE_OVER;
	c->cur++;
	return RATE_OK;
}

bool
ratelimit_reached(struct ratelimit *r, const char *ip, uint64_t now_ms)
{
	uint64_t window = now_ms / RATE_WINDOW_MS;
	uint64_t into = now_ms % RATE_WINDOW_MS;
	struct rate_client *c;

	if (r->limit == 0)
		return false;
	for (c = r->buckets[ip_bucket(ip)]; c != NULL && strcmp(c->ip, ip) != 0;
	    c = c->next)
		;
	if (c == NULL)
		return false;
	rate_roll(c, window);
	return c->prev * (double)(RATE_WINDOW_MS - into) / RATE_WINDOW_MS +
	    c->cur + 1 > r->limit;
}

void
ratelimit_expire(struct ratelimit *r, uint64_t now_ms)
{
	for (size_t i = 0; i < RATE_BUCKETS; i++) {
		struct rate_client **pp = &r->buckets[i], *c;
		while ((c = *pp) != NULL) {
			if (now_ms - c->last_ms >= 2 * RATE_WINDOW_MS) {
				*pp = c->next;
				free(c);
				r->nclients--;
			} else {
				pp = &c->next;
			}
		}
	}
}

void
ratelimit_tick(struct ratelimit *r, uint64_t now_ms)
{
	if (now_ms - r->expired_ms < RATE_WINDOW_MS)
		return;
	ratelimit_expire(r, now_ms);
	r->expired_ms = now_ms;
}

size_t
ratelimit_clients(const struct ratelimit *r)
{
	return r->nclients;
}

/* ---- connection slots under pressure ---- */

bool
stress_next(bool stressed, unsigned in_use, unsigned max, unsigned threshold)
{
	uint64_t used = (uint64_t)in_use * 100;
	unsigned low = threshold >= 20 ? threshold - 10 : threshold / 2;

	if (threshold == 0)
		return false;
	if (!stressed)
		return used >= (uint64_t)threshold * max;
	return !(used < (uint64_t)low * max || in_use == 0);
}

unsigned
stress_greet_pause(const struct mxconf *conf)
{
	return conf->stress_greet_pause < conf->greet_pause ?
	    conf->stress_greet_pause : conf->greet_pause;
}

unsigned
stress_max_errors(const struct mxconf *conf)
{
	return conf->stress_max_errors < conf->max_errors ?
	    conf->stress_max_errors : conf->max_errors;
}

bool
fair_share_reached(unsigned holds, unsigned in_use, unsigned max,
    unsigned share)
{
	uint64_t free_slots = in_use >= max ? 0 : max - in_use;

	if (share == 0 || holds == 0)
		return false;
	return (uint64_t)holds * 100 >= free_slots * share;
}

void
client_key(const char *ip, unsigned v6_prefix, char *key, size_t size)
{
	unsigned char a[16];
	char text[INET6_ADDRSTRLEN];
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};

	if (strchr(ip, ':') == NULL || inet_pton(AF_INET6, ip, a) != 1 ||
	    memcmp(a, mapped, sizeof(mapped)) == 0 || v6_prefix >= 128) {
		snprintf(key, size, "%s", ip);
		return;
	}
	for (unsigned bit = v6_prefix; bit < 128; bit++)
		a[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
	inet_ntop(AF_INET6, a, text, sizeof(text));
	snprintf(key, size, "%s/%u", text, v6_prefix);
}
