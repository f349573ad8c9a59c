/*
 * test_metrics — the counter store and its exposition (metrics.h), the
 * exporter's request parser (exporter.h), metrics.listen's parser, and
 * the log records in both formats (log.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "metrics/exporter.h"
#include "unit.h"

#define REQ(s) exporter_parse(s, sizeof(s) - 1)

static void
test_parse_requests(void)
{
	CHECK_INT(REQ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
	    EXPORTER_METRICS);
	CHECK_INT(REQ("GET /metrics?x=1 HTTP/1.0\n\n"), EXPORTER_METRICS);
	CHECK_INT(REQ("GET /metricsx HTTP/1.1\r\n\r\n"), EXPORTER_NOT_FOUND);
	CHECK_INT(REQ("GET / HTTP/1.1\r\n\r\n"), EXPORTER_NOT_FOUND);
	CHECK_INT(REQ("POST /metrics HTTP/1.1\r\n\r\n"), EXPORTER_BAD_METHOD);
	CHECK_INT(REQ("HEAD /metrics HTTP/1.1\r\n\r\n"), EXPORTER_BAD_METHOD);
	CHECK_INT(REQ("GET /metrics HTTP/2.0\r\n\r\n"), EXPORTER_BAD_REQUEST);
	CHECK_INT(REQ("GET /metrics\r\n\r\n"), EXPORTER_BAD_REQUEST);
	CHECK_INT(REQ("GET  /metrics HTTP/1.1\r\n\r\n"), EXPORTER_BAD_REQUEST);
	CHECK_INT(REQ("\r\n\r\n"), EXPORTER_BAD_REQUEST);
	CHECK_INT(REQ("GET /metrics HTTP/1.1 x\r\n\r\n"), EXPORTER_BAD_REQUEST);
	/* Not complete yet: the header block has not ended. */
	CHECK_INT(REQ("GET /metrics HTTP/1.1\r\nHost: x\r\n"),
	    EXPORTER_INCOMPLETE);
	CHECK_INT(REQ(""), EXPORTER_INCOMPLETE);
}

static void
test_parse_too_large(void)
{
	char big[EXPORTER_REQUEST_MAX];

	memset(big, 'a', sizeof(big));
	CHECK_INT(exporter_parse(big, sizeof(big)), EXPORTER_TOO_LARGE);
	CHECK_INT(exporter_parse(big, sizeof(big) - 1), EXPORTER_INCOMPLETE);
}

static void
test_listen_parse(void)
{
	struct sockaddr_storage ss;
	const char *why = NULL;
	unsigned len;

	CHECK_INT(metrics_listen_parse("127.0.0.1:9187", &ss, &len, &why), 0);
	CHECK_INT(ss.ss_family, AF_INET);
	CHECK_INT(metrics_listen_parse("[::1]:9187", &ss, &len, &why), 0);
	CHECK_INT(ss.ss_family, AF_INET6);
	CHECK_INT(metrics_listen_parse("127.0.0.1", &ss, &len, &why), -1);
	CHECK(why != NULL && strstr(why, "port") != NULL);
	CHECK_INT(metrics_listen_parse("::1:9187", &ss, &len, &why), -1);
	CHECK_INT(metrics_listen_parse("localhost:9187", &ss, &len, &why), -1);
	CHECK_INT(metrics_listen_parse("127.0.0.1:0", &ss, &len, &why), -1);
	CHECK_INT(metrics_listen_parse("127.0.0.1:65536", &ss, &len, &why), -1);
	CHECK_INT(metrics_listen_parse("127.0.0.1:9x", &ss, &len, &why), -1);
	CHECK_INT(metrics_listen_parse(":9187", &ss, &len, &why), -1);
}

/* The value of the series `name` (labels included) in text, or -1. */
static double
series(const char *text, const char *name)
{
	size_t n = strlen(name);
	const char *p = text;

	while ((p = strstr(p, name)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p += n;
	}
	return -1;
}

/* Before metrics_init(): nothing counts, nothing renders; after: the
 * sums of every block, survived by a "replaced" writer, histograms
 * cumulative, labels escaped.  (One test: the store is process-wide.) */
static void
test_store_and_render(void)
{
	struct buf out;
	pid_t pid;
	int status;

	buf_init(&out);
	metrics_inc(MC_MSG_ACCEPTED);
	metrics_render(&out, 1000);
	CHECK_INT(out.len, 0);

	CHECK_INT(metrics_init(2), 0);
	metrics_bind(METRICS_BLOCK_SMTP + 0);
	metrics_inc(MC_MSG_ACCEPTED);
	metrics_add(MC_BYTES_RECEIVED, 100);
	/* A child writes in its own block of the shared region and exits,
	 * as a worker that is replaced: its counts stay. */
	pid = fork();
	if (pid == 0) {
		metrics_bind(METRICS_BLOCK_SMTP + 1);
		metrics_inc(MC_MSG_ACCEPTED);
		metrics_add(MC_BYTES_RECEIVED, 23);
		metrics_bind(METRICS_BLOCK_QUEUE);
		metrics_observe(MH_COMMIT, 300);        /* 0.0003 s */
		metrics_observe(MH_COMMIT, 2000000);    /* 2 s: over 1 */
		metrics_delivery("mx.example[192.0.2.1]:25", MO_DELIVERED);
		metrics_delivery("mx.example[192.0.2.1]:25", MO_DELIVERED);
		metrics_delivery("bad\"dest\\\n", MO_DEFERRED);
		metrics_depth_begin();
		metrics_depth_row(MS_DEFERRED, "mx.example", 3);
		metrics_depth_row(MS_QUEUED, "", 2);
		metrics_depth_end(900, 1000);
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	metrics_render(&out, 1000);
	CHECK(series(out.data, "mxgate_messages_accepted_total") == 2);
	CHECK(series(out.data, "mxgate_received_bytes_total") == 123);
	CHECK(strstr(out.data, "# TYPE mxgate_messages_accepted_total "
	    "counter\n") != NULL);
	CHECK(strstr(out.data, "# TYPE mxgate_queue_commit_seconds "
	    "histogram\n") != NULL);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_bucket"
	    "{le=\"0.0001\"}") == 0);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_bucket"
	    "{le=\"0.00025\"}") == 0);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_bucket"
	    "{le=\"0.0005\"}") == 1);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_bucket"
	    "{le=\"1\"}") == 1);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_bucket"
	    "{le=\"+Inf\"}") == 2);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_count") == 2);
	CHECK(series(out.data, "mxgate_queue_commit_seconds_sum") > 2.0);
	CHECK(series(out.data, "mxgate_deliveries_total{outcome=\"delivered\","
	    "destination=\"mx.example[192.0.2.1]:25\"}") == 2);
	CHECK(series(out.data, "mxgate_deliveries_total{outcome=\"deferred\","
	    "destination=\"bad\\\"dest\\\\\\n\"}") == 1);
	CHECK(series(out.data, "mxgate_queue_recipients{state=\"deferred\","
	    "destination=\"mx.example\"}") == 3);
	CHECK(series(out.data, "mxgate_queue_recipients_by_state"
	    "{state=\"queued\"}") == 2);
	CHECK(series(out.data, "mxgate_queue_oldest_message_age_seconds")
	    == 100);
	buf_free(&out);
}

/* What a record looks like on stderr in the current format. */
static char *
emitted(void (*fill)(struct log_rec *))
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = tmpfile();
	int saved = dup(2);
	struct log_rec r;

	dup2(fileno(f), 2);
	log_rec_begin(&r);
	fill(&r);
	log_rec_emit(&r, LOG_LEVEL_INFO);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	if (getline(&text, &len, f) < 0) {
		free(text);
		text = NULL;
	}
	fclose(f);
	return text;
}

static void
fill_sample(struct log_rec *r)
{
	log_rec_str(r, "id", "ABC");
	log_rec_str(r, "event", "delivery");
	log_rec_path(r, "to", "bob@example.test");
	log_rec_path(r, "from", "");
	log_rec_num(r, "size", 1234);
	log_rec_secs(r, "delay", 1.5);
	log_rec_str(r, "tls", NULL);
	log_rec_reply(r, "451 4.7.1 try \"later\" = please\\");
	log_rec_str(r, "empty", "");
	log_rec_str(r, "bin", "a\x01\xff");
}

static void
test_record_text(void)
{
	char *line;

	log_init(true, LOG_LEVEL_INFO);
	log_set_format(LOG_FORMAT_TEXT);
	line = emitted(fill_sample);
	CHECK(line != NULL && strstr(line, " info: id=ABC event=delivery "
	    "to=<bob@example.test> from=<> size=1234 delay=1.500 tls=- "
	    "dsn=4.7.1 reply=\"451 4.7.1 try \\\"later\\\" = please\\\\\" "
	    "empty=\"\" bin=\"a\\x01\xff\"\n") != NULL);
	free(line);
}

static void
test_record_json(void)
{
	struct json_value *v;
	char *line, err[128];

	log_set_format(LOG_FORMAT_JSON);
	line = emitted(fill_sample);
	log_set_format(LOG_FORMAT_TEXT);
	CHECK(line != NULL);
	if (line == NULL)
		return;
	CHECK(strncmp(line, "{\"time\":\"", 9) == 0);
	CHECK(strstr(line, "\"level\":\"info\"") != NULL);
	CHECK(strstr(line, "\"id\":\"ABC\",\"event\":\"delivery\","
	    "\"to\":\"bob@example.test\",\"from\":\"\",\"size\":1234,"
	    "\"delay\":1.500,\"tls\":null,\"dsn\":\"4.7.1\","
	    "\"reply\":\"451 4.7.1 try \\\"later\\\" = please\\\\\","
	    "\"empty\":\"\",\"bin\":\"a\\u0001\xef\xbf\xbd\"}\n") != NULL);
	v = json_parse(line, strlen(line), err, sizeof(err));
	CHECK(v != NULL);
	json_free(v);
	free(line);
}

static void
fill_reply_forms(struct log_rec *r)
{
	log_rec_reply(r, "250 Ok");             /* no enhanced code */
	log_rec_reply(r, "550 5.1.10 no");      /* three-digit detail */
	log_rec_reply(r, "garbage");
}

static void
test_record_dsn(void)
{
	char *line;

	log_set_format(LOG_FORMAT_TEXT);
	line = emitted(fill_reply_forms);
	CHECK(line != NULL && strstr(line, "dsn=2.0.0 reply=\"250 Ok\" "
	    "dsn=5.1.10 reply=\"550 5.1.10 no\" dsn=- reply=garbage\n")
	    != NULL);
	free(line);
}

int
main(void)
{
	RUN(test_parse_requests);
	RUN(test_parse_too_large);
	RUN(test_listen_parse);
	RUN(test_store_and_render);
	RUN(test_record_text);
	RUN(test_record_json);
	RUN(test_record_dsn);
	return unit_done();
}
