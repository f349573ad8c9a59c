/*
 * relay — the outbound SMTP client: relay_deliver() and relay_finish()
 * of delivery.h, run in a delivery child process.
 *
 * Where to: params {"upstream":"NAME"}, one of the configuration's
 * upstreams (its hosts in order, each name's addresses in the resolver's
 * order) or "mx": the recipient domain's MX hosts from the resolver of
 * /etc/resolv.conf (res_query), lowest preference first, equal ones in
 * random order, and the domain's own A/AAAA when it has no MX record
 * (RFC 5321 5.1); a null MX (RFC 7505) or a domain that does not exist
 * bounces.  MX delivery uses port 25, server.hostname in EHLO, and the
 * TLS level of delivery.tls_policy for the domain, else
 * delivery.tls_level.
 *
 * TLS levels (enum tls_level; an upstream's tls, whose older words
 * opportunistic and required are may and verify/encrypt): none; may
 * (STARTTLS when offered, any certificate); encrypt (TLS or the host is
 * not used); verify (TLS, the chain verified against tls_ca or
 * delivery.tls_ca or the system store, and the host name); dane: the
 * host's TLSA records (dane.h) make it dane (TLS, the certificate
 * matching a record: OpenSSL's DANE), encrypt (only unusable records)
 * or may (none; an MX from an insecure answer), and a failed TLSA
 * lookup skips the host.  A host that does not meet its level (no
 * STARTTLS where TLS is due, a certificate that does not verify or
 * match) is given up with "451 4.7.x": the next one is tried, and the
 * mail waits rather than going in the clear.
 *
 * The dialogue: EHLO (HELO when EHLO is refused); STARTTLS by the
 * level; AUTH PLAIN or LOGIN when auth_user is
 * set (only over TLS, unless tls = "none"); MAIL with SIZE, BODY=8BITMIME
 * and SMTPUTF8 when they apply; all RCPTs and DATA in one write when the
 * server offers PIPELINING; the content with CRLF line ends and
 * dot-stuffing.  Content with 8-bit bytes is never sent to a server
 * without 8BITMIME, nor UTF-8 addresses to one without SMTPUTF8: those
 * recipients bounce with the reason (a BODY=8BITMIME message that is in
 * fact 7-bit is sent as 7-bit).
 *
 * Outcomes per recipient: the RCPT reply when it refuses (4xx deferred,
 * 5xx bounced), else the reply to the end of DATA.  A failure to
 * connect, a bad greeting, EHLO/TLS/AUTH failures, a 4xx or 421 to MAIL,
 * or a connection lost before the end of DATA move on to the next
 * address, then the next host; when none is left the recipients are
 * deferred with the last error.  A connection lost after the final dot
 * defers (the server may have the message: retrying may duplicate it,
 * never lose it).  An address that refused a connection is not tried
 * again in the same batch.
 *
 * Timeouts: delivery.connect_timeout per connect, command_timeout for
 * each reply and each write, data_timeout for the reply to the final dot.
 * The connection stays open after a job for the next one of the process
 * to the same upstream (and domain), also across batches (the delivery
 * process is long-lived), unless the server said something unasked
 * (a 421 before it hangs up, or hung up), or it has carried
 * RELAY_REUSE_MAX transactions or lived RELAY_REUSE_MS (relay.c);
 * relay_finish() says QUIT.  The addresses that failed are remembered
 * until relay_batch_end().
 *
 * The functions below relay_finish() are the pure parts, exposed for the
 * unit tests.
 */
#ifndef MXGATE_RELAY_H
#define MXGATE_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include "delivery/delivery.h"
#include "common/util.h"

/* A reply being read, line by line. */
struct relay_reply {
	int      code;                  /* 0 until the first line */
	size_t   nlines;
	char     text[DELIVERY_REPLY_MAX];  /* lines joined by " / " */
};

void relay_reply_init(struct relay_reply *r);
/*
 * Feed one line (CRLF removed).  1: the reply is complete ("NNN text" or
 * "NNN"); 0: more lines follow ("NNN-text"); -1: malformed (no code, or
 * a code that changes between lines).
 */
int relay_reply_line(struct relay_reply *r, const char *line);

/* What an EHLO reply offers. */
struct relay_ext {
	bool     pipelining, eightbitmime, smtputf8, starttls;
	bool     auth_plain, auth_login;
	bool     size;                  /* SIZE offered (RFC 1870) */
	bool     dsn;                   /* DSN offered (RFC 3461) */
	bool     chunking;              /* BDAT offered (RFC 3030) */
	unsigned long long size_max;    /* its limit; 0: none given */
};

/* Read the EHLO reply's lines after the first (the greeting line). */
void relay_ehlo_parse(struct relay_ext *x, const char *const *lines,
    size_t nlines);

/* Dot-stuffing with every line end made CRLF (RFC 5321 4.5.2), in
 * pieces: state starts zeroed; relay_dot_end() adds the final ".".
 * With raw set (BDAT: no dot-stuffing), only the line ends are made
 * CRLF, and relay_dot_end() ends the last line, nothing more. */
struct relay_stuff {
	bool     mid_line;              /* not at the start of a line */
	bool     cr;                    /* the last byte was a CR */
	bool     raw;                   /* line ends only */
};
void relay_dot_stuff(struct relay_stuff *st, const char *p, size_t len,
    struct buf *out);
void relay_dot_end(struct relay_stuff *st, struct buf *out);

/* Whether p can go out in a BDAT chunk as it is: every line ends with
 * CRLF, the last one included, and there is no other CR or LF. */
bool relay_crlf_clean(const char *p, size_t len);

/* "host", "host:port", "[addr]", "[addr]:port" into host and port;
 * -1 when malformed. */
int relay_parse_host(const char *entry, int default_port, char *host,
    size_t hostsize, int *port);

/* MX records of a DNS answer (res_query), sorted by preference; returns
 * how many (at most max), -1 when the answer is malformed.  A null MX
 * has host "". */
struct relay_mx {
	int      pref;
	char     host[256];
};
int relay_parse_mx(const unsigned char *answer, int len,
    struct relay_mx *out, size_t max);

/* Does the content hold a byte above 127?  Do the headers? */
bool relay_has_8bit(const char *p, size_t len);

#endif
