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
 *   session_shutdown()  when the worker stops.
 * The session calls back through struct session_ops to register interest
 * in the socket, to submit a message and to report that it has ended (the
 * worker then frees it).
 *
 * Received message content goes straight into a memfd; at end of data the
 * serialized envelope is appended, the memfd sealed and handed to the
 * queue process.  The client hears 250 only after the queue's commit.
 */
#ifndef MXGATE_SESSION_H
#define MXGATE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "ipc.h"

struct session;

struct session_ops {
	/* Set the epoll interest of the session's socket. */
	void (*watch)(struct session *s, int fd, bool want_read, bool want_write);
	/* Send a sealed message to the queue; 0, or -1 if the queue is not
	 * reachable now.  The answer comes through session_submitted(). */
	int  (*submit)(struct session *s, int memfd, uint64_t message_len,
	    uint64_t envelope_len, uint64_t *request_id);
	/* The session is over (socket closed); the worker frees it. */
	void (*ended)(struct session *s);
};

struct session *session_new(const struct mxconf *conf,
    const struct session_ops *ops, int fd, uint64_t conn_id,
    const struct sockaddr_storage *peer, const struct sockaddr_storage *local,
    int listener);
void session_free(struct session *s);

void session_io(struct session *s, bool readable, bool writable);
void session_tick(struct session *s, uint64_t now_ms);
void session_submitted(struct session *s, const struct ipc_submit_result *r);
/* The queue channel broke: a pending submission fails with 451. */
void session_queue_lost(struct session *s);
/* Stop: finish the current reply, then 421 and close (when idle). */
void session_shutdown(struct session *s);

uint64_t session_conn_id(const struct session *s);
uint64_t session_request_id(const struct session *s);   /* 0 if none */
int      session_fd(const struct session *s);

#endif
