/*
 * util — small helpers shared by every process: checked allocation, a
 * growable byte buffer, queue ids, RFC 5322 dates, fd flags.
 *
 * Allocation failure is a broken invariant for a daemon that bounds its
 * memory: xmalloc() and friends call fatal() instead of returning NULL.
 */
#ifndef MXGATE_UTIL_H
#define MXGATE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
int   xasprintf(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copy at most size-1 bytes and always terminate; returns strlen(src). */
size_t strlcpy_mx(char *dst, const char *src, size_t size);

/* A growable byte buffer.  data is NUL-terminated for convenience. */
struct buf {
	char   *data;
	size_t  len;
	size_t  cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_appends(struct buf *b, const char *s);
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);

/*
 * Queue ids: QUEUE_ID_LEN characters of [0-9A-Z], time-ordered (the first
 * ten encode microseconds since the epoch), the rest random, so ids from
 * several workers never collide in practice and sort by arrival.
 */
#define QUEUE_ID_LEN 16
void queue_id_new(char out[QUEUE_ID_LEN + 1]);
/* When queue_id_new() made id, in microseconds since the epoch, from the
 * 50 bits it keeps and near_s, a time in seconds from just before it to
 * a day after (the message's received_at): 0 when id is not one of
 * queue_id_new()'s or the two cannot agree. */
uint64_t queue_id_time_us(const char *id, int64_t near_s);
bool queue_id_valid(const char *id);

/* "Fri, 27 Nov 2026 07:49:39 +0000" (RFC 5322 3.3), local time. */
void rfc5322_date(char *out, size_t size, time_t t);

/* Monotonic clock in milliseconds, and in microseconds. */
uint64_t monotonic_ms(void);
uint64_t monotonic_us(void);

/* write(2) all of len bytes, retrying after EINTR; 0, or -1 with errno. */
int fd_write_all(int fd, const void *data, size_t len);

/* pread(2) len bytes from offset off, retrying after EINTR and short
 * reads: the count read, less than len only at the end of the file
 * (errno EIO then), or -1 with errno. */
ssize_t fd_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* FNV-1a of a string: for the small hash tables keyed by client address. */
uint32_t hash_string(const char *s);

int fd_set_nonblock(int fd);
int fd_set_cloexec(int fd);

/* "192.0.2.1" or "2001:db8::1" from a socket address; "unknown" if not IP. */
void sockaddr_ntop(const struct sockaddr *sa, char *out, size_t size);

/* Parse "25M", "512k", "1000" into bytes; -1 on error. */
long long parse_size(const char *s);

#endif
