/*
 * metrics — the counter store behind the Prometheus endpoint
 * (metrics.listen), shared by every process.
 *
 * The master maps one shared anonymous region (MAP_SHARED) before it
 * forks anything, so every child inherits it and counters outlive the
 * process that counted them: a replaced smtp worker or queue process
 * goes on from where its predecessor stopped.  The region holds one
 * block of counters per writer (the master, the queue process, each smtp
 * worker slot); a process adds to its own block with relaxed atomic
 * additions (no system call, no lock: a worker under seccomp pays a few
 * nanoseconds), and the exporter process (metrics_http.h) sums the
 * blocks when it is scraped.  Several writers may share a block (an old
 * worker draining after a reload, the next in its slot): atomics keep
 * that exact.
 *
 * The region holds numbers and short label strings only, never
 * pointers: a confined process that writes garbage into it falsifies
 * metrics, nothing else; the renderer bounds and escapes what it reads.
 *
 * Without metrics_init() (metrics.listen unset, mxgatectl, the unit
 * tests) every call is a no-op.
 *
 *   metrics_init(nslots)      master, before forking: the region
 *   metrics_bind(block)       each process after fork: its block
 *   metrics_inc/add/set       count (set: a gauge of the process)
 *   metrics_observe(h, v)     a histogram observation (v in its unit)
 *   metrics_delivery(dest, o) the queue: a delivery outcome per place
 *   metrics_depth_*           the queue: the queue's gauges
 *   metrics_render(buf)       the exposition text (format 0.0.4)
 */
#ifndef MXGATE_METRICS_H
#define MXGATE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* X(id, family, labels): the counters, grouped by family (families are
 * contiguous: the renderer prints HELP and TYPE once per family). */
#define METRICS_COUNTERS(X) \
	X(CONN_ACCEPTED, "mxgate_connections_accepted_total", "") \
	X(CONN_REFUSED_LIMIT, "mxgate_connections_refused_total", "reason=\"limit\"") \
	X(CONN_REFUSED_PER_IP, "mxgate_connections_refused_total", "reason=\"per_ip\"") \
	X(CONN_REFUSED_FAIR_SHARE, "mxgate_connections_refused_total", "reason=\"fair_share\"") \
	X(CONN_REFUSED_PROXY, "mxgate_connections_refused_total", "reason=\"proxy_from\"") \
	X(CONN_REFUSED_PROXY_HEADER, "mxgate_connections_refused_total", "reason=\"proxy_header\"") \
	X(CONN_REFUSED_AUTH, "mxgate_connections_refused_total", "reason=\"auth_failures\"") \
	X(CONN_REFUSED_RATE, "mxgate_connections_refused_total", "reason=\"rate\"") \
	X(CONN_REFUSED_NO_WORKER, "mxgate_connections_refused_total", "reason=\"unavailable\"") \
	X(CONN_REFUSED_CHECK, "mxgate_connections_refused_total", "reason=\"check\"") \
	X(SESSIONS, "mxgate_smtp_sessions", "") \
	X(CMD_HELO, "mxgate_smtp_commands_total", "command=\"HELO\"") \
	X(CMD_EHLO, "mxgate_smtp_commands_total", "command=\"EHLO\"") \
	X(CMD_MAIL, "mxgate_smtp_commands_total", "command=\"MAIL\"") \
	X(CMD_RCPT, "mxgate_smtp_commands_total", "command=\"RCPT\"") \
	X(CMD_DATA, "mxgate_smtp_commands_total", "command=\"DATA\"") \
	X(CMD_BDAT, "mxgate_smtp_commands_total", "command=\"BDAT\"") \
	X(CMD_RSET, "mxgate_smtp_commands_total", "command=\"RSET\"") \
	X(CMD_NOOP, "mxgate_smtp_commands_total", "command=\"NOOP\"") \
	X(CMD_QUIT, "mxgate_smtp_commands_total", "command=\"QUIT\"") \
	X(CMD_STARTTLS, "mxgate_smtp_commands_total", "command=\"STARTTLS\"") \
	X(CMD_AUTH, "mxgate_smtp_commands_total", "command=\"AUTH\"") \
	X(CMD_OTHER, "mxgate_smtp_commands_total", "command=\"other\"") \
	X(REPLY_2XX, "mxgate_smtp_replies_total", "class=\"2xx\"") \
	X(REPLY_3XX, "mxgate_smtp_replies_total", "class=\"3xx\"") \
	X(REPLY_4XX, "mxgate_smtp_replies_total", "class=\"4xx\"") \
	X(REPLY_5XX, "mxgate_smtp_replies_total", "class=\"5xx\"") \
	X(HELO_REJ_CHECK, "mxgate_helo_rejected_total", "") \
	X(MSG_ACCEPTED, "mxgate_messages_accepted_total", "") \
	X(MSG_REJ_SIZE, "mxgate_messages_rejected_total", "reason=\"size\"") \
	X(MSG_REJ_CONTENT, "mxgate_messages_rejected_total", "reason=\"content\"") \
	X(MSG_REJ_CHECK, "mxgate_messages_rejected_total", "reason=\"check\"") \
	X(MSG_REJ_QUEUE, "mxgate_messages_rejected_total", "reason=\"queue\"") \
	X(MAIL_REJ_CHECK, "mxgate_senders_rejected_total", "reason=\"check\"") \
	X(MAIL_REJ_SPACE, "mxgate_senders_rejected_total", "reason=\"storage\"") \
	X(RCPT_ACCEPTED, "mxgate_recipients_accepted_total", "") \
	X(RCPT_REJ_ROUTE, "mxgate_recipients_rejected_total", "reason=\"route\"") \
	X(RCPT_REJ_SIZE, "mxgate_recipients_rejected_total", "reason=\"size\"") \
	X(RCPT_REJ_CHECK, "mxgate_recipients_rejected_total", "reason=\"check\"") \
	X(BYTES_RECEIVED, "mxgate_received_bytes_total", "") \
	X(TLS_V12, "mxgate_tls_sessions_total", "version=\"TLSv1.2\"") \
	X(TLS_V13, "mxgate_tls_sessions_total", "version=\"TLSv1.3\"") \
	X(TLS_OTHER, "mxgate_tls_sessions_total", "version=\"other\"") \
	X(TLS_FAILED, "mxgate_tls_handshake_failures_total", "") \
	X(SPF_PASS, "mxgate_spf_results_total", "result=\"pass\"") \
	X(SPF_FAIL, "mxgate_spf_results_total", "result=\"fail\"") \
	X(SPF_SOFTFAIL, "mxgate_spf_results_total", "result=\"softfail\"") \
	X(SPF_NEUTRAL, "mxgate_spf_results_total", "result=\"neutral\"") \
	X(SPF_NONE, "mxgate_spf_results_total", "result=\"none\"") \
	X(SPF_TEMPERROR, "mxgate_spf_results_total", "result=\"temperror\"") \
	X(SPF_PERMERROR, "mxgate_spf_results_total", "result=\"permerror\"") \
	X(POLICY_CONTINUE, "mxgate_policy_outcomes_total", "verdict=\"continue\"") \
	X(POLICY_ACCEPT, "mxgate_policy_outcomes_total", "verdict=\"accept\"") \
	X(POLICY_DEFER, "mxgate_policy_outcomes_total", "verdict=\"defer\"") \
	X(POLICY_REJECT, "mxgate_policy_outcomes_total", "verdict=\"reject\"") \
	X(MILTER_CONTINUE, "mxgate_milter_outcomes_total", "verdict=\"continue\"") \
	X(MILTER_ACCEPT, "mxgate_milter_outcomes_total", "verdict=\"accept\"") \
	X(MILTER_DEFER, "mxgate_milter_outcomes_total", "verdict=\"defer\"") \
	X(MILTER_REJECT, "mxgate_milter_outcomes_total", "verdict=\"reject\"") \
	X(PLUGIN_CONTINUE, "mxgate_plugin_outcomes_total", "verdict=\"continue\"") \
	X(PLUGIN_ACCEPT, "mxgate_plugin_outcomes_total", "verdict=\"accept\"") \
	X(PLUGIN_DEFER, "mxgate_plugin_outcomes_total", "verdict=\"defer\"") \
	X(PLUGIN_REJECT, "mxgate_plugin_outcomes_total", "verdict=\"reject\"") \
	X(QUEUE_COMMITTED, "mxgate_queue_committed_messages_total", "") \
	X(WORKER_STARTS, "mxgate_process_starts_total", "role=\"smtp\"") \
	X(QUEUE_STARTS, "mxgate_process_starts_total", "role=\"queue\"")

enum metrics_counter {
#define METRICS_ENUM(id, family, labels) MC_##id,
	METRICS_COUNTERS(METRICS_ENUM)
#undef METRICS_ENUM
	MC__COUNT
};

enum metrics_hist {
	MH_COMMIT,              /* queue commit, sync included, us */
	MH_BATCH,               /* messages per commit */
	MH_DELIVERY,            /* reception to delivery, us */
	MH__COUNT
};

#define METRICS_BUCKETS_MAX 16

enum metrics_outcome {
	MO_DELIVERED, MO_DEFERRED, MO_BOUNCED, MO_EXPIRED, MO__COUNT
};

/* Fixed blocks; the smtp workers' follow, one per slot. */
enum { METRICS_BLOCK_MASTER, METRICS_BLOCK_QUEUE, METRICS_BLOCK_SMTP };

/* Gauges of the queue, by recipient state and destination. */
#define METRICS_DEPTH_ROWS 64
#define METRICS_DEST_LEN   64
#define METRICS_DESTS      64

enum metrics_state {
	MS_QUEUED, MS_DELIVERING, MS_DEFERRED, MS_HELD, MS__COUNT
};

/* 0, or -1 (logged) when the region cannot be mapped. */
int  metrics_init(int nslots);
bool metrics_enabled(void);
void metrics_bind(int block);

void metrics_add(enum metrics_counter c, uint64_t n);
static inline void metrics_inc(enum metrics_counter c) { metrics_add(c, 1); }
void metrics_set(enum metrics_counter c, uint64_t v);
void metrics_observe(enum metrics_hist h, uint64_t v);

/* Count an outcome of one recipient at its destination ("" or NULL:
 * unknown); past METRICS_DESTS places they count as "other". */
void metrics_delivery(const char *dest, enum metrics_outcome o);

/* The queue process publishes its gauges: begin, rows, end. */
void metrics_depth_begin(void);
void metrics_depth_row(enum metrics_state st, const char *dest,
    uint64_t recipients);
void metrics_depth_end(int64_t oldest_received_at, int64_t now);
/* Unix time of the last scrape, so the queue computes gauges only while
 * someone reads them; metrics_scraped() is the exporter's. */
int64_t metrics_last_scrape(void);
void metrics_scraped(int64_t now);
int  metrics_state_index(const char *state);

/* metrics.listen: "127.0.0.1:9187", "[::1]:9187"; a numeric address
 * and a port.  0, or -1 with why set to the problem. */
struct sockaddr_storage;
int  metrics_listen_parse(const char *text, struct sockaddr_storage *ss,
    unsigned *len, const char **why);

/* Append the whole exposition to out. */
void metrics_render(struct buf *out, int64_t now);

#endif
