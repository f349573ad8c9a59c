/*
 * ctl_report — the commands that count: queue stats (recipients per
 * state, the oldest message, per destination; one read transaction, so
 * the parts agree), queue shape (pending recipients per destination by
 * age, as Postfix's qshape) and tls-report (RFC 8460's daily report:
 * tls_report.h).  Text or --json.  Read-only.
 */
#ifndef MXGATE_CTL_REPORT_H
#define MXGATE_CTL_REPORT_H

#include "ctl/ctl.h"

int ctl_queue_stats(struct ctl *ctl, int argc, char **argv);
int ctl_queue_shape(struct ctl *ctl, int argc, char **argv);
int ctl_tls_report(struct ctl *ctl, int argc, char **argv);

#endif
