/*
 * tls — see tls.h.
 *
 * One SSL_CTX per group of certificates that share their names (a
 * "site"); the first site's context is the one every connection starts
 * with, and the SNI callback moves a connection to another site's context
 * before the certificate is chosen.  All contexts get the same settings,
 * and the same session id context, so that resumption does not depend on
 * which site served the first connection.  Session tickets are encrypted
 * with keys the first context made at start; every worker inherits them,
 * so a ticket issued by one worker is good in all of them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/tls.h"
#include "common/util.h"

#define SESSION_ID_CONTEXT "mxgate"

/* Key types of a site, so that two keys of one type for the same names
 * (the second would silently replace the first) are reported. */
enum { KEY_RSA = 1, KEY_EC = 2, KEY_OTHER = 4 };

struct tls_site {
	SSL_CTX  *ctx;
	char    **names;        /* lower case, sorted */
	size_t    nnames;
	unsigned  key_types;
	const char *where;      /* the first pair's FILE:LINE */
};

struct tls_state {
	struct tls_site *sites;
	size_t    nsites;
};

static struct tls_state tls;

struct tls_conn {
	SSL      *ssl;
	bool      established;
	bool      failed;       /* no close_notify after a fatal error */
	char      error[160];
};

/* What tls_init() is doing, for its reports. */
struct tls_load {
	const struct mxconf *conf;
	tls_error_fn errfn;
	unsigned  nerrors;
};

static void report(struct tls_load *ld, const char *where, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
report(struct tls_load *ld, const char *where, const char *fmt, ...)
{
	char problem[1024], msg[1400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s: %s", where, problem);
	if (ld->errfn != NULL)
		ld->errfn(msg);
	else
		fprintf(stderr, "%s\n", msg);
	ld->nerrors++;
}

/* The reason of OpenSSL's most recent error, and the queue emptied. */
static const char *
ssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	if (r != NULL)
		snprintf(buf, size, "%s", r);
	else if (e != 0)
		ERR_error_string_n(e, buf, size);
	else
		snprintf(buf, size, "unknown error");
	ERR_clear_error();
	return buf;
}

/* ---- sites ------------------------------------------------------------- */

static void
site_free(struct tls_site *site)
{
	size_t i;

	SSL_CTX_free(site->ctx);
	for (i = 0; i < site->nnames; i++)
		free(site->names[i]);
	free(site->names);
}

static void
state_free(struct tls_state *st)
{
	size_t i;

	for (i = 0; i < st->nsites; i++)
		site_free(&st->sites[i]);
	free(st->sites);
	st->sites = NULL;
	st->nsites = 0;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
names_add(char ***names, size_t *n, const char *name, size_t len)
{
	char *s = xstrndup(name, len);
	char *p;

	for (p = s; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	*names = xrealloc(*names, (*n + 1) * sizeof(**names));
	(*names)[(*n)++] = s;
}

/* RFC 6125 6.4.4: the DNS names of the subjectAltName, else the CN. */
static void
cert_names(X509 *x, char ***names, size_t *n)
{
	GENERAL_NAMES *gens;
	X509_NAME *subj;
	int i, idx;

	*names = NULL;
	*n = 0;
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS)
			names_add(names, n,
			    (const char *)ASN1_STRING_get0_data(g->d.dNSName),
			    (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(gens);
	subj = X509_get_subject_name(x);
	if (*n == 0 && subj != NULL &&
	    (idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1)) >= 0) {
		ASN1_STRING *cn = X509_NAME_ENTRY_get_data(
		    X509_NAME_get_entry(subj, idx));
		names_add(names, n, (const char *)ASN1_STRING_get0_data(cn),
		    (size_t)ASN1_STRING_length(cn));
	}
	if (*n > 1)
		qsort(*names, *n, sizeof(**names), name_cmp);
}

static bool
names_equal(char **a, size_t na, char **b, size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

/* "*.example.com" covers exactly one label (RFC 6125 6.4.3). */
static bool
name_matches(const char *pattern, const char *host)
{
	const char *dot;

	if (strcasecmp(pattern, host) == 0)
		return true;
	if (pattern[0] != '*' || pattern[1] != '.')
		return false;
	dot = strchr(host, '.');
	return dot != NULL && dot != host && strcasecmp(dot, pattern + 1) == 0;
}

static struct tls_site *
site_for_name(const char *host)
{
	size_t i, j;

	for (i = 0; i < tls.nsites; i++)
		for (j = 0; j < tls.sites[i].nnames; j++)
			if (name_matches(tls.sites[i].names[j], host))
				return &tls.sites[i];
	return NULL;
}

/* RFC 6066 3: the client's server_name picks the certificate. */
static int
servername_cb(SSL *ssl, int *alert, void *arg)
{
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct tls_site *site;

	if (host == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if ((site = site_for_name(host)) == NULL)
		return SSL_TLSEXT_ERR_NOACK;   /* the default serves */
	if (site->ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, site->ctx);
	return SSL_TLSEXT_ERR_OK;
}

static int
min_version(const char *name)
{
	if (strcmp(name, "TLSv1") == 0)
		return TLS1_VERSION;
	if (strcmp(name, "TLSv1.1") == 0)
		return TLS1_1_VERSION;
	if (strcmp(name, "TLSv1.3") == 0)
		return TLS1_3_VERSION;
	return TLS1_2_VERSION;
}

static SSL_CTX *
ctx_new(struct tls_load *ld)
{
	const struct mxconf *conf = ld->conf;
	char why[256];
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		report(ld, conf->path, "TLS: %s", ssl_reason(why, sizeof(why)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min_version(conf->tls_min_version));
	/*
	 * No renegotiation (a CPU sink and a history of bugs); the server's
	 * cipher order; and a client that drops the connection without
	 * close_notify is at its end of file: SMTP frames its own data, so
	 * truncation cannot go unnoticed.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* The session writes from a buffer that moves as replies are added
	 * and drained; idle connections give their buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_session_id_context(ctx,
	    (const unsigned char *)SESSION_ID_CONTEXT,
	    sizeof(SESSION_ID_CONTEXT) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	if (SSL_CTX_set_cipher_list(ctx, conf->tls_ciphers) != 1) {
		report(ld, conf->path, "tls.ciphers: no usable cipher in "
		    "\"%s\" (%s)", conf->tls_ciphers,
		    ssl_reason(why, sizeof(why)));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_set_ciphersuites(ctx, conf->tls_ciphersuites) != 1) {
		report(ld, conf->path, "tls.ciphersuites: no usable TLS 1.3 "
		    "cipher suite in \"%s\" (%s)", conf->tls_ciphersuites,
		    ssl_reason(why, sizeof(why)));
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* fopen() first: errno says "No such file" or "Permission denied" more
 * plainly than OpenSSL's reasons do. */
static int
readable(struct tls_load *ld, const struct tls_cert_conf *cc,
    const char *what, const char *path)
{
	FILE *fp = fopen(path, "r");

	if (fp == NULL) {
		report(ld, cc->where, "cannot read %s %s: %s", what, path,
		    strerror(errno));
		return -1;
	}
	fclose(fp);
	return 0;
}

static X509 *
read_cert(struct tls_load *ld, const struct tls_cert_conf *cc)
{
	char why[256];
	X509 *x = NULL;
	BIO *bio;

	if (readable(ld, cc, "certificate", cc->cert) < 0)
		return NULL;
	if ((bio = BIO_new_file(cc->cert, "r")) != NULL)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL)
		report(ld, cc->where, "certificate %s: not a PEM certificate "
		    "(%s)", cc->cert, ssl_reason(why, sizeof(why)));
	return x;
}

static unsigned
key_type(X509 *x)
{
	EVP_PKEY *pk = X509_get0_pubkey(x);

	if (pk == NULL)
		return KEY_OTHER;
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
	case EVP_PKEY_RSA_PSS:
		return KEY_RSA;
	case EVP_PKEY_EC:
		return KEY_EC;
	default:
		return KEY_OTHER;
	}
}

/* The site serving exactly these names, or a new one. */
static struct tls_site *
site_get(struct tls_load *ld, struct tls_state *st, char **names,
    size_t nnames, const char *where)
{
	struct tls_site *site;
	size_t i, j;

	for (i = 0; i < st->nsites; i++) {
		if (!names_equal(st->sites[i].names, st->sites[i].nnames,
		    names, nnames))
			continue;
		for (j = 0; j < nnames; j++)
			free(names[j]);
		free(names);
		return &st->sites[i];
	}
	st->sites = xrealloc(st->sites, (st->nsites + 1) * sizeof(*st->sites));
	site = &st->sites[st->nsites];
	memset(site, 0, sizeof(*site));
	site->names = names;
	site->nnames = nnames;
	site->where = where;
	if ((site->ctx = ctx_new(ld)) == NULL) {
		site_free(site);
		return NULL;
	}
	st->nsites++;
	return site;
}

/* One cert/key pair into the site for its names. */
static void
load_pair(struct tls_load *ld, struct tls_state *st,
    const struct tls_cert_conf *cc)
{
	struct tls_site *site;
	char why[256], **names;
	size_t nnames;
	unsigned type;
	X509 *x;

	if ((x = read_cert(ld, cc)) == NULL)
		return;
	if (readable(ld, cc, "key", cc->key) < 0) {
		X509_free(x);
		return;
	}
	cert_names(x, &names, &nnames);
	type = key_type(x);
	X509_free(x);
	if ((site = site_get(ld, st, names, nnames, cc->where)) == NULL)
		return;
	if (site->key_types & type) {
		report(ld, cc->where, "certificate %s has the same names and "
		    "key type as the one at %s: one would hide the other",
		    cc->cert, site->where);
		return;
	}
	site->key_types |= type;
	if (SSL_CTX_use_certificate_chain_file(site->ctx, cc->cert) != 1) {
		report(ld, cc->where, "certificate %s: %s", cc->cert,
		    ssl_reason(why, sizeof(why)));
		return;
	}
	if (SSL_CTX_use_PrivateKey_file(site->ctx, cc->key,
	    SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(site->ctx) != 1) {
		ERR_clear_error();
		report(ld, cc->where, "key %s does not match certificate %s "
		    "(or is not a PEM private key)", cc->key, cc->cert);
		return;
	}
}

int
tls_init(const struct mxconf *conf, tls_error_fn errfn)
{
	struct tls_load ld = { .conf = conf, .errfn = errfn };
	struct tls_state st = { NULL, 0 };
	size_t i;

	for (i = 0; i < conf->ntls_certs; i++)
		load_pair(&ld, &st, &conf->tls_certs[i]);
	if (ld.nerrors > 0) {
		state_free(&st);
		return -1;
	}
	state_free(&tls);
	tls = st;
	return 0;
}

bool
tls_enabled(void)
{
	return tls.nsites > 0;
}

void
tls_cleanup(void)
{
	state_free(&tls);
}

/* ---- connections ------------------------------------------------------- */

struct tls_conn *
tls_conn_new(int fd)
{
	struct tls_conn *c;

	if (!tls_enabled())
		return NULL;
	c = xcalloc(1, sizeof(*c));
	if ((c->ssl = SSL_new(tls.sites[0].ctx)) == NULL ||
	    SSL_set_fd(c->ssl, fd) != 1) {
		ERR_clear_error();
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	SSL_set_accept_state(c->ssl);
	return c;
}

void
tls_conn_free(struct tls_conn *c)
{
	if (c == NULL)
		return;
	/* One non-blocking attempt: the client may be gone already. */
	if (c->established && !c->failed)
		SSL_shutdown(c->ssl);
	ERR_clear_error();
	SSL_free(c->ssl);
	free(c);
}

/* What the result r of an SSL call means; records the reason. */
static enum tls_result
result(struct tls_conn *c, int r)
{
	int err = SSL_get_error(c->ssl, r);
	unsigned long e;

	switch (err) {
	case SSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(c->error, sizeof(c->error), "connection closed");
		return TLS_EOF;
	case SSL_ERROR_SYSCALL:
		c->failed = true;
		ERR_clear_error();
		if (errno == 0) {
			snprintf(c->error, sizeof(c->error),
			    "connection closed");
			return TLS_EOF;
		}
		snprintf(c->error, sizeof(c->error), "%s", strerror(errno));
		return TLS_ERROR;
	default:
		c->failed = true;
		if ((e = ERR_peek_last_error()) != 0)
			ssl_reason(c->error, sizeof(c->error));
		else
			snprintf(c->error, sizeof(c->error), "TLS error %d",
			    err);
		ERR_clear_error();
		return TLS_ERROR;
	}
}

enum tls_result
tls_handshake(struct tls_conn *c)
{
	enum tls_result res;
	int r;

	ERR_clear_error();
	errno = 0;
	if ((r = SSL_do_handshake(c->ssl)) == 1) {
		c->established = true;
		return TLS_OK;
	}
	/* A client that goes away during the handshake failed it. */
	if ((res = result(c, r)) == TLS_EOF) {
		c->failed = true;
		return TLS_ERROR;
	}
	return res;
}

enum tls_result
tls_read(struct tls_conn *c, void *buf, size_t len, size_t *n)
{
	int r;

	*n = 0;
	ERR_clear_error();
	errno = 0;
	if ((r = SSL_read_ex(c->ssl, buf, len, n)) == 1)
		return TLS_OK;
	*n = 0;
	return result(c, r);
}

enum tls_result
tls_write(struct tls_conn *c, const void *buf, size_t len, size_t *n)
{
	int r;

	*n = 0;
	ERR_clear_error();
	errno = 0;
	if ((r = SSL_write_ex(c->ssl, buf, len, n)) == 1)
		return TLS_OK;
	*n = 0;
	return result(c, r);
}

bool
tls_pending(const struct tls_conn *c)
{
	return SSL_pending(c->ssl) > 0 || SSL_has_pending(c->ssl);
}

const char *
tls_conn_version(const struct tls_conn *c)
{
	return SSL_get_version(c->ssl);
}

const char *
tls_conn_cipher(const struct tls_conn *c)
{
	return SSL_get_cipher_name(c->ssl);
}

int
tls_conn_bits(const struct tls_conn *c, int *alg_bits)
{
	return SSL_get_cipher_bits(c->ssl, alg_bits);
}

const char *
tls_conn_sni(const struct tls_conn *c)
{
	return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *
tls_conn_error(const struct tls_conn *c)
{
	return c->error[0] != '\0' ? c->error : "unknown error";
}
