/*
 * tls_report — `mxgatectl tls-report`: the daily TLS report of RFC 8460
 * (TLS-RPT) for a recipient domain, from the queue's tls_results rows
 * (queue_db.h), which the relay client fills (relay.h).
 *
 * tls_report_print(): for day ("YYYY-MM-DD", UTC) and domain (NULL: every
 * domain with results that day, one JSON document a line), the reports
 * on out: organization-name and contact-info from hostname, date-range,
 * report-id, and per policy applied (sts with its lines and mx-host,
 * tlsa with its records, no-policy-found) the summary and the
 * failure-details.  Returns the number of reports printed, -1 when the
 * queue could not be read.
 */
#ifndef MXGATE_TLS_REPORT_H
#define MXGATE_TLS_REPORT_H

#include <stdio.h>

#include "queue/queue_db.h"

int tls_report_print(struct queue_db *db, const char *day, const char *domain,
    const char *hostname, FILE *out);

#endif
