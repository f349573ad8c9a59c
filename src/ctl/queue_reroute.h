/*
 * queue_reroute — `mxgatectl queue reroute`: decide the routes of pending
 * recipients again with the current configuration, after a route or an
 * upstream changed (routes are decided at RCPT and stored with each
 * recipient, so delivery never re-decides by itself).
 *
 *   queue reroute ID... | - | --all [FILTERS] [--dry-run] [--bounce-refused]
 *
 * For each selected recipient that is queued, deferred or held (not one
 * in delivery right now), the routes run as at RCPT TO, with the message's
 * sender, client address, HELO, authenticated user, TLS (its protocol)
 * and queue id.  A new decision (route, action or parameters) is stored,
 * with a "routed" history row naming the old one and the operator, and
 * the recipient is due now (a held one stays held); each change is
 * printed "ID <rcpt>: OLD -> NEW".  A recipient the routes would now
 * refuse, or that would now match several routes (continue), is left as
 * it was, and said so; with --bounce-refused, one the routes refuse is
 * bounced instead, with their reply.  --dry-run prints the same and
 * changes nothing.
 * One transaction.  The current directory matters as for mxgated:
 * relative maildir paths and commands are made absolute against it.
 *
 * Exit status: 0 done (also when nothing changed), 1 failure, 2 usage.
 */
#ifndef MXGATE_CTL_QUEUE_REROUTE_H
#define MXGATE_CTL_QUEUE_REROUTE_H

#include "common/config.h"
#include "queue/queue_db.h"

/*
 * --bounce-refused: a recipient the routes refuse now is handed to add()
 * (with the refusal's code and text) instead of being left, inside the
 * transaction, the recipients of one message one after the other; flush()
 * bounces what add() gathered, after the last one.  Either's -1 rolls
 * everything back.
 */
struct reroute_bounce {
	int  (*add)(void *arg, const char *msgid, int64_t rcpt_id,
	    const char *address, int code, const char *text);
	int  (*flush)(void *arg);
	void  *arg;
};

/* What a reroute committed (all 0 for --dry-run or a failure), for the
 * operators' log (audit.h). */
struct reroute_done {
	long long messages, recipients, bounced;
};

/* argv: the words after "queue reroute"; who: the operator, for the
 * history ("by mxgatectl uid=0 user=root"). */
int queue_reroute_main(const struct mxconf *conf, struct queue_db *db,
    const char *who, const struct reroute_bounce *rb, int argc, char **argv,
    struct reroute_done *done);

#endif
