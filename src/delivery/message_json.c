/*
 * message_json — see message_json.h.
 *
 * GMime does the MIME work: the parser builds the tree, header values come
 * back unfolded and RFC 2047-decoded, file names RFC 2231/2047-decoded,
 * text parts converted to UTF-8 from their charset, and data wrappers
 * undo the transfer encoding.  This file only walks the tree and writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "common/json.h"
#include "common/log.h"
#include "delivery/message_json.h"
#include "common/util.h"

#define SAFE_NAME_MAX     80
#define SAVE_ATTEMPTS     100

struct walk {
	struct json_writer *w;
	const char *queue_id;
	const char *dir;            /* attachments_dir, or NULL */
	int         dirfd;
	char       *text, *html;    /* UTF-8, g_malloc'd */
	struct buf  attachments;    /* the array's members, written apart */
	struct json_writer aw;
	unsigned    n;              /* attachments so far */
	char       *err;
	size_t      errsize;
	bool        failed;
};

static void
gmime_once(void)
{
	static bool done;

	if (!done) {
		g_mime_init();
		done = true;
	}
}

void
message_json_safe_name(char *out, size_t size, const char *queue_id,
    unsigned n, unsigned attempt, const char *filename)
{
	char safe[SAFE_NAME_MAX + 1];
	size_t len = 0;

	/* Only [A-Za-z0-9._-]; no leading dot, so never "." or "..", and
	 * never a '/': the name cannot leave the directory. */
	for (const unsigned char *p = (const unsigned char *)filename; p != NULL && *p != '\0' &&
	    len < SAFE_NAME_MAX; p++) {
		char c = (char)*p;

		if ((*p & 0xc0) == 0x80)
			continue;     /* one '_' per UTF-8 character */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
			c = '_';
		if (c == '.' && len == 0)
			continue;
		safe[len++] = c;
	}
	safe[len] = '\0';
	if (attempt == 0)
		snprintf(out, size, "%s-%u-%s", queue_id, n,
		    len > 0 ? safe : "attachment");
	else
		snprintf(out, size, "%s-%u.%u-%s", queue_id, n, attempt,
		    len > 0 ? safe : "attachment");
}

/* Lowercase extension after the last dot of the file name, or "". */
static void
extension_of(char *out, size_t size, const char *filename)
{
	const char *dot = filename != NULL ? strrchr(filename, '.') : NULL;
	size_t i = 0;

	if (dot != NULL && dot[1] != '\0' && strchr(dot, '/') == NULL)
		for (dot++; *dot != '\0' && i + 1 < size; dot++)
			out[i++] = (*dot >= 'A' && *dot <= 'Z') ?
			    (char)(*dot - 'A' + 'a') : *dot;
	out[i] = '\0';
}

static void
walk_fail(struct walk *c, const char *what, const char *name)
{
	if (c->failed)
		return;
	c->failed = true;
	snprintf(c->err, c->errsize, "%s %s/%s: %s", what, c->dir, name,
	    strerror(errno));
}

/*
 * Save one attachment into the directory.  O_EXCL: a name taken (the
 * same message delivered again after a deferral) gets ".<k>" after the
 * part number instead of overwriting what an application may still use.
 */
static void
save_attachment(struct walk *c, const char *filename, const GByteArray *data)
{
	char name[256], base[256], path[4096];
	int fd = -1;

	message_json_safe_name(base, sizeof(base), c->queue_id, c->n, 0,
	    filename);
	for (unsigned k = 0; k < SAVE_ATTEMPTS && fd < 0; k++) {
		message_json_safe_name(name, sizeof(name), c->queue_id, c->n, k,
		    filename);
		fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd < 0 && errno != EEXIST) {
			walk_fail(c, "cannot create", name);
			return;
		}
	}
	if (fd < 0) {
		walk_fail(c, "cannot create", base);
		return;
	}
	if (fd_write_all(fd, data->data, data->len) == -1 || fsync(fd) == -1) {
		walk_fail(c, "cannot write", name);
		close(fd);
		unlinkat(c->dirfd, name, 0);
		return;
	}
	close(fd);
	snprintf(path, sizeof(path), "%s%s%s", c->dir,
	    c->dir[strlen(c->dir) - 1] == '/' ? "" : "/", name);
	json_key(&c->aw, "path");
	json_string(&c->aw, path);
}

static void
add_attachment(struct walk *c, const char *filename, const char *mime_type,
    const GByteArray *data)
{
	char ext[32];

	c->n++;
	extension_of(ext, sizeof(ext), filename);
	json_begin_object(&c->aw);
	json_key(&c->aw, "filename");
	json_string(&c->aw, filename);
	json_key(&c->aw, "extension");
	json_string(&c->aw, ext);
	json_key(&c->aw, "content_type");
	json_string(&c->aw, mime_type);
	json_key(&c->aw, "size");
	json_int(&c->aw, (long long)data->len);
	if (c->dir != NULL)
		save_attachment(c, filename, data);
	else {
		gchar *b64 = g_base64_encode(data->data, data->len);

		json_key(&c->aw, "content_base64");
		json_string_begin(&c->aw);
		buf_appends(c->aw.b, b64);    /* base64 needs no escaping */
		json_string_end(&c->aw);
		g_free(b64);
	}
	json_end_object(&c->aw);
}

/* Bytes of the object as GMime writes it (an attached message). */
static GByteArray *
object_bytes(GMimeObject *obj, GMimeStream **holder)
{
	*holder = g_mime_stream_mem_new();
	g_mime_object_write_to_stream(obj, NULL, *holder);
	return g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(*holder));
}

/* Decoded content of a leaf part (transfer encoding undone). */
static GByteArray *
part_bytes(GMimePart *part, GMimeStream **holder)
{
	GMimeDataWrapper *content = g_mime_part_get_content(part);

	*holder = g_mime_stream_mem_new();
	if (content != NULL)
		g_mime_data_wrapper_write_to_stream(content, *holder);
	return g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(*holder));
}

static bool
charset_known(const char *charset)
{
	iconv_t cd;

	if (charset == NULL)
		return false;
	if ((cd = g_mime_iconv_open("UTF-8", charset)) == (iconv_t)-1)
		return false;
	g_mime_iconv_close(cd);
	return true;
}

/* The text of a body part in UTF-8, line ends LF. */
static char *
part_text(GMimePart *part)
{
	char *text = NULL, *out, *q;
	GMimeStream *holder;
	GByteArray *raw;

	if (GMIME_IS_TEXT_PART(part) && charset_known(
	    g_mime_text_part_get_charset(GMIME_TEXT_PART(part))))
		text = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
	if (text == NULL) {
		/* No charset, or one iconv does not know (GMime would drop
		 * the bytes it cannot convert): the bytes as they are, UTF-8
		 * more often than not; the writer replaces the rest. */
		raw = part_bytes(part, &holder);
		text = raw->len > 0 ? g_strndup((const char *)raw->data,
		    raw->len) : g_strdup("");
		g_object_unref(holder);
	}
	for (out = q = text; *q != '\0'; q++)
		if (!(q[0] == '\r' && q[1] == '\n'))
			*out++ = *q;
	*out = '\0';
	return text;
}

static void
walk_part(struct walk *c, GMimePart *part)
{
	GMimeContentType *ct = g_mime_object_get_content_type(GMIME_OBJECT(part));
	const char *filename = g_mime_part_get_filename(part);
	bool attached = g_mime_part_is_attachment(part) || filename != NULL;
	GMimeStream *holder;
	char *mime_type;

	if (!attached && g_mime_content_type_is_type(ct, "text", "plain") &&
	    c->text == NULL) {
		c->text = part_text(part);
		return;
	}
	if (!attached && g_mime_content_type_is_type(ct, "text", "html") &&
	    c->html == NULL) {
		c->html = part_text(part);
		return;
	}
	mime_type = g_mime_content_type_get_mime_type(ct);
	add_attachment(c, filename, mime_type, part_bytes(part, &holder));
	g_object_unref(holder);
	g_free(mime_type);
}

static void
walk_object(struct walk *c, GMimeObject *obj, int depth)
{
	GMimeStream *holder;

	/* GMime bounds its own recursion; this only keeps ours finite. */
	if (obj == NULL || depth > 64 || c->failed)
		return;
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);

		for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
			walk_object(c, g_mime_multipart_get_part(mp, i), depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *inner =
		    g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
		const char *fn =
		    g_mime_object_get_content_disposition_parameter(obj, "filename");

		if (fn == NULL)
			fn = g_mime_object_get_content_type_parameter(obj, "name");
		if (inner != NULL) {
			add_attachment(c, fn, "message/rfc822",
			    object_bytes(GMIME_OBJECT(inner), &holder));
			g_object_unref(holder);
		}
	} else if (GMIME_IS_PART(obj))
		walk_part(c, GMIME_PART(obj));
}

static void
write_envelope(struct json_writer *w, const struct delivery_job *job,
    const struct json_value *vars)
{
	json_key(w, "queue_id");
	json_string(w, job->queue_id);
	json_key(w, "sender");
	json_string(w, job->sender);
	json_key(w, "recipients");
	json_begin_array(w);
	for (size_t i = 0; i < job->nrcpts; i++)
		json_string(w, job->rcpts[i].address);
	json_end_array(w);
	json_key(w, "client_ip");
	json_string(w, job->client_ip);
	json_key(w, "helo");
	json_string(w, job->helo);
	json_key(w, "protocol");
	json_string(w, job->protocol);
	json_key(w, "auth_user");
	json_string(w, job->auth_user);
	json_key(w, "received_at");
	json_int(w, job->received_at);
	json_key(w, "route");
	json_string(w, job->route);
	json_key(w, "vars");
	json_begin_object(w);
	for (size_t i = 0; vars != NULL && vars->type == JSON_OBJECT &&
	    i < vars->count; i++) {
		json_key(w, vars->keys[i]);
		json_string(w, vars->items[i]->type == JSON_STRING ?
		    vars->items[i]->string : NULL);
	}
	json_end_object(w);
}

/* GMime files the Content-* headers of the top level under the message's
 * MIME part; the document lists every header in the order received. */
static int
header_offset_cmp(const void *a, const void *b)
{
	gint64 x = g_mime_header_get_offset(*(GMimeHeader *const *)a);
	gint64 y = g_mime_header_get_offset(*(GMimeHeader *const *)b);

	return x < y ? -1 : x > y;
}

static void
write_header_list(struct json_writer *w, GMimeMessage *msg)
{
	GMimeHeaderList *lists[2] = { NULL, NULL };
	GMimeHeader **all = NULL;
	size_t n = 0;

	if (msg != NULL) {
		lists[0] = g_mime_object_get_header_list(GMIME_OBJECT(msg));
		if (g_mime_message_get_mime_part(msg) != NULL)
			lists[1] = g_mime_object_get_header_list(
			    g_mime_message_get_mime_part(msg));
	}
	for (int l = 0; l < 2; l++) {
		int count = lists[l] != NULL ?
		    g_mime_header_list_get_count(lists[l]) : 0;

		all = xrealloc(all, (n + (size_t)count + 1) * sizeof(*all));
		for (int i = 0; i < count; i++)
			all[n++] = g_mime_header_list_get_header_at(lists[l], i);
	}
	qsort(all, n, sizeof(*all), header_offset_cmp);
	json_key(w, "headers");
	json_begin_array(w);
	for (size_t i = 0; i < n; i++) {
		const char *value = g_mime_header_get_value(all[i]);

		json_begin_object(w);
		json_key(w, "name");
		json_string(w, g_mime_header_get_name(all[i]));
		json_key(w, "value");
		json_string(w, value != NULL ? value : "");
		json_end_object(w);
	}
	json_end_array(w);
	free(all);
}

static void
write_headers(struct json_writer *w, GMimeMessage *msg)
{
	static const struct { const char *key, *header; } named[] = {
		{ "subject", "Subject" }, { "from", "From" }, { "to", "To" },
		{ "cc", "Cc" }, { "date", "Date" },
	};

	write_header_list(w, msg);
	for (size_t i = 0; i < ARRAY_LEN(named); i++) {
		json_key(w, named[i].key);
		json_string(w, msg != NULL ? g_mime_object_get_header(
		    GMIME_OBJECT(msg), named[i].header) : NULL);
	}
	json_key(w, "message_id");
	json_string(w, msg != NULL ? g_mime_message_get_message_id(msg) : NULL);
}

static GMimeMessage *
parse_message(const struct delivery_job *job, char *err, size_t errsize)
{
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *msg;
	int fd;

	/* GMime's fs stream owns (and closes) the descriptor it gets. */
	if ((fd = fcntl(job->content_fd, F_DUPFD_CLOEXEC, 0)) == -1) {
		snprintf(err, errsize, "cannot read the message: %s",
		    strerror(errno));
		return NULL;
	}
	stream = g_mime_stream_fs_new_with_bounds(fd,
	    (gint64)job->content_off,
	    (gint64)(job->content_off + job->content_len));
	parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	msg = g_mime_parser_construct_message(parser, NULL);
	g_object_unref(parser);
	g_object_unref(stream);
	return msg;
}

int
message_json_build(const struct delivery_job *job,
    const struct json_value *vars, const char *attachments_dir,
    struct buf *out, char *err, size_t errsize)
{
	struct json_writer w;
	struct walk c = { .queue_id = job->queue_id, .dir = attachments_dir,
	    .dirfd = -1, .err = err, .errsize = errsize };
	GMimeMessage *msg;

	gmime_once();
	err[0] = '\0';
	if (attachments_dir != NULL && (c.dirfd = open(attachments_dir,
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errsize, "cannot open %s: %s", attachments_dir,
		    strerror(errno));
		return -1;
	}
	if ((msg = parse_message(job, err, errsize)) == NULL && err[0] != '\0') {
		if (c.dirfd != -1)
			close(c.dirfd);
		return -1;
	}
	buf_init(&c.attachments);
	json_writer_init(&c.aw, &c.attachments);
	json_begin_array(&c.aw);
	if (msg != NULL)
		walk_object(&c, g_mime_message_get_mime_part(msg), 0);
	json_end_array(&c.aw);
	if (!c.failed && c.dirfd != -1 && c.n > 0 && fsync(c.dirfd) == -1)
		walk_fail(&c, "cannot sync", ".");

	if (!c.failed) {
		json_writer_init(&w, out);
		json_begin_object(&w);
		write_envelope(&w, job, vars);
		write_headers(&w, msg);
		json_key(&w, "text");
		json_string(&w, c.text);
		json_key(&w, "html");
		json_string(&w, c.html);
		json_key(&w, "attachments");
		json_raw(&w, c.attachments.data, c.attachments.len);
		json_end_object(&w);
	}
	if (c.dirfd != -1)
		close(c.dirfd);
	buf_free(&c.attachments);
	g_free(c.text);
	g_free(c.html);
	if (msg != NULL)
		g_object_unref(msg);
	return c.failed ? -1 : 0;
}
