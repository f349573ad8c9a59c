/*
 * exporter_parse — the exporter's whole HTTP parser (exporter.h), apart
 * so that the fuzzer links it alone.
 */
#include <stdbool.h>
#include <string.h>

#include "metrics/exporter.h"

/* The end of the header block: an empty line, CRLF or bare LF ones. */
static bool
headers_end(const char *d, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (d[i] != '\n')
			continue;
		if (d[i + 1] == '\n' ||
		    (d[i + 1] == '\r' && i + 2 < len && d[i + 2] == '\n'))
			return true;
	}
	return false;
}

static bool
token_char(char c)
{
	return c > 32 && c < 127;
}

enum exporter_request
exporter_parse(const char *d, size_t len)
{
	size_t i = 0, m, t, tlen;

	if (!headers_end(d, len))
		return len >= EXPORTER_REQUEST_MAX ? EXPORTER_TOO_LARGE :
		    EXPORTER_INCOMPLETE;
	/* METHOD SP TARGET SP HTTP/1.x (RFC 9112 3) */
	for (m = 0; m < len && token_char(d[m]); m++)
		;
	if (m == 0 || m >= len || d[m] != ' ')
		return EXPORTER_BAD_REQUEST;
	t = m + 1;
	for (i = t; i < len && token_char(d[i]); i++)
		;
	tlen = i - t;
	if (tlen == 0 || i + 10 > len || d[i] != ' ' ||
	    memcmp(d + i + 1, "HTTP/1.", 7) != 0 ||
	    (d[i + 8] != '0' && d[i + 8] != '1'))
		return EXPORTER_BAD_REQUEST;
	if (d[i + 9] != '\n' && !(d[i + 9] == '\r' && i + 10 < len &&
	    d[i + 10] == '\n'))
		return EXPORTER_BAD_REQUEST;
	if (m != 3 || memcmp(d, "GET", 3) != 0)
		return EXPORTER_BAD_METHOD;
	if ((tlen == 8 || (tlen > 8 && d[t + 8] == '?')) &&
	    memcmp(d + t, "/metrics", 8) == 0)
		return EXPORTER_METRICS;
	return EXPORTER_NOT_FOUND;
}
