/*
 * spawner — the delivery spawner: the small process that starts the
 * delivery processes for the queue process, as the delivery user.
 *
 * The queue process has no capability, so it cannot give a child another
 * user; the master forks the spawner next to it, as root, and it does
 * nothing but this: for each IPC_SPAWN from the queue it forks a child,
 * which drops to server.delivery_user (no capability, no_new_privs, the
 * delivery seccomp deny-list), reads its jobs and delivers them
 * (delivery.h), reporting each recipient's outcome straight to the queue
 * process over the channel that came with the request.  The delivery
 * user cannot open the queue directory; the message reaches the child as
 * a descriptor (a sealed memfd).
 *
 * A delivery process is long-lived (as Postfix's smtp(8) processes are):
 * after the jobs of a batch it sends a report with job SPAWN_BATCH_DONE
 * and waits on the same channel for the next batch, which the queue
 * process sends it directly (spawn_send_batch(): a struct spawn_batch
 * with the jobs' and contents' descriptors, SCM_RIGHTS), and its relay
 * client keeps its connection to the upstream from one batch to the
 * next (relay.h).  It ends when the queue process closes the channel
 * (an idle process retired, or the queue process gone).  A connection
 * left unused delivery.connection_cache_time is closed with QUIT.
 *
 * Guarantees (delivery is at least once, README "Delivery"):
 *   - the queue process defers every recipient a child did not report
 *     when the report channel reaches its end, however the child ended;
 *   - the spawner kills every child it started when the queue process
 *     goes away (its channel ends), and the children die with the
 *     spawner (PDEATHSIG): nothing delivers behind a restarted queue;
 *   - SPAWN_KILL (a job over its time limit) is honoured only for a pid
 *     the spawner started and has not reaped.
 *
 * The jobs travel in a sealed memfd, in this format (integers in host
 * order, as both ends are the same binary):
 *   u32 SPAWN_MAGIC, u32 njobs, then per job:
 *     u32 index (echoed in its reports), u32 content (index among the
 *     descriptors of the memfd that holds its content, the jobs' memfd
 *     being 0), u64 content_len, u64 content_off (where its content
 *     starts in that memfd: the queue process puts a batch's messages
 *     in one), i64 received_at, u32 flags (1: BODY=8BITMIME,
 *     2: SMTPUTF8, 4: RET=FULL, 8: RET=HDRS), str queue_id, sender,
 *     route, action, params, client_ip, helo, protocol, auth_user,
 *     dsn_envid, u32 nrcpts, then per recipient i64 id, str address,
 *     u32 DSN NOTIFY bits, str dsn_orcpt; then str sts_cached (relay
 *     to "mx": the domain's cached MTA-STS policy, mta_sts.h, or NULL);
 *   str: u32 length (SPAWN_NULL for NULL) and that many bytes.
 * A child that cannot read it exits 1: its recipients are deferred.
 */
#ifndef MXGATE_SPAWNER_H
#define MXGATE_SPAWNER_H

#include <stdint.h>

#include "common/config.h"
#include "common/util.h"
#include "delivery/delivery.h"

#define SPAWN_MAGIC   0x6d786a32u      /* "mxj2" */
#define SPAWN_NULL    0xffffffffu
#define SPAWN_MAX_FDS 64               /* the jobs + 20 contents, and room */

#define SPAWN_8BITMIME 1u
#define SPAWN_SMTPUTF8 2u
#define SPAWN_RET_FULL 4u
#define SPAWN_RET_HDRS 8u

#define SPAWN_BATCH_DONE   0xffffffffu  /* spawn_report.job: batch over */

/* Queue process -> an idle delivery process, with nfds descriptors:
 * the jobs, then each job's content (as for IPC_SPAWN). */
struct spawn_batch {
	uint32_t magic;                 /* SPAWN_MAGIC */
	uint32_t nfds;
	char     title[120];            /* "delivery DEST" for ps(1) */
};

/* Child -> queue process: one per recipient, one datagram each; then
 * one with job SPAWN_BATCH_DONE at the end of each batch. */
struct spawn_report {
	uint32_t job;                   /* the job's index */
	int32_t  status;                /* enum delivery_status */
	int32_t  remote;                /* the reply is the server's */
	int32_t  dsn_passed;            /* the server took the DSN request */
	uint32_t connect_ms;            /* the job's connection set-up */
	uint32_t transfer_ms;           /* the job's transaction */
	int64_t  recipient_id;
	char     destination[DELIVERY_DEST_MAX];
	char     reply[DELIVERY_REPLY_MAX];
};

/*
 * Child -> queue process, between the reports: what the relay client
 * learnt about TLS (relay.h), job SPAWN_TLS_NOTE.  kind STS_POLICY: a
 * freshly fetched MTA-STS policy of domain to cache (id, mode, max_age,
 * fetched_at, text: its mx patterns separated by spaces); kind RESULT:
 * one TLS session for TLS-RPT (domain, id: the policy type, text: the
 * policy's lines, mx_host, result_type "" for a success, addresses).
 */
#define SPAWN_TLS_NOTE 0xfffffffeu
enum spawn_tls_kind { SPAWN_TLS_STS_POLICY = 1, SPAWN_TLS_RESULT = 2 };
struct spawn_tls {
	uint32_t job;                   /* SPAWN_TLS_NOTE */
	int32_t  kind;                  /* enum spawn_tls_kind */
	int64_t  max_age, fetched_at;
	char     domain[256];
	char     id[40];
	char     mode[16];
	char     mx_host[256];
	char     result_type[48];
	char     sending_ip[64], receiving_ip[64];
	char     text[2048];
};

/* Writing the jobs (the queue process). */
void spawn_put_u32(struct buf *b, uint32_t v);
void spawn_put_u64(struct buf *b, uint64_t v);
void spawn_put_str(struct buf *b, const char *s);

/* Send the next batch to an idle delivery process over its channel:
 * 0, or -1 with errno. */
int spawn_send_batch(int sock, const char *title, const int *fds, int nfds);

/* The spawner process: queue_fd is its channel to the queue process.
 * Returns only to exit, once the queue process has gone and every child
 * it started has been reaped. */
int spawner_main(const struct mxconf *conf, int queue_fd);

#endif
