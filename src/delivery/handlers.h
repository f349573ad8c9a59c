/*
 * handlers — the local delivery handlers: maildir, pipe, lmtp, webhook,
 * discard and debug.  handler_deliver() (declared in delivery.h, the
 * contract with the scheduler) parses the job's action parameters and
 * dispatches on job->action to one of the functions below, one file each
 * (handler_<action>.c; discard and debug live in handlers.c).
 *
 * Every handler sets each recipient's outcome with delivery_set() and
 * job->destination, never retries and never bounces (the queue process
 * does), and enforces its own timeout, shorter than DELIVERY_JOB_TIMEOUT,
 * reporting DELIVERY_DEFER when it expires.  They return 0, or -1 when the
 * job could not be run at all (logged once; recipients still pending are
 * then deferred by the caller).
 *
 * Parameters (action_params, one JSON object, already expanded at RCPT
 * time, with "vars": the route's named captures):
 *   maildir  {"path":"/abs/Maildir/"}
 *   pipe     {"command":["/abs/prog","arg",...],"format":"raw"|"json",
 *             "timeout":SECONDS}
 *   lmtp     {"address":"unix:/path" | "inet:host:port","timeout":SECONDS}
 *   webhook  {"url":"https://...","format":"json"|"raw","timeout":SECONDS}
 *   discard, debug  {}
 * The webhook's HMAC secret and TLS options (secret, tls_verify, tls_ca)
 * and attachments_dir (pipe, webhook) are not in the queue: they are read
 * from the configuration's route of the same name (job->route); an
 * "attachments_dir" in the parameters takes precedence.
 *
 * The helpers after the handlers are the parts that need no process,
 * socket or filesystem, exposed for the unit tests.
 */
#ifndef MXGATE_HANDLERS_H
#define MXGATE_HANDLERS_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "delivery/delivery.h"
#include "common/json.h"
#include "common/util.h"

int handler_maildir(struct delivery_job *job, const struct json_value *params);
int handler_pipe(struct delivery_job *job, const struct json_value *params);
int handler_lmtp(struct delivery_job *job, const struct json_value *params);
int handler_webhook(struct delivery_job *job, const struct json_value *params);

/* The configuration's route the job came from, for the settings that stay
 * out of the queue (webhook secret, TLS options, attachments_dir); NULL
 * when a reload removed or renamed it. */
const struct route_conf *handler_route_conf(const struct delivery_job *job);
/* Where pipe and webhook save attachments: "attachments_dir" of the
 * parameters, else of the configuration's route; NULL: inline, base64. */
const char *handler_attachments_dir(const struct delivery_job *job,
    const struct json_value *params);

/* Default timeouts, seconds, when the parameters give none. */
#define MAILDIR_TIMEOUT  300
#define PIPE_TIMEOUT     300
#define LMTP_TIMEOUT     300
#define WEBHOOK_TIMEOUT  60

/* ---- maildir (handler_maildir.c) ---- */

/*
 * A unique maildir file name (https://cr.yp.to/proto/maildir.html):
 * "<sec>.M<usec>P<pid>Q<counter>.<host>", with '/' and ':' in the host
 * name written as "\057" and "\072".  -1 when it does not fit in size.
 */
int maildir_name(char *out, size_t size, const struct timespec *now,
    pid_t pid, unsigned long counter, const char *hostname);
/*
 * The lines a recipient's file starts with: "Return-Path: <sender>" and
 * "Delivered-To: rcpt" (what a local delivery agent adds).  The message
 * follows with LF line ends (crlf_to_lf(): the local convention; the
 * queue keeps CRLF).
 */
void maildir_header(struct buf *out, const char *sender, const char *rcpt);

/* ---- pipe (handler_pipe.c) ---- */

/*
 * The command's environment, a NULL-terminated array of "NAME=value"
 * strings (free with pipe_env_free()):
 *   PATH=/usr/bin:/bin, SENDER, RECIPIENT (the first recipient),
 *   RECIPIENTS (all of them, comma-separated), QUEUE_ID, CLIENT_IP,
 *   HELO, PROTOCOL, AUTH_USER (when authenticated), ROUTE, and
 *   MXGATE_VAR_<NAME> for each route variable, the name upper-cased.
 * Nothing else is inherited.  Values are truncated at the first
 * control character (none can be there by the address and capture rules;
 * this keeps a line-oriented consumer safe anyway).
 */
char **pipe_env(const struct delivery_job *job, const struct json_value *vars);
void pipe_env_free(char **env);
/* CRLF -> LF (a lone CR stays) for a command's stdin and maildir files. */
void crlf_to_lf(struct buf *out, const char *content, size_t len);

/* ---- lmtp (handler_lmtp.c) ---- */

/* Split "unix:/path" or "inet:host:port" ("inet:[::1]:24" too).  Returns
 * 0 and fills sa; -1 with a reason in err.  Host names are resolved. */
int lmtp_parse_address(const char *address, struct sockaddr_storage *ss,
    socklen_t *sslen, char *err, size_t errsize);

/* ---- webhook (handler_webhook.c) ---- */

/*
 * X-Mxgate-Signature's value: "sha256=" and the lowercase hex
 * HMAC-SHA256, keyed with the secret, of "<timestamp>.<body>" (the
 * timestamp exactly as sent in X-Mxgate-Timestamp).  out needs 72 bytes.
 */
#define WEBHOOK_SIGNATURE_SIZE 72
void webhook_signature(char out[WEBHOOK_SIGNATURE_SIZE], const char *secret,
    const char *timestamp, const char *body, size_t len);
/* The outcome of an HTTP status: DELIVERY_OK for 2xx, DELIVERY_FAIL for
 * 4xx other than 408 and 429, DELIVERY_DEFER for everything else. */
enum delivery_status webhook_status_outcome(long http_status);

#endif
