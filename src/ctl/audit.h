/*
 * audit — the log of what operators do to the queue.
 *
 * mxgatectl changes the queue database itself, not through the daemon,
 * so it logs its own actions, where the daemon logs: syslog, facility
 * mail, ident "mxgatectl" (the journal on systemd hosts, mail.log with
 * rsyslog), in the configured server.log_format.  One record per
 * command (and per message for a bounce, which queues a DSN each):
 *
 *   id=ID event=operator action=hold messages=1 nrcpt=2 uid=0 user=root loginuid=1000
 *   event=operator action=retry selection="--all" messages=7 nrcpt=9 uid=0 ...
 *
 * uid and user are the real user running mxgatectl; loginuid is the
 * kernel's audit login uid (/proc/self/loginuid), the person who logged
 * in, which sudo and su do not change; absent when unset.  The queue's
 * history rows say the same per message (queue_db.h, "by mxgatectl").
 *
 *   audit_init(format)   "text" or "json" (server.log_format); NULL: text
 *   audit_log(action, queue_id, nmsgs, nrcpt, selection, detail)
 *                        action: "hold", "release", "delete", "bounce",
 *                        "retry", ...; queue_id: the one message named,
 *                        else NULL and selection says what the operator
 *                        asked for (the command's arguments); nmsgs and
 *                        nrcpt what changed, -1 when unknown; detail NULL
 *                        or short text (a bounce: "dsn=ID")
 */
#ifndef MXGATE_AUDIT_H
#define MXGATE_AUDIT_H

void audit_init(const char *format);
void audit_log(const char *action, const char *queue_id, long long nmsgs,
    long long nrcpt, const char *selection, const char *detail);

#endif
