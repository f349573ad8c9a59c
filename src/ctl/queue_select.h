/*
 * queue_select — which messages and recipients a queue command works on,
 * from its command line: IDs as arguments, "-" for IDs on stdin (one per
 * line, as `queue list --ids` prints them; blank lines and lines starting
 * with '#' skipped), or --all, narrowed by the filters
 *
 *   --state S        recipients in state S
 *   --rcpt RE        recipients whose address matches RE
 *   --sender RE      messages whose sender matches RE
 *   --dest RE        recipients whose destination (the host, path or
 *                    command last tried) or domain matches RE
 *   --older-than D   messages received more than D ago (90s, 5m, 4h, 2d, 1w)
 *
 * (RE: PCRE2, caseless), which must all hold for the same recipient; and
 * --json.  An action needs IDs or --all: a filter alone is refused, so
 * that a mistyped command never touches the whole queue.
 *
 * ctl_select_parse(): 0, or after printing the problem -1 (bad usage)
 * or -2 (a bad pattern or queue id: the command fails).
 * ctl_select_load(): hands the IDs to the store (queue_db_select_ids()),
 * 0 or -1 (the store's error).
 */
#ifndef MXGATE_CTL_QUEUE_SELECT_H
#define MXGATE_CTL_QUEUE_SELECT_H

#include <stdbool.h>
#include <stddef.h>

#include "queue/queue_db.h"

/* What a command accepts besides the filters. */
#define SEL_IDS     0x01        /* IDs and "-" */
#define SEL_ALL     0x02        /* --all (and then the filters) */
#define SEL_FILTERS 0x04        /* filters without --all (queue list) */
#define SEL_JSON    0x08        /* --json */
#define SEL_IDS_ONLY 0x10       /* --ids (queue list: ids, one a line) */

struct ctl_select {
	struct queue_select q;
	void   *re[3];              /* pcre2_code *: rcpt, sender, dest */
	void   *md;                 /* pcre2_match_data * */
	char  **ids;
	size_t  nids;
	bool    all, json, ids_only, any_filter;
	/* Arguments that are not the selection's, for the command. */
	char  **rest;
	int     nrest;
};

int  ctl_select_parse(struct ctl_select *cs, int argc, char **argv,
    unsigned allow);
int  ctl_select_load(struct ctl_select *cs, struct queue_db *db);
void ctl_select_free(struct ctl_select *cs);
/* "90s" "5m" "4h" "2d" "1w" or seconds; -1 when not a duration. */
long long ctl_parse_duration(const char *s);

#endif
