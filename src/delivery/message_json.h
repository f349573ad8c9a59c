/*
 * message_json — a message as the JSON document that pipe commands
 * (format "json") and webhooks receive: the envelope, the route's
 * variables, and the message parsed with GMime 3 — what smtproutes gave
 * its routes as message.body and message.attachments.
 *
 *   {"queue_id":"...", "sender":"a@b" ("" for <>), "recipients":["..."],
 *    "client_ip":"..."|null, "helo":"...", "protocol":"ESMTP",
 *    "auth_user":"..."|null, "received_at":UNIX_SECONDS,
 *    "route":"...", "vars":{"name":"value",...},
 *    "headers":[{"name":"Subject","value":"..."},...]   (in order, values
 *                unfolded and RFC 2047-decoded to UTF-8),
 *    "subject", "from", "to", "cc", "date", "message_id" (no <>): strings
 *                (decoded) or null when the header is absent,
 *    "text": the first text/plain body part (UTF-8) or null,
 *    "html": the first text/html body part (UTF-8) or null,
 *    "attachments":[{"filename":"report.pdf"|null, "extension":"pdf"|"",
 *                    "content_type":"application/pdf", "size":BYTES,
 *                    "content_base64":"..."  -- or, with attachments_dir,
 *                    "path":"/dir/<queue_id>-<n>-report.pdf"}]}
 *
 * Body parts are leaves that are text/plain or text/html, not marked
 * Content-Disposition: attachment and without a file name; every other
 * leaf (and every attached message/rfc822, as its bytes) is an
 * attachment.  Sizes and contents are decoded (no transfer encoding).
 * Files saved into attachments_dir get a name that cannot escape the
 * directory or overwrite anything (the queue id, the part's number, the
 * file name reduced to [A-Za-z0-9._-]), mode 0640, fsynced.
 *
 * GMime is initialised on first use (once per process).
 */
#ifndef MXGATE_MESSAGE_JSON_H
#define MXGATE_MESSAGE_JSON_H

#include <stddef.h>

#include "delivery/delivery.h"
#include "common/json.h"
#include "common/util.h"

/*
 * Append the document for job's message (read from job->content_fd) to
 * out.  vars is the "vars" object of the action parameters (or NULL).
 * Returns 0; -1 with a reason in err when the message cannot be read or
 * an attachment cannot be saved (a temporary failure for the caller).
 */
int message_json_build(const struct delivery_job *job,
    const struct json_value *vars, const char *attachments_dir,
    struct buf *out, char *err, size_t errsize);

/* The file name an attachment is saved under (no directory):
 * "<queue_id>-<n>-<name>", or "<queue_id>-<n>.<attempt>-<name>" when
 * attempt > 0 (the first name was taken: the same message delivered
 * again), where <name> is the file name reduced to [A-Za-z0-9._-] without
 * a leading dot, at most 80 characters, "attachment" when nothing is left. */
void message_json_safe_name(char *out, size_t size, const char *queue_id,
    unsigned n, unsigned attempt, const char *filename);

#endif
