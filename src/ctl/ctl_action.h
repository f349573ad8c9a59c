/*
 * ctl_action — the commands that change the queue: queue retry, hold,
 * release, delete, bounce (a DSN per message, as the scheduler sends
 * them) and reroute (queue_reroute.h).  Each is one short write
 * transaction (bounce: one a message); the daemon's scheduler reads the
 * due recipients again every second, so a change takes effect without
 * telling it.  Each names the operator in the history rows it writes
 * and in the log (audit.h), and prints what it touched.  IDs named must
 * all be in the queue: a typo acts on nothing.
 */
#ifndef MXGATE_CTL_ACTION_H
#define MXGATE_CTL_ACTION_H

#include "ctl/ctl.h"

int ctl_queue_retry(struct ctl *ctl, int argc, char **argv);
int ctl_queue_hold(struct ctl *ctl, int argc, char **argv);
int ctl_queue_release(struct ctl *ctl, int argc, char **argv);
int ctl_queue_delete(struct ctl *ctl, int argc, char **argv);
int ctl_queue_bounce(struct ctl *ctl, int argc, char **argv);
int ctl_queue_reroute(struct ctl *ctl, int argc, char **argv);

#endif
