/*
 * spf — Sender Policy Framework checks (RFC 7208) with libspf2, off the
 * worker's event loop.
 *
 * Two layers:
 *
 *   spf_checker  one synchronous evaluation context: a libspf2 server over
 *                our own DNS layer (below), which sits on the system
 *                resolver or, in unit tests, on any libspf2 DNS layer (the
 *                zone layer).  Blocking: used by the pool's threads.
 *
 *   spf_pool     a few threads taking jobs from a queue (threadpool.h,
 *                the Redis bio.c model).  The event loop submits a job with a callback;
 *                finished jobs are queued back and the pool's eventfd
 *                becomes readable; the loop then calls spf_pool_complete(),
 *                which runs the callbacks in the loop's thread, in the
 *                order the jobs finished.  A job not finished by its
 *                deadline is answered temperror by spf_pool_expire() (the
 *                thread's late answer is dropped), so a stalled resolver
 *                never holds a session longer than the timeout.  The loop
 *                never blocks on the pool: submit takes the lock only to
 *                append to a list.
 *
 * libspf2 needs care (DESIGN.md), and this module is where it gets it:
 *
 *   - A record that does not compile (bad syntax, bad CIDR length, too many
 *     lookups) or a DNS failure comes back as an error code with the result
 *     left "invalid".  spf_check() maps that to permerror or temperror
 *     (RFC 7208 2.6), never to pass or a silent none.
 *   - Where libspf2 lags RFC 7208 the RFC wins, through our DNS layer,
 *     which sees every record libspf2 is about to evaluate:
 *       * each SPF record is checked against the RFC 7208 section 12
 *         grammar (spf_record_check()); one that breaks it makes the result
 *         permerror (RFC 7208 4.6) even where libspf2 would go on — a
 *         domain-spec whose top label is numeric ("a:1.2.3.4"), a single
 *         label ("include:example"), "c"/"r"/"t" macros outside exp,
 *         redirect or exp given twice, an empty exp;
 *       * CIDR lengths of 0, which libspf2 refuses as invalid, are rewritten
 *         into terms libspf2 evaluates the same way (spf_record_rewrite());
 *       * "v=spf1" alone is a record (neutral), not "no record";
 *       * spaces in an explanation (exp=) are kept, where libspf2 turns
 *         them into '%' and stops expanding macros;
 *       * loopback clients are checked like any other, where libspf2
 *         passes them unconditionally ("localhost gets a free ride");
 *       * the obsolete SPF RR type (99) is never asked for (RFC 7208 3.1,
 *         14.1): libspf2 asks for it first, and a server that fails that
 *         query would turn a pass into a temperror.
 *   - The void-lookup limit of RFC 7208 4.6.4 (a SHOULD) is not enforced.
 */
#ifndef MXGATE_SPF_H
#define MXGATE_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum spf_result {
	SPF_RES_NONE,
	SPF_RES_NEUTRAL,
	SPF_RES_PASS,
	SPF_RES_FAIL,
	SPF_RES_SOFTFAIL,
	SPF_RES_TEMPERROR,
	SPF_RES_PERMERROR,
};
#define SPF_RES_COUNT 7

/* "pass", "fail", ... as RFC 7208 and RFC 8601 spell them. */
const char *spf_result_name(enum spf_result r);
/* 0, or -1 if name is not a result. */
int spf_result_parse(const char *name, enum spf_result *out);
/* The parser of spf.pass_results (config.h, config_value_fn): a result
 * that can count as a pass, any but temperror; 0, or -1 with why. */
int spf_pass_result_check(const char *name, char *why, size_t size);

/* What is checked: the client, the HELO name, the MAIL FROM address. */
struct spf_query {
	char ip[64];           /* "192.0.2.1", "2001:db8::1" */
	char helo[256];
	char sender[320];      /* "local@domain", "" for the null sender */
};

struct spf_answer {
	enum spf_result result;
	/* The identity checked: "mailfrom", or "helo" for the null sender
	 * (RFC 7208 2.4), and the address it stands for. */
	const char *identity;
	char address[320];     /* "user@domain", "postmaster@helo.name" */
	/* Why, for logs and the SMTP reply: a short reason of ours, or the
	 * domain's explanation (exp=) for a fail.  Printable ASCII. */
	char text[256];
};

/* ---- pure helpers (unit tested) ---- */

/*
 * Is record (the text of a TXT record starting "v=spf1") valid by the
 * RFC 7208 section 12 grammar?  0, or -1 with a reason in why.
 */
int spf_record_check(const char *record, char *why, size_t whylen);

/*
 * The record as libspf2 must see it to evaluate it as RFC 7208 says, for
 * a client of family AF_INET or AF_INET6: "v=spf1" alone gets its trailing
 * space; "ip4:N/0" becomes "ip4:0.0.0.0/1 ip4:128.0.0.0/1" (ip6 alike);
 * "a" and "mx" whose CIDR length for the client's family is 0 name a
 * domain under SPF_CIDR0_SUFFIX, which our DNS layer answers with the
 * client's own address when the real name has any address of that family
 * (that is what a /0 match means).  A CIDR length for the other family is
 * dropped when it is 0 (it cannot matter, and libspf2 would refuse it).
 * Returns a malloc'ed string, or NULL when nothing needs to change.
 */
char *spf_record_rewrite(const char *record, int family);
#define SPF_CIDR0_SUFFIX "_cidr0.mxgate.invalid"

/* ---- synchronous checker ---- */

struct spf_checker;
struct SPF_dns_server_struct;

/*
 * A checker whose DNS layer sits on below, or on the system resolver when
 * below is NULL; the checker owns below.  hostname is the receiving host
 * (the "r" macro).  NULL if libspf2 cannot be set up.
 */
struct spf_checker *spf_checker_new(const char *hostname,
    struct SPF_dns_server_struct *below);
void spf_checker_free(struct spf_checker *c);

/* Evaluate; blocks for as long as DNS takes.  Returns a->result. */
enum spf_result spf_check(struct spf_checker *c, const struct spf_query *q,
    struct spf_answer *a);

/* ---- thread pool ---- */

struct spf_pool;

/* Makes the DNS layer each thread's checker sits on; NULL = resolver. */
typedef struct SPF_dns_server_struct *(*spf_dns_factory)(void *arg);

/* Called in the event loop's thread with the answer. */
typedef void (*spf_done_fn)(void *ctx, const struct spf_answer *a);

/*
 * Start nthreads threads (1..64).  timeout_ms bounds each job from its
 * submission.  factory may be NULL (the resolver).  Call after fork():
 * threads do not survive it.  NULL with errno on failure.
 */
struct spf_pool *spf_pool_new(unsigned nthreads, unsigned timeout_ms,
    const char *hostname, spf_dns_factory factory, void *factory_arg);
/* Stop the threads (waits for the lookups in progress) and free. */
void spf_pool_free(struct spf_pool *p);

/* Readable when answers are waiting: then call spf_pool_complete(). */
int spf_pool_fd(const struct spf_pool *p);

/*
 * Queue a check; done(ctx, answer) runs later from spf_pool_complete() or
 * spf_pool_expire(), exactly once, unless the job is cancelled first.
 * Returns the job id (never 0).
 */
uint64_t spf_pool_submit(struct spf_pool *p, const struct spf_query *q,
    spf_done_fn done, void *ctx);
/* The caller is going away: done will not be called for this job. */
void spf_pool_cancel(struct spf_pool *p, uint64_t job);
/* Deliver finished jobs. */
void spf_pool_complete(struct spf_pool *p);
/* Answer temperror ("timeout") to jobs older than the timeout. */
void spf_pool_expire(struct spf_pool *p, uint64_t now_ms);
/* Jobs submitted and not yet delivered or cancelled. */
unsigned spf_pool_pending(const struct spf_pool *p);

#endif
