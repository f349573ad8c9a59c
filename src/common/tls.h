/*
 * tls — TLS for the listeners: the server context (certificates chosen by
 * SNI, a protocol floor, ciphers, session resumption) and non-blocking
 * connections for the smtp workers' event loop.
 *
 * The context is module state.  tls_init() builds it in the master, at
 * start and while it can still read the private keys; the workers forked
 * afterwards inherit it and never open a key file.  Every problem (a file
 * that cannot be read, a key that does not match its certificate, a bad
 * cipher list) is reported through errfn as "FILE:LINE: problem", with the
 * line of the configuration that names the file, and tls_init() returns
 * -1.  Calling it again (a reload) replaces the context only when the new
 * one is complete.  Without tls.certificates there is no context and
 * tls_enabled() is false: STARTTLS is not offered.
 *
 * Certificates: each configured pair is one certificate chain and its
 * key, RSA or ECDSA.  Pairs whose certificates carry the same names (the
 * DNS subjectAltNames, else the subject's CN) are served together, so a
 * client gets ECDSA or RSA as it prefers.  The client's SNI picks the
 * first group with a matching name ("*.example.com" covers one label);
 * without SNI, or with a name nobody has, the first group serves.
 *
 * Connections: tls_conn_new() wraps a connected non-blocking socket as the
 * server side.  tls_handshake(), tls_read() and tls_write() never block;
 * TLS_WANT_READ / TLS_WANT_WRITE say which readiness of the socket the
 * operation waits for -- either can come from any of them (a read may have
 * to write), so the caller maps them to its epoll interest and retries the
 * same operation.  tls_write() must be retried with at least the same
 * bytes (they may have moved).  TLS_ERROR is final: tls_conn_error() says
 * why, for the log.  A client that closes without close_notify is an
 * ordinary end of file (SMTP has its own end of data), TLS_EOF.
 */
#ifndef MXGATE_TLS_H
#define MXGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

typedef void (*tls_error_fn)(const char *msg);

/* Build the server context from conf; 0, or -1 after reporting. */
int  tls_init(const struct mxconf *conf, tls_error_fn errfn);
/* Is there a context, i.e. at least one certificate? */
bool tls_enabled(void);
/* Drop the context and the keys in it (processes that serve no TLS). */
void tls_cleanup(void);

enum tls_result {
	TLS_OK,
	TLS_WANT_READ,      /* retry when the socket is readable */
	TLS_WANT_WRITE,     /* retry when the socket is writable */
	TLS_EOF,            /* the client closed the connection */
	TLS_ERROR,          /* fatal: see tls_conn_error() */
};

struct tls_conn;

/* NULL when there is no context (or no memory). */
struct tls_conn *tls_conn_new(int fd);
/* Frees; sends close_notify first when the connection is healthy (best
 * effort, never blocks).  Does not close fd. */
void tls_conn_free(struct tls_conn *c);

enum tls_result tls_handshake(struct tls_conn *c);
/* *n bytes read (TLS_OK: at least one). */
enum tls_result tls_read(struct tls_conn *c, void *buf, size_t len,
    size_t *n);
/* *n bytes written (TLS_OK: at least one). */
enum tls_result tls_write(struct tls_conn *c, const void *buf, size_t len,
    size_t *n);
/* Decrypted bytes waiting inside the library: read them without waiting
 * for the socket. */
bool tls_pending(const struct tls_conn *c);

/* After the handshake: "TLSv1.3", "TLS_AES_256_GCM_SHA384", key bits. */
const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_cipher(const struct tls_conn *c);
/* The secret bits; *alg_bits (unless NULL) those of the algorithm. */
int         tls_conn_bits(const struct tls_conn *c, int *alg_bits);
/* The name the client asked for (SNI), or NULL. */
const char *tls_conn_sni(const struct tls_conn *c);
/* Why the last operation failed: "unsupported protocol", "no shared
 * cipher", "connection reset by peer", ... */
const char *tls_conn_error(const struct tls_conn *c);

#endif
