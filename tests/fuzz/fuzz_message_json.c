/*
 * fuzz_message_json — libFuzzer harness for the JSON document of a
 * message (GMime's parser and our walk over the MIME tree).
 *
 * The input is the message; the document built from it must always be
 * valid JSON (mail is hostile: broken MIME, unknown charsets, stray 8-bit
 * bytes), and list as many recipients as the job had.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "delivery/delivery.h"
#include "common/json.h"
#include "delivery/message_json.h"
#include "common/util.h"

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_message_json: broken promise: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct delivery_rcpt rcpts[2] = { { .address = "a@example.test" },
	    { .address = "b@example.test" } };
	struct delivery_job job = { .queue_id = "0ABCDEFGHIJKLMNO",
	    .sender = "s@example.test", .route = "r", .client_ip = "192.0.2.1",
	    .helo = "h", .protocol = "ESMTP", .rcpts = rcpts, .nrcpts = 2 };
	struct json_value *doc;
	struct buf out;
	char err[256];
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	check(fd != -1, "memfd_create");
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	job.content_fd = fd;
	job.content_len = size;
	buf_init(&out);
	check(message_json_build(&job, NULL, NULL, &out, err, sizeof(err)) == 0,
	    "no document");
	doc = json_parse(out.data, out.len, err, sizeof(err));
	if (doc == NULL)
		fprintf(stderr, "fuzz_message_json: %s\n", err);
	check(doc != NULL, "the document is not JSON");
	check(json_get(doc, "recipients") != NULL &&
	    json_get(doc, "recipients")->count == 2, "recipients");
	check(json_get(doc, "attachments") != NULL &&
	    json_get(doc, "attachments")->type == JSON_ARRAY, "attachments");
	json_free(doc);
	buf_free(&out);
	close(fd);
	return 0;
}
