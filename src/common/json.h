/*
 * json — a small JSON (RFC 8259) writer and reader.
 *
 * The writer appends to a struct buf and places the commas itself: call
 * json_begin_object(), then json_key() before each member's value, and so
 * on.  Strings are escaped, and bytes that are not valid UTF-8 become
 * U+FFFD, so the output is always valid JSON whatever a message contained
 * (mail headers and bodies routinely carry stray 8-bit bytes).  Nesting
 * deeper than JSON_MAX_DEPTH is a broken invariant (fatalx): the callers
 * build fixed shapes.
 *
 * The reader parses a whole document into a tree.  It is strict: no
 * comments, no trailing commas, no duplicate keys, valid UTF-8 only, depth
 * at most JSON_MAX_DEPTH, and no "\u0000" (strings are handed to C code
 * as NUL-terminated text: paths, argv, environment).  json_parse() returns
 * NULL on any error and describes it in err ("offset N: problem").
 */
#ifndef MXGATE_JSON_H
#define MXGATE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include "common/util.h"

#define JSON_MAX_DEPTH 32

/* ---- writer ---- */

struct json_writer {
	struct buf *b;
	int   depth;
	bool  need_comma[JSON_MAX_DEPTH + 1];
	bool  after_key;
};

void json_writer_init(struct json_writer *w, struct buf *b);
void json_begin_object(struct json_writer *w);
void json_end_object(struct json_writer *w);
void json_begin_array(struct json_writer *w);
void json_end_array(struct json_writer *w);
/* The member name; the next value written is its value. */
void json_key(struct json_writer *w, const char *key);
/* A string value; NULL writes null. */
void json_string(struct json_writer *w, const char *s);
void json_stringn(struct json_writer *w, const char *s, size_t len);
void json_int(struct json_writer *w, long long v);
void json_bool(struct json_writer *w, bool v);
void json_null(struct json_writer *w);
/* A member of the object being written: json_key(), then the value. */
void json_member_string(struct json_writer *w, const char *key,
    const char *s);
void json_member_int(struct json_writer *w, const char *key, long long v);
void json_member_bool(struct json_writer *w, const char *key, bool v);
/* A value already in JSON form (built by another writer). */
void json_raw(struct json_writer *w, const char *json, size_t len);
/* Start a string value whose content the caller appends to w->b with
 * json_escape() (or raw, when it needs no escaping, e.g. base64), then
 * ends it with json_string_end().  For values too large to copy. */
void json_string_begin(struct json_writer *w);
void json_string_end(struct json_writer *w);

/* Append s (len bytes) to b escaped for the inside of a JSON string. */
void json_escape(struct buf *b, const char *s, size_t len);

/* ---- reader ---- */

enum json_type {
	JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING,
	JSON_ARRAY, JSON_OBJECT
};

struct json_value {
	enum json_type type;
	double   number;             /* JSON_NUMBER */
	char    *string;             /* JSON_STRING, NUL-terminated UTF-8 */
	struct json_value **items;   /* JSON_ARRAY items; JSON_OBJECT values */
	char   **keys;               /* JSON_OBJECT keys, parallel to items */
	size_t   count;
};

struct json_value *json_parse(const char *text, size_t len, char *err,
    size_t errsize);
void json_free(struct json_value *v);

/* Member of an object; NULL when v is not an object or has no such key. */
const struct json_value *json_get(const struct json_value *v, const char *key);
/* The member's string, or NULL when absent or not a string. */
const char *json_get_string(const struct json_value *v, const char *key);
/* The member as an integer: 0 and *out set when it is a number with no
 * fraction within long long; -1 otherwise (absent or wrong type). */
int json_get_int(const struct json_value *v, const char *key, long long *out);

#endif
