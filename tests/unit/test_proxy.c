/*
 * Unit tests of the PROXY protocol parser (proxy.h): v1 and v2 headers
 * as HAProxy sends them, byte by byte (a header split over reads), the
 * health checks that carry no client, TLVs, and refusals.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "smtp/proxy.h"
#include "common/util.h"
#include "unit.h"

static const uint8_t sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

static const char *
src_ip(const struct proxy_header *h, char *buf, size_t size)
{
	sockaddr_ntop((const struct sockaddr *)&h->src, buf, size);
	return buf;
}

static unsigned
src_port(const struct proxy_header *h)
{
	if (h->src.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)
		    &h->src)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)(const void *)
	    &h->src)->sin6_port);
}

/* Every prefix of a complete header asks for more; the whole is DONE. */
static void
check_prefixes(const uint8_t *buf, size_t len)
{
	struct proxy_header h;
	char why[128];

	for (size_t i = 0; i < len; i++)
		CHECK_INT(proxy_parse(buf, i, &h, why, sizeof(why)), PROXY_MORE);
	CHECK_INT(proxy_parse(buf, len, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_INT(h.len, len);
}

static void
test_v1(void)
{
	const char *t = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
	struct proxy_header h;
	char why[128], ip[64];

	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK_INT(h.version, 1);
	CHECK(!h.local);
	CHECK_INT(h.len, strlen(t) - strlen("EHLO x\r\n"));
	CHECK_STR(src_ip(&h, ip, sizeof(ip)), "192.0.2.7");
	CHECK_INT(src_port(&h), 56324);
	check_prefixes((const uint8_t *)t, h.len);

	t = "PROXY TCP6 2001:db8::5 2001:db8::1 65535 587\r\n";
	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK_STR(src_ip(&h, ip, sizeof(ip)), "2001:db8::5");
	CHECK_INT(src_port(&h), 65535);

	/* The longest lines the format allows. */
	t = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK_STR(src_ip(&h, ip, sizeof(ip)),
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	t = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	CHECK_INT(strlen(t), PROXY_V1_MAX);
	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK(h.local);
}

static void
test_v1_unknown(void)
{
	const char *t = "PROXY UNKNOWN\r\n";
	struct proxy_header h;
	char why[128];

	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK(h.local);
	CHECK_INT(h.len, 15);
	t = "PROXY UNKNOWN ffff:: ffff:: 1 2\r\n";
	CHECK_INT(proxy_parse((const uint8_t *)t, strlen(t), &h, why,
	    sizeof(why)), PROXY_DONE);
	CHECK(h.local);
}

static void
test_v1_bad(void)
{
	static const char *const bad[] = {
		"EHLO client.example\r\n",
		"proxy TCP4 192.0.2.7 198.51.100.1 1 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\rX",
		"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 1 25 9\r\n",
		"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n",
		"PROXY TCP6 192.0.2.7 198.51.100.1 1 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 01 25\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
		"PROXY TCP4 192.0.2.256 198.51.100.1 1 25\r\n",
		"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
		"PROXY \r\n",
		"PROXY TCP4 192.0.2.7\t198.51.100.1 1 25\r\n",
	};
	struct proxy_header h;
	char why[128];

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		int r = proxy_parse((const uint8_t *)bad[i], strlen(bad[i]), &h,
		    why, sizeof(why));
		if (r != PROXY_BAD)
			printf("#   not refused: %s", bad[i]);
		CHECK_INT(r, PROXY_BAD);
		CHECK(why[0] != '\0');
	}
	/* No CRLF within the longest line: refused without more input. */
	char longline[PROXY_V1_MAX + 10];
	memset(longline, 'A', sizeof(longline));
	memcpy(longline, "PROXY ", 6);
	CHECK_INT(proxy_parse((const uint8_t *)longline, PROXY_V1_MAX, &h, why,
	    sizeof(why)), PROXY_BAD);
	CHECK_INT(proxy_parse((const uint8_t *)longline, PROXY_V1_MAX - 1, &h,
	    why, sizeof(why)), PROXY_MORE);
	/* The first byte that is neither version's is enough. */
	CHECK_INT(proxy_parse((const uint8_t *)"E", 1, &h, why, sizeof(why)),
	    PROXY_BAD);
	CHECK_INT(proxy_parse((const uint8_t *)"PROXZ", 5, &h, why,
	    sizeof(why)), PROXY_BAD);
}

static size_t
v2_header(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const uint8_t *body,
    size_t blen)
{
	memcpy(buf, sig, 12);
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(blen >> 8);
	buf[15] = (uint8_t)blen;
	if (blen > 0)
		memcpy(buf + 16, body, blen);
	return 16 + blen;
}

static void
test_v2_inet(void)
{
	/* 192.0.2.9:40000 -> 198.51.100.1:25, then a NOOP TLV and a
	 * unique-id TLV, as HAProxy may add them. */
	uint8_t body[] = { 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 25,
	    0x04, 0x00, 0x02, 0xaa, 0xbb,
	    0x05, 0x00, 0x03, 'a', 'b', 'c' };
	uint8_t buf[128];
	struct proxy_header h;
	char why[128], ip[64];
	size_t n = v2_header(buf, 0x21, 0x11, body, sizeof(body));

	memcpy(buf + n, "EHLO", 4);
	CHECK_INT(proxy_parse(buf, n + 4, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_INT(h.version, 2);
	CHECK(!h.local);
	CHECK_INT(h.len, n);
	CHECK_STR(src_ip(&h, ip, sizeof(ip)), "192.0.2.9");
	CHECK_INT(src_port(&h), 40000);
	check_prefixes(buf, n);
}

static void
test_v2_inet6(void)
{
	uint8_t body[36] = { 0x20, 0x01, 0x0d, 0xb8 };
	uint8_t buf[128];
	struct proxy_header h;
	char why[128], ip[64];
	size_t n;

	body[15] = 7;
	body[16] = 0x20; body[17] = 0x01; body[18] = 0x0d; body[19] = 0xb8;
	body[31] = 1;
	body[32] = 0x01; body[33] = 0x02;
	body[35] = 25;
	n = v2_header(buf, 0x21, 0x21, body, sizeof(body));
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_STR(src_ip(&h, ip, sizeof(ip)), "2001:db8::7");
	CHECK_INT(src_port(&h), 258);
}

static void
test_v2_local(void)
{
	uint8_t buf[64], body[12] = { 0 };
	struct proxy_header h;
	char why[128];
	size_t n;

	/* LOCAL: a health check; its address block is skipped unread. */
	n = v2_header(buf, 0x20, 0x00, NULL, 0);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.local);
	CHECK_INT(h.len, 16);
	n = v2_header(buf, 0x20, 0x11, body, sizeof(body));
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.local);
	CHECK_INT(h.len, 28);
	/* PROXY with AF_UNSPEC: no client either. */
	n = v2_header(buf, 0x21, 0x00, body, 3);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.local);
}

static void
test_v2_bad(void)
{
	uint8_t body[40] = { 192, 0, 2, 9, 198, 51, 100, 1, 0, 1, 0, 25 };
	uint8_t buf[128];
	struct proxy_header h;
	char why[128];
	size_t n;

	n = v2_header(buf, 0x11, 0x11, body, 12);     /* version 1 */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	n = v2_header(buf, 0x22, 0x11, body, 12);     /* command 2 */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	n = v2_header(buf, 0x21, 0x12, body, 12);     /* UDP */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	n = v2_header(buf, 0x21, 0x31, body, 12);     /* unix socket */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	n = v2_header(buf, 0x21, 0x11, body, 11);     /* short addresses */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	n = v2_header(buf, 0x21, 0x21, body, 20);     /* short for IPv6 */
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	/* A TLV longer than what is left. */
	body[12] = 0x04; body[13] = 0x00; body[14] = 0x05;
	n = v2_header(buf, 0x21, 0x11, body, 16);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	/* Two bytes of TLV: not even a header. */
	n = v2_header(buf, 0x21, 0x11, body, 14);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	/* A broken signature. */
	n = v2_header(buf, 0x21, 0x11, body, 12);
	buf[7] = 'X';
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	CHECK_INT(proxy_parse(buf, 3, &h, why, sizeof(why)), PROXY_MORE);
}

/* RFC 3720 B.4's check value of CRC32c: "123456789". */
static void
test_crc32c(void)
{
	CHECK_INT(proxy_crc32c((const uint8_t *)"123456789", 9), 0xe3069283u);
	CHECK_INT(proxy_crc32c((const uint8_t *)"", 0), 0);
}

/* Set the CRC32C TLV's value (at body offset crc_off) as a sender does:
 * over the whole header with those four bytes zero. */
static void
seal(uint8_t *buf, size_t n, size_t crc_off)
{
	uint8_t *v = buf + 16 + crc_off;
	uint32_t crc;

	memset(v, 0, 4);
	crc = proxy_crc32c(buf, n);
	v[0] = (uint8_t)(crc >> 24);
	v[1] = (uint8_t)(crc >> 16);
	v[2] = (uint8_t)(crc >> 8);
	v[3] = (uint8_t)crc;
}

static void
test_v2_crc32c(void)
{
	/* 192.0.2.9:40000 -> 198.51.100.1:25, a NOOP TLV, the checksum. */
	uint8_t body[] = { 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 25,
	    0x04, 0x00, 0x02, 0xaa, 0xbb,
	    0x03, 0x00, 0x04, 0, 0, 0, 0 };
	uint8_t buf[128];
	struct proxy_header h;
	char why[128], ip[64];
	size_t n = v2_header(buf, 0x21, 0x11, body, sizeof(body));

	seal(buf, n, 20);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_STR(src_ip(&h, ip, sizeof(ip)), "192.0.2.9");
	check_prefixes(buf, n);
	/* One bit changed anywhere -- the client's address, a TLV, the
	 * checksum itself -- and the header is refused.  Not in the TLVs'
	 * lengths (malformed instead) nor the checksum's type (none). */
	for (size_t i = 16; i < n; i++) {
		size_t b = i - 16;

		if (b == 13 || b == 14 || (b >= 17 && b <= 19))
			continue;
		buf[i] ^= 0x01;
		CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
		CHECK_STR(why, "v2: CRC32C checksum mismatch");
		buf[i] ^= 0x01;
	}
	/* Not four bytes, or twice: malformed. */
	body[19] = 3;
	n = v2_header(buf, 0x21, 0x11, body, sizeof(body) - 1);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	CHECK_STR(why, "v2: malformed TLV");
	body[19] = 4;
	{
		uint8_t two[sizeof(body) + 7];

		memcpy(two, body, sizeof(body));
		memcpy(two + sizeof(body), body + 17, 7);
		n = v2_header(buf, 0x21, 0x11, two, sizeof(two));
		seal(buf, n, 20);
		CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
		CHECK_STR(why, "v2: malformed TLV");
	}
}

/* A health check's checksum counts too: it covers the header. */
static void
test_v2_local_crc32c(void)
{
	uint8_t body[] = { 0x03, 0x00, 0x04, 0, 0, 0, 0 };
	uint8_t buf[64];
	struct proxy_header h;
	char why[128];
	size_t n = v2_header(buf, 0x20, 0x00, body, sizeof(body));

	seal(buf, n, 3);
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.local);
	buf[n - 1] ^= 0x80;
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_BAD);
	CHECK_STR(why, "v2: CRC32C checksum mismatch");
	/* Malformed TLVs after LOCAL are still skipped unread. */
	body[2] = 0x09;
	n = v2_header(buf, 0x20, 0x00, body, sizeof(body));
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
}

static void
test_v2_ssl(void)
{
	/* PP2_TYPE_SSL: client SSL|CERT_CONN, verify 0, then the version
	 * and the common name (a quote and a newline in it). */
	uint8_t body[] = { 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 25,
	    0x20, 0x00, 0x18, 0x03, 0, 0, 0, 0,
	    0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3',
	    0x22, 0x00, 0x06, 'c', '"', 'n', '\n', 'x', 'y' };
	uint8_t buf[128];
	struct proxy_header h;
	char why[128];
	size_t n = v2_header(buf, 0x21, 0x11, body, sizeof(body));

	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.ssl);
	CHECK_INT(h.ssl_cert, PROXY_CERT_VERIFIED);
	CHECK_STR(h.ssl_version, "TLSv1.3");
	CHECK_STR(h.ssl_cn, "c?n?xy");
	/* The certificate did not verify. */
	buf[16 + 19] = 1;
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_INT(h.ssl_cert, PROXY_CERT_UNVERIFIED);
	/* No certificate. */
	buf[16 + 15] = 0x01;
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK_INT(h.ssl_cert, PROXY_CERT_NONE);
	/* Not TLS at all (client byte 0): nothing to say. */
	buf[16 + 15] = 0x00;
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(!h.ssl);
	/* A sub-TLV that overruns: what came before it is kept, no
	 * refusal (it is only logged). */
	buf[16 + 15] = 0x01;
	buf[16 + 31] = 0x40;
	CHECK_INT(proxy_parse(buf, n, &h, why, sizeof(why)), PROXY_DONE);
	CHECK(h.ssl);
	CHECK_STR(h.ssl_version, "TLSv1.3");
	CHECK_STR(h.ssl_cn, "");
}

/* The largest v2 header: 65535 bytes after the fixed part. */
static void
test_v2_largest(void)
{
	static uint8_t buf[PROXY_MAX_LEN + 4];
	struct proxy_header h;
	char why[128];

	memset(buf, 0, sizeof(buf));
	memcpy(buf, sig, 12);
	buf[12] = 0x21;
	buf[13] = 0x11;
	buf[14] = 0xff;
	buf[15] = 0xff;
	/* addresses, then one NOOP TLV filling the rest: 65535 - 12 - 3 */
	buf[16 + 12] = 0x04;
	buf[16 + 13] = (uint8_t)((65535 - 15) >> 8);
	buf[16 + 14] = (uint8_t)(65535 - 15);
	CHECK_INT(proxy_parse(buf, PROXY_MAX_LEN - 1, &h, why, sizeof(why)),
	    PROXY_MORE);
	CHECK_INT(proxy_parse(buf, sizeof(buf), &h, why, sizeof(why)),
	    PROXY_DONE);
	CHECK_INT(h.len, PROXY_MAX_LEN);
}

int
main(void)
{
	RUN(test_v1);
	RUN(test_v1_unknown);
	RUN(test_v1_bad);
	RUN(test_v2_inet);
	RUN(test_v2_inet6);
	RUN(test_v2_local);
	RUN(test_v2_bad);
	RUN(test_v2_largest);
	RUN(test_crc32c);
	RUN(test_v2_crc32c);
	RUN(test_v2_local_crc32c);
	RUN(test_v2_ssl);
	return unit_done();
}
