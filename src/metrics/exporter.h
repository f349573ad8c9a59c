/*
 * exporter — the metrics process: serves the counter store (metrics.h)
 * over HTTP, `GET /metrics`, in the Prometheus text format 0.0.4, on
 * metrics.listen (loopback by default; off unless configured).
 *
 * The master binds the listener and forks this process, which confines
 * itself like an smtp worker (server.user, chrooted into
 * server.chroot_dir, its own seccomp allow-list) before it reads a byte:
 * the master never parses what a scraper sends.  HTTP is reduced to what
 * a scraper needs: one request per connection, the request line and
 * headers at most EXPORTER_REQUEST_MAX bytes, EXPORTER_TIMEOUT_MS to send
 * them, at most EXPORTER_CONNS connections at once (more are closed at
 * once), the answer then close.  Anything but `GET /metrics` gets 404,
 * 405 or 400.
 *
 * exporter_parse() is the whole parser, pure, for the unit tests and the
 * fuzzer: it looks at what arrived so far.
 */
#ifndef MXGATE_EXPORTER_H
#define MXGATE_EXPORTER_H

#include <stddef.h>

#include "common/config.h"

#define EXPORTER_REQUEST_MAX 4096
#define EXPORTER_TIMEOUT_MS  10000
#define EXPORTER_CONNS       16

enum exporter_request {
	EXPORTER_INCOMPLETE,    /* no end of headers yet: read more */
	EXPORTER_METRICS,       /* GET /metrics (a query string is ignored) */
	EXPORTER_NOT_FOUND,     /* GET of another path: 404 */
	EXPORTER_BAD_METHOD,    /* another method: 405 */
	EXPORTER_BAD_REQUEST,   /* not an HTTP/1.x request line: 400 */
	EXPORTER_TOO_LARGE,     /* no end within EXPORTER_REQUEST_MAX: 431 */
};

enum exporter_request exporter_parse(const char *data, size_t len);

/* The process: listen_fd is the bound, listening socket.  Returns the
 * exit status. */
int exporter_main(const struct mxconf *conf, int listen_fd);

#endif
