/*
 * audit — the log of what operators do to the queue.
 *
 * mxgatectl changes the queue database itself, not through the daemon,
 * so it logs its own actions, where the daemon logs: syslog, facility
 * mail, ident "mxgatectl" (the journal on systemd hosts, mail.log with
 * rsyslog), in the configured server.log_format.  One record per
 * action, keyed by the queue id:
 *
 *   id=ID event=operator action=hold nrcpt=2 uid=0 user=root loginuid=1000
 *
 * uid and user are the real user running mxgatectl; loginuid is the
 * kernel's audit login uid (/proc/self/loginuid), the person who logged
 * in, which sudo and su do not change; absent when unset.  An action on
 * every message (retry --all) has no id.
 *
 *   audit_init(format)   "text" or "json" (server.log_format); NULL: text
 *   audit_log(action, queue_id, nrcpt, detail)
 *                        action: "hold", "release", "delete", "bounce",
 *                        "retry", ...; queue_id NULL for all messages;
 *                        nrcpt the recipients changed, -1 when unknown;
 *                        detail NULL or a short text (e.g. "dsn=ID")
 */
#ifndef MXGATE_AUDIT_H
#define MXGATE_AUDIT_H

void audit_init(const char *format);
void audit_log(const char *action, const char *queue_id, long long nrcpt,
    const char *detail);

#endif
