/*
 * handler_webhook — an HTTP(S) POST of the message to an application: a
 * self-hosted "inbound parse".
 *
 * The body is the JSON document of message_json.h (format "json", the
 * default; Content-Type: application/json) or the message as received
 * (format "raw"; Content-Type: message/rfc822, CRLF line ends).  One POST
 * per job: the document lists every recipient of the job.
 *
 * Signature.  With the route's `secret` (read from the configuration by
 * the route's name: secrets are never written to the queue), the request
 * carries
 *     X-Mxgate-Timestamp: <unix seconds>
 *     X-Mxgate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 * An application recomputes the HMAC over the timestamp header's value, a
 * dot and the raw request body, compares in constant time, and rejects
 * timestamps too far from its clock (replays).  X-Mxgate-Queue-Id names
 * the message; a redelivery after a deferral carries the same id, so an
 * application can drop duplicates.
 *
 * TLS.  Certificates are verified against the system's CAs, or the
 * route's `tls_ca` file; `tls_verify = false` turns verification off (for
 * tests with throwaway certificates only).  Only http and https URLs are
 * used and redirects are not followed.
 *
 * Outcomes: 2xx delivered; 4xx other than 408 and 429 bounced (the
 * application refused this message); 408, 429, 5xx, other codes,
 * timeouts (params "timeout", default WEBHOOK_TIMEOUT) and connection or
 * TLS errors deferred, retried from the queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/config.h"
#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/log.h"
#include "delivery/message_json.h"
#include "common/util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define WEBHOOK_CONNECT_MAX  30      /* seconds, at most, to connect */
#define WEBHOOK_ANSWER_MAX   200     /* bytes of the answer kept for the reply */

struct answer {
	char   text[WEBHOOK_ANSWER_MAX + 1];
	size_t len;
};

/* The route's settings that stay out of the queue. */
struct webhook_route {
	const char *secret;
	const char *tls_ca;
	bool        tls_verify;
	const char *attachments_dir;
};

void
webhook_signature(char out[WEBHOOK_SIGNATURE_SIZE], const char *secret,
    const char *timestamp, const char *body, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t maclen = sizeof(mac);
	EVP_PKEY *key;
	EVP_MD_CTX *ctx;

	/* EVP_DigestSign with an HMAC key: OpenSSL 1.1.1 and 3 alike. */
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL,
	    (const unsigned char *)secret, strlen(secret));
	ctx = EVP_MD_CTX_new();
	if (key == NULL || ctx == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSignUpdate(ctx, timestamp, strlen(timestamp)) != 1 ||
	    EVP_DigestSignUpdate(ctx, ".", 1) != 1 ||
	    EVP_DigestSignUpdate(ctx, body, len) != 1 ||
	    EVP_DigestSignFinal(ctx, mac, &maclen) != 1)
		fatalx("webhook: HMAC-SHA256 failed");
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);
	memcpy(out, "sha256=", 7);
	for (size_t i = 0; i < maclen && 7 + 2 * i + 2 < WEBHOOK_SIGNATURE_SIZE;
	    i++) {
		out[7 + 2 * i] = hex[mac[i] >> 4];
		out[7 + 2 * i + 1] = hex[mac[i] & 0x0f];
	}
	out[7 + 2 * maclen] = '\0';
}

enum delivery_status
webhook_status_outcome(long http_status)
{
	if (http_status >= 200 && http_status < 300)
		return DELIVERY_OK;
	if (http_status >= 400 && http_status < 500 && http_status != 408 &&
	    http_status != 429)
		return DELIVERY_FAIL;
	return DELIVERY_DEFER;
}

static size_t
keep_answer(char *data, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t take = size * n;

	if (take > WEBHOOK_ANSWER_MAX - a->len)
		take = WEBHOOK_ANSWER_MAX - a->len;
	memcpy(a->text + a->len, data, take);
	a->len += take;
	a->text[a->len] = '\0';
	return size * n;       /* the rest is read and dropped */
}

static void
curl_once(void)
{
	static bool done;

	if (!done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			fatalx("webhook: curl_global_init failed");
		done = true;
	}
}

/* The answer's first bytes as reply text ("" when empty). */
static const char *
answer_text(struct answer *a)
{
	while (a->len > 0 && (a->text[a->len - 1] == '\n' ||
	    a->text[a->len - 1] == '\r' || a->text[a->len - 1] == ' '))
		a->text[--a->len] = '\0';
	return a->text;
}

static void
report_http(struct delivery_job *job, long status, struct answer *a)
{
	const char *text = answer_text(a), *sep = a->len > 0 ? ": " : "";

	switch (webhook_status_outcome(status)) {
	case DELIVERY_OK:
		delivery_set_pending(job, DELIVERY_OK, "250 2.0.0 webhook "
		    "answered HTTP %ld", status);
		break;
	case DELIVERY_FAIL:
		delivery_set_pending(job, DELIVERY_FAIL, "554 5.3.0 webhook "
		    "answered HTTP %ld%s%s", status, sep, text);
		break;
	default:
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 webhook "
		    "answered HTTP %ld%s%s", status, sep, text);
		break;
	}
}

static void
report_curl(struct delivery_job *job, CURLcode rc, const char *errbuf)
{
	const char *why = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);

	if (rc == CURLE_OPERATION_TIMEDOUT)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.7 webhook: %s",
		    why);
	else if (rc == CURLE_PEER_FAILED_VERIFICATION ||
	    rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_CACERT_BADFILE)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.7.5 webhook TLS: "
		    "%s", why);
	else
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.1 webhook: %s",
		    why);
}

/* Our request headers: type, queue id, timestamp and signature. */
static struct curl_slist *
request_headers(const struct delivery_job *job, const char *content_type,
    const char *body, size_t len, const char *secret)
{
	char header[256], ts[32], sig[WEBHOOK_SIGNATURE_SIZE];
	struct curl_slist *headers = NULL;

	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	snprintf(header, sizeof(header), "Content-Type: %s", content_type);
	headers = curl_slist_append(headers, header);
	snprintf(header, sizeof(header), "X-Mxgate-Queue-Id: %s", job->queue_id);
	headers = curl_slist_append(headers, header);
	snprintf(header, sizeof(header), "X-Mxgate-Timestamp: %s", ts);
	headers = curl_slist_append(headers, header);
	if (secret != NULL) {
		webhook_signature(sig, secret, ts, body, len);
		snprintf(header, sizeof(header), "X-Mxgate-Signature: %s", sig);
		headers = curl_slist_append(headers, header);
	}
	/* No "Expect: 100-continue" round trip before large bodies. */
	return curl_slist_append(headers, "Expect:");
}

/* The POST itself. */
static void
post(struct delivery_job *job, const char *url, const char *content_type,
    const char *body, size_t len, const struct webhook_route *route,
    long timeout)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers;
	struct answer answer = { .len = 0 };
	CURL *h;
	CURLcode rc;
	long status = 0;

	curl_once();
	if ((h = curl_easy_init()) == NULL)
		fatalx("webhook: curl_easy_init failed");
	headers = request_headers(job, content_type, body, len, route->secret);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mxgate/" PACKAGE_VERSION);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout <
	    WEBHOOK_CONNECT_MAX ? timeout : (long)WEBHOOK_CONNECT_MAX);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, route->tls_verify ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, route->tls_verify ? 2L : 0L);
	if (route->tls_ca != NULL)
		curl_easy_setopt(h, CURLOPT_CAINFO, route->tls_ca);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_answer);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

	rc = curl_easy_perform(h);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		report_http(job, status, &answer);
	} else
		report_curl(job, rc, errbuf);
	log_debug("id=%s webhook url=%s status=%ld curl=%d size=%zu",
	    job->queue_id, url, status, (int)rc, len);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
}

int
handler_webhook(struct delivery_job *job, const struct json_value *params)
{
	const char *url = json_get_string(params, "url");
	const char *format = json_get_string(params, "format");
	const struct route_conf *rc = handler_route_conf(job);
	struct webhook_route route = { .tls_verify = true };
	long long timeout = WEBHOOK_TIMEOUT;
	struct buf body;
	char err[512];

	if (url == NULL) {
		log_error("id=%s webhook: no \"url\" in the parameters",
		    job->queue_id);
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.5 webhook without a url");
		return -1;
	}
	strlcpy_mx(job->destination, url, sizeof(job->destination));
	if (rc == NULL) {
		log_error("id=%s webhook: route %s is not in the configuration "
		    "any more", job->queue_id, job->route);
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.5 route %s "
		    "is not in the configuration", job->route);
		return 0;
	}
	route.secret = rc->secret;
	route.tls_ca = rc->tls_ca;
	route.tls_verify = rc->tls_verify != 0;
	route.attachments_dir = handler_attachments_dir(job, params);
	if (json_get_int(params, "timeout", &timeout) == -1 || timeout <= 0)
		timeout = WEBHOOK_TIMEOUT;
	if (timeout > DELIVERY_JOB_TIMEOUT / 2)
		timeout = DELIVERY_JOB_TIMEOUT / 2;

	buf_init(&body);
	if (format != NULL && strcmp(format, "raw") == 0) {
		const char *content = delivery_content(job);

		if (content == NULL)
			return -1;
		post(job, url, "message/rfc822", content, job->content_len, &route,
		    (long)timeout);
	} else if (message_json_build(job, json_get(params, "vars"),
	    route.attachments_dir, &body, err, sizeof(err)) == -1) {
		log_error("id=%s webhook: %s", job->queue_id, err);
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 %s", err);
	} else
		post(job, url, "application/json", body.data, body.len, &route,
		    (long)timeout);
	buf_free(&body);
	return 0;
}
