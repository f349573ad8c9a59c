/*
 * proxy — see proxy.h.  The format is HAProxy's proxy-protocol.txt;
 * section numbers below are that document's.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "smtp/proxy.h"

/* 2.2: the v2 signature, chosen never to start a valid v1 line nor any
 * text protocol's first bytes. */
static const uint8_t v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
static const char v1_prefix[] = "PROXY ";

#define V2_CMD_LOCAL   0x0
#define V2_CMD_PROXY   0x1
#define V2_AF_UNSPEC   0x0
#define V2_AF_INET     0x1
#define V2_AF_INET6    0x2
#define V2_TRANS_STREAM 0x1

static enum proxy_status
bad(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (size > 0) {
		va_start(ap, fmt);
		vsnprintf(why, size, fmt, ap);
		va_end(ap);
	}
	return PROXY_BAD;
}

/* Do the bytes so far agree with the start of prefix? */
static bool
prefix_of(const uint8_t *buf, size_t len, const void *prefix, size_t plen)
{
	return memcmp(buf, prefix, len < plen ? len : plen) == 0;
}

/* A decimal port, 0 to 65535, no sign, no leading zero (2.1). */
static bool
parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static bool
set_addr(struct sockaddr_storage *ss, int family, const char *text,
    uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return inet_pton(AF_INET, text, &sin->sin_addr) == 1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
}

/* 2.1: the fields of a complete v1 line, without its CRLF. */
static enum proxy_status
parse_v1_fields(char *line, struct proxy_header *h, char *why, size_t size)
{
	char *field[6];
	size_t n = 0;
	char *p = line;
	uint16_t sport, dport;
	int family;

	/* Single spaces only: the sender never emits anything else. */
	for (;;) {
		char *sp = strchr(p, ' ');
		if (n == 6)
			return bad(why, size, "v1: too many fields");
		field[n++] = p;
		if (sp == NULL)
			break;
		*sp = '\0';
		p = sp + 1;
		if (strcmp(field[0], "PROXY") == 0 && n == 2 &&
		    strcmp(field[1], "UNKNOWN") == 0)
			break;
	}
	if (n >= 2 && strcmp(field[1], "UNKNOWN") == 0) {
		/* The rest, if any, is to be ignored. */
		h->local = true;
		return PROXY_DONE;
	}
	if (n < 2)
		return bad(why, size, "v1: no protocol");
	if (strcmp(field[1], "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(field[1], "TCP6") == 0)
		family = AF_INET6;
	else
		return bad(why, size, "v1: unknown protocol");
	if (n != 6)
		return bad(why, size, "v1: %zu fields, 6 expected", n);
	if (!parse_port(field[4], &sport) || !parse_port(field[5], &dport))
		return bad(why, size, "v1: bad port");
	if (!set_addr(&h->src, family, field[2], sport) ||
	    !set_addr(&h->dst, family, field[3], dport))
		return bad(why, size, "v1: bad %s address",
		    family == AF_INET ? "IPv4" : "IPv6");
	return PROXY_DONE;
}

static enum proxy_status
parse_v1(const uint8_t *buf, size_t len, struct proxy_header *h, char *why,
    size_t size)
{
	char line[PROXY_V1_MAX + 1];
	size_t i, max = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;

	for (i = 0; i < max; i++) {
		if (buf[i] == '\r')
			break;
		/* Only printable ASCII in the line (2.1). */
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return bad(why, size, "v1: control or non-ASCII byte");
	}
	if (i == max)
		return len >= PROXY_V1_MAX ?
		    bad(why, size, "v1: no CRLF within %d bytes",
		    PROXY_V1_MAX) : PROXY_MORE;
	if (i + 2 > PROXY_V1_MAX)
		return bad(why, size, "v1: no CRLF within %d bytes",
		    PROXY_V1_MAX);
	if (i + 1 >= len)
		return PROXY_MORE;
	if (buf[i + 1] != '\n')
		return bad(why, size, "v1: CR without LF");
	memcpy(line, buf, i);
	line[i] = '\0';
	h->version = 1;
	h->len = i + 2;
	return parse_v1_fields(line, h, why, size);
}

/* 2.2.7: type, 16-bit length, value; a TLV must fit exactly. */
static bool
tlvs_valid(const uint8_t *p, size_t len)
{
	while (len > 0) {
		size_t vlen;

		if (len < 3)
			return false;
		vlen = (size_t)p[1] << 8 | p[2];
		if (vlen > len - 3)
			return false;
		p += 3 + vlen;
		len -= 3 + vlen;
	}
	return true;
}

static void
set_raw(struct sockaddr_storage *ss, int family, const uint8_t *addr,
    const uint8_t *port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		memcpy(&sin->sin_port, port, 2);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		memcpy(&sin6->sin6_port, port, 2);
	}
}

static enum proxy_status
parse_v2(const uint8_t *buf, size_t len, struct proxy_header *h, char *why,
    size_t size)
{
	size_t body, alen;
	unsigned ver, cmd, af, trans;
	const uint8_t *a;

	if (len < 16)
		return PROXY_MORE;
	ver = buf[12] >> 4;
	cmd = buf[12] & 0x0f;
	af = buf[13] >> 4;
	trans = buf[13] & 0x0f;
	if (ver != 2)
		return bad(why, size, "v2: version %u", ver);
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return bad(why, size, "v2: unknown command %u", cmd);
	body = (size_t)buf[14] << 8 | buf[15];
	if (len < 16 + body)
		return PROXY_MORE;
	h->version = 2;
	h->len = 16 + body;
	a = buf + 16;
	/* 2.2: with LOCAL the receiver skips the address block unread. */
	if (cmd == V2_CMD_LOCAL || af == V2_AF_UNSPEC) {
		h->local = true;
		return PROXY_DONE;
	}
	if (af != V2_AF_INET && af != V2_AF_INET6)
		return bad(why, size, "v2: address family %u (not TCP over IP)",
		    af);
	if (trans != V2_TRANS_STREAM)
		return bad(why, size, "v2: transport %u (not a stream)", trans);
	alen = af == V2_AF_INET ? 12 : 36;
	if (body < alen)
		return bad(why, size, "v2: %zu bytes for %zu of addresses", body,
		    alen);
	if (af == V2_AF_INET) {
		set_raw(&h->src, AF_INET, a, a + 8);
		set_raw(&h->dst, AF_INET, a + 4, a + 10);
	} else {
		set_raw(&h->src, AF_INET6, a, a + 32);
		set_raw(&h->dst, AF_INET6, a + 16, a + 34);
	}
	if (!tlvs_valid(a + alen, body - alen))
		return bad(why, size, "v2: malformed TLV");
	return PROXY_DONE;
}

enum proxy_status
proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *h,
    char *why, size_t why_size)
{
	memset(h, 0, sizeof(*h));
	if (why_size > 0)
		why[0] = '\0';
	if (len == 0)
		return PROXY_MORE;
	/* Refuse as soon as the bytes can start neither version: a client
	 * that speaks SMTP at once need not wait for the deadline. */
	if (prefix_of(buf, len, v2_sig, sizeof(v2_sig)))
		return len < sizeof(v2_sig) ? PROXY_MORE :
		    parse_v2(buf, len, h, why, why_size);
	if (prefix_of(buf, len, v1_prefix, sizeof(v1_prefix) - 1))
		return len < sizeof(v1_prefix) - 1 ? PROXY_MORE :
		    parse_v1(buf, len, h, why, why_size);
	return bad(why, why_size, "not a PROXY protocol header");
}
