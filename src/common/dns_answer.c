/*
 * dns_answer — the answer section of a DNS reply, record by record
 * (dns_answer.h).
 */
#include <arpa/nameser.h>
#include <resolv.h>

#include "common/dns_answer.h"

int
dns_answer_open(struct dns_answer *a, const unsigned char *msg, int len)
{
	unsigned qd, i;
	int n;

	if (len < NS_HFIXEDSZ)
		return -1;
	a->end = msg + len;
	qd = (unsigned)(msg[4] << 8 | msg[5]);
	a->left = (unsigned)(msg[6] << 8 | msg[7]);
	a->p = msg + NS_HFIXEDSZ;
	for (i = 0; i < qd; i++) {
		if ((n = dn_skipname(a->p, a->end)) < 0 ||
		    a->p + n + 4 > a->end)
			return -1;
		a->p += n + 4;
	}
	return 0;
}

int
dns_answer_next(struct dns_answer *a, struct dns_rr *rr)
{
	const unsigned char *p = a->p;
	int n;

	if (a->left == 0)
		return 0;
	if ((n = dn_skipname(p, a->end)) < 0 || p + n + 10 > a->end)
		return -1;
	p += n;
	rr->type = (unsigned)(p[0] << 8 | p[1]);
	rr->rdlen = (unsigned)(p[8] << 8 | p[9]);
	p += 10;
	if (p + rr->rdlen > a->end)
		return -1;
	rr->rdata = p;
	a->p = p + rr->rdlen;
	a->left--;
	return 1;
}
