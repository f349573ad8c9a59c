/*
 * The least a plugin can be, for test_plugin: an ABI, a name and one
 * hook.  No init, fini or session functions and no other hooks: the
 * loader must take each of them as "nothing to do" (continue).
 */
#include <stdio.h>
#include <string.h>

#include "mxgate/plugin.h"

/* Refuses one recipient, so that the one hook is seen to run. */
static void
on_rcpt(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	(void)state;
	(void)ctx;
	if (strcmp(s->rcpt, "refused@example.test") == 0) {
		r->verdict = MXGATE_REJECT;
		snprintf(r->text, sizeof(r->text), "5.7.1 minimal says no");
	}
}

static const struct mxgate_plugin minimal = {
	.abi = MXGATE_PLUGIN_ABI,
	.name = "minimal",
	.on_rcpt = on_rcpt,
};

const struct mxgate_plugin *
mxgate_plugin_register(void)
{
	return &minimal;
}
