/*
 * dns_answer — walks the answer section of a DNS reply (res_query(3)),
 * bounds-checked: the one parser of raw DNS answers, for the relay's MX,
 * TLSA and TXT records and the DNSBL lookups' A records.  Pure (no
 * system call), so the confined smtp workers use it as it is.
 *
 *     struct dns_answer a;
 *     struct dns_rr rr;
 *     if (dns_answer_open(&a, msg, len) == -1) ...malformed
 *     while ((rc = dns_answer_next(&a, &rr)) == 1) ...use rr
 *     if (rc == -1) ...malformed
 *
 * rr.rdata points into msg and is rr.rdlen bytes long, all inside msg.
 */
#ifndef MXGATE_DNS_ANSWER_H
#define MXGATE_DNS_ANSWER_H

struct dns_answer {
	const unsigned char *p, *end;
	unsigned             left;      /* answer records not read yet */
};

struct dns_rr {
	unsigned             type;
	const unsigned char *rdata;
	unsigned             rdlen;
};

/* Skips the header and question section: 0, or -1 when malformed. */
int dns_answer_open(struct dns_answer *a, const unsigned char *msg, int len);

/* The next answer record: 1, 0 at the end, -1 when malformed. */
int dns_answer_next(struct dns_answer *a, struct dns_rr *rr);

/*
 * What res_query(3) returned, as the length of what the buffer holds:
 * for a truncated answer it returns the whole answer's length, larger
 * than the buffer.  Negative (no answer) stays as it is.
 */
static inline int
dns_answer_len(int len, unsigned long size)
{
	return len >= 0 && (unsigned long)len > size ? (int)size : len;
}

#endif
