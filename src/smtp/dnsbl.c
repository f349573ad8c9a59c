/*
 * dnsbl — see dnsbl.h.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <netdb.h>
#include <resolv.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/dnsbl.h"
#include "common/dns_answer.h"
#include "common/log.h"
#include "common/threadpool.h"
#include "common/util.h"

#define DNS_NAME_MAX 253

static void
octet_set(uint8_t map[32], unsigned lo, unsigned hi)
{
	for (unsigned v = lo; v <= hi; v++)
		map[v / 8] |= (uint8_t)(1u << (v % 8));
}

/* A number 0..255 at *p; advances *p. */
static int
octet_number(const char **p, unsigned *out)
{
	unsigned v = 0;
	int digits = 0;

	while (isdigit((unsigned char)**p) && digits < 4) {
		v = v * 10 + (unsigned)(**p - '0');
		(*p)++;
		digits++;
	}
	if (digits == 0 || digits > 3 || v > 255)
		return -1;
	*out = v;
	return 0;
}

/* One octet pattern: "7", "[2..11]", "[2;4;6..9]". */
static int
octet_pattern(const char **p, uint8_t map[32])
{
	unsigned lo, hi;

	if (**p != '[') {
		if (octet_number(p, &lo) < 0)
			return -1;
		octet_set(map, lo, lo);
		return 0;
	}
	(*p)++;
	for (;;) {
		if (octet_number(p, &lo) < 0)
			return -1;
		hi = lo;
		if ((*p)[0] == '.' && (*p)[1] == '.') {
			*p += 2;
			if (octet_number(p, &hi) < 0 || hi < lo)
				return -1;
		}
		octet_set(map, lo, hi);
		if (**p == ';') {
			(*p)++;
			continue;
		}
		if (**p != ']')
			return -1;
		(*p)++;
		return 0;
	}
}

static int
filter_parse(const char *text, struct dnsbl_site *out)
{
	const char *p = text;

	for (int i = 0; i < 4; i++) {
		if (octet_pattern(&p, out->octets[i]) < 0)
			return -1;
		if (i < 3 && *p++ != '.')
			return -1;
	}
	out->filtered = true;
	return *p == '\0' ? 0 : -1;
}

/* A DNS domain as lists publish them: labels of letters, digits, '-'
 * and '_', no empty label. */
static bool
domain_ok(const char *d, size_t len, size_t max)
{
	size_t label = 0;

	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else
			return false;
	}
	return label > 0;
}

int
dnsbl_site_parse(const char *spec, struct dnsbl_site *out, char *err,
    size_t errlen)
{
	size_t dlen = strcspn(spec, "=*");
	const char *rest = spec + dlen;
	char filter[64];
	long weight = 1;

	memset(out, 0, sizeof(*out));
	/* Room left for an IPv6 address's 64 nibbles and dots. */
	if (!domain_ok(spec, dlen, DNS_NAME_MAX - 64)) {
		snprintf(err, errlen, "\"%.*s\" is not a DNS domain", (int)dlen,
		    spec);
		return -1;
	}
	if (*rest == '=') {
		size_t flen = strcspn(++rest, "*");

		if (flen == 0 || flen >= sizeof(filter)) {
			snprintf(err, errlen, "bad filter after '='");
			return -1;
		}
		memcpy(filter, rest, flen);
		filter[flen] = '\0';
		if (filter_parse(filter, out) < 0) {
			snprintf(err, errlen, "bad filter \"%s\" (want e.g. "
			    "127.0.0.[2..11])", filter);
			return -1;
		}
		rest += flen;
	}
	if (*rest == '*') {
		char *end;

		errno = 0;
		weight = strtol(rest + 1, &end, 10);
		if (rest[1] == '\0' || *end != '\0' || errno != 0 ||
		    weight < -1000 || weight > 1000) {
			snprintf(err, errlen, "bad weight \"%s\" (-1000 to "
			    "1000)", rest + 1);
			return -1;
		}
	} else if (*rest != '\0') {
		snprintf(err, errlen, "unexpected \"%s\"", rest);
		return -1;
	}
	out->domain = xstrndup(spec, dlen);
	for (char *c = out->domain; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	out->weight = (int)weight;
	return 0;
}

int
dnsbl_site_check(const char *spec, char *why, size_t size)
{
	struct dnsbl_site site;
	int r = dnsbl_site_parse(spec, &site, why, size);

	dnsbl_site_free(&site);
	return r;
}

void
dnsbl_site_free(struct dnsbl_site *site)
{
	free(site->domain);
	site->domain = NULL;
}

bool
dnsbl_site_matches(const struct dnsbl_site *site, const uint8_t a[4])
{
	if (!site->filtered)
		return true;
	for (int i = 0; i < 4; i++)
		if ((site->octets[i][a[i] / 8] & (1u << (a[i] % 8))) == 0)
			return false;
	return true;
}

int
dnsbl_client_name(const char *ip, const char *site, char *out, size_t size)
{
	unsigned char b[16];
	size_t n = 0;
	int r;

	if (inet_pton(AF_INET, ip, b) == 1) {
		r = snprintf(out, size, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0],
		    site);
		return r > 0 && (size_t)r < size && r <= DNS_NAME_MAX ? 0 : -1;
	}
	if (inet_pton(AF_INET6, ip, b) != 1)
		return -1;
	/* RFC 5782 2.4: nibbles, least significant first. */
	for (int i = 15; i >= 0; i--) {
		r = snprintf(out + n, size - n, "%x.%x.", b[i] & 0xf, b[i] >> 4);
		if (r < 0 || (size_t)r >= size - n)
			return -1;
		n += (size_t)r;
	}
	r = snprintf(out + n, size - n, "%s", site);
	return r >= 0 && (size_t)r < size - n && n + (size_t)r <= DNS_NAME_MAX ?
	    0 : -1;
}

int
dnsbl_domain_name(const char *domain, const char *site, char *out,
    size_t size)
{
	size_t len = strlen(domain);
	int r;

	/* An address literal or a name no list can hold. */
	if (len == 0 || domain[0] == '[' || !domain_ok(domain, len, len) ||
	    len + 1 + strlen(site) > DNS_NAME_MAX)
		return -1;
	r = snprintf(out, size, "%s.%s", domain, site);
	return r > 0 && (size_t)r < size ? 0 : -1;
}

/* ---- the lookups ---- */

struct dnsbl_job {
	struct threadpool_job tp;       /* first: the pool's part */
	struct dnsbl_job *next, *prev;  /* the loop's list */
	uint64_t         id;
	bool             cancelled;     /* loop side */
	char             name[DNS_NAME_MAX + 1];
	const struct dnsbl_site *site;
	enum dnsbl_result result;
	char             answer[INET_ADDRSTRLEN];
	dnsbl_done_fn    done;
	void            *ctx;
};

struct dnsbl_pool {
	struct threadpool *threads;
	unsigned          timeout_s;
	struct dnsbl_job *all;
	uint64_t          next_id;
};

static void *
resolver_new(void *arg)
{
	struct dnsbl_pool *p = arg;
	struct __res_state *rs = xcalloc(1, sizeof(*rs));

	if (res_ninit(rs) != 0) {
		free(rs);
		return NULL;
	}
	/* One try, the configured wait: a list that is slow lists nobody
	 * rather than holding the greeting. */
	rs->retrans = (int)p->timeout_s;
	rs->retry = 1;
	return rs;
}

static void
resolver_free(void *state)
{
	if (state != NULL) {
		res_nclose(state);
		free(state);
	}
}

enum dnsbl_result
dnsbl_read_answer(const struct dnsbl_site *site, const unsigned char *msg,
    int len, char *answer, size_t size)
{
	struct dns_answer a;
	struct dns_rr rr;
	int rc;

	if (dns_answer_open(&a, msg, len) == -1)
		return DNSBL_FAILED;
	while ((rc = dns_answer_next(&a, &rr)) == 1) {
		if (rr.type != ns_t_a || rr.rdlen != 4 ||
		    !dnsbl_site_matches(site, rr.rdata))
			continue;
		inet_ntop(AF_INET, rr.rdata, answer, (socklen_t)size);
		return DNSBL_LISTED;
	}
	return rc == -1 ? DNSBL_FAILED : DNSBL_NOT_LISTED;
}

static void
lookup_run(struct threadpool_job *tp, void *state)
{
	struct dnsbl_job *j = (struct dnsbl_job *)tp;
	struct __res_state *rs = state;
	unsigned char buf[2048];
	int len;

	j->result = DNSBL_FAILED;
	if (rs == NULL)
		return;
	len = dns_answer_len(res_nquery(rs, j->name, ns_c_in, ns_t_a, buf,
	    sizeof(buf)), sizeof(buf));
	if (len >= 0) {
		j->result = dnsbl_read_answer(j->site, buf, len, j->answer,
		    sizeof(j->answer));
		return;
	}
	/* NXDOMAIN and NODATA: not listed; anything else failed. */
	if (rs->res_h_errno == HOST_NOT_FOUND || rs->res_h_errno == NO_DATA)
		j->result = DNSBL_NOT_LISTED;
}

static const struct threadpool_ops dnsbl_pool_ops = {
	.thread_init = resolver_new,
	.thread_fini = resolver_free,
	.run = lookup_run,
};

struct dnsbl_pool *
dnsbl_pool_new(unsigned nthreads, unsigned timeout_s)
{
	struct dnsbl_pool *p = xcalloc(1, sizeof(*p));

	p->timeout_s = timeout_s;
	p->next_id = 1;
	if ((p->threads = threadpool_new(nthreads, &dnsbl_pool_ops, p)) ==
	    NULL) {
		int err = errno;

		free(p);
		errno = err;
		return NULL;
	}
	return p;
}

static void
job_unlink(struct dnsbl_pool *p, struct dnsbl_job *j)
{
	if (j->prev != NULL)
		j->prev->next = j->next;
	else
		p->all = j->next;
	if (j->next != NULL)
		j->next->prev = j->prev;
	free(j);
}

void
dnsbl_pool_free(struct dnsbl_pool *p)
{
	struct dnsbl_job *j, *next;

	if (p == NULL)
		return;
	threadpool_free(p->threads, NULL);
	for (j = p->all; j != NULL; j = next) {
		next = j->next;
		free(j);
	}
	free(p);
}

int
dnsbl_pool_fd(const struct dnsbl_pool *p)
{
	return threadpool_fd(p->threads);
}

uint64_t
dnsbl_lookup(struct dnsbl_pool *p, const char *name,
    const struct dnsbl_site *site, dnsbl_done_fn done, void *ctx)
{
	struct dnsbl_job *j = xcalloc(1, sizeof(*j));

	j->id = p->next_id++;
	strlcpy_mx(j->name, name, sizeof(j->name));
	j->site = site;
	j->done = done;
	j->ctx = ctx;
	j->next = p->all;
	if (p->all != NULL)
		p->all->prev = j;
	p->all = j;
	if (threadpool_submit(p->threads, &j->tp) < 0)
		fatalx("dnsbl: submit to a stopped pool");
	return j->id;
}

void
dnsbl_cancel(struct dnsbl_pool *p, uint64_t id)
{
	for (struct dnsbl_job *j = p->all; j != NULL; j = j->next) {
		if (j->id == id) {
			j->cancelled = true;
			threadpool_cancel(p->threads, &j->tp);
			return;
		}
	}
}

void
dnsbl_pool_complete(struct dnsbl_pool *p)
{
	struct threadpool_job *tp;

	while ((tp = threadpool_done(p->threads)) != NULL) {
		struct dnsbl_job *j = (struct dnsbl_job *)tp;

		if (!j->cancelled) {
			if (j->result == DNSBL_FAILED)
				log_warn("dnsbl: %s: no answer (timeout or "
				    "server failure): not listed", j->name);
			j->done(j->ctx, j->result, j->answer);
		}
		job_unlink(p, j);
	}
}
