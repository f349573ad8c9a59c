/*
 * metrics — see metrics.h.
 *
 * The region: a header, then the queue's gauges (written by the queue
 * process alone under a sequence lock), the delivery places, then one
 * block of counters and histograms per writer.  Everything a writer
 * touches on a hot path is a relaxed atomic addition on its own block.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "common/log.h"
#include "common/metrics.h"

struct metrics_histo {
	_Atomic uint64_t le[METRICS_BUCKETS_MAX + 1];   /* the last: +Inf */
	_Atomic uint64_t sum;
	_Atomic uint64_t count;
};

struct metrics_block {
	_Atomic uint64_t c[MC__COUNT];
	struct metrics_histo h[MH__COUNT];
} __attribute__((aligned(64)));

struct metrics_depth {
	char     dest[METRICS_DEST_LEN];
	uint32_t state;
	uint64_t recipients;
};

struct metrics_dest {
	_Atomic uint32_t used;          /* name is set once this is 1 */
	char     name[METRICS_DEST_LEN];
	_Atomic uint64_t n[MO__COUNT];
};

struct metrics_region {
	_Atomic int64_t last_scrape;
	/* The queue's gauges: seq is odd while the queue writes them. */
	_Atomic uint64_t depth_seq;
	uint32_t ndepth;
	int64_t  oldest_received_at;    /* 0: nothing pending */
	int64_t  depth_at;              /* when computed; 0: never */
	struct metrics_depth depth[METRICS_DEPTH_ROWS];
	struct metrics_dest dests[METRICS_DESTS + 1];   /* +1: "other" */
	int      nblocks;
	struct metrics_block blocks[];
};

struct family {
	const char *name, *type, *help;
};

static const struct family families[] = {
	{ "mxgate_connections_accepted_total", "counter",
	  "Connections the master accepted and handed to an smtp process." },
	{ "mxgate_connections_refused_total", "counter",
	  "Connections refused: by the master (421), by an smtp process"
	  " for a bad or missing PROXY header (reason \"proxy_header\"),"
	  " or at the greeting by the checks (reason \"check\")." },
	{ "mxgate_smtp_sessions", "gauge",
	  "SMTP sessions open now." },
	{ "mxgate_smtp_commands_total", "counter",
	  "SMTP commands received, by verb." },
	{ "mxgate_smtp_replies_total", "counter",
	  "SMTP replies sent, by code class." },
	{ "mxgate_helo_rejected_total", "counter",
	  "HELO and EHLO commands refused by the checks." },
	{ "mxgate_messages_accepted_total", "counter",
	  "Messages committed to the queue and acknowledged (250)." },
	{ "mxgate_messages_rejected_total", "counter",
	  "Messages refused after their data, by reason." },
	{ "mxgate_senders_rejected_total", "counter",
	  "MAIL commands refused, by reason." },
	{ "mxgate_recipients_accepted_total", "counter",
	  "Recipients accepted at RCPT." },
	{ "mxgate_recipients_rejected_total", "counter",
	  "Recipients refused at RCPT, by reason." },
	{ "mxgate_received_bytes_total", "counter",
	  "Bytes of the messages accepted." },
	{ "mxgate_tls_sessions_total", "counter",
	  "TLS handshakes completed by the smtp processes, by version." },
	{ "mxgate_tls_handshake_failures_total", "counter",
	  "TLS handshakes that failed." },
	{ "mxgate_spf_results_total", "counter",
	  "SPF results of MAIL FROM checks." },
	{ "mxgate_policy_outcomes_total", "counter",
	  "Answers of the policy service, by verdict." },
	{ "mxgate_milter_outcomes_total", "counter",
	  "Answers of the milters at each stage (all of a stage's milters "
	  "together), by verdict." },
	{ "mxgate_plugin_outcomes_total", "counter",
	  "Verdicts of the C plugins at each stage (all of a stage's plugins "
	  "together), by verdict." },
	{ "mxgate_queue_committed_messages_total", "counter",
	  "Messages committed by the queue process." },
	{ "mxgate_process_starts_total", "counter",
	  "Processes started, by role (more than the configured number: "
	  "respawns)." },
};

static const struct {
	const char *name, *help;
	double      scale;              /* stored unit per exported unit */
	unsigned    nb;
	uint64_t    bounds[METRICS_BUCKETS_MAX];
} histos[MH__COUNT] = {
	[MH_COMMIT] = { "mxgate_queue_commit_seconds",
	    "Time of one group commit of the queue, its sync included.",
	    1e6, 12, { 100, 250, 500, 1000, 2500, 5000, 10000, 25000,
	    50000, 100000, 250000, 1000000 } },
	[MH_BATCH] = { "mxgate_queue_commit_batch_size",
	    "Messages per group commit.",
	    1, 10, { 1, 2, 4, 8, 16, 32, 64, 128, 512, 2048 } },
	[MH_DELIVERY] = { "mxgate_delivery_latency_seconds",
	    "Time from reception to delivery, per delivered recipient.",
	    1e6, 12, { 100000, 500000, 1000000, 5000000, 10000000,
	    30000000, 60000000, 300000000, 1800000000, 3600000000ULL,
	    21600000000ULL, 86400000000ULL } },
};

static const char *const outcome_names[MO__COUNT] = {
	"delivered", "deferred", "bounced", "expired",
};
static const char *const state_names[MS__COUNT] = {
	"queued", "delivering", "deferred", "held",
};

static const struct {
	const char *family, *labels;
} counters[MC__COUNT] = {
#define METRICS_ROW(id, family, labels) [MC_##id] = { family, labels },
	METRICS_COUNTERS(METRICS_ROW)
#undef METRICS_ROW
};

static struct metrics_region *region;
static struct metrics_block *self;

int
metrics_init(int nslots)
{
	size_t size = sizeof(struct metrics_region) +
	    (size_t)(METRICS_BLOCK_SMTP + nslots) * sizeof(struct metrics_block);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_error("metrics: cannot map %zu bytes: %m", size);
		return -1;
	}
	region = p;
	region->nblocks = METRICS_BLOCK_SMTP + nslots;
	strlcpy_mx(region->dests[METRICS_DESTS].name, "(other)",
	    METRICS_DEST_LEN);
	atomic_store(&region->dests[METRICS_DESTS].used, 1);
	return 0;
}

bool
metrics_enabled(void)
{
	return region != NULL;
}

void
metrics_bind(int block)
{
	if (region == NULL || block < 0 || block >= region->nblocks)
		return;
	self = &region->blocks[block];
}

void
metrics_add(enum metrics_counter c, uint64_t n)
{
	if (self != NULL)
		atomic_fetch_add_explicit(&self->c[c], n, memory_order_relaxed);
}

void
metrics_set(enum metrics_counter c, uint64_t v)
{
	if (self != NULL)
		atomic_store_explicit(&self->c[c], v, memory_order_relaxed);
}

void
metrics_observe(enum metrics_hist h, uint64_t v)
{
	struct metrics_histo *mh;
	unsigned i;

	if (self == NULL)
		return;
	mh = &self->h[h];
	/* Cumulative buckets are made at render time: one addition here. */
	for (i = 0; i < histos[h].nb && v > histos[h].bounds[i]; i++)
		;
	atomic_fetch_add_explicit(&mh->le[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&mh->sum, v, memory_order_relaxed);
	atomic_fetch_add_explicit(&mh->count, 1, memory_order_relaxed);
}

void
metrics_delivery(const char *dest, enum metrics_outcome o)
{
	struct metrics_dest *d = NULL;
	size_t i;

	if (region == NULL)
		return;
	if (dest == NULL)
		dest = "";
	/* The queue process is the only writer of names: a linear look
	 * at 64 short names per outcome costs less than the outcome's
	 * transaction. */
	for (i = 0; i < METRICS_DESTS; i++) {
		struct metrics_dest *x = &region->dests[i];

		if (!atomic_load_explicit(&x->used, memory_order_acquire)) {
			strlcpy_mx(x->name, dest, sizeof(x->name));
			atomic_store_explicit(&x->used, 1, memory_order_release);
			d = x;
			break;
		}
		if (strncmp(x->name, dest, sizeof(x->name) - 1) == 0) {
			d = x;
			break;
		}
	}
	if (d == NULL)
		d = &region->dests[METRICS_DESTS];
	atomic_fetch_add_explicit(&d->n[o], 1, memory_order_relaxed);
}

int
metrics_state_index(const char *state)
{
	for (int i = 0; i < MS__COUNT; i++) {
		if (strcmp(state, state_names[i]) == 0)
			return i;
	}
	return -1;
}

void
metrics_depth_begin(void)
{
	if (region == NULL)
		return;
	atomic_fetch_add_explicit(&region->depth_seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	region->ndepth = 0;
}

void
metrics_depth_row(enum metrics_state st, const char *dest,
    uint64_t recipients)
{
	struct metrics_depth *r;
	char name[METRICS_DEST_LEN];

	if (region == NULL)
		return;
	/* Names cut to the same prefix, and the rows past the last, are
	 * one series: a series may appear only once. */
	strlcpy_mx(name, dest != NULL ? dest : "", sizeof(name));
	if (region->ndepth >= METRICS_DEPTH_ROWS - 1)
		strlcpy_mx(name, "(other)", sizeof(name));
	for (uint32_t i = 0; i < region->ndepth; i++) {
		r = &region->depth[i];
		if (r->state == (uint32_t)st && strcmp(r->dest, name) == 0) {
			r->recipients += recipients;
			return;
		}
	}
	if (region->ndepth == METRICS_DEPTH_ROWS)
		return;
	r = &region->depth[region->ndepth++];
	r->state = (uint32_t)st;
	memcpy(r->dest, name, sizeof(r->dest));
	r->recipients = recipients;
}

void
metrics_depth_end(int64_t oldest_received_at, int64_t now)
{
	if (region == NULL)
		return;
	region->oldest_received_at = oldest_received_at;
	region->depth_at = now;
	atomic_thread_fence(memory_order_release);
	atomic_fetch_add_explicit(&region->depth_seq, 1, memory_order_relaxed);
}

int64_t
metrics_last_scrape(void)
{
	return region != NULL ?
	    atomic_load_explicit(&region->last_scrape, memory_order_relaxed) : 0;
}

void
metrics_scraped(int64_t now)
{
	if (region != NULL)
		atomic_store_explicit(&region->last_scrape, now,
		    memory_order_relaxed);
}

/* ---- rendering ---- */

static const struct family *
family_of(const char *name)
{
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		if (strcmp(families[i].name, name) == 0)
			return &families[i];
	}
	return NULL;
}

static void
header(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value read from the region: bounded, escaped as the format
 * says (backslash, double quote, newline). */
static void
label_value(struct buf *out, const char *s, size_t max)
{
	for (size_t i = 0; i < max && s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\\' || c == '"')
			buf_appendf(out, "\\%c", c);
		else if (c == '\n')
			buf_appends(out, "\\n");
		else if (c < 32 || c == 127)
			buf_appends(out, "?");
		else
			buf_append(out, &s[i], 1);
	}
}

static void
render_counters(struct buf *out)
{
	const char *last = "";

	for (int c = 0; c < MC__COUNT; c++) {
		uint64_t sum = 0;

		if (strcmp(counters[c].family, last) != 0) {
			const struct family *f = family_of(counters[c].family);

			last = counters[c].family;
			header(out, last, f != NULL ? f->type : "untyped",
			    f != NULL ? f->help : "");
		}
		for (int b = 0; b < region->nblocks; b++)
			sum += atomic_load_explicit(&region->blocks[b].c[c],
			    memory_order_relaxed);
		if (counters[c].labels[0] != '\0')
			buf_appendf(out, "%s{%s} %llu\n", last,
			    counters[c].labels, (unsigned long long)sum);
		else
			buf_appendf(out, "%s %llu\n", last,
			    (unsigned long long)sum);
	}
}

static void
render_histos(struct buf *out)
{
	for (int h = 0; h < MH__COUNT; h++) {
		uint64_t le[METRICS_BUCKETS_MAX + 1] = { 0 }, sum = 0, count = 0;
		uint64_t cumulative = 0;
		unsigned i, nb = histos[h].nb;

		for (int b = 0; b < region->nblocks; b++) {
			struct metrics_histo *mh = &region->blocks[b].h[h];

			for (i = 0; i <= nb; i++)
				le[i] += atomic_load_explicit(&mh->le[i],
				    memory_order_relaxed);
			sum += atomic_load_explicit(&mh->sum,
			    memory_order_relaxed);
		}
		header(out, histos[h].name, "histogram", histos[h].help);
		for (i = 0; i <= nb; i++) {
			cumulative += le[i];
			if (i < nb)
				buf_appendf(out, "%s_bucket{le=\"%g\"} %llu\n",
				    histos[h].name,
				    (double)histos[h].bounds[i] / histos[h].scale,
				    (unsigned long long)cumulative);
			else
				buf_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n",
				    histos[h].name,
				    (unsigned long long)cumulative);
		}
		/* _count is the +Inf bucket, read once: the two agree even
		 * while writers add. */
		count = cumulative;
		buf_appendf(out, "%s_sum %.6f\n%s_count %llu\n", histos[h].name,
		    (double)sum / histos[h].scale, histos[h].name,
		    (unsigned long long)count);
	}
}

static void
render_dest(struct buf *out, struct metrics_dest *d)
{
	for (int o = 0; o < MO__COUNT; o++) {
		buf_appendf(out, "mxgate_deliveries_total{outcome=\"%s\","
		    "destination=\"", outcome_names[o]);
		label_value(out, d->name, sizeof(d->name));
		buf_appendf(out, "\"} %llu\n", (unsigned long long)
		    atomic_load_explicit(&d->n[o], memory_order_relaxed));
	}
}

static void
render_deliveries(struct buf *out)
{
	header(out, "mxgate_deliveries_total", "counter",
	    "Recipient delivery outcomes, by outcome and destination (the "
	    "first 64 destinations; later ones count as \"(other)\").");
	for (int i = 0; i < METRICS_DESTS; i++) {
		if (!atomic_load_explicit(&region->dests[i].used,
		    memory_order_acquire))
			break;
		render_dest(out, &region->dests[i]);
	}
	render_dest(out, &region->dests[METRICS_DESTS]);
}

static void
render_depth(struct buf *out, int64_t now)
{
	struct metrics_depth rows[METRICS_DEPTH_ROWS];
	uint64_t totals[MS__COUNT] = { 0 };
	int64_t oldest = 0, at = 0;
	uint32_t n = 0;
	int tries;

	/* The queue rewrites the rows under a sequence lock: copy until a
	 * copy was not overlapped by a write. */
	for (tries = 0; tries < 100; tries++) {
		uint64_t s1 = atomic_load_explicit(&region->depth_seq,
		    memory_order_acquire);

		if (s1 & 1)
			continue;
		n = region->ndepth;
		if (n > METRICS_DEPTH_ROWS)
			n = METRICS_DEPTH_ROWS;
		memcpy(rows, region->depth, n * sizeof(rows[0]));
		oldest = region->oldest_received_at;
		at = region->depth_at;
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&region->depth_seq,
		    memory_order_relaxed) == s1)
			break;
	}
	if (tries == 100)
		n = 0;
	header(out, "mxgate_queue_recipients", "gauge",
	    "Recipients in the queue, by state and destination (the last "
	    "place tried; \"\" before the first attempt).");
	for (uint32_t i = 0; i < n; i++) {
		if (rows[i].state >= MS__COUNT)
			continue;
		totals[rows[i].state] += rows[i].recipients;
		buf_appendf(out, "mxgate_queue_recipients{state=\"%s\","
		    "destination=\"", state_names[rows[i].state]);
		label_value(out, rows[i].dest, sizeof(rows[i].dest));
		buf_appendf(out, "\"} %llu\n",
		    (unsigned long long)rows[i].recipients);
	}
	header(out, "mxgate_queue_recipients_by_state", "gauge",
	    "Recipients in the queue, by state.");
	for (int s = 0; s < MS__COUNT; s++)
		buf_appendf(out, "mxgate_queue_recipients_by_state{state=\"%s\"}"
		    " %llu\n", state_names[s], (unsigned long long)totals[s]);
	header(out, "mxgate_queue_oldest_message_age_seconds", "gauge",
	    "Age of the oldest message with a recipient still pending "
	    "(0: none).");
	buf_appendf(out, "mxgate_queue_oldest_message_age_seconds %lld\n",
	    oldest > 0 && now > oldest ? (long long)(now - oldest) : 0LL);
	header(out, "mxgate_queue_gauges_age_seconds", "gauge",
	    "How old the queue gauges are (computed by the queue process "
	    "every 5 s while scraped; -1: not yet).");
	buf_appendf(out, "mxgate_queue_gauges_age_seconds %lld\n",
	    at > 0 ? (long long)(now > at ? now - at : 0) : -1LL);
}

void
metrics_render(struct buf *out, int64_t now)
{
	if (region == NULL)
		return;
	render_counters(out);
	render_histos(out);
	render_deliveries(out);
	render_depth(out, now);
}

int
metrics_listen_parse(const char *text, struct sockaddr_storage *ss,
    unsigned *len, const char **why)
{
	char host[64];
	const char *colon, *h = text;
	size_t hlen;
	char *end;
	long port;

	memset(ss, 0, sizeof(*ss));
	colon = strrchr(text, ':');
	if (colon == NULL) {
		*why = "no port: write \"ADDRESS:PORT\", e.g. \"127.0.0.1:9187\"";
		return -1;
	}
	hlen = (size_t)(colon - text);
	if (text[0] == '[') {
		if (hlen < 2 || text[hlen - 1] != ']') {
			*why = "an IPv6 address goes in brackets: \"[::1]:9187\"";
			return -1;
		}
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "no address: write \"ADDRESS:PORT\", e.g. \"127.0.0.1:9187\"";
		return -1;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 ||
	    port > 65535) {
		*why = "the port must be a number from 1 to 65535";
		return -1;
	}
	if (text[0] != '[' && inet_pton(AF_INET, host,
	    &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	if (text[0] == '[' && inet_pton(AF_INET6, host,
	    &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
	*why = "the address must be a numeric IPv4 address or an IPv6 address"
	    " in brackets";
	return -1;
}
