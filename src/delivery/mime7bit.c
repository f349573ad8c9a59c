/*
 * mime7bit — see mime7bit.h.
 */
#include <gmime/gmime.h>
#include <stdbool.h>
#include <string.h>

#include "delivery/mime7bit.h"
#include "delivery/relay.h"

static void convert_part(GMimeObject *parent, GMimeObject *part,
    gpointer data);

static void
convert_message(GMimeMessage *msg, bool *changed)
{
	g_mime_message_foreach(msg, convert_part, changed);
}

static void
convert_part(GMimeObject *parent, GMimeObject *part, gpointer data)
{
	bool *changed = data;
	GMimeContentEncoding enc, best;

	(void)parent;
	if (GMIME_IS_MESSAGE_PART(part)) {
		GMimeMessage *inner = g_mime_message_part_get_message(
		    GMIME_MESSAGE_PART(part));

		if (inner != NULL)
			convert_message(inner, changed);
		return;
	}
	if (!GMIME_IS_PART(part))
		return;
	enc = g_mime_part_get_content_encoding(GMIME_PART(part));
	if (enc != GMIME_CONTENT_ENCODING_DEFAULT &&
	    enc != GMIME_CONTENT_ENCODING_8BIT &&
	    enc != GMIME_CONTENT_ENCODING_BINARY)
		return;
	best = g_mime_part_get_best_content_encoding(GMIME_PART(part),
	    GMIME_ENCODING_CONSTRAINT_7BIT);
	if (best == GMIME_CONTENT_ENCODING_7BIT ||
	    best == GMIME_CONTENT_ENCODING_DEFAULT)
		return;
	/* Text stays readable, as Postfix converts it: quoted-printable,
	 * whatever the share of 8-bit bytes. */
	if (g_mime_content_type_is_type(g_mime_object_get_content_type(part),
	    "text", "*"))
		best = GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE;
	g_mime_part_set_content_encoding(GMIME_PART(part), best);
	*changed = true;
}

int
mime_to_7bit(const char *content, size_t len, struct buf *out)
{
	static bool initialised;
	GMimeStream *in, *os;
	GMimeParser *parser;
	GMimeMessage *msg;
	GMimeFormatOptions *fo;
	GByteArray *bytes;
	bool changed = false;
	int r = -1;

	buf_reset(out);
	if (!initialised) {
		g_mime_init();
		initialised = true;
	}
	in = g_mime_stream_mem_new_with_buffer(content, len);
	parser = g_mime_parser_new_with_stream(in);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	msg = g_mime_parser_construct_message(parser, NULL);
	g_object_unref(parser);
	g_object_unref(in);
	if (msg == NULL)
		return -1;
	convert_message(msg, &changed);
	/* RFC 2045 4: a Content-Transfer-Encoding needs MIME-Version. */
	if (changed && g_mime_object_get_header(GMIME_OBJECT(msg),
	    "MIME-Version") == NULL)
		g_mime_object_set_header(GMIME_OBJECT(msg), "MIME-Version", "1.0",
		    NULL);
	bytes = g_byte_array_new();
	os = g_mime_stream_mem_new_with_byte_array(bytes);
	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(os), FALSE);
	fo = g_mime_format_options_new();
	g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
	if (changed && g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo,
	    os) >= 0 && g_mime_stream_flush(os) == 0 &&
	    !relay_has_8bit((const char *)bytes->data, bytes->len)) {
		buf_append(out, bytes->data, bytes->len);
		r = 0;
	}
	g_mime_format_options_free(fo);
	g_object_unref(os);
	g_byte_array_free(bytes, TRUE);
	g_object_unref(msg);
	if (r < 0)
		buf_reset(out);
	return r;
}
