/*
 * util — see util.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/time.h>

#include "common/log.h"
#include "common/util.h"

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatal("malloc %zu", n);
	return p;
}

void *
xcalloc(size_t count, size_t n)
{
	void *p = calloc(count ? count : 1, n ? n : 1);

	if (p == NULL)
		fatal("calloc %zu*%zu", count, n);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatal("realloc %zu", n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

int
xasprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(out, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	return n;
}

size_t
strlcpy_mx(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size > 0) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap;

	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void
buf_append(struct buf *b, const void *data, size_t len)
{
	buf_reserve(b, len);
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void
buf_appends(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx("buf_appendf: bad format");
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

static const char queue_id_alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";

/* Ten base-32 digits hold 50 bits of microseconds: until the year 2005+35;
 * enough ordering for a queue whose messages live days, and the random
 * tail keeps ids unique across workers within one microsecond. */
void
queue_id_new(char out[QUEUE_ID_LEN + 1])
{
	struct timeval tv;
	unsigned long long usec;
	unsigned char rnd[QUEUE_ID_LEN - 10];
	int i;

	gettimeofday(&tv, NULL);
	usec = (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
	for (i = 9; i >= 0; i--) {
		out[i] = queue_id_alphabet[usec & 31];
		usec >>= 5;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		fatal("getrandom");
	for (i = 0; i < (int)sizeof(rnd); i++)
		out[10 + i] = queue_id_alphabet[rnd[i] & 31];
	out[QUEUE_ID_LEN] = '\0';
}

uint64_t
queue_id_time_us(const char *id, int64_t near_s)
{
	const uint64_t span = 1ULL << 50, day_us = 86400ULL * 1000000ULL;
	uint64_t low = 0, near_us, t;
	const char *p;

	if (near_s <= 0 || !queue_id_valid(id))
		return 0;
	for (int i = 0; i < 10; i++) {
		p = strchr(queue_id_alphabet, id[i]);
		low = low << 5 | (uint64_t)(p - queue_id_alphabet);
	}
	near_us = (uint64_t)near_s * 1000000ULL;
	t = (near_us & ~(span - 1)) | low;
	/* The id was made before near_s (at MAIL, near_s at the commit),
	 * perhaps across a wrap of the 50 bits. */
	if (t > near_us + 2000000ULL && t >= span)
		t -= span;
	if (t > near_us + 2000000ULL || t + day_us < near_us)
		return 0;
	return t;
}

bool
queue_id_valid(const char *id)
{
	size_t i;

	for (i = 0; i < QUEUE_ID_LEN; i++) {
		if (id[i] == '\0' || strchr(queue_id_alphabet, id[i]) == NULL)
			return false;
	}
	return id[i] == '\0';
}

void
rfc5322_date(char *out, size_t size, time_t t)
{
	struct tm tm;

	localtime_r(&t, &tm);
	/* %a and %b are locale dependent; RFC 5322 wants the English names. */
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';

	if (off < 0)
		off = -off;
	snprintf(out, size, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
}

uint64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

ssize_t
fd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			break;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int
fd_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* 0 for a non-empty write would loop forever */
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

uint32_t
hash_string(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

int
fd_set_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int
fd_set_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

void
sockaddr_ntop(const struct sockaddr *sa, char *out, size_t size)
{
	const void *addr;

	switch (sa->sa_family) {
	case AF_INET:
		addr = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		break;
	case AF_INET6:
		addr = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		break;
	default:
		strlcpy_mx(out, "unknown", size);
		return;
	}
	if (inet_ntop(sa->sa_family, addr, out, (socklen_t)size) == NULL)
		strlcpy_mx(out, "unknown", size);
}

long long
parse_size(const char *s)
{
	char *end;
	long long n, unit;

	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno != 0 || end == s || n < 0 || *s == '-' || *s == '+')
		return -1;
	switch (*end) {
	case '\0':
		return n;
	case 'k': case 'K':
		unit = 1024LL;
		break;
	case 'm': case 'M':
		unit = 1024LL * 1024;
		break;
	case 'g': case 'G':
		unit = 1024LL * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (end[1] != '\0' && !((end[1] == 'B' || end[1] == 'b') && end[2] == '\0'))
		return -1;
	if (n > LLONG_MAX / unit)
		return -1;
	return n * unit;
}
