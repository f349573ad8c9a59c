/*
 * scheduler — delivery, inside the queue process: picks the recipients
 * that are due, runs each job in a delivery process that the delivery
 * spawner starts as the delivery user (spawner_fd, spawner.h), records
 * every outcome in the queue (recipient state, history rows, bounces),
 * and plans the retries (retry.h).
 *
 * Recipient states (README, "The queue schema"):
 *   queued / deferred --(due: next_attempt_at <= now)--> delivering
 *   delivering --> delivered | deferred (next_attempt_at, last_reply)
 *              --> bounced (5xx, or max_queue_time reached: a DSN is queued)
 *   held: never picked (mxgatectl hold / release).
 * A recipient still "delivering" when mxgated starts was being delivered
 * when the queue process died: it is due again at once (delivery is at
 * least once; a duplicate needs a crash between the remote 250 and our
 * commit).
 *
 * The scheduler asks the database what is due after every group commit
 * that brought new messages, whenever a job ends, and every second (so
 * that `mxgatectl queue retry` and `release` take effect within a second
 * without telling the daemon anything).  Its writes (dispatch marks,
 * outcomes, history, bounces) go in short transactions of their own, at
 * most one every SCHEDULER_MIN_INTERVAL_MS, apart from the group commit,
 * so that acceptance never waits for delivery.
 *
 * Limits: delivery.concurrency batches running in all, at most
 * delivery.concurrency_per_destination of them per destination
 * (retry_keys()); the recipients of one message with the same job key go
 * in one job, up to 20 jobs for one destination in one batch.  Batches
 * run in long-lived delivery processes (spawner.h), a pool of at most
 * delivery.concurrency: a batch goes to an idle process of its user,
 * preferably the one whose last batch (and cached connection) went to
 * the same destination; an idle process retires after 60 s.
 *
 * Retention: once every recipient of a message is delivered or bounced,
 * the message is deleted (delivery.keep_delivered = 0) or only its
 * content is, and the rest (envelope, recipients, history) goes after
 * keep_delivered -- into the history tables (a trigger copies them),
 * which keep it queue.keep_history more.
 */
#ifndef MXGATE_SCHEDULER_H
#define MXGATE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/event.h"
#include "queue/queue_db.h"

#define SCHEDULER_MIN_INTERVAL_MS 10

/*
 * Start: requeue what was "delivering", then register the scheduler's
 * descriptors (its timer, spawner_fd -- the channel to the delivery
 * spawner -- and the delivery children's report sockets) in the queue
 * process's event loop, which calls the scheduler back (event.h).
 */
void scheduler_init(const struct mxconf *conf, struct queue_db *db,
    struct event_loop *loop, int spawner_fd);
/*
 * A reload (README "Reload"): conf replaces the configuration from the
 * next dispatch on (retry schedule, expiry, concurrency, paused, bounce
 * upstream, retention); running deliveries end as they would.  The
 * text's descriptor (IPC_CONFIG) goes on to the spawner, whose next
 * delivery processes get it.  conf must outlive the next reconfigure.
 */
void scheduler_reconfigure(const struct mxconf *conf, int config_fd);
/* Once per turn of the queue loop, after the group commit; new_messages:
 * the commit brought some. */
void scheduler_run(bool new_messages);
/* Stop: no new jobs; running ones get grace_seconds to finish, then are
 * killed; every outcome known is recorded. */
void scheduler_stop(unsigned grace_seconds);

#endif
