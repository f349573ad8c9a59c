/*
 * retry — see retry.h.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "queue/retry.h"

int64_t
retry_delay(const struct retry_policy *p, unsigned attempts)
{
	size_t i;

	if (p->nschedule == 0)
		return 300;
	i = attempts == 0 ? 0 : attempts - 1;
	if (i >= p->nschedule)
		i = p->nschedule - 1;
	return p->schedule[i];
}

bool
retry_plan(const struct retry_policy *p, int64_t received_at,
    unsigned attempts, int64_t prev_attempt_at, int64_t attempt_at,
    int64_t now, int64_t *next_at, bool *warn)
{
	int64_t deadline = received_at + p->max_queue_time;
	int64_t warn_at = received_at + p->delay_warning;

	*warn = false;
	*next_at = 0;
	if (now >= deadline)
		return true;
	*next_at = now + retry_delay(p, attempts);
	/* One last attempt when the time is up, not a retry after it. */
	if (*next_at > deadline)
		*next_at = deadline;
	*warn = p->delay_warning > 0 && attempt_at >= warn_at &&
	    (prev_attempt_at <= 0 || prev_attempt_at < warn_at);
	return false;
}

/* Append "s" to out (RETRY_KEY_MAX), cut to fit. */
static void
key_append(char *out, const char *s)
{
	size_t len = strlen(out);

	if (len + 1 < RETRY_KEY_MAX)
		snprintf(out + len, RETRY_KEY_MAX - len, "%s", s);
}

static void
key_append_lower(char *out, const char *s)
{
	size_t len = strlen(out);

	for (; *s != '\0' && len + 1 < RETRY_KEY_MAX; s++)
		out[len++] = (char)tolower((unsigned char)*s);
	out[len] = '\0';
}

/* The domain of "local@domain": after the last '@' (a quoted local part
 * may hold one). */
static const char *
rcpt_domain(const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	return at != NULL ? at + 1 : "";
}

/* Where a local action writes, for dest_key. */
static const char *
local_target(const char *action, const struct json_value *params)
{
	const struct json_value *cmd;

	if (strcmp(action, "maildir") == 0)
		return json_get_string(params, "path");
	if (strcmp(action, "lmtp") == 0)
		return json_get_string(params, "address");
	if (strcmp(action, "webhook") == 0)
		return json_get_string(params, "url");
	if (strcmp(action, "pipe") == 0) {
		cmd = json_get(params, "command");
		if (cmd != NULL && cmd->type == JSON_ARRAY && cmd->count > 0 &&
		    cmd->items[0]->type == JSON_STRING)
			return cmd->items[0]->string;
	}
	return NULL;
}

int
retry_keys(const char *action, const char *params_json, const char *rcpt,
    char *job_key, char *dest_key)
{
	struct json_value *params;
	const char *upstream, *target;
	char err[128];

	job_key[0] = dest_key[0] = '\0';
	key_append(job_key, action);
	key_append(dest_key, action);
	params = json_parse(params_json != NULL ? params_json : "",
	    params_json != NULL ? strlen(params_json) : 0, err, sizeof(err));
	if (params == NULL || params->type != JSON_OBJECT) {
		key_append(job_key, ":");
		key_append(job_key, params_json != NULL ? params_json : "");
		json_free(params);
		return -1;
	}
	if (strcmp(action, "relay") == 0) {
		upstream = json_get_string(params, "upstream");
		key_append(job_key, ":");
		key_append(job_key, upstream != NULL ? upstream : "");
		if (upstream != NULL && strcmp(upstream, "mx") == 0) {
			key_append(job_key, ":");
			key_append_lower(job_key, rcpt_domain(rcpt));
		}
		snprintf(dest_key, RETRY_KEY_MAX, "%s", job_key);
	} else {
		key_append(job_key, ":");
		key_append(job_key, params_json);
		if ((target = local_target(action, params)) != NULL) {
			key_append(dest_key, ":");
			key_append(dest_key, target);
		}
	}
	json_free(params);
	return 0;
}
