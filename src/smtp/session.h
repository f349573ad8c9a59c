/*
 * session — one SMTP session inside an smtp worker: binds the protocol
 * engine (smtp_proto) to a non-blocking client socket, timers, the
 * acceptance policy and the queue.
 *
 * The worker owns the event loop and calls in:
 *   session_new()       for each socket the master passes;
 *   session_io()        when the socket is readable or writable;
 *   session_tick()      about once a second, for timeouts;
 *   session_submitted() with the queue's answer to a submitted message;
 *   session_auth_result() with the verdict of a credential check;
 *   session_shutdown()  when the worker stops.
 * The session calls back through struct session_ops to register interest
 * in the socket, to submit a message and to report that it has ended (the
 * worker then frees it).
 *
 * Received message content is kept in memory while it is small enough to
 * go to the queue inline (ipc.h), and written to a memfd once it is not;
 * at end of data the serialized envelope is appended and the message
 * handed to the queue process (the memfd sealed first).  The client hears
 * 250 only after the queue's commit.
 *
 * TLS (tls.h): on a "submissions" listener the handshake comes first and
 * the greeting after it (RFC 8314); elsewhere STARTTLS is offered when
 * there is a certificate.  Its 220 goes out in the clear, everything the
 * client had sent after STARTTLS is dropped, then the handshake runs in
 * the event loop like any other I/O.  A failed handshake ends that
 * session only, logged with the reason.
 *
 * AUTH (auth.h): credentials are checked off the loop (ops->auth_check);
 * a failure is answered 535 after auth.failure_delay seconds, and after
 * auth.max_failures of them the session ends with 421.  Once
 * authenticated, session_auth_user() is the user (routes' ${auth_user}
 * and `authenticated`), and the protocol recorded in Received: and in
 * the queue is ESMTPA / ESMTPSA (RFC 3848).
 */
#ifndef MXGATE_SESSION_H
#define MXGATE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "smtp/auth.h"
#include "common/config.h"
#include "common/ipc.h"

struct session;

struct session_ops {
	/* Set the epoll interest of the session's socket. */
	void (*watch)(struct session *s, int fd, bool want_read, bool want_write);
	/* Send a message to the queue: a sealed memfd, or (memfd < 0) the
	 * message_len + envelope_len bytes at data, copied before the call
	 * returns.  0, or -1 if the queue is not reachable now.  The answer
	 * comes through session_submitted(). */
	int  (*submit)(struct session *s, int memfd, const void *data,
	    uint64_t message_len, uint64_t envelope_len, uint64_t *request_id);
	/* The session is over (socket closed); the worker frees it. */
	void (*ended)(struct session *s);
	/* A credential check failed (for the master's count per client). */
	void (*auth_failed)(struct session *s);
	/* Check credentials off the event loop (user and pass are copied);
	 * 0, or -1 if that cannot be done now.  The verdict comes through
	 * session_auth_result(). */
	int  (*auth_check)(struct session *s, const char *user,
	    const char *pass, uint64_t *request_id);
	/* Bytes the queue can still store (ipc_queue_space), UINT64_MAX
	 * while unknown: MAIL is 452 4.3.1 when a message cannot fit. */
	uint64_t (*queue_space)(struct session *s);
	/* The client waited for the whole greeting (greet_pause): the
	 * master remembers it (greet_pass_time).  May be NULL. */
	void (*greet_passed)(struct session *s);
};

/* peer: the client (the one a PROXY header named, if any); local: the
 * address it connected to; flags: CONN_F_GREET_PASSED (ipc.h), the
 * client skips greet_pause. */
struct session *session_new(const struct mxconf *conf,
    const struct session_ops *ops, int fd, uint64_t conn_id,
    const struct sockaddr_storage *peer, const struct sockaddr_storage *local,
    int listener, unsigned flags);
void session_free(struct session *s);

/* Stress mode on or off (the master says): every session of the worker
 * gets the stress timeouts (stress.command, stress.data) from now on. */
void session_set_stress(bool on);

void session_io(struct session *s, bool readable, bool writable);
void session_tick(struct session *s, uint64_t now_ms);
void session_submitted(struct session *s, const struct ipc_submit_result *r);
/* The queue channel broke: a pending submission fails with 451. */
void session_queue_lost(struct session *s);
/* The verdict of ops->auth_check(); ignored unless request_id is the
 * session's pending check.  why is for the log. */
void session_auth_result(struct session *s, uint64_t request_id,
    enum auth_verdict verdict, const char *why);
/* Stop: finish the current reply, then 421 and close (when idle). */
void session_shutdown(struct session *s);

uint64_t session_conn_id(const struct session *s);
uint64_t session_request_id(const struct session *s);   /* 0 if none */
/* The credential check the session waits for, 0 if none. */
uint64_t session_auth_request(const struct session *s);
int      session_fd(const struct session *s);
/* The authenticated user, NULL before a successful AUTH. */
const char *session_auth_user(const struct session *s);
/* Is the session encrypted (TLS handshake done)? */
bool     session_tls(const struct session *s);

#endif
