/*
 * ipc — see ipc.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "common/ipc.h"
#include "common/log.h"

/* The payload size each type must have: a peer that sends anything else
 * is broken or compromised, and the receiver stops talking to it. */
static bool
ipc_payload_ok(enum ipc_type type, size_t len)
{
	switch (type) {
	case IPC_CONN_NEW:        return len == sizeof(struct ipc_conn_new);
	case IPC_CONN_CLOSED:
	case IPC_AUTH_FAILED:
	case IPC_GREET_PASSED:    return len == sizeof(struct ipc_conn_closed);
	case IPC_CONN_PROXIED:    return len == sizeof(struct ipc_conn_proxied);
	case IPC_CONN_ADMIT:      return len == sizeof(struct ipc_conn_admit);
	case IPC_STRESS:          return len == sizeof(struct ipc_stress);
	case IPC_QUEUE_CHANNEL:
	case IPC_LOOKUP_CHANNEL:  return len == 0;
	case IPC_AUTH_CHECK:      return len == sizeof(struct ipc_auth_check);
	case IPC_AUTH_RESULT:     return len == sizeof(struct ipc_auth_result);
	case IPC_SPAWN_FD:
	case IPC_CONFIG:          return len == 0;
	case IPC_SPAWN:           return len == sizeof(struct ipc_spawn);
	case IPC_SPAWNED:
	case IPC_SPAWN_KILL:      return len == sizeof(struct ipc_spawned);
	case IPC_WORKER_CHANNEL:  return len == sizeof(struct ipc_worker_channel);
	case IPC_SUBMIT:          return len == sizeof(struct ipc_submit);
	case IPC_SUBMIT_RESULT:   return len == sizeof(struct ipc_submit_result);
	case IPC_QUEUE_SPACE:     return len == sizeof(struct ipc_queue_space);
	case IPC_SUBMIT_INLINE:
		return len > sizeof(struct ipc_submit) && len <= IPC_PAYLOAD_MAX;
	}
	return false;
}

/* Room for a few inline submissions however small the system's default
 * socket buffer is (one larger than the buffer could never be sent). */
#define IPC_SNDBUF (4 * IPC_PAYLOAD_MAX)

int
ipc_socketpair(int sv[2])
{
	int size = (int)IPC_SNDBUF;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0, sv) < 0)
		return -1;
	/* Best effort: the kernel caps it at net.core.wmem_max. */
	for (int i = 0; i < 2; i++)
		(void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size,
		    sizeof(size));
	return 0;
}

int
ipc_send(int sock, enum ipc_type type, const void *payload, size_t len, int fd)
{
	return ipc_send2(sock, type, payload, len, NULL, 0, fd);
}

int
ipc_send2(int sock, enum ipc_type type, const void *head, size_t head_len,
    const void *body, size_t body_len, int fd)
{
	size_t len = head_len + body_len;
	struct ipc_hdr hdr = { .type = (uint32_t)type, .len = (uint32_t)len };
	struct iovec iov[3] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)(uintptr_t)head, .iov_len = head_len },
		{ .iov_base = (void *)(uintptr_t)body, .iov_len = body_len },
	};
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cmsgbuf;
	struct msghdr msg = { .msg_iov = iov,
	    .msg_iovlen = body_len ? 3 : head_len ? 2 : 1 };
	ssize_t n;

	if (!ipc_payload_ok(type, len))
		fatalx("ipc_send: type %d with %zu bytes", type, len);
	if (fd >= 0) {
		struct cmsghdr *cmsg;

		memset(&cmsgbuf, 0, sizeof(cmsgbuf));
		msg.msg_control = cmsgbuf.buf;
		msg.msg_controllen = sizeof(cmsgbuf.buf);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	return 0;
}

int
ipc_recv(int sock, enum ipc_type *type, void *buf, size_t size, int *fd)
{
	size_t len;
	int r = ipc_recv_len(sock, type, buf, size, &len, fd);

	/* Only the variable type may be shorter than the buffer. */
	if (r > 0 && *type == IPC_SUBMIT_INLINE)
		fatalx("ipc_recv: unexpected inline submission");
	return r;
}

int
ipc_recv_len(int sock, enum ipc_type *type, void *buf, size_t size,
    size_t *len, int *fd)
{
	struct ipc_hdr hdr;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = buf, .iov_len = size },
	};
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cmsgbuf;
	struct msghdr msg = {
		.msg_iov = iov, .msg_iovlen = 2,
		.msg_control = cmsgbuf.buf, .msg_controllen = sizeof(cmsgbuf.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	*fd = -1;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n;

	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
		    cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
	}
	if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 ||
	    (size_t)n < sizeof(hdr) ||
	    hdr.len != (size_t)n - sizeof(hdr) ||
	    !ipc_payload_ok((enum ipc_type)hdr.type, hdr.len))
		fatalx("ipc_recv: malformed message (type %u, %zd bytes)",
		    hdr.type, n);
	*type = (enum ipc_type)hdr.type;
	*len = hdr.len;
	return 1;
}

/* ---- the outbox ---- */

static int
outbox_keep(struct ipc_outbox *o, enum ipc_type type, const void *head,
    size_t head_len, const void *body, size_t body_len, int fd)
{
	struct ipc_outmsg *m;
	int copy = -1;

	if (fd >= 0 && (copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return -1;
	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 16;
		o->msgs = xrealloc(o->msgs, o->cap * sizeof(*o->msgs));
	}
	m = &o->msgs[o->n++];
	m->type = type;
	m->len = head_len + body_len;
	m->payload = xmalloc(m->len + 1);
	if (head_len > 0)
		memcpy(m->payload, head, head_len);
	if (body_len > 0)
		memcpy(m->payload + head_len, body, body_len);
	m->fd = copy;
	return 0;
}

int
ipc_outbox_send(struct ipc_outbox *o, int sock, enum ipc_type type,
    const void *head, size_t head_len, const void *body, size_t body_len,
    int fd)
{
	if (o->n == 0 &&
	    ipc_send2(sock, type, head, head_len, body, body_len, fd) == 0)
		return 0;
	if (o->n == 0 && errno != EAGAIN)
		return -1;
	return outbox_keep(o, type, head, head_len, body, body_len, fd);
}

int
ipc_outbox_flush(struct ipc_outbox *o, int sock)
{
	size_t i = 0;
	int rc = 0;

	while (i < o->n) {
		struct ipc_outmsg *m = &o->msgs[i];

		if (ipc_send(sock, m->type, m->payload, m->len, m->fd) < 0) {
			if (errno != EAGAIN)
				rc = -1;
			break;
		}
		if (m->fd >= 0)
			close(m->fd);
		free(m->payload);
		i++;
	}
	memmove(o->msgs, o->msgs + i, (o->n - i) * sizeof(*o->msgs));
	o->n -= i;
	return rc;
}

bool
ipc_outbox_waiting(const struct ipc_outbox *o)
{
	return o->n > 0;
}

void
ipc_outbox_clear(struct ipc_outbox *o)
{
	for (size_t i = 0; i < o->n; i++) {
		if (o->msgs[i].fd >= 0)
			close(o->msgs[i].fd);
		free(o->msgs[i].payload);
	}
	o->n = 0;
}

int
ipc_text_fd(const char *text)
{
	size_t len = strlen(text), off = 0;
	int fd = memfd_create("mxgate-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		off += (size_t)n;
	}
	/* Sealed: the receiver reads what the master checked, nothing a
	 * later writer put there. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		goto fail;
	return fd;
fail:
	{
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

char *
ipc_text_read(int fd)
{
	struct stat st;
	ssize_t n;
	char *text;

	if (fstat(fd, &st) < 0)
		return NULL;
	if (st.st_size < 0 || (uint64_t)st.st_size > IPC_TEXT_MAX) {
		errno = EFBIG;
		return NULL;
	}
	text = xmalloc((size_t)st.st_size + 1);
	n = fd_pread_full(fd, text, (size_t)st.st_size, 0);
	if (n != (ssize_t)st.st_size) {
		free(text);
		return NULL;
	}
	text[n] = '\0';
	return text;
}
