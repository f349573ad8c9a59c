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
#define V2_AF_UNIX     0x3
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

/* 2.2.7: the TLV types read here. */
#define PP2_TYPE_CRC32C         0x03
#define PP2_TYPE_SSL            0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN      0x22
#define PP2_CLIENT_SSL          0x01
#define PP2_CLIENT_CERT_CONN    0x02
#define PP2_CLIENT_CERT_SESS    0x04

/*
 * CRC32c (Castagnoli, RFC 4960 appendix B: reflected polynomial
 * 0x82f63b78, initial and final value all ones), bit by bit: a header is
 * a few dozen bytes and checked once per connection, not worth a table.
 */
static uint32_t
crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return crc;
}

uint32_t
proxy_crc32c(const uint8_t *p, size_t len)
{
	return ~crc32c_update(0xffffffffu, p, len);
}

/*
 * 2.2.7: the checksum covers the whole header with its own four bytes
 * taken as zeros; at is where the value lies in hdr, big-endian.  A
 * balancer that adds it wants a header damaged on the way refused
 * ("the receiver MUST ... drop the connection").
 */
static bool
crc32c_matches(const uint8_t *hdr, size_t hlen, size_t at)
{
	static const uint8_t zero[4];
	uint32_t want = (uint32_t)hdr[at] << 24 | (uint32_t)hdr[at + 1] << 16 |
	    (uint32_t)hdr[at + 2] << 8 | hdr[at + 3];
	uint32_t crc = crc32c_update(0xffffffffu, hdr, at);

	crc = crc32c_update(crc, zero, sizeof(zero));
	crc = crc32c_update(crc, hdr + at + 4, hlen - at - 4);
	return ~crc == want;
}

/* Printable ASCII of v (what a log line may carry), cut to size. */
static void
copy_text(char *out, size_t size, const uint8_t *v, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len && n + 1 < size; i++)
		out[n++] = v[i] >= 0x20 && v[i] < 0x7f && v[i] != '"' ?
		    (char)v[i] : '?';
	out[n] = '\0';
}

/*
 * 2.2.7 PP2_TYPE_SSL: what the balancer's TLS termination saw: a client
 * byte, a 32-bit verify result (0: the certificate verified), then
 * sub-TLVs.  Only logged, so a value that does not parse is left out,
 * not refused.
 */
static void
read_ssl(const uint8_t *v, size_t len, struct proxy_header *h)
{
	uint32_t verify;

	if (len < 5 || !(v[0] & PP2_CLIENT_SSL))
		return;
	verify = (uint32_t)v[1] << 24 | (uint32_t)v[2] << 16 |
	    (uint32_t)v[3] << 8 | v[4];
	h->ssl = true;
	if (v[0] & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS))
		h->ssl_cert = verify == 0 ? PROXY_CERT_VERIFIED :
		    PROXY_CERT_UNVERIFIED;
	for (size_t off = 5; off + 3 <= len; ) {
		size_t vlen = (size_t)v[off + 1] << 8 | v[off + 2];

		if (vlen > len - off - 3)
			break;
		if (v[off] == PP2_SUBTYPE_SSL_VERSION)
			copy_text(h->ssl_version, sizeof(h->ssl_version),
			    v + off + 3, vlen);
		else if (v[off] == PP2_SUBTYPE_SSL_CN)
			copy_text(h->ssl_cn, sizeof(h->ssl_cn), v + off + 3,
			    vlen);
		off += 3 + vlen;
	}
}

enum tlv_status { TLV_OK, TLV_MALFORMED, TLV_BAD_CRC };

/*
 * 2.2.7: the TLVs from off to the end of the header hdr: type, 16-bit
 * length, value; a TLV must fit exactly.  The checksum, if there is
 * one, is checked; the SSL TLV is read into h; the rest are skipped.
 */
static enum tlv_status
read_tlvs(const uint8_t *hdr, size_t hlen, size_t off,
    struct proxy_header *h)
{
	size_t crc_at = 0;
	bool crc = false;

	while (off < hlen) {
		size_t vlen;

		if (hlen - off < 3)
			return TLV_MALFORMED;
		vlen = (size_t)hdr[off + 1] << 8 | hdr[off + 2];
		if (vlen > hlen - off - 3)
			return TLV_MALFORMED;
		if (hdr[off] == PP2_TYPE_CRC32C) {
			/* Two checksums: which would count? */
			if (vlen != 4 || crc)
				return TLV_MALFORMED;
			crc = true;
			crc_at = off + 3;
		} else if (hdr[off] == PP2_TYPE_SSL) {
			read_ssl(hdr + off + 3, vlen, h);
		}
		off += 3 + vlen;
	}
	if (crc && !crc32c_matches(hdr, hlen, crc_at))
		return TLV_BAD_CRC;
	return TLV_OK;
}

static void
forget_ssl(struct proxy_header *h)
{
	h->ssl = false;
	h->ssl_cert = PROXY_CERT_NONE;
	h->ssl_version[0] = h->ssl_cn[0] = '\0';
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
	/* 2.2: with LOCAL the receiver skips the address block unread.
	 * Where the TLVs after it can be found and are whole, a checksum
	 * among them is still checked: it covers the header, whatever the
	 * command. */
	if (cmd == V2_CMD_LOCAL || af == V2_AF_UNSPEC) {
		h->local = true;
		alen = af == V2_AF_UNSPEC ? 0 : af == V2_AF_INET ? 12 :
		    af == V2_AF_INET6 ? 36 : af == V2_AF_UNIX ? 216 : body + 1;
		if (alen <= body) {
			enum tlv_status t = read_tlvs(buf, h->len, 16 + alen, h);
			if (t == TLV_BAD_CRC)
				return bad(why, size, "v2: CRC32C checksum "
				    "mismatch");
			if (t == TLV_MALFORMED)
				forget_ssl(h);
		}
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
	switch (read_tlvs(buf, h->len, 16 + alen, h)) {
	case TLV_MALFORMED:
		return bad(why, size, "v2: malformed TLV");
	case TLV_BAD_CRC:
		return bad(why, size, "v2: CRC32C checksum mismatch");
	default:
		return PROXY_DONE;
	}
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
