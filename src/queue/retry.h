/*
 * retry — the scheduler's pure decisions: when to try a deferred
 * recipient again, when it has been in the queue too long, when the
 * sender gets a delay warning, and which recipients share a job and a
 * destination.  No I/O, no clock: the caller passes the time.
 *
 * Retries: after the k-th failed attempt the next one is due
 * schedule[k-1] seconds later (delivery.retry_schedule); past the end of
 * the list its last interval repeats.  A recipient whose time in the
 * queue (since received_at) reaches max_queue_time gets one last attempt
 * at that moment; if it fails too, it expires (bounced with an expiry
 * DSN).  With delay_warning > 0, the first failed attempt at or after
 * received_at + delay_warning warns the sender, once: it is the attempt
 * whose previous attempt was still before that time, so no state needs
 * to be kept for it.
 */
#ifndef MXGATE_RETRY_H
#define MXGATE_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct retry_policy {
	const unsigned *schedule;       /* seconds; at least one entry */
	size_t   nschedule;
	int64_t  max_queue_time;        /* seconds */
	int64_t  delay_warning;         /* seconds, 0 = never */
};

/* Seconds to wait after the attempts-th failed attempt (attempts >= 1). */
int64_t retry_delay(const struct retry_policy *p, unsigned attempts);

/*
 * After a temporary failure at now: returns true when the recipient
 * expires now; otherwise false with *next_at set.  attempts counts the
 * attempts so far, this one included; attempt_at is when this attempt
 * began, prev_attempt_at when the one before it did (0 for none).  *warn
 * says whether a delay warning is due now (never together with expiry):
 * for the first attempt that began at or after received_at +
 * delay_warning.  Both are beginnings: an attempt that began before the
 * threshold and failed after it leaves the warning to the next one, which
 * then warns alone.
 */
bool retry_plan(const struct retry_policy *p, int64_t received_at,
    unsigned attempts, int64_t prev_attempt_at, int64_t attempt_at,
    int64_t now, int64_t *next_at, bool *warn);

/* Keys, at most this long (longer inputs are cut, never overflow). */
#define RETRY_KEY_MAX 512

/*
 * The keys of one recipient's delivery, from its action, its expanded
 * parameters (JSON text) and its address:
 *   job_key   recipients of one message with the same job_key go in one
 *             job (one SMTP transaction, one command run, ...): for
 *             relay the upstream (and for "mx" the recipient's domain, in
 *             lower case); for local actions the action and its exact
 *             parameters;
 *   dest_key  what delivery.concurrency_per_destination counts: the same
 *             for relay; for local actions the action and where it
 *             writes (maildir path, command, LMTP address, URL).
 * Returns 0, or -1 when the parameters are not a JSON object (the keys
 * are then the action and the raw parameters: the job fails in the
 * handler, with a reason, instead of here).
 */
int retry_keys(const char *action, const char *params_json,
    const char *rcpt, char *job_key, char *dest_key);

#endif
