/*
 * ipc — typed messages between mxgated's processes, over SOCK_SEQPACKET
 * socketpairs, optionally carrying one file descriptor (SCM_RIGHTS).
 *
 * Every message is a struct ipc_hdr followed by a fixed payload whose size
 * is checked against the type: a message of the wrong size, of an unknown
 * type or from the wrong peer is a broken invariant (fatalx), as in
 * OpenSMTPD's mproc.  The one exception is IPC_SUBMIT_INLINE, whose
 * payload is a struct ipc_submit followed by the message and its envelope,
 * at most IPC_INLINE_MAX bytes of them.  A larger message travels in a
 * sealed memfd whose descriptor an IPC_SUBMIT carries.
 *
 * Channels:
 *   master <-> worker   CONN_NEW (+client socket), CONN_CLOSED, AUTH_FAILED,
 *                       QUEUE_CHANNEL (+worker's end of a worker<->queue pair),
 *                       CONN_PROXIED and CONN_ADMIT (a PROXY protocol
 *                       listener's client, and the master's verdict on it),
 *                       GREET_PASSED (the pass cache of greet_pause),
 *                       STRESS (stress mode on or off)
 *   master <-> queue    WORKER_CHANNEL (+queue's end of a worker<->queue pair)
 *   worker <-> queue    SUBMIT (+memfd) and SUBMIT_RESULT
 *   master <-> lookup   WORKER_CHANNEL (+lookup's end of a worker<->lookup
 *                       pair)
 *   master  -> worker   LOOKUP_CHANNEL (+worker's end of that pair)
 *   worker <-> lookup   AUTH_CHECK and AUTH_RESULT
 *   queue  <-> spawner  SPAWN_FD (+a descriptor of the next SPAWN), SPAWN
 *                       (+report channel), SPAWNED, SPAWN_KILL
 */
#ifndef MXGATE_IPC_H
#define MXGATE_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "common/util.h"

enum ipc_type {
	IPC_CONN_NEW = 1,       /* master -> worker, fd = client socket,
	                         * already non-blocking */
	IPC_CONN_CLOSED,        /* worker -> master */
	IPC_QUEUE_CHANNEL,      /* master -> worker, fd = channel to queue */
	IPC_WORKER_CHANNEL,     /* master -> queue, fd = channel to a worker */
	IPC_SUBMIT,             /* worker -> queue, fd = sealed memfd */
	IPC_SUBMIT_RESULT,      /* queue -> worker */
	IPC_SUBMIT_INLINE,      /* worker -> queue, the message in the payload */
	IPC_AUTH_FAILED,        /* worker -> master, struct ipc_conn_closed */
	IPC_QUEUE_SPACE,        /* queue -> worker, struct ipc_queue_space */
	IPC_LOOKUP_CHANNEL,     /* master -> worker, fd = channel to lookup */
	IPC_AUTH_CHECK,         /* worker -> lookup */
	IPC_AUTH_RESULT,        /* lookup -> worker */
	IPC_SPAWN_FD,           /* queue -> spawner, fd = one of the next
	                         * SPAWN's descriptors, in order */
	IPC_SPAWN,              /* queue -> spawner, fd = report channel */
	IPC_SPAWNED,            /* spawner -> queue */
	IPC_SPAWN_KILL,         /* queue -> spawner, struct ipc_spawned */
	IPC_CONN_PROXIED,       /* worker -> master: the client a PROXY
	                         * header named */
	IPC_CONN_ADMIT,         /* master -> worker: its verdict */
	IPC_GREET_PASSED,       /* worker -> master, struct ipc_conn_closed:
	                         * the client waited for the whole greeting */
	IPC_STRESS,             /* master -> worker */
	IPC_CONFIG,             /* master -> queue -> spawner, fd = sealed
	                         * memfd: a reloaded configuration's text
	                         * (ipc_text_fd, config_load_checked) */
};

/*
 * Messages up to this size (content and envelope) are sent inline: for
 * the usual few kilobytes a copy through the socket costs less than
 * creating, writing, sealing, passing and releasing a memfd (measured:
 * about a tenth of the CPU time of an accepted message).
 */
#define IPC_INLINE_MAX (64 * 1024)

struct ipc_hdr {
	uint32_t type;
	uint32_t len;           /* payload bytes after the header */
};

/* ipc_conn_new.flags and ipc_conn_admit.flags */
#define CONN_F_GREET_PASSED  0x1    /* in the pass cache: no greet_pause */
#define CONN_F_PROXY         0x2    /* a PROXY header comes first: the
                                     * master waits for CONN_PROXIED */

struct ipc_conn_new {
	uint64_t conn_id;
	uint32_t listener;      /* index into conf->listeners */
	uint32_t flags;         /* CONN_F_* */
	struct sockaddr_storage peer;
	struct sockaddr_storage local;
};

/*
 * A PROXY protocol listener's connection (proxy.h): the worker reads the
 * header and names the client; the master applies the limits to it
 * (per address, fair share, rates) and answers CONN_ADMIT.  An empty
 * refusal admits the connection; otherwise it is the reply to send
 * (CRLF-terminated) before closing.
 */
struct ipc_conn_proxied {
	uint64_t conn_id;
	uint32_t wfd;           /* the worker's socket, echoed in the answer */
	uint32_t pad;
	struct sockaddr_storage client;
};

struct ipc_conn_admit {
	uint64_t conn_id;
	uint32_t wfd;
	uint32_t flags;         /* CONN_F_GREET_PASSED */
	char     refusal[128];
};

/* Stress mode (stress.threshold): on = 1 entered, 0 left. */
struct ipc_stress {
	uint32_t on;
	uint32_t pad;
};

struct ipc_conn_closed {
	uint64_t conn_id;
};

struct ipc_worker_channel {
	uint32_t worker_slot;
};

struct ipc_submit {
	uint64_t request_id;    /* echoed in the result */
	uint64_t message_len;   /* bytes [0, message_len) are the message */
	uint64_t envelope_len;  /* then the serialized envelope (envelope.h) */
};
#define IPC_PAYLOAD_MAX (sizeof(struct ipc_submit) + IPC_INLINE_MAX)

/* SUBMIT_NOSPACE: the queue's file system is full (452 4.3.1). */
enum submit_status { SUBMIT_OK = 0, SUBMIT_TEMPFAIL = 1, SUBMIT_PERMFAIL = 2,
	SUBMIT_NOSPACE = 3 };

/*
 * The queue's free space, sent to each worker when it gets its channel
 * and whenever it changes, so that MAIL can be refused with 452 4.3.1
 * before a client sends a message that cannot be stored.  usable: bytes
 * that may still be filled (free space less queue.min_free_space, 0 when
 * below it).
 */
struct ipc_queue_space {
	uint64_t usable;
};

struct ipc_submit_result {
	uint64_t request_id;
	uint32_t status;        /* enum submit_status */
	char     queue_id[QUEUE_ID_LEN + 1];
	char     text[128];     /* reason for a failure, for the reply */
};

/* AUTH credentials to check (auth.h); both strings NUL-terminated. */
struct ipc_auth_check {
	uint64_t request_id;    /* echoed in the result */
	char     user[256];
	char     pass[512];
};

struct ipc_auth_result {
	uint64_t request_id;
	uint32_t verdict;       /* enum auth_verdict */
	char     why[160];      /* for the log */
};

/* Start a delivery process (spawner.h); the SPAWN_FD messages before it
 * carried nfds descriptors: the jobs (a sealed memfd), then each job's
 * content. */
struct ipc_spawn {
	uint64_t request;       /* echoed in SPAWNED */
	uint32_t nfds;
	uint32_t pad;
	char     title[128];    /* "delivery DEST" for ps(1) */
	char     user[64];      /* a route's user=, "": delivery_user */
};

struct ipc_spawned {
	uint64_t request;
	int32_t  pid;           /* -1: it could not be started */
	int32_t  pad;
};

/*
 * Messages a peer's full socket could not take yet, sent in order once it
 * is writable again (the sender watches EPOLLOUT while ipc_outbox_waiting()
 * is true).  Used wherever a burst must be delayed, never refused: the
 * master's sockets for a worker, the queue's answers, a worker's
 * submissions.
 */
struct ipc_outmsg {
	enum ipc_type type;
	char   *payload;
	size_t  len;
	int     fd;             /* our own copy, or -1 */
};

struct ipc_outbox {
	struct ipc_outmsg *msgs;
	size_t  n, cap;
};

/*
 * Send now if nothing waits and the socket takes it, else keep a copy
 * (of the payload, and a dup of fd) to send later.  0: sent or kept;
 * -1 with errno when the peer is gone or the copy failed.
 */
int  ipc_outbox_send(struct ipc_outbox *o, int sock, enum ipc_type type,
    const void *head, size_t head_len, const void *body, size_t body_len,
    int fd);
/* Send what waits, in order, until the socket is full: 0, or -1 with
 * errno when the peer is gone (what waits stays). */
int  ipc_outbox_flush(struct ipc_outbox *o, int sock);
bool ipc_outbox_waiting(const struct ipc_outbox *o);
/* Drop what waits (closing the copies of descriptors). */
void ipc_outbox_clear(struct ipc_outbox *o);

/* A non-blocking SOCK_SEQPACKET pair, close-on-exec. */
int ipc_socketpair(int sv[2]);

/* Send one message; fd < 0 for none.  0, or -1 with errno (EAGAIN when the
 * peer's buffer is full). */
int ipc_send(int sock, enum ipc_type type, const void *payload, size_t len,
    int fd);
/* The same with the payload in two parts (IPC_SUBMIT_INLINE: the struct,
 * then the bytes). */
int ipc_send2(int sock, enum ipc_type type, const void *head, size_t head_len,
    const void *body, size_t body_len, int fd);

/*
 * Receive one message into buf (payload only; its size is the type's).
 * Returns 1 and sets *type (and *fd, or -1); 0 on EOF; -1 with errno
 * (EAGAIN when nothing is waiting).  A payload whose size does not match
 * its type is fatal.
 */
int ipc_recv(int sock, enum ipc_type *type, void *buf, size_t size,
    int *fd);
/* The same, for types whose payload size varies: *len is its size. */
int ipc_recv_len(int sock, enum ipc_type *type, void *buf, size_t size,
    size_t *len, int *fd);

/* Worker slots a queue or lookup process accepts channels for: the
 * generations of smtp processes a burst of reloads leaves draining
 * (master.c refuses a reload past it). */
#define IPC_WORKER_SLOTS_MAX 4096

/* A text as a sealed memfd (IPC_CONFIG): the descriptor, or -1 with
 * errno.  ipc_text_read(): the text again, NUL-terminated, malloc'd;
 * NULL with errno when it cannot be read or exceeds IPC_TEXT_MAX. */
#define IPC_TEXT_MAX (16 * 1024 * 1024)
int   ipc_text_fd(const char *text);
char *ipc_text_read(int fd);

#endif
