/*
 * Unit tests for the local handlers, driven directly with delivery jobs
 * built from message files (no daemon): the pure helpers (maildir names,
 * the command environment, the webhook signature and outcome table,
 * LMTP addresses), the JSON document of a real multipart message, and
 * the handlers themselves -- maildir into a temporary directory, pipe
 * with /bin/sh commands (each exit status, a signal, a timeout that kills
 * the process group, exec failure, the JSON format), LMTP against a small
 * scripted server in a child process, discard, debug and the dispatch.
 * The webhook's HTTPS POST is tested by tests/integration/test_handlers.py.
 *
 * Data files are under $srcdir/tests/unit/data (make check), else ".".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <glib.h>

#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/json.h"
#include "delivery/message_json.h"
#include "unit.h"
#include "common/util.h"

static char tmpdir[64];
static const char *datadir;

/* ---- helpers ---- */

static char *
read_file(const char *path, size_t *len)
{
	struct buf b;
	char chunk[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd == -1)
		return NULL;
	buf_init(&b);
	buf_append(&b, "", 0);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(&b, chunk, (size_t)n);
	close(fd);
	if (len != NULL)
		*len = b.len;
	return b.data;
}

static char *
data_file(const char *name, size_t *len)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/tests/unit/data/%s", datadir, name);
	return read_file(path, len);
}

/* A job as the scheduler makes it: the content in a sealed memfd. */
struct test_job {
	struct delivery_job job;
	struct delivery_rcpt rcpts[8];
	struct mxconf conf;
};

static void
job_init(struct test_job *t, const char *action, const char *params,
    const char *content, size_t len, const char *const *rcpts)
{
	int fd = memfd_create("content", MFD_ALLOW_SEALING | MFD_CLOEXEC);

	/* Another message of the batch before this one (spawner.h), over
	 * a page: the handlers read from content_off, never from 0. */
	static char other[5000];

	memset(t, 0, sizeof(*t));
	memset(other, 'X', sizeof(other));
	if (write(fd, other, sizeof(other)) != (ssize_t)sizeof(other))
		abort();
	if (len > 0 && write(fd, content, len) != (ssize_t)len)
		abort();
	if (write(fd, other, 100) != 100)
		abort();
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	t->conf.hostname = "mx.test.example";
	t->job = (struct delivery_job){
		.queue_id = "0ABCDEFGHIJKLMNO", .sender = "elodie@sender.example",
		.route = "r1", .action = action, .params_json = params,
		.conf = &t->conf, .content_fd = fd, .content_len = len,
		.content_off = sizeof(other),
		.client_ip = "192.0.2.7", .helo = "client.example",
		.protocol = "ESMTP", .received_at = 1795766400, .rcpts = t->rcpts,
	};
	for (size_t i = 0; rcpts[i] != NULL; i++) {
		t->rcpts[i].address = rcpts[i];
		t->rcpts[i].recipient_id = (int64_t)i + 1;
		t->job.nrcpts++;
	}
}

static void
job_free(struct test_job *t)
{
	delivery_content_release(&t->job);
	close(t->job.content_fd);
}

static const char *const one_rcpt[] = { "bob@example.com", NULL };

/* delivery_content(): a small content read into the process's buffer,
 * reused by the next job (and the first job's copy is not kept past
 * its release); a content over 1 MB mapped; each exactly as stored. */
static void
test_content_read_and_mapped(void)
{
	static const size_t sizes[] = { 100 * 1024, 4000, 3 * 1024 * 1024 };
	struct test_job t;

	for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
		char *data = xmalloc(sizes[k]);
		const char *got;

		for (size_t i = 0; i < sizes[k]; i++)
			data[i] = (char)('a' + (i * 7 + k) % 26);
		job_init(&t, "discard", "{}", data, sizes[k], one_rcpt);
		got = delivery_content(&t.job);
		CHECK(got != NULL && memcmp(got, data, sizes[k]) == 0);
		/* The same pointer for the job's second call. */
		CHECK(delivery_content(&t.job) == got);
		CHECK((t.job.content_map != NULL) == (sizes[k] > 1024 * 1024));
		job_free(&t);
		CHECK(t.job.content_map == NULL && t.job.content_read == NULL);
		free(data);
	}
}
static const char simple_msg[] =
    "Received: from client.example\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "line one\r\n"
    ".leading dot\r\n"
    "bare\rCR\r\n";

static int
count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char *
first_file(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *path = NULL;

	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && path == NULL)
			xasprintf(&path, "%s/%s", dir, e->d_name);
	if (d != NULL)
		closedir(d);
	return path;
}

/* ---- pure helpers ---- */

static void
test_maildir_name(void)
{
	struct timespec ts = { .tv_sec = 1700000000, .tv_nsec = 123456789 };
	char name[128];

	CHECK(maildir_name(name, sizeof(name), &ts, 4242, 7, "mx.example") == 0);
	CHECK_STR(name, "1700000000.M123456P4242Q7.mx.example");
	CHECK(maildir_name(name, sizeof(name), &ts, 1, 1, "a/b:c") == 0);
	CHECK_STR(name, "1700000000.M123456P1Q1.a\\057b\\072c");
	CHECK(maildir_name(name, 10, &ts, 1, 1, "host") == -1);
}

static void
test_crlf_and_header(void)
{
	struct buf b;

	buf_init(&b);
	crlf_to_lf(&b, "a\r\nb\rc\n\r\n", 9);
	CHECK_STR(b.data, "a\nb\rc\n\n");
	buf_reset(&b);
	maildir_header(&b, "", "bob@example.com");
	CHECK_STR(b.data, "Return-Path: <>\nDelivered-To: bob@example.com\n");
	buf_free(&b);
}

static const char *
env_get(char **env, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; env[i] != NULL; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
			return env[i] + n + 1;
	return NULL;
}

static void
test_pipe_env(void)
{
	static const char *const rcpts[] = { "a@example.com", "b@example.com",
	    NULL };
	const char *vtext = "{\"queue\":\"support\",\"Ticket_2\":\"42\","
	    "\"evil\":\"x\\ny\"}";
	struct json_value *vars = json_parse(vtext, strlen(vtext), NULL, 0);
	struct test_job t;
	char **env;
	size_t n = 0;

	job_init(&t, "pipe", "{}", "x", 1, rcpts);
	env = pipe_env(&t.job, vars);
	CHECK_STR(env_get(env, "PATH"), "/usr/bin:/bin");
	CHECK_STR(env_get(env, "SENDER"), "elodie@sender.example");
	CHECK_STR(env_get(env, "RECIPIENT"), "a@example.com");
	CHECK_STR(env_get(env, "RECIPIENTS"), "a@example.com,b@example.com");
	CHECK_STR(env_get(env, "QUEUE_ID"), "0ABCDEFGHIJKLMNO");
	CHECK_STR(env_get(env, "CLIENT_IP"), "192.0.2.7");
	CHECK_STR(env_get(env, "HELO"), "client.example");
	CHECK_STR(env_get(env, "PROTOCOL"), "ESMTP");
	CHECK_STR(env_get(env, "ROUTE"), "r1");
	CHECK_STR(env_get(env, "MXGATE_VAR_QUEUE"), "support");
	CHECK_STR(env_get(env, "MXGATE_VAR_TICKET_2"), "42");
	CHECK_STR(env_get(env, "MXGATE_VAR_EVIL"), "x");
	CHECK(env_get(env, "AUTH_USER") == NULL);
	CHECK(env_get(env, "HOME") == NULL);
	while (env[n] != NULL)
		n++;
	CHECK_INT(n, 12);
	pipe_env_free(env);
	t.job.auth_user = "alice";
	t.job.client_ip = NULL;
	env = pipe_env(&t.job, NULL);
	CHECK_STR(env_get(env, "AUTH_USER"), "alice");
	CHECK_STR(env_get(env, "CLIENT_IP"), "");
	pipe_env_free(env);
	json_free(vars);
	job_free(&t);
}

static void
test_webhook_signature(void)
{
	char sig[WEBHOOK_SIGNATURE_SIZE];

	/* python3: hmac.new(b"whsec_test", b'1700000000.{"a":1}',
	 * hashlib.sha256).hexdigest() */
	webhook_signature(sig, "whsec_test", "1700000000", "{\"a\":1}", 7);
	CHECK_STR(sig, "sha256=38877139021993b830af32feea6e18a8"
	    "da83eb2f6e49ee50bd9e4cf4ca4d3789");
	webhook_signature(sig, "whsec_test", "1700000001", "{\"a\":1}", 7);
	CHECK(strcmp(sig, "sha256=38877139021993b830af32feea6e18a8"
	    "da83eb2f6e49ee50bd9e4cf4ca4d3789") != 0);
}

static void
test_webhook_outcome(void)
{
	CHECK_INT(webhook_status_outcome(200), DELIVERY_OK);
	CHECK_INT(webhook_status_outcome(204), DELIVERY_OK);
	CHECK_INT(webhook_status_outcome(400), DELIVERY_FAIL);
	CHECK_INT(webhook_status_outcome(404), DELIVERY_FAIL);
	CHECK_INT(webhook_status_outcome(413), DELIVERY_FAIL);
	CHECK_INT(webhook_status_outcome(408), DELIVERY_DEFER);
	CHECK_INT(webhook_status_outcome(429), DELIVERY_DEFER);
	CHECK_INT(webhook_status_outcome(500), DELIVERY_DEFER);
	CHECK_INT(webhook_status_outcome(503), DELIVERY_DEFER);
	CHECK_INT(webhook_status_outcome(302), DELIVERY_DEFER);
	CHECK_INT(webhook_status_outcome(0), DELIVERY_DEFER);
}

static void
test_lmtp_address(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char err[128];

	CHECK(lmtp_parse_address("unix:/run/lmtp", &ss, &len, err,
	    sizeof(err)) == 0);
	CHECK(ss.ss_family == AF_UNIX);
	CHECK_STR(((struct sockaddr_un *)&ss)->sun_path, "/run/lmtp");
	CHECK(lmtp_parse_address("inet:127.0.0.1:24", &ss, &len, err,
	    sizeof(err)) == 0);
	CHECK(ss.ss_family == AF_INET &&
	    ntohs(((struct sockaddr_in *)&ss)->sin_port) == 24);
	CHECK(lmtp_parse_address("inet:[::1]:2424", &ss, &len, err,
	    sizeof(err)) == 0);
	CHECK(ss.ss_family == AF_INET6 &&
	    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 2424);
	CHECK(lmtp_parse_address("inet:::1:2424", &ss, &len, err,
	    sizeof(err)) == 0);
	CHECK(ss.ss_family == AF_INET6);
	CHECK(lmtp_parse_address("unix:relative", &ss, &len, err,
	    sizeof(err)) == -1);
	CHECK(lmtp_parse_address("inet:127.0.0.1", &ss, &len, err,
	    sizeof(err)) == -1);
	CHECK(lmtp_parse_address("inet:127.0.0.1:x", &ss, &len, err,
	    sizeof(err)) == -1);
	CHECK(lmtp_parse_address("tcp:127.0.0.1:24", &ss, &len, err,
	    sizeof(err)) == -1);
	CHECK(lmtp_parse_address("inet::24", &ss, &len, err, sizeof(err)) == -1);
}

static void
test_safe_name(void)
{
	char name[256];

	message_json_safe_name(name, sizeof(name), "Q1", 3, 0, "report.pdf");
	CHECK_STR(name, "Q1-3-report.pdf");
	message_json_safe_name(name, sizeof(name), "Q1", 3, 2, "report.pdf");
	CHECK_STR(name, "Q1-3.2-report.pdf");
	message_json_safe_name(name, sizeof(name), "Q1", 1, 0, "../../etc/passwd");
	CHECK_STR(name, "Q1-1-_.._etc_passwd");
	CHECK(strchr(name, '/') == NULL);
	message_json_safe_name(name, sizeof(name), "Q1", 1, 0, "..");
	CHECK_STR(name, "Q1-1-attachment");
	message_json_safe_name(name, sizeof(name), "Q1", 1, 0, NULL);
	CHECK_STR(name, "Q1-1-attachment");
	message_json_safe_name(name, sizeof(name), "Q1", 1, 0,
	    "R\xc3\xa9sum\xc3\xa9 2026.pdf");
	CHECK_STR(name, "Q1-1-R_sum__2026.pdf");
	message_json_safe_name(name, sizeof(name), "Q1", 1, 0,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.exe");
	CHECK_INT(strlen(name), 5 + 80);
}

/* ---- the JSON document ---- */

static struct json_value *
build_document(const char *attachments_dir, const char *vars_text)
{
	static const char *const rcpts[] = { "support+42@help.example.com",
	    "bob@example.com", NULL };
	struct json_value *vars = vars_text != NULL ?
	    json_parse(vars_text, strlen(vars_text), NULL, 0) : NULL;
	struct json_value *doc = NULL;
	struct test_job t;
	size_t len;
	char *msg = data_file("multipart.eml", &len), err[256];
	struct buf out;

	CHECK(msg != NULL);
	if (msg == NULL) {
		printf("# no multipart.eml: set srcdir to the source tree\n");
		json_free(vars);
		return NULL;
	}
	job_init(&t, "pipe", "{}", msg, len, rcpts);
	t.job.route = "tickets";
	buf_init(&out);
	CHECK(message_json_build(&t.job, vars, attachments_dir, &out, err,
	    sizeof(err)) == 0);
	if (out.data != NULL)
		doc = json_parse(out.data, out.len, err, sizeof(err));
	if (doc == NULL)
		printf("# document does not parse: %s\n", err);
	buf_free(&out);
	json_free(vars);
	job_free(&t);
	free(msg);
	return doc;
}

static const char *
header_value(const struct json_value *doc, const char *name)
{
	const struct json_value *h = json_get(doc, "headers");

	for (size_t i = 0; h != NULL && i < h->count; i++)
		if (strcmp(json_get_string(h->items[i], "name"), name) == 0)
			return json_get_string(h->items[i], "value");
	return NULL;
}

static void
test_json_envelope_and_headers(void)
{
	struct json_value *doc = build_document(NULL, "{\"queue\":\"support\","
	    "\"ticket\":\"42\"}");
	const struct json_value *r, *v, *h;
	long long n;

	CHECK(doc != NULL);
	if (doc == NULL)
		return;
	CHECK_STR(json_get_string(doc, "queue_id"), "0ABCDEFGHIJKLMNO");
	CHECK_STR(json_get_string(doc, "sender"), "elodie@sender.example");
	r = json_get(doc, "recipients");
	CHECK(r != NULL && r->count == 2);
	CHECK_STR(r->items[1]->string, "bob@example.com");
	CHECK_STR(json_get_string(doc, "client_ip"), "192.0.2.7");
	CHECK_STR(json_get_string(doc, "helo"), "client.example");
	CHECK(json_get_int(doc, "received_at", &n) == 0 && n == 1795766400);
	CHECK_STR(json_get_string(doc, "route"), "tickets");
	CHECK(json_get(doc, "auth_user")->type == JSON_NULL);
	v = json_get(doc, "vars");
	CHECK_STR(json_get_string(v, "queue"), "support");
	CHECK_STR(json_get_string(v, "ticket"), "42");
	/* RFC 2047: B and Q encoded words over a folded line */
	CHECK_STR(json_get_string(doc, "subject"),
	    "Rapport mensuel \xe2\x80\x94 novembre (final)");
	CHECK_STR(header_value(doc, "Subject"),
	    "Rapport mensuel \xe2\x80\x94 novembre (final)");
	CHECK_STR(json_get_string(doc, "from"),
	    "\xc3\x89lodie Dupr\xc3\xa9 <elodie@sender.example>");
	CHECK_STR(json_get_string(doc, "to"),
	    "Support <support+42@help.example.com>, bob@example.com");
	CHECK_STR(json_get_string(doc, "cc"), "carol@example.com");
	CHECK_STR(json_get_string(doc, "message_id"), "report-42@sender.example");
	CHECK_STR(json_get_string(doc, "date"), "Fri, 27 Nov 2026 08:00:00 +0100");
	/* every header in order, the top Content-Type included */
	h = json_get(doc, "headers");
	CHECK(h != NULL && h->count == 9);
	if (h != NULL && h->count == 9) {
		CHECK_STR(json_get_string(h->items[0], "name"), "Received");
		CHECK_STR(json_get_string(h->items[8], "name"), "Content-Type");
	}
	json_free(doc);
}

static void
test_json_bodies(void)
{
	struct json_value *doc = build_document(NULL, NULL);

	CHECK(doc != NULL);
	if (doc == NULL)
		return;
	/* quoted-printable, soft line break, UTF-8, LF line ends */
	CHECK_STR(json_get_string(doc, "text"),
	    "Bonjour \xc3\x89lodie,\nthe report is attached; the total is "
	    "100 \xe2\x82\xac \xe2\x80\x94 see below.\nA long line that goes on "
	    "and on and on and on and on and on and on and on and end.");
	/* base64 */
	CHECK_STR(json_get_string(doc, "html"),
	    "<html><body><p>Bonjour <b>\xc3\x89lodie</b>,</p><p>the total is "
	    "100 \xe2\x82\xac.</p></body></html>\n");
	CHECK(json_get(json_get(doc, "vars"), "x") == NULL);
	json_free(doc);
}

static void
check_attachment_bytes(const struct json_value *a, const char *datafile,
    bool in_file)
{
	size_t want_len, got_len = 0;
	char *want = data_file(datafile, &want_len);
	char *got = NULL;
	long long size;

	CHECK(json_get_int(a, "size", &size) == 0 && (size_t)size == want_len);
	if (in_file) {
		CHECK(json_get(a, "content_base64") == NULL);
		got = read_file(json_get_string(a, "path"), &got_len);
	} else {
		const char *b64 = json_get_string(a, "content_base64");

		CHECK(json_get(a, "path") == NULL);
		if (b64 != NULL)
			got = (char *)g_base64_decode(b64, &got_len);
	}
	CHECK(got != NULL && want != NULL && got_len == want_len &&
	    memcmp(got, want, want_len) == 0);
	if (in_file)
		free(got);
	else
		g_free(got);
	free(want);
}

static void
test_json_attachments(void)
{
	struct json_value *doc = build_document(NULL, NULL);
	const struct json_value *att, *pdf, *png;

	CHECK(doc != NULL);
	if (doc == NULL)
		return;
	att = json_get(doc, "attachments");
	CHECK(att != NULL && att->count == 2);
	if (att == NULL || att->count != 2) {
		json_free(doc);
		return;
	}
	pdf = att->items[0];
	png = att->items[1];
	/* RFC 2047 in a quoted parameter; RFC 2231 with a charset */
	CHECK_STR(json_get_string(pdf, "filename"), "R\xc3\xa9sum\xc3\xa9 2026.pdf");
	CHECK_STR(json_get_string(pdf, "extension"), "pdf");
	CHECK_STR(json_get_string(pdf, "content_type"), "application/pdf");
	check_attachment_bytes(pdf, "multipart.pdf", false);
	CHECK_STR(json_get_string(png, "filename"), "\xc3\xa9t\xc3\xa9 ../../pic.PNG");
	CHECK_STR(json_get_string(png, "extension"), "png");
	CHECK_STR(json_get_string(png, "content_type"), "image/png");
	check_attachment_bytes(png, "multipart.png", false);
	json_free(doc);
}

static void
test_json_attachments_dir(void)
{
	char dir[128], want[256];
	struct json_value *doc;
	const struct json_value *att;

	snprintf(dir, sizeof(dir), "%s/attachments", tmpdir);
	CHECK(mkdir(dir, 0700) == 0);
	for (int round = 0; round < 2; round++) {
		doc = build_document(dir, NULL);
		att = json_get(doc, "attachments");
		CHECK(att != NULL && att->count == 2);
		if (att == NULL || att->count != 2) {
			json_free(doc);
			return;
		}
		/* the same message again: new names, nothing overwritten */
		snprintf(want, sizeof(want), round == 0 ?
		    "%s/0ABCDEFGHIJKLMNO-1-R_sum__2026.pdf" :
		    "%s/0ABCDEFGHIJKLMNO-1.1-R_sum__2026.pdf", dir);
		CHECK_STR(json_get_string(att->items[0], "path"), want);
		snprintf(want, sizeof(want), round == 0 ?
		    "%s/0ABCDEFGHIJKLMNO-2-_t__.._.._pic.PNG" :
		    "%s/0ABCDEFGHIJKLMNO-2.1-_t__.._.._pic.PNG", dir);
		CHECK_STR(json_get_string(att->items[1], "path"), want);
		check_attachment_bytes(att->items[0], "multipart.pdf", true);
		check_attachment_bytes(att->items[1], "multipart.png", true);
		json_free(doc);
	}
	CHECK_INT(count_files(dir), 4);
}

static void
test_json_odd_messages(void)
{
	static const char *const msgs[] = {
		"",
		"no headers at all, just text\r\n",
		"Subject: =?utf-8?q?unterminated\r\nContent-Type: text/plain; "
		    "charset=x-bogus-42\r\n\r\ncaf\xe9\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
		    "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n"
		    "inner body\r\n--b--\r\n",
		/* an empty body part without a charset (found by fuzzing) */
		"Subject: empty\r\n\r\n",
	};

	for (size_t i = 0; i < ARRAY_LEN(msgs); i++) {
		struct test_job t;
		struct buf out;
		char err[256];
		struct json_value *doc;

		job_init(&t, "pipe", "{}", msgs[i], strlen(msgs[i]), one_rcpt);
		buf_init(&out);
		CHECK(message_json_build(&t.job, NULL, NULL, &out, err,
		    sizeof(err)) == 0);
		doc = out.data != NULL ? json_parse(out.data, out.len, err,
		    sizeof(err)) : NULL;
		CHECK(doc != NULL);
		if (i == 2 && doc != NULL)
			CHECK_STR(json_get_string(doc, "text"), "caf\xef\xbf\xbd\n");
		if (i == 4 && doc != NULL)
			CHECK_STR(json_get_string(doc, "text"), "");
		if (i == 3 && doc != NULL) {
			const struct json_value *a = json_get(doc, "attachments");

			CHECK(a != NULL && a->count == 1);
			if (a != NULL && a->count == 1)
				CHECK_STR(json_get_string(a->items[0],
				    "content_type"), "message/rfc822");
		}
		json_free(doc);
		buf_free(&out);
		job_free(&t);
	}
}

/* ---- maildir ---- */

static void
test_maildir_delivery(void)
{
	static const char *const rcpts[] = { "bob@example.com",
	    "carol@example.com", NULL };
	char params[256], dir[128], sub[160];
	struct test_job t;
	char *path, *got;

	snprintf(dir, sizeof(dir), "%s/mail/example.com/bob", tmpdir);
	snprintf(params, sizeof(params), "{\"path\":\"%s/\",\"vars\":{}}", dir);
	job_init(&t, "maildir", params, simple_msg, strlen(simple_msg), rcpts);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	CHECK_INT(t.rcpts[1].status, DELIVERY_OK);
	CHECK(strncmp(t.rcpts[0].reply, "250 2.0.0 delivered to ", 23) == 0);
	snprintf(sub, sizeof(sub), "%s/", dir);
	CHECK_STR(t.job.destination, sub);
	snprintf(sub, sizeof(sub), "%s/new", dir);
	CHECK_INT(count_files(sub), 2);
	snprintf(sub, sizeof(sub), "%s/tmp", dir);
	CHECK_INT(count_files(sub), 0);
	snprintf(sub, sizeof(sub), "%s/cur", dir);
	CHECK_INT(count_files(sub), 0);
	{
		struct stat st;

		CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	}
	snprintf(sub, sizeof(sub), "%s/new", dir);
	path = first_file(sub);
	got = path != NULL ? read_file(path, NULL) : NULL;
	CHECK(got != NULL && strncmp(got, "Return-Path: <elodie@sender.example>\n"
	    "Delivered-To: ", 51) == 0);
	CHECK(got != NULL && strstr(got, "Subject: hello\n\nline one\n"
	    ".leading dot\nbare\rCR\n") != NULL);
	CHECK(got != NULL && strchr(got, '\r') == strstr(got, "\rCR"));
	free(got);
	free(path);
	job_free(&t);
}

static void
test_maildir_errors(void)
{
	char params[256], file[128];
	struct test_job t;
	int fd;

	/* a path component that is a file: bounced */
	snprintf(file, sizeof(file), "%s/plainfile", tmpdir);
	fd = open(file, O_WRONLY | O_CREAT, 0600);
	close(fd);
	snprintf(params, sizeof(params), "{\"path\":\"%s/Maildir/\"}", file);
	job_init(&t, "maildir", params, simple_msg, strlen(simple_msg),
	    one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_FAIL);
	CHECK(strncmp(t.rcpts[0].reply, "550 5.2.0 ", 10) == 0);
	job_free(&t);

	/* no path: deferred, not run */
	job_init(&t, "maildir", "{\"vars\":{}}", simple_msg, strlen(simple_msg),
	    one_rcpt);
	CHECK(handler_deliver(&t.job) == -1);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	job_free(&t);

	/* permission denied (unless we are root, who may write anywhere) */
	if (geteuid() != 0) {
		char dir[128];

		snprintf(dir, sizeof(dir), "%s/locked", tmpdir);
		mkdir(dir, 0500);
		snprintf(params, sizeof(params), "{\"path\":\"%s/bob/\"}", dir);
		job_init(&t, "maildir", params, simple_msg, strlen(simple_msg),
		    one_rcpt);
		CHECK(handler_deliver(&t.job) == 0);
		CHECK_INT(t.rcpts[0].status, DELIVERY_FAIL);
		job_free(&t);
	}
}

/* ---- pipe ---- */

static void
run_pipe(struct test_job *t, const char *script, const char *extra,
    const char *const *rcpts)
{
	struct buf p;

	buf_init(&p);
	buf_appends(&p, "{\"command\":[\"/bin/sh\",\"-c\",\"");
	json_escape(&p, script, strlen(script));
	buf_appendf(&p, "\",\"arg1\"]%s,\"vars\":{\"ticket\":\"42\"}}",
	    extra != NULL ? extra : "");
	job_init(t, "pipe", p.data, simple_msg, strlen(simple_msg),
	    rcpts != NULL ? rcpts : one_rcpt);
	CHECK(handler_deliver(&t->job) == 0);
	/* params_json is only read during the call */
	buf_free(&p);
	t->job.params_json = NULL;
}

static void
test_pipe_delivered(void)
{
	static const char *const rcpts[] = { "a@example.com", "b@example.com",
	    NULL };
	char script[512], out[128], envf[128];
	struct test_job t;
	char *got;

	snprintf(out, sizeof(out), "%s/pipe.out", tmpdir);
	snprintf(envf, sizeof(envf), "%s/pipe.env", tmpdir);
	/* sh -c SCRIPT arg1: the argument is $0 */
	snprintf(script, sizeof(script), "cat > %s; echo \"$0 $(pwd) "
	    "$RECIPIENT $RECIPIENTS $MXGATE_VAR_TICKET $QUEUE_ID\" > %s; "
	    "ls /proc/self/fd > %s.fds", out, envf, envf);
	run_pipe(&t, script, NULL, rcpts);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	CHECK_INT(t.rcpts[1].status, DELIVERY_OK);
	CHECK_STR(t.rcpts[0].reply, "250 2.0.0 delivered to command /bin/sh");
	CHECK_STR(t.job.destination, "/bin/sh");
	got = read_file(out, NULL);
	CHECK_STR(got, "Received: from client.example\nSubject: hello\n\n"
	    "line one\n.leading dot\nbare\rCR\n");
	free(got);
	got = read_file(envf, NULL);
	CHECK_STR(got, "arg1 / a@example.com a@example.com,b@example.com "
	    "42 0ABCDEFGHIJKLMNO\n");
	free(got);
	/* only 0, 1, 2 (and ls's own directory descriptor) are open */
	snprintf(envf, sizeof(envf), "%s/pipe.env.fds", tmpdir);
	got = read_file(envf, NULL);
	CHECK(got != NULL && strcmp(got, "0\n1\n2\n3\n") == 0);
	free(got);
	job_free(&t);
}

static void
test_pipe_tempfail(void)
{
	struct test_job t;

	run_pipe(&t, "cat >/dev/null; echo 'mailbox locked' >&2; exit 75",
	    NULL, NULL);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK_STR(t.rcpts[0].reply, "451 4.3.0 command exited with status 75 "
	    "(EX_TEMPFAIL): mailbox locked");
	job_free(&t);
}

static void
test_pipe_failure(void)
{
	struct test_job t;

	/* stderr in the reply, newlines as spaces; stdin not read at all */
	run_pipe(&t, "echo 'no such ticket' >&2; echo 'line 2' >&2; exit 1",
	    NULL, NULL);
	CHECK_INT(t.rcpts[0].status, DELIVERY_FAIL);
	CHECK_STR(t.rcpts[0].reply, "554 5.3.0 command exited with status 1: "
	    "no such ticket line 2");
	job_free(&t);

	/* a long stderr is cut, the reply stays one line */
	run_pipe(&t, "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 2", NULL,
	    NULL);
	CHECK_INT(t.rcpts[0].status, DELIVERY_FAIL);
	CHECK(strncmp(t.rcpts[0].reply, "554 5.3.0 command exited with status 2: "
	    "xxxx", 44) == 0);
	CHECK(strlen(t.rcpts[0].reply) < DELIVERY_REPLY_MAX);
	job_free(&t);
}

static void
test_pipe_signal_and_exec(void)
{
	struct test_job t;

	run_pipe(&t, "kill -SEGV $$", NULL, NULL);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK(strstr(t.rcpts[0].reply, "killed by signal 11") != NULL);
	job_free(&t);

	job_init(&t, "pipe", "{\"command\":[\"/nonexistent/prog\"]}", simple_msg,
	    strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK_STR(t.rcpts[0].reply, "451 4.3.0 cannot execute /nonexistent/prog: "
	    "No such file or directory");
	job_free(&t);

	job_init(&t, "pipe", "{\"command\":[\"relative/prog\"]}", simple_msg,
	    strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == -1);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	job_free(&t);
}

/* Dead or a zombie (its parent died; who reaps it is not ours to know),
 * within two seconds. */
static bool
process_gone(pid_t pid)
{
	for (int i = 0; i < 40; i++) {
		char path[64], *stat;
		bool zombie;

		if (kill(pid, 0) == -1 && errno == ESRCH)
			return true;
		snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
		stat = read_file(path, NULL);
		zombie = stat != NULL && strstr(stat, ") Z ") != NULL;
		free(stat);
		if (zombie)
			return true;
		usleep(50000);
	}
	return false;
}

static void
test_pipe_timeout(void)
{
	char script[256], pidfile[128];
	struct test_job t;
	uint64_t start = monotonic_ms(), took;
	char *pid;

	/* the background child dies with the group */
	snprintf(pidfile, sizeof(pidfile), "%s/bg.pid", tmpdir);
	snprintf(script, sizeof(script), "sleep 60 & echo $! > %s; "
	    "echo started >&2; sleep 60", pidfile);
	run_pipe(&t, script, ",\"timeout\":1", NULL);
	took = monotonic_ms() - start;
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK_STR(t.rcpts[0].reply, "451 4.4.7 command /bin/sh timed out after 1 "
	    "seconds: started");
	CHECK(took >= 1000 && took < 4000);
	pid = read_file(pidfile, NULL);
	CHECK(pid != NULL && process_gone(atoi(pid)));
	free(pid);
	job_free(&t);
}

static void
test_pipe_timeout_sigkill(void)
{
	struct test_job t;
	uint64_t start = monotonic_ms(), took;

	run_pipe(&t, "trap '' TERM; while :; do sleep 1; done", ",\"timeout\":1",
	    NULL);
	took = monotonic_ms() - start;
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK(strstr(t.rcpts[0].reply, "timed out") != NULL);
	CHECK(took >= 5000 && took < 9000);
	job_free(&t);
}

static void
test_pipe_json(void)
{
	char script[256], out[128];
	struct test_job t;
	struct json_value *doc;
	char *got;
	size_t len;

	snprintf(out, sizeof(out), "%s/pipe.json", tmpdir);
	snprintf(script, sizeof(script), "cat > %s", out);
	run_pipe(&t, script, ",\"format\":\"json\"", NULL);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	got = read_file(out, &len);
	doc = got != NULL ? json_parse(got, len, NULL, 0) : NULL;
	CHECK(doc != NULL);
	CHECK_STR(json_get_string(doc, "subject"), "hello");
	CHECK_STR(json_get_string(doc, "text"), "line one\n.leading dot\nbare\rCR\n");
	CHECK_STR(json_get_string(json_get(doc, "vars"), "ticket"), "42");
	json_free(doc);
	free(got);
	job_free(&t);
}

/* ---- lmtp ---- */

/* A scripted LMTP server for one connection: RCPT replies by the
 * recipient's first letter (a: 250 then 250, b: 250 then 452, c: 550 at
 * RCPT, d: 250 then 554); the DATA it got is saved to datafile. */
static void
lmtp_server(int lfd, const char *datafile)
{
	int fd = accept(lfd, NULL, NULL);
	FILE *in, *out, *save;
	char line[1100], order[16];
	size_t n = 0;

	if (fd == -1)
		_exit(1);
	in = fdopen(fd, "r");
	out = fdopen(dup(fd), "w");
	setvbuf(out, NULL, _IONBF, 0);
	fprintf(out, "220 lmtp.test LMTP ready\r\n");
	while (fgets(line, sizeof(line), in) != NULL) {
		if (strncmp(line, "LHLO ", 5) == 0)
			fprintf(out, "250-lmtp.test\r\n250-PIPELINING\r\n"
			    "250 8BITMIME\r\n");
		else if (strncmp(line, "MAIL FROM:", 10) == 0)
			fprintf(out, "250 2.1.0 ok\r\n");
		else if (strncmp(line, "RCPT TO:<", 9) == 0) {
			if (line[9] == 'c')
				fprintf(out, "550 5.1.1 <%c> no such user\r\n", line[9]);
			else {
				order[n++] = line[9];
				fprintf(out, "250 2.1.5 ok\r\n");
			}
		} else if (strncmp(line, "DATA", 4) == 0) {
			fprintf(out, "354 go ahead\r\n");
			save = fopen(datafile, "w");
			while (fgets(line, sizeof(line), in) != NULL &&
			    strcmp(line, ".\r\n") != 0)
				fputs(line, save);
			fclose(save);
			for (size_t i = 0; i < n; i++) {
				if (order[i] == 'b')
					fprintf(out, "452-4.2.2 <b> mailbox full\r\n"
					    "452 4.2.2 try later\r\n");
				else if (order[i] == 'd')
					fprintf(out, "554 5.6.0 <d> rejected\r\n");
				else
					fprintf(out, "250 2.0.0 <%c> delivered\r\n",
					    order[i]);
			}
		} else if (strncmp(line, "QUIT", 4) == 0) {
			fprintf(out, "221 bye\r\n");
			break;
		} else
			fprintf(out, "500 what?\r\n");
	}
	_exit(0);
}

static void
test_lmtp_delivery(void)
{
	static const char *const rcpts[] = { "a@example.com", "b@example.com",
	    "c@example.com", "d@example.com", NULL };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char params[256], datafile[128];
	struct test_job t;
	int lfd, status;
	pid_t pid;
	char *got;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/lmtp.sock", tmpdir);
	snprintf(datafile, sizeof(datafile), "%s/lmtp.data", tmpdir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	CHECK(listen(lfd, 1) == 0);
	if ((pid = fork()) == 0)
		lmtp_server(lfd, datafile);
	close(lfd);
	snprintf(params, sizeof(params), "{\"address\":\"unix:%s\","
	    "\"timeout\":5}", sun.sun_path);
	job_init(&t, "lmtp", params, simple_msg, strlen(simple_msg), rcpts);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	CHECK_STR(t.rcpts[0].reply, "250 2.0.0 <a> delivered");
	CHECK_INT(t.rcpts[1].status, DELIVERY_DEFER);
	CHECK_STR(t.rcpts[1].reply, "452-4.2.2 <b> mailbox full / 4.2.2 try later");
	CHECK_INT(t.rcpts[2].status, DELIVERY_FAIL);
	CHECK_STR(t.rcpts[2].reply, "550 5.1.1 <c> no such user");
	CHECK_INT(t.rcpts[3].status, DELIVERY_FAIL);
	CHECK_STR(t.rcpts[3].reply, "554 5.6.0 <d> rejected");
	CHECK(strncmp(t.job.destination, "unix:", 5) == 0);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	got = read_file(datafile, NULL);
	/* dot-stuffed on the wire */
	CHECK_STR(got, "Received: from client.example\r\nSubject: hello\r\n\r\n"
	    "line one\r\n..leading dot\r\nbare\rCR\r\n");
	free(got);
	job_free(&t);
}

static void
test_lmtp_unreachable(void)
{
	char params[256];
	struct test_job t;

	snprintf(params, sizeof(params), "{\"address\":\"unix:%s/nothing.sock\"}",
	    tmpdir);
	job_init(&t, "lmtp", params, simple_msg, strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK(strncmp(t.rcpts[0].reply, "451 4.4.1 cannot connect to unix:", 33) == 0);
	job_free(&t);
}

/* A server that accepts and never speaks: the greeting times out. */
static void
test_lmtp_timeout(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char params[256];
	struct test_job t;
	uint64_t start;
	int lfd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/mute.sock", tmpdir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	CHECK(listen(lfd, 1) == 0);
	snprintf(params, sizeof(params), "{\"address\":\"unix:%s\",\"timeout\":1}",
	    sun.sun_path);
	job_init(&t, "lmtp", params, simple_msg, strlen(simple_msg), one_rcpt);
	start = monotonic_ms();
	CHECK(handler_deliver(&t.job) == 0);
	CHECK(monotonic_ms() - start < 3000);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK(strstr(t.rcpts[0].reply, "timed out waiting for a reply") != NULL);
	close(lfd);
	job_free(&t);
}

/* ---- dispatch, discard, debug ---- */

static void
test_dispatch(void)
{
	struct test_job t;

	job_init(&t, "discard", "{\"vars\":{}}", simple_msg, strlen(simple_msg),
	    one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	CHECK_STR(t.rcpts[0].reply, "250 2.0.0 discarded");
	job_free(&t);

	job_init(&t, "debug", "{}", simple_msg, strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_OK);
	CHECK_STR(t.job.destination, "log");
	job_free(&t);

	job_init(&t, "teleport", "{}", simple_msg, strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == -1);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	CHECK_STR(t.rcpts[0].reply, "451 4.3.5 unknown action teleport");
	job_free(&t);

	job_init(&t, "discard", "{\"vars\":", simple_msg, strlen(simple_msg),
	    one_rcpt);
	CHECK(handler_deliver(&t.job) == -1);
	CHECK_INT(t.rcpts[0].status, DELIVERY_DEFER);
	job_free(&t);

	/* recipients already decided are left alone */
	job_init(&t, "discard", "{}", simple_msg, strlen(simple_msg), one_rcpt);
	t.rcpts[0].status = DELIVERY_FAIL;
	CHECK(handler_deliver(&t.job) == 0);
	CHECK_INT(t.rcpts[0].status, DELIVERY_FAIL);
	job_free(&t);
}

static void
test_debug_output(void)
{
	char logf[128];
	struct test_job t;
	int saved = dup(2), fd;
	char *got;

	snprintf(logf, sizeof(logf), "%s/debug.log", tmpdir);
	fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	job_init(&t, "debug", "{}", simple_msg, strlen(simple_msg), one_rcpt);
	CHECK(handler_deliver(&t.job) == 0);
	dup2(saved, 2);
	close(saved);
	got = read_file(logf, NULL);
	CHECK(got != NULL);
	if (got != NULL) {
		CHECK(strstr(got, "id=0ABCDEFGHIJKLMNO debug ---- message "
		    "0ABCDEFGHIJKLMNO ----") != NULL);
		CHECK(strstr(got, "id=0ABCDEFGHIJKLMNO debug from=<elodie@sender."
		    "example> to=<bob@example.com> route=r1") != NULL);
		CHECK(strstr(got, "id=0ABCDEFGHIJKLMNO debug | Subject: hello\n")
		    != NULL);
		CHECK(strstr(got, "debug | .leading dot\n") != NULL);
		CHECK(strstr(got, "debug | bare?CR\n") != NULL);
		CHECK(strstr(got, "debug ---- end of message") != NULL);
	}
	free(got);
	job_free(&t);
}

int
main(void)
{
	if ((datadir = getenv("MXGATE_SRCDIR")) == NULL &&
	    (datadir = getenv("srcdir")) == NULL)
		datadir = ".";
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_handlers.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	/* as in a delivery child (delivery.h) */
	signal(SIGPIPE, SIG_IGN);

	RUN(test_content_read_and_mapped);
	RUN(test_maildir_name);
	RUN(test_crlf_and_header);
	RUN(test_pipe_env);
	RUN(test_webhook_signature);
	RUN(test_webhook_outcome);
	RUN(test_lmtp_address);
	RUN(test_safe_name);
	RUN(test_json_envelope_and_headers);
	RUN(test_json_bodies);
	RUN(test_json_attachments);
	RUN(test_json_attachments_dir);
	RUN(test_json_odd_messages);
	RUN(test_maildir_delivery);
	RUN(test_maildir_errors);
	RUN(test_pipe_delivered);
	RUN(test_pipe_tempfail);
	RUN(test_pipe_failure);
	RUN(test_pipe_signal_and_exec);
	RUN(test_pipe_timeout);
	RUN(test_pipe_timeout_sigkill);
	RUN(test_pipe_json);
	RUN(test_lmtp_delivery);
	RUN(test_lmtp_unreachable);
	RUN(test_lmtp_timeout);
	RUN(test_dispatch);
	RUN(test_debug_output);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", tmpdir);
	}
	return unit_done();
}
