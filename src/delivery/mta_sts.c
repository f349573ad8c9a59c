/*
 * mta_sts — see mta_sts.h.
 */
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "common/log.h"
#include "delivery/mta_sts.h"
#include "common/dns_answer.h"

const char *const sts_mode_names[] = { "none", "testing", "enforce", NULL };

/* ---- pure parts ---- */

static const char *
skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

int
sts_parse_txt(const char *txt, char *id, size_t idsize)
{
	const char *p = txt, *end;
	size_t n;
	bool have_id = false;

	/* RFC 8461 3.1: "v=STSv1" first, then "; "-separated fields. */
	if (strncmp(p, "v=STSv1", 7) != 0 || (p[7] != ';' && p[7] != '\0' &&
	    p[7] != ' '))
		return -1;
	p += 7;
	while (*p != '\0') {
		p = skip_ws(p);
		if (*p == ';') {
			p++;
			continue;
		}
		if (*p == '\0')
			break;
		end = p + strcspn(p, ";");
		if (strncmp(p, "id=", 3) == 0) {
			n = (size_t)(end - p - 3);
			while (n > 0 && (p[3 + n - 1] == ' ' || p[3 + n - 1] == '\t'))
				n--;
			if (n == 0 || n > 32 || n >= idsize)
				return -1;
			for (size_t i = 0; i < n; i++)
				if (!isalnum((unsigned char)p[3 + i]))
					return -1;
			memcpy(id, p + 3, n);
			id[n] = '\0';
			have_id = true;
		}
		p = end;
	}
	return have_id ? 0 : -1;
}

static bool
host_pattern_valid(const char *s)
{
	if (strncmp(s, "*.", 2) == 0)
		s += 2;
	if (*s == '\0' || strlen(s) > 253)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' &&
		    *s != '_')
			return false;
	return true;
}

int
sts_parse_policy(const char *text, size_t len, struct sts_policy *p,
    char *why, size_t whysize)
{
	char line[1024], *key, *val, *colon, *e;
	const char *s = text, *end = text + len, *nl;
	bool version = false, mode = false, max_age = false;
	size_t n;
	long long age;

	p->nmx = 0;
	p->mode = STS_MODE_NONE;
	p->max_age = 0;
	while (s < end) {
		nl = memchr(s, '\n', (size_t)(end - s));
		n = (size_t)((nl != NULL ? nl : end) - s);
		if (n >= sizeof(line)) {
			snprintf(why, whysize, "policy line too long");
			return -1;
		}
		memcpy(line, s, n);
		line[n] = '\0';
		s += n + (nl != NULL);
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		if (n == 0)
			continue;
		if ((colon = strchr(line, ':')) == NULL) {
			snprintf(why, whysize, "policy line without a colon: "
			    "%.60s", line);
			return -1;
		}
		*colon = '\0';
		key = line;
		val = (char *)skip_ws(colon + 1);
		for (e = val + strlen(val); e > val && (e[-1] == ' ' ||
		    e[-1] == '\t'); e--)
			;
		*e = '\0';
		if (strcmp(key, "version") == 0) {
			if (strcmp(val, "STSv1") != 0) {
				snprintf(why, whysize, "policy version %.20s,"
				    " not STSv1", val);
				return -1;
			}
			version = true;
		} else if (strcmp(key, "mode") == 0) {
			for (p->mode = 0; sts_mode_names[p->mode] != NULL &&
			    strcmp(val, sts_mode_names[p->mode]) != 0;
			    p->mode++)
				;
			if (sts_mode_names[p->mode] == NULL) {
				snprintf(why, whysize, "policy mode \"%.20s\"",
				    val);
				return -1;
			}
			mode = true;
		} else if (strcmp(key, "max_age") == 0) {
			errno = 0;
			age = strtoll(val, &e, 10);
			if (errno != 0 || e == val || *e != '\0' || age < 0 ||
			    age > STS_MAX_AGE_MAX || !isdigit((unsigned char)*val)) {
				snprintf(why, whysize, "policy max_age \"%.20s\"",
				    val);
				return -1;
			}
			p->max_age = age;
			max_age = true;
		} else if (strcmp(key, "mx") == 0) {
			if (!host_pattern_valid(val) || p->nmx == STS_MAX_MX) {
				snprintf(why, whysize, "policy mx \"%.60s\"",
				    val);
				return -1;
			}
			for (e = val; *e != '\0'; e++)
				*e = (char)tolower((unsigned char)*e);
			snprintf(p->mx[p->nmx++], sizeof(p->mx[0]), "%s", val);
		}
		/* Other keys: ignored (RFC 8461 3.2, extensions). */
	}
	if (!version || !mode || !max_age) {
		snprintf(why, whysize, "policy without %s", !version ?
		    "version" : !mode ? "mode" : "max_age");
		return -1;
	}
	if (p->nmx == 0 && p->mode != STS_MODE_NONE) {
		snprintf(why, whysize, "policy without mx");
		return -1;
	}
	return 0;
}

bool
sts_mx_match(const struct sts_policy *p, const char *host)
{
	char h[256];
	const char *dot;
	size_t n = strlen(host), i;

	if (n == 0 || n >= sizeof(h))
		return false;
	memcpy(h, host, n + 1);
	if (h[n - 1] == '.')
		h[--n] = '\0';
	for (i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];

		if (strncmp(pat, "*.", 2) == 0) {
			/* One label only: "*.example.com" covers
			 * mx.example.com, not a.b.example.com. */
			dot = strchr(h, '.');
			if (dot != NULL && dot != h &&
			    strcasecmp(dot + 1, pat + 2) == 0)
				return true;
		} else if (strcasecmp(h, pat) == 0) {
			return true;
		}
	}
	return false;
}

void
sts_policy_format(const struct sts_policy *p, struct buf *out)
{
	buf_appendf(out, "%s %s %lld %lld", p->id, sts_mode_names[p->mode],
	    (long long)p->max_age, (long long)p->fetched_at);
	for (size_t i = 0; i < p->nmx; i++)
		buf_appendf(out, " %s", p->mx[i]);
}

int
sts_policy_scan(const char *line, struct sts_policy *p)
{
	char mode[16], word[256];
	long long age, at;
	int n, m;

	memset(p, 0, sizeof(*p));
	if (line == NULL || sscanf(line, "%32s %15s %lld %lld%n", p->id, mode,
	    &age, &at, &n) != 4)
		return -1;
	for (p->mode = 0; sts_mode_names[p->mode] != NULL &&
	    strcmp(mode, sts_mode_names[p->mode]) != 0; p->mode++)
		;
	if (sts_mode_names[p->mode] == NULL)
		return -1;
	p->max_age = age;
	p->fetched_at = at;
	line += n;
	while (p->nmx < STS_MAX_MX && sscanf(line, "%255s%n", word, &m) == 1) {
		snprintf(p->mx[p->nmx++], sizeof(p->mx[0]), "%s", word);
		line += m;
	}
	return 0;
}

void
sts_policy_lines(const struct sts_policy *p, struct buf *out)
{
	buf_appendf(out, "version: STSv1\nmode: %s\n",
	    sts_mode_names[p->mode]);
	for (size_t i = 0; i < p->nmx; i++)
		buf_appendf(out, "mx: %s\n", p->mx[i]);
	buf_appendf(out, "max_age: %lld", (long long)p->max_age);
}

/* ---- the TXT record ---- */

/* The id of the one "v=STSv1" TXT record of _mta-sts.domain: 1 found,
 * 0 none (or several: RFC 8461 3.1 says that is none), -1 DNS failed. */
static int
txt_id(const char *domain, char *id, size_t idsize)
{
	unsigned char answer[8192];
	const unsigned char *r, *rend;
	char name[NS_MAXDNAME], txt[2048];
	struct dns_answer a;
	struct dns_rr rr;
	int len, rc, found = 0;
	size_t tl;

	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	len = dns_answer_len(res_query(name, ns_c_in, ns_t_txt, answer,
	    sizeof(answer)), sizeof(answer));
	if (len < 0)
		return h_errno == HOST_NOT_FOUND || h_errno == NO_DATA ? 0 : -1;
	if (dns_answer_open(&a, answer, len) == -1)
		return -1;
	while ((rc = dns_answer_next(&a, &rr)) == 1) {
		if (rr.type != ns_t_txt)
			continue;
		/* The strings of one record, joined. */
		tl = 0;
		rend = rr.rdata + rr.rdlen;
		for (r = rr.rdata; r < rend && r + 1 + *r <= rend;
		    r += 1 + *r) {
			if (tl + *r >= sizeof(txt))
				break;
			memcpy(txt + tl, r + 1, *r);
			tl += *r;
		}
		txt[tl] = '\0';
		if (strncmp(txt, "v=STSv1", 7) == 0) {
			if (++found > 1 || sts_parse_txt(txt, id, idsize) < 0)
				return 0;
		}
	}
	if (rc == -1)
		return -1;
	return found == 1 ? 1 : 0;
}

/* ---- the fetch ---- */

struct body {
	char    *data;
	size_t   len;
	bool     too_big;
};

static size_t
keep_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;

	if (b->len + n > STS_POLICY_MAX) {
		b->too_big = true;
		return 0;
	}
	b->data = xrealloc(b->data, b->len + n + 1);
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static int
fetch(const struct mxconf *conf, const char *domain, struct sts_policy *p,
    const char **failure, char *why, size_t whysize)
{
	char url[512], errbuf[CURL_ERROR_SIZE] = "";
	struct body b = { NULL, 0, false };
	const char *ctype = NULL;
	long status = 0;
	CURLcode rc;
	CURL *h;
	int r = -1;

	snprintf(url, sizeof(url), "https://mta-sts.%s/.well-known/mta-sts.txt",
	    domain);
	if ((h = curl_easy_init()) == NULL) {
		snprintf(why, whysize, "cannot start libcurl");
		*failure = "sts-policy-fetch-error";
		return -1;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	/* RFC 8461 3.3: no redirects; the certificate verified. */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)STS_FETCH_TIMEOUT);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (conf->relay_tls_ca != NULL)
		curl_easy_setopt(h, CURLOPT_CAINFO, conf->relay_tls_ca);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mxgate");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
	}
	if (rc == CURLE_PEER_FAILED_VERIFICATION ||
	    rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CONNECT_ERROR) {
		snprintf(why, whysize, "%s: certificate: %s", url,
		    errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
		*failure = "sts-webpki-invalid";
	} else if (rc != CURLE_OK) {
		snprintf(why, whysize, "%s: %s", url, b.too_big ?
		    "larger than 64 KB" : errbuf[0] != '\0' ? errbuf :
		    curl_easy_strerror(rc));
		*failure = "sts-policy-fetch-error";
	} else if (status != 200) {
		snprintf(why, whysize, "%s: HTTP status %ld", url, status);
		*failure = "sts-policy-fetch-error";
	} else if (ctype == NULL || strncasecmp(ctype, "text/plain", 10) != 0) {
		snprintf(why, whysize, "%s: media type %s, not text/plain",
		    url, ctype != NULL ? ctype : "missing");
		*failure = "sts-policy-invalid";
	} else if (sts_parse_policy(b.data != NULL ? b.data : "", b.len, p,
	    why, whysize) < 0) {
		*failure = "sts-policy-invalid";
	} else {
		r = 0;
	}
	curl_easy_cleanup(h);
	free(b.data);
	return r;
}

enum sts_result
sts_discover(const struct mxconf *conf, const char *domain,
    const char *cached, struct sts_policy *out, bool *fresh,
    const char **failure, char *why, size_t whysize)
{
	struct sts_policy old;
	char id[33];
	bool have_old, valid_old;
	int rec;

	*fresh = false;
	*failure = NULL;
	have_old = sts_policy_scan(cached, &old) == 0;
	valid_old = have_old && old.fetched_at + old.max_age > (int64_t)time(NULL);
	rec = txt_id(domain, id, sizeof(id));
	if (valid_old && (rec != 1 || strcmp(id, old.id) == 0)) {
		/* Same id, or no record to say otherwise: the cache. */
		*out = old;
		return STS_FOUND;
	}
	if (rec != 1)
		return STS_ABSENT;
	memset(out, 0, sizeof(*out));
	if (fetch(conf, domain, out, failure, why, whysize) < 0) {
		if (valid_old) {
			*out = old;
			return STS_FOUND;
		}
		return STS_ABSENT;
	}
	snprintf(out->id, sizeof(out->id), "%s", id);
	out->fetched_at = (int64_t)time(NULL);
	*fresh = true;
	return STS_FOUND;
}
