/*
 * dane — see dane.h.
 */
#include <arpa/nameser.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

#include "delivery/dane.h"
#include "common/dns_answer.h"

#ifndef ns_t_tlsa
#define ns_t_tlsa 52
#endif

/* Set by dane_resolver_init(): the AD bit means something. */
static bool ad_trusted;

void
dane_resolver_init(const struct mxconf *conf)
{
	if (!conf->dnssec || ad_trusted)
		return;
	if ((_res.options & RES_INIT) == 0)
		res_init();
	/* The AD bit in the query asks the resolver for it (RFC 6840
	 * 5.7), and glibc keeps it in the answer only with RES_TRUSTAD. */
	_res.options |= RES_TRUSTAD;
	ad_trusted = true;
}

bool
dane_answer_secure(const unsigned char *answer, int len)
{
	/* AD is the 0x20 bit of the fourth header byte (RFC 4035 3.2.3). */
	return ad_trusted && len >= NS_HFIXEDSZ && (answer[3] & 0x20) != 0;
}

bool
dane_tlsa_usable(const struct dane_tlsa *t)
{
	/* RFC 7672 3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP
	 * (no common set of trusted CAs); only SPKI(1) and Cert(0)
	 * selectors, Full(0), SHA2-256(1), SHA2-512(2) matching, with the
	 * digest's own length. */
	if (t->usage != 2 && t->usage != 3)
		return false;
	if (t->selector > 1)
		return false;
	switch (t->mtype) {
	case 0:
		return t->len > 0;
	case 1:
		return t->len == 32;
	case 2:
		return t->len == 64;
	default:
		return false;
	}
}

int
dane_parse_tlsa(const unsigned char *answer, int len,
    struct dane_records *out)
{
	struct dns_answer a;
	struct dns_rr rr;
	struct dane_tlsa t;
	int rc;

	memset(out, 0, sizeof(*out));
	if (dns_answer_open(&a, answer, len) == -1)
		return -1;
	while ((rc = dns_answer_next(&a, &rr)) == 1) {
		/* CNAMEs and RRSIGs of the answer are not records. */
		if (rr.type != ns_t_tlsa || rr.rdlen < 3)
			continue;
		memset(&t, 0, sizeof(t));
		t.usage = rr.rdata[0];
		t.selector = rr.rdata[1];
		t.mtype = rr.rdata[2];
		t.len = rr.rdlen - 3;
		if (t.len <= sizeof(t.data) && dane_tlsa_usable(&t) &&
		    out->n < DANE_MAX_TLSA) {
			memcpy(t.data, rr.rdata + 3, t.len);
			out->tlsa[out->n++] = t;
		} else {
			out->nunusable++;
		}
	}
	return rc == -1 ? -1 : 0;
}

enum dane_result
dane_lookup(const char *host, int port, struct dane_records *out,
    char *why, size_t whysize)
{
	unsigned char answer[8192];
	char name[NS_MAXDNAME];
	int len;

	memset(out, 0, sizeof(*out));
	if (!ad_trusted)
		return DANE_NONE;
	snprintf(name, sizeof(name), "_%d._tcp.%s", port, host);
	len = dns_answer_len(res_query(name, ns_c_in, ns_t_tlsa, answer,
	    sizeof(answer)), sizeof(answer));
	if (len < 0) {
		/* NXDOMAIN or NODATA: no records, secure or not. */
		if (h_errno == HOST_NOT_FOUND || h_errno == NO_DATA)
			return DANE_NONE;
		snprintf(why, whysize, "TLSA lookup of %s failed: %s", name,
		    h_errno == TRY_AGAIN ? "no answer or a bogus one"
		    " (SERVFAIL)" : hstrerror(h_errno));
		return DANE_FAILED;
	}
	if (!dane_answer_secure(answer, len))
		return DANE_NONE;
	if (dane_parse_tlsa(answer, len, out) < 0) {
		snprintf(why, whysize, "malformed TLSA answer for %s", name);
		return DANE_FAILED;
	}
	if (out->n > 0)
		return DANE_USABLE;
	return out->nunusable > 0 ? DANE_UNUSABLE : DANE_NONE;
}
