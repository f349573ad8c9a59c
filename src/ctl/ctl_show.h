/*
 * ctl_show — the commands that read messages: queue list (the queue, with
 * why each message waits), queue show (one message: envelope, recipients,
 * history, headers or all of it) and queue trace (its whole story, also
 * from queue.keep_history after it left the queue).  Text for a terminal
 * (escaped: ctl.h), or JSON with --json.  Read-only; ctl.h says the
 * signature and exit statuses.
 */
#ifndef MXGATE_CTL_SHOW_H
#define MXGATE_CTL_SHOW_H

#include "ctl/ctl.h"

int ctl_queue_list(struct ctl *ctl, int argc, char **argv);
int ctl_queue_show(struct ctl *ctl, int argc, char **argv);
int ctl_queue_trace(struct ctl *ctl, int argc, char **argv);

#endif
