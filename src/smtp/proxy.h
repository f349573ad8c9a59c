/*
 * proxy — the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer sends before anything else, to
 * say whom the connection is really from.  A pure parser: bytes in, the
 * carried addresses out; no sockets, no allocation.
 *
 * proxy_parse() looks at the first bytes of a connection:
 *   PROXY_MORE  the header is not complete yet, and every byte given
 *               belongs to it (the caller may consume them all and ask
 *               again with more);
 *   PROXY_DONE  h is filled; the header is exactly h->len bytes, what
 *               follows is the client's (SMTP, or a TLS ClientHello);
 *   PROXY_BAD   not a valid header: why says what is wrong.
 *
 * Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" (at most 107
 * bytes), or "PROXY UNKNOWN ...\r\n".  Version 2: the 12-byte signature,
 * version and command, family, length, the addresses, then TLVs, which
 * are checked for structure.  Of those, PP2_TYPE_CRC32C is checked: a
 * header whose checksum does not match is refused (damaged on the way);
 * PP2_TYPE_SSL (what the balancer's TLS termination saw: its version,
 * the client certificate's verification) is read into h->ssl* for the
 * log; the rest are ignored.  The LOCAL command (a balancer's own health
 * check), v1 UNKNOWN and v2 AF_UNSPEC carry no client: h->local is set
 * and the connection's own addresses apply; their address block is
 * skipped, and so are their TLVs if malformed, but a checksum there is
 * checked too.
 *
 * proxy_crc32c() is the CRC32c (RFC 4960 appendix B) the v2 checksum
 * uses, for whoever builds a header (the tests).
 * UDP and unix-socket clients are refused (no SMTP client comes that
 * way, and a unix path is no address to check).
 */
#ifndef MXGATE_PROXY_H
#define MXGATE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum proxy_status { PROXY_BAD = -1, PROXY_MORE = 0, PROXY_DONE = 1 };

/* The longest header: v2's 16 bytes and a 16-bit length. */
#define PROXY_MAX_LEN   (16 + 65535)
/* The longest v1 line, CRLF included. */
#define PROXY_V1_MAX    107

enum proxy_cert {
	PROXY_CERT_NONE,            /* no client certificate presented */
	PROXY_CERT_VERIFIED,        /* presented, verified by the balancer */
	PROXY_CERT_UNVERIFIED       /* presented, did not verify */
};

struct proxy_header {
	int      version;           /* 1 or 2 */
	bool     local;             /* no client carried (health check) */
	struct sockaddr_storage src;    /* the client, when !local */
	struct sockaddr_storage dst;    /* the address it connected to */
	size_t   len;               /* bytes of the header */
	/* PP2_TYPE_SSL: the client spoke TLS to the balancer; its version
	 * and the certificate's common name, printable ASCII ("" if not
	 * said) */
	bool     ssl;
	enum proxy_cert ssl_cert;
	char     ssl_version[24];
	char     ssl_cn[68];
};

enum proxy_status proxy_parse(const uint8_t *buf, size_t len,
    struct proxy_header *h, char *why, size_t why_size);
uint32_t proxy_crc32c(const uint8_t *p, size_t len);

#endif
